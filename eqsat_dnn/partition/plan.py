"""A partitioning plan: what :func:`partition` returns, writes as JSON and draws as a table,
and how it annotates an ONNX model with ONNX's own sharding specs.

The JSON file holds ``mesh``, ``mode``, ``placements`` (tensor name -> one
DTensor placement per mesh axis, as produced), ``nodes`` (each node's strategy
and the placements it reads and writes), ``outputs`` (the placement each graph
output ends in), ``collectives`` (each with ``kind``, ``tensor``, ``mesh_axis``,
``bytes``, ``seconds``, ``phase``, ``from`` and ``to``), ``predicted`` (``time_s``,
``memory_bytes_per_device``, ``comm_bytes``, ...), the same figures for the
hand-written ``baselines`` (pure data parallelism, Megatron-LM, FSDP), the
``replicate_only`` ops (no sharding rule: run whole on every device) and what
the ``solver`` did. Training plans add ``zero`` (per trainable weight whose state is sharded: its
ZeRO ``stage`` 1-3, the ``state`` placement and its weight ``group``, the tied class it shares the
choice with; collectives of phase ``update`` are ZeRO-1/2's all-gathers after the optimizer step)
and, when pipelined or checkpointed (:mod:`eqsat_dnn.partition.stages`), ``schedule`` (``kind``
1F1B, ``stages``, ``microbatches``, ``bubble``, ...), ``stages`` (each stage's units, nodes,
devices, sub-mesh, candidate plan and price) and ``checkpointed`` (the units recomputed in backward).

ONNX annotation (IR version 11): ``ModelProto.configuration`` gets one
``DeviceConfigurationProto`` for the mesh, and every node gets a
``NodeDeviceConfigurationProto`` with a ``ShardingSpecProto`` per input and
output. A spec lists the shards in row-major order over the sharded axes, each
on one device or, when replicated, on a device group (a negative key into
``index_to_device_group_map``). ONNX cannot say ``Partial``: such tensors get no
spec and are named in the node's ``eqsat_dnn.partial`` metadata. The checker
does not validate these fields and no runtime consumes them yet; they are hints.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from eqsat_dnn.cost import CostModel
from eqsat_dnn.errors import InputError, OutputError
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.partition.mesh import DEFAULT_MACHINE, DeviceMesh, get_mesh
from eqsat_dnn.partition.placements import (Partial, Shard, Spec, block_index, parse_spec, shard_axes, short,
                                            spec_strings)
from eqsat_dnn.partition.problem import (BASELINES, Collective, Evaluation, PartitionProblem, as_graph,
                                         build_problem, prepare_graph)
from eqsat_dnn.partition.stages import Pipeline
from eqsat_dnn.partition.zero import ZeroStage, zero_stages

PLAN_VERSION = 1


@dataclass
class PlanNode:
    """One node's strategy: the placements it reads (per input) and writes (per output)."""

    name: str
    op: str
    strategy: str
    inputs: list[Spec | None]
    outputs: list[Spec | None]
    compute_s: float = 0.0


@dataclass(frozen=True)
class ZeroChoice:
    """One weight's ZeRO stage, the placement of its sharded state, and its weight group (the first
    weight of its tied class: every copy of a repeated layer's weight takes the same stage)."""

    stage: ZeroStage
    state: Spec
    group: str


@dataclass
class Plan:
    """The chosen placement of every tensor, and its predicted price (see the module docstring)."""

    mesh: DeviceMesh
    mode: str
    placements: dict[str, Spec]
    nodes: list[PlanNode]
    outputs: dict[str, Spec]
    collectives: list[Collective]
    predicted: Evaluation
    baselines: dict[str, Evaluation] = field(default_factory=dict)
    replicate_only: dict[str, int] = field(default_factory=dict)
    """Op type -> number of nodes with no sharding rule (gathered and run whole on every device)."""
    solver: dict[str, Any] = field(default_factory=dict)
    cost_model: str = ""
    zero: dict[str, ZeroChoice] = field(default_factory=dict)
    """Training: per trainable weight whose state is sharded, its ZeRO stage (see :mod:`eqsat_dnn.partition.zero`)."""
    pipeline: Pipeline | None = None
    """Training: pipeline stages, their 1F1B schedule and checkpointed layers (:mod:`eqsat_dnn.partition.stages`);
    ``None`` for a plan over the whole mesh without checkpointing."""

    def collective_counts(self, phase: str | None = "forward") -> Counter:
        """Number of collectives per kind (of one phase, or all with ``None``)."""
        return Counter(c.kind for c in self.collectives if phase is None or c.phase == phase)

    def node(self, name: str) -> PlanNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # -- JSON -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        pred = self.predicted
        return {
            "version": PLAN_VERSION,
            "mesh": self.mesh.to_dict(),
            "mode": self.mode,
            "cost_model": self.cost_model,
            "predicted": {"time_s": pred.time_s, "memory_bytes_per_device": pred.memory_bytes_per_device,
                          "comm_bytes": pred.comm_bytes, "compute_s": pred.compute_s, "comm_s": pred.comm_s,
                          "weight_bytes_per_device": pred.weight_bytes_per_device, "fits_memory": pred.fits},
            "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
            "placements": {k: spec_strings(v) for k, v in self.placements.items()},
            "outputs": {k: spec_strings(v) for k, v in self.outputs.items()},
            "nodes": [{"name": n.name, "op": n.op, "strategy": n.strategy, "compute_s": n.compute_s,
                       "inputs": [None if s is None else spec_strings(s) for s in n.inputs],
                       "outputs": [None if s is None else spec_strings(s) for s in n.outputs]}
                      for n in self.nodes],
            "collectives": [{"kind": c.kind, "tensor": c.tensor, "mesh_axis": c.mesh_axis, "bytes": c.bytes,
                             "seconds": c.seconds, "phase": c.phase, "from": spec_strings(c.src),
                             "to": spec_strings(c.dst)} for c in self.collectives],
            "replicate_only": dict(self.replicate_only),
            "solver": dict(self.solver),
            "zero": {k: {"stage": int(z.stage), "state": spec_strings(z.state), "group": z.group}
                     for k, z in self.zero.items()},
            **(self.pipeline.to_dict() if self.pipeline is not None else {}),
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Plan:
        try:
            if data.get("version") != PLAN_VERSION:
                raise InputError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}")
            mesh = DeviceMesh.from_dict(data["mesh"])
            p = data["predicted"]
            predicted = Evaluation(float(p["time_s"]), float(p.get("compute_s", 0.0)), float(p.get("comm_s", 0.0)),
                                   float(p["comm_bytes"]), float(p["memory_bytes_per_device"]),
                                   float(p.get("weight_bytes_per_device", 0.0)), [], bool(p.get("fits_memory", True)))
            collectives = [Collective(c["kind"], c["tensor"], int(c["mesh_axis"]), int(c["bytes"]),
                                      float(c.get("seconds", 0.0)), c.get("phase", "forward"),
                                      parse_spec(c.get("from", [])), parse_spec(c.get("to", [])))
                           for c in data["collectives"]]
            predicted.collectives = collectives
            nodes = [PlanNode(n["name"], n["op"], n["strategy"],
                              [None if s is None else parse_spec(s) for s in n["inputs"]],
                              [None if s is None else parse_spec(s) for s in n["outputs"]],
                              float(n.get("compute_s", 0.0)))
                     for n in data["nodes"]]
            baselines = {k: Evaluation(float(v["time_s"]), float(v["compute_s"]), float(v["comm_s"]),
                                       float(v["comm_bytes"]), float(v["memory_bytes_per_device"]),
                                       float(v["weight_bytes_per_device"]), [], bool(v["fits_memory"]))
                         for k, v in data.get("baselines", {}).items()}
            zero = {k: ZeroChoice(ZeroStage(int(z["stage"])), parse_spec(z["state"]), z.get("group", k))
                    for k, z in data.get("zero", {}).items()}
            return Plan(mesh, data["mode"], {k: parse_spec(v) for k, v in data["placements"].items()}, nodes,
                        {k: parse_spec(v) for k, v in data["outputs"].items()}, collectives, predicted, baselines,
                        dict(data.get("replicate_only", {})), dict(data.get("solver", {})),
                        data.get("cost_model", ""), zero, Pipeline.from_dict(data))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a partitioning plan: {exc.__class__.__name__}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON, atomically (a temporary file, then renamed)."""
        from eqsat_dnn.io.files import check_output_path, write_atomic

        path = Path(path)
        directory = path.parent if str(path.parent) else Path(".")
        check_output_path(path)
        if path.is_dir():
            raise OutputError(f"{path}: is a directory")
        if not directory.is_dir():
            raise OutputError(f"{path}: directory {directory} does not exist")
        text = json.dumps(self.to_dict(), indent=1)
        write_atomic(path, lambda tmp: tmp.write_text(text))

    @staticmethod
    def load(path: str | Path) -> Plan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON ({exc})") from None
        return Plan.from_dict(data)


# ---------------------------------------------------------------------------- the pass


def plan_from_assignment(problem: PartitionProblem, assignment: list[int],
                         baselines: dict[str, Evaluation] | None = None,
                         solver: dict[str, Any] | None = None) -> Plan:
    """The :class:`Plan` of one assignment of a problem."""
    evaluation = problem.evaluate(assignment)
    placements: dict[str, Spec] = {}
    nodes: list[PlanNode] = []
    outputs: dict[str, Spec] = {}
    replicate_only: Counter = Counter()
    for item, c in zip(problem.items, assignment):
        choice = item.choices[c]
        for name, spec in zip(item.produces, choice.produces):
            if name and spec is not None:
                placements[name] = spec
        if item.kind == "node":
            nodes.append(PlanNode(item.label, item.node.op_type, choice.name, list(choice.consumes),
                                  list(choice.produces), choice.compute))
            if item.replicate_only:
                replicate_only[item.node.op_type] += 1
        elif item.kind == "output":
            outputs[item.label] = choice.consumes[0]
    return Plan(problem.mesh, problem.mode, placements, nodes, outputs, evaluation.collectives, evaluation,
                dict(baselines or {}), dict(replicate_only), dict(solver or {}), problem.cost_model,
                _zero_choices(problem, assignment))


def _zero_choices(problem: PartitionProblem, assignment: list[int]) -> dict[str, ZeroChoice]:
    """The ZeRO stage of every trainable weight of an assignment (ZeRO-3: stored sharded, gathered for use)."""
    if problem.mode != "train":
        return {}
    items, weights, reads, group = problem.items, {}, {}, {}
    for i, item in enumerate(items):
        name = item.produces[0] if item.kind == "weight" else ""
        if not name or not problem.tensors[name].parameter:
            continue
        choice = item.choices[assignment[i]]
        weights[name] = (choice.produces[0], choice.zero, choice.state)
        reads[name] = [items[c].choices[assignment[c]].consumes[pos] for c, pos in problem.tensors[name].consumers]
        group[name] = items[item.tied].produces[0] if item.tied is not None else name
    return {k: ZeroChoice(stage, state, group[k]) for k, (stage, state) in zero_stages(weights, reads).items()}


def partition(
    model: Graph | str | Path | onnx.ModelProto,
    mesh: DeviceMesh | str | tuple[int, ...] | None = None,
    *,
    machine: str = DEFAULT_MACHINE,
    mode: str = "inference",
    memory_gb: float | None = None,
    time_limit: float = 10.0,
    cost_model: CostModel | None = None,
    outputs: str = "replicate",
    input_shapes: dict[str, list[int]] | None = None,
    optimizer: str = "adam",
    tie: bool = True,
    microbatches: int | None = None,
) -> Plan:
    """Find the cheapest placement of every tensor of ``model`` on a device mesh.

    ``mesh`` is a :class:`DeviceMesh` or a shape (``"8"``, ``"2x4"``) of the preset
    ``machine`` (see :data:`~eqsat_dnn.partition.mesh.MACHINES`); ``memory_gb``
    overrides the memory per device. ``mode`` is ``inference`` or ``train``.
    In training, each parameter's gradient and ``optimizer`` state (``adam``: two float32 copies;
    ``sgd``: none) count in memory, placed as the parameter is.
    ``outputs="replicate"`` (default) makes every graph output end replicated (each
    device holds the whole result); ``"any"`` lets it end sharded. The ILP runs
    for at most ``time_limit`` seconds; if it finds nothing better than the best
    hand-written baseline (data parallel, Megatron, FSDP) in time, that baseline is the
    plan (``plan.solver["source"]`` says which). ``tie`` gives corresponding ops and
    weights of repeated layers one shared choice (``plan.solver["tied_items"]`` counts them).

    Training also weighs pipelines (:mod:`eqsat_dnn.partition.stages`: mesh axis 0 cut into stages
    that each run a run of layers, 1F1B over ``microbatches``, layers checkpointed where memory
    needs): when ``microbatches`` is given, against the plan over the whole mesh (the faster wins);
    otherwise only when nothing fits over the whole mesh (then with
    :data:`~eqsat_dnn.partition.stages.DEFAULT_MICROBATCHES`). ``plan.pipeline`` says what was chosen."""
    graph = as_graph(model, input_shapes, load_weights=False)  # shapes are all a plan needs
    if not isinstance(mesh, DeviceMesh):
        mesh = get_mesh(mesh, machine, memory_gb)
    elif memory_gb is not None:
        from eqsat_dnn.partition.mesh import GIB, with_memory

        mesh = with_memory(mesh, memory_gb * GIB)
    if not time_limit > 0:
        raise InputError(f"time limit must be positive, not {time_limit}")

    problem = build_problem(graph, mesh, mode, cost_model, outputs, optimizer, tie)
    baselines = {name: problem.evaluate(make(problem)) for name, make in BASELINES.items()}
    try:
        plan, error = _whole_mesh_plan(problem, baselines, time_limit), None
    except InputError as exc:  # nothing fits the memory over the whole mesh: a pipeline may
        if mode != "train":
            raise
        plan, error = None, exc
    if mode == "train" and (microbatches is not None or plan is None):
        from eqsat_dnn.partition.stages import DEFAULT_MICROBATCHES, plan_stages

        pipe = plan_stages(problem.graph, mesh, unit_candidates(optimizer, time_limit),
                           microbatches or DEFAULT_MICROBATCHES)
        if pipe is not None and (len(pipe.stages) > 1 or pipe.checkpointed()) and (
                plan is None or pipe.time_s < plan.predicted.time_s * (1 - 1e-9)):
            return _pipelined_plan(problem, pipe, baselines)
    if plan is None:
        raise error
    return plan


def unit_candidates(optimizer: str = "adam", time_limit: float = 10.0):
    """The candidate plans of a pipeline's unit on a sub-mesh (:data:`~eqsat_dnn.partition.stages.Candidates`):
    the ILP's, in train mode with its outputs in any placement (replicated for the unit computing the graph's
    outputs, as a plan over the whole mesh ends them), and the baselines'."""

    def candidates(graph: Graph, mesh: DeviceMesh, final: bool = False) -> dict[str, Plan]:
        outputs = "replicate" if final else "any"
        plan = partition(graph, mesh, mode="train", optimizer=optimizer, outputs=outputs, time_limit=time_limit)
        problem = build_problem(graph, mesh, "train", optimizer=optimizer, outputs=outputs)
        return {"ilp": plan, **{name: plan_from_assignment(problem, make(problem)) for name, make in BASELINES.items()}}

    return candidates


def _pipelined_plan(problem: PartitionProblem, pipe: Pipeline, baselines: dict[str, Evaluation]) -> Plan:
    """The plan of a pipeline on ``problem``'s mesh: its units' plans put together (each over its stage's
    sub-mesh), priced as the pipeline; ``compute_s`` is the step less the point-to-point sends and
    weight collectives on the critical path."""
    from eqsat_dnn.partition.ilp import SolveStatus

    placements, nodes, collectives, zero = pipe.parts  # (the stages hold their handoffs)
    slots = pipe.microbatches + len(pipe.stages) - 1
    comm = pipe.p2p_s * slots + max(st.sync_s for st in pipe.stages)
    traffic = sum(2.0 * st.send_bytes * pipe.microbatches for st in pipe.stages)
    weights = max(st.weight_bytes for st in pipe.stages)
    evaluation = Evaluation(pipe.time_s, pipe.time_s - comm, comm, traffic, pipe.memory_bytes, weights, collectives,
                            pipe.memory_bytes <= problem.mesh.memory_bytes)
    from eqsat_dnn.partition.placements import REPLICATE

    # the unit computing them was planned to end them replicated (see unit_candidates)
    outputs = {name: (REPLICATE,) * problem.mesh.ndim for name in problem.graph.outputs}
    solver = {"status": SolveStatus.OPTIMAL, "seconds": pipe.solve_s, "source": "pipeline",
              "items": len(problem.items), "tied_items": sum(i.tied is not None for i in problem.items)}
    return Plan(problem.mesh, "train", placements, nodes, outputs, collectives, evaluation, dict(baselines), {},
                solver, problem.cost_model, zero, pipe)


def _whole_mesh_plan(problem: PartitionProblem, baselines: dict[str, Evaluation], time_limit: float) -> Plan:
    """The ILP's plan over the whole mesh (a baseline when the ILP found nothing better in time)."""
    from eqsat_dnn.partition.ilp import solve

    result = solve(problem, time_limit=time_limit)
    solver = {"status": result.status, "seconds": result.seconds, "objective_s": result.objective,
              "bound_s": result.bound, "variables": result.variables, "constraints": result.constraints,
              "items": len(problem.items), "tied_items": sum(i.tied is not None for i in problem.items),
              "source": "ilp"}
    if result.error:
        solver["error"] = result.error
    assignment = result.assignment
    best = problem.evaluate(assignment) if assignment is not None else None
    if best is None or not best.fits:
        fitting = {k: v for k, v in baselines.items() if v.fits}
        if not fitting:
            raise InputError(f"no plan found within {time_limit:g} s (solver status: {result.status}"
                             f"{': ' + result.error[:120] if result.error else ''}) and no "
                             "baseline fits in memory; raise the time limit or the memory per device")
        name = min(fitting, key=lambda k: fitting[k].time_s)
        assignment = BASELINES[name](problem)
        solver["source"] = name
    else:
        for name, evaluation in baselines.items():
            if evaluation.fits and evaluation.time_s < best.time_s * (1 - 1e-9):
                # only when the solver was stopped early: the optimum is never worse than a feasible baseline
                assignment, best = BASELINES[name](problem), evaluation
                solver["source"] = name
    return plan_from_assignment(problem, assignment, baselines, solver)


# ---------------------------------------------------------------------------- the table


def plan_table(plan: Plan, title: str = ""):
    """A rich renderable: predicted cost against the baselines, collectives, strategies."""
    from rich.console import Group
    from rich.table import Table

    mesh = plan.mesh
    summary = Table(title=title or f"partition on a {'x'.join(map(str, mesh.shape))} mesh of {mesh.device.name} "
                                   f"({plan.mode})")
    for column in ("plan", "time", "compute", "comm", "comm bytes", "memory / device", "fits"):
        summary.add_column(column, justify="right" if column != "plan" else "left")

    def row(name: str, e: Evaluation, style: str | None = None) -> None:
        summary.add_row(name, _seconds(e.time_s), _seconds(e.compute_s), _seconds(e.comm_s), _bytes(e.comm_bytes),
                        _bytes(e.memory_bytes_per_device), "yes" if e.fits else "[red]no[/]", style=style)

    source = plan.solver.get("source", "ilp")
    row(f"chosen ({source}, {plan.solver.get('status', '')})", plan.predicted, "bold")
    for name, e in plan.baselines.items():
        row(name.replace("_", " "), e)

    collectives = Table(title="collectives")
    for column in ("phase", "kind", "mesh axis", "count", "bytes", "time"):
        collectives.add_column(column, justify="right" if column in ("count", "bytes", "time") else "left")
    groups: dict[tuple, list[Collective]] = {}
    for c in plan.collectives:
        groups.setdefault((c.phase, c.kind, c.mesh_axis), []).append(c)
    for (phase, kind, axis), cs in sorted(groups.items()):
        collectives.add_row(phase, kind, str(axis), str(len(cs)), _bytes(sum(c.bytes for c in cs)),
                            _seconds(sum(c.seconds for c in cs)))

    strategies = Table(title="strategies by op")
    strategies.add_column("op")
    strategies.add_column("strategies (count)")
    per_op: dict[str, Counter] = {}
    for n in plan.nodes:
        per_op.setdefault(n.op, Counter())[n.strategy] += 1
    for op, counts in sorted(per_op.items(), key=lambda kv: -sum(kv[1].values())):
        strategies.add_row(op, ", ".join(f"{s} x{k}" for s, k in counts.most_common()))
    parts = [summary, collectives, strategies]
    if plan.zero:
        zero = Table(title="sharded training state (ZeRO)")
        for column in ("stage", "weights", "groups", "state placement"):
            zero.add_column(column)
        by_stage: dict[ZeroStage, list[tuple[str, ZeroChoice]]] = {}
        for name, z in plan.zero.items():
            by_stage.setdefault(z.stage, []).append((name, z))
        for stage, entries in sorted(by_stage.items()):
            zero.add_row(f"ZeRO-{int(stage)}", str(len(entries)), str(len({z.group for _, z in entries})),
                         ", ".join(sorted({short(z.state) for _, z in entries})))
        parts.append(zero)
    if plan.pipeline is not None:
        parts.append(_pipeline_table(plan.pipeline))
    if plan.replicate_only:
        parts.append("replicate-only (no sharding rule or no static shape; run whole on every device): "
                     + ", ".join(f"{op} x{k}" for op, k in sorted(plan.replicate_only.items())))
    return Group(*parts)


def _pipeline_table(pipe: Pipeline):
    from rich.table import Table

    table = Table(title=f"pipeline: {len(pipe.stages)} stage(s), {pipe.schedule} over {pipe.microbatches} "
                        f"microbatch(es), bubble {pipe.bubble:.1%}, step {_seconds(pipe.time_s)}")
    for column in ("stage", "units", "nodes", "devices", "sub-mesh", "plan", "checkpointed", "per microbatch",
                   "memory / device"):
        table.add_column(column, justify="right" if column in ("nodes", "per microbatch", "memory / device")
                         else "left")
    for k, st in enumerate(pipe.stages):
        units = st.units[0] if len(st.units) == 1 else f"{st.units[0]}..{st.units[-1]}"
        table.add_row(str(k), units, str(len(st.nodes)), ",".join(map(str, st.devices)),
                      "x".join(map(str, st.mesh_shape)), st.candidate, ", ".join(st.checkpointed) or "-",
                      _seconds(st.microbatch_s), _bytes(st.memory_bytes))
    return table


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-4 else f"{s * 1e6:.1f} us"


def _bytes(b: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b:.0f} B"


# ---------------------------------------------------------------------------- ONNX annotation

CONFIGURATION = "mesh"
"""Name of the ``DeviceConfigurationProto`` the annotation adds."""


def _sharding_spec(name: str, shape: tuple[int, ...] | None, spec: Spec, mesh: DeviceMesh) -> onnx.ShardingSpecProto:
    proto = onnx.ShardingSpecProto(tensor_name=name)
    dims = sorted({p.dim for p in spec if isinstance(p, Shard)})
    counts = [math.prod(mesh.shape[k] for k in shard_axes(spec, d)) for d in dims]
    for d, count in zip(dims, counts):
        sharded = proto.sharded_dim.add(axis=d)
        sharded.simple_sharding.add(dim_value=int(shape[d]) if shape else 0, num_shards=count)
    holders: dict[tuple[int, ...], list[int]] = {}
    for rank in range(mesh.num_devices):
        coord = mesh.coordinate(rank)
        holders.setdefault(tuple(block_index(spec, d, coord, mesh.shape) for d in dims), []).append(rank)
    for key, shard in enumerate(itertools.product(*(range(c) for c in counts))):
        group = holders[tuple(shard)]
        if len(group) == 1:
            proto.device.append(group[0])
        else:
            proto.device.append(-(key + 1))
            proto.index_to_device_group_map.add(key=-(key + 1), value=group)
    return proto


def annotate(model: Graph | str | Path | onnx.ModelProto, plan: Plan,
             input_shapes: dict[str, list[int]] | None = None) -> onnx.ModelProto:
    """``model`` as ONNX (IR version 11) carrying ``plan`` as ONNX sharding specs (see the module docstring)."""
    from eqsat_dnn.io.onnx_out import to_onnx
    from eqsat_dnn.partition.strategies import static_shape

    if plan.pipeline is not None and len(plan.pipeline.stages) > 1:
        raise InputError("a pipelined plan cannot be written as ONNX sharding specs (they describe one mesh, "
                         "its stages run on sub-meshes); the plan JSON records the stages")
    graph = prepare_graph(as_graph(model, input_shapes))
    nodes = graph.nodes
    if len(nodes) != len(plan.nodes):
        raise InputError(f"the plan has {len(plan.nodes)} nodes, the model {len(nodes)}: not this model's plan")
    proto = to_onnx(graph, fold_constants=False)
    mesh = plan.mesh
    proto.ir_version = max(proto.ir_version, 11)
    del proto.configuration[:]
    proto.configuration.add(name=CONFIGURATION, num_devices=mesh.num_devices,
                            device=[f"rank{r}" for r in range(mesh.num_devices)])
    for node_proto, node, step in zip(proto.graph.node, nodes, plan.nodes):
        if node.op_type != step.op:
            raise InputError(f"plan node {step.name} is a {step.op}, the model's is a {node.op_type}")
        config = node_proto.device_configurations.add(configuration_id=CONFIGURATION)
        partial = []
        for names, specs in ((node.inputs, step.inputs), (node.outputs, step.outputs)):
            for name, spec in zip(names, specs):
                if not name or spec is None:
                    continue
                if any(isinstance(p, Partial) for p in spec):
                    partial.append(name)
                    continue
                config.sharding_spec.append(_sharding_spec(name, static_shape(graph.types.get(name)), spec, mesh))
        if partial:
            node_proto.metadata_props.add(key="eqsat_dnn.partial", value=",".join(partial))
    meta = {"eqsat_dnn.partition.mesh": "x".join(map(str, mesh.shape)), "eqsat_dnn.partition.mode": plan.mode,
            "eqsat_dnn.partition.predicted_time_s": f"{plan.predicted.time_s:.6g}"}
    for key, value in meta.items():
        for entry in proto.metadata_props:
            if entry.key == key:
                entry.value = value
                break
        else:
            proto.metadata_props.add(key=key, value=value)
    return proto


__all__ = ["CONFIGURATION", "Plan", "PlanNode", "ZeroChoice", "annotate", "partition", "plan_from_assignment",
           "plan_table", "unit_candidates"]
