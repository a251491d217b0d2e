"""The measured speedup of an optimized model over its input: ``eqsat-dnn optimize --measure``.

It times the two models with the benchmark's timer (:func:`eqsat_dnn.bench.measure_latencies`:
``ORT_ENABLE_ALL``, interleaved rounds, fresh sessions per block, a placebo session of the
input beside them), so that a speedup printed by ``optimize`` means what the bench's does.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from eqsat_dnn.bench import measure_latencies
from eqsat_dnn.errors import first_line
from eqsat_dnn.runtime.check import random_inputs


def measure_speedup(original: str | Path | onnx.ModelProto, optimized: onnx.ModelProto, runs: int = 20,
                    threads: int = 1, min_seconds: float = 2.0, warmup: int = 2,
                    sizes: dict[str, int] | None = None) -> dict:
    """Time ``original`` (a model or its file) and ``optimized`` in onnxruntime as the bench does
    (:func:`measure_latencies`: ``ORT_ENABLE_ALL``, interleaved rounds, fresh sessions per block, a
    placebo session of the original beside them): ``{"speedup", "placebo", "runs", "threads",
    "original_ms", "optimized_ms"}``, a speedup being the median over rounds of the original's time
    over the other's. What ``eqsat-dnn optimize --measure`` prints. The inputs are the optimized
    model's seeded random inputs (its shapes are the concrete ones where input shapes were
    overwritten; symbolic dims take their ``sizes``, with ``"sizes"`` in the result, else 2).
    :class:`RuntimeError` if either model does not run."""
    if not isinstance(original, onnx.ModelProto):
        original = onnx.load(str(original))
    timing = measure_latencies({"original": original, "placebo": original, "optimized": optimized}, runs,
                               threads, warmup, min_seconds=min_seconds, feeds=random_inputs(optimized, seed=0, sizes=sizes))
    if timing.failures:
        name, why = next(iter(timing.failures.items()))
        raise RuntimeError(f"cannot time the {name} model: {why}")
    medians = timing.medians
    return {"speedup": timing.speedup("original", "optimized"), "placebo": timing.speedup("original", "placebo"),
            "runs": timing.rounds, "threads": threads, "original_ms": medians["original"] * 1e3,
            "optimized_ms": medians["optimized"] * 1e3, **({"sizes": sizes} if sizes else {})}


def measure_or_error(original: str | Path | onnx.ModelProto, optimized: onnx.ModelProto, runs: int = 20,
                     threads: int = 1, sizes: dict[str, int] | None = None) -> dict:
    """:func:`measure_speedup`, or ``{"error": "..."}`` (one line) when timing fails: a measurement
    is an addition to an optimization that already succeeded, never its failure."""
    try:
        return measure_speedup(original, optimized, runs=runs, threads=threads, sizes=sizes)
    except Exception as exc:
        return {"error": f"not measured: {first_line(exc, 300, typed=True)}", "threads": threads}
