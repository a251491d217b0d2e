"""Cost models: the price of one e-node from its op, attributes and types.

A cost model is anything with ``name`` and ``node_cost(node, inputs, output) ->
seconds``, where ``node`` is a :class:`~eqsat_dnn.graph.Node` (vocabulary op with
normalised attributes, or an opaque node with its ``NodeProto``) and ``inputs`` /
``output`` are the tensor types. Nodes computed from weights alone are priced at
zero by the caller (they are folded into initializers at export), so models only
see real run-time work. A multi-output node is priced once per output e-node, at
its cost divided by the number of outputs.

:class:`RooflineCostModel` is the analytic model: the larger of compute time
(FLOPs over peak) and memory time (bytes over bandwidth), plus a fixed per-kernel
overhead, against a :class:`DeviceProfile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from onnx import helper

from eqsat_dnn.graph import Graph, Node, TensorType
from eqsat_dnn.language import OPS

SYMBOLIC_DIM = 1
"""Size assumed for a symbolic or unknown dimension when pricing."""


class CostModel(Protocol):
    name: str

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float: ...


def op_type(node: Node) -> str:
    """The ONNX op type of a node, opaque or not."""
    return node.proto.op_type if node.op == "Opaque" and node.proto is not None else node.op


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


CPU_PROFILE = DeviceProfile("cpu-2core", flops=60e9, bandwidth=12e9, overhead=3e-6)
"""A 2-core x86 server slice with AVX2 FMA (nominal figures)."""


def numel(t: TensorType | None) -> int:
    if t is None or t.shape is None:
        return 1
    return int(np.prod([d if isinstance(d, int) and d >= 0 else SYMBOLIC_DIM for d in t.shape], dtype=np.int64))


def itemsize(t: TensorType | None) -> int:
    if t is None or not t.dtype:
        return 4
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(t.dtype)).itemsize
    except (KeyError, TypeError, ValueError):
        return 4


def _dims(t: TensorType | None) -> list[int]:
    if t is None or t.shape is None:
        return []
    return [d if isinstance(d, int) and d >= 0 else SYMBOLIC_DIM for d in t.shape]


def flops(op: str, attrs: dict[str, Any], inputs: list[TensorType | None], output: TensorType | None) -> float:
    """Floating-point operations of one node (multiply-add counts two)."""
    out = numel(output)
    if op == "MatMul":
        a = _dims(inputs[0]) if inputs else []
        k = a[-1] if a else 1
        return 2.0 * out * k
    if op == "Gemm":
        a = _dims(inputs[0]) if inputs else []
        k = (a[0] if attrs.get("transA") else a[-1]) if a else 1
        return 2.0 * out * k + out
    if op == "Conv":
        w = _dims(inputs[1]) if len(inputs) > 1 else []
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


_FREE = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
"""Ops that onnxruntime turns into metadata changes (no data movement)."""


class RooflineCostModel:
    """max(FLOPs / peak, bytes / bandwidth) + per-kernel overhead."""

    def __init__(self, profile: DeviceProfile = CPU_PROFILE) -> None:
        self.profile = profile
        self.name = f"roofline:{profile.name}"

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float:
        op = op_type(node)
        if op in _FREE:
            return self.profile.overhead * 0.1
        compute = flops(op, node.attrs, inputs, output) / self.profile.flops
        memory = bytes_moved(inputs, output) / self.profile.bandwidth
        return max(compute, memory) + self.profile.overhead


def graph_cost(graph: Graph, model: CostModel) -> float:
    """Cost of a Graph as it stands, priced like the e-graph prices its e-nodes:
    nodes computed from weights alone are free, opaque nodes use their ONNX op type."""
    constant = set(graph.weights)
    total = 0.0
    for node in graph.nodes:
        if node.op != "Opaque" and all((not i) or i in constant for i in node.inputs):
            constant.update(node.outputs)
            continue
        inputs = [graph.types.get(i) for i in node.inputs]
        output = graph.types.get(node.outputs[0]) if node.outputs else None
        total += model.node_cost(node, inputs, output)
    return total
