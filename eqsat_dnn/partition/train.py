"""Train under a plan on torch's DTensor: forward, loss, backward, optimizer step, on one process
per device, checked against single-device training and against the plan's collectives.

:func:`train_plan` turns the program the planner saw (the folded :class:`~eqsat_dnn.ir.graph.Graph`)
into a torch interpreter (:mod:`eqsat_dnn.partition.ops_torch`) and runs ``steps`` training steps
on one local process per device of the plan's mesh (gloo; NCCL when there are enough GPUs):

* every trainable weight (a float initializer of more than one element, as the planner counts
  them) is an ``nn.Parameter`` holding a DTensor made by ``distribute_tensor`` with the plan's
  placements; inputs and other constants are DTensors too, placed as the plan says;
* every value between nodes is a DTensor placed as its producer's strategy writes it; a node
  reads each input ``redistribute``-d to the placement its strategy needs (each distinct
  conversion once, as the plan prices it, by DTensor's own redistribution, and a shard that
  must become partial through the replicated placement, which DTensor requires), then computes
  on the local blocks (the strategy is the plan's, not DTensor's sharding propagation: like
  ``torch.distributed.tensor.experimental.local_map``), and wraps its outputs as DTensors with
  the strategy's output placements (``Partial`` included);
* the backward pass is torch autograd's. The gradient of an input read as ``dst`` is placed as
  :func:`~eqsat_dnn.partition.problem.grad_placement` says (a replicated read by work divided
  along a mesh axis leaves a partial gradient along it) and goes back to the producer's
  placement by DTensor's ``redistribute`` (:func:`~eqsat_dnn.partition.problem.grad_target`),
  one redistribution per (placement read, gradient placement), which is exactly how the planner
  prices the backward pass (:meth:`~eqsat_dnn.partition.problem.PartitionProblem.backward_steps`);
  a replicated weight's gradient thus arrives all-reduced, a sharded one's reduce-scattered;
* the loss is the mean squared error of the outputs against a seeded target; the optimizer is
  ``torch.optim.SGD`` or ``Adam`` over the DTensor parameters (its state placed as they are);
* a ZeRO-1/2 weight (``plan.zero``) is a parameter DTensor placed as its sharded state, which the
  optimizer owns (so its state is sharded too), plus the replicated copy its ops read: the gradient
  comes back all-reduced (ZeRO-1, then sliced locally) or reduce-scattered (ZeRO-2) into the shard,
  and after the optimizer step the updated shards are all-gathered into the copy (DTensor's
  ``redistribute``: the plan's ``update`` collectives). This is ZeRO as DTensor placements rather
  than ``ZeroRedundancyOptimizer`` or ``fully_shard``, so every collective stays attributed to its
  weight and counted against the plan; ZeRO-3 is the weight stored sharded (all-gather on use);
* plans with pipeline stages or checkpointed layers run by :mod:`eqsat_dnn.partition.pipeline_run`.

The first step runs under ``torch.distributed.tensor.debug.CommDebugMode``; every collective it
counts is attributed to the tensor whose conversion (forward) or gradient (backward) issued it,
with its mesh axis (from the process group) and bytes, and compared with the plan's forward and
backward collectives. On a CPU mesh DTensor performs an all-to-all as an all-gather plus a local
chunk (``shard_dim_alltoall``); the comparison counts each planned all-to-all so, and the report
says how many were substituted. The other steps are timed without the counter (the measured step
time: their median). Single-device training of the same program (same weights, inputs, target,
optimizer) runs in the calling process; the report gives the largest relative error of the
losses and of the updated weights (per weight, against its largest magnitude), and how far the
weights moved. It also checks the torch interpreter's first forward pass against onnxruntime.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eqsat_dnn.errors import InputError
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.partition.comm_count import Collective, comm_counter, counted, expected_collectives
from eqsat_dnn.partition.placements import Partial, Replicate, Shard, Spec, local_shape, torch_spec
from eqsat_dnn.partition.plan import Plan
from eqsat_dnn.partition.problem import OPTIMIZERS, as_graph, grad_placement, grad_target, prepare_graph
from eqsat_dnn.partition.strategies import FLOAT_TYPES, static_shape
from eqsat_dnn.partition.zero import ZeroStage

_EXTRA_HINT = "training a plan needs torch: pip install eqsat-dnn[dist]"

NO_GRADIENT = 1e-6
"""An element of a weight whose gradient is at most this times the largest gradient has none (see
:class:`TrainReport`)."""

PHASES = ("forward", "backward", "update")
"""Where a step's collectives come from (``update``: the all-gather of ZeRO-1/2 weights after the optimizer)."""



@dataclass
class LossReport:
    """Distributed training's losses against single-device training's (what every training check reports)."""

    processes: int
    backend: str
    steps: int
    optimizer: str
    lr: float
    losses: list[float] = field(default_factory=list)
    """The distributed run's loss at each step (before its update)."""
    reference_losses: list[float] = field(default_factory=list)
    """Single-device training's."""
    loss_max_rel_error: float = math.inf


@dataclass
class TrainReport(LossReport):
    """What a training run found."""

    weights_max_rel_error: float = math.inf
    weights_max_rel_error_all: float = math.inf
    """The same, counting the weights without gradient too."""
    weights_without_gradient: dict[str, int] = field(default_factory=dict)
    """Per weight, the elements whose first single-device gradient is zero up to rounding (at most
    :data:`NO_GRADIENT` times the largest gradient): Adam turns rounding noise there into full steps, so
    ``weights_max_rel_error`` leaves them out (``weights_max_rel_error_all`` does not)."""
    weight_errors: dict[str, float] = field(default_factory=dict)
    """Each weight's relative error after training."""
    grads_max_rel_error: float = math.inf
    """The first step's gradients against single-device training's, over the largest gradient."""
    weights_max_rel_update: float = 0.0
    """How far training moved the weights (largest |final - initial| over the weight's largest magnitude)."""
    forward_max_rel_error: float = math.inf
    """The torch interpreter's first forward pass (single device) against onnxruntime."""
    issued: list[Collective] = field(default_factory=list)
    """Collectives DTensor issued in the first step (rank 0), as CommDebugMode counted them."""
    expected: list[Collective] = field(default_factory=list)
    """The plan's forward and backward collectives, as DTensor issues them on this backend."""
    substituted: dict[str, int] = field(default_factory=dict)
    """Planned collectives DTensor performs as another kind on this backend (``all_to_all->all_gather``)."""
    optimizer_collectives: int = 0
    """Collectives the optimizer steps issued (none expected: its state is placed as the parameters)."""
    unattributed: int = 0
    """Collectives counted outside any conversion (none expected)."""
    predicted_step_s: float = 0.0
    measured_step_s: float = 0.0
    """Median wall time of the steps after the first (which runs under the counter), on rank 0."""
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    tolerance: float = 1e-4
    stages: int = 1
    """Pipeline stages (1: the whole mesh, see :mod:`eqsat_dnn.partition.pipeline_run`)."""
    microbatches: int = 1

    @property
    def collectives_match(self) -> bool:
        return Counter(self.issued) == Counter(self.expected) and not self.unattributed

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self, which: list[Collective], phase: str) -> dict[str, int]:
        return dict(Counter(kind for p, kind, *_ in which if p == phase))

    def mismatch(self) -> dict[str, list]:
        """Collectives issued and not planned, planned and not issued (phase, kind, tensor, axis, bytes)."""
        extra = Counter(self.issued) - Counter(self.expected)
        missing = Counter(self.expected) - Counter(self.issued)
        return {"unplanned": sorted(extra.elements()), "missing": sorted(missing.elements())}

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "train", "ok": self.ok, "processes": self.processes, "backend": self.backend,
                "steps": self.steps, "optimizer": self.optimizer, "lr": self.lr, "losses": self.losses,
                "reference_losses": self.reference_losses, "loss_max_rel_error": self.loss_max_rel_error,
                "weights_max_rel_error": self.weights_max_rel_error,
                "weights_max_rel_error_all": self.weights_max_rel_error_all,
                "weights_without_gradient": dict(self.weights_without_gradient),
                "worst_weights": dict(sorted(self.weight_errors.items(), key=lambda kv: -kv[1])[:3]),
                "grads_max_rel_error": self.grads_max_rel_error,
                "weights_max_rel_update": self.weights_max_rel_update,
                "forward_max_rel_error": self.forward_max_rel_error,
                "collectives_match": self.collectives_match,
                "collectives_issued": {phase: self.counts(self.issued, phase) for phase in PHASES},
                "collectives_expected": {phase: self.counts(self.expected, phase) for phase in PHASES},
                "collectives_mismatch": {k: [list(c) for c in v] for k, v in self.mismatch().items()},
                "substituted": dict(self.substituted), "optimizer_collectives": self.optimizer_collectives,
                "unattributed_collectives": self.unattributed,
                "predicted_step_s": self.predicted_step_s, "measured_step_s": self.measured_step_s,
                "stages": self.stages, "microbatches": self.microbatches, "failures": list(self.failures), "seconds": self.seconds}


# ---------------------------------------------------------------------------- compiling


@dataclass
class _Program:
    """What every rank runs (pickled to the workers) and what the reference runs."""

    mesh_shape: tuple[int, ...]
    sources: list[tuple[str, Spec, np.ndarray, bool]]
    """(tensor, placement, whole value, trainable)."""
    nodes: list[tuple[Any, list[tuple[str, Spec, Spec] | None], list[tuple[str, Spec, tuple | None] | None]]]
    """(node, per input (tensor, placement read, gradient placement), per output (tensor, placement, local shape))."""
    outputs: list[tuple[str, Spec, np.ndarray]]
    """(graph output, final placement, seeded target)."""
    constants: dict[str, np.ndarray]
    steps: int
    optimizer: str
    lr: float
    zero: dict[str, tuple[Any, Spec]] = field(default_factory=dict)
    """ZeRO-1/2 weights: name -> (stage, placement of the sharded state)."""


def _is_float(graph: Graph, name: str) -> bool:
    t = graph.types.get(name)
    return t is not None and t.dtype in FLOAT_TYPES


def compile_training(graph: Graph, plan: Plan, feeds: dict[str, np.ndarray], seed: int, steps: int,
                     optimizer: str, lr: float) -> _Program:
    """The program of ``plan`` on the folded ``graph`` (see the module docstring)."""
    from eqsat_dnn.partition.ops_torch import OPS, initializer_arrays

    nodes = graph.nodes
    if len(nodes) != len(plan.nodes):
        raise InputError(f"the plan has {len(plan.nodes)} nodes, the model {len(nodes)}: not this model's plan")
    unsupported = sorted({n.op_type for n in nodes} - OPS)
    if unsupported:
        raise InputError(f"training runs no {', '.join(unsupported)} (eqsat_dnn.partition.ops_torch)")
    mesh_shape = plan.mesh.shape
    needed = {i for n in nodes for i in n.inputs if i} | set(graph.outputs)
    constants = initializer_arrays(graph.weights)
    sources = []
    for name in graph.inputs:
        if name in needed:
            sources.append((name, plan.placements[name], np.asarray(feeds[name]), False))
    for name, value in constants.items():
        if name in needed:
            trainable = _is_float(graph, name) and value.size > 1  # the planner's parameters
            sources.append((name, plan.placements[name], value, trainable))
    program_nodes = []
    for node, step in zip(nodes, plan.nodes):
        if node.op_type != step.op:
            raise InputError(f"plan node {step.name} is a {step.op}, the model's is a {node.op_type}")
        split_axes = {k for k in range(len(mesh_shape))
                      if any(s is not None and not isinstance(s[k], Replicate) for s in step.inputs + step.outputs)}
        reads = []
        for name, spec in zip(node.inputs, step.inputs):
            if not name:
                reads.append(None)
                continue
            axes = {k for k in split_axes if isinstance(spec[k], Replicate)}
            reads.append((name, spec, grad_placement(spec, axes)))
        writes = []
        for name, spec in zip(node.outputs, step.outputs):
            if not name:
                writes.append(None)
                continue
            shape = static_shape(graph.types.get(name))
            writes.append((name, spec, None if shape is None else local_shape(shape, spec, mesh_shape)))
        program_nodes.append((node, reads, writes))
    rng = np.random.default_rng(seed + 1)
    outputs = []
    for name in graph.outputs:
        spec = plan.outputs[name]
        if any(isinstance(p, Partial) for p in spec):
            raise InputError(f"graph output {name} ends partial in the plan; it cannot be trained against a target")
        shape = static_shape(graph.types.get(name))
        if shape is None or not _is_float(graph, name):
            raise InputError(f"graph output {name}: training needs float outputs of static shape")
        outputs.append((name, spec, rng.standard_normal(shape).astype(np.float32)))
    zero = {name: (z.stage, z.state) for name, z in plan.zero.items()
            if z.stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS)}
    return _Program(mesh_shape, sources, program_nodes, outputs, constants, steps, optimizer, lr, zero)


# ---------------------------------------------------------------------------- the interpreter


class _Runner:
    """Runs the program's steps on DTensors (``mesh`` given) or on whole tensors (``mesh=None``)."""

    def __init__(self, program: _Program, mesh=None, device=None, counter=None) -> None:
        import torch

        self.torch = torch
        self.program, self.mesh, self.counter = program, mesh, counter
        self.device = device or torch.device("cpu")
        self.params: dict[str, Any] = {}
        self.sources: dict[str, Any] = {}
        self.targets: list = []
        self._functions = _functions() if mesh is not None else None
        self._shapes = {name: tuple(np.shape(v)) for name, _, v, _ in program.sources}
        self._shapes.update({w[0]: _global(w, program.mesh_shape) for _, _, writes in program.nodes
                             for w in writes if w})
        self.zero = program.zero if mesh is not None else {}
        self.full: dict[str, Any] = {}
        """ZeRO-1/2 weights as placed (replicated), refreshed by the update's all-gather."""
        self.step_converted: dict | None = None
        """Conversions of sources kept for a whole step (a pipeline's microbatches share them)."""
        self.accumulated: dict | None = None
        """Weights' gradients kept local over a pipeline's microbatches, keyed by (weight, gradient placement,
        target), synchronised once per step (``None``: synchronised as they come, in backward)."""
        for name, spec, value, trainable in program.sources:
            tensor = torch.from_numpy(np.array(value)).to(self.device)
            if mesh is not None:
                from torch.distributed.tensor import distribute_tensor

                if name in self.zero:  # the optimizer owns the sharded copy: its state is sharded as it
                    self.full[name] = distribute_tensor(tensor, mesh, torch_spec(spec))
                    spec = self.zero[name][1]
                tensor = distribute_tensor(tensor, mesh, torch_spec(spec))
            if trainable:
                tensor = torch.nn.Parameter(tensor)
                self.params[name] = tensor
            self.sources[name] = tensor
        for name, spec, target in program.outputs:
            tensor = torch.from_numpy(target).to(self.device)
            if mesh is not None:
                from torch.distributed.tensor import distribute_tensor

                tensor = distribute_tensor(tensor, mesh, torch_spec(spec)).to_local()
            self.targets.append(tensor)
        params = list(self.params.values())
        if program.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=program.lr, foreach=False) if params else None
        else:
            self.optimizer = torch.optim.SGD(params, lr=program.lr, foreach=False) if params else None

    # -- one step -----------------------------------------------------------

    def loss(self):
        """Forward pass and loss, one term per graph output (mean squared error against its target):
        on a mesh, this device's share of each term (the whole term when the output is replicated)."""
        values = dict(self.sources)
        for name, (_, state) in self.zero.items():
            values[name] = self._functions["zero"].apply(self.params[name], self.full[name], self, name, state)
        caches: tuple[dict, dict] = ({}, {})
        self.run_nodes(self.program.nodes, values, caches)
        return self.terms(values, caches, self.targets, [None] * len(self.targets))

    def fetch(self, values: dict, caches: tuple[dict, dict], name: str, dst: Spec, gp: Spec, phase: str = "forward"):
        """``values[name]`` as this device's block of its conversion to ``dst`` (its gradient placed as ``gp``):
        each distinct conversion once per ``caches`` (converted, read), weights' once per step when
        ``self.step_converted`` holds them (a pipeline's microbatches share them)."""
        if self.mesh is None:
            return values[name]
        converted, read = caches
        if self.step_converted is not None and name in self.sources:
            converted = self.step_converted
        key = (name, dst, gp)
        if key not in read:
            src_value = values[name]
            if (name, dst) not in converted:
                with self.torch.no_grad():
                    converted[(name, dst)] = self._redistribute(src_value.detach(), dst, (phase, name))
            local = converted[(name, dst)].to_local()
            if src_value.requires_grad:
                local = self._functions["read"].apply(src_value, local, self, name, gp)
            read[key] = local
        return read[key]

    def run_nodes(self, nodes: list, values: dict, caches: tuple[dict, dict], phase: str = "forward") -> None:
        """Run ``nodes`` (of the program) on ``values``, adding their outputs (DTensors placed as written)."""
        from eqsat_dnn.partition.ops_torch import compute

        for node, reads, writes in nodes:
            ins = [None if r is None else self.fetch(values, caches, *r, phase=phase) for r in reads]
            shapes = [None if w is None else (w[2] if self.mesh is not None else self._shapes[w[0]]) for w in writes]
            outs = compute(node, ins, shapes, self.program.constants)
            for w, out in zip(writes, outs):
                if w is None:
                    continue
                name, spec, shape = w
                if self.mesh is None:
                    values[name] = out
                    continue
                values[name] = (self._functions["wrap"].apply(out, self, spec, name) if out.requires_grad
                                else self._dtensor(out.detach(), spec, name))

    def terms(self, values: dict, caches: tuple[dict, dict], targets: list, numels: list[int | None]) -> list:
        """The loss terms of the graph outputs in ``values`` against ``targets`` (this device's blocks): the
        squared error summed, over ``numels`` (default: the output's elements; a microbatch divides by the
        whole batch's, so that the microbatches' terms add up to the batch's mean)."""
        terms = []
        for (name, spec, _), target, numel in zip(self.program.outputs, targets, numels):
            y = self.fetch(values, caches, name, spec, tuple(Replicate() if isinstance(p, Partial) else p for p in spec))
            if numel is None:
                numel = math.prod(target.shape) if self.mesh is None else math.prod(self._global_shape(name))
            terms.append(((y - target) ** 2).sum() / numel)
        return terms

    # -- DTensor plumbing -----------------------------------------------------

    def _global_shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def _dtensor(self, local, spec: Spec, name: str):
        from torch.distributed.tensor import DTensor

        shape = self._shapes.get(name)
        return DTensor.from_local(local, self.mesh, torch_spec(spec), run_check=False,
                                  shape=None if shape is None else self.torch.Size(shape),
                                  stride=None if shape is None else _contiguous_strides(shape))

    def _redistribute(self, value, dst: Spec, tag: tuple[str, str]):
        """DTensor's redistribution of ``value`` to ``dst``, counted under ``tag``. DTensor does not
        redistribute to ``Partial`` on request ("for internal use only"): a new partial axis is
        reached from the replicated placement (redistributed by DTensor) by keeping the value on the
        axis's first device and zeros elsewhere, a local step, as the plan's ``zero``."""
        src = _plan_spec(value.placements)
        if src == dst:
            return value
        new_partial = [k for k, (p, q) in enumerate(zip(src, dst))
                       if isinstance(q, Partial) and not isinstance(p, Partial)]
        middle = tuple(Replicate() if k in new_partial else q for k, q in enumerate(dst))
        previous = self.counter.tag if self.counter is not None else None
        if self.counter is not None:
            self.counter.tag = tag
        try:
            if middle != src:
                value = value.redistribute(self.mesh, torch_spec(middle))
        finally:
            if self.counter is not None:
                self.counter.tag = previous
        if not new_partial:
            return value
        local = value.to_local()
        coordinate = self.mesh.get_coordinate()
        if any(coordinate[k] != 0 for k in new_partial):
            local = self.torch.zeros_like(local)
        return self._dtensor(local, dst, tag[1])

    def step(self, keep_grads: bool = False):
        """One training step; the loss terms (this device's shares) as floats. ``keep_grads``: keep a
        copy of the gradients (``self.grads``) before the update."""
        terms = self.loss()
        loss = terms[0]
        for term in terms[1:]:
            loss = loss + term
        loss.backward()
        self.update(keep_grads)
        return [float(t.detach()) for t in terms]

    def update(self, keep_grads: bool = False) -> None:
        """The optimizer step on the gradients in place (``keep_grads``: a copy in ``self.grads`` first),
        then ZeRO-1/2's all-gather of the updated shards."""
        if keep_grads:
            self.grads = {name: p.grad.detach().clone() for name, p in self.params.items() if p.grad is not None}
        if self.optimizer is not None:
            previous = self.counter.tag if self.counter is not None else None
            if self.counter is not None:
                self.counter.tag = ("optimizer", "")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.counter is not None:
                self.counter.tag = previous
        for name in self.zero:  # ZeRO-1/2: the updated shards all-gathered into the weight as placed
            spec = _plan_spec(self.full[name].placements)
            self.full[name] = self._redistribute(self.params[name].detach(), spec, ("update", name))


def _functions() -> dict[str, Any]:
    """The two autograd functions between DTensors and local blocks (made once torch is imported)."""
    import torch

    class Read(torch.autograd.Function):
        """A DTensor input as this device's block of its conversion; backward: the block's
        gradient, placed as ``gp``, redistributed by DTensor to the producer's gradient placement."""

        @staticmethod
        def forward(ctx, src, local, runner, name, gp):
            ctx.runner, ctx.name, ctx.gp = runner, name, gp
            # a ZeRO-2 weight's gradient goes to its sharded state (a reduce-scatter), as the plan prices it
            zero = runner.zero.get(name)
            ctx.target = (zero[1] if zero and zero[0] == ZeroStage.GRADIENTS
                          else grad_target(_plan_spec(src.placements)))
            return local.clone()

        @staticmethod
        def backward(ctx, grad):
            runner = ctx.runner
            if runner.accumulated is not None and ctx.name in runner.params:
                # a pipeline: the weight's gradient stays local until the last microbatch (one synchronisation)
                key = (ctx.name, ctx.gp, ctx.target)
                held = runner.accumulated.get(key)
                runner.accumulated[key] = grad.detach().clone() if held is None else held + grad.detach()
                return None, None, None, None, None
            value = runner._dtensor(grad.contiguous(), ctx.gp, ctx.name)
            out = runner._redistribute(value, ctx.target, ("backward", ctx.name))
            return out, None, None, None, None

    class Wrap(torch.autograd.Function):
        """A node's output block as a DTensor placed as its strategy writes it."""

        @staticmethod
        def forward(ctx, local, runner, spec, name):
            ctx.expected = grad_target(spec)
            return runner._dtensor(local.detach(), spec, name)

        @staticmethod
        def backward(ctx, grad):
            got = _plan_spec(grad.placements)
            if got != ctx.expected:  # never: every reader's backward returns the gradient in this placement
                raise RuntimeError(f"gradient placed {got}, expected {ctx.expected}")
            return grad.to_local(), None, None, None

    class ZeroView(torch.autograd.Function):
        """A ZeRO-1/2 weight as its ops read it: the replicated copy the last update gathered; backward:
        its gradient (all-reduced under ZeRO-1, reduce-scattered under ZeRO-2) to the sharded parameter
        the optimizer owns (ZeRO-1: a local slice)."""

        @staticmethod
        def forward(ctx, shard, full, runner, name, state):
            ctx.runner, ctx.name, ctx.state = runner, name, state
            return full.detach().view_as(full)

        @staticmethod
        def backward(ctx, grad):
            return ctx.runner._redistribute(grad, ctx.state, ("backward", ctx.name)), None, None, None, None

    return {"read": Read, "wrap": Wrap, "zero": ZeroView}


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return tuple(reversed(strides))


def _plan_spec(placements) -> Spec:
    from eqsat_dnn.partition.placements import PARTIAL, REPLICATE

    return tuple(Shard(p.dim) if p.is_shard() else PARTIAL if p.is_partial() else REPLICATE for p in placements)


# ---------------------------------------------------------------------------- the worker


def _worker(rank: int, world: int, port: int, job_path: str, result_dir: str, backend: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from eqsat_dnn.partition.processes import join_group

    torch.set_num_threads(1)
    programs, device = join_group(rank, world, port, job_path, backend)
    results = []
    meshes: dict[tuple[int, ...], Any] = {}
    try:
        for program in programs:
            shape = program.mesh_shape
            if shape not in meshes:
                meshes[shape] = init_device_mesh(device.type, shape)
            mesh = meshes[shape]
            groups = {mesh.get_group(k).group_name: k for k in range(mesh.ndim)}
            counter = comm_counter()()
            runner = _Runner(program, mesh, device, counter)
            initial = {name: p.detach().full_tensor().cpu().numpy().copy() for name, p in runner.params.items()}
            losses, times = [], []
            for step in range(program.steps):
                dist.barrier()
                start = time.perf_counter()
                if step == 0:
                    with counter:
                        share = runner.step(keep_grads=True)
                else:
                    share = runner.step()
                times.append(time.perf_counter() - start)
                losses.append(share)
            replicas = torch.tensor([math.prod(shape[k] for k, p in enumerate(spec) if not isinstance(p, Shard))
                                     for _, spec, _ in program.outputs], dtype=torch.float64)
            # each term: the shares summed over the devices, each block counted once (not once per replica)
            shares = torch.tensor(losses, dtype=torch.float64).reshape(len(losses), len(program.outputs)).to(device)
            dist.all_reduce(shares)
            losses = (shares.cpu() / replicas).sum(dim=1).tolist()
            final = {name: p.detach().full_tensor().cpu().numpy() for name, p in runner.params.items()}
            grads = {name: g.full_tensor().cpu().numpy() for name, g in runner.grads.items()}
            issued, unattributed, optimizer = counted(counter, groups, shape)
            results.append({"issued": issued, "unattributed": unattributed, "optimizer": optimizer,
                            "losses": losses, "times": times,
                            "initial": initial if rank == 0 else None, "final": final if rank == 0 else None,
                            "grads": grads if rank == 0 else None})
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(result_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


def _global(write, mesh_shape) -> tuple[int, ...] | None:
    name, spec, local = write
    if local is None:
        return None
    out = list(local)
    for d in {p.dim for p in spec if isinstance(p, Shard)}:
        out[d] *= math.prod(mesh_shape[k] for k, p in enumerate(spec) if isinstance(p, Shard) and p.dim == d)
    return tuple(out)


# ---------------------------------------------------------------------------- the parent


def _reference_training(program: _Program) -> tuple[list[float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Single-device training of the same program: losses, final weights, first gradients."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = _Runner(program)
        losses = [sum(runner.step(keep_grads=step == 0)) for step in range(program.steps)]
        final = {name: p.detach().cpu().numpy() for name, p in runner.params.items()}
        grads = {name: g.cpu().numpy() for name, g in runner.grads.items()}
    finally:
        torch.set_num_threads(threads)
    return losses, final, grads


def _forward_outputs(program: _Program) -> dict[str, np.ndarray]:
    """The torch interpreter's outputs on one device (no training)."""
    import torch

    from eqsat_dnn.partition.ops_torch import compute

    values = {name: torch.from_numpy(np.array(v)) for name, _, v, _ in program.sources}
    with torch.no_grad():
        for node, reads, writes in program.nodes:
            ins = [None if r is None else values[r[0]] for r in reads]
            outs = compute(node, ins, [None if w is None else _global(w, program.mesh_shape) for w in writes],
                           program.constants)
            for w, out in zip(writes, outs):
                if w is not None:
                    values[w[0]] = out
    return {name: values[name].numpy() for name, _, _ in program.outputs}


def _rel(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Largest |a - b| (over the elements ``mask`` selects) over the largest |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = np.abs(a - b) if mask is None else np.abs(a - b)[mask]
    return float(np.max(diff)) / max(scale, 1e-12) if diff.size else 0.0


def check_training(report: TrainReport, program: _Program, ort_outputs: dict[str, np.ndarray], first: dict) -> None:
    """Fill ``report`` from what the run gave (``first``: losses, step times, initial and final weights and
    first gradients, whole) against onnxruntime's forward pass and single-device training of ``program``,
    and add its failures (collectives, optimizer, forward, losses, gradients, weights)."""
    tolerance = report.tolerance
    times = first["times"][1:] or first["times"]
    report.measured_step_s = float(np.median(times))
    torch_out = _forward_outputs(program)
    report.forward_max_rel_error = max((_rel(torch_out[n], ort_outputs[n]) for n in torch_out), default=0.0)
    ref_losses, ref_final, ref_grads = _reference_training(program)
    report.reference_losses = ref_losses
    report.loss_max_rel_error = max((abs(a - b) / max(abs(b), 1e-12) for a, b in zip(report.losses, ref_losses)),
                                    default=0.0)
    largest = max((float(np.max(np.abs(g))) for g in ref_grads.values() if g.size), default=0.0)
    report.grads_max_rel_error = max((float(np.max(np.abs(first["grads"].get(n, 0) - g))) / max(largest, 1e-30)
                                      for n, g in ref_grads.items()), default=0.0)
    # an element whose gradient is zero up to rounding (the key bias of attention: softmax ignores it; the
    # embedding rows of tokens not in the batch) has no signal, and Adam scales rounding noise there up to
    # full steps: weights_max_rel_error leaves such elements out, weights_max_rel_error_all does not
    masks = {n: np.abs(g) > NO_GRADIENT * largest for n, g in ref_grads.items()}
    report.weights_without_gradient = {n: int(m.size - m.sum()) for n, m in masks.items() if not m.all()}
    errors = {n: _rel(first["final"][n], ref_final[n]) for n in ref_final}
    report.weight_errors = {n: _rel(first["final"][n], ref_final[n], masks.get(n)) for n in ref_final}
    report.weights_max_rel_error_all = max(errors.values(), default=0.0)
    report.weights_max_rel_error = max(report.weight_errors.values(), default=0.0)
    report.weights_max_rel_update = max((_rel(first["final"][n], first["initial"][n], masks.get(n))
                                         for n in ref_final), default=0.0)
    if not report.collectives_match:
        mismatch = report.mismatch()
        report.failures.append(f"collectives differ from the plan: {len(mismatch['unplanned'])} unplanned "
                               f"{mismatch['unplanned'][:3]}, {len(mismatch['missing'])} missing "
                               f"{mismatch['missing'][:3]}, {report.unattributed} unattributed")
    if report.optimizer_collectives:
        report.failures.append(f"the optimizer issued {report.optimizer_collectives} collectives")
    if not report.forward_max_rel_error <= 1e-3:
        report.failures.append(f"the torch interpreter's forward pass differs from onnxruntime's by "
                               f"{report.forward_max_rel_error:.3g} (relative)")
    if not report.loss_max_rel_error <= tolerance:
        report.failures.append(f"losses differ from single-device training by {report.loss_max_rel_error:.3g}")
    if not report.grads_max_rel_error <= tolerance:
        report.failures.append(f"first-step gradients differ from single-device training by "
                               f"{report.grads_max_rel_error:.3g} (of the largest gradient)")
    if not report.weights_max_rel_error <= tolerance:
        report.failures.append(f"updated weights differ from single-device training by "
                               f"{report.weights_max_rel_error:.3g}")


def train_plans(jobs: list[tuple[Graph | str | Path | onnx.ModelProto, Plan]], *, steps: int = 3,
                optimizer: str = "sgd", lr: float = 0.01, seed: int = 0, tolerance: float = 1e-4,
                start_method: str = "forkserver", timeout: float = 300.0) -> list[TrainReport]:
    """Train several plans on the same number of devices in one group of processes (see :func:`train_plan`)."""
    try:
        import torch  # noqa: F401 (a clear error when the [dist] extra is missing)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(f"{_EXTRA_HINT} ({exc})") from None
    from eqsat_dnn.partition.processes import device_group, run_ranks
    from eqsat_dnn.partition.run import _reference

    if not jobs:
        return []
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    if steps < 1:
        raise InputError(f"--steps must be at least 1, not {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"the learning rate must be a finite number > 0, not {lr}")
    world, backend = device_group([plan for _, plan in jobs], "trained")
    start = time.perf_counter()
    compiled = []
    for model, plan in jobs:
        if plan.mode != "train":
            raise InputError("a training run needs a plan made in train mode (--mode train)")
        if plan.pipeline is not None:  # (pipeline_run imports this module, not the reverse)
            raise InputError("a plan with pipeline stages or checkpointing trains with "
                             "eqsat_dnn.partition.pipeline_run.train_pipeline")
        graph = prepare_graph(as_graph(model))
        feeds, ort_outputs = _reference(graph, seed)
        program = compile_training(graph, plan, feeds, seed, steps, optimizer, lr)
        expected, substituted = expected_collectives(plan, backend == "gloo")
        compiled.append((program, plan, ort_outputs, expected, substituted))
    per_rank = run_ranks(_worker, [c[0] for c in compiled], world, backend,
                         preload=["torch.distributed", "torch.distributed.tensor", "eqsat_dnn.partition.train"],
                         start_method=start_method, timeout=timeout, prefix="eqsat-dnn-train-")
    reports = []
    for j, (program, plan, ort_outputs, expected, substituted) in enumerate(compiled):
        first = per_rank[0][j]
        report = TrainReport(world, backend, steps, optimizer, lr, losses=list(first["losses"]),
                             issued=list(first["issued"]), expected=expected, substituted=substituted,
                             optimizer_collectives=first["optimizer"], unattributed=first["unattributed"],
                             predicted_step_s=plan.predicted.time_s, tolerance=tolerance)
        for rank in range(1, world):
            if Counter(per_rank[rank][j]["issued"]) != Counter(report.issued):
                report.failures.append(f"rank {rank} issued different collectives from rank 0")
        check_training(report, program, ort_outputs, first)
        report.seconds = time.perf_counter() - start
        reports.append(report)
    return reports


def train_plan(model: Graph | str | Path | onnx.ModelProto, plan: Plan, *, steps: int = 3, optimizer: str = "sgd",
               lr: float = 0.01, seed: int = 0, tolerance: float = 1e-4, start_method: str = "forkserver",
               timeout: float = 300.0, input_shapes: dict[str, list[int]] | None = None) -> TrainReport:
    """Train ``plan`` (made in train mode) for ``steps`` steps on one local process per device of
    its mesh, on DTensor, and check it (see the module docstring). The report's ``ok`` is true when
    the losses and updated weights equal single-device training's within ``tolerance`` (relative),
    the collectives DTensor issued in a step are exactly the plan's forward and backward ones, and
    the optimizer issued none.

    The worker processes start from a fork server, which imports the calling script: call this
    under ``if __name__ == "__main__":`` in a script (notebooks and the CLI need nothing)."""
    return train_plans([(as_graph(model, input_shapes), plan)], steps=steps, optimizer=optimizer, lr=lr, seed=seed,
                       tolerance=tolerance, start_method=start_method, timeout=timeout)[0]


__all__ = ["LossReport", "TrainReport", "check_training", "compile_training", "train_plan", "train_plans"]
