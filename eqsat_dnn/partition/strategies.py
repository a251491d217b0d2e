"""Sharding strategies per operator, derived from what the operator computes.

For one mesh axis an operator has a handful of ways to split its work (a
:class:`Rule`): which placement each input must have and which placement each
output gets. They follow from the op's semantics:

* matrix products (``MatMul``, ``Gemm``): split the rows of A (``row``), the
  columns of B (``col``), the contraction (``k``: both operands sharded on it,
  the result ``Partial``), or a batch dim; and, being linear in each operand, a
  ``Partial`` operand times a replicated one stays ``Partial``;
* ``Conv``: the batch, the output channels (weights split by rows), or the input
  channels (a ``Partial`` result); pools and batch norm: batch and channels;
* element-wise ops with broadcasting: any output dim, each input sharded on the
  dim aligned with it (a broadcast input stays replicated); sums keep
  ``Partial + Partial``, products ``Partial * Replicate``;
* ``Softmax`` / ``LayerNormalization``: any dim outside the normalised ones;
* reductions: kept dims; a sum over a sharded dim is ``Partial``;
* ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``: the first dim of each group
  of dims that the reshape merges or splits (a block of rows stays a block);
  ``Transpose`` permutes; ``Split``, ``Slice``, ``Concat``: the dims they do not cut;
* ``Gather`` (embeddings): the indices, or the gathered rows' other dims.

Every op also has the all-``Replicate`` rule (every device computes everything).
Ops with no rule (anything else, including ops whose shapes are unknown) are
*replicate-only*: their inputs are gathered and they run whole on every device;
the plan lists them.

On an n-D mesh, a :class:`Strategy` picks one rule per mesh axis; combinations
that would split a dim unevenly (or a symbolic dim) are dropped. Each strategy
carries its compute time per device: the cost model's price of the node at the
local (per-device) shapes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from onnx import TensorProto, helper

from eqsat_dnn.cost import CostModel, itemsize
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.ir.language import OPS
from eqsat_dnn.partition.mesh import DeviceMesh
from eqsat_dnn.partition.placements import (PARTIAL, REPLICATE, Placement, Shard, Spec, is_valid,
                                            local_shape)

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})

_ELEMENTWISE_OPAQUE = frozenset({
    "Cast", "Not", "IsNaN", "IsInf", "Abs", "Floor", "Ceil", "Round", "Sign", "Log", "Sin", "Cos",
    "Softplus", "Softsign", "LeakyRelu", "HardSigmoid", "Elu", "Selu", "Celu", "HardSwish", "Mish", "Clip",
    "Where", "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Max", "Min",
    "Mod", "PRelu", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "Erf", "Relu", "Sigmoid", "Tanh",
    "Neg", "Sqrt", "Exp", "Reciprocal", "Add", "Sub", "Mul", "Div", "Pow", "Gelu", "Identity",
})
"""ONNX ops computed element by element with numpy broadcasting (vocabulary or not)."""

_SUMS = frozenset({"Add", "Sub"})
_LINEAR_UNARY = frozenset({"Neg", "Identity"})
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass(frozen=True)
class Rule:
    """One way to split an op along one mesh axis."""

    name: str
    inputs: tuple[Placement | None, ...]
    """Placement each input must have (``None`` for an omitted optional input)."""
    outputs: tuple[Placement, ...]


@dataclass(frozen=True)
class Strategy:
    """One way to run an op on the whole mesh: a rule per mesh axis."""

    name: str
    inputs: tuple[Spec | None, ...]
    outputs: tuple[Spec | None, ...]
    """``None`` for an unused output."""
    compute: float
    """Forward time on one device, seconds."""


@dataclass
class OpStrategies:
    """The strategies of one node."""

    node: Node
    strategies: list[Strategy]
    replicate_only: bool
    """No rule is known for this op (or its shapes are unknown): it runs whole on every device."""


# ---------------------------------------------------------------------------- helpers


def static_shape(t: TensorType | None) -> tuple[int, ...] | None:
    """The shape when every dim is a known size, else ``None``."""
    if t is None or t.shape is None or not all(isinstance(d, int) and d >= 0 for d in t.shape):
        return None
    return tuple(int(d) for d in t.shape)


def is_float(t: TensorType | None) -> bool:
    return t is not None and t.dtype in FLOAT_TYPES


def _proto_attr(node: Node, name: str, default):
    if node.proto is not None:
        for a in node.proto.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
    return node.attrs.get(name, default)


def dim_map(src: tuple[int, ...], dst: tuple[int, ...]) -> dict[int, int]:
    """For a reshape from ``src`` to ``dst``: source dim -> target dim where a shard survives.

    Dims are grouped where the running products agree; in each group the first
    dim of size > 1 on each side carries the split (a block of the group's leading
    dim is a contiguous block of the group's elements on both sides)."""
    mapping: dict[int, int] = {}
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj = [i], [j]
        pi, pj = src[i], dst[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= len(src):
                    return mapping
                pi *= src[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(dst):
                    return mapping
                pj *= dst[j]
                gj.append(j)
                j += 1
        # trailing size-1 dims join the group that precedes them
        a = next((d for d in gi if src[d] > 1), None)
        b = next((d for d in gj if dst[d] > 1), None)
        if a is not None and b is not None:
            mapping[a] = b
    return mapping


# ---------------------------------------------------------------------------- 1-D rules


def rules_1d(node: Node, ins: list[TensorType | None], outs: list[TensorType | None]) -> list[Rule] | None:
    """The rules of ``node`` on one mesh axis, the all-replicate one first; ``None`` when
    the op has no rule (it is then replicate-only)."""
    op = node.op_type
    in_shapes = [static_shape(t) for t in ins]
    out_shapes = [static_shape(t) for t in outs]
    present = [i for i, t in enumerate(ins) if node.inputs[i]]
    if any(in_shapes[i] is None for i in present) or any(
            o and s is None for o, s in zip(node.outputs, out_shapes)):
        return None
    rules = _dispatch(node, op, ins, in_shapes, outs, out_shapes)
    if rules is None:
        return None
    replicate = Rule("R", tuple(REPLICATE if node.inputs[i] else None for i in range(len(ins))),
                     tuple(REPLICATE for _ in outs))
    seen = {(replicate.inputs, replicate.outputs)}
    unique = [replicate]
    for r in rules:
        if (r.inputs, r.outputs) not in seen:
            seen.add((r.inputs, r.outputs))
            unique.append(r)
    return unique


def _dispatch(node: Node, op: str, ins, in_shapes, outs, out_shapes) -> list[Rule] | None:
    if (op in _ELEMENTWISE_OPAQUE or (op in OPS and OPS[op].elementwise)) and len(outs) == 1:
        return _elementwise(node, op, ins, in_shapes, outs, out_shapes)
    handler = _HANDLERS.get(op)
    return None if handler is None else handler(node, ins, in_shapes, outs, out_shapes)


def _opt(node: Node, i: int, placement: Placement) -> Placement | None:
    return placement if i < len(node.inputs) and node.inputs[i] else None


def _elementwise(node, op, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    out = out_shapes[0]
    r = len(out)
    rules = []
    for d in range(r):
        if out[d] <= 1:
            continue
        placements = []
        for i, shape in enumerate(in_shapes):
            if not node.inputs[i]:
                placements.append(None)
                continue
            di = d - (r - len(shape))
            placements.append(Shard(di) if di >= 0 and shape[di] == out[d] else REPLICATE)
        rules.append(Rule(f"S{d}", tuple(placements), (Shard(d),)))
    if is_float(outs[0]) and all(is_float(ins[i]) for i in range(len(ins)) if node.inputs[i]):
        n = len(ins)
        if op in _SUMS or op in _LINEAR_UNARY:
            rules.append(Rule("P", tuple(_opt(node, i, PARTIAL) for i in range(n)), (PARTIAL,)))
        elif op == "Mul" and n == 2:
            rules.append(Rule("P0", (PARTIAL, REPLICATE), (PARTIAL,)))
            rules.append(Rule("P1", (REPLICATE, PARTIAL), (PARTIAL,)))
        elif op == "Div" and n == 2:
            rules.append(Rule("P0", (PARTIAL, REPLICATE), (PARTIAL,)))
    return rules


def _matmul(node, ins, in_shapes, outs, out_shapes) -> list[Rule] | None:
    a, b = in_shapes[0], in_shapes[1]
    if len(a) < 2 or len(b) < 2:
        return []
    out = out_shapes[0]
    r, ra, rb = len(out), len(a), len(b)
    rules = []
    for d in range(r - 2):
        ad, bd = d - (r - ra), d - (r - rb)
        a_has = ad >= 0 and a[ad] == out[d] and out[d] > 1
        b_has = bd >= 0 and b[bd] == out[d] and out[d] > 1
        if a_has or b_has:
            rules.append(Rule(f"batch{d}", (Shard(ad) if a_has else REPLICATE, Shard(bd) if b_has else REPLICATE),
                              (Shard(d),)))
    rules.append(Rule("row", (Shard(ra - 2), REPLICATE), (Shard(r - 2),)))
    rules.append(Rule("col", (REPLICATE, Shard(rb - 1)), (Shard(r - 1),)))
    if is_float(outs[0]):
        rules.append(Rule("k", (Shard(ra - 1), Shard(rb - 2)), (PARTIAL,)))
        rules.append(Rule("P0", (PARTIAL, REPLICATE), (PARTIAL,)))
        rules.append(Rule("P1", (REPLICATE, PARTIAL), (PARTIAL,)))
    return rules


def _gemm(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    trans_a = int(node.attrs.get("transA", _proto_attr(node, "transA", 0)) or 0)
    trans_b = int(node.attrs.get("transB", _proto_attr(node, "transB", 0)) or 0)
    a_m, a_k = (1, 0) if trans_a else (0, 1)
    b_k, b_n = (1, 0) if trans_b else (0, 1)
    out = out_shapes[0]
    has_c = len(node.inputs) > 2 and bool(node.inputs[2])
    c = in_shapes[2] if has_c else None

    def c_for(d: int) -> Placement | None:
        if not has_c:
            return None
        dc = d - (2 - len(c))
        return Shard(dc) if dc >= 0 and c[dc] == out[d] else REPLICATE

    rules = [Rule("row", (Shard(a_m), REPLICATE, c_for(0)), (Shard(0),)),
             Rule("col", (REPLICATE, Shard(b_n), c_for(1)), (Shard(1),))]
    if is_float(outs[0]):
        pc = PARTIAL if has_c else None
        rules += [Rule("k", (Shard(a_k), Shard(b_k), pc), (PARTIAL,)),
                  Rule("P0", (PARTIAL, REPLICATE, pc), (PARTIAL,)),
                  Rule("P1", (REPLICATE, PARTIAL, pc), (PARTIAL,))]
    return [Rule(r.name, r.inputs[:len(ins)], r.outputs) for r in rules]


def _conv(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    n = len(ins)
    rules = [Rule("batch", (Shard(0),) + tuple(_opt(node, i, REPLICATE) for i in range(1, n)), (Shard(0),))]
    if int(node.attrs.get("group", _proto_attr(node, "group", 1)) or 1) == 1:
        rules.append(Rule("outch", (REPLICATE, Shard(0)) + tuple(_opt(node, i, Shard(0)) for i in range(2, n)),
                          (Shard(1),)))
        if is_float(outs[0]):
            rest = tuple(_opt(node, i, PARTIAL) for i in range(2, n))
            rules.append(Rule("inch", (Shard(1), Shard(1)) + rest, (PARTIAL,)))
            rules.append(Rule("P0", (PARTIAL, REPLICATE) + rest, (PARTIAL,)))
    return rules


def _batchnorm(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    n = len(ins)
    rules = [Rule("batch", (Shard(0),) + (REPLICATE,) * (n - 1), (Shard(0),)),
             Rule("channel", (Shard(1),) + (Shard(0),) * (n - 1), (Shard(1),))]
    rules += [Rule(f"S{d}", (Shard(d),) + (REPLICATE,) * (n - 1), (Shard(d),)) for d in range(2, len(in_shapes[0]))]
    return rules


def _pool(linear: bool):
    def rules(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
        found = [Rule("batch", (Shard(0),), (Shard(0),)), Rule("channel", (Shard(1),), (Shard(1),))]
        if linear and is_float(outs[0]):
            found.append(Rule("P", (PARTIAL,), (PARTIAL,)))
        return found
    return rules


def _normalise_axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def _softmax(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    rank = len(in_shapes[0])
    axis = _normalise_axis(int(node.attrs.get("axis", _proto_attr(node, "axis", -1))), rank)
    return [Rule(f"S{d}", (Shard(d),), (Shard(d),)) for d in range(rank) if d != axis]


def _layernorm(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    rank = len(in_shapes[0])
    axis = _normalise_axis(int(node.attrs.get("axis", _proto_attr(node, "axis", -1))), rank)
    rest = tuple(_opt(node, i, REPLICATE) for i in range(1, len(ins)))
    return [Rule(f"S{d}", (Shard(d),) + rest, (Shard(d),) + (REPLICATE,) * (len(outs) - 1))
            for d in range(axis)] if len(outs) == 1 else []


def _transpose(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    rank = len(in_shapes[0])
    perm = node.attrs.get("perm") or _proto_attr(node, "perm", None) or list(reversed(range(rank)))
    rules = [Rule(f"S{d}", (Shard(int(perm[d])),), (Shard(d),)) for d in range(rank)]
    if is_float(outs[0]):
        rules.append(Rule("P", (PARTIAL,), (PARTIAL,)))
    return rules


def _view(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    if node.op == "Opaque":
        return []  # a shape computed at run time holds global sizes: a shard cannot use it
    n = len(ins)
    rest = tuple(_opt(node, i, REPLICATE) for i in range(1, n))
    rules = [Rule(f"S{d}", (Shard(d),) + rest, (Shard(e),)) for d, e in dim_map(in_shapes[0], out_shapes[0]).items()]
    if is_float(outs[0]):
        rules.append(Rule("P", (PARTIAL,) + rest, (PARTIAL,)))
    return rules


def _split(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    if node.op == "Opaque":
        return []
    rank = len(in_shapes[0])
    axis = _normalise_axis(int(node.attrs.get("axis", _proto_attr(node, "axis", 0))), rank)
    rest = tuple(_opt(node, i, REPLICATE) for i in range(1, len(ins)))
    k = len(outs)
    rules = [Rule(f"S{d}", (Shard(d),) + rest, (Shard(d),) * k) for d in range(rank) if d != axis]
    if is_float(ins[0]):
        rules.append(Rule("P", (PARTIAL,) + rest, (PARTIAL,) * k))
    return rules


def _slice(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    shape = in_shapes[0]
    rank = len(shape)
    starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
    axes, steps = node.attrs.get("axes"), node.attrs.get("steps")
    if starts is None or ends is None or node.op != "Slice":
        return []
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    cut = set()
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = _normalise_axis(int(a), rank)
        whole = st == 1 and (s == 0 or s <= -shape[a]) and e >= shape[a]
        if not whole:
            cut.add(a)
    rest = tuple(_opt(node, i, REPLICATE) for i in range(1, len(ins)))
    rules = [Rule(f"S{d}", (Shard(d),) + rest, (Shard(d),)) for d in range(rank) if d not in cut]
    if is_float(ins[0]):
        rules.append(Rule("P", (PARTIAL,) + rest, (PARTIAL,)))
    return rules


def _concat(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    rank = len(out_shapes[0])
    axis = _normalise_axis(int(node.attrs.get("axis", _proto_attr(node, "axis", 0))), rank)
    n = len(ins)
    if any(len(s) != rank for s in in_shapes):
        return []
    rules = [Rule(f"S{d}", (Shard(d),) * n, (Shard(d),)) for d in range(rank) if d != axis]
    if is_float(outs[0]):
        rules.append(Rule("P", (PARTIAL,) * n, (PARTIAL,)))
    return rules


def _reduce(is_sum: bool):
    def rules(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
        rank = len(in_shapes[0])
        axes = node.attrs.get("axes")
        if axes is None or node.op == "Opaque":
            return []
        axes = sorted(_normalise_axis(int(a), rank) for a in axes)
        keep = int(node.attrs.get("keepdims", 1))
        rest = tuple(_opt(node, i, REPLICATE) for i in range(1, len(ins)))
        found = []
        for d in range(rank):
            if d in axes:
                if is_sum and is_float(outs[0]):
                    found.append(Rule(f"S{d}", (Shard(d),) + rest, (PARTIAL,)))
                continue
            e = d if keep else d - sum(1 for a in axes if a < d)
            found.append(Rule(f"S{d}", (Shard(d),) + rest, (Shard(e),)))
        if is_float(outs[0]):
            found.append(Rule("P", (PARTIAL,) + rest, (PARTIAL,)))
        return found
    return rules


def _gather(node, ins, in_shapes, outs, out_shapes) -> list[Rule]:
    data, idx = in_shapes[0], in_shapes[1]
    r, q = len(data), len(idx)
    axis = _normalise_axis(int(_proto_attr(node, "axis", 0)), r)
    rules = []
    for d in range(r):
        if d != axis:
            rules.append(Rule(f"data{d}", (Shard(d), REPLICATE), (Shard(d if d < axis else d - 1 + q),)))
    for i in range(q):
        rules.append(Rule(f"idx{i}", (REPLICATE, Shard(i)), (Shard(axis + i),)))
    if is_float(outs[0]):
        rules.append(Rule("P", (PARTIAL, REPLICATE), (PARTIAL,)))
    return rules


_HANDLERS = {
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "MaxPool": _pool(False),
    "AveragePool": _pool(True),
    "GlobalAveragePool": _pool(True),
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "LayerNormalization": _layernorm,
    "Transpose": _transpose,
    "Reshape": _view,
    "Flatten": _view,
    "Squeeze": _view,
    "Unsqueeze": _view,
    "Split": _split,
    "Slice": _slice,
    "Concat": _concat,
    "ReduceSum": _reduce(True),
    "ReduceMean": _reduce(False),
    "Gather": _gather,
}


# ---------------------------------------------------------------------------- n-D strategies


def local_type(t: TensorType | None, spec: Spec | None, mesh: DeviceMesh) -> TensorType | None:
    """The type of one device's block of a tensor."""
    shape = static_shape(t)
    if t is None or spec is None or shape is None:
        return t
    return TensorType(t.dtype, local_shape(shape, spec, mesh.shape))


def node_strategies(node: Node, graph: Graph, mesh: DeviceMesh, cost_model: CostModel) -> OpStrategies:
    """Every valid strategy of ``node`` on ``mesh``, with its compute time per device."""
    ins = [graph.types.get(i) if i else None for i in node.inputs]
    outs = [graph.types.get(o) if o else None for o in node.outputs]
    rules = rules_1d(node, ins, outs)
    replicate_only = rules is None or len(rules) == 1
    if rules is None:
        rules = [Rule("R", tuple(REPLICATE if i else None for i in node.inputs), tuple(REPLICATE for _ in outs))]
    strategies: list[Strategy] = []
    seen = set()
    for combo in itertools.product(rules, repeat=mesh.ndim):
        inputs = tuple(None if not node.inputs[i] else tuple(r.inputs[i] for r in combo) for i in range(len(ins)))
        outputs = tuple(None if not node.outputs[o] else tuple(r.outputs[o] for r in combo)
                        for o in range(len(outs)))
        if (inputs, outputs) in seen:
            continue
        seen.add((inputs, outputs))
        if not all(s is None or is_valid(s, static_shape(t), mesh.shape, is_float(t)) for s, t in zip(inputs, ins)):
            continue
        if not all(s is None or is_valid(s, static_shape(t), mesh.shape, is_float(t)) for s, t in zip(outputs, outs)):
            continue
        local_ins = [local_type(t, s, mesh) for t, s in zip(ins, inputs)]
        local_out = local_type(outs[0], outputs[0], mesh) if outs else None
        compute = float(cost_model.node_cost(node, local_ins, local_out))
        name = "/".join(r.name for r in combo)
        strategies.append(Strategy(name, inputs, outputs, compute))
    return OpStrategies(node, strategies, replicate_only)


def tensor_bytes(t: TensorType | None, spec: Spec | None, mesh: DeviceMesh) -> int:
    """Bytes of one device's block (symbolic dims at the cost model's representative size)."""
    from eqsat_dnn.cost import numel

    local = local_type(t, spec, mesh)
    return int(numel(local) * itemsize(local)) if local is not None else 0


__all__ = ["FLOAT_TYPES", "OpStrategies", "Rule", "Strategy", "dim_map", "is_float", "local_type",
           "node_strategies", "rules_1d", "static_shape", "tensor_bytes"]
