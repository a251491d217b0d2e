"""Ops from other operator sets and newer opsets: the target decides what extraction may choose,
and export declares (or raises) the operator sets the chosen ops need."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.eqsat.egraph import TensorEGraph
from eqsat_dnn.eqsat.rules import parse_rule_file
from eqsat_dnn.eqsat.saturate import saturate
from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.io.onnx_out import to_onnx
from eqsat_dnn.ir.graph import Node
from eqsat_dnn.ir.language import CONTRIB, OPS, OpSpec, Target

RULE = """;; float: exact
;; onnxruntime's FastGelu is Gelu's tanh approximation.
(birewrite (Gelu x "tanh") (FastGelu x) :name "toy-fast-gelu")
"""


@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setitem(OPS, "FastGelu", OpSpec("FastGelu", ("X",), elementwise=True, domain=CONTRIB,
                                                description="toy: onnxruntime's tanh Gelu"))
    monkeypatch.setitem(OPS, "RMSNormalization", OpSpec(
        "RMSNormalization", ("X", "scale"), since=23, description="toy: opset 23's RMS normalization"))


def _gelu_model(opset: int = 20) -> onnx.ModelProto:
    nodes = [helper.make_node("Gelu", ["x"], ["g"], approximate="tanh"), helper.make_node("Relu", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_the_onnx_target_leaves_out_onnxruntime_kernels(fused, tmp_path):
    (tmp_path / "toy.egg").write_text(RULE)
    teg = TensorEGraph(load_model(_gelu_model()))
    saturate(teg, parse_rule_file(tmp_path / "toy.egg"))
    ops = {n.op for n in teg.snapshot().egraph.nodes.values()}
    assert {"Gelu", "FastGelu"} <= ops
    ops = {n.op for n in teg.snapshot(target=Target.ONNX).egraph.nodes.values()}
    assert "Gelu" in ops and "FastGelu" not in ops


def test_an_onnxruntime_kernel_without_another_form_is_kept(fused):
    """An e-class whose only e-node is foreign keeps it: the program must stay extractable."""
    teg = TensorEGraph(load_model(_gelu_model()))
    teg.command(f"(let $alone (FastGelu (Relu {teg.globals['x']})))")
    assert any(n.op == "FastGelu" for n in teg.snapshot(target=Target.ONNX).egraph.nodes.values())
    assert Target.ONNX.admits("Gelu") and not Target.ONNX.admits("FastGelu") and Target.ONNXRUNTIME.admits("FastGelu")


def test_export_declares_the_contrib_domain_and_raises_the_opset(fused):
    graph = load_model(_gelu_model(opset=17 + 3))
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    graph.weights["scale"] = scale
    graph.nodes = [Node("FastGelu", ["x"], ["g"], {}), Node("RMSNormalization", ["g", "scale"], ["r"], {}),
                   Node("Relu", ["r"], ["y"], {})]
    model = to_onnx(graph)
    imports = {imp.domain: imp.version for imp in model.opset_import}
    assert imports[""] == 23 and imports[CONTRIB] == 1
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    g = 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))
    r = g / np.sqrt(np.mean(g * g, axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, np.maximum(r, 0), rtol=1e-4, atol=1e-5)


def test_scalar_weights_are_visible_to_rules():
    nodes = [helper.make_node("Sqrt", ["d"], ["s"]), helper.make_node("Div", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                              [numpy_helper.from_array(np.array(64.0, np.float32), "d")])
    teg = TensorEGraph(load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    teg.command("(run-schedule (saturate analysis))")
    teg.command(f"(check (= (scalar {teg.globals['s']}) 8.0))")  # raises unless it holds
    teg.command(f"(check (= (scalar {teg.globals['d']}) 64.0))")
