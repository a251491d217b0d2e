"""Benchmark: repeated layers searched once (issue 17 item 2), at several depths.

For each model and depth, optimizes the model in this process, once per ``--blocks`` mode, and
prints a table: the blocks found, the search per layer (e-nodes of the representative's e-graph,
or of the whole e-graph divided by the layers; the rules that fired per layer), the rewrites per
layer (op counts of one copy after minus before; for the whole-graph path, of the whole model
divided by the layers), and the time split into load, search (finding the blocks, e-graphs,
saturation, extraction), write (stitching, lowering, export, saving the file) and check; then
the ratio of the deepest model's time to that of 4 layers.

* ``llama``: a LLaMA-style decoder (transformers ``LlamaModel``: RMSNorm, RoPE, GQA, SwiGLU)
  exported by torch's dynamo exporter (:func:`eqsat_dnn.models.hf.cached_export`), hidden 256,
  4 heads (2 key/value), intermediate 688, vocabulary 1024, sequence 128: the exporter's
  ``name_scopes`` metadata names the layers;
* ``fold``: ``x = x @ Transpose(w_i) + x @ w_i`` over 256 x 256 weights (``bench/scale.py``'s
  folding stack, smaller): no metadata, so the structural period finds the layers, and every
  layer has a rewrite that pays (a weight expression, folded once per copy);
* ``bert``: Tensat's BERT from the zoo (:func:`eqsat_dnn.models.zoo.bert`) at sequence 64,
  hidden 256, 4 heads: its one rewrite that pays crosses the layer boundary (the next layer's
  ``x @ W_linear`` feeds its ``q, k, v`` projections), which blocks lose by construction.

    python bench/blocks.py [--models llama fold bert] [--layers 2 4 8 32] [--modes auto always never]
                           [--repeat N]
                           [--cost-model roofline:cpu-nominal] [--out bench/results/blocks.json]

Exports are cached under ``bench/results/blocks-cache``; outputs are written to a temporary
folder and removed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LLAMA = dict(hidden=256, heads=4, kv_heads=2, intermediate=688, vocab=1024, seq=128)
FOLD_WIDTH = 256
"""The fold stack's weights are this square; Tensat's BERT has this hidden size."""
SEARCH = ("blocks", "build", "saturate", "extract")
WRITE = ("stitch", "lower", "export", "save")


def build(kind: str, layers: int, cache: Path) -> Path:
    """The input model of ``kind`` at ``layers`` layers (cached)."""
    if kind == "llama":
        from eqsat_dnn.models.hf import cached_export

        return cached_export("llama", cache, layers=layers, **LLAMA)
    path = cache / f"{kind}-{FOLD_WIDTH}-{layers}.onnx"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "fold":
        from scale import fold_model

        fold_model(path, n=FOLD_WIDTH, layers=layers)
    else:
        import onnx

        from eqsat_dnn.models.zoo import bert

        onnx.save(bert(layers=layers, seq=64, hidden=FOLD_WIDTH, heads=FOLD_WIDTH // 64), str(path))
    return path


def per_layer(counts: dict[str, int], layers: int) -> dict[str, float]:
    return {op: round(n / layers, 2) for op, n in sorted(counts.items()) if n}


def run_one(source: Path, mode: str, cost_model: str, layers: int) -> dict:
    """Optimize ``source`` once; the figures of one table row."""
    from eqsat_dnn.blocks import BlockPath
    from eqsat_dnn.cost import get_cost_model
    from eqsat_dnn.io.onnx_out import save_model
    from eqsat_dnn.pipeline import optimize

    with tempfile.TemporaryDirectory() as tmp:
        model, report = optimize(source, cost_model=get_cost_model(cost_model), blocks=mode)
        t = time.perf_counter()
        save_model(model, Path(tmp) / "out.onnx", source=source)
        seconds = dict(report.seconds, save=time.perf_counter() - t)
    split = {
        "load": seconds.get("load", 0.0),
        "search": sum(seconds.get(k, 0.0) for k in SEARCH),
        "write": sum(seconds.get(k, 0.0) for k in WRITE),
        "check": seconds.get("check", 0.0),
    }
    row = {"layers": layers, "mode": mode, "path": str(report.blocks_path), "blocks": report.describe_blocks(),
           "seconds": seconds, "split": split, "total": sum(split.values()),
           "nodes_before": report.nodes_before, "nodes_after": report.nodes_after,
           "cost_before": report.cost_before, "cost_after": report.cost_after, "check_ok": report.check.ok}
    if report.blocks_path == BlockPath.BLOCKS:
        block = max(report.blocks, key=lambda b: b.copies * b.nodes)
        row["egraph_per_layer"] = block.search.snapshot.egraph.num_nodes
        row["stop_per_layer"] = str(block.search.saturation.stop_reason)
        row["rules_per_layer"] = block.search.saturation.matches_per_rule()
        row["rewrites_per_layer"] = block.rewrites()
    else:
        delta = Counter(report.ops_after)
        delta.subtract(report.ops_before)
        row["egraph_per_layer"] = round(report.egraph_nodes / layers)
        row["stop_per_layer"] = str(report.saturation.stop_reason) if report.saturation else ""
        matches = report.saturation.matches_per_rule() if report.saturation else {}
        row["rules_per_layer"] = per_layer(matches, layers)
        row["rewrites_per_layer"] = per_layer(dict(delta), layers)
    return row


def table(rows: list[dict]) -> str:
    lines = [f"| model | layers | mode | path | blocks | e-nodes/layer | stop | rewrites/layer | "
             f"load s | search s | write s | check s | total s |", "|" + "---|" * 13]
    for r in rows:
        rewrites = ", ".join(f"{op} {n:+g}" for op, n in r["rewrites_per_layer"].items()) or "none"
        s = r["split"]
        lines.append(f"| {r['model']} | {r['layers']} | {r['mode']} | {r['path']} | {r['blocks'] or '-'} | "
                     f"{r['egraph_per_layer']} | {r['stop_per_layer']} | {rewrites} | {s['load']:.2f} | "
                     f"{s['search']:.2f} | {s['write']:.2f} | {s['check']:.2f} | {r['total']:.2f} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[dict]:
    """Per model and mode: the deepest model's time over the 4-layer one's."""
    found = []
    for key in sorted({(r["model"], r["mode"]) for r in rows}):
        mine = {r["layers"]: r for r in rows if (r["model"], r["mode"]) == key}
        if 4 in mine and max(mine) > 4:
            deep = max(mine)
            found.append({"model": key[0], "mode": key[1], "layers": deep,
                          "ratio": mine[deep]["total"] / mine[4]["total"],
                          "same_rewrites_per_layer": mine[deep]["rewrites_per_layer"] == mine[4]["rewrites_per_layer"],
                          "same_rules_per_layer": mine[deep]["rules_per_layer"] == mine[4]["rules_per_layer"]})
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["llama", "fold", "bert"], default=["llama", "fold", "bert"])
    parser.add_argument("--layers", nargs="+", type=int, default=[2, 4, 8, 32])
    parser.add_argument("--modes", nargs="+", choices=["auto", "always", "never"], default=["auto", "always", "never"])
    parser.add_argument("--cost-model", default="roofline:cpu-nominal")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest is kept (default 1)")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "blocks-cache")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "blocks.json")
    args = parser.parse_args()
    rows = []
    # one run unrecorded, so that the first row does not pay for imports and the solver's start
    run_one(build(args.models[0], args.layers[0], args.cache), args.modes[0], args.cost_model, args.layers[0])
    for kind in args.models:
        for layers in args.layers:
            source = build(kind, layers, args.cache)
            for mode in args.modes:
                # the fastest of --repeat runs: the machine is shared, and load only ever adds time
                runs = [run_one(source, mode, args.cost_model, layers) for _ in range(args.repeat)]
                row = {"model": kind, "runs": len(runs), **min(runs, key=lambda r: r["total"])}
                rows.append(row)
                print(f"{kind} {layers} {mode}: {row['total']:.2f} s, {row['path']}", file=sys.stderr, flush=True)
    found = ratios(rows)
    print(table(rows))
    print()
    for r in found:
        print(f"{r['model']} ({r['mode']}): {r['layers']} layers / 4 layers = {r['ratio']:.2f}x time; "
              f"same rewrites per layer: {r['same_rewrites_per_layer']}, same rules per layer: {r['same_rules_per_layer']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cost_model": args.cost_model, "llama": LLAMA, "fold_width": FOLD_WIDTH,
                                    "rows": rows, "ratios": found}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
