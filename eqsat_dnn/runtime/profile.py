"""Where a model's kernel time goes in onnxruntime: the GEMM share and the limit it sets.

:func:`profile_kernels` runs a model with ``SessionOptions.enable_profiling`` (through
:func:`~eqsat_dnn.runtime.sessions.create_session`, ``ORT_ENABLE_ALL``, as the bench times it)
and sums the kernel time of each operator type. :attr:`KernelProfile.gemm_share` is the share
spent in GEMMs and convolutions (:data:`GEMM_OPS`); :attr:`KernelProfile.limit`, ``1 / share``,
is the speedup a graph rewriter would reach if it removed every other kernel's time, the most
rewriting can give without making the GEMMs themselves faster.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from eqsat_dnn.runtime.check import random_inputs
from eqsat_dnn.runtime.sessions import create_session

GEMM_OPS = frozenset({"MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul",
                      "MatMulNBits", "DynamicQuantizeMatMul", "Conv", "FusedConv", "NhwcFusedConv",
                      "QLinearConv", "ConvInteger", "ConvTranspose", "NhwcConv"})
"""Operators whose kernel time counts as GEMM-and-convolution time."""


@dataclass
class KernelProfile:
    """Kernel time per operator type (:func:`profile_kernels`)."""

    by_op: dict[str, float]
    """Microseconds of kernel time per operator type, summed over the profiled runs."""
    runs: int

    @property
    def total_us(self) -> float:
        return sum(self.by_op.values())

    @property
    def gemm_share(self) -> float:
        """Share of kernel time in :data:`GEMM_OPS`."""
        total = self.total_us
        return sum(v for k, v in self.by_op.items() if k in GEMM_OPS) / total if total > 0 else 0.0

    @property
    def limit(self) -> float | None:
        """``1 / gemm_share``: the speedup if everything but the GEMMs and convolutions took no time."""
        share = self.gemm_share
        return 1.0 / share if share > 0 else None


def profile_kernels(model: onnx.ModelProto, runs: int = 3, threads: int = 1, warmup: int = 1,
                    scratch: str | Path | None = None) -> KernelProfile:
    """Profile ``model`` in onnxruntime (``ORT_ENABLE_ALL``, ``threads`` intra-op threads, the
    bench's seeded inputs): kernel time per operator type over ``runs`` runs. The ``warmup``
    runs before them are profiled too (profiling is per session) and left out by their
    ``model_run`` spans."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        session = create_session(model, optimize=True, threads=threads, profiling=True, scratch=tmp)
        names = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in random_inputs(model, seed=0).items() if k in names}
        for _ in range(warmup + runs):
            session.run(None, feeds)
        path = Path(session.end_profiling())
        try:
            events = json.loads(path.read_text())
        finally:
            path.unlink(missing_ok=True)  # onnxruntime writes it in the working directory
    # one "model_run" event per run; a run's kernel events fall inside its span
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    counted = spans[warmup:]
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if counted and not any(a <= e["ts"] <= b for a, b in counted):
            continue
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + float(e.get("dur", 0))
    return KernelProfile(by_op, len(counted) or runs)


__all__ = ["GEMM_OPS", "KernelProfile", "profile_kernels"]
