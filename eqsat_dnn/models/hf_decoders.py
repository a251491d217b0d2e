"""Decoder families beyond the exports suite: their transformers configs, for :mod:`hf`.

These exports are selectable by name (``eqsat-dnn bench --suite exports mistral qwen3 ...``,
``hf.cached_export(name, ...)``) but are not in the default suite. Each is the family's
``*Model`` (no LM head) built from a config object with random weights, transformers' default
attention (SDPA; eager where the family has no SDPA path, :data:`EAGER_ONLY`) and no cache, at the
sizes of a real small model of the family with 2 layers (vocabularies cut to about 32000 where
larger: the embedding is a Gather, the vocabulary only changes the file):

* ``mistral``: ``MistralModel``, Mistral-7B's head layout (head dim 128, GQA 4:1, SwiGLU,
  no sliding window at 512) at a quarter of its width (1024 hidden, 8/2 heads, 3584 MLP);
* ``qwen3``: ``Qwen3Model`` at Qwen3-0.6B's sizes (1024 hidden, 16/8 heads of 128: the
  attention is 2048 wide), per-head RMSNorm of q and k before RoPE;
* ``phi3``: ``Phi3Model`` at Phi-3-mini's sizes (3072 hidden, 32 heads, 8192 MLP): one fused
  qkv_proj and one gate_up_proj, split after their MatMuls;
* ``gemma``: ``GemmaModel`` at Gemma-2B's sizes (2048 hidden, 8 query heads of 256, one
  key/value head: MQA; 16384 gelu-tanh gated MLP), RMSNorm scaled by ``1 + w`` and the
  embedding by sqrt(hidden);
* ``gemma2``: ``Gemma2Model`` at Gemma-2-2B's sizes (2304 hidden, 8/4 heads of 256, 9216 MLP):
  attention logits soft-capped (``50 * tanh(s / 50)``), norms before and after each block;
* ``cohere``: ``CohereModel``, Command-R's head size (128) at 1024 hidden (8 heads, 2816 MLP):
  LayerNorm without bias, rotary on interleaved pairs, attention and MLP in parallel;
* ``neox``: ``GPTNeoXModel`` at Pythia-160M's sizes (768 hidden, 12 heads, 3072 MLP):
  LayerNorm, rotary on the first quarter of each head, parallel residual, fused qkv;
* ``gptj``: ``GPTJModel``, GPT-J-6B's head layout (4 heads of 256, rotary on the first 64 values
  of each, in pairs, applied in [B, S, H, D] before the head transpose) at 1024 hidden;
* ``bloom``: ``BloomModel`` at bloom-560m's sizes (1024 hidden, 16 heads): ALiBi biases on the
  scores instead of positions, scores per batch x head in 3-D, LayerNorm, tanh GELU;
* ``opt``: ``OPTModel`` at OPT-125M's sizes (768 hidden, 12 heads, 3072 ReLU MLP): LayerNorm,
  learned positions, biases everywhere.
* ``gptneo``: ``GPTNeoModel`` at GPT-Neo-125M's sizes (768 hidden, 12 heads, 3072 MLP): eager only,
  unscaled scores, the causal mask applied by selection (``where(causal, s, min)``) before the
  padding mask is added, its second layer local (a window of half the sequence: GPT-Neo's 256 at 512);
* ``falcon``: ``FalconModel``, Falcon-7B's layout (multi-query: one key/value head of 64, one fused
  qkv projection, attention and MLP in parallel from one LayerNorm) at 1024 hidden (16 heads);
* ``helium``: ``HeliumModel``, Helium-2B's heads of 128 at 1024 hidden (8 heads, 2816 MLP): RMSNorm
  with epsilon 1e-8, which the exporter drops (the norm is exported without one), SwiGLU;
* ``phi``: ``PhiModel`` at Phi-2's head size (80) with 1280 hidden (16 heads, 5120 MLP): LayerNorm,
  rotary on 40% of each head, attention and MLP in parallel, tanh GELU, biases everywhere;
* ``mpt``: ``MptModel``, MPT-7B's heads of 128 at 1024 hidden (8 heads, 4096 MLP): eager only, ALiBi
  biases added to the scaled scores, the mask applied by ``masked_fill`` with nothing added after
  it, one fused qkv projection, LayerNorm without bias, no biases, GELU;
* ``xglm``: ``XGLMModel`` at XGLM-564M's sizes (1024 hidden, 16 heads, 4096 MLP): eager only, BART-style
  attention with the heads merged into the batch (a 4-D Q by a 3-D K^T, the softmax and the product
  by V in 3-D), the masked scores floored at the lowest float, sinusoidal positions, LayerNorm, GELU;
* ``gptbigcode``: ``GPTBigCodeModel``, StarCoder's layout (multi-query: one key/value head, Q, K and V
  split off one biased projection viewed as [B, 1, S, N]) at 1024 hidden (8 heads of 128, 4096 MLP);
* ``gemma3``: ``Gemma3TextModel`` at Gemma-3-1B's sizes (1152 hidden, 4 query heads of 256, one
  key/value head, 6912 MLP): Q and K normalized per head after the head transpose, norms before and
  after each block, sliding-window layers (the window, 512, spans the sequence);
* ``persimmon``: ``PersimmonModel``, Persimmon-8B's heads of 64 at 1024 hidden (16 heads, 4096 MLP):
  Q and K LayerNormed per head, rotary on half of each head, squared-ReLU MLP, biases;
* ``glm``: ``GlmModel``, GLM-4-9B's heads of 128 (GQA 4:1) at 1024 hidden (8/2 heads, 3424 MLP): rotary in
  pairs on half of each head, biases on Q, K and V, SwiGLU from one gate-up projection;
* ``olmo2``: ``Olmo2Model``, OLMo-2's heads of 128 at 1024 hidden (8/2 heads, 2816 MLP): RMSNorm over
  the whole Q and K projections (not per head), norms after attention and MLP, SwiGLU;
* ``stablelm``: ``StableLmModel``, StableLM-2's layout at 1024 hidden (8/2 heads of 128, 2816 MLP):
  LayerNorm, rotary on a quarter of each head, SwiGLU;
* ``starcoder2``: ``Starcoder2Model``, StarCoder2's layout (GQA, LayerNorm, biases everywhere, a GELU MLP)
  at 1024 hidden (8/2 heads of 128, 2816 MLP);
* ``granite``: ``GraniteModel``, Granite-3's scalar multipliers (the embedding by 12, the scores by 1/64
  instead of 1/sqrt(d), each residual branch by 0.22) on a LLaMA layout at 1024 hidden (8/2 heads, 2816 MLP).
"""

from __future__ import annotations

from typing import Any

_GQA_1024 = dict(layers=2, hidden=1024, heads=8, kv_heads=2, intermediate=2816, vocab=32000, seq=512)
"""The sizes of the four families added as a check on unseen ones: 8/2 heads of 128 over 1024 hidden."""
_GQA_TINY = dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=97, seq=16)

#: name -> (transformers config class, model class, family, ort model_type, ort note, default sizes, tiny sizes)
DECODERS: dict[str, tuple[str, str, str, str, str, dict, dict]] = {
    "mistral": (
        "MistralConfig", "MistralModel",
        "Mistral decoder: head dim 128, GQA 8/2, RMSNorm, RoPE, SwiGLU (transformers MistralModel; "
        "Mistral-7B's head layout at 1024 hidden)", "qwen3",
        "no mistral type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=1024, heads=8, kv_heads=2, intermediate=3584, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=97, seq=16)),
    "qwen3": (
        "Qwen3Config", "Qwen3Model",
        "Qwen3 decoder, Qwen3-0.6B sizes: GQA 16/8 of head dim 128, q/k RMSNorm per head, RoPE, "
        "SwiGLU (transformers Qwen3Model; vocabulary 32000)", "qwen3", "",
        dict(layers=2, hidden=1024, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, head_dim=32, intermediate=128, vocab=97, seq=16)),
    "phi3": (
        "Phi3Config", "Phi3Model",
        "Phi-3 decoder, Phi-3-mini sizes: 32 heads, fused qkv_proj and gate_up_proj, RMSNorm, RoPE "
        "(transformers Phi3Model)", "qwen3",
        "onnxruntime's phi type fails on this export (TypeError: 'method' object is not iterable); qwen3, "
        "its closest decoder type, as for llama",
        dict(layers=2, hidden=3072, heads=32, kv_heads=32, intermediate=8192, vocab=32064, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=97, seq=16)),
    "gemma": (
        "GemmaConfig", "GemmaModel",
        "Gemma decoder, Gemma-2B sizes: MQA 8/1 of head dim 256, RMSNorm by (1 + w), gelu-tanh "
        "gated MLP, embedding scaled (transformers GemmaModel; vocabulary 32000)", "qwen3",
        "no gemma type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=2048, heads=8, kv_heads=1, head_dim=256, intermediate=16384, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=1, head_dim=32, intermediate=128, vocab=97, seq=16)),
    "gemma2": (
        "Gemma2Config", "Gemma2Model",
        "Gemma 2 decoder, Gemma-2-2B sizes: GQA 8/4 of head dim 256, attention logits soft-capped at 50, "
        "RMSNorm by (1 + w) before and after attention and MLP, gelu-tanh gated MLP "
        "(transformers Gemma2Model; vocabulary 32000)", "qwen3",
        "no gemma type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=2304, heads=8, kv_heads=4, head_dim=256, intermediate=9216, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=97, seq=16)),
    "cohere": (
        "CohereConfig", "CohereModel",
        "Cohere (Command-R) decoder: head dim 128, bias-free LayerNorm, interleaved rotary, parallel "
        "residual, SwiGLU (transformers CohereModel; Command-R's head size at 1024 hidden, vocabulary 32000)",
        "qwen3", "no cohere type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=1024, heads=8, kv_heads=8, intermediate=2816, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=97, seq=16)),
    "neox": (
        "GPTNeoXConfig", "GPTNeoXModel",
        "GPT-NeoX decoder, Pythia-160M sizes: 12 heads, LayerNorm, partial rotary (25%), parallel "
        "residual, fused qkv (transformers GPTNeoXModel)", "gpt_neox", "",
        dict(layers=2, hidden=768, heads=12, intermediate=3072, vocab=50304, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "gptj": (
        "GPTJConfig", "GPTJModel",
        "GPT-J decoder: heads of 256 with rotary on the first 64 values, in pairs (rotate_every_two) before "
        "the head transpose, parallel residual, LayerNorm, tanh GELU (transformers GPTJModel; GPT-J-6B's "
        "head layout at 1024 hidden, vocabulary 32000)", "gpt2",
        "no gptj type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, GELU) it shares",
        dict(layers=2, hidden=1024, heads=4, intermediate=4096, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "bloom": (
        "BloomConfig", "BloomModel",
        "BLOOM decoder, bloom-560m sizes: 16 heads, ALiBi (no positions: a per-head bias on the scores, "
        "computed per batch x head in 3-D), LayerNorm, tanh GELU with its cube factored "
        "(transformers BloomModel; vocabulary 32000)", "gpt2",
        "no bloom type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, fused qkv, GELU) it shares",
        dict(layers=2, hidden=1024, heads=16, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, vocab=97, seq=16)),
    "opt": (
        "OPTConfig", "OPTModel",
        "OPT decoder, OPT-125M sizes: 12 heads, pre-LayerNorm, learned positions, ReLU MLP "
        "(transformers OPTModel)", "bart",
        "no opt type in onnxruntime's optimizer; bart, whose attention OPT's is",
        dict(layers=2, hidden=768, heads=12, intermediate=3072, vocab=50272, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "gptneo": (
        "GPTNeoConfig", "GPTNeoModel",
        "GPT-Neo decoder, GPT-Neo-125M sizes: 12 heads, unscaled scores masked by selection, a global then "
        "a local layer (window 256), LayerNorm, tanh GELU (transformers GPTNeoModel; vocabulary 32000)", "gpt2",
        "no gpt_neo type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, GELU) it shares",
        dict(layers=2, hidden=768, heads=12, intermediate=3072, vocab=32000, seq=512),
        dict(layers=2, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "falcon": (
        "FalconConfig", "FalconModel",
        "Falcon decoder, Falcon-7B's layout: multi-query (one key/value head of 64), fused qkv, parallel "
        "attention and MLP, LayerNorm, RoPE, GELU (transformers FalconModel; 1024 hidden, vocabulary 32000)",
        "gpt2", "no falcon type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, fused qkv, GELU) it shares",
        dict(layers=2, hidden=1024, heads=16, kv_heads=1, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=1, vocab=97, seq=16)),
    "helium": (
        "HeliumConfig", "HeliumModel",
        "Helium decoder: heads of 128, RMSNorm with epsilon 1e-8 (dropped by the exporter), RoPE, SwiGLU "
        "(transformers HeliumModel; Helium-2B's head size at 1024 hidden, vocabulary 32000)", "qwen3",
        "no helium type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=1024, heads=8, kv_heads=8, head_dim=128, intermediate=2816, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=97, seq=16)),
    "phi": (
        "PhiConfig", "PhiModel",
        "Phi-2-style decoder: heads of 80, rotary on 40% of each, parallel attention and MLP, LayerNorm, "
        "tanh GELU, biases (transformers PhiModel; 1280 hidden, vocabulary 32000)", "gpt2",
        "onnxruntime's phi type fails on this export (TypeError: 'method' object is not iterable); gpt2, whose "
        "layout (LayerNorm, GELU, biases) it shares",
        dict(layers=2, hidden=1280, heads=16, intermediate=5120, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "mpt": (
        "MptConfig", "MptModel",
        "MPT decoder: heads of 128, ALiBi, the mask filled into the biased scores, fused qkv, LayerNorm "
        "without bias, GELU, no biases (transformers MptModel; MPT-7B's head size at 1024 hidden, "
        "vocabulary 32000)", "gpt2",
        "no mpt type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, fused qkv, GELU) it shares",
        dict(layers=2, hidden=1024, heads=8, intermediate=4096, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=256, vocab=97, seq=16)),
    "xglm": (
        "XGLMConfig", "XGLMModel",
        "XGLM decoder, XGLM-564M sizes: 16 heads, BART-style attention in 3-D batches of heads, scores floored "
        "at the lowest float, sinusoidal positions, LayerNorm, GELU (transformers XGLMModel; vocabulary 32000)",
        "bart", "no xglm type in onnxruntime's optimizer; bart, whose attention XGLM's is",
        dict(layers=2, hidden=1024, heads=16, intermediate=4096, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "gptbigcode": (
        "GPTBigCodeConfig", "GPTBigCodeModel",
        "GPT-BigCode (StarCoder) decoder: multi-query attention (one key/value head of 128) split off one "
        "biased projection, learned positions, LayerNorm, tanh GELU (transformers GPTBigCodeModel; 1024 hidden, "
        "vocabulary 32000)", "gpt2",
        "no gpt_bigcode type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, fused qkv, GELU) it shares",
        dict(layers=2, hidden=1024, heads=8, intermediate=4096, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "gemma3": (
        "Gemma3TextConfig", "Gemma3TextModel",
        "Gemma 3 decoder, Gemma-3-1B sizes: MQA 4/1 of head dim 256, Q and K RMS-normed per head, RMSNorm by "
        "(1 + w) before and after attention and MLP, sliding-window layers, gelu-tanh gated MLP "
        "(transformers Gemma3TextModel; vocabulary 32000)", "qwen3",
        "no gemma type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=1152, heads=4, kv_heads=1, head_dim=256, intermediate=6912, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=1, head_dim=16, intermediate=128, vocab=97, seq=16)),
    "persimmon": (
        "PersimmonConfig", "PersimmonModel",
        "Persimmon decoder: heads of 64, Q and K LayerNormed per head, rotary on half of each head, "
        "squared-ReLU MLP, LayerNorm, biases (transformers PersimmonModel; Persimmon-8B's head size at "
        "1024 hidden, vocabulary 32000)", "gpt2",
        "no persimmon type in onnxruntime's optimizer; gpt2, whose layout (LayerNorm, biases) it shares",
        dict(layers=2, hidden=1024, heads=16, intermediate=4096, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16)),
    "glm": (
        "GlmConfig", "GlmModel",
        "GLM-4 decoder: heads of 128, GQA 8/2, rotary in pairs on half of each head, biases on Q, K and V, "
        "RMSNorm, SwiGLU from one gate-up projection (transformers GlmModel; GLM-4-9B's head layout at 1024 "
        "hidden, vocabulary 32000)", "qwen3",
        "no glm type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(layers=2, hidden=1024, heads=8, kv_heads=2, head_dim=128, intermediate=3424, vocab=32000, seq=512),
        dict(layers=1, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=97, seq=16)),
    "olmo2": (
        "Olmo2Config", "Olmo2Model",
        "OLMo-2 decoder: heads of 128, GQA 8/2, RMSNorm over the whole Q and K projections, norms after "
        "attention and MLP, RoPE, SwiGLU (transformers Olmo2Model; 1024 hidden, vocabulary 32000)", "qwen3",
        "no olmo type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(_GQA_1024), dict(_GQA_TINY)),
    "stablelm": (
        "StableLmConfig", "StableLmModel",
        "StableLM decoder: heads of 128, GQA 8/2, LayerNorm, rotary on a quarter of each head, SwiGLU "
        "(transformers StableLmModel; 1024 hidden, vocabulary 32000)", "gpt2",
        "no stablelm type in onnxruntime's optimizer; gpt2, whose LayerNorm it shares",
        dict(_GQA_1024), dict(_GQA_TINY)),
    "starcoder2": (
        "Starcoder2Config", "Starcoder2Model",
        "StarCoder2 decoder: heads of 128, GQA 8/2, LayerNorm, RoPE, biases everywhere, GELU MLP "
        "(transformers Starcoder2Model; 1024 hidden, vocabulary 32000)", "gpt2",
        "no starcoder2 type in onnxruntime's optimizer; gpt2, whose LayerNorm, biases and GELU MLP it shares",
        dict(_GQA_1024), dict(_GQA_TINY)),
    "granite": (
        "GraniteConfig", "GraniteModel",
        "Granite decoder: a LLaMA layout (GQA 8/2, RMSNorm, RoPE, SwiGLU) with Granite-3's multipliers on the "
        "embedding (12), the scores (1/64) and each residual branch (0.22) (transformers GraniteModel; "
        "1024 hidden, vocabulary 32000)", "qwen3",
        "no granite type in onnxruntime's optimizer; qwen3, its closest, as for llama",
        dict(_GQA_1024), dict(_GQA_TINY)),
}


EAGER_ONLY = frozenset({"gemma2", "bloom", "gptneo", "mpt", "xglm"})
"""Families transformers runs with eager attention only (no SDPA path): exported eager whatever is asked."""


def config(transformers: Any, name: str, s: dict, attention: str = "sdpa") -> Any:
    """The transformers config of decoder ``name`` at sizes ``s`` (``attention``: transformers'
    ``attn_implementation``, eager for :data:`EAGER_ONLY`; no cache)."""
    attention = "eager" if name in EAGER_ONLY else attention
    config_class = getattr(transformers, DECODERS[name][0])
    # what every family's config takes under these names; the rest name their sizes their own way
    shared = dict(vocab_size=s["vocab"], use_cache=False, attn_implementation=attention, bos_token_id=0,
                  eos_token_id=min(2, s["vocab"] - 1), pad_token_id=None)
    common = dict(**shared, hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                  max_position_embeddings=max(2048, s["seq"]))
    if name == "gptj":  # rotary on a quarter of each head, as GPT-J-6B's 64 of 256
        head = s["hidden"] // s["heads"]
        return config_class(**shared, n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                            n_inner=s["intermediate"], rotary_dim=max(2, head // 4 // 2 * 2),
                            n_positions=max(2048, s["seq"]), layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0)
    if name == "bloom":  # the MLP is 4 x hidden: no intermediate size
        return config_class(**shared, hidden_size=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                            layer_norm_epsilon=1e-5, hidden_dropout=0.0, attention_dropout=0.0)
    if name == "gptneo":  # a global layer, then a local one: the window is half the sequence (256 at 512)
        return config_class(**shared, hidden_size=s["hidden"], num_layers=s["layers"], num_heads=s["heads"],
                            intermediate_size=s["intermediate"],
                            attention_types=[[[("global", "local")[i % 2]], 1] for i in range(s["layers"])],
                            window_size=max(1, s["seq"] // 2), max_position_embeddings=max(2048, s["seq"]),
                            embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0)
    if name == "falcon":  # Falcon-7B: multi-query, parallel attention, no biases
        return config_class(**common, num_kv_heads=s["kv_heads"], multi_query=s["kv_heads"] == 1,
                            new_decoder_architecture=False, parallel_attn=True, bias=False,
                            layer_norm_epsilon=1e-5, hidden_dropout=0.0, attention_dropout=0.0)
    if name == "mpt":  # the MLP is expansion_ratio x hidden; ALiBi on (MPT's default attention config)
        return config_class(**shared, d_model=s["hidden"], n_layers=s["layers"], n_heads=s["heads"],
                            expansion_ratio=s["intermediate"] // s["hidden"], max_seq_len=max(2048, s["seq"]),
                            resid_pdrop=0.0, emb_pdrop=0.0)
    if name == "xglm":
        return config_class(**shared, d_model=s["hidden"], num_layers=s["layers"], attention_heads=s["heads"],
                            ffn_dim=s["intermediate"], max_position_embeddings=max(2048, s["seq"]),
                            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)
    if name == "gptbigcode":  # multi-query, as StarCoder
        return config_class(**shared, n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
                            n_inner=s["intermediate"], n_positions=max(2048, s["seq"]), multi_query=True,
                            layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if name == "opt":
        return config_class(**common, ffn_dim=s["intermediate"], word_embed_proj_dim=s["hidden"],
                            dropout=0.0, attention_dropout=0.0)
    common["intermediate_size"] = s["intermediate"]
    if name == "neox":
        return config_class(**common, layer_norm_eps=1e-5, use_parallel_residual=True,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "partial_rotary_factor": 0.25})
    if name == "persimmon":  # rotary on half of each head, Q and K LayerNormed per head
        return config_class(**common, layer_norm_eps=1e-5, qk_layernorm=True, hidden_act="relu2",
                            rope_parameters={"rope_type": "default", "rope_theta": 25000.0,
                                             "partial_rotary_factor": 0.5})
    if name == "phi":  # Phi-2: rotary on 40% of each head (32 of 80)
        return config_class(**common, num_key_value_heads=s["heads"], layer_norm_eps=1e-5, resid_pdrop=0.0,
                            embd_pdrop=0.0, attention_dropout=0.0,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "partial_rotary_factor": 0.4})
    if name == "cohere":
        return config_class(**common, num_key_value_heads=s["kv_heads"], layer_norm_eps=1e-5, use_qk_norm=False)
    common.update(num_key_value_heads=s["kv_heads"], rms_norm_eps=1e-5)
    if "head_dim" in s:
        common["head_dim"] = s["head_dim"]
    if name == "mistral":
        return config_class(**common, sliding_window=None)
    if name == "qwen3":
        return config_class(**common, use_sliding_window=False)
    if name == "phi3":
        return config_class(**common, resid_pdrop=0.0, embd_pdrop=0.0, sliding_window=None)
    if name == "helium":  # Helium's own epsilon, 1e-8: the exporter drops it
        return config_class(**{**common, "rms_norm_eps": 1e-8})
    if name == "gemma":
        return config_class(**common)
    if name == "gemma2":  # the sliding window (4096) is longer than the sequence: every layer is global
        return config_class(**common, attn_logit_softcapping=50.0, final_logit_softcapping=None,
                            query_pre_attn_scalar=s["head_dim"], sliding_window=4096)
    if name == "glm":
        return config_class(**common, partial_rotary_factor=0.5, attention_bias=True)
    if name == "olmo2":
        return config_class(**common)
    if name == "stablelm":  # rotary on a quarter of each head, as StableLM-2
        return config_class(**common, partial_rotary_factor=0.25, layer_norm_eps=1e-5)
    if name == "starcoder2":
        return config_class(**common, use_bias=True, norm_epsilon=1e-5, residual_dropout=0.0,
                            embedding_dropout=0.0, attention_dropout=0.0, sliding_window=None)
    if name == "granite":  # Granite-3's multipliers (its logits scaling is the LM head's: no head here)
        return config_class(**common, embedding_multiplier=12.0, attention_multiplier=1 / 64,
                            residual_multiplier=0.22)
    if name == "gemma3":  # Gemma-3-1B's window (512) spans the sequence at 512: every position sees the causal past
        return config_class(**common, query_pre_attn_scalar=s["head_dim"], sliding_window=512,
                            final_logit_softcapping=None, attn_logit_softcapping=None)
    raise AssertionError(name)


def model(transformers: Any, name: str, cfg: Any) -> Any:
    return getattr(transformers, DECODERS[name][1])(cfg)
