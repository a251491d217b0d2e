"""The oracle: running programs in onnxruntime and comparing what they compute."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from eqsat_dnn.io.onnx_out import to_onnx
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.verify.instances import Instance
from eqsat_dnn.runtime.sessions import create_session
from eqsat_dnn.verify.results import Counterexample

_SMALL = 24
"""Tensors up to this many elements are shown in full in counterexamples."""


def _session(model: onnx.ModelProto):
    # instances the runtime refuses are expected: no log lines
    return create_session(model, optimize=False, threads=1, log_severity=4)


class NoKernel(Exception):
    """The runtime has no kernel for some op at this dtype."""


def run_graph(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a Graph in onnxruntime; raises with the runtime's message when it cannot."""
    model = to_onnx(graph, fold_constants=False)
    try:
        session = _session(model)
        outputs = session.run(list(graph.outputs), feeds)
    except Exception as exc:
        text = str(exc)
        if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
            raise NoKernel(text) from None
        raise
    return dict(zip(graph.outputs, outputs))


@dataclass
class Check:
    """Two values the rule claims equal."""

    reference: str
    """The value every other term of the class must equal."""
    other: str
    """A value computed by the rewritten (one-step) term, or another original value."""
    rhs: str
    """The other term as text."""
    lhs: str
    """The reference term as text."""



def compare(x: np.ndarray, y: np.ndarray, rtol: float, atol: float) -> tuple[str, float, float]:
    """('', error, scale) when equal within tolerance, else a description of the difference."""
    if x.shape != y.shape:
        return f"shapes differ: {list(x.shape)} on the left, {list(y.shape)} on the right", math.inf, 0.0
    if x.dtype != y.dtype:
        return f"dtypes differ: {x.dtype} on the left, {y.dtype} on the right", math.inf, 0.0
    if x.size == 0:
        return "", 0.0, 0.0
    if not np.issubdtype(x.dtype, np.floating):  # masks and indices: equal or wrong
        wrong = int(np.count_nonzero(x != y))
        return (f"values differ: {wrong} of {x.size} elements" if wrong else "", float(bool(wrong)), 1.0)
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    if not np.array_equal(nan_x, nan_y):
        return "NaN on one side only", math.inf, 0.0
    inf_x, inf_y = np.isinf(x), np.isinf(y)
    if not np.array_equal(np.where(inf_x, x, 0), np.where(inf_y, y, 0)):
        return "infinities differ", math.inf, 0.0
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return "", 0.0, 0.0
    a, b = x[finite].astype(np.float64), y[finite].astype(np.float64)
    err = float(np.max(np.abs(a - b)))
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(b))))
    if err > atol + rtol * scale:
        return f"values differ: max |lhs - rhs| = {err:.3g} on values up to {scale:.3g}", err, scale
    return "", err, scale


def summarize(array: np.ndarray) -> Any:
    array = np.asarray(array)
    if array.size <= _SMALL:
        return np.round(array.astype(np.float64), 4).tolist()
    finite = array[np.isfinite(array)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    return f"{array.dtype}{list(array.shape)} in [{low:.3g}, {high:.3g}]"


def counterexample(inst: Instance, check: Check, feeds: dict, values: dict, message: str,
                   err: float | None = None, scale: float | None = None) -> Counterexample:
    shown: dict[str, Any] = {name: summarize(array) for name, array in {**feeds, **inst.weights}.items()}
    if check.reference in values:
        shown["lhs"] = summarize(values[check.reference])
    if check.other in values:
        shown["rhs"] = summarize(values[check.other])
    return Counterexample(
        message=message,
        lhs=check.lhs,
        rhs=check.rhs,
        inputs=inst.type_names(),
        attributes=dict(inst.attributes),
        max_abs_error=None if err is None or not math.isfinite(err) else err,
        scale=scale,
        values=shown,
        symbolic=inst.symbolic,
    )
