"""Transformer blocks built with ``onnx.helper``, at any size, for partitioning tests and benchmarks.

:func:`transformer_mlp` is a pre-norm MLP block (``x + W2 gelu(W1 LN(x) + b1) + b2``),
:func:`transformer_attention` a pre-norm multi-head self-attention block, and
:func:`transformer_layer` one after the other, as in GPT-2. Inputs and outputs are
``x: [batch, seq, hidden]`` float32, opset 20 (for ``Gelu``); weights are seeded
random normals scaled like a trained model's (so softmax and GELU see sensible
ranges). Weights are real initializers: a ``hidden=4096`` MLP weighs 512 MiB.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from eqsat_dnn.models.builder import ModelBuilder

OPSET = 20


class _Builder(ModelBuilder):
    """The shared builder plus the layers of a transformer block; a node's name is its output's."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed, opset=OPSET, ir_version=10, producer="eqsat-dnn")

    def param(self, name: str, *shape: int, scale: float | None = None, offset: float = 0.0) -> str:
        """Seeded float32 normals scaled like a trained model's (``1/sqrt(fan_in)`` by default)."""
        scale = (1.0 / np.sqrt(shape[0])) if scale is None else scale
        return self.const(self.normal(shape, scale, offset=offset, draw=np.float32), name)

    def op(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        return self.node(op, inputs, [output], name=output, **attrs)[0]

    def layer_norm(self, x: str, hidden: int, prefix: str) -> str:
        scale = self.param(f"{prefix}.ln.weight", hidden, scale=0.1, offset=1.0)  # a trained scale sits near 1
        bias = self.param(f"{prefix}.ln.bias", hidden, scale=0.1)
        return self.op("LayerNormalization", [x, scale, bias], f"{prefix}.ln", axis=-1, epsilon=1e-5)

    def linear(self, x: str, fan_in: int, fan_out: int, prefix: str) -> str:
        w = self.param(f"{prefix}.weight", fan_in, fan_out)
        b = self.param(f"{prefix}.bias", fan_out, scale=0.02)
        y = self.op("MatMul", [x, w], f"{prefix}.matmul")
        return self.op("Add", [y, b], f"{prefix}.out")

    def mlp(self, x: str, hidden: int, ffn: int, prefix: str) -> str:
        h = self.layer_norm(x, hidden, prefix)
        up = self.linear(h, hidden, ffn, f"{prefix}.fc1")
        act = self.op("Gelu", [up], f"{prefix}.gelu")
        down = self.linear(act, ffn, hidden, f"{prefix}.fc2")
        return self.op("Add", [x, down], f"{prefix}.residual")

    def attention(self, x: str, batch: int, seq: int, hidden: int, heads: int, prefix: str) -> str:
        head = hidden // heads
        h = self.layer_norm(x, hidden, prefix)
        split = self.ints([batch, seq, heads, head], f"{prefix}.heads_shape")
        merge = self.ints([batch, seq, hidden], f"{prefix}.merge_shape")
        scale = self.scalar(1.0 / np.sqrt(head), f"{prefix}.scale")
        parts = {}
        for part, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            y = self.linear(h, hidden, hidden, f"{prefix}.{part}")
            y = self.op("Reshape", [y, split], f"{prefix}.{part}.heads")
            parts[part] = self.op("Transpose", [y], f"{prefix}.{part}.t", perm=perm)
        scores = self.op("MatMul", [parts["q"], parts["k"]], f"{prefix}.scores")
        scaled = self.op("Mul", [scores, scale], f"{prefix}.scaled")
        probs = self.op("Softmax", [scaled], f"{prefix}.probs", axis=-1)
        ctx = self.op("MatMul", [probs, parts["v"]], f"{prefix}.context")
        ctx = self.op("Transpose", [ctx], f"{prefix}.context.t", perm=[0, 2, 1, 3])
        ctx = self.op("Reshape", [ctx, merge], f"{prefix}.context.flat")
        out = self.linear(ctx, hidden, hidden, f"{prefix}.o")
        return self.op("Add", [x, out], f"{prefix}.residual")

    def block(self, name: str, x_shape: list[int], output: str) -> onnx.ModelProto:
        """The model from input ``x`` to ``output``, which is renamed ``y``."""
        for node in self.nodes:  # the last node writes the graph output directly
            node.output[:] = ["y" if o == output else o for o in node.output]
            node.input[:] = ["y" if i == output else i for i in node.input]
        self.name = name
        self.inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
        return self.model([helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)])


def _stack(name: str, batch: int, seq: int, hidden: int, layers: int, seed: int,
           layer: Callable[[_Builder, str, int], str]) -> onnx.ModelProto:
    """``layers`` applications of ``layer(builder, x, i)`` over ``x: [batch, seq, hidden]``."""
    b = _Builder(seed)
    y = "x"
    for i in range(layers):
        y = layer(b, y, i)
    return b.block(name, [batch, seq, hidden], y)


def _check_heads(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")


def transformer_mlp(batch: int = 1, seq: int = 128, hidden: int = 1024, ffn: int | None = None,
                    layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """``layers`` pre-norm MLP blocks over ``x: [batch, seq, hidden]`` (``ffn`` defaults to 4 x hidden)."""
    return _stack("transformer_mlp", batch, seq, hidden, layers, seed,
                  lambda b, y, i: b.mlp(y, hidden, ffn or 4 * hidden, f"mlp{i}"))


def transformer_attention(batch: int = 1, seq: int = 128, hidden: int = 1024, heads: int = 16,
                          layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """``layers`` pre-norm self-attention blocks over ``x: [batch, seq, hidden]``."""
    _check_heads(hidden, heads)
    return _stack("transformer_attention", batch, seq, hidden, layers, seed,
                  lambda b, y, i: b.attention(y, batch, seq, hidden, heads, f"attn{i}"))


def transformer_layer(batch: int = 1, seq: int = 128, hidden: int = 1024, heads: int = 16, ffn: int | None = None,
                      layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """``layers`` GPT-2-style layers (attention block, then MLP block)."""
    _check_heads(hidden, heads)

    def layer(b: _Builder, y: str, i: int) -> str:
        y = b.attention(y, batch, seq, hidden, heads, f"layer{i}.attn")
        return b.mlp(y, hidden, ffn or 4 * hidden, f"layer{i}.mlp")

    return _stack("transformer_layer", batch, seq, hidden, layers, seed, layer)


__all__ = ["transformer_attention", "transformer_layer", "transformer_mlp"]
