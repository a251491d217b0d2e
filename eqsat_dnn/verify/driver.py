"""The driver: checking one instance, one direction of a rule, one rule, and many rules in
worker processes."""

from __future__ import annotations

import os
import re
import time
import zlib
from dataclasses import dataclass, replace

import numpy as np
from onnx import TensorProto

from eqsat_dnn.eqsat.rules import Arithmetic, Rule
from eqsat_dnn.errors import InputError, RuleError
from eqsat_dnn.verify.instances import TOLERANCES, Instance, edge_feeds, make_instance
from eqsat_dnn.verify.oracle import Check, NoKernel, compare, counterexample, run_graph
from eqsat_dnn.verify.patterns import Direction, Reject, Unsupported, directions
from eqsat_dnn.verify.planner import Planner
from eqsat_dnn.verify.results import Counterexample, RuleCheck, RuleStatus
from eqsat_dnn.verify.runner import Panic, RuleRunner, shared_base
from eqsat_dnn.verify.sampling import numel

DEFAULT_TRIALS = 12
"""Firing instances checked per rule (per direction of a ``birewrite``)."""

SHRINK_ATTEMPTS = 40
"""After a failure, instances tried (with smaller dims) for a smaller counterexample."""
UNFIRED_PATIENCE = 10
"""With the default number of attempts, a rule that has not fired once in them gets this many
times as many (within the time budget) before it is called untested: rules whose conditions tie
several shapes and attributes together (enlarge-then-merge) fire in one random instance of a few
hundred."""


@dataclass
class Outcome:
    fired: bool = False
    checks: int = 0
    max_error: float = 0.0
    failure: Counterexample | None = None
    skip: bool = False
    float32_only: bool = False
    note: str = ""
    edge: Counterexample | None = None
    """Where the rule holds on this instance's finite inputs but not on non-finite ones."""


EDGE_TESTED = (Arithmetic.EXACT, Arithmetic.FINITE)
"""Rules the checker also runs on infinities and NaN: an ``exact`` rule must hold there (else it
fails), a ``finite`` one is reported finite-only where it does not."""


def check_instance(runner: RuleRunner, inst: Instance, rng: np.random.Generator) -> Outcome:
    snapshot = runner.fire(inst)
    if snapshot is None:
        return Outcome()
    outcome = Outcome(fired=True)
    planner = Planner(snapshot, inst)
    checks = planner.checks()
    if not checks:
        outcome.note = planner.note or "fired without changing the e-graph"
        return outcome
    feeds = inst.feeds(rng)
    original_outputs = list(inst.graph.outputs)
    try:
        values = run_graph(planner.graph(checks), feeds)
    except NoKernel:
        outcome.skip, outcome.float32_only = True, inst.dtype == TensorProto.DOUBLE
        return outcome
    except Exception:
        # find out which side the runtime refuses
        try:
            values = run_graph(replace(inst.graph, outputs=original_outputs), feeds)
        except Exception as exc:
            outcome.skip = True
            outcome.float32_only = isinstance(exc, NoKernel) and inst.dtype == TensorProto.DOUBLE
            return outcome
        for check in checks:
            try:
                values.update(run_graph(planner.graph([check]), feeds))
            except NoKernel:
                outcome.skip, outcome.float32_only = True, inst.dtype == TensorProto.DOUBLE
                return outcome
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:400]
                outcome.failure = counterexample(
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
        problem, err, scale = compare(x, y, rtol, atol)
        if problem:
            outcome.failure = counterexample(inst, check, feeds, values, problem, err, scale)
            return outcome
        if x.size == 0:
            continue  # empty tensors agree vacuously: no evidence either way
        outcome.checks += 1
        outcome.max_error = max(outcome.max_error, err / max(scale, 1e-300) if scale else err)
    if runner.d.rule.arithmetic in EDGE_TESTED:
        outcome.edge = _edge_failure(inst, planner, checks, feeds, rng)
        if outcome.edge is not None and runner.d.rule.arithmetic is Arithmetic.EXACT:
            outcome.failure, outcome.checks = outcome.edge, 0
            return outcome
    # the shape analysis must agree with what the new terms compute (else shape conditions lie);
    # classes holding an original value got their shape from ONNX at import, not from the analysis
    for value, cls in planner.value_class.items():
        t = planner.snap.types.get(cls) if cls not in planner.originals and value in values else None
        if t is None or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            continue
        actual = np.asarray(values[value]).shape
        if tuple(t.shape) != actual:
            lhs = " ".join(inst.terms[r] for r in inst.roots)
            outcome.failure = counterexample(
                inst, Check(value, value, planner.rendered[value], lhs), feeds, {},
                f"the shape analysis gives {list(t.shape)} for a term the rule built, which computes {list(actual)}")
            outcome.checks = 0
            return outcome
    return outcome


def _edge_failure(inst: Instance, planner: Planner, checks: list[Check], feeds: dict[str, np.ndarray],
                  rng: np.random.Generator) -> Counterexample | None:
    """The same programs on inputs with infinities and NaN (:func:`edge_feeds`): a
    counterexample where the two sides then differ (non-finite positions compared exactly)."""
    edged = edge_feeds(feeds, rng)
    try:
        values = run_graph(planner.graph(checks), edged)
    except Exception:  # the runtime refuses these values: nothing learnt
        return None
    values.update(edged)
    values.update(inst.weights)
    rtol, atol = TOLERANCES[inst.dtype]
    for check in checks:
        problem, err, scale = compare(np.asarray(values[check.reference]), np.asarray(values[check.other]), rtol, atol)
        if problem:
            return counterexample(inst, check, edged, values, f"on non-finite inputs: {problem}", err, scale)
    return None


def _check_direction(direction: Direction, trials: int, seed: int, attempts: int,
                     budget: float | None, patience: int = 1) -> RuleCheck:
    start = time.perf_counter()
    result = RuleCheck(direction.rule, RuleStatus.UNTESTED)
    try:
        runner = RuleRunner(direction)
    except RuleError as exc:
        result.status, result.note = RuleStatus.FAILED, f"egglog rejects the rule: {exc}"
        result.seconds = time.perf_counter() - start
        return result
    float32_only = False
    notes: list[str] = []
    salt = zlib.crc32(direction.rule.name.encode())
    shrink_left = SHRINK_ATTEMPTS
    stream = 0
    while True:
        if result.status is RuleStatus.FAILED:
            # look a little further for a smaller counterexample (these instances are not counted)
            if shrink_left <= 0:
                break
            shrink_left -= 1
        elif result.checked >= trials or result.attempts >= attempts * (1 if result.fired else patience):
            break
        else:
            result.attempts += 1
        if budget is not None and time.perf_counter() - start > budget:
            if result.status is not RuleStatus.FAILED:
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
            inst = make_instance(direction, rng, dtype, small=result.status is RuleStatus.FAILED)
        except Reject:
            continue
        except Unsupported as exc:
            result.note = f"cannot instantiate: {exc}"
            break
        try:
            outcome = check_instance(runner, inst, rng)
        except Reject:
            continue
        except Panic as exc:
            runner = RuleRunner(direction)  # a fresh e-graph: the old one is not trusted after a panic
            if result.status is not RuleStatus.FAILED:
                shrink_left = 0  # each panic costs a new e-graph: keep the first one
            outcome = Outcome(fired=True, failure=Counterexample(
                message=f"egglog fails while running the rule: {exc}",
                lhs=" ".join(inst.terms[r] for r in inst.roots), rhs="(none: the run failed)",
                inputs=inst.type_names(),
                attributes=dict(inst.attributes), symbolic=inst.symbolic))
        if outcome.float32_only:
            float32_only = True
        if outcome.skip or not outcome.fired:
            continue
        if result.status is RuleStatus.FAILED:
            if outcome.failure is not None and _size(outcome.failure) < _size(result.counterexample):
                outcome.failure.direction = direction.label
                result.counterexample = outcome.failure
            continue
        result.fired += 1
        if outcome.edge is not None and result.edge is None:
            outcome.edge.direction = direction.label
            result.edge = outcome.edge
        if outcome.failure is not None:
            outcome.failure.direction = direction.label
            result.counterexample = outcome.failure
            result.status = RuleStatus.FAILED
            continue
        if outcome.checks:
            result.checked += 1
            result.comparisons += outcome.checks
            result.max_error = max(result.max_error, outcome.max_error)
        elif outcome.note and outcome.note not in notes and not outcome.note.startswith("fired without"):
            notes.append(outcome.note)
    if result.status is not RuleStatus.FAILED:
        result.status = RuleStatus.VERIFIED if result.checked else RuleStatus.UNTESTED
        if 0 < result.checked < trials:
            notes.append(f"only {result.checked} of {trials} trials fired in {result.attempts} instances")
        if not result.checked and not result.note:
            if result.fired:
                notes.insert(0, f"fired {result.fired} times but never changed the e-graph")
            else:
                notes.insert(0, f"never fired in {result.attempts} instances")
    if float32_only:
        notes.append("float32 only (the runtime lacks float64 kernels)")
    if result.finite_only:
        notes.append(f"finite only, as tagged: {result.edge.message}")
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
        total += numel(dims)
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
            shared_base().add(rule)
        except RuleError as exc:
            return RuleCheck(rule, RuleStatus.FAILED, note=f"egglog rejects the rule: {exc}",
                             seconds=time.perf_counter() - start)
    # a cap the caller gives is a cap; the default one stretches for rules that have not fired yet
    patience = 1 if attempts is not None else UNFIRED_PATIENCE
    attempts = attempts if attempts is not None else max(80, 25 * trials)
    parts = [_check_direction(d, trials, seed, attempts, budget, patience) for d in directions(rule)]
    if len(parts) == 1:
        result = replace(parts[0], rule=rule)
    else:
        failed = [p for p in parts if p.status is RuleStatus.FAILED]
        untested = [p for p in parts if p.status is RuleStatus.UNTESTED]
        status = RuleStatus.FAILED if failed else RuleStatus.UNTESTED if untested else RuleStatus.VERIFIED
        notes = [f"{d.label}: {p.note}" for d, p in zip(directions(rule), parts) if p.note]
        result = RuleCheck(
            rule, status, fired=sum(p.fired for p in parts), checked=sum(p.checked for p in parts),
            attempts=sum(p.attempts for p in parts), comparisons=sum(p.comparisons for p in parts),
            max_error=max(p.max_error for p in parts),
            counterexample=failed[0].counterexample if failed else None, note="; ".join(notes),
            edge=next((p.edge for p in parts if p.edge is not None), None))
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
