"""Benchmark: peak memory and time of ``eqsat-dnn optimize`` on a large model (issue 17).

Builds LLaMA-style models of about 2.3 GB of float32 weights with external data (12 layers,
hidden 2048, intermediate 4096, vocab 16000) and optimizes each through the command line under
``/usr/bin/time -v``, which gives the peak resident memory (its "Maximum resident set size")
and the wall time; then runs the input and the output in onnxruntime on the same inputs, one
after the other, and compares their outputs.

* ``llama``: :func:`eqsat_dnn.models.llama.llama`, seeded real weights (a plain ONNX stack);
* ``hf``: a random-weight ``transformers`` ``LlamaForCausalLM`` exported by torch's dynamo
  exporter with external data (:func:`eqsat_dnn.models.exports.export_llama`).

    python bench/scale.py [--models llama hf] [--tree PATH] [--work DIR] [--keep]
                          [--out bench/results/scale.json] [OPTIMIZE OPTIONS...]

``--tree`` runs the command from another checkout (``--tree /work/main`` gave the "before"
figures). Models are built in ``--work`` (default ``bench/results/scale-work``, reused when
present) and the outputs removed afterwards, the inputs too unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the models are built by this checkout, whichever --tree runs
SIZES = dict(layers=12, hidden=2048, intermediate=4096, heads=16, vocab=16000)
SEQ = 32

_COMPARE = """
import json, sys
import numpy as np
import onnx
from eqsat_dnn.runtime.check import random_inputs
from eqsat_dnn.runtime.sessions import create_session
source, output = sys.argv[1:3]
feeds = random_inputs(onnx.load(output, load_external_data=False), 0)
expected = create_session(source, optimize=False, lean=True).run(None, feeds)
got = create_session(output, optimize=False, lean=True).run(None, feeds)
print(json.dumps({"outputs_equal": all(np.array_equal(a, b) for a, b in zip(expected, got)),
                  "max_abs_diff": max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(expected, got))}))
"""


def build(kind: str, path: Path) -> float:
    """Build ``kind`` at ``path`` unless it is there; the seconds it took (0 when reused)."""
    if path.exists() and (path.parent / (path.name + ".data")).exists():
        return 0.0
    t = time.perf_counter()
    if kind == "llama":
        from eqsat_dnn.models.llama import LlamaConfig, llama

        llama(path, LlamaConfig(**SIZES, batch=1, seq=SEQ), seed=0)
    else:
        from eqsat_dnn.models.exports import export_llama

        export_llama(path, **SIZES, seq=SEQ, external_data=True)
    return time.perf_counter() - t


def weight_bytes(path: Path) -> int:
    """Bytes of weights: the external data file, plus what the model file holds inline."""
    data = path.parent / (path.name + ".data")
    return data.stat().st_size + path.stat().st_size


def optimize(source: Path, output: Path, tree: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "eqsat_dnn.cli", "optimize", str(source), str(output),
               "--json", *extra]
    t = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=source.parent)
    seconds = time.perf_counter() - t
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    errors = [line for line in done.stderr.splitlines() if line.startswith("eqsat-dnn: error")]
    row = {"exit": done.returncode, "peak_rss_bytes": peak, "seconds": round(seconds, 1),
           "error": errors[0] if errors else ""}
    if done.returncode == 0:
        report = json.loads(done.stdout)
        row["stages_s"] = {k: round(v, 2) for k, v in report["seconds"].items()}
        row["check_ok"] = None if report["check"] is None else report["check"]["ok"]
    return row


def compare(source: Path, output: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _COMPARE, str(source), str(output)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        return {"outputs_equal": False, "compare_error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["llama", "hf"], default=["llama", "hf"])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose eqsat_dnn runs (default: this one)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "scale-work")
    parser.add_argument("--keep", action="store_true", help="keep the built input models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args, options = parser.parse_known_args()  # the rest goes to optimize (--extractor greedy ...)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.models:
        source = args.work / f"{kind}.onnx"
        output = args.work / f"{kind}.opt.onnx"
        build_s = build(kind, source)
        row = {"model": kind, "tree": str(args.tree.resolve()), "weights_bytes": weight_bytes(source),
               "build_s": round(build_s, 1), **optimize(source, output, args.tree, options)}
        row["peak_over_weights"] = round(row["peak_rss_bytes"] / row["weights_bytes"], 2)
        if row["exit"] == 0:
            row.update(compare(source, output))
        for path in (output, output.parent / (output.name + ".data")):
            path.unlink(missing_ok=True)
        if not args.keep:
            for path in (source, source.parent / (source.name + ".data")):
                path.unlink(missing_ok=True)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| model | weights GB | peak RSS GB | peak / weights | seconds | exit | outputs equal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['weights_bytes'] / 1e9:.2f} | {r['peak_rss_bytes'] / 1e9:.2f} | "
              f"{r['peak_over_weights']:.2f}x | {r['seconds']:.1f} | {r['exit']} | "
              f"{r.get('outputs_equal', '-')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "sizes": SIZES, "seq": SEQ}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
