"""The output check (defect 6 of the reliability issue): per-element tolerances, non-finite
positions compared exactly, and edge input sets that exercise overflow."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.runtime.check import EDGE_SETS, InputSet, compare_models, compare_outputs


def _model(nodes, initializers=(), shape=(4, 8), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_minus_infinity_is_not_nan():
    x = np.array([1.0, -np.inf, 2.0], np.float32)
    y = np.array([1.0, np.nan, 2.0], np.float32)
    failure, _, _ = compare_outputs("y", x, y, 1e-3, 1e-4)
    assert failure and "NaN positions differ" in failure


def test_plus_and_minus_infinity_differ():
    failure, _, _ = compare_outputs("y", np.array([np.inf], np.float32), np.array([-np.inf], np.float32), 1e-3, 1e-4)
    assert failure


def test_one_huge_element_widens_no_other_elements_tolerance():
    """A rule that deletes a Sigmoid passed when the same output also held 1e4: the tolerance
    scaled with the output's largest element."""
    x = np.concatenate([1 / (1 + np.exp(-np.linspace(-3, 3, 63))), [1e4]]).astype(np.float32)
    y = np.concatenate([np.linspace(-3, 3, 63), [1e4]]).astype(np.float32)
    failure, _, _ = compare_outputs("y", x, y, 1e-3, 1e-4)
    assert failure is not None


def test_rounding_differences_pass():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 256)), rng.standard_normal((256, 64))
    x = (a.astype(np.float32) @ b.astype(np.float32))
    y = (a @ b).astype(np.float32)  # the same product summed in another precision and order
    failure, _, rel = compare_outputs("y", x, y, 1e-3, 1e-4)
    assert failure is None and rel < 1e-5


def test_deleting_a_sigmoid_fails_the_model_check():
    big = numpy_helper.from_array(np.where(np.arange(32).reshape(4, 8) == 0, 1e4, 0).astype(np.float32), "bias")
    original = _model([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Add", ["s", "bias"], ["y"])], [big])
    wrong = _model([helper.make_node("Add", ["x", "bias"], ["y"])], [big])
    report = compare_models(original, wrong, runs=1)
    assert not report.ok


def test_an_overflowing_rewrite_is_caught_by_the_large_set():
    """A softmax written as exp(x) / sum(exp(x)) agrees on normals and overflows on large inputs."""
    original = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)])
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    naive = _model([helper.make_node("Exp", ["x"], ["e"]), helper.make_node("ReduceSum", ["e", "axes"], ["s"]),
                    helper.make_node("Div", ["e", "s"], ["y"])], [axes], opset=18)
    report = compare_models(original, naive, runs=2)
    assert not report.ok and "large inputs" in report.failures[0], report.failures
    assert report.sets[:2] == [InputSet.NORMAL, InputSet.NORMAL]
    assert compare_models(original, naive, runs=2, edges=False).ok  # the normals alone cannot tell


@pytest.mark.parametrize("exact", [False, True])
def test_infinities_compare_exactly_only_in_exact_mode(exact):
    """x - x is 0 in real arithmetic and NaN for an infinite x: the default check admits it
    (real-arithmetic rewrites are the default policy); --exact does not."""
    original = _model([helper.make_node("Sub", ["x", "x"], ["z"]), helper.make_node("Add", ["x", "z"], ["y"])])
    rewritten = _model([helper.make_node("Identity", ["x"], ["y"])])
    report = compare_models(original, rewritten, runs=1, exact=exact)
    assert report.ok != exact
    assert set(EDGE_SETS) <= set(report.sets)
