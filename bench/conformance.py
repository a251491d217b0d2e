"""Benchmark: onnx's backend node-test suite through the optimizer (conformance).

Every case of ``onnx.backend.test.loader.load_model_tests(kind="node")`` (about 1,880
one-node models with their inputs and expected outputs) is run in onnxruntime before and
after optimizing with the pipeline's defaults (all rules, default limits, ILP extraction);
the pipeline's own random-input check is exercised on the side. The bar: every case that
passes unoptimized passes optimized, and no case crashes the optimizer.

    python bench/conformance.py [--jobs 2] [--match SUBSTRING] [--out bench/results/conformance.json]

Prints the counts (total, passes unoptimized, passes optimized, new failures, crashes,
clean refusals, cases skipped because onnxruntime fails the original, with reasons) and
writes every case's result as JSON. Exits 1 if there is any new failure or crash.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as futures
import json
import multiprocessing
import re
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from eqsat_dnn.runtime.conformance import CaseResult, node_cases, run_case, summarize

MAX_JOBS = 2
"""The machine has two cores; more workers only thrash."""


def _judge(case) -> dict:
    return run_case(case).to_dict()


def _died(case, why: str) -> dict:
    """A case whose worker process died (onnxruntime or egglog aborted): a crash of ours
    unless onnxruntime alone kills it, which the worker cannot tell us."""
    result = CaseResult(name=case.name, ops=sorted({n.op_type for n in case.model.graph.node}), original="fail",
                        optimizer="crash", original_error="not known", detail=f"worker process died: {why}")
    return result.to_dict()


def _run_all(cases: list, jobs: int, progress: Progress) -> list[dict]:
    """Judge every case in a pool of ``jobs`` processes; a case that kills its worker is
    run again alone to tell it from the cases that merely shared the broken pool."""
    task = progress.add_task("node tests", total=len(cases))
    results: dict[str, dict] = {}
    pending = list(cases)
    context = multiprocessing.get_context("spawn")  # egglog and onnxruntime own threads: no fork
    while pending:
        suspects = []
        with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            submitted = {pool.submit(_judge, case): case for case in pending}
            for done in futures.as_completed(submitted):
                case = submitted[done]
                try:
                    results[case.name] = done.result()
                    progress.advance(task)
                except futures.process.BrokenProcessPool:
                    suspects.append(case)
        pending = []
        if len(suspects) == 1 or (suspects and jobs == 1):
            for case in suspects:
                results[case.name] = _died(case, "the process pool broke")
                progress.advance(task)
        elif suspects:
            for case in suspects:  # one at a time, to find the one that kills its process
                with futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    try:
                        results[case.name] = pool.submit(_judge, case).result()
                    except futures.process.BrokenProcessPool:
                        results[case.name] = _died(case, "the process died running this case alone")
                progress.advance(task)
    return [results[c.name] for c in cases]


def _reason(text: str) -> str:
    """A short class of why onnxruntime failed the original, for counting."""
    if "NOT_IMPLEMENTED" in text or "not supported" in text or "No corresponding Numpy type" in text:
        return "onnxruntime lacks the kernel or type"
    if text.startswith("AssertionError") or "Not equal" in text:
        return "onnxruntime's output differs from the expected one"
    if "INVALID_GRAPH" in text or "INVALID_PROTOBUF" in text or "Load model" in text:
        return "onnxruntime rejects the model"
    return "onnxruntime fails running it"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=MAX_JOBS, help=f"worker processes (at most {MAX_JOBS})")
    parser.add_argument("--match", default="", help="only cases whose name contains this (regular expression)")
    parser.add_argument("--out", default="bench/results/conformance.json")
    args = parser.parse_args()
    jobs = max(1, min(args.jobs, MAX_JOBS))
    console = Console(stderr=True)

    start = time.perf_counter()
    cases = [c for c in node_cases() if re.search(args.match, c.name)]
    with Progress(console=console, transient=True) as progress:
        rows = _run_all(cases, jobs, progress)
    seconds = time.perf_counter() - start

    results = [CaseResult(**{k: v for k, v in r.items() if k != "verdict"}) for r in rows]
    summary = summarize(results)
    skipped = collections.Counter(_reason(r.original_error) for r in results if r.verdict == "fails unoptimized")
    self_checks = collections.Counter(r.self_check for r in results)

    table = Table(title=f"onnx node tests through eqsat-dnn ({len(cases)} cases, {seconds:.0f} s, {jobs} jobs)")
    table.add_column("count")
    table.add_column("cases", justify="right")
    table.add_row("total", str(summary.total))
    table.add_row("pass unoptimized", str(summary.passes_unoptimized))
    table.add_row("pass optimized", str(summary.passes_optimized))
    table.add_row("new failures", str(summary.counts["new failure"]), style="red" if summary.counts["new failure"] else None)
    table.add_row("optimizer crashes", str(summary.counts["crash"]), style="red" if summary.counts["crash"] else None)
    table.add_row("clean refusals (of cases that pass unoptimized)", str(summary.counts["refused"]))
    table.add_row("clean refusals (all cases)", str(sum(r.optimizer == "refused" for r in results)))
    table.add_row("skipped: onnxruntime fails the original", str(summary.counts["fails unoptimized"]))
    for reason, count in skipped.most_common():
        table.add_row(f"  {reason}", str(count))
    table.add_row("  of which the optimized model still agrees with the original", str(summary.failing_unoptimized_agreeing))
    table.add_row("graphs the optimizer changed", str(summary.changed))
    for outcome in ("ok", "refused", "mismatch", "crash"):
        table.add_row(f"pipeline's own check: {outcome}", str(self_checks.get(outcome, 0)))
    Console().print(table)
    for verdict in ("new failure", "crash", "refused"):
        for r in results:
            if r.verdict == verdict:
                print(f"{verdict}: {r.name}: {r.detail}")
    for r in results:
        if r.self_check == "mismatch":
            print(f"self-check mismatch: {r.name}: {r.detail}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "seconds": seconds, "jobs": jobs,
        "summary": {"total": summary.total, "passes_unoptimized": summary.passes_unoptimized,
                    "passes_optimized": summary.passes_optimized, "changed": summary.changed,
                    "failing_unoptimized_agreeing": summary.failing_unoptimized_agreeing, **summary.counts,
                    "skipped_reasons": dict(skipped), "self_check": dict(self_checks)},
        "cases": rows,
    }, indent=1))
    console.print(f"wrote {out}")
    return 1 if summary.counts["new failure"] or summary.counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
