"""Pipeline stages (inter-operator parallelism, after Alpa's inter-op pass) and activation
checkpointing, priced for training.

The graph is cut into *units* at the boundaries of its repeated layers
(:func:`~eqsat_dnn.ir.blocks.repeated_layers`): the glue before the first layer, each copy of
the layer, the glue after the last. A pipeline of ``p`` stages splits mesh axis 0 into ``p`` equal
sub-meshes and gives each stage a contiguous run of units. Each unit is priced on the sub-mesh by the
intra-operator ILP (:func:`~eqsat_dnn.partition.plan.partition`, solved once per distinct unit: the
copies of a layer are priced alike) and by the hand-written baselines, which gives every unit a few
candidate plans of different time and memory; a stage takes one kind of candidate for all its units.

Schedule (:class:`Schedule`, 1F1B): the batch is split into ``m`` microbatches; a stage's time per
microbatch is its units' step time over ``m`` plus the point-to-point send of its output activations
forward and receive of their gradient backward; the step takes ``(m + p - 1)`` times the slowest
stage's microbatch time, of which the fraction :func:`bubble_fraction` ``(p - 1) / (m + p - 1)`` is
idle. Memory per device of stage ``s`` (counted from 0): its weights (with gradients and optimizer
state, as its plans place them) plus the activations of the microbatches in flight under 1F1B,
``min(p - s, m)`` of them, each ``1 / m`` of the whole batch's.

Activation checkpointing trades time for memory per unit: a checkpointed unit keeps only its input
activations, recomputes its forward pass in backward (extra time: its forward compute, a third of a
training step's compute, and the forward collectives on its activations, which the recomputation issues
again; weights are converted once per step and kept, so their collectives are not repeated), and during
its backward holds its activations once more (of one microbatch). Within a stage the units are checkpointed in order, first to last, as many as memory needs.

:func:`plan_stages` is the dynamic programme: over contiguous splits of the units into ``p`` stages,
it minimises the slowest stage (the 1F1B step is proportional to it) under the memory bound, for each
``p`` dividing mesh axis 0; ``p = 1`` is the whole mesh with no pipeline (units priced separately).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable

from eqsat_dnn.errors import InputError
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.partition.collectives import Step, redistribute, step_seconds, step_traffic
from eqsat_dnn.partition.mesh import DeviceMesh, MeshAxis
from eqsat_dnn.partition.placements import Spec, parse_spec, spec_strings

DEFAULT_MICROBATCHES = 8


class Schedule(StrEnum):
    """A pipeline schedule (a string enum: it prints and serialises as its text)."""

    ONE_F_ONE_B = "1F1B"
    """One forward, one backward: warm-up of ``p - s - 1`` forwards at stage ``s``, then alternate."""


def bubble_fraction(stages: int, microbatches: int) -> float:
    """The idle share of a 1F1B (or GPipe) step: ``(p - 1) / (m + p - 1)``."""
    if stages < 1 or microbatches < 1:
        raise InputError(f"a pipeline needs at least one stage and one microbatch, not {stages} and {microbatches}")
    return (stages - 1) / (microbatches + stages - 1)


def in_flight(stage: int, stages: int, microbatches: int) -> int:
    """Microbatches whose activations stage ``stage`` holds at once under 1F1B."""
    return min(stages - stage, microbatches)


@dataclass(frozen=True)
class UnitCost:
    """One unit's price under one candidate plan on a sub-mesh (full batch, per device)."""

    compute_s: float
    """Forward and backward compute."""
    latency_s: float
    """The fixed part (launch, alpha) of the collectives on activations: paid again by every microbatch."""
    bandwidth_s: float
    """Their bytes' part: divided among the microbatches."""
    weight_comm_s: float
    """Collectives on weights (gradient synchronisation, ZeRO): once per step, after the last microbatch."""
    weight_bytes: float
    """Weights, gradients and optimizer state."""
    activation_bytes: float
    input_bytes: float
    """Activations entering the unit (what a checkpointed unit keeps)."""
    output_bytes: float
    """Whole activations leaving the unit for later ones (what a stage cut sends, all devices together)."""
    into_latency_s: float = 0.0
    """The conversion from the previous unit's outputs to this unit's inputs, both under the same candidate
    (paid when both are in one stage): its fixed part..."""
    into_bandwidth_s: float = 0.0
    """... and its bytes' part."""
    forward_latency_s: float = 0.0
    """The forward collectives on activations (what a checkpointed unit issues again in backward): fixed part..."""
    forward_bandwidth_s: float = 0.0
    """... and bytes' part."""

    @property
    def forward_s(self) -> float:
        """Forward compute (what checkpointing recomputes): a third of a training step's."""
        return self.compute_s / 3.0

    def recompute_s(self, microbatches: int) -> float:
        """What checkpointing adds per microbatch: the forward compute and its activation collectives again."""
        return (self.forward_s + self.forward_bandwidth_s) / microbatches + self.forward_latency_s

    def microbatch_s(self, microbatches: int) -> float:
        """Forward and backward of one microbatch (its weight collectives left out)."""
        return (self.compute_s + self.bandwidth_s) / microbatches + self.latency_s


@dataclass
class Stage:
    """One pipeline stage: its units, its devices, and its price."""

    units: list[str]
    nodes: list[str]
    devices: list[int]
    mesh_shape: tuple[int, ...]
    candidate: str
    """The plan its units take (``ilp`` or a baseline's name)."""
    checkpointed: list[str]
    """Units whose forward is recomputed in backward."""
    microbatch_s: float
    memory_bytes: float
    send_bytes: float = 0.0
    """Bytes sent to the next stage per microbatch (forward; its gradient comes back alike)."""
    sync_s: float = 0.0
    """Collectives on weights after the last microbatch (gradient synchronisation, ZeRO's all-gathers)."""
    weight_bytes: float = 0.0
    span: tuple[int, int] = (0, 0)
    """Its units, as a range of unit indices."""
    unit_sizes: list[int] = field(default_factory=list)
    """Nodes per unit, in order (``nodes`` is their concatenation)."""
    handoff: dict[str, Spec] = field(default_factory=dict)
    """Activations its units hand to later units in another placement than they are produced in (their
    plan's output placement; the next unit's plan takes them from there)."""

    def unit_nodes(self, unit: str) -> list[str]:
        k = self.units.index(unit)
        start = sum(self.unit_sizes[:k])
        return self.nodes[start:start + self.unit_sizes[k]]

    def to_dict(self) -> dict:
        return {"units": list(self.units), "unit_sizes": list(self.unit_sizes), "nodes": list(self.nodes),
                "devices": list(self.devices), "mesh": list(self.mesh_shape), "candidate": self.candidate,
                "checkpointed": list(self.checkpointed), "microbatch_s": self.microbatch_s,
                "memory_bytes_per_device": self.memory_bytes, "weight_bytes_per_device": self.weight_bytes,
                "send_bytes": self.send_bytes, "sync_s": self.sync_s, "span": list(self.span),
                "handoff": {k: spec_strings(v) for k, v in self.handoff.items()}}

    @staticmethod
    def from_dict(d: dict) -> Stage:
        return Stage(list(d["units"]), list(d["nodes"]), [int(r) for r in d["devices"]], tuple(d["mesh"]),
                     d["candidate"], list(d["checkpointed"]), float(d["microbatch_s"]),
                     float(d["memory_bytes_per_device"]), float(d["send_bytes"]), float(d["sync_s"]),
                     float(d["weight_bytes_per_device"]), tuple(d["span"]), [int(n) for n in d["unit_sizes"]],
                     {k: parse_spec(v) for k, v in d.get("handoff", {}).items()})


@dataclass
class Pipeline:
    """The stages, schedule and price of a pipelined plan."""

    stages: list[Stage]
    microbatches: int
    schedule: Schedule = Schedule.ONE_F_ONE_B
    time_s: float = 0.0
    memory_bytes: float = 0.0
    p2p_s: float = 0.0
    """Point-to-point seconds per microbatch on the slowest stage's path."""
    solve_s: float = 0.0
    options: dict[int, float | None] = field(default_factory=dict)
    """Stages -> the best step time with that many (``None``: does not fit)."""
    parts: tuple = field(default=(), repr=False)
    """The units' plans put together: placements, plan nodes, collectives, ZeRO choices (for the Plan)."""

    @property
    def bubble(self) -> float:
        return bubble_fraction(len(self.stages), self.microbatches)

    def checkpointed(self) -> list[dict]:
        """The checkpointed units: name, stage and first and last node."""
        return [{"unit": u, "stage": k, "first_node": st.unit_nodes(u)[0], "last_node": st.unit_nodes(u)[-1]}
                for k, st in enumerate(self.stages) for u in st.checkpointed]

    def to_dict(self) -> dict:
        """The plan JSON's ``schedule``, ``stages`` and ``checkpointed`` keys."""
        return {"schedule": {"kind": str(self.schedule), "stages": len(self.stages), "microbatches": self.microbatches,
                             "bubble": self.bubble, "time_s": self.time_s,
                             "memory_bytes_per_device": self.memory_bytes, "p2p_s": self.p2p_s,
                             "solve_s": self.solve_s, "options": {str(k): v for k, v in self.options.items()}},
                "stages": [st.to_dict() for st in self.stages],
                "checkpointed": self.checkpointed()}

    @staticmethod
    def from_dict(data: dict) -> Pipeline | None:
        """The pipeline of a plan JSON (``None`` when it has none)."""
        sched = data.get("schedule")
        if not sched:
            return None
        return Pipeline([Stage.from_dict(d) for d in data["stages"]], int(sched["microbatches"]),
                        Schedule(sched["kind"]), float(sched["time_s"]), float(sched["memory_bytes_per_device"]),
                        float(sched["p2p_s"]), float(sched["solve_s"]),
                        {int(k): v for k, v in sched.get("options", {}).items()})


# ---------------------------------------------------------------------------- units


def layer_units(graph: Graph) -> list[list[int]]:
    """The graph's nodes (in order) cut at the start of every copy of its most repeated layer and after
    the last copy; ``[]`` when the graph has no repeated layer (nothing to pipeline)."""
    from eqsat_dnn.ir.blocks import repeated_layers

    groups = repeated_layers(graph)
    if not groups:
        return []
    copies = max(groups, key=len)
    cuts = sorted({min(c) for c in copies} | {max(copies[-1]) + 1} | {0, len(graph.nodes)})
    return [list(range(a, b)) for a, b in zip(cuts, cuts[1:]) if b > a]


def sub_graph(graph: Graph, nodes: list[int]) -> Graph:
    """The nodes ``nodes`` as a graph: inputs are what they read from outside (graph inputs and
    earlier nodes' outputs), outputs what later nodes or the graph's outputs read."""
    inside = [graph.nodes[k] for k in nodes]
    produced = {o for n in inside for o in n.outputs if o}
    later = {i for k, n in enumerate(graph.nodes) if k > max(nodes) for i in n.inputs if i} | set(graph.outputs)
    inputs = list(dict.fromkeys(i for n in inside for i in n.inputs
                                if i and i not in produced and i not in graph.weights))
    outputs = [o for n in inside for o in n.outputs if o and o in later]
    weights = {i: graph.weights[i] for n in inside for i in n.inputs if i in graph.weights}
    return Graph(inside, inputs, outputs, graph.types, weights, graph.model)


def sub_mesh(mesh: DeviceMesh, stages: int) -> DeviceMesh:
    """One stage's mesh: axis 0 divided by ``stages``."""
    first = mesh.axes[0]
    return replace(mesh, axes=(MeshAxis(first.size // stages, first.link), *mesh.axes[1:]))


def stage_devices(mesh: DeviceMesh, stages: int, stage: int) -> list[int]:
    """The ranks of stage ``stage``: those whose axis-0 coordinate falls in its block."""
    size = mesh.shape[0] // stages
    return [r for r in range(mesh.num_devices) if mesh.coordinate(r)[0] // size == stage]


def _tensor_bytes(graph: Graph, names) -> float:
    from eqsat_dnn.cost import itemsize, numel

    total = 0.0
    for name in names:
        t = graph.types.get(name)
        if t is not None:
            total += float(numel(t)) * itemsize(t)
    return total


Candidates = Callable[[Graph, DeviceMesh, bool], dict]
"""A unit's sub-graph, a sub-mesh (of unbounded memory) and whether the unit computes graph outputs (which
must end as the whole plan's do, replicated; other units' outputs may end in any placement) -> its candidate
plans by name (``ilp`` and the baselines'; :func:`eqsat_dnn.partition.plan.partition` provides them: this
module does not plan)."""


def unit_costs(graph: Graph, units: list[list[int]], mesh: DeviceMesh, candidates: Candidates,
               cache: dict) -> list[dict[str, UnitCost]]:
    """Per unit, its candidate plans' prices on ``mesh``, solved once per distinct unit (keyed by its
    nodes' signatures and the mesh; ``cache[key]`` keeps the prices, the candidate plans and the nodes
    they were made for, see :func:`unit_plan`)."""
    out: list[dict[str, UnitCost]] = []
    previous = None
    for nodes in units:
        sub = sub_graph(graph, nodes)
        key = _unit_key(graph, nodes, mesh)
        final = key[2]
        if key not in cache:
            plans = candidates(sub, replace(mesh, memory_bytes=math.inf), final)
            n = mesh.num_devices
            inputs = _tensor_bytes(sub, sub.inputs) / n
            sends = _tensor_bytes(sub, sub.outputs)
            costs = {}
            for name, e in ((name, p.predicted) for name, p in plans.items()):
                weights = sum(c.seconds for c in e.collectives if c.tensor in sub.weights or c.phase == "update")
                latency, _ = _latency_bandwidth([(c.kind, c.mesh_axis, c.bytes) for c in e.collectives
                                                 if c.tensor not in sub.weights and c.phase != "update"], mesh)
                bandwidth = e.comm_s - weights - latency
                forward = _latency_bandwidth([(c.kind, c.mesh_axis, c.bytes) for c in e.collectives
                                              if c.tensor not in sub.weights and c.phase == "forward"], mesh)
                costs[name] = UnitCost(e.compute_s, latency, bandwidth, weights, e.weight_bytes_per_device,
                                       e.memory_bytes_per_device - e.weight_bytes_per_device, inputs, sends,
                                       forward_latency_s=forward[0], forward_bandwidth_s=forward[1])
            # the placements each candidate reads its inputs in and writes its outputs in, by position
            ends = {name: ([p.placements.get(i) for i in sub.inputs], [p.outputs.get(o) for o in sub.outputs])
                    for name, p in plans.items()}
            cache[key] = (costs, plans, nodes, ends)
        costs, ends = cache[key][0], cache[key][3]
        if previous is not None:  # the conversion from the previous unit's outputs, the candidate's on both sides
            costs = {name: replace(c, **_boundary(graph, previous, (sub, ends[name]), name, mesh))
                     for name, c in costs.items()}
        out.append(costs)
        previous = (sub, {name: e[1] for name, e in ends.items()})
    return out


def _latency_bandwidth(collectives: list[tuple[str, int, int]], mesh: DeviceMesh) -> tuple[float, float]:
    """Seconds of (kind, mesh axis, bytes) collectives: the fixed part (launch and alpha terms, paid again by
    every microbatch) and the bytes' part (divided among them)."""
    latency = bandwidth = 0.0
    for kind, axis, nbytes in collectives:
        step = Step(kind, axis, bytes=nbytes)
        moved = step_traffic(step, mesh) / mesh.axes[axis].bandwidth
        latency += step_seconds(step, mesh) - moved
        bandwidth += moved
    return latency, bandwidth


def _boundary(graph: Graph, previous: tuple, current: tuple, candidate: str, mesh: DeviceMesh) -> dict[str, float]:
    """``into_latency_s`` and ``into_bandwidth_s``: the collectives turning the previous unit's outputs (as
    ``candidate`` writes them) into this unit's inputs (as it reads them), forward and backward."""
    (prev_sub, writes), (sub, (reads, _)) = previous, current
    steps = [(c.kind, c.mesh_axis, c.bytes)
             for c in boundary_collectives(graph, prev_sub, writes[candidate], sub, reads, mesh)]
    latency, bandwidth = _latency_bandwidth(steps, mesh)
    return {"into_latency_s": latency, "into_bandwidth_s": bandwidth}


def boundary_collectives(graph: Graph, prev_sub: Graph, writes: list, sub: Graph, reads: list,
                         mesh: DeviceMesh) -> list:
    """The collectives between two consecutive units: each activation the previous unit writes (placed as
    ``writes`` says, by position in its outputs) and this one reads (as ``reads`` says, by position in its
    inputs) redistributed forward, and its gradient (placed as the read leaves it) back to the producer's
    gradient placement, as :mod:`eqsat_dnn.partition.pipeline_run` runs them (DTensor's redistributions)."""
    from eqsat_dnn.cost import itemsize
    from eqsat_dnn.partition.problem import Collective, grad_target

    out = []
    for k, name in enumerate(sub.inputs):
        if name not in prev_sub.outputs:
            continue
        src, dst = writes[prev_sub.outputs.index(name)], reads[k]
        t = graph.types.get(name)
        shape = None if t is None else tuple(t.shape)
        if src is None or dst is None or src == dst or shape is None or not all(isinstance(d, int) for d in shape):
            continue
        for phase, a, b in (("forward", src, dst), ("backward", grad_target(dst), grad_target(src))):
            for s in redistribute(shape, itemsize(t), a, b, mesh.shape):
                if s.is_collective:
                    out.append(Collective(s.kind, name, s.axis, s.bytes, step_seconds(s, mesh), phase, a, b))
    return out


def _unit_key(graph: Graph, nodes: list[int], mesh: DeviceMesh) -> tuple:
    """What makes two units priced alike: their nodes' signatures, the mesh, and whether they end the graph."""
    from eqsat_dnn.ir.blocks import node_signature

    final = any(o in graph.outputs for o in sub_graph(graph, nodes).outputs)
    return tuple(node_signature(graph.nodes[k], graph) for k in nodes), mesh.shape, final


def unit_plan(graph: Graph, nodes: list[int], mesh: DeviceMesh, candidate: str, cache: dict):
    """The candidate plan of the unit made of ``nodes``, with its node and tensor names (it was solved
    for the first unit of its kind: names are mapped position by position)."""
    _, plans, first, _ = cache[_unit_key(graph, nodes, mesh)]
    plan = plans[candidate]
    names: dict[str, str] = {}
    for a, b in zip(first, nodes):
        for x, y in zip(graph.nodes[a].inputs + graph.nodes[a].outputs, graph.nodes[b].inputs + graph.nodes[b].outputs):
            names[x] = y
    placements = {names.get(k, k): v for k, v in plan.placements.items()}
    steps = [replace(n, name=graph.nodes[b].name or graph.nodes[b].outputs[0]) for b, n in zip(nodes, plan.nodes)]
    collectives = [replace(c, tensor=names.get(c.tensor, c.tensor)) for c in plan.collectives]
    zero = {names.get(k, k): replace(z, group=names.get(z.group, z.group)) for k, z in plan.zero.items()}
    # the activations later units read, handed over as the unit's plan ends them (graph outputs end as the plan's)
    handoff = {names.get(k, k): v for k, v in plan.outputs.items()
               if v != plan.placements.get(k) and names.get(k, k) not in graph.outputs}
    return placements, steps, collectives, zero, handoff


# ---------------------------------------------------------------------------- the dynamic programme


def _p2p_seconds(mesh: DeviceMesh, nbytes: float) -> float:
    """One point-to-point message of ``nbytes`` over axis 0's link (the stages' link)."""
    if nbytes <= 0:
        return 0.0
    link = mesh.axes[0]
    return mesh.collective_overhead + link.alpha + nbytes / link.bandwidth


def stage_price(costs: list[dict[str, UnitCost]], stage: int, stages: int, microbatches: int, limit: float,
                mesh: DeviceMesh, send_bytes: float) -> tuple[float, float, str, int, float, float] | None:
    """The fastest way to run units ``costs`` as stage ``stage`` of ``stages`` within ``limit`` bytes per
    device: (microbatch seconds, memory, candidate, units checkpointed from the first, seconds of weight
    collectives after the last microbatch, weight bytes), or ``None``."""
    best = None
    k = in_flight(stage, stages, microbatches)
    slots = microbatches + stages - 1
    # the activations leave (and their gradient comes back) once per microbatch, split over the stage's devices
    p2p = 2 * _p2p_seconds(mesh, send_bytes / microbatches / mesh.num_devices) if stage < stages - 1 else 0.0
    for name in costs[0]:
        units = [c[name] for c in costs]
        weights = sum(u.weight_bytes for u in units)
        time = (sum(u.microbatch_s(microbatches) for u in units)
                # the conversions into each unit (into a stage's first: from the previous stage's last unit, as if
                # planned alike; the graph's first unit has none)
                + sum(u.into_latency_s + u.into_bandwidth_s / microbatches for u in units))
        sync = sum(u.weight_comm_s for u in units)
        for ck in range(len(units) + 1):  # the first ck units checkpointed
            kept = sum(u.input_bytes for u in units[:ck]) + sum(u.activation_bytes for u in units[ck:])
            peak = max((u.activation_bytes for u in units[:ck]), default=0.0)  # one unit recomputed at a time
            memory = weights + (kept * k + peak) / microbatches
            if memory > limit:
                continue
            seconds = time + sum(u.recompute_s(microbatches) for u in units[:ck]) + p2p
            # ranked by its share of the step: (m + p - 1) slots of it, then its weight collectives
            if best is None or seconds + sync / slots < best[0] + best[4] / slots - 1e-15:
                best = (seconds, memory, name, ck, sync, weights)
            break  # more checkpointing only costs time
    return best


def plan_stages(graph: Graph, mesh: DeviceMesh, candidates: Candidates, microbatches: int = DEFAULT_MICROBATCHES,
                stage_counts: list[int] | None = None) -> Pipeline | None:
    """The fastest pipeline within the mesh's memory (see the module docstring) over ``stage_counts``
    (default: every divisor of mesh axis 0), its units priced by ``candidates``; ``None`` when the
    graph has no repeated layer or nothing fits. ``graph`` must be prepared
    (:func:`~eqsat_dnn.partition.problem.prepare_graph`)."""
    import time

    start = time.perf_counter()
    if microbatches < 1:
        raise InputError(f"--microbatches must be at least 1, not {microbatches}")
    units = layer_units(graph)
    if len(units) < 2:
        return None
    names = [f"unit{u}" for u in range(len(units))]
    counts = stage_counts or [p for p in range(1, mesh.shape[0] + 1) if mesh.shape[0] % p == 0]
    cache: dict = {}
    best: Pipeline | None = None
    options: dict[int, float | None] = {}
    for p in counts:
        if p > len(units) or mesh.shape[0] % p:
            options[p] = None
            continue
        sub = sub_mesh(mesh, p)
        m = microbatches if p > 1 else 1  # without a pipeline, microbatches would only repeat latencies
        costs = unit_costs(graph, units, sub, candidates, cache)
        sends = [c["ilp"].output_bytes for c in costs]
        # f[s][j]: the best slowest-stage time of units [0, j) in stages 0..s-1, with the split
        f = [[(math.inf, None)] * (len(units) + 1) for _ in range(p + 1)]
        f[0][0] = (0.0, None)
        for s in range(1, p + 1):
            for j in range(s, len(units) - (p - s) + 1):
                for i in range(s - 1, j):
                    prev = f[s - 1][i][0]
                    if prev == math.inf:
                        continue
                    price = stage_price(costs[i:j], s - 1, p, m, mesh.memory_bytes, sub, sends[j - 1])
                    if price is None:
                        continue
                    value = max(prev, price[0] + price[4] / (m + p - 1))
                    if value < f[s][j][0] - 1e-15:
                        f[s][j] = (value, (i, price))
        if f[p][len(units)][0] == math.inf:
            options[p] = None
            continue
        stages: list[Stage] = []
        j = len(units)
        for s in range(p, 0, -1):
            i, (seconds, memory, candidate, ck, sync, weights) = f[s][j][1]
            nodes = [graph.nodes[k].name or graph.nodes[k].outputs[0] for u in units[i:j] for k in u]
            stages.append(Stage(names[i:j], nodes, stage_devices(mesh, p, s - 1), sub.shape, candidate,
                                names[i:i + ck], seconds, memory, sends[j - 1] / m if s < p else 0.0, sync,
                                weights, (i, j), [len(u) for u in units[i:j]]))
            j = i
        stages.reverse()
        slowest = max(st.microbatch_s for st in stages)
        # the slowest stage sets the pace of (m + p - 1) microbatch slots; weight collectives follow the flush
        step = (m + p - 1) * slowest + max(st.sync_s for st in stages)
        options[p] = step
        if best is None or step < best.time_s:
            p2p = max(2 * _p2p_seconds(sub, st.send_bytes / sub.num_devices) for st in stages) if p > 1 else 0.0
            best = Pipeline(stages, m, Schedule.ONE_F_ONE_B, step, max(s.memory_bytes for s in stages), p2p)
            best.parts = ({}, [], [], {})
            chosen = [st.candidate for st in stages for _ in range(*st.span)]
            owner = [st for st in stages for _ in range(*st.span)]
            for u, nodes in enumerate(units):
                *parts, handoff = unit_plan(graph, nodes, sub, chosen[u], cache)
                owner[u].handoff.update(handoff)
                for whole, part in zip(best.parts, parts):
                    whole.update(part) if isinstance(whole, dict) else whole.extend(part)
                if u:  # the conversion from the previous unit's outputs to this one's inputs
                    writes = cache[_unit_key(graph, units[u - 1], sub)][3][chosen[u - 1]][1]
                    reads = cache[_unit_key(graph, nodes, sub)][3][chosen[u]][0]
                    best.parts[2].extend(boundary_collectives(graph, sub_graph(graph, units[u - 1]), writes,
                                                              sub_graph(graph, nodes), reads, sub))
    if best is not None:
        best.options = options
        best.solve_s = time.perf_counter() - start
    return best


__all__ = ["Candidates", "DEFAULT_MICROBATCHES", "Pipeline", "Schedule", "Stage", "UnitCost", "bubble_fraction", "in_flight",
           "layer_units", "plan_stages", "stage_devices", "stage_price", "sub_graph", "sub_mesh",
           "unit_costs", "unit_plan"]
