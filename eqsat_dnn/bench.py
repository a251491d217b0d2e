"""The benchmark: how much faster models run after eqsat-dnn, and after its peers.

For each model (a zoo name, see :mod:`eqsat_dnn.models.zoo`, or an ``.onnx`` file) :func:`bench_model`

* runs :func:`~eqsat_dnn.pipeline.optimize` (outputs checked against the original; a failed
  check is reported in the row and makes the command exit 4) and keeps its report: nodes before
  and after, e-graph size, seconds to saturate, to extract and in all, the ILP's status and gap,
  the speedup predicted by the cost model;
* runs the peers that are installed: onnx-simplifier, onnxoptimizer, onnxscript's optimizer and
  onnxruntime's own offline optimization (``ORT_ENABLE_ALL`` saved with
  ``optimized_model_filepath``: it holds CPU-specific fused and NCHWc ops, so it only runs here),
  each output checked like ours; a peer that fails is a cell that says so;
* measures the onnxruntime latency of the original and of every optimized version with
  ``ORT_ENABLE_ALL`` (what a user runs), inputs and outputs bound once, runs interleaved
  between the versions (rotating their order every round), at least ``runs`` rounds (more while
  they took less than ``min_seconds``), one block per version, fresh sessions created in a rotated
  order (the first one runs slower here); a version's speedup is the median over rounds of the
  original's time over its own (paired: where a ratio of medians swings by 30 % on a shared
  machine, the paired median stays within a few percent); a placebo, a second session of the
  original, shows as ``noise`` how far from 1.000x chance moves a ratio here and now;
* optimizes again under a GPU roofline profile (``t4`` by default) for the predicted GPU speedup,
  reported beside Tensat's published figure.

:func:`write_results` writes ``bench.md``, ``bench.csv``, ``bench.json`` and ``bench.png``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from eqsat_dnn.models import zoo
from eqsat_dnn.runtime.check import compare_models, random_inputs
from eqsat_dnn.errors import CheckError, InputError, OutputError, first_line
from eqsat_dnn.eqsat.saturate import Limits
from eqsat_dnn.bench_peers import run_onnxslim, run_ort_transformers
from eqsat_dnn.runtime.sessions import BoundTimer, create_session
from eqsat_dnn.io.files import check_input_file, write_atomic

PEERS: tuple[str, ...] = ("onnxsim", "onnxoptimizer", "onnxscript", "ort-offline")
"""The peers, in the order the table shows them."""

EXPORT_PEERS: tuple[str, ...] = PEERS + ("ort-transformers", "onnxslim")
"""Every peer: the zoo's and, by default in the ``exports`` suite (:mod:`eqsat_dnn.bench_exports`),
onnxruntime's transformers optimizer and onnxslim."""

_PEER_MODULES = {"onnxsim": "onnxsim", "onnxoptimizer": "onnxoptimizer", "onnxscript": "onnxscript",
                 "ort-offline": "onnxruntime", "ort-transformers": "onnxruntime.transformers",
                 "onnxslim": "onnxslim"}
OURS = "eqsat-dnn"

MAX_THREADS = 1024
"""The most onnxruntime intra-op threads ``--threads`` may ask for."""
DEFAULT_OUT = Path("bench") / "results"
SLOWER = 0.99
"""A measured speedup below this counts as slower than the original."""


@dataclass
class BenchSettings:
    """How a benchmark runs."""

    runs: int = 20
    """Least number of timed runs (rounds) per model version; the median is reported."""
    min_seconds: float = 5.0
    """Rounds go on (up to ``10 * runs``) until they took this long: more runs for quick models."""
    threads: int = 1
    """onnxruntime intra-op threads (0: onnxruntime's default, one per core)."""
    peers: tuple[str, ...] = PEERS
    cost_model: str = "roofline:cpu-nominal"
    gpu_profile: str | None = "t4"
    """Roofline profile for the predicted GPU speedup; ``None`` skips that second optimization."""
    limits: Limits = field(default_factory=Limits)
    extractor: str = "ilp"
    extract_time_limit: float = 10.0
    check_runs: int = 1
    warmup: int = 2


@dataclass
class Version:
    """One optimized version of a model (ours or a peer's) and how fast it ran."""

    name: str
    status: str = "ok"
    """``ok``, ``not installed``, ``failed: ...`` or ``check failed: ...``."""
    nodes: int | None = None
    seconds: float | None = None
    """Time the optimizer took."""
    latency_ms: float | None = None
    """Median latency in onnxruntime."""
    speedup: float | None = None
    """Original latency / this latency."""
    check_rel_error: float | None = None


@dataclass
class BenchResult:
    """One model's row."""

    model: str
    family: str
    nodes_before: int
    nodes_after: int | None = None
    egraph_nodes: int | None = None
    egraph_classes: int | None = None
    saturate_s: float | None = None
    extract_s: float | None = None
    optimize_s: float | None = None
    """Load to export, the output check left out (Tensat's times leave verification out too)."""
    check_s: float | None = None
    stop_reason: str | None = None
    extraction_status: str | None = None
    extraction_gap: float | None = None
    cost_model: str = ""
    predicted_speedup: float | None = None
    """Cost before / cost after under ``cost_model``."""
    error: str | None = None
    """Why our optimization failed (a check failure starts with ``check failed``)."""
    check_failed: bool = False
    """Our optimized model disagreed with the original (``error`` says how): exit code 4."""
    latency_ms: float | None = None
    """The original model's median latency."""
    versions: dict[str, Version] = field(default_factory=dict)
    """Ours (``eqsat-dnn``) and the peers, by name."""
    gpu_profile: str | None = None
    gpu_predicted_reduction: float | None = None
    """``(cost before - cost after) / cost before`` under the GPU profile: Tensat's measure."""
    gpu_optimize_s: float | None = None
    gpu_error: str | None = None
    gpu_check_failed: bool = False
    """The model optimized under the GPU profile disagreed with the original: exit code 4."""
    tensat_reduction: float | None = None
    tensat_seconds: float | None = None
    runs: int = 0
    """Timed rounds."""
    noise: float | None = None
    """The original's latency over a second session's of the same model: 1.0 but for chance."""
    load_average: float | None = None
    """The machine's one-minute load average when the latencies were measured."""
    bench_s: float | None = None
    """Wall time of this model's whole benchmark (optimizations, peers, timing)."""
    gemm_share: float | None = None
    """Share of the original's kernel time in GEMMs and convolutions (onnxruntime's profiler)."""
    limit: float | None = None
    """``1 / gemm_share``: the speedup of removing every other kernel's time."""
    limit_error: str | None = None
    """Why the profile failed, if it did."""

    @property
    def ours(self) -> Version:
        return self.versions.get(OURS, Version(OURS, status="missing"))

    def best_peer(self) -> Version | None:
        peers = [v for k, v in self.versions.items() if k != OURS and v.speedup is not None]
        return max(peers, key=lambda v: v.speedup or 0.0) if peers else None


# ---------------------------------------------------------------------------
# models


def resolve(spec: str) -> tuple[str, zoo.ZooModel | None, Callable[[], onnx.ModelProto]]:
    """A model spec (zoo name or ``.onnx`` path) -> its name, zoo entry and a loader.
    Raises :class:`InputError` at once for a name that is neither."""
    if spec.endswith(".onnx") or os.path.isfile(spec):
        path = check_input_file(spec)  # a FIFO or a device: refused before it is opened

        def load() -> onnx.ModelProto:
            try:
                return onnx.load(str(path))
            except Exception as exc:  # protobuf's decode errors have no common base
                raise InputError(f"{spec}: not an ONNX model ({exc.__class__.__name__})") from None

        return path.stem, None, load
    entry = zoo.get(spec)
    return entry.name, entry, lambda: zoo.build(entry.name)


# ---------------------------------------------------------------------------
# the peers


def _run_onnxsim(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return simplified


def _run_onnxoptimizer(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    import onnxoptimizer

    return onnxoptimizer.optimize(model)


def _run_onnxscript(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    from onnxscript import optimizer

    return optimizer.optimize(model)


def _run_ort_offline(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    path = tmp / "ort-offline.onnx"
    create_session(model, optimize=True, optimized_path=path, scratch=tmp)
    return onnx.load(str(path))


_PEER_RUNNERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "onnxsim": _run_onnxsim, "onnxoptimizer": _run_onnxoptimizer, "onnxscript": _run_onnxscript,
    "ort-offline": _run_ort_offline, "ort-transformers": run_ort_transformers, "onnxslim": run_onnxslim,
}


def peer_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(_PEER_MODULES[name]) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


def run_peer(name: str, model: onnx.ModelProto, tmp: Path,
             check_runs: int = 1, options: dict | None = None) -> tuple[Version, onnx.ModelProto | None]:
    """Optimize ``model`` with a peer and check its outputs; failures become the version's status.
    ``options`` are keyword arguments for the peer (``ort-transformers``: ``model_type``,
    ``num_heads``, ``hidden_size``)."""
    if name not in _PEER_RUNNERS:
        raise InputError(f"unknown peer {name!r} (choose from {', '.join(EXPORT_PEERS)})")
    if not peer_installed(name):
        return Version(name, status="not installed"), None
    t = time.perf_counter()
    try:
        optimized = _PEER_RUNNERS[name](model, tmp, **(options or {}))
    except Exception as exc:  # a peer's failure is a table cell, never our crash
        status = f"failed: {first_line(exc, 300, typed=True)}"
        return Version(name, status=status, seconds=time.perf_counter() - t), None
    version = Version(name, nodes=len(optimized.graph.node), seconds=time.perf_counter() - t)
    try:
        report = compare_models(model, optimized, runs=check_runs)
    except Exception as exc:
        version.status = f"failed: check did not run: {first_line(exc, 300, typed=True)}"
        return version, None
    version.check_rel_error = report.max_rel_error
    if not report.ok:
        version.status = f"check failed: {report.failures[0]}"
    return version, optimized


# ---------------------------------------------------------------------------
# latency


class _Timed(BoundTimer):
    """An onnxruntime session with full optimizations, its inputs and outputs bound once."""

    def __init__(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, tmp: Path) -> None:
        super().__init__(create_session(model, optimize=True, threads=threads, scratch=tmp), feeds)


@dataclass
class Latencies:
    """What :func:`measure_latencies` measured."""

    samples: dict[str, list[float]]
    """Seconds per round, per model."""
    failures: dict[str, str]
    """Why a model could not run, per model."""
    rounds: int

    @property
    def medians(self) -> dict[str, float]:
        """Median seconds per model."""
        return {k: statistics.median(v) for k, v in self.samples.items()}

    def speedup(self, baseline: str, name: str) -> float:
        """Median over rounds of ``baseline``'s time over ``name``'s in the same round."""
        return statistics.median(a / b for a, b in zip(self.samples[baseline], self.samples[name]))


def measure_latencies(models: dict[str, onnx.ModelProto], runs: int, threads: int = 1, warmup: int = 2,
                      tmp: Path | None = None, min_seconds: float = 0.0,
                      feeds: dict[str, np.ndarray] | None = None) -> Latencies:
    """Median latency per model: all models get the same seeded inputs, and their runs are
    interleaved, the order rotating every round, so that a change in the machine's load hits
    them all alike. At least ``runs`` rounds, more (up to ``10 * runs``) until ``min_seconds``.

    The rounds are made in one block per model, each with fresh sessions created in a rotated
    order, so that every model is created first once: on this machine a session created
    after others runs up to 8% faster than the same model's first session (NasRNN: the
    placebo measured 0.93x created first and 1.07x created second), and a fixed order would
    hand that to whichever version comes later. ``feeds`` default to seeded random inputs of
    the first model."""
    with tempfile.TemporaryDirectory() as scratch:
        tmp = tmp or Path(scratch)
        if feeds is None:
            feeds = random_inputs(next(iter(models.values())), seed=0)
        failures: dict[str, str] = {}
        names = list(models)
        samples: dict[str, list[float]] = {k: [] for k in names}
        blocks = max(1, len(names))
        rounds, started = 0, time.perf_counter()
        for block in range(blocks):
            timed: dict[str, _Timed] = {}
            for name in names[block:] + names[:block]:
                if name in failures:
                    continue
                try:
                    timed[name] = _Timed(models[name], feeds, threads, tmp)
                except Exception as exc:
                    failures[name] = f"failed: onnxruntime: {first_line(exc, 300, typed=True)}"
            order = [n for n in names if n in timed]
            for r in timed.values():
                for _ in range(warmup):
                    r.once()
            # this block's share of the rounds and of the time
            least = -(-runs * (block + 1) // blocks)
            until = min_seconds * (block + 1) / blocks
            while order and (rounds < least or (time.perf_counter() - started < until and rounds < 10 * runs)):
                shift = rounds % len(order)
                for name in order[shift:] + order[:shift]:
                    samples[name].append(timed[name].once())
                rounds += 1
            del timed
        for name in failures:
            samples.pop(name, None)
        return Latencies(samples, failures, rounds)


# ---------------------------------------------------------------------------
# one model, the suite


def bench_model(name: str, model: onnx.ModelProto, settings: BenchSettings = BenchSettings(),
                entry: zoo.ZooModel | None = None, progress: Callable[[str], None] | None = None,
                peer_options: dict[str, dict] | None = None, family: str | None = None) -> BenchResult:
    """Optimize ``model`` with eqsat-dnn and the peers, measure them all; see the module doc.
    ``peer_options``: keyword arguments per peer (``ort-transformers``: its model type, heads
    and hidden size). ``family``: the model's, for a model that is neither a zoo entry nor the
    user's file (bad input then is a row's failure, not the command's)."""
    from eqsat_dnn.cost import get_cost_model
    from eqsat_dnn.pipeline import optimize

    say = progress or (lambda message: None)
    started = time.perf_counter()
    peer_options = peer_options or {}
    result = BenchResult(model=name, family=family or (entry.family if entry else "file"), nodes_before=len(model.graph.node),
                         cost_model=settings.cost_model,
                         tensat_reduction=entry.tensat_speedup if entry else None,
                         tensat_seconds=entry.tensat_seconds if entry else None)
    versions: dict[str, onnx.ModelProto] = {"original": model, "placebo": model}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        say(f"{name}: optimizing ({settings.cost_model})")
        ours = Version(OURS)
        t = time.perf_counter()
        try:
            optimized, report = optimize(
                model, limits=settings.limits.over_resident(), extractor=settings.extractor,
                extract_time_limit=settings.extract_time_limit, cost_model=get_cost_model(settings.cost_model),
                check=settings.check_runs)
        except CheckError as exc:
            ours.status = result.error = f"check failed: {exc}"
            result.check_failed = True
        except InputError as exc:
            if entry is None and family is None:  # the user's file: bad input stops the command
                raise
            ours.status = result.error = f"failed: {first_line(exc, 300, typed=True)}"
        except Exception as exc:  # an optimizer bug: reported in the row, the suite goes on
            ours.status = result.error = f"failed: {first_line(exc, 300, typed=True)}"
        else:
            seconds = report.seconds
            ours.nodes = result.nodes_after = report.nodes_after
            ours.seconds = result.optimize_s = seconds["total"] - seconds.get("check", 0.0)
            ours.check_rel_error = report.check.max_rel_error if report.check else None
            result.check_s = seconds.get("check")
            result.saturate_s, result.extract_s = seconds.get("saturate"), seconds.get("extract")
            result.egraph_nodes, result.egraph_classes = report.egraph_nodes, report.egraph_classes
            if report.saturation:
                result.stop_reason = report.saturation.stop_reason
            if report.extraction:
                result.extraction_status, result.extraction_gap = report.extraction_status, report.extraction.gap
                if report.lowered:
                    result.extraction_status += f"; {report.lowered} fusion site(s) lowered"
            if report.cost_after > 0:
                result.predicted_speedup = report.cost_before / report.cost_after
            versions[OURS] = optimized
        if ours.status != "ok":
            ours.seconds = time.perf_counter() - t
        result.versions[OURS] = ours

        for peer in settings.peers:
            say(f"{name}: {peer}")
            version, optimized_by_peer = run_peer(peer, model, tmp, settings.check_runs, peer_options.get(peer))
            result.versions[peer] = version
            if optimized_by_peer is not None and version.status == "ok":
                versions[peer] = optimized_by_peer

        say(f"{name}: timing {len(versions)} sessions, at least {settings.runs} runs each")
        result.load_average = os.getloadavg()[0]
        timing = measure_latencies(versions, settings.runs, settings.threads, settings.warmup, tmp,
                                   settings.min_seconds)
        del versions
        result.runs = timing.rounds
        for key, failure in timing.failures.items():
            if key in result.versions:
                result.versions[key].status = failure
        medians = timing.medians
        if "original" not in medians:
            result.error = result.error or f"original model: {timing.failures.get('original')}"
        else:
            result.latency_ms = medians["original"] * 1e3
            result.noise = timing.speedup("original", "placebo")
            for key, value in medians.items():
                if key in result.versions:
                    version = result.versions[key]
                    version.latency_ms, version.speedup = value * 1e3, timing.speedup("original", key)

        if settings.gpu_profile:
            profile = settings.gpu_profile
            result.gpu_profile = profile
            say(f"{name}: optimizing (roofline:{profile})")
            t = time.perf_counter()
            try:
                _, gpu = optimize(model, limits=settings.limits.over_resident(), extractor=settings.extractor,
                                  extract_time_limit=settings.extract_time_limit,
                                  cost_model=get_cost_model(f"roofline:{profile}"), check=settings.check_runs)
                result.gpu_optimize_s = gpu.seconds["total"] - gpu.seconds.get("check", 0.0)
                if gpu.cost_before > 0:
                    result.gpu_predicted_reduction = 1.0 - gpu.cost_after / gpu.cost_before
            except CheckError as exc:
                result.gpu_error = f"check failed: {exc}"
                result.gpu_check_failed = True
            except Exception as exc:
                result.gpu_error = f"failed: {first_line(exc, 300, typed=True)}"
            if result.gpu_error:
                result.gpu_optimize_s = time.perf_counter() - t
    result.bench_s = time.perf_counter() - started
    return result


def check_settings(settings: BenchSettings) -> None:
    """:class:`InputError` for settings no benchmark can run with."""
    from eqsat_dnn.cost import GPU_PROFILES, get_cost_model

    if settings.runs < 1:
        raise InputError(f"--runs must be at least 1 (got {settings.runs})")
    if not 0 <= settings.threads <= MAX_THREADS:
        raise InputError(f"--threads must be 0 or more, at most {MAX_THREADS} (got {settings.threads})")
    if not (math.isfinite(settings.min_seconds) and settings.min_seconds >= 0):
        raise InputError(f"--min-seconds must be a finite number >= 0 (got {settings.min_seconds})")
    limits = settings.limits
    for option, value in (("--time-limit", limits.seconds), ("--extract-time-limit", settings.extract_time_limit)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{option} must be a finite number > 0 (got {value})")
    if limits.iterations < 0:
        raise InputError(f"--iter-limit must be >= 0 (got {limits.iterations})")
    for peer in settings.peers:
        if peer not in EXPORT_PEERS:
            raise InputError(f"unknown peer {peer!r} (choose from {', '.join(EXPORT_PEERS)}, or none)")
    get_cost_model(settings.cost_model)
    if settings.gpu_profile and settings.gpu_profile not in GPU_PROFILES:
        raise InputError(f"unknown --gpu-profile {settings.gpu_profile!r} "
                         f"(choose from {', '.join(GPU_PROFILES)}, or none)")


def require_matplotlib() -> None:
    """:class:`InputError` now, before any work, if ``bench.png`` could not be drawn at the end."""
    try:
        importlib.import_module("matplotlib")
    except Exception as exc:  # missing, or an install that fails to import
        raise InputError(f'bench needs matplotlib for its plot ({first_line(exc, typed=True)}); '
                         'pip install "eqsat-dnn[bench]"') from None


def run_bench(specs: Sequence[str], settings: BenchSettings = BenchSettings(),
              progress: Callable[[str], None] | None = None,
              on_result: Callable[[BenchResult], None] | None = None) -> list[BenchResult]:
    """Benchmark each model spec (zoo name or ``.onnx`` path) in turn; all specs are resolved
    (and bad ones refused) before any work."""
    check_settings(settings)
    resolved = [resolve(spec) for spec in specs]
    warm_up(settings)
    results = []
    for index, (name, entry, load) in enumerate(resolved, 1):
        prefix = f"[{index}/{len(resolved)}] "
        say = (lambda message: progress(prefix + message)) if progress else None
        if say:
            say(f"{name}: building")
        results.append(bench_model(name, load(), settings, entry, say))
        if on_result:
            on_result(results[-1])
    return results


def warm_up(settings: BenchSettings) -> None:
    """Optimize a tiny model once, so that loading egglog, cvxpy, HiGHS and onnxruntime (about
    a second, once per process) is not charged to whichever model the suite times first."""
    from eqsat_dnn.cost import get_cost_model
    from eqsat_dnn.pipeline import optimize

    tiny = zoo.build("bert_layer", seq=8, hidden=32, heads=2, intermediate=64)
    try:
        optimize(tiny, limits=settings.limits, extractor=settings.extractor,
                 extract_time_limit=settings.extract_time_limit, cost_model=get_cost_model(settings.cost_model),
                 check=1)
    except Exception:  # only a warm-up: the models' own runs report what goes wrong
        pass


# ---------------------------------------------------------------------------
# output


def summary(results: Sequence[BenchResult]) -> dict:
    """Geometric means of the measured speedups (over the models every version ran on), the
    models we slow down, and those where a peer beats us."""
    names = [OURS] + [p for p in EXPORT_PEERS if any(p in r.versions for r in results)]
    geomean = {}
    for name in names:
        values = [r.versions[name].speedup for r in results if name in r.versions
                  and r.versions[name].speedup is not None]
        if values and len(values) == len(results):
            geomean[name] = math.exp(sum(math.log(v) for v in values) / len(values))
    slower = [r.model for r in results if r.ours.speedup is not None and r.ours.speedup < SLOWER]
    beaten = []
    for r in results:
        best = r.best_peer()
        if best is not None and best.speedup is not None and (r.ours.speedup is None or best.speedup > r.ours.speedup):
            beaten.append(f"{r.model} ({best.name} {best.speedup:.3f}x)")
    failed = [f"{r.model}: {r.error}" for r in results if r.error]
    return {"geomean_speedup": geomean, "slower_than_original": slower, "peer_faster": beaten,
            "failures": failed, "gpu_failures": [f"{r.model}: {r.gpu_error}" for r in results if r.gpu_error]}


def _cell(version: Version | None) -> str:
    if version is None:
        return "-"
    if version.speedup is not None:
        return f"{version.speedup:.3f}x"
    return version.status


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


COLUMNS = ("model", "nodes", "e-graph", "sat s", "ext s", "total s (Tensat)", "extraction", "predicted",
           "orig ms", "noise", OURS, *PEERS, "GPU pred. (Tensat)")

def extraction_cell(r: BenchResult) -> str:
    """The extraction column: its status, and its gap where the ILP stopped short of optimal."""
    extraction = "-" if r.extraction_status is None else r.extraction_status
    if r.extraction_gap and r.extraction_gap >= 5e-4:
        extraction += f", gap {r.extraction_gap:.1%}"
    return extraction


def table_rows(results: Sequence[BenchResult]) -> list[list[str]]:
    """The table, one list of cells per model (columns :data:`COLUMNS`)."""
    rows = []
    for r in results:
        extraction = extraction_cell(r)
        gpu = r.gpu_error or _pct(r.gpu_predicted_reduction)
        if r.tensat_reduction is not None:
            gpu += f" ({_pct(r.tensat_reduction)})"
        total = _num(r.optimize_s) + (f" ({r.tensat_seconds:g})" if r.tensat_seconds is not None else "")
        rows.append([
            r.model,
            f"{r.nodes_before} -> {r.nodes_after}" if r.nodes_after is not None else str(r.nodes_before),
            "-" if r.egraph_nodes is None else f"{r.egraph_nodes}/{r.egraph_classes}",
            _num(r.saturate_s), _num(r.extract_s), total, extraction,
            "-" if r.predicted_speedup is None else f"{r.predicted_speedup:.3f}x",
            _num(r.latency_ms, ".1f"),
            "-" if r.noise is None else f"{r.noise:.3f}x",
            _cell(r.versions.get(OURS)) if not r.error else r.error,
            *[_cell(r.versions.get(p)) for p in PEERS],
            gpu,
        ])
    return rows


def rich_table(results: Sequence[BenchResult], title: str = "eqsat-dnn bench",
               columns: Sequence[str] = COLUMNS, rows: list[list[str]] | None = None):
    """The table for the terminal (``columns`` and ``rows``: another suite's, default the zoo's)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold",
                         justify="left" if column in ("model", "extraction") else "right")
    at = list(columns).index(OURS)
    for r, row in zip(results, table_rows(results) if rows is None else rows):
        cells = [escape(c) for c in row]
        ours = r.ours.speedup
        if r.error:
            cells[at] = f"[bold red]{cells[at]}[/]"
        elif ours is not None:
            best = r.best_peer()
            beaten = best is not None and best.speedup is not None and best.speedup > ours
            colour = "red" if ours < SLOWER else ("yellow" if beaten else "green")
            cells[at] = f"[{colour}]{cells[at]}[/]"
        table.add_row(*cells)
    return table


def markdown(results: Sequence[BenchResult], meta: dict, columns: Sequence[str] = COLUMNS,
             rows: list[list[str]] | None = None, legend: str | None = None, notes: Sequence[str] = ()) -> str:
    """``bench.md``: how it was run, the table, and the summary (``columns``, ``rows``, the
    ``legend`` of the suite's own columns and ``notes`` after the summary: another suite's)."""
    lines = [
        "# eqsat-dnn bench", "",
        f"{meta['date']}, {meta['machine']}; onnxruntime {meta['versions'].get('onnxruntime')} "
        f"(ORT_ENABLE_ALL, {meta['threads_label']}); median of at least {meta['runs']} interleaved runs "
        f"(more for quick models: {meta['min_seconds']:g} s of rounds at least); "
        f"optimized under `{meta['cost_model']}`; load average {meta['load_average_start']:.1f} at the start, "
        f"{meta['load_average_end']:.1f} at the end"
        + (f"; {meta['wall_s'] / 60:.1f} minutes in all." if meta.get("wall_s") else ".")
        + (f" **Partial results: {meta['partial']}** (the run is going on, or stopped)." if meta.get("partial") else ""),
        "",
        "A speedup is the median over rounds of the original's time over the version's in the same round; "
        "`noise` is the same figure for a second session of the very same model: the size of chance on this "
        "machine at that moment. `orig ms` is the original's median. `total s` is the optimizer's time "
        "without the output check (the libraries were loaded by a warm-up beforehand)" + (legend or (
            ", Tensat's in parentheses; `GPU pred.` is the cost reduction "
            f"`(orig - opt) / orig` predicted under the `roofline:{meta.get('gpu_profile')}` profile when "
            "optimizing for it, Tensat's published figure (GPU, 2024 re-run) in parentheses.")), "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    rows = table_rows(results) if rows is None else rows
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    s = summary(results)
    lines += ["", "Geometric mean speedup: " + (", ".join(f"{k} {v:.3f}x" for k, v in s["geomean_speedup"].items())
                                                 or "-") + "."]
    lines.append(f"Slower than {SLOWER}x after eqsat-dnn: " + (", ".join(s["slower_than_original"]) or "none") + ".")
    lines.append("A peer faster than eqsat-dnn: " + (", ".join(s["peer_faster"]) or "none") + ".")
    for failure in s["failures"] + s["gpu_failures"]:
        lines.append(f"**FAILED** {failure}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def csv_text(results: Sequence[BenchResult], extra_fields: Sequence[str] = (),
             names: Sequence[str] = (OURS, *PEERS)) -> str:
    """``bench.csv``: one flat row per model, every number unformatted (``extra_fields`` of
    :class:`BenchResult` and the versions ``names``: another suite's)."""
    fields = ["model", "family", "nodes_before", "nodes_after", "egraph_nodes", "egraph_classes", "saturate_s",
              "extract_s", "optimize_s", "check_s", "stop_reason", "extraction_status", "extraction_gap",
              "cost_model", "predicted_speedup", "error", "latency_ms", "gpu_profile", "gpu_predicted_reduction",
              "gpu_optimize_s", "gpu_error", "tensat_reduction", "tensat_seconds", "runs", "noise", "load_average",
              "bench_s", *extra_fields]
    version_fields = ["status", "nodes", "seconds", "latency_ms", "speedup"]
    header = fields + [f"{v}.{f}" for v in names for f in version_fields]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in results:
        row = [getattr(r, f) for f in fields]
        for name in names:
            version = r.versions.get(name)
            row += [getattr(version, f) if version else None for f in version_fields]
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def plot(results: Sequence[BenchResult], path: Path) -> None:
    """``bench.png``: measured speedup per model, ours beside the peers'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [OURS] + [p for p in EXPORT_PEERS if any(p in r.versions for r in results)]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(results) + 4), 4.5))
    width = 0.8 / len(names)
    xs = np.arange(len(results))
    for i, name in enumerate(names):
        values = [r.versions[name].speedup if name in r.versions and r.versions[name].speedup else 0.0
                  for r in results]
        ax.bar(xs + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    noise = [(x, r.noise) for x, r in zip(xs, results) if r.noise is not None]
    if noise:  # how far a placebo (the original against itself) landed from 1.0
        ax.hlines([n for _, n in noise], [x - 0.42 for x, _ in noise], [x + 0.42 for x, _ in noise],
                  colors="dimgray", linestyles="dotted", label="noise (placebo)")
    ax.set_xticks(xs, [r.model for r in results], rotation=30, ha="right")
    ax.set_ylabel("speedup (onnxruntime, ORT_ENABLE_ALL)")
    tops = [r.versions[n].speedup for r in results for n in names if n in r.versions and r.versions[n].speedup]
    low = min([0.9] + tops)
    ax.set_ylim(max(0.0, low - 0.05), max([1.1] + tops) + 0.05)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("measured speedup over the original (no bar: failed)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def metadata(settings: BenchSettings, load_start: float, load_end: float, wall_s: float | None = None) -> dict:
    import onnxruntime as ort

    versions = {"onnx": onnx.__version__, "onnxruntime": ort.__version__}
    for name in ("onnxsim", "onnxoptimizer", "onnxscript"):
        if importlib.util.find_spec(name) is not None:
            try:
                versions[name] = getattr(__import__(name), "__version__", "?")
            except Exception:  # a broken install is reported as such, not fatal
                versions[name] = "broken"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores ({platform.machine()})",
        "versions": versions,
        "runs": settings.runs,
        "min_seconds": settings.min_seconds,
        "threads": settings.threads,
        "threads_label": "onnxruntime's default threads" if settings.threads == 0 else f"{settings.threads} thread(s)",
        "cost_model": settings.cost_model,
        "gpu_profile": settings.gpu_profile,
        "limits": asdict(settings.limits),
        "extractor": settings.extractor,
        "extract_time_limit": settings.extract_time_limit,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "wall_s": wall_s,
    }


def write_results(results: Sequence[BenchResult], out_dir: str | Path, meta: dict,
                  md: str | None = None, csv_data: str | None = None, summary_data: dict | None = None) -> list[Path]:
    """Write ``bench.md``, ``bench.csv``, ``bench.json`` and ``bench.png`` into ``out_dir``, each
    atomically; returns their paths. ``md``, ``csv_data``, ``summary_data``: another suite's."""
    out = ensure_out_dir(out_dir)
    payload = {"meta": meta, "summary": summary_data or summary(results), "results": [asdict(r) for r in results]}
    files = {
        "bench.md": (markdown(results, meta) if md is None else md).encode(),
        "bench.csv": (csv_text(results) if csv_data is None else csv_data).encode(),
        "bench.json": (json.dumps(payload, indent=2) + "\n").encode(),
    }
    written = []
    for name, data in files.items():
        written.append(_write_atomic(out / name, lambda path, data=data: path.write_bytes(data)))
    if results:
        written.append(_write_atomic(out / "bench.png", lambda path: plot(results, path)))
    return written


def ensure_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed; :class:`OutputError` if it cannot hold the results."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"{out}: output directory is not writable")
    return out


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    # the temporary file keeps the suffix: matplotlib picks the image format by it
    return write_atomic(path, write, suffix=path.suffix)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
