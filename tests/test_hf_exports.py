"""The exports suite: HF architectures exported by dynamo (tiny configs), cached; the bench on them
with the GEMM-share limit; ``optimize --measure``."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from eqsat_dnn import bench, bench_exports  # noqa: E402
from eqsat_dnn.cli import main  # noqa: E402
from eqsat_dnn.errors import InputError  # noqa: E402
from eqsat_dnn.models import hf, zoo  # noqa: E402
from eqsat_dnn.runtime.profile import profile_kernels  # noqa: E402
from eqsat_dnn.speedup import measure_or_error  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-cache")


def assert_tiny_export_matches_torch(cache, name: str) -> None:
    """The tiny export of ``name`` passes onnx's checker, has the module's interface and computes
    what the torch module computes."""
    path = hf.cached_export(name, cache, **hf.TINY[name])
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert any(n.op_type == "MatMul" or n.op_type == "Gemm" for n in model.graph.node)
    module, inputs, input_names, output_names = hf.module_and_inputs(name, **hf.TINY[name])
    assert [i.name for i in model.graph.input] == input_names
    assert [o.name for o in model.graph.output] == output_names
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in zip(input_names, inputs)})
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", hf.SUITE)
def test_tiny_export_builds_loads_and_matches_torch(cache, name):
    assert_tiny_export_matches_torch(cache, name)


def test_llama_style_export_has_gqa_rmsnorm_rope_swiglu(cache):
    cfg = hf.config("llama", **hf.TINY["llama"])
    assert cfg.num_key_value_heads < cfg.num_attention_heads and cfg.hidden_act == "silu"
    ops = {n.op_type for n in onnx.load(str(hf.cached_export("llama", cache, **hf.TINY["llama"]))).graph.node}
    assert {"Pow", "ReduceMean", "Sqrt", "Reciprocal"} <= ops  # RMSNorm
    assert {"Sigmoid", "Neg", "Slice", "Concat"} <= ops  # SwiGLU's SiLU, RoPE's rotate-half
    assert "LayerNormalization" not in ops


def test_cache_is_keyed_by_config_and_versions(cache, monkeypatch):
    path = hf.cached_export("gpt2", cache, **hf.TINY["gpt2"])
    stamp = path.stat().st_mtime_ns
    assert hf.cached_export("gpt2", cache, **hf.TINY["gpt2"]) == path  # no second export
    assert path.stat().st_mtime_ns == stamp
    key = hf.config_key("llama", **hf.TINY["llama"])
    assert hf.config_key("llama", **{**hf.TINY["llama"], "kv_heads": 4}) != key
    import transformers

    monkeypatch.setattr(transformers, "__version__", "0.0.0")
    other = hf.config_key("llama", **hf.TINY["llama"])
    assert other != key
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert hf.config_key("llama", **hf.TINY["llama"]) not in (key, other)
    assert list(cache.glob(".*")) == []  # no half-written files left


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="kv_heads"):
        hf.config("llama", **{**hf.TINY["llama"], "kv_heads": 3})
    with pytest.raises(ValueError, match="unknown size"):
        hf.config_key("vit", seq=16)
    with pytest.raises(InputError, match="unknown export"):
        hf.get("t5")
    assert bench_exports.overrides(["bert", "vit"], ["layers=3", "seq=64"]) == {
        "bert": {"layers": 3, "seq": 64}, "vit": {"layers": 3}}
    with pytest.raises(InputError, match="no named export"):
        bench_exports.overrides(["vit"], ["seq=64"])
    with pytest.raises(InputError, match="bad size override"):
        bench_exports.overrides(["vit"], ["layers=two"])


def test_profile_gives_the_gemm_share_and_limit():
    profile = profile_kernels(zoo.build("gpt2_layer", seq=32, hidden=128, heads=4), runs=2)
    assert profile.runs == 2 and profile.total_us > 0
    assert 0.3 < profile.gemm_share < 1.0 and profile.limit == pytest.approx(1 / profile.gemm_share)
    assert profile.by_op.get("Gemm", 0) + profile.by_op.get("MatMul", 0) + profile.by_op.get("FusedMatMul", 0) > 0


TINY_SET = [f"--set={k}={v}" for k, v in hf.TINY["llama"].items()]


def test_cli_exports_suite_end_to_end(cache, tmp_path, capsys):
    hf.cached_export("llama", cache, **hf.TINY["llama"])  # the suite reads it from the cache
    out = tmp_path / "results"
    code = main(["bench", "--suite", "exports", "llama", *TINY_SET, "--runs", "2", "--min-seconds", "0",
                 "--extract-time-limit", "2", "--cache", str(cache), "--out", str(out)])
    assert code == 0
    assert "llama" in capsys.readouterr().out
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["suite"] == "exports" and data["meta"]["export_sizes"] == {"llama": hf.TINY["llama"]}
    r = data["results"][0]
    assert r["model"] == "llama" and r["error"] is None and r["gpu_profile"] is None
    assert 0 < r["gemm_share"] < 1 and r["limit"] == pytest.approx(1 / r["gemm_share"])
    assert list(r["versions"]) == [bench.OURS, *bench.EXPORT_PEERS]
    for name, version in r["versions"].items():
        assert version["status"] == "ok", (name, version["status"])
        assert version["speedup"] > 0
    assert "mean_gap_closed" in data["summary"]
    md = (out / "bench.md").read_text()
    assert "| GEMM share | limit |" in md and "ort-transformers model_type `qwen3`" in md
    header = (out / "bench.csv").read_text().splitlines()[0]
    assert "limit" in header and "onnxslim.speedup" in header


def _crash(model, tmp, **options):
    raise IndexError("list index out of range\nmore")


def test_crashing_export_peers_are_cells(cache, monkeypatch):
    model = onnx.load(str(hf.cached_export("llama", cache, **hf.TINY["llama"])))
    seen = {}

    def record(model, tmp, **options):
        seen.update(options)
        raise RuntimeError("fusion failed")

    monkeypatch.setitem(bench._PEER_RUNNERS, "ort-transformers", record)
    monkeypatch.setitem(bench._PEER_RUNNERS, "onnxslim", _crash)
    settings = bench.BenchSettings(runs=1, min_seconds=0, warmup=0, gpu_profile=None, extractor="greedy",
                                   peers=("ort-transformers", "onnxslim"))
    options = bench_exports.ExportOptions(cache_dir=cache, sizes={"llama": hf.TINY["llama"]}, profile_runs=1)
    r = bench_exports.bench_export("llama", model, settings, options, hf.get("llama"))
    assert seen == {"model_type": "qwen3", "num_heads": 4, "hidden_size": 64}
    assert r.versions["ort-transformers"].status == "failed: RuntimeError: fusion failed"
    assert r.versions["onnxslim"].status == "failed: IndexError: list index out of range"
    assert r.ours.status == "ok" and r.limit is not None
    row = dict(zip(bench_exports.COLUMNS, bench_exports.table_rows([r])[0]))
    assert row["onnxslim"] == "failed: IndexError: list index out of range"
    assert row["limit"].endswith("x") and "(" in row[bench.OURS]


def test_gap_closed():
    r = bench.BenchResult("m", "f", 1, limit=1.5)
    r.versions["a"] = bench.Version("a", speedup=1.1)
    assert bench_exports.gap_closed(r, "a") == pytest.approx(0.2)
    assert bench_exports.gap_closed(r, "b") is None
    r.limit = None
    assert bench_exports.gap_closed(r, "a") is None


def test_optimize_measure_json(example_path, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code = main(["optimize", str(example_path), str(out), "--measure", "--measure-runs", "2", "--json",
                 "--extract-time-limit", "2"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    measured = data["measured"]
    assert set(measured) >= {"speedup", "placebo", "runs", "threads"}
    assert measured["threads"] == 1 and measured["runs"] >= 2
    assert measured["speedup"] > 0 and measured["placebo"] > 0


def test_optimize_measure_table_and_threads(example_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")  # rich wraps at 80 columns otherwise
    code = main(["optimize", str(example_path), str(tmp_path / "out.onnx"), "--measure", "--measure-runs", "1",
                 "--measure-threads", "2", "--extract-time-limit", "2"])
    assert code == 0
    text = capsys.readouterr().out
    assert "measured" in text and "placebo" in text and "2 thread" in text


def test_optimize_without_measure_has_no_measured(example_path, tmp_path, capsys):
    assert main(["optimize", str(example_path), str(tmp_path / "o.onnx"), "--json", "--extract-time-limit", "2"]) == 0
    assert "measured" not in json.loads(capsys.readouterr().out)


def test_measure_failure_is_reported_not_raised():
    broken = onnx.ModelProto()
    broken.CopyFrom(zoo.build("gpt2_layer", seq=8, hidden=32, heads=2))
    broken.graph.node[0].op_type = "NoSuchOp"
    measured = measure_or_error(zoo.build("gpt2_layer", seq=8, hidden=32, heads=2), broken, runs=1)
    assert measured["error"].startswith("not measured: ")


def test_exports_suite_writes_beside_the_zoo_by_default(tmp_path, monkeypatch):
    """Without --out the suite writes to bench/results/exports (the zoo's bench.md is not
    overwritten) and caches under bench/results/exports/cache."""
    seen = {}

    def fake_run(specs, settings, options, progress=None, on_result=None):
        seen.update(specs=list(specs), cache=options.cache_dir, peers=settings.peers, gpu=settings.gpu_profile)
        return []

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench_exports, "run", fake_run)
    assert main(["bench", "--suite", "exports", "--runs", "1"]) == 0
    assert seen == {"specs": list(hf.SUITE), "cache": tmp_path.joinpath("bench/results/exports/cache").relative_to(
        tmp_path), "peers": bench.EXPORT_PEERS, "gpu": None}
    assert (tmp_path / "bench/results/exports/bench.md").is_file()
    assert not (tmp_path / "bench/results/bench.md").exists()
    assert main(["bench", "--set", "layers=1"]) == 2  # --set is the exports suite's


def test_a_dynamic_export_pinned_to_a_shape_fuses_like_a_static_one(tmp_path):
    from eqsat_dnn.io.onnx_in import load_model
    from eqsat_dnn.pipeline import optimize

    path = hf.export("llama", tmp_path / "dynamic.onnx", dynamic=True, **hf.TINY["llama"])
    seq = hf.TINY["llama"]["seq"]
    pinned = {"input_ids": [1, seq], "attention_mask": [1, seq]}
    graph = load_model(path, input_shapes=pinned)
    assert not [n.op_type for n in graph.nodes if n.op == "Opaque"]  # reshape targets are constants now
    _, report = optimize(str(path), input_shapes=pinned)
    fused = {"RMSNormalization", "RotaryEmbedding", "Attention", "QuickGelu"}
    assert fused & set(report.ops_after) >= {"RMSNormalization", "QuickGelu"}
    assert report.check is not None and report.check.ok and report.repair is None


@pytest.mark.parametrize("name, fused", [
    ("bert", {"attention"}),  # Attention or MultiHeadAttention: the cost model's choice at the probes
    ("llama", {"Attention", "RMSNormalization", "RotaryEmbedding"}),  # frequencies of one batch row, broadcast
    ("cohere", {"RotaryEmbedding"}),  # interleaved pairs, broadcast likewise
])
def test_a_dynamic_export_left_symbolic_fuses_and_keeps_its_dims(tmp_path, name, fused):
    """Unpinned, the symbolic dims are searched at probe sizes (eqsat_dnn.io.probes) and given back:
    the output fuses and runs at any batch and sequence the input runs at."""
    from eqsat_dnn.pipeline import optimize

    path = hf.export(name, tmp_path / "dynamic.onnx", dynamic=True, **hf.TINY[name])
    original = onnx.load(str(path))
    optimized, report = optimize(str(path))
    assert not report.probes_fallback and set(report.probes.sizes) == {"batch", "seq"}
    ops = set(report.ops_after) | ({"attention"} if {"Attention", "MultiHeadAttention"} & set(report.ops_after) else set())
    assert fused <= ops and "Softmax" not in ops
    assert report.check is not None and report.check.ok and report.repair is None

    def dims(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    assert dims(optimized.graph.input) == dims(original.graph.input)
    assert dims(optimized.graph.output) == dims(original.graph.output)
    ours = ort.InferenceSession(optimized.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, seq in ((1, 7), (3, 4)):
        feeds = {"input_ids": rng.integers(0, 32, (batch, seq)).astype(np.int64),
                 "attention_mask": np.ones((batch, seq), np.int64)}
        feeds["attention_mask"][-1, -2:] = 0  # a padded row
        for got, want in zip(ours.run(None, feeds), theirs.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attention", hf.ATTENTIONS)
@pytest.mark.parametrize("name", hf.SUITE)
def test_either_attention_export_fuses_its_attention(cache, name, attention):
    """transformers' SDPA (its default: torch's exporter decomposes it with the scale on Q and on K,
    K^T as a 3-D transpose and the NaN guard) and its eager attention both become one fused op."""
    from eqsat_dnn.pipeline import optimize

    model = onnx.load(str(hf.cached_export(name, cache, attention, **hf.TINY[name])))
    assert ("IsNaN" in {n.op_type for n in model.graph.node}) == (attention == "sdpa")
    _, report = optimize(model)
    assert report.check is not None and report.check.ok and report.repair is None
    assert {"Attention", "MultiHeadAttention", "com.microsoft.Attention"} & set(report.ops_after)
    assert "Softmax" not in report.ops_after and "IsNaN" not in report.ops_after


def test_the_attention_is_part_of_the_cache_key():
    assert hf.config_key("llama", "sdpa", **hf.TINY["llama"]) != hf.config_key("llama", "eager", **hf.TINY["llama"])
    assert hf.config_key("bert", "sdpa", **hf.TINY["bert"]) != hf.config_key("bert", "eager", **hf.TINY["bert"])
    # BLOOM has no SDPA path: both ask for the same (eager) export
    assert hf.config_key("bloom", "sdpa", **hf.TINY["bloom"]) == hf.config_key("bloom", "eager", **hf.TINY["bloom"])
    with pytest.raises(ValueError, match="attention must be one of"):
        hf.config_key("llama", "flash", **hf.TINY["llama"])
