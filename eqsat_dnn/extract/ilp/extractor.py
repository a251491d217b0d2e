"""The driver: :class:`ILPExtractor`, from the greedy program to the proven optimum.

The bottom-up greedy program (:mod:`eqsat_dnn.extract.greedy`) is computed first; it
and a few variants on the reduced e-graph (greedy, and greedy where a child's cost is
shared between the classes that use it) give the starting incumbent, handed to HiGHS as
a MIP start. The answer is never worse than greedy: if nothing better is found, greedy
comes back with status ``greedy``.

Small programs are solved here in one go. Larger ones run two searches on the two cores
until the deadline: the whole program, solved by HiGHS in a child process
(:mod:`~eqsat_dnn.extract.ilp.worker`), and a large-neighbourhood search here
(:mod:`~eqsat_dnn.extract.ilp.lns`). Either one proving optimality ends the search.
``time_limit`` bounds the whole call: reductions, starts, every solve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from eqsat_dnn.extract.base import EGraph, Extraction, ExtractionStatus, ExtractionStop, known_program
from eqsat_dnn.extract.greedy import GreedyExtractor
from eqsat_dnn.extract.ilp.cycles import _Compressed, _CutPool
from eqsat_dnn.extract.ilp.highs import quiet_solver_output
from eqsat_dnn.extract.ilp.incumbent import TOL, _Best
from eqsat_dnn.extract.ilp.lns import search as _lns_search
from eqsat_dnn.extract.ilp.model import _Model
from eqsat_dnn.extract.ilp.reduce import ReductionStats, _Reduced, _reduce
from eqsat_dnn.extract.ilp.worker import _FullSolve


@dataclass
class ILPInfo:
    """Diagnostics of one :meth:`ILPExtractor.extract` call: sizes after reduction, phases,
    timings. ``None`` where the call did not get that far."""

    rounds: int = 0
    """Whole-program solves started (more than one when a cyclic optimum was cut and re-solved)."""
    cuts: int = 0
    """Cycle cuts in the pool after the last whole-program solve."""
    greedy_cost: float | None = None
    initial_cost: float | None = None
    """DAG cost of the known program given as ``initial``, when it is a valid program."""
    reduction: ReductionStats | None = None
    start_cost: float | None = None
    """Cost of the best starting program (greedy, its variants, ``initial``)."""
    prepare_seconds: float | None = None
    upfront_cuts: int | None = None
    model_columns: int | None = None
    model_rows: int | None = None
    build_seconds: float | None = None
    mode: Literal["sequential", "concurrent"] | None = None
    """``sequential``: solved here; ``concurrent``: a child process beside the neighbourhood search."""
    errors: list[str] = field(default_factory=list)
    """Solver failures, one line each (the answer is then the best found before)."""
    lns_iterations: int | None = None
    lns_improvements: int | None = None
    lns_timeouts: int | None = None
    lns_final_size: int | None = None
    seconds: float | None = None
    bound: float | None = None
    status: ExtractionStatus | None = None
    stop_reason: ExtractionStop | None = None
    trajectory: list[tuple[float, float]] = field(default_factory=list)
    """(seconds, cost) of each better program found."""


@dataclass
class _Call:
    """The state of one extraction (the extractor itself holds its options only)."""

    egraph: EGraph
    start: float
    deadline: float
    reserve: float
    """Seconds kept back from the solvers for collecting and checking their answers."""
    info: ILPInfo
    best: _Best
    red: _Reduced | None = None
    comp: _Compressed | None = None
    cuts: _CutPool | None = None
    model: _Model | None = None
    target: float | None = None
    """The cost the caller needs beaten: a bound at or above it ends the search."""

    def hopeless(self, bound: float | None) -> bool:
        """Whether ``bound`` proves that no program beats :attr:`target`."""
        return self.target is not None and bound is not None and bound >= self.target - TOL

    def remaining(self) -> float:
        """Seconds the solvers still have."""
        return self.deadline - time.perf_counter() - self.reserve

    def harvest(self, solutions: list[np.ndarray]) -> tuple[int, bool]:
        """Offer every solution; cut the cycles of cyclic ones. -> (new cuts, last was cyclic)"""
        red, comp, cuts, best = self.red, self.comp, self.cuts, self.best
        new_cuts = 0
        last_cyclic = False
        for k, sol in enumerate(solutions):
            chosen = red.choices_from_vector(sol)
            cycles = comp.cycles_of(chosen)
            last_cyclic = bool(cycles)
            if not cycles:
                best.offer(self.egraph, red, chosen)
                continue
            for cycle in cycles:
                new_cuts += cuts.add(cycle)
            if k >= len(solutions) - 2:  # repair the best cyclic ones
                repaired = red.repair(chosen)
                if repaired is not None:
                    best.offer(self.egraph, red, repaired)
        return new_cuts, last_cyclic

    def note_error(self, where: str, exc: BaseException) -> None:
        self.info.errors.append(f"{where}: {type(exc).__name__}: {exc}")


class ILPExtractor:
    """DAG-cost-optimal extraction by 0-1 programming (cvxpy + HiGHS).

    The answer is never worse than the bottom-up greedy program and is always
    complete and acyclic; ``status`` is ``optimal`` (proven within
    ``mip_rel_gap``), ``feasible`` (better than greedy, not proven) or
    ``greedy``; ``bound`` is a valid lower bound on the optimal DAG cost.
    An interrupt (Ctrl-C) anywhere in the call, the child solver process
    included, ends it with ``KeyboardInterrupt`` and no solver left running.

    Args:
        time_limit: wall-clock seconds for the whole call (the first call in a
            process also pays cvxpy's import, about a second, inside it).
        mip_rel_gap: relative optimality gap at which HiGHS stops.
        cycle_length: cycles of up to this many choice classes are cut up front.
        max_upfront_cuts: cap on those cuts.
        order: ordering constraints on the cyclic components (every integer
            solution acyclic); without them cycles are only cut lazily.
        lns: run the large-neighbourhood search.
        lns_solve_limit: seconds per neighbourhood sub-program.
        isolate_above: programs with more columns are solved in a child
            process beside the search; smaller ones here, in one go.
        full_solve: solve the whole program at all (off: search only).
        seeded: use the seeded cvxpy solver (MIP start, callbacks, child
            process); ``False`` uses cvxpy's stock ``"HIGHS"`` in this process
            only (which cannot interrupt HiGHS, so large e-graphs can overrun).
        highs_options: extra HiGHS options (not ``threads``: HiGHS fixes its
            thread pool at the first solve in a process).
        seed: seed of the neighbourhood choice.
        verbose: HiGHS logs, to stderr.
    """

    name = "ilp"
    active_seed_share = 0.8
    """Share of neighbourhoods grown from a class the incumbent uses (the others from any choice class)."""
    initial_size = 30
    """Choice classes in the first neighbourhood."""
    yield_gap = 0.02
    """When the whole-program solve's bound is this close (relative), the LNS mostly waits for it."""
    yield_seconds = 2.0

    def __init__(
        self,
        time_limit: float = 30.0,
        mip_rel_gap: float = 1e-4,
        *,
        cycle_length: int = 2,
        max_upfront_cuts: int = 20000,
        order: bool = True,
        lns: bool = True,
        lns_solve_limit: float = 2.0,
        isolate_above: int = 1000,
        full_solve: bool = True,
        seeded: bool = True,
        highs_options: dict | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        if not time_limit > 0:
            raise ValueError("time_limit must be positive")
        if not mip_rel_gap >= 0:
            raise ValueError("mip_rel_gap must be non-negative")
        self.time_limit = float(time_limit)
        self.mip_rel_gap = float(mip_rel_gap)
        self.cycle_length = int(cycle_length)
        self.max_upfront_cuts = int(max_upfront_cuts)
        self.order = order
        self.lns = lns
        self.lns_solve_limit = float(lns_solve_limit)
        self.isolate_above = int(isolate_above)
        self.full_solve = full_solve
        self.seeded = seeded
        self.highs_options = dict(highs_options or {})
        self.seed = seed
        self.verbose = verbose
        self.last_info = ILPInfo()
        """Diagnostics of the last call (see :class:`ILPInfo`)."""

    def extract(self, egraph: EGraph, initial: dict[str, str] | None = None,
                target: float | None = None) -> Extraction:
        """The cheapest program; ``initial`` (a known program, such as the input model's) is a
        starting incumbent: the answer is never worse than it nor than greedy. Once a bound
        proves that no program costs less than ``target``, the search stops there."""
        with quiet_solver_output(to_stderr=self.verbose):
            return self._extract(egraph, initial, target)

    @staticmethod
    def reserve_for(egraph: EGraph) -> float:
        """Seconds kept back from the solvers for collecting and checking their answers."""
        return 0.15 + 5e-6 * egraph.num_nodes

    def proven(self, cost: float, bound: float) -> bool:
        """Whether ``bound`` proves ``cost`` optimal within ``mip_rel_gap``."""
        return cost - bound <= self.mip_rel_gap * abs(cost) + TOL

    # ------------------------------------------------------------------ driver
    def _extract(self, egraph: EGraph, initial: dict[str, str] | None = None,
                 target: float | None = None) -> Extraction:
        start = time.perf_counter()
        info = ILPInfo()
        self.last_info = info

        first = GreedyExtractor().extract(egraph)
        greedy, greedy_cost = first.choices, first.cost
        best = _Best(greedy, greedy_cost, start)
        info.greedy_cost = greedy_cost
        known = known_program(egraph, initial)
        initial = known[0] if known is not None else None
        if known is not None:
            info.initial_cost = known[1]
            if known[1] < best.cost - TOL:
                best = _Best(known[0], known[1], start)
        call = _Call(egraph, start, start + self.time_limit, self.reserve_for(egraph), info, best, target=target)
        bound = 0.0

        def finish() -> Extraction:
            return self._finish(call, greedy_cost, bound)

        deadline = call.deadline
        # Reductions cost about 30 us per node; without time for them and a
        # solve, greedy is the answer.
        if deadline - time.perf_counter() < 0.05 + 6e-5 * egraph.num_nodes:
            return finish()
        red = call.red = _reduce(egraph, deadline=start + 0.5 * self.time_limit)
        info.reduction = red.stats
        bound = red.fixed_cost  # every program pays the forced nodes
        if call.hopeless(bound):
            return finish()
        # starting programs: greedy through the reductions, greedy on the
        # reduced e-graph, and greedy with children's costs shared by parents
        candidates = [red.map_original(greedy), red.bottom_up(red.node_cost)]
        if initial is not None:
            candidates.append(red.map_original(initial))
        users = red.parent_class_counts()
        for alpha in (0.5, 0.75, 1.0):
            if deadline - time.perf_counter() < 0.25 * self.time_limit:
                break
            candidates.append(red.bottom_up(red.node_cost, [1.0 / max(1, k) ** alpha for k in users]))
        for cand in candidates:
            if cand is not None:
                best.offer(egraph, red, cand)
            if time.perf_counter() > deadline:
                break
        info.start_cost = best.cost
        info.prepare_seconds = time.perf_counter() - start
        if not red.has_choice:
            # one program is left, and every class in it is forced: its cost
            # is the fixed cost, so it is optimal
            unique = red.bottom_up(red.node_cost)
            if unique is not None:
                best.offer(egraph, red, unique)
            return finish()
        if best.reduced is None or deadline - time.perf_counter() < 0.3:
            return finish()

        comp = call.comp = _Compressed(red)
        cuts = call.cuts = _CutPool(red, comp)
        for cycle in comp.short_cycles(self.cycle_length, self.max_upfront_cuts, deadline):
            cuts.add(cycle)
        info.upfront_cuts = len(cuts.rows)
        model = call.model = _Model(red, comp, order=self.order)
        model.scale = 1000.0 / best.cost if best.cost > 0 else 1.0
        info.model_columns = model.num_cols
        info.model_rows = (
            model.A_eq.shape[0] + model.A_ub.shape[0] + (model.O_x.shape[0] if model.O_x is not None else 0)
        )
        info.build_seconds = time.perf_counter() - start

        isolate = self.seeded and self.full_solve and model.num_cols > self.isolate_above
        info.mode = "concurrent" if isolate else "sequential"
        bound = self._solve_concurrently(call, bound) if isolate else self._solve_here(call, bound)
        return finish()

    def _finish(self, call: _Call, greedy_cost: float, bound: float) -> Extraction:
        best, info = call.best, call.info
        lower = max(0.0, min(bound, best.cost))
        if best.cost - lower <= self.mip_rel_gap * abs(best.cost) + TOL:
            status = ExtractionStatus.OPTIMAL
        elif best.cost < greedy_cost - TOL:
            status = ExtractionStatus.FEASIBLE
        else:
            status = ExtractionStatus.GREEDY
        seconds = time.perf_counter() - call.start
        warning = ""
        if status == ExtractionStatus.OPTIMAL:
            reason = ExtractionStop.OPTIMAL
        elif call.hopeless(lower):
            reason = ExtractionStop.NO_GAIN
        elif info.errors:
            reason = ExtractionStop.SOLVER_ERROR
            warning = f"the ILP solver failed ({info.errors[0][:120]}); using the best program found ({status})"
        else:  # every search runs to the deadline unless it proves optimality (or cannot start for lack of time)
            reason = ExtractionStop.TIME_LIMIT
            warning = (f"ILP extraction reached its {self.time_limit:g} s time limit "
                       + ("before improving on the greedy program: falling back to the greedy program"
                          if status == ExtractionStatus.GREEDY else
                          f"unproven: using the best program found (within "
                          f"{(best.cost - lower) / best.cost if best.cost > 0 else 0.0:.1%} of optimal)"))
        info.seconds, info.bound, info.status, info.stop_reason = seconds, lower, status, reason
        info.trajectory = best.trajectory
        return Extraction(
            choices=best.choices,
            cost=best.cost,
            status=status,
            bound=lower,
            seconds=seconds,
            extractor=self.name,
            stop_reason=reason,
            warning=warning,
        )

    def _solve_here(self, call: _Call, bound: float) -> float:
        """Small programs: the whole program, solved here; re-solved while its optimum has a
        cycle (which needs ``order=False``); then the neighbourhood search. Returns ``bound``,
        a lower bound on the optimum, raised by what the solves proved."""
        info, model, cuts, best = call.info, call.model, call.cuts, call.best
        while self.full_solve:
            remaining = call.remaining()
            if remaining < 0.05:
                break
            info.rounds += 1
            try:
                result = model.solve(
                    cuts,
                    start=best.reduced,
                    time_limit=remaining,
                    mip_rel_gap=self.mip_rel_gap,
                    seeded=self.seeded,
                    deadline=call.deadline - call.reserve,
                    verbose=self.verbose,
                    highs_options=self.highs_options,
                )
            except Exception as exc:  # the answer so far (at worst greedy) stands
                call.note_error("solve", exc)
                break
            if result.bound is not None:
                bound = max(bound, result.bound)
            new_cuts, last_cyclic = call.harvest(result.solutions)
            info.cuts = len(cuts.rows)
            if not last_cyclic or result.timed_out or new_cuts == 0:
                break
        if self.lns and self.seeded and not self.proven(best.cost, bound) and not call.hopeless(bound):
            bound = max(bound, _lns_search(self, call, None))
        return bound

    def _solve_concurrently(self, call: _Call, bound: float) -> float:
        """Larger programs: the whole program in a killable child process (re-launched with
        new cuts if its optimum has a cycle) while the large-neighbourhood search runs here;
        they share incumbents. Returns ``bound``, raised by what the solves proved."""
        info, model, cuts, best = call.info, call.model, call.cuts, call.best
        full: _FullSolve | None = None
        try:
            while True:
                remaining = call.remaining()
                if remaining < 1.0:
                    break
                info.rounds += 1
                full = _FullSolve(
                    model,
                    cuts,
                    best.reduced,
                    remaining,
                    self.mip_rel_gap,
                    call.deadline - call.reserve,
                    self.verbose,
                    self.highs_options,
                )
                full.start(wait=max(0.0, call.deadline - time.perf_counter()))
                if self.lns:
                    bound = max(bound, _lns_search(self, call, full))
                # the search stops at the deadline, on a proof, on a bound past the target, or on
                # an error: in the last case the whole-program solve still has its time
                if not call.hopeless(full.bound):
                    full.finished.wait(max(0.0, call.remaining()))
                full.stop()
                full.raise_if_interrupted()
                call.harvest(full.drain())
                if full.bound is not None:
                    bound = max(bound, full.bound)
                if full.error is not None:
                    call.note_error("whole-program solve", full.error)
                    break
                if full.runner.returncode not in (0, None, -9):
                    info.errors.append(f"HiGHS child process exited with {full.runner.returncode}")
                result = full.result
                if result is None or self.proven(best.cost, bound) or call.hopeless(bound):
                    break
                new_cuts, last_cyclic = call.harvest(result.solutions)
                info.cuts = len(cuts.rows)
                if not last_cyclic or result.timed_out or new_cuts == 0:
                    break
        finally:
            if full is not None:
                full.stop()
        return bound
