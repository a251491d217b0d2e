"""The fuzzer's building blocks (:mod:`tests.fuzz_graphs`): where decisions come from
(:class:`_Chooser`, so a failing example replays from its list), and the builder that keeps each
value's shape as a random graph grows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper


Dim = int | str
Shape = tuple[Dim, ...]


# ---------------------------------------------------------------------------
# where decisions come from


class _Chooser:
    """Every decision of the generator: from hypothesis, from a recorded list, or from numpy."""

    def __init__(self, draw: Callable | None = None, replay: list[int] | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.draw, self.rng = draw, rng
        self.replay = list(replay) if replay is not None else None
        self.record: list[int] = []

    def integer(self, low: int, high: int) -> int:
        if self.draw is not None:
            value = self.draw(st.integers(low, high))
        elif self.rng is not None:
            value = int(self.rng.integers(low, high + 1))
        else:  # a recorded list: its end (or a value out of range) reads as the simplest choice
            value = self.replay.pop(0) if self.replay else low
            value = min(max(value, low), high)
        self.record.append(value)
        return value

    def element(self, items):
        items = list(items)
        return items[self.integer(0, len(items) - 1)]

    def chance(self, percent: int) -> bool:
        return self.integer(0, 99) < percent


# ---------------------------------------------------------------------------
# the graph builder


@dataclass
class _Value:
    name: str
    shape: Shape
    positive: bool = False
    """At least about 0.05: a safe operand for Sqrt, Reciprocal, Div and fractional Pow."""
    bounded: bool = False
    """At most about 3 in magnitude: a safe operand for Exp."""

    @property
    def static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


def _broadcast(a: Shape, b: Shape) -> Shape | None:
    out: list[Dim] = []
    for k in range(1, max(len(a), len(b)) + 1):
        x = a[-k] if k <= len(a) else 1
        y = b[-k] if k <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


def _factors(n: int) -> list[int]:
    found, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            found.append(p)
            n //= p
        p += 1
    return found + ([n] if n > 1 else [])


class _Builder:
    """Builds one model: inputs, weights, nodes, with every tensor's shape known."""

    def __init__(self, choose: _Chooser, opset: int, seed: int) -> None:
        self.choose = choose
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[_Value] = []
        self.counter = 0
        self.domains: set[str] = set()
        """Operator sets besides the standard one that nodes use (com.microsoft's kernels)."""

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    def input(self, shape: Shape) -> _Value:
        value = _Value(self.fresh("in"), shape)
        self.inputs.append(helper.make_tensor_value_info(value.name, TensorProto.FLOAT, list(shape)))
        return value

    def weight(self, shape: tuple[int, ...], scale: float = 1.0, positive: bool = False) -> _Value:
        if positive:
            array = self.rng.uniform(0.5, 1.5, size=shape)
        else:
            array = self.rng.standard_normal(size=shape) * scale
        name = self.fresh("w")
        self.weights.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return _Value(name, tuple(shape), positive=positive, bounded=positive or scale * 3 <= 3)

    def ints(self, values: list[int]) -> str:
        name = self.fresh("c")
        self.weights.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], shape: Shape, *, outputs: int = 1, positive=False,
             bounded=False, **attrs) -> _Value:
        names = [self.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attrs))
        return _Value(names[0], shape, positive, bounded)

    def pick(self, local: list[_Value], fits: Callable[[_Value], bool] = lambda v: True) -> _Value | None:
        candidates = [v for v in local if fits(v)]
        if not candidates:
            return None
        # the newest values first, so chains grow deep; the minimal choice is the newest
        return candidates[len(candidates) - 1 - self.choose.integer(0, len(candidates) - 1)]

    def model(self) -> onnx.ModelProto:
        outputs = [helper.make_tensor_value_info(v.name, TensorProto.FLOAT, list(v.shape)) for v in self.outputs]
        graph = helper.make_graph(self.nodes, "fuzz", self.inputs, outputs, self.weights)
        domains = set(self.domains) | {n.domain for n in self.nodes if n.domain}
        imports = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in sorted(domains)]
        model = helper.make_model(graph, opset_imports=imports, producer_name="eqsat-dnn-fuzz")
        model.ir_version = 8 if self.opset <= 17 else 9 if self.opset <= 20 else 10 if self.opset <= 22 else 11
        return model



def _second_operand(b: _Builder, local: list[_Value], x: _Value, positive: bool) -> _Value:
    """A weight or another value that broadcasts with ``x`` (and is positive, if asked)."""
    c = b.choose
    kind = c.integer(0, 3)
    if kind == 0:
        return b.weight((), positive=positive) if c.chance(50) else b.weight((1,), positive=positive)
    if kind == 1:
        others = [v for v in local if _broadcast(x.shape, v.shape) == x.shape and (v.positive or not positive)]
        if others:
            return c.element(others)
    # a weight over a suffix of x's static dims, some of them 1
    suffix: list[int] = []
    for d in reversed(x.shape):
        if not isinstance(d, int) or c.chance(25):
            break
        suffix.insert(0, d if c.chance(75) else 1)
    return b.weight(tuple(suffix), positive=positive)
