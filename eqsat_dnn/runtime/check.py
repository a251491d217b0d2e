"""Verification: the optimized model must compute what the original computes.

Both models run in onnxruntime on the same seeded random inputs, valid for
their dtypes (integer inputs that index an embedding stay inside its rows), and
every output must agree within tolerances scaled to the output's magnitude.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from eqsat_dnn.errors import InputError
from eqsat_dnn.io.protos import weight_bytes


@dataclass
class CheckReport:
    """Worst disagreement seen over all input sets and outputs."""

    runs: int
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst_output: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _session(model: onnx.ModelProto | str | Path):
    """An onnxruntime session with its graph optimizations off: the check compares
    the two graphs as written, not what the runtime makes of them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its failures become our one-line errors; no log lines of its own
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = ["CPUExecutionProvider"]
    if isinstance(model, (str, Path)):
        return ort.InferenceSession(str(model), options, providers=providers)
    if weight_bytes(model) < 1_800_000_000:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.data")
        return ort.InferenceSession(str(path), options, providers=providers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:200]


def _index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used as Gather indices -> number of rows they may index."""
    sizes = {t.name: list(t.dims) for t in model.graph.initializer}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in sizes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = sizes[node.input[0]]
            if dims:
                bounds[node.input[1]] = min(bounds.get(node.input[1], 1 << 62), dims[axis])
    return bounds


def random_inputs(model: onnx.ModelProto, seed: int, symbolic_size: int = 2,
                  bounds: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input; symbolic dims take ``symbolic_size``."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    bounds = {**_index_bounds(model), **(bounds or {})}
    feeds: dict[str, np.ndarray] = {}
    for info in model.graph.input:
        if info.name in initializers:
            continue
        tt = info.type.tensor_type
        if not info.type.HasField("tensor_type"):
            raise InputError(f"input {info.name!r} is not a tensor; cannot generate check inputs")
        if not tt.HasField("shape"):
            raise InputError(f"input {info.name!r} has no shape (its rank is unknown); cannot generate check inputs")
        dims = [d.dim_value if d.HasField("dim_value") else symbolic_size for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            value = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            value = rng.random(dims) < 0.5
        elif np.issubdtype(dtype, np.integer):
            high = bounds.get(info.name, 2)
            value = rng.integers(0, max(1, high), size=dims).astype(dtype)
        else:
            raise InputError(f"input {info.name!r} has dtype {dtype}; cannot generate check inputs")
        feeds[info.name] = np.asarray(value)  # a rank-0 comparison gives a numpy scalar, not an array
    return feeds


def compare_models(
    original: onnx.ModelProto | str | Path,
    optimized: onnx.ModelProto,
    runs: int = 1,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    seed: int = 0,
) -> CheckReport:
    """Run both models on ``runs`` seeded input sets and compare every output."""
    report = CheckReport(runs=runs)
    if runs <= 0:
        return report
    names = [o.name for o in optimized.graph.output]
    try:
        a = _session(original)
    except Exception as exc:  # onnxruntime cannot load it: there is nothing to compare with
        raise InputError(f"the check cannot load the original model in onnxruntime ({_first_line(exc)}); "
                         "skip the check with --no-check") from None
    try:
        b = _session(optimized)
    except Exception as exc:
        report.failures.append(f"onnxruntime cannot load the optimized model: {_first_line(exc)}")
        return report
    for run in range(runs):
        # the optimized model's inputs carry any --overwrite-input-shape dims, and its
        # embedding Gathers (opaque to the rules) bound the integer inputs
        feeds = random_inputs(optimized, seed + run)
        try:
            expected = a.run(names, feeds)
        except Exception as exc:  # random inputs need not be valid for every model (indices, shapes)
            raise InputError(f"the check cannot run the original model on random inputs ({_first_line(exc)}); "
                             "skip the check with --no-check") from None
        try:
            actual = b.run(names, feeds)
        except Exception as exc:
            report.failures.append(f"the optimized model fails in onnxruntime where the original runs: "
                                   f"{_first_line(exc)}")
            return report
        for name, x, y in zip(names, expected, actual):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype:
                report.failures.append(f"{name}: {y.dtype}{list(y.shape)} instead of {x.dtype}{list(x.shape)}")
                continue
            if not np.issubdtype(x.dtype, np.floating):
                if not np.array_equal(x, y):
                    report.failures.append(f"{name}: integer outputs differ")
                continue
            finite = np.isfinite(x) & np.isfinite(y)
            if not np.array_equal(np.isfinite(x), np.isfinite(y)):
                report.failures.append(f"{name}: non-finite values differ")
                continue
            if not finite.any():
                continue
            diff = np.abs(x[finite].astype(np.float64) - y[finite].astype(np.float64))
            scale = float(np.max(np.abs(x[finite]))) if finite.any() else 1.0
            abs_err = float(diff.max())
            rel_err = abs_err / max(scale, 1e-12)
            if abs_err > report.max_abs_error:
                report.max_abs_error, report.worst_output = abs_err, name
            report.max_rel_error = max(report.max_rel_error, rel_err)
            if abs_err > atol + rtol * scale:
                report.failures.append(f"{name}: max |diff| {abs_err:.3g} on values up to {scale:.3g} (input set {run})")
    return report
