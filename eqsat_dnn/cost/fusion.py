"""What onnxruntime fuses (CPU execution provider, ``ORT_ENABLE_ALL``): the policy both cost
models price by.

A per-node price cannot see the node's neighbours, so
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
``fusion_penalty(site)`` gives the excess, :func:`eqsat_dnn.cost.graph_cost` adds it, and
:mod:`eqsat_dnn.lower` writes such sites so that onnxruntime leaves them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnx import TensorProto

from eqsat_dnn.cost.shapes import dims, numel
from eqsat_dnn.ir.graph import Graph, Node, TensorType

VIEW_OPS = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Dropout"})
"""Ops that onnxruntime turns into buffer aliases (no data movement)."""

CONV_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid"})
"""Activations that onnxruntime's Conv (and its NCHWc Conv) apply in their epilogue."""

_FLOATS = (TensorProto.FLOAT,)

NCHWC_BLOCK = 8
"""Channel counts below this stay in plain NCHW in onnxruntime's NCHWc transformer."""


def _is_float4d(t: TensorType | None) -> bool:
    return t is not None and t.dtype in _FLOATS and t.shape is not None and len(t.shape) == 4


def same_shape(a: TensorType | None, b: TensorType | None) -> bool:
    return a is not None and b is not None and a.shape is not None and b.shape is not None and dims(a) == dims(b)


def main_operand(inputs: list[TensorType | None], output: TensorType | None) -> int:
    """Index of the operand of a binary op that has the output's shape (0 when both or neither)."""
    for k, t in enumerate(inputs[:2]):
        if same_shape(t, output):
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
        if op in CONV_ACTIVATIONS and same_shape(inputs[0] if inputs else None, output):
            return "conv_epilogue"
        if op == "BatchNormalization" and same_shape(inputs[0] if inputs else None, output):
            return "conv_epilogue"
        if op in ("Add", "Sum", "Mul") and len(inputs) == 2:
            main = main_operand(inputs, output)
            other = inputs[1 - main]
            if not same_shape(inputs[main], output) or other is None or other.shape is None:
                return "kernel"
            if op in ("Add", "Sum") and same_shape(other, output):
                return "conv_epilogue"  # residual: the NCHWc Conv's fused Sum input
            od = dims(other)
            if op in ("Add", "Mul") and numel(other) == out[1] and len(od) >= 3 and od[-3] == out[1]:
                return "conv_epilogue"  # per-channel bias or scale, folded into the weights
    if len(out) >= 2 and op in ("Add", "Mul", "Div") and len(inputs) == 2:
        main = main_operand(inputs, output)
        other = inputs[1 - main]
        if not same_shape(inputs[main], output) or other is None or other.shape is None:
            return "kernel"
        if (op == "Add" and numel(other) == out[-1] and (not dims(other) or dims(other)[-1] == out[-1])
                and out[-1] > 1 and not same_shape(other, output)):
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
        if not (activation(a) and activation(b) and same_shape(graph.types[a], graph.types[b])):
            continue  # Add(Add(x, y), bias) is left alone (measured); Add(Add(x, bias), y) is this form
        parts = (last, index)
        sites.append(FusionSite(
            "skip_layernorm", parts, tuple(graph.nodes[k] for k in parts),
            tuple(tuple(graph.types.get(i) if i else None for i in graph.nodes[k].inputs) for k in parts),
            (graph.types[a], graph.types[b])))
    return sites


__all__ = ["CONV_ACTIVATIONS", "FusionSite", "NCHWC_BLOCK", "VIEW_OPS", "fusion_role", "fusion_sites",
           "layout_boundary", "main_operand", "same_shape"]
