"""Human-readable reports: the before/after table of ``eqsat-dnn optimize``."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from eqsat_dnn.blocks import BlockPath
from eqsat_dnn.pipeline import OptimizeReport


def optimize_table(report: OptimizeReport, source: str = "", target: str = "", measured: dict | None = None) -> Group:
    """Ops by type before and after, totals, estimated cost and time per stage; with ``measured``
    (:func:`eqsat_dnn.speedup.measure_speedup`'s dict) the times measured in onnxruntime too."""
    ops = Table(title=f"{source} -> {target}" if source else None)
    ops.add_column("op")
    ops.add_column("before", justify="right")
    ops.add_column("after", justify="right")
    names = sorted(set(report.ops_before) | set(report.ops_after),
                   key=lambda op: (-report.ops_before.get(op, 0), op))
    for op in names:
        before, after = report.ops_before.get(op, 0), report.ops_after.get(op, 0)
        style = "green" if after < before else ("red" if after > before else None)
        ops.add_row(op, str(before), str(after), style=style)
    ops.add_row("total", str(report.nodes_before), str(report.nodes_after), style="bold", end_section=True)
    speedup = report.cost_before / report.cost_after if report.cost_after > 0 else float("inf")
    ops.add_row(f"est. cost ({report.cost_model})", f"{report.cost_before * 1e3:.3f} ms",
                f"{report.cost_after * 1e3:.3f} ms ({speedup:.2f}x)")
    if measured and "error" in measured:
        ops.add_row("measured (onnxruntime)", "-", measured["error"])
    elif measured:
        at = "".join(f", {dim}={size}" for dim, size in (measured.get("sizes") or {}).items())
        ops.add_row(f"measured (onnxruntime, {measured['threads']} thread(s), {measured['runs']} runs{at})",
                    f"{measured['original_ms']:.3f} ms",
                    f"{measured['optimized_ms']:.3f} ms ({measured['speedup']:.3f}x; placebo {measured['placebo']:.3f}x)")

    stages = Table(title="stages")
    for column in ("stage", "seconds", "details"):
        stages.add_column(column)
    sat, ext, chk = report.saturation, report.extraction, report.check
    details = {
        "load": "" if report.probes is None else (
            f"symbolic dims searched at {report.probes.describe()}, given back to the output"),
        "blocks": "; ".join(
            f"{b.describe()}: {b.search.snapshot.egraph.num_nodes} e-nodes, stop: {b.search.saturation.stop_reason}, "
            f"per copy {_signed(b.rewrites()) or 'unchanged'}" for b in report.blocks)
        + ("" if report.blocks_path == BlockPath.BLOCKS else ("; " if report.blocks else "") + report.blocks_path),
        "stitch": f"every copy given its class's choice ({sum(b.copies for b in report.blocks)} copies)",
        "saturate": "" if sat is None else ("glue: " if report.blocks_path == BlockPath.BLOCKS else "") + (
            f"{len(sat.iterations)} iterations, {sat.nodes} e-nodes, stop: {sat.stop_reason}, "
            f"{report.rules} rules, {sum(sat.matches_per_rule().values())} matches"),
        "extract": "" if ext is None else (
            f"{ext.extractor}: {report.extraction_status}" + (f", stop: {ext.stop_reason}" if ext.stop_reason else "")
            + f", gap {ext.gap:.2%}, "
            f"{report.egraph_nodes} e-nodes / {report.egraph_classes} classes"),
        "lower": f"{report.lowered} site(s) written so that onnxruntime does not fuse them (slower fused here)"
        if report.lowered else "nothing to lower",
        "check": "" if chk is None else (
            f"{len(chk.sets)} input sets ({', '.join(sorted({k.value for k in chk.sets}))}), "
            f"max rel. error {chk.max_rel_error:.2e}"
            + (f"; repaired: {report.repair.warning().split('; ', 1)[1]}" if report.repair else "")),
    }
    for stage, seconds in report.seconds.items():
        stages.add_row(stage, f"{seconds:.2f}", details.get(stage, ""),
                       style="bold" if stage == "total" else None)
    return Group(ops, stages)


def _signed(delta: dict[str, int]) -> str:
    """``{'Add': -1, 'Gemm': 1}`` -> ``Add -1, Gemm +1``."""
    return ", ".join(f"{op} {n:+d}" for op, n in delta.items())
