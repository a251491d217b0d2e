"""``eqsat-dnn bench``: optimized models timed against the originals and the peers."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from eqsat_dnn.cli import COUNT, NON_NEGATIVE, SECONDS
from eqsat_dnn.extract import DEFAULT_EXTRACTOR, EXTRACTORS

# --runs, --threads and --peers are checked by bench.check_settings, before any work


def add_parser(commands) -> None:
    bench = commands.add_parser("bench", help="measure optimized models against the originals and the peers")
    bench.add_argument("models", nargs="*", metavar="MODEL",
                       help="zoo names (--suite exports: export names) or .onnx files (default: the whole suite)")
    bench.add_argument("--suite", choices=["zoo", "exports"], default="zoo",
                       help="zoo (default): Tensat's models and blocks; exports: torch dynamo exports of "
                            "transformers models (bert gpt2 vit llama qwen2; also, when named: mistral qwen3 phi3 "
                            "gemma gemma2 cohere neox gptj bloom opt), with the GEMM-share limit")
    bench.add_argument("--cache", metavar="DIR", help="where --suite exports keeps its exports (default OUT/cache)")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                       help="--suite exports: size override for every named export having KEY, e.g. --set layers=4")
    bench.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa",
                       help="--suite exports: transformers' attention the exports are built with (default sdpa, "
                            "transformers' own; eager: the explicit MatMul/Softmax attention)")
    bench.add_argument("--out", default=None, metavar="DIR",
                       help="where bench.md, .csv, .json and .png go (default bench/results; "
                            "--suite exports: bench/results/exports)")
    bench.add_argument("--runs", type=int, default=20, metavar="N",
                       help="least timed runs per model version, median reported (default 20)")
    bench.add_argument("--min-seconds", type=NON_NEGATIVE, default=5.0, metavar="S",
                       help="keep timing a model (up to 10x --runs) until S seconds passed (default 5)")
    bench.add_argument("--peers", nargs="*", default=None, metavar="PEER",
                       help="onnxsim onnxoptimizer onnxscript ort-offline, and with --suite exports "
                            "ort-transformers onnxslim (default: all; none: no peer)")
    bench.add_argument("--cost-model", default="roofline:cpu-nominal", metavar="NAME",
                       help="cost model to optimize under (default roofline:cpu-nominal)")
    bench.add_argument("--gpu-profile", default=None, metavar="NAME",
                       help="roofline profile for the predicted GPU speedup: t4 (the zoo's default), v100, a100, "
                            "h100, none (the exports' default)")
    bench.add_argument("--threads", type=int, default=1, metavar="N",
                       help="onnxruntime intra-op threads when timing (default 1; 0: one per core)")
    bench.add_argument("--iter-limit", type=COUNT, default=8, help="saturation iterations (default 8)")
    bench.add_argument("--time-limit", type=SECONDS, default=10.0, help="saturation seconds (default 10)")
    bench.add_argument("--extractor", choices=list(EXTRACTORS), default=DEFAULT_EXTRACTOR,
                       help=f"extractor (default {DEFAULT_EXTRACTOR})")
    bench.add_argument("--extract-time-limit", type=SECONDS, default=10.0, help="ILP seconds (default 10)")


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from rich.console import Console
    from rich.markup import escape

    from eqsat_dnn import bench
    from eqsat_dnn import bench_exports as suite  # --suite exports: same flow, its own models and table
    from eqsat_dnn.eqsat.saturate import Limits
    from eqsat_dnn.errors import InputError
    from eqsat_dnn.models.zoo import SUITE

    exports = args.suite == "exports"
    if args.out is None:  # the two suites' results side by side, neither overwriting the other's
        args.out = str(bench.DEFAULT_OUT / "exports") if exports else str(bench.DEFAULT_OUT)
    if args.overrides and not exports:
        raise InputError("--set is for --suite exports (zoo sizes: eqsat-dnn zoo NAME --set ...)")
    peers = (suite.PEERS if exports else bench.PEERS) if args.peers is None else tuple(
        p for p in args.peers if p != "none")
    gpu = args.gpu_profile or ("none" if exports else "t4")
    gpu = None if gpu.strip().lower() == "none" else gpu.strip().lower()
    specs = args.models or list(suite.SUITE if exports else SUITE)
    settings = bench.BenchSettings(
        runs=args.runs, min_seconds=args.min_seconds, threads=args.threads, peers=peers,
        cost_model=args.cost_model, gpu_profile=gpu,
        limits=Limits(iterations=args.iter_limit, seconds=args.time_limit),
        extractor=args.extractor, extract_time_limit=args.extract_time_limit)
    options = suite.ExportOptions(cache_dir=Path(args.cache) if args.cache else Path(args.out) / "cache",
                                  sizes=suite.overrides(specs, args.overrides or []) if exports else {},
                                  attention=args.attention)
    bench.check_settings(settings)  # bad options and models fail now, not after the first model
    bench.require_matplotlib()  # and a missing plotting library, not after the whole run
    for spec in specs:
        suite.resolve(spec, options) if exports else bench.resolve(spec)
    bench.ensure_out_dir(args.out)
    err = Console(stderr=True)
    status = err.status("bench", spinner="dots") if err.is_terminal else nullcontext()
    load_start, started = os.getloadavg()[0], time.perf_counter()

    def write(results: list, partial: bool) -> list:
        if exports:
            meta = suite.metadata(settings, options, load_start, os.getloadavg()[0], time.perf_counter() - started)
        else:
            meta = bench.metadata(settings, load_start, os.getloadavg()[0], time.perf_counter() - started)
        if partial:
            meta["partial"] = f"{len(results)} of {len(specs)} models"
        return (suite.write_results if exports else bench.write_results)(results, args.out, meta)

    done: list = []

    def on_result(result) -> None:  # a run stopped half way (killed, out of memory) keeps what it measured
        done.append(result)
        if len(done) < len(specs):
            write(done, partial=True)

    with status as live:
        def progress(message: str) -> None:
            if live is not None:
                live.update(message)
            else:
                print(message, file=sys.stderr, flush=True)

        results = suite.run(specs, settings, options, progress, on_result) if exports else bench.run_bench(
            specs, settings, progress, on_result)
    written = write(results, partial=False)
    out = Console()
    if not out.is_terminal:  # a log file gets the whole table, not 80 columns of it
        out = Console(width=220)
    out.print(suite.rich_table(results) if exports else bench.rich_table(results))
    summary = bench.summary(results)
    for name, value in summary["geomean_speedup"].items():
        print(f"geometric mean speedup, {name}: {value:.3f}x")
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    for failure in summary["failures"] + summary["gpu_failures"]:
        err.print(f"[bold red]FAILED[/] {escape(failure)}", highlight=False)
    if any(r.check_failed or r.gpu_check_failed for r in results):
        return 4
    return 1 if summary["failures"] or summary["gpu_failures"] else 0
