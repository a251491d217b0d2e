"""``eqsat-dnn extract EGRAPH.json``: extraction alone, on an egraph-serialize JSON file."""

from __future__ import annotations

import argparse
import json
import sys

from eqsat_dnn.cli import SECONDS
from eqsat_dnn.extract import DEFAULT_EXTRACTOR, EXTRACTORS


def add_parser(commands) -> None:
    ext = commands.add_parser("extract", help="extract the cheapest program from an e-graph JSON file")
    ext.add_argument("egraph", help="egraph-serialize JSON (what egglog and extraction-gym write)")
    ext.add_argument("--extractor", choices=list(EXTRACTORS), default=DEFAULT_EXTRACTOR)
    ext.add_argument("--time-limit", type=SECONDS, default=30.0, help="ILP seconds (default 30)")
    ext.add_argument("--json", action="store_true", help="print the result as JSON with the choices")


def run(args: argparse.Namespace) -> int:
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
