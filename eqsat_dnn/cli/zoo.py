"""``eqsat-dnn zoo``: list the model zoo or write one of its models."""

from __future__ import annotations

import argparse
import math
import sys

from eqsat_dnn.cli import COUNT


def add_parser(commands) -> None:
    zoo = commands.add_parser("zoo", help="list the model zoo or write one of its models")
    zoo.add_argument("name", nargs="?", help="zoo model to write (see --list)")
    zoo.add_argument("-o", "--output", metavar="FILE.onnx", help="where to write it")
    zoo.add_argument("--list", action="store_true", help="list the models with their size overrides")
    zoo.add_argument("--seed", type=COUNT, default=0, help="weight seed (default 0)")
    zoo.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                     help="size override, e.g. --set layers=2 (repeatable; see --list)")


def run(args: argparse.Namespace) -> int:
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
                if not (math.isfinite(overrides[key]) and overrides[key] >= 0):  # a size: nan, inf, -1 mean nothing
                    raise ValueError(text)
        except (ValueError, OverflowError):
            wanted = "a finite float >= 0" if kind is float else f"a value of type {kind.__name__}"
            wanted += " >= 0" if kind is int else ""
            raise InputError(f"bad size override {item!r}: {key} wants {wanted}") from None
    return overrides
