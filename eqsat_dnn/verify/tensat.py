"""Coverage of Tensat's rule set by our rule library.

Tensat (MLSys 2021) optimised with TASO's verified graph substitutions, converted
to S-expressions: 120 single-pattern rules, 13 multi-pattern ones (two lines
each) and 6 hand-written ones. This module reads those files (kept outside the
repository: every entry point takes their directory), instantiates both sides of
every rule as one concrete ONNX model over shared inputs at small valid shapes,
loads it into one e-graph, saturates with our library and asks whether the two
sides landed in one e-class. It also runs both sides with onnxruntime, which
tells a Tensat convention that differs from ONNX apart from a missing rule.

Tensat's vocabulary in ONNX terms:

* ``ewadd``/``ewmul`` -> ``Add``/``Mul``; ``relu``/``tanh``/``sigmoid`` -> same;
* ``matmul act a b`` -> ``MatMul`` (then the activation: 0 none, 1 sigmoid,
  2 relu, 3 tanh);
* ``conv2d sh sw pad act x w`` -> ``Conv`` with ``strides [sh, sw]``, ``auto_pad``
  ``SAME_UPPER`` (pad 0) or ``VALID`` (pad 1), ``group = C_in / w.shape[1]`` (Tensat
  implies grouping by the weight's shape), then the activation;
* ``concat axis ndim a b`` -> ``Concat(axis)``; ``split_0/split_1 (split axis x)`` ->
  the two outputs of ``Split`` into halves (Tensat splits where a concat joined;
  the shapes chosen here make those halves);
* ``transpose x`` -> ``Transpose`` reversing the axes; ``smul x s`` -> ``Mul``;
* ``enlarge w ref`` -> ``w`` zero-padded (centred) to ``ref``'s kernel size (``Pad``; the
  identity when the sizes already agree);
* ``merge w 2`` (TASO's merge_gconv) has no ONNX counterpart short of building a
  block-diagonal kernel, so its rules are reported as not instantiated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eqsat_dnn.models.builder import ModelBuilder
from eqsat_dnn.runtime.sessions import create_session
from eqsat_dnn.ir.sexpr import parse_term, to_source

_ACTIVATIONS = {0: None, 1: "Sigmoid", 2: "Relu", 3: "Tanh"}
_UNARY = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


class NotExpressible(Exception):
    """A Tensat operator with no ONNX counterpart in our vocabulary."""


class InvalidShapes(Exception):
    """The chosen shapes make one side ill-typed."""


# ---------------------------------------------------------------------------
# Reading the rule files


@dataclass(frozen=True)
class TensatRule:
    """One Tensat rule: one ``lhs => rhs`` pair, two for a multi-pattern rule."""

    id: str
    """``converted:N``, ``multi:N`` or ``handwritten:N`` (1-based, in file order)."""
    pairs: tuple[tuple[Any, Any], ...]

    @property
    def text(self) -> str:
        return " ; ".join(f"{to_source(l)}=>{to_source(r)}" for l, r in self.pairs)


def _pairs(lines: list[str]) -> list[tuple[Any, Any]]:
    out = []
    for line in lines:
        lhs, rhs = line.split("=>")
        out.append((parse_term(lhs), parse_term(rhs)))
    return out


def load_tensat_rules(directory: str | Path) -> list[TensatRule]:
    """All 139 rules in ``directory`` (Tensat's ``converted.txt``, ``converted_multi.txt`` and
    ``handwritten.txt``): converted (120), multi-pattern (13) and hand-written (6)."""
    directory = Path(directory)

    def lines(name: str) -> list[str]:
        return [l.strip() for l in (directory / name).read_text().splitlines() if l.strip()]

    rules: list[TensatRule] = []
    for i, pair in enumerate(_pairs(lines("converted.txt")), 1):
        rules.append(TensatRule(f"converted:{i}", (pair,)))
    multi = _pairs(lines("converted_multi.txt"))
    for i in range(0, len(multi) - 1, 2):
        rules.append(TensatRule(f"multi:{i // 2 + 1}", (multi[i], multi[i + 1])))
    single, paired, in_multi = [], [], False
    for line in lines("handwritten.txt"):
        if line.startswith("#"):
            in_multi = in_multi or "multi" in line
            continue
        (paired if in_multi else single).append(line)
    k = 0
    for pair in _pairs(single):
        k += 1
        rules.append(TensatRule(f"handwritten:{k}", (pair,)))
    hp = _pairs(paired)
    for i in range(0, len(hp) - 1, 2):
        k += 1
        rules.append(TensatRule(f"handwritten:{k}", (hp[i], hp[i + 1])))
    return rules


# ---------------------------------------------------------------------------
# Ranks and shapes of the variables


def _natural_rank(term: Any) -> int | None:
    if not isinstance(term, tuple):
        return None
    head = term[0]
    if head in ("conv2d", "enlarge", "merge", "poolmax", "poolavg"):
        return 4
    if head == "matmul":
        return 2
    if head == "concat":
        return term[2]
    for child in term[1:]:
        rank = _natural_rank(child)
        if rank is not None:
            return rank
    return None


def _assign_ranks(term: Any, expected: int | None, ranks: dict[str, int]) -> None:
    if isinstance(term, str) and term.startswith("?"):
        if expected is not None:
            ranks.setdefault(term, expected)
        return
    if not isinstance(term, tuple):
        return
    head, args = term[0], term[1:]
    if head == "conv2d":
        _assign_ranks(args[4], 4, ranks)
        _assign_ranks(args[5], 4, ranks)
    elif head == "matmul":
        _assign_ranks(args[1], 2, ranks)
        _assign_ranks(args[2], 2, ranks)
    elif head == "concat":
        for child in args[2:]:
            _assign_ranks(child, args[1], ranks)
    elif head in ("enlarge", "merge"):
        for child in args:
            _assign_ranks(child, 4, ranks)
    else:
        rank = expected if expected is not None else _natural_rank(term)
        for child in args:
            _assign_ranks(child, rank, ranks)


SHAPE_CHOICES = (
    {2: [4, 4], 4: [2, 2, 3, 3]},
    {2: [3, 3], 4: [2, 4, 3, 3]},
)
"""Shapes tried in turn for the variables, by rank (square, so chains of matmuls and a
tensor used both as a conv's input and as its kernel are valid)."""


# ---------------------------------------------------------------------------
# Building ONNX


class _Builder(ModelBuilder):
    """The shared builder plus Tensat's operators, over float32 inputs named after the variables."""

    def __init__(self, name: str, shapes: dict[str, list[int]]) -> None:
        super().__init__(name, opset=17, ir_version=8)
        self.memo: dict[Any, str] = {}
        for var, shape in shapes.items():
            name = self.memo[var] = self.input(var.lstrip("?"), shape)
            self.shapes[name] = list(shape)  # shapes are lists here (they show in InvalidShapes messages)

    def emit(self, op: str, inputs: list[str], shape: list[int], outputs: int = 1, **attrs) -> list[str]:
        outs = self.node(op, inputs, [self.fresh(op.lower()) for _ in range(outputs)], **attrs)
        for out in outs:
            self.shapes[out] = list(shape)
        return outs

    def activation(self, value: str, act: int) -> str:
        op = _ACTIVATIONS[act]
        return value if op is None else self.emit(op, [value], self.shapes[value])[0]

    def build(self, term: Any) -> str:
        if term in self.memo:
            return self.memo[term]
        value = self._build(term)
        self.memo[term] = value
        return value

    def _build(self, term: Any) -> str:
        if not isinstance(term, tuple):
            raise InvalidShapes(f"unbound variable {term}")
        head, args = term[0], term[1:]
        if head in ("ewadd", "ewmul"):
            a, b = self.build(args[0]), self.build(args[1])
            try:
                shape = list(np.broadcast_shapes(tuple(self.shapes[a]), tuple(self.shapes[b])))
            except ValueError:
                raise InvalidShapes(f"{head}: {self.shapes[a]} vs {self.shapes[b]}") from None
            return self.emit("Add" if head == "ewadd" else "Mul", [a, b], shape)[0]
        if head in _UNARY:
            x = self.build(args[0])
            return self.emit(_UNARY[head], [x], self.shapes[x])[0]
        if head == "matmul":
            a, b = self.build(args[1]), self.build(args[2])
            sa, sb = self.shapes[a], self.shapes[b]
            if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[0]:
                raise InvalidShapes(f"matmul: {sa} @ {sb}")
            return self.activation(self.emit("MatMul", [a, b], [sa[0], sb[1]])[0], args[0])
        if head == "conv2d":
            sh, sw, pad, act = args[:4]
            x, w = self.build(args[4]), self.build(args[5])
            sx, sw_ = self.shapes[x], self.shapes[w]
            if len(sx) != 4 or len(sw_) != 4 or sx[1] % sw_[1] or sw_[0] % (sx[1] // sw_[1]):
                raise InvalidShapes(f"conv2d: {sx} with kernel {sw_}")
            group = sx[1] // sw_[1]
            spatial = []
            for size, k, s in ((sx[2], sw_[2], sh), (sx[3], sw_[3], sw)):
                out = -(-size // s) if pad == 0 else (size - k) // s + 1
                if out < 1:
                    raise InvalidShapes("conv2d: kernel larger than input")
                spatial.append(out)
            conv = self.emit("Conv", [x, w], [sx[0], sw_[0], *spatial], strides=[sh, sw],
                             auto_pad="SAME_UPPER" if pad == 0 else "VALID", group=group)[0]
            return self.activation(conv, act)
        if head == "concat":
            axis = args[0]
            parts = [self.build(a) for a in args[2:]]
            shapes = [self.shapes[p] for p in parts]
            first = shapes[0]
            for s in shapes[1:]:
                if len(s) != len(first) or any(d != e for i, (d, e) in enumerate(zip(s, first)) if i != axis):
                    raise InvalidShapes(f"concat: {shapes}")
            shape = list(first)
            shape[axis] = sum(s[axis] for s in shapes)
            return self.emit("Concat", parts, shape, axis=axis)[0]
        if head in ("split_0", "split_1"):
            inner = args[0]
            if not (isinstance(inner, tuple) and inner[0] == "split"):
                raise NotExpressible(f"{head} of {to_source(inner)}")
            key = ("split-node", inner)
            if key not in self.memo:
                axis = inner[1]
                x = self.build(inner[2])
                shape = self.shapes[x]
                if shape[axis] % 2:
                    raise InvalidShapes("split: odd size")
                half = list(shape)
                half[axis] //= 2
                outs = self.emit("Split", [x, self.ints([half[axis]] * 2, "split")], half, outputs=2, axis=axis)
                self.memo[key] = outs
            return self.memo[key][0 if head == "split_0" else 1]
        if head == "transpose":
            x = self.build(args[0])
            perm = list(reversed(range(len(self.shapes[x]))))
            return self.emit("Transpose", [x], [self.shapes[x][p] for p in perm], perm=perm)[0]
        if head == "smul":
            x, s = self.build(args[0]), self.build(args[1])
            return self.emit("Mul", [x, s], self.shapes[x])[0]
        if head == "enlarge":
            w, ref = self.build(args[0]), self.build(args[1])
            sw_, sr = self.shapes[w], self.shapes[ref]
            if sw_[2:] == sr[2:]:
                return w
            dh, dw = sr[2] - sw_[2], sr[3] - sw_[3]
            if dh < 0 or dw < 0 or dh % 2 or dw % 2:
                raise InvalidShapes("enlarge: kernel cannot be centred in the reference")
            pads = [0, 0, dh // 2, dw // 2, 0, 0, dh // 2, dw // 2]
            return self.emit("Pad", [w, self.ints(pads, "pads")], [sw_[0], sw_[1], sr[2], sr[3]])[0]
        if head == "merge":
            raise NotExpressible("merge (TASO's merge_gconv: a block-diagonal, zero-filled kernel "
                                 "for a conv with fewer groups) has no ONNX operator")
        raise NotExpressible(f"Tensat operator {head!r}")


def _enlarged(term: Any, out: set[str]) -> set[str]:
    """Variables that Tensat enlarges (``enlarge w ref``'s ``w``): given 1x1 kernels, so that
    the enlargement is real."""
    if isinstance(term, tuple):
        if term[0] == "enlarge" and isinstance(term[1], str):
            out.add(term[1])
        for child in term[1:]:
            _enlarged(child, out)
    return out


def _variables(term: Any, out: list[str]) -> list[str]:
    if isinstance(term, str) and term.startswith("?"):
        if term not in out:
            out.append(term)
    elif isinstance(term, tuple):
        for child in term[1:]:
            _variables(child, out)
    return out


@dataclass
class Instance:
    """Both sides of a rule as one ONNX model: output ``lhs{i}``/``rhs{i}`` per pair."""

    model: onnx.ModelProto
    shapes: dict[str, list[int]]
    sides: list[tuple[str, str]]
    """(lhs value, rhs value) per pair, the internal value names."""


def instantiate(rule: TensatRule, choices=SHAPE_CHOICES) -> Instance:
    """The rule's two sides over shared inputs at the first valid shape choice."""
    variables: list[str] = []
    ranks: dict[str, int] = {}
    small: set[str] = set()
    for lhs, rhs in rule.pairs:
        _enlarged(lhs, small)
        _enlarged(rhs, small)
        _variables(lhs, variables)
        _variables(rhs, variables)
        rank = _natural_rank(lhs) or _natural_rank(rhs)
        _assign_ranks(lhs, rank, ranks)
        _assign_ranks(rhs, rank, ranks)
    errors = []
    for choice in choices:
        shapes = {v: choice[ranks.get(v, 2)] for v in variables}
        shapes.update({v: shapes[v][:2] + [1, 1] for v in small})
        builder = _Builder(rule.id.replace(":", "_"), shapes)
        try:
            sides = [(builder.build(l), builder.build(r)) for l, r in rule.pairs]
        except InvalidShapes as exc:
            errors.append(str(exc))
            continue
        outputs = []
        for i, (l, r) in enumerate(sides):
            for tag, value in (("lhs", l), ("rhs", r)):
                (out,) = builder.node("Identity", [value], [f"{tag}{i}"])
                builder.shapes[out] = builder.shapes[value]
                outputs.append(out)
        return Instance(builder.model(outputs), {v.lstrip("?"): s for v, s in shapes.items()}, sides)
    raise InvalidShapes("; ".join(errors))


# ---------------------------------------------------------------------------
# Checking


def numerically_equal(instance: Instance, seed: int = 0) -> bool:
    """Both sides agree under onnxruntime on random inputs."""
    rng = np.random.default_rng(seed)
    session = create_session(instance.model, optimize=True, log_severity=2)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in instance.shapes.items()}
    results = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for i in range(len(instance.sides)):
        a, b = results[f"lhs{i}"], results[f"rhs{i}"]
        if a.shape != b.shape:
            return False
        scale = max(1.0, float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)))
        if not np.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
            return False
    return True


@dataclass
class RuleCoverage:
    """What happened to one Tensat rule."""

    rule: TensatRule
    derived: bool = False
    numeric: bool | None = None
    """onnxruntime agrees on both sides (None: not instantiated)."""
    problem: str = ""
    """Why the rule could not be instantiated, when it could not."""
    iterations: int = 0
    nodes: int = 0
    seconds: float = 0.0
    shapes: dict[str, list[int]] = field(default_factory=dict)


def _same_class(teg, a: str, b: str) -> bool:
    from egglog import bindings

    try:
        teg.command(f"(check (= {a} {b}))")
        return True
    except bindings.EggSmolError:
        return False


def check_rule(rule: TensatRule, rules=None, iterations: int = 6, nodes: int = 5000,
               seconds: float = 2.0, numeric: bool = True) -> RuleCoverage:
    """Saturate both sides of ``rule`` in one e-graph; derived when every pair meets."""
    from eqsat_dnn.eqsat.egraph import TensorEGraph
    from eqsat_dnn.io.onnx_in import load_model
    from eqsat_dnn.eqsat.rules import select_rules
    from eqsat_dnn.eqsat.saturate import Limits, SaturationStop, saturate

    start = time.perf_counter()
    result = RuleCoverage(rule)
    try:
        instance = instantiate(rule)
    except (NotExpressible, InvalidShapes) as exc:
        result.problem = str(exc)
        result.seconds = time.perf_counter() - start
        return result
    result.shapes = instance.shapes
    if numeric:
        result.numeric = numerically_equal(instance)
    rules = select_rules() if rules is None else rules
    teg = TensorEGraph(load_model(instance.model))
    pairs = [(teg.globals[a], teg.globals[b]) for a, b in instance.sides]

    def met() -> bool:
        return all(_same_class(teg, a, b) for a, b in pairs)

    derived = met()
    while not derived and result.iterations < iterations:
        left = seconds - (time.perf_counter() - start)
        if left <= 0:
            break
        report = saturate(teg, rules, Limits(iterations=1, nodes=nodes, seconds=left))
        result.iterations += 1
        result.nodes = report.nodes
        derived = met()
        if report.stop_reason != SaturationStop.ITERATION_LIMIT or report.nodes >= nodes:
            break
    result.derived = derived
    result.seconds = time.perf_counter() - start
    return result


def coverage(directory: str | Path, rules=None, **limits) -> list[RuleCoverage]:
    """Check every Tensat rule of the files in ``directory`` (see :func:`load_tensat_rules`)."""
    from eqsat_dnn.eqsat.rules import select_rules

    library = select_rules() if rules is None else rules
    return [check_rule(rule, library, **limits) for rule in load_tensat_rules(directory)]


def summary(results: list[RuleCoverage]) -> str:
    derived = sum(r.derived for r in results)
    lines = [f"Tensat rules derived: {derived} / {len(results)}"]
    for r in results:
        if not r.derived:
            why = r.problem or ("sides differ numerically" if r.numeric is False else "not derived")
            lines.append(f"  {r.rule.id}: {why}: {r.rule.text}")
    return "\n".join(lines)
