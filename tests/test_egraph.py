"""The e-graph stage: loading is linear, shapes derived in egglog agree with ONNX."""

from __future__ import annotations

import time

import pytest

from eqsat_dnn import TensorEGraph, load_model
from eqsat_dnn.eqsat.egraph import split_forms
from eqsat_dnn.models.examples import attention_block
from eqsat_dnn.ir.graph import Graph, TensorType
from eqsat_dnn.eqsat.saturate import run_analysis
from tests.conftest import light_model


def _derived_types(graph: Graph) -> tuple[dict[str, TensorType], dict[str, TensorType]]:
    """Types egglog derives when only the leaves (inputs, weights, opaque outputs) are typed."""
    leaves = set(graph.inputs) | set(graph.weights)
    leaves |= {o for n in graph.nodes if n.op == "Opaque" for o in n.outputs}
    bare = Graph(graph.nodes, graph.inputs, graph.outputs,
                 {k: v for k, v in graph.types.items() if k in leaves}, graph.weights, graph.model)
    teg = TensorEGraph(bare)
    run_analysis(teg)
    snap = teg.snapshot()
    derived = {}
    for cls, names in snap.names.items():
        if cls in snap.types:
            for name in names:
                derived[name] = snap.types[cls]
    return derived, graph.types


@pytest.mark.parametrize("name", ["resnet50", "inception_v2", "densenet121"])
def test_shape_analysis_agrees_with_onnx_inference(name):
    graph = load_model(str(light_model(name)))
    derived, inferred = _derived_types(graph)
    checked = 0
    for value, t in derived.items():
        if value in inferred and inferred[value].shape is not None and t.shape is not None:
            assert t.shape == inferred[value].shape, value
            assert t.dtype == inferred[value].dtype, value
            checked += 1
    # convs, pools, batch norms, adds, concats and relus all derive their shapes
    assert checked > 0.8 * len(graph.nodes)


def test_shape_analysis_on_the_example():
    graph = load_model(attention_block())
    derived, inferred = _derived_types(graph)
    for value in ("q", "scores", "probs", "ctx_t", "up", "y"):
        assert derived[value].shape == inferred[value].shape


def test_loading_is_linear():
    def load_seconds(layers: int) -> float:
        from onnx import compose
        model = attention_block()
        for i in range(1, layers):
            nxt = compose.add_prefix(attention_block(seed=i), f"l{i}_")
            model = compose.merge_models(model, nxt, io_map=[(model.graph.output[0].name, nxt.graph.input[0].name)])
        graph = load_model(model)
        start = time.perf_counter()
        TensorEGraph(graph)
        return time.perf_counter() - start, len(graph.nodes)

    load_seconds(1)  # warm up
    small, n_small = load_seconds(4)
    large, n_large = load_seconds(16)
    assert n_large == 4 * n_small
    assert large < 6 * small + 0.5, (small, large)


def test_split_forms_keeps_comments_and_lines():
    forms = list(split_forms('; first\n(a "x)" (b))\n\n; lone\n\n; second\n(c)\n'))
    assert [(f, c, line) for f, c, line in forms] == [('(a "x)" (b))', "first", 2), ("(c)", "second", 7)]
    with pytest.raises(ValueError):
        list(split_forms("(a (b)"))


def test_lint_finds_a_malformed_graph():
    """Graph.lint, run by the pipeline between stages, names what is wrong."""
    import dataclasses

    from eqsat_dnn.ir.graph import Node
    from eqsat_dnn.models.examples import attention_block

    graph = load_model(attention_block())
    graph.lint()
    swapped = dataclasses.replace(graph, nodes=graph.nodes[::-1])
    with pytest.raises(ValueError, match="before it is defined"):
        swapped.lint()
    twice = dataclasses.replace(graph, nodes=graph.nodes + [Node("Relu", [graph.inputs[0]], [graph.nodes[0].outputs[0]])])
    with pytest.raises(ValueError, match="defined twice"):
        twice.lint()
    with pytest.raises(ValueError, match="not defined"):
        dataclasses.replace(graph, outputs=["nowhere"]).lint()
