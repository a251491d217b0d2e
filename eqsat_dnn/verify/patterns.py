"""What a rule says, as data: the terms its query matches and the facts that steer sampling.

:func:`directions` turns one rule into the forms egglog runs (two for a ``birewrite``), each
with the maximal constructor terms of its query (to instantiate), its ``(= v term)`` bindings and
``(= v w)`` aliases, its numeric literals (likely dims and attribute values) and what its
conditions say about shapes and dtypes. The primitives a pattern's attribute positions may use
(``vec-of``, ``+``, ...) are evaluated here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from eqsat_dnn.eqsat.rules import Rule
from eqsat_dnn.errors import RuleError
from eqsat_dnn.ir.language import LEAVES, OPAQUE, OPS
from eqsat_dnn.ir.sexpr import Str, Sym, parse_sexp, to_source

RULESET = "rulecheck"
"""Prefix of the ruleset each rule under test is put in (family names could clash with ``analysis``)."""

_STRUCTURE = {OPAQUE, "TNil", "TCons"}


class Reject(Exception):
    """This instance is not a valid program (or cannot be built); try another."""


class Unsupported(Exception):
    """The rule's query cannot be instantiated at all (reported on the rule)."""


class Pending(Exception):
    """An attribute expression reads a variable that has no value yet."""


UNSET = object()
"""An attribute value not determined yet."""


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
class Direction:
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
    facts: "Facts"
    """What the query's conditions say about tensor variables' shapes and dtypes."""


@dataclass
class Facts:
    """Condition facts that steer instance generation (egglog still decides)."""

    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    """``(= (shape v) (vec-of ...))``: v -> the literal shapes it is compared with."""
    ranks: dict[str, list[int]] = field(default_factory=dict)
    """``(= (vec-length (shape v)) n)``."""
    same: dict[str, list[str]] = field(default_factory=dict)
    """``(= (shape a) s) (= (shape b) s)``: a -> [b], b -> [a]."""
    dtypes: list[int] = field(default_factory=list)
    """``(= (dtype v) n)``."""
    derived: dict[str, Any] = field(default_factory=dict)
    """``(= v expr)`` with ``expr`` a primitive expression (``(vec-get (shape x) 3)``, ``(/ d 2)``,
    ``(vec-of h)``): v -> expr, the first one stated; the instance computes v from it once the
    tensors it reads are built, instead of drawing it (see ``InstanceBuilder.derive``)."""
    templates: dict[str, list[Any]] = field(default_factory=dict)
    """``(= (shape v) expr)`` with ``expr`` an expression over other values (a rotary cache's
    ``(vec-of (vec-get sx 0) (vec-get sx 2) h)``): v -> those expressions."""
    var_dtypes: dict[str, int] = field(default_factory=dict)
    """``(= (dtype v) n)``: v -> n (a mask or index variable becomes an input of that type)."""
    shape_vars: dict[str, list[str]] = field(default_factory=dict)
    """``(= (shape v) s)``: s -> [v] (s may be an attribute variable, e.g. a reshape target)."""
    scalars: dict[str, list[str]] = field(default_factory=dict)
    """Tensors the query reads with ``(scalar t)`` (a variable, or a leaf term as source text) ->
    the f64 variables bound to their value (``(= eps (scalar t))``). The instance makes each a
    one-element float initializer: only those have a scalar value in the e-graph."""
    bounds: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    """Such a tensor -> the comparisons the query makes its value pass (``(> eps 0.0)``:
    ``(">", 0.0)``), which the drawn value respects."""


_NOT_DERIVED = frozenset({"scalar", "dtype"})
"""Functions whose value an instance cannot compute before egglog does (drawn or built instead)."""


def _literal(term: Any) -> bool:
    try:
        primitive_value(term)
    except (Reject, Unsupported, Pending):
        return False
    return True


def _condition_facts(facts: list) -> Facts:
    found = Facts()
    by_var: dict[str, list[str]] = {}

    def shape_of(term: Any) -> str | None:
        if isinstance(term, list) and len(term) == 2 and term[0] == "shape" and is_var(term[1]):
            return str(term[1])
        return None

    for fact in facts:
        if not (isinstance(fact, list) and len(fact) == 3 and fact[0] == "="):
            continue
        for a, b in ((fact[1], fact[2]), (fact[2], fact[1])):
            v = shape_of(a)
            if v is not None:
                if is_var(b):
                    by_var.setdefault(str(b), []).append(v)
                else:
                    try:
                        value = primitive_value(b)
                    except (Reject, Unsupported, Pending):
                        value = None
                    if isinstance(value, list):
                        found.shapes.setdefault(v, []).append(tuple(value))
                    w = shape_of(b)
                    if w is not None:
                        found.same.setdefault(v, []).append(w)
            if (is_var(a) and isinstance(b, list) and b and isinstance(b[0], Sym) and not is_constructor_term(b)
                    and str(b[0]) not in _NOT_DERIVED):
                found.derived.setdefault(str(a), b)
            if v is not None and isinstance(b, list) and b and str(b[0]) == "vec-of" and not _literal(b):
                found.templates.setdefault(v, []).append(b)
            if isinstance(a, list) and len(a) == 2 and a[0] == "vec-length" and isinstance(b, int):
                v = shape_of(a[1])
                if v is not None:
                    found.ranks.setdefault(v, []).append(b)
            if isinstance(a, list) and len(a) == 2 and a[0] == "dtype" and is_var(a[1]) and isinstance(b, int):
                if b not in found.dtypes:
                    found.dtypes.append(b)
                found.var_dtypes.setdefault(str(a[1]), b)
    for group in by_var.values():
        for v in group:
            found.same.setdefault(v, []).extend(w for w in group if w != v)
    found.shape_vars = by_var
    _scalar_facts(facts, found)
    return found


COMPARISONS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", "=": "="}
"""egglog's f64 comparisons a ``(scalar t)`` value may be put to in a query."""
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "!=": "!=", "=": "="}


def scalar_key(term: Any) -> str | None:
    """How :attr:`Facts.scalars` names the tensor ``(scalar term)`` reads: a variable by its name,
    a leaf term (``(Weight "w")``) by its source; None for anything else."""
    if is_var(term):
        return str(term)
    if is_constructor_term(term) and str(term[0]) == "Weight":
        return to_source(term)
    return None


def _tensor_leaves(term: Any) -> list[str]:
    """The :func:`scalar_key` of every tensor leaf of a term (the term itself if a leaf)."""
    key = scalar_key(term)
    if key is not None:
        return [key]
    if not (is_constructor_term(term) and str(term[0]) in OPS):
        return []
    sorts = OPS[str(term[0])].signature()
    return [k for sort, arg in zip(sorts, term[1:]) if sort == "T" for k in _tensor_leaves(arg)]


def _scalar_facts(facts: list, found: Facts) -> None:
    """Fill :attr:`Facts.scalars` and :attr:`Facts.bounds` from a query's facts."""
    def visit(term: Any) -> None:
        if isinstance(term, list) and len(term) == 2 and term[0] == "scalar":
            # a scalar computed from scalars (the analysis' Neg, Sqrt, Mul, ...): its leaves are
            for key in _tensor_leaves(term[1]):
                found.scalars.setdefault(key, [])
        elif isinstance(term, list):
            for t in term:
                visit(t)

    for fact in facts:
        visit(fact)
    value_of: dict[str, str] = {}  # an f64 variable -> the tensor whose scalar it is
    for fact in facts:
        if isinstance(fact, list) and len(fact) == 3 and fact[0] == "=":
            for a, b in ((fact[1], fact[2]), (fact[2], fact[1])):
                if is_var(a) and isinstance(b, list) and len(b) == 2 and b[0] == "scalar":
                    key = scalar_key(b[1])
                    if key is not None and str(a) not in found.scalars[key]:
                        found.scalars[key].append(str(a))
                        value_of[str(a)] = key

    def tensor_of(term: Any) -> str | None:
        if is_var(term):
            return value_of.get(str(term))
        if isinstance(term, list) and len(term) == 2 and term[0] == "scalar":
            return scalar_key(term[1])
        return None

    for fact in facts:
        if not (isinstance(fact, list) and len(fact) == 3 and str(fact[0]) in COMPARISONS):
            continue
        op, a, b = str(fact[0]), fact[1], fact[2]
        for key, literal, relation in ((tensor_of(a), b, op), (tensor_of(b), a, _FLIPPED[op])):
            if key is not None and isinstance(literal, (int, float)) and not isinstance(literal, bool):
                found.bounds.setdefault(key, []).append((relation, float(literal)))


def primitive_value(term: Any) -> Any:
    """A variable-free primitive expression's value."""
    if isinstance(term, list):
        if not term or not isinstance(term[0], Sym):
            raise Unsupported("not an expression")
        return primitive(str(term[0]), [primitive_value(t) for t in term[1:]])
    if is_var(term):
        raise Pending
    return term


def directions(rule: Rule) -> list[Direction]:
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
            result.append(Direction(label, replace(rule, name=name, kind="rewrite", text=text, family=RULESET),
                                     patterns, bindings, aliases, hints, _condition_facts(facts)))
        return result
    if kind == "rule":
        if len(form) < 3 or not isinstance(form[1], list):
            raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: expected (rule (facts) (actions))")
        patterns, bindings, aliases = _query_patterns(form[1])
        return [Direction("", replace(rule, family=RULESET), patterns, bindings, aliases, hints,
                           _condition_facts(form[1]))]
    raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: cannot check a ({kind} ...) form")


def _atoms(term: Any):
    if isinstance(term, list):
        for t in term:
            yield from _atoms(t)
    else:
        yield term


def is_constructor_term(term: Any) -> bool:
    return isinstance(term, list) and bool(term) and isinstance(term[0], Sym) and (
        term[0] in OPS or term[0] in LEAVES or term[0] in _STRUCTURE)


def is_var(term: Any) -> bool:
    return isinstance(term, Sym) and not term.startswith(":")


def _query_patterns(facts: list) -> tuple[list, dict[str, Any], dict[str, str]]:
    """The maximal constructor terms of a query, ``(= v term)`` bindings and ``(= v w)`` aliases."""
    patterns: list = []
    bindings: dict[str, Any] = {}
    aliases: dict[str, str] = {}

    def collect(term: Any) -> None:
        if is_constructor_term(term):
            patterns.append(term)
        elif isinstance(term, list):
            for t in term[1:] if term and isinstance(term[0], Sym) else term:
                collect(t)

    for fact in facts:
        if isinstance(fact, list) and len(fact) == 3 and fact[0] == "=":
            a, b = fact[1], fact[2]
            if is_var(a) and is_constructor_term(b):
                bindings.setdefault(str(a), b)
            elif is_var(b) and is_constructor_term(a):
                bindings.setdefault(str(b), a)
            elif is_var(a) and is_var(b):
                aliases[str(b)] = str(a)
        collect(fact)
    return patterns, bindings, aliases


# ---------------------------------------------------------------------------
# attribute values and the primitives over them


def freeze(attrs: dict) -> tuple:
    """Attributes as a hashable key."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))


def convert(value: Any, sort: str) -> Any:
    """``value`` as an attribute of egglog sort ``sort``; TypeError when it is not one."""
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


def primitive(head: str, args: list) -> Any:
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
        if head == "^":
            return float(args[0]) ** float(args[1])
    except (IndexError, TypeError, ZeroDivisionError):
        raise Reject from None
    raise Unsupported(f"cannot evaluate primitive {head!r} in a pattern")
