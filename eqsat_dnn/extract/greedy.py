"""Bottom-up greedy extraction: per class the node of least tree cost.

Tree cost over-counts shared subterms, but the program it picks is always
acyclic (a node is only chosen once all its children have finite cost), and
its reported cost is the DAG cost of that program.
"""

from __future__ import annotations

import heapq
import math
import time

from eqsat_dnn.extract.base import EGraph, Extraction, ExtractionStatus, dag_cost, known_program, reachable_choices


class GreedyExtractor:
    """Each class takes its cheapest node by tree cost, computed to a fixpoint."""

    name = "greedy"

    def __init__(self, time_limit: float | None = None) -> None:
        """``time_limit`` is accepted as every registered extractor takes it; greedy does not search."""
        self.time_limit = time_limit

    def extract(self, egraph: EGraph, initial: dict[str, str] | None = None,
                target: float | None = None) -> Extraction:
        start = time.perf_counter()
        choices = greedy_choices(egraph)
        missing = [r for r in egraph.roots if r not in choices]
        if missing:
            raise ValueError(f"no finite program for root classes {missing[:3]}")
        choices = reachable_choices(egraph, choices)
        cost = dag_cost(egraph, choices)
        known = known_program(egraph, initial)
        if known is not None and known[1] < cost:
            # tree costs count shared subterms once per use, so greedy can lose to a known program
            choices, cost = known
        return Extraction(
            choices=choices,
            cost=cost,
            status=ExtractionStatus.GREEDY,
            bound=0.0,
            seconds=time.perf_counter() - start,
            extractor=self.name,
        )


def greedy_choices(egraph: EGraph) -> dict[str, str]:
    """Least-tree-cost node per class, by a Dijkstra-like sweep from the leaves.

    Runs in O(E log E): a node becomes ready once all its child classes have a
    finite cost; the first time a class is popped its cost is final.
    """
    parents: dict[str, list[str]] = {}
    pending: dict[str, int] = {}
    heap: list[tuple[float, str]] = []
    for node_id, node in egraph.nodes.items():
        unique_children = set(node.children)
        pending[node_id] = len(unique_children)
        for child in unique_children:
            parents.setdefault(child, []).append(node_id)
        if not unique_children:
            heapq.heappush(heap, (node.cost, node_id))

    class_cost: dict[str, float] = {}
    choices: dict[str, str] = {}
    while heap:
        cost, node_id = heapq.heappop(heap)
        cls = egraph.nodes[node_id].eclass
        if cls in class_cost:
            continue
        class_cost[cls] = cost
        choices[cls] = node_id
        for parent_id in parents.get(cls, ()):
            pending[parent_id] -= 1
            if pending[parent_id] == 0:
                parent = egraph.nodes[parent_id]
                total = parent.cost + math.fsum(class_cost[c] for c in set(parent.children))
                heapq.heappush(heap, (total, parent_id))
    return choices
