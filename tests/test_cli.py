"""The command line: outputs, JSON, and one-line errors with documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from eqsat_dnn.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eqsat_dnn.cli", *args], capture_output=True, text=True)


def test_optimize_writes_a_checked_model(example_path, tmp_path):
    out = tmp_path / "out.onnx"
    before = example_path.read_bytes()
    result = _cli("optimize", str(example_path), str(out), "--extractor", "greedy", "--check", "2")
    assert result.returncode == 0, result.stderr
    assert "MatMul" in result.stdout and "total" in result.stdout
    onnx.checker.check_model(str(out), full_check=True)
    assert example_path.read_bytes() == before


def test_optimize_json_is_one_object(example_path, tmp_path):
    result = _cli("optimize", str(example_path), str(tmp_path / "o.onnx"), "--json", "--extractor", "greedy")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nodes_after"] < data["nodes_before"]
    assert data["check"]["ok"] is True
    assert data["saturation"]["stop_reason"] in {"saturated", "iteration limit", "node limit", "time limit"}


def test_version_and_rules_list(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert "eqsat-dnn" in capsys.readouterr().out
    assert main(["rules", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"identity-elim", "matmul-distribute-right"} <= {r["name"] for r in listed}
    assert all(r["description"] for r in listed)


def test_extract_command_json(tmp_path):
    egraph = {
        "nodes": {
            "a": {"op": "x", "children": [], "eclass": "c0", "cost": 1.0},
            "b": {"op": "f", "children": ["a"], "eclass": "c1", "cost": 5.0},
            "c": {"op": "g", "children": ["a"], "eclass": "c1", "cost": 2.0},
        },
        "root_eclasses": ["c1"],
    }
    path = tmp_path / "e.json"
    path.write_text(json.dumps(egraph))
    result = _cli("extract", str(path), "--extractor", "greedy", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["choices"] == {"c0": "a", "c1": "c"} and data["cost"] == 3.0


def test_output_is_byte_identical_across_runs(example_path, tmp_path):
    import os

    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}.onnx"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run([sys.executable, "-m", "eqsat_dnn.cli", "optimize", str(example_path), str(out),
                                 "--quiet"], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_extractor_choices_are_the_registry(capsys):
    from eqsat_dnn.extract import EXTRACTORS
    from eqsat_dnn.extract.greedy import GreedyExtractor

    assert list(EXTRACTORS) == ["ilp", "greedy"] and EXTRACTORS["greedy"] is GreedyExtractor
    for command in (["optimize", "in.onnx", "out.onnx"], ["extract", "e.json"], ["bench"]):
        with pytest.raises(SystemExit) as done:
            main([*command, "--extractor", "simplex"])
        assert done.value.code == 2
        assert "(choose from 'ilp', 'greedy')" in capsys.readouterr().err


def test_package_import_stays_light():
    code = ("import sys, eqsat_dnn, eqsat_dnn.extract; "
            "print(sorted(m for m in ('cvxpy', 'highspy', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_exact_mode_from_the_command_line(tmp_path, example_path):
    """--exact admits only the rules that hold in IEEE float (rules/README.md)."""
    out = tmp_path / "out.onnx"
    result = _cli("optimize", str(example_path), str(out), "--exact", "--extractor", "greedy", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    from eqsat_dnn.eqsat.rules import Arithmetic, default_rules
    assert report["rules"] == sum(r.arithmetic is Arithmetic.EXACT for r in default_rules())
    assert report["check"]["ok"] and "infinities" in report["check"]["sets"]
