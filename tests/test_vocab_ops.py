"""The ops transformer exports compute masks, positions and embeddings with (issue 16): each is
a vocabulary op, so import reads it, the e-graph types it, export writes it back and folds it
where its inputs are constants, and the output check agrees."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.eqsat.egraph import TensorEGraph
from eqsat_dnn.eqsat.saturate import run_analysis
from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.io.onnx_out import to_onnx
from eqsat_dnn.ir.language import BOOL, OPS

NEW_OPS = {"Gather", "GatherElements", "GatherND", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
           "ConstantOfShape", "And", "Or", "Not", "Max", "Min", "Abs", "Log", "Softplus", "CumSum", "ReduceMax", "Trilu", "Range"}


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [
        _const("emb", rng.standard_normal((10, 4)).astype(np.float32)),
        _const("zero", np.int64(0)), _const("five", np.int64(5)), _const("one", np.int64(1)),
        _const("three", np.int64(3)), _const("ones55", np.ones((5, 5), np.float32)), _const("k", np.int64(1)),
        _const("axis1", np.int64(1)), _const("axes2", np.array([2], np.int64)),
        _const("idx", rng.integers(0, 4, (2, 5, 4)).astype(np.int64)),
        _const("nd", np.array([[0, 1], [1, 4]], np.int64)), _const("half", np.float32(0.5)),
        _const("len5", np.array([5], np.int64)), _const("zerof", np.float32(0)), _const("fivef", np.float32(5)),
        _const("onef", np.float32(1)), _const("threef", np.float32(3)),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["emb", "ids"], ["g"], axis=0),
        n("Shape", ["x"], ["xs"]),  # static: a constant at import
        # constant: folded at export (integer ones are shape arithmetic, folded at import: io/fold.py)
        n("Range", ["zerof", "fivef", "onef"], ["r"]),
        n("Less", ["r", "threef"], ["early"]),
        n("Trilu", ["ones55", "k"], ["tri"], upper=0),
        n("Max", ["g", "x"], ["mx"]), n("Min", ["g", "x"], ["mn"]),
        n("Abs", ["mn"], ["ab"]), n("Add", ["ab", "half"], ["ab1"]), n("Log", ["ab1"], ["lg"]),
        n("Softplus", ["mx"], ["sp"]), n("CumSum", ["sp", "axis1"], ["cs"], reverse=1),
        n("ReduceMax", ["cs", "axes2"], ["rm"], keepdims=1),
        n("Less", ["x", "g"], ["lt"]), n("Greater", ["x", "g"], ["gt"]), n("Not", ["gt"], ["ngt"]),
        n("LessOrEqual", ["x", "lg"], ["le"]), n("GreaterOrEqual", ["x", "lg"], ["ge"]),
        n("Equal", ["ids", "ids"], ["eq"]),
        n("And", ["lt", "ngt"], ["both"]), n("Or", ["le", "ge"], ["either"]),
        n("GatherElements", ["x", "idx"], ["ge_el"], axis=2), n("GatherND", ["x", "nd"], ["gnd"]),
        n("Reshape", ["sp", "xs"], ["sp_same"]), n("Transpose", ["sp_same"], ["sp_t"], perm=[0, 1, 2]),
        n("MatMul", ["tri", "sp_t"], ["tri_sp"]),
        # position ids as exports write them: a running sum of ones, less one (constant: folded)
        n("ConstantOfShape", ["len5"], ["ones5"], value=numpy_helper.from_array(np.array([1], np.int64))),
        n("CumSum", ["ones5", "zero"], ["count"]), n("Sub", ["count", "one"], ["pos"]),
        # a fill read by a computed tensor: kept as a node, not made a large initializer
        n("ConstantOfShape", ["xs"], ["fill"], value=numpy_helper.from_array(np.array([-2.5], np.float32))),
        n("Max", ["x", "fill"], ["clipped"]),
    ]
    # MatMul of [5, 5] and [2, 5, 4] broadcasts: a causal running sum written with a triangle
    outputs = [("rm", TensorProto.FLOAT, [2, 5, 1]), ("early", TensorProto.BOOL, [5]),
               ("both", TensorProto.BOOL, [2, 5, 4]), ("either", TensorProto.BOOL, [2, 5, 4]),
               ("eq", TensorProto.BOOL, [2, 5]), ("ge_el", TensorProto.FLOAT, [2, 5, 4]),
               ("gnd", TensorProto.FLOAT, [2, 4]), ("tri_sp", TensorProto.FLOAT, [2, 5, 4]),
               ("pos", TensorProto.INT64, [5]), ("clipped", TensorProto.FLOAT, [2, 5, 4])]
    graph = helper.make_graph(
        nodes, "vocab",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 4])],
        [helper.make_tensor_value_info(*o) for o in outputs], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_every_new_op_is_vocabulary():
    assert NEW_OPS <= set(OPS)
    graph = load_model(_model())
    ops = [node.op for node in graph.nodes]
    assert "Opaque" not in ops and NEW_OPS <= set(ops)
    assert "xs" in graph.weights  # the Shape of a static tensor became a constant
    assert [int(v) for v in numpy_helper.to_array(graph.weights["xs"])] == [2, 5, 4]


def test_the_e_graph_types_the_new_ops():
    graph = load_model(_model())
    teg = TensorEGraph(graph)
    run_analysis(teg)
    snap = teg.snapshot()
    by_value = {v: cls for cls, names in snap.names.items() for v in names}
    for value in ("g", "lt", "both", "eq", "ge_el", "early"):
        t = snap.types[by_value[value]]
        assert t.dtype == graph.types[value].dtype, value
        assert tuple(t.shape) == tuple(graph.types[value].shape), value
    assert snap.types[by_value["lt"]].dtype == BOOL


def test_export_writes_them_back_and_folds_constant_subgraphs():
    model = _model()
    exported = to_onnx(load_model(model))
    onnx.checker.check_model(exported, full_check=True)
    ops = {node.op_type for node in exported.graph.node}
    assert not {"Range", "Trilu", "Shape"} & ops  # constant subgraphs folded
    assert [n.op_type for n in exported.graph.node].count("ConstantOfShape") == 1  # the fill, not the ones
    assert numpy_helper.to_array(next(w for w in exported.graph.initializer if w.name == "pos")).tolist() == [0, 1, 2, 3, 4]
    assert {"Gather", "CumSum", "ReduceMax", "GatherND", "GatherElements", "And", "Or", "Not"} <= ops
    rng = np.random.default_rng(1)
    feeds = {"ids": rng.integers(0, 10, (2, 5)).astype(np.int64),
             "x": rng.standard_normal((2, 5, 4)).astype(np.float32)}
    for got, want in zip(_run(exported, feeds), _run(model, feeds)):
        np.testing.assert_array_equal(got, want)


def test_optimize_keeps_the_outputs():
    from eqsat_dnn import optimize

    optimized, report = optimize(_model(), extractor="greedy", check=2)
    assert report.check.ok
    onnx.checker.check_model(optimized, full_check=True)
