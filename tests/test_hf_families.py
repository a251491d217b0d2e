"""The decoder families outside the exports suite (:mod:`eqsat_dnn.models.hf_decoders`) at tiny
sizes: each exports, loads and matches torch, and the default optimization passes its check with
the family's decomposed forms fused (attention, RMS norms, rotary embeddings, SiLU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import numpy as np  # noqa: E402
import onnx  # noqa: E402

from eqsat_dnn.models import hf, hf_decoders  # noqa: E402
from eqsat_dnn.pipeline import optimize  # noqa: E402
from eqsat_dnn.runtime.sessions import create_session  # noqa: E402

FAMILIES = tuple(hf_decoders.DECODERS)

#: fused op -> how many per layer the default optimization must choose (one layer at tiny sizes);
#: "attention" counts the fused attention kernels (ONNX Attention, onnxruntime's MultiHeadAttention)
EXPECTED = {
    "mistral": {"attention": 1, "RMSNormalization": 3, "RotaryEmbedding": 2, "QuickGelu": 1},
    # q_norm and k_norm: two RMS norms more, over each head, before the rotary embedding
    "qwen3": {"attention": 1, "RMSNormalization": 5, "RotaryEmbedding": 2, "QuickGelu": 1},
    # q, k and v sliced from one fused projection; gate and up likewise
    "phi3": {"attention": 1, "RMSNormalization": 3, "RotaryEmbedding": 2, "QuickGelu": 1},
    # RMSNorm by (1 + w): the 1 + w folds into the weight at import; MQA (one key/value head)
    "gemma": {"attention": 1, "RMSNormalization": 3, "RotaryEmbedding": 2},
    # attention logits soft-capped: Attention's softcap; four norms a layer, and the final one
    "gemma2": {"attention": 1, "RMSNormalization": 5, "RotaryEmbedding": 2},
    # bias-free LayerNorm (an RMS norm of x - mean(x)); rotary on interleaved pairs
    "cohere": {"attention": 1, "LayerNormalization": 2, "RotaryEmbedding": 2, "QuickGelu": 1},
    # the rotary embedding of a quarter of each head: rotary_embedding_dim
    "neox": {"attention": 1, "RotaryEmbedding": 2},
    # rotary in pairs on a quarter of each head, before the head transpose
    "gptj": {"attention": 1, "RotaryEmbedding": 2, "Gelu": 1},
    # ALiBi: scores per batch x head in 3-D plus the bias, viewed 4-D; BLOOM's factored tanh GELU
    "bloom": {"attention": 1, "Gelu": 1},
    "opt": {"attention": 1},
    # unscaled scores with the causal mask selected in, a global and a local layer: both fused
    "gptneo": {"attention": 2, "Gelu": 2},
    # multi-query from one fused qkv projection, parallel attention and MLP
    "falcon": {"attention": 1, "RotaryEmbedding": 2, "Gelu": 1},
    # RMSNorm exported without its epsilon (1e-8): RMSNormalization with epsilon 0
    "helium": {"attention": 1, "RMSNormalization": 3, "RotaryEmbedding": 2, "QuickGelu": 1},
    # rotary on 40% of each head, parallel attention and MLP
    "phi": {"attention": 1, "RotaryEmbedding": 2, "Gelu": 1},
    # ALiBi plus the mask filled into the scores by masked_fill, nothing added after it
    "mpt": {"attention": 1, "LayerNormalization": 3, "Gelu": 1},
    # a 4-D Q by a 3-D K^T, the softmax and the product by V in 3-D batches of heads
    "xglm": {"attention": 1, "LayerNormalization": 3, "Gelu": 1},
    # multi-query Q, K and V split off one biased projection viewed as [B, 1, S, N]
    "gptbigcode": {"attention": 1, "LayerNormalization": 3, "Gelu": 1},
    # Q and K normalized per head after the head transpose; norms before and after each block
    "gemma3": {"attention": 1, "RMSNormalization": 7, "RotaryEmbedding": 2},
    # Q and K LayerNormed per head before the head transpose; rotary on half of each head
    "persimmon": {"attention": 1, "LayerNormalization": 5, "RotaryEmbedding": 2},
    # rotary in pairs on half of each head: rotary_embedding_dim with interleaved
    "glm": {"attention": 1, "RMSNormalization": 3, "RotaryEmbedding": 2, "QuickGelu": 1},
    # RMSNorm over the whole Q and K projections; norms after attention and MLP, and the final one
    "olmo2": {"attention": 1, "RMSNormalization": 5, "RotaryEmbedding": 2, "QuickGelu": 1},
    # LayerNorm, rotary on a quarter of each head
    "stablelm": {"attention": 1, "LayerNormalization": 3, "RotaryEmbedding": 2, "QuickGelu": 1},
    # biases everywhere, a GELU MLP
    "starcoder2": {"attention": 1, "LayerNormalization": 3, "RotaryEmbedding": 2, "Gelu": 1},
    # scalar multipliers on the embedding, the scores and the residual branches
    "granite": {"attention": 1, "RMSNormalization": 3, "RotaryEmbedding": 2, "QuickGelu": 1},
}

#: decomposed ops that must be gone after the default optimization
GONE = {
    "mistral": {"Softmax", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal"},
    "qwen3": {"Softmax", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal"},
    "phi3": {"Softmax", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal"},
    "gemma": {"Softmax", "Neg", "Pow", "Sqrt", "Reciprocal"},
    "gemma2": {"Softmax", "Neg", "Pow", "Sqrt", "Reciprocal", "Tanh", "Div"},
    "cohere": {"Softmax", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal", "ReduceMean", "Slice", "Concat"},
    "neox": {"Softmax", "Neg", "Slice", "Concat", "Split", "Transpose"},
    "gptj": {"Softmax", "Neg", "Slice", "Concat", "Tanh"},
    "bloom": {"Softmax", "Tanh", "Transpose"},
    "opt": {"Softmax"},
    "gptneo": {"Softmax", "Tanh", "Pow"},
    "falcon": {"Softmax", "Neg", "Concat", "IsNaN", "Transpose"},
    "helium": {"Softmax", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal"},
    "phi": {"Softmax", "Neg", "Concat", "Tanh", "IsNaN"},
    "mpt": {"Softmax", "Transpose"},
    "xglm": {"Softmax", "Transpose", "Max", "Reshape"},
    "gptbigcode": {"Softmax", "Transpose", "Split", "Reshape", "IsNaN"},
    "gemma3": {"Softmax", "Transpose", "Neg", "Pow", "Sqrt", "Reciprocal", "IsNaN"},
    "persimmon": {"Softmax", "Transpose", "Neg", "Concat", "IsNaN"},
    "glm": {"Softmax", "Transpose", "Neg", "Concat", "Slice", "IsNaN", "Pow"},
    "olmo2": {"Softmax", "Transpose", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal", "IsNaN"},
    "stablelm": {"Softmax", "Transpose", "Neg", "Sigmoid", "Slice", "Concat", "IsNaN"},
    "starcoder2": {"Softmax", "Transpose", "Neg", "Slice", "Concat", "IsNaN"},
    "granite": {"Softmax", "Transpose", "Neg", "Sigmoid", "Pow", "Sqrt", "Reciprocal", "IsNaN"},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-families")


def test_families_are_named_exports_outside_the_default_suite():
    assert set(FAMILIES) == set(EXPECTED) == {"mistral", "qwen3", "phi3", "gemma", "gemma2", "cohere", "neox", "gptj",
                                              "bloom", "opt", "gptneo", "falcon", "helium", "phi", "mpt", "xglm",
                                              "gptbigcode", "gemma3", "persimmon", "glm", "olmo2", "stablelm",
                                              "starcoder2", "granite"}
    for name in FAMILIES:
        assert name in hf.EXPORTS and name in hf.TINY and name not in hf.SUITE
        assert hf.get(name).sizes["layers"] == 2 and hf.get(name).sizes["seq"] == 512
    assert hf.config("helium").rms_norm_eps == 1e-8
    assert hf.config("gptneo").attention_layers == ["global", "local"] and hf.config("gptneo").window_size == 256
    assert hf.config("qwen3").head_dim == 128  # Qwen3-0.6B: 16 heads of 128 over 1024 hidden
    assert hf.config("neox").rope_parameters["partial_rotary_factor"] == 0.25
    assert hf.config("granite").attention_multiplier == 1 / 64 and hf.config("granite").residual_multiplier == 0.22


@pytest.mark.parametrize("name", FAMILIES)
def test_family_tiny_export_loads_and_matches_torch(cache, name):
    from tests.test_hf_exports import assert_tiny_export_matches_torch

    assert_tiny_export_matches_torch(cache, name)


def _count(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    counts["attention"] = counts.get("Attention", 0) + counts.get("MultiHeadAttention", 0)
    return counts


@pytest.mark.parametrize("name", FAMILIES)
def test_family_default_optimize_fuses_and_checks(cache, name):
    model = onnx.load(str(hf.cached_export(name, cache, **hf.TINY[name])))
    optimized, report = optimize(model)
    assert report.check is not None and report.check.ok
    counts = _count(optimized)
    for op, n in EXPECTED[name].items():
        assert counts.get(op, 0) == n, (op, counts)
    assert not GONE[name] & set(counts), counts
    if name == "neox":  # rotary on the first quarter of each 16-wide head
        rotary = [n for n in optimized.graph.node if n.op_type == "RotaryEmbedding"]
        attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in rotary]
        assert [a.get("rotary_embedding_dim") for a in attrs] == [4, 4]
    if name == "cohere":  # pairs (2i, 2i + 1) rotated
        rotary = [n for n in optimized.graph.node if n.op_type == "RotaryEmbedding"]
        assert all([a.i for a in n.attribute if a.name == "interleaved"] == [1] for n in rotary)
    if name == "gptj":  # pairs rotated, the first 4 of each 16-wide head
        rotary = [n for n in optimized.graph.node if n.op_type == "RotaryEmbedding"]
        attrs = [{a.name: a.i for a in n.attribute} for n in rotary]
        assert [(a.get("interleaved"), a.get("rotary_embedding_dim")) for a in attrs] == [(1, 4), (1, 4)]
    if name == "phi":  # rotary on 40% of each 16-wide head: 6 of 16 (transformers rounds down to even)
        rotary = [n for n in optimized.graph.node if n.op_type == "RotaryEmbedding"]
        assert [{a.name: a.i for a in n.attribute}.get("rotary_embedding_dim") for n in rotary] == [6, 6]
    if name == "helium":  # the exported norm has no epsilon; neither has the fused one
        norms = [n for n in optimized.graph.node if n.op_type == "RMSNormalization"]
        assert [[a.f for a in n.attribute if a.name == "epsilon"] for n in norms] == [[0.0]] * 3
    if name == "glm":  # pairs rotated, the first half (8) of each 16-wide head
        rotary = [n for n in optimized.graph.node if n.op_type == "RotaryEmbedding"]
        attrs = [{a.name: a.i for a in n.attribute} for n in rotary]
        assert [(a.get("interleaved"), a.get("rotary_embedding_dim")) for a in attrs] == [(1, 8), (1, 8)]
    if name == "gemma2":  # the soft cap on the logits
        attention = [n for n in optimized.graph.node if n.op_type == "Attention"]
        assert [onnx.helper.get_attribute_value(a) for a in attention[0].attribute if a.name == "softcap"] == [50.0]


def test_a_soft_capped_attention_costs_what_onnxruntime_makes_it_cost():
    """onnxruntime's CPU Attention with a softcap runs about 3x slower than without: the CPU
    roofline says so (Gemma 2 at its sizes keeps its decomposed scores), the GPU ones do not."""
    from eqsat_dnn.cost import GPU_PROFILES
    from eqsat_dnn.cost.roofline import RooflineCostModel
    from eqsat_dnn.ir.graph import Node, TensorType

    q, kv = TensorType(1, (1, 8, 512, 256)), TensorType(1, (1, 4, 512, 256))
    mask = TensorType(1, (1, 1, 512, 512))

    def cost(model, softcap):
        node = Node("Attention", ["q", "k", "v", "m"], ["y"], {"scale": 0.0625, "softcap": softcap})
        return model.node_cost(node, [q, kv, kv, mask], q)

    cpu = RooflineCostModel()
    assert cost(cpu, 50.0) > 2.5 * cost(cpu, 0.0)
    gpu = RooflineCostModel(GPU_PROFILES["h100"])
    assert cost(gpu, 50.0) == cost(gpu, 0.0)


@pytest.mark.parametrize("name", ["mpt", "gptneo", "bloom", "xglm"])
def test_fully_masked_rows_match_after_optimization(cache, name):
    """Left padding masks the first query rows throughout (every key they may see is padding):
    the original's softmax gives them a uniform row. The optimized model must too, whichever mask
    the fused attention reads (a mask's floor stays on a sum whose addend is itself a mask)."""
    model = onnx.load(str(hf.cached_export(name, cache, **hf.TINY[name])))
    optimized, _ = optimize(model, check=0)
    seq = hf.TINY[name]["seq"]
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, hf.TINY[name]["vocab"], (1, seq)).astype(np.int64),
             "attention_mask": np.array([[0] * 4 + [1] * (seq - 4)], np.int64)}
    want = create_session(model, optimize=True, threads=1).run(None, feeds)
    got = create_session(optimized, optimize=True, threads=1).run(None, feeds)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
