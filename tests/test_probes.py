"""Symbolic dims searched at probe sizes and given back (eqsat_dnn.io.probes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.io.probes import ProbeError, find_probes, restore
from eqsat_dnn.pipeline import optimize


def head_split_model(hidden: int = 8, heads: int = 2) -> onnx.ModelProto:
    """x [batch, seq, hidden] -> a head split whose target is computed from Shape at run time, as
    torch's dynamo exporter writes it, then the heads' scores softmax(q k^T) v."""
    d = hidden // heads
    nodes = [
        helper.make_node("Shape", ["x"], ["b"], start=0, end=1),
        helper.make_node("Shape", ["x"], ["s"], start=1, end=2),
        helper.make_node("Concat", ["b", "s", "h", "d"], ["target"], axis=0),
        helper.make_node("MatMul", ["x", "wq"], ["q0"]),
        helper.make_node("MatMul", ["x", "wk"], ["k0"]),
        helper.make_node("MatMul", ["x", "wv"], ["v0"]),
    ]
    for t in ("q", "k", "v"):
        nodes += [helper.make_node("Reshape", [f"{t}0", "target"], [f"{t}1"]),
                  helper.make_node("Transpose", [f"{t}1"], [f"{t}2"], perm=[0, 2, 1, 3])]
    nodes += [
        helper.make_node("Transpose", ["k2"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q2", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v2"], ["o"]),
        helper.make_node("Transpose", ["o"], ["o1"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["x"], ["bs"], start=0, end=2),
        helper.make_node("Concat", ["bs", "hd"], ["merged"], axis=0),
        helper.make_node("Reshape", ["o1", "merged"], ["y"]),
    ]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), w)
             for w in ("wq", "wk", "wv")]
    inits += [numpy_helper.from_array(np.array([heads], np.int64), "h"),
              numpy_helper.from_array(np.array([d], np.int64), "d"),
              numpy_helper.from_array(np.array([hidden], np.int64), "hd"),
              numpy_helper.from_array(np.array(d ** -0.5, np.float32), "scale")]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_probes_are_primes_that_divide_no_size_the_model_states():
    model = head_split_model(hidden=14, heads=7)  # 7 (the batch probe's start) divides 14: skipped
    probes = find_probes(model)
    assert probes is not None
    assert probes.sizes == {"batch": 11, "seq": 509}
    assert probes.sources == {"batch": ("x", 0), "seq": ("x", 1)}
    assert probes.check_sizes == {"batch": 2, "seq": 3}
    assert probes.measure_sizes == {"batch": 1, "seq": 509} and probes.describe() == "batch=11, seq=509"
    assert probes.input_shapes == {"x": [11, 509, 14]}
    assert probes.factor(11 * 509 * 4) == (4, ["batch", "seq"])
    assert probes.factor(-509) == (-1, ["seq"])
    assert probes.factor(2 ** 63 - 1) == (2 ** 63 - 1, [])  # a slice's open end is no size
    assert probes.in_shape([1, 509, 3]) and probes.in_shape([1, None]) and not probes.in_shape([4, 14])


def test_a_static_model_has_no_probes():
    model = head_split_model()
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8]))
    assert find_probes(model) is None


def test_a_computed_head_split_fuses_and_runs_at_any_size():
    model = head_split_model()
    optimized, report = optimize(model)
    assert report.probes.sizes == {"batch": 7, "seq": 509} and not report.probes_fallback
    assert "MultiHeadAttention" in report.ops_after or "Attention" in report.ops_after
    assert [d.dim_param for d in optimized.graph.input[0].type.tensor_type.shape.dim][:2] == ["batch", "seq"]
    ours = ort.InferenceSession(optimized.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 1), (2, 9), (5, 3)):
        x = np.random.default_rng(batch).standard_normal((batch, seq, 8)).astype(np.float32)
        np.testing.assert_allclose(ours.run(None, {"x": x})[0], theirs.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_restore_computes_probe_carrying_constants_and_refuses_the_rest():
    model = head_split_model()
    probes = find_probes(model)
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    target = numpy_helper.from_array(np.array([7 * 509 * 2, 4], np.int64), "flat")
    pinned.graph.initializer.append(target)
    pinned.graph.node.append(helper.make_node("Reshape", ["y", "flat"], ["z"]))
    pinned.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    restored = restore(pinned, probes)
    assert "flat" not in {t.name for t in restored.graph.initializer}
    session = ort.InferenceSession(restored.SerializeToString(), providers=["CPUExecutionProvider"])
    z = session.run(["z"], {"x": np.zeros((3, 5, 8), np.float32)})[0]
    assert z.shape == (3 * 5 * 2, 4)

    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    sized.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 509), np.float32), "mask"))
    sized.graph.node.append(helper.make_node("Add", ["y", "mask"], ["w"]))
    with pytest.raises(ProbeError, match="probe-sized shape"):
        restore(sized, probes)

    attributed = onnx.ModelProto()
    attributed.CopyFrom(model)
    attributed.graph.node.append(helper.make_node("Flatten", ["y"], ["f"], axis=509))
    with pytest.raises(ProbeError, match="attribute 'axis'"):
        restore(attributed, probes)


def test_a_model_the_check_sizes_cannot_run_is_searched_symbolic():
    """Two dims the model needs equal but names apart: at the check's sizes (2 and 3) the
    original cannot run, so the search at probes is dropped for the symbolic one, said why."""
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, ["m", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    optimized, report = optimize(model)
    assert report.probes is None and "cannot run the original" in report.probes_fallback
    assert any("symbolic dims could not be searched at probe sizes" in w for w in report.warnings)
    assert report.check is not None and report.check.ok


def test_unnamed_symbolic_dims_get_probes_of_their_own():
    model = head_split_model()
    for dim in model.graph.input[0].type.tensor_type.shape.dim[:2]:
        dim.Clear()  # unknown: no value, no name
    for dim in model.graph.output[0].type.tensor_type.shape.dim[:2]:
        dim.Clear()
    probes = find_probes(model)
    assert probes.sizes == {"x:0": 7, "x:1": 509} and probes.check_sizes == {"x:0": 2, "x:1": 3}
    optimized, report = optimize(model)
    assert report.probes is not None and not report.probes_fallback
    dims = optimized.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and not dims[0].dim_param
    session = ort.InferenceSession(optimized.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((4, 6, 8), np.float32)})[0].shape == (4, 6, 8)
