"""Benchmark: ILP extraction against bottom-up greedy on the extraction-gym e-graphs and ours.

For every serialized e-graph in the reference directory (Tensat's models, as
extraction-gym ships them), and for the saturated e-graphs of our own models
(zoo names or ONNX files given with ``--models``: default rules and limits, priced
by ``--cost-model``), runs the greedy extractor and the ILP extractor, checks that
both programs are complete and acyclic, and reports DAG costs, status, proven
lower bound, gap and wall time.

    python bench/extraction.py [--time-limit 30] [--out bench/results/extraction.json]
                               [--dir ../shared/reference/extraction-gym] [--files vgg.json ...]
                               [--models bert resnet50 model.onnx ...] [--cost-model roofline:cpu-nominal]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from eqsat_dnn.extract.base import load_egraph_json, validate
from eqsat_dnn.extract.greedy import GreedyExtractor
from eqsat_dnn.extract.ilp import ILPExtractor

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "extraction-gym"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=30.0, help="ILP wall-time limit per e-graph (s)")
    parser.add_argument("--mip-rel-gap", type=float, default=1e-4)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="directory of egraph-serialize JSON files")
    parser.add_argument("--files", nargs="*", help="only these file names")
    parser.add_argument("--models", nargs="*", default=[],
                        help="zoo model names or ONNX files whose saturated e-graphs to extract from too")
    parser.add_argument("--only-models", action="store_true", help="skip the extraction-gym files")
    parser.add_argument("--cost-model", default="roofline:cpu-nominal", help="prices our models' e-graphs")
    parser.add_argument("--out", default="bench/results/extraction.json")
    args = parser.parse_args()

    paths = [] if args.only_models else sorted(args.dir.glob("*.json"), key=lambda p: p.stat().st_size)
    if args.files:
        paths = [p for p in paths if p.name in set(args.files)]
    if not paths and not args.models:
        print(f"no e-graphs found in {args.dir}", file=sys.stderr)
        return 1

    rows = []
    for path, egraph in [(p, None) for p in paths] + list(_our_egraphs(args.models, args.cost_model)):
        egraph = egraph if egraph is not None else load_egraph_json(path)
        greedy = GreedyExtractor().extract(egraph)
        validate(egraph, greedy.choices)
        extractor = ILPExtractor(time_limit=args.time_limit, mip_rel_gap=args.mip_rel_gap)
        t = time.perf_counter()
        result = extractor.extract(egraph)
        wall = time.perf_counter() - t
        validate(egraph, result.choices)  # complete and acyclic, or this raises
        info = extractor.last_info
        row = {
            "file": path.name if isinstance(path, Path) else path,
            "nodes": egraph.num_nodes,
            "classes": egraph.num_classes,
            "greedy_cost": greedy.cost,
            "greedy_seconds": greedy.seconds,
            "ilp_cost": result.cost,
            "ilp_status": result.status,
            "ilp_bound": result.bound,
            "ilp_gap": result.gap,
            "ilp_seconds": wall,
            "improvement": (greedy.cost - result.cost) / greedy.cost if greedy.cost > 0 else 0.0,
            "reduced_nodes": info.reduction.nodes if info.reduction else None,
            "choice_classes": info.reduction.choice_classes if info.reduction else None,
            "mode": info.mode,
            "lns_iterations": info.lns_iterations,
            "trajectory": info.trajectory,
            "errors": info.errors,
        }
        rows.append(row)
        print(
            f"{row['file']}: greedy {greedy.cost:.4f}, ilp {result.cost:.4f} ({result.status}, "
            f"bound {result.bound:.4f}) in {wall:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    print(f"ILP time limit {args.time_limit:g} s, relative gap {args.mip_rel_gap:g}\n")
    print(
        "| e-graph | nodes | classes | greedy cost | greedy s | ILP cost | vs greedy | status | bound | gap | ILP s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['file']} | {r['nodes']:,} | {r['classes']:,} | {r['greedy_cost']:.4f} | {r['greedy_seconds']:.2f} | "
            f"{r['ilp_cost']:.4f} | {-100 * r['improvement']:+.2f}% | {r['ilp_status']} | {r['ilp_bound']:.4f} | "
            f"{100 * r['ilp_gap']:.2f}% | {r['ilp_seconds']:.1f} |"
        )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "time_limit": args.time_limit,
                "mip_rel_gap": args.mip_rel_gap,
                "machine": {
                    "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine(),
                },
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def _our_egraphs(models: list[str], cost_model_name: str):
    """(label, saturated e-graph snapshot) for each zoo name or ONNX file."""
    from eqsat_dnn import Limits, TensorEGraph, get_cost_model, load_model, saturate, select_rules

    cost_model = get_cost_model(cost_model_name)
    for name in models:
        if Path(name).suffix == ".onnx":
            model, label = name, Path(name).stem
        else:
            from eqsat_dnn.models import zoo

            model, label = zoo.build(name), name
        teg = TensorEGraph(load_model(model))
        report = saturate(teg, select_rules(), Limits())
        print(f"{label}: {report.nodes} e-nodes ({report.stop_reason})", file=sys.stderr, flush=True)
        yield f"{label} (ours)", teg.snapshot(cost_model).egraph


if __name__ == "__main__":
    raise SystemExit(main())
