"""A partitioning plan as a ``parallelize_module`` plan for the PyTorch module the ONNX model was
exported from: tensor-parallel styles per module, and per-parameter placements where no style fits.

torch's dynamo exporter records, on every node, the module path it ran in
(``pkg.torch.onnx.name_scopes``: ``['', 'inner', ..., 'inner.layers.0.mlp.up_proj', 'linear_5']``),
the class of each of those modules (``pkg.torch.onnx.class_hierarchy``) and the FX node itself
(``pkg.torch.onnx.fx_node``, whose arguments name parameters as placeholders
``%p_inner_layers_0_mlp_up_proj_weight``). :func:`parameter_sources` maps each ONNX initializer
back to its parameter from that: an initializer that kept the parameter's name is it; a
renamed one (``val_148``) is the parameter its consumer's FX node reads, and when that node is
``aten.linear`` lowered to a ``MatMul`` the initializer is the parameter transposed (ONNX's
``[in, out]`` against ``nn.Linear``'s ``[out, in]``): a ``Shard(1)`` there is ``Shard(0)`` on
the parameter.

:func:`torch_plan` then groups the parameters per module. On a 1-D mesh:

* an ``nn.Linear`` whose weight the plan stores and reads split by output features is
  ``ColwiseParallel``, by input features ``RowwiseParallel``; an ``nn.Embedding`` split by
  rows (vocabulary) is ``RowwiseParallel``, by columns ``ColwiseParallel`` (input replicated);
* a column-parallel output stays a local shard (``use_local_output`` with ``Shard(-1)``, the
  Megatron pairing) only where the plan keeps everything computed from it sharded, with no
  replicated or partial value in between and every other operand broadcast along the split
  dimension, until row-parallel linears read it split by their input features; those read
  ``Shard(-1)``. Anywhere else a column-parallel output is gathered (``output_layouts
  Replicate()``) and a row-parallel input is split locally from the replicated tensor
  (``input_layouts Replicate()``): slower than the plan, never wrong;
* every other parameter the plan does not replicate (a weight stored sharded and gathered to
  be used, as FSDP does; a norm's or a custom layer's weight; any parameter on a 2-D mesh) is a
  per-parameter placement, applied by :class:`ParameterPlacements` (the parameters become
  DTensors so placed; the module's tensor inputs are taken as replicated and its outputs
  returned whole).

What it cannot say: activations sharded by batch or sequence in the plan (data and sequence
parallelism) run replicated in torch (``TorchPlan.notes`` says so); ``SequenceParallel`` is not
emitted. Local shards change the head count an attention module sees: modules that reshape with
``-1`` heads (transformers' LLaMA, Qwen2, ...) need nothing, modules that reshape with a stored
head count need it divided by the mesh size, as torch's tensor-parallel tutorial does.

:func:`to_parallelize_plan` turns the JSON (:meth:`TorchPlan.to_dict`) into the
``torch.distributed.tensor.parallel`` styles for ``parallelize_module``.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import onnx

from eqsat_dnn.errors import InputError, OutputError
from eqsat_dnn.ir.graph import Graph, Node
from eqsat_dnn.ir.blocks import SCOPES_KEY, metadata_list
from eqsat_dnn.partition.placements import Replicate, Shard, Spec, parse_placement, spec_strings
from eqsat_dnn.partition.plan import Plan
from eqsat_dnn.partition.problem import as_graph, prepare_graph
from eqsat_dnn.partition.strategies import FLOAT_TYPES, static_shape

TORCH_PLAN_VERSION = 1
FX_NODE_KEY = "pkg.torch.onnx.fx_node"
CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"
_PLACEHOLDER = re.compile(r"%(p_\w+)")
_TARGET = re.compile(r"target=([\w.]+)")
LOCAL_SHARD = "Shard(-1)"
REPLICATED = "Replicate()"


class ModuleKind(Enum):
    """The modules torch's tensor-parallel styles apply to (exactly these classes, not subclasses,
    whose forward may differ)."""

    LINEAR = "torch.nn.modules.linear.Linear"
    EMBEDDING = "torch.nn.modules.sparse.Embedding"
    OTHER = "other"


class Style(Enum):
    """A ``torch.distributed.tensor.parallel`` style."""

    COLWISE = "ColwiseParallel"
    ROWWISE = "RowwiseParallel"
    PARAMETERS = "ParameterPlacements"
    """Not torch's: :class:`ParameterPlacements`, the per-parameter fallback."""


@dataclass(frozen=True)
class ParameterSource:
    """Where an ONNX initializer comes from."""

    tensor: str
    parameter: str
    """Fully qualified name in the exported module (``inner.layers.0.mlp.up_proj.weight``)."""
    module: str
    kind: ModuleKind
    transposed: bool
    """The initializer is the 2-D parameter transposed (``aten.linear`` lowered to ``MatMul``)."""
    node: int
    """Index (in the planned graph) of the node that reads it, and the input it is there."""
    input: int

    def parameter_spec(self, spec: Spec) -> Spec:
        """The initializer's placement said of the parameter."""
        if not self.transposed:
            return spec
        return tuple(Shard(1 - p.dim) if isinstance(p, Shard) else p for p in spec)


@dataclass
class ModuleStyle:
    """One entry of the ``parallelize_module`` plan."""

    style: Style
    input_layouts: str = REPLICATED
    output_layouts: str = REPLICATED
    use_local_output: bool = True
    placements: dict[str, list[str]] = field(default_factory=dict)
    """:attr:`Style.PARAMETERS` only: parameter name in the module -> one placement per mesh axis."""

    def to_dict(self) -> dict[str, Any]:
        if self.style is Style.PARAMETERS:
            return {"style": self.style.value, "placements": dict(self.placements)}
        return {"style": self.style.value, "input_layouts": self.input_layouts,
                "output_layouts": self.output_layouts, "use_local_output": self.use_local_output}


@dataclass
class TorchPlan:
    """A plan for ``parallelize_module`` (see the module docstring)."""

    mesh: tuple[int, ...]
    styles: dict[str, ModuleStyle]
    """Module FQN -> its style, in graph order."""
    parameters: dict[str, list[str]]
    """Every parameter the plan does not replicate -> its placements (torch's orientation)."""
    sources: dict[str, ParameterSource]
    """ONNX initializer -> its parameter."""
    unmapped: dict[str, list[str]]
    """Initializers the plan does not replicate that map to no parameter (constants, buffers)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"version": TORCH_PLAN_VERSION, "mesh": list(self.mesh),
                "styles": {k: v.to_dict() for k, v in self.styles.items()},
                "parameters": dict(self.parameters),
                "sources": {k: {"parameter": s.parameter, "transposed": s.transposed} for k, s in self.sources.items()},
                "unmapped": dict(self.unmapped), "notes": list(self.notes)}

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        from eqsat_dnn.io.files import check_output_path, write_atomic

        path = Path(path)
        check_output_path(path)
        if path.is_dir():
            raise OutputError(f"{path}: is a directory")
        text = json.dumps(self.to_dict(), indent=1)
        write_atomic(path, lambda tmp: tmp.write_text(text))


# ---------------------------------------------------------------------------- initializer -> parameter


def _mangled(path: str) -> str:
    """How torch.export names a module path in placeholders (``a.b.0`` -> ``a_b_0``)."""
    return path.replace(".", "_")


def _source(name: str, node: Node, index: int, k: int) -> ParameterSource | None:
    """The parameter initializer ``name`` is, read by ``node`` (input ``k``), from its metadata."""
    scopes = metadata_list(node, SCOPES_KEY)
    classes = metadata_list(node, CLASSES_KEY)
    fx = next((p.value for p in node.proto.metadata_props if p.key == FX_NODE_KEY), "") if node.proto else ""
    placeholders = [p[2:] for p in _PLACEHOLDER.findall(fx)]
    if not scopes or not placeholders:
        return None
    modules = scopes[:-1]  # the last scope is the FX node's own name
    match = _TARGET.search(fx)
    transposed = (match is not None and match.group(1).endswith("aten.linear.default") and node.op_type == "MatMul"
                  and k == 1)

    def source(module: str, parameter: str) -> ParameterSource:
        depth = modules.index(module) if module in modules else -1
        cls = classes[depth] if depth >= 0 and len(classes) == len(scopes) else ""
        kind = next((m for m in ModuleKind if m.value == cls), ModuleKind.OTHER)
        return ParameterSource(name, parameter, module, kind, transposed, index, k)

    if _mangled(name) in placeholders:  # the initializer kept the parameter's name: exact
        return source(name.rpartition(".")[0], name)
    if len(placeholders) == 1:
        wanted = placeholders[0]
    else:  # e.g. addmm(bias, x, weight): the weight is the matrix operand, the bias the vector
        suffix = "_weight" if node.op_type in ("MatMul", "Gemm") and k == 1 else "_bias"
        candidates = [p for p in placeholders if p.endswith(suffix)]
        if len(candidates) != 1:
            return None
        wanted = candidates[0]
    for module in reversed(modules):  # the deepest module the placeholder lies under
        # (a placeholder mangles dots to underscores: a parameter read outside its own module's
        # scope would be misnamed, which is why a kept initializer name is preferred above)
        prefix = _mangled(module) + "_" if module else ""
        if wanted.startswith(prefix) and len(wanted) > len(prefix):
            attr = wanted[len(prefix):]
            return source(module, f"{module}.{attr}" if module else attr)
    return None


def parameter_sources(graph: Graph) -> dict[str, ParameterSource]:
    """Each initializer of the planned ``graph`` that is a parameter of the exported module, from
    the first node reading it whose metadata names it (see the module docstring)."""
    found: dict[str, ParameterSource] = {}
    for index, node in enumerate(graph.nodes):
        for k, name in enumerate(node.inputs):
            t = graph.types.get(name) if name else None
            if t is not None and t.dtype in FLOAT_TYPES and name in graph.weights and name not in found:
                source = _source(name, node, index, k)
                if source is not None:
                    found[name] = source
    return found


# ---------------------------------------------------------------------------- local regions


def _first_shard(spec: Spec | None) -> int | None:
    return next((p.dim for p in spec if isinstance(p, Shard)), None) if spec else None


def _regions(graph: Graph, plan: Plan, colwise: dict[str, int], rowwise: dict[str, int], biases: set[str]
             ) -> tuple[set[str], set[str]]:
    """The column-parallel modules whose outputs can stay local shards, and the row-parallel
    modules that then read local shards (see the module docstring). ``colwise`` and ``rowwise``
    map module -> index of its matrix product node; ``biases`` are the column-parallel modules'
    biases (``ColwiseParallel`` splits them as the output)."""
    nodes = graph.nodes
    consumers: dict[str, list[tuple[int, int]]] = {}
    for j, node in enumerate(nodes):
        for k, name in enumerate(node.inputs):
            if name:
                consumers.setdefault(name, []).append((j, k))
    row_at = {j: module for module, j in rowwise.items()}
    outputs = set(graph.outputs)
    walks = []  # per column-parallel module: tensors reached, nodes reached, row-parallel reached, broken
    for module, j0 in colwise.items():
        tensors, reached, rows, broken = set(), set(), set(), False
        queue = deque(o for o in nodes[j0].outputs if o)
        while queue:
            t = queue.popleft()
            if t in tensors:
                continue
            tensors.add(t)
            broken |= t in outputs
            held = plan.placements.get(t)
            for j, k in consumers.get(t, []):
                step = plan.nodes[j]
                if step.inputs[k] != held or _first_shard(held) is None:
                    # the plan converts it here (gathers, or splits it another way): a local shard in
                    # torch would not be what this node reads
                    broken = True
                    continue
                if j in row_at and k == 0 and _first_shard(held) == len(static_shape(graph.types.get(t)) or ()) - 1:
                    rows.add(row_at[j])  # read split by the contraction: the Megatron pairing
                    continue
                reached.add(j)
                for out, spec in zip(nodes[j].outputs, step.outputs):
                    if out and _first_shard(spec) is None:
                        broken = True
                    elif out:
                        queue.append(out)
        walks.append([{module}, tensors, reached, rows, broken])
    merged: list[list] = []
    for walk in walks:  # walks that meet are one region: local only if all of it is
        for other in [m for m in merged if m[1] & walk[1]]:
            merged.remove(other)
            walk = [walk[0] | other[0], walk[1] | other[1], walk[2] | other[2], walk[3] | other[3],
                    walk[4] or other[4]]
        merged.append(walk)
    local_cols, local_rows = set(), set()
    for cols, tensors, reached, rows, broken in merged:
        if not broken and all(_broadcasts(graph, plan, j, tensors | biases) for j in reached):
            local_cols |= cols
            local_rows |= rows
    # a row-parallel module reached by a gathered region too reads a whole tensor: not local
    for cols, tensors, reached, rows, broken in merged:
        if not cols <= local_cols:
            local_rows -= rows
    return local_cols, local_rows


def _broadcasts(graph: Graph, plan: Plan, j: int, region: set[str]) -> bool:
    """Every float operand of node ``j`` from outside ``region`` broadcasts along the dimension the
    region's operand is split on (a local shard meets it as the whole would)."""
    node, step = graph.nodes[j], plan.nodes[j]
    inside = [(k, n) for k, n in enumerate(node.inputs) if n in region]
    shape_of = {n: static_shape(graph.types.get(n)) for n in node.inputs if n}
    for k, name in inside:
        dim = _first_shard(step.inputs[k])
        rank = len(shape_of[name] or ())
        for other in node.inputs:
            t = graph.types.get(other) if other else None
            if not other or other in region or t is None or t.dtype not in FLOAT_TYPES:
                continue
            shape = shape_of[other]
            if shape is None:
                return False
            aligned = dim - (rank - len(shape))
            if 0 <= aligned < len(shape) and shape[aligned] != 1:
                return False
    return True


# ---------------------------------------------------------------------------- the plan


def _is_replicated(spec: Spec) -> bool:
    return all(isinstance(p, Replicate) for p in spec)


def torch_plan(model: Graph | str | Path | onnx.ModelProto, plan: Plan,
               input_shapes: dict[str, list[int]] | None = None) -> TorchPlan:
    """``plan`` (made for ``model``, a dynamo export) said of the exported PyTorch module (see the
    module docstring)."""
    graph = prepare_graph(as_graph(model, input_shapes, load_weights=False), values=False)
    if len(graph.nodes) != len(plan.nodes):
        raise InputError(f"the plan has {len(plan.nodes)} nodes, the model {len(graph.nodes)}: not this model's plan")
    sources = parameter_sources(graph)
    one_axis = len(plan.mesh.shape) == 1
    notes: list[str] = []
    if not sources:
        notes.append("no node carries torch's export metadata (pkg.torch.onnx.*): no parameter is known")
    if not one_axis:
        notes.append(f"a {'x'.join(map(str, plan.mesh.shape))} mesh: module styles need a 1-D mesh, so every "
                     "sharded parameter is a per-parameter placement")
    parameters: dict[str, list[str]] = {}
    unmapped: dict[str, list[str]] = {}
    by_module: dict[str, dict[str, tuple[ParameterSource, Spec]]] = {}
    for name in graph.weights:
        spec = plan.placements.get(name)
        source = sources.get(name)
        if source is None:
            if spec is not None and not _is_replicated(spec):
                unmapped[name] = spec_strings(spec)
            continue
        if spec is None:
            continue
        attr = source.parameter[len(source.module) + 1:] if source.module else source.parameter
        by_module.setdefault(source.module, {})[attr] = (source, spec)
        if not _is_replicated(spec):
            parameters[source.parameter] = spec_strings(source.parameter_spec(spec))
    styles: dict[str, ModuleStyle] = {}
    colwise: dict[str, int] = {}
    rowwise: dict[str, int] = {}
    for module, params in by_module.items():
        if all(_is_replicated(spec) for _, spec in params.values()):
            continue
        style = _module_style(params, plan) if one_axis else None
        if style is None:
            styles[module] = ModuleStyle(Style.PARAMETERS, placements={
                attr: spec_strings(s.parameter_spec(spec)) for attr, (s, spec) in params.items()
                if not _is_replicated(spec)})
            continue
        styles[module] = style
        source = params["weight"][0]
        if source.kind is ModuleKind.LINEAR:
            (colwise if style.style is Style.COLWISE else rowwise)[module] = source.node
    biases = {params["bias"][0].tensor for module, params in by_module.items() if module in colwise and "bias" in params}
    local_cols, local_rows = _regions(graph, plan, colwise, rowwise, biases)
    for module in colwise:
        styles[module].output_layouts = LOCAL_SHARD if module in local_cols else REPLICATED
    for module in rowwise:
        styles[module].input_layouts = LOCAL_SHARD if module in local_rows else REPLICATED
    sharded_inputs = [n for n in graph.inputs if n in plan.placements and not _is_replicated(plan.placements[n])]
    if sharded_inputs:
        notes.append(f"the plan shards the inputs {', '.join(sharded_inputs)} (data or sequence parallelism): "
                     "parallelize_module runs them replicated")
    return TorchPlan(plan.mesh.shape, styles, parameters, sources, unmapped, notes)


def _module_style(params: dict[str, tuple[ParameterSource, Spec]], plan: Plan) -> ModuleStyle | None:
    """The tensor-parallel style of one module's parameters on a 1-D mesh, or ``None`` (per-parameter)."""
    if "weight" not in params:
        return None
    source, spec = params["weight"]
    read = plan.nodes[source.node].inputs[source.input]
    if source.kind is ModuleKind.OTHER or read != spec:
        return None  # no style for this module, or stored sharded but gathered to be used (FSDP)
    dim = _first_shard(source.parameter_spec(spec))
    if dim is None:
        return None
    if source.kind is ModuleKind.LINEAR:  # weight [out, in]: split out -> column-parallel, in -> row-parallel
        return ModuleStyle(Style.COLWISE if dim == 0 else Style.ROWWISE)
    if dim == 0:  # embedding [vocab, hidden] split by rows: partial lookups, summed
        return ModuleStyle(Style.ROWWISE, input_layouts=REPLICATED, output_layouts=REPLICATED)
    return ModuleStyle(Style.COLWISE, input_layouts=REPLICATED, output_layouts=REPLICATED)


# ---------------------------------------------------------------------------- torch's styles


def _torch_placement(text: str):
    from torch.distributed.tensor import Shard as TShard

    m = re.fullmatch(r"\s*Shard\(\s*(-?\d+)\s*\)\s*", text)
    if m:  # negative dims (Shard(-1)) are torch's, not a plan's
        return TShard(int(m.group(1)))
    from eqsat_dnn.partition.placements import torch_spec

    return torch_spec((parse_placement(text),))[0]


def _parameter_placements_class():
    import torch
    from torch import nn
    from torch.distributed.tensor import DTensor, Replicate as TReplicate, distribute_tensor
    from torch.distributed.tensor.parallel import ParallelStyle

    class ParameterPlacements(ParallelStyle):
        """Per-parameter placements for one module: its named parameters become DTensors placed as
        given (the others replicated: DTensor does not mix with plain tensors), its tensor inputs
        are taken as replicated and its DTensor outputs are returned whole (replicated, local), so
        the rest of the model sees plain tensors. DTensor's own sharding rules compute the module."""

        def __init__(self, placements: dict[str, list[str]]) -> None:
            super().__init__()
            self.placements = {k: tuple(_torch_placement(p) for p in v) for k, v in placements.items()}

        def _apply(self, module: nn.Module, device_mesh) -> nn.Module:
            unknown = set(self.placements) - {n for n, _ in module.named_parameters(recurse=False)}
            if unknown:
                raise InputError(f"{type(module).__name__} has no parameter {', '.join(sorted(unknown))}")
            replicate = (TReplicate(),) * device_mesh.ndim
            for name, param in list(module.named_parameters(recurse=False)):
                placed = distribute_tensor(param.data, device_mesh, self.placements.get(name, replicate))
                module.register_parameter(name, nn.Parameter(placed, requires_grad=param.requires_grad))

            def inputs(_module, args, kwargs):
                def wrap(x):
                    if isinstance(x, DTensor) or not isinstance(x, torch.Tensor):
                        return x
                    return DTensor.from_local(x, device_mesh, replicate, run_check=False)
                return tuple(wrap(a) for a in args), {k: wrap(v) for k, v in kwargs.items()}

            def outputs(_module, _args, out):
                def whole(x):
                    return x.redistribute(device_mesh, replicate).to_local() if isinstance(x, DTensor) else x
                return tuple(whole(o) for o in out) if isinstance(out, tuple) else whole(out)

            module.register_forward_pre_hook(inputs, with_kwargs=True)
            module.register_forward_hook(outputs)
            return module

    return ParameterPlacements


def ParameterPlacements(placements: dict[str, list[str]]):  # noqa: N802 (a class, built on first use)
    """A ``ParallelStyle`` placing one module's parameters as given (``{"weight": ["Shard(0)"]}``);
    see the module docstring. Imports torch."""
    return _parameter_placements_class()(placements)


def load_torch_plan(plan_json: dict[str, Any] | str | Path) -> dict[str, Any]:
    """The torch plan's JSON object (:meth:`TorchPlan.to_dict`) from a dict, a file, or a dict holding
    it under ``torch_plan``; :class:`InputError` for anything else."""
    data = plan_json
    if isinstance(data, (str, Path)):
        try:
            data = json.loads(Path(data).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{plan_json}: cannot read a torch plan ({exc})") from None
    if isinstance(data, dict) and "torch_plan" in data:
        data = data["torch_plan"]
    if not isinstance(data, dict) or data.get("version") != TORCH_PLAN_VERSION or "styles" not in data \
            or "mesh" not in data:
        raise InputError(f"not a torch plan (version {TORCH_PLAN_VERSION} with mesh and styles)")
    return data


def to_parallelize_plan(plan_json: dict[str, Any] | str | Path, prefix: str = "") -> dict[str, Any]:
    """The ``parallelize_plan`` for ``torch.distributed.tensor.parallel.parallelize_module``: module
    FQN -> ``ColwiseParallel`` / ``RowwiseParallel`` / :func:`ParameterPlacements`, from
    :meth:`TorchPlan.to_dict` (a dict, a file, or a dict holding it under ``torch_plan``).
    ``prefix`` keeps only the modules under it, named relative to it (the export's wrapper
    ``inner.`` for the wrapped model itself). Imports torch."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    data = load_torch_plan(plan_json)
    classes = {Style.COLWISE: ColwiseParallel, Style.ROWWISE: RowwiseParallel}
    out: dict[str, Any] = {}
    for module, entry in data["styles"].items():
        if prefix and not module.startswith(prefix):
            continue
        try:
            style = Style(entry["style"])
            if style is Style.PARAMETERS:
                made = ParameterPlacements(entry["placements"])
            else:
                made = classes[style](input_layouts=_torch_placement(entry["input_layouts"]),
                                      output_layouts=_torch_placement(entry["output_layouts"]),
                                      use_local_output=bool(entry["use_local_output"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"torch plan entry {module!r}: {exc.__class__.__name__}: {exc}") from None
        out[module[len(prefix):]] = made
    return out


__all__ = ["ModuleKind", "ModuleStyle", "ParameterPlacements", "ParameterSource", "Style", "TORCH_PLAN_VERSION",
           "TorchPlan", "load_torch_plan", "parameter_sources", "to_parallelize_plan", "torch_plan"]
