"""The ``cpu:measured`` machine: the ``cpu`` preset's figures measured on this machine.

The ``cpu`` preset's figures are nominal (a gloo link of 30 us and 3 GB/s, 20 us per collective, a
60 GFLOP/s 12 GB/s core); a plan's predicted step time then ranks plans only as well as those
figures fit. :func:`measured_figures` measures them the way a training run
(:mod:`eqsat_dnn.partition.train`) meets them: it starts as many gloo processes as the mesh has devices
(:func:`~eqsat_dnn.partition.processes.run_ranks`), each at one torch thread as training runs them, and

* times all-reduce, all-gather, reduce-scatter and all-to-all at a few message sizes, on groups of
  every size a mesh axis can have (the processes in blocks of 2, ..., all of them: 2 and 4 for 4
  processes), all groups at once as a mesh axis's lines run (per kind and size, the median of
  ``repeats`` rounds of back-to-back calls after a warm-up; the slowest rank's time, since a
  collective ends when its last rank does), fits the alpha-beta formulas of
  :mod:`eqsat_dnn.partition.collectives` to the all-reduces and all-gathers (:func:`fit_link`): a fixed
  cost per collective, a latency per link step and a bandwidth, and prices each kind's departure
  from its formula as a factor (:func:`kind_scales`: gloo reduce-scatters by all-reducing);
* times, on all processes at once (they share the cores as in training), a float32 matmul, an
  element-wise add over operands larger than the caches and a tiny element-wise op on replicated
  DTensors (as training runs ops), for the compute profile's peak FLOP/s, memory bandwidth and
  per-op overhead. Rounds last 10 ms or more, so that a process's share of oversubscribed cores
  shows in the rates: figures measured under load are that load's.

The fitted figures are cached (``partition-machine.json`` in the measured cost model's cache
directory, :func:`~eqsat_dnn.cost.measured.cache.cache_dir`), keyed by torch version, process
count and backend: a configuration is measured once. :func:`~eqsat_dnn.partition.mesh.calibrated_machine`
makes the machine of them, which ``get_mesh(shape, "cpu:measured")`` and ``eqsat-dnn partition
--machine cpu:measured`` use (this module imports no mesh: it measures and fits).
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
from dataclasses import dataclass
from typing import Any


METHOD = 3
"""Version of the measuring method; part of the cache key (a changed method measures again)."""

SIZES = (4 << 10, 64 << 10, 512 << 10, 2 << 20)
"""Message sizes timed, bytes (the ``S`` of the collective formulas)."""

FACTORS = {"all_reduce": 2.0, "all_gather": 1.0, "reduce_scatter": 1.0, "all_to_all": 1.0}
"""Each collective's multiple of the ring's ``(n-1)`` steps (as :func:`~eqsat_dnn.partition.collectives.step_seconds`)."""


@dataclass(frozen=True)
class LinkFit:
    """Fitted collective figures: ``t = overhead + f (n-1) alpha + f (n-1)/n S / bandwidth``."""

    overhead: float
    """Seconds per collective, whatever its size and the axis."""
    alpha: float
    """Seconds per ring step."""
    bandwidth: float
    """Bytes per second one process sends."""


def fit_link(samples: list[tuple[str, int, int, float]]) -> LinkFit:
    """Fit :class:`LinkFit` to ``(kind, processes n, bytes S, seconds)`` samples by non-negative least
    squares on the formula's three terms, each sample weighted by ``1 / seconds`` (relative errors: the
    small messages, which the latency terms explain, count as much as the large ones). A term the data
    cannot support comes out zero rather than negative; a zero beta term is an infinite bandwidth,
    reported as 1e15 B/s."""
    import numpy as np
    from scipy.optimize import nnls

    if len(samples) < 3:
        raise ValueError("fit_link needs at least 3 samples")
    rows, target = [], []
    for kind, n, size, seconds in samples:
        f = FACTORS[kind]
        w = 1.0 / max(seconds, 1e-12)
        rows.append([w, w * f * (n - 1), w * f * (n - 1) / n * size * 1e-9])  # beta in s/GB: a scaled column
        target.append(w * seconds)
    (overhead, alpha, beta_ns), _ = nnls(np.array(rows), np.array(target))
    return LinkFit(float(overhead), float(alpha), 1e9 / beta_ns if beta_ns > 0 else 1e15)


RING = ("all_reduce", "all_gather")
"""The collectives the link is fitted to: gloo runs them as the ring formulas say (it reduce-scatters by
all-reducing, and DTensor all-to-alls by all-gathering: :func:`kind_scales` prices those)."""


def kind_scales(samples: list[tuple[str, int, int, float]], link: LinkFit) -> dict[str, float]:
    """Per kind of collective, the geometric mean of measured over fitted time: how much slower (or
    faster) than its ring formula the backend runs it (:attr:`~eqsat_dnn.partition.mesh.DeviceMesh.collective_scale`)."""
    import math

    logs: dict[str, list[float]] = {}
    for kind, n, size, seconds in samples:
        f = FACTORS[kind]
        fitted = link.overhead + f * (n - 1) * link.alpha + f * (n - 1) / n * size / link.bandwidth
        logs.setdefault(kind, []).append(math.log(seconds / fitted))
    return {kind: math.exp(sum(v) / len(v)) for kind, v in logs.items()}


def cache_key(world: int, backend: str = "gloo") -> str:
    import torch

    return f"torch{torch.__version__}-{backend}-p{world}-m{METHOD}"


def _cache_path():
    from eqsat_dnn.cost.measured.cache import cache_dir

    return cache_dir() / "partition-machine.json"


def measured_figures(world: int = 4, *, repeats: int = 7, calls: int = 10, refresh: bool = False,
                     timeout: float = 300.0) -> dict[str, Any]:
    """The fitted figures for ``world`` gloo processes (see the module docstring), from the cache when
    measured before (``refresh`` measures again): ``overhead_s``, ``alpha_s``, ``bandwidth``
    (the link), ``flops``, ``memory_bandwidth``, ``op_overhead_s`` (the device) and the raw
    ``collectives`` and ``compute`` timings they come from."""
    path = _cache_path()
    key = cache_key(world)
    cache: dict[str, Any] = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    if key in cache and not refresh:
        return cache[key]
    from eqsat_dnn.partition.processes import check_run_size, run_ranks

    check_run_size(world)
    # every axis size a mesh of `world` devices can have (its divisors), each a link the fit must explain
    group_sizes = [n for n in range(2, world + 1) if world % n == 0]
    job = {"repeats": repeats, "calls": calls, "sizes": SIZES, "group_sizes": group_sizes}
    per_rank = run_ranks(_worker, job, world, "gloo", preload=["torch.distributed"], start_method="forkserver",
                         timeout=timeout, prefix="eqsat-dnn-calibrate-")
    # a collective ends when its slowest rank does; compute is the median process's rate
    samples = [(kind, n, size, max(r["collectives"][(kind, n, size)] for r in per_rank))
               for (kind, n, size) in per_rank[0]["collectives"]]
    link = fit_link([sample for sample in samples if sample[0] in RING])
    scale = kind_scales(samples, link)
    compute = {name: statistics.median(r["compute"][name] for r in per_rank) for name in per_rank[0]["compute"]}
    m, big = per_rank[0]["matmul_n"], per_rank[0]["add_numel"]
    entry = {"overhead_s": link.overhead, "alpha_s": link.alpha, "bandwidth": link.bandwidth, "scale": scale,
             "flops": 2.0 * m ** 3 / compute["matmul"], "memory_bandwidth": 3.0 * 4 * big / compute["add"],
             "op_overhead_s": compute["tiny"],
             "collectives": [list(s) for s in samples], "compute": compute, "processes": world}
    cache[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    return entry


def _worker(rank: int, world: int, port: int, job_path: str, result_dir: str, backend: str) -> None:
    import time

    import torch
    import torch.distributed as dist

    from eqsat_dnn.partition.processes import join_group

    torch.set_num_threads(1)  # as train.py runs its processes
    job, _ = join_group(rank, world, port, job_path, backend)
    repeats = job["repeats"]

    def timed(call, calls: int) -> float:
        # rounds of back-to-back calls, as a training step issues them (a lone call after a barrier would
        # also time the wake-up of the processes the barrier put to sleep on an oversubscribed machine)
        call()  # warm-up (first-use allocations, gloo's pairs)
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times.append((time.perf_counter() - start) / calls)
        return statistics.median(times)

    collectives: dict[tuple[str, int, int], float] = {}
    try:
        for n in job["group_sizes"]:
            # the ranks in blocks of n, each block its own group, all running at once (as a mesh axis's lines)
            groups = [dist.new_group(list(range(first, first + n))) for first in range(0, world, n)]
            group = groups[rank // n] if n < world else None
            for size in job["sizes"]:
                numel = max(n, size // 4 // n * n)  # divisible: reduce-scatter and all-to-all split it
                full, part = torch.randn(numel), torch.randn(numel // n)
                out_full, out_part, out_all = torch.empty(numel), torch.empty(numel // n), torch.empty(numel * n)
                calls = {"all_reduce": lambda: dist.all_reduce(full, group=group),
                         # S of an all-gather is the gathered result, of a reduce-scatter its input
                         "all_gather": lambda: dist.all_gather_into_tensor(out_full, part, group=group),
                         "reduce_scatter": lambda: dist.reduce_scatter_tensor(out_part, full, group=group),
                         # DTensor on CPU process groups runs an all-to-all as an all-gather of the whole
                         # buffer and a local chunk (eqsat_dnn.partition.comm_count): time what runs
                         "all_to_all": (lambda: dist.all_gather_into_tensor(out_all, full, group=group))
                         if backend == "gloo" else (lambda: dist.all_to_all_single(out_full, full, group=group))}
                for kind, call in calls.items():
                    try:
                        collectives[(kind, n, numel * 4)] = timed(call, job["calls"])
                    except RuntimeError:  # a backend without this collective: the others fit the link
                        pass
        m, big = 256, 4 << 20
        a, b = torch.randn(m, m), torch.randn(m, m)
        x, y, z = torch.randn(big), torch.randn(big), torch.empty(big)
        # an op's fixed cost as training pays it: on DTensors (sharding propagation, dispatch)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        s, t = (distribute_tensor(torch.randn(8), mesh, [Replicate()]) for _ in range(2))
        # rounds of ~10 ms or more, so that a process's share of oversubscribed cores shows in the rate
        compute = {"matmul": timed(lambda: torch.mm(a, b), 30), "add": timed(lambda: torch.add(x, y, out=z), 8),
                   "tiny": timed(lambda: torch.add(s, t), 300)}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(result_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump({"collectives": collectives, "compute": compute, "matmul_n": m, "add_numel": big}, f)


__all__ = ["FACTORS", "LinkFit", "RING", "SIZES", "fit_link", "kind_scales", "measured_figures"]
