"""Real ONNX exports of transformer models, for tests and benchmarks.

Each function builds a Hugging Face ``transformers`` model from a config object
(random weights, seeded with ``torch.manual_seed``; nothing is downloaded),
puts it in eval mode and exports it with ``torch.onnx.export``.  Biases and
LayerNorm scales, which transformers initialises to exactly 0 and 1, are
re-drawn from a seeded generator (see :func:`_perturb_vectors`) so the
exported graph has no aliased initializers and no ``x + 0`` adds.
:func:`bert_module` and :func:`gpt2_module` return the very torch module that
is exported, for comparing outputs.

Exporters:

* ``exporter="dynamo"``: ``dynamo=True`` (torch.export + onnxscript; the
  onnxscript optimizer runs, so the graph has no ``Constant``/``Identity``
  nodes, shape constants become small INT64/BOOL initializers, ``value_info``
  covers nearly every intermediate, and every node carries
  ``metadata_props`` such as ``pkg.torch.onnx.stack_trace``; IR version 10).
  Weights are stored inside the ``.onnx`` file (``external_data=False``;
  torch's default of ``True`` would always write a side ``.data`` file)
  unless the weights come near the 2 GB protobuf limit.
* ``exporter="torchscript"``: ``dynamo=False`` (the legacy tracer; the graph
  keeps ``Constant`` nodes for shapes and scalars, has no ``value_info``;
  IR version 9).

Both exporters default to ONNX opset 20 (default domain only, no local
functions) with torch 2.13.

Inputs are ``input_ids`` (int64, ``[batch, seq]``) and ``attention_mask``
(int64, ``[batch, seq]``, 1 = attend, 0 = padding).  Outputs are
``last_hidden_state`` (float32, ``[batch, seq, hidden]``), plus
``pooler_output`` (``[batch, hidden]``) for BERT.  GPT-2 is exported with
``use_cache=False`` so there are no past-key-value outputs.

``dynamic=True`` makes dims 0 and 1 of both inputs symbolic, named ``batch``
and ``seq`` (both exporters keep these names on inputs and outputs; the
torchscript exporter also loses GPT-2's static hidden size on the output,
which becomes a ``dim_param`` such as ``Reshapelast_hidden_state_dim_2``).

Choices that were needed to get working exports (torch 2.13, transformers
5.x):

* ``attn_implementation="eager"`` by default: the explicit
  ``MatMul -> scale -> add mask -> Softmax -> MatMul`` attention, the classic
  pattern graph optimizers are written against.  ``"sdpa"`` also exports with
  both exporters (it is decomposed into the same ops plus an ``IsNaN``/``Where``
  guard for fully masked rows) and can be asked for.
* The example inputs used for tracing have padding (the last quarter of the
  mask is 0), a precaution: transformers has data-dependent shortcuts that
  drop an all-ones mask, and a tracer that took one would bake a model that
  ignores ``attention_mask``.  (transformers 5.23 detects tracing and keeps
  the mask either way; checked for both exporters and both attentions.)
* The exporters' progress lines, the onnxscript optimizer's "Evaluation
  failed" log lines and tracer warnings are captured and dropped; if the
  export fails the captured text is attached to the exception as a note.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

_EXTRA_HINT = (
    "exporting models needs torch and transformers; "
    "install them with: pip install eqsat-dnn[export]"
)

_EXPORTERS = ("dynamo", "torchscript")

#: Beyond this many bytes of weights the dynamo export stores them externally.
_EXTERNAL_DATA_BYTES = 1_800_000_000

_SEED = 0


def _require() -> tuple[Any, Any]:
    """Import torch and transformers, or raise an ImportError naming the extra."""
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from exc
    return torch, transformers


@contextlib.contextmanager
def _quiet():
    """Silence stdout/stderr prints, warnings and chatty loggers for the block.

    Yields the buffer that collects what was printed, so a failure can show it.
    """
    buf = io.StringIO()
    names = (
        "torch",
        "torch.onnx",
        "torch.export",
        "torch._dynamo",
        "torch.fx",
        "onnxscript",
        "onnx_ir",
        "transformers",
    )
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                yield buf
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _check_exporter(exporter: str) -> None:
    if exporter not in _EXPORTERS:
        raise ValueError(f"exporter must be one of {_EXPORTERS}, not {exporter!r}")


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    if sizes["hidden"] % sizes["heads"]:
        raise ValueError(
            f"hidden ({sizes['hidden']}) must be a multiple of heads ({sizes['heads']})"
        )


def _export(
    torch: Any,
    module: Any,
    inputs: tuple[Any, ...],
    output_names: list[str],
    path: str | Path,
    *,
    dynamic: bool,
    exporter: str,
    input_names: tuple[str, ...] = ("input_ids", "attention_mask"),
    external_data: bool | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_names = list(input_names)
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with _quiet() as buf:
        try:
            with torch.no_grad():
                if exporter == "dynamo":
                    dynamic_shapes = None
                    if dynamic and input_names == ["pixel_values"]:
                        dynamic_shapes = {"pixel_values": {0: "batch"}}
                    elif dynamic:
                        dims = {0: "batch", 1: "seq"}
                        dynamic_shapes = {"input_ids": dims, "attention_mask": dims}
                    torch.onnx.export(
                        module,
                        inputs,
                        str(path),
                        input_names=input_names,
                        output_names=output_names,
                        dynamo=True,
                        dynamic_shapes=dynamic_shapes,
                        external_data=n_bytes > _EXTERNAL_DATA_BYTES if external_data is None else external_data,
                        verbose=False,
                    )
                else:
                    dynamic_axes = None
                    if dynamic:
                        dims = {0: "batch", 1: "seq"}
                        dynamic_axes = {"input_ids": dims, "attention_mask": dims}
                        for name in output_names:
                            dynamic_axes[name] = (
                                {0: "batch", 1: "seq"}
                                if name == "last_hidden_state"
                                else {0: "batch"}
                            )
                    torch.onnx.export(
                        module,
                        inputs,
                        str(path),
                        input_names=input_names,
                        output_names=output_names,
                        dynamo=False,
                        dynamic_axes=dynamic_axes,
                        verbose=False,
                    )
        except Exception as exc:
            captured = buf.getvalue().strip()
            if captured:
                exc.add_note("export output:\n" + captured[-4000:])
            raise
    return path


BERT_OUTPUTS = ("last_hidden_state", "pooler_output")
GPT2_OUTPUTS = ("last_hidden_state",)
LLAMA_OUTPUTS = ("logits",)


def example_inputs(*, vocab: int, batch: int = 1, seq: int = 128) -> tuple[Any, Any]:
    """Deterministic ``(input_ids, attention_mask)`` torch tensors.

    The mask pads the last quarter of every row (see the module docstring for
    why the traced example contains padding).
    """
    torch, _ = _require()
    gen = torch.Generator().manual_seed(_SEED)
    input_ids = torch.randint(0, vocab, (batch, seq), dtype=torch.int64, generator=gen)
    attention_mask = torch.ones(batch, seq, dtype=torch.int64)
    pad = seq // 4
    if pad:
        attention_mask[:, seq - pad :] = 0
    return input_ids, attention_mask


def _perturb_vectors(torch: Any, model: Any) -> None:
    """Give every 1-D parameter (biases, LayerNorm scales) distinct random values.

    transformers initialises biases to 0 and LayerNorm weights to 1, so a fresh
    model has many identical tensors; both exporters then deduplicate them
    (torchscript with ``Identity`` aliases, dynamo by sharing one initializer)
    and every ``x + bias`` adds zeros, a pattern a constant-aware optimizer
    could delete but that trained weights never have.
    """
    gen = torch.Generator().manual_seed(_SEED + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() != 1:
                continue
            noise = 0.02 * torch.randn(param.shape, generator=gen, dtype=param.dtype)
            param.copy_(noise if name.endswith("bias") else 1.0 + noise)


def bert_module(
    *,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    intermediate: int = 3072,
    vocab: int = 30522,
    seq: int = 128,
    attn_implementation: str = "eager",
) -> Any:
    """The eval-mode torch module :func:`export_bert` exports (same seed, same weights).

    ``module(input_ids, attention_mask)`` returns
    ``(last_hidden_state, pooler_output)``.
    """
    _check_sizes(
        layers=layers,
        hidden=hidden,
        heads=heads,
        intermediate=intermediate,
        vocab=vocab,
        seq=seq,
    )
    torch, transformers = _require()
    with _quiet():
        config = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max(512, seq),
            attn_implementation=attn_implementation,
        )
        torch.manual_seed(_SEED)
        model = transformers.BertModel(config)
    _perturb_vectors(torch, model)

    class BertExport(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=True
            )
            return out.last_hidden_state, out.pooler_output

    return BertExport(model).eval()


def gpt2_module(
    *,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    vocab: int = 50257,
    seq: int = 128,
    attn_implementation: str = "eager",
) -> Any:
    """The eval-mode torch module :func:`export_gpt2` exports (same seed, same weights).

    ``module(input_ids, attention_mask)`` returns ``last_hidden_state``.
    """
    _check_sizes(layers=layers, hidden=hidden, heads=heads, vocab=vocab, seq=seq)
    torch, transformers = _require()
    with _quiet():
        config = transformers.GPT2Config(
            vocab_size=vocab,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max(1024, seq),
            # keep the special tokens inside a small test vocabulary
            bos_token_id=min(50256, vocab - 1),
            eos_token_id=min(50256, vocab - 1),
            use_cache=False,
            attn_implementation=attn_implementation,
        )
        torch.manual_seed(_SEED)
        model = transformers.GPT2Model(config)
    _perturb_vectors(torch, model)

    class GPT2Export(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                use_cache=False,
                return_dict=True,
            )
            return out.last_hidden_state

    return GPT2Export(model).eval()


def export_bert(
    path: str | Path,
    *,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    intermediate: int = 3072,
    vocab: int = 30522,
    seq: int = 128,
    batch: int = 1,
    dynamic: bool = False,
    exporter: str = "dynamo",
    attn_implementation: str = "eager",
) -> Path:
    """Export a randomly initialised ``BertModel`` to ``path`` and return the path.

    Inputs ``input_ids`` and ``attention_mask``; outputs ``last_hidden_state``
    and ``pooler_output``.  The defaults are BERT-base.
    """
    _check_exporter(exporter)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, not {batch!r}")
    torch, _ = _require()
    module = bert_module(
        layers=layers,
        hidden=hidden,
        heads=heads,
        intermediate=intermediate,
        vocab=vocab,
        seq=seq,
        attn_implementation=attn_implementation,
    )
    inputs = example_inputs(vocab=vocab, batch=batch, seq=seq)
    return _export(
        torch,
        module,
        inputs,
        list(BERT_OUTPUTS),
        path,
        dynamic=dynamic,
        exporter=exporter,
    )


def export_gpt2(
    path: str | Path,
    *,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    vocab: int = 50257,
    seq: int = 128,
    batch: int = 1,
    dynamic: bool = False,
    exporter: str = "dynamo",
    attn_implementation: str = "eager",
) -> Path:
    """Export a randomly initialised ``GPT2Model`` to ``path`` and return the path.

    Inputs ``input_ids`` and ``attention_mask``; output ``last_hidden_state``
    (no KV cache).  The defaults are GPT-2 small.
    """
    _check_exporter(exporter)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, not {batch!r}")
    torch, _ = _require()
    module = gpt2_module(
        layers=layers,
        hidden=hidden,
        heads=heads,
        vocab=vocab,
        seq=seq,
        attn_implementation=attn_implementation,
    )
    inputs = example_inputs(vocab=vocab, batch=batch, seq=seq)
    return _export(
        torch,
        module,
        inputs,
        list(GPT2_OUTPUTS),
        path,
        dynamic=dynamic,
        exporter=exporter,
    )


def llama_module(
    *,
    layers: int = 12,
    hidden: int = 2048,
    heads: int = 16,
    intermediate: int = 4096,
    vocab: int = 16000,
    seq: int = 128,
) -> Any:
    """The eval-mode torch module :func:`export_llama` exports: a randomly initialised
    ``LlamaForCausalLM`` (no KV cache, untied LM head), ``module(input_ids, attention_mask)``
    returns ``logits``."""
    _check_sizes(layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, vocab=vocab, seq=seq)
    torch, transformers = _require()
    with _quiet():
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max(128, seq),
            use_cache=False, tie_word_embeddings=False, bos_token_id=0, eos_token_id=min(1, vocab - 1),
            attn_implementation="eager",
        )
        torch.manual_seed(_SEED)
        model = transformers.LlamaForCausalLM(config)
    _perturb_vectors(torch, model)

    class LlamaExport(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              return_dict=True).logits

    return LlamaExport(model).eval()


def export_llama(
    path: str | Path,
    *,
    layers: int = 12,
    hidden: int = 2048,
    heads: int = 16,
    intermediate: int = 4096,
    vocab: int = 16000,
    seq: int = 32,
    batch: int = 1,
    external_data: bool | None = True,
) -> Path:
    """Export a randomly initialised HF ``LlamaForCausalLM`` with torch's dynamo exporter to
    ``path`` and return the path; weights go to ``path + '.data'`` (``external_data``, by
    default; ``None``: only past protobuf's limit). The defaults are 2.3 GB of float32 weights
    (issue 17's model). Inputs ``input_ids`` and ``attention_mask``; output ``logits``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, not {batch!r}")
    torch, _ = _require()
    module = llama_module(layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, vocab=vocab,
                          seq=seq)
    inputs = example_inputs(vocab=vocab, batch=batch, seq=seq)
    return _export(torch, module, inputs, list(LLAMA_OUTPUTS), path, dynamic=False, exporter="dynamo",
                   external_data=external_data)
