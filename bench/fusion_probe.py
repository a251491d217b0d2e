"""Benchmark: which of onnxruntime's graph fusions make a model slower on this machine?

For each model (zoo names or ``.onnx`` files), every optimizer in ``CANDIDATES`` is disabled in
turn (``InferenceSession(disabled_optimizers=[...])``); those whose absence changes the optimized
graph (compared by op counts of ``optimized_model_filepath``) are timed against the full
``ORT_ENABLE_ALL`` session, interleaved, one thread, median of ``--runs``. A ratio above 1.000x
means the model runs faster without that fusion: a candidate for a lowering in
``eqsat_dnn/lower.py`` (``SkipLayerNormFusion`` is the one this found on onnxruntime 1.32).

A second session of the very same graph is timed too (``placebo``): on this machine a session's
speed depends on when it was created, so a ratio within the placebo's distance from 1.000x is
chance.

    python bench/fusion_probe.py [MODEL ...] [--runs 30] [--out bench/results/fusion_probe.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from eqsat_dnn.models import zoo
from eqsat_dnn.runtime.sessions import create_session

CANDIDATES = """SkipLayerNormFusion BiasGeluFusion GeluFusion FastGeluFusion LayerNormFusion AttentionFusion
EmbedLayerNormFusion MatMulAddFusion GemmActivationFusion ConvActivationFusion ConvAddFusion ConvBNFusion
ConvMulFusion NchwcTransformer TransposeOptimizer MatMulScaleFusion MatmulTransposeFusion BiasSoftmaxFusion
QuickGeluFusion ReshapeFusion GemmTransposeFusion NotWhereFusion SimplifiedLayerNormFusion MatMulBnFusion
GatherToSplitFusion ConcatSliceElimination GemmSumFusion ConstantSharing CommonSubexpressionElimination
BiasDropoutFusion ConvAddActivationFusion PadFusion""".split()
"""onnxruntime graph transformers (by their registered names) that rewrite a CPU model."""


def _session(model: bytes, disabled: list[str], optimized_path: str | None = None) -> ort.InferenceSession:
    return create_session(model, optimize=True, threads=1, optimized_path=optimized_path,
                          disabled_optimizers=disabled)


def _optimized_ops(model: bytes, disabled: list[str], work: Path) -> collections.Counter:
    path = work / f"{'_'.join(disabled) or 'all'}.onnx"
    _session(model, disabled, str(path))
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _feeds(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if "int" in i.type:
            feeds[i.name] = rng.integers(0, 100, shape).astype(np.int64)
        elif "bool" in i.type:
            feeds[i.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def probe(name: str, runs: int) -> dict:
    """The fusions that change ``name``'s optimized graph, each with its speed-up when disabled."""
    model = onnx.load(name) if name.endswith(".onnx") else zoo.build(name)
    data = model.SerializeToString()
    with tempfile.TemporaryDirectory() as work:
        base = _optimized_ops(data, [], Path(work))
        changes = {}
        for candidate in CANDIDATES:
            try:
                ops = _optimized_ops(data, [candidate], Path(work))
            except Exception:  # noqa: BLE001 - a name this onnxruntime build does not know
                continue
            if ops != base:
                changes[candidate] = {"adds": dict(ops - base), "removes": dict(base - ops)}
    variants = {"all": [], "placebo": [], **{c: [c] for c in changes}}
    sessions = {key: _session(data, disabled) for key, disabled in variants.items()}
    feeds = _feeds(sessions["all"])
    for session in sessions.values():
        session.run(None, feeds)
    times: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(runs):
        for key, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            times[key].append(time.perf_counter() - start)
    base_ms = statistics.median(times["all"]) * 1e3
    speedup = {key: base_ms / (statistics.median(t) * 1e3) for key, t in times.items() if key != "all"}
    return {"model": name, "ops": dict(base), "ms": base_ms, "placebo": speedup["placebo"],
            "fusions": {c: dict(changes[c], speedup_when_disabled=speedup[c]) for c in changes}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="zoo names or .onnx files (default: the whole zoo)")
    parser.add_argument("--runs", type=int, default=30, help="interleaved runs per session (default 30)")
    parser.add_argument("--out", default="bench/results/fusion_probe.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    ort.set_default_logger_severity(3)
    results = []
    for name in args.models or zoo.SUITE:
        result = probe(name, args.runs)
        results.append(result)
        print(f"{name}: {result['ms']:.2f} ms, placebo {result['placebo']:.3f}x")
        for fusion, info in result["fusions"].items():
            print(f"  without {fusion:28s} {info['speedup_when_disabled']:.3f}x  "
                  f"(+{info['adds']} -{info['removes']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
