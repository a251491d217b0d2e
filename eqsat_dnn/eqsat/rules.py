"""Rules are data: egglog ``.egg`` files in ``rules/``, one family per file.

A rule file holds ``rewrite``, ``birewrite`` and ``rule`` forms over the
constructors of :mod:`eqsat_dnn.ir.language`. The comment lines just above a form
are its description; ``:name "..."`` names it (else ``<family>/<line>``). The
loader adds each rule to a ruleset named after its family (``family_<stem>``), so
files never say ``:ruleset`` themselves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from eqsat_dnn.eqsat.egraph import split_forms
from eqsat_dnn.errors import RuleError
from eqsat_dnn.ir.language import OPS
from eqsat_dnn.ir.sexpr import parse_sexp
from eqsat_dnn.io.files import check_input_file

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
"""The shipped library (a source checkout keeps it beside the package)."""

_PACKAGED_RULES = Path(__file__).resolve().parents[1] / "rules"

_KINDS = ("rewrite", "birewrite", "rule")
SCHEDULES = ("bounded", "fixpoint")
_SCHEDULE_RE = re.compile(r"^;;\s*schedule:\s*(\S+)\s*$", re.MULTILINE)
_NAME_RE = re.compile(r':name\s+"((?:[^"\\]|\\.)*)"')
_FLOAT_RE = re.compile(r"^(?:;;)?\s*float:\s*(\S+)\s*$", re.MULTILINE)


class Arithmetic(Enum):
    """In which arithmetic a rule holds (the floating-point policy, see rules/README.md)."""

    EXACT = "exact"
    """In IEEE float, for every input, infinities and NaN included: the rewrite moves, selects
    or reorders data, or applies the same operations to the same operands (a dot product's
    summation order is the kernel's own either way)."""
    FINITE = "finite"
    """In IEEE float for finite inputs only: the rewrite is exact on numbers but not on
    infinities or NaN (``not (a < b)`` is ``a >= b`` unless one is NaN). ``--exact`` leaves such
    rules out; the rule checker tries them on non-finite inputs too and reports them as
    finite-only where only those break them."""
    REAL = "real"
    """In real arithmetic only: reassociation, distribution, folding factors into weights,
    reciprocals, and zero-padded kernels (``inf * 0`` is NaN). Results may round differently,
    and overflow where the original does not or the other way round."""


@dataclass(frozen=True)
class Rule:
    """One named rewrite rule."""

    name: str
    family: str
    kind: str
    text: str
    """The egglog form as written in the file (no ruleset)."""
    description: str
    file: str
    line: int
    schedule: str = "bounded"
    """How the runner applies the family each iteration: ``bounded`` (one step under the
    back-off match limit) or ``fixpoint`` (repeated until nothing changes, for families of
    simplifications that cannot grow the e-graph without end). A file says
    ``;; schedule: fixpoint`` on a line of its own."""
    arithmetic: Arithmetic = Arithmetic.REAL
    """Where the rule holds: a file says ``;; float: exact`` (or ``finite``, ``real``) in its header for the
    family, a rule says it in its own comment block to differ; unsaid means ``real``."""

    @property
    def ruleset(self) -> str:
        """The egglog ruleset of the family (prefixed, so no family shadows an egglog name)."""
        return f"family_{self.family}"

    def builds(self) -> frozenset[str]:
        """The constructors the rule's right-hand side (both sides of a birewrite, a rule's
        actions) applies: what e-nodes it can add."""
        form = parse_sexp(self.text)
        sides = {"rewrite": form[2:3], "birewrite": form[1:3], "rule": form[2:3]}.get(self.kind, [])
        found: set[str] = set()

        def visit(term) -> None:
            if isinstance(term, list) and term:
                if isinstance(term[0], str) and term[0] in OPS:
                    found.add(str(term[0]))
                for part in term:
                    visit(part)

        for side in sides:
            visit(side)
        return frozenset(found)

    def egglog(self) -> str:
        """The form with its ruleset and name attached, ready for egglog."""
        text = self.text[:-1].rstrip()
        if not _NAME_RE.search(text):
            text += f' :name "{self.name}"'
        return f"{text} :ruleset {self.ruleset})"


def library_dir() -> Path:
    """Where the shipped rule files live (source checkout or installed package)."""
    return RULES_DIR if RULES_DIR.is_dir() else _PACKAGED_RULES


def parse_rule_file(path: str | Path, family: str | None = None) -> list[Rule]:
    """Read one ``.egg`` rule file; errors name the file and line."""
    path = check_input_file(path, error=RuleError, what="(rule file)")  # a FIFO would block
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read rule file ({exc.__class__.__name__})") from None
    family = family or re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    declared = _SCHEDULE_RE.findall(text)
    if len(set(declared)) > 1 or (declared and declared[0] not in SCHEDULES):
        raise RuleError(f"{path}: 'schedule:' must be said once, as one of {', '.join(SCHEDULES)}")
    schedule = declared[0] if declared else "bounded"
    rules: list[Rule] = []
    try:
        forms = list(split_forms(text))
    except ValueError as exc:
        raise RuleError(f"{path}: {exc}") from None
    family_arithmetic = _arithmetic(path, _header(text, forms), Arithmetic.REAL)
    for form, comment, line in forms:
        head = form[1:].split(None, 1)[0] if len(form) > 2 else ""
        if head not in _KINDS:
            raise RuleError(f"{path}:{line}: expected a rewrite, birewrite or rule form, found ({head} ...)")
        if ":ruleset" in form:
            raise RuleError(f"{path}:{line}: rule files must not name a ruleset (the family is the file)")
        match = _NAME_RE.search(form)
        name = match.group(1) if match else f"{family}/{line}"
        description = comment.splitlines()[0] if comment else ""
        arithmetic = _arithmetic(path, comment, family_arithmetic)
        rules.append(Rule(name, family, head, form, description, str(path), line, schedule, arithmetic))
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleError(f"{path}: duplicate rule names {duplicates[:3]}")
    return rules


def _arithmetic(path: Path, text: str, default: Arithmetic) -> Arithmetic:
    said = _FLOAT_RE.findall(text)
    if not said:
        return default
    try:
        (value,) = set(said)
        return Arithmetic(value)
    except ValueError:
        raise RuleError(f"{path}: 'float:' must say one of {', '.join(a.value for a in Arithmetic)}") from None


def _header(text: str, forms: list[tuple[str, str, int]]) -> str:
    """The file's lines above its first rule and that rule's own comment block."""
    if not forms:
        return text
    _, comment, line = forms[0]
    own = len(comment.splitlines()) if comment else 0
    return "\n".join(text.splitlines()[: max(0, line - 1 - own)])


def load_library(directory: str | Path | None = None) -> list[Rule]:
    """Every rule of every ``.egg`` file in the library, ordered by file then line."""
    directory = Path(directory) if directory else library_dir()
    rules: list[Rule] = []
    for path in sorted(directory.glob("*.egg")):
        rules += parse_rule_file(path)
    return rules


def default_rules(merges: bool = False) -> list[Rule]:
    """The library; with ``merges``, also the multi-pattern merges of parallel products and convs
    (``multi/multi.egg``), which pay where one larger kernel beats two launches."""
    rules = load_library()
    if merges:
        rules += parse_rule_file(library_dir() / "multi" / "multi.egg")
    return rules


def select_rules(selectors: list[str] | None = None, directory: str | Path | None = None) -> list[Rule]:
    """Rules chosen by file path, family name or rule name; all of the library when empty.

    A selector that is an existing path loads that file (or every ``.egg`` in that
    directory); otherwise it names a family or a rule of the library.
    """
    if not selectors:
        return load_library(directory)
    library: list[Rule] | None = None
    chosen: list[Rule] = []
    for selector in selectors:
        path = Path(selector)
        if os.path.isdir(path):  # os.path's tests say False for a name too long, where Path's raise
            chosen += load_library(path)
            continue
        if path.suffix == ".egg" or os.path.lexists(path):
            if not os.path.exists(path):
                raise RuleError(f"{path}: no such rule file")
            chosen += parse_rule_file(path)
            continue
        library = library if library is not None else load_library(directory)
        matched = [r for r in library if r.family == selector or r.name == selector]
        if not matched:
            families = sorted({r.family for r in library})
            raise RuleError(f"no rule file, family or rule named {selector!r} (families: {', '.join(families)})")
        chosen += matched
    unique: dict[tuple[str, str], Rule] = {}
    for rule in chosen:
        unique.setdefault((rule.family, rule.name), rule)
    return list(unique.values())
