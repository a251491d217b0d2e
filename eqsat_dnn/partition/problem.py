"""The partitioning problem: one choice per graph item, a price for every choice
and for every conversion between a producer's placement and a consumer's.

Items are the graph's inputs and weights (a choice is a placement: inputs
arrive however the plan wants them, each device reading its own slice, as a data
loader does; weights are stored as placed), its nodes (a choice is a
:class:`~eqsat_dnn.partition.strategies.Strategy`) and its outputs (the placement
the result must end in: replicated by default, so every device holds what the
single-device program returns).

Prices, in seconds (:func:`evaluate` computes them for any assignment; the ILP
in :mod:`eqsat_dnn.partition.ilp` minimises exactly the same sum):

* compute: each node's strategy at its per-device shapes; in training, nodes on
  the gradient path cost three times their forward time (backward ~ 2x forward);
* forward resharding: for each tensor and each distinct placement its consumers
  need, the collectives of :func:`~eqsat_dnn.partition.collectives.redistribute`
  (a conversion shared by several consumers is paid once);
* training only, backward: for each tensor that needs a gradient, each placement
  its consumers read it in and each set of mesh axes along which they leave
  partial gradients (a tensor read *replicated* along an axis by a strategy that
  divides its work along it), the redistribution of the gradient back to the
  producer's placement (:meth:`PartitionProblem.backward_steps`): the dual of
  the forward conversion, plus the all-reduce of partial gradients (the gradient
  synchronisation of replicated weights in data parallelism, the backward
  all-reduce of Megatron's column-parallel input). This is what DTensor's
  backward issues, collective for collective (:mod:`eqsat_dnn.partition.train`).

Memory per device: the weights as placed, plus, in inference, the largest
working set of one node (its inputs and outputs as that node holds them); in
training, weights, their gradients and the optimizer's state (Adam: two float32
copies of every parameter, placed as the parameter is, or sharded under ZeRO-1/2, see
:mod:`eqsat_dnn.partition.zero`) plus every activation and every weight block gathered for use
(both kept for the backward pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from eqsat_dnn.cost import CostModel, RooflineCostModel, itemsize, numel
from eqsat_dnn.errors import InputError
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.io.onnx_out import fold_weight_expressions
from eqsat_dnn.partition.collectives import Step, redistribute, step_seconds, step_traffic
from eqsat_dnn.partition.mesh import DeviceMesh
from eqsat_dnn.partition.placements import (PARTIAL, REPLICATE, Partial, Replicate, Shard, Spec, all_specs,
                                            replicated)
from eqsat_dnn.partition.strategies import (is_float, node_strategies, static_shape, tensor_bytes)
from eqsat_dnn.partition.zero import ZeroStage, state_spec, update_steps, zero_options

MODES = ("inference", "train")
OPTIMIZERS = {"adam": 2, "sgd": 0}
"""Training optimizers -> float32 copies of each parameter they keep (Adam: first and second moments)."""
OUTPUT_POLICIES = ("replicate", "any")


@dataclass(frozen=True)
class Choice:
    """One option of an item."""

    name: str
    produces: tuple[Spec | None, ...]
    consumes: tuple[Spec | None, ...]
    compute: float = 0.0
    """Forward seconds on one device."""
    zero: ZeroStage = ZeroStage.NONE
    """A trainable weight's ZeRO-1/2 choice (:mod:`eqsat_dnn.partition.zero`)."""
    state: Spec | None = None
    """With ``zero``: the placement of its sharded optimizer state (and, ZeRO-2, gradient)."""

    def splits(self, axis: int) -> bool:
        return any(s is not None and s[axis] != REPLICATE for s in self.produces + self.consumes)


@dataclass
class Item:
    """A graph input, weight, node or output, and its options."""

    kind: str
    """``input``, ``weight``, ``node`` or ``output``."""
    label: str
    produces: list[str]
    consumes: list[str]
    choices: list[Choice]
    node: Node | None = None
    replicate_only: bool = False
    backward: bool = False
    """Training: this node is on the gradient path (its compute counts three times)."""
    tied: int | None = None
    """The item (an earlier copy of the same op or weight in a repeated layer) whose choice this one
    shares; the ILP gives both one variable."""


@dataclass
class TensorInfo:
    type: TensorType | None
    producer: tuple[int, int] | None = None
    """(item, output position)."""
    consumers: list[tuple[int, int]] = field(default_factory=list)
    """(item, input position) of every use, graph outputs included."""
    weight: bool = False
    parameter: bool = False
    """A trainable weight: a float initializer with more than one element."""
    grad: bool = False
    """Training: needs a gradient (a parameter, or computed from one)."""

    @property
    def shape(self) -> tuple[int, ...] | None:
        return static_shape(self.type)

    @property
    def itemsize(self) -> int:
        return itemsize(self.type)


@dataclass(frozen=True)
class Collective:
    """One collective of a plan."""

    kind: str
    tensor: str
    mesh_axis: int
    bytes: int
    """The tensor bytes the collective works on (see :mod:`eqsat_dnn.partition.collectives`)."""
    seconds: float
    phase: str = "forward"
    src: Spec = ()
    dst: Spec = ()


@dataclass
class Evaluation:
    """The price of one assignment."""

    time_s: float
    compute_s: float
    comm_s: float
    comm_bytes: float
    """Bytes one device sends, all collectives together."""
    memory_bytes_per_device: float
    weight_bytes_per_device: float
    collectives: list[Collective]
    fits: bool

    def to_dict(self) -> dict:
        return {"time_s": self.time_s, "compute_s": self.compute_s, "comm_s": self.comm_s,
                "comm_bytes": self.comm_bytes, "memory_bytes_per_device": self.memory_bytes_per_device,
                "weight_bytes_per_device": self.weight_bytes_per_device, "fits_memory": self.fits,
                "collectives": len(self.collectives)}


@dataclass
class PartitionProblem:
    """Items, tensors and prices of one graph on one mesh (see the module docstring)."""

    graph: Graph
    mesh: DeviceMesh
    mode: str
    items: list[Item]
    tensors: dict[str, TensorInfo]
    cost_model: str
    outputs: str
    optimizer: str = "adam"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    """Conversion prices by (tensor type, placements, gradient axes) and block sizes by (tensor type,
    placement): the copies of a repeated layer price the same types alike, so each is computed once."""

    # -- conversions --------------------------------------------------------

    def steps(self, tensor: str, src: Spec, dst: Spec) -> tuple[Step, ...]:
        info = self.tensors[tensor]
        if src == dst:
            return ()
        # a tensor with symbolic dims is never sharded: a flat shape of its representative size will do
        shape = info.shape if info.shape is not None else (max(1, int(numel(info.type))),)
        return redistribute(shape, info.itemsize, src, dst, self.mesh.shape)

    def forward_seconds(self, tensor: str, src: Spec, dst: Spec) -> float:
        key = (self.tensors[tensor].type, src, dst)
        if key not in self._cache:
            self._cache[key] = sum(step_seconds(s, self.mesh) for s in self.steps(tensor, src, dst))
        return self._cache[key]

    def grad_axes(self, choice: Choice, dst: Spec) -> frozenset[int]:
        """Mesh axes along which a consumer in ``choice`` leaves a partial gradient for an input it
        reads as ``dst``: the input is replicated on the axis while the work is divided on it."""
        return frozenset(k for k in range(self.mesh.ndim)
                         if isinstance(dst[k], Replicate) and choice.splits(k))

    def backward_steps(self, tensor: str, src: Spec, dst: Spec, grad_axes: frozenset[int],
                       target: Spec | None = None) -> list[Step]:
        """The backward pass's collectives for a tensor produced as ``src`` and read as ``dst`` by
        consumers that leave partial gradients along ``grad_axes``: the gradient, placed as
        :func:`grad_placement` says, redistributed to :func:`grad_target` of ``src`` (what DTensor's
        backward does, and what :mod:`eqsat_dnn.partition.train` runs). For one axis this is the
        dual of the forward conversion (an all-gather's gradient is reduce-scattered when the
        consumers divide their work along the axis, else sliced; an all-to-all's goes back by
        all-to-all; an all-reduce's passes through) plus an all-reduce of the partial gradient of a
        replicated tensor read by work divided along an axis (the gradient synchronisation of data
        parallelism, the backward all-reduce of Megatron's column-parallel input). ``target``
        overrides the gradient's destination (a ZeRO-2 weight's: its sharded state, see
        :meth:`gradient_target`)."""
        goal = grad_target(src) if target is None else target
        return [s for s in self.steps(tensor, grad_placement(dst, grad_axes), goal) if s.is_collective]

    def backward_seconds(self, tensor: str, src: Spec, dst: Spec, grad_axes: frozenset[int],
                         target: Spec | None = None) -> float:
        key = (self.tensors[tensor].type, src, dst, grad_axes, target)
        if key not in self._cache:
            self._cache[key] = sum(step_seconds(s, self.mesh)
                                     for s in self.backward_steps(tensor, src, dst, grad_axes, target))
        return self._cache[key]

    def gradient_target(self, choice: Choice, pos: int = 0) -> Spec | None:
        """Where the gradient of the tensor a producer's ``choice`` writes at ``pos`` goes: a ZeRO-2
        weight's sharded state (its gradient is reduce-scattered), else ``None`` (the tensor's own
        placement, :func:`grad_target`)."""
        return choice.state if choice.zero == ZeroStage.GRADIENTS else None

    def update_collectives(self, item: Item, choice: Choice) -> list[Collective]:
        """The all-gathers of a ZeRO-1/2 weight's updated shards after the optimizer step."""
        name = item.produces[0] if item.kind == "weight" else ""
        if not name or choice.zero == ZeroStage.NONE:
            return []
        info, spec = self.tensors[name], choice.produces[0]
        steps = update_steps(info.shape, info.itemsize, spec, choice.zero, choice.state, self.mesh.shape)
        return [Collective(s.kind, name, s.axis, s.bytes, step_seconds(s, self.mesh), "update", choice.state, spec)
                for s in steps]

    def update_seconds(self, item: Item, choice: Choice) -> float:
        if choice.zero == ZeroStage.NONE:
            return 0.0
        return sum(c.seconds for c in self.update_collectives(item, choice))

    # -- item prices --------------------------------------------------------

    def block_bytes(self, tensor: str, spec: Spec | None) -> int:
        """Bytes of one device's block of ``tensor`` placed as ``spec``."""
        key = (self.tensors[tensor].type, spec)
        if key not in self._cache:
            self._cache[key] = tensor_bytes(key[0], spec, self.mesh)
        return self._cache[key]

    def held_bytes(self, tensor: str, src: Spec, dst: Spec) -> float:
        """Training: the block of a weight that a conversion with a collective (a ZeRO-3 / FSDP
        all-gather) makes, which autograd keeps until the backward pass; 0 otherwise."""
        if self.mode != "train" or not self.tensors[tensor].weight or src == dst:
            return 0.0
        if not any(s.is_collective for s in self.steps(tensor, src, dst)):
            return 0.0
        return float(self.block_bytes(tensor, dst))

    def compute_seconds(self, item: Item, choice: Choice) -> float:
        return choice.compute * (3.0 if self.mode == "train" and item.backward else 1.0)

    def io_bytes(self, item: Item, choice: Choice) -> float:
        """Bytes a node holds while it runs (its inputs as it reads them, its outputs)."""
        total = 0.0
        for name, spec in zip(item.consumes, choice.consumes):
            if name:
                total += self.block_bytes(name, spec)
        for name, spec in zip(item.produces, choice.produces):
            if name:
                total += self.block_bytes(name, spec)
        return total

    def output_bytes(self, item: Item, choice: Choice) -> float:
        return float(sum(self.block_bytes(n, s)
                         for n, s in zip(item.produces, choice.produces) if n))

    def weight_bytes(self, item: Item, choice: Choice) -> float:
        """Memory a weight takes as placed; in training a parameter's gradient and optimizer state too,
        placed as the weight or, under ZeRO, as its sharded state (ZeRO-1: the optimizer state only)."""
        info = self.tensors[item.produces[0]]
        stored = self.block_bytes(item.produces[0], choice.produces[0])
        if self.mode != "train" or not info.parameter:
            return float(stored)
        state = stored if choice.zero == ZeroStage.NONE else self.block_bytes(item.produces[0], choice.state)
        grad = state if choice.zero == ZeroStage.GRADIENTS else stored
        return stored + grad + OPTIMIZERS[self.optimizer] * 4.0 * state / max(1, info.itemsize)

    # -- whole assignments --------------------------------------------------

    def evaluate(self, assignment: list[int]) -> Evaluation:
        """Price an assignment (item index -> choice index) the way the ILP prices it."""
        compute = 0.0
        weights = 0.0
        peak = 0.0
        activations = 0.0
        collectives: list[Collective] = []
        for item, c in zip(self.items, assignment):
            choice = item.choices[c]
            compute += self.compute_seconds(item, choice)
            if item.kind == "weight":
                weights += self.weight_bytes(item, choice)
                collectives.extend(self.update_collectives(item, choice))
            elif item.kind == "node":
                peak = max(peak, self.io_bytes(item, choice))
                activations += self.output_bytes(item, choice)
        for name, info in self.tensors.items():
            if info.producer is None or not info.consumers:
                continue
            p_item, p_pos = info.producer
            p_choice = self.items[p_item].choices[assignment[p_item]]
            src, target = p_choice.produces[p_pos], self.gradient_target(p_choice, p_pos)
            needed: dict[Spec, None] = {}
            keys: dict[tuple[Spec, frozenset[int]], None] = {}
            for c_item, c_pos in info.consumers:
                choice = self.items[c_item].choices[assignment[c_item]]
                dst = choice.consumes[c_pos]
                needed[dst] = None
                if self.mode == "train" and info.grad:
                    keys[(dst, self.grad_axes(choice, dst))] = None
            for dst in needed:
                activations += self.held_bytes(name, src, dst)
                for step in self.steps(name, src, dst):
                    if step.is_collective:
                        collectives.append(Collective(step.kind, name, step.axis, step.bytes,
                                                      step_seconds(step, self.mesh), "forward", src, dst))
            for dst, axes in keys:
                for step in self.backward_steps(name, src, dst, axes, target):
                    collectives.append(Collective(step.kind, name, step.axis, step.bytes,
                                                  step_seconds(step, self.mesh), "backward", src, dst))
        comm = sum(c.seconds for c in collectives)
        traffic = sum(step_traffic(Step(c.kind, c.mesh_axis, bytes=c.bytes), self.mesh) for c in collectives)
        memory = weights + (activations if self.mode == "train" else peak)
        return Evaluation(compute + comm, compute, comm, traffic, memory, weights, collectives,
                          memory <= self.mesh.memory_bytes)


def grad_placement(dst: Spec, grad_axes: frozenset[int] | set[int]) -> Spec:
    """How the gradient of a tensor read as ``dst`` is placed, per mesh axis: a shard's gradient
    is the same shard; a partial value's gradient is replicated (every summand gets the whole
    gradient of the sum); a replicated read is partial along the ``grad_axes`` (the consumer
    divided its work along the axis: each device holds its share of the gradient), else replicated."""
    return tuple(PARTIAL if k in grad_axes else (REPLICATE if isinstance(p, Partial) else p)
                 for k, p in enumerate(dst))


def grad_target(src: Spec) -> Spec:
    """The placement a tensor produced as ``src`` takes its gradient in (a partial one replicated)."""
    return tuple(REPLICATE if isinstance(p, Partial) else p for p in src)


# ---------------------------------------------------------------------------- building


def as_graph(model: Graph | str | Path | onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None,
             load_weights: bool = True) -> Graph:
    """A Graph from a Graph, an ONNX file or a ``ModelProto`` (``load_weights=False``: shapes only,
    no weight read or copied; planning needs nothing more)."""
    if isinstance(model, Graph):
        return model
    from eqsat_dnn.io.onnx_in import load_model

    return load_model(model, input_shapes=input_shapes, load_weights=load_weights)


def prepare_graph(graph: Graph, values: bool = True) -> Graph:
    """The graph a plan is made for: sub-expressions over weights folded into weights (as ONNX
    export does; ``values=False`` folds them by type only, evaluating nothing), nodes in an order
    where every producer comes first."""
    graph = fold_weight_expressions(graph, values)
    available = set(graph.inputs) | set(graph.weights)
    producers = graph.producers()
    order: list[Node] = []
    pending = list(graph.nodes)
    while pending:
        rest = []
        for node in pending:
            if all((not i) or i in available or i not in producers for i in node.inputs):
                order.append(node)
                available.update(o for o in node.outputs if o)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise InputError("the graph has a cycle")
        pending = rest
    return Graph(order, graph.inputs, graph.outputs, graph.types, graph.weights, graph.model)


def build_problem(graph: Graph, mesh: DeviceMesh, mode: str = "inference", cost_model: CostModel | None = None,
                  outputs: str = "replicate", optimizer: str = "adam", tie: bool = True) -> PartitionProblem:
    """Items, tensors and strategies of ``graph`` on ``mesh`` (see the module docstring); ``optimizer``
    (training) is ``adam`` or ``sgd`` (no state). ``tie``: corresponding ops and weights of repeated
    layers (:func:`~eqsat_dnn.ir.blocks.repeated_layers`) share one choice (``Item.tied``)."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
    if outputs not in OUTPUT_POLICIES:
        raise InputError(f"unknown output policy {outputs!r} (choose from {', '.join(OUTPUT_POLICIES)})")
    model = cost_model or RooflineCostModel(mesh.device)
    graph = prepare_graph(graph, values=False)  # the problem needs types, never values
    nodes = graph.nodes
    tensors: dict[str, TensorInfo] = {}
    items: list[Item] = []

    def info(name: str) -> TensorInfo:
        if name not in tensors:
            tensors[name] = TensorInfo(graph.types.get(name))
        return tensors[name]

    def source(kind: str, name: str) -> None:
        t = info(name)
        specs = all_specs(static_shape(t.type), mesh.shape)
        items.append(Item(kind, name, [name], [], [Choice(_spec_name(s), (s,), ()) for s in specs]))
        t.producer = (len(items) - 1, 0)

    used = {i for n in nodes for i in n.inputs if i} | set(graph.outputs)
    for name in graph.inputs:
        if name in used:
            source("input", name)
    for name in graph.weights:
        if name in used and name not in tensors:
            source("weight", name)
            t = tensors[name]
            t.weight = True
            t.parameter = is_float(t.type) and numel(t.type) > 1
            if mode == "train" and t.parameter:
                _add_zero_choices(items[-1], t, mesh, OPTIMIZERS[optimizer] > 0)
    rep_node: dict[int, int] = {}
    if tie:
        from eqsat_dnn.ir.blocks import repeated_layers

        for group in repeated_layers(graph):
            for copy in group[1:]:
                rep_node.update(zip(copy, group[0]))
    node_item: dict[int, int] = {}
    names: set[str] = set()
    for n, node in enumerate(nodes):
        label = node.name or (node.outputs[0] if node.outputs else f"node{len(items)}")
        while label in names:
            label += "_"
        names.add(label)
        tied = node_item.get(rep_node.get(n, -1))
        if tied is not None:  # the same op at the same types: the same strategies
            choices, replicate_only = items[tied].choices, items[tied].replicate_only
        else:
            ops = node_strategies(node, graph, mesh, model)
            choices = [Choice(s.name, s.outputs, s.inputs, s.compute) for s in ops.strategies]
            replicate_only = ops.replicate_only
        if not choices:
            raise InputError(f"node {label} ({node.op}) has no valid placement on this mesh")
        index = len(items)
        node_item[n] = index
        for k, name in enumerate(node.inputs):
            if name:
                if name not in tensors or tensors[name].producer is None:
                    raise InputError(f"node {label} reads {name!r}, which nothing produces")
                tensors[name].consumers.append((index, k))
        for k, name in enumerate(node.outputs):
            if name:
                info(name).producer = (index, k)
        items.append(Item("node", label, list(node.outputs), list(node.inputs), choices, node, replicate_only,
                          tied=tied))
    for name in graph.outputs:
        if name not in tensors or tensors[name].producer is None:
            raise InputError(f"graph output {name!r} is not computed by the graph")
        t = tensors[name]
        specs = ([replicated(mesh.ndim)] if outputs == "replicate"
                 else all_specs(static_shape(t.type), mesh.shape))
        t.consumers.append((len(items), 0))
        items.append(Item("output", name, [], [name], [Choice(_spec_name(s), (), (s,)) for s in specs]))
    if rep_node:
        _tie_weights(items, tensors)
    if mode == "train":
        for item in items:
            if item.kind == "node":
                if any(i and tensors[i].grad for i in item.consumes):
                    item.backward = True
                    for o in item.produces:
                        if o and is_float(tensors[o].type):
                            tensors[o].grad = True
            elif item.kind == "weight" and tensors[item.produces[0]].parameter:
                tensors[item.produces[0]].grad = True
    name = model.name
    return PartitionProblem(graph, mesh, mode, items, tensors, name, outputs, optimizer)


def _tie_weights(items: list[Item], tensors: dict[str, TensorInfo]) -> None:
    """Tie weights of the same type read at the same positions by the same tied ops (a layer's
    weight and its counterpart in every copy of the layer)."""
    first: dict[tuple, int] = {}
    for i, item in enumerate(items):
        if item.kind != "weight":
            continue
        info = tensors[item.produces[0]]
        readers = [(items[c].tied if items[c].tied is not None else c, pos) for c, pos in info.consumers]
        if not readers:
            continue
        key = (info.type, tuple(sorted(readers)))
        if key in first:
            item.tied = first[key]
        else:
            first[key] = i


def _add_zero_choices(item: Item, info: TensorInfo, mesh: DeviceMesh, has_state: bool) -> None:
    """A trainable weight's ZeRO-1/2 choices: each placement replicated along some mesh axis, with
    its state sharded over those axes (:mod:`eqsat_dnn.partition.zero`)."""
    extra = []
    for choice in item.choices:
        spec = choice.produces[0]
        state = state_spec(spec, info.shape, mesh.shape)
        if state is not None:
            extra += [Choice(f"{choice.name}+zero{int(stage)}", choice.produces, (), zero=stage, state=state)
                      for stage in zero_options(has_state)]
    item.choices.extend(extra)


def _spec_name(spec: Spec) -> str:
    from eqsat_dnn.partition.placements import short

    return short(spec)


# ---------------------------------------------------------------------------- heuristic plans


def _weight_operand(problem: PartitionProblem, item: Item) -> int | None:
    """For a MatMul/Gemm, the position of a 2-D weight operand (a Linear layer's matrix)."""
    node = item.node
    if node is None:
        return None
    if node.op_type not in ("MatMul", "Gemm"):
        return None
    for k in (1, 0):
        name = node.inputs[k] if k < len(node.inputs) else ""
        t = problem.tensors.get(name) if name else None
        if t is not None and t.weight and t.shape is not None and len(t.shape) == 2:
            return k
    return None


def _source_spec(problem: PartitionProblem, name: str, assignment: list[int]) -> Spec | None:
    """The placement ``name`` is produced in, when its producer has been decided."""
    p_item, p_pos = problem.tensors[name].producer
    if assignment[p_item] < 0:
        return None
    return problem.items[p_item].choices[assignment[p_item]].produces[p_pos]


def greedy_assignment(problem: PartitionProblem, allow: Callable[[int, Item, Choice, list[int]], bool],
                      source_spec: Callable[[Item], Spec | None]) -> list[int]:
    """Walk the items in order; each node takes, among its allowed choices (all of them when none
    is allowed), the one of least compute plus conversion from what its producers chose. A source
    (input, weight) whose ``source_spec`` is ``None`` takes the placement its first consumer asks for."""
    assignment = [-1] * len(problem.items)
    for i, item in enumerate(problem.items):
        if item.kind in ("input", "weight"):
            spec = source_spec(item)
            if spec is not None:
                assignment[i] = next((c for c, ch in enumerate(item.choices) if ch.produces[0] == spec), 0)
    for i, item in enumerate(problem.items):
        if item.kind in ("input", "weight"):
            continue
        allowed = [c for c, choice in enumerate(item.choices) if allow(i, item, choice, assignment)]
        best, best_cost = 0, math.inf
        for c in allowed or range(len(item.choices)):
            choice = item.choices[c]
            cost = problem.compute_seconds(item, choice)
            for name, dst in zip(item.consumes, choice.consumes):
                src = _source_spec(problem, name, assignment) if name else None
                if src is not None:  # an undecided source will take this placement
                    cost += problem.forward_seconds(name, src, dst)
            if cost < best_cost - 1e-15:
                best, best_cost = c, cost
        assignment[i] = best
        choice = item.choices[best]
        for name, dst in zip(item.consumes, choice.consumes):
            if name and _source_spec(problem, name, assignment) is None:
                p_item = problem.tensors[name].producer[0]
                src_item = problem.items[p_item]
                assignment[p_item] = next((c for c, ch in enumerate(src_item.choices) if ch.produces[0] == dst), 0)
    return [max(a, 0) for a in assignment]


def _batch_spec(problem: PartitionProblem, item: Item, axes: list[int], dim: int = 0) -> Spec:
    """``dim`` (the batch) sharded over ``axes`` (as many of them as divide it), replicated elsewhere."""
    ndim = problem.mesh.ndim
    shape = problem.tensors[item.produces[0]].shape
    chosen: list[int] = []
    for k in axes:
        trial = chosen + [k]
        if shape and len(shape) > dim and shape[dim] % math.prod(problem.mesh.shape[a] for a in trial) == 0:
            chosen = trial
    return tuple(Shard(dim) if k in chosen else REPLICATE for k in range(ndim))


def data_parallel(problem: PartitionProblem) -> list[int]:
    """Pure data parallelism: inputs split along dim 0 (the batch) on every mesh axis, weights
    replicated, every op the cheapest way that keeps its weights whole."""
    axes = list(range(problem.mesh.ndim))
    rep = replicated(problem.mesh.ndim)

    def allow(i: int, item: Item, choice: Choice, assignment: list[int]) -> bool:
        return all(not n or not problem.tensors[n].weight or s == rep for n, s in zip(item.consumes, choice.consumes))

    def source(item: Item) -> Spec:
        return rep if item.kind == "weight" else _batch_spec(problem, item, axes)

    return greedy_assignment(problem, allow, source)


def megatron(problem: PartitionProblem) -> list[int]:
    """Megatron-LM's tensor parallelism on the last mesh axis (data parallelism on the others):
    a Linear layer whose input arrives split along its features is row-parallel (its weight split
    by rows, the result partial), every other Linear layer column-parallel (weight split by
    columns); everything else takes the cheapest way given its inputs."""
    ndim = problem.mesh.ndim
    tp = ndim - 1
    dp_axes = list(range(ndim - 1))

    def allow(i: int, item: Item, choice: Choice, assignment: list[int]) -> bool:
        for n, s in zip(item.consumes, choice.consumes):
            if n and problem.tensors[n].weight and any(not isinstance(s[k], Replicate) for k in dp_axes):
                return False
        k = _weight_operand(problem, item)
        if k is None:
            # any other op reads its activations on the tensor-parallel axis as they come
            for n, s in zip(item.consumes, choice.consumes):
                if n and not problem.tensors[n].weight:
                    src = _source_spec(problem, n, assignment)
                    if src is not None and src[tp] != s[tp]:
                        return False
            return True
        act = 1 - k
        name = item.consumes[act]
        src = _source_spec(problem, name, assignment)
        if src is None:
            return True
        rank = len(problem.tensors[name].shape or ())
        contraction = rank - 1 if act == 0 else rank - 2
        node = item.node
        if node is not None and node.op == "Gemm":
            trans = int(node.attrs.get("transA" if act == 0 else "transB", 0))
            contraction = (0 if trans else 1) if act == 0 else (1 if trans else 0)
        rule = choice.name.split("/")[tp]
        if src[tp] == Shard(contraction):
            return rule == "k"
        return rule == ("col" if k == 1 else "row")

    def source(item: Item) -> Spec | None:
        if item.kind == "weight":
            return None  # placed as its first consumer wants it
        return _batch_spec(problem, item, dp_axes)

    return greedy_assignment(problem, allow, source)


def fsdp(problem: PartitionProblem) -> list[int]:
    """Fully sharded data parallelism (ZeRO-3, PyTorch FSDP): data parallel, but every weight (with
    its gradient and optimizer state) stored split over all devices along its first dim that
    divides evenly; each op gathers it whole (all-gather forward, reduce-scatter of the gradient)."""
    axes = list(range(problem.mesh.ndim))
    rep = replicated(problem.mesh.ndim)

    def allow(i: int, item: Item, choice: Choice, assignment: list[int]) -> bool:
        return all(not n or not problem.tensors[n].weight or s == rep for n, s in zip(item.consumes, choice.consumes))

    def source(item: Item) -> Spec:
        if item.kind != "weight":
            return _batch_spec(problem, item, axes)
        shape = problem.tensors[item.produces[0]].shape or ()
        best = rep
        for d in range(len(shape)):
            spec = _batch_spec(problem, item, axes, d)
            if sum(p != REPLICATE for p in spec) > sum(p != REPLICATE for p in best):
                best = spec
        return best

    return greedy_assignment(problem, allow, source)


BASELINES: dict[str, Callable[[PartitionProblem], list[int]]] = {
    "data_parallel": data_parallel,
    "megatron": megatron,
    "fsdp": fsdp,
}
"""Hand-written plans the ILP is compared with."""

__all__ = ["BASELINES", "as_graph", "prepare_graph", "Choice", "Collective", "Evaluation", "Item", "MODES", "OPTIMIZERS",
           "OUTPUT_POLICIES",
           "PartitionProblem", "TensorInfo", "build_problem", "data_parallel", "fsdp", "grad_placement", "grad_target",
           "greedy_assignment", "megatron"]
