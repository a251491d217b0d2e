"""Large-neighbourhood search: exact solves of sub-programs around the incumbent.

Runs here, beside the whole-program solve in the child process (or alone, after a small
program's solve left a gap). Each step frees a connected set of choice classes, fixes
every other class to the incumbent's node, and solves that sub-program exactly.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import numpy as np

from eqsat_dnn.extract.ilp.incumbent import TOL

if TYPE_CHECKING:
    from eqsat_dnn.extract.ilp.extractor import ILPExtractor, _Call
    from eqsat_dnn.extract.ilp.worker import _FullSolve


def search(extractor: ILPExtractor, call: _Call, full: _FullSolve | None) -> float:
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
    red, comp, cuts, model, best, info = call.red, call.comp, call.cuts, call.model, call.best, call.info
    deadline, reserve, harvest = call.deadline, call.reserve, call.harvest
    rng = random.Random(extractor.seed)
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
    size = min(len(choice), extractor.initial_size)
    for counter in ("lns_iterations", "lns_improvements", "lns_timeouts"):
        if getattr(info, counter) is None:
            setattr(info, counter, 0)
    N = len(red.node_ids)
    # (no "threads" here: HiGHS fixes its thread pool at the first run in a
    # process and fails later runs that ask for another size)
    options = dict(extractor.highs_options)
    while True:
        if full is not None:
            harvest(full.drain())
            if (
                not full.finished.is_set()
                and full.bound is not None
                and best.cost - full.bound < extractor.yield_gap * best.cost
            ):
                # The whole-program solve is close to a proof: give it the
                # cores, and search here only now and then.
                full.finished.wait(
                    max(0.0, min(extractor.yield_seconds, deadline - reserve - time.perf_counter()))
                )
                harvest(full.drain())
            if full.finished.is_set():
                full.raise_if_interrupted()
                if full.proved_optimal():
                    break
                full = None  # it stopped early without a proof: carry on alone
            elif call.hopeless(full.bound):
                break  # no program can beat the caller's target: nothing left to find
        remaining = deadline - time.perf_counter() - reserve
        if remaining < 0.3:
            break
        program = best.reduced
        active = [c for c in program if c in near]
        seed = rng.choice(active) if active and rng.random() < extractor.active_seed_share else rng.choice(choice)
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
        limit = min(remaining, extractor.lns_solve_limit)
        t0 = time.perf_counter()
        before = best.cost
        try:
            result = model.solve(
                cuts,
                start=program,
                time_limit=limit,
                mip_rel_gap=extractor.mip_rel_gap,
                seeded=True,
                deadline=min(deadline - reserve, t0 + limit),
                verbose=False,
                highs_options=options,
                allowed=allowed,
            )
        except Exception as exc:  # keep what we have
            call.note_error("neighbourhood solve", exc)
            break
        spent = time.perf_counter() - t0
        info.lns_iterations += 1
        harvest(result.solutions)
        if best.cost < before - TOL:
            info.lns_improvements += 1
        if result.timed_out:
            info.lns_timeouts += 1
        if len(hood) == len(choice) and not result.timed_out and result.bound is not None:
            return result.bound  # the whole program, solved
        if not result.timed_out and spent < 0.5 * limit:
            size = min(len(choice), int(size * 1.25) + 1)
        elif result.timed_out:
            size = max(4, int(size * 0.7))
    info.lns_final_size = size
    return 0.0
