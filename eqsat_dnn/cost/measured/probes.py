"""Probe builders: the small ONNX models the measured cost model times.

:func:`node_spec` is a node alone (random inputs; the inputs that are weights in real models
as initializers, so onnxruntime prepacks them); :func:`producer_spec` and :func:`pair_spec` a
cheap producer alone and with a fused epilogue behind it; :func:`gemm_path_spec` a MatMul with
its bias Add; :func:`gelu_spec` onnxruntime's fused GELU; :func:`fusion_spec` a fusion site's
parts, fused and apart; :func:`reorder_spec` an NCHWc reorder. A configuration that cannot be
built or run alone raises :class:`Unmeasurable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from eqsat_dnn.cost.fusion import CONV_ACTIVATIONS, FusionSite
from eqsat_dnn.cost.shapes import dims
from eqsat_dnn.ir.graph import Node, TensorType
from eqsat_dnn.ir.language import OPAQUE, OPS, OpSpec

VOCAB_OPSET = 20

OPAQUE_OPSETS = (20, 18, 17, 13)
"""Opsets tried, in order, for an opaque node (its model's opset is not known here)."""

PRODUCER_K = 16
"""Reduction size of the cheap producer an epilogue is measured behind."""

_INT_INPUT_OK = frozenset({
    "Gather", "GatherElements", "GatherND", "Cast", "CastLike", "Where", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Add", "Sub", "Mul", "Div", "Neg", "Abs",
    "Max", "Min", "Mod", "Sign", "Identity", "Shape", "Size", "Transpose", "Concat",
})
"""Opaque ops whose integer inputs may be zeros (data or gather indices), so they run on random data."""

_WEIGHT_SLOTS = {
    "Gemm": {1, 2}, "Conv": {1, 2}, "ConvTranspose": {1, 2}, "LayerNormalization": {1, 2},
    "BatchNormalization": {1, 2, 3, 4}, "InstanceNormalization": {1, 2}, "Gather": {0},
    "PRelu": {1}, "SkipLayerNormalization": {2, 3, 4}, "RMSNormalization": {1}, "RotaryEmbedding": {1, 2},
    "ProjectedAttention": {1, 2},
}
"""Inputs that are initializers in real models (onnxruntime may prepack them)."""


class Unmeasurable(Exception):
    """This configuration cannot be built or run alone."""


def _np_dtype(dtype: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise Unmeasurable(f"element type {dtype}") from None


def _random(dtype: int, shape: list[int], rng: np.random.Generator, positive: bool = False) -> np.ndarray:
    return np.asarray(_random_values(dtype, shape, rng, positive))  # 0-d: an array, not a numpy scalar


def _random_values(dtype: int, shape: list[int], rng: np.random.Generator, positive: bool) -> Any:
    np_dtype = _np_dtype(dtype)
    if np_dtype.kind == "f":
        data = rng.standard_normal(shape, dtype=np.float32)
        if positive:
            data = np.abs(data) + 0.5
        return (data * 0.1 if not positive else data).astype(np_dtype, copy=False)
    if np_dtype.kind == "b":
        return rng.random(shape) < 0.5
    if np_dtype.kind in "iu":
        # zeros are valid gather indices; ones are safe divisors
        return (np.ones if positive else np.zeros)(shape, np_dtype)
    raise Unmeasurable(f"element type {np_dtype}")


@dataclass
class Spec:
    """A small model to time: nodes, graph inputs (fed) and initializers."""

    nodes: list[onnx.NodeProto]
    inputs: dict[str, TensorType]
    weights: dict[str, TensorType]
    outputs: list[str]
    extra: list[onnx.TensorProto]
    domains: tuple[tuple[str, int], ...] = ()
    opset: int = VOCAB_OPSET
    positive: frozenset[str] = frozenset()
    layout: bool = False
    """Read the optimized model back for NCHWc reorders (Conv-like nodes)."""
    opsets: tuple[int, ...] = ()
    """Opsets to try in turn (an opaque node's own opset is not known)."""

    def build(self, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        from onnx import numpy_helper

        inits = [numpy_helper.from_array(_random(t.dtype, dims(t), rng, name in self.positive), name)
                 for name, t in self.weights.items()]
        graph = helper.make_graph(
            self.nodes, "cost_probe",
            [helper.make_tensor_value_info(name, t.dtype, dims(t)) for name, t in self.inputs.items()],
            [helper.make_empty_tensor_value_info(name) for name in self.outputs],
            inits + list(self.extra),
        )
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="eqsat-dnn-cost")
        # opset 23 (Attention) needs IR version 11
        model.ir_version = 9 if self.opset <= 20 else (10 if self.opset <= 22 else 11)
        feeds = {name: _random(t.dtype, dims(t), rng, name in self.positive) for name, t in self.inputs.items()}
        return model, feeds


def _check_types(types: Iterable[TensorType | None]) -> None:
    for t in types:
        if t is None or t.shape is None:
            raise Unmeasurable("unknown input type or rank")
        _np_dtype(t.dtype)


def weight_slots(op: str, inputs: list[TensorType | None]) -> set[int]:
    present = [k for k, t in enumerate(inputs) if t is not None]
    slots = set(_WEIGHT_SLOTS.get(op, ()))
    if op == "MatMul" and len(inputs) == 2 and inputs[1] is not None and inputs[0] is not None:
        if len(dims(inputs[1])) == 2 and len(dims(inputs[0])) >= 2:
            slots = {1}
    elif op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min") and len(present) == 2:
        small = [k for k in present if len(dims(inputs[k])) <= 1 or math.prod(dims(inputs[k])) == 1]
        if len(small) == 1:
            slots = set(small)
    slots &= set(present)
    if present and slots >= set(present):
        slots.discard(present[0])  # something must be fed, or onnxruntime folds the node away
    return slots


def _node_protos(node: Node, in_names: list[str], out_names: list[str], opset: int,
                 extra: list[onnx.TensorProto]) -> onnx.NodeProto:
    from eqsat_dnn.io.onnx_out import _node_proto

    if node.op == OPAQUE:
        proto = onnx.NodeProto()
        proto.CopyFrom(node.proto)
        del proto.input[:]
        proto.input.extend(in_names)
        del proto.output[:]
        proto.output.extend(out_names)
        proto.name = "probe"
        return proto
    attrs = {k: v for k, v in node.attrs.items() if k != "index"}
    return _node_proto(Node(node.op, list(in_names), list(out_names), attrs, name="probe"), opset,
                       set(in_names) | set(out_names), extra)


def _n_outputs(node: Node, inputs: list[TensorType | None]) -> int:
    if node.op == OPAQUE:
        return max(1, len(node.proto.output))
    if node.op == "Split":
        return max(1, len(node.attrs.get("split") or [1]))
    return 1


def _measurable(node: Node, inputs: list[TensorType | None]) -> None:
    if node.op == OPAQUE:
        proto = node.proto
        if proto is None:
            raise Unmeasurable("opaque node without its NodeProto")
        if proto.domain not in ("", "ai.onnx"):
            raise Unmeasurable(f"custom domain {proto.domain}")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in proto.attribute):
            raise Unmeasurable("op with subgraphs")
        ints = [t for t in inputs if t is not None and _np_dtype(t.dtype).kind in "iu"]
        if ints and proto.op_type not in _INT_INPUT_OK:
            raise Unmeasurable(f"{proto.op_type} needs meaningful integer inputs")
    spec = OPS.get(node.op)
    optional = {k for k, name in enumerate(spec.inputs) if name.endswith("?")} if spec else set()
    _check_types(t for k, t in enumerate(inputs) if not (t is None and k in optional))


def node_spec(node: Node, inputs: list[TensorType | None], opset: int | None = None,
              replace: dict[int, str] | None = None) -> Spec:
    """The one-node model of ``node`` (input ``k`` renamed to ``replace[k]`` when given)."""
    _measurable(node, inputs)
    op = node.op_type
    slots = weight_slots(op, inputs)
    replace = replace or {}
    names, feeds, weights = [], {}, {}
    for k, t in enumerate(inputs):
        if k in replace:
            names.append(replace[k])
        elif t is None:
            names.append("")
        else:
            name = f"in{k}"
            names.append(name)
            (weights if k in slots else feeds)[name] = t
    outs = [f"out{k}" for k in range(_n_outputs(node, inputs))]
    extra: list[onnx.TensorProto] = []
    spec = OPS.get(node.op)
    chosen = opset or (OPAQUE_OPSETS[0] if node.op == OPAQUE else _vocabulary_opset(spec))
    domains = ((spec.domain, spec.since),) if spec is not None and spec.domain else ()
    proto = _node_protos(node, names, outs, chosen, extra)
    positive = frozenset({"in4"}) if op == "BatchNormalization" else (
        frozenset(f"in{k}" for k in range(len(inputs))) if op in ("Div", "Mod") else frozenset())
    layout = op in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
    return Spec([proto], feeds, weights, outs, extra, domains=domains, opset=chosen, positive=positive,
                layout=layout, opsets=OPAQUE_OPSETS if node.op == OPAQUE and opset is None else ())


def _vocabulary_opset(spec: OpSpec | None) -> int:
    """The standard opset a probe of a vocabulary op is written in: :data:`VOCAB_OPSET`, or the
    op's own first version where it is newer (opset 23's RMSNormalization, RotaryEmbedding)."""
    return max(VOCAB_OPSET, spec.since) if spec is not None and not spec.domain else VOCAB_OPSET


def producer_spec(role: str, main: TensorType, twin: bool = False) -> Spec:
    """A cheap producer of a tensor shaped like ``main``, output ``p`` (and a second one, ``p2``,
    when ``twin``: a residual Add fuses into a Conv only when both operands are Conv outputs)."""
    shape = dims(main)
    if role == "conv_epilogue":
        x = TensorType(main.dtype, (shape[0], PRODUCER_K, shape[2], shape[3]))
        w = TensorType(main.dtype, (shape[1], PRODUCER_K, 1, 1))
        b = TensorType(main.dtype, (shape[1],))
        nodes = [helper.make_node("Conv", ["px", "pw", "pb"], ["p"], name="producer")]
        inputs, weights, outputs = {"px": x}, {"pw": w, "pb": b}, ["p"]
        if twin:
            nodes.append(helper.make_node("Conv", ["px2", "pw2", "pb2"], ["p2"], name="producer2"))
            inputs["px2"], weights["pw2"], weights["pb2"] = x, w, b
            outputs.append("p2")
        return Spec(nodes, inputs, weights, outputs, [], layout=True)
    x = TensorType(main.dtype, tuple(shape[:-1]) + (PRODUCER_K,))
    w = TensorType(main.dtype, (PRODUCER_K, shape[-1]))
    node = helper.make_node("MatMul", ["px", "pw"], ["p"], name="producer")
    return Spec([node], {"px": x}, {"pw": w}, ["p"], [])


def pair_spec(role: str, node: Node, inputs: list[TensorType | None]) -> Spec:
    """The producer with ``node`` behind it (its main operand replaced by the producer's output)."""
    main = pair_main(node.op_type, inputs)
    twin = is_residual(role, inputs)
    producer = producer_spec(role, inputs[main], twin)
    tail = node_spec(node, inputs, replace={main: "p", 1 - main: "p2"} if twin else {main: "p"})
    return Spec(producer.nodes + tail.nodes, {**producer.inputs, **tail.inputs},
                {**producer.weights, **tail.weights}, tail.outputs, producer.extra + tail.extra,
                domains=tail.domains, opset=tail.opset, positive=tail.positive, layout=True, opsets=tail.opsets)


def gemm_path_spec(node: Node, inputs: list[TensorType | None]) -> Spec:
    """A MatMul by a 2-D weight with a bias Add behind it: onnxruntime runs the pair as one Gemm
    (``MatMulAddFusion``), a different kernel from its MatMul."""
    spec = node_spec(node, inputs)
    n = dims(inputs[1])[-1]
    bias = TensorType(inputs[0].dtype, (n,))
    add = helper.make_node("Add", [spec.outputs[0], "bias"], ["y"], name="bias")
    return Spec(spec.nodes + [add], spec.inputs, {**spec.weights, "bias": bias}, ["y"], spec.extra,
                domains=spec.domains, opset=spec.opset)


def gelu_spec(approximate: str, t: TensorType | None) -> Spec:
    """onnxruntime's fused GELU kernel on a tensor of type ``t``."""
    _check_types([t])
    node = helper.make_node("Gelu", ["x"], ["y"], name="probe", approximate=approximate)
    return Spec([node], {"x": t}, {}, ["y"], [], opset=20)


def fusion_spec(site: FusionSite, avoided: bool) -> Spec:
    """A :class:`~eqsat_dnn.cost.fusion.FusionSite`'s parts as onnxruntime would fuse them, or, when
    ``avoided``, as :mod:`eqsat_dnn.lower` writes them (its Add as a Sum, which no fusion matches)."""
    if site.kind != "skip_layernorm":
        raise Unmeasurable(f"unknown fusion {site.kind!r}")
    a, b = site.operands
    ln_types = site.types[-1]
    _check_types([a, b, *ln_types])
    add = helper.make_node("Sum" if avoided else "Add", ["a", "b"], ["s"], name="parts")
    ln = node_spec(site.ops[1], list(ln_types), replace={0: "s"})
    return Spec([add] + ln.nodes, {"a": a, "b": b}, ln.weights, ln.outputs, ln.extra, domains=ln.domains,
                opset=ln.opset)


def skip_layernorm_probe(shape: tuple[int, ...] = (1, 128, 768)) -> FusionSite:
    """A BERT-base residual Add + LayerNormalization, to calibrate the CPU roofline's slowdown."""
    x = TensorType(TensorProto.FLOAT, shape)
    w = TensorType(TensorProto.FLOAT, shape[-1:])
    add = Node("Add", ["a", "b"], ["s"])
    ln = Node("LayerNormalization", ["s", "g", "b"], ["y"], {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
    return FusionSite("skip_layernorm", (0, 1), (add, ln), ((x, x), (x, w, w)), (x, x))


def reorder_spec(direction: str, shape: list[int], channels: int) -> Spec:
    """onnxruntime's NCHWc ``ReorderInput`` (NCHW -> blocked) or ``ReorderOutput`` (back)."""
    t = TensorType(TensorProto.FLOAT, tuple(shape))
    if direction == "in":
        node = helper.make_node("ReorderInput", ["x"], ["y"], domain="com.microsoft.nchwc", name="probe")
    else:
        node = helper.make_node("ReorderOutput", ["x"], ["y"], domain="com.microsoft.nchwc", name="probe",
                                channels=channels)
    return Spec([node], {"x": t}, {}, ["y"], [], domains=(("com.microsoft.nchwc", 1),), opset=17)


def is_residual(role: str, inputs: list[TensorType | None]) -> bool:
    return (role == "conv_epilogue" and len(inputs) == 2 and inputs[0] is not None and inputs[1] is not None
            and dims(inputs[0]) == dims(inputs[1]))


def pair_main(op: str, inputs: list[TensorType | None]) -> int:
    """Which input of an epilogue the producer feeds."""
    if op in CONV_ACTIVATIONS or op == "BatchNormalization" or len(inputs) < 2:
        return 0
    a, b = dims(inputs[0]), dims(inputs[1])
    return 0 if len(a) >= len(b) and math.prod(a) >= math.prod(b) else 1


__all__ = ["OPAQUE_OPSETS", "PRODUCER_K", "Spec", "Unmeasurable", "VOCAB_OPSET", "fusion_spec", "gelu_spec",
           "gemm_path_spec", "is_residual", "node_spec", "pair_main", "pair_spec", "producer_spec", "reorder_spec",
           "skip_layernorm_probe", "weight_slots"]
