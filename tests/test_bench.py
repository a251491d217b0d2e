"""The bench: one small model through ours and every peer, measured; failures become cells;
the results files; the command's exit codes."""

from __future__ import annotations

import csv
import json
import shutil

import onnx
import pytest
from onnx import numpy_helper

from eqsat_dnn import bench
from eqsat_dnn.models import zoo
from eqsat_dnn.cli import main
from eqsat_dnn.errors import CheckError

SMALL_BERT = dict(seq=16, hidden=64, heads=4, intermediate=128)


@pytest.fixture(scope="module")
def bert_result():
    """A small BERT layer through the whole bench: ours, the four peers, 3 interleaved runs, T4."""
    model = zoo.build("bert_layer", **SMALL_BERT)
    # the ILP reports its status and gap whether or not it proves optimality in 2 s
    settings = bench.BenchSettings(runs=3, min_seconds=0, warmup=1, extract_time_limit=2.0)
    return bench.bench_model("bert_small", model, settings, zoo.get("bert_layer"))


def test_bench_model_measures_ours_and_every_peer(bert_result):
    r = bert_result
    assert r.error is None and r.nodes_before == 38
    ours = r.ours
    assert ours.status == "ok" and ours.nodes == r.nodes_after
    assert ours.latency_ms > 0 and r.latency_ms > 0 and ours.speedup > 0
    assert r.runs == 3 and r.noise > 0
    assert ours.check_rel_error is not None and ours.check_rel_error < 1e-3
    assert r.egraph_nodes >= r.nodes_before and r.saturate_s > 0 and r.extract_s > 0
    assert r.optimize_s >= r.saturate_s + r.extract_s
    assert r.extraction_status and r.predicted_speedup >= 1.0 - 1e-9
    assert r.gpu_profile == "t4" and r.gpu_error is None and r.gpu_predicted_reduction is not None
    assert list(r.versions) == [bench.OURS, *bench.PEERS]
    for peer in bench.PEERS:  # all four are installed with the test extra
        version = r.versions[peer]
        assert version.status == "ok", (peer, version.status)
        assert version.latency_ms > 0 and version.speedup > 0 and version.nodes > 0


def test_results_files(bert_result, tmp_path):
    meta = bench.metadata(bench.BenchSettings(runs=3), 1.0, 2.0)
    paths = bench.write_results([bert_result], tmp_path / "out", meta)
    assert sorted(p.name for p in paths) == ["bench.csv", "bench.json", "bench.md", "bench.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| bert_small |" in md and "onnxsim" in md and "Geometric mean speedup" in md
    rows = list(csv.DictReader((tmp_path / "out" / "bench.csv").open()))
    assert len(rows) == 1 and rows[0]["model"] == "bert_small"
    assert float(rows[0]["eqsat-dnn.speedup"]) == pytest.approx(bert_result.ours.speedup)
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert data["results"][0]["versions"]["onnxscript"]["status"] == "ok"
    assert data["summary"]["geomean_speedup"][bench.OURS] == pytest.approx(bert_result.ours.speedup)
    assert (tmp_path / "out" / "bench.png").read_bytes()[:4] == b"\x89PNG"


def _wrong(model: onnx.ModelProto, tmp) -> onnx.ModelProto:
    """A 'peer' that changes a weight: its output check must fail."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    weight = broken.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2 + 1, weight.name))
    return broken


def _crash(model: onnx.ModelProto, tmp) -> onnx.ModelProto:
    raise RuntimeError("peer exploded\nsecond line")


def test_failing_peers_are_cells_not_crashes(monkeypatch, tmp_path):
    model = zoo.build("gpt2_layer", seq=8, hidden=32, heads=2)
    monkeypatch.setitem(bench._PEER_RUNNERS, "onnxsim", _wrong)
    monkeypatch.setitem(bench._PEER_RUNNERS, "onnxoptimizer", _crash)
    monkeypatch.setattr(bench, "peer_installed", lambda name: name != "onnxscript")
    settings = bench.BenchSettings(runs=2, min_seconds=0, warmup=0, gpu_profile=None, extractor="greedy")
    r = bench.bench_model("gpt2_tiny", model, settings)
    assert r.versions["onnxsim"].status.startswith("check failed: ")
    assert r.versions["onnxsim"].speedup is None  # a wrong model is not timed
    assert r.versions["onnxoptimizer"].status == "failed: RuntimeError: peer exploded"
    assert r.versions["onnxscript"].status == "not installed"
    assert r.versions["ort-offline"].status == "ok" and r.ours.status == "ok"
    row = dict(zip(bench.COLUMNS, bench.table_rows([r])[0]))
    assert row["onnxoptimizer"] == "failed: RuntimeError: peer exploded" and row["GPU pred. (Tensat)"] == "-"


def _small_file(tmp_path) -> str:
    path = tmp_path / "bert_small.onnx"
    onnx.save_model(zoo.build("bert_layer", **SMALL_BERT), str(path))
    return str(path)


def test_cli_bench_on_a_file(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["bench", _small_file(tmp_path), "--runs", "2", "--min-seconds", "0", "--peers", "none",
                 "--gpu-profile", "none", "--extract-time-limit", "1", "--out", str(out)])
    assert code == 0
    assert "bert_small" in capsys.readouterr().out
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["runs"] == 2 and list(data["results"][0]["versions"]) == [bench.OURS]


def test_cli_bench_keeps_each_model_it_measured_when_the_run_stops(tmp_path, monkeypatch):
    """Results are written after each model: a run killed later (out of memory) keeps them."""
    first, second = _small_file(tmp_path), str(tmp_path / "second.onnx")
    shutil.copy(first, second)
    measure = bench.bench_model

    def stop_at_second(name, *args, **kwargs):
        if name == "second":
            raise MemoryError("killed")
        return measure(name, *args, **kwargs)

    monkeypatch.setattr(bench, "bench_model", stop_at_second)
    out = tmp_path / "results"
    code = main(["bench", first, second, "--runs", "1", "--min-seconds", "0", "--peers", "none",
                 "--gpu-profile", "none", "--extract-time-limit", "1", "--out", str(out)])
    assert code != 0
    data = json.loads((out / "bench.json").read_text())
    assert [r["model"] for r in data["results"]] == ["bert_small"] and data["meta"]["partial"] == "1 of 2 models"
    assert "Partial results: 1 of 2 models" in (out / "bench.md").read_text()


def test_cli_bench_check_failure_is_loud(tmp_path, monkeypatch, capsys):
    def disagree(*args, **kwargs):
        raise CheckError("optimized model disagrees with the original: y: max |diff| 1")

    monkeypatch.setattr("eqsat_dnn.pipeline.optimize", disagree)
    out = tmp_path / "results"
    code = main(["bench", _small_file(tmp_path), "--runs", "1", "--min-seconds", "0", "--peers", "ort-offline",
                 "--gpu-profile", "none", "--out", str(out)])
    assert code == 4
    assert "FAILED" in capsys.readouterr().err
    md = (out / "bench.md").read_text()
    assert "**FAILED** bert_small: check failed" in md
    data = json.loads((out / "bench.json").read_text())
    assert data["results"][0]["versions"]["ort-offline"]["speedup"] > 0  # the peers still ran
    assert data["results"][0]["check_failed"] is True  # what picks exit code 4, not the message


@pytest.mark.parametrize("args, code", [
    (["bench", "alexnet"], 2),
    (["bench", "squeezenet", "--peers", "tvm"], 2),
    (["bench", "squeezenet", "--cost-model", "abacus"], 2),
    (["bench", "squeezenet", "--gpu-profile", "abacus"], 2),
    (["bench", "squeezenet", "--runs", "0"], 2),
    (["bench", "missing.onnx"], 2),
    (["bench", "squeezenet", "--out", "/proc/no-such-dir"], 3),
])
def test_cli_bench_refuses_bad_input_before_work(args, code, capsys, tmp_path):
    out = [] if "--out" in args else ["--out", str(tmp_path / "results")]
    assert main(args + out) == code
    err = capsys.readouterr().err
    assert err.startswith("eqsat-dnn: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_measure_latencies_interleaves_for_at_least_runs_and_min_seconds():
    model = zoo.build("bert_layer", seq=8, hidden=32, heads=2, intermediate=64)
    timing = bench.measure_latencies({"a": model, "b": model}, runs=3, min_seconds=0.2, warmup=0)
    assert set(timing.medians) == {"a", "b"} and not timing.failures
    assert 3 <= timing.rounds <= 30 and all(v > 0 for v in timing.medians.values())
    assert timing.speedup("a", "a") == 1.0 and timing.speedup("a", "b") > 0
    assert bench.measure_latencies({"a": model}, runs=4, min_seconds=0).rounds == 4


def test_measure_latencies_creates_every_version_first_once(monkeypatch):
    created: list[str] = []
    real = bench._Timed

    class Recording(real):
        def __init__(self, model, feeds, threads, tmp):
            created.append(model.graph.name)
            super().__init__(model, feeds, threads, tmp)

    monkeypatch.setattr(bench, "_Timed", Recording)
    models = {}
    for name in "abc":
        model = zoo.build("bert_layer", seq=8, hidden=32, heads=2, intermediate=64)
        model.graph.name = name
        models[name] = model
    timing = bench.measure_latencies(models, runs=3, min_seconds=0, warmup=0)
    assert [created[k] for k in (0, 3, 6)] == ["a", "b", "c"] and len(created) == 9
    assert timing.rounds == 3 and all(len(v) == 3 for v in timing.samples.values())
