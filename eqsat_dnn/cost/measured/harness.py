"""The timing harness: a probe built into an onnxruntime session and sampled.

A :class:`Bench` is a :class:`~eqsat_dnn.cost.measured.probes.Spec` built with random inputs
into a session with the options a user runs (``ORT_ENABLE_ALL``, ``threads`` intra-op threads,
CPU provider, sequential execution: :func:`eqsat_dnn.runtime.sessions.create_session`), its
inputs and outputs bound once (:class:`~eqsat_dnn.runtime.sessions.BoundTimer`).
:func:`measure_benches` samples several, round-robin, and keeps each one's median.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from typing import Any

import numpy as np
import onnx

from eqsat_dnn.cost.measured.probes import Spec, Unmeasurable
from eqsat_dnn.errors import first_line
from eqsat_dnn.runtime.sessions import BoundTimer, create_session


class Bench:
    """One built session, ready to be sampled (its :attr:`timer`); ``reorders``: the NCHWc
    reorders onnxruntime put at the probe's edge (a ``layout`` spec's only)."""

    def __init__(self, spec: Spec, threads: int, seed: int = 0) -> None:
        model, feeds = spec.build(np.random.default_rng(seed))
        self.reorders: list[list[Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "opt.onnx") if spec.layout else None
            try:
                # log severity 4: a probe that fails is reported by its exception, not on stderr
                session = create_session(model, optimize=True, threads=threads, log_severity=4,
                                         optimized_path=path)
                self.timer = BoundTimer(session, feeds)
            except Exception as exc:  # onnxruntime raises its own types for every failure
                raise Unmeasurable(first_line(exc)) from None
            if path and os.path.exists(path):
                self.reorders = _reorders(onnx.load(path, load_external_data=False), self.timer.feeds,
                                          dict(zip(spec.outputs, self.timer.outputs)))
        try:
            self.timer.run()
        except Exception as exc:  # a probe that runs with session.run but not bound
            raise Unmeasurable(first_line(exc)) from None


def _reorders(optimized: onnx.ModelProto, feeds: dict[str, np.ndarray],
              outputs: dict[str, np.ndarray]) -> list[list[Any]]:
    """The NCHWc reorders onnxruntime put at the probe model's edge: ["in", shape] for a
    ReorderInput of a graph input, ["out", shape, channels] for a ReorderOutput of a graph output."""
    found = []
    for node in optimized.graph.node:
        if node.domain != "com.microsoft.nchwc":
            continue
        if node.op_type == "ReorderInput" and node.input[0] in feeds:
            found.append(["in", list(feeds[node.input[0]].shape)])
        elif node.op_type == "ReorderOutput" and node.output[0] in outputs:
            channels = next((a.i for a in node.attribute if a.name == "channels"), 0)
            found.append(["out", list(outputs[node.output[0]].shape), int(channels)])
    return found


def measure_benches(benches: list[Bench], runs: int, min_sample: float, interleave: bool) -> list[float]:
    """Median per-run seconds of each bench; samples taken round-robin when ``interleave``."""
    timers = [bench.timer for bench in benches]
    for timer in timers:
        timer.warm(min_sample)
    samples: list[list[float]] = [[] for _ in timers]
    if interleave:
        for _ in range(runs):
            for k, timer in enumerate(timers):
                samples[k].append(timer.sample())
    else:
        for k, timer in enumerate(timers):
            samples[k] = [timer.sample() for _ in range(runs)]
    return [statistics.median(s) for s in samples]


__all__ = ["Bench", "measure_benches"]
