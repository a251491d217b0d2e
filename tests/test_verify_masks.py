"""The rule checker on masks and indices (bool and int64 inputs drawn as the ops declare them)
and the ``finite`` float tag: such rules are also run on infinities and NaN, and reported
finite-only where only those break them; ``--exact`` leaves them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from eqsat_dnn.eqsat.rules import Arithmetic, Rule, library_dir, parse_rule_file
from eqsat_dnn.ir.language import Values
from eqsat_dnn.verify import check_rule
from eqsat_dnn.verify.instances import edge_feeds
from tests.conftest import rule_instances

NOT_LESS = '(rewrite (Not (Less a b)) (GreaterOrEqual a b) :name "not-less-probe")'


def _rule(tmp_path: Path, text: str, tag: str) -> Rule:
    path = tmp_path / "probe.egg"
    path.write_text(f";; float: {tag}\n;; probe\n{text}\n")
    (rule,) = parse_rule_file(path)
    return rule


def _instances(text: str):
    return rule_instances(text, dtype=TensorProto.FLOAT, seed=2, trials=40)


def test_masks_and_indices_are_drawn_as_the_ops_declare_them():
    built = _instances('(rewrite (And (Transpose a p) (Transpose b p)) (Transpose (And a b) p) :name "probe")')
    assert built and all(i.values == {"a": Values.BOOL, "b": Values.BOOL} for i in built)
    for inst in built:
        feeds = inst.feeds(np.random.default_rng(0))
        assert feeds["a"].dtype == np.bool_ and feeds["b"].dtype == np.bool_
    built = _instances('(rewrite (Relu (Gather x i ax)) (Gather (Relu x) i ax) :name "probe")')
    assert built
    for inst in built:
        feeds = inst.feeds(np.random.default_rng(0))
        assert feeds["i"].dtype == np.int64 and 0 <= feeds["i"].min() and feeds["i"].max() < min(inst.shapes["x"])
    built = _instances('(rewrite (Cast (Cast x 1 s) 9 s) x :when ((= (dtype x) 9)) :name "probe")')
    assert built and all(i.values.get("x") is Values.BOOL for i in built)


def test_edge_feeds_put_infinities_and_nan_in_float_inputs_only():
    rng = np.random.default_rng(3)
    feeds = {"x": np.zeros((4, 8), np.float32), "m": np.ones((4, 8), bool)}
    seen = set()
    for _ in range(20):
        edged = edge_feeds(feeds, rng)
        assert edged["m"] is feeds["m"]
        x = edged["x"]
        seen |= {"nan" if np.isnan(v) else str(v) for v in x[~np.isfinite(x) | np.isnan(x)].tolist()}
        seen |= {"row" for row in x if np.all(row == -np.inf)}
    assert {"inf", "-inf", "nan", "row"} <= seen


def test_a_finite_rule_that_breaks_only_on_non_finite_inputs_is_finite_only(tmp_path):
    result = check_rule(_rule(tmp_path, NOT_LESS, "finite"), trials=4)
    assert result.status == "verified" and result.finite_only, result.note
    assert result.edge.message.startswith("on non-finite inputs") and "finite only" in result.note


def test_an_exact_rule_must_hold_on_non_finite_inputs_too(tmp_path):
    result = check_rule(_rule(tmp_path, NOT_LESS, "exact"), trials=4)
    assert result.status == "failed" and result.counterexample.message.startswith("on non-finite inputs")
    # and an exact one that does hold there is verified, not finite-only
    result = check_rule(_rule(tmp_path, '(rewrite (Not (Not x)) x :name "not-not-probe")', "exact"), trials=4)
    assert result.status == "verified" and not result.finite_only


def _not_less_model():
    nodes = [helper.make_node("Less", ["a", "b"], ["lt"]), helper.make_node("Not", ["lt"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(v, TensorProto.FLOAT, [3, 4]) for v in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.BOOL, [3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_exact_leaves_finite_rules_out():
    from eqsat_dnn import optimize

    rules = parse_rule_file(library_dir() / "masks.egg")
    assert {r.name: r.arithmetic for r in rules}["not-less"] is Arithmetic.FINITE
    _, report = optimize(_not_less_model(), rules=rules, extractor="greedy", check=1)
    assert report.ops_after == {"GreaterOrEqual": 1}
    _, report = optimize(_not_less_model(), rules=rules, extractor="greedy", check=1, exact=True)
    assert report.ops_after == {"Less": 1, "Not": 1}
