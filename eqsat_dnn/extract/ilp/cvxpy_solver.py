"""The cvxpy solver interface: cvxpy's own HiGHS interface, plus a MIP start, callbacks,
a wall-clock deadline, and optionally a child process to run in.

cvxpy is the modelling layer: the program is a ``cvxpy.Problem`` (boolean and level
variables, sparse constraint matrices) solved with
``prob.solve(solver=..., time_limit=..., mip_rel_gap=...)``. cvxpy's stock ``"HIGHS"``
interface cannot hand HiGHS a starting solution (its ``warm_start`` only replays a cached
solve of the same problem object), register callbacks, or run somewhere it can be
stopped. All three matter: the start gives HiGHS the greedy cutoff from the first second,
the callbacks carry improving solutions and the bound out of a search that will be cut
short, and the deadline must hold. So :class:`_SeededHiGHS` subclasses cvxpy's HiGHS
interface (cvxpy's custom-solver mechanism) and its ``solve_via_data`` hands the same
canonical data to ``highspy`` (:mod:`~eqsat_dnn.extract.ilp.highs`) with ``setSolution``
and callbacks, here or in the child process (:mod:`~eqsat_dnn.extract.ilp.worker`).

Importing this module imports cvxpy: the rest of the extractor imports it when it solves.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import cvxpy.settings as s
import numpy as np
from cvxpy.reductions.solvers.conic_solvers.conic_solver import dims_to_solver_dict
from cvxpy.reductions.solvers.conic_solvers.highs_conif import HIGHS

from eqsat_dnn.extract.ilp.highs import _run_seeded, _sigint_deferred, _status_name


def _spec_from_data(data) -> dict:
    """cvxpy's canonical conic data (only zero and nonneg cones) as plain arrays."""
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


class _SeededHiGHS(HIGHS):
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
        deadline = self.deadline
        with _sigint_deferred() as interrupted:

            def stop(now: float) -> bool:
                return interrupted() or (deadline is not None and now > deadline)

            h = _run_seeded(spec, options, verbose, x0, col0=col0, num=self.num_record,
                            on_solution=self.on_solution, stop=stop)
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
