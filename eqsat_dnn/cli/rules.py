"""``eqsat-dnn rules list|check``: the rule library, listed or checked numerically."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eqsat_dnn.cli import COUNT, number


def add_parser(commands) -> None:
    rules = commands.add_parser("rules", help="list or check the rule library")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    listing = rule_commands.add_parser("list", help="name, family, file and description of each rule")
    listing.add_argument("selectors", nargs="*", help="files, families or rule names (default: all)")
    listing.add_argument("--json", action="store_true")
    checking = rule_commands.add_parser("check", help="verify each rule numerically on random instances")
    checking.add_argument("paths", nargs="*", help="files, families or rule names (default: all)")
    checking.add_argument("--trials", type=number(int, 1, strict=False), default=None, metavar="N",
                          help="firing instances to check per rule (default 12)")
    checking.add_argument("--attempts", type=number(int, 1, strict=False), default=None, metavar="N",
                          help="random instances to generate per rule at most (default 25 per trial, at least 80, "
                               "ten times that for a rule that has not fired yet)")
    checking.add_argument("--seed", type=COUNT, default=0, help="random seed (default 0)")
    checking.add_argument("--jobs", type=number(int, 0, strict=False, maximum=256), default=1, metavar="N",
                          help="worker processes (default 1; 0: one per core, up to 4); the result does not depend on it")
    checking.add_argument("--allow-untested", action="store_true",
                          help="exit 0 even if some rule never fired (failures still exit 5)")
    checking.add_argument("--json", action="store_true", help="print one JSON list on stdout")


def run(args: argparse.Namespace) -> int:
    return _check(args) if args.rules_command == "check" else _list(args)


def _list(args: argparse.Namespace) -> int:
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


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from eqsat_dnn.errors import RuleError
    from eqsat_dnn.eqsat.rules import select_rules
    from eqsat_dnn.verify import DEFAULT_TRIALS, RuleStatus, check_rules, default_jobs

    rules = select_rules(args.paths)
    jobs = default_jobs(len(rules)) if args.jobs == 0 else args.jobs
    results = check_rules(rules, trials=DEFAULT_TRIALS if args.trials is None else args.trials, seed=args.seed,
                          attempts=args.attempts, jobs=jobs)
    failed = [r for r in results if r.status is RuleStatus.FAILED]
    untested = [r for r in results if r.status is RuleStatus.UNTESTED]
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
    else:
        console = Console()
        colour = {RuleStatus.VERIFIED: "green", RuleStatus.FAILED: "bold red", RuleStatus.UNTESTED: "yellow"}
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
            status = f"[{colour[r.status]}]{r.status}[/]" + (" (finite only)" if r.finite_only else "")
            table.add_row(escape(r.rule.name), escape(r.rule.family), status, str(r.fired), error)
        console.print(table)
        for r in results:
            if r.finite_only:  # as its tag says: shown, not counted against it
                console.print(f"finite only {escape(r.rule.name)}: {escape(r.edge.message)} "
                              f"({escape(r.edge.lhs)} vs {escape(r.edge.rhs)})", soft_wrap=True)
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
