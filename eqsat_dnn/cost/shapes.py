"""Sizes, bytes and FLOPs of a node from its tensor types, as every cost model reads them.

**Symbolic dimensions** are priced at a representative size: a dimension whose
name looks like a batch (``batch``, ``N``, ``b``, ...) at 1, every other symbolic
or unknown dimension at :data:`SYMBOLIC_DIM` (128, a typical sequence length).
Fix real sizes with ``load_model(..., input_shapes=...)`` when they matter.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from onnx import helper

from eqsat_dnn.ir.graph import Node, TensorType
from eqsat_dnn.ir.language import OPS

SYMBOLIC_DIM = 128
"""Size assumed for a symbolic or unknown dimension that is not batch-like."""

BATCH_DIM = 1
"""Size assumed for a symbolic dimension whose name looks like a batch."""

_BATCH_NAME = re.compile(r"^(n|b|bs|.*batch.*)$", re.IGNORECASE)


def dim_size(d: Any) -> int:
    """A concrete size for one dimension (symbolic ones by the policy above)."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        return int(d) if d >= 0 else SYMBOLIC_DIM
    if isinstance(d, str) and _BATCH_NAME.match(d):
        return BATCH_DIM
    return SYMBOLIC_DIM


def dims(t: TensorType | None) -> list[int]:
    """Concrete dims of a tensor type (empty when the rank is unknown)."""
    if t is None or t.shape is None:
        return []
    return [dim_size(d) for d in t.shape]


def numel(t: TensorType | None) -> int:
    if t is None or t.shape is None:
        return 1
    return int(np.prod(dims(t), dtype=np.int64))


def itemsize(t: TensorType | None) -> int:
    if t is None or not t.dtype:
        return 4
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(t.dtype)).itemsize
    except (KeyError, TypeError, ValueError):
        return 4


PER_ELEMENT_FLOPS = {
    # a transcendental function or a normalization's statistics, as a few multiply-adds each
    "Softmax": 8.0, "LayerNormalization": 8.0, "BatchNormalization": 8.0, "Gelu": 8.0, "Erf": 8.0, "Tanh": 8.0,
    "Sigmoid": 8.0, "Exp": 8.0, "Sin": 8.0, "Cos": 8.0, "QuickGelu": 9.0,
    # the square, its sum, the scaling by 1 / rms and by the weight
    "RMSNormalization": 4.0,
    # x * cos and rotate_half(x) * sin, summed (the caches are read, not computed)
    "RotaryEmbedding": 3.0,
}
"""FLOPs per output element of ops whose work is proportional to their output."""


def flops(op: str, attrs: dict[str, Any], inputs: list[TensorType | None], output: TensorType | None) -> float:
    """Floating-point operations of one node (multiply-add counts two)."""
    out = numel(output)
    if op == "MatMul":
        a = dims(inputs[0]) if inputs else []
        k = a[-1] if a else 1
        return 2.0 * out * k
    if op == "Gemm":
        a = dims(inputs[0]) if inputs else []
        k = (a[0] if attrs.get("transA") else a[-1]) if a else 1
        return 2.0 * out * k + out
    if op == "Conv":
        w = dims(inputs[1]) if len(inputs) > 1 else []
        per_output = math.prod(w[1:]) if len(w) > 1 else 1
        return 2.0 * out * per_output
    if op in ATTENTION_OPS:
        return attention_flops(op, attrs, inputs)
    if op in ("MaxPool", "AveragePool"):
        return float(out * math.prod(attrs.get("kernel_shape", [1])))
    if op in PER_ELEMENT_FLOPS:
        return PER_ELEMENT_FLOPS[op] * out
    if op in ("ReduceMean", "ReduceSum", "GlobalAveragePool"):
        return float(numel(inputs[0]) if inputs else out)
    spec = OPS.get(op)
    if spec is not None and spec.elementwise:
        return float(out)
    return 0.0


ATTENTION_OPS = ("Attention", "MultiHeadAttention", "ProjectedAttention")
"""The fused attention kernels: their work is the unfused core's, not their operands' sizes."""

SOFTMAX_FLOPS = PER_ELEMENT_FLOPS["Softmax"]
"""FLOPs per element of a softmax (max, subtract, exp, sum, divide), as :func:`flops` prices it."""


def attention_flops(op: str, attrs: dict[str, Any], inputs: list[TensorType | None]) -> float:
    """FLOPs of a fused attention: Q K^T and P V (``2 * B * Hq * S * T * (D + Dv)``) plus scale, mask
    and softmax over the ``B * Hq * S * T`` scores, which the kernel never writes out.

    ``Attention`` reads 4-D [B, H, S, D] operands (K/V may have fewer heads: the work follows the
    query heads), or 3-D [B, S, H * D] ones with ``q_num_heads`` and ``kv_num_heads``;
    ``MultiHeadAttention`` 3-D ones with ``num_heads``; ``ProjectedAttention`` (onnxruntime's
    ``Attention``) also its packed Q/K/V projection."""
    if len(inputs) < 3 or any(t is None for t in inputs[:3]):
        return 0.0
    q, k, v = (dims(t) for t in inputs[:3])
    if op == "Attention" and len(q) == 4 and len(k) == 4 and len(v) == 4:
        batch, heads, s, d = q
        t, dv = k[2], v[3]
    elif op == "Attention" and len(q) == 3 and len(k) == 3 and len(v) == 3:
        batch, s, t = q[0], q[1], k[1]
        heads, kv_heads = int(attrs.get("q_num_heads") or 1), int(attrs.get("kv_num_heads") or 1)
        d, dv = q[2] // heads, v[2] // kv_heads
    elif op == "MultiHeadAttention" and len(q) == 3 and len(k) == 3 and len(v) == 3:
        batch, s, t = q[0], q[1], k[1]
        heads = int(attrs.get("num_heads") or 1)
        d, dv = q[2] // heads, v[2] // heads
    elif op == "ProjectedAttention" and len(q) == 3 and len(k) == 2 and len(v) == 1:
        # X [B, S, Hin] by the packed weights [Hin, 3 H] (plus bias), then attention over the three thirds
        batch, s = q[0], q[1]
        t, heads = s, int(attrs.get("num_heads") or 1)
        d = dv = k[1] // 3 // heads
        projection = 2.0 * batch * s * q[2] * k[1] + batch * s * k[1]
        scores = float(batch * heads * s * t)
        return projection + 2.0 * scores * (d + dv) + (SOFTMAX_FLOPS + 2.0) * scores
    else:
        return 0.0
    scores = float(batch * heads * s * t)
    return 2.0 * scores * (d + dv) + (SOFTMAX_FLOPS + 2.0) * scores


def bytes_moved(inputs: list[TensorType | None], output: TensorType | None) -> float:
    return float(sum(numel(t) * itemsize(t) for t in inputs if t is not None) + numel(output) * itemsize(output))


def split_output_types(node: Node, inputs: list[TensorType | None], output: TensorType | None) -> list[TensorType | None]:
    """The types of all outputs of a node (a Split's parts from its sizes; others: just ``output``)."""
    if node.op == "Split" and inputs and inputs[0] is not None and inputs[0].shape is not None:
        shape = list(inputs[0].shape)
        axis = int(node.attrs.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        sizes = node.attrs.get("split") or []
        if 0 <= axis < len(shape) and sizes:
            return [TensorType(inputs[0].dtype, tuple(shape[:axis] + [int(s)] + shape[axis + 1:])) for s in sizes]
    return [output]


__all__ = ["ATTENTION_OPS", "BATCH_DIM", "PER_ELEMENT_FLOPS", "SOFTMAX_FLOPS", "SYMBOLIC_DIM", "attention_flops", "bytes_moved",
           "dim_size", "dims", "flops", "itemsize", "numel",
           "split_output_types"]
