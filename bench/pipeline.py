"""Benchmark: end-to-end optimizer time on real transformer exports, and how it scales.

Exports BERT-base-sized models (hidden 768, 12 heads, seq 128) with torch's dynamo exporter at
several depths, then optimizes each (checks included) and reports the time per stage. Loading
(import + e-graph build) and exporting should grow linearly with the number of layers.

    python bench/pipeline.py [--layers 3 12] [--gpt2] [--out bench/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from eqsat_dnn import optimize
from eqsat_dnn.models.exports import export_bert, export_gpt2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 12])
    parser.add_argument("--repeats", type=int, default=3, help="optimizer runs per model (median reported)")
    parser.add_argument("--gpt2", action="store_true", help="GPT-2 instead of BERT")
    parser.add_argument("--extractor", default="ilp")
    parser.add_argument("--out", default="bench/results/pipeline.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layers in args.layers:
            path = Path(tmp) / f"model{layers}.onnx"
            t = time.perf_counter()
            (export_gpt2 if args.gpt2 else export_bert)(path, layers=layers)
            export_seconds = time.perf_counter() - t
            runs = []
            for _ in range(args.repeats):
                _, report = optimize(str(path), extractor=args.extractor, check=1)
                runs.append(report)
            stages = {k: statistics.median(r.seconds[k] for r in runs) for k in runs[0].seconds}
            rows.append({"model": "gpt2" if args.gpt2 else "bert", "layers": layers,
                         "nodes": runs[0].nodes_before, "nodes_after": runs[0].nodes_after,
                         "torch_export_s": export_seconds, "stages_s": stages,
                         "load_build_s": stages["load"] + stages["build"]})
    print("| model | layers | nodes | after | load+build s | saturate s | extract s | export s | check s | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["stages_s"]
        print(f"| {r['model']} | {r['layers']} | {r['nodes']} | {r['nodes_after']} | {r['load_build_s']:.2f} | "
              f"{s['saturate']:.2f} | {s['extract']:.2f} | {s['export']:.2f} | {s.get('check', 0):.2f} | {s['total']:.2f} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        ratio = b["layers"] / a["layers"]
        print(f"\n{ratio:.0f}x the layers: load+build x{b['load_build_s'] / a['load_build_s']:.2f}, "
              f"export x{b['stages_s']['export'] / a['stages_s']['export']:.2f}, "
              f"total x{b['stages_s']['total'] / a['stages_s']['total']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
