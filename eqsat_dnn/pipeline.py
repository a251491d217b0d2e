"""The whole job, stage by stage: ONNX -> graph -> e-graph -> saturated e-graph
-> extracted graph -> lowered graph -> ONNX, with the outputs checked against the original.

:func:`optimize` runs it all; each stage is also a plain function
(:func:`~eqsat_dnn.io.onnx_in.load_model`, :class:`~eqsat_dnn.eqsat.egraph.TensorEGraph`,
:func:`~eqsat_dnn.eqsat.saturate.saturate`, :func:`extract`,
:func:`~eqsat_dnn.lower.avoid_slow_fusions`, :func:`~eqsat_dnn.io.onnx_out.to_onnx`,
:func:`~eqsat_dnn.runtime.check.compare_models`)
so a notebook can stop between them. The e-graph, saturation and extraction of one graph are
:func:`~eqsat_dnn.search.search`: run on the whole graph, or, for a model of repeated layers, on
one representative per class of identical layers and on the glue between them, whose choices
:mod:`eqsat_dnn.blocks` stitches into the whole program (:func:`~eqsat_dnn.ir.blocks.find_blocks`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from eqsat_dnn.blocks import (BlockMode, BlockPath, BlockReport, NotConvexError, search_blocks, stitch,
                              whole_graph_fits)
from eqsat_dnn.runtime.check import CheckReport, compare_models
from eqsat_dnn.cost import CostModel, RooflineCostModel, fusion_penalties, node_costs
from eqsat_dnn.errors import CheckError, InputError, first_line
from eqsat_dnn.extract import DEFAULT_EXTRACTOR
from eqsat_dnn.extract.base import Extraction, Extractor
from eqsat_dnn.ir.blocks import find_blocks
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.ir.language import RENAMED, Target
from eqsat_dnn.lower import avoid_slow_fusions, to_standard
from eqsat_dnn.repair import Repair, repair
from eqsat_dnn.io.onnx_in import load_model, read_model
from eqsat_dnn.io.onnx_out import OpsetError, check_model, to_onnx
from eqsat_dnn.io.probes import ProbeError, Probes, find_probes, restore
from eqsat_dnn.io.protos import light_copy
from eqsat_dnn.eqsat.rules import Arithmetic, Rule, default_rules, select_rules
from eqsat_dnn.eqsat.saturate import Iteration, Limits, SaturationReport, SaturationStop
from eqsat_dnn.search import MIN_GAIN, Search, extract, get_extractor, search, within_memory


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
    blocks: list[BlockReport] = field(default_factory=list)
    """The classes of repeated layers, each searched once (:mod:`eqsat_dnn.blocks`); ``saturation``
    and ``extraction`` are then the glue's, and ``egraph_nodes`` the sum over all the e-graphs."""
    blocks_path: BlockPath = BlockPath.NO_REPEATS
    """Whether the repeated layers were searched class by class, or why the whole graph was."""
    blocks_fallback: str = ""
    """The check's failure that dropped the program chosen block by block."""
    probes: Probes | None = None
    """The size each symbolic input dim was searched at (:mod:`eqsat_dnn.io.probes`), where they were."""
    probes_fallback: str = ""
    """Why the search at probe sizes was dropped for one over the symbolic dims as they are."""

    @property
    def extraction_status(self) -> str:
        """The extraction's status as shown to the user: ``optimal``, ``feasible``, ``greedy``,
        followed by `` (kept input program)`` when the input program was kept (searched block by
        block, the extraction is the glue's: `` (kept the glue's input program)``)."""
        if self.extraction is None:
            return ""
        if not self.kept_input:
            return str(self.extraction.status)
        whose = "the glue's " if self.blocks_path is BlockPath.BLOCKS else ""
        return f"{self.extraction.status} (kept {whose}input program)"

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
        if self.probes_fallback:
            found.append(f"the symbolic dims could not be searched at probe sizes ({self.probes_fallback}); "
                         "they were searched as they are, where fewer rules apply (pin them with "
                         "--overwrite-input-shape for a static model)")
        if self.blocks_fallback:
            found.append(f"the program chosen block by block failed the check ({self.blocks_fallback}); "
                         "the whole graph was searched instead")
        return found

    def describe_blocks(self) -> str:
        """``32 x layers (60 nodes)``, one entry per class of repeated layers; empty for none."""
        return ", ".join(b.describe() for b in self.blocks)

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
            "blocks": [b.to_dict() for b in self.blocks],
            "blocks_path": self.blocks_path,
            "blocks_fallback": self.blocks_fallback or None,
            "probes": None if self.probes is None else self.probes.sizes,
            "probes_fallback": self.probes_fallback or None,
            "seconds": self.seconds,
        }


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
    blocks: BlockMode | str = BlockMode.AUTO,
    probe: bool = True,
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

    ``blocks`` (:class:`~eqsat_dnn.blocks.BlockMode`): a model of repeated layers is searched one
    representative layer per class and the glue between them, each within ``limits``
    (:mod:`eqsat_dnn.blocks`), unless (``auto``) the whole graph's search would not be diluted;
    where the stitched program fails the check, the whole graph is searched instead.

    ``probe``: a model whose inputs have symbolic dims (and no ``input_shapes``) is searched with
    each dim pinned at a probe size and given its symbolic dims back (:mod:`eqsat_dnn.io.probes`),
    checked with the dims at small sizes of their own; where that fails, it is searched with its
    symbolic dims as they are (``report.probes_fallback`` says why).
    """
    options = dict(rules=rules, limits=limits, extractor=extractor, extract_time_limit=extract_time_limit,
                   cost_model=cost_model, check=check, on_iteration=on_iteration, exact=exact, target=target,
                   blocks=blocks)
    probes = None
    if probe and not input_shapes:  # a model given as a proto is read as it is: no copy of its weights
        probes = find_probes(model if isinstance(model, onnx.ModelProto) else read_model(model)[0])
    fallback = ""
    if probes is not None:
        try:
            return _optimize(model, input_shapes=None, probes=probes, **options)
        except (CheckError, InputError) as exc:  # the symbolic search below stands alone
            fallback = first_line(exc)
    optimized, report = _optimize(model, input_shapes=input_shapes, probes=None, **options)
    report.probes_fallback = fallback
    return optimized, report


def _optimize(model: str | Path | onnx.ModelProto, *, rules, limits: Limits, extractor, extract_time_limit: float,
              cost_model: CostModel | None, check: int, input_shapes: dict[str, list[int]] | None,
              on_iteration, exact: bool, target: Target, blocks: BlockMode | str,
              probes: Probes | None) -> tuple[onnx.ModelProto, OptimizeReport]:
    """:func:`optimize`, with the symbolic dims at ``probes`` where given."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    if probes is not None:
        input_shapes = probes.input_shapes
    graph = load_model(model, input_shapes, lazy=True, probes=probes)  # weights stay in their files
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
    within_memory(limits, "loading")

    report = OptimizeReport(ops_before=graph.op_counts(), cost_model=cost_model.name, rules=len(rules),
                            used_rules=list(rules), probes=probes)
    # the e-graph prices nodes one by one; the runtime's slow fusions are the lowering's to remove
    report.cost_before = sum(node_costs(graph, cost_model).values()) + sum(
        fusion_penalties(graph, cost_model).values())  # = graph_cost
    chosen = get_extractor(extractor, extract_time_limit) if isinstance(extractor, str) else extractor

    def run_search(part: Graph) -> Search:
        return search(part, rules, limits, cost_model, chosen, target, on_iteration)

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
            written = to_onnx(lowered, computed=None if probes is None else probes.in_shape)
            if probes is not None:
                written = restore(written, probes)
        except OpsetError as exc:  # a chosen op's opset cannot be reached: the repair leaves it out
            raise CheckError(str(exc)) from None
        except ProbeError as exc:  # as for a program that cannot be written
            raise CheckError(f"the symbolic dims cannot be given back: {exc}") from None
        _check_optimized(written, model)
        if timed:
            seconds["lower"], seconds["export"] = lowered_at - t, time.perf_counter() - lowered_at
        return written, sites

    original = str(model) if isinstance(model, (str, Path)) else model

    def compare(candidate: onnx.ModelProto) -> CheckReport:
        return compare_models(original, candidate, runs=check, exact=exact,
                              sizes=None if probes is None else probes.check_sizes)

    mode = BlockMode(blocks)
    t = time.perf_counter()
    classes = find_blocks(graph) if mode != BlockMode.NEVER else []
    seconds["blocks"] = time.perf_counter() - t
    report.blocks_path = BlockPath.OFF if mode == BlockMode.NEVER else BlockPath.NO_REPEATS
    optimized = None
    if classes:
        optimized = _by_blocks(graph, classes, report, run_search, realize, compare, check, seconds,
                               decide=mode == BlockMode.AUTO, limits=limits)
    if optimized is None:
        optimized = _whole(graph, report, run_search, realize, compare, check, seconds)
    report.ops_after = _op_counts(optimized)
    seconds["total"] = sum(seconds.values())
    report.seconds = seconds
    return optimized, report


def _by_blocks(graph: Graph, classes, report: OptimizeReport, run_search: Callable[[Graph], Search],
               realize: Callable[..., tuple[onnx.ModelProto, int]],
               compare: Callable[[onnx.ModelProto], CheckReport], check: int,
               seconds: dict[str, float], decide: bool, limits: Limits) -> onnx.ModelProto | None:
    """The block path (:mod:`eqsat_dnn.blocks`); ``None`` (and the reason in the report) where
    the whole graph is to be searched instead: it would not be diluted (``decide``), the copies
    cannot be cut out, or the stitched program fails the check."""
    report.blocks = search_blocks(graph, classes, run_search)
    if decide and whole_graph_fits(report.blocks, limits):
        report.blocks_path = BlockPath.FITS
        for key in ("build", "saturate", "extract"):  # the representatives' searches, spent for the decision
            seconds["blocks"] += sum(b.search.seconds.get(key, 0.0) for b in report.blocks)
        return None
    report.blocks_path = BlockPath.BLOCKS
    try:
        result = stitch(graph, classes, report.blocks, run_search)
    except NotConvexError:
        report.blocks_path = BlockPath.NOT_CONVEX
        return None
    for key in ("build", "saturate", "extract", "stitch"):
        seconds[key] = seconds.get(key, 0.0) + result.seconds[key]
    glue = result.glue
    if glue is not None:
        report.saturation, report.extraction = glue.saturation, glue.extraction
        report.kept_input = glue.kept_input
    searches = [r.search for r in result.blocks] + ([glue] if glue is not None else [])
    report.egraph_nodes = sum(s.snapshot.egraph.num_nodes for s in searches)
    report.egraph_classes = sum(s.snapshot.egraph.num_classes for s in searches)
    try:
        optimized, report.lowered = realize(result.graph, timed=True)
        t = time.perf_counter()
        report.check = compare(optimized) if check > 0 else None
        if check > 0:
            seconds["check"] = time.perf_counter() - t
    except CheckError as exc:  # onnx's checker rejects it: a wrong rule made it
        report.blocks_path, report.blocks_fallback = BlockPath.FAILED_CHECK, str(exc)
        return None
    if report.check is not None and not report.check.ok:
        report.blocks_path, report.blocks_fallback = BlockPath.FAILED_CHECK, report.check.failures[0]
        return None
    report.cost_after = result.cost
    return optimized


def _whole(graph: Graph, report: OptimizeReport, run_search: Callable[[Graph], Search],
           realize: Callable[..., tuple[onnx.ModelProto, int]],
           compare: Callable[[onnx.ModelProto], CheckReport], check: int,
           seconds: dict[str, float]) -> onnx.ModelProto:
    """The whole graph in one e-graph, checked, and repaired where the check fails."""
    found = run_search(graph)
    for key, value in found.seconds.items():
        seconds[key] = seconds.get(key, 0.0) + value
    report.saturation, report.extraction = found.saturation, found.extraction
    report.egraph_nodes, report.egraph_classes = found.snapshot.egraph.num_nodes, found.snapshot.egraph.num_classes
    keep_input = report.kept_input = found.kept_input
    try:
        optimized, report.lowered = realize(found.chosen(), timed=True)
        rejected = ""
    except CheckError as exc:  # onnx's checker rejects the chosen program: a wrong rule made it
        if keep_input:
            raise
        optimized, rejected = None, str(exc)
    report.cost_after = found.cost

    t = time.perf_counter()
    if optimized is not None and check > 0:
        report.check = compare(optimized)
    if rejected or (report.check is not None and not report.check.ok and not keep_input):
        repaired = _repair(report, found, realize, compare)
        optimized, report.lowered = realize(found.program(repaired))
        report.cost_after = found.input_cost if repaired is None else repaired.cost
        report.check = compare(optimized) if check > 0 else None
    if check > 0:
        seconds["check"] = seconds.get("check", 0.0) + time.perf_counter() - t
        if not report.check.ok:
            raise CheckError("optimized model disagrees with the original: " + report.check.failures[0])
    return optimized


def _repair(report: OptimizeReport, found: Search, realize: Callable[[Graph], tuple[onnx.ModelProto, int]],
            compare: Callable[[onnx.ModelProto], CheckReport]) -> Extraction | None:
    """The chosen program failed the check: exclude the e-nodes to blame and extract again
    (:mod:`eqsat_dnn.repair`); ``None`` when the input program is to be kept."""
    failing = report.extraction
    snapshot, initial = found.snapshot, found.initial

    def passes(choices: dict[str, str]) -> bool:
        try:
            written, _ = realize(found.program(dataclasses.replace(failing, choices=choices)))
        except CheckError:  # onnx's checker rejects it
            return False
        return compare(written).ok

    fired = report.saturation.matches_per_rule() if report.saturation else {}

    def rules_building(ops: list[str]) -> list[str]:
        return sorted(r.name for r in report.used_rules if fired.get(r.name) and r.builds() & set(ops))

    repaired, report.repair = repair(
        snapshot.egraph, failing, initial, passes,
        extract_again=lambda egraph: extract(egraph, found.extractor, initial=initial, target=found.goal),
        better=found.pays, op_of=lambda node_id: snapshot.info[node_id].op, rules_building=rules_building)
    if repaired is None:
        report.kept_input = True
        return None
    report.extraction = repaired
    return repaired


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
    """Nodes per op type; an op of another operator set whose type a standard op shares keeps its
    domain (``com.microsoft.Attention`` beside ONNX's ``Attention``)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = f"{node.domain}.{node.op_type}" if (node.op_type, node.domain) in RENAMED else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return counts
