"""The saturation runner: limits, stop reasons, per-iteration reports, k_multi."""

from __future__ import annotations

import json
from pathlib import Path

import eqsat_dnn as ed
from eqsat_dnn.models.examples import attention_block

MULTI = str(Path(__file__).resolve().parents[1] / "rules" / "multi")


def _run(limits: ed.Limits, rules=None) -> ed.SaturationReport:
    teg = ed.TensorEGraph(ed.load_model(attention_block()))
    return ed.saturate(teg, rules if rules is not None else ed.select_rules(), limits)


def test_report_per_iteration():
    report = _run(ed.Limits())
    assert report.stop_reason == "saturated"
    assert report.initial_nodes > 0 and report.nodes >= report.initial_nodes
    assert [it.index for it in report.iterations] == list(range(1, len(report.iterations) + 1))
    assert all(it.seconds >= 0 and it.nodes > 0 for it in report.iterations)
    assert sum(report.matches_per_rule().values()) > 0


def test_each_limit_is_a_stop_reason():
    assert _run(ed.Limits(iterations=2)).stop_reason == "iteration limit"
    assert _run(ed.Limits(nodes=40)).stop_reason == "node limit"
    assert _run(ed.Limits(seconds=0.0)).stop_reason == "time limit"
    assert _run(ed.Limits(), rules=[]).stop_reason == "no rules"


def test_stop_reasons_are_one_enum_that_reads_as_its_text():
    reason = _run(ed.Limits(iterations=1)).stop_reason
    assert reason is ed.SaturationStop.ITERATION_LIMIT and isinstance(reason, str)
    assert f"stop: {reason}" == "stop: iteration limit" and json.dumps(reason) == '"iteration limit"'
    assert ed.SaturationReport().stop_reason is ed.SaturationStop.NOT_RUN


def test_multi_rules_run_only_in_the_first_iterations():
    rules = ed.select_rules() + ed.select_rules([MULTI])
    for k in (0, 1, 2):
        report = _run(ed.Limits(multi_iterations=k), rules)
        fired = [it.index for it in report.iterations if any(n.startswith("multi-") for n in it.matches)]
        assert fired == list(range(1, k + 1)), (k, fired)


def test_multi_rules_pair_the_programs_own_operators():
    """A residual block: conv A reads x, conv B reads x + y. No two convs of the program share an
    input, so no merge; conv-expand-input's halves (B over x) must not be paired with A first."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), n) for n in ("wa", "wb")]
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"]), helper.make_node("Add", ["x", "y"], ["s"]),
             helper.make_node("Conv", ["s", "wb"], ["b"]), helper.make_node("Add", ["a", "b"], ["out"])]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, 4, 4])  # noqa: E731
    model = helper.make_model(helper.make_graph(nodes, "residual", [value("x"), value("y")], [value("out")], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    teg = ed.TensorEGraph(ed.load_model(model))
    report = ed.saturate(teg, ed.select_rules() + ed.select_rules([MULTI]), ed.Limits(iterations=3))
    matches = report.matches_per_rule()
    assert matches.get("conv-expand-input", 0) >= 1  # the halves do appear
    assert not any(name.startswith("multi-conv") for name in matches), matches
