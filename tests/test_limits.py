"""Limits that hold: saturation stops at its node, time and memory limits (checked after
every rule family), the ILP falls back to the greedy program when its time runs out, with a
warning, and every stop reason reaches the report (its table, its JSON and its warnings).

The largest model of the zoo (nasneta, 547 nodes) is run with tiny limits: the run stops
at the limit and still writes a valid, checked model.
"""

from __future__ import annotations

import importlib
import json

import onnx
import pytest

from eqsat_dnn import Limits, optimize
from eqsat_dnn.models import zoo
from eqsat_dnn.cli import main
from eqsat_dnn.models.examples import attention_block
from eqsat_dnn.extract.greedy import GreedyExtractor
from eqsat_dnn.extract.ilp import ILPExtractor
from eqsat_dnn.io.onnx_out import check_model
from eqsat_dnn.pipeline import extract

# ``eqsat_dnn.eqsat.saturate`` is also the name of the function the package exports
saturate_module = importlib.import_module("eqsat_dnn.eqsat.saturate")


LARGEST = "nasneta"
"""The zoo's largest model by node count (547 nodes; inception_v3 is next with 313)."""


@pytest.fixture(scope="module")
def largest_zoo_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / f"{LARGEST}.onnx"
    onnx.save_model(zoo.build(LARGEST), path)
    return path


def test_tiny_memory_limit_on_the_largest_model(largest_zoo_model, tmp_path, capfd):
    """Loading alone takes more than 1 MiB: one line, exit 1, nothing written."""
    out = tmp_path / "out.onnx"
    code = main(["optimize", str(largest_zoo_model), str(out), "--memory-limit", "1", "--extractor", "greedy",
                 "--json"])
    captured = capfd.readouterr()
    assert code == 1 and captured.err.count("\n") == 1 and "after loading" in captured.err, captured.err
    assert not out.exists()


def test_saturation_stops_at_the_memory_limit(largest_zoo_model, tmp_path, capfd, monkeypatch):
    """A limit crossed while saturating stops the search; the result is valid and checked."""
    from eqsat_dnn import pipeline, search

    for module in (pipeline, search):  # room to load and build, none to grow
        monkeypatch.setattr(module, "within_memory", lambda limits, stage: None)
    out = tmp_path / "out.onnx"
    code = main(["optimize", str(largest_zoo_model), str(out), "--memory-limit", "1", "--extractor", "greedy",
                 "--json"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["saturation"]["stop_reason"] == "memory limit"
    assert report["saturation"]["iterations"] == []
    assert any("memory limit" in w for w in report["warnings"])
    assert report["check"]["ok"]
    check_model(onnx.load(out))


def test_tiny_node_limit_on_the_largest_model(largest_zoo_model):
    optimized, report = optimize(str(largest_zoo_model), limits=Limits(nodes=10), extractor="greedy", check=0)
    assert report.saturation.stop_reason == "node limit" and not report.saturation.iterations
    check_model(optimized)


def test_node_limit_stops_within_one_family():
    """With room for some growth, the run stops in the iteration that crosses the limit,
    after the family that crossed it."""
    first = optimize(attention_block(), limits=Limits(iterations=1), extractor="greedy", check=0)[1]
    grown = first.saturation.nodes - first.saturation.initial_nodes
    assert grown > 0, "one iteration of the library should grow the example's e-graph"
    limit = first.saturation.initial_nodes + grown // 2
    _, report = optimize(attention_block(), limits=Limits(nodes=limit), extractor="greedy", check=1)
    assert report.saturation.stop_reason == "node limit"
    assert len(report.saturation.iterations) == 1
    assert limit <= report.saturation.nodes <= first.saturation.nodes
    assert report.check.ok


def test_memory_limit_reached_during_an_iteration(monkeypatch):
    """Memory is read after every family: reaching the limit mid-iteration ends that
    iteration and then the run, with the reason in the report."""
    readings = iter([100.0] * 3 + [10_000.0] * 1000)
    monkeypatch.setattr(saturate_module, "resident_mb", lambda: next(readings))
    optimized, report = optimize(attention_block(), limits=Limits(memory_mb=5_000), extractor="greedy", check=1)
    assert report.saturation.stop_reason == "memory limit"
    assert len(report.saturation.iterations) == 1
    assert report.check.ok and report.warnings


def test_a_fixpoint_family_reads_the_limits_after_every_round(monkeypatch, tmp_path):
    """A simplification family that never reaches its fixpoint (each round adds a term) stops at
    the first round after which a limit is reached, not after its 32 rounds."""
    from eqsat_dnn import TensorEGraph, load_model, saturate
    from eqsat_dnn.eqsat.rules import parse_rule_file

    path = tmp_path / "growing.egg"
    path.write_text(";; schedule: fixpoint\n;; relu(x) = relu(x + (x - x)), a new term every round\n"
                    '(rewrite (Relu x) (Relu (Add x (Sub x x))) :name "grow")\n')
    rules = parse_rule_file(path)
    teg = TensorEGraph(load_model(attention_block()))
    unlimited = saturate(teg, rules, Limits(iterations=1))
    assert unlimited.matches_per_rule()["grow"] > 8
    readings = iter([100.0] + [10_000.0] * 1000)  # the iteration starts below the limit
    monkeypatch.setattr(saturate_module, "resident_mb", lambda: next(readings))
    teg = TensorEGraph(load_model(attention_block()))
    limited = saturate(teg, rules, Limits(iterations=2, memory_mb=5_000))
    assert limited.stop_reason == "memory limit"
    assert limited.matches_per_rule()["grow"] == 1


def test_time_limit():
    _, report = optimize(attention_block(), limits=Limits(seconds=1e-6), extractor="greedy", check=0)
    assert report.saturation.stop_reason == "time limit"


def test_resident_memory_is_read():
    assert 10 < saturate_module.resident_mb() < 24_000


def test_ilp_time_out_falls_back_to_greedy_with_a_warning():
    _, report = optimize(attention_block(), extractor="ilp", extract_time_limit=1e-3, check=1)
    extraction = report.extraction
    assert extraction.status.startswith("greedy") and extraction.stop_reason == "time limit"
    assert "falling back to the greedy program" in extraction.warning
    assert report.to_dict()["warnings"] == [extraction.warning]
    assert report.to_dict()["extraction"]["stop_reason"] == "time limit"
    assert report.check.ok


def test_ilp_within_its_time_reports_optimal_and_no_warning():
    _, report = optimize(attention_block(), extractor="ilp", extract_time_limit=30, check=0)
    assert report.extraction.stop_reason == "optimal" and not report.warnings


def test_ilp_time_out_on_a_large_egraph_keeps_greedy(tmp_path):
    """A real e-graph the ILP cannot finish in 0.3 s: the greedy program, flagged."""
    from tests.conftest import SHARED

    path = SHARED / "reference" / "extraction-gym" / "vgg.json"
    if not path.exists():
        pytest.skip("needs ../shared/reference/extraction-gym")
    greedy = extract(str(path), GreedyExtractor())
    result = extract(str(path), ILPExtractor(time_limit=0.3))
    assert result.stop_reason == "time limit" and result.warning
    assert result.cost <= greedy.cost + 1e-9


def test_cli_prints_the_warning(tmp_path, capfd):
    source = tmp_path / "in.onnx"
    onnx.save_model(attention_block(), source)
    code = main(["optimize", str(source), str(tmp_path / "out.onnx"), "--extract-time-limit", "0.001"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "eqsat-dnn: warning: ILP extraction reached its 0.001 s time limit" in captured.err
    assert "stop: time limit" in captured.out  # the stages table


def test_the_memory_limit_covers_loading():
    """Defect 2 of the reliability issue: the limit applied to saturation alone."""
    from eqsat_dnn.errors import ResourceLimitError
    from eqsat_dnn.models.examples import attention_block

    with pytest.raises(ResourceLimitError, match="after loading"):
        optimize(attention_block(), limits=Limits(memory_mb=1.0), extractor="greedy")


def test_a_process_optimizing_model_after_model_counts_the_memory_limit_from_what_it_holds():
    from eqsat_dnn.eqsat.saturate import resident_mb

    limits = Limits(memory_mb=100.0)
    later = limits.over_resident()
    assert later.memory_mb >= 100.0 + 0.5 * resident_mb() and later.nodes == limits.nodes
    assert limits.memory_mb == 100.0  # frozen: a new Limits
