"""Shape arithmetic folded at import: small integer tensors computed from constants alone.

Exporters compute reshape targets, expand shapes and index ranges at run time: torch's dynamo
exporter writes a head split as ``Reshape(x, Concat(Shape(ids)[0:1], Shape(mask)[1:2], [12], [64]))``
whenever the model was exported with dynamic axes. Once every dim is known (a static export, or one
pinned with ``--overwrite-input-shape``) each ``Shape`` is a constant, and so is the integer
arithmetic over it; a Reshape or Expand whose target is a constant is vocabulary, and the rules
see through it. onnx's data propagation stops at ``Range`` (a causal mask's length), so its shape
inference leaves such dims unknown until these values are constants: import folds, then infers.
onnx's reference evaluator computes the values, so their meaning is onnx's own (onnx-simplifier
loops onnxruntime and inference the same way).

Only integer results fold. Float subgraphs over constants (RoPE's cos/sin caches, masks) stay
expressions the rules match, and fold at export.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import uses_external_data

from eqsat_dnn.io.protos import light_copy, tensor_view

FOLDED_OPS = frozenset({
    "Abs", "Add", "Cast", "Concat", "ConstantOfShape", "CumSum", "Div", "Equal", "Expand", "Gather",
    "Identity", "Max", "Min", "Mod", "Mul", "Neg", "Range", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceSum", "Reshape", "Shape", "Size", "Slice", "Squeeze", "Sub", "Tile", "Unsqueeze", "Where",
})
"""Standard ops whose integer results import computes when every input is a constant."""

FOLDED_ELEMENTS = 65536
"""Neither an input nor a result over this many elements folds: shape data is small."""

ROUNDS = 4
"""Fold-then-infer rounds at most (one folds a whole chain; the next finds what new shapes allow)."""

_INTEGERS = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def _standard(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _small(tensor: onnx.TensorProto) -> bool:
    return int(np.prod(tensor.dims, dtype=np.int64)) <= FOLDED_ELEMENTS


def fold_integer_node(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto],
                      opset: int) -> list[onnx.TensorProto] | None:
    """The outputs of ``node`` as named tensors, when it is shape arithmetic (:data:`FOLDED_OPS`)
    over ``constants`` alone and every output is a small integer tensor; else ``None``."""
    names = [i for i in node.input if i]
    if not _standard(node) or node.op_type not in FOLDED_OPS or not names:
        return None
    if any(n not in constants or not _small(constants[n]) for n in names):
        return None
    try:
        from onnx.reference import ReferenceEvaluator

        feeds = [numpy_helper.from_array(np.asarray(tensor_view(constants[n])), n) for n in dict.fromkeys(names)]
        graph = helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                                  feeds)
        values = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])).run(None, {})
    except Exception:  # what the evaluator cannot compute stays a node, as it was
        return None
    folded = []
    for name, value in zip(node.output, values):
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if tensor.data_type not in _INTEGERS or not _small(tensor):
            return None
        folded.append(tensor)
    return folded


def _constant_node_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or not _standard(node) or len(node.attribute) != 1 or len(node.output) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "value" and attr.t.data_type in _INTEGERS and _small(attr.t) and not uses_external_data(attr.t):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
        tensor.name = node.output[0]
        return tensor
    if attr.name in ("value_int", "value_ints"):
        value = attr.i if attr.name == "value_int" else list(attr.ints)
        return numpy_helper.from_array(np.array(value, dtype=np.int64), node.output[0])
    return None


def _static_dims(inferred: onnx.ModelProto) -> dict[str, list[int]]:
    found = {}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            found[info.name] = [d.dim_value for d in dims]
    return found


def _shape_value(node: onnx.NodeProto, dims: dict[str, list[int]]) -> list[onnx.TensorProto] | None:
    if node.op_type != "Shape" or not _standard(node) or not node.input or node.input[0] not in dims:
        return None
    given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if set(given) - {"start", "end"}:
        return None
    shape = dims[node.input[0]]
    value = shape[given.get("start", 0):given.get("end", len(shape))]  # clamps as onnx's Shape does
    return [numpy_helper.from_array(np.array(value, dtype=np.int64), node.output[0])]


def fold_shape_arithmetic(model: onnx.ModelProto, infer: Callable[[onnx.ModelProto], onnx.ModelProto],
                          computed: Callable[[list[int]], bool] | None = None) -> int:
    """Replace, in place, every node of ``model``'s main graph that computes a small integer tensor
    from constants and known shapes by an initializer holding its value; returns how many were.

    ``infer`` is shape inference (on a light copy: it must not need weight data). A node whose
    output is a graph output stays, as do graph inputs' defaults (a caller may feed another value),
    and so does one with an output whose dims ``computed`` holds must stay computed (a range over
    a dim pinned at a probe, :meth:`~eqsat_dnn.io.probes.Probes.in_shape`)."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    constants = {t.name: t for t in graph.initializer
                 if t.name not in inputs and not uses_external_data(t) and _small(t)}
    if not any(n.op_type in FOLDED_OPS and _standard(n) for n in graph.node):
        return 0
    total = 0
    original_nodes = list(graph.node)  # references outlive their removal (the rounds rely on it too)
    original_inits = len(graph.initializer)
    for _ in range(ROUNDS):
        dims = _static_dims(infer(model)) if any(n.op_type == "Shape" for n in graph.node) else {}
        kept: list[onnx.NodeProto] = []
        added: list[onnx.TensorProto] = []
        for node in graph.node:
            value = _constant_node_value(node)
            if value is not None:
                constants[value.name] = value
            folded = None if value is not None or outputs.intersection(node.output) else (
                _shape_value(node, dims) or fold_integer_node(node, constants, opset))
            if folded is not None and computed is not None and any(computed(list(t.dims)) for t in folded):
                folded = None
            if folded is None:
                kept.append(node)
                continue
            for tensor in folded:
                constants[tensor.name] = tensor
            added.extend(folded)
        if not added:
            break
        _set_graph(graph, kept, len(graph.initializer), added)
        total += len(added)
    if total and not _inferable(model):
        # a target made constant can show a model that could never run (12 values into [5, -1]);
        # such a model was the user's to run and find out: it stays as it came, unless it already
        # failed onnx's full check as it came
        folded_nodes, added = list(graph.node), list(graph.initializer[original_inits:])
        _set_graph(graph, original_nodes, original_inits, [])
        if _inferable(model):
            return 0
        _set_graph(graph, folded_nodes, original_inits, added)
    return total


def _set_graph(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], inits: int,
               added: list[onnx.TensorProto]) -> None:
    """``graph`` with ``nodes`` and its first ``inits`` initializers followed by ``added``."""
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[inits:]
    graph.initializer.extend(added)


def _inferable(model: onnx.ModelProto) -> bool:
    """Whether onnx's full check (strict shape inference, as export checks its output) accepts ``model``."""
    try:
        onnx.checker.check_model(light_copy(model), full_check=True)
    except Exception:  # onnx raises several types: any failure is a no
        return False
    return True


__all__ = ["FOLDED_ELEMENTS", "FOLDED_OPS", "ROUNDS", "fold_integer_node", "fold_shape_arithmetic"]
