"""Cycles: the compressed class graph, its strongly connected components, and cycle cuts.

Without acyclicity constraints the cheapest "program" feeds tensors to
themselves (a concat of the two halves of a split of itself costs nothing): a
plain ILP returns cyclic programs. Both the cycle cuts and the ordering
constraints (:mod:`~eqsat_dnn.extract.ilp.model`) live on a *compressed* class
graph whose vertices are the classes with a real choice: a chain of single-node
classes is forced once its head is used, so ``c -> d`` when some node ``n`` of
``c`` reaches ``d`` through single-node classes only (``reach(n)``). On the
reference e-graphs this graph's strongly connected components are small (at
most ~300 classes where the e-graph's own run to 20,000).

A cycle cut ``sum_i sum{x_n : n in c_i, c_{i+1} in reach(n)} <= k - 1`` says
that not every edge of a cycle of ``k`` choice classes is used; cuts are added
up front for short cycles (they tighten the relaxation) and lazily for the
cycles found in a solution.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from eqsat_dnn.extract.ilp.reduce import _Reduced


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

    def cycles_of(self, chosen: dict[int, int]) -> list[tuple[int, ...]]:
        """Cycles of the program ``chosen`` reaches, as compressed cycles."""
        program = self.red.reachable_lenient(chosen)
        # compressed graph of the program: multi-node classes, edges by E(n)
        adj: dict[int, list[int]] = {}
        for c, n in program.items():
            if self.is_multi[c]:
                adj[c] = [d for d in self.reach[n] if d in program]
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
