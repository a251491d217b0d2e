"""Lowering for the runtime: the extracted graph, written so that onnxruntime runs it fast.

The e-graph chooses *what* to compute; how onnxruntime will run it also depends on the
fusions it makes when the session starts, some of which make a model slower on some
devices. :func:`avoid_slow_fusions` rewrites every site that the cost model prices
above its parts (:func:`eqsat_dnn.cost.fusion_penalties`) into a form the fusion does
not match and that computes the same values:

* ``skip_layernorm`` (a residual ``Add`` feeding only a ``LayerNormalization``):
  onnxruntime's CPU provider runs the fused ``SkipLayerNormalization`` about five times
  slower than the two nodes (533 us against 103 us for BERT-base's 1x128x768 in
  onnxruntime 1.32, one thread). The ``Add`` that feeds the LayerNormalization is written
  as ``Sum`` of the same two operands (``Sum`` broadcasts as ``Add`` does): the same sum,
  and ``SkipLayerNormFusion`` starts from an ``Add`` only.

The lowered node is still an ``Add`` to the rules and the cost models, written as ``Sum``
(:data:`eqsat_dnn.ir.language.ALIASES`, as import reads a two-operand ``Sum`` back).

A cost model without a penalty for a site (the GPU rooflines: CUDA's fused kernel is the
fast one) leaves the graph as it is. The graph in is not changed.

:func:`to_standard` writes the ops of another operator set that have a standard form
(:attr:`eqsat_dnn.ir.language.OpSpec.standard_form`) in standard ONNX ops, for
:attr:`~eqsat_dnn.ir.language.Target.ONNX`: ``QuickGelu(x, alpha)`` as ``x * Sigmoid(x)`` (``x *
alpha`` inside where alpha is not 1), operands in the order onnxruntime's ``QuickGeluFusion``
matches, so onnxruntime still runs one kernel and any runtime can run the model. Extraction
may then choose the fused op for either target; without it, it may reassociate the products of
a SwiGLU (``(u * sigmoid(g)) * g``), which no runtime fuses.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from onnx import helper, numpy_helper

from eqsat_dnn.cost import CostModel, fusion_penalties
from eqsat_dnn.ir.graph import Graph, Node, TensorType, fresh_name


def avoid_slow_fusions(graph: Graph, model: CostModel) -> tuple[Graph, int]:
    """``graph`` with its slow fusion sites rewritten, and how many were."""
    adds = {site.nodes[-2] for site in fusion_penalties(graph, model) if site.kind == "skip_layernorm"}
    if not adds:
        return graph, 0
    nodes = [_as_sum(node) if index in adds else node for index, node in enumerate(graph.nodes)]
    return dataclasses.replace(graph, nodes=nodes), len(adds)


def _as_sum(add: Node) -> Node:
    """The same Add to the rules and the cost models, written as ``Sum`` (an alias, see
    :data:`eqsat_dnn.ir.language.ALIASES`)."""
    proto = helper.make_node("Sum", list(add.inputs), list(add.outputs), name=add.name or "")
    return dataclasses.replace(add, inputs=list(add.inputs), outputs=list(add.outputs), proto=proto)


def to_standard(graph: Graph) -> tuple[Graph, int]:
    """``graph`` with its ops that have a standard form written in standard ONNX ops (see the
    module docstring), and how many were."""
    if not any(node.op == "QuickGelu" for node in graph.nodes):
        return graph, 0
    taken = set(graph.types) | set(graph.weights) | set(graph.inputs) | {
        o for node in graph.nodes for o in [*node.inputs, *node.outputs] if o}
    nodes: list[Node] = []
    types, weights = dict(graph.types), dict(graph.weights)
    count = 0
    for node in graph.nodes:
        if node.op != "QuickGelu":
            nodes.append(node)
            continue
        count += 1
        x, y = node.inputs[0], node.outputs[0]
        t = graph.types.get(x)
        source = x
        alpha = float(node.attrs.get("alpha", 1.702))
        if alpha != 1.0:
            factor = fresh_name(f"{y}_alpha", taken)
            dtype = helper.tensor_dtype_to_np_dtype(t.dtype) if t is not None and t.dtype else np.float32
            weights[factor] = numpy_helper.from_array(np.array(alpha, dtype=dtype), factor)
            types[factor] = TensorType(t.dtype if t is not None else 1, ())
            source = fresh_name(f"{y}_scaled", taken)
            nodes.append(Node("Mul", [x, factor], [source], name=source))
        gate = fresh_name(f"{y}_sigmoid", taken)
        nodes.append(Node("Sigmoid", [source], [gate], name=gate))
        nodes.append(Node("Mul", [x, gate], [y], name=node.name))
        if t is not None:
            types[source] = types[gate] = t
    return dataclasses.replace(graph, nodes=nodes, types=types, weights=weights), count


__all__ = ["avoid_slow_fusions", "to_standard"]
