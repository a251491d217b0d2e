"""The rule checker's parts: s-expressions as data, and instances drawn from what the op
vocabulary declares (no op names in the checker)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from eqsat_dnn.ir.language import OPS, OpSpec
from eqsat_dnn.verify.sampling import DOMAINS, HOOKS, SHAPES
from eqsat_dnn.ir.sexpr import Str, Sym, parse_all, parse_sexp, parse_term, to_source
from tests.conftest import rule_instances


def test_parse_term_is_one_hashable_expression():
    term = parse_term("(concat 1 2 ?x (relu ?y))")
    assert term == ("concat", 1, 2, "?x", ("relu", "?y"))
    assert isinstance(term[0], Sym) and {term: 1}[("concat", 1, 2, "?x", ("relu", "?y"))] == 1
    assert to_source(term) == "(concat 1 2 ?x (relu ?y))"
    assert parse_term("?x") == "?x"
    for bad in ("(a b) (c)", "(a b", "a)", ""):
        with pytest.raises(ValueError):
            parse_term(bad)


def test_parse_all_and_literals():
    forms = parse_all('(a "s\\"q" 1.5) ; comment\n(b -2 NaN)')
    assert len(forms) == 2 and forms[0][1] == Str('s"q') and isinstance(forms[0][1], Str)
    assert forms[1][1] == -2 and np.isnan(forms[1][2])
    assert parse_sexp('(a "s\\"q" 1.5) (b)') == forms[0]
    assert to_source(forms[0]) == '(a "s\\"q" 1.5)'


def test_every_declared_domain_exists():
    for spec in OPS.values():
        for attr in spec.attrs:
            assert attr.domain is None or isinstance(attr.domain, tuple) or attr.domain in DOMAINS, (spec.name, attr)
        for shape in spec.input_shapes:
            assert shape is None or shape in SHAPES, (spec.name, shape)
        assert len(spec.input_shapes) <= len(spec.inputs), spec.name
        assert spec.sampler is None or spec.sampler in HOOKS, spec.name
        assert all(0 <= i < len(spec.inputs) for i in spec.positive), spec.name


def _instances(text: str, trials: int = 60):
    return rule_instances(text, trials=trials)


def test_a_new_elementwise_op_needs_no_checker_change(monkeypatch):
    spec = OpSpec("Softplus", ("X",), shape="same", elementwise=True, description="log(1 + e^x)")
    monkeypatch.setitem(OPS, "Softplus", spec)
    built = _instances('(rewrite (Softplus (Add a b)) (Softplus (Add b a)) :name "probe")')
    assert built and all(i.graph.nodes[-1].op == "Softplus" for i in built)


def test_attribute_domains_are_drawn_from():
    built = _instances('(rewrite (Gelu x m) (Gelu x m) :name "probe")')
    assert {i.attributes["m"] for i in built} == {"none", "tanh"}
    built = _instances('(rewrite (Cast x t s) (Cast x t s) :name "probe")')
    assert {i.attributes["t"] for i in built} == {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.INT64}
    assert {i.attributes["s"] for i in built} == {1}


def test_positive_inputs_are_fed_positive_values():
    built = _instances('(rewrite (Sqrt (Mul x y)) (Sqrt (Mul y x)) :name "probe")')
    assert built and all(not i.positive for i in built)  # a product is not an input
    built = _instances('(rewrite (Add (Sqrt x) (Weight "w")) (Add (Weight "w") (Sqrt x)) :name "probe")')
    assert built and all(i.positive == {"x"} for i in built)
    built = _instances('(rewrite (Sqrt (Weight "w")) (Sqrt (Weight "w")) :name "probe")')
    assert built and all((i.weights["w"] >= 0.5).all() for i in built)
