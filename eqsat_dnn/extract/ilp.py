"""DAG-cost extraction as a 0-1 integer program, modelled in cvxpy, solved by HiGHS.

The model
---------
One binary per e-node ``x_n`` ("n is chosen"), one per e-class with a choice
``y_c`` ("c is computed"); a single-node class is active exactly when its node
is chosen, and a *forced* class (a root, or a child of every node of a forced
class) is the constant 1::

    minimise   sum_n cost_n * x_n                    every chosen node paid once
    s.t.       sum_{n in c} x_n = y_c                one node per active class
               x_n <= y_d     for each child class d of n
               y_c <= y_d     for d a child of every node of c   (lifted form)
               acyclicity     (below)

Acyclicity
----------
Without it the cheapest "program" feeds tensors to themselves (a concat of the
two halves of a split of itself costs nothing): a plain ILP returns cyclic
programs. Both the cycle cuts and the ordering constraints live on a
*compressed* class graph whose vertices are the classes with a real choice: a
chain of single-node classes is forced once its head is used, so ``c -> d``
when some node ``n`` of ``c`` reaches ``d`` through single-node classes only
(``reach(n)``). On the reference e-graphs this graph's strongly connected
components are small (at most ~300 classes where the e-graph's own run to
20,000), which is what makes the following cheap:

- ordering: a level ``t_c`` in ``[0, K-1]`` for each class of a component of
  size ``K``, and for each node ``n`` of ``c`` and ``d`` in ``reach(n)`` in the
  same component ``K x_n - t_c + t_d <= K - 1`` (``x_n = 1`` forces
  ``t_c > t_d``). Every integer solution is then acyclic, so no re-solve loop
  is needed. (Published experience with big-M orderings over *all* classes is
  that they stall; restricted to these components, with a greedy start, HiGHS
  proves bert.json and nasneta.json optimal in 7-15 s on an idle 2-core box.)
- cycle cuts ``sum_i sum{x_n : n in c_i, c_{i+1} in reach(n)} <= k - 1`` for
  every cycle of at most ``cycle_length`` choice classes are added up front
  (they tighten the relaxation), and lazily for cycles found in a solution
  (the only acyclicity constraint when ``order=False``, in which case cyclic
  optima are cut and re-solved, warm-started from the best acyclic program).

Every constraint is valid for all acyclic programs, so every dual bound HiGHS
reports is a valid lower bound on the optimal DAG cost. On e-graphs whose
rewrites form dense split/concat webs (vgg.json) that bound stays weak: the
relaxation shares fractional work around cycles.

Reductions (each keeps at least one optimal program)
----------------------------------------------------
- nodes with their own class among their children; nodes that cannot be built
  acyclically; nodes with a child class that *requires* the node's own class
  (every way of building it goes through it);
- nodes dominated by a node of the same class that costs no more and whose
  children are a subset; classes unreachable from the roots;
- single-node classes with a single parent node are merged into that parent
  (costs added, children taken over): this collapses the long forced chains of
  the tensor e-graphs (nasrnn: 57,800 nodes -> 35,000 variables, 545 choices);
- forced classes are constants; forced single-node classes are fixed.

Search, incumbent, time
-----------------------
The bottom-up greedy program (:mod:`eqsat_dnn.extract.greedy`) is computed
first; it and a few variants on the reduced e-graph (greedy, and greedy where a
child's cost is shared between the classes that use it) give the starting
incumbent, handed to HiGHS as a MIP start. The answer is never worse than
greedy: if nothing better is found, greedy comes back with status ``greedy``.

Small programs are solved here in one go. Larger ones run two searches on the
two cores until the deadline: the whole program, solved by HiGHS in a child
process (one root cut-separation round of HiGHS can run for tens of seconds
without looking at its time limit, so the child is killed at the deadline;
its improving solutions and dual bound are streamed back), and a
large-neighbourhood search here (free a connected set of choice classes, fix
the others to the incumbent, solve that sub-program exactly, grow the set
while sub-programs solve fast). Either one proving optimality ends the search.
``time_limit`` bounds the whole call: reductions, starts, every solve.

Why a small cvxpy solver subclass
---------------------------------
cvxpy is the modelling layer: the program is a ``cvxpy.Problem`` (boolean and
level variables, sparse constraint matrices) solved with
``prob.solve(solver=..., time_limit=..., mip_rel_gap=...)``. cvxpy's stock
``"HIGHS"`` interface cannot hand HiGHS a starting solution (its
``warm_start`` only replays a cached solve of the same problem object),
register callbacks, or run somewhere it can be stopped. All three matter: the
start gives HiGHS the greedy cutoff from the first second, the callbacks carry
improving solutions and the bound out of a search that will be cut short, and
the deadline must hold. So ``_SeededHiGHS`` subclasses cvxpy's own HiGHS
interface (cvxpy's custom-solver mechanism) and its ``solve_via_data`` hands
the same canonical data to ``highspy`` with ``setSolution`` and callbacks,
here or in the child process. ``ILPExtractor(seeded=False)`` uses the stock
``prob.solve(solver="HIGHS", ...)`` path instead (no start, no callbacks, no
neighbourhood search, one process; fine for small e-graphs).

HiGHS prints a banner on the C-level stdout once per process: an extraction
runs with file descriptor 1 pointed at ``/dev/null`` (stderr when
``verbose``), so callers printing JSON on stdout stay clean; anything else
written to stdout during the call is dropped too.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from eqsat_dnn.extract.base import (
    EGraph, Extraction, ExtractionStatus, ExtractionStop, dag_cost, find_cycle, known_program, reachable_choices,
)
from eqsat_dnn.extract.greedy import GreedyExtractor

_TOL = 1e-9


class ILPExtractor:
    """DAG-cost-optimal extraction by 0-1 programming (cvxpy + HiGHS).

    The answer is never worse than the bottom-up greedy program and is always
    complete and acyclic; ``status`` is ``optimal`` (proven within
    ``mip_rel_gap``), ``feasible`` (better than greedy, not proven) or
    ``greedy``; ``bound`` is a valid lower bound on the optimal DAG cost.

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
    _reserve = 0.15
    _active_seed_share = 0.8
    _initial_size = 30
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
        self.last_info: dict = {}
        """Diagnostics of the last call: sizes after reduction, phases, timings."""

    def extract(self, egraph: EGraph, initial: dict[str, str] | None = None) -> Extraction:
        """The cheapest program; ``initial`` (a known program, such as the input model's) is a
        starting incumbent: the answer is never worse than it nor than greedy."""
        with _quiet(to_stderr=self.verbose):
            return self._extract(egraph, initial)

    # ------------------------------------------------------------------ driver
    def _extract(self, egraph: EGraph, initial: dict[str, str] | None = None) -> Extraction:
        start = time.perf_counter()
        deadline = start + self.time_limit
        # kept back from the solvers for collecting and checking their answers
        self._reserve = 0.15 + 5e-6 * egraph.num_nodes
        info: dict = {"rounds": 0, "cuts": 0}
        self.last_info = info

        first = GreedyExtractor().extract(egraph)
        greedy, greedy_cost = first.choices, first.cost
        best = _Best(greedy, greedy_cost, start)
        info["greedy_cost"] = greedy_cost
        known = known_program(egraph, initial)
        initial = known[0] if known is not None else None
        if known is not None:
            info["initial_cost"] = known[1]
            if known[1] < best.cost - _TOL:
                best = _Best(known[0], known[1], start)
        bound = 0.0

        def finish() -> Extraction:
            lower = max(0.0, min(bound, best.cost))
            if best.cost - lower <= self.mip_rel_gap * abs(best.cost) + _TOL:
                status = ExtractionStatus.OPTIMAL
            elif best.cost < greedy_cost - _TOL:
                status = ExtractionStatus.FEASIBLE
            else:
                status = ExtractionStatus.GREEDY
            seconds = time.perf_counter() - start
            warning = ""
            if status == ExtractionStatus.OPTIMAL:
                reason = ExtractionStop.OPTIMAL
            elif info.get("errors"):
                reason = ExtractionStop.SOLVER_ERROR
                warning = f"the ILP solver failed ({info['errors'][0][:120]}); using the best program found ({status})"
            else:  # every search runs to the deadline unless it proves optimality (or cannot start for lack of time)
                reason = ExtractionStop.TIME_LIMIT
                warning = (f"ILP extraction reached its {self.time_limit:g} s time limit "
                           + ("before improving on the greedy program: falling back to the greedy program"
                              if status == ExtractionStatus.GREEDY else
                              f"unproven: using the best program found (within "
                              f"{(best.cost - lower) / best.cost if best.cost > 0 else 0.0:.1%} of optimal)"))
            info.update(seconds=seconds, bound=lower, status=status, trajectory=best.trajectory, stop_reason=reason)
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

        # Reductions cost about 30 us per node; without time for them and a
        # solve, greedy is the answer.
        if deadline - time.perf_counter() < 0.05 + 6e-5 * egraph.num_nodes:
            return finish()
        red = _reduce(egraph, deadline=start + 0.5 * self.time_limit)
        info.update(red.stats)
        bound = red.fixed_cost  # every program pays the forced nodes
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
        info["start_cost"] = best.cost
        info["prepare_seconds"] = time.perf_counter() - start
        if not red.has_choice:
            # one program is left, and every class in it is forced: its cost
            # is the fixed cost, so it is optimal
            unique = red.bottom_up(red.node_cost)
            if unique is not None:
                best.offer(egraph, red, unique)
            return finish()
        if best.reduced is None or deadline - time.perf_counter() < 0.3:
            return finish()

        comp = _Compressed(red)
        cuts = _CutPool(red, comp)
        for cycle in comp.short_cycles(self.cycle_length, self.max_upfront_cuts, deadline):
            cuts.add(cycle)
        info["upfront_cuts"] = len(cuts.rows)
        model = _Model(red, comp, order=self.order)
        model.scale = 1000.0 / best.cost if best.cost > 0 else 1.0
        info["model_columns"] = model.num_cols
        info["model_rows"] = (
            model.A_eq.shape[0] + model.A_ub.shape[0] + (model.O_x.shape[0] if model.O_x is not None else 0)
        )
        info["build_seconds"] = time.perf_counter() - start

        def harvest(solutions: list[np.ndarray]) -> tuple[int, bool]:
            """Offer every solution; cut the cycles of cyclic ones. -> (new cuts, last was cyclic)"""
            new_cuts = 0
            last_cyclic = False
            for k, sol in enumerate(solutions):
                chosen = red.choices_from_vector(sol)
                cycles = red.cycles(chosen, comp)
                last_cyclic = bool(cycles)
                if not cycles:
                    best.offer(egraph, red, chosen)
                    continue
                for cycle in cycles:
                    new_cuts += cuts.add(cycle)
                if k >= len(solutions) - 2:  # repair the best cyclic ones
                    repaired = red.repair(chosen)
                    if repaired is not None:
                        best.offer(egraph, red, repaired)
            return new_cuts, last_cyclic

        def note_error(where: str, exc: BaseException) -> None:
            info.setdefault("errors", []).append(f"{where}: {type(exc).__name__}: {exc}")

        isolate = self.seeded and self.full_solve and model.num_cols > self.isolate_above
        info["mode"] = "concurrent" if isolate else "sequential"
        if not isolate:
            # Small programs: the whole program, solved here; re-solved while
            # its optimum has a cycle (which needs order=False).
            while self.full_solve:
                remaining = deadline - time.perf_counter() - self._reserve
                if remaining < 0.05:
                    break
                info["rounds"] += 1
                try:
                    result = model.solve(
                        cuts,
                        start=best.reduced,
                        time_limit=remaining,
                        mip_rel_gap=self.mip_rel_gap,
                        seeded=self.seeded,
                        deadline=deadline - self._reserve,
                        verbose=self.verbose,
                        highs_options=self.highs_options,
                    )
                except Exception as exc:  # the answer so far (at worst greedy) stands
                    note_error("solve", exc)
                    break
                if result.bound is not None:
                    bound = max(bound, result.bound)
                new_cuts, last_cyclic = harvest(result.solutions)
                info["cuts"] = len(cuts.rows)
                if not last_cyclic or result.timed_out or new_cuts == 0:
                    break
            if self.lns and self.seeded and not self._proven(best, bound):
                bound = max(bound, self._lns(red, comp, cuts, model, best, deadline, info, harvest, None))
            return finish()

        # Larger programs: the whole program in a killable child process
        # (re-launched with new cuts if its optimum has a cycle) while the
        # large-neighbourhood search runs here; they share incumbents.
        full: _FullSolve | None = None
        try:
            while True:
                remaining = deadline - time.perf_counter() - self._reserve
                if remaining < 1.0:
                    break
                info["rounds"] += 1
                full = _FullSolve(
                    model,
                    cuts,
                    best.reduced,
                    remaining,
                    self.mip_rel_gap,
                    deadline - self._reserve,
                    self.verbose,
                    self.highs_options,
                )
                full.start(wait=max(0.0, deadline - time.perf_counter()))
                if self.lns:
                    bound = max(bound, self._lns(red, comp, cuts, model, best, deadline, info, harvest, full))
                # the search stops at the deadline, on a proof, or on an error: in
                # the last case the whole-program solve still has its time
                full.finished.wait(max(0.0, deadline - self._reserve - time.perf_counter()))
                full.stop()
                harvest(full.drain())
                if full.bound is not None:
                    bound = max(bound, full.bound)
                if full.error is not None:
                    note_error("whole-program solve", full.error)
                    break
                if full.runner.returncode not in (0, None, -9):
                    info.setdefault("errors", []).append(f"HiGHS child process exited with {full.runner.returncode}")
                result = full.result
                if result is None or self._proven(best, bound):
                    break
                new_cuts, last_cyclic = harvest(result.solutions)
                info["cuts"] = len(cuts.rows)
                if not last_cyclic or result.timed_out or new_cuts == 0:
                    break
        finally:
            if full is not None:
                full.stop()
        return finish()

    def _proven(self, best: _Best, bound: float) -> bool:
        return best.cost - bound <= self.mip_rel_gap * abs(best.cost) + _TOL

    def _lns(self, red, comp, cuts, model, best, deadline, info, harvest, full) -> float:
        """Large-neighbourhood search until the deadline, or until ``full`` proves optimality.

        Each step frees a connected set of choice classes (connected in the
        compressed graph, so classes that can share work end up together),
        fixes every other class to the incumbent's node (or, if unused, to its
        greedy node), and solves that sub-program exactly, starting from the
        incumbent. The set grows while sub-programs solve fast and shrinks when
        they time out; once it covers every choice class the sub-program is the
        whole program, and solving it proves optimality. Returns the lower
        bound proven that way (0 if none).
        """
        import random

        rng = random.Random(self.seed)
        choice = sorted(comp.adj)
        if not choice:
            return 0.0
        near: dict[int, set[int]] = {c: set() for c in choice}
        for c, ds in comp.adj.items():
            for d in ds:
                if d != c and d in near:
                    near[c].add(d)
                    near[d].add(c)
        default = red.bottom_up(red.node_cost) or {}
        size = min(len(choice), self._initial_size)
        info.setdefault("lns_iterations", 0)
        info.setdefault("lns_improvements", 0)
        info.setdefault("lns_timeouts", 0)
        N = len(red.node_ids)
        # (no "threads" here: HiGHS fixes its thread pool at the first run in a
        # process and fails later runs that ask for another size)
        options = dict(self.highs_options)
        while True:
            if full is not None:
                harvest(full.drain())
                if (
                    not full.finished.is_set()
                    and full.bound is not None
                    and best.cost - full.bound < self.yield_gap * best.cost
                ):
                    # The whole-program solve is close to a proof: give it the
                    # cores, and search here only now and then.
                    full.finished.wait(
                        max(0.0, min(self.yield_seconds, deadline - self._reserve - time.perf_counter()))
                    )
                    harvest(full.drain())
                if full.finished.is_set():
                    if full.proved_optimal():
                        break
                    full = None  # it stopped early without a proof: carry on alone
            remaining = deadline - time.perf_counter() - self._reserve
            if remaining < 0.3:
                break
            program = best.reduced
            active = [c for c in program if c in near]
            seed = rng.choice(active) if active and rng.random() < self._active_seed_share else rng.choice(choice)
            hood = {seed}
            frontier = [seed]
            while frontier and len(hood) < size:
                nxt = []
                for u in frontier:
                    nb = sorted(near[u] - hood)
                    rng.shuffle(nb)
                    for v in nb[: max(0, size - len(hood))]:
                        hood.add(v)
                        nxt.append(v)
                frontier = nxt
            if size >= len(choice):
                hood = set(choice)
            allowed = np.zeros(N, dtype=bool)
            for c, ns in enumerate(red.class_nodes):
                if c in hood:
                    allowed[ns] = True
                else:
                    n = program.get(c, default.get(c))
                    if n is None:
                        allowed[ns] = True
                    else:
                        allowed[n] = True
            allowed = red.reachable_nodes(allowed)
            limit = min(remaining, self.lns_solve_limit)
            t0 = time.perf_counter()
            before = best.cost
            try:
                result = model.solve(
                    cuts,
                    start=program,
                    time_limit=limit,
                    mip_rel_gap=self.mip_rel_gap,
                    seeded=True,
                    deadline=min(deadline - self._reserve, t0 + limit),
                    verbose=False,
                    highs_options=options,
                    allowed=allowed,
                )
            except Exception as exc:  # keep what we have
                info.setdefault("errors", []).append(f"neighbourhood solve: {type(exc).__name__}: {exc}")
                break
            spent = time.perf_counter() - t0
            info["lns_iterations"] += 1
            harvest(result.solutions)
            if best.cost < before - _TOL:
                info["lns_improvements"] += 1
            if result.timed_out:
                info["lns_timeouts"] += 1
            if len(hood) == len(choice) and not result.timed_out and result.bound is not None:
                return result.bound  # the whole program, solved
            if not result.timed_out and spent < 0.5 * limit:
                size = min(len(choice), int(size * 1.25) + 1)
            elif result.timed_out:
                size = max(4, int(size * 0.7))
        info["lns_final_size"] = size
        return 0.0


# ---------------------------------------------------------------- incumbent
class _Best:
    """The best acyclic program seen, in original and reduced terms."""

    def __init__(self, choices: dict[str, str], cost: float, start: float) -> None:
        self.choices = choices
        self.cost = cost
        self.reduced: dict[int, int] | None = None
        self.reduced_cost = math.inf
        self.start = start
        self.trajectory: list[tuple[float, float]] = [(round(time.perf_counter() - start, 3), cost)]

    def offer(self, egraph: EGraph, red: _Reduced, chosen: dict[int, int]) -> bool:
        """Take ``chosen`` (reduced terms) if it is complete, acyclic and cheaper.

        Returns True if the answer improved. The cheap reduced cost is checked
        first; only an improvement is expanded and checked on the e-graph.
        """
        program = red.reachable_lenient(chosen)
        if any(r not in program for r in red.roots) or red.program_incomplete(program):
            return False
        cost = math.fsum(red.node_cost[n] for n in program.values())
        if cost >= self.reduced_cost - _TOL and cost >= self.cost - _TOL:
            return False
        try:
            original = reachable_choices(egraph, red.expand(program))
        except KeyError:  # incomplete after all: never accept it
            return False
        if find_cycle(egraph, original) is not None:
            return False
        cost = dag_cost(egraph, original)
        if cost < self.reduced_cost - _TOL:
            self.reduced = program
            self.reduced_cost = cost
        if cost < self.cost - _TOL:
            self.choices = original
            self.cost = cost
            self.trajectory.append((round(time.perf_counter() - self.start, 3), cost))
            return True
        return False


# ---------------------------------------------------------------- reduction
@dataclass
class _Reduced:
    """The e-graph after reductions, indexed: nodes 0..N-1, classes 0..C-1."""

    class_ids: list[str]
    class_nodes: list[list[int]]
    node_ids: list[str]
    node_class: list[int]
    node_children: list[tuple[int, ...]]
    node_cost: list[float]
    node_members: list[tuple[tuple[str, str], ...]]
    roots: list[int]
    forced: list[bool]
    dominator: dict[str, str]
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index_of_node = {nid: i for i, nid in enumerate(self.node_ids)}
        self.fixed_cost = math.fsum(
            self.node_cost[ns[0]] for c, ns in enumerate(self.class_nodes) if self.forced[c] and len(ns) == 1
        )
        self.has_choice = any(len(ns) > 1 for ns in self.class_nodes)

    # programs are dicts: class index -> node index
    def reachable(self, chosen: dict[int, int]) -> dict[int, int]:
        kept: dict[int, int] = {}
        stack = list(self.roots)
        while stack:
            c = stack.pop()
            if c in kept:
                continue
            n = chosen[c]
            kept[c] = n
            stack.extend(self.node_children[n])
        return kept

    def expand(self, program: dict[int, int]) -> dict[str, str]:
        out: dict[str, str] = {}
        for n in program.values():
            for cls, nid in self.node_members[n]:
                out[cls] = nid
        return out

    def map_original(self, choices: dict[str, str]) -> dict[int, int] | None:
        """A program of the original e-graph in reduced terms (dominated nodes replaced)."""
        out: dict[int, int] = {}
        stack = list(self.roots)
        while stack:
            c = stack.pop()
            if c in out:
                continue
            nid = choices.get(self.class_ids[c])
            seen = 0
            while nid is not None and nid not in self.index_of_node and seen < 10_000:
                nid = self.dominator.get(nid)
                seen += 1
            if nid is None or nid not in self.index_of_node:
                return None
            n = self.index_of_node[nid]
            if self.node_class[n] != c:
                return None
            out[c] = n
            stack.extend(self.node_children[n])
        return out

    def bottom_up(self, costs: list[float], share: list[float] | None = None) -> dict[int, int] | None:
        """Least tree cost per class under ``costs`` (always acyclic).

        With ``share``, a child class contributes ``share[d]`` times its tree
        cost: a guess at how many parents will split the bill.
        """
        C = len(self.class_ids)
        pending = [len(ch) for ch in self.node_children]
        parents = self.parents
        heap = [(costs[n], n) for n, ch in enumerate(self.node_children) if not ch]
        heapq.heapify(heap)
        class_cost = [math.inf] * C
        choice: dict[int, int] = {}
        while heap:
            cost, n = heapq.heappop(heap)
            c = self.node_class[n]
            if c in choice:
                continue
            class_cost[c] = cost
            choice[c] = n
            for p in parents[c]:
                pending[p] -= 1
                if pending[p] == 0:
                    if share is None:
                        total = costs[p] + math.fsum(class_cost[d] for d in self.node_children[p])
                    else:
                        total = costs[p] + math.fsum(class_cost[d] * share[d] for d in self.node_children[p])
                    heapq.heappush(heap, (total, p))
        if any(r not in choice for r in self.roots):
            return None
        return choice

    @property
    def parents(self) -> list[list[int]]:
        cached = getattr(self, "_parents", None)
        if cached is None:
            cached = [[] for _ in self.class_ids]
            for n, ch in enumerate(self.node_children):
                for d in ch:
                    cached[d].append(n)
            self._parents = cached
        return cached

    def repair(self, chosen: dict[int, int]) -> dict[int, int] | None:
        """An acyclic program close to ``chosen``: chosen nodes cost nothing bottom-up."""
        costs = list(self.node_cost)
        for n in chosen.values():
            costs[n] = 0.0
        return self.bottom_up(costs)

    def choices_from_vector(self, x: np.ndarray) -> dict[int, int]:
        chosen: dict[int, int] = {}
        for n in np.flatnonzero(x > 0.5):
            c = self.node_class[int(n)]
            if c not in chosen:
                chosen[c] = int(n)
        return chosen

    def cycles(self, chosen: dict[int, int], comp: _Compressed) -> list[tuple[int, ...]]:
        """Cycles of the program ``chosen`` reaches, as compressed cycles."""
        program = self.reachable_lenient(chosen)
        # compressed graph of the program: multi-node classes, edges by E(n)
        adj: dict[int, list[int]] = {}
        for c, n in program.items():
            if comp.is_multi[c]:
                adj[c] = [d for d in comp.reach[n] if d in program]
        sccs = _tarjan(adj)
        found: list[tuple[int, ...]] = []
        for scc in sccs:
            if len(scc) == 1:
                v = scc[0]
                if v in adj.get(v, ()):
                    found.append((v,))
                continue
            members = set(scc)
            for v in scc[:64]:
                cyc = _shortest_cycle(adj, v, members)
                if cyc:
                    found.append(cyc)
        return found

    def reachable_nodes(self, allowed: np.ndarray) -> np.ndarray:
        """``allowed`` restricted to the classes reachable from the roots through it."""
        out = np.zeros_like(allowed)
        seen = [False] * len(self.class_ids)
        stack = list(self.roots)
        while stack:
            c = stack.pop()
            if seen[c]:
                continue
            seen[c] = True
            for n in self.class_nodes[c]:
                if allowed[n]:
                    out[n] = True
                    stack.extend(self.node_children[n])
        return out

    def parent_class_counts(self) -> list[int]:
        """Per class, how many distinct classes have a node using it."""
        return [len({self.node_class[p] for p in ps}) for ps in self.parents]

    def program_incomplete(self, program: dict[int, int]) -> bool:
        return any(d not in program for n in program.values() for d in self.node_children[n])

    def reachable_lenient(self, chosen: dict[int, int]) -> dict[int, int]:
        kept: dict[int, int] = {}
        stack = list(self.roots)
        while stack:
            c = stack.pop()
            if c in kept or c not in chosen:
                continue
            n = chosen[c]
            kept[c] = n
            stack.extend(self.node_children[n])
        return kept


def _reduce(egraph: EGraph, requires_budget: int = 200, max_passes: int = 3, deadline: float = math.inf) -> _Reduced:
    """Apply the reductions (see the module docstring); later passes are skipped past ``deadline``."""
    ncls: dict[str, str] = {}
    nch: dict[str, frozenset[str]] = {}
    ncost: dict[str, float] = {}
    nmem: dict[str, tuple[tuple[str, str], ...]] = {}
    for nid, node in egraph.nodes.items():
        ncls[nid] = node.eclass
        nch[nid] = frozenset(node.children)
        ncost[nid] = node.cost
        nmem[nid] = ((node.eclass, nid),)
    cnodes: dict[str, set[str]] = {c: set(ns) for c, ns in egraph.classes.items()}
    parents: dict[str, set[str]] = {c: set() for c in cnodes}
    for nid, ch in nch.items():
        for c in ch:
            parents.setdefault(c, set()).add(nid)
            cnodes.setdefault(c, set())
    roots = list(dict.fromkeys(egraph.roots))
    root_set = set(roots)
    alive = set(ncls)
    dominator: dict[str, str] = {}
    stats = {"nodes_in": len(ncls), "classes_in": len(egraph.classes)}
    removed = {"self_loop": 0, "unbuildable": 0, "unreachable": 0, "dominated": 0, "requires": 0, "merged": 0}

    def kill(n: str) -> None:
        alive.discard(n)
        cnodes[ncls[n]].discard(n)
        for c in nch[n]:
            parents[c].discard(n)

    for n in list(alive):
        if ncls[n] in nch[n]:
            kill(n)
            removed["self_loop"] += 1

    def prune() -> set[str]:
        """Drop unbuildable nodes, then unreachable classes; return the reachable classes."""
        pending = {n: len(nch[n]) for n in alive}
        ready = [n for n in alive if not nch[n]]
        built: set[str] = set()
        while ready:
            n = ready.pop()
            c = ncls[n]
            if c in built:
                continue
            built.add(c)
            for p in parents[c]:
                pending[p] -= 1
                if pending[p] == 0:
                    ready.append(p)
        for n in [n for n in alive if pending[n] != 0]:
            kill(n)
            removed["unbuildable"] += 1
        if any(r not in built for r in roots):
            raise ValueError("no finite program for the root classes")
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            for n in cnodes[c]:
                stack.extend(nch[n])
        for c in list(cnodes):
            if c not in seen and cnodes[c]:
                for n in list(cnodes[c]):
                    kill(n)
                    removed["unreachable"] += 1
        return seen

    for pass_number in range(max_passes):
        if pass_number and time.perf_counter() > deadline:
            break
        before = (len(alive), removed["merged"])
        seen = prune()
        # -- dominance within a class
        for c in seen:
            members = cnodes[c]
            if len(members) < 2:
                continue
            order = sorted(members, key=lambda n: (ncost[n], len(nch[n]), n))
            kept: list[str] = []
            for n in order:
                dom = None
                for k in kept:
                    if ncost[k] <= ncost[n] and nch[k] <= nch[n]:
                        dom = k
                        break
                if dom is None:
                    kept.append(n)
                else:
                    dominator[n] = dom
                    kill(n)
                    removed["dominated"] += 1
        # -- merge single-node classes with a single parent node into that
        #    parent ("host"), whole chains at once
        mergeable: dict[str, str] = {}
        for d in seen:
            members = cnodes[d]
            if d in root_set or len(members) != 1 or len(parents[d]) != 1:
                continue
            (m,) = members
            (p,) = parents[d]
            if p != m and ncls[p] != d:
                mergeable[d] = m
        if mergeable:
            hosts = {p for d in mergeable for p in parents[d] if ncls[p] not in mergeable}
            for host in hosts:
                if host not in alive:
                    continue
                kids: set[str] = set()
                members_acc = list(nmem[host])
                cost_acc = ncost[host]
                absorbed: list[str] = []
                stack = list(nch[host])
                visited: set[str] = set()
                while stack:
                    d = stack.pop()
                    if d in visited:
                        continue
                    visited.add(d)
                    m = mergeable.get(d)
                    if m is None or m not in alive:
                        kids.add(d)
                        continue
                    absorbed.append(m)
                    members_acc.extend(nmem[m])
                    cost_acc += ncost[m]
                    stack.extend(nch[m])
                if not absorbed:
                    continue
                for e in nch[host]:
                    parents[e].discard(host)
                for m in absorbed:
                    for e in nch[m]:
                        parents[e].discard(m)
                    alive.discard(m)
                    cnodes[ncls[m]] = set()
                    removed["merged"] += 1
                nch[host] = frozenset(kids)
                for e in kids:
                    parents[e].add(host)
                ncost[host] = cost_acc
                nmem[host] = tuple(members_acc)
                if ncls[host] in kids:
                    kill(host)
                    removed["self_loop"] += 1
        # -- nodes whose child requires their own class
        for x in list(seen):
            if len(cnodes[x]) < 2:
                continue
            req_classes = {x}
            req_nodes: set[str] = set()
            queue = [x]
            budget = requires_budget
            while queue and budget > 0:
                c = queue.pop()
                budget -= 1
                for p in parents[c]:
                    if p in req_nodes:
                        continue
                    req_nodes.add(p)
                    pc = ncls[p]
                    if pc in req_classes:
                        continue
                    if all(k in req_nodes for k in cnodes[pc]):
                        req_classes.add(pc)
                        queue.append(pc)
            for n in list(cnodes[x]):
                if nch[n] & req_classes:
                    kill(n)
                    removed["requires"] += 1
        if (len(alive), removed["merged"]) == before:
            break

    seen = prune()  # the last pass's removals may have left unbuildable nodes behind
    class_ids = [c for c in cnodes if cnodes[c] and c in seen]
    cidx = {c: i for i, c in enumerate(class_ids)}
    node_ids: list[str] = []
    class_nodes: list[list[int]] = []
    for c in class_ids:
        lst = []
        for n in sorted(cnodes[c]):
            lst.append(len(node_ids))
            node_ids.append(n)
        class_nodes.append(lst)
    node_class = [cidx[ncls[n]] for n in node_ids]
    node_children = [tuple(sorted(cidx[d] for d in nch[n])) for n in node_ids]
    node_cost = [ncost[n] for n in node_ids]
    node_members = [nmem[n] for n in node_ids]
    root_idx = [cidx[r] for r in roots]
    # forced classes: roots, and children common to every node of a forced class
    forced = [False] * len(class_ids)
    stack = list(root_idx)
    while stack:
        c = stack.pop()
        if forced[c]:
            continue
        forced[c] = True
        common: set[int] | None = None
        for n in class_nodes[c]:
            ch = set(node_children[n])
            common = ch if common is None else common & ch
        stack.extend(common or ())
    stats.update(
        nodes=len(node_ids),
        classes=len(class_ids),
        choice_classes=sum(1 for ns in class_nodes if len(ns) > 1),
        forced_classes=sum(forced),
        removed=removed,
    )
    return _Reduced(
        class_ids=class_ids,
        class_nodes=class_nodes,
        node_ids=node_ids,
        node_class=node_class,
        node_children=node_children,
        node_cost=node_cost,
        node_members=node_members,
        roots=root_idx,
        forced=forced,
        dominator=dominator,
        stats=stats,
    )


# ------------------------------------------------------------ cycle handling
class _Compressed:
    """The class graph restricted to classes with a choice.

    ``reach[n]``: the choice classes node ``n`` reaches through single-node
    classes only (using ``n`` forces that whole chain).
    """

    def __init__(self, red: _Reduced) -> None:
        self.red = red
        C = len(red.class_ids)
        self.is_multi = [len(ns) > 1 for ns in red.class_nodes]
        through: list[frozenset[int] | None] = [None] * C
        # F(d) for single-node classes, iteratively (post-order)
        for start in range(C):
            if self.is_multi[start] or through[start] is not None:
                continue
            stack = [(start, False)]
            while stack:
                d, expanded = stack.pop()
                if through[d] is not None:
                    continue
                node = red.class_nodes[d][0]
                kids = red.node_children[node]
                if not expanded:
                    stack.append((d, True))
                    for e in kids:
                        if not self.is_multi[e] and through[e] is None:
                            stack.append((e, False))
                    continue
                acc: set[int] = set()
                for e in kids:
                    if self.is_multi[e]:
                        acc.add(e)
                    else:
                        sub = through[e]
                        if sub:  # None only on a single-node cycle (cannot happen after reduction)
                            acc |= sub
                through[d] = frozenset(acc)
        self.reach: list[frozenset[int]] = []
        for n, kids in enumerate(red.node_children):
            acc = set()
            for e in kids:
                if self.is_multi[e]:
                    acc.add(e)
                else:
                    acc |= through[e] or frozenset()
            self.reach.append(frozenset(acc))
        self.adj: dict[int, set[int]] = {}
        for c, ns in enumerate(red.class_nodes):
            if self.is_multi[c]:
                acc = set()
                for n in ns:
                    acc |= self.reach[n]
                self.adj[c] = acc

    def short_cycles(self, max_len: int, max_count: int, deadline: float):
        """Simple cycles with at most ``max_len`` choice classes (bounded DFS)."""
        if max_len <= 0:
            return
        adj = {c: sorted(ds) for c, ds in self.adj.items()}
        comp_of: dict[int, int] = {}
        for i, scc in enumerate(_tarjan(adj)):
            for v in scc:
                comp_of[v] = i
        count = 0
        for s in sorted(adj):
            if time.perf_counter() > deadline:
                return
            sc = comp_of[s]
            path = [s]
            on_path = {s}
            iters = [iter(adj[s])]
            while iters:
                nxt = next(iters[-1], None)
                if nxt is None:
                    iters.pop()
                    on_path.discard(path.pop())
                    continue
                if nxt == s:
                    yield tuple(path)
                    count += 1
                    if count >= max_count:
                        return
                    continue
                if nxt < s or nxt in on_path or comp_of.get(nxt) != sc or len(path) >= max_len:
                    continue
                path.append(nxt)
                on_path.add(nxt)
                iters.append(iter(adj[nxt]))


class _CutPool:
    """Cycle cuts as sparse rows over the node variables."""

    def __init__(self, red: _Reduced, comp: _Compressed) -> None:
        self.red = red
        self.comp = comp
        self.seen: set[tuple[int, ...]] = set()
        self._matrix: tuple[sp.csr_matrix, np.ndarray] | None = None
        self.rows: list[tuple[list[int], float]] = []

    def add(self, cycle: tuple[int, ...]) -> int:
        k = len(cycle)
        i = cycle.index(min(cycle))
        key = cycle[i:] + cycle[:i]
        if key in self.seen:
            return 0
        self.seen.add(key)
        cols: list[int] = []
        for j, c in enumerate(key):
            nxt = key[(j + 1) % k]
            for n in self.red.class_nodes[c]:
                if nxt in self.comp.reach[n]:
                    cols.append(n)
        self.rows.append((cols, float(k - 1)))
        self._matrix = None
        return 1

    def matrix(self, num_cols: int) -> tuple[sp.csr_matrix, np.ndarray]:
        if getattr(self, "_matrix", None) is None:
            r: list[int] = []
            c: list[int] = []
            for i, (cols, _) in enumerate(self.rows):
                r.extend([i] * len(cols))
                c.extend(cols)
            G = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(self.rows), num_cols))
            self._matrix = (G, np.array([k for _, k in self.rows], dtype=float))
        return self._matrix


def _tarjan(adj: dict[int, list[int] | set[int]]) -> list[list[int]]:
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in adj:
        if root in index:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(adj.get(root, ())))]
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in adj:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adj.get(w, ()))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def _shortest_cycle(adj: dict[int, list[int]], v: int, members: set[int]) -> tuple[int, ...] | None:
    prev: dict[int, int] = {v: -1}
    frontier = [v]
    while frontier:
        nxt_frontier = []
        for u in frontier:
            for w in adj.get(u, ()):
                if w == v:
                    path = [u]
                    while prev[path[-1]] != -1:
                        path.append(prev[path[-1]])
                    return tuple(reversed(path))
                if w in members and w not in prev:
                    prev[w] = u
                    nxt_frontier.append(w)
        frontier = nxt_frontier
    return None


# --------------------------------------------------------------- the model
@dataclass
class _SolveResult:
    solutions: list[np.ndarray]
    bound: float | None
    timed_out: bool
    status: str


class _Model:
    """The static part of the program as sparse matrices; cuts appended per solve."""

    def __init__(self, red: _Reduced, comp: _Compressed, order: bool = True) -> None:
        self.red = red
        self.comp = comp
        N = len(red.node_ids)
        col_of_class: list[int] = [-1] * len(red.class_ids)  # -1: forced (constant 1)
        y_count = 0
        for c, ns in enumerate(red.class_nodes):
            if red.forced[c]:
                continue
            if len(ns) == 1:
                col_of_class[c] = ns[0]
            else:
                col_of_class[c] = N + y_count
                y_count += 1
        self.col_of_class = col_of_class
        self.num_cols = N + y_count
        self.y_class = np.array([c for c, col in enumerate(col_of_class) if col >= N], dtype=np.int64)
        self.node_class_array = np.array(red.node_class, dtype=np.int64)
        lb = np.zeros(self.num_cols)
        ub = np.ones(self.num_cols)
        eq_r: list[int] = []
        eq_c: list[int] = []
        eq_v: list[float] = []
        eq_b: list[float] = []
        ub_r: list[int] = []
        ub_c: list[int] = []
        ub_v: list[float] = []
        row = 0
        for c, ns in enumerate(red.class_nodes):
            if len(ns) == 1:
                if red.forced[c]:
                    lb[ns[0]] = 1.0
                continue
            for n in ns:
                eq_r.append(row)
                eq_c.append(n)
                eq_v.append(1.0)
            if red.forced[c]:
                eq_b.append(1.0)
            else:
                eq_r.append(row)
                eq_c.append(col_of_class[c])
                eq_v.append(-1.0)
                eq_b.append(0.0)
            row += 1
        self.A_eq = sp.csr_matrix((eq_v, (eq_r, eq_c)), shape=(row, self.num_cols))
        self.b_eq = np.array(eq_b)
        row = 0
        for c, ns in enumerate(red.class_nodes):
            common: set[int] = set(red.node_children[ns[0]])
            for n in ns[1:]:
                common &= set(red.node_children[n])
            if not red.forced[c]:
                for d in common:
                    if red.forced[d]:
                        continue
                    ub_r += [row, row]
                    ub_c += [col_of_class[c], col_of_class[d]]
                    ub_v += [1.0, -1.0]
                    row += 1
            elif common:
                pass  # forced c: its common children are forced too
            for n in ns:
                for d in red.node_children[n]:
                    if red.forced[d] or d in common:
                        continue
                    ub_r += [row, row]
                    ub_c += [n, col_of_class[d]]
                    ub_v += [1.0, -1.0]
                    row += 1
        self.A_ub = sp.csr_matrix((ub_v, (ub_r, ub_c)), shape=(row, self.num_cols))
        # a node that reaches its own class through single-node classes closes a cycle
        for c, ns in enumerate(red.class_nodes):
            if comp.is_multi[c]:
                for n in ns:
                    if c in comp.reach[n]:
                        ub[n] = 0.0
        # ordering (level) variables on the classes of the compressed graph's cycles
        self.t_index: dict[int, int] = {}
        self.scc_of: dict[int, int] = {}
        self.t_upper = np.zeros(0)
        self.O_x = self.O_t = None
        if order:
            sizes = []
            for scc in _tarjan({c: sorted(v) for c, v in comp.adj.items()}):
                if len(scc) < 2:
                    continue
                for c in scc:
                    self.scc_of[c] = len(sizes)
                    self.t_index[c] = len(self.t_index)
                sizes.append(len(scc))
            self.scc_sizes = sizes
            self.t_upper = np.array([sizes[self.scc_of[c]] - 1 for c in self.t_index], dtype=float)
            x_rows: list[int] = []
            x_cols: list[int] = []
            x_vals: list[float] = []
            t_rows: list[int] = []
            t_cols: list[int] = []
            t_vals: list[float] = []
            rhs: list[float] = []
            for c, tc in self.t_index.items():
                k = sizes[self.scc_of[c]]
                for n in red.class_nodes[c]:
                    if ub[n] == 0.0:
                        continue
                    for d in comp.reach[n]:
                        if d == c or self.scc_of.get(d) != self.scc_of[c]:
                            continue
                        # x_n = 1  =>  t_c >= t_d + 1, as  K x_n - t_c + t_d <= K - 1
                        r = len(rhs)
                        x_rows.append(r)
                        x_cols.append(n)
                        x_vals.append(float(k))
                        t_rows += [r, r]
                        t_cols += [tc, self.t_index[d]]
                        t_vals += [-1.0, 1.0]
                        rhs.append(float(k - 1))
            R = len(rhs)
            self.O_x = sp.csr_matrix((x_vals, (x_rows, x_cols)), shape=(R, self.num_cols))
            self.O_t = sp.csr_matrix((t_vals, (t_rows, t_cols)), shape=(R, len(self.t_index)))
            self.o_rhs = np.array(rhs)
        self.lb = lb
        self.ub = ub
        self.cost = np.zeros(self.num_cols)
        self.cost[:N] = red.node_cost
        self.scale = 1.0

    def start_vector(self, program: dict[int, int]) -> np.ndarray:
        z = np.zeros(self.num_cols)
        for c, n in program.items():
            z[n] = 1.0
            col = self.col_of_class[c]
            if col >= 0:
                z[col] = 1.0
        return z

    def order_vector(self, program: dict[int, int]) -> np.ndarray:
        """Levels for an acyclic ``program``: children before parents, per component."""
        t = np.zeros(len(self.t_index))
        if not self.t_index:
            return t
        reach = self.comp.reach
        active = {c for c in program if c in self.t_index}
        done: set[int] = set()
        counter: dict[int, int] = {}
        for root in active:
            if root in done:
                continue
            stack = [(root, iter([d for d in reach[program[root]] if d in active]))]
            done.add(root)
            while stack:
                c, it = stack[-1]
                d = next(it, None)
                if d is None:
                    stack.pop()
                    scc = self.scc_of[c]
                    t[self.t_index[c]] = counter.get(scc, 0)
                    counter[scc] = counter.get(scc, 0) + 1
                    continue
                if d not in done:
                    done.add(d)
                    stack.append((d, iter([e for e in reach[program[d]] if e in active])))
        return t

    def problem(self, cuts: _CutPool, allowed: np.ndarray | None = None):
        """The cvxpy problem over all nodes, or over the ``allowed`` ones (others fixed to 0)."""
        import cvxpy as cp

        N = len(self.red.node_ids)
        if allowed is None:
            keep = np.arange(self.num_cols)
        else:
            # class columns only for classes that keep a node
            has_node = np.zeros(len(self.red.class_ids), dtype=bool)
            has_node[self.node_class_array[allowed]] = True
            keep = np.concatenate([np.flatnonzero(allowed), N + np.flatnonzero(has_node[self.y_class])])

        def cols(M: sp.csr_matrix) -> sp.csr_matrix:
            return M if allowed is None else M[:, keep]

        z = cp.Variable(len(keep), boolean=True, bounds=[self.lb[keep], self.ub[keep]])
        constraints = []
        if self.A_eq.shape[0]:
            A, b = cols(self.A_eq), self.b_eq
            if allowed is not None:
                live = np.diff(A.indptr) > 0
                A, b = A[live], b[live]
            constraints.append(A @ z == b)
        if self.A_ub.shape[0]:
            A = cols(self.A_ub)
            if allowed is not None:
                # a row whose positive side was dropped says nothing; one whose
                # negative side was dropped forbids its node, and is kept
                A = A[np.asarray(A.maximum(0).sum(axis=1)).ravel() > 0]
            constraints.append(A @ z <= 0)
        if cuts.rows:
            G, rhs = cuts.matrix(self.num_cols)
            G = cols(G)
            live = np.asarray(G.sum(axis=1)).ravel() > rhs
            if live.any():
                constraints.append(G[live] @ z <= rhs[live])
        t = None
        if self.O_x is not None and self.O_x.shape[0]:
            O_x = cols(self.O_x)
            live = np.diff(O_x.indptr) > 0
            if live.any():
                t = cp.Variable(len(self.t_index), bounds=[np.zeros(len(self.t_index)), self.t_upper])
                constraints.append(O_x[live] @ z + self.O_t[live] @ t <= self.o_rhs[live])
        prob = cp.Problem(cp.Minimize((self.cost[keep] * self.scale) @ z), constraints)
        return _Program(prob=prob, z=z, t=t, keep=keep, num_nodes=int(np.count_nonzero(keep < N)), N=N)

    def start_map(self, program: _Program, start: dict[int, int] | None) -> dict | None:
        if start is None:
            return None
        out = {program.z.id: self.start_vector(start)[program.keep]}
        if program.t is not None:
            out[program.t.id] = self.order_vector(start)
        return out

    def solve(
        self,
        cuts: _CutPool,
        *,
        start: dict[int, int] | None,
        time_limit: float,
        mip_rel_gap: float,
        seeded: bool,
        deadline: float,
        verbose: bool = False,
        highs_options: dict | None = None,
        allowed: np.ndarray | None = None,
    ) -> _SolveResult:
        """Solve the program in this process (a sub-program with ``allowed``)."""
        program = self.problem(cuts, allowed)
        recorder = _Recorder()
        time_limit = min(time_limit, deadline - time.perf_counter())  # building took time too
        if time_limit < 0.01:
            return _SolveResult(solutions=[], bound=None, timed_out=True, status="not run")
        opts = _solver_options(time_limit, mip_rel_gap, highs_options)
        if seeded:
            solver = _SeededHiGHS(
                start=self.start_map(program, start),
                on_solution=recorder,
                record_var=program.z.id,
                num_record=program.num_nodes,
                deadline=deadline,
            )
            program.prob.solve(solver=solver, verbose=verbose, **opts)
        else:
            program.prob.solve(solver="HIGHS", verbose=verbose, **opts)
        return program.result(recorder.solutions, self.scale)


@dataclass
class _Program:
    """A cvxpy problem built from the model, and how to read its solution back."""

    prob: object
    z: object
    t: object
    keep: np.ndarray
    num_nodes: int
    N: int

    def full(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros(self.N)
        out[self.keep[: self.num_nodes]] = values[: self.num_nodes]
        return out

    def result(self, recorded: list[np.ndarray], scale: float) -> _SolveResult:
        stats = getattr(self.prob, "solver_stats", None)
        info = getattr(stats, "extra_stats", None) if stats is not None else None
        bound = None
        b = getattr(info, "mip_dual_bound", None)
        if b is not None and math.isfinite(b):
            bound = float(b) / scale
        solutions = [self.full(v) for v in recorded]
        if self.z.value is not None:
            solutions.append(self.full(np.asarray(self.z.value)))
        status = self.prob.status
        return _SolveResult(
            solutions=solutions, bound=bound, timed_out=status not in ("optimal", "infeasible"), status=status
        )


def _solver_options(time_limit: float, mip_rel_gap: float, extra: dict | None) -> dict:
    opts: dict = {"time_limit": max(0.01, float(time_limit)), "mip_rel_gap": float(mip_rel_gap)}
    opts.update(extra or {})
    return opts


class _Recorder:
    """Keeps every improving integer solution HiGHS reports (node columns only)."""

    def __init__(self) -> None:
        self.solutions: list[np.ndarray] = []
        self.best = math.inf

    def __call__(self, objective: float, values: np.ndarray) -> None:
        if objective < self.best - _TOL:
            self.best = objective
            self.solutions.append(values)


# ------------------------------------------------- the whole program, isolated
class _FullSolve:
    """The whole program, solved by HiGHS in a child process beside the LNS.

    HiGHS checks its time limit between phases; on the larger e-graphs one
    root cut-separation round can run for tens of seconds, so the whole-program
    solve runs in a child process that is killed at the deadline. It still goes
    through cvxpy: a thread calls ``prob.solve`` with the seeded solver in
    isolated mode, whose ``solve_via_data`` ships the canonical data to the
    child and streams back every improving solution and the dual bound.
    """

    def __init__(self, model: _Model, cuts: _CutPool, start, time_limit, mip_rel_gap, deadline, verbose, highs_options):
        import queue
        import threading

        self.model = model
        self.program = model.problem(cuts)
        self.queue: queue.Queue = queue.Queue()
        self.bound: float | None = None
        self.finished = threading.Event()
        self.result: _SolveResult | None = None
        self.error: BaseException | None = None
        self.runner = _IsolatedRun(deadline=deadline, verbose=verbose)
        opts = _solver_options(time_limit, mip_rel_gap, highs_options)
        opts.setdefault("threads", 1)
        self.solver = _SeededHiGHS(
            start=model.start_map(self.program, start),
            on_solution=self._on_solution,
            on_bound=self._on_bound,
            record_var=self.program.z.id,
            num_record=self.program.num_nodes,
            deadline=deadline,
            isolated=self.runner,
        )
        self.thread = threading.Thread(target=self._run, args=(opts, verbose), daemon=True)

    def start(self, wait: float) -> None:
        """Start, and wait (at most ``wait`` s) until cvxpy has compiled the problem."""
        self.thread.start()
        self.runner.spawned.wait(wait)

    def _on_solution(self, objective: float, values: np.ndarray) -> None:
        self.queue.put(self.program.full(values))

    def _on_bound(self, bound: float) -> None:
        if math.isfinite(bound):
            self.bound = bound / self.model.scale

    def _run(self, opts: dict, verbose: bool) -> None:
        try:
            self.program.prob.solve(solver=self.solver, verbose=verbose, **opts)
            self.result = self.program.result([], self.model.scale)
            if self.result.bound is not None:
                self.bound = self.result.bound
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.runner.spawned.set()
            self.finished.set()

    def proved_optimal(self) -> bool:
        return self.result is not None and self.result.status == "optimal"

    def drain(self) -> list[np.ndarray]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except Exception:
                return out

    def stop(self) -> None:
        self.runner.kill()
        self.thread.join()


class _IsolatedRun:
    """Runs HiGHS on canonical data in a child Python process; killable."""

    def __init__(self, deadline: float, verbose: bool) -> None:
        import threading

        self.deadline = deadline
        self.verbose = verbose
        self.proc = None
        self.lock = threading.Lock()
        self.killed = False
        self.spawned = threading.Event()
        self.returncode: int | None = None

    def kill(self) -> None:
        with self.lock:
            self.killed = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()

    def run(self, payload: dict, on_message) -> None:
        import pickle
        import subprocess
        import threading

        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        payload = dict(payload, fd=write_fd, remaining=self.deadline - time.perf_counter())
        with self.lock:
            if self.killed:
                os.close(read_fd)
                os.close(write_fd)
                self.spawned.set()
                return
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", "from eqsat_dnn.extract.ilp import _highs_worker_main as m; m()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL if not self.verbose else 2,
                    stderr=subprocess.DEVNULL if not self.verbose else None,
                    pass_fds=(write_fd,),
                    env=env,
                )
            except BaseException:
                os.close(read_fd)
                os.close(write_fd)
                self.spawned.set()
                raise
        os.close(write_fd)
        self.spawned.set()
        timer = threading.Timer(max(0.0, self.deadline - time.perf_counter()), self.kill)
        timer.daemon = True
        timer.start()
        try:
            try:
                pickle.dump(payload, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            with os.fdopen(read_fd, "rb") as pipe:
                while True:
                    try:
                        message = pickle.load(pipe)
                    except (EOFError, pickle.UnpicklingError, OSError, ValueError):
                        break
                    on_message(message)
        finally:
            timer.cancel()
            self.kill()
            self.returncode = self.proc.wait()


def _highs_worker_main() -> None:
    """Entry point of the child process: solve one canonical program, stream results."""
    import pickle
    import signal

    try:  # Linux: die with the parent thread that started us
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    payload = pickle.load(sys.stdin.buffer)
    out = os.fdopen(payload["fd"], "wb")
    broken = [False]

    def send(message) -> None:
        try:
            pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        except OSError:  # the parent is gone or stopped listening
            broken[0] = True

    local_deadline = time.perf_counter() + payload["remaining"]
    h = _build_highs(payload["spec"], payload["options"], payload["verbose"])
    if payload["start"] is not None:
        _set_start(h, payload["start"])
    col0, num = payload["record"]
    last_bound = [0.0]

    def improving(event) -> None:
        values = np.asarray(event.data_out.mip_solution)[col0 : col0 + num]
        send(("sol", float(event.data_out.objective_function_value), np.flatnonzero(values > 0.5).astype(np.int32)))

    def interrupt(event) -> None:
        now = time.perf_counter()
        if now - last_bound[0] > 0.5:
            last_bound[0] = now
            send(("bound", float(event.data_out.mip_dual_bound)))
        if now > local_deadline or broken[0]:
            event.interrupt()

    h.cbMipImprovingSolution.subscribe(improving)
    h.cbMipInterrupt.subscribe(interrupt)
    h.run()
    info = h.getInfo()
    send(
        (
            "done",
            _status_name(h),
            {
                "objective_function_value": info.objective_function_value,
                "mip_dual_bound": info.mip_dual_bound,
                "mip_gap": info.mip_gap,
            },
            np.asarray(h.getSolution().col_value),
            h.getRunTime(),
        )
    )
    try:
        out.close()
    except OSError:
        pass


# ------------------------------------------------------ cvxpy solver subclass
def _spec_from_data(data) -> dict:
    """cvxpy's canonical conic data (only zero and nonneg cones) as plain arrays."""
    import cvxpy.settings as s
    from cvxpy.reductions.solvers.conic_solvers.conic_solver import dims_to_solver_dict

    dims = dims_to_solver_dict(data[s.DIMS])
    A = data[s.A].tocsc()
    b = np.asarray(data[s.B], dtype=float)
    n_eq = dims[s.EQ_DIM]
    n_leq = dims[s.LEQ_DIM]
    if n_eq + n_leq != A.shape[0]:
        raise ValueError("only linear constraints are supported")
    lb = data[s.LOWER_BOUNDS]
    ub = data[s.UPPER_BOUNDS]
    n = A.shape[1]
    col_lower = np.full(n, -np.inf) if lb is None else np.asarray(lb, dtype=float).copy()
    col_upper = np.full(n, np.inf) if ub is None else np.asarray(ub, dtype=float).copy()
    boolean = list(data[s.BOOL_IDX])
    if boolean:
        mask = np.array(boolean, dtype=int)
        col_lower[mask] = np.maximum(col_lower[mask], 0)
        col_upper[mask] = np.minimum(col_upper[mask], 1)
    return {
        "c": np.asarray(data[s.C], dtype=float),
        "indptr": A.indptr,
        "indices": A.indices,
        "values": A.data,
        "shape": A.shape,
        "row_lower": np.concatenate([b[:n_eq], np.full(n_leq, -np.inf)]),
        "row_upper": b,
        "col_lower": col_lower,
        "col_upper": col_upper,
        "integer": boolean + list(data[s.INT_IDX]),
    }


def _build_highs(spec: dict, options: dict, verbose: bool):
    import highspy as hp

    inf = hp.kHighsInf
    model = hp.HighsModel()
    lp = model.lp_
    lp.num_row_, lp.num_col_ = spec["shape"]
    lp.offset_ = 0
    lp.col_cost_ = spec["c"]
    lp.row_lower_ = np.where(np.isinf(spec["row_lower"]), -inf, spec["row_lower"])
    lp.row_upper_ = np.where(np.isinf(spec["row_upper"]), inf, spec["row_upper"])
    lp.col_lower_ = np.where(np.isinf(spec["col_lower"]), -inf, spec["col_lower"])
    lp.col_upper_ = np.where(np.isinf(spec["col_upper"]), inf, spec["col_upper"])
    lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
    lp.a_matrix_.start_ = spec["indptr"]
    lp.a_matrix_.index_ = spec["indices"]
    lp.a_matrix_.value_ = spec["values"]
    if spec["integer"]:
        kinds = [hp.HighsVarType.kContinuous] * lp.num_col_
        for i in spec["integer"]:
            kinds[i] = hp.HighsVarType.kInteger
        lp.integrality_ = kinds
    h = hp.Highs()
    h.setOptionValue("output_flag", bool(verbose))
    h.setOptionValue("log_to_console", bool(verbose))
    for key, value in options.items():
        if h.setOptionValue(key, value) == hp.HighsStatus.kError:
            raise ValueError(f"HiGHS rejected option {key}={value!r}")
    h.passModel(model)
    return h


def _set_start(h, x0: np.ndarray) -> None:
    import highspy as hp

    sol = hp.HighsSolution()
    sol.col_value = x0
    sol.value_valid = True
    h.setSolution(sol)


def _status_name(h) -> str:
    status = h.getModelStatus().name
    return "kTimeLimit" if status == "kInterrupt" else status  # our deadline: a time limit to cvxpy


_SEEDED_CLASS = None


def _SeededHiGHS(**kwargs):
    """An instance of cvxpy's HiGHS interface extended with a start and callbacks."""
    global _SEEDED_CLASS
    if _SEEDED_CLASS is None:
        from types import SimpleNamespace

        import cvxpy.settings as s
        from cvxpy.reductions.solvers.conic_solvers.highs_conif import HIGHS

        class SeededHiGHS(HIGHS):
            """cvxpy's HiGHS interface, plus a MIP start, solution/bound callbacks,
            a wall-clock deadline, and optionally a child process to run in."""

            def __init__(
                self,
                start=None,
                on_solution=None,
                on_bound=None,
                record_var=None,
                num_record=0,
                deadline=None,
                isolated=None,
            ):
                super().__init__()
                self.start = start
                self.on_solution = on_solution
                self.on_bound = on_bound
                self.record_var = record_var
                self.num_record = num_record
                self.deadline = deadline
                self.isolated = isolated

            def name(self):
                return "HIGHS_SEEDED"

            def solve_via_data(self, data, warm_start, verbose, solver_opts, solver_cache=None):
                spec = _spec_from_data(data)
                var_cols = data[s.PARAM_PROB].var_id_to_col
                x0 = None
                if self.start:
                    x0 = np.zeros(spec["shape"][1])
                    for var_id, values in self.start.items():
                        off = var_cols[var_id]
                        x0[off : off + len(values)] = values
                col0 = var_cols.get(self.record_var, 0) if self.record_var is not None else 0
                if self.isolated is not None:
                    return self._solve_isolated(spec, x0, dict(solver_opts), verbose, col0)
                return self._solve_here(spec, x0, dict(solver_opts), verbose, col0)

            def _solve_here(self, spec, x0, options, verbose, col0):
                h = _build_highs(spec, options, verbose)
                if x0 is not None:
                    _set_start(h, x0)
                num = self.num_record
                if self.on_solution is not None:
                    on_solution = self.on_solution

                    def improving(event):
                        values = np.array(event.data_out.mip_solution)[col0 : col0 + num]
                        on_solution(float(event.data_out.objective_function_value), values)

                    h.cbMipImprovingSolution.subscribe(improving)
                if self.deadline is not None:
                    deadline = self.deadline

                    def interrupt(event):
                        if time.perf_counter() > deadline:
                            event.interrupt()

                    h.cbMipInterrupt.subscribe(interrupt)
                h.run()
                return {
                    "solution": h.getSolution(),
                    "basis": None,
                    "info": h.getInfo(),
                    "model_status": _status_name(h),
                    "run_time": h.getRunTime(),
                }

            def _solve_isolated(self, spec, x0, options, verbose, col0):
                n = spec["shape"][1]
                state = {"best": None, "objective": math.inf, "done": None}
                num = self.num_record

                def on_message(message):
                    kind = message[0]
                    if kind == "sol":
                        _, objective, ones = message
                        values = np.zeros(num)
                        values[ones] = 1.0
                        if self.on_solution is not None:
                            self.on_solution(objective, values)
                        if objective < state["objective"]:
                            state["objective"] = objective
                            state["best"] = ones
                    elif kind == "bound":
                        if self.on_bound is not None:
                            self.on_bound(message[1])
                    elif kind == "done":
                        state["done"] = message

                payload = {
                    "spec": spec,
                    "options": options,
                    "verbose": bool(verbose),
                    "start": x0,
                    "record": (col0, num),
                }
                t0 = time.perf_counter()
                self.isolated.run(payload, on_message)
                zero_counts = {
                    "ipm_iteration_count": 0,
                    "crossover_iteration_count": 0,
                    "pdlp_iteration_count": 0,
                    "qp_iteration_count": 0,
                    "simplex_iteration_count": 0,
                }
                if state["done"] is not None:
                    _, status, info, col_value, run_time = state["done"]
                    return {
                        "solution": SimpleNamespace(col_value=col_value),
                        "basis": None,
                        "info": SimpleNamespace(**info, **zero_counts),
                        "model_status": status,
                        "run_time": run_time,
                    }
                # killed at the deadline: report the best solution streamed so far
                if state["best"] is not None or x0 is not None:
                    col_value = x0.copy() if x0 is not None else np.zeros(n)
                    if state["best"] is not None:
                        col_value[col0 : col0 + num] = 0.0
                        col_value[col0 + state["best"]] = 1.0
                        # other columns (class and level variables) are not streamed
                    objective = (
                        state["objective"] if math.isfinite(state["objective"]) else float(spec["c"] @ col_value)
                    )
                    return {
                        "solution": SimpleNamespace(col_value=col_value),
                        "basis": None,
                        "info": SimpleNamespace(
                            objective_function_value=objective,
                            mip_dual_bound=-math.inf,
                            mip_gap=math.inf,
                            **zero_counts,
                        ),
                        "model_status": "kTimeLimit",
                        "run_time": time.perf_counter() - t0,
                    }
                return {
                    "solution": None,
                    "basis": None,
                    "info": SimpleNamespace(
                        objective_function_value=math.nan, mip_dual_bound=-math.inf, mip_gap=math.inf, **zero_counts
                    ),
                    "model_status": "kNotset",
                    "run_time": time.perf_counter() - t0,
                }

        _SEEDED_CLASS = SeededHiGHS
    return _SEEDED_CLASS(**kwargs)


# --------------------------------------------------------------- quietness
@contextlib.contextmanager
def _quiet(to_stderr: bool = False):
    """Point file descriptor 1 at /dev/null (or stderr) and mute cvxpy warnings.

    HiGHS writes its banner (and, when verbose, its log) to the C-level stdout.
    Used once around a whole extraction (not reentrant across threads).
    """
    try:
        sys.stdout.flush()
    except Exception:  # pragma: no cover
        pass
    saved = None
    try:
        saved = os.dup(1)
        if to_stderr:
            os.dup2(2, 1)
        else:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
    except OSError:  # pragma: no cover - no fd 1 at all
        saved = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _flush_c_stdout()
        try:
            sys.stdout.flush()
        except Exception:  # pragma: no cover
            pass
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _flush_c_stdout() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except Exception:  # pragma: no cover
        pass
