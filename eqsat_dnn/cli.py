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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
                     help="rule file, directory, family or rule name (repeatable; default: the whole library)")
    opt.add_argument("--iter-limit", type=int, default=8, help="saturation iterations (default 8)")
    opt.add_argument("--node-limit", type=int, default=50_000, help="e-node limit (default 50000)")
    opt.add_argument("--time-limit", type=float, default=10.0, help="saturation seconds (default 10)")
    opt.add_argument("--extractor", choices=["ilp", "greedy"], default="ilp", help="extractor (default ilp)")
    opt.add_argument("--extract-time-limit", type=float, default=10.0, help="ILP seconds (default 10)")
    opt.add_argument("--cost-model", default="roofline:cpu-nominal", metavar="NAME",
                     help="measured, roofline, roofline:cpu-nominal (default), roofline:t4|v100|a100|h100")
    opt.add_argument("--check", type=int, default=1, metavar="N",
                     help="compare outputs on N random input sets (default 1)")
    opt.add_argument("--no-check", action="store_const", const=0, dest="check", help="skip the output check")
    opt.add_argument("--overwrite-input-shape", action="append", metavar="NAME:D1,D2,...",
                     help="fix an input's shape (repeatable)")
    opt.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    opt.add_argument("--quiet", action="store_true", help="print nothing but errors")

    ext = commands.add_parser("extract", help="extract the cheapest program from an e-graph JSON file")
    ext.add_argument("egraph", help="egraph-serialize JSON (what egglog and extraction-gym write)")
    ext.add_argument("--extractor", choices=["ilp", "greedy"], default="ilp")
    ext.add_argument("--time-limit", type=float, default=30.0, help="ILP seconds (default 30)")
    ext.add_argument("--json", action="store_true", help="print the result as JSON with the choices")

    example = commands.add_parser("example", help="write the bundled example model (a transformer block)")
    example.add_argument("output", help="where to write it")

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

    from eqsat_dnn.onnx_in import parse_input_shapes
    from eqsat_dnn.onnx_out import ensure_writable, save_model
    from eqsat_dnn.pipeline import optimize
    from eqsat_dnn.report import optimize_table
    from eqsat_dnn.rules import select_rules
    from eqsat_dnn.saturate import Limits

    ensure_writable(args.output, args.input)
    shapes = parse_input_shapes(args.overwrite_input_shape)
    from eqsat_dnn.cost import get_cost_model

    rules = select_rules(args.rules)
    cost_model = get_cost_model(args.cost_model)
    limits = Limits(iterations=args.iter_limit, nodes=args.node_limit, seconds=args.time_limit)
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
            "choices": result.choices,
        }, sort_keys=True))
        return 0
    table = Table(title=f"extraction of {args.egraph}")
    for column in ("e-nodes", "e-classes", "extractor", "status", "cost", "bound", "gap", "seconds"):
        table.add_column(column)
    table.add_row(str(egraph.num_nodes), str(egraph.num_classes), result.extractor, result.status,
                  f"{result.cost:.6g}", f"{result.bound:.6g}", f"{result.gap:.2%}", f"{result.seconds:.2f}")
    Console().print(table)
    return 0


def _example(args: argparse.Namespace) -> int:
    from eqsat_dnn.examples import attention_block
    from eqsat_dnn.onnx_out import ensure_writable, save_model

    ensure_writable(args.output)
    save_model(attention_block(), args.output)
    print(f"wrote {args.output}: one transformer block, input x[32, 64]", file=sys.stderr)
    return 0


def _rules(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from eqsat_dnn.rules import select_rules

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
    from eqsat_dnn.rules import select_rules
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
