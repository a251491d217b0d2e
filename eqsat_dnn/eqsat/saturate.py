"""Stage 3: saturate the e-graph with rules, within limits (egg's Runner).

Each iteration runs every rule family once, then re-establishes the shape and
dtype analyses. Rules named ``multi-...`` (merging parallel operators, which can
grow the e-graph fast) run only in the first ``Limits.multi_iterations``
iterations, like Tensat's k_multi, right after the simplifications. The runner
stops when nothing changes (saturated) or at the first limit reached (iterations,
e-nodes, seconds, memory) and reports every iteration: e-graph size, matches per
rule, time. Size, time and memory are read after every rule family (and every
round of a fixpoint family), so a limit is overshot by at most one family's run
(whose growth the back-off match limit bounds).
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable

from egglog import bindings

from eqsat_dnn.eqsat.egraph import TensorEGraph
from eqsat_dnn.errors import RuleError
from eqsat_dnn.ir.language import LEAVES, OPAQUE, OPS
from eqsat_dnn.eqsat.rules import Rule
from eqsat_dnn.eqsat.variants import base_name, variants

_ENODE_TABLES = set(OPS) | set(LEAVES) | {OPAQUE, "TNil", "TCons"}


@dataclass(frozen=True)
class Limits:
    """When saturation must stop, whatever the rules would still do."""

    iterations: int = 8
    nodes: int = 50_000
    seconds: float = 10.0
    multi_iterations: int = 1
    """Iterations in which ``multi-`` rules (merging parallel operators) run: Tensat's k_multi."""
    match_limit: int = 5_000
    """A rule with more matches than this in one step is skipped for that step (egg's back-off):
    one explosive rule cannot multiply the e-graph in a single iteration."""
    memory_mb: float = 8_000.0
    """Resident memory of this process (MiB, weights and e-graph together) at which saturation
    stops: far below a 24 GB machine, so a runaway e-graph never exhausts it."""

    def over_resident(self) -> Limits:
        """These limits with the memory limit counted from what this process holds now, once freed
        memory is handed back: a process that optimizes model after model (the bench) keeps what
        earlier ones left (allocator pools, arenas), and each answers for its own optimization."""
        gc.collect()
        if sys.platform.startswith("linux"):  # glibc keeps freed pages in its arenas otherwise
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return replace(self, memory_mb=self.memory_mb + resident_mb())


class SaturationStop(StrEnum):
    """Why saturation stopped (a ``str``: compares, prints and serializes as its value)."""

    SATURATED = "saturated"
    """Nothing left to rewrite (or an iteration found nothing new)."""
    ITERATION_LIMIT = "iteration limit"
    NODE_LIMIT = "node limit"
    TIME_LIMIT = "time limit"
    MEMORY_LIMIT = "memory limit"
    NO_RULES = "no rules"
    NOT_RUN = "not run"


@dataclass
class Iteration:
    """What one iteration did."""

    index: int
    nodes: int
    """e-nodes after the iteration."""
    matches: dict[str, int]
    """rule name -> matches in this iteration (rules with none left out)."""
    seconds: float


@dataclass
class SaturationReport:
    """The iterations run and why the runner stopped."""

    iterations: list[Iteration] = field(default_factory=list)
    stop_reason: SaturationStop = SaturationStop.NOT_RUN
    """``saturated``, ``iteration limit``, ``node limit``, ``time limit``, ``memory limit``
    or ``no rules``."""
    initial_nodes: int = 0
    seconds: float = 0.0

    @property
    def nodes(self) -> int:
        return self.iterations[-1].nodes if self.iterations else self.initial_nodes

    def matches_per_rule(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for it in self.iterations:
            for name, count in it.matches.items():
                total[name] = total.get(name, 0) + count
        return total


def resident_mb() -> float:
    """This process's resident memory in MiB (its peak where the current figure is not readable)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _limit_reached(limits: Limits, iterations: int, nodes: int, started: float) -> SaturationStop | None:
    """The stop reason of the first limit reached, if any."""
    if iterations >= limits.iterations:
        return SaturationStop.ITERATION_LIMIT
    if nodes >= limits.nodes:
        return SaturationStop.NODE_LIMIT
    if time.perf_counter() - started >= limits.seconds:
        return SaturationStop.TIME_LIMIT
    if resident_mb() >= limits.memory_mb:
        return SaturationStop.MEMORY_LIMIT
    return None


def count_enodes(teg: TensorEGraph) -> int:
    """Number of e-nodes in the tensor language (analysis tables not counted)."""
    outputs = teg.command("(print-size)")
    sizes = outputs[0].sizes if hasattr(outputs[0], "sizes") else outputs[0][0]
    return sum(size for name, size in sizes if name in _ENODE_TABLES)


MULTI_PREFIX = "multi-"
"""Rules named so merge parallel operators; they run only in the first iterations."""


def _ruleset_of(rule: Rule) -> str:
    return rule.ruleset + "_multi" if rule.name.startswith(MULTI_PREFIX) else rule.ruleset


def add_rules(teg: TensorEGraph, rules: list[Rule]) -> list[str]:
    """Declare each family's ruleset and add its rules; returns the rulesets in order
    (a family's ``multi-`` rules get a ruleset of their own)."""
    families: list[str] = []
    for rule in rules:
        ruleset = _ruleset_of(rule)
        if ruleset not in families:
            families.append(ruleset)
            if ruleset not in teg.rulesets:
                teg.command(f"(ruleset {ruleset})")
                teg.rulesets.add(ruleset)
        if rule.name in teg.rule_names:
            continue
        text = rule.egglog().replace(f":ruleset {rule.ruleset})", f":ruleset {ruleset})")
        try:
            for form in variants(text) if teg.symbolic else [text]:
                teg.command(form)
        except bindings.EggSmolError as exc:
            first = str(exc).strip().splitlines()
            message = first[-1] if first else "invalid rule"
            raise RuleError(f"{rule.file}:{rule.line}: rule {rule.name!r}: {message}") from None
        teg.rule_names.add(rule.name)
    return families


def _run_schedule(teg: TensorEGraph, schedule: str):
    """Run one egglog schedule, then the analyses to fixpoint; returns egglog's run report."""
    try:
        report = teg.command(f"(run-schedule {schedule})")[0].report
        run_analysis(teg)
    except bindings.EggSmolError as exc:
        # a rule whose action fails (a primitive out of its domain) stops egglog mid-run
        message = str(exc).strip().splitlines()
        raise RuleError(f"egglog failed while running the rules: {message[-1] if message else exc}") from None
    return report


def _run_step(teg: TensorEGraph, ruleset: str, match_limit: int):
    """One run of a ruleset under a back-off match limit, then the analyses to fixpoint."""
    return _run_schedule(teg, f"(let-scheduler bo (back-off :match-limit {match_limit})) (run-with bo {ruleset})")


FIXPOINT_ROUNDS = 32
"""A ``fixpoint`` family stops after this many rounds even if it still changes the e-graph."""


def _run_to_fixpoint(teg: TensorEGraph, ruleset: str, limits: Limits, started: float):
    """Run a family of simplifications round after round until a round changes nothing or a
    limit (e-nodes, seconds, memory; read after every round) is reached; returns whether it
    changed the e-graph and the matches per rule over all rounds."""
    matches: dict[str, int] = {}
    updated = False
    for _ in range(FIXPOINT_ROUNDS):
        report = _run_schedule(teg, f"(run {ruleset})")
        for name, n in report.num_matches_per_rule.items():
            if n:
                name = base_name(name)
                matches[name] = matches.get(name, 0) + n
        if not report.updated:
            break
        updated = True
        if _limit_reached(limits, 0, count_enodes(teg), started) is not None:
            break
    return updated, matches


def run_analysis(teg: TensorEGraph) -> None:
    teg.command("(run-schedule (saturate (run analysis)))")


def saturate(
    teg: TensorEGraph,
    rules: list[Rule],
    limits: Limits = Limits(),
    on_iteration: Callable[[Iteration], None] | None = None,
) -> SaturationReport:
    """Run ``rules`` over ``teg`` until saturated or a limit is reached."""
    start = time.perf_counter()
    run_analysis(teg)
    report = SaturationReport(initial_nodes=count_enodes(teg))
    if not rules:
        report.stop_reason = SaturationStop.NO_RULES
        return report
    rulesets = add_rules(teg, rules)
    # simplifications first, each to its fixpoint, so every iteration's growth starts from them;
    # then the multi-pattern merges, so that they pair the program's own operators and not the
    # ones the expansive families are about to add in the same iteration (conv-expand-input
    # splits a residual block's conv in two, and each half would pair with its neighbours)
    fixpoint = {_ruleset_of(r) for r in rules if r.schedule == "fixpoint" and not r.name.startswith(MULTI_PREFIX)}
    multi = {_ruleset_of(r) for r in rules if r.name.startswith(MULTI_PREFIX)}
    rulesets.sort(key=lambda r: 0 if r in fixpoint else 1 if r in multi else 2)
    while True:
        reason = _limit_reached(limits, len(report.iterations), report.nodes, start)
        if reason is not None:
            report.stop_reason = reason
            break
        with_multi = len(report.iterations) < limits.multi_iterations
        active = [r for r in rulesets if with_multi or not r.endswith("_multi")]
        if not active:
            report.stop_reason = SaturationStop.SATURATED
            break
        t0 = time.perf_counter()
        matches: dict[str, int] = {}
        updated = False
        nodes = report.nodes
        for ruleset in active:
            # one family at a time, the limits read after each: a family that overshoots a
            # limit ends the iteration before the next one compounds it
            if ruleset in fixpoint:
                changed, found = _run_to_fixpoint(teg, ruleset, limits, start)
            else:
                run_report = _run_step(teg, ruleset, limits.match_limit)
                changed, found = run_report.updated, run_report.num_matches_per_rule
            updated |= changed
            for name, n in found.items():
                if n:
                    # egglog runs a birewrite as two rules, "name=>" and "name<=", and a rule's
                    # symbolic variants under names of their own: report each as one
                    name = base_name(name)
                    matches[name] = matches.get(name, 0) + n
            nodes = count_enodes(teg)
            if _limit_reached(limits, 0, nodes, start) is not None:
                break
        iteration = Iteration(len(report.iterations) + 1, nodes, matches, time.perf_counter() - t0)
        report.iterations.append(iteration)
        if on_iteration:
            on_iteration(iteration)
        previous = report.iterations[-2] if len(report.iterations) > 1 else None
        # egglog reports "updated" for any rule that fired, even when its unions were already
        # true; an iteration that adds no e-node and matches exactly as the last one did found
        # nothing new
        flat = previous is not None and previous.nodes == nodes and previous.matches == matches
        if not updated or flat:
            report.stop_reason = SaturationStop.SATURATED
            break
    report.seconds = time.perf_counter() - start
    return report
