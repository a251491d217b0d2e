"""Repeated layers (blocks): find the copies of one layer in a graph. Two stages use them:

* the partitioner gives corresponding ops of every copy one shared strategy choice (tied
  variables, as PyTorch AutoParallel does): a 32-layer model's ILP is then about the size of a
  1-layer one plus the glue (:func:`repeated_layers`);
* the optimizer saturates and extracts one representative per class of copies and applies its
  choice to every copy (:func:`find_blocks` gives each copy's interface: the values it reads,
  its weights and the values it gives, position by position; :func:`block_graph` cuts a copy
  out as a graph of its own; :mod:`eqsat_dnn.blocks`).

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
from dataclasses import dataclass
from typing import Hashable, Sequence

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


@dataclass(frozen=True)
class BlockCopy:
    """One copy of a block and its interface. Every field is aligned position by position with
    the other copies of its class, so that zipping two copies' fields maps one to the other."""

    nodes: tuple[int, ...]
    """Indices into ``graph.nodes``, position ``t`` of every copy corresponding."""
    inputs: tuple[str, ...]
    """The values it reads that are neither weights nor its own (what came before it), in
    order of first read."""
    weights: tuple[str, ...]
    """The weights it reads, in order of first read."""
    outputs: tuple[str, ...]
    """The values it computes that something outside it reads (or that are graph outputs)."""


@dataclass(frozen=True)
class BlockClass:
    """Copies of one block: structurally equal, with the same shapes and the same interface."""

    name: str
    """The layer family from the exporter's scopes (``layers``, ``encoder.layer``), else ``block``."""
    copies: tuple[BlockCopy, ...]

    @property
    def size(self) -> int:
        """Nodes per copy."""
        return len(self.copies[0].nodes)

    def describe(self) -> str:
        """``32 x layers (60 nodes)``."""
        return f"{len(self.copies)} x {self.name} ({self.size} nodes)"


def _interface(copy: list[int], nodes: list[Node], graph: Graph) -> tuple[Hashable, list[str], list[str]]:
    """A copy's external reads: a pattern that says, per input position, whether it reads its
    own value, the ``j``-th external input or the ``j``-th weight (so that two copies with equal
    patterns read alike: a value read twice in one is read twice in the other), and the inputs
    and weights themselves."""
    inside = {o for n in copy for o in nodes[n].outputs if o}
    inputs: list[str] = []
    weights: list[str] = []
    pattern = []
    for n in copy:
        for name in nodes[n].inputs:
            if not name or name in inside:
                pattern.append(("", name in inside))
                continue
            found = weights if name in graph.weights else inputs
            if name not in found:
                found.append(name)
            pattern.append((found is weights, found.index(name)))
    return tuple(pattern), inputs, weights


def find_blocks(graph: Graph) -> list[BlockClass]:
    """The classes of repeated layers (:func:`repeated_layers`) with their interfaces.

    Copies whose external reads differ in pattern are split into classes of their own (a
    class needs two copies); layers with subgraphs that read outer values by name (If, Loop
    bodies) are left out: their copies cannot be renamed one into another. A copy's outputs are
    the positions that escape in *any* copy of its class, so every copy exposes the same ones."""
    nodes = graph.nodes
    read_by: dict[str, set[int]] = {}
    for k, node in enumerate(nodes):
        for name in [*node.inputs, *node.implicit_inputs]:
            if name:
                read_by.setdefault(name, set()).add(k)
    graph_outputs = set(graph.outputs)
    classes: list[BlockClass] = []
    for group in repeated_layers(graph):
        if any(nodes[n].implicit_inputs for copy in group for n in copy):
            continue
        escaping: set[tuple[int, int]] = set()
        for copy in group:
            inside = set(copy)
            for t, n in enumerate(copy):
                for k, out in enumerate(nodes[n].outputs):
                    if out and (out in graph_outputs or read_by.get(out, set()) - inside):
                        escaping.add((t, k))
        positions = sorted(escaping)
        scope = _layer_scope(nodes[group[0][0]])
        name = scope[0] if scope is not None else "block"
        by_pattern: dict[Hashable, list[BlockCopy]] = {}
        for copy in group:
            pattern, inputs, weights = _interface(copy, nodes, graph)
            outputs = tuple(nodes[copy[t]].outputs[k] for t, k in positions)
            by_pattern.setdefault(pattern, []).append(BlockCopy(tuple(copy), tuple(inputs), tuple(weights), outputs))
        classes.extend(BlockClass(name, tuple(copies)) for copies in by_pattern.values() if len(copies) > 1)
    return classes


CONTEXT_MAX_NODES = 64
"""The most nodes :func:`shared_context` carries into a block for one value every copy reads."""


def shared_context(graph: Graph, cls: BlockClass, classes: Sequence[BlockClass] = ()) -> tuple[int, ...]:
    """The nodes, in graph order, that compute the values every copy of ``cls`` reads alike (the
    same value at the same input position: an attention mask, rotary caches) from the graph's
    inputs and weights alone, at most :data:`CONTEXT_MAX_NODES` per value.

    Cut out without them, a block reads its mask as an opaque input, and the rules that need to
    see it (a causal mask's lower triangle, a rotary cache's halves) cannot fire in any copy;
    carried in, each copy recomputes them, and the stitch merges the repeats
    (:func:`eqsat_dnn.blocks.stitch`). A value that depends on the output of any copy of ``cls``
    or of ``classes`` is left out."""
    nodes = graph.nodes
    producer = {o: k for k, node in enumerate(nodes) for o in node.outputs if o}
    in_blocks = {n for c in (cls, *classes) for copy in c.copies for n in copy.nodes}
    available = {*graph.inputs, *graph.weights}
    context: set[int] = set()
    for j, name in enumerate(cls.copies[0].inputs):
        if any(copy.inputs[j] != name for copy in cls.copies) or name in available:
            continue
        cone: set[int] = set()
        pending = [name]
        while pending and len(cone) <= CONTEXT_MAX_NODES:
            value = pending.pop()
            if not value or value in available:
                continue
            k = producer.get(value)
            if k is None or k in in_blocks or nodes[k].implicit_inputs:
                cone = set()
                break
            if k not in cone:
                cone.add(k)
                pending.extend(nodes[k].inputs)
        if cone and len(cone) <= CONTEXT_MAX_NODES:
            context |= cone
    return tuple(sorted(context))


def block_graph(graph: Graph, copy: BlockCopy, context: tuple[int, ...] = ()) -> Graph:
    """``copy`` cut out of ``graph`` as a graph of its own: its external reads are the inputs,
    its escaping values the outputs (types and model skeleton shared with ``graph``). The
    ``context`` nodes (:func:`shared_context`) come first, and the graph inputs they read
    replace the values they compute among the inputs."""
    ahead = [graph.nodes[n] for n in context]
    made = {o for node in ahead for o in node.outputs if o}
    inputs = [i for i in copy.inputs if i not in made]
    weights = {w: graph.weights[w] for w in copy.weights}
    for node in ahead:
        for name in node.inputs:
            if name in graph.weights:
                weights.setdefault(name, graph.weights[name])
            elif name and name not in made and name not in inputs:
                inputs.append(name)
    return Graph([*ahead, *(graph.nodes[n] for n in copy.nodes)], inputs, list(copy.outputs), graph.types,
                 weights, graph.model)


def remainder(graph: Graph, classes: list[BlockClass]) -> Graph | None:
    """What lies between the blocks (embedding, final norm, head, values that every layer reads),
    as a graph of its own: the blocks' outputs it reads are inputs, and the values the blocks
    read from it are outputs, besides the graph's own. ``None`` when nothing lies between them."""
    in_blocks = {n for c in classes for copy in c.copies for n in copy.nodes}
    nodes = [node for k, node in enumerate(graph.nodes) if k not in in_blocks]
    if not nodes:
        return None
    made = {o for node in nodes for o in node.outputs if o}
    from_blocks = {o for c in classes for copy in c.copies for o in copy.outputs}
    inputs = list(graph.inputs)
    outputs = [o for o in graph.outputs if o not in from_blocks]
    for node in nodes:
        for name in [*node.inputs, *node.implicit_inputs]:
            if name in from_blocks and name not in inputs:
                inputs.append(name)
    for c in classes:
        for copy in c.copies:
            outputs.extend(i for i in copy.inputs if i in made and i not in outputs)
    read = {name for node in nodes for name in [*node.inputs, *node.implicit_inputs]}
    weights = {name: t for name, t in graph.weights.items() if name in read}
    return Graph(nodes, inputs, outputs, graph.types, weights, graph.model)


__all__ = ["CONTEXT_MAX_NODES", "MIN_LAYER_NODES", "SCOPES_KEY", "BlockClass", "BlockCopy", "block_graph",
           "find_blocks", "metadata_list", "node_signature", "remainder", "repeated_layers", "shared_context"]
