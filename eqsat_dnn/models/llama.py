"""A LLaMA-style decoder stack in plain ONNX, at any size, with its weights as external data.

:func:`llama` builds ``layers`` pre-norm decoder layers (RMSNorm, multi-head causal
self-attention without rotary embeddings, RMSNorm, SwiGLU MLP) between a token embedding and
an LM head, over ``input_ids: int64[batch, seq]`` -> ``logits: float32[batch, seq, vocab]``,
opset 17. The node pattern follows what torch's dynamo exporter writes for HF LLaMA (RMSNorm as
``Pow``, ``ReduceMean``, ``Add`` eps, ``Sqrt``, ``Reciprocal``, ``Mul``, ``Mul`` weight; SwiGLU as
``x * Sigmoid(x) * up``), and every node of layer ``i`` carries the exporter's
``pkg.torch.onnx.name_scopes`` metadata (``['', 'layers.i', 'layers.i.self_attn', ...]``).

Weights are *not* materialised: every large weight is an external-data reference into one
``.data`` file beside the model, created with ``truncate`` so it is sparse (a 7B model's 26 GB
take no disk) and reads as zeros; with a ``seed`` (small models, to run them) the file gets
seeded random weights and a causal mask instead. :data:`LLAMA2_7B` is LLaMA-2-7B's shape.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
"""The node metadata key torch's dynamo exporter writes the module path under."""
INLINE_BYTES = 1024
"""Constants up to this size stay inline (shapes, eps); everything larger is external."""


@dataclass(frozen=True)
class LlamaConfig:
    layers: int = 32
    hidden: int = 4096
    intermediate: int = 11008
    heads: int = 32
    vocab: int = 32000
    batch: int = 8
    seq: int = 2048

    @property
    def parameters(self) -> int:
        h, f = self.hidden, self.intermediate
        per_layer = 4 * h * h + 3 * h * f + 2 * h
        return self.layers * per_layer + 2 * self.vocab * h + h


LLAMA2_7B = LlamaConfig()
"""LLaMA-2-7B: 32 layers, hidden 4096, intermediate 11008, 32 heads, vocab 32000 (6.7 B parameters,
27 GB in float32), at batch 8 and sequence 2048."""


class _Writer:
    def __init__(self, data_name: str) -> None:
        self.data_name = data_name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.offset = 0
        self.scopes: list[str] = [""]
        self.placed: list[tuple[str, tuple[int, ...], int]] = []

    def weight(self, name: str, *shape: int) -> str:
        """A float32 weight stored in the external file (offsets aligned to 4 KiB)."""
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape),
                             data_location=TensorProto.EXTERNAL)
        length = 4 * math.prod(shape)
        self.placed.append((name, shape, self.offset))
        for key, value in (("location", self.data_name), ("offset", str(self.offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += -(-length // 4096) * 4096
        self.inits.append(tensor)
        return name

    def const(self, name: str, values, dtype) -> str:
        array = np.asarray(values, dtype=dtype)
        assert array.nbytes <= INLINE_BYTES
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        node = helper.make_node(op, inputs, [output], name=output, **attrs)
        if len(self.scopes) > 1:
            entry = node.metadata_props.add()
            entry.key, entry.value = SCOPES_KEY, repr(self.scopes)
        self.nodes.append(node)
        return output

    def scope(self, name: str) -> _Scope:
        return _Scope(self, name)

    def rms_norm(self, x: str, hidden: int, prefix: str) -> str:
        two = self.const(f"{prefix}.two", 2.0, np.float32)
        eps = self.const(f"{prefix}.eps", 1e-5, np.float32)
        sq = self.node("Pow", [x, two], f"{prefix}.pow")
        mean = self.node("ReduceMean", [sq], f"{prefix}.mean", axes=[-1], keepdims=1)
        var = self.node("Add", [mean, eps], f"{prefix}.add_eps")
        root = self.node("Sqrt", [var], f"{prefix}.sqrt")
        inv = self.node("Reciprocal", [root], f"{prefix}.rsqrt")
        normed = self.node("Mul", [x, inv], f"{prefix}.normed")
        return self.node("Mul", [normed, self.weight(f"{prefix}.weight", hidden)], f"{prefix}.out")

    def linear(self, x: str, fan_in: int, fan_out: int, prefix: str) -> str:
        with self.scope(prefix):
            return self.node("MatMul", [x, self.weight(f"{prefix}.weight", fan_in, fan_out)], f"{prefix}.matmul")


class _Scope:
    def __init__(self, writer: _Writer, name: str) -> None:
        self.writer, self.name = writer, name

    def __enter__(self) -> None:
        self.writer.scopes.append(self.name)

    def __exit__(self, *exc) -> None:
        self.writer.scopes.pop()


def _layer(w: _Writer, x: str, c: LlamaConfig, i: int, mask: str) -> str:
    p = f"layers.{i}"
    head = c.hidden // c.heads
    with w.scope(p):
        with w.scope(f"{p}.input_layernorm"):
            h = w.rms_norm(x, c.hidden, f"{p}.input_layernorm")
        with w.scope(f"{p}.self_attn"):
            split = w.const(f"{p}.self_attn.heads_shape", [c.batch, c.seq, c.heads, head], np.int64)
            merge = w.const(f"{p}.self_attn.merge_shape", [c.batch, c.seq, c.hidden], np.int64)
            scale = w.const(f"{p}.self_attn.scale", 1.0 / math.sqrt(head), np.float32)
            parts = {}
            for part, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
                y = w.linear(h, c.hidden, c.hidden, f"{p}.self_attn.{part}_proj")
                y = w.node("Reshape", [y, split], f"{p}.self_attn.{part}.heads")
                parts[part] = w.node("Transpose", [y], f"{p}.self_attn.{part}.t", perm=perm)
            scores = w.node("MatMul", [parts["q"], parts["k"]], f"{p}.self_attn.scores")
            scaled = w.node("Mul", [scores, scale], f"{p}.self_attn.scaled")
            masked = w.node("Add", [scaled, mask], f"{p}.self_attn.masked")
            probs = w.node("Softmax", [masked], f"{p}.self_attn.probs", axis=-1)
            ctx = w.node("MatMul", [probs, parts["v"]], f"{p}.self_attn.context")
            ctx = w.node("Transpose", [ctx], f"{p}.self_attn.context.t", perm=[0, 2, 1, 3])
            ctx = w.node("Reshape", [ctx, merge], f"{p}.self_attn.context.flat")
            out = w.linear(ctx, c.hidden, c.hidden, f"{p}.self_attn.o_proj")
        x = w.node("Add", [x, out], f"{p}.attn_residual")
        with w.scope(f"{p}.post_attention_layernorm"):
            h = w.rms_norm(x, c.hidden, f"{p}.post_attention_layernorm")
        with w.scope(f"{p}.mlp"):
            gate = w.linear(h, c.hidden, c.intermediate, f"{p}.mlp.gate_proj")
            up = w.linear(h, c.hidden, c.intermediate, f"{p}.mlp.up_proj")
            sig = w.node("Sigmoid", [gate], f"{p}.mlp.sigmoid")
            act = w.node("Mul", [gate, sig], f"{p}.mlp.silu")
            prod = w.node("Mul", [act, up], f"{p}.mlp.gated")
            down = w.linear(prod, c.intermediate, c.hidden, f"{p}.mlp.down_proj")
        return w.node("Add", [x, down], f"{p}.mlp_residual")


def llama(path: str | Path, config: LlamaConfig = LLAMA2_7B, seed: int | None = None, **overrides) -> Path:
    """Write a LLaMA-style decoder stack to ``path`` (ONNX) and its weights to ``path + '.data'``
    beside it, a sparse file of zeros, or with ``seed`` of random weights (see the module
    docstring). ``overrides`` replace fields of ``config`` (``layers=2``, ``hidden=64`` ...).
    Returns ``path``."""
    if overrides:
        config = LlamaConfig(**{**config.__dict__, **overrides})
    c = config
    if c.hidden % c.heads:
        raise ValueError(f"hidden ({c.hidden}) must be a multiple of heads ({c.heads})")
    path = Path(path)
    data_name = path.name + ".data"
    w = _Writer(data_name)
    with w.scope("embed_tokens"):
        x = w.node("Gather", [w.weight("embed_tokens.weight", c.vocab, c.hidden), "input_ids"], "embed", axis=0)
    mask = w.weight("causal_mask", 1, 1, c.seq, c.seq)  # zeros here; a real export adds -inf above the diagonal
    for i in range(c.layers):
        x = _layer(w, x, c, i, mask)
    with w.scope("norm"):
        x = w.rms_norm(x, c.hidden, "norm")
    with w.scope("lm_head"):
        w.node("MatMul", [x, w.weight("lm_head.weight", c.hidden, c.vocab)], "logits")
    graph = helper.make_graph(
        w.nodes, f"llama_{c.layers}l_{c.hidden}h",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [c.batch, c.seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [c.batch, c.seq, c.vocab])],
        initializer=w.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="eqsat-dnn")
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / data_name, "wb") as f:
        f.truncate(w.offset)  # sparse: no block is written
        if seed is not None:
            rng = np.random.default_rng(seed)
            for name, shape, offset in w.placed:
                if name == "causal_mask":
                    values = np.triu(np.full(shape, -1e4, dtype=np.float32), k=1)
                elif len(shape) == 1:  # a norm's scale, near 1 as trained ones are
                    values = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
                else:
                    values = rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(shape[0]))
                f.seek(offset)
                f.write(values.astype(np.float32).tobytes())
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


__all__ = ["LLAMA2_7B", "LlamaConfig", "SCOPES_KEY", "llama"]
