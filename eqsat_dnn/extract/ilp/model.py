"""The 0-1 program, as sparse matrices, and its solve in this process through cvxpy.

One binary per e-node ``x_n`` ("n is chosen"), one per e-class with a choice ``y_c``
("c is computed"); a single-node class is active exactly when its node is chosen, and a
*forced* class (a root, or a child of every node of a forced class) is the constant 1::

    minimise   sum_n cost_n * x_n                    every chosen node paid once
    s.t.       sum_{n in c} x_n = y_c                one node per active class
               x_n <= y_d     for each child class d of n
               y_c <= y_d     for d a child of every node of c   (lifted form)
               acyclicity     (below)

Acyclicity, on the compressed class graph (:mod:`~eqsat_dnn.extract.ilp.cycles`):

- ordering: a level ``t_c`` in ``[0, K-1]`` for each class of a strongly connected
  component of size ``K``, and for each node ``n`` of ``c`` and ``d`` in ``reach(n)`` in
  the same component ``K x_n - t_c + t_d <= K - 1`` (``x_n = 1`` forces ``t_c > t_d``).
  Every integer solution is then acyclic, so no re-solve loop is needed. (Published
  experience with big-M orderings over *all* classes is that they stall; restricted to
  these components, with a greedy start, HiGHS proves bert.json and nasneta.json optimal
  in 7-15 s on an idle 2-core box.)
- cycle cuts (:class:`~eqsat_dnn.extract.ilp.cycles._CutPool`), appended per solve: the
  only acyclicity constraint when ``order=False``, in which case cyclic optima are cut
  and re-solved, warm-started from the best acyclic program.

Every constraint is valid for all acyclic programs, so every dual bound HiGHS reports is
a valid lower bound on the optimal DAG cost. On e-graphs whose rewrites form dense
split/concat webs (vgg.json) that bound stays weak: the relaxation shares fractional work
around cycles.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from eqsat_dnn.extract.ilp.cycles import _tarjan
from eqsat_dnn.extract.ilp.incumbent import TOL

if TYPE_CHECKING:
    from eqsat_dnn.extract.ilp.cycles import _Compressed, _CutPool
    from eqsat_dnn.extract.ilp.reduce import _Reduced


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
            from eqsat_dnn.extract.ilp.cvxpy_solver import _SeededHiGHS

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
        if objective < self.best - TOL:
            self.best = objective
            self.solutions.append(values)
