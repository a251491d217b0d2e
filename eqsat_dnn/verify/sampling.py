"""Random choices for instances: shapes of fresh tensor variables and values of attributes.

A :class:`Sampler` holds one instance's random stream and its biases (a small pool of dims, a
rank distribution, a shape strategy, the numbers the rule itself mentions).
:func:`suggest_shape` proposes a shape for an op's input that fits the inputs already chosen,
:func:`attribute_value` a valid value for an op's attribute given its input shapes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto

from eqsat_dnn.ir.language import OPS
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


# -- shapes for fresh tensor variables, from the inputs already chosen ----------


def suggest_shape(b: InstanceBuilder, op: str, position: int, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A shape for input ``position`` of ``op`` that fits the inputs before it (or ``None``)."""
    s = b.s
    first = known[0] if known else None
    if position == 0:
        if op == "Transpose" and isinstance(attrs.get("perm"), list):
            return s.shape(len(attrs["perm"]))
        if op == "Reshape" and isinstance(attrs.get("shape"), list):
            target = attrs["shape"]
            if target and all(d > 0 for d in target):
                return s.factorization(numel(target))
        if op in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization"):
            return (s.dim(), s.dim(), s.dim() + 2, s.dim() + 2) if op != "BatchNormalization" else s.shape(
                s.rank(2, 4))
        if op == "Gemm":
            return s.shape(2)
        if op in ("MatMul", "Softmax", "LayerNormalization", "Flatten", "Split", "Concat"):
            return s.shape(s.rank(1, 4))
        if op in ("Squeeze",):
            shape = list(s.shape(s.rank(1, 4)))
            shape[int(s.rng.integers(len(shape)))] = 1
            return tuple(shape)
        return None
    if first is None:
        return None
    spec = OPS[op]
    if spec.shape == "broadcast":
        choice = int(s.rng.integers(6))
        if choice == 5 and len(first) == 4:
            return (1, first[1], 1, 1)  # per-channel, as scales and biases of NCHW tensors are
        if choice <= 1 or choice == 5:
            return first
        if choice == 2:
            return first[int(s.rng.integers(len(first) + 1)):]
        if choice == 3:
            return tuple(1 if s.chance(0.5) else d for d in first)
        return tuple(s.shape(int(s.rng.integers(1, 3)))) + tuple(first)
    if op == "MatMul":
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
    if op == "Gemm":
        if len(first) != 2:
            return None
        if position == 1:
            k = first[int(s.rng.integers(2))]
            return (k, s.dim()) if s.chance(0.5) else (s.dim(), k)
        second = known[1] if len(known) > 1 else None
        n = second[int(s.rng.integers(2))] if second else s.dim()
        return s.pick([(n,), (first[0], n), (1, n), ()])
    if op == "Conv" and len(first) == 4:
        if position == 1:
            h, w = first[2], first[3]
            return (s.dim(), first[1], int(s.rng.integers(1, min(3, h) + 1)), int(s.rng.integers(1, min(3, w) + 1)))
        weight = known[1] if len(known) > 1 else None
        return (weight[0],) if weight else None
    if op == "BatchNormalization" and len(first) >= 2:
        return (first[1],)
    if op == "LayerNormalization" and len(first) >= 1:
        if position == 2 and len(known) > 1 and known[1] is not None:
            return known[1]
        return tuple(first[int(s.rng.integers(len(first))):]) or (first[-1],)
    return None


# -- attribute values -----------------------------------------------------------------


def generic_value(s: Sampler, sort: str, rank: int | None) -> Any:
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


def plan_slice(s: Sampler, x: tuple[int, ...], given: dict[str, Any]) -> dict[str, list[int]]:
    """Starts, ends, axes and steps for one Slice of ``x``, consistent with the values the rule fixes.

    Mostly canonical forward slices (what import writes and the slicing rules expect), sometimes
    anything ONNX allows (negative, reversed, out of range), so rules are tried on those too."""
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


def _reshape_target(s: Sampler, b: InstanceBuilder, x: tuple[int, ...]) -> list[int]:
    n = numel(x)
    others = sorted({shape for shape in b.shapes.values() if numel(shape) == n and shape != x},
                    key=lambda t: (len(t), t))
    choice = int(s.rng.integers(4))
    if choice == 0:
        target = list(x)  # a no-op reshape
    elif choice == 1 and others:
        target = list(s.pick(others))  # the shape of another tensor of the instance
    elif choice == 2 and len(x) > 1:
        target = [int(d) for d in s.rng.permutation(list(x))]  # same rank, usually another shape
    else:
        target = list(s.factorization(n, s.rank(0, 4)))
    if target and s.chance(0.2):
        target[int(s.rng.integers(len(target)))] = -1
    if target and s.chance(0.15):
        i = int(s.rng.integers(min(len(target), len(x)) or 1))
        if i < len(x) and i < len(target) and target[i] == x[i]:
            target[i] = 0
    return target


def attribute_value(s: Sampler, op: str, name: str, sort: str, shapes: list, chosen: dict, b: InstanceBuilder) -> Any:
    """A random valid value for attribute ``name`` of ``op`` given its input shapes."""
    x = shapes[0] if shapes else None
    r = len(x) if x is not None else None
    if op == "Transpose" and name == "perm" and r is not None:
        options = [list(range(r)), list(reversed(range(r)))]
        if r >= 2:
            options.append(list(range(r - 2)) + [r - 1, r - 2])
        options.append([int(i) for i in s.rng.permutation(r)])
        return s.pick(options)
    if op == "Reshape" and x is not None:
        if name == "shape":
            return _reshape_target(s, b, x)
        if name == "allowzero":
            return 0 if 0 in chosen.get("shape", []) or s.chance(0.8) else 1
    if op == "Flatten" and name == "axis" and r is not None:
        return int(s.rng.integers(0, r + 1))
    if name == "axis" and op in ("Softmax", "Concat", "Split") and r:
        return int(s.rng.integers(0, r))
    if op == "LayerNormalization" and r:
        if name == "axis":
            scale = shapes[1] if len(shapes) > 1 else None
            if scale is not None and 0 < len(scale) <= r and s.chance(0.8):
                return r - len(scale)
            return int(s.rng.integers(0, r))
        if name == "epsilon":
            return s.pick([1e-5, 1e-3, 0.1])
        if name == "stash_type":
            return 1
    if op == "Split" and x is not None and r:
        if name == "split":
            axis = chosen.get("axis", 0)
            return s.composition(x[axis]) if 0 <= axis < r else [1]
        if name == "index":
            return int(s.rng.integers(0, len(chosen.get("split", [1]))))
    if op == "Slice" and name in b.slice_plan:
        return b.slice_plan[name]
    if op == "Squeeze" and name == "axes" and x is not None:
        ones = [i for i, d in enumerate(x) if d == 1]
        if not ones:
            return [0]
        picked = s.subset(len(ones))
        return [ones[i] for i in picked]
    if op == "Unsqueeze" and name == "axes" and r is not None:
        k = int(s.rng.integers(1, 3))
        return sorted(int(a) for a in s.rng.choice(r + k, size=k, replace=False))
    if op in ("ReduceMean", "ReduceSum") and r is not None:
        if name == "axes":
            return s.subset(r) if r else []
        if name == "keepdims":
            return int(s.rng.integers(0, 2))
    if op == "Gemm":
        if name in ("alpha", "beta"):
            return s.pick([1.0, 0.5, 2.0, -1.5])
        a = x
        bshape = shapes[1] if len(shapes) > 1 else None
        if name == "transA":
            return int(s.rng.integers(0, 2))
        if name == "transB" and a is not None and bshape is not None and len(a) == 2 and len(bshape) == 2:
            k = a[1] if chosen.get("transA", 0) == 0 else a[0]
            fits = [t for t in (0, 1) if bshape[t] == k]
            return s.pick(fits) if fits else 0
        if name == "transB":
            return int(s.rng.integers(0, 2))
    if op == "Conv" and x is not None and len(x) == 4:
        w = shapes[1] if len(shapes) > 1 else None
        if name == "strides":
            return [s.pick([1, 1, 2]), s.pick([1, 1, 2])]
        if name == "pads":
            if w is not None and len(w) == 4 and w[2] % 2 and w[3] % 2 and s.chance(0.4):
                return [w[2] // 2, w[3] // 2] * 2  # "same" padding, as most real convs have
            return [int(s.rng.integers(0, 3)) for _ in range(4)]
        if name == "dilations":
            return [s.pick([1, 1, 2]), s.pick([1, 1, 2])]
        if name == "group":
            if w is not None and len(w) == 4 and w[1] and x[1] % w[1] == 0:
                return x[1] // w[1]
            return 1
    if op in ("MaxPool", "AveragePool") and x is not None and len(x) == 4:
        if name == "kernel_shape":
            return [int(s.rng.integers(1, min(3, x[2]) + 1)), int(s.rng.integers(1, min(3, x[3]) + 1))]
        kernel = chosen.get("kernel_shape", [1, 1])
        if name == "strides":
            return [s.pick([1, 1, 2]), s.pick([1, 1, 2])]
        if name == "pads":
            return [int(s.rng.integers(0, min(2, k))) for k in kernel + kernel]
        if name == "dilations":
            return [1, 1] if op == "AveragePool" or s.chance(0.7) else [s.pick([1, 2]), s.pick([1, 2])]
        if name == "ceil_mode":
            return 0 if s.chance(0.7) else 1
        if name == "count_include_pad":
            return int(s.rng.integers(0, 2))
    if op == "Pad" and name == "pads" and r is not None:
        if r == 4 and s.chance(0.6):  # a conv kernel grown spatially
            top, left, bottom, right = (int(s.rng.integers(0, 2)) for _ in range(4))
            return [0, 0, top, left, 0, 0, bottom, right]
        return [int(s.rng.integers(0, 3)) for _ in range(2 * r)]
    if op == "Pad" and name == "mode":
        return s.pick(["constant", "constant", "edge", "reflect"])
    if op == "Cast" and name == "to":
        return s.pick([TensorProto.FLOAT, TensorProto.DOUBLE])  # the float types instances use
    if op == "Cast" and name == "saturate":
        return 1
    if op == "BatchNormalization" and name == "epsilon":
        return s.pick([1e-5, 1e-3])
    if op == "Gelu" and name == "approximate":
        return s.pick(["none", "tanh"])
    if sort == "IVec" and name in ("strides", "dilations"):
        return [1, 1]
    if sort == "IVec" and name == "pads":
        return [0, 0, 0, 0]
    return generic_value(s, sort, r)
