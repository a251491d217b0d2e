"""The ``eqsat-dnn`` command.

Every user error ends in one line on stderr and a documented exit code:
1 other failure, 2 bad input, 3 output not writable, 4 check failed (the
optimized model disagrees with the original), 5 bad rule, 130 interrupted.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from eqsat_dnn import __version__
from eqsat_dnn.errors import EqsatError
from eqsat_dnn.extract import DEFAULT_EXTRACTOR, EXTRACTORS


class _Parser(argparse.ArgumentParser):
    """argparse with the command's one-line errors (exit code 2, as for any bad input)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, minimum: float, strict: bool):
    """An argparse type: a number of ``kind`` above (``strict``) or at least ``minimum``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g}, not {text}")
        return value
    return parse


_POSITIVE = _number(float, 0, strict=True)
_COUNT = _number(int, 0, strict=False)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eqsat-dnn",
        description="Superoptimize ONNX models by equality saturation and ILP extraction.",
    )
    parser.add_argument("--version", action="version", version=f"eqsat-dnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    opt = commands.add_parser("optimize", help="optimize an ONNX model")
    opt.add_argument("input", help="ONNX model to optimize (never modified)")
    opt.add_argument("output", help="where to write the optimized model")
    opt.add_argument("--rules", action="append", metavar="SEL",
                     help="rule file, directory, family or rule name (repeatable; default: the whole library, "
                          "plus rules/multi/multi.egg's merges for a GPU --cost-model)")
    opt.add_argument("--iter-limit", type=_COUNT, default=8, help="saturation iterations (default 8)")
    opt.add_argument("--node-limit", type=_COUNT, default=50_000, help="e-node limit (default 50000)")
    opt.add_argument("--time-limit", type=_POSITIVE, default=10.0, help="saturation seconds (default 10)")
    opt.add_argument("--memory-limit", type=_POSITIVE, default=8000.0, metavar="MB",
                     help="stop saturating when this process holds this many MiB (default 8000)")
    opt.add_argument("--extractor", choices=list(EXTRACTORS), default=DEFAULT_EXTRACTOR,
                     help=f"extractor (default {DEFAULT_EXTRACTOR})")
    opt.add_argument("--extract-time-limit", type=_POSITIVE, default=10.0, help="ILP seconds (default 10)")
    opt.add_argument("--cost-model", default="roofline:cpu-nominal", metavar="NAME",
                     help="measured, roofline, roofline:cpu-nominal (default), roofline:t4|v100|a100|h100")
    opt.add_argument("--check", type=_COUNT, default=1, metavar="N",
                     help="compare outputs on N random input sets (default 1)")
    opt.add_argument("--no-check", action="store_const", const=0, dest="check", help="skip the output check")
    opt.add_argument("--overwrite-input-shape", action="append", metavar="NAME:D1,D2,...",
                     help="fix an input's shape (repeatable)")
    opt.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    opt.add_argument("--quiet", action="store_true", help="print nothing but errors")

    ext = commands.add_parser("extract", help="extract the cheapest program from an e-graph JSON file")
    ext.add_argument("egraph", help="egraph-serialize JSON (what egglog and extraction-gym write)")
    ext.add_argument("--extractor", choices=list(EXTRACTORS), default=DEFAULT_EXTRACTOR)
    ext.add_argument("--time-limit", type=_POSITIVE, default=30.0, help="ILP seconds (default 30)")
    ext.add_argument("--json", action="store_true", help="print the result as JSON with the choices")

    example = commands.add_parser("example", help="write the bundled example model (a transformer block)")
    example.add_argument("output", help="where to write it")

    part = commands.add_parser("partition", help="place every tensor on a device mesh (an ILP); --run checks it "
                                                 "on torch.distributed")
    part.add_argument("input", help="ONNX model (never modified)")
    part.add_argument("--mesh", metavar="N|AxB", help="mesh shape, 1-D or 2-D (default: the machine's)")
    part.add_argument("--machine", default="dgx-a100", metavar="NAME",
                      help="preset: dgx-a100 (default), dgx-h100, a100-cluster, cpu")
    part.add_argument("--mode", choices=["inference", "train"], default="inference")
    part.add_argument("--memory-gb", type=_POSITIVE, metavar="G", help="memory per device (default: the machine's)")
    part.add_argument("-o", "--output", required=True, metavar="PLAN.json", help="where to write the plan")
    part.add_argument("--annotate", metavar="OUT.onnx", help="also write the model with ONNX sharding specs")
    part.add_argument("--run", action="store_true",
                      help="run the plan on one local process per device and check outputs and collectives")
    part.add_argument("--time-limit", type=_POSITIVE, default=10.0, metavar="S", help="ILP seconds (default 10)")
    part.add_argument("--outputs", choices=["replicate", "any"], default="replicate",
                      help="graph outputs end replicated (default) or in any placement")
    part.add_argument("--overwrite-input-shape", action="append", metavar="NAME:D1,D2,...",
                      help="fix an input's shape (repeatable)")
    part.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    part.add_argument("--quiet", action="store_true", help="print nothing but errors")

    zoo = commands.add_parser("zoo", help="list the model zoo or write one of its models")
    zoo.add_argument("name", nargs="?", help="zoo model to write (see --list)")
    zoo.add_argument("-o", "--output", metavar="FILE.onnx", help="where to write it")
    zoo.add_argument("--list", action="store_true", help="list the models with their size overrides")
    zoo.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    zoo.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                     help="size override, e.g. --set layers=2 (repeatable; see --list)")

    bench = commands.add_parser("bench", help="measure optimized models against the originals and the peers")
    bench.add_argument("models", nargs="*", metavar="MODEL",
                       help="zoo names or .onnx files (default: the whole zoo suite)")
    bench.add_argument("--out", default="bench/results", metavar="DIR",
                       help="where bench.md, .csv, .json and .png go (default bench/results)")
    bench.add_argument("--runs", type=int, default=20, metavar="N",
                       help="least timed runs per model version, median reported (default 20)")
    bench.add_argument("--min-seconds", type=float, default=5.0, metavar="S",
                       help="keep timing a model (up to 10x --runs) until S seconds passed (default 5)")
    bench.add_argument("--peers", nargs="*", default=None, metavar="PEER",
                       help="onnxsim onnxoptimizer onnxscript ort-offline (default: all; none: no peer)")
    bench.add_argument("--cost-model", default="roofline:cpu-nominal", metavar="NAME",
                       help="cost model to optimize under (default roofline:cpu-nominal)")
    bench.add_argument("--gpu-profile", default="t4", metavar="NAME",
                       help="roofline profile for the predicted GPU speedup: t4 (default), v100, a100, h100, none")
    bench.add_argument("--threads", type=int, default=1, metavar="N",
                       help="onnxruntime intra-op threads when timing (default 1; 0: one per core)")
    bench.add_argument("--iter-limit", type=int, default=8, help="saturation iterations (default 8)")
    bench.add_argument("--time-limit", type=float, default=10.0, help="saturation seconds (default 10)")
    bench.add_argument("--extractor", choices=list(EXTRACTORS), default=DEFAULT_EXTRACTOR,
                       help=f"extractor (default {DEFAULT_EXTRACTOR})")
    bench.add_argument("--extract-time-limit", type=float, default=10.0, help="ILP seconds (default 10)")

    rules = commands.add_parser("rules", help="list or check the rule library")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    listing = rule_commands.add_parser("list", help="name, family, file and description of each rule")
    listing.add_argument("selectors", nargs="*", help="files, families or rule names (default: all)")
    listing.add_argument("--json", action="store_true")
    checking = rule_commands.add_parser("check", help="verify each rule numerically on random instances")
    checking.add_argument("paths", nargs="*", help="files, families or rule names (default: all)")
    checking.add_argument("--trials", type=int, default=None, metavar="N",
                          help="firing instances to check per rule (default 12)")
    checking.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    checking.add_argument("--jobs", type=int, default=1, metavar="N",
                          help="worker processes (default 1; 0: one per core, up to 4); the result does not depend on it")
    checking.add_argument("--allow-untested", action="store_true",
                          help="exit 0 even if some rule never fired (failures still exit 5)")
    checking.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "optimize":
            return _optimize(args)
        if args.command == "extract":
            return _extract(args)
        if args.command == "rules":
            return _rules_check(args) if args.rules_command == "check" else _rules(args)
        if args.command == "example":
            return _example(args)
        if args.command == "partition":
            return _partition(args)
        if args.command == "zoo":
            return _zoo(args)
        if args.command == "bench":
            return _bench(args)
        parser.error(f"unknown command {args.command}")
    except EqsatError as exc:
        if args.debug:
            raise
        print(f"eqsat-dnn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("eqsat-dnn: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal failure still gets one line unless --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"eqsat-dnn: internal error: {exc.__class__.__name__}: {first} (run with --debug for details)",
              file=sys.stderr)
        return 1
    return 0


def _optimize(args: argparse.Namespace) -> int:
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
            cost_model=cost_model,
            on_iteration=progress,
        )
    save_model(model, args.output, source=args.input)
    if not (args.quiet or args.json):  # --json carries them in its "warnings"
        for warning in report.warnings:
            print(f"eqsat-dnn: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    elif not args.quiet:
        Console().print(optimize_table(report, args.input, args.output))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from eqsat_dnn.extract.base import load_egraph_json
    from eqsat_dnn.pipeline import extract

    egraph = load_egraph_json(args.egraph)
    result = extract(egraph, args.extractor, time_limit=args.time_limit)
    if args.json:
        print(json.dumps({
            "extractor": result.extractor, "cost": result.cost, "status": result.status,
            "bound": result.bound, "gap": result.gap, "seconds": result.seconds,
            "stop_reason": result.stop_reason, "warning": result.warning,
            "choices": result.choices,
        }, sort_keys=True))
        return 0
    table = Table(title=f"extraction of {args.egraph}")
    for column in ("e-nodes", "e-classes", "extractor", "status", "cost", "bound", "gap", "seconds"):
        table.add_column(column)
    table.add_row(str(egraph.num_nodes), str(egraph.num_classes), result.extractor, result.status,
                  f"{result.cost:.6g}", f"{result.bound:.6g}", f"{result.gap:.2%}", f"{result.seconds:.2f}")
    Console().print(table)
    if result.warning:
        print(f"eqsat-dnn: warning: {result.warning}", file=sys.stderr)
    return 0


def _partition(args: argparse.Namespace) -> int:
    from rich.console import Console

    from eqsat_dnn.errors import CheckError, OutputError
    from eqsat_dnn.io.onnx_in import load_model, parse_input_shapes
    from eqsat_dnn.io.onnx_out import ensure_writable, save_model
    from eqsat_dnn.partition import annotate, partition, plan_table, run_plan

    ensure_writable(args.output, args.input)
    if args.annotate:
        ensure_writable(args.annotate, args.input)
        if Path(args.annotate).resolve() == Path(args.output).resolve():
            raise OutputError(f"{args.annotate}: --annotate would overwrite the plan -o writes; choose another file")
    shapes = parse_input_shapes(args.overwrite_input_shape)
    graph = load_model(args.input, input_shapes=shapes, load_weights=False)  # planning reads no weight
    show = not (args.quiet or args.json)
    console = Console(stderr=True)
    with console.status("solving the partitioning ILP", spinner="dots") if show and console.is_terminal \
            else nullcontext():
        plan = partition(graph, args.mesh, machine=args.machine, mode=args.mode, memory_gb=args.memory_gb,
                         time_limit=args.time_limit, outputs=args.outputs)
    if args.run or args.annotate:  # these need the weights themselves
        graph = load_model(args.input, input_shapes=shapes)
    report = None
    if args.run:  # before writing anything: a plan that does not run is not written
        with console.status(f"running on {plan.mesh.num_devices} processes", spinner="dots") \
                if show and console.is_terminal else nullcontext():
            report = run_plan(graph, plan)
        if not report.ok:
            raise CheckError(f"the plan failed its run on {report.processes} processes: {report.failures[0]}")
    model = annotate(graph, plan) if args.annotate else None
    plan.save(args.output)
    if model is not None:
        save_model(model, args.annotate, source=args.input)
    if args.json:
        data = {"plan": args.output, "predicted": plan.to_dict()["predicted"],
                "baselines": {k: v.to_dict() for k, v in plan.baselines.items()}, "solver": plan.solver,
                "collectives": dict(plan.collective_counts(None)), "replicate_only": plan.replicate_only}
        if report is not None:
            data["run"] = report.to_dict()
        print(json.dumps(data, sort_keys=True))
    elif not args.quiet:
        out = Console()
        out.print(plan_table(plan, f"{args.input}: {plan.mesh.describe()} ({plan.mode})"))
        if report is not None:
            out.print(f"run on {report.processes} processes ({report.backend}): outputs match "
                      f"(max rel. error {report.max_rel_error:.2e}); collectives issued = planned "
                      f"({sum(report.counts().values())})")
    return 0


def _example(args: argparse.Namespace) -> int:
    from eqsat_dnn.models.examples import attention_block
    from eqsat_dnn.io.onnx_out import ensure_writable, save_model

    ensure_writable(args.output)
    save_model(attention_block(), args.output)
    print(f"wrote {args.output}: one transformer block, input x[32, 64]", file=sys.stderr)
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from eqsat_dnn.models import zoo
    from eqsat_dnn.errors import InputError
    from eqsat_dnn.io.onnx_out import ensure_writable, save_model

    if args.list or not args.name:
        if args.output or args.name:
            raise InputError("zoo --list takes no model name or output")
        table = Table(title="model zoo")
        for column in ("name", "family", "description", "size overrides"):
            table.add_column(column, overflow="fold")
        for entry in zoo.list_models():
            table.add_row(entry.name, entry.family, entry.description,
                          ", ".join(f"{k}={v}" for k, v in entry.overrides.items()))
        Console().print(table)
        return 0
    if not args.output:
        raise InputError("zoo NAME needs -o FILE.onnx")
    entry = zoo.get(args.name)
    overrides = _parse_overrides(args.overrides or [], entry.overrides)
    ensure_writable(args.output)
    model = zoo.build(entry.name, seed=args.seed, **overrides)
    save_model(model, args.output)
    print(f"wrote {args.output}: {entry.name}, {len(model.graph.node)} nodes", file=sys.stderr)
    return 0


def _parse_overrides(items: list[str], defaults: dict) -> dict:
    """``KEY=VALUE`` strings, each value parsed as the type of the override's default."""
    from eqsat_dnn.errors import InputError

    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise InputError(f"bad size override {item!r} (KEY=VALUE with KEY one of {', '.join(defaults)})")
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                overrides[key] = text.strip().lower() in ("true", "1")
            else:
                overrides[key] = kind(text)
        except ValueError:
            raise InputError(f"bad size override {item!r}: {key} wants a value of type {kind.__name__}") from None
    return overrides


def _bench(args: argparse.Namespace) -> int:
    import os
    import time

    from rich.console import Console
    from rich.markup import escape

    from eqsat_dnn import bench
    from eqsat_dnn.eqsat.saturate import Limits
    from eqsat_dnn.models.zoo import SUITE

    peers = bench.PEERS if args.peers is None else tuple(p for p in args.peers if p != "none")
    gpu = None if args.gpu_profile.strip().lower() == "none" else args.gpu_profile.strip().lower()
    settings = bench.BenchSettings(
        runs=args.runs, min_seconds=args.min_seconds, threads=args.threads, peers=peers,
        cost_model=args.cost_model, gpu_profile=gpu,
        limits=Limits(iterations=args.iter_limit, seconds=args.time_limit),
        extractor=args.extractor, extract_time_limit=args.extract_time_limit)
    specs = args.models or list(SUITE)
    bench.check_settings(settings)  # bad options and models fail now, not after the first model
    for spec in specs:
        bench.resolve(spec)
    bench.ensure_out_dir(args.out)
    err = Console(stderr=True)
    status = err.status("bench", spinner="dots") if err.is_terminal else nullcontext()
    load_start, started = os.getloadavg()[0], time.perf_counter()
    with status as live:
        def progress(message: str) -> None:
            if live is not None:
                live.update(message)
            else:
                print(message, file=sys.stderr, flush=True)

        results = bench.run_bench(specs, settings, progress)
    meta = bench.metadata(settings, load_start, os.getloadavg()[0], time.perf_counter() - started)
    written = bench.write_results(results, args.out, meta)
    out = Console()
    if not out.is_terminal:  # a log file gets the whole table, not 80 columns of it
        out = Console(width=220)
    out.print(bench.rich_table(results))
    summary = bench.summary(results)
    for name, value in summary["geomean_speedup"].items():
        print(f"geometric mean speedup, {name}: {value:.3f}x")
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    for failure in summary["failures"] + summary["gpu_failures"]:
        err.print(f"[bold red]FAILED[/] {escape(failure)}", highlight=False)
    if any(r.check_failed or r.gpu_check_failed for r in results):
        return 4
    return 1 if summary["failures"] or summary["gpu_failures"] else 0


def _rules(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from eqsat_dnn.eqsat.rules import select_rules

    rules = select_rules(args.selectors)
    if args.json:
        print(json.dumps([{"name": r.name, "family": r.family, "file": r.file, "line": r.line,
                           "description": r.description} for r in rules]))
        return 0
    table = Table(title=f"{len(rules)} rules")
    for column in ("name", "family", "file", "description"):
        table.add_column(column)
    for r in rules:
        table.add_row(r.name, r.family, f"{Path(r.file).name}:{r.line}", r.description)
    Console().print(table)
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from eqsat_dnn.errors import RuleError
    from eqsat_dnn.eqsat.rules import select_rules
    from eqsat_dnn.verify import DEFAULT_TRIALS, check_rules, default_jobs

    rules = select_rules(args.paths)
    jobs = default_jobs(len(rules)) if args.jobs == 0 else args.jobs
    results = check_rules(rules, trials=DEFAULT_TRIALS if args.trials is None else args.trials, seed=args.seed,
                          jobs=jobs)
    failed = [r for r in results if r.status == "failed"]
    untested = [r for r in results if r.status == "untested"]
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
    else:
        console = Console()
        colour = {"verified": "green", "failed": "bold red", "untested": "yellow"}
        table = Table(title=f"{len(results)} rules checked (seed {args.seed})")
        table.add_column("rule", overflow="fold")
        table.add_column("family", overflow="fold")
        table.add_column("status")
        table.add_column("fired", justify="right")
        table.add_column("max error", justify="right")
        for r in results:
            cx = r.counterexample
            if cx is not None and cx.max_abs_error is not None:  # relative error of the counterexample
                error = f"[red]{cx.max_abs_error / max(cx.scale or 0.0, 1e-300):.1e}[/]"
            else:
                error = f"{r.max_error:.1e}" if r.checked and cx is None else "-"
            table.add_row(escape(r.rule.name), escape(r.rule.family), f"[{colour[r.status]}]{r.status}[/]",
                          str(r.fired), error)
        console.print(table)
        for r in failed + untested:
            where = f"{Path(r.rule.file).name}:{r.rule.line}"
            console.print(f"[{colour[r.status]}]{r.status}[/] {escape(r.rule.name)} ({where})"
                          + (f": {escape(r.note)}" if r.note else ""))
            cx = r.counterexample
            if cx is None:
                continue
            lines = [cx.message + (f" ({cx.direction} direction)" if cx.direction else ""),
                     f"lhs:        {cx.lhs}", f"rhs:        {cx.rhs}",
                     "inputs:     " + ", ".join(f"{k}: {v}" for k, v in cx.inputs.items())]
            if cx.attributes:
                lines.append("attributes: " + ", ".join(f"{k} = {v}" for k, v in cx.attributes.items()))
            if cx.symbolic:
                lines.append("(the e-graph saw symbolic input dims)")
            lines += [f"{k} = {v}" for k, v in cx.values.items()]
            for line in lines:
                console.print("  " + escape(line), soft_wrap=True)
    if failed or (untested and not args.allow_untested):
        parts = [f"{len(failed)} failed"] + ([f"{len(untested)} untested"] if untested else [])
        raise RuleError(f"{', '.join(parts)} of {len(results)} rules (numerical rule check)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
