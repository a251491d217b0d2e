"""Run a plan on torch.distributed: one process per device, real collectives between them.

:func:`run_plan` compiles the plan into one program every rank runs (the same
for all ranks: the mesh splits evenly): weights and inputs sliced to each
device's block, then, node by node, the conversions the node's strategy needs
(exactly the steps of :func:`~eqsat_dnn.partition.collectives.redistribute`, so
exactly the plan's collectives) and the node itself, run by onnxruntime on the
device's blocks (a one-node ONNX model per node, with a ``Reshape``'s target
rewritten to the block's shape). It then starts one process per device of the
plan's mesh (gloo on CPU; NCCL when there are enough CUDA devices, the compute
still in onnxruntime on CPU), runs the program, gathers every output's blocks
on rank 0, and compares the result with the single-device output of the whole
model in onnxruntime on the same seeded inputs. Every rank counts the
collectives it issues (kind, tensor, mesh axis, bytes); the report compares them
with the plan's forward collectives. Training plans run their forward pass here;
:mod:`eqsat_dnn.partition.train` trains them (forward, backward and optimizer steps) on DTensor.

Processes start from a fork server that has torch and onnxruntime imported
(the first run of a session pays that import once; later runs start in a
fraction of a second). torch is an optional dependency:
``pip install eqsat-dnn[dist]``.
"""

from __future__ import annotations

import os
import pickle
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eqsat_dnn.errors import InputError, first_line
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.partition.collectives import redistribute
from eqsat_dnn.partition.placements import Partial, Shard, Spec, block_index, local_shape, shard_axes
from eqsat_dnn.partition.plan import Plan
from eqsat_dnn.partition.processes import device_group, run_ranks
from eqsat_dnn.partition.problem import as_graph
from eqsat_dnn.partition.strategies import static_shape
from eqsat_dnn.runtime.sessions import create_session

_EXTRA_HINT = "running a plan needs torch: pip install eqsat-dnn[dist]"


@dataclass
class RunReport:
    """What a run found."""

    processes: int
    backend: str
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    issued: list[tuple[str, str, int, int]] = field(default_factory=list)
    """Collectives rank 0 issued: (kind, tensor, mesh axis, bytes), in order."""
    expected: list[tuple[str, str, int, int]] = field(default_factory=list)
    """The plan's forward collectives, same form."""
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def collectives_match(self) -> bool:
        return Counter(self.issued) == Counter(self.expected)

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        return dict(Counter(kind for kind, *_ in self.issued))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "inference", "ok": self.ok, "processes": self.processes, "backend": self.backend,
                "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
                "collectives_issued": self.counts(),
                "collectives_expected": dict(Counter(kind for kind, *_ in self.expected)),
                "collectives_match": self.collectives_match, "failures": list(self.failures),
                "seconds": self.seconds}


# ---------------------------------------------------------------------------- compiling


@dataclass
class _Program:
    """What every rank runs (pickled to the workers)."""

    mesh_shape: tuple[int, ...]
    sources: list[tuple[str, Spec, np.ndarray]]
    """(tensor, placement, full value): each rank keeps its block."""
    instructions: list[tuple]
    """``("convert", tensor, src, dst, steps)`` or ``("compute", model bytes, [(local input, (tensor, spec))],
    [(tensor, spec)], node name)``."""
    outputs: list[tuple[str, Spec, tuple[int, ...] | None]]
    """(graph output, final placement, global shape when static)."""


def _local_model(graph: Graph, node: Node, in_types: list[TensorType | None], out_types: list[TensorType | None],
                 out_shapes: list[tuple[int, ...] | None]) -> bytes:
    """A one-node ONNX model computing ``node`` on blocks (inputs renamed ``i0``, ``i1``, ...)."""
    from eqsat_dnn.io.onnx_out import to_onnx

    attrs = dict(node.attrs)
    if node.op == "Reshape" and out_shapes[0] is not None:
        attrs["shape"] = list(out_shapes[0])  # the block's shape, not the whole tensor's
        attrs["allowzero"] = 0
    inputs = [f"i{k}" if name else "" for k, name in enumerate(node.inputs)]
    local = Node(node.op, inputs, list(node.outputs), attrs, node.name, node.proto)
    types = {f"i{k}": t for k, t in enumerate(in_types) if node.inputs[k] and t is not None}
    for name, t in zip(node.outputs, out_types):
        if name and t is not None:
            types[name] = t
    value_infos_in = [helper.make_tensor_value_info(f"i{k}", t.dtype, list(t.shape))
                      for k, t in enumerate(in_types) if node.inputs[k]]
    value_infos_out = [helper.make_tensor_value_info(name, t.dtype if t else 0,
                                                     None if t is None or t.shape is None else list(t.shape))
                       for name, t in zip(node.outputs, out_types) if name]
    skeleton = helper.make_model(helper.make_graph([], node.name or node.op, value_infos_in, value_infos_out),
                                 opset_imports=list(graph.model.opset_import))
    skeleton.ir_version = graph.model.ir_version
    skeleton.functions.extend(graph.model.functions)
    sub = Graph([local], [i for i in inputs if i], [o for o in node.outputs if o], types, {}, skeleton)
    return to_onnx(sub, fold_constants=False).SerializeToString()


def _has_subgraph(node: Node) -> bool:
    return node.proto is not None and any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.proto.attribute)


def _compile(graph: Graph, plan: Plan) -> tuple[Graph, _Program, list[tuple[str, str, int, int]]]:
    """The folded graph the plan was made for, the program, and the plan's forward collectives."""
    from eqsat_dnn.partition.problem import prepare_graph

    graph = prepare_graph(graph)
    nodes = graph.nodes
    if len(nodes) != len(plan.nodes):
        raise InputError(f"the plan has {len(plan.nodes)} nodes, the model {len(nodes)}: not this model's plan")
    mesh_shape = plan.mesh.shape
    sources = []
    needed = {i for n in nodes for i in n.inputs if i} | set(graph.outputs)
    for name in graph.inputs:
        if name in needed:
            sources.append((name, plan.placements[name], None))
    for name, tensor in graph.weights.items():
        if name in needed:
            sources.append((name, plan.placements[name], numpy_helper.to_array(tensor)))
    have: set[tuple[str, Spec]] = {(name, spec) for name, spec, _ in sources}
    instructions: list[tuple] = []

    def convert(name: str, dst: Spec) -> None:
        if (name, dst) in have:
            return
        src = plan.placements[name]
        t = graph.types[name]
        steps = redistribute(static_shape(t), _itemsize(t), src, dst, mesh_shape)
        instructions.append(("convert", name, src, dst, steps))
        have.add((name, dst))

    for node, step in zip(nodes, plan.nodes):
        if node.op_type != step.op:
            raise InputError(f"plan node {step.name} is a {step.op}, the model's is a {node.op_type}")
        if _has_subgraph(node):
            raise InputError(f"node {step.name} ({step.op}) has a subgraph; running such nodes is not supported")
        for name, spec in zip(node.inputs, step.inputs):
            if name:
                convert(name, spec)
        in_types = [_local(graph.types.get(name), spec, mesh_shape) if name else None
                    for name, spec in zip(node.inputs, step.inputs)]
        out_types = [_local(graph.types.get(name), spec, mesh_shape) if name else None
                     for name, spec in zip(node.outputs, step.outputs)]
        out_shapes = [static_shape(t) for t in out_types]
        model = _local_model(graph, node, in_types, out_types, out_shapes)
        writes = [(name, spec) for name, spec in zip(node.outputs, step.outputs) if name]
        have.update(writes)
        feeds = [(f"i{k}", (name, spec)) for k, (name, spec) in enumerate(zip(node.inputs, step.inputs)) if name]
        instructions.append(("compute", model, feeds, writes, step.name))
    outputs = []
    for name in graph.outputs:
        spec = plan.outputs[name]
        if any(isinstance(p, Partial) for p in spec):
            raise InputError(f"graph output {name} ends partial in the plan; it cannot be compared")
        convert(name, spec)
        outputs.append((name, spec, static_shape(graph.types[name])))
    expected = [(c.kind, c.tensor, c.mesh_axis, c.bytes) for c in plan.collectives if c.phase == "forward"]
    return graph, _Program(mesh_shape, sources, instructions, outputs), expected


def _itemsize(t: TensorType) -> int:
    from eqsat_dnn.cost import itemsize

    return itemsize(t)


def _local(t: TensorType | None, spec: Spec | None, mesh_shape: tuple[int, ...]) -> TensorType | None:
    shape = static_shape(t)
    if t is None or spec is None or shape is None:
        return t
    return TensorType(t.dtype, local_shape(shape, spec, mesh_shape))


# ---------------------------------------------------------------------------- the worker


def _block(value: np.ndarray, spec: Spec, coord: tuple[int, ...], mesh_shape: tuple[int, ...]) -> np.ndarray:
    """One device's block of a whole value."""
    if not any(isinstance(p, Shard) for p in spec):
        return np.asarray(value)  # (indexing a 0-d array with () would give a scalar)
    index = []
    for d in range(value.ndim):
        axes = shard_axes(spec, d)
        if not axes:
            index.append(slice(None))
            continue
        count = int(np.prod([mesh_shape[k] for k in axes]))
        size = value.shape[d] // count
        b = block_index(spec, d, coord, mesh_shape)
        index.append(slice(b * size, (b + 1) * size))
    return np.ascontiguousarray(value[tuple(index)])


class _Collectives:
    """The collectives of one rank on its mesh-axis groups, counted as they are issued."""

    def __init__(self, dist, torch, groups: list, mesh_shape: tuple[int, ...], coord: tuple[int, ...], device) -> None:
        self.dist, self.torch, self.groups = dist, torch, groups
        self.mesh_shape, self.coord, self.device = mesh_shape, coord, device
        self.issued: list[tuple[str, str, int, int]] = []

    def _tensor(self, array: np.ndarray):
        flat = np.ascontiguousarray(array.view(np.uint8) if array.dtype == np.bool_ else array)
        return self.torch.from_numpy(flat).to(self.device)

    def _array(self, tensor, like: np.ndarray) -> np.ndarray:
        out = tensor.cpu().numpy()
        return out.view(np.bool_) if like.dtype == np.bool_ else out

    def apply(self, step, name: str, value: np.ndarray) -> np.ndarray:
        k = step.axis
        n, i = self.mesh_shape[k], self.coord[k]
        if step.kind == "slice":
            return np.ascontiguousarray(np.split(value, n, axis=step.dim)[i])
        if step.kind == "zero":
            return value if i == 0 else np.zeros_like(value)
        group, dist = self.groups[k], self.dist
        if step.kind == "all_reduce":
            t = self._tensor(value)
            dist.all_reduce(t, group=group)
            result = self._array(t, value)
            size = value.nbytes
        elif step.kind == "all_gather":
            t = self._tensor(value)
            parts = [self.torch.empty_like(t) for _ in range(n)]
            dist.all_gather(parts, t, group=group)
            result = np.concatenate([self._array(p, value) for p in parts], axis=step.dim)
            size = result.nbytes
        elif step.kind == "reduce_scatter":
            chunks = [self._tensor(c) for c in np.split(value, n, axis=step.dim)]
            out = self.torch.empty_like(chunks[0])
            try:
                dist.reduce_scatter(out, chunks, group=group)
            except RuntimeError:  # a backend without reduce-scatter: the direct algorithm on all-to-all
                received = [self.torch.empty_like(chunks[0]) for _ in range(n)]
                dist.all_to_all(received, chunks, group=group)
                out = sum(received[1:], received[0])
            result = self._array(out, value)
            size = value.nbytes
        elif step.kind == "all_to_all":
            send = [self._tensor(c) for c in np.split(value, n, axis=step.dim2)]
            received = [self.torch.empty_like(s) for s in send]
            dist.all_to_all(received, send, group=group)
            result = np.concatenate([self._array(r, value) for r in received], axis=step.dim)
            size = value.nbytes
        else:
            raise ValueError(f"unknown step {step.kind}")
        self.issued.append((step.kind, name, k, int(size)))
        return result


def _groups(dist, mesh_shape: tuple[int, ...], rank: int) -> list:
    """This rank's process group along each mesh axis (every rank creates every group, in order)."""
    if len(mesh_shape) == 1:
        return [dist.group.WORLD]
    ranks = np.arange(int(np.prod(mesh_shape))).reshape(mesh_shape)
    mine = []
    for k in range(len(mesh_shape)):
        lines = np.moveaxis(ranks, k, -1).reshape(-1, mesh_shape[k])
        chosen = None
        for line in lines:
            group = dist.new_group([int(r) for r in line])
            if rank in line:
                chosen = group
        mine.append(chosen)
    return mine


def _worker(rank: int, world: int, port: int, job_path: str, result_dir: str, backend: str) -> None:
    import torch
    import torch.distributed as dist

    from eqsat_dnn.partition.processes import join_group

    job, device = join_group(rank, world, port, job_path, backend)
    programs, feeds = job
    results = []
    groups_by_shape: dict[tuple[int, ...], list] = {}
    try:
        for program, inputs in zip(programs, feeds):
            shape = program.mesh_shape
            if shape not in groups_by_shape:
                groups_by_shape[shape] = _groups(dist, shape, rank)
            coord = tuple(int(c) for c in np.unravel_index(rank, shape))
            comm = _Collectives(dist, torch, groups_by_shape[shape], shape, coord, device)
            values: dict[tuple[str, Spec], np.ndarray] = {}
            for name, spec, value in program.sources:
                values[(name, spec)] = _block(inputs[name] if value is None else value, spec, coord, shape)
            for instruction in program.instructions:
                if instruction[0] == "convert":
                    _, name, src, dst, steps = instruction
                    value = values[(name, src)]
                    for step in steps:
                        value = comm.apply(step, name, value)
                    values[(name, dst)] = value
                else:
                    _, model, feeds_of, writes, label = instruction
                    try:
                        session = create_session(model, optimize=False, threads=1)
                        outs = session.run([name for name, _ in writes],
                                           {local: values[key] for local, key in feeds_of})
                    except Exception as exc:
                        raise RuntimeError(f"node {label}: {first_line(exc, 300)}") from None
                    for key, out in zip(writes, outs):
                        values[key] = np.asarray(out)
            blocks = {name: values[(name, spec)] for name, spec, _ in program.outputs}
            gathered = [None] * world if rank == 0 else None
            dist.gather_object(blocks, gathered, dst=0)
            results.append({"issued": comm.issued, "blocks": gathered})
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(result_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump([{"issued": r["issued"], "blocks": r["blocks"] if rank == 0 else None} for r in results], f)


# ---------------------------------------------------------------------------- the parent


def _reference(graph: Graph, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seeded inputs and the single-device outputs of the whole graph in onnxruntime."""
    from eqsat_dnn.runtime.check import random_inputs
    from eqsat_dnn.io.onnx_out import to_onnx

    model = to_onnx(graph, fold_constants=False)
    feeds = random_inputs(model, seed)
    session = create_session(model, optimize=False)
    outputs = session.run(list(graph.outputs), feeds)
    return feeds, dict(zip(graph.outputs, outputs))


def _assemble(blocks: list[dict[str, np.ndarray]], name: str, spec: Spec, shape: tuple[int, ...],
              mesh_shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """The whole value from every rank's block, and the largest disagreement between replicas."""
    first = blocks[0][name]
    if shape is None:  # never sharded (no static shape): every rank holds the whole value
        shape = first.shape
    whole = np.zeros(shape, dtype=first.dtype)
    filled = np.zeros(shape, dtype=bool)
    spread = 0.0
    for rank, per_rank in enumerate(blocks):
        coord = tuple(int(c) for c in np.unravel_index(rank, mesh_shape))
        index = []
        for d in range(len(shape)):
            axes = shard_axes(spec, d)
            count = int(np.prod([mesh_shape[k] for k in axes])) if axes else 1
            size = shape[d] // count
            b = block_index(spec, d, coord, mesh_shape)
            index.append(slice(b * size, (b + 1) * size))
        index = tuple(index)
        block = per_rank[name]
        if filled[index].all():
            diff = np.abs(whole[index].astype(np.float64) - block.astype(np.float64))
            spread = max(spread, float(diff.max()) if diff.size else 0.0)
        else:
            whole[index] = block
            filled[index] = True
    return whole, spread


def run_plans(jobs: list[tuple[Graph | str | Path | onnx.ModelProto, Plan]], *, seed: int = 0, rtol: float = 1e-3, atol: float = 1e-4,
              start_method: str = "forkserver", timeout: float = 300.0) -> list[RunReport]:
    """Run several plans on the same number of devices in one group of processes (see :func:`run_plan`)."""
    try:
        import torch  # noqa: F401 (a clear error when the [dist] extra is missing)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(f"{_EXTRA_HINT} ({exc})") from None
    if not jobs:
        return []
    world, backend = device_group([plan for _, plan in jobs], "run")
    start = time.perf_counter()
    compiled = []
    for model, plan in jobs:
        folded, program, expected = _compile(as_graph(model), plan)
        feeds, reference = _reference(folded, seed)
        compiled.append((program, feeds, reference, expected))
    per_rank = run_ranks(_worker, ([c[0] for c in compiled], [c[1] for c in compiled]), world, backend,
                         preload=["torch.distributed", "onnxruntime", "eqsat_dnn.partition.run"],
                         start_method=start_method, timeout=timeout, prefix="eqsat-dnn-run-")
    seconds = time.perf_counter() - start
    reports = []
    for j, (program, feeds, reference, expected) in enumerate(compiled):
        report = RunReport(world, backend, issued=list(per_rank[0][j]["issued"]), expected=expected, seconds=seconds)
        for rank in range(1, world):
            if Counter(per_rank[rank][j]["issued"]) != Counter(report.issued):
                report.failures.append(f"rank {rank} issued different collectives from rank 0")
        if not report.collectives_match:
            extra = Counter(report.issued) - Counter(expected)
            missing = Counter(expected) - Counter(report.issued)
            report.failures.append(f"collectives differ from the plan: {sum(extra.values())} unexpected "
                                   f"{sorted(extra)[:3]}, {sum(missing.values())} missing {sorted(missing)[:3]}")
        blocks = per_rank[0][j]["blocks"]
        for name, spec, shape in program.outputs:
            whole, spread = _assemble(blocks, name, spec, shape, program.mesh_shape)
            expected_value = np.asarray(reference[name])
            if whole.shape != expected_value.shape:
                report.failures.append(f"{name}: shape {whole.shape} instead of {expected_value.shape}")
                continue
            if spread > atol + rtol * float(np.max(np.abs(expected_value), initial=0.0)):
                report.failures.append(f"{name}: replicas disagree by {spread:.3g}")
            if not np.issubdtype(expected_value.dtype, np.floating):
                if not np.array_equal(whole, expected_value):
                    report.failures.append(f"{name}: integer outputs differ")
                continue
            diff = np.abs(whole.astype(np.float64) - expected_value.astype(np.float64))
            abs_err = float(diff.max()) if diff.size else 0.0
            scale = float(np.max(np.abs(expected_value))) if expected_value.size else 0.0
            report.max_abs_error = max(report.max_abs_error, abs_err)
            report.max_rel_error = max(report.max_rel_error, abs_err / max(scale, 1e-12))
            if not abs_err <= atol + rtol * scale:
                report.failures.append(f"{name}: max |diff| {abs_err:.3g} on values up to {scale:.3g}")
        reports.append(report)
    return reports


def run_plan(model: Graph | str | Path | onnx.ModelProto, plan: Plan, *, seed: int = 0, rtol: float = 1e-3,
             atol: float = 1e-4, start_method: str = "forkserver", timeout: float = 300.0,
             input_shapes: dict[str, list[int]] | None = None) -> RunReport:
    """Run ``plan`` on one local process per device of its mesh and check it (see the module docstring).

    The report's ``ok`` is true when every output matches the single-device
    output within ``atol + rtol * max|expected|`` and the collectives issued are
    exactly the plan's forward collectives.

    The worker processes start from a fork server, which imports the calling script: call this
    under ``if __name__ == "__main__":`` in a script (notebooks and the CLI need nothing)."""
    return run_plans([(as_graph(model, input_shapes), plan)], seed=seed, rtol=rtol, atol=atol,
                     start_method=start_method, timeout=timeout)[0]


__all__ = ["RunReport", "run_plan", "run_plans"]
