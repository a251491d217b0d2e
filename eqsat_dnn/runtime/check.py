"""Verification: the optimized model must compute what the original computes.

Both models run in onnxruntime, graph optimizations off, on the same input sets:

* ``runs`` sets of seeded standard normals (integer inputs that index an embedding stay
  inside its rows, booleans are fair coins);
* then the *edge sets*, for the float inputs: all zeros, large magnitudes (normals times
  the fourth root of the dtype's largest value, so that products of up to four stay finite
  and overflow-sensitive rewrites show), and normals with one element in eight replaced by
  +inf or -inf.

Every output is compared element by element: integers and booleans exactly; floats where
both are finite within ``atol + rtol * (|x| + s)``, ``s`` the median magnitude of that
output (so one huge element widens no other element's tolerance, and a value near zero
from cancellation is not held to a tolerance finer than the output's own scale); NaN, +inf
and -inf positions must match exactly. On the infinities set, where the program may rightly
differ in real arithmetic (``x - x`` is 0, not NaN; a kernel zero-padded by a conv merge
turns an infinite neighbour into NaN), only the elements both compute finite are compared,
unless ``exact``: then every position, non-finite ones exactly.

What it cannot see: inputs it does not draw (a rewrite wrong only for some shapes of a
symbolic dim, or for NaN inputs, or for integer inputs outside the drawn ranges), and
errors below the tolerance. Rules are checked by ``eqsat-dnn rules check`` on their own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from eqsat_dnn.errors import InputError
from eqsat_dnn.errors import first_line as _first_line
from eqsat_dnn.io import external
from eqsat_dnn.runtime.sessions import create_session


class InputSet(Enum):
    """The kinds of input set the check feeds both models."""

    NORMAL = "normal"
    ZEROS = "zeros"
    LARGE = "large"
    INFINITIES = "infinities"


EDGE_SETS = (InputSet.ZEROS, InputSet.LARGE, InputSet.INFINITIES)


@dataclass
class CheckReport:
    """Worst disagreement seen over all input sets and outputs."""

    runs: int
    """Normal input sets run (the edge sets come on top, see :attr:`sets`)."""
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    """Largest ``|diff| / (|x| + s)`` over finite elements (see the module doc)."""
    worst_output: str = ""
    failures: list[str] = field(default_factory=list)
    sets: list[InputSet] = field(default_factory=list)
    """Every input set both models ran on."""
    skipped: list[InputSet] = field(default_factory=list)
    """Edge sets the original model itself cannot run on (they prove nothing)."""

    @property
    def ok(self) -> bool:
        return not self.failures


def _session(model: onnx.ModelProto | str | Path):
    """An onnxruntime session with its graph optimizations off: the check compares
    the two graphs as written, not what the runtime makes of them."""
    # log severity 4: its failures become our one-line errors; no log lines of its own
    if isinstance(model, (str, Path)) and os.path.getsize(model) > external.READ_WHOLE_BYTES:
        # a large file with its weights inline: onnxruntime would parse it whole and copy every
        # weight out of the parsed proto; as references it gets them in a data file it maps
        path = Path(model)
        model = external.read_model_file(path)
        external.reference_external_data(model, path.parent)  # any weights in data files too
    # no prepacking: a repacked copy of every weight would double what the check holds
    return create_session(model, optimize=False, log_severity=4, lean=True)


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
                  bounds: dict[str, int] | None = None,
                  sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input; symbolic dims take their size in ``sizes`` (keyed
    by name, or ``input:axis`` for an unnamed one), else ``symbolic_size``."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    bounds = {**_index_bounds(model), **(bounds or {})}
    sizes = sizes or {}
    feeds: dict[str, np.ndarray] = {}
    for info in model.graph.input:
        if info.name in initializers:
            continue
        tt = info.type.tensor_type
        if not info.type.HasField("tensor_type"):
            raise InputError(f"input {info.name!r} is not a tensor; cannot generate check inputs")
        if not tt.HasField("shape"):
            raise InputError(f"input {info.name!r} has no shape (its rank is unknown); cannot generate check inputs")
        dims = [d.dim_value if d.HasField("dim_value") else sizes.get(d.dim_param or f"{info.name}:{axis}",
                                                                      symbolic_size)
                for axis, d in enumerate(tt.shape.dim)]
        _require_memory(info.name, dims)
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


def edge_inputs(feeds: dict[str, np.ndarray], kind: InputSet, seed: int = 0) -> dict[str, np.ndarray]:
    """``feeds`` with every float input replaced by the edge set ``kind`` (same shapes; integer
    and boolean inputs, which may index or select, stay as they are)."""
    rng = np.random.default_rng(seed)
    edged: dict[str, np.ndarray] = {}
    for name, value in feeds.items():
        if not np.issubdtype(value.dtype, np.floating):
            edged[name] = value
        elif kind is InputSet.ZEROS:
            edged[name] = np.zeros_like(value)
        elif kind is InputSet.LARGE:
            big = float(np.finfo(value.dtype).max) ** 0.25
            edged[name] = (value.astype(np.float64) * big).astype(value.dtype)
        elif kind is InputSet.INFINITIES:
            spiked = value.copy()
            where = rng.random(value.shape) < 0.125
            spiked[where] = np.where(rng.random(value.shape) < 0.5, np.inf, -np.inf)[where]
            edged[name] = spiked
        else:
            edged[name] = value
    return edged


def compare_outputs(name: str, x: np.ndarray, y: np.ndarray, rtol: float, atol: float,
                    finite_only: bool = False) -> tuple[str | None, float, float]:
    """Compare one output of the original (``x``) with the optimized model's (``y``);
    ``finite_only`` compares only the elements both compute finite.

    Returns a failure message (``None`` when they agree), the largest absolute and the
    largest scaled difference over the elements both compute finite."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{name}: {y.dtype}{list(y.shape)} instead of {x.dtype}{list(x.shape)}", 0.0, 0.0
    if not np.issubdtype(x.dtype, np.floating):
        return (None if np.array_equal(x, y) else f"{name}: integer outputs differ"), 0.0, 0.0
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    finite_x, finite_y = np.isfinite(x64), np.isfinite(y64)
    if not finite_only:
        for what, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
            if not np.array_equal(test(x64), test(y64)):
                return f"{name}: {what} positions differ", 0.0, 0.0
    both = finite_x & finite_y
    if not both.any():
        return None, 0.0, 0.0
    eps = float(np.finfo(x.dtype).eps)
    rtol, atol = max(rtol, 8 * eps), max(atol, 8 * eps)
    magnitude = np.abs(x64[both])
    scale = float(np.median(magnitude))
    diff = np.abs(x64[both] - y64[both])
    allowed = atol + rtol * (magnitude + scale)
    worst = int(np.argmax(diff - allowed))
    abs_err = float(diff.max())
    with np.errstate(over="ignore"):  # a difference on an all-zero output is infinitely relative
        rel_err = float(np.max(diff / np.maximum(magnitude + scale, 1e-300)))
    if diff[worst] > allowed[worst]:
        return (f"{name}: |diff| {diff[worst]:.3g} at a value of {x64[both][worst]:.3g} "
                f"(allowed {allowed[worst]:.3g})"), abs_err, rel_err
    return None, abs_err, rel_err


def _require_memory(name: str, dims: list[int]) -> None:
    """:class:`InputError` for an input too large to generate (drawn as float64 first) in a
    quarter of this machine's memory: a dim of 2^40 is a mistake, not a check to attempt."""
    needed = 8 * math.prod(dims)
    try:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (OSError, ValueError, AttributeError):
        budget = 4 << 30
    if needed > budget:
        raise InputError(f"input {name!r} of shape {dims} is too large to check: its random values would need "
                         f"{needed / (1 << 30):,.3g} GiB of the {4 * budget / (1 << 30):,.3g} GiB of memory here; "
                         "give smaller dims with --overwrite-input-shape or skip the check with --no-check")


def compare_models(
    original: onnx.ModelProto | str | Path,
    optimized: onnx.ModelProto,
    runs: int = 1,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    seed: int = 0,
    edges: bool = True,
    exact: bool = False,
    sizes: dict[str, int] | None = None,
) -> CheckReport:
    """Run both models on ``runs`` seeded normal input sets, then (``edges``) on the edge
    sets, and compare every output element by element (see the module doc). ``exact``
    compares non-finite positions on the infinities set too; ``sizes`` gives symbolic dims
    their sizes (see :func:`random_inputs`)."""
    report = CheckReport(runs=runs)
    if runs <= 0:
        return report
    names = [o.name for o in optimized.graph.output]
    try:
        a = _session(original)
    except Exception as exc:  # onnxruntime cannot load it: there is nothing to compare with
        raise InputError(f"the check cannot load the original model in onnxruntime ({_first_line(exc)}); "
                         "skip the check with --no-check") from None
    # the optimized model's inputs carry any --overwrite-input-shape dims, and its
    # embedding Gathers (opaque to the rules) bound the integer inputs
    plans = [(InputSet.NORMAL, seed + run, random_inputs(optimized, seed + run, sizes=sizes)) for run in range(runs)]
    if edges and any(np.issubdtype(v.dtype, np.floating) for v in plans[0][2].values()):
        plans += [(kind, seed, edge_inputs(plans[0][2], kind, seed)) for kind in EDGE_SETS]
    # one session at a time: the original's outputs first, then the optimized model's, so that
    # two copies of the weights are never resident together
    expected_by_plan = []
    for kind, set_seed, feeds in plans:
        try:
            expected_by_plan.append(a.run(names, feeds))
        except Exception as exc:  # random inputs need not be valid for every model (indices, shapes)
            if kind is not InputSet.NORMAL:  # the original cannot run on this edge: it proves nothing
                report.skipped.append(kind)
                expected_by_plan.append(None)
                continue
            raise InputError(f"the check cannot run the original model on random inputs ({_first_line(exc)}); "
                             "skip the check with --no-check") from None
    del a
    try:
        b = _session(optimized)
    except Exception as exc:
        report.failures.append(f"onnxruntime cannot load the optimized model: {_first_line(exc)}")
        return report
    for (kind, set_seed, feeds), expected in zip(plans, expected_by_plan):
        if expected is None:
            continue
        report.sets.append(kind)
        try:
            actual = b.run(names, feeds)
        except Exception as exc:
            report.failures.append(f"the optimized model fails in onnxruntime where the original runs "
                                   f"({kind.value} inputs): {_first_line(exc)}")
            return report
        finite_only = kind is InputSet.INFINITIES and not exact
        for name, x, y in zip(names, expected, actual):
            failure, abs_err, rel_err = compare_outputs(name, x, y, rtol, atol, finite_only)
            if abs_err > report.max_abs_error:
                report.max_abs_error, report.worst_output = abs_err, name
            report.max_rel_error = max(report.max_rel_error, rel_err)
            if failure:
                where = f"input set {set_seed - seed}" if kind is InputSet.NORMAL else f"{kind.value} inputs"
                report.failures.append(f"{failure} ({where})")
    return report
