"""Repeated layers searched once (issue 17 item 2): detection, the per-block choice applied to every
copy, and the whole-graph path for models without repeats."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from eqsat_dnn.blocks import BlockMode, BlockPath
from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.ir.blocks import block_graph, find_blocks, remainder, shared_context
from eqsat_dnn.models.blocks import transformer_layer
from eqsat_dnn.models.builder import ModelBuilder
from eqsat_dnn.models.llama import llama
from eqsat_dnn.pipeline import optimize

N = 16
SEQ = 4


def folding_stack(layers: int, widths: list[int] | None = None) -> onnx.ModelProto:
    """``layers`` times ``x = (x @ Transpose(w_i) + x @ w_i) * s`` between a Relu and a head, where
    ``s = Sigmoid(input)`` is computed once and read by every layer: each layer has a weight
    expression to fold (``Transpose(w_i) + w_i``). With ``widths``, layer ``i`` maps
    ``widths[i]`` to ``widths[i + 1]`` features instead (``x @ w_i + b_i``, then Relu and
    Sigmoid): the same ops at different shapes."""
    b = ModelBuilder("stack", seed=0)
    source = b.input("x", (SEQ, N if widths is None else widths[0]))
    x = b.node("Relu", [source], [b.fresh("x0")])[0]
    s = b.node("Sigmoid", [source], [b.fresh("s")])[0] if widths is None else None
    for i in range(layers):
        if widths is None:
            w = b.weight((N, N), std=1 / np.sqrt(2 * N), base=f"l{i}.w")
            t = b.node("Transpose", [w], [b.fresh(f"l{i}.wt")], perm=[1, 0])[0]
            a = b.node("MatMul", [x, t], [b.fresh(f"l{i}.a")])[0]
            c = b.node("MatMul", [x, w], [b.fresh(f"l{i}.b")])[0]
            y = b.node("Add", [a, c], [b.fresh(f"l{i}.y")])[0]
            x = b.node("Mul", [y, s], [b.fresh(f"l{i}.out")])[0]
        else:
            w = b.weight((widths[i], widths[i + 1]), std=0.3, base=f"l{i}.w")
            bias = b.weight((widths[i + 1],), std=0.1, base=f"l{i}.b")
            y = b.node("MatMul", [x, w], [b.fresh(f"l{i}.mm")])[0]
            y = b.node("Add", [y, bias], [b.fresh(f"l{i}.add")])[0]
            y = b.node("Relu", [y], [b.fresh(f"l{i}.relu")])[0]
            x = b.node("Sigmoid", [y], [b.fresh(f"l{i}.out")])[0]
    width = N if widths is None else widths[-1]
    head = b.weight((width, 3), std=0.3, base="head")
    out = b.node("MatMul", [x, head], ["logits"])[0]
    b.shapes[out], b.dtypes[out] = (SEQ, 3), TensorProto.FLOAT
    return b.model([out])


def run(model: onnx.ModelProto) -> np.ndarray:
    feed = {"x": np.random.default_rng(1).standard_normal((SEQ, N), dtype=np.float32)}
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_detection_finds_the_layers_and_their_interfaces(tmp_path):
    for layers in (2, 4):
        graph = load_model(llama(tmp_path / f"llama{layers}.onnx", seed=0, layers=layers, hidden=32,
                                 intermediate=64, heads=2, vocab=64, batch=1, seq=4))
        (cls,) = find_blocks(graph)
        assert cls.name == "layers" and len(cls.copies) == layers
        assert cls.describe() == f"{layers} x layers ({cls.size} nodes)"
        first, second = cls.copies[:2]
        assert second.inputs[0] == first.outputs[-1]  # the residual stream runs from one copy into the next
        assert len(set(first.weights) & set(second.weights)) < len(first.weights)  # each its own weights
        part = block_graph(graph, first)
        part.lint()
        assert len(part.nodes) == cls.size

    graph = load_model(folding_stack(3))
    (cls,) = find_blocks(graph)
    assert len(cls.copies) == 3 and cls.name == "block" and cls.size == 5
    glue = remainder(graph, [cls])
    glue.lint()
    assert {n.op for n in glue.nodes} == {"Relu", "Sigmoid", "MatMul"}
    assert set(glue.outputs) == {"logits", *cls.copies[0].inputs}  # what the layers read from it


def test_what_every_layer_reads_is_carried_into_the_block_and_computed_once():
    graph = load_model(folding_stack(3))
    (cls,) = find_blocks(graph)
    context = shared_context(graph, cls)
    # s = Sigmoid(x), read by every copy: carried in, so that the rules see what it is
    assert [graph.nodes[n].op for n in context] == ["Sigmoid"]
    part = block_graph(graph, cls.copies[0], context)
    part.lint()
    assert part.nodes[0].op == "Sigmoid" and "x" in part.inputs and len(part.nodes) == cls.size + 1
    # the residual stream differs from copy to copy: never carried
    assert cls.copies[0].inputs[0] in part.inputs

    optimized, report = optimize(folding_stack(3), blocks=BlockMode.ALWAYS, check=1)
    assert report.check.ok and report.ops_after["Sigmoid"] == 1  # each copy's Sigmoid merged into one
    np.testing.assert_allclose(run(optimized), run(folding_stack(3)), rtol=1e-4, atol=1e-5)


def test_no_blocks_across_different_shapes():
    assert find_blocks(load_model(folding_stack(4, widths=[8, 8, 8, 8, 8]))) != []
    assert find_blocks(load_model(folding_stack(4, widths=[8, 12, 16, 20, 24]))) == []


def test_the_choice_of_one_copy_applied_to_every_copy_computes_the_original():
    model = folding_stack(4)
    optimized, report = optimize(model, blocks=BlockMode.ALWAYS, check=1)
    assert report.blocks_path == BlockPath.BLOCKS and report.check.ok
    (block,) = report.blocks
    # x @ (Transpose(w_i) + w_i): one MatMul per layer, over a weight expression that each copy
    # gets over its own weight, folded at export
    assert block.rewrites() == {"Add": -1, "MatMul": -1, "Transpose": -1}
    assert report.ops_after == {"Relu": 1, "Sigmoid": 1, "MatMul": 4 + 1, "Mul": 4}
    assert len(optimized.graph.initializer) >= 4 + 1  # a folded weight per copy, the head
    np.testing.assert_allclose(run(optimized), run(model), rtol=1e-4, atol=1e-5)
    assert report.to_dict()["blocks"][0]["copies"] == 4


def test_rewrites_per_layer_do_not_depend_on_depth():
    found = {}
    for layers in (2, 4):
        _, report = optimize(folding_stack(layers), blocks=BlockMode.ALWAYS, check=1)
        (block,) = report.blocks
        assert block.copies == layers
        found[layers] = (block.rewrites(), block.ops_after, sorted(block.search.saturation.matches_per_rule()))
    assert found[2] == found[4]


def test_auto_searches_the_whole_graph_where_it_fits_and_without_repeats():
    # a tiny stack saturates well within the limits: the whole graph's search is not diluted
    _, report = optimize(folding_stack(2), check=0)
    assert report.blocks_path == BlockPath.FITS and report.blocks

    model = transformer_layer(batch=1, seq=4, hidden=8, heads=2)
    by_default, report = optimize(model, check=1)
    assert report.blocks_path == BlockPath.NO_REPEATS and report.blocks == []
    whole, never = optimize(model, check=1, blocks="never")
    assert never.blocks_path == BlockPath.OFF
    assert report.ops_after == never.ops_after and report.cost_after == pytest.approx(never.cost_after)
    assert [n.op_type for n in by_default.graph.node] == [n.op_type for n in whole.graph.node]


def test_a_stitched_program_that_fails_the_check_falls_back_to_the_whole_graph(monkeypatch):
    from eqsat_dnn import pipeline

    stitch = pipeline.stitch

    def wrong(*args, **kwargs):  # a copy computing something else: Mul(y, s) as Add(y, s)
        result = stitch(*args, **kwargs)
        next(n for n in result.graph.nodes if n.op == "Mul").op = "Add"
        return result

    monkeypatch.setattr(pipeline, "stitch", wrong)
    model = folding_stack(2)  # the whole graph's search grows fast with depth (matmul-assoc across layers)
    optimized, report = optimize(model, blocks=BlockMode.ALWAYS, check=1)
    assert report.blocks_path == BlockPath.FAILED_CHECK and report.check.ok
    assert any("block by block failed the check" in w for w in report.warnings)
    np.testing.assert_allclose(run(optimized), run(model), rtol=1e-4, atol=1e-5)
