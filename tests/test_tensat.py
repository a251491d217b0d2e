"""Coverage of Tensat's rule set: both sides of each of its 139 rules, instantiated as one
ONNX model at valid shapes, must meet in one e-class after saturating with our library,
unless the rule is listed below with its reason."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from eqsat_dnn.eqsat.rules import select_rules
from eqsat_dnn.ir.sexpr import parse_term
from eqsat_dnn.verify.tensat import check_rule, load_tensat_rules, summary

TENSAT_RULES_DIR = Path(os.environ.get("TENSAT_RULES_DIR")
                        or Path(__file__).resolve().parents[2] / "shared" / "reference" / "tensat-rules")
"""Tensat's rule files: shared reference data beside the repository, never inside it
(``$TENSAT_RULES_DIR`` points elsewhere)."""

pytestmark = pytest.mark.skipif(
    not (TENSAT_RULES_DIR / "converted.txt").is_file(),
    reason=f"Tensat's rule files are not at {TENSAT_RULES_DIR} (shared reference data)",
)

_MERGE = ("not expressible in ONNX: merge (TASO's merge_gconv) rewrites a grouped conv's kernel into a "
          "block-diagonal, zero-filled kernel for half as many groups; ONNX has no such operator, and building "
          "the kernel from Slice, Pad and Concat takes one rule per group count (g -> g/2 needs g/2 blocks), "
          "where Tensat's rule is one for every g")

EXCEPTIONS = {
    "handwritten:1": _MERGE,
    "handwritten:2": _MERGE,
    "handwritten:3": _MERGE,
    "handwritten:4": _MERGE,
}
"""Rules not derived, each with its reason."""

DERIVED_FLOOR = 135
_PREFIXES = ("unsound over ONNX: ", "not expressible in ONNX: ", "not derived yet: needs ")


def test_rule_files_parse():
    rules = load_tensat_rules(TENSAT_RULES_DIR)
    assert len(rules) == 139
    kinds = [r.id.split(":")[0] for r in rules]
    assert kinds.count("converted") == 120
    assert kinds.count("multi") == 13
    assert kinds.count("handwritten") == 6
    assert all(len(r.pairs) == 2 for r in rules if r.id.startswith("multi"))
    assert parse_term("(ewadd ?input_1 (relu ?input_2))") == ("ewadd", "?input_1", ("relu", "?input_2"))


def test_exception_reasons_are_reasoned():
    for rule_id, reason in EXCEPTIONS.items():
        assert reason.startswith(_PREFIXES), rule_id


def test_tensat_coverage():
    start = time.perf_counter()
    library = select_rules()
    results = [check_rule(rule, library, iterations=6, nodes=5000, seconds=2.0)
               for rule in load_tensat_rules(TENSAT_RULES_DIR)]
    elapsed = time.perf_counter() - start
    print()
    print(summary(results))
    print(f"checked in {elapsed:.1f} s")
    derived = {r.rule.id for r in results if r.derived}
    missing = {r.rule.id for r in results if not r.derived}
    unlisted = sorted(missing - set(EXCEPTIONS))
    assert not unlisted, f"rules neither derived nor listed: {unlisted}"
    assert len(derived) >= DERIVED_FLOOR, f"{len(derived)} derived, floor {DERIVED_FLOOR}"
    # every rule we instantiated is true over ONNX at its shapes (else it needs an
    # "unsound over ONNX" entry), and nothing we derive is numerically false
    for r in results:
        if r.numeric is False:
            assert EXCEPTIONS.get(r.rule.id, "").startswith("unsound over ONNX"), r.rule.id
            assert not r.derived, f"derived a rule that is false over ONNX: {r.rule.id}"
    stale = sorted(set(EXCEPTIONS) & derived)
    assert not stale, f"listed as exceptions but now derived (move the floor up): {stale}"
