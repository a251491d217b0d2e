"""ONNX conformance: onnx's backend node tests, run in onnxruntime before and after optimizing.

A deterministic sample of the ~1,880 cases: the first case (by name) of every op type the
suite has, so every op is seen at least once, plus the cases that once failed here. The
whole suite is ``python bench/conformance.py``. A case that onnxruntime passes unoptimized
must pass optimized; no case may crash the optimizer or its own random-input check.
"""

from __future__ import annotations

import pytest

from eqsat_dnn.runtime.conformance import node_cases, run_case

REGRESSIONS = {
    # onnx's version converter drops Scan-8's batch axis from the graph inputs: such models
    # must stay at their opset, all opaque
    "test_scan_sum": "opset conversion changed the graph inputs",
    # a Constant read only inside a Scan body was dropped from the optimized model's weights
    "test_linear_attention_linear_expanded": "weight read only by a subgraph",
    # onnx's full check fails the original (MeanVarianceNormalization's function body)
    "test_mvn": "the input itself fails the full check",
    # no default-domain opset at all
    "test_ai_onnx_ml_binarizer": "ai.onnx.ml-only model",
    "test_ai_onnx_ml_label_encoder_string_int": "ai.onnx.ml-only model with strings",
    # a rank-0 bool input: numpy gave the check a scalar, not an array
    "test_if": "rank-0 bool check input",
    "test_loop11": "rank-0 bool check input, loop body",
    # random inputs that onnxruntime rejects (duplicate axes, division by zero, float8 outputs):
    # the check must refuse in one line, not crash
    "test_slice": "random indices rejected by onnxruntime",
    "test_div_uint8": "integer division by zero on random inputs",
    "test_cast_FLOAT_to_FLOAT8E5M2": "an output type numpy cannot hold",
    "test_string_concat": "string inputs",
    "test_sequence_insert_at_back": "sequence inputs",
    "test_optional_has_element_empty_optional_input": "an empty optional input",
}


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in node_cases()}


def _sample(cases: dict) -> list[str]:
    first_per_op: dict[tuple[str, str], str] = {}
    for name in sorted(cases):
        for node in cases[name].model.graph.node:
            first_per_op.setdefault((node.domain, node.op_type), name)
    return sorted(set(first_per_op.values()) | {name for name in REGRESSIONS if name in cases})


def test_node_tests_pass_after_optimizing(cases):
    sample = _sample(cases)
    assert len(sample) > 150, "onnx's node-test suite looks smaller than expected"
    results = [run_case(cases[name]) for name in sample]
    broken = [f"{r.name}: {r.verdict}: {r.detail}" for r in results if r.verdict in ("new failure", "crash")]
    assert not broken, "\n".join(broken)
    mismatched = [f"{r.name}: {r.detail}" for r in results if r.self_check == "mismatch"]
    assert not mismatched, "\n".join(mismatched)
    passing = [r for r in results if r.original == "pass"]
    # the bar is meaningful only if onnxruntime passes most of them and we refuse few
    assert len(passing) > 0.8 * len(results)
    refused = [r for r in passing if r.verdict == "refused"]
    assert len(refused) <= 0.05 * len(passing), "\n".join(f"{r.name}: {r.detail}" for r in refused)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_cases_are_in_the_suite(cases, name):
    assert name in cases, f"onnx no longer has {name} ({REGRESSIONS[name]}): pick another case"


def test_the_optimizer_changes_some_node_tests(cases):
    """The sample is not passed through untouched: some graphs really are rewritten."""
    names = ["test_gelu_tanh_2_expanded", "test_layer_normalization_2d_axis0_expanded",
             "test_softmax_example_expanded"]
    results = [run_case(cases[n]) for n in names if n in cases]
    assert results and all(r.verdict == "pass" for r in results), [(r.name, r.detail) for r in results]
    assert any(r.changed for r in results)


def test_the_harness_catches_a_broken_optimizer(cases):
    """The verdicts can fail: a wrong rewrite is a new failure, an exception a crash,
    an EqsatError a refusal."""
    from eqsat_dnn.errors import InputError

    case = cases["test_relu"]

    def wrong(model):
        broken = type(model)()
        broken.CopyFrom(model)
        broken.graph.node[0].op_type = "Sigmoid"
        return broken

    def crash(model):
        raise ValueError("a bug")

    def refuse(model):
        raise InputError("not for us")

    assert run_case(case, wrong).verdict == "new failure"
    assert run_case(case, crash).verdict == "crash"
    assert run_case(case, refuse).verdict == "refused"
    assert run_case(case).verdict == "pass"
