"""Numerical verification of rewrite rules (``eqsat-dnn rules check``).

Every rule is tested the same way, whatever it says:

1. **Instantiate its left-hand side.** The constructor terms of the rule's query
   (a ``rewrite``'s left side, the facts of a ``rule``, ``:when`` facts) are
   built as a small concrete program: tensor variables become graph inputs with
   random shapes and values, attribute variables (the i64/f64/IVec/String
   positions of :data:`eqsat_dnn.ir.language.OPS` signatures) get random valid
   values chosen from the shapes around them. ONNX shape inference rejects
   invalid instances at once; many shape strategies are mixed so that the
   conditions a rule needs (matching inner dims, equal shapes, a reshape target
   that equals an input shape, ...) come up often.
2. **Let egglog decide whether it fires.** The instance goes into a
   :class:`~eqsat_dnn.eqsat.egraph.TensorEGraph` exactly as an imported model would
   (shapes and dtypes from ONNX inference, symbolic dims in some trials), the
   analyses run, then the rule alone runs once. Its own match count says
   whether it fired; shape conditions are judged by egglog, not by us.
3. **Check every equality it asserted.** After one run, each e-class holding
   more than one e-node is a claim that those terms are equal. For every e-node
   the rule added to a class (and every pair of original values it merged), a
   *one-step* program is built: that e-node on top, its children computed the
   original way. All of them run in onnxruntime next to the original program
   on the same random inputs and must agree with the class's original value,
   within a tolerance scaled to the values' magnitude (float64 where the
   runtime supports every op involved, else float32). A rewritten term that
   onnxruntime rejects on a valid instance is a failure too, and so is a term
   the rule built whose analysed shape differs from what it computes (shape
   conditions of later rules would trust it), and so is egglog failing while
   running the rule.

``birewrite`` rules are checked in both directions, ``rule`` forms through
whatever their actions union. A rule that never fires (or fires but never
changes the e-graph) is reported ``untested``; a rule that breaks once is
``failed``, with the counterexample (input shapes, attribute values, both
terms, the difference and, for small tensors, the values themselves), after a
short search for a smaller one.

Everything is seeded per rule: the same rules, seed and trial count give the
same report, however many worker processes share the work.
"""

from __future__ import annotations

import math
import os
import re
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import onnx
from egglog import bindings
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.eqsat.egraph import Snapshot, TensorEGraph
from eqsat_dnn.errors import InputError, RuleError
from eqsat_dnn.extract.base import EGraph, ENode
from eqsat_dnn.extract.greedy import greedy_choices
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.ir.language import LEAVES, OPAQUE, OPS, lit
from eqsat_dnn.io.onnx_out import to_onnx
from eqsat_dnn.eqsat.rules import Rule
from eqsat_dnn.eqsat.saturate import add_rules, run_analysis

DEFAULT_TRIALS = 12
"""Firing instances checked per rule (per direction of a ``birewrite``)."""

RULESET = "rulecheck"
"""Prefix of the ruleset each rule under test is put in (family names could clash with ``analysis``)."""

TOLERANCES = {TensorProto.DOUBLE: (1e-10, 1e-12), TensorProto.FLOAT: (1e-4, 1e-6)}
"""dtype -> (rtol, atol): a difference is an error above ``atol + rtol * scale``."""

_CONSTRUCTORS = set(OPS) | set(LEAVES) | {OPAQUE, "TNil", "TCons"}
_SMALL = 24
"""Tensors up to this many elements are shown in full in counterexamples."""
SHRINK_ATTEMPTS = 40
"""After a failure, instances tried (with smaller dims) for a smaller counterexample."""
UNFIRED_PATIENCE = 10
"""With the default number of attempts, a rule that has not fired once in them gets this many
times as many (within the time budget) before it is called untested: rules whose conditions tie
several shapes and attributes together (enlarge-then-merge) fire in one random instance of a few
hundred."""


# ---------------------------------------------------------------------------
# Results


@dataclass
class Counterexample:
    """One instance on which a rule's two sides disagree."""

    message: str
    lhs: str
    """The instantiated left-hand side, e.g. ``(MatMul a b)``."""
    rhs: str
    """The term the rule made equal to it (one rewrite step)."""
    inputs: dict[str, str]
    """Tensor input -> ``dtype[shape]``."""
    attributes: dict[str, Any]
    """Pattern variable -> the value it took."""
    max_abs_error: float | None = None
    scale: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    """Inputs and both sides: nested lists for small tensors, else a summary."""
    direction: str = ""
    """``forward``/``backward`` for a birewrite."""
    symbolic: bool = False
    """Whether the e-graph saw the input dims as symbols."""

    def to_dict(self) -> dict:
        return {
            "message": self.message, "lhs": self.lhs, "rhs": self.rhs, "inputs": self.inputs,
            "attributes": _jsonable(self.attributes), "max_abs_error": self.max_abs_error,
            "scale": self.scale, "values": _jsonable(self.values), "direction": self.direction,
            "symbolic": self.symbolic,
        }


@dataclass
class RuleCheck:
    """The verdict on one rule."""

    rule: Rule
    status: str
    """``verified``, ``failed`` or ``untested``."""
    fired: int = 0
    """Instances on which the rule matched."""
    checked: int = 0
    """Instances on which it changed the e-graph and every change was compared."""
    attempts: int = 0
    """Instances generated (most are rejected by ONNX or do not match)."""
    comparisons: int = 0
    max_error: float = 0.0
    """Largest relative difference (|lhs - rhs| / magnitude) over passing comparisons."""
    seconds: float = 0.0
    counterexample: Counterexample | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    @property
    def trials(self) -> int:
        """Number of firing trials (an alias of :attr:`fired`)."""
        return self.fired

    def to_dict(self) -> dict:
        return {
            "name": self.rule.name, "family": self.rule.family, "file": self.rule.file,
            "line": self.rule.line, "kind": self.rule.kind, "status": self.status,
            "fired": self.fired, "checked": self.checked, "attempts": self.attempts,
            "comparisons": self.comparisons, "max_error": self.max_error,
            "seconds": round(self.seconds, 3), "note": self.note,
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return _jsonable(float(value))
    return value


# ---------------------------------------------------------------------------
# egglog source as data


class Sym(str):
    """A symbol (variable, operator or keyword) in parsed egglog source."""


class Str(str):
    """A string literal in parsed egglog source."""


_TOKEN_RE = re.compile(r'\s+|;[^\n]*|"(?:[^"\\]|\\.)*"|[()]|[^\s()";]+')
_INT_RE = re.compile(r"-?\d+")
_FLOAT_RE = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")


def parse_sexp(text: str) -> Any:
    """The first s-expression of ``text`` as nested lists of Sym/Str/int/float."""
    stack: list[list] = [[]]
    for match in _TOKEN_RE.finditer(text):
        token = match.group(0)
        if token[0].isspace() or token[0] == ";":
            continue
        if token == "(":
            stack.append([])
        elif token == ")":
            if len(stack) == 1:
                raise ValueError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        elif token[0] == '"':
            stack[-1].append(Str(re.sub(r"\\(.)", r"\1", token[1:-1])))
        elif _INT_RE.fullmatch(token):
            stack[-1].append(int(token))
        elif _FLOAT_RE.fullmatch(token) or token in ("NaN", "inf", "-inf"):
            stack[-1].append(float(token))
        else:
            stack[-1].append(Sym(token))
    if len(stack) != 1 or not stack[0]:
        raise ValueError("unbalanced parentheses")
    return stack[0][0]


def to_source(term: Any) -> str:
    """Parsed egglog back to source text."""
    if isinstance(term, list):
        return "(" + " ".join(to_source(t) for t in term) + ")"
    if isinstance(term, Str):
        return lit(str(term), "String")
    if isinstance(term, float):
        return lit(term, "f64")
    return str(term)


def _options(items: list) -> tuple[dict[str, Any], list]:
    """Keyword options of a rule form (``:when``, ``:name``; ``:subsume`` takes no value)."""
    options: dict[str, Any] = {}
    rest: list = []
    i = 0
    while i < len(items):
        item = items[i]
        if isinstance(item, Sym) and item.startswith(":"):
            if item == ":subsume":
                options[item] = True
                i += 1
                continue
            options[item] = items[i + 1] if i + 1 < len(items) else None
            i += 2
            continue
        rest.append(item)
        i += 1
    return options, rest


@dataclass
class _Direction:
    """One rule as egglog will run it: a name, its source, and the terms to instantiate."""

    label: str
    rule: Rule
    patterns: list
    """Maximal constructor terms of the query."""
    bindings: dict[str, Any]
    """Variable -> the constructor term it is bound to by an ``(= v term)`` fact."""
    aliases: dict[str, str]
    """Variable -> the variable it is equated with by an ``(= v w)`` fact."""
    hints: list[int | float]
    """Numeric literals of the rule (likely dims, ranks and attribute values)."""
    facts: "_Facts"
    """What the query's conditions say about tensor variables' shapes and dtypes."""


@dataclass
class _Facts:
    """Condition facts that steer instance generation (egglog still decides)."""

    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    """``(= (shape v) (vec-of ...))``: v -> the literal shapes it is compared with."""
    ranks: dict[str, list[int]] = field(default_factory=dict)
    """``(= (vec-length (shape v)) n)``."""
    same: dict[str, list[str]] = field(default_factory=dict)
    """``(= (shape a) s) (= (shape b) s)``: a -> [b], b -> [a]."""
    dtypes: list[int] = field(default_factory=list)
    """``(= (dtype v) n)``."""
    shape_vars: dict[str, list[str]] = field(default_factory=dict)
    """``(= (shape v) s)``: s -> [v] (s may be an attribute variable, e.g. a reshape target)."""


def _condition_facts(facts: list) -> _Facts:
    found = _Facts()
    by_var: dict[str, list[str]] = {}

    def shape_of(term: Any) -> str | None:
        if isinstance(term, list) and len(term) == 2 and term[0] == "shape" and _is_var(term[1]):
            return str(term[1])
        return None

    for fact in facts:
        if not (isinstance(fact, list) and len(fact) == 3 and fact[0] == "="):
            continue
        for a, b in ((fact[1], fact[2]), (fact[2], fact[1])):
            v = shape_of(a)
            if v is not None:
                if _is_var(b):
                    by_var.setdefault(str(b), []).append(v)
                else:
                    try:
                        value = _primitive_value(b)
                    except (_Reject, _Unsupported, _Pending):
                        value = None
                    if isinstance(value, list):
                        found.shapes.setdefault(v, []).append(tuple(value))
                    w = shape_of(b)
                    if w is not None:
                        found.same.setdefault(v, []).append(w)
            if isinstance(a, list) and len(a) == 2 and a[0] == "vec-length" and isinstance(b, int):
                v = shape_of(a[1])
                if v is not None:
                    found.ranks.setdefault(v, []).append(b)
            if isinstance(a, list) and len(a) == 2 and a[0] == "dtype" and _is_var(a[1]) and isinstance(b, int):
                if b not in found.dtypes:
                    found.dtypes.append(b)
    for group in by_var.values():
        for v in group:
            found.same.setdefault(v, []).extend(w for w in group if w != v)
    found.shape_vars = by_var
    return found


def _primitive_value(term: Any) -> Any:
    """A variable-free primitive expression's value."""
    if isinstance(term, list):
        if not term or not isinstance(term[0], Sym):
            raise _Unsupported("not an expression")
        return _primitive(str(term[0]), [_primitive_value(t) for t in term[1:]])
    if _is_var(term):
        raise _Pending
    return term


def _directions(rule: Rule) -> list[_Direction]:
    try:
        form = parse_sexp(rule.text)
    except ValueError as exc:
        raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: {exc}") from None
    kind = str(form[0]) if form else ""
    hints = sorted({x for x in _atoms(form) if isinstance(x, (int, float)) and not isinstance(x, bool)},
                   key=lambda v: (isinstance(v, float), v))
    if kind in ("rewrite", "birewrite"):
        if len(form) < 3:
            raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: a rewrite needs two sides")
        lhs, rhs = form[1], form[2]
        options, _ = _options(form[3:])
        when = options.get(":when") or []
        keep = [x for k, v in options.items() if k not in (":name", ":ruleset")
                for x in ([Sym(k)] if v is True else [Sym(k), v])]
        sides = [("", lhs, rhs)] if kind == "rewrite" else [("forward", lhs, rhs), ("backward", rhs, lhs)]
        result = []
        for label, a, b in sides:
            name = f"{rule.name}/{label}" if label else rule.name
            text = to_source([Sym("rewrite"), a, b, *keep, Sym(":name"), Str(name)]) if label else rule.text
            facts = [a] + list(when)
            patterns, bindings, aliases = _query_patterns(facts)
            result.append(_Direction(label, replace(rule, name=name, kind="rewrite", text=text, family=RULESET),
                                     patterns, bindings, aliases, hints, _condition_facts(facts)))
        return result
    if kind == "rule":
        if len(form) < 3 or not isinstance(form[1], list):
            raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: expected (rule (facts) (actions))")
        patterns, bindings, aliases = _query_patterns(form[1])
        return [_Direction("", replace(rule, family=RULESET), patterns, bindings, aliases, hints,
                           _condition_facts(form[1]))]
    raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: cannot check a ({kind} ...) form")


def _atoms(term: Any):
    if isinstance(term, list):
        for t in term:
            yield from _atoms(t)
    else:
        yield term


def _is_constructor_term(term: Any) -> bool:
    return isinstance(term, list) and bool(term) and isinstance(term[0], Sym) and term[0] in _CONSTRUCTORS


def _is_var(term: Any) -> bool:
    return isinstance(term, Sym) and not term.startswith(":")


def _query_patterns(facts: list) -> tuple[list, dict[str, Any], dict[str, str]]:
    """The maximal constructor terms of a query, ``(= v term)`` bindings and ``(= v w)`` aliases."""
    patterns: list = []
    bindings: dict[str, Any] = {}
    aliases: dict[str, str] = {}

    def collect(term: Any) -> None:
        if _is_constructor_term(term):
            patterns.append(term)
        elif isinstance(term, list):
            for t in term[1:] if term and isinstance(term[0], Sym) else term:
                collect(t)

    for fact in facts:
        if isinstance(fact, list) and len(fact) == 3 and fact[0] == "=":
            a, b = fact[1], fact[2]
            if _is_var(a) and _is_constructor_term(b):
                bindings.setdefault(str(a), b)
            elif _is_var(b) and _is_constructor_term(a):
                bindings.setdefault(str(b), a)
            elif _is_var(a) and _is_var(b):
                aliases[str(b)] = str(a)
        collect(fact)
    return patterns, bindings, aliases


# ---------------------------------------------------------------------------
# Instances: the left-hand side as a concrete program


class _Reject(Exception):
    """This instance is not a valid program (or cannot be built); try another."""


class _Unsupported(Exception):
    """The rule's query cannot be instantiated at all (reported on the rule)."""


@dataclass
class _Instance:
    graph: Graph
    """The left-hand side program; every node output is a graph output."""
    weights: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    """Concrete shape of every value."""
    dtype: int
    attributes: dict[str, Any]
    terms: dict[str, str]
    """Value -> its term as egglog-like text."""
    roots: list[str]
    """Values of the instantiated patterns."""
    symbolic: bool


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


OPSET = 20
"""Instances are written in this opset (Gelu needs 20; the e-graph form does not depend on it)."""


class _Sampler:
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


class _Builder:
    """Instantiates the query patterns of one rule into a Graph, bottom-up."""

    def __init__(self, direction: _Direction, sampler: _Sampler, dtype: int) -> None:
        self.d = direction
        self.s = sampler
        self.dtype = dtype
        self.opset = OPSET
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.weights: dict[str, np.ndarray] = {}
        """``(Weight name)`` leaves of the pattern: initializers with random values."""
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.tensor_vars: dict[str, str] = {}
        self.list_vars: dict[str, list[str]] = {}
        self.attrs: dict[str, Any] = {}
        self.memo: dict[tuple, str] = {}
        self.terms: dict[str, str] = {}
        self.expanding: set[str] = set()
        self.counter = 0
        self.slice_plan: dict[str, list[int]] = {}
        """Slice attributes drawn together for the Slice being built (they constrain each other)."""

    # -- variables ------------------------------------------------------------

    def canon(self, var: str) -> str:
        seen = set()
        while var in self.d.aliases and var not in seen:
            seen.add(var)
            var = self.d.aliases[var]
        return var

    def fresh_input(self, name: str, shape: tuple[int, ...]) -> str:
        base, k = name, 0
        while name in self.shapes:
            k += 1
            name = f"{base}_{k}"
        self.inputs.append(name)
        self.shapes[name] = tuple(int(d) for d in shape)
        self.terms[name] = name
        return name

    def fresh_value(self) -> str:
        while True:
            self.counter += 1
            name = f"_t{self.counter}"
            if name not in self.shapes:
                return name

    def new_shape(self, suggestion: Callable[[], tuple[int, ...] | None] | None,
                  var: str | None = None) -> tuple[int, ...]:
        facts = self.d.facts
        if var is not None and self.s.chance(0.7):
            if facts.shapes.get(var):
                return tuple(int(d) for d in self.s.pick(facts.shapes[var]))
            partners = [self.shapes[self.tensor_vars[w]] for w in facts.same.get(var, []) if w in self.tensor_vars]
            if partners:
                return self.s.pick(partners)
            if facts.ranks.get(var):
                rank = self.s.pick(facts.ranks[var])
                suggested = suggestion() if suggestion is not None else None
                return suggested if suggested is not None and len(suggested) == rank else self.s.shape(rank)
        mode = self.s.mode
        suggested = suggestion() if suggestion is not None and mode != "free" else None
        if mode == "same":
            if self.s.same_shape is None:
                self.s.same_shape = suggested if suggested is not None else self.s.shape()
            return self.s.same_shape
        if suggested is not None and (mode == "guided" or self.s.chance(0.5)):
            return suggested
        return self.s.shape()

    # -- terms ------------------------------------------------------------------

    def tensor(self, term: Any, suggestion=None) -> str:
        """The value of a term in a ``T`` position."""
        if _is_var(term):
            var = self.canon(str(term))
            if var in self.tensor_vars:
                return self.tensor_vars[var]
            if var in self.d.bindings and var not in self.expanding:
                self.expanding.add(var)
                value = self.tensor(self.d.bindings[var], suggestion)
                self.expanding.discard(var)
                self.tensor_vars[var] = value
                return value
            value = self.fresh_input(var, self.new_shape(suggestion, var))
            self.tensor_vars[var] = value
            return value
        if not _is_constructor_term(term):
            raise _Unsupported(f"cannot build a tensor from {to_source(term)}")
        head = str(term[0])
        if head in ("Input", "Weight"):
            if len(term) != 2:
                raise _Unsupported(f"bad leaf {to_source(term)}")
            arg = term[1]
            if isinstance(arg, Str):
                name = str(arg)
            elif _is_var(arg):
                var = self.canon(str(arg))
                name = self.attrs.setdefault(var, f"in_{var}")
            else:
                raise _Unsupported(f"bad leaf {to_source(term)}")
            if name in self.shapes:
                return name
            if head == "Input":
                return self.fresh_input(name, self.new_shape(suggestion))
            shape = self.new_shape(suggestion)
            self.shapes[name] = shape
            self.terms[name] = f"(Weight {lit(name, 'String')})"
            self.weights[name] = self.s.rng.standard_normal(shape).astype(_np_dtype(self.dtype))
            return name
        if head == "Absent":
            return ""
        if head in OPS:
            return self.op(term)
        raise _Unsupported(f"cannot build ({head} ...) in a tensor position")

    def tensor_list(self, term: Any, suggestion=None) -> list[str]:
        """The values of a term in a ``TL`` position."""
        if _is_var(term):
            var = self.canon(str(term))
            if var in self.list_vars:
                return self.list_vars[var]
            if var in self.d.bindings and var not in self.expanding:
                self.expanding.add(var)
                values = self.tensor_list(self.d.bindings[var], suggestion)
                self.expanding.discard(var)
            else:
                count = int(self.s.rng.integers(1, 4))
                values = []
                for k in range(count):
                    first = self.shapes[values[0]] if values else None
                    values.append(self.fresh_input(f"{var}{k}", self.new_shape(
                        (lambda f=first: f) if first is not None and self.s.chance(0.8) else suggestion)))
            self.list_vars[var] = values
            return values
        if _is_constructor_term(term) and term[0] == "TNil":
            return []
        if _is_constructor_term(term) and term[0] == "TCons" and len(term) == 3:
            head = self.tensor(term[1], suggestion)
            return [head] + self.tensor_list(term[2], lambda h=head: self.shapes.get(h))
        raise _Unsupported(f"cannot build a tensor list from {to_source(term)}")

    def literal_attr(self, arg: Any, sort: str) -> Any:
        """The value of an attribute argument if it is already determined, else ``_UNSET``."""
        try:
            if _is_var(arg):
                value = self.attrs.get(self.canon(str(arg)), _UNSET)
                return value if value is _UNSET else _convert(value, sort)
            if isinstance(arg, list):
                return _convert(self.evaluate(arg, sort, assign=False), sort)
            return _convert(arg, sort)
        except (_Pending, _Reject, TypeError, ValueError):
            return _UNSET

    def evaluate(self, expr: Any, sort: str, assign: bool = True) -> Any:
        """A primitive expression in an attribute position (variables in it drawn at random)."""
        if isinstance(expr, list):
            if not expr or not isinstance(expr[0], Sym):
                raise _Unsupported(f"cannot evaluate {to_source(expr)}")
            head = str(expr[0])
            args_sort = "i64" if head.startswith("vec-") or sort == "IVec" else sort
            args = [self.evaluate(a, args_sort, assign) for a in expr[1:]]
            return _primitive(head, args)
        if _is_var(expr):
            var = self.canon(str(expr))
            if var not in self.attrs:
                if not assign:
                    raise _Pending
                self.attrs[var] = self.s.i64() if sort == "i64" else self.s.f64() if sort == "f64" else _generic(
                    self.s, sort, None)
            return self.attrs[var]
        return expr

    def op(self, term: list) -> str:
        spec = OPS[str(term[0])]
        signature = spec.signature()
        args = term[1:]
        if len(args) != len(signature):
            raise _Unsupported(f"({spec.name} ...) takes {len(signature)} arguments, the rule gives {len(args)}")
        n_tensor = spec.tensor_arity
        known = {a.name: self.literal_attr(arg, a.sort) for a, arg in zip(spec.attrs, args[n_tensor:])}
        known = {k: v for k, v in known.items() if v is not _UNSET}
        if spec.variadic:
            inputs = self.tensor_list(args[0], lambda: _suggest(self, spec.name, 0, [], known))
        else:
            inputs = []
            for i, arg in enumerate(args[:n_tensor]):
                shapes_so_far = [self.shapes.get(v) if v else None for v in inputs]
                inputs.append(self.tensor(arg, lambda i=i, s=shapes_so_far: _suggest(self, spec.name, i, s, known)))
        in_shapes = [self.shapes.get(v) if v else None for v in inputs]
        if spec.name == "Slice" and in_shapes[0]:
            given = dict(known)
            for attr, arg in zip(spec.attrs, args[n_tensor:]):
                if _is_var(arg) and self.canon(str(arg)) in self.attrs:
                    given[attr.name] = self.attrs[self.canon(str(arg))]
            self.slice_plan = _plan_slice(self.s, in_shapes[0], given)
        attrs: dict[str, Any] = {}
        for attr, arg in zip(spec.attrs, args[n_tensor:]):
            if _is_var(arg):
                var = self.canon(str(arg))
                if var not in self.attrs:
                    # a condition compares this vector with a tensor's shape: often take that shape
                    shaped = [self.shapes[self.tensor_vars[v]] for v in self.d.facts.shape_vars.get(var, [])
                              if v in self.tensor_vars]
                    if attr.sort == "IVec" and shaped and self.s.chance(0.5):
                        self.attrs[var] = list(self.s.pick(shaped))
                    else:
                        self.attrs[var] = _generate(self.s, spec.name, attr.name, attr.sort, in_shapes, attrs, self)
                value = self.attrs[var]
            elif isinstance(arg, list):
                value = self.evaluate(arg, attr.sort)
            else:
                value = arg
            try:
                attrs[attr.name] = _convert(value, attr.sort)
            except (TypeError, ValueError):
                raise _Reject from None
        key = (spec.name, tuple(inputs), _freeze(attrs))
        if key in self.memo:
            return self.memo[key]
        out = self.fresh_value()
        index = attrs.pop("index", 0) if spec.name == "Split" else None
        if index is not None:
            if not isinstance(attrs.get("split"), list) or not 0 <= index < len(attrs["split"]):
                raise _Reject
            outputs = [""] * len(attrs["split"])
            outputs[index] = out
            attrs_node = dict(attrs)
        else:
            outputs = [out]
            attrs_node = attrs
        self.nodes.append(Node(spec.name, list(inputs), outputs, attrs_node, name=f"n{len(self.nodes)}"))
        self.memo[key] = out
        shown_attrs = dict(attrs, index=index) if index is not None else attrs
        rendered = [self.terms.get(v, "(Absent)") if v else "(Absent)" for v in inputs]
        if spec.variadic:
            rendered = ["[" + " ".join(rendered) + "]"]
        self.terms[out] = "(" + " ".join([spec.name] + rendered + [
            _show(shown_attrs[a.name], a.sort) for a in spec.attrs]) + ")"
        self.shapes[out] = self.infer(out)
        return out

    # -- ONNX -------------------------------------------------------------------

    def graph(self, symbolic: dict[str, tuple] | None = None, outputs: list[str] | None = None) -> Graph:
        outputs = outputs if outputs is not None else [o for n in self.nodes for o in n.outputs if o]
        declared = symbolic or {}
        types = {v: TensorType(self.dtype, declared.get(v, self.shapes[v])) for v in self.inputs}
        types.update({w: TensorType(self.dtype, self.shapes[w]) for w in self.weights})
        weights = {w: numpy_helper.from_array(a, w) for w, a in self.weights.items()}
        model = _skeleton(self.inputs, types, outputs, self.dtype, self.opset)
        return Graph(list(self.nodes), list(self.inputs), list(outputs), types, weights, model)

    def infer(self, value: str) -> tuple[int, ...]:
        try:
            model = to_onnx(self.graph(outputs=[value]), fold_constants=False)
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        except Exception:  # onnx raises InferenceError, ValidationError and others
            raise _Reject from None
        for info in inferred.graph.output:
            if info.name == value:
                t = info.type.tensor_type
                if not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
                    raise _Reject
                if t.elem_type not in TOLERANCES:  # a Cast may change float32 <-> float64, nothing else
                    raise _Reject
                return tuple(d.dim_value for d in t.shape.dim)
        raise _Reject


class _Pending(Exception):
    pass


_UNSET = object()


def _freeze(attrs: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


def _convert(value: Any, sort: str) -> Any:
    if sort == "i64":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError("not an i64")
        return int(value)
    if sort == "f64":
        if not isinstance(value, (int, float, np.floating)):
            raise TypeError("not an f64")
        return float(value)
    if sort == "IVec":
        if not isinstance(value, (list, tuple)):
            raise TypeError("not a vector")
        return [int(v) for v in value]
    if sort == "String":
        return str(value)
    raise TypeError(sort)


def _primitive(head: str, args: list) -> Any:
    """The egglog primitives a pattern's attribute positions may use."""
    try:
        if head == "vec-of":
            return [int(a) for a in args]
        if head == "vec-empty":
            return []
        if head == "vec-push":
            return list(args[0]) + [args[1]]
        if head == "vec-pop":
            return list(args[0])[:-1]
        if head == "vec-append":
            return [x for v in args for x in v]
        if head == "vec-get":
            return list(args[0])[args[1]]
        if head == "vec-set":
            v = list(args[0])
            v[args[1]] = args[2]
            return v
        if head == "vec-length":
            return len(args[0])
        if head == "+":
            return args[0] + args[1]
        if head == "-":
            return args[0] - args[1] if len(args) == 2 else -args[0]
        if head == "*":
            return args[0] * args[1]
        if head == "/":
            return args[0] // args[1] if isinstance(args[0], int) else args[0] / args[1]
        if head == "%":
            return args[0] % args[1]
        if head == "min":
            return min(args)
        if head == "max":
            return max(args)
        if head == "neg":
            return -args[0]
    except (IndexError, TypeError, ZeroDivisionError):
        raise _Reject from None
    raise _Unsupported(f"cannot evaluate primitive {head!r} in a pattern")


def _show(value: Any, sort: str) -> str:
    return lit(value, sort)


def _skeleton(inputs: list[str], types: dict[str, TensorType], outputs: list[str], dtype: int,
              opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [], "rule_instance",
        [helper.make_tensor_value_info(v, dtype, list(types[v].shape)) for v in inputs],
        # outputs untyped: a Cast inside the instance may give one another float type
        [helper.make_empty_tensor_value_info(o) for o in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="eqsat-dnn")
    model.ir_version = 9
    return model


# -- shapes for fresh tensor variables, from the inputs already chosen ----------


def _suggest(b: _Builder, op: str, position: int, known: list, attrs: dict) -> tuple[int, ...] | None:
    """A shape for input ``position`` of ``op`` that fits the inputs before it (or ``None``)."""
    s = b.s
    first = known[0] if known else None
    if position == 0:
        if op == "Transpose" and isinstance(attrs.get("perm"), list):
            return s.shape(len(attrs["perm"]))
        if op == "Reshape" and isinstance(attrs.get("shape"), list):
            target = attrs["shape"]
            if target and all(d > 0 for d in target):
                return s.factorization(_numel(target))
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


def _generic(s: _Sampler, sort: str, rank: int | None) -> Any:
    if sort == "i64":
        return s.i64()
    if sort == "f64":
        return s.f64()
    if sort == "String":
        return "none"
    if sort == "IVec":
        r = rank if rank is not None else s.rank(0, 4)
        return [int(s.rng.integers(0, max(r, 1))) for _ in range(int(s.rng.integers(0, r + 1)))]
    raise _Unsupported(f"cannot draw a value of sort {sort}")


def _plan_slice(s: _Sampler, x: tuple[int, ...], given: dict[str, Any]) -> dict[str, list[int]]:
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


def _reshape_target(s: _Sampler, b: _Builder, x: tuple[int, ...]) -> list[int]:
    n = _numel(x)
    others = sorted({shape for shape in b.shapes.values() if _numel(shape) == n and shape != x},
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


def _generate(s: _Sampler, op: str, name: str, sort: str, shapes: list, chosen: dict, b: _Builder) -> Any:
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
    return _generic(s, sort, r)


# ---------------------------------------------------------------------------
# Running one instance


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # instances the runtime refuses are expected: no log lines
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class _NotImplemented(Exception):
    """The runtime has no kernel for some op at this dtype."""


def _run(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a Graph in onnxruntime; raises with the runtime's message when it cannot."""
    model = to_onnx(graph, fold_constants=False)
    try:
        session = _session(model)
        outputs = session.run(list(graph.outputs), feeds)
    except Exception as exc:
        text = str(exc)
        if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
            raise _NotImplemented(text) from None
        raise
    return dict(zip(graph.outputs, outputs))


@dataclass
class _Check:
    reference: str
    """The value every other term of the class must equal."""
    other: str
    """A value computed by the rewritten (one-step) term, or another original value."""
    rhs: str
    """The other term as text."""
    lhs: str
    """The reference term as text."""


@dataclass
class _Outcome:
    fired: bool = False
    checks: int = 0
    max_error: float = 0.0
    failure: Counterexample | None = None
    skip: bool = False
    float32_only: bool = False
    note: str = ""


class _Panic(Exception):
    """egglog itself failed while running the rule (a primitive in it failed, ...)."""


_NAME_RE = re.compile(r':name\s+"((?:[^"\\]|\\.)*)"')


class _Base:
    """One e-graph for every check in this process: the prelude plus each rule under test,
    each in a ruleset of its own (so only that rule runs). Instances come and go with
    push/pop, which costs far less than loading the prelude again."""

    def __init__(self) -> None:
        self.teg = TensorEGraph(Graph([], [], [], {}, {}, _skeleton([], {}, [], TensorProto.FLOAT, OPSET)))
        self.rules: dict[tuple[str, str], tuple[str, str]] = {}
        """(name, text) -> (name inside egglog, ruleset)."""
        self.poisoned = False
        """Set when egglog failed mid-run: this e-graph is not used again."""

    def add(self, rule: Rule) -> tuple[str, str]:
        """Add ``rule`` (once) under a unique name and ruleset; raises RuleError if egglog refuses it."""
        key = (rule.name, rule.text)
        if key not in self.rules:
            k = len(self.rules)
            name = f"{rule.name}#{k}"
            text = _NAME_RE.sub(lambda _: f":name {lit(name, 'String')}", rule.text, count=1)
            renamed = replace(rule, name=name, text=text, family=f"{RULESET}{k}")
            try:
                (ruleset,) = add_rules(self.teg, [renamed])  # multi- rules get a ruleset of their own
            except RuleError as exc:
                raise RuleError(str(exc).replace(repr(name), repr(rule.name))) from None
            self.rules[key] = (name, ruleset)
        return self.rules[key]


_BASE: _Base | None = None


def _base() -> _Base:
    global _BASE
    if _BASE is None or _BASE.poisoned or len(_BASE.rules) > 400:
        _BASE = _Base()
    return _BASE


class _RuleRunner:
    """One direction of one rule, run on one instance at a time in the shared e-graph."""

    def __init__(self, direction: _Direction) -> None:
        self.d = direction
        self.base = _base()
        self.name, self.ruleset = self.base.add(direction.rule)

    def fire(self, inst: _Instance) -> Snapshot | None:
        """Load ``inst``, run the rule once; the snapshot if it matched."""
        teg = self.base.teg
        teg.command("(push)")
        try:
            teg.graph = inst.graph
            teg.globals, teg.opaque, teg.symbols = {}, {}, dict(inst.graph.symbols)
            try:
                teg.build()
                run_analysis(teg)
            except (bindings.EggSmolError, ValueError):
                raise _Reject from None
            try:
                report = teg.command(f"(run-schedule (run {self.ruleset}))")[0].report
                if not report.num_matches_per_rule.get(self.name, 0):
                    return None
                run_analysis(teg)
            except bindings.EggSmolError as exc:
                self.base.poisoned = True
                raise _Panic(" ".join(str(exc).split())[:400]) from None
            return teg.snapshot(None)
        finally:
            if not self.base.poisoned:
                teg.command("(pop)")


def _check_instance(runner: _RuleRunner, inst: _Instance, rng: np.random.Generator) -> _Outcome:
    snapshot = runner.fire(inst)
    if snapshot is None:
        return _Outcome()
    outcome = _Outcome(fired=True)
    planner = _Planner(snapshot, inst)
    checks = planner.checks()
    if not checks:
        outcome.note = planner.note or "fired without changing the e-graph"
        return outcome
    feeds = {v: rng.standard_normal(inst.shapes[v]).astype(_np_dtype(inst.dtype)) for v in inst.graph.inputs}
    original_outputs = list(inst.graph.outputs)
    try:
        values = _run(planner.graph(checks), feeds)
    except _NotImplemented:
        outcome.skip, outcome.float32_only = True, inst.dtype == TensorProto.DOUBLE
        return outcome
    except Exception:
        # find out which side the runtime refuses
        try:
            values = _run(replace(inst.graph, outputs=original_outputs), feeds)
        except Exception as exc:
            outcome.skip = True
            outcome.float32_only = isinstance(exc, _NotImplemented) and inst.dtype == TensorProto.DOUBLE
            return outcome
        for check in checks:
            try:
                values.update(_run(planner.graph([check]), feeds))
            except _NotImplemented:
                outcome.skip, outcome.float32_only = True, inst.dtype == TensorProto.DOUBLE
                return outcome
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:400]
                outcome.failure = _counterexample(
                    inst, check, feeds, values, f"the rewritten term is not a valid program here: {first}")
                return outcome
    values.update(feeds)
    values.update(inst.weights)
    if any(np.asarray(values[v]).shape != inst.shapes[v] for v in original_outputs if v in values):
        # ONNX shape inference and the runtime disagree on the left-hand side itself (MaxPool with
        # ceil_mode, ...): the e-graph was told wrong shapes, so nothing here says anything about the rule
        outcome.skip = True
        return outcome
    rtol, atol = TOLERANCES[inst.dtype]
    for check in checks:
        x, y = np.asarray(values[check.reference]), np.asarray(values[check.other])
        problem, err, scale = _compare(x, y, rtol, atol)
        if problem:
            outcome.failure = _counterexample(inst, check, feeds, values, problem, err, scale)
            return outcome
        if x.size == 0:
            continue  # empty tensors agree vacuously: no evidence either way
        outcome.checks += 1
        outcome.max_error = max(outcome.max_error, err / max(scale, 1e-300) if scale else err)
    # the shape analysis must agree with what the new terms compute (else shape conditions lie);
    # classes holding an original value got their shape from ONNX at import, not from the analysis
    for value, cls in planner.value_class.items():
        t = planner.snap.types.get(cls) if cls not in planner.originals and value in values else None
        if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            continue
        actual = np.asarray(values[value]).shape
        if tuple(t.shape) != actual:
            lhs = " ".join(inst.terms[r] for r in inst.roots)
            outcome.failure = _counterexample(
                inst, _Check(value, value, planner.rendered[value], lhs), feeds, {},
                f"the shape analysis gives {list(t.shape)} for a term the rule built, which computes {list(actual)}")
            outcome.checks = 0
            return outcome
    return outcome


def _compare(x: np.ndarray, y: np.ndarray, rtol: float, atol: float) -> tuple[str, float, float]:
    """('', error, scale) when equal within tolerance, else a description of the difference."""
    if x.shape != y.shape:
        return f"shapes differ: {list(x.shape)} on the left, {list(y.shape)} on the right", math.inf, 0.0
    if x.dtype != y.dtype:
        return f"dtypes differ: {x.dtype} on the left, {y.dtype} on the right", math.inf, 0.0
    if x.size == 0:
        return "", 0.0, 0.0
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    if not np.array_equal(nan_x, nan_y):
        return "NaN on one side only", math.inf, 0.0
    inf_x, inf_y = np.isinf(x), np.isinf(y)
    if not np.array_equal(np.where(inf_x, x, 0), np.where(inf_y, y, 0)):
        return "infinities differ", math.inf, 0.0
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return "", 0.0, 0.0
    a, b = x[finite].astype(np.float64), y[finite].astype(np.float64)
    err = float(np.max(np.abs(a - b)))
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(b))))
    if err > atol + rtol * scale:
        return f"values differ: max |lhs - rhs| = {err:.3g} on values up to {scale:.3g}", err, scale
    return "", err, scale


def _summary(array: np.ndarray) -> Any:
    array = np.asarray(array)
    if array.size <= _SMALL:
        return np.round(array.astype(np.float64), 4).tolist()
    finite = array[np.isfinite(array)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    return f"{array.dtype}{list(array.shape)} in [{low:.3g}, {high:.3g}]"


def _np_dtype(dtype: int) -> type:
    return np.float64 if dtype == TensorProto.DOUBLE else np.float32


def _dtype_name(dtype: int) -> str:
    return "float64" if dtype == TensorProto.DOUBLE else "float32"


def _counterexample(inst: _Instance, check: _Check, feeds: dict, values: dict, message: str,
                    err: float | None = None, scale: float | None = None) -> Counterexample:
    dtype = _dtype_name(inst.dtype)
    shown: dict[str, Any] = {name: _summary(array) for name, array in {**feeds, **inst.weights}.items()}
    if check.reference in values:
        shown["lhs"] = _summary(values[check.reference])
    if check.other in values:
        shown["rhs"] = _summary(values[check.other])
    return Counterexample(
        message=message,
        lhs=check.lhs,
        rhs=check.rhs,
        inputs={v: f"{dtype}{list(inst.shapes[v])}" for v in [*inst.graph.inputs, *inst.weights]},
        attributes=dict(inst.attributes),
        max_abs_error=None if err is None or not math.isfinite(err) else err,
        scale=scale,
        values=shown,
        symbolic=inst.symbolic,
    )


class _Planner:
    """Reads the e-graph after one run: which terms must be equal, and programs computing them."""

    def __init__(self, snapshot: Snapshot, inst: _Instance) -> None:
        self.snap = snapshot
        self.inst = inst
        self.note = ""
        self.nodes = snapshot.egraph.nodes
        self.info = snapshot.info
        self.classes = snapshot.egraph.classes
        self.value_class = {v: cls for cls, names in snapshot.names.items() for v in names}
        # pattern roots first: a class's reference is the left-hand side where it holds one
        order = [o for n in reversed(inst.graph.nodes) for o in n.outputs if o] + list(inst.graph.inputs) + list(
            inst.weights)
        self.originals: dict[str, list[str]] = {}
        for v in order:
            if v in self.value_class:
                self.originals.setdefault(self.value_class[v], []).append(v)
        self.original_sigs = self._original_signatures()
        self.choices = self._resolver_choices()
        self.extra: list[Node] = []
        self.emitted: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.rendered: dict[str, str] = {v: inst.terms.get(v, v) for v in order}
        self.counter = 0

    def _sig(self, node_id: str) -> tuple:
        info = self.info[node_id]
        return (info.op, tuple(info.children), _freeze(info.attrs))

    def _original_signatures(self) -> set[tuple]:
        sigs: set[tuple] = set()
        for v in self.inst.graph.inputs:
            sigs.add(("Input", (), _freeze({"arg0": v})))
        for v in self.inst.weights:
            sigs.add(("Weight", (), _freeze({"arg0": v})))
        tl_index: dict[tuple, str] = {}
        nil = None
        for node_id, info in self.info.items():
            if info.op == "TCons":
                tl_index[tuple(info.children)] = self.nodes[node_id].eclass
            elif info.op == "TNil":
                nil = self.nodes[node_id].eclass
        for node in self.inst.graph.nodes:
            spec = OPS[node.op]
            if spec.variadic:
                cls = nil
                for v in reversed(node.inputs):
                    cls = tl_index.get((self.value_class.get(v), cls)) if cls is not None else None
                children = (cls,)
            else:
                children = tuple(self.value_class.get(v) if v else self._absent_class() for v in node.inputs)
            for k, out in enumerate(node.outputs):
                if out:
                    attrs = dict(node.attrs, index=k) if node.op == "Split" else node.attrs
                    sigs.add((node.op, children, _freeze(attrs)))
        return sigs

    def _absent_class(self) -> str | None:
        for node_id, info in self.info.items():
            if info.op == "Absent":
                return self.nodes[node_id].eclass
        return None

    def _resolver_choices(self) -> dict[str, str]:
        """Least-new-nodes choice for every class without an original value (acyclic)."""
        nodes: dict[str, ENode] = {}
        for cls in self.originals:
            nodes[f"orig:{cls}"] = ENode("orig", (), cls, 0.0)
        for node_id, node in self.nodes.items():
            if node.eclass in self.originals:
                continue
            cost = 0.0 if node.op in ("TNil", "TCons", "Absent") else 1.0
            nodes[node_id] = ENode(node.op, node.children, node.eclass, cost)
        return greedy_choices(EGraph(nodes=nodes, roots=[]))

    # -- what to compare ------------------------------------------------------------

    def checks(self) -> list[_Check]:
        checks: list[_Check] = []
        for cls, members in self.classes.items():
            if not cls.startswith("T") or cls.startswith("TL"):
                continue
            origs = self.originals.get(cls, [])
            others = [n for n in members if self._sig(n) not in self.original_sigs]
            try:
                if origs:
                    reference = origs[0]
                    checks += [_Check(reference, v, self.rendered[v], self.rendered[reference]) for v in origs[1:]]
                    checks += [self._one_step(reference, n) for n in others]
                elif len(members) > 1:
                    chosen = self.choices.get(cls)
                    if chosen is None:
                        continue
                    reference = self._resolve(cls)
                    checks += [self._one_step(reference, n) for n in members if n != chosen]
            except _Unresolvable as exc:
                self.note = f"cannot build a term for class {exc} (cyclic only)"
        return checks

    def _one_step(self, reference: str, node_id: str) -> _Check:
        value, text = self._emit(node_id)
        return _Check(reference, value, text, self.rendered.get(reference, reference))

    # -- building the programs ----------------------------------------------------

    def _resolve(self, cls: str) -> str:
        """A value computing class ``cls`` the original way where possible."""
        if cls in self.originals:
            return self.originals[cls][0]
        if cls in self.emitted:
            return self.emitted[cls]
        node_id = self.choices.get(cls)
        if node_id is None:
            raise _Unresolvable(cls)
        value, _ = self._emit(node_id)
        self.emitted[cls] = value
        return value

    def _resolve_list(self, cls: str) -> list[str]:
        if cls in self.lists:
            return self.lists[cls]
        node_id = self.choices.get(cls)
        if node_id is None:
            raise _Unresolvable(cls)
        info = self.info[node_id]
        values = [] if info.op == "TNil" else [self._resolve(info.children[0])] + self._resolve_list(info.children[1])
        self.lists[cls] = values
        return values

    def _emit(self, node_id: str) -> tuple[str, str]:
        """Emit e-node ``node_id`` over resolved children: its value and its term as text."""
        info = self.info[node_id]
        if info.op in ("Input", "Weight"):
            return info.attrs["arg0"], info.attrs["arg0"]
        if info.op not in OPS:
            raise _Unresolvable(f"{self.nodes[node_id].eclass} ({info.op})")
        spec = OPS[info.op]
        if spec.variadic:
            inputs = self._resolve_list(info.children[0])
            shown = ["[" + " ".join(self.rendered.get(v, v) for v in inputs) + "]"]
        else:
            inputs = [self._absent_or(c) for c in info.children]
            shown = [self.rendered.get(v, v) if v else "(Absent)" for v in inputs]
        self.counter += 1
        value = f"_rw{self.counter}"
        attrs = {k: v for k, v in info.attrs.items()}
        if info.op == "Split":
            index = attrs.pop("index")
            outputs = [""] * max(len(attrs.get("split", [])), index + 1)
            outputs[index] = value
        else:
            outputs = [value]
        self.extra.append(Node(info.op, inputs, outputs, attrs, name=f"rw{self.counter}"))
        self.value_class[value] = self.nodes[node_id].eclass
        text = "(" + " ".join([info.op] + shown + [_show(info.attrs[a.name], a.sort) for a in spec.attrs]) + ")"
        self.rendered[value] = text
        return value, text

    def _absent_or(self, cls: str) -> str:
        members = self.classes.get(cls, [])
        if members and all(self.info[m].op == "Absent" for m in members):
            return ""
        return self._resolve(cls)

    def graph(self, checks: list[_Check]) -> Graph:
        """The original program plus the terms of ``checks``; outputs: every value compared."""
        needed = _needed(self.extra, [c.other for c in checks] + [c.reference for c in checks])
        extra = [n for n in self.extra if any(o in needed for o in n.outputs if o)]
        originals = [o for n in self.inst.graph.nodes for o in n.outputs if o]
        outputs = originals + [o for n in extra for o in n.outputs if o and o in needed and o not in originals]
        g = self.inst.graph
        model = _skeleton(g.inputs, g.types, outputs, self.inst.dtype, g.opset)
        return Graph(list(g.nodes) + extra, list(g.inputs), outputs, dict(g.types), dict(g.weights), model)


class _Unresolvable(Exception):
    pass


def _needed(extra: list[Node], wanted: list[str]) -> set[str]:
    producer = {o: n for n in extra for o in n.outputs if o}
    needed: set[str] = set()
    stack = list(wanted)
    while stack:
        v = stack.pop()
        if v in needed:
            continue
        needed.add(v)
        node = producer.get(v)
        if node is not None:
            stack.extend(i for i in node.inputs if i)
    return needed


# ---------------------------------------------------------------------------
# The driver


def _make_instance(direction: _Direction, rng: np.random.Generator, dtype: int, small: bool = False) -> _Instance:
    sampler = _Sampler(rng, direction.hints, small)
    builder = _Builder(direction, sampler, dtype)
    roots = [builder.tensor(p) for p in direction.patterns if str(p[0]) not in ("TNil", "TCons")]
    for p in direction.patterns:
        if str(p[0]) in ("TNil", "TCons"):
            builder.tensor_list(p)
    if not builder.nodes:
        raise _Unsupported("the query has no operator to instantiate")
    graph = builder.graph()
    symbolic = False
    if sampler.chance(0.2):
        # the e-graph sees input dims as symbols (one symbol per distinct size); onnxruntime gets sizes
        declared = {v: tuple(f"n{d}" if d > 1 and sampler.chance(0.7) else d for d in builder.shapes[v])
                    for v in builder.inputs}
        if any(isinstance(d, str) for shape in declared.values() for d in shape):
            graph = builder.graph(symbolic=declared)
            symbolic = True
    try:
        model = to_onnx(graph, fold_constants=False)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception:  # to_onnx cannot write some attribute values (empty lists); onnx raises several types
        raise _Reject from None
    types = dict(graph.types)
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = info.type.tensor_type
        if info.type.HasField("tensor_type"):
            shape = None
            if t.HasField("shape"):
                shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            types[info.name] = TensorType(t.elem_type, shape)
    graph = replace(graph, types=types)
    return _Instance(graph, dict(builder.weights), dict(builder.shapes), dtype, dict(builder.attrs), dict(builder.terms), roots, symbolic)


def _check_direction(direction: _Direction, trials: int, seed: int, attempts: int,
                     budget: float | None, patience: int = 1) -> RuleCheck:
    start = time.perf_counter()
    result = RuleCheck(direction.rule, "untested")
    try:
        runner = _RuleRunner(direction)
    except RuleError as exc:
        result.status, result.note = "failed", f"egglog rejects the rule: {exc}"
        result.seconds = time.perf_counter() - start
        return result
    float32_only = False
    notes: list[str] = []
    salt = zlib.crc32(direction.rule.name.encode())
    shrink_left = SHRINK_ATTEMPTS
    stream = 0
    while True:
        if result.status == "failed":
            # look a little further for a smaller counterexample (these instances are not counted)
            if shrink_left <= 0:
                break
            shrink_left -= 1
        elif result.checked >= trials or result.attempts >= attempts * (1 if result.fired else patience):
            break
        else:
            result.attempts += 1
        if budget is not None and time.perf_counter() - start > budget:
            if result.status != "failed":
                notes.append(f"time budget of {budget:g} s spent")
            break
        stream += 1
        rng = np.random.default_rng([seed, salt, stream])
        wanted = [t for t in direction.facts.dtypes if t in TOLERANCES]
        if float32_only:
            dtype = TensorProto.FLOAT
        elif wanted and rng.random() < 0.7:
            dtype = wanted[int(rng.integers(len(wanted)))]
        else:
            dtype = TensorProto.FLOAT if rng.random() < 0.25 else TensorProto.DOUBLE
        try:
            inst = _make_instance(direction, rng, dtype, small=result.status == "failed")
        except _Reject:
            continue
        except _Unsupported as exc:
            result.note = f"cannot instantiate: {exc}"
            break
        try:
            outcome = _check_instance(runner, inst, rng)
        except _Reject:
            continue
        except _Panic as exc:
            runner = _RuleRunner(direction)  # a fresh e-graph: the old one is not trusted after a panic
            if result.status != "failed":
                shrink_left = 0  # each panic costs a new e-graph: keep the first one
            outcome = _Outcome(fired=True, failure=Counterexample(
                message=f"egglog fails while running the rule: {exc}",
                lhs=" ".join(inst.terms[r] for r in inst.roots), rhs="(none: the run failed)",
                inputs={v: f"{_dtype_name(inst.dtype)}{list(inst.shapes[v])}" for v in [*inst.graph.inputs,
                                                                                         *inst.weights]},
                attributes=dict(inst.attributes), symbolic=inst.symbolic))
        if outcome.float32_only:
            float32_only = True
        if outcome.skip or not outcome.fired:
            continue
        if result.status == "failed":
            if outcome.failure is not None and _size(outcome.failure) < _size(result.counterexample):
                outcome.failure.direction = direction.label
                result.counterexample = outcome.failure
            continue
        result.fired += 1
        if outcome.failure is not None:
            outcome.failure.direction = direction.label
            result.counterexample = outcome.failure
            result.status = "failed"
            continue
        if outcome.checks:
            result.checked += 1
            result.comparisons += outcome.checks
            result.max_error = max(result.max_error, outcome.max_error)
        elif outcome.note and outcome.note not in notes and not outcome.note.startswith("fired without"):
            notes.append(outcome.note)
    if result.status != "failed":
        result.status = "verified" if result.checked else "untested"
        if 0 < result.checked < trials:
            notes.append(f"only {result.checked} of {trials} trials fired in {result.attempts} instances")
        if not result.checked and not result.note:
            if result.fired:
                notes.insert(0, f"fired {result.fired} times but never changed the e-graph")
            else:
                notes.insert(0, f"never fired in {result.attempts} instances")
    if float32_only:
        notes.append("float32 only (the runtime lacks float64 kernels)")
    result.note = "; ".join(filter(None, [result.note] + notes))
    result.seconds = time.perf_counter() - start
    return result


def _size(cx: Counterexample | None) -> tuple[int, int]:
    """How hard a counterexample is to read: differing values beat a refused program, then fewer elements."""
    if cx is None:
        return (2, 1 << 62)
    total = 0
    for text in cx.inputs.values():
        dims = [int(d) for d in re.findall(r"\d+", text.split("[", 1)[1])]
        total += _numel(dims)
    return (0 if cx.max_abs_error is not None or cx.message.startswith("shapes") else 1, total)


def check_rule(rule: Rule, trials: int = DEFAULT_TRIALS, seed: int = 0, attempts: int | None = None,
               budget: float | None = 30.0) -> RuleCheck:
    """Check one rule (both directions of a ``birewrite``): ``trials`` firing instances, in at most
    ``attempts`` random ones (default ``max(80, 25 * trials)``, :data:`UNFIRED_PATIENCE` times that
    until the rule first fires) and ``budget`` seconds."""
    start = time.perf_counter()
    if rule.kind == "birewrite":
        # egglog must accept the rule as written, not just each direction (its ruleset never runs)
        try:
            _base().add(rule)
        except RuleError as exc:
            return RuleCheck(rule, "failed", note=f"egglog rejects the rule: {exc}",
                             seconds=time.perf_counter() - start)
    # a cap the caller gives is a cap; the default one stretches for rules that have not fired yet
    patience = 1 if attempts is not None else UNFIRED_PATIENCE
    attempts = attempts if attempts is not None else max(80, 25 * trials)
    parts = [_check_direction(d, trials, seed, attempts, budget, patience) for d in _directions(rule)]
    if len(parts) == 1:
        result = replace(parts[0], rule=rule)
    else:
        failed = [p for p in parts if p.status == "failed"]
        untested = [p for p in parts if p.status == "untested"]
        status = "failed" if failed else "untested" if untested else "verified"
        notes = [f"{d.label}: {p.note}" for d, p in zip(_directions(rule), parts) if p.note]
        result = RuleCheck(
            rule, status, fired=sum(p.fired for p in parts), checked=sum(p.checked for p in parts),
            attempts=sum(p.attempts for p in parts), comparisons=sum(p.comparisons for p in parts),
            max_error=max(p.max_error for p in parts),
            counterexample=failed[0].counterexample if failed else None, note="; ".join(notes))
    result.seconds = time.perf_counter() - start
    return result


def check_rules(rules: list[Rule], trials: int = DEFAULT_TRIALS, seed: int = 0, attempts: int | None = None,
                budget: float | None = 30.0, jobs: int | None = None) -> list[RuleCheck]:
    """Check every rule numerically; see the module docstring for how.

    ``trials`` firing instances are checked per rule (per direction of a
    birewrite), out of at most ``attempts`` generated instances (default
    ``max(80, 25 * trials)``); ``budget`` caps the seconds spent on one rule.
    ``jobs`` worker processes share the rules (spawned, so a script calling this
    with ``jobs > 1`` needs the usual ``if __name__ == "__main__"`` guard; see
    :func:`default_jobs`). Each rule draws from its own seeded stream, so the
    result depends only on the rules, ``seed``, ``trials`` and ``attempts``
    (unless a time budget runs out), never on ``jobs``.
    """
    if trials < 1:
        raise InputError("--trials must be at least 1")
    jobs = 1 if jobs is None else jobs
    tasks = [(rule, trials, seed, attempts, budget) for rule in rules]
    if jobs > 1 and len(rules) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        try:
            # spawn, not fork: the parent may already hold onnxruntime and egglog threads
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(jobs, len(rules)), mp_context=context) as pool:
                return list(pool.map(_check_task, tasks))
        except (BrokenProcessPool, OSError):
            pass  # no worker processes here: check in this process
    return [_check_task(task) for task in tasks]


def _check_task(task: tuple) -> RuleCheck:
    return check_rule(*task)


def default_jobs(rules: int) -> int:
    """Worker processes worth starting for ``rules`` rules: one per core, at most 4, and
    none for a handful of rules (a worker costs about a second to start)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores, rules // 8))
