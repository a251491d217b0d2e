"""S-expressions as data: egglog rule source, and Tensat's rule files.

:func:`parse_sexp` reads egglog source into nested lists of :class:`Sym`, :class:`Str`,
``int`` and ``float``; :func:`parse_term` reads exactly one expression into nested tuples
(hashable, for use as keys); :func:`to_source` writes either back as text.
"""

from __future__ import annotations

import re
from typing import Any

from eqsat_dnn.ir.language import lit


class Sym(str):
    """A symbol (variable, operator or keyword) in parsed egglog source."""


class Str(str):
    """A string literal in parsed egglog source."""


_TOKEN_RE = re.compile(r'\s+|;[^\n]*|"(?:[^"\\]|\\.)*"|[()]|[^\s()";]+')
_INT_RE = re.compile(r"-?\d+")
_FLOAT_RE = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")


def parse_all(text: str) -> list:
    """Every top-level s-expression of ``text``, as nested lists of Sym/Str/int/float."""
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
    if len(stack) != 1:
        raise ValueError("unbalanced parentheses")
    return stack[0]


def parse_sexp(text: str) -> Any:
    """The first s-expression of ``text`` as nested lists of Sym/Str/int/float."""
    forms = parse_all(text)
    if not forms:
        raise ValueError("unbalanced parentheses")
    return forms[0]


def parse_term(text: str) -> Any:
    """The one s-expression ``text`` holds, lists as tuples (so a term can be a dict key)."""
    forms = parse_all(text)
    if len(forms) != 1:
        raise ValueError(f"expected one expression in {text!r}, found {len(forms)}")
    return _tuples(forms[0])


def _tuples(term: Any) -> Any:
    return tuple(_tuples(t) for t in term) if isinstance(term, list) else term


def to_source(term: Any) -> str:
    """Parsed egglog (lists or tuples) back to source text."""
    if isinstance(term, (list, tuple)):
        return "(" + " ".join(to_source(t) for t in term) + ")"
    if isinstance(term, Str):
        return lit(str(term), "String")
    if isinstance(term, float):
        return lit(term, "f64")
    return str(term)
