"""An op is declared once (the architecture issue): a new operator is one ``OpSpec`` in
``eqsat_dnn.ir.language.OPS`` plus its rules, and every stage takes it from there: import,
the e-graph and saturation, extraction, export, ``rules check``, both cost models and the
partitioner. The toy op is ONNX's ``Atan`` (element-wise, in onnxruntime, and known to none
of those stages by name)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.ir.language import OPS, OpSpec

RULE = """;; float: exact

;; Atan commutes with a transpose (it is element-wise).
(rewrite (Atan (Transpose x p)) (Transpose (Atan x) p) :name "atan-transpose")
"""


@pytest.fixture
def atan(monkeypatch, tmp_path):
    """The one declaration, and its rule file."""
    monkeypatch.setitem(OPS, "Atan", OpSpec("Atan", ("X",), shape="same", elementwise=True,
                                            description="arctangent"))
    path = tmp_path / "atan.egg"
    path.write_text(RULE)
    return path


def _model() -> onnx.ModelProto:
    """y = Transpose(Atan(Transpose(x))) @ w: the rule lets the two transposes cancel."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("Atan", ["t"], ["a"]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0]), helper.make_node("MatMul", ["b", "w"], ["y"])]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_declared_op_goes_through_the_pipeline(atan):
    from eqsat_dnn import load_model, optimize, select_rules

    graph = load_model(_model())
    assert [n.op for n in graph.nodes] == ["Transpose", "Atan", "Transpose", "MatMul"]  # not opaque
    optimized, report = optimize(_model(), rules=select_rules([str(atan), "layout"]), extractor="ilp", check=1)
    assert report.check.ok
    assert report.ops_after == {"Atan": 1, "MatMul": 1}  # transposes gone
    assert report.saturation.matches_per_rule().get("atan-transpose", 0) > 0


def test_a_declared_op_is_checked_by_the_rule_checker(atan):
    from eqsat_dnn.eqsat.rules import parse_rule_file
    from eqsat_dnn.verify import check_rules

    (result,) = check_rules(parse_rule_file(atan), trials=4, jobs=1)
    assert result.status == "verified" and result.checked >= 4, result


def test_both_cost_models_price_a_declared_op(atan, tmp_path):
    from eqsat_dnn.cost import RooflineCostModel, get_cost_model, graph_cost
    from eqsat_dnn.ir.graph import Graph
    from eqsat_dnn import load_model

    graph = load_model(_model())
    roofline = graph_cost(graph, RooflineCostModel())
    measured = graph_cost(graph, get_cost_model("measured", cache_dir=tmp_path))
    assert roofline > 0 and measured > 0
    alone = Graph([n for n in graph.nodes if n.op == "Atan"], graph.inputs, ["a"], graph.types, {}, graph.model)
    assert graph_cost(alone, get_cost_model("measured", cache_dir=tmp_path)) > 0  # timed on its own


def test_the_partitioner_shards_a_declared_elementwise_op(atan):
    from eqsat_dnn.partition import partition

    plan = partition(_model(), "2", machine="cpu", time_limit=5)
    assert "Atan" not in plan.replicate_only
