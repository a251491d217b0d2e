"""The bench's second suite, ``eqsat-dnn bench --suite exports``: real transformer exports.

The models are :data:`eqsat_dnn.models.hf.SUITE` (BERT, GPT-2, ViT, a LLaMA-style decoder,
Qwen2; the other decoder families of :data:`~eqsat_dnn.models.hf.EXPORTS` when named:
transformers models with random weights, exported by torch's dynamo exporter, cached by config
and versions), or ``.onnx`` files. Each goes through :func:`eqsat_dnn.bench.bench_model`
as the zoo's do (ours, the peers, interleaved timing with a placebo), with two more peers by
default, onnxruntime's transformers optimizer (``ort-transformers``, given the model's type,
heads and hidden size) and onnxslim, and the original is profiled in onnxruntime
(:func:`eqsat_dnn.runtime.profile.profile_kernels`) for the share of its kernel time in GEMMs and
convolutions. ``limit`` = 1 / that share is the most a graph rewriter can give, and beside each
speedup the table shows the share of the gap to it that the version closed,
``(speedup - 1) / (limit - 1)``. No GPU column unless a GPU profile is asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import onnx

from eqsat_dnn import bench
from eqsat_dnn.bench import EXPORT_PEERS, OURS, BenchResult, BenchSettings
from eqsat_dnn.errors import InputError, first_line
from eqsat_dnn.models import hf
from eqsat_dnn.runtime.profile import profile_kernels

SUITE = hf.SUITE
"""The suite's models, in order."""

PEERS = EXPORT_PEERS
"""The suite's default peers: the zoo's four, ``ort-transformers`` and ``onnxslim``."""


@dataclass
class ExportOptions:
    """What the exports suite needs beyond :class:`~eqsat_dnn.bench.BenchSettings`."""

    cache_dir: Path = bench.DEFAULT_OUT / "exports" / "cache"
    """Where the exports are kept (one file per config and versions)."""
    sizes: dict[str, dict] = field(default_factory=dict)
    """Size overrides per export name (keys of :attr:`eqsat_dnn.models.hf.HFExport.sizes`)."""
    profile_runs: int = 3
    """Profiled runs of the original for the GEMM share (0: no profile, no limit)."""
    attention: str = hf.ATTENTION
    """transformers' attention implementation the exports are built with (:data:`eqsat_dnn.models.hf.ATTENTION`)."""


def overrides(specs: Sequence[str], items: Sequence[str]) -> dict[str, dict]:
    """``KEY=VALUE`` size overrides (``--set``) -> overrides per export name in ``specs``: a key goes
    to every named export that has that size; a key none of them has is an :class:`InputError`."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        try:
            value = int(text)
        except ValueError:
            value = None
        if not sep or value is None:
            raise InputError(f"bad size override {item!r} (KEY=INT, e.g. layers=4)")
        takers = [s for s in specs if s in hf.EXPORTS and key in hf.EXPORTS[s].sizes]
        if not takers:
            raise InputError(f"size override {key!r}: no named export has it")
        for spec in takers:
            out.setdefault(spec, {})[key] = value
    return out


def resolve(spec: str, options: ExportOptions) -> tuple[str, Callable[[], onnx.ModelProto], hf.HFExport | None]:
    """A spec (an export name or an ``.onnx`` file) -> its name, a loader (exporting into the cache
    when the file is absent) and its export entry. Bad names and sizes are refused at once."""
    if spec.endswith(".onnx") or Path(spec).is_file():
        name, _, load = bench.resolve(spec)
        return name, load, None
    entry = hf.get(spec)
    sizes = options.sizes.get(spec, {})
    try:
        hf.check_sizes(spec, sizes)
    except ValueError as exc:
        raise InputError(f"{spec}: {exc}") from None

    def load() -> onnx.ModelProto:
        return onnx.load(str(hf.cached_export(spec, options.cache_dir, options.attention, **sizes)))

    return entry.name, load, entry


def bench_export(name: str, model: onnx.ModelProto, settings: BenchSettings, options: ExportOptions,
                 entry: hf.HFExport | None = None, progress: Callable[[str], None] | None = None) -> BenchResult:
    """One model of the suite: :func:`eqsat_dnn.bench.bench_model`, then the profile for the limit."""
    say = progress or (lambda message: None)
    peer_options = {}
    if entry is not None:
        sizes = options.sizes.get(entry.name, {})
        peer_options["ort-transformers"] = dict(model_type=entry.ort_model_type, num_heads=entry.heads(**sizes),
                                                hidden_size=entry.hidden(**sizes))
    started = time.perf_counter()
    result = bench.bench_model(name, model, settings, progress=progress, peer_options=peer_options,
                               family=entry.family if entry else "file")
    if options.profile_runs > 0:
        say(f"{name}: profiling the original ({options.profile_runs} runs)")
        try:
            profile = profile_kernels(model, options.profile_runs, settings.threads)
            result.gemm_share, result.limit = profile.gemm_share, profile.limit
        except Exception as exc:  # the limit is a column: its failure is a cell
            result.limit_error = f"failed: {first_line(exc, 300, typed=True)}"
    result.bench_s = time.perf_counter() - started
    return result


def run(specs: Sequence[str], settings: BenchSettings, options: ExportOptions,
        progress: Callable[[str], None] | None = None,
        on_result: Callable[[BenchResult], None] | None = None) -> list[BenchResult]:
    """Benchmark each spec in turn; all are resolved (and bad ones refused) before any work."""
    bench.check_settings(settings)
    resolved = [resolve(spec, options) for spec in specs]
    bench.warm_up(settings)
    results = []
    for index, (name, load, entry) in enumerate(resolved, 1):
        prefix = f"[{index}/{len(resolved)}] "
        say = (lambda message: progress(prefix + message)) if progress else None
        if say:
            say(f"{name}: exporting (or reading the cached export)" if entry else f"{name}: loading")
        results.append(bench_export(name, load(), settings, options, entry, say))
        if on_result:
            on_result(results[-1])
    return results


# ---------------------------------------------------------------------------
# output

COLUMNS = ("model", "nodes", "e-graph", "sat s", "ext s", "total s", "extraction", "predicted",
           "orig ms", "noise", "GEMM share", "limit", OURS, *EXPORT_PEERS)
"""No Tensat or GPU column; the GEMM share, the limit, and beside each speedup the share of the
gap to the limit it closed."""

LEGEND = (
    ". `GEMM share` is the share of the original's kernel time in MatMul, Gemm, FusedMatMul, Conv and "
    "the like (onnxruntime's profiler, same settings); `limit` is 1 / that share, the speedup if every "
    "other kernel took no time; beside each speedup, in parentheses, the share of the gap to the limit "
    "it closed, (speedup - 1) / (limit - 1). The models are torch dynamo exports of transformers models "
    "with random weights (`eqsat_dnn.models.hf`, listed below); ort-transformers is onnxruntime's "
    "`transformers.optimizer.optimize_model` with the model type named below.")


def gap_closed(result: BenchResult, name: str) -> float | None:
    """How much of the gap to the limit version ``name`` closed: ``(speedup - 1) / (limit - 1)``."""
    version = result.versions.get(name)
    if version is None or version.speedup is None or result.limit is None or result.limit <= 1.0 + 1e-9:
        return None
    return (version.speedup - 1.0) / (result.limit - 1.0)


def summary(results: Sequence[BenchResult]) -> dict:
    """:func:`eqsat_dnn.bench.summary` plus ``mean_gap_closed``: per version that has a speedup and a
    limit on every model, the mean share of the gap to the limit it closed."""
    out = bench.summary(results)
    closed = {}
    for name in (OURS, *EXPORT_PEERS):
        values = [gap_closed(r, name) for r in results]
        if values and all(v is not None for v in values):
            closed[name] = sum(values) / len(values)
    out["mean_gap_closed"] = closed
    return out


def _gap_cell(r: BenchResult, name: str) -> str:
    cell = bench._cell(r.versions.get(name)) if name != OURS or not r.error else r.error
    closed = gap_closed(r, name)
    return cell if closed is None else f"{cell} ({closed:.0%})"


def table_rows(results: Sequence[BenchResult]) -> list[list[str]]:
    """The table, one list of cells per model (columns :data:`COLUMNS`)."""
    rows = []
    for r in results:
        extraction = bench.extraction_cell(r)
        rows.append([
            r.model,
            f"{r.nodes_before} -> {r.nodes_after}" if r.nodes_after is not None else str(r.nodes_before),
            "-" if r.egraph_nodes is None else f"{r.egraph_nodes}/{r.egraph_classes}",
            bench._num(r.saturate_s), bench._num(r.extract_s), bench._num(r.optimize_s), extraction,
            "-" if r.predicted_speedup is None else f"{r.predicted_speedup:.3f}x",
            bench._num(r.latency_ms, ".1f"),
            "-" if r.noise is None else f"{r.noise:.3f}x",
            r.limit_error or ("-" if r.gemm_share is None else f"{r.gemm_share:.1%}"),
            "-" if r.limit is None else f"{r.limit:.3f}x",
            *[_gap_cell(r, name) for name in (OURS, *EXPORT_PEERS)],
        ])
    return rows


def rich_table(results: Sequence[BenchResult], title: str = "eqsat-dnn bench --suite exports"):
    return bench.rich_table(results, title, COLUMNS, table_rows(results))


def notes(results: Sequence[BenchResult], meta: dict) -> list[str]:
    """One line per export: what it is, the ort-transformers model type (and why), size overrides."""
    lines = []
    for r in results:
        entry = hf.EXPORTS.get(r.model)
        if entry is None:
            continue
        sizes = {**entry.sizes, **meta.get("export_sizes", {}).get(r.model, {})}
        lines.append(f"- `{r.model}`: {entry.family}; sizes {sizes}; ort-transformers model_type "
                     f"`{entry.ort_model_type}`" + (f" ({entry.ort_note})" if entry.ort_note else ""))
    closed = summary(results)["mean_gap_closed"]
    head = ["Mean share of the gap to the limit closed: "
            + ", ".join(f"{k} {v:.0%}" for k, v in closed.items()) + "."] if closed else []
    return head + (["", "Models:", *lines] if lines else [])


def markdown(results: Sequence[BenchResult], meta: dict) -> str:
    return bench.markdown(results, meta, COLUMNS, table_rows(results), LEGEND, notes(results, meta))


def csv_text(results: Sequence[BenchResult]) -> str:
    return bench.csv_text(results, ("gemm_share", "limit", "limit_error"), (OURS, *EXPORT_PEERS))


def metadata(settings: BenchSettings, options: ExportOptions, load_start: float, load_end: float,
             wall_s: float | None = None) -> dict:
    """:func:`eqsat_dnn.bench.metadata` plus the suite, the sizes, the cache, torch's and transformers'."""
    meta = bench.metadata(settings, load_start, load_end, wall_s)
    for name in ("onnxslim", "torch", "transformers"):
        try:
            meta["versions"][name] = __import__(name).__version__
        except Exception:  # not installed or broken: a cell says so, the version is unknown
            meta["versions"][name] = None
    meta.update(suite="exports", export_sizes=options.sizes, export_cache=str(options.cache_dir),
                profile_runs=options.profile_runs)
    return meta


def write_results(results: Sequence[BenchResult], out_dir: str | Path, meta: dict) -> list[Path]:
    """``bench.md``, ``.csv``, ``.json`` and ``.png`` as the zoo suite writes them, with this suite's table."""
    return bench.write_results(results, out_dir, meta, markdown(results, meta), csv_text(results), summary(results))
