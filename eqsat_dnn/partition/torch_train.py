"""Train a PyTorch module under an emitted torch plan (:mod:`.torch_plan`, applied with
``parallelize_module``) and compare its losses with single-device training of the same module.

The pieces are what a training script under ``torchrun`` needs (``examples/train_hf_tp.py``
uses them): :func:`parallelize` (the plan's styles on a CPU or GPU device mesh),
:func:`seeded_target` and :func:`train_losses` (mean squared error against a seeded target,
SGD or Adam, one loss per step). :func:`check_torch_plans` runs the same thing on one local
process per device (gloo) and single-device training in the calling process, for tests.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from dataclasses import dataclass
from typing import Any, Callable

from eqsat_dnn.errors import InputError
from eqsat_dnn.partition.problem import OPTIMIZERS
from eqsat_dnn.partition.train import LossReport

Builder = Callable[[], tuple[Any, tuple]]
"""A picklable function returning ``(module, inputs)``, the same on every call (seeded)."""


@dataclass
class TorchTrainReport(LossReport):
    """Losses of training under a torch plan against single-device training (``losses``: rank 0's;
    ``loss_max_rel_error``: the largest over the steps and every rank's losses)."""

    seconds: float = 0.0
    tolerance: float = 1e-4

    @property
    def ok(self) -> bool:
        return self.loss_max_rel_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "processes": self.processes, "backend": self.backend, "steps": self.steps,
                "optimizer": self.optimizer, "lr": self.lr, "losses": self.losses,
                "reference_losses": self.reference_losses, "loss_max_rel_error": self.loss_max_rel_error,
                "seconds": self.seconds}


def parallelize(module: Any, plan_json: dict[str, Any] | str, device_mesh: Any = None, prefix: str = "") -> Any:
    """``module`` parallelized in place with the torch plan's styles (:func:`.torch_plan.to_parallelize_plan`)
    on ``device_mesh`` (default: a CPU mesh of the plan's shape over the default process group)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import parallelize_module

    from eqsat_dnn.partition.torch_plan import load_torch_plan, to_parallelize_plan

    data = load_torch_plan(plan_json)
    if device_mesh is None:
        device_mesh = init_device_mesh("cpu", tuple(data["mesh"]))
    return parallelize_module(module, device_mesh, to_parallelize_plan(data, prefix))


def _output(out: Any) -> Any:
    """The tensor a module's output holds (the first of a tuple, ``last_hidden_state`` of a HF output)."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return getattr(out, "last_hidden_state", out)


def seeded_target(module: Any, inputs: tuple, seed: int = 0) -> Any:
    """A seeded standard normal tensor shaped as ``module(*inputs)``."""
    import torch

    with torch.no_grad():
        shape = _output(module(*inputs)).shape
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))


def train_losses(module: Any, inputs: tuple, target: Any, *, steps: int, optimizer: str = "sgd",
                 lr: float = 0.01) -> list[float]:
    """``steps`` training steps (mean squared error against ``target``); the loss of each, before its update."""
    import torch

    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(_output(module(*inputs)), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def rel_error(losses: list[float], reference: list[float]) -> float:
    """Largest ``|a - b| / |b|`` over the steps (``inf`` when the step counts differ)."""
    if len(losses) != len(reference):
        return math.inf
    return max((abs(a - b) / max(abs(b), 1e-30) for a, b in zip(losses, reference)), default=0.0)


def _worker(rank: int, world: int, port: int, job_path: str, result_dir: str, backend: str) -> None:
    import torch.distributed as dist

    with open(job_path, "rb") as f:
        jobs = pickle.load(f)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = []
    try:
        for build, plan_json, steps, optimizer, lr, seed in jobs:
            module, inputs = build()
            target = seeded_target(module, inputs, seed)  # before parallelizing: the whole module's output
            parallelize(module, plan_json)
            results.append(train_losses(module, inputs, target, steps=steps, optimizer=optimizer, lr=lr))
    finally:
        dist.destroy_process_group()
    with open(os.path.join(result_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


Job = tuple[Builder, dict[str, Any], str, float]
"""(builder, torch plan, optimizer, learning rate)."""


def check_torch_plans(jobs: list[Job], *, steps: int = 3, seed: int = 0, tolerance: float = 1e-4,
                      start_method: str = "forkserver", timeout: float = 120.0) -> list[TorchTrainReport]:
    """For each job, train ``build()``'s module under the torch plan on one local gloo process per
    device, and the same module on one device here; see :class:`TorchTrainReport`. The jobs share
    the processes (one start), so their plans must have one number of devices."""
    from eqsat_dnn.partition.processes import check_run_size, run_ranks
    from eqsat_dnn.partition.torch_plan import load_torch_plan

    if steps < 1:
        raise InputError(f"steps must be >= 1, not {steps}")
    plans = [load_torch_plan(plan_json) for _, plan_json, _, _ in jobs]
    world = math.prod(plans[0]["mesh"])
    if any(math.prod(p["mesh"]) != world for p in plans):
        raise InputError("torch plans checked together must have the same number of devices")
    check_run_size(world)
    start = time.perf_counter()
    per_rank = run_ranks(_worker, [(build, data, steps, optimizer, lr, seed)
                                   for (build, _, optimizer, lr), data in zip(jobs, plans)], world, "gloo",
                         preload=["torch.distributed.tensor.parallel", "eqsat_dnn.partition.torch_train"],
                         start_method=start_method, timeout=timeout, prefix="eqsat-torch-plan-")
    seconds = time.perf_counter() - start
    reports = []
    for k, (build, _, optimizer, lr) in enumerate(jobs):
        module, inputs = build()
        reference = train_losses(module, inputs, seeded_target(module, inputs, seed), steps=steps,
                                 optimizer=optimizer, lr=lr)
        reports.append(TorchTrainReport(world, "gloo", steps, optimizer, lr, per_rank[0][k], reference,
                                        max(rel_error(rank[k], reference) for rank in per_rank), seconds, tolerance))
    return reports


__all__ = ["Builder", "Job", "TorchTrainReport", "check_torch_plans", "parallelize", "rel_error", "seeded_target",
           "train_losses"]
