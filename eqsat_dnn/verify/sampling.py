"""Random choices for instances: shapes of fresh tensor variables and values of attributes.

A :class:`Sampler` holds one instance's random stream and its biases (a small pool of dims, a
rank distribution, a shape strategy, the numbers the rule itself mentions).
:func:`suggest_shape` proposes a shape for an op's input that fits the inputs already chosen,
:func:`attribute_value` a valid value for an op's attribute given its input shapes.

Nothing here is keyed by op name: each op's :class:`~eqsat_dnn.ir.language.OpSpec` declares
the rank of its first input, a shape domain per input (:data:`SHAPES`), a value domain per
attribute (a tuple of values, or a name in :data:`DOMAINS`) and, where attributes constrain
each other, a hook (:data:`HOOKS`) that draws them together. A new op whose inputs and
attributes fit the domains here needs no change to this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from eqsat_dnn.ir.language import Attr, OpSpec
from eqsat_dnn.verify.patterns import Unsupported

if TYPE_CHECKING:
    from eqsat_dnn.verify.instances import InstanceBuilder


def numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


class Sampler:
    """Random choices for one instance: a dim pool, a rank bias and a shape strategy."""

    def __init__(self, rng: np.random.Generator, hints: list, small: bool = False) -> None:
        self.rng = rng
        self.small = small
        ints = [h for h in hints if isinstance(h, int)]
        self.dim_hints = sorted({h for h in ints if 1 <= h <= 6})
        self.rank_hints = sorted({h for h in ints if 0 <= h <= 6})
        self.float_hints = sorted({float(h) for h in hints if isinstance(h, float) and math.isfinite(h)})
        self.mode = str(rng.choice(["guided", "same", "free"], p=[0.5, 0.3, 0.2]))
        base = [1, 2, 3] if small else [1, 2, 3, 4, 5]
        weights = np.array([0.2, 0.5, 0.3] if small else [0.12, 0.3, 0.3, 0.16, 0.12])
        size = int(rng.integers(1, 4))
        self.pool = [int(d) for d in rng.choice(base, size=size, replace=True, p=weights)]
        if self.dim_hints and rng.random() < 0.3:
            self.pool.append(int(rng.choice(self.dim_hints)))
        self.same_shape: tuple[int, ...] | None = None

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, items: list) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def dim(self) -> int:
        if self.mode == "free":
            return int(self.rng.integers(1, 4 if self.small else 6))
        return self.pick(self.pool)

    def rank(self, low: int = 0, high: int = 4) -> int:
        if self.small:
            high = max(low, min(high, 3))
        hinted = [r for r in self.rank_hints if low <= r <= high]
        if hinted and self.chance(0.3):
            return self.pick(hinted)
        ranks = list(range(low, high + 1))
        weights = np.array([[0.08, 0.2, 0.32, 0.25, 0.15, 0.1, 0.1][r] for r in ranks])
        return int(self.rng.choice(ranks, p=weights / weights.sum()))

    def shape(self, rank: int | None = None) -> tuple[int, ...]:
        rank = self.rank() if rank is None else rank
        return tuple(self.dim() for _ in range(rank))

    def factorization(self, n: int, rank: int | None = None) -> tuple[int, ...]:
        """A random shape with ``n`` elements."""
        rank = self.rank(1, 4) if rank is None else rank
        if rank == 0:
            return () if n == 1 else (n,)
        dims = [1] * rank
        remaining = n
        factors = []
        p = 2
        while remaining > 1:
            while remaining % p == 0:
                factors.append(p)
                remaining //= p
            p += 1
        for f in factors:
            dims[int(self.rng.integers(rank))] *= f
        return tuple(dims)

    def composition(self, total: int) -> list[int]:
        """Positive parts summing to ``total`` (1 to 3 of them)."""
        if total <= 1:
            return [total]
        parts = int(self.rng.integers(1, min(3, total) + 1))
        cuts = sorted(self.rng.choice(np.arange(1, total), size=parts - 1, replace=False).tolist())
        bounds = [0] + [int(c) for c in cuts] + [total]
        return [bounds[i + 1] - bounds[i] for i in range(parts)]

    def subset(self, n: int, nonempty: bool = True) -> list[int]:
        if n == 0:
            return []
        size = int(self.rng.integers(1 if nonempty else 0, n + 1))
        return sorted(int(i) for i in self.rng.choice(n, size=size, replace=False))

    def i64(self) -> int:
        choices = [0, 1, 2, -1] + [h for h in self.rank_hints if h <= 4]
        return int(self.pick(choices))

    def f64(self) -> float:
        return float(self.pick([1.0, 0.5, 2.0, -1.5] + self.float_hints))


SCALAR_VALUES = (1e-5, 1e-6, 1e-12, 0.125, 0.5, 1.0, 2.0, 8.0, -1.5, -0.25, 0.0)
"""Values of one-element constants read with ``(scalar t)``: epsilons, softmax scales
(``1 / sqrt(64)``), and ordinary floats of either sign."""

_TESTS = {"<": lambda v, c: v < c, ">": lambda v, c: v > c, "<=": lambda v, c: v <= c,
          ">=": lambda v, c: v >= c, "!=": lambda v, c: v != c, "=": lambda v, c: v == c}


def scalar_value(s: Sampler, bounds: list[tuple[str, float]]) -> float:
    """A value for a one-element float constant that the rule reads with ``(scalar t)``, passing
    the comparisons ``bounds`` (see :attr:`~eqsat_dnn.verify.patterns.Facts.bounds`).

    Always a float32 value: the constant may be float32, and the f64 the rule binds to it may
    become a float attribute (an epsilon), which ONNX stores as float32; either way both sides
    then hold exactly the same number."""
    candidates = list(SCALAR_VALUES) + s.float_hints + [c for _, c in bounds]
    candidates += [float(s.rng.standard_normal()), float(s.rng.exponential())]
    rounded = [float(np.float32(v)) for v in candidates]
    fitting = [v for v in rounded if all(_TESTS[op](v, c) for op, c in bounds)]
    if not fitting:
        raise Unsupported(f"no value passes the conditions {bounds} on a (scalar t)")
    return float(s.pick(fitting))


# -- shapes for fresh tensor variables, from the inputs already chosen ----------


def suggest_shape(b: InstanceBuilder, spec: OpSpec, position: int, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A shape for input ``position`` of ``spec`` that fits the inputs before it (or ``None``),
    from the op's declared shape domains and ranks."""
    s = b.s
    domain = spec.input_shapes[position] if position < len(spec.input_shapes) else None
    if position == 0:
        if domain is not None:
            return SHAPES[domain](s, b, known, attrs)
        if spec.ranks is None:
            return None
        low, high = spec.ranks
        return s.shape(low) if low == high else s.shape(s.rank(low, high))
    if domain is None or not known or known[0] is None:
        return None
    return SHAPES[domain](s, b, known, attrs)


def _perm_rank(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """As many dims as the ``perm`` attribute has entries, once it is known."""
    return s.shape(len(attrs["perm"])) if isinstance(attrs.get("perm"), list) else None


def _reshape_source(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A shape with as many elements as a known, fully positive ``shape`` attribute."""
    target = attrs.get("shape")
    if isinstance(target, list) and target and all(d > 0 for d in target):
        return s.factorization(numel(target))
    return None


def _image(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """NCHW, spatial dims of at least 3."""
    return (s.dim(), s.dim(), s.dim() + 2, s.dim() + 2)


def _unit_dim(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """Rank 1 to 4, one dim of size 1."""
    shape = list(s.shape(s.rank(1, 4)))
    shape[int(s.rng.integers(len(shape)))] = 1
    return tuple(shape)


def _broadcast(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """A shape that broadcasts with the first input's."""
    first = known[0]
    choice = int(s.rng.integers(6))
    if choice == 5 and len(first) == 4:
        if first[1] == 1:  # per head and key, as ALiBi's bias on a one-head mask
            return (first[0], s.pick([2, 3, 4]), 1, first[3])
        return (1, first[1], 1, 1)  # per-channel, as scales and biases of NCHW tensors are
    if choice <= 1 or choice == 5:
        return first
    if choice == 2:
        return first[int(s.rng.integers(len(first) + 1)):]
    if choice == 3:
        return tuple(1 if s.chance(0.5) else d for d in first)
    return tuple(s.shape(int(s.rng.integers(1, 3)))) + tuple(first)


def _matmul_rhs(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A right operand whose rows match the first input's columns."""
    first = known[0]
    if len(first) == 0:
        return None
    k = first[-1]
    n = s.dim()
    choice = int(s.rng.integers(3))
    if choice == 0:
        return (k,)
    if choice == 1 or len(first) <= 2:
        return (k, n)
    return tuple(first[:-2]) + (k, n)


def _gemm_b(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A matrix sharing one dim with the (matrix) first input."""
    first = known[0]
    if len(first) != 2:
        return None
    k = first[int(s.rng.integers(2))]
    return (k, s.dim()) if s.chance(0.5) else (s.dim(), k)


def _gemm_c(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A bias broadcasting to the product of the first two inputs."""
    first = known[0]
    if len(first) != 2:
        return None
    second = known[1] if len(known) > 1 else None
    n = second[int(s.rng.integers(2))] if second else s.dim()
    return s.pick([(n,), (first[0], n), (1, n), ()])


def _conv_kernel(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """An OIHW kernel for the NCHW first input, at most 3 x 3 and no larger than the image."""
    first = known[0]
    if len(first) != 4:
        return None
    h, w = first[2], first[3]
    return (s.dim(), first[1], int(s.rng.integers(1, min(3, h) + 1)), int(s.rng.integers(1, min(3, w) + 1)))


def _conv_bias(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """One value per output channel of the kernel before it."""
    weight = known[1] if len(known) > 1 else None
    return (weight[0],) if len(known[0]) == 4 and weight else None


def _channel(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """One value per channel (dim 1) of the first input."""
    return (known[0][1],) if len(known[0]) >= 2 else None


def _trailing(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """The first input's last dims (at least one)."""
    first = known[0]
    if len(first) < 1:
        return None
    return tuple(first[int(s.rng.integers(len(first))):]) or (first[-1],)


def _like_previous(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """The shape of the input before, else (that one absent) :func:`_trailing`."""
    if len(known[0]) >= 1 and len(known) > 1 and known[-1] is not None:
        return known[-1]
    return _trailing(s, b, known, attrs)


def _rotary_input(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """(batch, heads, sequence, head): RotaryEmbedding's 4-D input, its head size even."""
    return (s.dim(), s.dim(), s.dim(), 2 * s.dim())


def _rotary_cache(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """(batch, sequence, head / 2): a cos or sin cache for the 4-D input before, without position ids."""
    first = known[0]
    return (first[0], first[2], first[3] // 2) if len(first) == 4 and first[3] % 2 == 0 else None


def _like_first(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """The first input's shape (GatherElements' indices)."""
    return known[0]


def _nd_indices(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """GatherND's index tuples: a few leading dims, then a tuple length up to the first input's rank."""
    if not known[0]:
        return None
    return s.shape(s.rank(0, 2)) + (int(s.rng.integers(1, len(known[0]) + 1)),)


def _scalar(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """A 0-d tensor (Range's start, limit and delta)."""
    return ()


def _mha_query(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """[B, S, H * D] with a few heads of a small size, so that head counts have divisors to draw."""
    return (s.dim(), s.dim(), s.pick([1, 2, 3]) * s.pick([1, 2, 4]))


def _mha_kv(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """K (then V, the same shape) for the 3-D query: [B, T, H * D], T free."""
    if len(known[0]) != 3:
        return None
    if len(known) > 1 and known[1] is not None:
        return known[1]
    return (known[0][0], s.dim(), known[0][2])


def _absent(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> None:
    """An optional input the rules never give (it stays ``(Absent)``)."""
    return None


def _score_bias(s: Sampler, query: tuple[int, ...], heads: int, rows: int, keys: int) -> tuple[int, ...]:
    """An additive mask [B or 1, H or 1, S, T] over the scores, as exporters write it."""
    return (query[0] if s.chance(0.3) else 1, heads if s.chance(0.3) else 1, rows, keys)


def _mha_bias(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """MultiHeadAttention's attention_bias: one head (the count is drawn after the inputs)."""
    if len(known[0]) != 3 or len(known) < 2 or known[1] is None or len(known[1]) != 3:
        return None
    return _score_bias(s, known[0], 1, known[0][1], known[1][1])


def _qkv_weights(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """onnxruntime Attention's packed projection [Hin, 3 H] for the 3-D input [B, S, Hin], H = Hin
    (so that the head count the hook draws, a divisor of Hin, divides H)."""
    return (known[0][2], 3 * known[0][2]) if len(known[0]) == 3 else None


def _qkv_bias(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """The packed projection's bias [3 H]; then (past the absent inputs) its attention_bias."""
    if len(known) > 1 and known[1] is not None and len(known[1]) == 2:
        return (known[1][1],)
    return None


def _projected_bias(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """onnxruntime Attention's attention_bias over its self-attention scores [B or 1, 1, S, S]."""
    return _score_bias(s, known[0], 1, known[0][1], known[0][1]) if len(known[0]) == 3 else None


def _attention_query(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...]:
    """[B, H, S, D], or (a rule that takes it 3-D) [B, S, H * D]; S sometimes 8 or 12, long enough
    for a rule that cuts the queries in eight blocks."""
    seq = s.pick([8, 12]) if s.chance(0.3) else s.dim()
    heads = s.pick([1, 2, 4, 6])
    if s.chance(0.5):
        return (s.dim(), seq, heads * s.dim())
    return (s.dim(), heads, seq, s.dim())


def _attention_kv(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """K as [B, Hkv, T, D] with Hkv dividing the query's heads (GQA), then V as [B, Hkv, T, Dv]; for a
    3-D query [B, S, H * D], K and V as [B, T, H * D]."""
    q = known[0]
    if len(q) == 3:  # the 3-D form [B, T, Hkv * D]: K/V heads as Q's, or half or a third as many
        if len(known) > 1 and known[1] is not None and len(known[1]) == 3:
            return tuple(known[1])
        return (q[0], s.dim(), q[2] // s.pick([g for g in (1, 1, 2, 3) if q[2] % g == 0]))
    if len(q) != 4:
        return None
    if len(known) > 1 and known[1] is not None and len(known[1]) == 4:
        return tuple(known[1][:3]) + (s.dim(),)
    kv_heads = s.pick([h for h in range(1, q[1] + 1) if q[1] % h == 0])
    return (q[0], kv_heads, s.dim(), q[3])


def _attention_mask(s: Sampler, b: InstanceBuilder, known: list, attrs: dict) -> tuple[int, ...] | None:
    """An additive mask over the 4-D scores; for the 3-D form one head or a few (the count drawn after follows)."""
    if len(known) < 2 or known[1] is None or len(known[1]) != len(known[0]):
        return None
    if len(known[0]) == 3:
        per_head = [h for h in (2, 3, 4) if known[0][2] % h == 0 and known[1][2] % h == 0]
        heads = s.pick(per_head) if per_head and s.chance(0.3) else 1
        return _score_bias(s, known[0], heads, known[0][1], known[1][1])
    if len(known[0]) != 4:
        return None
    return _score_bias(s, known[0], known[0][1], known[0][2], known[1][2])


SHAPES: dict[str, Callable[[Sampler, "InstanceBuilder", list, dict], tuple[int, ...] | None]] = {
    "perm_rank": _perm_rank, "reshape_source": _reshape_source, "image": _image, "unit_dim": _unit_dim,
    "broadcast": _broadcast, "matmul_rhs": _matmul_rhs, "gemm_b": _gemm_b, "gemm_c": _gemm_c,
    "conv_kernel": _conv_kernel, "conv_bias": _conv_bias, "channel": _channel, "trailing": _trailing,
    "like_previous": _like_previous, "rotary_input": _rotary_input, "rotary_cache": _rotary_cache,
    "like_first": _like_first, "nd_indices": _nd_indices, "scalar": _scalar,
    "mha_query": _mha_query, "mha_kv": _mha_kv, "absent": _absent,
    "mha_bias": _mha_bias, "attention_query": _attention_query, "attention_kv": _attention_kv,
    "attention_mask": _attention_mask, "qkv_weights": _qkv_weights, "qkv_bias": _qkv_bias,
    "projected_bias": _projected_bias,
}
"""Shape domains of op inputs (:attr:`OpSpec.input_shapes`): ``(sampler, builder, shapes of the
inputs before, attribute values already known) -> shape`` (None: no suggestion). A first
input's domain sees no shapes."""


# -- attribute values -----------------------------------------------------------------


def generic_value(s: Sampler, sort: str, rank: int | None) -> Any:
    """Any value of ``sort`` (vectors of axes of a tensor of rank ``rank``)."""
    if sort == "i64":
        return s.i64()
    if sort == "f64":
        return s.f64()
    if sort == "String":
        return "none"
    if sort == "IVec":
        r = rank if rank is not None else s.rank(0, 4)
        return [int(s.rng.integers(0, max(r, 1))) for _ in range(int(s.rng.integers(0, r + 1)))]
    raise Unsupported(f"cannot draw a value of sort {sort}")


def plan_slice(s: Sampler, inputs: list, given: dict[str, Any]) -> dict[str, list[int]]:
    """Starts, ends, axes and steps for one Slice of its input ``x``, consistent with the values the
    rule fixes.

    Mostly canonical forward slices (what import writes and the slicing rules expect), sometimes
    anything ONNX allows (negative, reversed, out of range), so rules are tried on those too."""
    x = inputs[0]
    r = len(x)
    axes = given.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, int) and 0 <= a < r for a in axes):
        count = 1 if s.chance(0.6) else int(s.rng.integers(1, r + 1))
        axes = [int(a) for a in s.rng.permutation(r)[:count]]
    plan: dict[str, list[int]] = {"axes": axes, "starts": [], "ends": [], "steps": []}
    fixed = {k: v for k, v in given.items() if isinstance(v, list) and len(v) == len(axes)}
    for i, axis in enumerate(axes):
        d = x[axis]
        step = fixed["steps"][i] if "steps" in fixed else (1 if s.chance(0.75) else s.pick([2, -1]))
        start = fixed["starts"][i] if "starts" in fixed else None
        end = fixed["ends"][i] if "ends" in fixed else None
        if s.chance(0.8) and step > 0:
            if start is None:
                start = int(s.rng.integers(0, d + 1)) if d else 0
            if end is None:
                end = int(s.rng.integers(min(start, d), d + 1)) if d and start <= d else start
        else:
            start = int(s.rng.integers(-d - 1, d + 2)) if start is None else start
            end = int(s.rng.integers(-d - 1, d + 2)) if end is None else end
        plan["starts"].append(start)
        plan["ends"].append(end)
        plan["steps"].append(step)
    return plan


@dataclass
class Context:
    """What an attribute's domain may look at."""

    s: Sampler
    b: InstanceBuilder
    attr: Attr
    shapes: list
    """Shapes of the op's inputs (None for an absent one)."""
    chosen: dict
    """Values of the op's attributes drawn so far."""

    @property
    def x(self) -> tuple[int, ...] | None:
        return self.shapes[0] if self.shapes else None

    @property
    def r(self) -> int | None:
        return len(self.x) if self.x is not None else None

    def image(self) -> bool:
        return self.x is not None and len(self.x) == 4

    def generic(self) -> Any:
        return generic_value(self.s, self.attr.sort, self.r)


def attribute_value(s: Sampler, spec: OpSpec, attr: Attr, shapes: list, chosen: dict, b: InstanceBuilder) -> Any:
    """A random valid value for attribute ``attr`` of ``spec`` given its input shapes, from the
    attribute's declared domain."""
    domain = attr.domain
    if isinstance(domain, tuple):
        value = s.pick(list(domain))
        return list(value) if isinstance(value, tuple) else value
    if domain is None:
        return generic_value(s, attr.sort, len(shapes[0]) if shapes and shapes[0] is not None else None)
    return DOMAINS[domain](Context(s, b, attr, shapes, chosen))


def _axis(c: Context) -> Any:
    """An axis of the first input."""
    return int(c.s.rng.integers(0, c.r)) if c.r else c.generic()


def _axis_or_end(c: Context) -> Any:
    """An axis of the first input, or its rank (Flatten's split point)."""
    return int(c.s.rng.integers(0, c.r + 1)) if c.r is not None else c.generic()


def _perm(c: Context) -> Any:
    """A permutation of the first input's axes: the identity, the reversal, the last two swapped, or any."""
    r = c.r
    if r is None:
        return c.generic()
    options = [list(range(r)), list(reversed(range(r)))]
    if r >= 2:
        options.append(list(range(r - 2)) + [r - 1, r - 2])
    options.append([int(i) for i in c.s.rng.permutation(r)])
    return c.s.pick(options)


def _reshape_target(c: Context) -> Any:
    """A target with as many elements as the first input: its own shape, another tensor's of the
    instance, its dims permuted, or any factorization; sometimes with a -1 or a 0 (copy) in it."""
    if c.x is None:
        return c.generic()
    s, b, x = c.s, c.b, c.x
    n = numel(x)
    others = sorted({shape for shape in b.shapes.values() if numel(shape) == n and shape != x},
                    key=lambda t: (len(t), t))
    choice = int(s.rng.integers(4))
    heads = _head_split(b, x) if len(x) == 3 and s.chance(0.6) else None
    if heads is not None:
        return heads  # no -1 or 0 in it: the attention rules read its dims
    if len(x) == 5 and s.chance(0.5):
        return [x[0], x[1] * x[2], x[3], x[4]]  # GQA's repeated heads merged
    rows = [shape for shape in b.shapes.values() if len(shape) == 3 and shape[0] * shape[1] == x[0]] \
        if len(x) == 2 else []
    if rows and s.chance(0.5):
        return [rows[0][0], rows[0][1], x[1]]  # unflattened after a linear layer to the [B, S] of a 3-D tensor
    if choice == 0:
        target = list(x)  # a no-op reshape
    elif choice == 1 and others:
        target = list(s.pick(others))  # the shape of another tensor of the instance
    elif choice == 2 and len(x) > 1:
        target = [int(d) for d in s.rng.permutation(list(x))]  # same rank, usually another shape
    elif len(x) == 3 and choice == 3 and s.chance(0.75):
        target = [x[0] * x[1], x[2]]  # flattened before a linear layer, as exporters write it
    elif len(x) in (2, 3) and s.chance(0.5):
        return _packed_heads(s, x)  # a projection's columns in groups of parts (GPT-NeoX, BLOOM)
    elif len(x) == 4 and s.chance(0.5):
        return [x[0] * x[1], x[2], x[3]]  # the heads merged into the batch (BART-style attention)
    else:
        target = list(s.factorization(n, s.rank(0, 4)))
    if target and s.chance(0.2):
        target[int(s.rng.integers(len(target)))] = -1
    if target and s.chance(0.15):
        i = int(s.rng.integers(min(len(target), len(x)) or 1))
        if i < len(x) and i < len(target) and target[i] == x[i]:
            target[i] = 0
    return target


def _head_split(b: InstanceBuilder, x: tuple[int, ...]) -> list[int] | None:
    """[B, S, H * D] split into heads [B, S, H, D] (attention's head split), with the head count of
    a head split the instance already has where it fits, so that Q, K and V split alike."""
    batch, rows, width = x
    for shape in b.shapes.values():
        if len(shape) == 4 and shape[0] == batch and shape[2] * shape[3] == width:
            return [batch, rows, shape[2], shape[3]]
    divisors = [h for h in range(2, width) if width % h == 0]
    return [batch, rows, divisors[0], width // divisors[0]] if divisors else None


def _packed_heads(s: Sampler, x: tuple[int, ...]) -> list[int]:
    """A projection's output [B, S, G * P] (or [B * S, G * P]: flattened) viewed as [B, S, G, P]
    or as [B, S, G, J, P] (GPT-NeoX's heads with Q, K and V side by side, BLOOM's), G and J random
    divisors of the width."""
    lead = list(x[:-1]) if len(x) == 3 else [1, x[0]]
    width = x[-1]
    g = int(s.pick([g for g in range(1, width + 1) if width % g == 0]))
    if s.chance(0.5):
        return lead + [g, width // g]
    j = int(s.pick([j for j in range(1, width // g + 1) if (width // g) % j == 0]))
    return lead + [g, j, width // g // j]


def _allowzero(c: Context) -> Any:
    """0 where the target copies a dim (a 0 in it), else mostly 0."""
    if c.x is None:
        return c.generic()
    return 0 if 0 in c.chosen.get("shape", []) or c.s.chance(0.8) else 1


def _norm_axis(c: Context) -> Any:
    """The first normalized axis: mostly where the scale's (second input's) dims begin."""
    r = c.r
    if not r:
        return c.generic()
    scale = c.shapes[1] if len(c.shapes) > 1 else None
    if scale is not None and 0 < len(scale) <= r and c.s.chance(0.8):
        return r - len(scale)
    return int(c.s.rng.integers(0, r))


def _split_sizes(c: Context) -> Any:
    """Sizes summing to the dim at the ``axis`` drawn before; sometimes equal parts, as exporters
    split (a packed Q/K/V projection in three, rotate-half in two)."""
    if not c.r:
        return c.generic()
    axis = c.chosen.get("axis", 0)
    if not 0 <= axis < c.r:
        return [1]
    equal = [n for n in (2, 3) if c.x[axis] % n == 0 and c.x[axis] >= n]
    if equal and c.s.chance(0.3):
        n = c.s.pick(equal)
        return [c.x[axis] // n] * n
    return c.s.composition(c.x[axis])


def _split_index(c: Context) -> Any:
    """One of the parts of the ``split`` drawn before."""
    if not c.r:
        return c.generic()
    return int(c.s.rng.integers(0, len(c.chosen.get("split", [1]))))


def _planned(c: Context) -> Any:
    """The value the op's hook drew (see :data:`HOOKS`)."""
    return c.b.plan[c.attr.name] if c.attr.name in c.b.plan else c.generic()


def _unit_axes(c: Context) -> Any:
    """Some of the first input's axes of size 1."""
    if c.x is None:
        return c.generic()
    ones = [i for i, d in enumerate(c.x) if d == 1]
    if not ones:
        return [0]
    return [ones[i] for i in c.s.subset(len(ones))]


def _new_axes(c: Context) -> Any:
    """One or two axes of the output to insert."""
    if c.r is None:
        return c.generic()
    k = int(c.s.rng.integers(1, 3))
    return sorted(int(a) for a in c.s.rng.choice(c.r + k, size=k, replace=False))


def _axes_subset(c: Context) -> Any:
    """Some of the first input's axes."""
    if c.r is None:
        return c.generic()
    return c.s.subset(c.r) if c.r else []


def _gemm_trans_b(c: Context) -> Any:
    """Whether to transpose the second matrix: so that it fits the first where one way does."""
    a = c.x
    bshape = c.shapes[1] if len(c.shapes) > 1 else None
    if a is not None and bshape is not None and len(a) == 2 and len(bshape) == 2:
        k = a[1] if c.chosen.get("transA", 0) == 0 else a[0]
        fits = [t for t in (0, 1) if bshape[t] == k]
        return c.s.pick(fits) if fits else 0
    return int(c.s.rng.integers(0, 2))


def _steps_2d(c: Context) -> Any:
    """Steps of 1 (mostly) or 2 along the two spatial axes of an NCHW input."""
    return [c.s.pick([1, 1, 2]), c.s.pick([1, 1, 2])] if c.image() else [1, 1]


def _conv_pads(c: Context) -> Any:
    """Often the "same" padding of an odd kernel (as most real convs have), else 0 to 2 a side."""
    if not c.image():
        return [0, 0, 0, 0]
    w = c.shapes[1] if len(c.shapes) > 1 else None
    if w is not None and len(w) == 4 and w[2] % 2 and w[3] % 2 and c.s.chance(0.4):
        return [w[2] // 2, w[3] // 2] * 2
    return [int(c.s.rng.integers(0, 3)) for _ in range(4)]


def _conv_group(c: Context) -> Any:
    """The group count the kernel's input channels imply."""
    if not c.image():
        return c.generic()
    x, w = c.x, c.shapes[1] if len(c.shapes) > 1 else None
    if w is not None and len(w) == 4 and w[1] and x[1] % w[1] == 0:
        return x[1] // w[1]
    return 1


def _pool_kernel(c: Context) -> Any:
    """A window of 1 to 3 a side, no larger than the image."""
    if not c.image():
        return c.generic()
    return [int(c.s.rng.integers(1, min(3, c.x[2]) + 1)), int(c.s.rng.integers(1, min(3, c.x[3]) + 1))]


def _pool_pads(c: Context) -> Any:
    """Pads smaller than the window drawn before."""
    if not c.image():
        return [0, 0, 0, 0]
    kernel = c.chosen.get("kernel_shape", [1, 1])
    return [int(c.s.rng.integers(0, min(2, k))) for k in kernel + kernel]


def _pool_dilations(c: Context) -> Any:
    """Mostly none, else 1 or 2 a side."""
    if not c.image():
        return [1, 1]
    return [1, 1] if c.s.chance(0.7) else [c.s.pick([1, 2]), c.s.pick([1, 2])]


def _mostly_zero(c: Context) -> Any:
    """0 seven times in ten, else 1 (a flag that is rarely set)."""
    if not c.image():
        return c.generic()
    return 0 if c.s.chance(0.7) else 1


def _pad_widths(c: Context) -> Any:
    """0 to 2 before and after each axis; for a 4-D input often a kernel grown spatially."""
    r = c.r
    if r is None:
        return c.generic()
    if r == 4 and c.s.chance(0.6):
        top, left, bottom, right = (int(c.s.rng.integers(0, 2)) for _ in range(4))
        return [0, 0, top, left, 0, 0, bottom, right]
    return [int(c.s.rng.integers(0, 3)) for _ in range(2 * r)]


def _any_shape(c: Context) -> Any:
    """A shape of the sampler's dims (what ConstantOfShape builds)."""
    return list(c.s.shape(c.s.rank(1, 4)))


def _float_type(c: Context) -> Any:
    """The instance's float type (an element type attribute: ConstantOfShape's)."""
    return c.b.dtype


def _kv_repeats(b: InstanceBuilder, x: tuple[int, ...]) -> list[int] | None:
    """GQA's repeat of K/V heads [B, Hkv, 1, T, D] -> [B, Hkv, n, T, D], n the query heads of a
    4-D attention query of the instance over Hkv (n = 1 where none fits)."""
    if len(x) != 5 or x[2] != 1:
        return None
    groups = [shape[1] // x[1] for shape in b.shapes.values()
              if len(shape) == 4 and shape[0] == x[0] and shape[3] == x[4] and shape[1] % x[1] == 0]
    return [x[0], x[1], groups[0] if groups else 1, x[3], x[4]]


def _expand_target(c: Context) -> Any:
    """A shape the first input broadcasts to: its size-1 dims grown (or kept), sometimes a leading
    dim added; mostly the dims of the input, as Expand is used (a repeat along new axes)."""
    if c.x is None:
        return c.generic()
    repeats = _kv_repeats(c.b, c.x)
    if repeats is not None and c.s.chance(0.6):
        return repeats
    target = [c.s.dim() if d == 1 and c.s.chance(0.6) else d for d in c.x]
    if c.s.chance(0.2):
        target = [c.s.dim()] + target
    return target


DOMAINS: dict[str, Callable[[Context], Any]] = {
    "axis": _axis, "axis_or_end": _axis_or_end, "perm": _perm, "reshape_target": _reshape_target,
    "allowzero": _allowzero, "norm_axis": _norm_axis, "split_sizes": _split_sizes, "split_index": _split_index,
    "planned": _planned, "unit_axes": _unit_axes, "new_axes": _new_axes, "axes_subset": _axes_subset,
    "gemm_transB": _gemm_trans_b, "steps_2d": _steps_2d, "conv_pads": _conv_pads, "conv_group": _conv_group,
    "pool_kernel": _pool_kernel, "pool_pads": _pool_pads, "pool_dilations": _pool_dilations,
    "mostly_zero": _mostly_zero, "pad_widths": _pad_widths, "any_shape": _any_shape, "float_type": _float_type,
    "expand_target": _expand_target,
}
"""Shape-dependent attribute domains (:attr:`Attr.domain`). Each falls back to any value of
the sort (or the ONNX default) where the input shapes do not fit the op: such an instance
is invalid, and ONNX shape inference rejects it."""

def plan_attention(s: Sampler, inputs: list, given: dict[str, Any]) -> dict[str, Any]:
    """A fused attention's scale and (3-D query [B, S, H * D]) head count dividing H * D (ONNX
    Attention's 3-D form: ``q_num_heads``, and ``kv_num_heads`` as many or, where K [B, T, Hkv * D]
    is narrower, the count that keeps Q's head size: GQA)."""
    x = inputs[0]
    plan: dict[str, Any] = {"scale": given.get("scale", s.pick([0.125, 0.5, 1.0, 0.35]))}
    if len(x) == 3:
        key = inputs[1] if len(inputs) > 1 and inputs[1] is not None and len(inputs[1]) == 3 else None
        group = x[2] // key[2] if key is not None and key[2] and x[2] % key[2] == 0 else 1
        heads = [h for h in range(1, x[2] + 1) if x[2] % h == 0 and h % group == 0] or [1]
        mask = inputs[3] if len(inputs) > 3 and inputs[3] is not None and len(inputs[3]) == 4 else None
        heads = [mask[1]] if mask is not None and mask[1] in heads[1:] else heads  # a per-head mask's
        plan["num_heads"] = given.get("num_heads", s.pick(heads))
    # ONNX Attention's head counts: 0 (absent) for its 4-D form; for the 3-D one, K/V's as Q's
    # or fewer (GQA)
    plan["q_num_heads"] = given.get("q_num_heads", plan.get("num_heads", 0))
    plan["kv_num_heads"] = given.get("kv_num_heads", plan["q_num_heads"] // group if len(x) == 3 else
                                     plan["q_num_heads"])
    return plan


HOOKS: dict[str, Callable[[Sampler, list, dict[str, Any]], dict[str, Any]]] = {
    "slice": plan_slice, "attention": plan_attention}
"""Op hooks (:attr:`OpSpec.sampler`): ``(sampler, the input shapes, attribute values the rule
fixes) -> attribute values`` drawn together, which the ``"planned"`` domain hands out."""
