"""The reductions: the e-graph made smaller before it becomes a 0-1 program.

Each reduction keeps at least one optimal program:

- nodes with their own class among their children; nodes that cannot be built
  acyclically; nodes with a child class that *requires* the node's own class
  (every way of building it goes through it);
- nodes dominated by a node of the same class that costs no more and whose
  children are a subset; classes unreachable from the roots;
- single-node classes with a single parent node are merged into that parent
  (costs added, children taken over): this collapses the long forced chains of
  the tensor e-graphs (nasrnn: 57,800 nodes -> 35,000 variables, 545 choices);
- forced classes (a root, or a child of every node of a forced class) are
  constants; forced single-node classes are fixed.

:func:`_reduce` applies them; :class:`_Reduced` is the result, indexed (nodes
``0..N-1``, classes ``0..C-1``), and maps programs between it and the e-graph.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from eqsat_dnn.extract.base import EGraph


@dataclass
class ReductionStats:
    """Sizes before and after the reductions, and what each removed."""

    nodes_in: int
    classes_in: int
    nodes: int = 0
    classes: int = 0
    choice_classes: int = 0
    """Classes left with more than one node: the real choices."""
    forced_classes: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    """Nodes removed per reduction: ``self_loop``, ``unbuildable``, ``unreachable``, ``dominated``,
    ``requires``, ``merged``."""


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
    stats: ReductionStats = field(default_factory=lambda: ReductionStats(0, 0))

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
    stats = ReductionStats(nodes_in=len(ncls), classes_in=len(egraph.classes))
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
    stats.nodes = len(node_ids)
    stats.classes = len(class_ids)
    stats.choice_classes = sum(1 for ns in class_nodes if len(ns) > 1)
    stats.forced_classes = sum(forced)
    stats.removed = removed
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
