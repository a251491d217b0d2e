"""One local process per device: the launcher that the forward run (:mod:`.run`), training
(:mod:`.train`) and pipelined training (:mod:`.pipeline_run`) use to start their workers, wait for them and collect what each wrote."""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from typing import Any, Callable

from eqsat_dnn.errors import CheckError, InputError

MAX_RUN_PROCESSES = 64
"""The most local processes (one per device) a run starts: a mesh of thousands is planned, not run here."""


def check_run_size(devices: int) -> None:
    """:class:`InputError` for a mesh too large to run as local processes."""
    if devices > MAX_RUN_PROCESSES:
        raise InputError(f"--run starts one local process per device: a mesh of {devices:,} devices is more than "
                         f"{MAX_RUN_PROCESSES}; plan it without --run")


def device_group(plans: list, verb: str) -> tuple[int, str]:
    """The number of processes the ``plans`` share (one per device, the same for all) and the
    backend for them: NCCL when there is a GPU per process, else gloo."""
    import torch

    world = plans[0].mesh.num_devices
    if any(plan.mesh.num_devices != world for plan in plans):
        raise InputError(f"plans {verb} together must have the same number of devices")
    check_run_size(world)
    return world, "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world else "gloo"


def free_port() -> int:
    """A free TCP port on loopback for the process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def join_group(rank: int, world: int, port: int, job_path: str, backend: str) -> tuple[Any, Any]:
    """A worker's start: the job the parent pickled, and this rank's device, once it has joined the process
    group (its GPU on NCCL, the CPU on gloo)."""
    import datetime

    import torch
    import torch.distributed as dist

    with open(job_path, "rb") as f:
        job = pickle.load(f)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    return job, device


def run_ranks(worker: Callable, job: Any, world: int, backend: str, *, preload: list[str], start_method: str,
              timeout: float, prefix: str) -> list[Any]:
    """Start ``world`` processes of ``worker(rank, world, port, job_path, result_dir, backend)``
    (``job`` pickled for them to read), wait at most ``timeout`` seconds, and return what each
    rank pickled to ``rank{r}.pkl``. A failed or stuck process is a one-line :class:`CheckError`."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        job_path = os.path.join(tmp, "job.pkl")
        with open(job_path, "wb") as f:
            pickle.dump(job, f)
        if start_method == "forkserver":
            import multiprocessing

            multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
        context = mp.start_processes(worker, args=(world, free_port(), job_path, tmp, backend), nprocs=world,
                                     join=False, start_method=start_method)
        deadline = time.perf_counter() + timeout
        try:
            while not context.join(timeout=1.0):
                if time.perf_counter() > deadline:
                    raise CheckError(f"the {world} processes did not finish within {timeout:g} s")
        except mp.ProcessRaisedException as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            raise CheckError(f"a process failed: {lines[-1] if lines else exc}") from None
        except mp.ProcessExitedException as exc:
            raise CheckError(f"a process died: {exc}") from None
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
        per_rank = []
        for rank in range(world):
            with open(os.path.join(tmp, f"rank{rank}.pkl"), "rb") as f:
                per_rank.append(pickle.load(f))
    return per_rank
