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

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from eqsat_dnn.runtime.check import CheckReport, compare_models
from eqsat_dnn.cost import CostModel, RooflineCostModel, fusion_penalties, node_costs
from eqsat_dnn.eqsat.egraph import Snapshot, TensorEGraph
from eqsat_dnn.errors import CheckError, InputError, ResourceLimitError, first_line
from eqsat_dnn.extract import DEFAULT_EXTRACTOR, EXTRACTORS
from eqsat_dnn.extract.base import EGraph, Extraction, Extractor, load_egraph_json, validate
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.ir.language import Target
from eqsat_dnn.lower import avoid_slow_fusions, to_standard
from eqsat_dnn.repair import Repair, repair
from eqsat_dnn.io.onnx_in import load_model, read_model
from eqsat_dnn.io.onnx_out import OpsetError, check_model, to_onnx
from eqsat_dnn.io.protos import light_copy
from eqsat_dnn.eqsat.rules import Arithmetic, Rule, default_rules, select_rules
from eqsat_dnn.eqsat.saturate import Iteration, Limits, SaturationReport, SaturationStop, resident_mb, saturate


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
    cost worth beating: a search stops once a bound proves nothing costs less."""
    if isinstance(egraph, (str, Path)):
        egraph = load_egraph_json(egraph)
    if isinstance(egraph, Snapshot):
        egraph = egraph.egraph
    chosen = get_extractor(extractor, time_limit) if isinstance(extractor, str) else extractor
    result = chosen.extract(egraph, initial, target)
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
    used_rules: list[Rule] = field(default_factory=list)
    repair: Repair | None = None
    """What was excluded after the chosen program failed the check (:mod:`eqsat_dnn.repair`)."""
    kept_input: bool = False
    """The extracted program was not cheaper enough (:data:`MIN_GAIN`): the input program was kept."""

    @property
    def extraction_status(self) -> str:
        """The extraction's status as shown to the user: ``optimal``, ``feasible``, ``greedy``,
        followed by `` (kept input program)`` when the input program was kept."""
        if self.extraction is None:
            return ""
        return str(self.extraction.status) + (" (kept input program)" if self.kept_input else "")

    @property
    def warnings(self) -> list[str]:
        """One line each for what the user should know: a stage that fell back at a limit."""
        found = []
        sat, ext = self.saturation, self.extraction
        if sat is not None and sat.stop_reason == SaturationStop.MEMORY_LIMIT:
            found.append(f"saturation stopped at the memory limit after {len(sat.iterations)} iterations "
                         f"({sat.nodes} e-nodes); the result is valid but may be less optimized")
        if ext is not None and ext.warning:
            found.append(ext.warning)
        if self.repair is not None:
            found.append(self.repair.warning())
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
                "extractor": ext.extractor, "status": self.extraction_status, "cost": ext.cost,
                "bound": ext.bound, "gap": ext.gap, "seconds": ext.seconds, "stop_reason": ext.stop_reason,
            },
            "warnings": self.warnings,
            "repair": None if self.repair is None else self.repair.to_dict(),
            "check": None if self.check is None else {
                "runs": self.check.runs, "ok": self.check.ok, "sets": [k.value for k in self.check.sets],
                "skipped": [k.value for k in self.check.skipped],
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
    extractor: str | Extractor = DEFAULT_EXTRACTOR,
    extract_time_limit: float = 10.0,
    cost_model: CostModel | None = None,
    check: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
    on_iteration: Callable[[Iteration], None] | None = None,
    exact: bool = False,
    target: Target = Target.ONNXRUNTIME,
) -> tuple[onnx.ModelProto, OptimizeReport]:
    """Optimize a model; returns the new model and a report.

    ``rules`` defaults to the library, plus the multi-pattern merges when the cost model's device
    profile merges kernels (the GPU profiles). ``check`` input sets are run through both models
    in onnxruntime (then the edge sets: :mod:`eqsat_dnn.runtime.check`). A program that fails
    the check is repaired (:mod:`eqsat_dnn.repair`), down to the input program at worst; only when
    even that fails (a model that is not deterministic) :class:`~eqsat_dnn.errors.CheckError` is
    raised. ``check=0`` skips it. ``exact`` admits only the rules that hold in IEEE float
    (:class:`~eqsat_dnn.eqsat.rules.Arithmetic`) and checks infinities exactly. ``target`` says
    which operator sets the output may use: onnxruntime's fused kernels by default, standard ONNX
    only with :attr:`~eqsat_dnn.ir.language.Target.ONNX`.
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    graph = load_model(model, input_shapes, lazy=True)  # weights stay in their files
    graph.lint()
    cost_model = cost_model or RooflineCostModel()
    if rules is None:
        profile = cost_model.profile
        rules = default_rules(merges=bool(profile and profile.merges_kernels))
    elif rules and isinstance(rules[0], str):
        rules = select_rules(rules)  # type: ignore[arg-type]
    if exact:  # the floating-point policy: only rewrites that hold in IEEE float (rules/README.md)
        rules = [r for r in rules if r.arithmetic is Arithmetic.EXACT]
    seconds["load"] = time.perf_counter() - t
    _within_memory(limits, "loading")

    t = time.perf_counter()
    teg = TensorEGraph(graph)
    seconds["build"] = time.perf_counter() - t
    _within_memory(limits, "building the e-graph")

    report = OptimizeReport(ops_before=graph.op_counts(), cost_model=cost_model.name, rules=len(rules),
                            used_rules=list(rules))
    # the e-graph prices nodes one by one; the runtime's slow fusions are the lowering's to remove
    input_cost = sum(node_costs(graph, cost_model).values())
    report.cost_before = input_cost + sum(fusion_penalties(graph, cost_model).values())  # = graph_cost
    t = time.perf_counter()
    report.saturation = saturate(teg, rules, limits, on_iteration)
    seconds["saturate"] = time.perf_counter() - t

    t = time.perf_counter()
    snapshot = teg.snapshot(cost_model, target)
    report.egraph_nodes, report.egraph_classes = snapshot.egraph.num_nodes, snapshot.egraph.num_classes
    chosen = get_extractor(extractor, extract_time_limit) if isinstance(extractor, str) else extractor
    initial = teg.input_choices(snapshot)
    # a gain within the cost model's error may well be a loss in the runtime: below this cost, or
    # the input program is kept (and once a bound proves nothing is, extraction stops)
    goal = input_cost * (1.0 - MIN_GAIN)
    report.extraction = extract(snapshot.egraph, chosen, initial=initial, target=goal)

    def pays(found: Extraction) -> bool:
        return found.cost <= goal

    keep_input = report.kept_input = not pays(report.extraction)
    seconds["extract"] = time.perf_counter() - t

    def program(found: Extraction | None) -> Graph:
        return graph if found is None else teg.program(snapshot, found)

    def realize(program_graph: Graph, timed: bool = False) -> tuple[onnx.ModelProto, int]:
        t = time.perf_counter()
        # every site the cost model charges is rewritten, so the lowered program pays no excess
        lowered, sites = avoid_slow_fusions(program_graph, cost_model)
        if target is Target.ONNX:
            lowered, _ = to_standard(lowered)
        try:
            lowered.lint()
        except ValueError as exc:  # as for a program onnx's checker rejects: the repair leaves it out
            raise CheckError(f"the chosen program is malformed: {exc}") from None
        lowered_at = time.perf_counter()
        try:
            written = to_onnx(lowered)
        except OpsetError as exc:  # a chosen op's opset cannot be reached: the repair leaves it out
            raise CheckError(str(exc)) from None
        _check_optimized(written, model)
        if timed:
            seconds["lower"], seconds["export"] = lowered_at - t, time.perf_counter() - lowered_at
        return written, sites

    try:
        optimized, report.lowered = realize(program(None if keep_input else report.extraction), timed=True)
        rejected = ""
    except CheckError as exc:  # onnx's checker rejects the chosen program: a wrong rule made it
        if keep_input:
            raise
        optimized, rejected = None, str(exc)
    report.cost_after = input_cost if keep_input else report.extraction.cost

    t = time.perf_counter()
    original = str(model) if isinstance(model, (str, Path)) else model

    def compare(candidate: onnx.ModelProto) -> CheckReport:
        return compare_models(original, candidate, runs=check, exact=exact)

    if optimized is not None and check > 0:
        report.check = compare(optimized)
    if rejected or (report.check is not None and not report.check.ok and not keep_input):
        found = _repair(report, snapshot, initial, chosen, goal, pays, program, realize, compare)
        optimized, report.lowered = realize(program(found))
        report.cost_after = input_cost if found is None else found.cost
        report.check = compare(optimized) if check > 0 else None
    if check > 0:
        seconds["check"] = time.perf_counter() - t
        if not report.check.ok:
            raise CheckError("optimized model disagrees with the original: " + report.check.failures[0])
    report.ops_after = _op_counts(optimized)
    seconds["total"] = sum(seconds.values())
    report.seconds = seconds
    return optimized, report


def _repair(report: OptimizeReport, snapshot: Snapshot, initial: dict[str, str], chosen: Extractor,
            target: float, pays: Callable[[Extraction], bool], program: Callable[[Extraction | None], Graph],
            realize: Callable[[Graph], tuple[onnx.ModelProto, int]],
            compare: Callable[[onnx.ModelProto], CheckReport]) -> Extraction | None:
    """The chosen program failed the check: exclude the e-nodes to blame and extract again
    (:mod:`eqsat_dnn.repair`); ``None`` when the input program is to be kept."""
    failing = report.extraction

    def passes(choices: dict[str, str]) -> bool:
        try:
            written, _ = realize(program(dataclasses.replace(failing, choices=choices)))
        except CheckError:  # onnx's checker rejects it
            return False
        return compare(written).ok

    fired = report.saturation.matches_per_rule() if report.saturation else {}

    def rules_building(ops: list[str]) -> list[str]:
        return sorted(r.name for r in report.used_rules if fired.get(r.name) and r.builds() & set(ops))

    found, report.repair = repair(
        snapshot.egraph, failing, initial, passes,
        extract_again=lambda egraph: extract(egraph, chosen, initial=initial, target=target), better=pays,
        op_of=lambda node_id: snapshot.info[node_id].op, rules_building=rules_building)
    if found is None:
        report.kept_input = True
        return None
    report.extraction = found
    return found


def _within_memory(limits: Limits, stage: str) -> None:
    """The stages before saturation answer to the memory limit too: they cannot stop early, so
    they fail (saturation stops at it; extraction, export and the check grow with what those
    bounded)."""
    resident = resident_mb()
    if resident > limits.memory_mb:
        raise ResourceLimitError(f"{resident:.0f} MiB resident after {stage}, over the memory limit of "
                                 f"{limits.memory_mb:.0f} MiB (raise it with --memory-limit)")


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
    raise CheckError(f"optimized model fails onnx's checker: {first_line(error, 300)}")


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
