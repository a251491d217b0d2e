"""Fused attention found by equality saturation: exporters' attention becomes onnxruntime's
MultiHeadAttention or ONNX's Attention (opset 23), with equal outputs; the rules verify."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.cost import RooflineCostModel
from eqsat_dnn.cost.shapes import attention_flops
from eqsat_dnn.eqsat.rules import Arithmetic, library_dir, parse_rule_file
from eqsat_dnn.ir.graph import TensorType
from eqsat_dnn.ir.language import CONTRIB, OPS, Target
from eqsat_dnn.pipeline import optimize
from eqsat_dnn.verify import check_rule

B, S, D = 1, 16, 8
RULES = library_dir() / "attention.egg"


def _model(heads: int, kv_heads: int, rope: bool) -> onnx.ModelProto:
    """One attention block as dynamo writes it: projections, head split, K^T, scale on the scores,
    an additive [1, 1, S, S] mask, softmax, head merge; GQA's repeated K/V where ``kv_heads`` is
    fewer than ``heads``, and a RoPE-like factor on the 4-D Q and K when ``rope``."""
    rng = np.random.default_rng(0)
    hidden, kv_hidden, n_rep = heads * D, kv_heads * D, heads // kv_heads

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    inits = [w("wq", hidden, hidden), w("wk", hidden, kv_hidden), w("wv", hidden, kv_hidden),
             numpy_helper.from_array(np.array(D ** -0.5, np.float32), "scale"),
             ints("split_q", [B, S, heads, D]), ints("split_kv", [B, S, kv_heads, D]), ints("merge", [B, S, hidden]),
             w("rope", 1, 1, S, D), ints("axis2", [2]), ints("rep", [B, kv_heads, n_rep, S, D]),
             ints("grouped", [B, heads, S, D])]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q3"]), n("MatMul", ["x", "wk"], ["k3"]), n("MatMul", ["x", "wv"], ["v3"]),
             n("Reshape", ["q3", "split_q"], ["q_split"]), n("Transpose", ["q_split"], ["q4"], perm=[0, 2, 1, 3]),
             n("Reshape", ["k3", "split_kv"], ["k_split"]), n("Reshape", ["v3", "split_kv"], ["v_split"]),
             n("Transpose", ["v_split"], ["v4"], perm=[0, 2, 1, 3])]
    if kv_heads == heads and not rope:
        nodes.append(n("Transpose", ["k_split"], ["kt"], perm=[0, 2, 3, 1]))  # BERT's K^T
        q, v = "q4", "v4"
    else:
        nodes.append(n("Transpose", ["k_split"], ["k4"], perm=[0, 2, 1, 3]))
        q, k = "q4", "k4"
        if rope:
            nodes += [n("Mul", ["q4", "rope"], ["q_rope"]), n("Mul", ["k4", "rope"], ["k_rope"])]
            q, k = "q_rope", "k_rope"
        v = "v4"
        if n_rep > 1:
            for name in (k, v):
                nodes += [n("Unsqueeze", [name, "axis2"], [f"{name}_u"]), n("Expand", [f"{name}_u", "rep"], [f"{name}_e"]),
                          n("Reshape", [f"{name}_e", "grouped"], [f"{name}_g"])]
            k, v = f"{k}_g", f"{v}_g"
        nodes.append(n("Transpose", [k], ["kt"], perm=[0, 1, 3, 2]))
    nodes += [n("MatMul", [q, "kt"], ["scores"]), n("Mul", ["scores", "scale"], ["scaled"]),
              n("Add", ["scaled", "mask"], ["masked"]), n("Softmax", ["masked"], ["p"], axis=-1),
              n("MatMul", ["p", v], ["o4"]), n("Transpose", ["o4"], ["o_t"], perm=[0, 2, 1, 3]),
              n("Reshape", ["o_t", "merge"], ["y"])]
    graph = helper.make_graph(nodes, "attention", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, hidden]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, S, S])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _feeds(heads: int) -> dict:
    rng = np.random.default_rng(1)
    mask = np.where(np.tril(np.ones((S, S), bool)), 0.0, -1e9).astype(np.float32)[None, None]
    return {"x": rng.standard_normal((B, S, heads * D)).astype(np.float32), "mask": mask}


def _optimized(model: onnx.ModelProto, target: Target = Target.ONNXRUNTIME) -> tuple[onnx.ModelProto, dict]:
    optimized, report = optimize(model, cost_model=RooflineCostModel(), check=1, target=target)
    assert report.check is not None and report.check.ok
    return optimized, report.ops_after


def test_dynamo_attention_becomes_multi_head_attention():
    model = _model(heads=2, kv_heads=2, rope=False)
    optimized, ops = _optimized(model)
    assert ops.get("MultiHeadAttention") == 1 and "Softmax" not in ops and "Transpose" not in ops
    assert {imp.domain for imp in optimized.opset_import} >= {CONTRIB}
    feeds = _feeds(2)
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)


def test_the_onnx_target_gets_opset_23_attention_never_mha():
    model = _model(heads=2, kv_heads=2, rope=False)
    optimized, ops = _optimized(model, Target.ONNX)
    assert ops.get("Attention") == 1 and "MultiHeadAttention" not in ops
    assert all(not node.domain for node in optimized.graph.node)
    assert {imp.domain: imp.version for imp in optimized.opset_import}[""] >= 23
    feeds = _feeds(2)
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)


def test_grouped_query_attention_reads_the_kv_heads_unrepeated():
    """GQA with RoPE-like factors on the 4-D Q and K: ONNX's Attention on 3 K/V heads for 6
    query heads (MultiHeadAttention cannot group heads), no Expand left."""
    model = _model(heads=6, kv_heads=3, rope=True)
    optimized, ops = _optimized(model)
    assert ops.get("Attention") == 1 and "Expand" not in ops and "MultiHeadAttention" not in ops
    (node,) = [nd for nd in optimized.graph.node if nd.op_type == "Attention"]
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in onnx.shape_inference.infer_shapes(optimized).graph.value_info}
    assert shapes[node.input[1]][1] == 3  # K keeps its 3 heads
    feeds = _feeds(6)
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)


def test_both_cost_models_see_the_fused_work_but_not_the_scores():
    q4, k4 = TensorType(TensorProto.FLOAT, (1, 12, 512, 64)), TensorType(TensorProto.FLOAT, (1, 4, 512, 64))
    q3 = TensorType(TensorProto.FLOAT, (1, 512, 768))
    unfused = 2 * 2 * 12 * 512 * 512 * 64
    assert attention_flops("Attention", {}, [q4, q4, q4]) == attention_flops(
        "MultiHeadAttention", {"num_heads": 12}, [q3, q3, q3]) > unfused
    assert attention_flops("Attention", {}, [q4, k4, k4]) == attention_flops("Attention", {}, [q4, q4, q4])
    for op in ("MultiHeadAttention", "Attention"):
        assert OPS[op].domain == (CONTRIB if op == "MultiHeadAttention" else "")


def test_the_nan_guard_is_checked_on_finite_inputs_at_the_edge():
    """The family verifies with the rest of the library (tests/test_verify.py); the NaN guard holds
    on finite inputs only, and the checker says so and shows its edge inputs."""
    (guard,) = [check_rule(r) for r in parse_rule_file(RULES) if r.name == "softmax-nan-guard"]
    assert guard.status.value == "verified" and guard.finite_only and guard.edge is not None


def test_rows_padded_with_the_float_minimum_stay_the_softmax_rows():
    """transformers masks padding with the float minimum; a query row masked throughout is then a
    uniform softmax, which onnxruntime's Attention would write as zeros: the rules floor the mask."""
    model = _model(heads=6, kv_heads=3, rope=True)
    optimized, ops = _optimized(model)
    assert ops.get("Attention") == 1 and ops.get("Max") == 1
    feeds = _feeds(6)
    feeds["mask"][..., :2, :] = np.finfo(np.float32).min  # the first two query rows see nothing
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)


def _guard_model(scores: np.ndarray) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    n = helper.make_node
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    io = ([helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scores.shape))],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(scores.shape))])
    guarded = helper.make_graph([n("Softmax", ["s"], ["p"], axis=-1), n("IsNaN", ["p"], ["nan"]),
                                 n("Where", ["nan", "zero", "p"], ["y"])], "guarded", *io, [zero])
    plain = helper.make_graph([n("Softmax", ["s"], ["y"], axis=-1)], "plain", *io)
    return tuple(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
                 for g in (guarded, plain))


def test_the_nan_guard_holds_on_finite_rows_only():
    """The edge the ``finite`` tag stands for: a fully masked row (all -inf) or a NaN score makes
    the softmax NaN and the guarded one 0, so the rule is not ``exact`` and ``--exact`` leaves it
    out; on finite scores, and rows with some -inf, both agree."""
    (rule,) = [r for r in parse_rule_file(RULES) if r.name == "softmax-nan-guard"]
    assert rule.arithmetic is Arithmetic.FINITE
    scores = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    scores[0, 1, 2] = -np.inf  # partly masked: still finite probabilities
    guarded, plain = _guard_model(scores)
    np.testing.assert_array_equal(_run(guarded, {"s": scores}), _run(plain, {"s": scores}))
    for edge in (-np.inf, np.nan, np.inf):
        bad = scores.copy()
        bad[1, 0, :] = edge if edge == -np.inf else scores[1, 0, :]
        bad[1, 0, 0] = edge
        lhs, rhs = _run(guarded, {"s": bad}), _run(plain, {"s": bad})
        assert np.isnan(rhs[1, 0]).all() and (lhs[1, 0] == 0).all(), edge
        np.testing.assert_array_equal(np.delete(lhs.reshape(6, 4), 3, 0), np.delete(rhs.reshape(6, 4), 3, 0))


@pytest.mark.parametrize("op", ["Where", "IsNaN", "Expand"])
def test_the_mask_and_repeat_ops_are_vocabulary(op):
    assert op in OPS and not OPS[op].domain
