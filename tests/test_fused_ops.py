"""Fused normalization, rotary embedding and GELU-family ops (issue 16; their rules verify with
the library): a tiny LLaMA-style block gets RMSNormalization and RotaryEmbedding with equal
outputs and an opset-23 model onnxruntime loads, and ``Target.ONNX`` never yields onnxruntime's
own ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.eqsat.rules import library_dir
from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.io.onnx_out import to_onnx
from eqsat_dnn.ir.graph import Node
from eqsat_dnn.ir.language import CONTRIB, OPS, Target
from eqsat_dnn.lower import to_standard
from eqsat_dnn.pipeline import optimize

FAMILIES = ("normalization", "rotary", "gelu")
F = TensorProto.FLOAT


def _const(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def llama_block(heads: int = 2, seq: int = 8, head: int = 16) -> onnx.ModelProto:
    """HF LlamaRMSNorm, a projection, apply_rotary_pos_emb on its heads and a SiLU, as the
    dynamo exporter writes them (opset 20)."""
    hidden = heads * head
    rng = np.random.default_rng(0)
    half = head // 2
    freqs = np.outer(np.arange(seq), 1.0 / 10000 ** (np.arange(half) / half))[None].astype(np.float32)
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "last"], ["ms"], keepdims=1, noop_with_empty_axes=0),
        helper.make_node("Add", ["ms", "eps"], ["mse"]),
        helper.make_node("Sqrt", ["mse"], ["rms"]),
        helper.make_node("Reciprocal", ["rms"], ["inv"]),
        helper.make_node("Mul", ["x", "inv"], ["xn"]),
        helper.make_node("Mul", ["g", "xn"], ["h"]),
        helper.make_node("MatMul", ["h", "wq"], ["q2"]),
        helper.make_node("Reshape", ["q2", "qshape"], ["q3"]),
        helper.make_node("Transpose", ["q3"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["f", "f"], ["ff"], axis=-1),
        helper.make_node("Cos", ["ff"], ["cos"]),
        helper.make_node("Sin", ["ff"], ["sin"]),
        helper.make_node("Unsqueeze", ["cos", "one"], ["cu"]),
        helper.make_node("Unsqueeze", ["sin", "one"], ["su"]),
        helper.make_node("Mul", ["q", "cu"], ["qc"]),
        helper.make_node("Slice", ["q", "zero", "mid", "three", "one"], ["q1"]),
        helper.make_node("Slice", ["q", "mid", "big", "three", "one"], ["q2h"]),
        helper.make_node("Neg", ["q2h"], ["nq2"]),
        helper.make_node("Concat", ["nq2", "q1"], ["rot"], axis=-1),
        helper.make_node("Mul", ["rot", "su"], ["qs"]),
        helper.make_node("Add", ["qc", "qs"], ["y"]),
        helper.make_node("Sigmoid", ["h"], ["sg"]),
        helper.make_node("Mul", ["h", "sg"], ["z"]),
    ]
    ints = {"last": [-1], "one": [1], "zero": [0], "mid": [half], "big": [2 ** 62], "three": [3],
            "qshape": [1, seq, heads, head]}
    inits = [_const("two", 2.0), _const("eps", 1e-6), _const("g", rng.standard_normal(hidden) + 1),
             _const("wq", rng.standard_normal((hidden, hidden)) / hidden ** 0.5), _const("f", freqs)]
    inits += [_const(k, v, np.int64) for k, v in ints.items()]
    graph = helper.make_graph(nodes, "llama_block", [helper.make_tensor_value_info("x", F, [1, seq, hidden])],
                              [helper.make_tensor_value_info("y", F, [1, heads, seq, head]),
                               helper.make_tensor_value_info("z", F, [1, seq, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _ops(model: onnx.ModelProto) -> dict[str, str]:
    return {n.op_type: n.domain for n in model.graph.node}


def test_llama_block_gets_fused_ops_in_opset_23():
    model = llama_block()
    optimized, report = optimize(model, rules=[str(library_dir() / f"{f}.egg") for f in FAMILIES])
    ops = _ops(optimized)
    assert "RMSNormalization" in ops and "RotaryEmbedding" in ops and ops.get("QuickGelu") == CONTRIB
    assert "Reciprocal" not in ops and "Neg" not in ops
    imports = {imp.domain: imp.version for imp in optimized.opset_import}
    assert imports[""] == 23 and imports[CONTRIB] == 1
    onnx.checker.check_model(optimized, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 8, 32)).astype(np.float32)
    for got, want in zip(_run(optimized, x), _run(model, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert report.check is not None and report.check.ok


def test_onnx_target_never_yields_contrib_ops():
    model = llama_block()
    optimized, _ = optimize(model, rules=[str(library_dir() / f"{f}.egg") for f in FAMILIES], target=Target.ONNX)
    assert all(domain in ("", "ai.onnx") for domain in _ops(optimized).values())
    assert "RMSNormalization" in _ops(optimized)  # a standard (opset 23) op is still chosen
    assert "Sigmoid" in _ops(optimized)  # QuickGelu, chosen, written in standard ops


def test_quick_gelu_is_written_in_standard_ops_in_the_order_onnxruntime_fuses():
    """lower.to_standard: x * Sigmoid(x * alpha); onnxruntime makes it one QuickGelu again."""
    x = helper.make_tensor_value_info("x", F, [2, 8])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["s"]),
             helper.make_node("Mul", ["r", "s"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "silu", [x], [helper.make_tensor_value_info("y", F, [2, 8])]),
                              opset_imports=[helper.make_opsetid("", 20)])
    graph = load_model(model)
    graph.nodes[1:] = [Node("QuickGelu", ["r"], ["y"], {"alpha": 1.5})]
    lowered, count = to_standard(graph)
    assert count == 1 and [n.op for n in lowered.nodes] == ["Relu", "Mul", "Sigmoid", "Mul"]
    written = to_onnx(lowered)
    data = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    r = np.maximum(data, 0)
    (y,) = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": data})
    np.testing.assert_allclose(y, r / (1 + np.exp(-1.5 * r)), rtol=1e-5, atol=1e-6)
    assert Target.ONNX.admits("QuickGelu") and OPS["QuickGelu"].domain == CONTRIB


def test_gelu_from_an_opset_17_erf_form_raises_the_opset_to_20():
    """Gelu is an opset-20 op (OpSpec.since): chosen in an opset-17 model, export raises the opset."""
    nodes = [helper.make_node("Div", ["x", "root2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "half"], ["h"]),
             helper.make_node("Mul", ["h", "a"], ["y"])]
    inits = [_const("root2", np.sqrt(2.0)), _const("one", 1.0), _const("half", 0.5)]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", F, [4, 64])],
                              [helper.make_tensor_value_info("y", F, [4, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized, report = optimize(model, rules=[str(library_dir() / "gelu.egg")])
    assert "Gelu" in _ops(optimized) and report.check.ok
    assert {imp.domain: imp.version for imp in optimized.opset_import}[""] == 20
