"""``eqsat-dnn partition IN.onnx -o PLAN.json``: place every tensor on a device mesh."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

from eqsat_dnn.cli import POSITIVE, SECONDS, number


def add_parser(commands) -> None:
    part = commands.add_parser("partition", help="place every tensor on a device mesh (an ILP); --run checks it "
                                                 "on torch.distributed")
    part.add_argument("input", help="ONNX model (never modified)")
    part.add_argument("--mesh", metavar="N|AxB", help="mesh shape, 1-D or 2-D (default: the machine's)")
    part.add_argument("--machine", default="dgx-a100", metavar="NAME",
                      help="preset: dgx-a100 (default), dgx-h100, a100-cluster, cpu, cpu:measured (cpu with figures "
                           "measured here over gloo, once, then cached)")
    part.add_argument("--mode", choices=["inference", "train"], default="inference")
    part.add_argument("--memory-gb", type=POSITIVE, metavar="G", help="memory per device (default: the machine's)")
    part.add_argument("-o", "--output", required=True, metavar="PLAN.json", help="where to write the plan")
    part.add_argument("--annotate", metavar="OUT.onnx", help="also write the model with ONNX sharding specs")
    part.add_argument("--torch-plan", metavar="OUT.json",
                      help="also write the plan for the exported PyTorch module (dynamo exports): parallelize_module "
                           "styles per module, per-parameter placements where none fits")
    part.add_argument("--run", action="store_true",
                      help="run the plan on one local process per device and check it: inference, the forward pass "
                           "(outputs and collectives); train, --steps training steps on DTensor (losses, weights and "
                           "forward and backward collectives against single-device training and the plan; pipelined plans "
                           "in 1F1B over their microbatches, checkpointed units recomputed)")
    part.add_argument("--steps", type=number(int, 1, strict=False, maximum=100_000), default=3, metavar="N",
                      help="training steps of --run (default 3)")
    part.add_argument("--optimizer", choices=["sgd", "adam"], default="adam",
                      help="training optimizer: its state counts in the plan's memory, and --run uses it "
                           "(default adam)")
    part.add_argument("--lr", type=POSITIVE, metavar="LR", help="learning rate of --run (default 0.01 sgd, 0.001 adam)")
    part.add_argument("--microbatches", type=number(int, 1, strict=False, maximum=100_000), metavar="M",
                      help="train: also weigh pipelines over mesh axis 0 (1F1B over M microbatches, layers "
                           "checkpointed where memory needs) against the plan over the whole mesh; without it, "
                           "pipelines are tried only when nothing else fits (8 microbatches)")
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
    written = {"-o": args.output}
    for flag, path in (("--annotate", args.annotate), ("--torch-plan", args.torch_plan)):
        if path:
            ensure_writable(path, args.input)
            clash = next((f for f, p in written.items() if Path(p).resolve() == Path(path).resolve()), None)
            if clash:
                raise OutputError(f"{path}: {flag} would overwrite the file {clash} writes; choose another file")
            written[flag] = path
    if args.run:  # one process per device: a mesh too large to run is refused now, not after the ILP
        from eqsat_dnn.partition.mesh import get_mesh
        from eqsat_dnn.partition.processes import check_run_size

        check_run_size(get_mesh(args.mesh, args.machine, args.memory_gb).num_devices)
    if args.microbatches is not None and args.mode != "train":
        from eqsat_dnn.errors import InputError

        raise InputError("--microbatches prices pipelines for training: add --mode train")
    shapes = parse_input_shapes(args.overwrite_input_shape)
    graph = load_model(args.input, input_shapes=shapes, load_weights=False)  # planning reads no weight
    show = not (args.quiet or args.json)
    console = Console(stderr=True)
    with console.status("solving the partitioning ILP", spinner="dots") if show and console.is_terminal \
            else nullcontext():
        plan = partition(graph, args.mesh, machine=args.machine, mode=args.mode, memory_gb=args.memory_gb,
                         time_limit=args.time_limit, outputs=args.outputs, optimizer=args.optimizer,
                         microbatches=args.microbatches)
    if args.run or args.annotate:  # these need the weights themselves
        graph = load_model(args.input, input_shapes=shapes)
    report = None
    if args.run:  # before writing anything: a plan that does not run is not written
        with console.status(f"running on {plan.mesh.num_devices} processes", spinner="dots") \
                if show and console.is_terminal else nullcontext():
            if args.mode == "train":
                from eqsat_dnn.partition.pipeline_run import train_plan

                lr = args.lr or (0.01 if args.optimizer == "sgd" else 0.001)
                report = train_plan(graph, plan, steps=args.steps, optimizer=args.optimizer, lr=lr)
            else:
                report = run_plan(graph, plan)
        if not report.ok:
            raise CheckError(f"the plan failed its {'training ' if args.mode == 'train' else ''}run on "
                             f"{report.processes} processes: {report.failures[0]}")
    model = annotate(graph, plan) if args.annotate else None
    torch_plan = None
    if args.torch_plan:
        from eqsat_dnn.partition.torch_plan import torch_plan as make_torch_plan

        torch_plan = make_torch_plan(graph, plan)
    plan.save(args.output)
    if torch_plan is not None:
        torch_plan.save(args.torch_plan)
    if model is not None:
        save_model(model, args.annotate, source=args.input)
    if args.json:
        data = {"plan": args.output, "predicted": plan.to_dict()["predicted"],
                "baselines": {k: v.to_dict() for k, v in plan.baselines.items()}, "solver": plan.solver,
                "collectives": dict(plan.collective_counts(None)),
                "collectives_by_phase": {phase: dict(plan.collective_counts(phase))
                                         for phase in ("forward", "backward", "update")},
                "replicate_only": plan.replicate_only}
        whole = plan.to_dict()
        data.update({k: whole[k] for k in ("zero", "schedule", "stages", "checkpointed") if k in whole})
        if report is not None:
            data["run"] = report.to_dict()
        if torch_plan is not None:
            data["torch_plan"] = {"path": args.torch_plan, "styles": dict(Counter(
                s.style.value for s in torch_plan.styles.values())), "notes": torch_plan.notes}
        print(json.dumps(data, sort_keys=True))
    elif not args.quiet:
        out = Console()
        out.print(plan_table(plan, f"{args.input}: {plan.mesh.describe()} ({plan.mode})"))
        if report is not None and args.mode == "train":
            issued = len(report.issued)
            if report.stages > 1 or report.microbatches > 1:
                out.print(f"pipeline: {report.stages} stage(s), 1F1B over {report.microbatches} microbatches, "
                          f"{report.sends} point-to-point sends (= planned)")
            out.print(f"trained {report.steps} steps ({report.optimizer}) on {report.processes} processes "
                      f"({report.backend}, DTensor): losses and weights match single-device training (max rel. "
                      f"error {report.loss_max_rel_error:.2e} and {report.weights_max_rel_error:.2e}); collectives "
                      f"issued = planned ({issued}, forward and backward); step {report.measured_step_s * 1e3:.2f} ms "
                      f"measured, {report.predicted_step_s * 1e3:.3f} ms predicted")
        elif report is not None:
            out.print(f"run on {report.processes} processes ({report.backend}): outputs match "
                      f"(max rel. error {report.max_rel_error:.2e}); collectives issued = planned "
                      f"({sum(report.counts().values())})")
        if torch_plan is not None:
            counts = Counter(s.style.value for s in torch_plan.styles.values())
            out.print(f"torch plan ({args.torch_plan}): " + (", ".join(f"{k} x{v}" for k, v in counts.items())
                                                             or "nothing sharded"))
            for note in torch_plan.notes:
                out.print(f"  note: {note}")
    return 0
