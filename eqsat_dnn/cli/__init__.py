"""The ``eqsat-dnn`` command: one module per subcommand, each with ``add_parser(commands)``
and ``run(args) -> exit code``; here the parser they share and the one-line error handling.

Every user error ends in one line on stderr and a documented exit code:
1 other failure, 2 bad input, 3 output not writable, 4 check failed (the
optimized model disagrees with the original), 5 bad rule, 130 interrupted.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from eqsat_dnn import __version__
from eqsat_dnn.errors import EqsatError

COMMANDS = ("optimize", "extract", "example", "partition", "zoo", "bench", "rules")
"""The subcommands, in the order ``--help`` lists them; each is the module ``eqsat_dnn.cli.<name>``."""


class Parser(argparse.ArgumentParser):
    """argparse with the command's one-line errors (exit code 2, as for any bad input)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind: type, minimum: float, strict: bool, maximum: float | None = None):
    """An argparse type: a finite number of ``kind`` above (``strict``) or at least ``minimum``,
    and at most ``maximum`` where one is given (``nan`` and ``inf`` are refused)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g}, not {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, not {text}")
        return value
    return parse


POSITIVE = number(float, 0, strict=True)
SECONDS = number(float, 0, strict=True, maximum=1e7)
"""A time limit: above 0 and at most 10^7 s (116 days; the waits below cannot count past ~1e9 s)."""
NON_NEGATIVE = number(float, 0, strict=False)
COUNT = number(int, 0, strict=False)


def _command(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="eqsat-dnn",
        description="Superoptimize ONNX models by equality saturation and ILP extraction.",
    )
    parser.add_argument("--version", action="version", version=f"eqsat-dnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        _command(name).add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command not in COMMANDS:
            parser.error(f"unknown command {args.command}")
        return _command(args.command).run(args)
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
