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
"""

from __future__ import annotations

import dataclasses

from onnx import helper

from eqsat_dnn.cost import CostModel, fusion_penalties
from eqsat_dnn.ir.graph import Graph, Node


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


__all__ = ["avoid_slow_fusions"]
