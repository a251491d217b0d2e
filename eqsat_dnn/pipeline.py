"""The whole job, stage by stage: ONNX -> graph -> e-graph -> saturated e-graph
-> extracted graph -> lowered graph -> ONNX, with the outputs checked against the original.

:func:`optimize` runs it all; each stage is also a plain function
(:func:`~eqsat_dnn.io.onnx_in.load_model`, :class:`~eqsat_dnn.eqsat.egraph.TensorEGraph`,
:func:`~eqsat_dnn.eqsat.saturate.saturate`, :func:`extract`,
:func:`~eqsat_dnn.lower.avoid_slow_fusions`, :func:`~eqsat_dnn.io.onnx_out.to_onnx`,
:func:`~eqsat_dnn.runtime.check.compare_models`)
so a notebook can stop between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from eqsat_dnn.runtime.check import CheckReport, compare_models
from eqsat_dnn.cost import CostModel, RooflineCostModel, fusion_penalties, node_costs
from eqsat_dnn.eqsat.egraph import Snapshot, TensorEGraph
from eqsat_dnn.errors import CheckError, InputError
from eqsat_dnn.extract.base import EGraph, Extraction, Extractor, load_egraph_json, validate
from eqsat_dnn.extract.greedy import GreedyExtractor
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.lower import avoid_slow_fusions
from eqsat_dnn.io.onnx_in import load_model, read_model
from eqsat_dnn.io.onnx_out import check_model, to_onnx
from eqsat_dnn.io.protos import light_copy
from eqsat_dnn.eqsat.rules import Rule, default_rules, select_rules
from eqsat_dnn.eqsat.saturate import Iteration, Limits, SaturationReport, saturate

EXTRACTORS = ("ilp", "greedy")


def get_extractor(name: str = "ilp", time_limit: float = 10.0) -> Extractor:
    """An extractor by name: ``ilp`` (cvxpy + HiGHS) or ``greedy``."""
    if name == "greedy":
        return GreedyExtractor()
    if name == "ilp":
        from eqsat_dnn.extract.ilp import ILPExtractor

        return ILPExtractor(time_limit=time_limit)
    raise InputError(f"unknown extractor {name!r} (choose from {', '.join(EXTRACTORS)})")


def extract(egraph: EGraph | Snapshot | str | Path, extractor: str | Extractor = "ilp",
            time_limit: float = 10.0, initial: dict[str, str] | None = None) -> Extraction:
    """Choose the cheapest program of an e-graph (or an egraph-serialize JSON file).

    ``initial`` is a known program (e-class -> e-node), such as the input model's
    (:meth:`TensorEGraph.input_choices`): the answer is never costlier than it."""
    if isinstance(egraph, (str, Path)):
        egraph = load_egraph_json(egraph)
    if isinstance(egraph, Snapshot):
        egraph = egraph.egraph
    chosen = get_extractor(extractor, time_limit) if isinstance(extractor, str) else extractor
    result = chosen.extract(egraph, initial)
    validate(egraph, result.choices)
    return result


@dataclass
class OptimizeReport:
    """What :func:`optimize` did, stage by stage."""

    ops_before: dict[str, int]
    ops_after: dict[str, int] = field(default_factory=dict)
    cost_before: float = 0.0
    cost_after: float = 0.0
    cost_model: str = ""
    saturation: SaturationReport | None = None
    extraction: Extraction | None = None
    check: CheckReport | None = None
    egraph_nodes: int = 0
    egraph_classes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    rules: int = 0
    lowered: int = 0
    """Sites rewritten so that the runtime does not fuse them (:mod:`eqsat_dnn.lower`)."""

    @property
    def warnings(self) -> list[str]:
        """One line each for what the user should know: a stage that fell back at a limit."""
        found = []
        sat, ext = self.saturation, self.extraction
        if sat is not None and sat.stop_reason == "memory limit":
            found.append(f"saturation stopped at the memory limit after {len(sat.iterations)} iterations "
                         f"({sat.nodes} e-nodes); the result is valid but may be less optimized")
        if ext is not None and ext.warning:
            found.append(ext.warning)
        return found

    @property
    def nodes_before(self) -> int:
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.ops_after.values())

    def to_dict(self) -> dict:
        sat = self.saturation
        ext = self.extraction
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            "cost_model": self.cost_model,
            "cost_before": self.cost_before,
            "cost_after": self.cost_after,
            "rules": self.rules,
            "lowered": self.lowered,
            "egraph": {"nodes": self.egraph_nodes, "classes": self.egraph_classes},
            "saturation": None if sat is None else {
                "stop_reason": sat.stop_reason,
                "iterations": [
                    {"index": it.index, "nodes": it.nodes, "seconds": it.seconds, "matches": it.matches}
                    for it in sat.iterations
                ],
            },
            "extraction": None if ext is None else {
                "extractor": ext.extractor, "status": ext.status, "cost": ext.cost,
                "bound": ext.bound, "gap": ext.gap, "seconds": ext.seconds, "stop_reason": ext.stop_reason,
            },
            "warnings": self.warnings,
            "check": None if self.check is None else {
                "runs": self.check.runs, "ok": self.check.ok,
                "max_abs_error": self.check.max_abs_error, "max_rel_error": self.check.max_rel_error,
            },
            "seconds": self.seconds,
        }


MIN_GAIN = 0.005
"""The extracted program replaces the input only when predicted cheaper by this fraction."""


def optimize(
    model: str | Path | onnx.ModelProto,
    *,
    rules: list[Rule] | list[str] | None = None,
    limits: Limits = Limits(),
    extractor: str | Extractor = "ilp",
    extract_time_limit: float = 10.0,
    cost_model: CostModel | None = None,
    check: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
    on_iteration: Callable[[Iteration], None] | None = None,
) -> tuple[onnx.ModelProto, OptimizeReport]:
    """Optimize a model; returns the new model and a report.

    ``rules`` defaults to the library, plus the multi-pattern merges when the cost model's device
    profile merges kernels (the GPU profiles). ``check`` input sets are run through both models
    in onnxruntime; a mismatch raises :class:`~eqsat_dnn.errors.CheckError`. ``check=0`` skips it.
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    graph = load_model(model, input_shapes)
    cost_model = cost_model or RooflineCostModel()
    if rules is None:
        profile = getattr(cost_model, "profile", None)
        rules = default_rules(merges=bool(profile and profile.merges_kernels))
    elif rules and isinstance(rules[0], str):
        rules = select_rules(rules)  # type: ignore[arg-type]
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    teg = TensorEGraph(graph)
    seconds["build"] = time.perf_counter() - t

    report = OptimizeReport(ops_before=graph.op_counts(), cost_model=cost_model.name, rules=len(rules))
    # the e-graph prices nodes one by one; the runtime's slow fusions are the lowering's to remove
    input_cost = sum(node_costs(graph, cost_model).values())
    report.cost_before = input_cost + sum(fusion_penalties(graph, cost_model).values())  # = graph_cost
    t = time.perf_counter()
    report.saturation = saturate(teg, rules, limits, on_iteration)
    seconds["saturate"] = time.perf_counter() - t

    t = time.perf_counter()
    snapshot = teg.snapshot(cost_model)
    report.egraph_nodes, report.egraph_classes = snapshot.egraph.num_nodes, snapshot.egraph.num_classes
    chosen = get_extractor(extractor, extract_time_limit) if isinstance(extractor, str) else extractor
    report.extraction = extract(snapshot.egraph, chosen, initial=teg.input_choices(snapshot))
    cost_after = report.extraction.cost
    optimized_graph: Graph = teg.program(snapshot, report.extraction)
    if cost_after > input_cost * (1.0 - MIN_GAIN):
        # the extractor found nothing better (a greedy pick can even be worse), or a gain within the
        # cost model's error, which the runtime may well turn into a loss: keep the input program
        optimized_graph, cost_after = graph, input_cost
        report.extraction.status += " (kept input program)"
    seconds["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    # every site the cost model charges is rewritten, so the lowered program pays no excess
    optimized_graph, report.lowered = avoid_slow_fusions(optimized_graph, cost_model)
    report.cost_after = cost_after
    seconds["lower"] = time.perf_counter() - t

    t = time.perf_counter()
    optimized = to_onnx(optimized_graph)
    _check_optimized(optimized, model)
    report.ops_after = _op_counts(optimized)
    seconds["export"] = time.perf_counter() - t

    if check > 0:
        t = time.perf_counter()
        original = str(model) if isinstance(model, (str, Path)) else model
        report.check = compare_models(original, optimized, runs=check)
        seconds["check"] = time.perf_counter() - t
        if not report.check.ok:
            raise CheckError("optimized model disagrees with the original: " + report.check.failures[0])
    seconds["total"] = sum(seconds.values())
    report.seconds = seconds
    return optimized, report


def _check_optimized(optimized: onnx.ModelProto, original: str | Path | onnx.ModelProto) -> None:
    """onnx's full check of the output; where the input itself fails the full check (onnx
    cannot infer some ops' function bodies), the plain check the input passed."""
    try:
        check_model(optimized)
        return
    except Exception as exc:  # the checker raises validation and inference errors alike
        error = exc
    try:
        check_model(read_model(original)[0])
    except Exception:
        try:
            onnx.checker.check_model(light_copy(optimized))
            return
        except Exception as exc:
            error = exc
    raise CheckError(f"optimized model fails onnx's checker: {str(error).strip().splitlines()[0]}")


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
