"""ONNX nodes as torch ops on one device's blocks, for training under a plan (:mod:`.train`).

:func:`compute` runs one node of the planner's :class:`~eqsat_dnn.ir.graph.Graph` on plain torch
tensors: the whole tensors on a single device, or one device's blocks under a plan's strategy
(which is why a reshape takes the block's target shape, ``out_shapes``, not the attribute's: the
partitioner only shards a reshape along dims whose blocks stay blocks). Every op is differentiable
by torch's autograd where ONNX's is.

Covered: ``MatMul``, ``Gemm``, element-wise arithmetic and activations (``Add``, ``Sub``, ``Mul``,
``Div``, ``Pow``, ``Relu``, ``Gelu``, ``Tanh``, ``Sigmoid``, ``Erf``, ``Neg``, ``Sqrt``, ``Exp``,
``Log``, ``Reciprocal``, ``Abs``, ``Identity``, ``Cast``, ``Where``, ``Max``, ``Min``,
``LeakyRelu``, ``Softplus``, ``And``, ``Or``, ``Not``, ``Equal``, ``Less``, ``Greater``),
``Softmax``, ``LogSoftmax``, ``LayerNormalization``, ``BatchNormalization`` (inference form),
``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``, ``Transpose``, ``Split``, ``Slice``,
``Concat``, ``ReduceMean``, ``ReduceSum``, ``Gather``, ``GatherElements``, ``GatherND``, ``Conv``
(1-3-D), ``MaxPool`` / ``AveragePool`` (2-D), ``GlobalAveragePool``. Anything else raises
:class:`~eqsat_dnn.errors.InputError`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from onnx import helper, numpy_helper

from eqsat_dnn.errors import InputError
from eqsat_dnn.ir.graph import Node

# ONNX element types -> torch dtypes (by name, so that importing this module does not import torch)
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
           11: "float64", 16: "bfloat16"}


def attr(node: Node, name: str, default: Any = None) -> Any:
    """A node's attribute: the vocabulary's normalised value, else the ONNX proto's, else ``default``."""
    if name in node.attrs and node.attrs[name] is not None:
        return node.attrs[name]
    if node.proto is not None:
        for a in node.proto.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
    return default


def constant_input(node: Node, k: int, constants: dict[str, np.ndarray]) -> list[int] | None:
    """An opaque node's constant integer input (``axes``, ``starts``, ...) as a list, when there is one."""
    if k < len(node.inputs) and node.inputs[k]:
        value = constants.get(node.inputs[k])
        if value is None:
            raise InputError(f"node {node.name or node.op_type}: input {k} ({node.inputs[k]}) must be a constant "
                             "(an initializer) to train")
        return [int(v) for v in np.asarray(value).reshape(-1)]
    return None


def _int_list(node: Node, name: str, k: int, constants: dict[str, np.ndarray]) -> list[int] | None:
    value = attr(node, name)
    if value is None:
        value = constant_input(node, k, constants)
    return None if value is None else [int(v) for v in value]


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def compute(node: Node, ins: list, out_shapes: list[tuple[int, ...] | None],
            constants: dict[str, np.ndarray]) -> list:
    """The outputs of ``node`` on the tensors ``ins`` (``None`` for an omitted input); ``out_shapes``:
    each output's shape on this device (a reshape's target); ``constants``: the graph's initializers
    as arrays (an opaque node's integer inputs)."""
    import torch

    op = node.op_type
    fn = _OPS.get(op)
    if fn is None:
        raise InputError(f"training runs no {op} (node {node.name or op}): not in the ops of "
                         "eqsat_dnn.partition.ops_torch")
    out = fn(torch, node, ins, out_shapes, constants)
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------------------- the ops


def _unary(f: Callable) -> Callable:
    return lambda torch, node, ins, shapes, consts: f(torch, ins[0])


def _binary(f: Callable) -> Callable:
    return lambda torch, node, ins, shapes, consts: f(torch, ins[0], ins[1])


def _gelu(torch, node, ins, shapes, consts):
    approximate = attr(node, "approximate", "none")
    return torch.nn.functional.gelu(ins[0], approximate="tanh" if approximate == "tanh" else "none")


def _cast(torch, node, ins, shapes, consts):
    to = int(attr(node, "to"))
    return ins[0].to(getattr(torch, _DTYPES[to]))


def _gemm(torch, node, ins, shapes, consts):
    a, b = ins[0], ins[1]
    if int(attr(node, "transA", 0) or 0):
        a = a.t()
    if int(attr(node, "transB", 0) or 0):
        b = b.t()
    y = float(attr(node, "alpha", 1.0)) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + float(attr(node, "beta", 1.0)) * ins[2]
    return y


def _softmax(log: bool):
    def f(torch, node, ins, shapes, consts):
        axis = int(attr(node, "axis", -1))
        return (torch.log_softmax if log else torch.softmax)(ins[0], dim=axis)
    return f


def _layernorm(torch, node, ins, shapes, consts):
    x = ins[0]
    axis = _norm(int(attr(node, "axis", -1)), x.dim())
    eps = float(attr(node, "epsilon", 1e-5))
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=dims, keepdim=True)
    y = centred / torch.sqrt(var + eps) * ins[1]
    if len(ins) > 2 and ins[2] is not None:
        y = y + ins[2]
    return y


def _batchnorm(torch, node, ins, shapes, consts):
    x, scale, bias, mean, var = ins[:5]
    eps = float(attr(node, "epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)


def _view(torch, node, ins, shapes, consts):
    if shapes[0] is None:
        raise InputError(f"node {node.name or node.op_type}: training needs static output shapes")
    return ins[0].reshape(shapes[0])


def _transpose(torch, node, ins, shapes, consts):
    perm = attr(node, "perm") or list(reversed(range(ins[0].dim())))
    return ins[0].permute(*[int(p) for p in perm])


def _split(torch, node, ins, shapes, consts):
    x = ins[0]
    axis = _norm(int(attr(node, "axis", 0)), x.dim())
    sizes = _int_list(node, "split", 1, consts)
    if sizes is None:
        n = len(node.outputs)
        sizes = [math.ceil(x.shape[axis] / n)] * n
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    parts = torch.split(x, sizes, dim=axis)
    if len(node.outputs) == 1 and attr(node, "index") is not None:  # the vocabulary's one-output form
        return parts[int(attr(node, "index"))]
    return list(parts)


def _slice(torch, node, ins, shapes, consts):
    x = ins[0]
    starts = _int_list(node, "starts", 1, consts)
    ends = _int_list(node, "ends", 2, consts)
    axes = _int_list(node, "axes", 3, consts) or list(range(len(starts)))
    steps = _int_list(node, "steps", 4, consts) or [1] * len(starts)
    index = [slice(None)] * x.dim()
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st <= 0:
            raise InputError(f"node {node.name or 'Slice'}: training runs slices with positive steps only")
        index[_norm(a, x.dim())] = slice(s, e, st)
    return x[tuple(index)]


def _concat(torch, node, ins, shapes, consts):
    return torch.cat([t for t in ins if t is not None], dim=int(attr(node, "axis")))


def _reduce(mean: bool):
    def f(torch, node, ins, shapes, consts):
        x = ins[0]
        axes = _int_list(node, "axes", 1, consts)
        keep = bool(int(attr(node, "keepdims", 1)))
        if not axes:
            if int(attr(node, "noop_with_empty_axes", 0) or 0):
                return x
            axes = list(range(x.dim()))
        dims = tuple(_norm(int(a), x.dim()) for a in axes)
        return (x.mean if mean else x.sum)(dim=dims, keepdim=keep)
    return f


def _gather(torch, node, ins, shapes, consts):
    data, idx = ins[0], ins[1].long()
    axis = _norm(int(attr(node, "axis", 0)), data.dim())
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    moved = data.movedim(axis, 0)[idx]  # idx dims, then data's other dims
    q = idx.dim()
    return moved.movedim(tuple(range(q, q + axis)), tuple(range(axis))) if axis else moved


def _gather_elements(torch, node, ins, shapes, consts):
    data, idx = ins[0], ins[1].long()
    axis = _norm(int(attr(node, "axis", 0)), data.dim())
    return torch.gather(data, axis, torch.where(idx < 0, idx + data.shape[axis], idx))


def _gather_nd(torch, node, ins, shapes, consts):
    data, idx = ins[0], ins[1].long()
    b = int(attr(node, "batch_dims", 0) or 0)
    k = idx.shape[-1]
    batch = tuple(data.shape[:b])
    count = math.prod(batch)
    flat = data.reshape((count,) + tuple(data.shape[b:]))
    ix = idx.reshape((count,) + tuple(idx.shape[b:]))
    sizes = torch.tensor(data.shape[b:b + k], dtype=ix.dtype, device=ix.device)
    ix = torch.where(ix < 0, ix + sizes, ix)
    rows = torch.arange(count, device=ix.device).reshape((count,) + (1,) * (ix.dim() - 2))
    out = flat[(rows,) + tuple(ix[..., i] for i in range(k))]
    return out.reshape(batch + tuple(idx.shape[b:-1]) + tuple(data.shape[b + k:]))


def _conv(torch, node, ins, shapes, consts):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    n = x.dim() - 2
    strides = attr(node, "strides") or [1] * n
    dilations = attr(node, "dilations") or [1] * n
    pads = attr(node, "pads") or [0] * (2 * n)
    group = int(attr(node, "group", 1) or 1)
    if str(attr(node, "auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        raise InputError(f"node {node.name or 'Conv'}: training needs explicit pads (auto_pad)")
    begin, end = list(pads[:n]), list(pads[n:])
    if begin != end:
        flat = []
        for lo, hi in zip(reversed(begin), reversed(end)):
            flat += [int(lo), int(hi)]
        x = torch.nn.functional.pad(x, flat)
        begin = [0] * n
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}.get(n)
    if conv is None:
        raise InputError(f"node {node.name or 'Conv'}: training runs 1-D to 3-D convolutions only")
    return conv(x, w, b, stride=[int(s) for s in strides], padding=[int(p) for p in begin],
                dilation=[int(d) for d in dilations], groups=group)


def _pool(kind: str):
    def f(torch, node, ins, shapes, consts):
        x = ins[0]
        if kind == "global":
            return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        if x.dim() != 4:
            raise InputError(f"node {node.name or kind}: training runs 2-D pools only")
        kernel = [int(k) for k in attr(node, "kernel_shape")]
        strides = [int(s) for s in (attr(node, "strides") or [1, 1])]
        pads = [int(p) for p in (attr(node, "pads") or [0, 0, 0, 0])]
        if pads[:2] != pads[2:]:
            raise InputError(f"node {node.name or kind}: training runs pools with symmetric pads only")
        ceil = bool(int(attr(node, "ceil_mode", 0) or 0))
        if kind == "max":
            dil = [int(d) for d in (attr(node, "dilations") or [1, 1])]
            return torch.nn.functional.max_pool2d(x, kernel, strides, pads[:2], dil, ceil_mode=ceil)
        include = bool(int(attr(node, "count_include_pad", 0) or 0))
        return torch.nn.functional.avg_pool2d(x, kernel, strides, pads[:2], ceil_mode=ceil,
                                              count_include_pad=include)
    return f


_OPS: dict[str, Callable] = {
    "MatMul": _binary(lambda torch, a, b: torch.matmul(a, b)),
    "Gemm": _gemm,
    "Add": _binary(lambda torch, a, b: a + b),
    "Sub": _binary(lambda torch, a, b: a - b),
    "Mul": _binary(lambda torch, a, b: a * b),
    "Div": _binary(lambda torch, a, b: a / b),
    "Pow": _binary(lambda torch, a, b: torch.pow(a, b)),
    "Max": lambda torch, node, ins, shapes, consts: _fold(torch.maximum, ins),
    "Min": lambda torch, node, ins, shapes, consts: _fold(torch.minimum, ins),
    "Where": lambda torch, node, ins, shapes, consts: torch.where(ins[0].bool(), ins[1], ins[2]),
    "Relu": _unary(lambda torch, x: torch.relu(x)),
    "Sigmoid": _unary(lambda torch, x: torch.sigmoid(x)),
    "Tanh": _unary(lambda torch, x: torch.tanh(x)),
    "Erf": _unary(lambda torch, x: torch.erf(x)),
    "Neg": _unary(lambda torch, x: -x),
    "Sqrt": _unary(lambda torch, x: torch.sqrt(x)),
    "Exp": _unary(lambda torch, x: torch.exp(x)),
    "Log": _unary(lambda torch, x: torch.log(x)),
    "Reciprocal": _unary(lambda torch, x: torch.reciprocal(x)),
    "Abs": _unary(lambda torch, x: torch.abs(x)),
    "Softplus": _unary(lambda torch, x: torch.nn.functional.softplus(x)),
    "Identity": _unary(lambda torch, x: x),
    "LeakyRelu": lambda torch, node, ins, shapes, consts: torch.nn.functional.leaky_relu(
        ins[0], float(attr(node, "alpha", 0.01))),
    "Gelu": _gelu,
    "Cast": _cast,
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "LayerNormalization": _layernorm,
    "BatchNormalization": _batchnorm,
    "Reshape": _view,
    "Flatten": _view,
    "Squeeze": _view,
    "Unsqueeze": _view,
    "Transpose": _transpose,
    "Split": _split,
    "Slice": _slice,
    "Concat": _concat,
    "ReduceMean": _reduce(True),
    "ReduceSum": _reduce(False),
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "And": _binary(lambda torch, a, b: torch.logical_and(a.bool(), b.bool())),
    "Or": _binary(lambda torch, a, b: torch.logical_or(a.bool(), b.bool())),
    "Not": _unary(lambda torch, x: torch.logical_not(x.bool())),
    "Equal": _binary(lambda torch, a, b: a == b),
    "Less": _binary(lambda torch, a, b: a < b),
    "Greater": _binary(lambda torch, a, b: a > b),
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _pool("global"),
}

OPS = frozenset(_OPS)
"""The ONNX op types training runs."""


def _fold(f, ins):
    out = ins[0]
    for t in ins[1:]:
        out = f(out, t)
    return out


def initializer_arrays(weights: dict) -> dict[str, np.ndarray]:
    """The graph's initializers as numpy arrays."""
    return {name: numpy_helper.to_array(t) for name, t in weights.items()}


__all__ = ["OPS", "attr", "compute", "constant_input", "initializer_arrays"]
