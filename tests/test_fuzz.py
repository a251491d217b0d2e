"""Fuzzing: random well-typed graphs over the whole op vocabulary, optimized with the whole
rule library and the real extractor, must compute what they computed before.

Each hypothesis example is one model of several independent random subgraphs (dense ones
over rank-2..4 tensors, some with a symbolic batch dimension, and NCHW conv ones), each a
random DAG of vocabulary ops whose shapes are worked out as it is built, with motifs the rules
look for (two matmuls of one input, transposes and reshapes that cancel, cast round trips, slices
of symbolic dims with literal ends that once collided with their encoding) mixed in. The
original and optimized models run in onnxruntime on the same seeded inputs: normals, or one
time in four an edge set (zeros, large magnitudes, infinities) as the output check draws them.

Every generator decision goes through :class:`_Chooser`, so a failing example is replayed
from the list of its decisions alone: a failure's message prints that list, and
``tests/regressions/fuzz_cases.json`` keeps every list that ever failed (see its README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eqsat_dnn import Limits, optimize
from eqsat_dnn.ir.language import OPS, RENAMED
from eqsat_dnn.runtime.check import EDGE_SETS, InputSet, compare_outputs, edge_inputs
from tests.fuzz_graphs import SUBGRAPHS, _Chooser, build_model

EXAMPLES = 125
"""Hypothesis examples per run; each holds :data:`SUBGRAPHS` graphs (500 graphs per run)."""
BATCH = 3
"""What the symbolic dimension ``N`` is fed as."""
REGRESSIONS = Path(__file__).parent / "regressions" / "fuzz_cases.json"
LIMITS = Limits(iterations=3, nodes=4_000, seconds=3.0)
"""Small limits keep an example under a second; the rules still run to several iterations."""


def _session(model: onnx.ModelProto):
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _feeds(model: onnx.ModelProto, inputs: InputSet = InputSet.NORMAL) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    normals = {i.name: rng.standard_normal(
        [d.dim_value if d.HasField("dim_value") else BATCH for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in model.graph.input}
    return normals if inputs is InputSet.NORMAL else edge_inputs(normals, inputs, seed=7)


def check_optimized_matches(model: onnx.ModelProto, choices: list[int], inputs: InputSet = InputSet.NORMAL) -> None:
    """Optimize ``model`` (whole library, real extractor, the default output check) and compare
    its outputs with the original's on an input set of kind ``inputs``, as the check compares:
    element by element, non-finite positions exactly (on infinite inputs, where both are finite)."""
    # the generator's own bugs must not pass for the optimizer's
    onnx.checker.check_model(model, full_check=True)
    feeds = _feeds(model, inputs)
    expected = _session(model).run(None, feeds)
    optimized, _ = optimize(model, limits=LIMITS, extractor="ilp", extract_time_limit=2.0, check=1)
    actual = _session(optimized).run(None, feeds)
    replay = f"replay with choices {json.dumps(choices)} and inputs {inputs.value!r}"
    assert [o.name for o in optimized.graph.output] == [o.name for o in model.graph.output], replay
    for output, x, y in zip(model.graph.output, expected, actual):
        failure, _, _ = compare_outputs(output.name, x, y, 1e-3, 1e-4, finite_only=inputs is InputSet.INFINITIES)
        assert failure is None, f"{failure}; {replay}"


@st.composite
def _cases(draw) -> tuple[onnx.ModelProto, list[int], InputSet]:
    choose = _Chooser(draw=draw)
    model = build_model(choose)
    # one run in four on special values: zeros, large magnitudes or infinities
    inputs = InputSet.NORMAL if choose.chance(75) else choose.element(EDGE_SETS)
    return model, choose.record, inputs


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(_cases())
def test_optimized_random_graphs_compute_the_same(case):
    check_optimized_matches(*case)


def _regressions() -> list[dict]:
    return json.loads(REGRESSIONS.read_text())["cases"]


def test_a_decision_list_replays_to_the_same_graph():
    """What a regression entry relies on: the recorded decisions rebuild the graph exactly."""
    for seed in (3, 4):
        choose = _Chooser(rng=np.random.default_rng(seed))
        model = build_model(choose)
        again = build_model(_Chooser(replay=choose.record))
        assert again.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("case", _regressions() or [
    pytest.param(None, marks=pytest.mark.skip(reason="no fuzz failure recorded in tests/regressions yet"))],
    ids=lambda case: case["name"] if case else "none")
def test_fuzz_regressions(case):
    """Every decision list that once failed, replayed."""
    choose = _Chooser(replay=case["choices"])
    model = build_model(choose, case.get("subgraphs", SUBGRAPHS))
    check_optimized_matches(model, case["choices"], InputSet(case.get("inputs", "normal")))


_DETERMINISM_SCRIPT = """
import hashlib, sys
import numpy as np
from eqsat_dnn import Limits, optimize
from tests.fuzz_graphs import _Chooser, build_model
for seed in (11, 12):
    model = build_model(_Chooser(rng=np.random.default_rng(seed)))
    # iterations, not seconds, bind: a time limit would make the output depend on the machine's load
    optimized, _ = optimize(model, limits=Limits(iterations=3, nodes=100_000, seconds=600), check=0)
    print(hashlib.sha256(optimized.SerializeToString()).hexdigest())
"""


def test_random_graphs_optimize_to_identical_bytes_in_any_process():
    """Determinism: the same model and options give byte-identical output, whatever the
    process's hash seed (set and dict orders differ between such processes)."""
    root = Path(__file__).resolve().parents[1]
    runs = [subprocess.Popen([sys.executable, "-c", _DETERMINISM_SCRIPT], cwd=root, text=True,
                             env=dict(os.environ, PYTHONHASHSEED=hash_seed),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for hash_seed in ("1", "2")]
    digests = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        digests.append(out.split())
    assert len(digests[0]) == 2 and digests[0] == digests[1]


def test_a_recorded_decision_list_rebuilds_the_same_model():
    """What makes a regression case: the decisions alone give back the very same model."""
    for seed in range(20):
        chooser = _Chooser(rng=np.random.default_rng(seed))
        model = build_model(chooser)
        again = build_model(_Chooser(replay=chooser.record))
        assert again.SerializeToString() == model.SerializeToString()


def test_the_generator_covers_the_vocabulary():
    """Every vocabulary op appears in generated graphs (a new op needs a generator function here)."""
    seen: set[str] = set()
    for seed in range(150):
        model = build_model(_Chooser(rng=np.random.default_rng(seed)))
        onnx.checker.check_model(model, full_check=True)
        seen |= {RENAMED[(n.op_type, n.domain)].name if (n.op_type, n.domain) in RENAMED else n.op_type
                 for n in model.graph.node}
    missing = sorted(set(OPS) - seen)
    assert not missing, f"the fuzzer never generates {missing}"
