"""When the output check fails: find the rewrites responsible, leave them out, extract again.

A rewrite that holds in real arithmetic can still change a float program's results beyond the
check's tolerance (``(x + 1e8) - 1e8`` reassociated is ``x``; the original computes 0). The
input program is in the e-graph and computes what the input computes, so such a failure must
never cost the user the model: :func:`repair` narrows the blame to a few e-nodes of the chosen
program that the input program does not use, excludes them, extracts again, and checks again,
falling back to the input program at worst.

Finding the e-nodes: a *probe* builds the program closest to the failing one that avoids a set
of e-nodes (greedy extraction where the failing program's nodes cost nothing, the input
program's a little and every other node a lot), and runs the check on it. Bisecting the suspects
(the failing program's nodes that the input program lacks) with probes finds a small set whose
exclusion makes the check pass; the real extractor then runs on the e-graph without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from eqsat_dnn.extract.base import EGraph, ENode, Extraction, known_program, reachable_choices
from eqsat_dnn.extract.greedy import GreedyExtractor

MAX_ROUNDS = 3
"""Exclude-and-re-extract rounds before the input program is kept."""

MAX_PROBES = 32
"""Checked probe programs, over all rounds, before the input program is kept."""


@dataclass
class Repair:
    """What :func:`repair` did."""

    excluded: list[str] = field(default_factory=list)
    """E-node ids left out of the e-graph."""
    ops: list[str] = field(default_factory=list)
    """The operators of the excluded e-nodes, sorted, once each."""
    rules: list[str] = field(default_factory=list)
    """Rules that fired and can build such e-nodes: the suspects to name to the user."""
    rounds: int = 0
    probes: int = 0
    kept_input: bool = False
    """Nothing better passed the check: the input program is kept."""

    def warning(self) -> str:
        blame = f"rewrites building {', '.join(self.ops) or 'nothing'}"
        if self.rules:
            blame += f" (rules {', '.join(self.rules[:5])}{', ...' if len(self.rules) > 5 else ''})"
        outcome = ("kept the input program" if self.kept_input
                   else f"excluded {len(self.excluded)} e-node(s) and extracted again")
        return f"the chosen program failed the output check; {blame} changed the results: {outcome}"

    def to_dict(self) -> dict:
        return {"excluded": len(self.excluded), "ops": self.ops, "rules": self.rules, "rounds": self.rounds,
                "probes": self.probes, "kept_input": self.kept_input}


def without_nodes(egraph: EGraph, excluded: set[str]) -> EGraph:
    """``egraph`` less the ``excluded`` e-nodes (classes left empty disappear)."""
    nodes = {n: node for n, node in egraph.nodes.items() if n not in excluded}
    return EGraph(nodes=nodes, roots=list(egraph.roots))


def repair(
    egraph: EGraph,
    failing: Extraction,
    initial: dict[str, str],
    passes: Callable[[dict[str, str]], bool],
    extract_again: Callable[[EGraph], Extraction],
    better: Callable[[Extraction], bool],
    op_of: Callable[[str], str],
    rules_building: Callable[[list[str]], list[str]],
) -> tuple[Extraction | None, Repair]:
    """Find and exclude the e-nodes that make ``failing`` fail the check.

    ``initial`` is the input program (its nodes are never excluded); ``passes`` realizes a
    program (e-class -> e-node) and runs the check on it; ``extract_again`` is the pipeline's
    extractor, ``better`` says whether its program is worth more than the input program.
    Returns the extraction that passed, or ``None`` when the input program must be kept."""
    report = Repair()
    known = known_program(egraph, initial)  # None where import could not spell the input program whole
    protected = set(known[0].values()) if known else set()
    excluded: set[str] = set()
    program = failing.choices
    while report.rounds < MAX_ROUNDS and report.probes < MAX_PROBES:
        report.rounds += 1
        suspects = sorted(set(program.values()) - protected - excluded, key=_natural)
        if not suspects:
            break
        culprits = _bisect(egraph, program, initial, suspects, excluded, passes, report)
        excluded |= culprits
        try:
            found = extract_again(without_nodes(egraph, excluded))
        except ValueError:  # nothing computes the outputs without them: the input program it is
            break
        if not better(found):
            break
        if passes(found.choices):
            _describe(report, excluded, op_of, rules_building)
            return found, report
        program = found.choices
    report.kept_input = True
    _describe(report, excluded, op_of, rules_building)
    return None, report


def _bisect(egraph: EGraph, program: dict[str, str], initial: dict[str, str], suspects: list[str],
            excluded: set[str], passes: Callable[[dict[str, str]], bool], report: Repair) -> set[str]:
    """A small subset of ``suspects`` whose exclusion (with ``excluded``) lets the program
    closest to ``program`` pass; all of them when no half alone does."""

    def probe(leave_out: list[str]) -> bool:
        if report.probes >= MAX_PROBES:
            return False
        report.probes += 1
        nearest = _nearest_program(egraph, program, initial, excluded | set(leave_out))
        return nearest is not None and passes(nearest)

    candidates = suspects
    while len(candidates) > 1:
        half = len(candidates) // 2
        first, second = candidates[:half], candidates[half:]
        if probe(first):
            candidates = first
        elif probe(second):
            candidates = second
        else:
            break  # both halves are involved (or the probes ran out): leave all of them out
    return set(candidates)


def _nearest_program(egraph: EGraph, program: dict[str, str], initial: dict[str, str],
                     excluded: set[str]) -> dict[str, str] | None:
    """The program closest to ``program`` that avoids ``excluded``, patched with the input
    program's nodes where it must be."""
    keep, fallback = set(program.values()), set(initial.values())
    priced = {n: ENode(node.op, node.children, node.eclass, 0.0 if n in keep else 1.0 if n in fallback else 1e6)
              for n, node in egraph.nodes.items() if n not in excluded}
    try:
        return GreedyExtractor().extract(EGraph(nodes=priced, roots=list(egraph.roots))).choices
    except ValueError:  # no program avoids them
        return None


def _describe(report: Repair, excluded: set[str], op_of: Callable[[str], str],
              rules_building: Callable[[list[str]], list[str]]) -> None:
    report.excluded = sorted(excluded, key=_natural)
    report.ops = sorted({op_of(n) for n in excluded})
    report.rules = rules_building(report.ops)


def _natural(node_id: str) -> list[tuple[int, int | str]]:
    """Node ids in a stable order (numeric parts as numbers)."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", node_id) if p]
