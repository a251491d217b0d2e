"""The search on one graph: e-graph, saturation and extraction, as one plain function.

:func:`search` takes a :class:`~eqsat_dnn.ir.graph.Graph` and gives a :class:`Search`: the
saturated e-graph's snapshot, the chosen program (or the input program, when the choice is not
cheaper by :data:`MIN_GAIN`) and what each step took. :func:`eqsat_dnn.pipeline.optimize` runs it
on the whole graph, or, for models of repeated layers, on one representative layer per class and
on what lies between them (:mod:`eqsat_dnn.blocks`), each under its own limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from eqsat_dnn.cost import CostModel, node_costs
from eqsat_dnn.eqsat.egraph import Snapshot, TensorEGraph
from eqsat_dnn.eqsat.rules import Rule
from eqsat_dnn.eqsat.saturate import Iteration, Limits, SaturationReport, resident_mb, saturate
from eqsat_dnn.errors import InputError, ResourceLimitError
from eqsat_dnn.extract import DEFAULT_EXTRACTOR, EXTRACTORS
from eqsat_dnn.extract.base import EGraph, Extraction, Extractor, dag_cost, known_program, load_egraph_json, settle_ties, validate
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.ir.language import Target

MIN_GAIN = 0.005
"""The extracted program replaces the input only when predicted cheaper by this fraction."""


def get_extractor(name: str = DEFAULT_EXTRACTOR, time_limit: float = 10.0) -> Extractor:
    """An extractor by name, from the registry :data:`eqsat_dnn.extract.EXTRACTORS`:
    ``ilp`` (cvxpy + HiGHS) or ``greedy``."""
    if name not in EXTRACTORS:
        raise InputError(f"unknown extractor {name!r} (choose from {', '.join(EXTRACTORS)})")
    return EXTRACTORS[name](time_limit=time_limit)


def extract(egraph: EGraph | Snapshot | str | Path, extractor: str | Extractor = DEFAULT_EXTRACTOR,
            time_limit: float = 10.0, initial: dict[str, str] | None = None,
            target: float | None = None) -> Extraction:
    """Choose the cheapest program of an e-graph (or an egraph-serialize JSON file).

    ``initial`` is a known program (e-class -> e-node), such as the input model's
    (:meth:`TensorEGraph.input_choices`): the answer is never costlier than it. ``target`` is the
    cost worth beating: a search stops once a bound proves nothing costs less. Where the answer
    and ``initial`` cost the same class by class, the answer keeps ``initial``'s node
    (:func:`~eqsat_dnn.extract.base.settle_ties`)."""
    if isinstance(egraph, (str, Path)):
        egraph = load_egraph_json(egraph)
    if isinstance(egraph, Snapshot):
        egraph = egraph.egraph
    chosen = get_extractor(extractor, time_limit) if isinstance(extractor, str) else extractor
    result = chosen.extract(egraph, initial, target)
    validate(egraph, result.choices)
    known = known_program(egraph, initial)
    if known is not None:
        result.choices = settle_ties(egraph, result.choices, known[0])
        result.cost = dag_cost(egraph, result.choices)
    return result


def within_memory(limits: Limits, stage: str) -> None:
    """The stages before saturation answer to the memory limit too: they cannot stop early, so
    they fail (saturation stops at it; extraction, export and the check grow with what those
    bounded)."""
    resident = resident_mb()
    if resident > limits.memory_mb:
        raise ResourceLimitError(f"{resident:.0f} MiB resident after {stage}, over the memory limit of "
                                 f"{limits.memory_mb:.0f} MiB (raise it with --memory-limit)")


@dataclass
class Search:
    """What :func:`search` found on one graph."""

    graph: Graph
    teg: TensorEGraph | None
    """None once :meth:`release` freed it."""
    snapshot: Snapshot
    saturation: SaturationReport
    extraction: Extraction
    extractor: Extractor
    initial: dict[str, str]
    """The input program in the snapshot (e-class -> e-node)."""
    input_cost: float
    """The input program's cost, node by node (fusion penalties are the lowering's)."""
    goal: float
    """The cost a program must reach to replace the input (:data:`MIN_GAIN` below it)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """``build``, ``saturate``, ``extract``."""
    _chosen: Graph | None = field(default=None, repr=False, compare=False)

    def pays(self, found: Extraction) -> bool:
        return found.cost <= self.goal

    @property
    def kept_input(self) -> bool:
        """The extracted program is not cheaper enough: the input program is kept."""
        return not self.pays(self.extraction)

    @property
    def cost(self) -> float:
        """The cost of the program :attr:`chosen` gives."""
        return self.input_cost if self.kept_input else self.extraction.cost

    def program(self, found: Extraction | None) -> Graph:
        """The graph of an extraction of this search's e-graph; the input graph for ``None``."""
        return self.graph if found is None else self.teg.program(self.snapshot, found)

    def chosen(self) -> Graph:
        """The program this search chose: the extraction's, or the input where that does not pay
        (built once: the block path reads it for the report and for every copy)."""
        if self._chosen is None:
            self._chosen = self.program(None if self.kept_input else self.extraction)
        return self._chosen

    def release(self) -> None:
        """Free the e-graph (egglog's memory, tens of MB with the rules compiled) once
        :meth:`chosen` is built: the block path keeps every representative's search for its
        report and its copies, and needs only their programs and figures from then on."""
        self.chosen()
        self.teg = None


def search(graph: Graph, rules: list[Rule], limits: Limits, cost_model: CostModel, extractor: Extractor,
           target: Target = Target.ONNXRUNTIME, on_iteration: Callable[[Iteration], None] | None = None) -> Search:
    """Build the e-graph of ``graph``, saturate it with ``rules`` within ``limits`` and extract the
    cheapest program that ``target`` runs, starting from the input program."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    teg = TensorEGraph(graph)
    seconds["build"] = time.perf_counter() - t
    within_memory(limits, "building the e-graph")

    t = time.perf_counter()
    saturation = saturate(teg, rules, limits, on_iteration)
    seconds["saturate"] = time.perf_counter() - t

    t = time.perf_counter()
    snapshot = teg.snapshot(cost_model, target)
    initial = teg.input_choices(snapshot)
    input_cost = sum(node_costs(graph, cost_model).values())
    # a gain within the cost model's error may well be a loss in the runtime: below this cost, or
    # the input program is kept (and once a bound proves nothing is, extraction stops)
    goal = input_cost * (1.0 - MIN_GAIN)
    extraction = extract(snapshot.egraph, extractor, initial=initial, target=goal)
    seconds["extract"] = time.perf_counter() - t
    return Search(graph, teg, snapshot, saturation, extraction, extractor, initial, input_cost, goal, seconds)


__all__ = ["MIN_GAIN", "Search", "extract", "get_extractor", "search", "within_memory"]
