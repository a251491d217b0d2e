"""The rule checker on rules that read one-element constants with ``(scalar t)``: such a tensor
is an initializer of one element, its value drawn to pass the rule's conditions and bound,
exactly, to the f64 variable the right-hand side may use as an attribute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto

from eqsat_dnn.eqsat.rules import Rule, parse_rule_file
from eqsat_dnn.verify import check_rule
from tests.conftest import rule_instances

# a product scaled by a one-element constant is Gemm's alpha (the constant's value as an attribute)
ALPHA = ('(rule ((= e (Mul (MatMul a b) c)) (= s (scalar c)) (= (vec-length (shape a)) 2) '
         '(= (vec-length (shape b)) 2)) ((union e (Gemm a b (Absent) s 1.0 0 0))) :name "{name}")')
# Relu commutes with a scale only where the scale is positive
RELU = '(rule ((= e (Relu (Mul x c))) (= s (scalar c)) {condition}) ((union e (Mul (Relu x) c))) :name "{name}")'


def _rule(tmp_path: Path, text: str) -> Rule:
    path = tmp_path / "scalars.egg"
    path.write_text(";; float: exact\n;; probe\n" + text + "\n")
    (rule,) = parse_rule_file(path)
    return rule


def _instances(text: str, dtype: int = TensorProto.FLOAT):
    return rule_instances(text, kind="rule", dtype=dtype, seed=1, trials=40)


def test_a_scalar_tensor_is_a_one_element_constant_passing_the_conditions():
    text = ('(rule ((= e (Sqrt (Add x c))) (= eps (scalar c)) (> eps 0.0) (< eps 0.01)) '
            '((union e (Sqrt (Add c x)))) :name "probe")')
    built = _instances(text)
    assert len(built) >= 20
    values = set()
    for inst in built:
        (name,) = [w for w in inst.weights if w.startswith("c")]
        stored = inst.weights[name]
        assert stored.shape in ((), (1,)) and stored.dtype == np.float32 and name not in inst.graph.inputs
        eps = inst.attributes["eps"]
        assert eps == float(stored.reshape(-1)[0]) and 0.0 < eps < 0.01  # the float32 value, exactly
        values.add(eps)
    assert len(values) >= 2  # several small epsilons (1e-5, 1e-6, ...)


def test_a_float64_constant_holds_a_float32_value():
    """ONNX stores float attributes as float32: a float64 constant's value must be one too."""
    built = _instances('(rule ((= e (Add x (Weight "w"))) (= v (scalar (Weight "w")))) ((union e e)) :name "probe")',
                       TensorProto.DOUBLE)
    assert built
    for inst in built:
        w = inst.weights["w"]
        assert w.size == 1 and w.dtype == np.float64 and float(np.float32(w.item())) == w.item() == inst.attributes["v"]


def test_an_attribute_drawn_first_is_the_constant_s_value():
    text = ('(rule ((= e (LayerNormalization x s (Absent) ax eps 1)) (= f (Add e c)) (= eps (scalar c))) '
            '((union f f)) :name "probe")')
    built = _instances(text)
    assert built
    for inst in built:
        (name,) = [w for w in inst.weights if w.startswith("c")]
        (norm,) = [n for n in inst.graph.nodes if n.op == "LayerNormalization"]
        assert norm.attrs["epsilon"] == inst.attributes["eps"] == float(inst.weights[name].reshape(-1)[0])


def test_a_correct_scalar_rule_verifies(tmp_path):
    for text in (ALPHA.format(name="scaled-matmul-is-gemm"),
                 RELU.format(condition="(> s 0.0)", name="relu-positive-scale")):
        result = check_rule(_rule(tmp_path, text), trials=6)
        assert result.status == "verified", (result.note, result.counterexample)


def test_a_wrong_scalar_rule_is_caught(tmp_path):
    result = check_rule(_rule(tmp_path, RELU.format(condition="", name="relu-any-scale")), trials=6)
    assert result.status == "failed" and result.counterexample is not None
    assert result.counterexample.attributes["s"] < 0  # only a negative scale breaks it
    doubled = ALPHA.format(name="alpha-doubled").replace("(Absent) s", "(Absent) (* s 2.0)")
    result = check_rule(_rule(tmp_path, doubled), trials=6)
    assert result.status == "failed" and result.counterexample.message.startswith("values differ")
