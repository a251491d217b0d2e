"""HiGHS itself (highspy), below cvxpy: building a model from canonical arrays, the MIP
start, the callbacks, Ctrl-C while it runs, and its output.

Used both in this process (:mod:`~eqsat_dnn.extract.ilp.cvxpy_solver`) and in the child
solver process (:mod:`~eqsat_dnn.extract.ilp.worker`); imports neither cvxpy nor highspy
until called, so the child starts without cvxpy.

Ctrl-C: HiGHS runs Python callbacks from C++; a ``KeyboardInterrupt`` raised inside one
goes through C++, which turns it into a failed solve (and cvxpy into a ``SolverError``):
the interrupt would be lost. So while HiGHS runs in this process, :func:`_sigint_deferred`
records a SIGINT instead, the MIP callback interrupts the solve, and the signal is
delivered again once HiGHS has returned, to the handler that was there before (Python's
default: ``KeyboardInterrupt``).

HiGHS prints a banner on the C-level stdout once per process: an extraction runs inside
:func:`quiet_solver_output`, with file descriptor 1 pointed at ``/dev/null`` (stderr when ``verbose``),
so callers printing JSON on stdout stay clean; anything else written to stdout during the
call is dropped too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import warnings
from typing import Callable, Iterator

import numpy as np


# ------------------------------------------------------------------ the model
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


def _run_seeded(spec: dict, options: dict, verbose: bool, start: np.ndarray | None, **callbacks):
    """Build, seed with ``start``, subscribe ``callbacks`` (:func:`_subscribe`'s, which are passed
    the solutions' own costs) and run; returns the Highs object that ran last.

    HiGHS's MIP presolve can misprice a MIP start (1.16 on a two-layer Persimmon e-graph: the
    start, of cost 1000, priced 922.8), take it as its incumbent and call it optimal at once,
    which ends the whole-program solve with nothing found. A seeded run that ends optimal with a
    reported objective that is not its own solution's cost is therefore run again, unseeded, in the
    time left (never one that was interrupted: a deadline or Ctrl-C ends the solve).
    """
    h = _build_highs(spec, options, verbose)
    if start is not None:
        _set_start(h, start)
    _subscribe(h, cost=spec["c"], **callbacks)
    h.run()
    if start is None or h.getModelStatus().name != "kOptimal" or not _mispriced(h, spec["c"]):
        return h
    left = float(options.get("time_limit", 1e9)) - h.getRunTime()
    if left < 0.05:
        return h
    h = _build_highs(spec, dict(options, time_limit=left), verbose)
    _subscribe(h, cost=spec["c"], **callbacks)
    h.run()
    return h


def _mispriced(h, cost: np.ndarray) -> bool:
    """Whether HiGHS reports an objective its own solution does not have."""
    solution = h.getSolution()
    if not solution.value_valid:
        return False
    reported = h.getInfo().objective_function_value
    actual = float(np.dot(cost, np.asarray(solution.col_value)))
    return abs(reported - actual) > 1e-6 * max(1.0, abs(actual))


def _status_name(h) -> str:
    status = h.getModelStatus().name
    return "kTimeLimit" if status == "kInterrupt" else status  # our deadline: a time limit to cvxpy


# ------------------------------------------------------------------ callbacks
def _subscribe(
    h,
    *,
    col0: int = 0,
    num: int = 0,
    on_solution: Callable[[float, np.ndarray], None] | None = None,
    on_bound: Callable[[float], None] | None = None,
    bound_every: float = 0.5,
    stop: Callable[[float], bool] | None = None,
    cost: np.ndarray | None = None,
) -> None:
    """The MIP callbacks of a solve, here or in the child process.

    ``on_solution(objective, values)`` for every improving solution, ``values`` its columns
    ``col0 .. col0 + num`` (a copy); ``on_bound(dual bound)`` at most every ``bound_every``
    seconds; ``stop(now)`` returning true interrupts the solve (HiGHS then reports
    ``kInterrupt``, which :func:`_status_name` calls a time limit). With ``cost``, the objective
    passed on is the solution's cost, not the one HiGHS reports (see :func:`_run_seeded`).
    """
    if on_solution is not None:

        def improving(event) -> None:
            solution = np.array(event.data_out.mip_solution)
            objective = event.data_out.objective_function_value if cost is None else np.dot(cost, solution)
            on_solution(float(objective), solution[col0 : col0 + num])

        h.cbMipImprovingSolution.subscribe(improving)
    if on_bound is None and stop is None:
        return
    last_bound = [0.0]

    def interrupt(event) -> None:
        now = time.perf_counter()
        if on_bound is not None and now - last_bound[0] > bound_every:
            last_bound[0] = now
            on_bound(float(event.data_out.mip_dual_bound))
        if stop is not None and stop(now):
            event.interrupt()

    h.cbMipInterrupt.subscribe(interrupt)


# ------------------------------------------------------------------ Ctrl-C
@contextlib.contextmanager
def _sigint_deferred() -> Iterator[Callable[[], bool]]:
    """While HiGHS runs in this process: a SIGINT is recorded, not raised; yields a
    predicate, true once one arrived (the callbacks then interrupt the solve). On exit the
    signal is delivered again to the handler that was there before, so Python's handler
    raises ``KeyboardInterrupt`` right here. Outside the main thread (where Python runs
    signal handlers), or where SIGINT is ignored, it does nothing.
    """
    received: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or previous == signal.SIG_IGN:  # not ours to handle, or ignored
        yield lambda: False
        return

    def record(signum, frame) -> None:
        received.append(True)

    signal.signal(signal.SIGINT, record)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


# ------------------------------------------------------------------ quietness
@contextlib.contextmanager
def quiet_solver_output(to_stderr: bool = False):
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
