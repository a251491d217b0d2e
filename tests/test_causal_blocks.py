"""Causal attention in eight row blocks: a decoder's Attention under its causal mask (a folded lower-
triangular constant And the padding mask, selected into 0 or the float minimum, a per-head bias
added or not) computes only the scores its mask keeps, block by block, with the model's outputs
also on rows padded throughout;
a mask that is not causal keeps one Attention; a block form without its padded-row correction is
caught by the rule checker."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.cost import RooflineCostModel
from eqsat_dnn.eqsat.rules import library_dir, parse_rule_file
from eqsat_dnn.pipeline import optimize
from eqsat_dnn.verify import check_rule

S, D = 512, 64
FILL = -2.0 ** 127
"""The mask's fill as the attention rules floor it (onnxruntime's Attention gives a row masked
throughout with the lowest float zeros, with any other fill the average of V)."""


def _decoder_attention(heads: int, kv_heads: int, causal: bool = True, alibi: bool = False) -> onnx.ModelProto:
    """Attention's 3-D form (GQA where ``kv_heads`` is fewer) under the mask a dynamo export of a
    decoder builds, its fill floored as the attention rules floor it: ``where(keep & padding, 0, -2^127)``, ``keep`` a folded [1, 1, S, S] constant
    (lower-triangular where ``causal``, else with one key beyond the diagonal kept too); with
    ``alibi``, plus BLOOM's per-head bias [1, H, 1, S] (a slope per head times the key's position)."""
    keep = np.tril(np.ones((S, S), bool))
    if not causal:
        keep[3, 4] = True
    n = helper.make_node
    nodes = [
        n("Cast", ["attention_mask"], ["padding"], to=TensorProto.BOOL),
        n("Unsqueeze", ["padding", "axes"], ["padding4"]),
        n("And", ["keep", "padding4"], ["kept"]),
        n("ConstantOfShape", ["no_dims"], ["fill"],
          value=numpy_helper.from_array(np.array([FILL], np.float32), "value")),
        n("Where", ["kept", "zero", "fill"], ["mask"]),
        n("Attention", ["q", "k", "v", "biased" if alibi else "mask"], ["y"], q_num_heads=heads,
          kv_num_heads=kv_heads, scale=D ** -0.5),
    ]
    inits = [numpy_helper.from_array(keep[None, None], "keep"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
             numpy_helper.from_array(np.array([], np.int64), "no_dims"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    if alibi:
        slopes = 2.0 ** -np.arange(1, heads + 1, dtype=np.float32)
        bias = (slopes[:, None] * np.arange(S, dtype=np.float32)[None, :])[None, :, None, :]
        nodes.insert(-1, n("Add", ["mask", "alibi"], ["biased"]))
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "alibi"))
    f = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "decoder_attention", [
        helper.make_tensor_value_info("q", f, [1, S, heads * D]),
        helper.make_tensor_value_info("k", f, [1, S, kv_heads * D]),
        helper.make_tensor_value_info("v", f, [1, S, kv_heads * D]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, S])],
        [helper.make_tensor_value_info("y", f, [1, S, heads * D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=11)


def _feeds(heads: int, kv_heads: int, padded: int) -> dict:
    """Random Q, K and V; the first ``padded`` tokens padding (left padding: those rows keep no key)."""
    rng = np.random.default_rng(padded)
    mask = np.ones((1, S), np.int64)
    mask[:, :padded] = 0
    mask[:, S // 2] = 0  # a padding token among the kept ones
    return {"q": rng.standard_normal((1, S, heads * D)).astype(np.float32),
            "k": rng.standard_normal((1, S, kv_heads * D)).astype(np.float32),
            "v": rng.standard_normal((1, S, kv_heads * D)).astype(np.float32), "attention_mask": mask}


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("heads,kv_heads,alibi", [(4, 4, False), (6, 2, False), (4, 4, True)])
def test_causal_attention_runs_in_row_blocks_with_the_models_outputs(heads, kv_heads, alibi):
    model = _decoder_attention(heads, kv_heads, alibi=alibi)
    optimized, report = optimize(model, cost_model=RooflineCostModel(), check=1)
    assert report.check is not None and report.check.ok
    dims = _dims_after_batch(optimized)
    widths = sorted(dims[node.input[1]][0].dim_value for node in optimized.graph.node if node.op_type == "Attention")
    # eight blocks of S/8 query rows, reading S/8, 2S/8, ..., all S keys
    assert widths == [i * S // 8 for i in range(1, 9)], widths
    for padded in (0, 3, S // 8 + 5):  # none, within the first block, past it
        feeds = _feeds(heads, kv_heads, padded)
        expected = _run(model, feeds)
        np.testing.assert_allclose(_run(optimized, feeds), expected, rtol=1e-4, atol=1e-5)
    # the padded rows are the full kernel's: the average of V over every key, not over a block's
    assert not np.allclose(expected[0, 0], 0.0)


def _dims_after_batch(model: onnx.ModelProto) -> dict[str, list]:
    """Each value's dims after ONNX shape inference (inferred once), from the sequence axis on
    (``[S or T, width]`` of a 3-D attention input)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {info.name: list(info.type.tensor_type.shape.dim)[1:]
            for info in list(inferred.graph.value_info) + list(inferred.graph.input)}


def test_an_attention_whose_mask_keeps_a_later_key_stays_whole():
    model = _decoder_attention(4, 4, causal=False)
    optimized, report = optimize(model, cost_model=RooflineCostModel(), check=1)
    assert report.check is not None and report.check.ok
    assert report.ops_after.get("Attention") == 1 and "Concat" not in report.ops_after, report.ops_after


def test_blocks_without_the_padded_row_correction_are_caught(tmp_path):
    """The block form alone differs on a row that keeps no key: the checker's random causal masks
    have such rows, and it reports the rule failed."""
    (rule,) = [r for r in parse_rule_file(library_dir() / "attention.egg") if r.name == "causal-attention-in-row-blocks"]
    body = rule.text.replace("(union o (Where masked-rows average (Concat rows 1)))", "(union o (Concat rows 1))")
    assert body != rule.text
    path = tmp_path / "scratch.egg"
    path.write_text(body.replace('"causal-attention-in-row-blocks"', '"blocks-without-correction"') + "\n")
    (wrong,) = parse_rule_file(path)
    result = check_rule(wrong, trials=6)
    assert result.status == "failed", (result.note, result.fired)
    assert result.counterexample is not None and result.counterexample.message.startswith("values differ")
