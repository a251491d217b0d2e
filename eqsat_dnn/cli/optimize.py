"""``eqsat-dnn optimize IN.onnx OUT.onnx``: the whole pipeline, checked, written atomically."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext

from eqsat_dnn.cli import COUNT, POSITIVE, SECONDS
from eqsat_dnn.extract import DEFAULT_EXTRACTOR, EXTRACTORS
from eqsat_dnn.ir.language import Target


def add_parser(commands) -> None:
    opt = commands.add_parser("optimize", help="optimize an ONNX model")
    opt.add_argument("input", help="ONNX model to optimize (never modified)")
    opt.add_argument("output", help="where to write the optimized model")
    opt.add_argument("--rules", action="append", metavar="SEL",
                     help="rule file, directory, family or rule name (repeatable; default: the whole library, "
                          "plus rules/multi/multi.egg's merges for a GPU --cost-model)")
    opt.add_argument("--iter-limit", type=COUNT, default=8, help="saturation iterations (default 8)")
    opt.add_argument("--node-limit", type=COUNT, default=50_000, help="e-node limit (default 50000)")
    opt.add_argument("--time-limit", type=SECONDS, default=10.0, help="saturation seconds (default 10)")
    opt.add_argument("--memory-limit", type=POSITIVE, default=8000.0, metavar="MB",
                     help="stop saturating when this process holds this many MiB (default 8000)")
    opt.add_argument("--extractor", choices=list(EXTRACTORS), default=DEFAULT_EXTRACTOR,
                     help=f"extractor (default {DEFAULT_EXTRACTOR})")
    opt.add_argument("--extract-time-limit", type=SECONDS, default=10.0, help="ILP seconds (default 10)")
    opt.add_argument("--cost-model", default="roofline:cpu-nominal", metavar="NAME",
                     help="measured, roofline, roofline:cpu-nominal (default), roofline:t4|v100|a100|h100")
    opt.add_argument("--check", type=COUNT, default=1, metavar="N",
                     help="compare outputs on N random input sets (default 1)")
    opt.add_argument("--no-check", action="store_const", const=0, dest="check", help="skip the output check")
    opt.add_argument("--exact", action="store_true",
                     help="only rewrites that hold in IEEE float, infinities and NaN included (default: also "
                          "those that hold in real arithmetic, e.g. reassociation, where the check agrees)")
    opt.add_argument("--target", choices=[t.value for t in Target], default=Target.ONNXRUNTIME.value,
                     help="where the output runs: onnxruntime (default; its fused kernels, such as "
                          "com.microsoft.MultiHeadAttention, may be chosen) or onnx (standard ONNX only)")
    opt.add_argument("--blocks", choices=["auto", "always", "never"], default="auto",
                     help="search one representative per class of identical layers, each within the limits, "
                          "and apply its choice to every copy: always, never, or auto (default: unless the "
                          "whole graph's search would not be diluted by depth)")
    opt.add_argument("--overwrite-input-shape", action="append", metavar="NAME:D1,D2,...",
                     help="fix an input's shape (repeatable)")
    opt.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    opt.add_argument("--quiet", action="store_true", help="print nothing but errors")
    opt.add_argument("--measure", action="store_true",
                     help="also time the input and the output in onnxruntime (interleaved, with a placebo; "
                          "symbolic dims at their probe sizes, a batch at 1)")
    opt.add_argument("--measure-threads", type=COUNT, default=1, metavar="N",
                     help="onnxruntime threads for --measure (default 1; 0: one per core)")
    opt.add_argument("--measure-runs", type=COUNT, default=20, metavar="N",
                     help="least timed rounds for --measure (default 20)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from eqsat_dnn.io.onnx_in import parse_input_shapes
    from eqsat_dnn.io.onnx_out import ensure_writable, save_model
    from eqsat_dnn.pipeline import optimize
    from eqsat_dnn.report import optimize_table
    from eqsat_dnn.eqsat.rules import select_rules
    from eqsat_dnn.eqsat.saturate import Limits

    ensure_writable(args.output, args.input)
    shapes = parse_input_shapes(args.overwrite_input_shape)
    from eqsat_dnn.cost import get_cost_model

    rules = select_rules(args.rules) if args.rules else None  # None: the cost model's device decides
    cost_model = get_cost_model(args.cost_model)
    limits = Limits(iterations=args.iter_limit, nodes=args.node_limit, seconds=args.time_limit,
                    memory_mb=args.memory_limit)
    console = Console(stderr=True)
    show = not (args.quiet or args.json)
    status = console.status("saturating", spinner="dots") if show and console.is_terminal else nullcontext()
    with status as live:
        def progress(it) -> None:
            if live is not None:
                live.update(f"saturating: iteration {it.index}, {it.nodes} e-nodes, "
                            f"{sum(it.matches.values())} matches")

        model, report = optimize(
            args.input, rules=rules, limits=limits, extractor=args.extractor,
            extract_time_limit=args.extract_time_limit, check=args.check, input_shapes=shapes,
            cost_model=cost_model, exact=args.exact, target=Target(args.target), blocks=args.blocks,
            on_iteration=progress,
        )
    save_model(model, args.output, source=args.input)
    measured = None
    if args.measure:  # the logic lives outside the CLI: eqsat_dnn/speedup.py
        from eqsat_dnn.speedup import measure_or_error

        measured = measure_or_error(args.input, model, max(1, args.measure_runs), args.measure_threads,
                                    sizes=None if report.probes is None else report.probes.measure_sizes)
    if not (args.quiet or args.json):  # --json carries them in its "warnings"
        for warning in report.warnings:
            print(f"eqsat-dnn: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**report.to_dict(), **({"measured": measured} if args.measure else {})}, sort_keys=True))
    elif not args.quiet:
        Console().print(optimize_table(report, args.input, args.output, measured))
    return 0
