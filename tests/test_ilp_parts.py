"""The ILP extractor's parts, one by one: each reduction keeps an optimal program, the
compressed class graph sees the cycles a plain 0-1 program would choose, and the cycle cuts
(or the ordering constraints) make the answer acyclic."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from eqsat_dnn.extract.base import EGraph, dag_cost, find_cycle, reachable_choices, validate
from eqsat_dnn.extract.ilp.cycles import _Compressed, _CutPool, _shortest_cycle, _tarjan
from eqsat_dnn.extract.ilp.model import _Model
from eqsat_dnn.extract.ilp.reduce import _reduce
from tests.test_ilp import cyclic_egraph, egraph, sharing_egraph


def optimum(g: EGraph) -> float:
    """The least DAG cost over every complete, acyclic program (brute force: tiny e-graphs only)."""
    classes = sorted(g.classes)
    best = math.inf
    for pick in itertools.product(*(g.classes[c] for c in classes)):
        choices = dict(zip(classes, pick))
        if find_cycle(g, choices) is None:
            best = min(best, dag_cost(g, choices))
    return best


def reduced_optimum(g: EGraph) -> float:
    """The least DAG cost over the programs the reduced e-graph can still express, each expanded
    back to the e-graph and checked there."""
    red = _reduce(g)
    best = math.inf
    for pick in itertools.product(*red.class_nodes):
        program = red.reachable_lenient(dict(enumerate(pick)))
        if any(r not in program for r in red.roots) or red.program_incomplete(program):
            continue
        original = reachable_choices(g, red.expand(program))
        if find_cycle(g, original) is None:
            validate(g, original)
            best = min(best, dag_cost(g, original))
    return best


# ------------------------------------------------------------------ reductions
def test_self_cycles_are_removed_and_the_optimum_kept():
    # X = id(X) costs nothing and is no program
    g = egraph({"R": [("out", 1.0, ("X",))], "X": [("id", 0.0, ("X",)), ("x", 2.0, ())]}, roots=["R"])
    red = _reduce(g)
    assert red.stats.removed["self_loop"] == 1
    assert "X.0" not in red.node_ids
    assert reduced_optimum(g) == optimum(g) == 3.0


def test_dominated_nodes_are_removed_and_map_to_their_dominator():
    # A.1 costs more than A.0 with the same child, A.2 as much with one child more
    g = egraph(
        {
            "R": [("out", 1.0, ("A", "T"))],
            "A": [("a", 1.0, ("S",)), ("a_dear", 2.0, ("S",)), ("a_more", 1.0, ("S", "T"))],
            "S": [("s", 1.0, ())],
            "T": [("t", 0.2, ())],
        },
        roots=["R"],
    )
    red = _reduce(g)
    assert red.stats.removed["dominated"] == 2
    assert red.dominator == {"A.1": "A.0", "A.2": "A.0"}
    # a program that used a dominated node maps onto its dominator
    mapped = red.map_original({"R": "R.0", "A": "A.1", "S": "S.0", "T": "T.0"})
    assert mapped is not None and red.expand(mapped)["A"] == "A.0"
    assert reduced_optimum(g) == pytest.approx(optimum(g)) == pytest.approx(3.2)


def test_single_node_chains_are_merged_into_their_parent():
    # R -> A -> B -> C is forced once R is used: one node, costs added, members kept
    g = egraph(
        {
            "R": [("r", 1.0, ("A",))],
            "A": [("a", 2.0, ("B",))],
            "B": [("b", 4.0, ("C",))],
            "C": [("c1", 3.0, ()), ("c2", 1.0, ("D",))],
            "D": [("d", 1.0, ())],
        },
        roots=["R"],
    )
    red = _reduce(g)
    assert red.stats.removed["merged"] >= 2
    (root,) = red.class_nodes[red.roots[0]]
    assert {nid for _, nid in red.node_members[root]} >= {"R.0", "A.0", "B.0"}
    assert red.node_cost[root] >= 7.0
    assert reduced_optimum(g) == pytest.approx(optimum(g)) == pytest.approx(9.0)


def test_nodes_that_require_their_own_class_are_removed():
    # X.1 needs Y, and every node of Y needs X: X.1 can never be part of a program
    g = egraph(
        {
            "R": [("out", 1.0, ("X",))],
            "X": [("x", 5.0, ()), ("via_y", 0.0, ("Y",))],
            "Y": [("y1", 1.0, ("X",)), ("y2", 0.0, ("X", "Z"))],
            "Z": [("z", 0.5, ())],
        },
        roots=["R"],
    )
    red = _reduce(g)
    assert red.stats.removed["requires"] >= 1
    assert "X.1" not in red.node_ids and "Y.0" not in red.node_ids  # Y is unreachable after that
    assert reduced_optimum(g) == optimum(g) == 6.0


def test_unreachable_and_unbuildable_nodes_are_removed():
    g = egraph(
        {
            "R": [("out", 1.0, ("A",))],
            "A": [("a", 1.0, ()), ("a_never", 0.0, ("N",))],
            "N": [("n", 0.0, ("N2",))],
            "N2": [("n2", 0.0, ("N",))],  # N and N2 only build each other
            "U": [("u", 1.0, ())],  # no root reaches it
        },
        roots=["R"],
    )
    red = _reduce(g)
    assert red.stats.removed["unbuildable"] >= 1 and red.stats.removed["unreachable"] >= 1
    assert not {"N", "N2", "U"} & set(red.class_ids) and "A.1" not in red.node_ids
    assert reduced_optimum(g) == optimum(g) == 2.0


def test_forced_classes_and_the_fixed_cost():
    g = sharing_egraph()
    red = _reduce(g)
    forced = {red.class_ids[c] for c, f in enumerate(red.forced) if f}
    assert forced == {"R", "A", "B"}  # R's only node needs both; S only one choice of each
    assert red.fixed_cost == 1.0 and red.has_choice  # forced with one node: R alone
    assert reduced_optimum(g) == optimum(g) == 6.0


@pytest.mark.parametrize("make", [sharing_egraph, cyclic_egraph])
def test_reductions_keep_an_optimal_program(make):
    g = make()
    assert reduced_optimum(g) == pytest.approx(optimum(g))


# ----------------------------------------------------- compressed graph, cycles
def test_tarjan_and_shortest_cycle():
    adj = {1: [2], 2: [3], 3: [1, 4], 4: [4], 5: [1]}
    components = sorted(sorted(c) for c in _tarjan(adj))
    assert components == [[1, 2, 3], [4], [5]]
    assert _shortest_cycle(adj, 1, {1, 2, 3}) == (1, 2, 3)
    assert _shortest_cycle(adj, 5, {5}) is None


def _free_cycle(g: EGraph, red) -> dict[int, int]:
    """The cyclic "program" of :func:`cyclic_egraph`: X = concat(split0(split(X)), split1(split(X)))."""
    wanted = {"R": "out", "X": "concat", "P": "split0", "Q": "split1", "S": "split"}
    chosen = {}
    for c, ns in enumerate(red.class_nodes):
        for n in ns:
            if any(g.nodes[nid].op == wanted.get(cls) for cls, nid in red.node_members[n]):
                chosen[c] = n
    return chosen


def test_the_compressed_graph_sees_the_cycle_through_single_node_classes():
    g = cyclic_egraph()
    red = _reduce(g)
    comp = _Compressed(red)
    x = red.class_ids.index("X")
    # S (one node) is folded into the edges: concat reaches P and Q, whose splits reach X again
    assert comp.is_multi[x] and x in comp.adj
    assert any(len(scc) > 1 for scc in _tarjan({c: sorted(v) for c, v in comp.adj.items()}))
    cyclic = _free_cycle(g, red)
    (cycle, *_) = comp.cycles_of(cyclic)
    assert x in cycle
    acyclic = red.bottom_up(red.node_cost)
    assert comp.cycles_of(acyclic) == []


def test_a_cut_excludes_its_cycle_once():
    g = cyclic_egraph()
    red = _reduce(g)
    comp = _Compressed(red)
    cuts = _CutPool(red, comp)
    cycle = comp.cycles_of(_free_cycle(g, red))[0]
    assert cuts.add(cycle) == 1
    assert cuts.add(cycle[1:] + cycle[:1]) == 0  # the same cycle, rotated
    model = _Model(red, comp, order=False)
    G, rhs = cuts.matrix(model.num_cols)
    cyclic, acyclic = (model.start_vector(p) for p in (_free_cycle(g, red), red.bottom_up(red.node_cost)))
    assert (G @ cyclic > rhs).all() and (G @ acyclic <= rhs).all()


def test_a_plain_program_is_cyclic_and_cuts_or_levels_make_it_acyclic():
    """Without acyclicity constraints the optimum is the free cycle (cost 0.5); with the cut of
    that cycle, or with the ordering constraints alone, it is the real optimum, 4.5."""
    g = cyclic_egraph()
    red = _reduce(g)
    comp = _Compressed(red)

    def solve(order: bool, cuts: _CutPool):
        model = _Model(red, comp, order=order)
        result = model.solve(cuts, start=None, time_limit=30, mip_rel_gap=0.0, seeded=True,
                             deadline=math.inf)
        chosen = red.choices_from_vector(result.solutions[-1])
        return chosen, math.fsum(red.node_cost[n] for n in red.reachable_lenient(chosen).values())

    chosen, cost = solve(order=False, cuts=_CutPool(red, comp))
    cycles = comp.cycles_of(chosen)
    assert cycles and cost == pytest.approx(0.5)

    cuts = _CutPool(red, comp)
    for cycle in cycles:
        cuts.add(cycle)
    chosen, cost = solve(order=False, cuts=cuts)
    assert comp.cycles_of(chosen) == [] and cost == pytest.approx(4.5)

    chosen, cost = solve(order=True, cuts=_CutPool(red, comp))
    assert comp.cycles_of(chosen) == [] and cost == pytest.approx(4.5)
    original = reachable_choices(g, red.expand(red.reachable(chosen)))
    validate(g, original)
    assert dag_cost(g, original) == pytest.approx(4.5)
    assert np.isclose(dag_cost(g, original), optimum(g))


def test_ties_go_back_to_the_input_program():
    from eqsat_dnn.extract.base import settle_ties

    # R's two forms cost the same (1 + 2 either way): the input's (R.0 over A.0) is kept, and
    # A goes back with it; C's rewrite is cheaper and stays
    g = egraph(
        {
            "R": [("add_bias_then_residual", 1.0, ("A", "C")), ("add_residual_of_sum", 1.0, ("B", "C"))],
            "A": [("bias_on_gemm", 2.0, ())],
            "B": [("bias_on_residual", 2.0, ())],
            "C": [("slow", 5.0, ()), ("fast", 1.0, ())],
        },
        roots=["R"],
    )
    initial = {"R": "R.0", "A": "A.0", "B": "B.0", "C": "C.0"}
    chosen = {"R": "R.1", "B": "B.0", "C": "C.1"}
    settled = settle_ties(g, chosen, initial)
    assert settled == {"R": "R.0", "A": "A.0", "C": "C.1"}
    assert dag_cost(g, settled) == dag_cost(g, chosen) == 4.0
    # a strictly cheaper choice is never undone
    g.nodes["B.0"] = g.nodes["B.0"].__class__("bias_on_residual", (), "B", 1.5)
    assert settle_ties(g, chosen, initial) == reachable_choices(g, chosen)
    # nor is one whose input form would close a cycle
    assert settle_ties(cyclic_egraph(), {"R": "R.0", "X": "X.0"},
                       {"R": "R.0", "X": "X.1", "P": "P.0", "Q": "Q.0", "S": "S.0"}) == {"R": "R.0", "X": "X.0"}


def _tiny_mip() -> dict:
    """min x0 + 2 x1 + 3 x2  s.t.  x0 + x1 >= 1,  x1 + x2 >= 1,  binary: the optimum is x1 alone (2)."""
    import scipy.sparse as sp

    A = sp.csc_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    return {"shape": A.shape, "c": np.array([1.0, 2.0, 3.0]), "row_lower": np.ones(2), "row_upper": np.full(2, np.inf),
            "col_lower": np.zeros(3), "col_upper": np.ones(3), "indptr": A.indptr, "indices": A.indices,
            "values": A.data, "integer": [0, 1, 2]}


@pytest.mark.parametrize("mispriced", [False, True])
def test_a_start_highs_misprices_is_solved_again_without_it(monkeypatch, mispriced):
    """HiGHS's presolve can misprice a MIP start and call it optimal at once; a seeded run whose
    reported objective is not its solution's cost is run again, unseeded."""
    from eqsat_dnn.extract.ilp import highs

    built = []
    real_build = highs._build_highs

    class _Reported:
        """The first (seeded) run reports its start 1.5 cheaper than it is, as HiGHS 1.16 did."""

        def __init__(self, h, first):
            self._h, self._first = h, first

        def __getattr__(self, name):
            return getattr(self._h, name)

        def getInfo(self):
            info = self._h.getInfo()
            if self._first and mispriced:
                info.objective_function_value -= 1.5
            return info

    def build(spec, options, verbose):
        h = _Reported(real_build(spec, options, verbose), first=not built)
        built.append(h)
        return h

    monkeypatch.setattr(highs, "_build_highs", build)
    spec = _tiny_mip()
    found = []
    h = highs._run_seeded(spec, {"time_limit": 10.0}, False, np.array([1.0, 0.0, 1.0]), num=3,
                          on_solution=lambda o, v: found.append(o))
    assert len(built) == (2 if mispriced else 1)
    assert np.allclose(h.getSolution().col_value, [0.0, 1.0, 0.0])
    assert highs._mispriced(h, spec["c"]) is False
    assert all(o in (4.0, 2.0) for o in found)  # the solutions' own costs, never a reported price
