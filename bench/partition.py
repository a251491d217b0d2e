"""Benchmark: the partitioning ILP's solve time, and its plans against pure data parallelism and Megatron-LM.

For each model and mesh it reports the ILP's wall time (median of ``--repeats`` solves), whether
it proved optimality, and the predicted step time of the ILP's plan, of the pure data-parallel
plan and of the Megatron plan (tensor parallelism on the last mesh axis, data parallelism on the
others), with the collectives the ILP's plan uses. The headline is BERT-base (torch's dynamo
export, 12 layers, seq 128, cached in ``--cache``) on 8 devices.

    python bench/partition.py [--repeats 3] [--skip-bert] [--out bench/results/partition.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.partition import get_mesh, partition
from eqsat_dnn.models.blocks import transformer_layer, transformer_mlp


def _cases(args) -> list[tuple[str, object, str, str, str]]:
    """(label, model, mesh, machine, mode)."""
    cases = []
    if not args.skip_bert:
        path = Path(args.cache) / "bert-base.onnx"
        if not path.exists():
            from eqsat_dnn.models.exports import export_bert

            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"exporting BERT-base to {path} ...", file=sys.stderr)
            export_bert(path)
        bert = load_model(path)
        cases += [("BERT-base (seq 128)", bert, "8", "dgx-a100", "inference"),
                  ("BERT-base (seq 128)", bert, "8", "dgx-a100", "train"),
                  ("BERT-base (seq 128)", bert, "2x4", "dgx-a100", "inference")]
    layer = transformer_layer(batch=1, seq=32, hidden=2048, heads=16)
    cases += [
        ("layer h2048, 32 tokens", layer, "4", "dgx-a100", "inference"),
        ("layer h2048, 32 tokens", layer, "8", "dgx-a100", "inference"),
        ("layer h2048, 32 tokens", layer, "4", "dgx-a100", "train"),
        ("MLP h256, 64x128 tokens", transformer_mlp(batch=64, seq=128, hidden=256), "8", "dgx-a100", "inference"),
        ("MLP h256, 64x128 tokens", transformer_mlp(batch=64, seq=128, hidden=256), "8", "dgx-a100", "train"),
        ("MLP h1024, 16x128 tokens", transformer_mlp(batch=16, seq=128, hidden=1024), "2x4", "dgx-a100", "train"),
        ("layer h512, 16 tokens", transformer_layer(batch=1, seq=16, hidden=512, heads=8), "4", "cpu", "inference"),
    ]
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="solves per case (median time reported)")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--skip-bert", action="store_true", help="leave out BERT-base (no torch export)")
    parser.add_argument("--cache", default="/tmp/eqsat-dnn-bench", help="where the BERT-base export is kept")
    parser.add_argument("--out", default="bench/results/partition.json")
    args = parser.parse_args()
    rows = []
    for label, model, mesh, machine, mode in _cases(args):
        graph = model if not hasattr(model, "graph") else load_model(model)
        plans = [partition(graph, get_mesh(mesh, machine), mode=mode, time_limit=args.time_limit)
                 for _ in range(args.repeats)]
        plan = plans[-1]
        dp, meg = plan.baselines["data_parallel"], plan.baselines["megatron"]
        counts = plan.collective_counts(None)
        rows.append({
            "model": label, "mesh": mesh, "machine": machine, "mode": mode,
            "ilp_seconds_median": statistics.median(p.solver["seconds"] for p in plans),
            "status": plan.solver["status"], "source": plan.solver["source"],
            "variables": plan.solver["variables"],
            "ilp_time_s": plan.predicted.time_s, "dp_time_s": dp.time_s, "megatron_time_s": meg.time_s,
            "dp_fits": dp.fits, "megatron_fits": meg.fits,
            "vs_dp": dp.time_s / plan.predicted.time_s, "vs_megatron": meg.time_s / plan.predicted.time_s,
            "collectives": dict(counts),
            "mlp_weights": {k: "/".join(map(str, v)) for k, v in plan.placements.items()
                            if k.endswith(("fc1.weight", "fc2.weight")) and k.startswith(("mlp0", "layer0"))},
        })
        r = rows[-1]
        print(f"{label} on {mesh} ({machine}, {mode}): ILP {r['ilp_seconds_median']:.2f} s ({r['status']}), "
              f"plan {r['ilp_time_s'] * 1e3:.3f} ms, DP x{r['vs_dp']:.2f}, Megatron x{r['vs_megatron']:.2f}",
              file=sys.stderr)
    print("| model | mesh | machine | mode | ILP s (median) | status | plan ms | DP ms | Megatron ms | "
          "DP / plan | Megatron / plan | collectives | MLP weights (fc1, fc2) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["collectives"].items())) or "none"
        weights = ", ".join(v for _, v in sorted(r["mlp_weights"].items())) or "-"
        print(f"| {r['model']} | {r['mesh']} | {r['machine']} | {r['mode']} | {r['ilp_seconds_median']:.2f} | "
              f"{r['status']} | {r['ilp_time_s'] * 1e3:.3f} | {r['dp_time_s'] * 1e3:.3f} | "
              f"{r['megatron_time_s'] * 1e3:.3f} | {r['vs_dp']:.2f} | {r['vs_megatron']:.2f} | {counts} | "
              f"{weights} |")
    worst = min(min(r["vs_dp"], r["vs_megatron"]) for r in rows)
    print(f"\nthe plan is never worse than either baseline: {worst >= 1 - 1e-9} (smallest ratio {worst:.3f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
