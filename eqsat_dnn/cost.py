"""Cost models: the price of one e-node from its op, attributes and types.

A cost model is anything with ``name`` and ``node_cost(node, inputs, output) ->
seconds``, where ``node`` is a :class:`~eqsat_dnn.ir.graph.Node` (vocabulary op with
normalised attributes, or an opaque node with its ``NodeProto``) and ``inputs`` /
``output`` are the tensor types (the inputs of a Concat are its list elements).
Nodes computed from weights alone are priced at zero by the caller (they are
folded into initializers at export), so models only see real run-time work. A
multi-output node is priced once per output e-node, at its cost divided by the
number of outputs.

Two implementations, both picked by name with :func:`get_cost_model`:

* ``measured`` (:class:`~eqsat_dnn.measure.MeasuredCostModel`): every distinct op
  configuration timed in onnxruntime on this machine, cached on disk;
* ``roofline`` (:class:`RooflineCostModel`): the larger of compute time (FLOPs
  over the peak for the dtype) and memory time (bytes over bandwidth), plus a
  fixed per-kernel overhead, against a :class:`DeviceProfile`: ``roofline`` is
  this CPU, calibrated by measurement (cached), ``roofline:t4``, ``:v100``,
  ``:a100``, ``:h100`` are GPUs from their published figures.

**What the runtime fuses.** A per-node price cannot see the node's neighbours, so
both models price a node by what it *usually adds* inside onnxruntime's
optimized graph (``ORT_ENABLE_ALL``), see :func:`fusion_role`:

* ``view`` (Reshape, Squeeze, Unsqueeze, Flatten, Identity): onnxruntime aliases
  the buffer, the node costs its executor overhead only;
* ``conv_epilogue``: an activation, BatchNormalization, residual Add/Sum or
  per-channel Add/Mul on a 4-D tensor; onnxruntime folds these into the
  producing Conv (``ConvBNFusion``, ``ConvActivationFusion``, the NCHWc Conv's
  fused Sum input), so the node costs its *marginal* price behind a Conv;
* ``gemm_epilogue``: a bias Add (1-D operand along the last axis) or a scalar
  Add/Mul/Div; onnxruntime turns ``MatMul + Add`` into ``Gemm`` and
  ``MatMul + Mul(scalar)`` into ``FusedMatMul``: marginal price behind a MatMul;
* ``gelu_part``: ``Erf``, ``Tanh`` on a rank >= 3 activation, ``Pow`` by a scalar:
  the pieces of a decomposed GELU (``x^3`` and ``tanh`` of GPT-2's, ``erf`` of the
  TorchScript exporter's) or LayerNorm (``x^2``), which onnxruntime fuses into one
  ``FastGelu`` / ``Gelu`` / ``LayerNormalization`` kernel: priced at a quarter of
  that fused kernel (standalone, GPT-2's ``Pow`` alone costs 12x its whole GELU);
* layout boundaries: onnxruntime runs convolutions in a blocked NCHWc layout;
  a Split or Slice along the channel axis of a 4-D tensor leaves that layout and
  comes back (``ReorderOutput`` before it, ``ReorderInput`` after it), which is
  what makes merging parallel 1x1 convolutions into one Conv + Split slower on
  this CPU. Such nodes are charged the two reorders.

The measured model measures those marginal prices (a producer alone, then the
producer with the node behind it: the difference); the roofline model charges an
epilogue only the extra operand it reads. Decomposed GELU chains (-> ``FastGelu``)
are priced by their pieces (``gelu_part``). One fusion is priced by the whole graph,
not per node (:func:`fusion_sites`): a residual ``Add`` feeding only a
``LayerNormalization`` becomes onnxruntime's ``SkipLayerNormalization``, which its CPU
provider runs about five times slower than the two nodes; a model's
``fusion_penalty(site)`` gives the excess, :func:`graph_cost` adds it, and
:mod:`eqsat_dnn.lower` writes such sites so that onnxruntime leaves them apart.

**Symbolic dimensions** are priced at a representative size: a dimension whose
name looks like a batch (``batch``, ``N``, ``b``, ...) at 1, every other symbolic
or unknown dimension at :data:`SYMBOLIC_DIM` (128, a typical sequence length).
Fix real sizes with ``load_model(..., input_shapes=...)`` when they matter.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from onnx import TensorProto, helper

from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.ir.language import OPS

SYMBOLIC_DIM = 128
"""Size assumed for a symbolic or unknown dimension that is not batch-like."""

BATCH_DIM = 1
"""Size assumed for a symbolic dimension whose name looks like a batch."""

_BATCH_NAME = re.compile(r"^(n|b|bs|.*batch.*)$", re.IGNORECASE)


class CostModel(Protocol):
    name: str

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float: ...


# ---------------------------------------------------------------------------
# shapes, sizes, FLOPs


def dim_size(d: Any) -> int:
    """A concrete size for one dimension (symbolic ones by the policy above)."""
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        return int(d) if d >= 0 else SYMBOLIC_DIM
    if isinstance(d, str) and _BATCH_NAME.match(d):
        return BATCH_DIM
    return SYMBOLIC_DIM


def dims(t: TensorType | None) -> list[int]:
    """Concrete dims of a tensor type (empty when the rank is unknown)."""
    if t is None or t.shape is None:
        return []
    return [dim_size(d) for d in t.shape]


_dims = dims  # the old private name


def numel(t: TensorType | None) -> int:
    if t is None or t.shape is None:
        return 1
    return int(np.prod(dims(t), dtype=np.int64))


def itemsize(t: TensorType | None) -> int:
    if t is None or not t.dtype:
        return 4
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(t.dtype)).itemsize
    except (KeyError, TypeError, ValueError):
        return 4


def flops(op: str, attrs: dict[str, Any], inputs: list[TensorType | None], output: TensorType | None) -> float:
    """Floating-point operations of one node (multiply-add counts two)."""
    out = numel(output)
    if op == "MatMul":
        a = dims(inputs[0]) if inputs else []
        k = a[-1] if a else 1
        return 2.0 * out * k
    if op == "Gemm":
        a = dims(inputs[0]) if inputs else []
        k = (a[0] if attrs.get("transA") else a[-1]) if a else 1
        return 2.0 * out * k + out
    if op == "Conv":
        w = dims(inputs[1]) if len(inputs) > 1 else []
        per_output = math.prod(w[1:]) if len(w) > 1 else 1
        return 2.0 * out * per_output
    if op in ("MaxPool", "AveragePool"):
        return float(out * math.prod(attrs.get("kernel_shape", [1])))
    if op in ("Softmax", "LayerNormalization", "BatchNormalization", "Gelu", "Erf", "Tanh", "Sigmoid", "Exp"):
        return 8.0 * out
    if op in ("ReduceMean", "ReduceSum", "GlobalAveragePool"):
        return float(numel(inputs[0]) if inputs else out)
    spec = OPS.get(op)
    if spec is not None and spec.elementwise:
        return float(out)
    return 0.0


def bytes_moved(inputs: list[TensorType | None], output: TensorType | None) -> float:
    return float(sum(numel(t) * itemsize(t) for t in inputs if t is not None) + numel(output) * itemsize(output))


def split_output_types(node: Node, inputs: list[TensorType | None], output: TensorType | None) -> list[TensorType | None]:
    """The types of all outputs of a node (a Split's parts from its sizes; others: just ``output``)."""
    if node.op == "Split" and inputs and inputs[0] is not None and inputs[0].shape is not None:
        shape = list(inputs[0].shape)
        axis = int(node.attrs.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        sizes = node.attrs.get("split") or []
        if 0 <= axis < len(shape) and sizes:
            return [TensorType(inputs[0].dtype, tuple(shape[:axis] + [int(s)] + shape[axis + 1:])) for s in sizes]
    return [output]


# ---------------------------------------------------------------------------
# what onnxruntime fuses (CPU execution provider, ORT_ENABLE_ALL)

VIEW_OPS = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Dropout"})
"""Ops that onnxruntime turns into buffer aliases (no data movement)."""

_FREE = VIEW_OPS  # the old name

CONV_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid"})
"""Activations that onnxruntime's Conv (and its NCHWc Conv) apply in their epilogue."""

_FLOATS = (TensorProto.FLOAT,)

NCHWC_BLOCK = 8
"""Channel counts below this stay in plain NCHW in onnxruntime's NCHWc transformer."""


def _is_float4d(t: TensorType | None) -> bool:
    return t is not None and t.dtype in _FLOATS and t.shape is not None and len(t.shape) == 4


def _same(a: TensorType | None, b: TensorType | None) -> bool:
    return a is not None and b is not None and a.shape is not None and b.shape is not None and dims(a) == dims(b)


def main_operand(inputs: list[TensorType | None], output: TensorType | None) -> int:
    """Index of the operand of a binary op that has the output's shape (0 when both or neither)."""
    for k, t in enumerate(inputs[:2]):
        if _same(t, output):
            return k
    return 0


def fusion_role(op: str, attrs: dict[str, Any], inputs: list[TensorType | None], output: TensorType | None) -> str:
    """How onnxruntime's CPU provider usually runs a node: ``view``, ``conv_epilogue``,
    ``gemm_epilogue``, ``gelu_part`` or ``kernel`` (see the module docstring)."""
    if op in VIEW_OPS:
        return "view"
    if output is None or output.dtype not in _FLOATS or output.shape is None:
        return "kernel"
    out = dims(output)
    if op == "Erf" or (op == "Tanh" and len(out) >= 3) or (
            op == "Pow" and len(inputs) == 2 and inputs[1] is not None and numel(inputs[1]) == 1):
        return "gelu_part"  # decomposed GELU (or LayerNorm's x^2): onnxruntime fuses the chain
    if _is_float4d(output) and out[1] >= NCHWC_BLOCK:
        if op in CONV_ACTIVATIONS and _same(inputs[0] if inputs else None, output):
            return "conv_epilogue"
        if op == "BatchNormalization" and _same(inputs[0] if inputs else None, output):
            return "conv_epilogue"
        if op in ("Add", "Sum", "Mul") and len(inputs) == 2:
            main = main_operand(inputs, output)
            other = inputs[1 - main]
            if not _same(inputs[main], output) or other is None or other.shape is None:
                return "kernel"
            if op in ("Add", "Sum") and _same(other, output):
                return "conv_epilogue"  # residual: the NCHWc Conv's fused Sum input
            od = dims(other)
            if op in ("Add", "Mul") and numel(other) == out[1] and len(od) >= 3 and od[-3] == out[1]:
                return "conv_epilogue"  # per-channel bias or scale, folded into the weights
    if len(out) >= 2 and op in ("Add", "Mul", "Div") and len(inputs) == 2:
        main = main_operand(inputs, output)
        other = inputs[1 - main]
        if not _same(inputs[main], output) or other is None or other.shape is None:
            return "kernel"
        if (op == "Add" and numel(other) == out[-1] and (not dims(other) or dims(other)[-1] == out[-1])
                and out[-1] > 1 and not _same(other, output)):
            return "gemm_epilogue"  # bias: MatMul + Add -> Gemm (a one-row sum of two products is not one)
        if op == "Add" and numel(other) == 1:
            return "gemm_epilogue"  # a scalar offset (GELU's 1 + tanh(...)): measured behind a MatMul
        if numel(other) == 1 and (op == "Mul" or main == 0):
            return "gemm_epilogue"  # scale: MatMul + Mul -> FusedMatMul(alpha)
    return "kernel"


def layout_boundary(op: str, attrs: dict[str, Any], inputs: list[TensorType | None],
                    outputs: list[TensorType | None]) -> tuple[list[list[int]], list[list[int]]]:
    """Shapes onnxruntime must reorder out of (before) and into (after) its blocked NCHWc
    layout around a node that cuts a 4-D tensor along its channel axis (Split, Slice).

    Assumes the node sits between convolutions, as it does after merging parallel convs."""
    if op not in ("Split", "Slice") or not inputs or not _is_float4d(inputs[0]):
        return [], []
    shape = dims(inputs[0])
    if shape[1] < NCHWC_BLOCK:
        return [], []
    axes = [int(attrs.get("axis", 0))] if op == "Split" else list(attrs.get("axes") or range(4))
    axes = [a + 4 if a < 0 else a for a in axes]
    if 1 not in axes:
        return [], []
    outs = [dims(t) for t in outputs if _is_float4d(t) and dims(t)[1] % NCHWC_BLOCK == 0]
    return [shape], outs


# ---------------------------------------------------------------------------
# device profiles


@dataclass(frozen=True)
class DeviceProfile:
    """Peak rates of one device."""

    name: str
    flops: float
    """Peak FLOP/s for float32."""
    bandwidth: float
    """Memory bandwidth in bytes/s."""
    overhead: float
    """Fixed cost per kernel launch, seconds."""
    peaks: dict[int, float] = field(default_factory=dict, hash=False, compare=False)
    """Peak FLOP/s per ONNX element type (``TensorProto.FLOAT16``, ...); ``flops`` when absent."""
    view_overhead: float | None = None
    """Cost of a view op (Reshape, ...); a tenth of ``overhead`` when ``None``."""
    nchwc: bool = False
    """The runtime uses onnxruntime's blocked NCHWc CPU layout (charge its reorders)."""
    merges_kernels: bool = False
    """One larger kernel beats two launches here (a GPU): optimizing for this device searches the
    multi-pattern merges of parallel products and convs as well
    (:func:`eqsat_dnn.eqsat.rules.default_rules`)."""
    slow_fusions: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    """Fusions the runtime makes (:class:`FusionSite` kinds) whose fused kernel runs slower than
    its parts on this device: the fused time over the parts' time."""
    source: str = ""
    """Where the figures come from."""

    def peak(self, dtype: int | None) -> float:
        return self.peaks.get(dtype or TensorProto.FLOAT, self.flops)


SKIP_LAYERNORM_SLOWDOWN = 5.2
"""onnxruntime 1.32's CPU ``SkipLayerNormalization`` over the ``Add`` + ``LayerNormalization``
it replaces, measured on this project's 2-core x86 machines at 1x128x768, one thread
(533 us against 103 us); :func:`calibrated_cpu_profile` measures it afresh."""

CPU_PROFILE = DeviceProfile("cpu-2core", flops=60e9, bandwidth=12e9, overhead=3e-6, nchwc=True,
                            slow_fusions={"skip_layernorm": SKIP_LAYERNORM_SLOWDOWN},
                            source="nominal: a 2-core x86 server slice with AVX2 FMA")
"""A 2-core x86 server slice with AVX2 FMA (nominal figures; see :func:`calibrated_cpu_profile`)."""

_F16, _BF16, _F32 = TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT

GPU_PROFILES: dict[str, DeviceProfile] = {
    # NVIDIA's datasheets; half precision through tensor cores (dense, no sparsity)
    "t4": DeviceProfile("t4", merges_kernels=True, flops=8.1e12, bandwidth=320e9, overhead=5e-6,
                        peaks={_F16: 65e12}, source="NVIDIA T4 datasheet: 8.1 TFLOPS fp32, 65 fp16, 320 GB/s"),
    "v100": DeviceProfile("v100", merges_kernels=True, flops=15.7e12, bandwidth=900e9, overhead=5e-6,
                          peaks={_F16: 125e12},
                          source="NVIDIA V100 SXM2 datasheet: 15.7 TFLOPS fp32, 125 fp16 tensor, 900 GB/s"),
    "a100": DeviceProfile("a100", merges_kernels=True, flops=19.5e12, bandwidth=1555e9, overhead=5e-6,
                          peaks={_F16: 312e12, _BF16: 312e12},
                          source="NVIDIA A100 40GB SXM datasheet: 19.5 TFLOPS fp32, 312 fp16/bf16 tensor, "
                                 "1,555 GB/s"),
    "h100": DeviceProfile("h100", merges_kernels=True, flops=67e12, bandwidth=3.35e12, overhead=5e-6,
                          peaks={_F16: 989e12, _BF16: 989e12},
                          source="NVIDIA H100 SXM5 datasheet: 67 TFLOPS fp32, 989 fp16/bf16 tensor (dense), "
                                 "3.35 TB/s"),
}
"""Published peak figures of common GPUs (kernel launch overhead ~5 us)."""


# ---------------------------------------------------------------------------
# the roofline model


FOLDED_SHARE = 0.05
"""What a node onnxruntime folds into a Conv's weights costs, as a share of the kernel overhead:
not zero, or the extractor would keep useless ones."""


class RooflineCostModel:
    """max(FLOPs / peak, bytes / bandwidth) + per-kernel overhead, fusion-aware.

    Fused epilogues (see :func:`fusion_role`) cost only the extra operand they read;
    on a profile with ``nchwc`` a channel Split/Slice also pays its layout reorders.
    """

    def __init__(self, profile: DeviceProfile = CPU_PROFILE, fusion: bool = True) -> None:
        self.profile = profile
        self.fusion = fusion
        self.name = f"roofline:{profile.name}"

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float:
        op = node.op_type
        p = self.profile
        role = fusion_role(op, node.attrs, inputs, output) if self.fusion else (
            "view" if op in VIEW_OPS else "kernel")
        if role == "view":
            return p.view_overhead if p.view_overhead is not None else p.overhead * 0.1
        if role == "gelu_part":
            return flops(op, node.attrs, inputs, output) / p.peak(output.dtype if output else None)
        if role == "conv_epilogue" and (op == "BatchNormalization" or (
                op in ("Add", "Mul") and not _same(inputs[0], inputs[1]))):
            # folded into the Conv's weights when the session is created (ConvBNFusion,
            # ConvAddFusion, ConvMulFusion): next to nothing, but not free (see FOLDED_SHARE)
            return p.overhead * FOLDED_SHARE
        if role in ("conv_epilogue", "gemm_epilogue"):
            main = 0 if op in CONV_ACTIVATIONS or op == "BatchNormalization" else main_operand(inputs, output)
            extra = sum(numel(t) * itemsize(t) for k, t in enumerate(inputs) if k != main and t is not None)
            return max(flops(op, node.attrs, inputs, output) / p.peak(output.dtype if output else None),
                       extra / p.bandwidth)
        outputs = split_output_types(node, inputs, output)
        compute = flops(op, node.attrs, inputs, output) / p.peak(output.dtype if output else None)
        moved = float(sum(numel(t) * itemsize(t) for t in inputs if t is not None)
                      + sum(numel(t) * itemsize(t) for t in outputs))
        cost = max(compute, moved / p.bandwidth) + p.overhead
        if p.nchwc and self.fusion:
            before, after = layout_boundary(op, node.attrs, inputs, outputs)
            for shape in before + after:
                cost += 2 * 4 * math.prod(shape) / p.bandwidth + p.overhead
        return cost

    def fusion_penalty(self, site: "FusionSite") -> float:
        """What the runtime's fused kernel costs beyond its parts (see :attr:`DeviceProfile.slow_fusions`)."""
        slowdown = self.profile.slow_fusions.get(site.kind, 1.0) if self.fusion else 1.0
        if slowdown <= 1.0:
            return 0.0
        return (slowdown - 1.0) * sum(self.node_cost(node, inputs, output) for node, inputs, output in site.parts())


# ---------------------------------------------------------------------------
# pricing a whole graph


def graph_cost(graph: Graph, model: CostModel) -> float:
    """Cost of a Graph as it stands, priced like the e-graph prices its e-nodes:
    nodes computed from weights alone are free, opaque nodes use their ONNX op type;
    plus what the runtime's slow fusions add (:func:`fusion_penalties`).

    A model with a ``prepare(items)`` method (the measured one) is first handed every
    node it will price, so it can measure what is missing in one interleaved batch."""
    return sum(node_costs(graph, model).values()) + sum(fusion_penalties(graph, model).values())


# ---------------------------------------------------------------------------
# fusions the runtime makes that a device runs slower than their parts


@dataclass(frozen=True)
class FusionSite:
    """Nodes that onnxruntime fuses into one kernel, which some devices run slower than the parts.

    The one kind known is ``skip_layernorm``: a residual ``Add`` of two same-shaped rank-3
    activations (one may be a biased projection, ``Add(Add(x, bias), y)``; onnxruntime
    1.32 leaves ``Add(Add(x, y), bias)`` alone, measured),
    whose sum feeds only a ``LayerNormalization`` over the last axis with weights for its
    scale and bias; onnxruntime's ``SkipLayerNormFusion`` makes it one
    ``SkipLayerNormalization``, which its CPU provider runs about five times slower than the
    parts (see :data:`SKIP_LAYERNORM_SLOWDOWN`). ``nodes`` are the graph indices of the parts
    in order (the LayerNormalization last, its producer before it); ``ops`` and ``types`` each
    part and its input types; ``operands`` the two rank-3 tensors the fused kernel adds."""

    kind: str
    nodes: tuple[int, ...]
    ops: tuple[Node, ...] = field(hash=False, compare=False)
    types: tuple[tuple[TensorType | None, ...], ...] = field(hash=False, compare=False)
    operands: tuple[TensorType, TensorType] = field(hash=False, compare=False)

    def parts(self) -> list[tuple[Node, list[TensorType | None], TensorType | None]]:
        """(node, input types, output type) of each part, as a cost model prices them."""
        return [(node, list(types), self.operands[0]) for node, types in zip(self.ops, self.types)]


def _rank3(t: TensorType | None) -> bool:
    return t is not None and t.dtype in _FLOATS and t.shape is not None and len(t.shape) == 3


def fusion_sites(graph: Graph) -> list[FusionSite]:
    """Where in ``graph`` onnxruntime will fuse nodes into a kernel listed in :class:`FusionSite`."""
    consumers: dict[str, list[int]] = {}
    made_by: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name:
                consumers.setdefault(name, []).append(index)
        made_by.update((o, index) for o in node.outputs if o)
    outputs = set(graph.outputs)

    def only_add_into(value: str, consumer: int) -> int | None:
        """The Add making ``value`` when ``consumer`` alone reads it (else onnxruntime leaves it)."""
        producer = made_by.get(value)
        if (producer is None or graph.nodes[producer].written_op != "Add" or value in outputs
                or consumers.get(value) != [consumer] or len(graph.nodes[producer].inputs) != 2):
            return None
        return producer

    def activation(name: str) -> bool:  # a run-time rank-3 float tensor
        return name not in graph.weights and _rank3(graph.types.get(name))

    sites = []
    for index, node in enumerate(graph.nodes):
        if node.op_type != "LayerNormalization" or not node.inputs:
            continue
        scale_bias = [i for i in node.inputs[1:3] if i]
        if not scale_bias or any(i not in graph.weights for i in scale_bias):
            continue
        last = only_add_into(node.inputs[0], index)
        if last is None:
            continue
        t = graph.types.get(node.inputs[0])
        if not _rank3(t) or int(node.attrs.get("axis", -1)) not in (-1, 2):
            continue
        a, b = graph.nodes[last].inputs
        if not (activation(a) and activation(b) and _same(graph.types[a], graph.types[b])):
            continue  # Add(Add(x, y), bias) is left alone (measured); Add(Add(x, bias), y) is this form
        parts = (last, index)
        sites.append(FusionSite(
            "skip_layernorm", parts, tuple(graph.nodes[k] for k in parts),
            tuple(tuple(graph.types.get(i) if i else None for i in graph.nodes[k].inputs) for k in parts),
            (graph.types[a], graph.types[b])))
    return sites


def fusion_penalties(graph: Graph, model: CostModel) -> dict[FusionSite, float]:
    """Each :func:`fusion_sites` site the model prices above its parts, with the excess
    (a model without a ``fusion_penalty(site)`` method sees none)."""
    price = getattr(model, "fusion_penalty", None)
    if not callable(price):
        return {}
    found = {}
    for site in fusion_sites(graph):
        penalty = price(site)
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
    prepare = getattr(model, "prepare", None)
    if callable(prepare):
        prepare([(node, inputs, output) for _, node, inputs, output in items])
    return {index: model.node_cost(node, inputs, output) for index, node, inputs, output in items}


# ---------------------------------------------------------------------------
# CPU calibration and the factory


def cache_dir() -> Path:
    """Where measurements are cached: ``$EQSAT_DNN_CACHE``, else ``$XDG_CACHE_HOME/eqsat-dnn``,
    else ``~/.cache/eqsat-dnn``."""
    env = os.environ.get("EQSAT_DNN_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eqsat-dnn"


def calibrated_cpu_profile(threads: int | None = None, cache: str | Path | None = None) -> DeviceProfile:
    """This CPU's roofline profile, measured once in onnxruntime and cached: peak fp32 GEMM
    rate (a 1024^3 MatMul), memory bandwidth (an Add over 64 MB operands) and the runtime's
    per-node overhead, at ``threads`` intra-op threads (see :mod:`eqsat_dnn.measure`)."""
    from eqsat_dnn import measure

    return measure.cpu_profile(threads=threads, cache_dir=cache)


COST_MODELS = ("measured", "roofline", "roofline:cpu-nominal", *(f"roofline:{k}" for k in GPU_PROFILES))
"""Names :func:`get_cost_model` knows."""


def get_cost_model(name: str = "measured", **options: Any) -> CostModel:
    """A cost model by name: ``measured`` (onnxruntime timings on this machine),
    ``roofline`` (this CPU, calibrated), ``roofline:cpu-nominal`` (fixed nominal CPU
    figures, no measurement), ``roofline:t4`` / ``:v100`` / ``:a100`` / ``:h100``.
    ``options`` go to the model (``threads``, ``cache_dir`` for the measured one)."""
    from eqsat_dnn.errors import InputError

    key = name.strip().lower()
    if key == "measured":
        from eqsat_dnn.measure import MeasuredCostModel

        return MeasuredCostModel(**options)
    if key in ("roofline", "roofline:cpu"):
        return RooflineCostModel(calibrated_cpu_profile(options.get("threads"), options.get("cache_dir")))
    if key in ("roofline:cpu-nominal", "roofline:cpu-2core"):
        return RooflineCostModel(CPU_PROFILE)
    if key.startswith("roofline:") and key.split(":", 1)[1] in GPU_PROFILES:
        return RooflineCostModel(GPU_PROFILES[key.split(":", 1)[1]])
    raise InputError(f"unknown cost model {name!r} (choose from {', '.join(COST_MODELS)})")


def __getattr__(name: str) -> Any:
    # MeasuredCostModel lives in eqsat_dnn.measure (which imports this module)
    if name == "MeasuredCostModel":
        from eqsat_dnn.measure import MeasuredCostModel

        return MeasuredCostModel
    raise AttributeError(name)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def canonical(value: Any) -> str:
    """A stable text form of attributes and shapes, for cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


__all__ = [
    "BATCH_DIM", "COST_MODELS", "CPU_PROFILE", "CostModel", "DeviceProfile", "FusionSite", "GPU_PROFILES",
    "RooflineCostModel", "SKIP_LAYERNORM_SLOWDOWN", "SYMBOLIC_DIM", "VIEW_OPS", "bytes_moved", "cache_dir",
    "calibrated_cpu_profile", "dims", "flops", "fusion_penalties", "fusion_role", "fusion_sites", "get_cost_model",
    "graph_cost", "itemsize", "layout_boundary", "node_costs", "numel", "priced_nodes",
]
