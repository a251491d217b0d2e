"""The fuzzer's random graphs (:mod:`tests.test_fuzz`): well-typed DAGs over the whole op
vocabulary, dense and NCHW conv ones, built from a list of decisions so a failing example replays
from that list alone (:class:`_Chooser`).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.ir.language import CONTRIB

from tests.fuzz_core import Dim, _Builder, _Chooser, _Value, _broadcast, _factors, _second_operand
from tests.fuzz_export_ops import _abs_log_softplus, _attention, _cumsum_or_reduce_max, _expand, _gather, _mask, _max_min, _nan_guard, _positions_and_fills, _trilu

SUBGRAPHS = 4
"""Independent random subgraphs per model."""


# ---------------------------------------------------------------------------
# one function per op: pick operands that fit, add the node, return the new values


def _unary(b: _Builder, local: list[_Value], op: str | None = None) -> _Value:
    op = op or b.choose.element(["Relu", "Sigmoid", "Tanh", "Erf", "Neg", "Identity"])
    x = b.pick(local)
    positive = op == "Sigmoid" and x.bounded
    bounded = op in ("Sigmoid", "Tanh", "Erf") or (op in ("Neg", "Identity", "Relu") and x.bounded)
    return b.node(op, [x.name], x.shape, positive=positive or (op == "Identity" and x.positive), bounded=bounded)


def _activation(b, local):
    return [_unary(b, local)]


def _exp(b, local):
    x = b.pick(local, lambda v: v.bounded)
    return [b.node("Exp", [x.name], x.shape, positive=True, bounded=True)] if x else None


def _sqrt_or_reciprocal(b, local):
    made = []
    x = b.pick(local, lambda v: v.positive)
    if x is None:  # make a positive operand: sigmoid(tanh(.)) lies in [0.26, 0.74]
        y = b.pick(local)
        bounded = b.node("Tanh", [y.name], y.shape, bounded=True)
        x = b.node("Sigmoid", [bounded.name], y.shape, positive=True, bounded=True)
        made = [bounded, x]
    op = b.choose.element(["Sqrt", "Reciprocal"])
    return made + [b.node(op, [x.name], x.shape, positive=True, bounded=True)]


def _gelu(b, local):
    if b.opset < 20:
        return None
    x = b.pick(local)
    return [b.node("Gelu", [x.name], x.shape, approximate=b.choose.element(["none", "tanh"]))]


def _fused(b, local):
    """Sin, Cos, onnxruntime's QuickGelu, and from opset 23 RMSNormalization and RotaryEmbedding
    (on a fresh 4-D input: few grown values are 4-D with an even last dim)."""
    c = b.choose
    ops = ["Sin", "Cos", "QuickGelu"] + (["RMSNormalization", "RotaryEmbedding"] * 2 if b.opset >= 23 else [])
    op = c.element(ops)
    if op == "RotaryEmbedding":
        x = b.input((c.integer(1, 2), c.integer(1, 3), c.integer(1, 4), 2 * c.integer(1, 3)))
        cache = (x.shape[0], x.shape[2], x.shape[3] // 2)
        return [x, b.node(op, [x.name, b.weight(cache).name, b.weight(cache).name], x.shape)]
    x = b.pick(local, lambda v: op != "RMSNormalization" or isinstance(v.shape[-1], int))
    if x is None:
        return None
    if op == "RMSNormalization":
        return [b.node(op, [x.name, b.weight(x.shape[-1:]).name], x.shape, axis=-1, epsilon=c.element([1e-5, 1e-3]))]
    if op == "QuickGelu":
        return [b.node(op, [x.name], x.shape, domain=CONTRIB, alpha=c.element([1.0, 1.702]), bounded=x.bounded)]
    return [b.node(op, [x.name], x.shape, bounded=True)]


def _binary(b, local):
    c = b.choose
    op = c.element(["Add", "Add", "Sub", "Mul", "Mul", "Div"])
    x = b.pick(local)
    y = _second_operand(b, local, x, positive=op == "Div")
    if c.chance(30) and op != "Div":
        x, y = y, x
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        return None
    positive = x.positive and y.positive
    bounded = x.bounded and y.bounded and op in ("Mul",)
    return [b.node(op, [x.name, y.name], shape, positive=positive, bounded=bounded)]


def _pow(b, local):
    x = b.pick(local)
    exponents = [2.0, 3.0] + ([0.5, -1.0, -0.5, 1.5] if x.positive else [])
    exponent = b.fresh("e")
    b.weights.append(numpy_helper.from_array(np.asarray(b.choose.element(exponents), np.float32), exponent))
    return [b.node("Pow", [x.name, exponent], x.shape, positive=x.positive, bounded=False)]


def _matmul(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 2 and isinstance(v.shape[-1], int))
    if x is None:
        return None
    k, n = x.shape[-1], c.integer(1, 5)
    others = [v for v in local if len(v.shape) == len(x.shape) and v.shape[:-2] == x.shape[:-2]
              and v.shape[-2] == k and v is not x]
    if others and c.chance(30):  # a product of two computed values (batched matmul)
        y = c.element(others)
        return [b.node("MatMul", [x.name, y.name], x.shape[:-1] + (y.shape[-1],))]
    w1 = b.weight((k, n), 1 / math.sqrt(k))
    first = b.node("MatMul", [x.name, w1.name], x.shape[:-1] + (n,))
    if not c.chance(40):
        return [first]
    # the motif of attention projections: a second product of the same input, then a sum or a concat
    w2 = b.weight((k, n), 1 / math.sqrt(k))
    second = b.node("MatMul", [x.name, w2.name], first.shape)
    if c.chance(50):
        return [first, second, b.node("Add", [first.name, second.name], first.shape)]
    axis = len(first.shape) - 1
    return [first, second, b.node("Concat", [first.name, second.name], first.shape[:-1] + (2 * n,), axis=axis)]


def _gemm(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) == 2 and isinstance(v.shape[1], int) and isinstance(v.shape[0], int))
    if x is None:
        return None
    trans_a, trans_b = c.integer(0, 1), c.integer(0, 1)
    m, k = (x.shape[1], x.shape[0]) if trans_a else x.shape
    n = c.integer(1, 5)
    w = b.weight((n, k) if trans_b else (k, n), 1 / math.sqrt(k))
    inputs = [x.name, w.name]
    bias = c.element([None, (n,), (m, n), (1,)])
    if bias is not None:
        inputs.append(b.weight(bias).name)
    return [b.node("Gemm", inputs, (m, n), alpha=c.element([1.0, 0.5]), beta=c.element([1.0, 2.0]),
                   transA=trans_a, transB=trans_b)]


def _transpose(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 2)
    if x is None:
        return None
    rest = list(range(len(x.shape)))
    perm = [rest.pop(c.integer(0, len(rest) - 1)) for _ in range(len(x.shape))]
    out = b.node("Transpose", [x.name], tuple(x.shape[p] for p in perm), perm=perm,
                 positive=x.positive, bounded=x.bounded)
    if not c.chance(30):
        return [out]
    inverse = [perm.index(i) for i in range(len(perm))]  # and back again: the rules should cancel them
    return [out, b.node("Transpose", [out.name], x.shape, perm=inverse, positive=x.positive, bounded=x.bounded)]


def _reshape(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 1)
    # symbolic dims are kept by 0 ("copy"); the static tail after the last one is regrouped
    last_symbolic = max((i for i, d in enumerate(x.shape) if not isinstance(d, int)), default=-1)
    head, tail = list(x.shape[: last_symbolic + 1]), list(x.shape[last_symbolic + 1:])
    factors = _factors(math.prod(tail))
    groups = [1] * c.integer(1, 3)
    for f in factors:
        groups[c.integer(0, len(groups) - 1)] *= f
    target = [0] * len(head) + groups
    new_shape = tuple(head) + tuple(groups)
    if groups and c.chance(25):
        target[len(head) + c.integer(0, len(groups) - 1)] = -1
    out = b.node("Reshape", [x.name, b.ints(target)], new_shape, positive=x.positive, bounded=x.bounded)
    if not c.chance(30):
        return [out]
    back = [0] * len(head) + tail
    return [out, b.node("Reshape", [out.name, b.ints(back)], x.shape, positive=x.positive, bounded=x.bounded)]


def _flatten(b, local):
    x = b.pick(local, lambda v: v.static and len(v.shape) >= 1)
    if x is None:
        return None
    axis = b.choose.integer(0, len(x.shape))
    shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
    return [b.node("Flatten", [x.name], shape, axis=axis, positive=x.positive, bounded=x.bounded)]


def _concat(b, local):
    c = b.choose
    x = b.pick(local, lambda v: any(isinstance(d, int) for d in v.shape))
    if x is None:
        return None
    axis = c.element([i for i, d in enumerate(x.shape) if isinstance(d, int)])
    parts = [x]
    for _ in range(c.integer(1, 2)):
        if x.static and c.chance(40):
            shape = list(x.shape)
            shape[axis] = c.integer(1, 3)
            parts.append(b.weight(tuple(shape)))
        else:  # x itself, or another value that differs from it on the axis at most
            parts.append(c.element([v for v in local if len(v.shape) == len(x.shape) and isinstance(v.shape[axis], int)
                                    and all(v.shape[i] == x.shape[i] for i in range(len(x.shape)) if i != axis)]))
    shape = list(x.shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    return [b.node("Concat", [p.name for p in parts], tuple(shape), axis=axis if c.chance(70) else axis - len(shape),
                   positive=all(p.positive for p in parts), bounded=all(p.bounded for p in parts))]


def _split(b, local):
    c = b.choose
    x = b.pick(local, lambda v: any(isinstance(d, int) and d >= 2 for d in v.shape))
    if x is None:
        return None
    axis = c.element([i for i, d in enumerate(x.shape) if isinstance(d, int) and d >= 2])
    size = x.shape[axis]
    parts = c.integer(2, min(3, size))
    cuts = sorted({c.integer(1, size - 1) for _ in range(parts - 1)})
    sizes = [hi - lo for lo, hi in zip([0] + cuts, cuts + [size])]
    outputs = [b.fresh("split") for _ in sizes]
    inputs = [x.name, b.ints(sizes)] if b.opset >= 13 else [x.name]
    attrs = {"axis": axis} if b.opset >= 13 else {"axis": axis, "split": sizes}
    b.nodes.append(helper.make_node("Split", inputs, outputs, **attrs))
    made = []
    for name, s in zip(outputs, sizes):
        shape = list(x.shape)
        shape[axis] = s
        made.append(_Value(name, tuple(shape), x.positive, x.bounded))
    return made


SYMBOLIC_ENDS = [2**63 - 1, -1, -1000, -1001, -1002, -100_001]
"""Literal slice ends over a symbolic dim: to the end, and negative ones near (and equal to)
numbers an encoding of symbolic dims as integers once used, which must never match them."""


def _symbolic_slice(b, local):
    c = b.choose
    x = b.pick(local, lambda v: any(isinstance(d, str) for d in v.shape))
    if x is None:
        return None
    axis = c.element([i for i, d in enumerate(x.shape) if isinstance(d, str)])
    end = c.element(SYMBOLIC_ENDS)
    shape = list(x.shape)
    if end != 2**63 - 1:  # a length that depends on the symbolic dim: a name of its own
        shape[axis] = b.fresh("S")
    inputs = [x.name, b.ints([0]), b.ints([end]), b.ints([axis])]
    return [b.node("Slice", inputs, tuple(shape), positive=x.positive, bounded=x.bounded)]


def _slice(b, local):
    c = b.choose
    if any(isinstance(d, str) for v in local for d in v.shape) and c.chance(20):
        made = _symbolic_slice(b, local)
        if made:
            return made
    x = b.pick(local, lambda v: any(isinstance(d, int) for d in v.shape))
    if x is None:
        return None
    static_axes = [i for i, d in enumerate(x.shape) if isinstance(d, int)]
    axes = sorted({c.element(static_axes) for _ in range(c.integer(1, 2))})
    starts, ends, steps, shape = [], [], [], list(x.shape)
    for axis in axes:
        d = x.shape[axis]
        step = c.element([1, 1, 2, -1])
        if step > 0:
            start = c.integer(0, d - 1)
            end = c.integer(start + 1, d + 2)  # past the end is clamped
            shape[axis] = len(range(start, min(end, d), step))
        else:
            start = c.integer(0, d - 1)
            last = c.integer(-1, start - 1)  # the index it stops before; -1: it runs to the beginning
            end = last if last >= 0 else -d - 1 - c.integer(0, 2)  # ends before the beginning are clamped
            shape[axis] = len(range(start, last, step))
        if c.chance(30):  # the same positions, counted from the end
            start -= d if start >= 0 else 0
        starts.append(start)
        ends.append(end)
        steps.append(step)
    axes_written = [a - len(x.shape) if c.chance(20) else a for a in axes]
    inputs = [x.name, b.ints(starts), b.ints(ends), b.ints(axes_written), b.ints(steps)]
    return [b.node("Slice", inputs, tuple(shape), positive=x.positive, bounded=x.bounded)]


def _squeeze_unsqueeze(b, local):
    c = b.choose
    x = b.pick(local)
    ones = [i for i, d in enumerate(x.shape) if d == 1]
    if ones and c.chance(50):
        axes = sorted({c.element(ones) for _ in range(c.integer(1, len(ones)))})
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        op = "Squeeze"
    else:
        rank = len(x.shape) + c.integer(1, 2)
        free = list(range(rank))
        axes = sorted(free.pop(c.integer(0, len(free) - 1)) for _ in range(rank - len(x.shape)))
        rest = iter(x.shape)
        shape = tuple(1 if i in axes else next(rest) for i in range(rank))
        op = "Unsqueeze"
    if b.opset >= 13:
        return [b.node(op, [x.name, b.ints(axes)], shape, positive=x.positive, bounded=x.bounded)]
    return [b.node(op, [x.name], shape, axes=axes, positive=x.positive, bounded=x.bounded)]


def _reduce(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 1)
    if x is None:
        return None
    op = c.element(["ReduceMean", "ReduceSum"])
    axes = sorted({c.integer(0, len(x.shape) - 1) for _ in range(c.integer(1, 2))})
    keep = c.integer(0, 1)
    shape = tuple((1 if keep else None) if i in axes else d for i, d in enumerate(x.shape))
    shape = tuple(d for d in shape if d is not None)
    as_input = b.opset >= (18 if op == "ReduceMean" else 13)
    inputs = [x.name, b.ints(axes)] if as_input else [x.name]
    attrs = {"keepdims": keep} if as_input else {"keepdims": keep, "axes": axes}
    return [b.node(op, inputs, shape, positive=x.positive and op == "ReduceMean", bounded=x.bounded and op == "ReduceMean",
                   **attrs)]


def _softmax(b, local):
    x = b.pick(local, lambda v: len(v.shape) >= 1)
    if x is None:
        return None
    axis = b.choose.integer(-len(x.shape), len(x.shape) - 1)
    return [b.node("Softmax", [x.name], x.shape, axis=axis, bounded=True)]


def _layer_norm(b, local):
    if b.opset < 17:
        return None
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 1 and isinstance(v.shape[-1], int))
    if x is None:
        return None
    axis = c.integer(0, len(x.shape) - 1)
    while not all(isinstance(d, int) for d in x.shape[axis:]):
        axis += 1
    normalized = tuple(x.shape[axis:])
    inputs = [x.name, b.weight(normalized, 1.0).name] + ([b.weight(normalized, 1.0).name] if c.chance(70) else [])
    return [b.node("LayerNormalization", inputs, x.shape, axis=axis if c.chance(50) else axis - len(x.shape),
                   epsilon=c.element([1e-5, 1e-3]))]


def _batch_norm(b, local):
    x = b.pick(local, lambda v: len(v.shape) >= 2 and isinstance(v.shape[1], int))
    if x is None:
        return None
    channels = (x.shape[1],)
    inputs = [x.name, b.weight(channels).name, b.weight(channels).name, b.weight(channels).name,
              b.weight(channels, positive=True).name]
    return [b.node("BatchNormalization", inputs, x.shape, epsilon=b.choose.element([1e-5, 1e-3]))]


def _conv(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) == 4 and all(isinstance(d, int) for d in v.shape[1:]))
    if x is None:
        return None
    _, channels, height, width = x.shape
    group = c.element([g for g in (1, 2, 3) if channels % g == 0])
    out_channels = group * c.integer(1, 3)
    kh, kw = c.integer(1, min(3, height)), c.integer(1, min(3, width))
    dilation = c.integer(1, 2) if kh * 2 - 1 <= height and kw * 2 - 1 <= width else 1
    stride = c.integer(1, 2)
    pads = [c.integer(0, 1) for _ in range(4)]
    reach_h, reach_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    out_h = (height + pads[0] + pads[2] - reach_h) // stride + 1
    out_w = (width + pads[1] + pads[3] - reach_w) // stride + 1
    weight = b.weight((out_channels, channels // group, kh, kw), 1 / math.sqrt(channels // group * kh * kw))
    inputs = [x.name, weight.name] + ([b.weight((out_channels,)).name] if c.chance(50) else [])
    attrs = dict(group=group, strides=[stride, stride], pads=pads, dilations=[dilation, dilation])
    if c.chance(15):  # auto_pad instead of explicit pads (import makes them explicit)
        attrs.pop("pads")
        # onnxruntime has SAME padding for undilated convs only
        attrs["auto_pad"] = "SAME_UPPER" if dilation == 1 and c.chance(50) else "VALID"
        if attrs["auto_pad"] == "VALID":
            out_h, out_w = (height - reach_h) // stride + 1, (width - reach_w) // stride + 1
        else:
            out_h, out_w = -(-height // stride), -(-width // stride)
    return [b.node("Conv", inputs, (x.shape[0], out_channels, out_h, out_w), **attrs)]


def _pool(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) == 4 and all(isinstance(d, int) for d in v.shape[2:]))
    if x is None:
        return None
    op = c.element(["MaxPool", "AveragePool", "GlobalAveragePool"])
    if op == "GlobalAveragePool":
        return [b.node(op, [x.name], x.shape[:2] + (1, 1), positive=x.positive, bounded=x.bounded)]
    n, ch, height, width = x.shape
    kernel = [c.integer(1, min(3, height)), c.integer(1, min(3, width))]
    stride = c.integer(1, 2)
    pads = [c.integer(0, k - 1) for k in kernel * 2]
    ceil = c.integer(0, 1) if c.chance(20) else 0
    spans = [d + pads[i] + pads[i + 2] - kernel[i] for i, d in enumerate((height, width))]
    if ceil and any(-(-span // stride) * stride >= d + pads[i] for i, (span, d) in enumerate(zip(spans, (height, width)))):
        ceil = 0  # a last window starting in the end padding: runtimes and shape inference disagree there
    size = [(-(-span // stride) if ceil else span // stride) + 1 for span in spans]
    attrs = dict(kernel_shape=kernel, strides=[stride, stride], pads=pads, ceil_mode=ceil)
    if op == "AveragePool":
        attrs["count_include_pad"] = c.integer(0, 1)
    return [b.node(op, [x.name], (n, ch, *size), positive=x.positive, bounded=x.bounded, **attrs)]


def _pad(b, local):
    c = b.choose
    x = b.pick(local, lambda v: v.static and len(v.shape) >= 1)
    if x is None:
        return None
    mode = c.element(["constant", "constant", "reflect", "edge"])
    rank = len(x.shape)
    pads = [0] * (2 * rank)
    for axis in {c.integer(0, rank - 1) for _ in range(c.integer(1, 2))}:
        most = x.shape[axis] - 1 if mode == "reflect" else 2
        pads[axis], pads[axis + rank] = c.integer(0, most), c.integer(0, most)
    shape = tuple(d + pads[i] + pads[i + rank] for i, d in enumerate(x.shape))
    return [b.node("Pad", [x.name, b.ints(pads)], shape, mode=mode, bounded=x.bounded,
                   positive=x.positive and mode != "constant")]


def _cast_round_trip(b, local):
    """float32 -> T -> float32; the rules may drop the pair only where T holds every float32."""
    c = b.choose
    x = b.pick(local)
    middle = c.element([TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.FLOAT])
    first = b.node("Cast", [x.name], x.shape, to=middle)
    return [b.node("Cast", [first.name], x.shape, to=TensorProto.FLOAT, positive=x.positive, bounded=x.bounded)]


_APPLY: dict[str, Callable[[_Builder, list[_Value]], list[_Value] | None]] = {
    "activation": _activation, "exp": _exp, "sqrt": _sqrt_or_reciprocal, "gelu": _gelu, "binary": _binary,
    "pow": _pow, "matmul": _matmul, "gemm": _gemm, "transpose": _transpose, "reshape": _reshape,
    "flatten": _flatten, "concat": _concat, "split": _split, "slice": _slice, "squeeze": _squeeze_unsqueeze,
    "reduce": _reduce, "softmax": _softmax, "layernorm": _layer_norm, "batchnorm": _batch_norm, "fused": _fused,
    "conv": _conv, "pool": _pool, "pad": _pad, "cast": _cast_round_trip, "mask": _mask, "maxmin": _max_min,
    "abslog": _abs_log_softplus, "gather": _gather, "cumsum": _cumsum_or_reduce_max, "trilu": _trilu,
    "positions": _positions_and_fills,
    "nan_guard": _nan_guard, "expand": _expand, "attention": _attention,
}
_DENSE_OPS = ["activation", "activation", "exp", "sqrt", "gelu", "binary", "binary", "binary", "pow",
              "matmul", "matmul", "matmul", "gemm", "transpose", "transpose", "reshape", "reshape", "flatten",
              "concat", "split", "slice", "squeeze", "reduce", "softmax", "layernorm", "batchnorm", "pad", "cast",
              # appended, so that recorded decision lists keep their meaning
              "fused", "fused", "mask", "maxmin", "abslog", "gather", "cumsum", "trilu", "positions",
              "nan_guard", "expand", "attention", "attention"]
_CONV_OPS = ["conv", "conv", "conv", "batchnorm", "activation", "activation", "binary", "binary", "pool",
             "pool", "concat", "split", "slice", "transpose", "reshape", "flatten", "pad", "exp", "sqrt"]
OPSETS = [13, 17, 18, 20, 23]


def _dense_subgraph(b: _Builder) -> None:
    c = b.choose
    rank = c.integer(2, 4)
    shape: list[Dim] = [c.integer(1, 5) for _ in range(rank)]
    if c.chance(30):
        shape[0] = "N"  # a symbolic batch dimension
    _grow(b, [b.input(tuple(shape))], _DENSE_OPS, c.integer(2, 7))

def _conv_subgraph(b: _Builder) -> None:
    c = b.choose
    batch: Dim = "N" if c.chance(25) else c.integer(1, 2)
    shape = (batch, c.element([1, 2, 3, 4, 6]), c.integer(3, 7), c.integer(3, 7))
    _grow(b, [b.input(shape)], _CONV_OPS, c.integer(2, 6))

def _grow(b: _Builder, local: list[_Value], ops: list[str], steps: int) -> None:
    for _ in range(steps):
        op = b.choose.element(ops)
        made = _APPLY[op](b, local)
        if not made:  # no operand fits: an activation instead, so every step adds a node
            made = [_unary(b, local, "Tanh")]
        local.extend(made)
    b.outputs.append(local[-1])
    if len(local) > 2 and b.choose.chance(40):
        extra = b.choose.element(local[1:-1])
        if extra not in b.outputs:
            b.outputs.append(extra)


def build_model(choose: _Chooser, subgraphs: int = SUBGRAPHS) -> onnx.ModelProto:
    """A random model of ``subgraphs`` independent graphs, every decision taken from ``choose``."""
    builder = _Builder(choose, opset=choose.element(OPSETS), seed=choose.integer(0, 2**16))
    for _ in range(subgraphs):
        if choose.chance(30):
            _conv_subgraph(builder)
        else:
            _dense_subgraph(builder)
    return builder.model()
