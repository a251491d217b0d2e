"""The incumbent: the best complete, acyclic program seen so far, in original and reduced terms."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from eqsat_dnn.extract.base import EGraph, dag_cost, find_cycle, reachable_choices

if TYPE_CHECKING:
    from eqsat_dnn.extract.ilp.reduce import _Reduced

TOL = 1e-9
"""Absolute cost tolerance: a program must be cheaper by more than this to count as better."""


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
        if cost >= self.reduced_cost - TOL and cost >= self.cost - TOL:
            return False
        try:
            original = reachable_choices(egraph, red.expand(program))
        except KeyError:  # incomplete after all: never accept it
            return False
        if find_cycle(egraph, original) is not None:
            return False
        cost = dag_cost(egraph, original)
        if cost < self.reduced_cost - TOL:
            self.reduced = program
            self.reduced_cost = cost
        if cost < self.cost - TOL:
            self.choices = original
            self.cost = cost
            self.trajectory.append((round(time.perf_counter() - self.start, 3), cost))
            return True
        return False
