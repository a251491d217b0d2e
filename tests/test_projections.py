"""Packed projections cut apart (rules/projections.egg): a projection whose output is viewed per
head and cut into parts, by a Split after the head transpose (GPT-NeoX), by a Gather of one
constant index (BLOOM) or by a Slice of heads (Falcon), is one projection per part, by that
part's columns of the weights. A part used alone then costs a third of the product."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.pipeline import optimize

F = TensorProto.FLOAT
B, S, K, H, D = 2, 8, 16, 2, 4


def _packed(cut: list, cut_inits: list, out_shape: list[int], bias: bool = True) -> onnx.ModelProto:
    """x [B, S, K] @ W [K, H*3*D] (+ b), viewed as [B, S, H, 3, D] (or [B, S, H, 3D] for a Split),
    then ``cut`` reading ``view``."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((K, H * 3 * D)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(H * 3 * D).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([B, S, H, 3, D], np.int64), "view5"),
             numpy_helper.from_array(np.array([B, S, H, 3 * D], np.int64), "view4"), *cut_inits]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["p"])]
    nodes += [n("Add", ["p", "b"], ["y"])] if bias else [n("Identity", ["p"], ["y"])]
    graph = helper.make_graph(nodes + cut, "packed", [helper.make_tensor_value_info("x", F, [B, S, K])],
                              [helper.make_tensor_value_info("out", F, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _assert_one_projection_by_its_columns(model: onnx.ModelProto, cut_op: str) -> None:
    """Optimized, the model passes its check, has no ``cut_op`` left and one MatMul, by the part's
    H * D columns (a third of the projection's: its weight is a folded initializer)."""
    optimized, report = optimize(model)
    assert report.check is not None and report.check.ok
    assert cut_op not in [node.op_type for node in optimized.graph.node]
    weights = {t.name: list(t.dims) for t in optimized.graph.initializer}
    assert [weights[node.input[1]][1] for node in optimized.graph.node if node.op_type == "MatMul"] == [H * D]


@pytest.mark.parametrize("index", [0, 2, -2])
@pytest.mark.parametrize("bias", [True, False])
def test_one_part_picked_by_a_constant_index_is_a_projection_by_its_columns(index, bias):
    """BLOOM's Q, K or V: view[..., index, :] of [B, S, H, 3, D] (a Gather by a 0-d index)."""
    cut = [helper.make_node("Reshape", ["y", "view5"], ["view"]),
           helper.make_node("Gather", ["view", "i"], ["out"], axis=3)]
    model = _packed(cut, [numpy_helper.from_array(np.array(index, np.int64), "i")], [B, S, H, D], bias)
    _assert_one_projection_by_its_columns(model, "Gather")


def test_one_part_picked_by_a_one_element_index_is_a_projection_by_its_columns():
    """The same picked by an index of shape [1], which keeps the axis: view[..., [1], :]."""
    cut = [helper.make_node("Reshape", ["y", "view5"], ["view"]),
           helper.make_node("Gather", ["view", "i"], ["out"], axis=3)]
    model = _packed(cut, [numpy_helper.from_array(np.array([1], np.int64), "i")], [B, S, H, 1, D])
    _assert_one_projection_by_its_columns(model, "Gather")


def test_one_part_split_after_the_head_transpose_is_a_projection_by_its_columns():
    """GPT-NeoX: [B, S, H, 3D] moved heads first, split in three along the last axis; V alone."""
    n = helper.make_node
    cut = [n("Reshape", ["y", "view4"], ["view"]), n("Transpose", ["view"], ["heads"], perm=[0, 2, 1, 3]),
           n("Split", ["heads", "thirds"], ["q", "k", "out"], axis=3)]
    model = _packed(cut, [numpy_helper.from_array(np.array([D, D, D], np.int64), "thirds")], [B, H, S, D])
    _assert_one_projection_by_its_columns(model, "Split")


def test_heads_sliced_off_a_packed_projection_are_a_projection_by_their_columns():
    """Falcon's multi-query layout: [B, S, H + 2, D], the query heads sliced off along axis 2."""
    n = helper.make_node
    ints = [numpy_helper.from_array(np.array(v, np.int64), name)
            for name, v in (("view", [B, S, 3 * H, D]), ("st", [0]), ("en", [H]), ("ax", [2]))]
    cut = [n("Reshape", ["y", "view"], ["heads"]), n("Slice", ["heads", "st", "en", "ax"], ["out"])]
    model = _packed(cut, ints, [B, S, H, D])
    _assert_one_projection_by_its_columns(model, "Slice")


@pytest.mark.parametrize("bias", [True, False])
def test_one_part_split_off_a_viewed_projection_is_a_projection_by_its_columns(bias):
    """GPT-BigCode: the projection [B, S, N] viewed as [B, 1, S, N] and split along N (its biased
    sum sliced as the product and the bias); the last third alone."""
    n = helper.make_node
    cut = [n("Unsqueeze", ["y", "axis1"], ["view"]), n("Split", ["view", "thirds"], ["q", "k", "out"], axis=3)]
    ints = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array([H * D] * 3, np.int64), "thirds")]
    model = _packed(cut, ints, [B, 1, S, H * D], bias)
    _assert_one_projection_by_its_columns(model, "Split")
