"""Hugging Face architectures as real ONNX exports, cached: the bench's ``exports`` suite.

Each entry of :data:`EXPORTS` builds a ``transformers`` model from a config object (random
weights, seeded; nothing is downloaded), with the architecture's real hidden sizes and fewer
layers, and exports it with torch's dynamo exporter through :mod:`eqsat_dnn.models.exports`
(static shapes, eager attention, the same quiet export and vector perturbation):

* ``bert``: ``BertModel``, BERT-base sizes (768 hidden, 12 heads, 3072 intermediate);
* ``gpt2``: ``GPT2Model``, GPT-2 small sizes (768, 12 heads);
* ``vit``: ``ViTModel``, ViT-base/16 at 224x224 (197 tokens; input ``pixel_values``);
* ``llama``: ``LlamaModel`` at SmolLM-135M's sizes (576 hidden, 9 query heads, 3 key/value
  heads: GQA; RMSNorm, RoPE, SwiGLU MLP of 1536);
* ``qwen2``: ``Qwen2Model`` at Qwen2-0.5B's sizes (896 hidden, 14 query heads, 2 key/value
  heads, 4864 SwiGLU, biases on q/k/v), with a 32000-token vocabulary instead of 151936 (the
  embedding is a Gather: the vocabulary only changes the file's size, 545 MB of it).

More decoder families (Mistral, Qwen3, Phi-3, Gemma, Gemma 2, Cohere, GPT-NeoX, GPT-J, BLOOM,
OPT, GPT-Neo, Falcon, Helium, Phi, MPT, XGLM), described in :mod:`eqsat_dnn.models.hf_decoders`, are in
:data:`EXPORTS` but not in :data:`SUITE`: the bench runs them when named (``eqsat-dnn bench
--suite exports mistral qwen3``).

Text models take ``input_ids`` and ``attention_mask`` of ``[1, seq]`` (sequence 512 by
default; the last quarter of the mask is padding, as in :func:`exports.example_inputs`) and
give ``last_hidden_state`` (BERT and ViT also ``pooler_output``); decoders run without a KV
cache. :func:`cached_export` keeps one file per configuration under a cache directory, named
by a hash of the transformers config, the shapes and the torch and transformers versions, and
exports it again when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqsat_dnn.models import exports as _ex
from eqsat_dnn.models import hf_decoders as _dec

_FORMAT = 1
"""Bumped when what an export holds changes for the same config and versions."""


@dataclass(frozen=True)
class HFExport:
    """One architecture of the exports suite."""

    name: str
    family: str
    """What it is, for listings and the bench's ``family`` field."""
    ort_model_type: str
    """``model_type`` for onnxruntime's transformers optimizer."""
    ort_note: str = ""
    """Why that type, where the architecture has none of its own."""
    sizes: dict = field(default_factory=dict)
    """Default sizes (real hidden sizes, few layers, sequence 512)."""

    def heads(self, **overrides: Any) -> int:
        return int({**self.sizes, **overrides}["heads"])

    def hidden(self, **overrides: Any) -> int:
        return int({**self.sizes, **overrides}["hidden"])


EXPORTS: dict[str, HFExport] = {e.name: e for e in (
    HFExport("bert", "BERT-base encoder (transformers BertModel)", "bert",
             sizes=dict(layers=2, hidden=768, heads=12, intermediate=3072, vocab=30522, seq=512)),
    HFExport("gpt2", "GPT-2 small decoder (transformers GPT2Model)", "gpt2",
             sizes=dict(layers=2, hidden=768, heads=12, vocab=50257, seq=512)),
    HFExport("vit", "ViT-base/16 224x224 (transformers ViTModel)", "vit",
             sizes=dict(layers=2, hidden=768, heads=12, intermediate=3072, image=224, patch=16)),
    HFExport("llama", "LLaMA-style decoder, SmolLM-135M sizes: GQA 9/3, RMSNorm, RoPE, SwiGLU "
             "(transformers LlamaModel)", "qwen3",
             "onnxruntime's optimizer has no llama type; qwen3 is its closest decoder type (RMSNorm, RoPE, "
             "GQA; on these exports it fuses what 'bert' fuses: (Skip)SimplifiedLayerNormalization)",
             sizes=dict(layers=2, hidden=576, heads=9, kv_heads=3, intermediate=1536, vocab=49152, seq=512)),
    HFExport("qwen2", "Qwen2 decoder, Qwen2-0.5B sizes: GQA 14/2, RMSNorm, RoPE, SwiGLU, q/k/v bias "
             "(transformers Qwen2Model; vocabulary 32000)", "qwen3",
             "no qwen2 type in onnxruntime's optimizer; qwen3, its closest, as for llama",
             sizes=dict(layers=2, hidden=896, heads=14, kv_heads=2, intermediate=4864, vocab=32000, seq=512)),
)}

SUITE: tuple[str, ...] = tuple(EXPORTS)
"""The bench's ``exports`` suite, in order."""

EXPORTS.update({name: HFExport(name, family, ort_type, note, sizes=dict(sizes))
                for name, (_, _, family, ort_type, note, sizes, _) in _dec.DECODERS.items()})
# The other decoder families: exported when named, not in the default suite.

ATTENTIONS = ("sdpa", "eager")
"""transformers' attention implementations an export can be built with."""

ATTENTION = "sdpa"
"""The default: transformers' own, what a user's export has (torch's exporter decomposes SDPA into
``MatMul``s with the scale on Q and on K, K^T as a 3-D transpose, and the ``Where(IsNaN(.))`` guard).
``"eager"`` is the explicit ``MatMul -> scale -> mask -> Softmax -> MatMul`` of the modeling code.
Families without an SDPA path (:data:`~eqsat_dnn.models.hf_decoders.EAGER_ONLY`) are eager either way."""


def _check_attention(attention: str) -> None:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, not {attention!r}")


TINY: dict[str, dict] = {
    "bert": dict(layers=1, hidden=64, heads=4, intermediate=128, vocab=97, seq=16),
    "gpt2": dict(layers=1, hidden=64, heads=4, vocab=97, seq=16),
    "vit": dict(layers=1, hidden=64, heads=4, intermediate=128, image=32, patch=8),
    "llama": dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=97, seq=16),
    "qwen2": dict(layers=1, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=97, seq=16),
    **{name: dict(tiny) for name, (*_, tiny) in _dec.DECODERS.items()},
}
"""Tiny sizes for tests (one layer, hidden 64, sequence 16; ViT: 32x32 image, 17 tokens)."""


def get(name: str) -> HFExport:
    try:
        return EXPORTS[name]
    except KeyError:
        from eqsat_dnn.errors import InputError

        raise InputError(f"unknown export {name!r} (choose from {', '.join(EXPORTS)})") from None


def check_sizes(name: str, overrides: dict) -> dict:
    """The sizes of ``name`` with ``overrides``; :class:`ValueError` for unknown or bad ones."""
    entry = get(name)
    unknown = set(overrides) - set(entry.sizes)
    if unknown:
        raise ValueError(f"{name}: unknown size(s) {sorted(unknown)} (known: {sorted(entry.sizes)})")
    sizes = {**entry.sizes, **overrides}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, not {value!r}")
    if sizes["hidden"] % sizes["heads"]:
        raise ValueError(f"hidden ({sizes['hidden']}) must be a multiple of heads ({sizes['heads']})")
    if "kv_heads" in sizes and sizes["heads"] % sizes["kv_heads"]:
        raise ValueError(f"heads ({sizes['heads']}) must be a multiple of kv_heads ({sizes['kv_heads']})")
    return sizes


def config(name: str, attention: str = ATTENTION, **overrides: int) -> Any:
    """The transformers config object ``name`` is built from (``attention``: see :data:`ATTENTION`; no cache)."""
    if name in ("bert", "gpt2"):
        raise ValueError(f"{name} is built by eqsat_dnn.models.exports; see config_key")
    _check_attention(attention)
    _, transformers = _ex._require()
    s = check_sizes(name, overrides)
    with _ex._quiet():
        if name in _dec.DECODERS:
            return _dec.config(transformers, name, s, attention)
        if name == "vit":
            return transformers.ViTConfig(
                hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                intermediate_size=s["intermediate"], image_size=s["image"], patch_size=s["patch"],
                attn_implementation=attention)
        common = dict(
            vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
            num_key_value_heads=s["kv_heads"], max_position_embeddings=max(2048, s["seq"]),
            rms_norm_eps=1e-5, use_cache=False, attn_implementation=attention,
            bos_token_id=0, eos_token_id=min(2, s["vocab"] - 1), pad_token_id=None)
        if name == "llama":
            return transformers.LlamaConfig(**common)
        if name == "qwen2":
            return transformers.Qwen2Config(**common, use_sliding_window=False)
    raise AssertionError(name)


def config_key(name: str, attention: str = ATTENTION, **overrides: int) -> str:
    """The cache key: a hash of the config (the attention with it), the shapes, and the torch and
    transformers versions."""
    torch, transformers = _ex._require()
    s = check_sizes(name, overrides)
    if name in ("bert", "gpt2"):
        _check_attention(attention)
        described = {"builder": f"exports.{name}_module", "sizes": s, "attention": attention}
    else:
        cfg = config(name, attention, **overrides)
        described = {"config": json.loads(cfg.to_json_string(use_diff=False)),
                     "attention": cfg._attn_implementation}
        described["config"].pop("transformers_version", None)
        described["sizes"] = s
    described.update(name=name, format=_FORMAT, torch=torch.__version__, transformers=transformers.__version__)
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_and_inputs(name: str, attention: str = ATTENTION,
                      **overrides: int) -> tuple[Any, tuple[Any, ...], list[str], list[str]]:
    """``(module, example inputs, input names, output names)``: the eval-mode torch module that
    :func:`export` exports, and the inputs it is traced with."""
    torch, transformers = _ex._require()
    _check_attention(attention)
    s = check_sizes(name, overrides)
    if name == "bert":
        module = _ex.bert_module(**{k: s[k] for k in ("layers", "hidden", "heads", "intermediate", "vocab", "seq")},
                                 attn_implementation=attention)
        return (module, _ex.example_inputs(vocab=s["vocab"], seq=s["seq"]), ["input_ids", "attention_mask"],
                list(_ex.BERT_OUTPUTS))
    if name == "gpt2":
        module = _ex.gpt2_module(**{k: s[k] for k in ("layers", "hidden", "heads", "vocab", "seq")},
                                 attn_implementation=attention)
        return (module, _ex.example_inputs(vocab=s["vocab"], seq=s["seq"]), ["input_ids", "attention_mask"],
                list(_ex.GPT2_OUTPUTS))
    cfg = config(name, attention, **overrides)
    with _ex._quiet():
        torch.manual_seed(_ex._SEED)
        if name == "vit":
            inner = transformers.ViTModel(cfg)
        elif name == "llama":
            inner = transformers.LlamaModel(cfg)
        elif name in _dec.DECODERS:
            inner = _dec.model(transformers, name, cfg)
        else:
            inner = transformers.Qwen2Model(cfg)
    _ex._perturb_vectors(torch, inner)

    if name == "vit":
        class ViTExport(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values: Any) -> tuple[Any, Any]:
                out = self.inner(pixel_values=pixel_values, return_dict=True)
                return out.last_hidden_state, out.pooler_output

        gen = torch.Generator().manual_seed(_ex._SEED)
        pixels = torch.randn(1, 3, s["image"], s["image"], generator=gen)
        return ViTExport(inner).eval(), (pixels,), ["pixel_values"], ["last_hidden_state", "pooler_output"]

    class DecoderExport(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True)
            return out.last_hidden_state

    return (DecoderExport(inner).eval(), _ex.example_inputs(vocab=s["vocab"], seq=s["seq"]),
            ["input_ids", "attention_mask"], ["last_hidden_state"])


def export(name: str, path: str | Path, *, dynamic: bool = False, attention: str = ATTENTION,
           **overrides: int) -> Path:
    """Export ``name`` (sizes overridden by ``overrides``) with the dynamo exporter to ``path``;
    ``dynamic`` makes the batch and sequence dims of the token inputs symbolic (ViT: the batch of
    its images)."""
    torch, _ = _ex._require()
    module, inputs, input_names, output_names = module_and_inputs(name, attention, **overrides)
    if dynamic and input_names not in (["input_ids", "attention_mask"], ["pixel_values"]):
        raise ValueError(f"{name}: dynamic axes are for token inputs (input_ids, attention_mask) or images")
    return _ex._export(torch, module, inputs, output_names, path, dynamic=dynamic, exporter="dynamo",
                       input_names=tuple(input_names))


def cached_export(name: str, cache_dir: str | Path, attention: str = ATTENTION, **overrides: int) -> Path:
    """The export of ``name`` under ``cache_dir`` (``<name>-<key>.onnx``), exported when absent.

    The file is written under a temporary name and renamed, so an interrupted export leaves no
    half file behind (nor a stray ``.data`` file: models this size keep their weights inside)."""
    cache = Path(cache_dir)
    path = cache / f"{name}-{config_key(name, attention, **overrides)}.onnx"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".onnx", dir=cache)
    os.close(fd)
    try:
        export(name, tmp, attention=attention, **overrides)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
