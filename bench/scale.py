"""Benchmark: peak memory and time of ``eqsat-dnn optimize`` on a large model (issue 17).

Builds models of about 2.3 GB of float32 weights with external data (12 layers,
hidden 2048, intermediate 4096, vocab 16000) and optimizes each through the command line under
``/usr/bin/time -v``, which gives the peak resident memory (its "Maximum resident set size")
and the wall time; then runs the input and the output in onnxruntime on the same inputs, one
after the other, and compares their outputs (exactly, and within the check's tolerance).

* ``llama``: :func:`eqsat_dnn.models.llama.llama`, seeded real weights (a plain ONNX stack);
* ``hf``: a random-weight ``transformers`` ``LlamaForCausalLM`` exported by torch's dynamo
  exporter with external data (:func:`eqsat_dnn.models.exports.export_llama`);
* ``fold``: 136 layers of ``x @ Transpose(w) + x @ w`` over 2048 x 2048 weights (2.28 GB), where
  the optimizer folds a weight expression per layer (the LLaMA models come out as they went in:
  no rewrite pays on them), to measure folding at scale;
* ``gpt2``: GPT-2 small exported by the dynamo exporter, 0.5 GB of weights inline in one file.

    python bench/scale.py [--models llama hf fold] [--tree PATH] [--work DIR] [--keep]
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
from eqsat_dnn.runtime.check import compare_outputs, random_inputs
from eqsat_dnn.runtime.sessions import create_session
source, output = sys.argv[1:3]
feeds = random_inputs(onnx.load(output, load_external_data=False), 0)
expected = create_session(source, optimize=False, lean=True).run(None, feeds)
got = create_session(output, optimize=False, lean=True).run(None, feeds)
agree = [compare_outputs(str(k), a, b, 1e-3, 1e-4)[0] is None for k, (a, b) in enumerate(zip(expected, got))]
print(json.dumps({"outputs_equal": all(np.array_equal(a, b) for a, b in zip(expected, got)),
                  "outputs_agree": all(agree),
                  "max_abs_diff": max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(expected, got)),
                  "max_abs_output": max(float(np.max(np.abs(a))) for a in expected)}))
"""


def build(kind: str, path: Path) -> float:
    """Build ``kind`` at ``path`` unless it is there; the seconds it took (0 when reused)."""
    if path.exists() and (kind == "gpt2" or (path.parent / (path.name + ".data")).exists()):
        return 0.0
    t = time.perf_counter()
    if kind == "llama":
        from eqsat_dnn.models.llama import LlamaConfig, llama

        llama(path, LlamaConfig(**SIZES, batch=1, seq=SEQ), seed=0)
    elif kind == "fold":
        fold_model(path)
    elif kind == "gpt2":
        from eqsat_dnn.models.exports import export_gpt2

        export_gpt2(path)  # GPT-2 small, 0.5 GB, weights inline
    else:
        from eqsat_dnn.models.exports import export_llama

        export_llama(path, **SIZES, seq=SEQ, external_data=True)
    return time.perf_counter() - t


def fold_model(path: Path, n: int = 2048, layers: int = 136) -> None:
    """``layers`` times ``x = x @ Transpose(w_i) + x @ w_i`` over ``n x n`` float32 weights in
    external data (2.28 GB at the defaults): every layer has a weight expression to fold, so
    export evaluates ``layers`` of them, each as large as a weight."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    with open(path.parent / (path.name + ".data"), "wb") as data:
        for i in range(layers):
            w = f"w{i}"
            tensor = TensorProto(name=w, data_type=TensorProto.FLOAT, dims=[n, n], data_location=TensorProto.EXTERNAL)
            for key, value in (("location", path.name + ".data"), ("offset", str(data.tell())),
                               ("length", str(4 * n * n))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            # variance 1 / (2n): each layer keeps the activations' scale (no underflow to zeros)
            data.write((rng.standard_normal((n, n), dtype=np.float32) / np.float32(np.sqrt(2 * n))).tobytes())
            weights.append(tensor)
            nodes += [helper.make_node("Transpose", [w], [f"wt{i}"], perm=[1, 0]),
                      helper.make_node("MatMul", [x, f"wt{i}"], [f"a{i}"]),
                      helper.make_node("MatMul", [x, w], [f"b{i}"]), helper.make_node("Add", [f"a{i}", f"b{i}"], [f"y{i}"])]
            x = f"y{i}"
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, n])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [SEQ, n])], initializer=weights)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def weight_bytes(path: Path) -> int:
    """Bytes of weights: the external data file, plus what the model file holds inline."""
    data = path.parent / (path.name + ".data")
    return (data.stat().st_size if data.exists() else 0) + path.stat().st_size


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
        row["nodes"] = [report["nodes_before"], report["nodes_after"]]
        row["ops_changed"] = {op: [report["ops_before"].get(op, 0), report["ops_after"].get(op, 0)]
                              for op in sorted(set(report["ops_before"]) | set(report["ops_after"]))
                              if report["ops_before"].get(op, 0) != report["ops_after"].get(op, 0)}
    return row


def compare(source: Path, output: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _COMPARE, str(source), str(output)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        return {"outputs_equal": False, "compare_error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=["llama", "hf", "fold", "gpt2"],
                        default=["llama", "hf", "fold", "gpt2"])
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
    print("| model | tree | weights GB | peak RSS GB | peak / weights | seconds | exit | nodes | outputs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        outputs = "-" if "outputs_equal" not in r else (
            "equal" if r["outputs_equal"] else "agree" if r.get("outputs_agree") else "DIFFER")
        nodes = " -> ".join(map(str, r["nodes"])) if "nodes" in r else "-"
        print(f"| {r['model']} | {Path(r['tree']).name} | {r['weights_bytes'] / 1e9:.2f} | "
              f"{r['peak_rss_bytes'] / 1e9:.2f} | {r['peak_over_weights']:.2f}x | {r['seconds']:.1f} | {r['exit']} | "
              f"{nodes} | {outputs} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "sizes": SIZES, "seq": SEQ}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
