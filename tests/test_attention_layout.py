"""Attention and rotary embedding without head transposes: a head split ([B, S, N*D] reshaped to
[B, S, N, D], transposed to [B, N, S, D]) rotated by RotaryEmbedding and fed to Attention, its
output merged back, becomes the ops' 3-D forms (RotaryEmbedding's ``num_heads``, Attention's
``q_num_heads``/``kv_num_heads``), GQA and the additive mask included, with equal outputs; a packed
Q/K/V projection split in three (GPT-2) becomes onnxruntime's Attention, without the Split."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.cost import RooflineCostModel
from eqsat_dnn.cost.shapes import attention_flops
from eqsat_dnn.eqsat.rules import library_dir, parse_rule_file
from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.ir.graph import Node, TensorType
from eqsat_dnn.ir.language import CONTRIB, Target
from eqsat_dnn.pipeline import optimize
from eqsat_dnn.verify import check_rules

B, S, D = 1, 16, 8
F = TensorProto.FLOAT


def _block(heads: int, kv_heads: int, norm: str = "") -> onnx.ModelProto:
    """Projections, head splits, RotaryEmbedding (4-D) on Q and K, Attention (4-D, GQA where
    ``kv_heads`` is fewer) with an additive mask, head merge: what the rotary and attention rules
    leave of a LLaMA export before the 3-D forms. ``norm`` normalizes Q and K per head, before the
    head transpose (``"rms-before"``, ``"layer-before"``: Qwen3, Persimmon) or after it
    (``"rms-after"``: Gemma 3)."""
    rng = np.random.default_rng(0)
    hidden, kv_hidden = heads * D, kv_heads * D

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    inits = [w("wq", hidden, hidden), w("wk", hidden, kv_hidden), w("wv", hidden, kv_hidden),
             w("cos", B, S, D // 2), w("sin", B, S, D // 2),
             ints("split_q", [B, S, heads, D]), ints("split_kv", [B, S, kv_heads, D]), ints("merge", [B, S, -1]),
             w("gamma", D), w("beta", D)]
    n = helper.make_node

    def normalized(name: str, source: str, where: str) -> list:
        if not norm.endswith(where) or name == "v":
            return [n("Identity", [source], [name])]
        if norm.startswith("layer"):
            return [n("LayerNormalization", [source, "gamma", "beta"], [name], axis=-1, epsilon=1e-5)]
        return [n("RMSNormalization", [source, "gamma"], [name], axis=-1, epsilon=1e-6)]

    nodes = []
    for name, weight, split in (("q", "wq", "split_q"), ("k", "wk", "split_kv"), ("v", "wv", "split_kv")):
        nodes += [n("MatMul", ["x", weight], [f"{name}3"]), n("Reshape", [f"{name}3", split], [f"{name}s"]),
                  *normalized(f"{name}n", f"{name}s", "before"),
                  n("Transpose", [f"{name}n"], [f"{name}t"], perm=[0, 2, 1, 3]),
                  *normalized(f"{name}4", f"{name}t", "after")]
    nodes += [n("RotaryEmbedding", ["q4", "cos", "sin"], ["qr"]), n("RotaryEmbedding", ["k4", "cos", "sin"], ["kr"]),
              n("Attention", ["qr", "kr", "v4", "mask"], ["o4"], scale=D ** -0.5),
              n("Transpose", ["o4"], ["ot"], perm=[0, 2, 1, 3]), n("Reshape", ["ot", "merge"], ["y"])]
    graph = helper.make_graph(nodes, "block", [
        helper.make_tensor_value_info("x", F, [B, S, hidden]), helper.make_tensor_value_info("mask", F, [1, 1, S, S])],
        [helper.make_tensor_value_info("y", F, [B, S, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=11)


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _feeds(heads: int) -> dict:
    rng = np.random.default_rng(1)
    mask = np.where(np.tril(np.ones((S, S), bool)), 0.0, -1e9).astype(np.float32)[None, None]
    mask[..., :2, :] = np.finfo(np.float32).min  # rows padded throughout: the softmax's row, not zeros
    return {"x": rng.standard_normal((B, S, heads * D)).astype(np.float32), "mask": mask}


@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (4, 4)])
def test_head_splits_become_3d_rotary_and_attention(heads, kv_heads):
    model = _block(heads, kv_heads)
    optimized, report = optimize(model, cost_model=RooflineCostModel(), check=1)
    assert report.check is not None and report.check.ok
    ops = report.ops_after
    assert "Transpose" not in ops and "Reshape" not in ops, ops
    nodes = {nd.op_type: nd for nd in optimized.graph.node}
    attrs = {op: {a.name: helper.get_attribute_value(a) for a in nodes[op].attribute}
             for op in ("Attention", "RotaryEmbedding") if op in nodes}
    if kv_heads != heads:  # MultiHeadAttention cannot group heads; the 3-D Attention can
        assert attrs["Attention"]["q_num_heads"] == heads and attrs["Attention"]["kv_num_heads"] == kv_heads
    else:
        assert "Attention" in nodes or "MultiHeadAttention" in nodes
    assert ops.get("RotaryEmbedding") == 2 and attrs["RotaryEmbedding"]["num_heads"] in (heads, kv_heads)
    feeds = _feeds(heads)
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["rms-before", "rms-after", "layer-before"])
def test_per_head_normalized_q_and_k_reach_the_3d_forms(norm):
    """Q and K normalized per head, before or after the head transpose, still reach the 3-D
    rotary and attention: no head transpose is left, and the outputs are the model's."""
    model = _block(4, 2, norm)
    optimized, report = optimize(model, cost_model=RooflineCostModel(), check=1)
    assert report.check is not None and report.check.ok
    ops = report.ops_after
    assert "Transpose" not in ops, ops
    assert ops.get("RotaryEmbedding") == 2 and ops.get("Attention") == 1, ops
    feeds = _feeds(4)
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)


def test_the_3d_forms_cost_the_same_work_without_the_transposes():
    q4, k4 = TensorType(F, (1, 9, 512, 64)), TensorType(F, (1, 3, 512, 64))
    q3, k3 = TensorType(F, (1, 512, 576)), TensorType(F, (1, 512, 192))
    heads = {"q_num_heads": 9, "kv_num_heads": 3}
    assert attention_flops("Attention", heads, [q3, k3, k3]) == attention_flops("Attention", {}, [q4, k4, k4]) > 0
    cost = RooflineCostModel()
    fused3 = cost.node_cost(Node("Attention", ["q", "k", "v"], ["o"], {"scale": 0.125, **heads}), [q3, k3, k3], q3)
    fused4 = cost.node_cost(Node("Attention", ["q", "k", "v"], ["o"], {"scale": 0.125}), [q4, k4, k4], q4)
    transpose = cost.node_cost(Node("Transpose", ["q"], ["o"], {"perm": [0, 2, 1, 3]}), [q4], q4)
    assert fused3 == pytest.approx(fused4) and transpose > 0


def test_the_layout_rules_verify():
    """The 3-D rules fire on random instances and both sides agree in onnxruntime, also on the
    checker's edge inputs (they only move data)."""
    names = {"attention-heads-3d", "rope-heads-3d", "reshape-same-shape", "attention-packed-projection",
             "attention-packed-projection-unmasked"}
    rules = [r for family in ("attention", "rotary", "layout", "attention_packed")
             for r in parse_rule_file(library_dir() / f"{family}.egg") if r.name in names]
    assert {r.name for r in rules} == names
    results = check_rules(rules, trials=1, attempts=3000)  # the packed projection's instances are rare
    status = {r.rule.name: (r.status.value, r.checked) for r in results}
    assert all(state == "verified" and checked >= 1 for state, checked in status.values()), status


def _gpt2_block(heads: int) -> onnx.ModelProto:
    """GPT-2's attention as dynamo writes it: one packed projection X W + bias on X flattened to
    [B*S, H] (W [H, 3H]: Q, K and V side by side), unflattened, split in three along the last axis,
    head splits, K^T, scaled scores, an additive causal mask, softmax, head merge."""
    rng = np.random.default_rng(0)
    hidden = heads * D

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    inits = [numpy_helper.from_array((rng.standard_normal((hidden, 3 * hidden)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(3 * hidden).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(D ** -0.5, np.float32), "scale"),
             ints("flat", [B * S, hidden]), ints("unflat", [B, S, 3 * hidden]), ints("thirds", [hidden] * 3),
             ints("split", [B, S, heads, D]), ints("merge", [B, S, hidden])]
    n = helper.make_node
    nodes = [n("Reshape", ["x", "flat"], ["xf"]), n("MatMul", ["xf", "w"], ["p"]), n("Add", ["p", "b"], ["pb"]),
             n("Reshape", ["pb", "unflat"], ["qkv"]), n("Split", ["qkv", "thirds"], ["q3", "k3", "v3"], axis=2)]
    for name in "qkv":
        nodes += [n("Reshape", [f"{name}3", "split"], [f"{name}s"]),
                  n("Transpose", [f"{name}s"], [f"{name}4"], perm=[0, 2, 3, 1] if name == "k" else [0, 2, 1, 3])]
    nodes += [n("MatMul", ["q4", "k4"], ["scores"]), n("Mul", ["scores", "scale"], ["scaled"]),
              n("Add", ["scaled", "mask"], ["masked"]), n("Softmax", ["masked"], ["p4"], axis=-1),
              n("MatMul", ["p4", "v4"], ["o4"]), n("Transpose", ["o4"], ["ot"], perm=[0, 2, 1, 3]),
              n("Reshape", ["ot", "merge"], ["y"])]
    graph = helper.make_graph(nodes, "gpt2_attention", [
        helper.make_tensor_value_info("x", F, [B, S, hidden]), helper.make_tensor_value_info("mask", F, [1, 1, S, S])],
        [helper.make_tensor_value_info("y", F, [B, S, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def test_a_packed_qkv_projection_becomes_onnxruntimes_attention():
    """GPT-2's packed projection and its Split go into onnxruntime's Attention (com.microsoft),
    which reads X, the packed weights and the bias itself; ONNX's Attention of the same name stays
    distinct (the ONNX target never gets it)."""
    model = _gpt2_block(heads=4)
    optimized, report = optimize(model, cost_model=RooflineCostModel(), check=1)
    assert report.check is not None and report.check.ok
    ops = report.ops_after
    assert ops.get("com.microsoft.Attention") == 1 and "Attention" not in ops, ops
    assert "Split" not in ops and "MatMul" not in ops, ops
    (node,) = [nd for nd in optimized.graph.node if nd.op_type == "Attention"]
    assert node.domain == CONTRIB and list(node.input[1:3]) == ["w", "b"]
    feeds = _feeds(4)
    np.testing.assert_allclose(_run(optimized, feeds), _run(model, feeds), rtol=1e-4, atol=1e-5)
    # read back, it is the same op (not ONNX's Attention, nor an opaque node)
    assert {nd.op for nd in load_model(optimized).nodes if nd.op_type != "Opaque"} >= {"ProjectedAttention"}
    standard, report = optimize(model, cost_model=RooflineCostModel(), check=1, target=Target.ONNX)
    assert "com.microsoft.Attention" not in report.ops_after and all(not nd.domain for nd in standard.graph.node)
