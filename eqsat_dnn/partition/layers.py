"""Repeated layers: find the copies of one layer in a graph, so that the partitioning ILP can
give corresponding ops of every copy one shared strategy choice (tied variables, as PyTorch
AutoParallel does): a 32-layer model's ILP is then about the size of a 1-layer one plus the glue.

Two sources, the first that finds anything wins:

* ``pkg.torch.onnx.name_scopes`` node metadata (torch's dynamo exporter writes the module path
  of every node, e.g. ``['', 'layers.3', 'layers.3.mlp', ...]``): the first scope ending in an
  index (``layers.3``, ``encoder.layer.3``, ``h.3``) names the layer; layers of one family
  (``layers``) with the same structure are copies;
* otherwise a structural hash: the longest run of the node sequence (in graph order) that
  repeats with some period ``L >= MIN_LAYER_NODES``, each period a copy.

Either way copies must be structurally equal modulo value and weight names: position by
position the same op, attributes and input/output types, the same inputs being weights (of the
same type), and the same wiring inside the copy. Tying is a restriction of the ILP, never a
mistake: any tie gives a valid plan, the structural check only keeps the ties sensible.
"""

from __future__ import annotations

import ast
import re
from typing import Hashable

import numpy as np
from onnx import helper

from eqsat_dnn.ir.graph import Graph, Node

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
MIN_LAYER_NODES = 4
"""The shortest period the structural fallback ties (shorter repeats are patterns, not layers)."""
_INDEXED = re.compile(r"^(.+)\.(\d+)$")


def _attr_key(node: Node) -> Hashable:
    if node.op != "Opaque" or node.proto is None:
        return (node.op, repr(sorted(node.attrs.items())))
    proto = node.proto
    return (proto.domain, proto.op_type,
            repr(sorted((a.name, helper.get_attribute_value(a)) for a in proto.attribute)))


def node_signature(node: Node, graph: Graph) -> Hashable:
    """What a node is, modulo value and weight names."""
    def typed(name: str) -> Hashable:
        if not name:
            return None
        t = graph.types.get(name)
        return (name in graph.weights, None if t is None else (t.dtype, t.shape))

    return (_attr_key(node), tuple(typed(i) for i in node.inputs), tuple(typed(o) for o in node.outputs))


def _wiring(copy: list[int], nodes: list[Node], producer: dict[str, int]) -> tuple:
    """Per input of each node of a copy: the position of its producer inside the copy, or -1."""
    where = {n: k for k, n in enumerate(copy)}
    return tuple(tuple(where.get(producer.get(i, -1), -1) for i in nodes[n].inputs) for n in copy)


def metadata_list(node: Node, key: str) -> list[str]:
    """A list the dynamo exporter writes in a node's metadata (``pkg.torch.onnx.name_scopes``,
    ``pkg.torch.onnx.class_hierarchy``) as Python text; empty when absent."""
    proto = node.proto
    if proto is None:
        return []
    value = next((p.value for p in proto.metadata_props if p.key == key), None)
    if not value:
        return []
    try:
        items = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        items = [s.strip(" '\"") for s in value.strip("[]").split(",")]
    if isinstance(items, str):
        items = [items]
    return [str(item) for item in items] if isinstance(items, (list, tuple)) else []


def _layer_scope(node: Node) -> tuple[str, int] | None:
    for scope in metadata_list(node, SCOPES_KEY):
        m = _INDEXED.match(scope)
        if m:
            return m.group(1), int(m.group(2))
    return None


def _group_copies(candidates: list[list[int]], nodes: list[Node], graph: Graph, producer: dict[str, int],
                  sigs: list[Hashable]) -> list[list[list[int]]]:
    """Candidate copies -> groups of two or more structurally equal ones."""
    groups: dict[Hashable, list[list[int]]] = {}
    for copy in candidates:
        key = (tuple(sigs[n] for n in copy), _wiring(copy, nodes, producer))
        groups.setdefault(key, []).append(copy)
    return [g for g in groups.values() if len(g) > 1]


def _from_scopes(nodes, graph, producer, sigs) -> list[list[list[int]]]:
    layers: dict[tuple[str, int], list[int]] = {}
    for k, node in enumerate(nodes):
        scope = _layer_scope(node)
        if scope is not None:
            layers.setdefault(scope, []).append(k)
    return _group_copies(list(layers.values()), nodes, graph, producer, sigs)


def _from_structure(nodes, graph, producer, sigs) -> list[list[list[int]]]:
    ids: dict[Hashable, int] = {}
    seq = np.array([ids.setdefault(s, len(ids)) for s in sigs], dtype=np.int64)
    n = len(seq)
    best = (0, 0, 0, 0)  # (tied nodes, -period, start, copies)
    for period in range(MIN_LAYER_NODES, n // 2 + 1):
        # runs where seq[i] == seq[i + period]: a run of r such i is (r + period) // period copies
        equal = np.concatenate(([False], seq[:-period] == seq[period:], [False]))
        edges = np.flatnonzero(np.diff(equal.astype(np.int8)))
        if not len(edges):
            continue
        starts, stops = edges[::2], edges[1::2]
        copies = (stops - starts + period) // period
        k = int(np.argmax(copies))  # the first of the longest runs
        candidate = ((int(copies[k]) - 1) * period, -period, int(starts[k]), int(copies[k]))
        if candidate[3] >= 2 and candidate[:2] > best[:2]:
            best = candidate
    tied, neg_period, start, copies = best
    if not tied:
        return []
    period = -neg_period
    first = list(range(start, start + period))
    reference = _wiring(first, nodes, producer)
    found = [first]
    for j in range(1, copies):  # copies must also be wired alike: stop at the first that is not
        copy = list(range(start + j * period, start + (j + 1) * period))
        if _wiring(copy, nodes, producer) != reference:
            break
        found.append(copy)
    return [found] if len(found) > 1 else []


def repeated_layers(graph: Graph) -> list[list[list[int]]]:
    """Groups of structurally equal layers: each group a list of copies, each copy the indices
    (into ``graph.nodes``) of its nodes in order, position ``t`` of every copy corresponding."""
    nodes = graph.nodes
    producer = {o: k for k, node in enumerate(nodes) for o in node.outputs if o}
    sigs = [node_signature(node, graph) for node in nodes]
    return _from_scopes(nodes, graph, producer, sigs) or _from_structure(nodes, graph, producer, sigs)


__all__ = ["MIN_LAYER_NODES", "SCOPES_KEY", "metadata_list", "node_signature", "repeated_layers"]
