"""A rule's symbolic variants: the same rule over shapes with symbolic dims.

Rule files read shapes as ``(shape t)``, which holds static shapes only; a tensor with a
symbolic dim has ``(dims t)`` instead (see :mod:`eqsat_dnn.ir.language`). Many conditions
only ask for a tensor's rank or for two tensors to have equal shapes (or equal dims, or equal
shapes but for an axis), and hold as well between symbolic shapes: such a rule gets a variant
that reads ``(dims t)`` for those tensors. A tensor whose shape a rule reads as integers (an
entry compared with a number or an attribute, computed with, written into the result) is
left static in every variant, so no variant ever compares a symbolic dim with an integer.

Tensors whose shapes a rule compares with each other change form together (a static shape
never equals a symbolic one); the rule gets one variant per non-empty set of such groups, up
to :data:`MAX_GROUPS` groups. The variants run only in e-graphs with symbolic shapes
(:meth:`~eqsat_dnn.eqsat.egraph.TensorEGraph` loads their analysis there), named after the
rule with :data:`SUFFIX` and a number, and reports count their matches as the rule's.
"""

from __future__ import annotations

from itertools import combinations

from eqsat_dnn.ir.sexpr import Str, Sym, parse_sexp, to_source

SUFFIX = "~dims"
"""A variant's name is the rule's name, this, and the variant's number."""

MAX_GROUPS = 4
"""A rule with more groups of shape-compared tensors than this gets variants for the first ones."""

_DERIVED = {"vec-pop": 1, "vec-remove": 2, "vec-get": 2}
"""Operations that make a shape (or one of its dims) out of a shape: the same in either form."""


def base_name(name: str) -> str:
    """The rule a (possibly variant) rule name in an egglog report stands for."""
    name = name.removesuffix("=>").removesuffix("<=")
    cut = name.rfind(SUFFIX)
    return name[:cut] if cut >= 0 and name[cut + len(SUFFIX):].isdigit() else name


def variants(text: str) -> list[str]:
    """egglog source of one rule form (``text``, with its ``:name``) for an e-graph with symbolic
    shapes: the rule itself, with a rank it reads of a tensor that it reads nothing else of
    taken as ``(rank t)`` (of either form), then one variant per non-empty set of groups of
    tensors whose shapes it compares."""
    form = parse_sexp(text)
    if not (isinstance(form, list) and form and form[0] == "rule" and len(form) >= 3):
        return [text]
    facts, actions = form[1], form[2]
    aliases: dict[str, set[str]] = {}  # a variable bound to a shape -> the tensors it is the shape of
    for fact in facts:
        pair = _alias(fact)
        if pair:
            aliases.setdefault(pair[0], set()).add(pair[1])
    tensors = {t for ts in aliases.values() for t in ts} | set(_shape_args(form))
    if not tensors:
        return [text]
    parent = {t: t for t in tensors}

    def find(t: str) -> str:
        while parent[t] != t:
            t = parent[t]
        return t

    compared: set[str] = set()  # tensors whose shape a rule compares with a shape

    def link(group: set[str]) -> None:
        compared.update(group)
        first, *rest = sorted(group)
        for t in rest:
            parent[find(t)] = find(first)

    for ts in aliases.values():
        if len(ts) > 1:
            link(ts)
    integer: set[str] = set()  # tensors whose shape a rule reads as integers

    def refs(term) -> set[str] | None:
        """The tensors whose shape ``term`` is (or is derived from), if it is one."""
        if isinstance(term, Sym) and term in aliases:
            return aliases[term]
        if isinstance(term, list) and len(term) == 2 and term[0] == "shape" and isinstance(term[1], Sym):
            return {str(term[1])}
        if _head(term) in _DERIVED and len(term) == _DERIVED[term[0]] + 1:
            if any(_mentions(arg, aliases) for arg in term[2:]):
                return None
            return refs(term[1])
        return None

    def visit(term) -> None:
        """Every shape read in ``term`` other than a rank is an integer read."""
        found = refs(term)
        if found is not None:
            integer.update(found)
            return
        if isinstance(term, list) and term:
            if term[0] == "vec-length" and len(term) == 2 and refs(term[1]) is not None:
                if _head(term[1]) in _DERIVED:
                    compared.update(refs(term[1]))  # the rank of a part of a shape: no rank of its own
                return
            for part in term[1:] if isinstance(term[0], Sym) else term:
                visit(part)

    for fact in facts:
        if _alias(fact):
            continue
        if isinstance(fact, list) and len(fact) == 3 and fact[0] == "=":
            left, right = refs(fact[1]), refs(fact[2])
            if left is not None and right is not None and _depth(fact[1]) == _depth(fact[2]):
                link(left | right)
                continue
        visit(fact)
    visit(actions)
    ranked = {t for t in tensors if t not in compared and t not in integer}
    if ranked:
        form = _ranks(form, ranked, {v for v, ts in aliases.items() if ts <= ranked})
    groups: dict[str, set[str]] = {}
    for t in compared:
        groups.setdefault(find(t), set()).add(t)
    bad = {find(t) for t in integer if t in compared}
    free = [groups[root] for root in sorted(groups) if root not in bad][:MAX_GROUPS]
    out = [form]
    for size in range(1, len(free) + 1):
        for chosen in combinations(free, size):
            out.append(_rename(_swap(form, set().union(*chosen)), len(out)))
    return [to_source(v) for v in out]


def _ranks(form: list, ranked: set[str], variables: set[str]) -> list:
    """``form`` with the ranks of ``ranked`` tensors read as ``(rank t)`` (their shape variables,
    ``variables``, bound no more)."""
    of = {}
    for fact in form[1]:
        pair = _alias(fact)
        if pair and pair[0] in variables:
            of[pair[0]] = pair[1]

    def swap(term):
        if isinstance(term, list):
            if _head(term) == "vec-length" and len(term) == 2:
                inner = term[1]
                if isinstance(inner, Sym) and inner in of:
                    return [Sym("rank"), Sym(of[inner])]
                if _head(inner) == "shape" and str(inner[1]) in ranked:
                    return [Sym("rank"), inner[1]]
            return [swap(t) for t in term]
        return term

    facts = [swap(f) for f in form[1] if not (_alias(f) and _alias(f)[0] in variables)]
    return [form[0], facts, swap(form[2]), *form[3:]]


def _alias(fact) -> tuple[str, str] | None:
    """``(= s (shape t))`` (either way round): the variable s and the tensor t."""
    if isinstance(fact, list) and len(fact) == 3 and fact[0] == "=":
        for var, term in ((fact[1], fact[2]), (fact[2], fact[1])):
            if (isinstance(var, Sym) and isinstance(term, list) and len(term) == 2 and term[0] == "shape"
                    and isinstance(term[1], Sym)):
                return str(var), str(term[1])
    return None


def _head(term) -> str | None:
    return str(term[0]) if isinstance(term, list) and term and isinstance(term[0], Sym) else None


def _shape_args(term) -> list[str]:
    if isinstance(term, list):
        if len(term) == 2 and term[0] == "shape" and isinstance(term[1], Sym):
            return [str(term[1])]
        return [t for part in term for t in _shape_args(part)]
    return []


def _mentions(term, aliases: dict) -> bool:
    return bool(_shape_args(term)) or (isinstance(term, Sym) and term in aliases) or (
        isinstance(term, list) and any(_mentions(t, aliases) for t in term))


def _depth(term) -> int:
    """How many dims were read out of a shape term (a shape 0, one of its dims 1)."""
    if _head(term) == "vec-get":
        return 1 + _depth(term[1])
    if _head(term) in _DERIVED:
        return _depth(term[1])
    return 0


def _swap(term, symbolic: set[str]):
    if isinstance(term, list):
        if len(term) == 2 and term[0] == "shape" and str(term[1]) in symbolic:
            return [Sym("dims"), term[1]]
        return [_swap(t, symbolic) for t in term]
    return term


def _rename(form: list, number: int) -> list:
    form = list(form)
    for i, item in enumerate(form[:-1]):
        if item == ":name":
            form[i + 1] = Str(f"{form[i + 1]}{SUFFIX}{number}")
    return form
