"""ILP extraction: hand-made e-graphs, and the extraction-gym reference files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eqsat_dnn.extract.base import EGraph, ENode, dag_cost, find_cycle, load_egraph_json, validate
from eqsat_dnn.extract.greedy import GreedyExtractor
from eqsat_dnn.extract.ilp import ILPExtractor

REPO = Path(__file__).resolve().parents[1]
GYM = Path(__file__).resolve().parents[2] / "shared" / "reference" / "extraction-gym"
needs_gym = pytest.mark.skipif(
    not GYM.is_dir(), reason=f"extraction-gym reference e-graphs not found at {GYM} (shared/ is not checked out)"
)


def egraph(spec: dict[str, list[tuple[str, float, tuple[str, ...]]]], roots: list[str]) -> EGraph:
    """Build an e-graph from {class: [(op, cost, child classes), ...]}."""
    nodes = {}
    for cls, members in spec.items():
        for i, (op, cost, children) in enumerate(members):
            nodes[f"{cls}.{i}"] = ENode(op=op, children=tuple(children), eclass=cls, cost=cost)
    return EGraph(nodes=nodes, roots=roots)


def sharing_egraph() -> EGraph:
    # A and B can each use the shared S (cost 3) or a private leaf (cost 3).
    # Tree cost makes greedy take both leaves (3 < 1 + 3): 1 + 3 + 3 = 7.
    # Sharing S costs 1 + 1 + 1 + 3 = 6.
    return egraph(
        {
            "R": [("add", 1.0, ("A", "B"))],
            "A": [("f", 1.0, ("S",)), ("leaf_a", 3.0, ())],
            "B": [("g", 1.0, ("S",)), ("leaf_b", 3.0, ())],
            "S": [("shared", 3.0, ())],
        },
        roots=["R"],
    )


def cyclic_egraph() -> EGraph:
    # X = concat(split0(split(X)), split1(split(X))) costs nothing but is a
    # cycle; the real programs are x1 (5) or concat of two leaves (2 + 2).
    return egraph(
        {
            "R": [("out", 0.5, ("X",))],
            "X": [("compute", 5.0, ()), ("concat", 0.0, ("P", "Q"))],
            "P": [("split0", 0.0, ("S",)), ("leaf_p", 2.0, ())],
            "Q": [("split1", 0.0, ("S",)), ("leaf_q", 2.0, ())],
            "S": [("split", 0.0, ("X",))],
        },
        roots=["R"],
    )


def ops(g: EGraph, choices: dict[str, str]) -> set[str]:
    return {g.nodes[n].op for n in choices.values()}


def test_sharing_beats_greedy():
    g = sharing_egraph()
    greedy = GreedyExtractor().extract(g)
    assert greedy.cost == pytest.approx(7.0)
    result = ILPExtractor(time_limit=10).extract(g)
    validate(g, result.choices)
    assert result.cost == pytest.approx(6.0)
    assert result.cost == pytest.approx(dag_cost(g, result.choices))
    assert result.status == "optimal"
    assert result.bound == pytest.approx(6.0, abs=1e-6)
    assert result.gap == pytest.approx(0.0, abs=1e-6)
    assert ops(g, result.choices) == {"add", "f", "g", "shared"}
    assert result.extractor == "ilp"


def test_stock_cvxpy_highs_path():
    g = sharing_egraph()
    result = ILPExtractor(time_limit=10, seeded=False).extract(g)
    validate(g, result.choices)
    assert result.cost == pytest.approx(6.0)
    assert result.status == "optimal"


@pytest.mark.parametrize(
    "options",
    [
        {},  # ordering constraints
        {"order": False, "cycle_length": 0},  # naive model + lazy cycle cuts
        {"order": False, "cycle_length": 0, "seeded": False},  # same through stock cvxpy HIGHS
    ],
)
def test_cycle_is_never_returned(options):
    g = cyclic_egraph()
    extractor = ILPExtractor(time_limit=10, **options)
    result = extractor.extract(g)
    validate(g, result.choices)
    assert find_cycle(g, result.choices) is None
    assert result.cost == pytest.approx(4.5)
    assert ops(g, result.choices) == {"out", "concat", "leaf_p", "leaf_q"}
    assert result.status == "optimal"
    if options.get("order") is False:
        # the naive model's first answer was the free cycle, which got cut
        assert extractor.last_info.rounds >= 2
        assert extractor.last_info.cuts >= 1


def test_child_process_solver():
    # Force the whole-program solve into the killable child process.
    g = sharing_egraph()
    extractor = ILPExtractor(time_limit=20, isolate_above=0, lns=False)
    result = extractor.extract(g)
    validate(g, result.choices)
    assert extractor.last_info.mode == "concurrent"
    assert result.cost == pytest.approx(6.0)
    assert result.status == "optimal"


def test_no_choice_is_optimal_at_once():
    g = egraph({"R": [("f", 2.0, ("A",))], "A": [("a", 1.0, ())]}, roots=["R"])
    result = ILPExtractor(time_limit=5).extract(g)
    assert result.cost == pytest.approx(3.0)
    assert result.status == "optimal"
    assert result.bound == pytest.approx(3.0)


def test_tiny_time_limit_falls_back_to_greedy_or_better():
    g = cyclic_egraph()
    greedy = GreedyExtractor().extract(g)
    result = ILPExtractor(time_limit=1e-4).extract(g)
    validate(g, result.choices)
    assert result.cost <= greedy.cost + 1e-12
    assert result.status in ("greedy", "feasible", "optimal")
    assert 0.0 <= result.bound <= result.cost + 1e-12
    assert result.seconds < 2.0


def test_rejects_bad_options():
    with pytest.raises(ValueError):
        ILPExtractor(time_limit=0)
    with pytest.raises(ValueError):
        ILPExtractor(mip_rel_gap=-1)


def test_nothing_reaches_stdout():
    # HiGHS prints a banner on the C-level stdout once per process; callers
    # print JSON there, so the extractor must keep it clean.
    code = textwrap.dedent("""
        import json
        from eqsat_dnn.extract.base import EGraph, ENode
        from eqsat_dnn.extract.ilp import ILPExtractor
        nodes = {
            "r": ENode("add", ("A", "B"), "R", 1.0),
            "a1": ENode("f", ("S",), "A", 1.0), "a2": ENode("la", (), "A", 3.0),
            "b1": ENode("g", ("S",), "B", 1.0), "b2": ENode("lb", (), "B", 3.0),
            "s": ENode("s", (), "S", 3.0),
        }
        g = EGraph(nodes=nodes, roots=["R"])
        r1 = ILPExtractor(time_limit=10).extract(g)
        r2 = ILPExtractor(time_limit=10, seeded=False).extract(g)
        r3 = ILPExtractor(time_limit=10, isolate_above=0, lns=False).extract(g)
        print(json.dumps([r1.cost, r2.cost, r3.cost]))
        """)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[6.0, 6.0, 6.0]"


# ------------------------------------------------------------ reference files
def check_reference(name: str, time_limit: float):
    g = load_egraph_json(GYM / name)
    greedy = GreedyExtractor().extract(g)
    result = ILPExtractor(time_limit=time_limit).extract(g)
    validate(g, result.choices)
    assert find_cycle(g, result.choices) is None
    assert result.cost == pytest.approx(dag_cost(g, result.choices))
    assert result.cost <= greedy.cost + 1e-12
    assert result.bound <= result.cost + 1e-9
    assert result.seconds <= time_limit + 1.0
    return greedy, result


@needs_gym
def test_vgg_acyclic_is_optimal():
    _, result = check_reference("vgg_acyclic.json", 10)
    assert result.status == "optimal"
    assert result.cost == pytest.approx(4.8668, abs=5e-5)


@needs_gym
def test_resnet50_acyclic_reaches_the_optimum():
    greedy, result = check_reference("resnet50_acyclic.json", 10)
    assert greedy.cost == pytest.approx(4.4257, abs=5e-5)
    assert result.status == "optimal"
    assert result.cost == pytest.approx(4.4160, abs=5e-5)


@needs_gym
def test_resnet50_beats_greedy():
    greedy, result = check_reference("resnet50.json", 20)
    assert result.cost < greedy.cost - 1e-4
    assert result.status in ("feasible", "optimal")


@needs_gym
def test_vgg_within_time_limit():
    greedy, result = check_reference("vgg.json", 4)
    assert result.status in ("greedy", "feasible", "optimal")


def test_extraction_stops_once_no_program_can_beat_the_target():
    """Issue 17 (extraction that knows when to stop): once a bound proves that nothing costs
    less than the caller's target, the ILP ends there instead of spending its time limit."""
    from eqsat_dnn.extract.base import ExtractionStop
    from eqsat_dnn.extract.ilp import ILPExtractor

    if not GYM.is_dir():
        pytest.skip(f"extraction-gym reference e-graphs not found at {GYM}")
    egraph = load_egraph_json(GYM / "nasneta.json")
    started = time.perf_counter()
    # no program costs less than nothing: the forced nodes' cost proves it before any solve
    result = ILPExtractor(time_limit=60).extract(egraph, target=0.0)
    assert result.stop_reason is ExtractionStop.NO_GAIN and not result.warning
    assert time.perf_counter() - started < 30  # reductions only, never the 60 s limit
