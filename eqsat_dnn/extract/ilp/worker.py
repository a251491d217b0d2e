"""The whole program in a killable child process, and the messages it sends back.

HiGHS checks its time limit between phases; on the larger e-graphs one root
cut-separation round can run for tens of seconds without looking at it, so the
whole-program solve runs in a child Python process (:func:`main`) that is killed at the
deadline. Messages, pickled on a pipe of their own: ``("sol", objective, ones)`` for each
improving solution (the node columns set to 1), ``("bound", dual bound)`` now and then,
and ``("done", status, info, col_value, run_time)`` at the end.

Interrupts: Ctrl-C reaches the child too (it is in the terminal's process group); it dies
of the signal, and :meth:`_FullSolve.raise_if_interrupted` turns that into a
``KeyboardInterrupt`` in the caller. An interrupt of the caller kills the child
(:meth:`_FullSolve.stop`, in the extractor's ``finally``).
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from eqsat_dnn.extract.ilp.highs import _run_seeded, _status_name
from eqsat_dnn.extract.ilp.model import _solver_options

if TYPE_CHECKING:
    from eqsat_dnn.extract.ilp.cycles import _CutPool
    from eqsat_dnn.extract.ilp.model import _Model, _SolveResult

WORKER_COMMAND = "from eqsat_dnn.extract.ilp.worker import main; main()"
"""What the child process runs (``python -c``)."""


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
        from eqsat_dnn.extract.ilp.cvxpy_solver import _SeededHiGHS

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

    @property
    def interrupted(self) -> bool:
        """The child process died of a SIGINT (Ctrl-C reaches the whole process group)."""
        return self.runner.returncode == -signal.SIGINT

    def raise_if_interrupted(self) -> None:
        """An interrupt of the child is the run's: ``KeyboardInterrupt`` here, in the caller."""
        if self.interrupted:
            raise KeyboardInterrupt

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
                    [sys.executable, "-c", WORKER_COMMAND],
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


def main() -> None:
    """Entry point of the child process: solve one canonical program, stream results.

    A SIGINT kills it at once (the default action, not ``KeyboardInterrupt``, which a HiGHS
    callback would turn into a failed solve); the parent sees the signal in its exit status.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
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
    col0, num = payload["record"]
    h = _run_seeded(
        payload["spec"],
        payload["options"],
        payload["verbose"],
        payload["start"],
        col0=col0,
        num=num,
        on_solution=lambda objective, values: send(("sol", objective, np.flatnonzero(values > 0.5).astype(np.int32))),
        on_bound=lambda bound: send(("bound", bound)),
        stop=lambda now: now > local_deadline or broken[0],
    )
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
