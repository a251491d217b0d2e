"""Cost models: the price of one e-node from its op, attributes and types.

A cost model (:class:`CostModel`) has a ``name``, a ``profile``, ``node_cost(node, inputs,
output) -> seconds``, ``fusion_penalty(site)`` and ``prepare(items)``, where ``node`` is a
:class:`~eqsat_dnn.ir.graph.Node` (vocabulary op with normalised attributes, or an opaque
node with its ``NodeProto``; its :attr:`~eqsat_dnn.ir.graph.Node.op_type` is what is priced)
and ``inputs`` / ``output`` are the tensor types (the inputs of a Concat are its list elements).
Nodes computed from weights alone are priced at zero by the caller (they are
folded into initializers at export), so models only see real run-time work. A
multi-output node is priced once per output e-node, at its cost divided by the
number of outputs.

Two implementations, both picked by name with :func:`get_cost_model`:

* ``measured`` (:class:`~eqsat_dnn.cost.measured.MeasuredCostModel`): every distinct op
  configuration timed in onnxruntime on this machine, cached on disk;
* ``roofline`` (:class:`~eqsat_dnn.cost.roofline.RooflineCostModel`): the larger of compute time (FLOPs
  over the peak for the dtype) and memory time (bytes over bandwidth), plus a
  fixed per-kernel overhead, against a :class:`~eqsat_dnn.cost.profiles.DeviceProfile`: ``roofline`` is
  this CPU, calibrated by measurement (cached), ``roofline:t4``, ``:v100``,
  ``:a100``, ``:h100`` are GPUs from their published figures.

Both price a node by what it usually adds inside onnxruntime's optimized graph: the
fusion policy of :mod:`eqsat_dnn.cost.fusion`. The modules:

* :mod:`~eqsat_dnn.cost.shapes`: sizes, bytes and FLOPs from tensor types (and how
  symbolic dimensions are sized);
* :mod:`~eqsat_dnn.cost.fusion`: what onnxruntime fuses (fusion roles, layout boundaries,
  fusion sites);
* :mod:`~eqsat_dnn.cost.profiles`: device profiles (this CPU's nominal figures, GPUs');
* :mod:`~eqsat_dnn.cost.roofline`: the roofline model;
* :mod:`~eqsat_dnn.cost.measured`: the measured model (its cache, probe builders, timing
  harness, calibration), imported when first asked for;
* this module: the :class:`CostModel` protocol, pricing a whole graph
  (:func:`graph_cost`), and the :func:`get_cost_model` factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

from eqsat_dnn.cost.fusion import VIEW_OPS, FusionSite, fusion_role, fusion_sites, layout_boundary
from eqsat_dnn.cost.profiles import CPU_PROFILE, GPU_PROFILES, SKIP_LAYERNORM_SLOWDOWN, DeviceProfile
from eqsat_dnn.cost.roofline import RooflineCostModel
from eqsat_dnn.cost.shapes import BATCH_DIM, SYMBOLIC_DIM, bytes_moved, dim_size, dims, flops, itemsize, numel
from eqsat_dnn.errors import InputError
from eqsat_dnn.ir.graph import Graph, Node, TensorType

PricedNode = tuple[Node, list[TensorType | None], TensorType | None]
"""What a cost model prices: a node, its input types, its (first) output type."""


class CostModel(Protocol):
    """What every stage may ask of a cost model (the roofline and measured models have it all)."""

    name: str
    """Names the model in reports (``roofline:t4``, ``measured``)."""

    profile: DeviceProfile | None
    """The device figures the prices come from, where they come from figures (``None``: the
    measured model's come from timings). Its ``merges_kernels`` picks the default rules."""

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float:
        """Seconds ``node`` adds to a run, given its input types and its output type."""
        ...

    def fusion_penalty(self, site: FusionSite) -> float:
        """What onnxruntime's fused kernel at ``site`` costs beyond its parts (0.0: nothing)."""
        ...

    def prepare(self, items: Iterable[PricedNode]) -> None:
        """Told every node about to be priced, so a model that measures measures them in one batch."""
        ...


def graph_cost(graph: Graph, model: CostModel) -> float:
    """Cost of a Graph as it stands, priced like the e-graph prices its e-nodes:
    nodes computed from weights alone are free, opaque nodes use their ONNX op type;
    plus what the runtime's slow fusions add (:func:`fusion_penalties`).

    The model is first handed every node it will price (:meth:`CostModel.prepare`), so the
    measured one measures what is missing in one interleaved batch."""
    return sum(node_costs(graph, model).values()) + sum(fusion_penalties(graph, model).values())


def fusion_penalties(graph: Graph, model: CostModel) -> dict[FusionSite, float]:
    """Each :func:`~eqsat_dnn.cost.fusion.fusion_sites` site the model prices above its parts,
    with the excess (:meth:`CostModel.fusion_penalty`)."""
    found = {}
    for site in fusion_sites(graph):
        penalty = model.fusion_penalty(site)
        if penalty > 0.0:
            found[site] = penalty
    return found


def priced_nodes(graph: Graph) -> list[tuple[int, Node, list[TensorType | None], TensorType | None]]:
    """(index, node, input types, output type) of every node that costs something.

    A node that folds (:attr:`Node.folds`: every vocabulary op, and deterministic opaque
    ops such as Range or the causal mask's And) and reads constants only costs nothing,
    as in the e-graph: export or onnxruntime's constant folding computes it once."""
    constant = set(graph.weights)
    items = []
    for index, node in enumerate(graph.nodes):
        if node.folds and all((not i) or i in constant for i in node.inputs):
            constant.update(node.outputs)
            continue
        inputs = [graph.types.get(i) if i else None for i in node.inputs]
        output = graph.types.get(node.outputs[0]) if node.outputs else None
        items.append((index, node, inputs, output))
    return items


def node_costs(graph: Graph, model: CostModel) -> dict[int, float]:
    """Node index -> its price, for the nodes that cost something (see :func:`graph_cost`)."""
    items = priced_nodes(graph)
    model.prepare([(node, inputs, output) for _, node, inputs, output in items])
    return {index: model.node_cost(node, inputs, output) for index, node, inputs, output in items}


def calibrated_cpu_profile(threads: int | None = None, cache: str | Path | None = None) -> DeviceProfile:
    """This CPU's roofline profile, measured once in onnxruntime and cached: peak fp32 GEMM
    rate (a 1024^3 MatMul), memory bandwidth (an Add over 64 MB operands) and the runtime's
    per-node overhead, at ``threads`` intra-op threads (see :mod:`eqsat_dnn.cost.measured`)."""
    from eqsat_dnn.cost.measured import MeasuredCostModel, cpu_profile

    return cpu_profile(MeasuredCostModel(cache_dir=cache, threads=threads, fallback=RooflineCostModel(CPU_PROFILE)))


COST_MODELS = ("measured", "roofline", "roofline:cpu-nominal", *(f"roofline:{k}" for k in GPU_PROFILES))
"""Names :func:`get_cost_model` knows."""


def get_cost_model(name: str = "measured", **options: Any) -> CostModel:
    """A cost model by name: ``measured`` (onnxruntime timings on this machine),
    ``roofline`` (this CPU, calibrated), ``roofline:cpu-nominal`` (fixed nominal CPU
    figures, no measurement), ``roofline:t4`` / ``:v100`` / ``:a100`` / ``:h100``.
    ``options`` go to the model (``threads``, ``cache_dir`` for the measured one)."""
    key = name.strip().lower()
    if key == "measured":
        from eqsat_dnn.cost.measured import MeasuredCostModel

        return MeasuredCostModel(**options)
    if key in ("roofline", "roofline:cpu"):
        return RooflineCostModel(calibrated_cpu_profile(options.get("threads"), options.get("cache_dir")))
    if key in ("roofline:cpu-nominal", "roofline:cpu-2core"):
        return RooflineCostModel(CPU_PROFILE)
    if key.startswith("roofline:") and key.split(":", 1)[1] in GPU_PROFILES:
        return RooflineCostModel(GPU_PROFILES[key.split(":", 1)[1]])
    raise InputError(f"unknown cost model {name!r} (choose from {', '.join(COST_MODELS)})")


__all__ = [
    "BATCH_DIM", "COST_MODELS", "CPU_PROFILE", "CostModel", "DeviceProfile", "FusionSite", "GPU_PROFILES",
    "PricedNode", "RooflineCostModel", "SKIP_LAYERNORM_SLOWDOWN", "SYMBOLIC_DIM", "VIEW_OPS", "bytes_moved",
    "calibrated_cpu_profile", "dim_size", "dims", "flops", "fusion_penalties", "fusion_role", "fusion_sites",
    "get_cost_model", "graph_cost", "itemsize", "layout_boundary", "node_costs", "numel", "priced_nodes",
]
