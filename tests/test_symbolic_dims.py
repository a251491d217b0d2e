"""Symbolic dims in the e-graph: a sort of their own (``Dim``), never an integer.

A static shape is ``(shape t)``, a ``Vec i64`` of sizes; a shape with a symbolic or unknown dim is
``(dims t)``, a ``Vec Dim``. These tests check the analysis in that form (sizes computed where
they are known, a shape whose dims all become sizes seen as static) and the rules' symbolic
variants (rank reads, compared shapes, integer reads left static)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn import load_model
from eqsat_dnn.eqsat.egraph import TensorEGraph
from eqsat_dnn.eqsat.rules import select_rules
from eqsat_dnn.eqsat.saturate import Limits, run_analysis, saturate
from eqsat_dnn.eqsat.variants import base_name, variants
from eqsat_dnn.ir.prelude import prelude


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _types(model: onnx.ModelProto) -> dict:
    """Shapes from the e-graph's analysis alone (import's, from ONNX inference, left out)."""
    graph = load_model(model)
    known = set(graph.inputs) | set(graph.weights)
    teg = TensorEGraph(replace(graph, types={v: t for v, t in graph.types.items() if v in known}))
    run_analysis(teg)
    snap = teg.snapshot()
    return {v: snap.types[c].shape for c, values in snap.names.items() for v in values if c in snap.types}


def _rule(name: str):
    return next(r for r in select_rules() if r.name == name)


def test_no_integer_stands_for_a_symbol():
    assert "SYMBOL_BASE" not in prelude()
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    u = helper.make_tensor_value_info("u", TensorProto.FLOAT, ["n", None])
    u.type.tensor_type.shape.dim[1].Clear()  # neither a size nor a name
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Slice", ["r", "st", "en", "ax"], ["s"]),
             helper.make_node("Conv", ["s", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Split", ["c", "sizes"], ["p", "q"], axis=0),
             helper.make_node("Relu", ["u"], ["v"])]
    out = [helper.make_tensor_value_info(v, TensorProto.FLOAT, None) for v in ("p", "q", "v")]
    model = _model(nodes, [x, u], out, [w, ints("st", [0]), ints("en", [5]), ints("ax", [2]), ints("sizes", [2, 3])])
    types = _types(model)
    assert types["r"] == ("n", 3, 8, 8)
    assert types["s"] == ("n", 3, 5, 8)  # a static axis sliced
    assert types["c"] == ("n", 4, 5, 8)  # the conv's spatial sizes computed, the batch kept
    assert types["p"] == (2, 4, 5, 8) and types["q"] == (3, 4, 5, 8)  # split along n: static now
    assert types["v"] == ("n", None)


def test_variants():
    # an integer read of a shape (the slice end against the dim) keeps the tensor static
    assert len(variants(_rule("slice-whole").egglog())) == 1
    # a rank read alone becomes (rank t), of either form, in the rule itself
    (assoc,) = variants(_rule("matmul-assoc").egglog())
    assert "(rank a)" in assoc and "(rank b)" in assoc and "shape" not in assoc
    # two groups of compared shapes: the rule and one variant per non-empty set of groups
    forms = variants(_rule("add-of-concats").egglog())
    assert len(forms) == 4 and "(dims a) (dims c)" in forms[3] and "(dims b) (dims d)" in forms[3]
    assert {base_name(f'{n}=>') for n in ("x~dims3", "x")} == {"x"}
    # a shape compared with a literal vector stays static; the rank of the other tensor is read
    (factor,) = variants(_rule("one-element-factor-as-scalar").egglog())
    assert "(shape c) (vec-of 1)" in factor and "(rank x)" in factor


def test_rules_fire_on_symbolic_shapes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    c = numpy_helper.from_array(np.full((1,), 2.0, np.float32), "c")
    a = numpy_helper.from_array(np.ones((4, 4), np.float32), "a")
    b = numpy_helper.from_array(np.ones((4, 4), np.float32), "b")
    nodes = [helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Add", ["x", "m"], ["s"]),
             helper.make_node("MatMul", ["s", "a"], ["t"]), helper.make_node("MatMul", ["m", "b"], ["u"]),
             helper.make_node("Add", ["t", "u"], ["y"])]
    teg = TensorEGraph(load_model(_model(nodes, [x], [y], [c, a, b])))
    report = saturate(teg, select_rules(), Limits(iterations=3))
    fired = {name for it in report.iterations for name, n in it.matches.items() if n}
    assert "one-element-factor-as-scalar" in fired  # x is [n, 4]: its rank is read as (rank x)
    assert "matmul-expand-left" in fired  # (s + ...) @ a: x and m compared as (dims x) (dims m)
    assert not any("~dims" in name for name in fired)  # variants report as their rule
