"""``eqsat-dnn partition IN.onnx -o PLAN.json``: place every tensor on a device mesh."""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

from eqsat_dnn.cli import POSITIVE, SECONDS


def add_parser(commands) -> None:
    part = commands.add_parser("partition", help="place every tensor on a device mesh (an ILP); --run checks it "
                                                 "on torch.distributed")
    part.add_argument("input", help="ONNX model (never modified)")
    part.add_argument("--mesh", metavar="N|AxB", help="mesh shape, 1-D or 2-D (default: the machine's)")
    part.add_argument("--machine", default="dgx-a100", metavar="NAME",
                      help="preset: dgx-a100 (default), dgx-h100, a100-cluster, cpu")
    part.add_argument("--mode", choices=["inference", "train"], default="inference")
    part.add_argument("--memory-gb", type=POSITIVE, metavar="G", help="memory per device (default: the machine's)")
    part.add_argument("-o", "--output", required=True, metavar="PLAN.json", help="where to write the plan")
    part.add_argument("--annotate", metavar="OUT.onnx", help="also write the model with ONNX sharding specs")
    part.add_argument("--run", action="store_true",
                      help="run the plan on one local process per device and check outputs and collectives")
    part.add_argument("--time-limit", type=SECONDS, default=10.0, metavar="S", help="ILP seconds (default 10)")
    part.add_argument("--outputs", choices=["replicate", "any"], default="replicate",
                      help="graph outputs end replicated (default) or in any placement")
    part.add_argument("--overwrite-input-shape", action="append", metavar="NAME:D1,D2,...",
                      help="fix an input's shape (repeatable)")
    part.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    part.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
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
    if args.run:  # one process per device: a mesh too large to run is refused now, not after the ILP
        from eqsat_dnn.partition.mesh import get_mesh
        from eqsat_dnn.partition.run import check_run_size

        check_run_size(get_mesh(args.mesh, args.machine, args.memory_gb).num_devices)
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
