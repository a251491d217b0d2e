"""Repeated layers searched once: one representative per class of identical layers, its choice
applied to every copy (issue 17).

The search budget (:class:`~eqsat_dnn.eqsat.saturate.Limits`) is one e-graph's: on a whole
model, depth dilutes it, and a 32-layer model's layers get a shallower search than a 4-layer
model's identical ones. Here each class of copies (:func:`eqsat_dnn.ir.blocks.find_blocks`:
structurally equal layers, modulo value and weight names, at the same shapes) is searched once,
on its first copy cut out as a graph of its own, under the full limits; its program is then
written out for every copy with that copy's inputs, weights and values. Weight expressions that
the rules built (a transposed weight, concatenated projections) are nodes over the
representative's weights, so each copy gets its own, over its own weights, folded at export.
What lies between the blocks (embedding, final norm, head, values every layer reads) is
searched as one graph of its own, under the full limits too. The stitched program is checked
against the original like any other (:func:`eqsat_dnn.pipeline.optimize`).

Where the whole graph's search would not be diluted (every representative saturates, and all
the copies together stay well within the limits: :func:`whole_graph_fits`), the pipeline
searches the whole graph instead (:data:`BlockMode.AUTO`, the default), since it also sees the
boundaries.

What this gives up: a rewrite whose pattern crosses a block boundary (the last op of one layer
with the first of the next, a layer's norm with the glue's) is lost by construction, since no
e-graph holds both sides. The cut keeps the values at the boundary as they are; the lowering
(:mod:`eqsat_dnn.lower`) still runs on the stitched whole graph, so runtime fusion sites across
boundaries are still handled. A model without repeated layers never comes here.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable

import numpy as np

from eqsat_dnn.eqsat.saturate import Limits, SaturationStop
from eqsat_dnn.ir.blocks import BlockClass, BlockCopy, block_graph, remainder, shared_context
from eqsat_dnn.io.onnx_out import fold_weight_expressions
from eqsat_dnn.ir.graph import Graph, Node, TensorType, fresh_name
from eqsat_dnn.search import Search


@dataclass
class BlockReport:
    """One class of copies and what its representative's search did."""

    name: str
    copies: int
    nodes: int
    """Nodes per copy, as found."""
    search: Search
    ops_before: dict[str, int]
    """Op counts of one copy, as found."""
    ops_after: dict[str, int]
    """Op counts of one copy, as chosen (every copy gets the same) and written: the weight
    expressions it computes are folded at export, so they are not counted."""
    seconds: float = 0.0
    """The representative's search: build, saturation and extraction."""
    context: tuple[int, ...] = ()
    """The nodes of the whole graph carried into the representative (:func:`shared_context`),
    which every copy recomputes."""

    def describe(self) -> str:
        """``32 x layers (60 nodes)``."""
        return f"{self.copies} x {self.name} ({self.nodes} nodes)"

    def rewrites(self) -> dict[str, int]:
        """What the choice changed in one copy: op -> count after minus count before (zeros left out)."""
        delta = Counter(self.ops_after)
        delta.subtract(self.ops_before)
        return {op: n for op, n in sorted(delta.items()) if n}

    def to_dict(self) -> dict:
        found = self.search
        return {
            "name": self.name, "copies": self.copies, "nodes": self.nodes,
            "egraph": {"nodes": found.snapshot.egraph.num_nodes, "classes": found.snapshot.egraph.num_classes},
            "stop_reason": found.saturation.stop_reason, "iterations": len(found.saturation.iterations),
            "rules_fired": dict(sorted(found.saturation.matches_per_rule().items())),
            "status": str(found.extraction.status), "kept_input": found.kept_input,
            "cost_before": found.input_cost, "cost_after": found.cost,
            "ops_before": self.ops_before, "ops_after": self.ops_after, "rewrites": self.rewrites(),
            "seconds": self.seconds,
        }


@dataclass
class BlockResult:
    """The whole program, stitched from the blocks' and the glue's choices."""

    graph: Graph
    blocks: list[BlockReport]
    glue: Search | None
    """The search of what lies between the blocks; ``None`` when nothing does."""
    cost: float
    """The stitched program's cost: the glue's plus every copy's."""
    seconds: dict[str, float] = field(default_factory=dict)
    """``build``, ``saturate``, ``extract`` summed over the searches, and ``stitch``."""


class NotConvexError(ValueError):
    """The stitched program has a cycle: a path leaves a block and comes back into it (the
    block's cut then reads a value that depends on its own outputs)."""


class BlockMode(StrEnum):
    """Whether :func:`eqsat_dnn.pipeline.optimize` searches repeated layers one class at a time."""

    AUTO = "auto"
    """Blocks, unless every representative saturates and all the copies together would too,
    well within the limits (:func:`whole_graph_fits`): the whole graph's search then loses
    nothing to depth, and it sees the rewrites across block boundaries that the blocks lose."""
    ALWAYS = "always"
    NEVER = "never"


class BlockPath(StrEnum):
    """Which path :func:`eqsat_dnn.pipeline.optimize` took, and why."""

    BLOCKS = "blocks"
    NO_REPEATS = "whole graph: no repeated layers"
    OFF = "whole graph: blocks off"
    FITS = "whole graph: each layer saturates alone, and all of them would fit the limits together"
    FAILED_CHECK = "whole graph: the program chosen block by block failed the check"
    NOT_CONVEX = "whole graph: a path leaves a block and comes back into it, so the copies cannot be cut out"


FIT_SHARE = 0.25
""":data:`BlockMode.AUTO` searches the whole graph when the copies' e-nodes and seconds, summed,
stay under this share of the limits: rewrites across boundaries, and a larger e-graph's slower
iterations, take more than the sum of the parts."""


def search_blocks(graph: Graph, classes: list[BlockClass], run_search: Callable[[Graph], Search]) -> list[BlockReport]:
    """Search the first copy of each class, cut out as a graph of its own (``run_search``, its
    own limits each time)."""
    reports = []
    for cls in classes:
        context = shared_context(graph, cls, classes)
        part = block_graph(graph, cls.copies[0], context)
        found = run_search(part)
        # counted as export writes it: weight expressions folded (values not computed)
        after = fold_weight_expressions(found.chosen(), values=False).op_counts()
        found.release()
        reports.append(BlockReport(cls.name, len(cls.copies), cls.size, found, part.op_counts(), after,
                                   sum(found.seconds.values()), context))
    return reports


def whole_graph_fits(reports: list[BlockReport], limits: Limits) -> bool:
    """Whether every representative saturated and all the copies' e-graphs together stay within
    :data:`FIT_SHARE` of ``limits`` (e-nodes and saturation seconds): then one search of the whole
    graph is not diluted by depth (:data:`BlockMode.AUTO`)."""
    if any(r.search.saturation.stop_reason != SaturationStop.SATURATED for r in reports):
        return False
    nodes = sum(r.copies * r.search.saturation.nodes for r in reports)
    seconds = sum(r.copies * r.search.saturation.seconds for r in reports)
    return nodes <= FIT_SHARE * limits.nodes and seconds <= FIT_SHARE * limits.seconds


def stitch(graph: Graph, classes: list[BlockClass], reports: list[BlockReport],
           run_search: Callable[[Graph], Search]) -> BlockResult:
    """Search what lies between the blocks (``run_search``) and write the whole program: the
    glue's choice, and every copy given its class's (``reports``, from :func:`search_blocks`)."""
    glue_graph = remainder(graph, classes)
    glue = run_search(glue_graph) if glue_graph is not None else None
    seconds = {key: sum(r.search.seconds.get(key, 0.0) for r in reports) + (glue.seconds.get(key, 0.0) if glue else 0.0)
               for key in ("build", "saturate", "extract")}

    t = time.perf_counter()
    available = {*graph.inputs, *graph.weights}
    taken = {*available, *(o for node in graph.nodes for o in node.outputs if o)}
    node_names = {node.name for node in graph.nodes if node.name}
    types = dict(graph.types)
    nodes: list[Node] = []
    if glue is not None:
        own = {*glue_graph.inputs, *glue_graph.weights, *(o for n in glue_graph.nodes for o in n.outputs if o)}
        names = {n.name: n.name for n in glue_graph.nodes if n.name}
        nodes += _place(glue.chosen(), {}, names, own, taken, node_names, types)
    for cls, report in zip(classes, reports):
        program = report.search.chosen()
        recomputed = {o for n in report.context for o in graph.nodes[n].outputs if o}
        for copy in cls.copies:
            values, names, protos = _correspondence(graph, cls.copies[0], copy)
            for name in recomputed:
                values.pop(name, None)
            # the carried nodes read graph inputs and weights, which keep their names
            nodes += _place(program, values, names, available, taken, node_names, types, protos)
    stitched = _without_repeats(_topological(nodes, available), graph.outputs)
    used = {i for n in stitched for i in [*n.inputs, *n.implicit_inputs] if i} | set(graph.outputs)
    weights = {k: v for k, v in graph.weights.items() if k in used}
    seconds["stitch"] = time.perf_counter() - t
    cost = (glue.cost if glue is not None else 0.0) + sum(r.copies * r.search.cost for r in reports)
    result_graph = Graph(stitched, list(graph.inputs), list(graph.outputs), types, weights, graph.model)
    return BlockResult(result_graph, reports, glue, cost, seconds)


def _correspondence(graph: Graph, rep: BlockCopy, copy: BlockCopy) -> tuple[dict[str, str], dict[str, str], dict]:
    """The representative's names -> the copy's: values (inputs, weights, every node output by
    position), node names, and opaque nodes' protos (by identity, so that a copy's opaque node
    keeps its own metadata)."""
    values = dict(zip(rep.inputs, copy.inputs))
    values.update(zip(rep.weights, copy.weights))
    names: dict[str, str] = {}
    protos: dict[int, object] = {}
    for a, b in zip(rep.nodes, copy.nodes):
        ours, theirs = graph.nodes[a], graph.nodes[b]
        values.update((x, y) for x, y in zip(ours.outputs, theirs.outputs) if x)
        if ours.name:
            names[ours.name] = theirs.name
        if ours.proto is not None:
            protos[id(ours.proto)] = theirs.proto
    return values, names, protos



def _place(program: Graph, values: dict[str, str], names: dict[str, str], own: set[str], taken: set[str],
           node_names: set[str], types: dict[str, TensorType], protos: dict | None = None) -> list[Node]:
    """``program``'s nodes written for one place in the whole graph: a name in ``values`` becomes
    its counterpart there, one in ``own`` stays, and any other (a value the rules added) gets a
    name no other place uses; ``types`` gains the added values' types."""
    renamed = dict(values)

    def value(name: str) -> str:
        if not name:
            return name
        if name in renamed:
            return renamed[name]
        if name in own:
            return name
        new = renamed[name] = fresh_name(name, taken)
        if name in program.types:
            types[new] = program.types[name]
        return new

    placed: list[Node] = []
    for node in program.nodes:
        name = names.get(node.name) or (node.name if node.name and node.name not in node_names else "")
        name = name or fresh_name(node.name or node.op, node_names)
        node_names.add(name)
        proto = node.proto if protos is None or node.proto is None else protos.get(id(node.proto), node.proto)
        placed.append(Node(node.op, [value(i) for i in node.inputs], [value(o) for o in node.outputs],
                           dict(node.attrs), name=name, proto=proto))
    return placed


_NOT_MERGED = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                         "Multinomial", "Dropout", "Opaque"})
"""Ops whose two equal-looking nodes may differ (random draws) or are not compared here."""


def _attribute_key(value: object) -> object:
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attribute_key(v) for v in value)
    return repr(value)


def _without_repeats(nodes: list[Node], outputs: list[str]) -> list[Node]:
    """``nodes`` (in topological order) with a node that repeats an earlier one (same op,
    attributes and inputs) dropped and its readers given the earlier one's values, then the
    nodes no graph output depends on dropped: what every copy recomputed from the carried
    context is computed once, and what the copies no longer read is not computed."""
    same: dict[str, str] = {}
    seen: dict[tuple, Node] = {}
    kept: list[Node] = []
    keep_names = set(outputs)
    for node in nodes:
        node.inputs = [same.get(i, i) for i in node.inputs]
        if node.op not in _NOT_MERGED and not node.implicit_inputs and not keep_names & set(node.outputs):
            key = (node.op, tuple(node.inputs), len(node.outputs),
                   tuple(sorted((k, _attribute_key(v)) for k, v in node.attrs.items())))
            first = seen.get(key)
            if first is not None:
                same.update((o, f) for o, f in zip(node.outputs, first.outputs) if o and f)
                if all(f or not o for o, f in zip(node.outputs, first.outputs)):
                    continue
            else:
                seen[key] = node
        kept.append(node)
    needed = set(outputs)
    live: list[Node] = []
    for node in reversed(kept):
        if needed & {o for o in node.outputs if o}:
            live.append(node)
            needed.update(i for i in [*node.inputs, *node.implicit_inputs] if i)
    return live[::-1]


def _topological(nodes: list[Node], available: set[str]) -> list[Node]:
    """``nodes`` in an order where every value is computed before it is read, the earliest in the
    list first among the ready ones; :class:`NotConvexError` on a cycle."""
    producer = {o: k for k, node in enumerate(nodes) for o in node.outputs if o}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for k, node in enumerate(nodes):
        deps = {producer[i] for i in [*node.inputs, *node.implicit_inputs]
                if i and i not in available and i in producer}
        waiting[k] = len(deps)
        for d in deps:
            readers.setdefault(d, []).append(k)
    ready = [k for k, w in enumerate(waiting) if not w]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for r in readers.get(k, ()):
            waiting[r] -= 1
            if not waiting[r]:
                heapq.heappush(ready, r)
    if len(order) != len(nodes):
        raise NotConvexError(f"the stitched program has a cycle through {len(nodes) - len(order)} nodes")
    return order


__all__ = ["FIT_SHARE", "BlockMode", "BlockPath", "NotConvexError", "BlockReport", "BlockResult", "search_blocks", "stitch",
           "whole_graph_fits"]
