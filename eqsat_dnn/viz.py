"""Pictures of small graphs and e-graphs, for notebooks: drawn with matplotlib alone.

Nothing here needs graphviz's ``dot`` or a browser, so the pictures render the same
offline, in CI and on a fresh machine. The layout is a layered one: every vertex
sits on the row of its topological generation (longest path from a source), rows
are ordered by a few barycentre sweeps to uncross edges, and edges that close a
cycle (an e-graph may hold ``x = Identity(x)``) are drawn dashed, curving back up.

* :func:`draw_graph` draws a :class:`~eqsat_dnn.ir.graph.Graph` as dataflow: inputs at
  the top, one box per operator, weights left out; ``highlight`` colours some nodes.
* :func:`draw_egraph` draws an e-graph (an :class:`~eqsat_dnn.extract.base.EGraph`
  or a :class:`~eqsat_dnn.eqsat.egraph.Snapshot`): each e-class is a dashed frame holding
  its e-nodes, an edge runs from an e-node to each child e-class, the roots are at the
  top; ``choices`` (an extraction) fills the chosen e-nodes.

They are meant for a few dozen vertices; beyond ``max_vertices`` they refuse rather
than draw an unreadable hairball. matplotlib is an optional dependency
(``pip install eqsat-dnn[notebooks]``).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eqsat_dnn.extract.base import EGraph
from eqsat_dnn.ir.graph import Graph

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from eqsat_dnn.eqsat.egraph import Snapshot

MAX_VERTICES = 150
"""Default limit on the boxes one picture may hold."""

_NODE_W, _NODE_H = 1.0, 0.42
"""Size of one box, in data units."""
_GAP_X, _GAP_Y = 0.35, 0.75
_CHAR_W = 0.075
"""Width of one label character, in data units, when a unit is drawn :data:`_SCALE` inches wide."""
_SCALE = 0.8
"""Inches per data unit at which labels are set in 7 points."""
_FILL = "#ffffff"
_HIGHLIGHT = "#ffd27f"
_CHOSEN = "#9fd49f"
_INPUT = "#dde8f5"


def draw_graph(graph: Graph, ax: Axes | None = None, *, highlight: Iterable[str] = (),
               only: Iterable[str] | None = None, title: str = "", max_vertices: int = MAX_VERTICES) -> Axes:
    """Draw ``graph`` as dataflow, top to bottom; returns the matplotlib Axes.

    ``highlight`` names nodes (by :attr:`Node.name`, or by one of their outputs) to
    fill in colour. ``only`` restricts the picture to some nodes (named the same
    way): values they read from elsewhere and values they hand on are shown as blue
    boxes, like graph inputs and outputs. Weights are left out.
    """
    wanted = set(highlight)
    selected = None if only is None else set(only)
    kept = [(k, node) for k, node in enumerate(graph.nodes)
            if selected is None or node.name in selected or any(o in selected for o in node.outputs if o)]
    if not kept:
        raise ValueError("no node of the graph is named in `only`")
    kept_index = {k for k, _ in kept}
    vertices: list[str] = []
    labels: dict[str, str] = {}
    fills: dict[str, str] = {}
    producer: dict[str, str] = {}
    for k, node in kept:
        for out in node.outputs:
            if out:
                producer[out] = f"node:{k}"
    edges: list[tuple[str, str]] = []
    for k, node in kept:
        for value in node.inputs:
            if not value or value in graph.weights:
                continue
            if value not in producer:  # a graph input, or computed outside the picture
                producer[value] = f"in:{value}"
                vertices.append(f"in:{value}")
                labels[f"in:{value}"], fills[f"in:{value}"] = _short(value), _INPUT
            edges.append((producer[value], f"node:{k}"))
    for k, node in kept:
        key = f"node:{k}"
        vertices.append(key)
        labels[key] = node.op_type + ("\n" + _short(node.name) if node.name else "")
        chosen = node.name in wanted or any(o in wanted for o in node.outputs if o)
        fills[key] = _HIGHLIGHT if chosen else _FILL
    used_outside = set(graph.outputs) | {i for k, node in enumerate(graph.nodes) if k not in kept_index
                                         for i in node.inputs if i}
    for k, node in kept:
        for value in node.outputs:
            if value and value in used_outside:
                vertices.append(f"out:{value}")
                labels[f"out:{value}"], fills[f"out:{value}"] = _short(value), _INPUT
                edges.append((f"node:{k}", f"out:{value}"))
    _check_size(len(vertices), max_vertices, "graph nodes")
    layers = _layers(vertices, edges)
    frames = {v: [v] for v in vertices}
    return _render(ax, layers, frames, labels, fills, edges, edges_from_members=False, title=title)


def draw_egraph(egraph: EGraph | Snapshot, ax: Axes | None = None, *, choices: Mapping[str, str] | None = None,
                title: str = "", max_vertices: int = MAX_VERTICES) -> Axes:
    """Draw an e-graph: e-classes as dashed frames of e-nodes, roots at the top.

    ``choices`` (e-class -> e-node, e.g. ``Extraction.choices``) fills the chosen
    e-nodes in green. A :class:`~eqsat_dnn.eqsat.egraph.Snapshot` is drawn with its
    operators' attributes (a Transpose's ``perm``, ...) and the names of the
    original values each class holds; list cells (``TCons``/``TNil``) and
    ``Absent`` are shown like any e-node.
    """
    snapshot = None
    if not isinstance(egraph, EGraph):
        snapshot, egraph = egraph, egraph.egraph
    _check_size(egraph.num_nodes, max_vertices, "e-nodes")
    order = _reachable_classes(egraph)
    labels: dict[str, str] = {}
    fills: dict[str, str] = {}
    frames: dict[str, list[str]] = {}
    for cls in order:
        frames[cls] = sorted(egraph.classes[cls], key=_natural)
        for node_id in frames[cls]:
            labels[node_id] = _enode_label(egraph, snapshot, node_id)
            fills[node_id] = _CHOSEN if choices is not None and choices.get(cls) == node_id else _FILL
    edges = []
    for cls in order:
        for node_id in frames[cls]:
            for child in egraph.nodes[node_id].children:
                edges.append((node_id, child))
    class_edges = [(egraph.nodes[n].eclass, c) for n, c in edges]
    layers = _layers(order, class_edges)
    captions = {}
    if snapshot is not None:
        captions = {cls: ", ".join(snapshot.names[cls][:2]) for cls in order if snapshot.names.get(cls)}
    return _render(ax, layers, frames, labels, fills, edges, edges_from_members=True, title=title,
                   captions=captions)


# ---------------------------------------------------------------------------
# layout


def _layers(vertices: Sequence[Hashable], edges: Iterable[tuple[Hashable, Hashable]]) -> list[list[Hashable]]:
    """Rows of a layered drawing: each vertex on the row of its longest path from a source
    (edges closing a cycle are ignored for this), rows ordered by barycentre sweeps."""
    index = {v: k for k, v in enumerate(vertices)}
    children: dict[Hashable, list[Hashable]] = {v: [] for v in vertices}
    for a, b in edges:
        if a in index and b in index and a != b and b not in children[a]:
            children[a].append(b)
    forward = _acyclic_children(vertices, children)
    depth = {v: 0 for v in vertices}
    for v in _topological(vertices, forward):
        for c in forward[v]:
            depth[c] = max(depth[c], depth[v] + 1)
    rows: list[list[Hashable]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for v in vertices:
        rows[depth[v]].append(v)
    parents: dict[Hashable, list[Hashable]] = {v: [] for v in vertices}
    for v in vertices:
        for c in forward[v]:
            parents[c].append(v)
    for sweep in range(4):
        downward = sweep % 2 == 0
        sequence = range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1)
        for r in sequence:
            neighbours = parents if downward else forward
            other = {v: k for k, v in enumerate(rows[r - 1 if downward else r + 1])}
            position = {v: k for k, v in enumerate(rows[r])}

            def barycentre(v: Hashable) -> float:
                linked = [other[n] for n in neighbours[v] if n in other]
                return sum(linked) / len(linked) if linked else float(position[v])

            rows[r].sort(key=lambda v: (barycentre(v), position[v]))
    return rows


def _acyclic_children(vertices: Sequence[Hashable], children: dict[Hashable, list[Hashable]]
                      ) -> dict[Hashable, list[Hashable]]:
    """``children`` without the edges that close a cycle (back edges of a depth-first search)."""
    state: dict[Hashable, int] = {}  # 1 on the stack, 2 done
    kept: dict[Hashable, list[Hashable]] = {v: [] for v in vertices}
    for root in vertices:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(children[root]))]
        while stack:
            v, it = stack[-1]
            child = next(it, None)
            if child is None:
                state[v] = 2
                stack.pop()
                continue
            if state.get(child) == 1:
                continue  # a back edge: drawn, but not used for the rows
            kept[v].append(child)
            if child not in state:
                state[child] = 1
                stack.append((child, iter(children[child])))
    return kept


def _topological(vertices: Sequence[Hashable], children: dict[Hashable, list[Hashable]]) -> list[Hashable]:
    indegree = {v: 0 for v in vertices}
    for v in vertices:
        for c in children[v]:
            indegree[c] += 1
    ready = [v for v in vertices if indegree[v] == 0]
    order = []
    while ready:
        v = ready.pop(0)
        order.append(v)
        for c in children[v]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return order


def _reachable_classes(egraph: EGraph) -> list[str]:
    """Classes reachable from the roots (all classes when there are no roots), roots first."""
    start = list(egraph.roots) or sorted(egraph.classes, key=_natural)
    seen: list[str] = []
    known = set()
    stack = list(reversed(start))
    while stack:
        cls = stack.pop()
        if cls in known or cls not in egraph.classes:
            continue
        known.add(cls)
        seen.append(cls)
        for node_id in sorted(egraph.classes[cls], key=_natural):
            stack.extend(reversed(egraph.nodes[node_id].children))
    return seen


# ---------------------------------------------------------------------------
# drawing


def _render(ax: Axes | None, rows: list[list[Hashable]], frames: Mapping[Hashable, list[str]],
            labels: Mapping[str, str], fills: Mapping[str, str], edges: list[tuple[Hashable, Hashable]],
            *, edges_from_members: bool, title: str, captions: Mapping[Hashable, str] | None = None) -> Axes:
    """Place every frame (a row of member boxes) on its row and draw boxes and edges.

    ``edges`` run from a member box (``edges_from_members``) or a frame to a frame.
    """
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    box_width = {m: max(_NODE_W, _CHAR_W * max(len(line) for line in labels.get(m, str(m)).split("\n")) + 0.2)
                 for members in frames.values() for m in members}
    width = {f: sum(box_width[m] for m in frames[f]) + (len(frames[f]) - 1) * _GAP_X * 0.5 for f in frames}
    row_width = [sum(width[f] for f in row) + _GAP_X * 2 * max(0, len(row) - 1) for row in rows]
    widest = max(row_width, default=1.0)
    frame_box: dict[Hashable, tuple[float, float, float, float]] = {}  # x0, y0, x1, y1
    member_box: dict[str, tuple[float, float, float, float]] = {}
    pad = 0.12 if edges_from_members else 0.0
    for r, row in enumerate(rows):
        y = -r * (_NODE_H + _GAP_Y)
        x = (widest - row_width[r]) / 2
        for f in row:
            frame_box[f] = (x - pad, y - pad, x + width[f] + pad, y + _NODE_H + pad)
            mx = x
            for m in frames[f]:
                member_box[m] = (mx, y, mx + box_width[m], y + _NODE_H)
                mx += box_width[m] + _GAP_X * 0.5
            x += width[f] + _GAP_X * 2
    data_width = widest + 1.0
    data_height = (len(rows) - 1) * (_NODE_H + _GAP_Y) + _NODE_H + 1.1
    if ax is None:
        figure_width = min(16.0, max(2.5, _SCALE * data_width))
        figure_height = min(30.0, max(1.2, _SCALE * data_height + (0.35 if title else 0.0)))
        figure, ax = plt.subplots(figsize=(figure_width, figure_height))
        figure.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1.0 - (0.35 / figure_height if title else 0.0))
    # labels are sized to the boxes: find how many inches a data unit gets in this axes
    box = ax.get_position()
    inches = min(box.width * ax.figure.get_figwidth() / data_width,
                 box.height * ax.figure.get_figheight() / data_height)
    font = max(5.0, min(8.0, 7.0 * inches / _SCALE))
    depth = {f: r for r, row in enumerate(rows) for f in row}
    for f, (x0, y0, x1, y1) in frame_box.items():
        if edges_from_members:
            ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.02,rounding_size=0.08",
                                        fill=False, linestyle="--", linewidth=0.8, edgecolor="#777777"))
            caption = (captions or {}).get(f)
            if caption:
                ax.text(x1, y1 + 0.03, _short(caption, 24), fontsize=font - 1, color="#555555", ha="right",
                        va="bottom")
    for m, (x0, y0, x1, y1) in member_box.items():
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.01,rounding_size=0.06",
                                    facecolor=fills.get(m, _FILL), edgecolor="#333333", linewidth=0.8))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, labels.get(m, str(m)), fontsize=font, ha="center", va="center")
    frame_of = {m: f for f, members in frames.items() for m in members}
    for a, b in edges:
        if edges_from_members:
            ax0, ay0, ax1, _ = member_box[a]
            source_frame = frame_of[a]
        else:
            ax0, ay0, ax1, _ = member_box[frames[a][0]]
            source_frame = a
        bx0, _, bx1, by1 = frame_box[b]
        start, end = ((ax0 + ax1) / 2, ay0), ((bx0 + bx1) / 2, by1)
        back = depth[b] <= depth[source_frame]
        arrow = FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=7, linewidth=0.7,
                                color="#b03030" if back else "#444444", linestyle="--" if back else "-",
                                connectionstyle="arc3,rad=0.5" if back else "arc3,rad=0.0",
                                shrinkA=0, shrinkB=1)
        ax.add_patch(arrow)
    ax.update_datalim([(-0.5, _NODE_H + 0.6 - data_height), (widest + 0.5, _NODE_H + 0.6)])
    # equal scales keep boxes box-shaped in any axes; the data limits grow to fill it
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _enode_label(egraph: EGraph, snapshot: Snapshot | None, node_id: str) -> str:
    node = egraph.nodes[node_id]
    if snapshot is None or node_id not in snapshot.info:
        return _short(node.op) + (f"\n{node.cost:.3g}" if node.cost else "")
    info = snapshot.info[node_id]
    if info.op in ("Input", "Weight"):
        return f"{info.op}\n{_short(str(info.attrs.get('arg0', '')))}"
    shown = [f"{_value(v)}" for k, v in info.attrs.items() if k not in ("allowzero", "index")]
    return info.op + ("\n" + _short(" ".join(shown), 16) if shown else "")


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _short(text: str, limit: int = 14) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _natural(key: str) -> tuple:
    """Sort ids like ``Add-10`` after ``Add-9``."""
    head, _, tail = key.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (key, -1)


def _check_size(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise ValueError(f"{count} {what} are too many to draw legibly (limit {limit}; pass max_vertices to raise it)")


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("drawing needs matplotlib: pip install eqsat-dnn[notebooks]") from None
    return plt
