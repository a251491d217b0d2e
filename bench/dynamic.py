"""Benchmark: dynamo exports with dynamic batch and sequence dims, optimized with their dims left symbolic.

Exports each model of the exports suite (the bench's sizes, ``eqsat_dnn.models.hf.EXPORTS``; other
decoder families when named) with ``dynamic=True`` (batch and sequence symbolic; ViT: its batch), optimizes it with the default
``optimize`` (symbolic dims searched at probe sizes and given back, ``eqsat_dnn/io/probes.py``),
and times the input, a placebo session of it and the output in onnxruntime at batch 1 and
sequence 512 (``ORT_ENABLE_ALL``, one thread, interleaved rounds: the bench's timer). The output
must keep the input's symbolic dims; the table says which fused ops it has.

    python bench/dynamic.py [bert gpt2 vit llama qwen2] [--attention sdpa|eager] [--cache DIR]
                            [--out bench/results/dynamic.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import onnx

from eqsat_dnn.bench import measure_latencies
from eqsat_dnn.models import hf
from eqsat_dnn.pipeline import optimize
from eqsat_dnn.runtime.check import random_inputs

FUSED = ("Attention", "com.microsoft.Attention", "MultiHeadAttention", "RMSNormalization", "RotaryEmbedding", "SkipLayerNormalization",
         "LayerNormalization", "Gelu", "FastGelu", "QuickGelu")


def _dims(values) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(hf.SUITE))
    parser.add_argument("--cache", default="bench/results/dynamic-cache", help="where the exports are kept")
    parser.add_argument("--attention", choices=hf.ATTENTIONS, default=hf.ATTENTION,
                        help="transformers' attention the exports are built with (default sdpa)")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="bench/results/dynamic.json")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        path = cache / f"{name}-{args.attention}-dynamic.onnx"
        if not path.exists():
            hf.export(name, path, dynamic=True, attention=args.attention)
        original = onnx.load(str(path))
        t = time.perf_counter()
        optimized, report = optimize(str(path))
        seconds = time.perf_counter() - t
        feeds = random_inputs(original, seed=0, sizes={"batch": 1, "seq": args.seq})
        timing = measure_latencies({"original": original, "placebo": original, "optimized": optimized},
                                   args.runs, 1, 2, min_seconds=2.0, feeds=feeds)
        kept = _dims(optimized.graph.input) == _dims(original.graph.input) and \
            _dims(optimized.graph.output) == _dims(original.graph.output)
        rows.append({
            "model": name, "probes": None if report.probes is None else report.probes.sizes,
            "fallback": report.probes_fallback or None, "symbolic_dims_kept": kept,
            "fused": {op: n for op, n in report.ops_after.items() if op in FUSED},
            "optimize_s": seconds, "original_ms": timing.medians["original"] * 1e3,
            "speedup": timing.speedup("original", "optimized"), "placebo": timing.speedup("original", "placebo"),
            "failures": timing.failures or None,
        })
        print(f"{name}: {rows[-1]['speedup']:.3f}x", flush=True)
    print(f"\n| model | probes | dims kept | fused | optimize s | orig ms | speedup | placebo |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        probes = ", ".join(f"{k}={v}" for k, v in (r["probes"] or {}).items()) or f"none ({r['fallback']})"
        fused = ", ".join(f"{op} {n}" for op, n in sorted(r["fused"].items()))
        print(f"| {r['model']} | {probes} | {'yes' if r['symbolic_dims_kept'] else 'NO'} | {fused} | "
              f"{r['optimize_s']:.1f} | {r['original_ms']:.1f} | {r['speedup']:.3f}x | {r['placebo']:.3f}x |")
    geomean = math.exp(np.mean([math.log(r["speedup"]) for r in rows]))
    print(f"\nGeometric mean speedup: {geomean:.3f}x (batch 1, sequence {args.seq}, one thread)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seq": args.seq, "attention": args.attention, "rows": rows, "geomean": geomean},
                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
