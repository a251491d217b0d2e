"""Train a small Hugging Face model (random weights) with the partitioner's plan applied to the
PyTorch module itself by ``parallelize_module``, under torchrun on gloo, and compare its losses
with single-device training of the same model.

    torchrun --nproc_per_node 2 examples/train_hf_tp.py [--model llama] [--steps 5]

Rank 0 exports the model with torch's dynamo exporter (``eqsat_dnn.models.hf``, tiny sizes),
plans it for a mesh of the world size in train mode (the ``cpu`` preset; the memory per device is
``--memory-fraction`` of what data parallelism needs, so the plan must shard weights: at these
sizes an unbounded plan replicates everything), and writes ``plan.json`` and ``torch_plan.json``
under ``--workdir``. Every rank then builds the same model (seeded), applies the torch plan to the
transformers model inside the export's wrapper (``prefix="inner."``), and trains ``--steps`` steps
(mean squared error of ``last_hidden_state`` against a seeded target). Rank 0 also trains an
untouched copy on one device and prints both losses; the exit status is 1 when they differ by
more than ``--tolerance`` (relative). ``--strategy megatron`` uses the hand-written Megatron
baseline instead of the ILP.

transformers' LLaMA and Qwen2 attention reshape with ``-1`` heads, so column-parallel q/k/v
projections simply leave each rank its own heads: nothing in the model needs adjusting.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["llama", "qwen2"], default="llama")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--strategy", choices=["ilp", "megatron"], default="ilp")
    parser.add_argument("--memory-fraction", type=float, default=0.7,
                        help="memory per device for the ILP, as a fraction of data parallelism's need (default 0.7)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "eqsat-dnn-tp")
    return parser.parse_args()


def make_plan(args: argparse.Namespace, world: int, sizes: dict) -> Path:
    """Export, partition and write the torch plan (rank 0 only); its path."""
    from eqsat_dnn.io.onnx_in import load_model
    from eqsat_dnn.models import hf
    from eqsat_dnn.partition import get_mesh, partition
    from eqsat_dnn.partition.mesh import GIB
    from eqsat_dnn.partition.plan import plan_from_assignment
    from eqsat_dnn.partition.problem import BASELINES, build_problem
    from eqsat_dnn.partition.torch_plan import torch_plan

    export = hf.cached_export(args.model, args.workdir / "cache", **sizes)
    graph = load_model(export, load_weights=False)
    problem = build_problem(graph, get_mesh(str(world), "cpu"), "train", optimizer=args.optimizer)
    if args.strategy == "megatron":
        plan = plan_from_assignment(problem, BASELINES["megatron"](problem))
    else:
        need = problem.evaluate(BASELINES["data_parallel"](problem)).memory_bytes_per_device
        plan = partition(graph, str(world), machine="cpu", mode="train", optimizer=args.optimizer,
                         memory_gb=args.memory_fraction * need / GIB)
    tp = torch_plan(graph, plan)
    plan.save(args.workdir / "plan.json")
    path = args.workdir / "torch_plan.json"
    tp.save(path)
    print(f"{export.name}: {args.strategy} plan for {world} devices "
          f"({plan.solver.get('source', args.strategy)}); torch plan {path}:")
    for module, style in tp.styles.items():
        entry = style.to_dict()
        detail = entry.get("placements") or {k: v for k, v in entry.items() if k != "style"}
        print(f"  {module:40s} {entry['style']:20s} {json.dumps(detail)}")
    for note in tp.notes:
        print(f"  note: {note}")
    return path


def main() -> int:
    args = parse_args()
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from eqsat_dnn.models import hf
    from eqsat_dnn.partition.torch_train import parallelize, rel_error, seeded_target, train_losses

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = {**hf.TINY[args.model], "layers": args.layers}
    path = [None]
    if rank == 0:
        args.workdir.mkdir(parents=True, exist_ok=True)
        path = [str(make_plan(args, world, sizes))]
    dist.broadcast_object_list(path, src=0)

    module, inputs, _, _ = hf.module_and_inputs(args.model, **sizes)  # seeded: the same on every rank
    module.train()
    reference = copy.deepcopy(module) if rank == 0 else None
    target = seeded_target(module, inputs)
    mesh = init_device_mesh("cpu", (world,))
    # the plan names the export's modules (inner.layers.0...); the transformers model is module.inner
    parallelize(module.inner, path[0], mesh, prefix="inner.")
    losses = train_losses(module, inputs, target, steps=args.steps, optimizer=args.optimizer, lr=args.lr)
    every = [None] * world
    dist.all_gather_object(every, losses)
    status = 0
    if rank == 0:
        single = train_losses(reference, inputs, target, steps=args.steps, optimizer=args.optimizer, lr=args.lr)
        error = max(rel_error(r, single) for r in every)
        print(f"\n{'step':>4}  {'single device':>14}  {f'parallelized x{world}':>16}  rel. error")
        for step, (a, b) in enumerate(zip(single, losses)):
            print(f"{step:>4}  {a:14.8f}  {b:16.8f}  {abs(a - b) / abs(a):.2e}")
        print(f"max rel. error over {world} ranks: {error:.2e} (tolerance {args.tolerance:g}) -> "
              f"{'OK' if error <= args.tolerance else 'MISMATCH'}")
        status = 0 if error <= args.tolerance else 1
        with torch.no_grad():
            shards = sum(1 for p in module.parameters() if hasattr(p, "placements")
                         and any(pl.is_shard() for pl in p.placements))
        print(f"{shards} parameters sharded across the {world} ranks")
    dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
