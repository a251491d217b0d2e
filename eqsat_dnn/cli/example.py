"""``eqsat-dnn example OUT.onnx``: the bundled example model (a transformer block)."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands) -> None:
    example = commands.add_parser("example", help="write the bundled example model (a transformer block)")
    example.add_argument("output", help="where to write it")


def run(args: argparse.Namespace) -> int:
    from eqsat_dnn.models.examples import attention_block
    from eqsat_dnn.io.onnx_out import ensure_writable, save_model

    ensure_writable(args.output)
    save_model(attention_block(), args.output)
    print(f"wrote {args.output}: one transformer block, input x[32, 64]", file=sys.stderr)
    return 0
