"""Pictures of graphs and e-graphs: layout invariants, and drawing real ones offline."""

from __future__ import annotations

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

import eqsat_dnn as ed  # noqa: E402
from eqsat_dnn.models.examples import attention_block  # noqa: E402
from eqsat_dnn.extract.base import ENode  # noqa: E402
from eqsat_dnn.viz import _CHOSEN, _HIGHLIGHT, _layers, draw_egraph, draw_graph  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _boxes(ax) -> list[FancyBboxPatch]:
    return [p for p in ax.patches if isinstance(p, FancyBboxPatch)]


def _row(rows: list[list[str]]) -> dict[str, int]:
    return {v: r for r, row in enumerate(rows) for v in row}


def test_layers_put_every_edge_downward():
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d"), ("d", "e")]
    rows = _layers(list("abcde"), edges)
    row = _row(rows)
    assert sorted(row) == list("abcde")
    assert all(row[u] < row[v] for u, v in edges)
    assert row["d"] == 2  # the longest path decides, not the shortcut a -> d


def test_layers_survive_cycles_and_self_loops():
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "c"), ("c", "d")]
    rows = _layers(list("abcd"), edges)
    row = _row(rows)
    assert sorted(row) == list("abcd")
    assert row["a"] < row["b"] < row["c"] < row["d"]  # the back edge c -> a is left out of the layering


def test_layers_order_rows_to_avoid_crossings():
    # two independent chains: the sweeps keep each child under its own parent
    rows = _layers(["a1", "b1", "b2", "a2"], [("a1", "a2"), ("b1", "b2")])
    assert rows[0].index("a1") == rows[1].index("a2")


def test_draw_graph_whole_and_region():
    graph = ed.load_model(attention_block())
    ax = draw_graph(graph, highlight=["q_proj"], title="block")
    # one box per node, plus the graph input and output
    assert len(_boxes(ax)) == len(graph.nodes) + len(graph.inputs) + len(graph.outputs)
    assert sum(1 for b in _boxes(ax) if matplotlib.colors.same_color(b.get_facecolor(), _HIGHLIGHT)) == 1
    texts = [t.get_text() for t in ax.texts]
    assert "MatMul\nq_proj" in texts and "x" in texts

    region = draw_graph(graph, only=["q_proj", "q_split_heads"])
    labels = sorted(t.get_text() for t in region.texts)
    # the two nodes, the value they read (h_id) and the value they hand on (q3)
    assert labels == sorted(["MatMul\nq_proj", "Reshape\nq_split_heads", "h_id", "q3"])


def test_draw_egraph_marks_the_extracted_program():
    nodes = {
        "r": ENode("Add", ("A", "B"), "R", 1.0),
        "a0": ENode("Relu", ("S",), "A", 1.0), "a1": ENode("a'", (), "A", 3.0),
        "b0": ENode("Tanh", ("S",), "B", 1.0), "b1": ENode("b'", (), "B", 3.0),
        "s": ENode("MatMul", (), "S", 3.0),
    }
    egraph = ed.EGraph(nodes=nodes, roots=["R"])
    choice = ed.extract(egraph, "greedy")
    ax = draw_egraph(egraph, choices=choice.choices)
    filled = [b for b in _boxes(ax) if matplotlib.colors.same_color(b.get_facecolor(), _CHOSEN)]
    assert len(filled) == len(choice.choices)
    frames = [b for b in _boxes(ax) if not b.get_fill()]
    assert len(frames) == 4  # R, A, B and S (S is reachable through the unchosen nodes too)


def test_draw_egraph_of_a_snapshot_shows_attributes_and_cycles():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[1, 0])]
    model = helper.make_model(helper.make_graph(
        nodes, "twice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]), opset_imports=[helper.make_opsetid("", 17)])
    teg = ed.TensorEGraph(ed.load_model(model))
    ed.saturate(teg, ed.select_rules(["transpose-transpose-2d"]))
    snapshot = teg.snapshot()
    ax = draw_egraph(snapshot, choices=ed.extract(snapshot, "greedy").choices)
    texts = [t.get_text() for t in ax.texts]
    assert "Transpose\n[1,0]" in texts and "Input\nx" in texts
    # y's class now holds x itself: an e-node whose child class is drawn above it is a back edge (dashed)
    assert any(p.get_linestyle() == "--" for p in ax.patches if not isinstance(p, FancyBboxPatch))


def test_refuses_what_it_cannot_draw():
    graph = ed.load_model(attention_block())
    with pytest.raises(ValueError, match="too many to draw"):
        draw_graph(graph, max_vertices=10)
    with pytest.raises(ValueError, match="no node"):
        draw_graph(graph, only=["no-such-node"])
