"""The partitioning ILP (cvxpy + HiGHS), after Alpa's intra-operator pass.

Variables: one binary ``x[i, c]`` per item and choice (each item takes exactly one;
``X[s]`` below sums a producer's choices that produce placement ``s``, ``Z_c[k]`` a
consumer's choices that read the tensor as ``k``), and continuous ones per edge:

* for every consumer ``c`` of a tensor, a transport ``e_c[s, k] >= 0`` with row sums
  ``X[s]`` and column sums ``Z_c[k]`` (Alpa's edge variables, linearising the product
  of the two choices exactly: with binary ``x`` the only non-zero entry is
  ``e_c[chosen s, chosen k] = 1``, and the LP relaxation stays tight);
* a tensor with one consumer is priced on ``e`` directly; one with several gets shared
  conversion variables ``f[s, d] >= sum_k e_c[s, k]`` over the keys reading ``d``, for
  every consumer, priced once: a conversion several consumers need is paid once,
  as the executor performs it once.

Keys are the placement read plus, in training, the mesh axes along which the
consumer leaves a partial gradient, priced by
:meth:`~eqsat_dnn.partition.problem.PartitionProblem.backward_steps`. A producer's side is keyed
by the placement it writes and where the tensor's gradient goes (a ZeRO-2 weight's to its sharded
state: a reduce-scatter where data parallelism all-reduces), so ZeRO-1/2 are weight choices like
placements (:mod:`eqsat_dnn.partition.zero`), their update all-gathers priced on the choice.

Two exact reductions: when memory cannot bind, an input or weight read by a single
consumer is folded into that consumer (its choices are charged the cheapest source
placement; the source takes it afterwards), which removes the weights' fractional
mixing from the relaxation; and a tensor whose every conversion is free gets no edge variables.

Tied items (:attr:`~eqsat_dnn.partition.problem.Item.tied`: an op or weight of a repeated layer
and its counterparts in the other copies) share one set of ``x`` columns; tensors whose producer
and consumers share columns (the same tensor in every copy) share one transport, priced times their
number. A 32-layer stack's ILP is thus about one layer's plus the glue.

Memory: the weights as placed plus, in inference, a ``peak`` variable at least
every node's working set; in training, weights, gradients, optimizer state, activations and the
weight blocks gathered for use (held until backward: on the edge variables of their conversion);
bounded by the device memory. The constraint is left out when even the
all-replicated plan fits.

The objective is :meth:`~eqsat_dnn.partition.problem.PartitionProblem.evaluate`'s
time, in microseconds. HiGHS runs under a time limit; a timed-out solve keeps its
best solution (status ``time_limit``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp

from eqsat_dnn.errors import InputError
from eqsat_dnn.extract.ilp.highs import quiet_solver_output
from eqsat_dnn.partition.problem import PartitionProblem

_SCALE = 1e6
"""Seconds -> microseconds in the objective (HiGHS tolerances are absolute)."""
_GIB = float(1 << 30)


class SolveStatus(StrEnum):
    """How the partitioning ILP ended (a string enum: it prints and serialises as its text)."""

    OPTIMAL = "optimal"
    """Proven within ``mip_rel_gap``."""
    TIME_LIMIT = "time limit"
    """Stopped by the time limit: the best plan found, not proven optimal."""
    INFEASIBLE = "infeasible"
    """No plan fits (the memory bound)."""
    SOLVER_ERROR = "solver error"
    """The solver failed, or ended in a state with no plan."""


_STATUS = {"optimal": SolveStatus.OPTIMAL, "optimal_inaccurate": SolveStatus.TIME_LIMIT,
           "user_limit": SolveStatus.TIME_LIMIT, "infeasible": SolveStatus.INFEASIBLE,
           "infeasible_inaccurate": SolveStatus.INFEASIBLE}
"""cvxpy's statuses as the plan reports them."""


@dataclass
class SolveResult:
    """What the solver found."""

    assignment: list[int] | None
    """Item index -> choice index, ``None`` when no solution was found."""
    status: SolveStatus
    seconds: float
    """Wall time of building and solving."""
    objective: float | None
    """Predicted seconds of the solution (the objective, unscaled)."""
    bound: float | None
    """HiGHS's dual bound on the optimum, seconds, when it reports one."""
    variables: int
    constraints: int
    error: str = ""
    """The solver's message, for :attr:`SolveStatus.SOLVER_ERROR`."""


class _Builder:
    """Sparse rows over ``[x | y]`` (``<=`` rows and ``==`` rows), the objective and right-hand sides."""

    def __init__(self, num_x: int) -> None:
        self.num_x = num_x
        self.num_y = 0
        self.cost_x = np.zeros(num_x)
        self.cost_y: list[float] = []
        self.memory: list[tuple[int, float]] = []
        """Training: (edge column, GiB) of the weight blocks conversions gather and keep for backward."""
        self.ub: tuple[list, list, list, list] = ([], [], [], [])
        self.eq: tuple[list, list, list, list] = ([], [], [], [])

    def new_y(self, cost: float) -> int:
        self.cost_y.append(cost)
        self.num_y += 1
        return self.num_x + self.num_y - 1

    def row(self, terms: list[tuple[int, float]], rhs: float, equal: bool = False) -> None:
        rows, cols, vals, rhss = self.eq if equal else self.ub
        r = len(rhss)
        for col, val in terms:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        rhss.append(rhs)

    def matrix(self, equal: bool):
        rows, cols, vals, rhss = self.eq if equal else self.ub
        n = self.num_x + self.num_y
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(rhss), n)), np.asarray(rhss, dtype=float)


def solve(problem: PartitionProblem, time_limit: float = 10.0, mip_rel_gap: float = 1e-4) -> SolveResult:
    """Find the cheapest assignment (see the module docstring).

    When memory cannot bind, an input or weight read by a single consumer is folded
    into it: each of the consumer's choices is charged the cheapest way to get the
    tensor stored in a placement it converts from, and the source takes that
    placement afterwards (exact: such a source has no other price)."""
    import cvxpy as cp

    start = time.perf_counter()
    items = problem.items
    tensors = problem.tensors
    train = problem.mode == "train"
    memory = _memory_terms(problem)
    absorbed: set[int] = set()
    if memory is None:
        for i, item in enumerate(items):
            if item.kind in ("input", "weight") and len(tensors[item.produces[0]].consumers) == 1:
                absorbed.add(i)
    # a tied item shares its representative's columns (both were absorbed, or neither)
    rep = [i if i in absorbed or item.tied is None or item.tied in absorbed else item.tied
           for i, item in enumerate(items)]
    first: list[int] = []
    total = 0
    for i, item in enumerate(items):
        if i in absorbed:
            first.append(-1)
        elif rep[i] != i:
            first.append(first[rep[i]])
        else:
            first.append(total)
            total += len(item.choices)
    b = _Builder(total)
    for i, item in enumerate(items):
        if i not in absorbed:
            for c, choice in enumerate(item.choices):
                b.cost_x[first[i] + c] += (problem.compute_seconds(item, choice)
                                           + problem.update_seconds(item, choice)) * _SCALE

    def key_of(name: str, choice, pos: int):
        dst = choice.consumes[pos]
        return (dst, problem.grad_axes(choice, dst)) if train and tensors[name].grad else (dst, frozenset())

    def source_price(name: str, src, key) -> float:
        """``src``: (placement produced, gradient target), see :func:`_source_key`."""
        cost = problem.forward_seconds(name, src[0], key[0])
        if train and tensors[name].grad:
            cost += problem.backward_seconds(name, src[0], key[0], key[1], src[1])
        return cost

    def groups(i: int, pos: int) -> dict:
        found: dict = {}
        for c, choice in enumerate(items[i].choices):
            found.setdefault(_source_key(problem, choice, pos), []).append(first[i] + c)
        return found

    edges: dict[tuple, list] = {}  # tensors priced alike on the same columns: one transport, times their count
    for name, info in tensors.items():
        if info.producer is None or not info.consumers:
            continue
        if info.producer[0] in absorbed:
            (c, pos), = info.consumers
            source = items[info.producer[0]]
            specs = [(_source_key(problem, ch, 0), problem.update_seconds(source, ch)) for ch in source.choices]
            for j, choice in enumerate(items[c].choices):
                key = key_of(name, choice, pos)
                b.cost_x[first[c] + j] += min(source_price(name, s, key) + u for s, u in specs) * _SCALE
            continue
        # consumers sharing columns read alike: one reader stands for them (a conversion is paid once)
        consumers = list(dict.fromkeys((rep[c], pos) for c, pos in info.consumers))
        key = (rep[info.producer[0]], info.producer[1], tuple(consumers), info.type, train and info.grad)
        if key in edges:
            edges[key][1] += 1
        else:
            edges[key] = [name, 1]
    for (producer, p_pos, consumers, _, _), (name, count) in edges.items():
        sources = groups(producer, p_pos)
        readers = []
        for c, pos in consumers:
            found: dict = {}
            for j, choice in enumerate(items[c].choices):
                found.setdefault(key_of(name, choice, pos), []).append(first[c] + j)
            readers.append(found)
        _transport(problem, b, name, sources, readers, count)

    if memory is not None:
        _memory_rows(problem, b, first, memory)
    kept = [i for i in range(len(items)) if i not in absorbed and rep[i] == i]
    for i in kept:  # one choice per item (per tied class)
        b.row([(first[i] + c, 1.0) for c in range(len(items[i].choices))], 1.0, equal=True)
    n = b.num_x + b.num_y
    a_ub, b_ub = b.matrix(equal=False)
    a_eq, b_eq = b.matrix(equal=True)
    x = cp.Variable(b.num_x, boolean=True)
    y = cp.Variable(max(b.num_y, 1), nonneg=True)  # (cvxpy wants at least one entry)

    def lhs(a):
        if not b.num_y:
            return a[:, : b.num_x] @ x
        return a[:, : b.num_x] @ x + a[:, b.num_x:] @ y

    constraints = [lhs(a_eq) == b_eq]
    if len(b_ub):
        constraints.append(lhs(a_ub) <= b_ub)
    objective = b.cost_x @ x + (np.asarray(b.cost_y) @ y if b.num_y else 0)
    prob = cp.Problem(cp.Minimize(objective), constraints)
    remaining = max(0.5, time_limit - (time.perf_counter() - start))
    try:
        # HiGHS's banner stays off stdout; cvxpy's warnings ("may be inaccurate" at every time limit) off stderr
        with quiet_solver_output():
            prob.solve(solver="HIGHS", time_limit=remaining, mip_rel_gap=mip_rel_gap)
    except cp.error.SolverError as exc:
        return SolveResult(None, SolveStatus.SOLVER_ERROR, time.perf_counter() - start, None, None, n,
                           len(b_ub) + len(b_eq), error=str(exc))
    status = _STATUS.get(str(prob.status), SolveStatus.SOLVER_ERROR)
    assignment = None
    if x.value is not None:
        values = np.asarray(x.value)
        assignment = [-1 if i in absorbed else int(np.argmax(values[first[i]:first[i] + len(items[i].choices)]))
                      for i in range(len(items))]
        for i in absorbed:
            name = items[i].produces[0]
            (c, pos), = tensors[name].consumers
            key = key_of(name, items[c].choices[assignment[c]], pos)

            def rank(s: int, i=i, name=name, key=key):
                choice = items[i].choices[s]
                price = (source_price(name, _source_key(problem, choice, 0), key)
                         + problem.update_seconds(items[i], choice))
                # ties (slicing a replicated weight is free too): store it as it is read, without ZeRO
                return (round(price * _SCALE, 9), choice.produces[0] != key[0], int(choice.zero))

            assignment[i] = min(range(len(items[i].choices)), key=rank)
    bound = None
    stats = getattr(getattr(prob, "solver_stats", None), "extra_stats", None)
    raw = getattr(stats, "mip_dual_bound", None)
    if raw is not None and np.isfinite(raw):
        bound = float(raw) / _SCALE
    objective_value = float(prob.value) / _SCALE if prob.value is not None and np.isfinite(prob.value) else None
    return SolveResult(assignment, status, time.perf_counter() - start, objective_value, bound, n, len(b_ub) + len(b_eq))


def _transport(problem: PartitionProblem, b: _Builder, name: str, sources: dict, readers: list[dict],
               count: int = 1) -> None:
    """Rows and variables of one tensor. ``sources``: (spec produced, gradient target) -> x columns
    (:func:`_source_key`); ``readers``: per consumer, key (spec read, gradient axes) -> x columns.

    Per consumer, a transport ``e[s, k]`` from the producer's choice to the consumer's (row sums
    ``X[s]``, column sums ``Z[k]``: Alpa's edge formulation, tight in the LP relaxation). A tensor with
    one consumer is priced on ``e`` directly; with several, shared conversions ``f[s, d] >= sum of
    e[s, k] over keys reading d`` (forward) and ``g[s, k] >= e[s, k]`` (backward) are priced, so a
    conversion several consumers need is paid once. ``count``: the prices of that many tensors that share
    these columns (the same tensor in every copy of a tied layer)."""
    fwd = {}
    bwd = {}
    for s in sources:
        for r in readers:
            for k in r:
                if (s, k[0]) not in fwd:
                    fwd[(s, k[0])] = count * problem.forward_seconds(name, s[0], k[0])
                if (s, k) not in bwd:
                    bwd[(s, k)] = count * (problem.backward_seconds(name, s[0], k[0], k[1], s[1])
                                   if problem.mode == "train" and problem.tensors[name].grad else 0.0)
    if all(v <= 0 for v in fwd.values()) and all(v <= 0 for v in bwd.values()):
        return
    held = {key: count * problem.held_bytes(name, key[0][0], key[1]) / _GIB for key in fwd}
    single = len(readers) == 1
    shared_f: dict = {}
    shared_b: dict = {}
    for r in readers:
        e = {}
        for s in sources:
            for k in r:
                cost = (fwd[(s, k[0])] + bwd[(s, k)]) if single else 0.0
                e[(s, k)] = b.new_y(cost * _SCALE)
                if single and held[(s, k[0])]:
                    b.memory.append((e[(s, k)], held[(s, k[0])]))
        for s, cols in sources.items():
            b.row([(e[(s, k)], 1.0) for k in r] + [(col, -1.0) for col in cols], 0.0, equal=True)
        for k, cols in r.items():
            b.row([(e[(s, k)], 1.0) for s in sources] + [(col, -1.0) for col in cols], 0.0, equal=True)
        if single:
            continue
        for s in sources:
            for d in dict.fromkeys(k[0] for k in r):
                if fwd[(s, d)] > 0:
                    if (s, d) not in shared_f:
                        shared_f[(s, d)] = b.new_y(fwd[(s, d)] * _SCALE)
                        if held[(s, d)]:
                            b.memory.append((shared_f[(s, d)], held[(s, d)]))
                    b.row([(e[(s, k)], 1.0) for k in r if k[0] == d] + [(shared_f[(s, d)], -1.0)], 0.0)
            for k in r:
                if bwd[(s, k)] > 0:
                    if (s, k) not in shared_b:
                        shared_b[(s, k)] = b.new_y(bwd[(s, k)] * _SCALE)
                    b.row([(e[(s, k)], 1.0), (shared_b[(s, k)], -1.0)], 0.0)


def _source_key(problem: PartitionProblem, choice, pos: int) -> tuple:
    """What prices a producer's choice on its tensor's edges: the placement it writes at ``pos`` and
    where that tensor's gradient goes (``None``: to that placement; a ZeRO-2 weight's: to its state)."""
    return (choice.produces[pos], problem.gradient_target(choice, pos))


def _memory_terms(problem: PartitionProblem) -> dict | None:
    """Per-choice memory in GiB when the bound can bind, ``None`` when even the all-replicated
    plan fits; an error when even the most sharded plan cannot fit."""
    items = problem.items
    limit = problem.mesh.memory_bytes / _GIB
    weights = [(i, [problem.weight_bytes(item, ch) / _GIB for ch in item.choices])
               for i, item in enumerate(items) if item.kind == "weight"]
    nodes = [(i, item) for i, item in enumerate(items) if item.kind == "node"]
    w_max = sum(max(v) for _, v in weights)
    w_min = sum(min(v) for _, v in weights)
    if problem.mode == "train":
        acts = [(i, [problem.output_bytes(item, ch) / _GIB for ch in item.choices]) for i, item in nodes]
        least = w_min + sum(min(v) for _, v in acts)
        if least > limit:
            raise InputError(f"the model cannot fit: it needs at least {least:.3g} GiB per device "
                             f"(weights, gradients, optimizer state and activations), the devices have {limit:.3g} GiB")
        if w_max + sum(max(v) for _, v in acts) <= limit:
            return None
        return {"limit": limit, "weights": weights, "activations": acts}
    ios = [(i, [problem.io_bytes(item, ch) / _GIB for ch in item.choices]) for i, item in nodes]
    peak_min = max((min(v) for _, v in ios), default=0.0)
    if w_min + peak_min > limit:
        raise InputError(f"the model cannot fit: it needs at least {w_min + peak_min:.3g} GiB per device "
                         f"(weights and the largest working set), the devices have {limit:.3g} GiB")
    if w_max + max((max(v) for _, v in ios), default=0.0) <= limit:
        return None
    return {"limit": limit, "weights": weights, "io": ios}


def _memory_rows(problem: PartitionProblem, b: _Builder, first: list[int], memory: dict) -> None:
    """The memory bound: weights plus activations (training) or plus the peak working set (inference)."""
    limit, weights = memory["limit"], memory["weights"]
    if "activations" in memory:
        b.row([(first[i] + c, v) for i, vs in weights + memory["activations"] for c, v in enumerate(vs)]
              + b.memory, limit)
        return
    peak = b.new_y(0.0)
    for i, vs in memory["io"]:
        b.row([(first[i] + c, v) for c, v in enumerate(vs)] + [(peak, -1.0)], 0.0)
    b.row([(first[i] + c, v) for i, vs in weights for c, v in enumerate(vs)] + [(peak, 1.0)], limit)


__all__ = ["SolveResult", "solve"]
