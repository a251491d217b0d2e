"""Train under a pipelined or checkpointed plan (:mod:`eqsat_dnn.partition.stages`): pipeline stages
on sub-meshes of mesh axis 0, microbatches in 1F1B order, checkpointed units recomputed in backward;
checked, as :mod:`eqsat_dnn.partition.train` checks a plan over the whole mesh, against single-device
training and against the plan's collectives.

How it runs (one process per device, gloo or NCCL):

* the world is one device mesh of shape ``(stages, *sub_mesh)`` (``init_device_mesh``); each rank
  trains its stage's nodes on its stage's slice of it, a DTensor sub-mesh of the plan's sub-mesh
  shape, with the interpreter of :mod:`~eqsat_dnn.partition.train` (the plan's placements and
  strategies, DTensor's redistributions, the same autograd functions);
* the batch is split along dim 0 of every activation into the plan's ``microbatches`` (each node
  runs on the microbatch's shapes; the loss of a microbatch is its squared error over the *whole*
  batch's elements, so the microbatches' losses add up to the batch's mean);
* the schedule is an explicit 1F1B loop: stage ``s`` runs ``min(p - s - 1, m)`` forwards, then one
  forward and one backward alternately, then the remaining backwards. Between stages each rank sends
  its local blocks of the boundary activations (placed as their producer writes them) to the rank of
  the same sub-mesh coordinate in the next stage with ``dist.isend`` and receives with ``dist.recv``;
  gradients go back the same way (placed as :func:`~eqsat_dnn.partition.problem.grad_target` says).
  Why not ``torch.distributed.pipelining`` (``PipelineStage`` + ``Schedule1F1B``): it wants each stage
  as an ``nn.Module`` of plain-tensor inputs and outputs and sends whole tensors between single ranks,
  while here a stage is the plan's interpreter over DTensors of a sub-mesh whose every collective must
  stay attributed to a tensor to be counted against the plan; an explicit loop keeps both (it was not
  tried with DTensor sub-meshes on gloo);
* gradients are accumulated over the microbatches: a weight's (a source's) conversion is done once per
  step and kept, its gradient stays local (in the placement its readers leave it) until the last
  microbatch and is then synchronised once (the plan prices weight collectives once per step), then one
  optimizer step (and ZeRO-1/2's all-gather);
* a checkpointed unit runs under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``, without
  torch's early stop: its whole forward, activation collectives included, runs again in backward (as
  the plan prices it); those collectives are counted under the phase ``recompute``.

The expected collectives are the plan's: those on activations once per microbatch (their bytes a
microbatch's share), again under ``recompute`` for the forward conversions read by a checkpointed unit,
and those on weights (gradient synchronisation, ZeRO) once per step. Point-to-point sends are counted
apart and compared with the plan's (:func:`planned_sends`).
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eqsat_dnn.errors import InputError
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.partition.comm_count import Collective, as_issued, comm_counter, counted
from eqsat_dnn.partition.placements import Shard, Spec, is_valid, local_shape, short, torch_spec
from eqsat_dnn.partition.plan import Plan
from eqsat_dnn.partition.problem import as_graph, grad_target, prepare_graph
from eqsat_dnn.partition.stages import Pipeline, sub_mesh
from eqsat_dnn.partition.train import TrainReport, _global, _Program, _Runner, check_training, compile_training

RECOMPUTE = "recompute"
"""The phase of the collectives a checkpointed unit's recomputed forward issues."""


@dataclass
class PipelineReport(TrainReport):
    """A training run of a pipelined or checkpointed plan (see the module docstring)."""

    checkpointed: list[str] = field(default_factory=list)
    sends: int = 0
    """Point-to-point sends the ranks made in the first step (activations forward, gradients backward)."""
    planned_sends: int = 0

    @property
    def collectives_match(self) -> bool:
        return super().collectives_match and self.sends == self.planned_sends

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for which, name in ((self.issued, "collectives_issued"), (self.expected, "collectives_expected")):
            out[name][RECOMPUTE] = self.counts(which, RECOMPUTE)
        out.update({"checkpointed": list(self.checkpointed),
                    "p2p_sends": self.sends, "p2p_sends_planned": self.planned_sends})
        return out


@dataclass
class _Stage:
    """What the ranks of one stage run (pickled to the workers)."""

    index: int
    stages: int
    program: _Program
    """Its nodes (their local shapes a microbatch's), the sources they read, the graph outputs (last stage)."""
    units: list[tuple[int, bool, list[tuple[str, Spec]], list[tuple[str, Spec]]]]
    """Per unit: its number of nodes, whether it is checkpointed, the activations from earlier units it reads
    converted first to the placement its plan takes them in, and those it hands to later units converted after
    it to the placement its plan ends them in (tensor, placement)."""
    recomputed: set[tuple[str, Spec, Spec]]
    """The conversions (tensor, from, to) a checkpointed unit's recomputation issues again."""
    receives: list[tuple[str, Spec, tuple[int, ...], tuple[int, ...]]]
    """Activations from the previous stage: (tensor, placement, local shape, global shape), of a microbatch."""
    sends: list[tuple[str, Spec, tuple[int, ...]]]
    """Activations to the next stage: (tensor, placement, local shape)."""
    batch_inputs: list[str]
    """Graph inputs split into microbatches (along dim 0)."""
    microbatches: int


# ---------------------------------------------------------------------------- compiling


def _boundaries(nodes: list, spans: list[tuple[int, int]]) -> list[list[str]]:
    """Per stage, the activations it sends to the next (produced up to it, read after it); a stage may only
    read what the previous one sends (a layered model's residual stream)."""
    produced_by = {w[0]: k for k, (_, _, writes) in enumerate(nodes) for w in writes if w}
    out: list[list[str]] = [[] for _ in spans]
    for s, (a, b) in enumerate(spans):
        for _, reads, _ in nodes[a:b]:
            for r in reads:
                if r is None or r[0] not in produced_by or produced_by[r[0]] >= a:
                    continue
                if produced_by[r[0]] < spans[s - 1][0]:
                    raise InputError(f"stage {s} reads {r[0]} from before the previous stage: pipelined training "
                                     "sends activations between neighbouring stages only")
                if r[0] not in out[s - 1]:
                    out[s - 1].append(r[0])
    return out


def _microbatch_nodes(nodes: list, mesh_shape: tuple[int, ...], batch: int, m: int) -> list:
    """``nodes`` with every output's local shape a microbatch's (dim 0 divided by ``m``)."""
    out = []
    for node, reads, writes in nodes:
        new = []
        for w in writes:
            if w is None or w[2] is None or m == 1:
                new.append(w)
                continue
            whole = _global(w, mesh_shape)
            if not whole or whole[0] != batch or w[2][0] % m:
                raise InputError(f"{m} microbatches split dim 0 of every activation: {w[0]} has shape {whole}, "
                                 f"not a batch of {batch} in {m} equal parts on each device")
            new.append((w[0], w[1], (w[2][0] // m, *w[2][1:])))
        out.append((node, reads, new))
    return out


def compile_pipeline(graph: Graph, plan: Plan, feeds: dict[str, np.ndarray], seed: int, steps: int,
                     optimizer: str, lr: float) -> tuple[_Program, list[_Stage]]:
    """The whole program (what single-device training runs) and each stage's (see the module docstring)."""
    pipe: Pipeline = plan.pipeline
    p, m = len(pipe.stages), pipe.microbatches
    sub = sub_mesh(plan.mesh, p)
    # the plan's placements are the stages' sub-mesh's: the program's local shapes are computed on it
    whole = compile_training(graph, replace(plan, mesh=sub, pipeline=None), feeds, seed, steps, optimizer, lr)
    inputs = [name for name, _, _, _ in whole.sources if name in graph.inputs]
    batch = int(np.shape(feeds[inputs[0]])[0]) if inputs else 1
    if m > 1 and any(np.shape(feeds[name])[0] != batch or batch % m for name in inputs):
        raise InputError(f"{m} microbatches split the batch (dim 0 of every input) into equal parts")
    nodes = _microbatch_nodes(whole.nodes, sub.shape, batch, m)
    spans, start = [], 0
    for st in pipe.stages:
        spans.append((start, start + len(st.nodes)))
        start += len(st.nodes)
    if start != len(nodes):
        raise InputError(f"the plan's stages hold {start} nodes, the model has {len(nodes)}")
    sends = _boundaries(nodes, spans)
    writes = {w[0]: w for _, _, ws in nodes for w in ws if w}
    # what later units get: the activation as its unit's plan ends it (its handoff placement), else as produced
    handed = {n: w[1] for n, w in writes.items()}
    for st in pipe.stages:
        handed.update(st.handoff)

    def block(name: str, spec: Spec | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The local and global shapes of a microbatch of ``name`` as handed over (or placed as ``spec``)."""
        whole_shape = _global(writes[name], sub.shape)
        spec = handed[name] if spec is None else spec
        if not is_valid(spec, whole_shape, sub.shape):
            raise InputError(f"{name} is placed {short(spec)} between units, which does not divide a microbatch "
                             f"of shape {whole_shape} evenly: plan with fewer microbatches or a larger batch")
        return local_shape(whole_shape, spec, sub.shape), whole_shape

    stages = []
    for s, (st, (a, b)) in enumerate(zip(pipe.stages, spans)):
        mine = nodes[a:b]
        needed = {r[0] for _, reads, _ in mine for r in reads if r}
        sources = [src for src in whole.sources if src[0] in needed]
        outputs = whole.outputs if s == p - 1 else []
        program = replace(whole, nodes=mine, sources=sources, outputs=outputs)
        receives = [(n, handed[n], *block(n)) for n in sends[s - 1]] if s else []
        units, recomputed, first = [], set(), a
        for unit, size in zip(st.units, st.unit_sizes):
            span = nodes[first:first + size]
            inside = {w[0] for _, _, ws in span for w in ws if w}
            read = {r[0] for _, reads, _ in span for r in reads if r and r[0] in writes and r[0] not in inside}
            # the unit's plan takes what earlier units hand over in its own placement (plan.placements: the consumer's)
            into = [(n, plan.placements[n]) for n in sorted(read) if plan.placements.get(n, handed[n]) != handed[n]]
            handoff = [(n, st.handoff[n]) for n in sorted(inside) if n in st.handoff]
            for n, spec in into + handoff:
                block(n, spec)
            if unit in st.checkpointed:
                seen = {**{n: spec for n, spec, _, _ in sources}, **handed, **dict(into)}
                seen.update({n: writes[n][1] for n in inside})
                recomputed |= {(r[0], seen[r[0]], r[1]) for _, reads, _ in span for r in reads if r}
            units.append((size, unit in st.checkpointed, into, handoff))
            first += size
        stages.append(_Stage(s, p, program, units, recomputed, receives,
                             [(n, handed[n], block(n)[0]) for n in sends[s]], [n for n in inputs if n in needed], m))
    return whole, stages


def planned_sends(stages: list[_Stage]) -> int:
    """The point-to-point sends of one step: per stage boundary and microbatch, each boundary activation's
    local block from every rank of the stage forward, and its gradient back."""
    ranks = math.prod(stages[0].program.mesh_shape)
    return sum(2 * len(st.sends) * ranks * st.microbatches for st in stages)


def pipeline_collectives(plan: Plan, stages: list[_Stage], cpu: bool) -> tuple[list[Collective], dict[str, int]]:
    """The plan's collectives as one step issues them (see the module docstring): per microbatch for those on
    activations, again under ``recompute`` for a checkpointed unit's forward conversions, once for weights'."""
    p, m = len(plan.pipeline.stages), plan.pipeline.microbatches
    shape = sub_mesh(plan.mesh, p).shape
    batch_inputs = {n for st in stages for n in st.batch_inputs}
    once = {src[0] for st in stages for src in st.program.sources} - batch_inputs
    recomputed = {key for st in stages for key in st.recomputed}
    whole = [(c.phase, c) for c in plan.collectives if c.tensor in once or c.phase == "update"]
    per_microbatch = [(c.phase, c) for c in plan.collectives if c.tensor not in once and c.phase != "update"]
    per_microbatch += [(RECOMPUTE, c) for _, c in per_microbatch
                       if c.phase == "forward" and (c.tensor, c.src, c.dst) in recomputed]
    expected, substituted = as_issued(whole, shape, cpu)
    activations, more = as_issued(per_microbatch, shape, cpu, 1.0 / m)
    expected += activations * m
    for kind, n in more.items():
        substituted[kind] = substituted.get(kind, 0) + n * m
    return expected, substituted


# ---------------------------------------------------------------------------- the stage's interpreter


class _StageRunner(_Runner):
    """One rank of a stage: :class:`~eqsat_dnn.partition.train._Runner` over microbatches, in 1F1B order."""

    def __init__(self, job: _Stage, mesh, device, counter, rank: int) -> None:
        import torch
        from torch.distributed.tensor import distribute_tensor

        super().__init__(job.program, mesh, device, counter)
        self.job, self.rank = job, rank
        self.ranks = math.prod(job.program.mesh_shape)
        self._shapes.update({name: whole for name, _, _, whole in job.receives})
        m = job.microbatches
        self.micro: list[dict[str, Any]] = [{} for _ in range(m)]
        self.micro_targets: list[list] = [[] for _ in range(m)]
        for name, spec, value, _ in job.program.sources:
            if name in job.batch_inputs:  # distributed now, outside the counted step (a replicated one is broadcast)
                self.sources.pop(name)
                for j, part in enumerate(np.split(np.asarray(value), m)):
                    self.micro[j][name] = distribute_tensor(torch.from_numpy(np.array(part)).to(self.device), mesh,
                                                            torch_spec(spec))
        for name, spec, target in job.program.outputs:
            for j, part in enumerate(np.split(target, m)):
                self.micro_targets[j].append(distribute_tensor(torch.from_numpy(np.array(part)).to(self.device),
                                                               mesh, torch_spec(spec)).to_local())
        self.numels = [math.prod(np.shape(target)) for _, _, target in job.program.outputs]
        self.sent = 0
        self._handles: list = []

    def _p2p(self, tensor, peer: int, tag: int, send: bool) -> None:
        import torch.distributed as dist

        if send:  # the buffer is kept with its handle until the step's end, when every send is waited for
            buffer = tensor.detach().contiguous()
            self._handles.append((dist.isend(buffer, peer, tag=tag), buffer))
            self.sent += 1
        else:
            dist.recv(tensor, peer, tag=tag)

    def forward(self, j: int, ran: set) -> tuple:
        """Microbatch ``j``'s forward: (received leaves, the loss or the activations sent)."""
        torch = self.torch
        job = self.job
        values = dict(self.sources)
        values.update(self.micro[j])
        for name, (_, state) in self.zero.items():
            values[name] = self._functions["zero"].apply(self.params[name], self.full[name], self, name, state)
        leaves = []
        for k, (name, spec, local, _) in enumerate(job.receives):
            buffer = torch.empty(local, dtype=torch.float32, device=self.device)
            self._p2p(buffer, self.rank - self.ranks, (2 * j) * 64 + k, send=False)
            leaf = self._dtensor(buffer, spec, name).requires_grad_(True)
            values[name] = leaf
            leaves.append(leaf)
        start = 0
        for u, (size, checkpointed, into, handoff) in enumerate(job.units):
            nodes = job.program.nodes[start:start + size]
            start += size
            self._convert(values, into)
            if not checkpointed:
                self.run_nodes(nodes, values, ({}, {}))
                self._convert(values, handoff)
                continue
            from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

            inputs = sorted({r[0] for _, reads, _ in nodes for r in reads if r} & set(values))
            outputs = [w[0] for _, _, writes in nodes for w in writes if w]

            def unit(*args, nodes=nodes, inputs=inputs, outputs=outputs, key=(j, u)):
                # the first call is the forward pass, the second backward's recomputation
                phase = RECOMPUTE if key in ran else "forward"
                ran.add(key)
                local = dict(zip(inputs, args))
                self.run_nodes(nodes, local, ({}, {}), phase)
                return tuple(local[n] for n in outputs)

            # the whole forward again, as the plan prices it: torch stops a recomputation early, once the last
            # tensor backward needs is back, which would skip the collectives after it
            with set_checkpoint_early_stop(False):
                values.update(zip(outputs, checkpoint(unit, *(values[n] for n in inputs), use_reentrant=False)))
            self._convert(values, handoff)
        if job.index == job.stages - 1:
            terms = self.terms(values, ({}, {}), self.micro_targets[j], self.numels)
            return leaves, terms
        outs = [values[name] for name, _, _ in job.sends]
        for k, out in enumerate(outs):
            self._p2p(out.to_local(), self.rank + self.ranks, (2 * j) * 64 + k, send=True)
        return leaves, outs

    def _convert(self, values: dict, conversions: list[tuple[str, Spec]]) -> None:
        """Activations between units redistributed to the placement the next unit's plan takes them in (outside
        a checkpointed unit: the plan prices these once per microbatch, not again in backward)."""
        for name, spec in conversions:
            local = self.fetch(values, ({}, {}), name, spec, grad_target(spec))
            values[name] = (self._functions["wrap"].apply(local, self, spec, name) if local.requires_grad
                            else self._dtensor(local.detach(), spec, name))

    def backward(self, j: int, leaves: list, outs: list) -> None:
        """Microbatch ``j``'s backward: from its loss (last stage) or the gradients the next stage sends back."""
        torch = self.torch
        job = self.job
        if job.index == job.stages - 1:
            loss = outs[0]
            for term in outs[1:]:
                loss = loss + term
            loss.backward()
        else:
            grads = []
            for k, (name, spec, local) in enumerate(job.sends):
                buffer = torch.empty(local, dtype=torch.float32, device=self.device)
                self._p2p(buffer, self.rank + self.ranks, (2 * j + 1) * 64 + k, send=False)
                grads.append(self._dtensor(buffer, grad_target(spec), name))
            torch.autograd.backward(outs, grads)
        for k, ((name, spec, local, _), leaf) in enumerate(zip(job.receives, leaves)):
            grad = leaf.grad.to_local() if leaf.grad is not None else torch.zeros(local, device=self.device)
            self._p2p(grad, self.rank - self.ranks, (2 * j + 1) * 64 + k, send=True)

    def pipeline_step(self, keep_grads: bool = False) -> list[float]:
        """One training step: the microbatches in 1F1B order, the weights' gradients synchronised once,
        one optimizer step. The loss terms (this device's shares, the last stage's; zeros elsewhere)."""
        job = self.job
        m, warm = job.microbatches, min(job.stages - job.index - 1, job.microbatches)
        self.step_converted, self.accumulated = {}, {}
        pending: dict[int, tuple] = {}
        ran: set = set()
        shares = [0.0] * len(job.program.outputs)
        forward = backward = 0

        def run_backward(j: int) -> None:
            leaves, outs = pending.pop(j)
            if job.index == job.stages - 1:
                for k, term in enumerate(outs):
                    shares[k] += float(term.detach())
            self.backward(j, leaves, outs)

        for _ in range(warm):
            pending[forward] = self.forward(forward, ran)
            forward += 1
        while forward < m:
            pending[forward] = self.forward(forward, ran)
            forward += 1
            run_backward(backward)
            backward += 1
        while backward < m:
            run_backward(backward)
            backward += 1
        self._synchronise()
        self.update(keep_grads)
        for handle, _ in self._handles:
            handle.wait()
        self._handles.clear()
        self.step_converted = self.accumulated = None
        return shares

    def _synchronise(self) -> None:
        """The weights' accumulated gradients to their targets (one redistribution per (weight, gradient
        placement, target), as the plan prices them), then ZeRO's state (as ``ZeroView`` does)."""
        for (name, gp, target), local in self.accumulated.items():
            value = self._redistribute(self._dtensor(local.contiguous(), gp, name), target, ("backward", name))
            if name in self.zero:
                value = self._redistribute(value, self.zero[name][1], ("backward", name))
            param = self.params[name]
            param.grad = value if param.grad is None else param.grad + value


def _worker(rank: int, world: int, port: int, job_path: str, result_dir: str, backend: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from eqsat_dnn.partition.processes import join_group

    torch.set_num_threads(1)
    job, device = join_group(rank, world, port, job_path, backend)
    stages, steps = job
    try:
        shape = tuple(stages[0].program.mesh_shape)
        names = tuple(f"axis{k}" for k in range(len(shape)))
        world_mesh = init_device_mesh(device.type, (len(stages), *shape), mesh_dim_names=("stage", *names))
        mesh = world_mesh[names]
        job = stages[rank // math.prod(shape)]
        groups = {mesh.get_group(k).group_name: k for k in range(mesh.ndim)}
        counter = comm_counter()()
        runner = _StageRunner(job, mesh, device, counter, rank)
        initial = {name: p.detach().full_tensor().cpu().numpy().copy() for name, p in runner.params.items()}
        losses, times, sends = [], [], 0
        for step in range(steps):
            dist.barrier()
            start = time.perf_counter()
            if step == 0:
                with counter:
                    share = runner.pipeline_step(keep_grads=True)
                sends = runner.sent
            else:
                share = runner.pipeline_step()
            dist.barrier()  # the step ends when the slowest stage's does
            times.append(time.perf_counter() - start)
            losses.append(share or [0.0] * len(stages[-1].program.outputs))  # only the last stage has a loss
        outputs = stages[-1].program.outputs
        replicas = torch.tensor([math.prod(shape[k] for k, p in enumerate(spec) if not isinstance(p, Shard))
                                 for _, spec, _ in outputs], dtype=torch.float64)
        totals = torch.tensor(losses, dtype=torch.float64).reshape(len(losses), len(outputs)).to(device)
        dist.all_reduce(totals)  # only the last stage's ranks hold shares
        losses = (totals.cpu() / replicas).sum(dim=1).tolist()
        final = {name: p.detach().full_tensor().cpu().numpy() for name, p in runner.params.items()}
        grads = {name: g.full_tensor().cpu().numpy() for name, g in runner.grads.items()}
        issued, unattributed, optimizer = counted(counter, groups, shape)
        first = rank % math.prod(shape) == 0
        result = {"stage": job.index, "issued": issued, "unattributed": unattributed, "optimizer": optimizer,
                  "losses": losses, "times": times, "sends": sends, "initial": initial if first else None,
                  "final": final if first else None, "grads": grads if first else None}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(result_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


# ---------------------------------------------------------------------------- the parent


def train_pipeline(model: Graph | str | Path | onnx.ModelProto, plan: Plan, *, steps: int = 3,
                   optimizer: str = "sgd", lr: float = 0.01, seed: int = 0, tolerance: float = 1e-4,
                   start_method: str = "forkserver", timeout: float = 300.0) -> PipelineReport:
    """Train a plan with pipeline stages or checkpointed units for ``steps`` steps on one local process per
    device and check it (see the module docstring and :func:`~eqsat_dnn.partition.train.train_plan`: the
    same checks, the collectives per microbatch and the point-to-point sends too)."""
    from eqsat_dnn.partition.processes import device_group, run_ranks
    from eqsat_dnn.partition.run import _reference

    if plan.mode != "train" or plan.pipeline is None:
        raise InputError("a pipelined training run needs a plan made in train mode with pipeline stages")
    world, backend = device_group([plan], "trained")
    start = time.perf_counter()
    graph = prepare_graph(as_graph(model))
    feeds, ort_outputs = _reference(graph, seed)
    whole, stages = compile_pipeline(graph, plan, feeds, seed, steps, optimizer, lr)
    expected, substituted = pipeline_collectives(plan, stages, backend == "gloo")
    per_rank = run_ranks(_worker, (stages, steps), world, backend,
                         preload=["torch.distributed", "torch.distributed.tensor",
                                  "eqsat_dnn.partition.pipeline_run"],
                         start_method=start_method, timeout=timeout, prefix="eqsat-dnn-pipeline-")
    ranks = world // len(stages)
    firsts = [per_rank[s * ranks] for s in range(len(stages))]
    merged = {"times": [max(t) for t in zip(*(r["times"] for r in firsts))]}
    for key in ("initial", "final", "grads"):
        merged[key] = {k: v for r in firsts for k, v in r[key].items()}
    report = PipelineReport(world, backend, steps, optimizer, lr, losses=list(per_rank[0]["losses"]),
                            issued=[c for r in firsts for c in r["issued"]], expected=expected,
                            substituted=substituted, optimizer_collectives=sum(r["optimizer"] for r in per_rank),
                            unattributed=sum(r["unattributed"] for r in firsts),
                            predicted_step_s=plan.predicted.time_s, tolerance=tolerance, stages=len(stages),
                            microbatches=plan.pipeline.microbatches,
                            checkpointed=[c["unit"] for c in plan.pipeline.checkpointed()],
                            sends=sum(r["sends"] for r in per_rank), planned_sends=planned_sends(stages))
    for rank, result in enumerate(per_rank):
        if Counter(result["issued"]) != Counter(firsts[result["stage"]]["issued"]):
            report.failures.append(f"rank {rank} issued different collectives from its stage's first rank")
    if report.sends != report.planned_sends:
        report.failures.append(f"{report.sends} point-to-point sends, the plan has {report.planned_sends}")
    check_training(report, whole, ort_outputs, merged)
    report.seconds = time.perf_counter() - start
    return report


def train_plans(jobs: list[tuple[Graph | str | Path | onnx.ModelProto, Plan]], **options) -> list[TrainReport]:
    """Train any plans (see :func:`~eqsat_dnn.partition.train.train_plans` for ``options``): those with
    pipeline stages or checkpointing by :func:`train_pipeline`, each in its own group of processes, the
    others together by :func:`eqsat_dnn.partition.train.train_plans`; the reports in order."""
    from eqsat_dnn.partition import train

    plain = iter(train.train_plans([job for job in jobs if job[1].pipeline is None], **options))
    return [train_pipeline(model, plan, **options) if plan.pipeline is not None else next(plain)
            for model, plan in jobs]


def train_plan(model: Graph | str | Path | onnx.ModelProto, plan: Plan, *,
               input_shapes: dict[str, list[int]] | None = None, **options) -> TrainReport:
    """Train any plan (see :func:`~eqsat_dnn.partition.train.train_plan`; a pipelined or checkpointed one
    by :func:`train_pipeline`)."""
    return train_plans([(as_graph(model, input_shapes), plan)], **options)[0]


__all__ = ["PipelineReport", "RECOMPUTE", "compile_pipeline", "pipeline_collectives", "planned_sends",
           "train_pipeline",
           "train_plan", "train_plans"]
