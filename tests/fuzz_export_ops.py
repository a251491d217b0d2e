"""The fuzzer's generators of the ops transformer exports add (:mod:`tests.fuzz_graphs`): masks,
Max/Min, gathers, cumulative sums, triangles, positions and fills, SDPA's NaN guard, Expand and
attention, each a motif over values a :class:`~tests.fuzz_core._Builder` holds."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from tests.fuzz_core import _Builder, _broadcast, _second_operand


def _int_weight(b: _Builder, values) -> str:
    """An int64 initializer of any shape (a 0-d one for a scalar)."""
    name = b.fresh("c")
    b.weights.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


def _float_scalar(b: _Builder, value: float) -> str:
    name = b.fresh("f")
    b.weights.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    return name


def _mask(b, local):
    """A comparison (maybe negated, maybe combined with a second one) cast back to float."""
    c = b.choose
    x = b.pick(local)
    y = _second_operand(b, local, x, positive=False)
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        return None
    ops = ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]
    made = [b.node(c.element(ops), [x.name, y.name], shape)]
    if c.chance(50):
        made.append(b.node("Not", [made[-1].name], shape))
    if c.chance(50):
        first, other = made[-1], b.node(c.element(ops), [y.name, x.name], shape)
        made += [other, b.node(c.element(["And", "Or"]), [first.name, other.name], shape)]
    # only the float result joins the operands of later steps (the masks are not floats)
    return [b.node("Cast", [made[-1].name], shape, to=TensorProto.FLOAT, bounded=True)]


def _max_min(b, local):
    c = b.choose
    op = c.element(["Max", "Min"])
    x = b.pick(local)
    y = _second_operand(b, local, x, positive=False)
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        return None
    positive = (x.positive or y.positive) if op == "Max" else (x.positive and y.positive)
    return [b.node(op, [x.name, y.name], shape, positive=positive, bounded=x.bounded and y.bounded)]


def _abs_log_softplus(b, local):
    op = b.choose.element(["Abs", "Softplus", "Log"])
    x = b.pick(local, (lambda v: v.positive) if op == "Log" else (lambda v: True))
    made = []
    if x is None:  # no positive value yet: |y| + 0.5 is one (else Log would seldom be generated)
        y = b.pick(local)
        made = [b.node("Abs", [y.name], y.shape)]
        made.append(b.node("Add", [made[0].name, b.weight((), positive=True).name], y.shape, positive=True))
        x = made[-1]
    return made + [b.node(op, [x.name], x.shape, positive=op == "Abs" and x.positive,
                   bounded=x.bounded and op != "Log" or (op == "Log" and x.bounded))]


def _gather(b, local):
    """Gather, GatherElements or GatherND of a value, at constant in-range indices."""
    c = b.choose
    x = b.pick(local, lambda v: v.static and len(v.shape) >= 1)
    if x is None:
        return None
    op = c.element(["Gather", "GatherElements", "GatherND"])
    rank = len(x.shape)
    axis = c.integer(0, rank - 1)
    if op == "Gather":
        idx = b.rng.integers(-x.shape[axis], x.shape[axis], size=(c.integer(1, 3),) * c.integer(0, 2))
        shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
        return [b.node(op, [x.name, _int_weight(b, idx)], shape, axis=axis, positive=x.positive, bounded=x.bounded)]
    if op == "GatherElements":
        idx_shape = tuple(d if i != axis else c.integer(1, d) for i, d in enumerate(x.shape))
        idx = b.rng.integers(-x.shape[axis], x.shape[axis], size=idx_shape)
        return [b.node(op, [x.name, _int_weight(b, idx)], idx_shape, axis=axis, positive=x.positive,
                       bounded=x.bounded)]
    k = c.integer(1, rank)
    rows = c.integer(1, 3)
    idx = np.stack([b.rng.integers(0, d, size=rows) for d in x.shape[:k]], axis=-1)
    return [b.node(op, [x.name, _int_weight(b, idx)], (rows,) + tuple(x.shape[k:]), positive=x.positive,
                   bounded=x.bounded)]


def _cumsum_or_reduce_max(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 1)
    if x is None:
        return None
    axis = c.integer(0, len(x.shape) - 1)
    if c.chance(50):
        return [b.node("CumSum", [x.name, _int_weight(b, axis)], x.shape, exclusive=c.integer(0, 1),
                       reverse=c.integer(0, 1), positive=False)]
    keep = c.integer(0, 1)
    shape = tuple(d for i, d in enumerate(x.shape) if i != axis or keep)
    shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape)) if keep else shape
    attrs = {"keepdims": keep} if b.opset >= 18 else {"keepdims": keep, "axes": [axis]}
    inputs = [x.name, b.ints([axis])] if b.opset >= 18 else [x.name]
    return [b.node("ReduceMax", inputs, shape, positive=x.positive, bounded=x.bounded, **attrs)]


def _trilu(b, local):
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 2)
    if x is None or b.opset < 14:
        return None
    inputs = [x.name] + ([_int_weight(b, c.integer(-1, 1))] if c.chance(50) else [])
    return [b.node("Trilu", inputs, x.shape, upper=c.integer(0, 1), bounded=x.bounded)]


def _positions_and_fills(b, local):
    """Constant subgraphs as exports write them: positions from a Range added to the last axis,
    or a fill of one value (ConstantOfShape, from a Shape where the dims are static) as a floor."""
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) >= 1 and isinstance(v.shape[-1], int))
    if x is None:
        return None
    if c.chance(50):
        d = x.shape[-1]
        r = b.node("Range", [_float_scalar(b, 0.0), _float_scalar(b, float(d)), _float_scalar(b, 1.0)], (d,))
        scaled = b.node("Mul", [r.name, _float_scalar(b, 0.25)], (d,))
        return [r, scaled, b.node("Add", [x.name, scaled.name], x.shape)]
    if x.static and c.chance(50):
        dims = b.node("Shape", [x.name], (len(x.shape),))
        dims_name = dims.name
    else:
        dims_name = _int_weight(b, [d if isinstance(d, int) else 1 for d in x.shape])
    value = numpy_helper.from_array(np.asarray([c.element([-1.0, 0.0, 0.5])], np.float32), "value")
    fill = b.node("ConstantOfShape", [dims_name], tuple(d if isinstance(d, int) else 1 for d in x.shape), value=value)
    return [fill, b.node("Max", [x.name, fill.name], x.shape, positive=x.positive, bounded=x.bounded)]


def _nan_guard(b, local):
    """SDPA's guard around a softmax: Where(IsNaN(p), 0, p)."""
    x = b.pick(local, lambda v: len(v.shape) >= 1)
    if x is None:
        return None
    p = b.node("Softmax", [x.name], x.shape, axis=-1, bounded=True) if b.choose.chance(70) else x
    nan = b.node("IsNaN", [p.name], p.shape)
    zero = b.fresh("zero")
    b.weights.append(numpy_helper.from_array(np.array(0.0, np.float32), zero))
    return [b.node("Where", [nan.name, zero, p.name], p.shape, positive=p.positive, bounded=p.bounded)]


def _expand(b, local):
    """A broadcast to a new leading axis (symbolic dims kept by a 1 in the target)."""
    x = b.pick(local, lambda v: len(v.shape) <= 3)
    if x is None:
        return None
    k = b.choose.integer(1, 3)
    target = [k] + [d if isinstance(d, int) else 1 for d in x.shape]
    return [b.node("Expand", [x.name, b.ints(target)], (k,) + tuple(x.shape), positive=x.positive, bounded=x.bounded)]


def _attention(b, local):
    """Scaled dot-product attention of a static 4-D value with itself: spelt out (the motif the
    attention rules fuse), or as onnxruntime's MultiHeadAttention over [B, S, H*D], as its Attention
    over one packed projection, or (opset 23) ONNX's Attention."""
    c = b.choose
    x = b.pick(local, lambda v: len(v.shape) == 4 and v.static)
    if x is None:
        return None
    batch, heads, rows, size = x.shape
    form = c.element(["spelt", "mha"] + (["onnx"] if b.opset >= 23 else []) + ["projected"])
    if form == "onnx":
        return [b.node("Attention", [x.name, x.name, x.name], x.shape, scale=0.5)]
    if form == "projected":  # onnxruntime's Attention: Q, K, V projected by one [H, 3H] weight
        hidden = heads * size
        packed = b.node("Reshape", [x.name, b.ints([batch, rows, hidden])], (batch, rows, hidden))
        weights, bias = b.weight((hidden, 3 * hidden), scale=0.2), b.weight((3 * hidden,), scale=0.2)
        b.domains.add("com.microsoft")
        node = b.node("Attention", [packed.name, weights.name, bias.name], packed.shape, num_heads=heads, scale=0.5)
        b.nodes[-1].domain = "com.microsoft"
        return [packed, node]
    if form == "mha":
        packed = b.node("Reshape", [x.name, b.ints([batch, rows, heads * size])], (batch, rows, heads * size))
        b.domains.add("com.microsoft")
        node = b.node("MultiHeadAttention", [packed.name] * 3, packed.shape, num_heads=heads, scale=0.5)
        b.nodes[-1].domain = "com.microsoft"
        return [packed, node]
    scale = b.fresh("scale")
    b.weights.append(numpy_helper.from_array(np.array(size ** -0.5, np.float32), scale))
    kt = b.node("Transpose", [x.name], (batch, heads, size, rows), perm=[0, 1, 3, 2])
    scores = b.node("MatMul", [x.name, kt.name], (batch, heads, rows, rows))
    scaled = b.node("Mul", [scores.name, scale], scores.shape)
    mask = b.weight((1, 1, rows, rows))
    probs = b.node("Softmax", [b.node("Add", [scaled.name, mask.name], scores.shape).name], scores.shape, axis=-1,
                   bounded=True)
    return [kt, scores, scaled, probs, b.node("MatMul", [probs.name, x.name], x.shape)]
