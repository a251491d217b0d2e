"""ONNX's backend node tests, run through the optimizer: every case that onnxruntime
passes unoptimized must pass optimized, and no case may crash the optimizer.

Each case of ``onnx.backend.test.loader.load_model_tests(kind="node")`` (built by
onnx in memory: a one-node model, its inputs, expected outputs and tolerances)
is judged three times: the original model in onnxruntime against the expected
outputs, the optimizer on the model, and the optimized model in onnxruntime
against the same expected outputs. :func:`run_case` does that for one case;
``bench/conformance.py`` runs the whole suite, ``tests/test_conformance.py`` a
deterministic sample.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from eqsat_dnn.errors import CheckError, EqsatError, first_line
from eqsat_dnn.runtime.sessions import create_session

VERDICTS = ("pass", "new failure", "crash", "refused", "fails unoptimized")
"""What a case can come to, worst first after ``pass``:

* ``pass``: the original and the optimized model both match the expected outputs;
* ``new failure``: the original matches, the optimized model does not (our bug);
* ``crash``: the optimizer (or its random-input check) raised something other than a
  clear :class:`EqsatError`, or wrote a model onnx's checker rejects (our bug);
* ``refused``: the optimizer declined with a clear :class:`EqsatError` (e.g. the model
  fails onnx's checker);
* ``fails unoptimized``: onnxruntime cannot load, run or match the original itself,
  so the case says nothing about us (unless the optimizer crashed on it).
"""


@dataclass
class CaseResult:
    """One node-test case judged before and after optimizing."""

    name: str
    ops: list[str]
    original: str
    """``pass`` or ``fail``: the unoptimized model in onnxruntime against the expected outputs."""
    optimizer: str = "not run"
    """``ok``, ``refused`` or ``crash``."""
    optimized: str = "not run"
    """``pass``, ``fail`` or ``not run``."""
    changed: bool = False
    """The optimized graph differs from the original (other ops or another node count)."""
    agrees_with_original: bool | None = None
    """Where onnxruntime ran the original but it missed the expected outputs: whether the
    optimized model at least computes what the original computes."""
    self_check: str = "not run"
    """The pipeline's own random-input check (:func:`~eqsat_dnn.runtime.check.compare_models`) of the
    optimized model: ``ok``, ``refused`` (a clear :class:`EqsatError`, e.g. no random inputs
    are valid for it), ``mismatch`` or ``crash``."""
    original_error: str = ""
    """One line: why the original fails in onnxruntime."""
    detail: str = ""
    """One line: why the optimizer (or its check, or the optimized model) failed, refused or crashed."""
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if self.optimizer == "crash" or self.self_check == "crash":
            return "crash"
        if self.original != "pass":
            return "fails unoptimized"
        if self.optimizer == "refused":
            return "refused"
        return "pass" if self.optimized == "pass" else "new failure"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def node_cases() -> list:
    """onnx's node-test cases (about 1,880), built in memory, sorted by name."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        with np.errstate(all="ignore"):
            cases = load_model_tests(kind="node")
    return sorted(cases, key=lambda c: c.name)


def _value(item: Any) -> Any:
    """A data-set entry as onnxruntime takes and returns it (arrays, lists of arrays, None)."""
    if isinstance(item, onnx.TensorProto):
        return numpy_helper.to_array(item)
    if isinstance(item, list):
        return [_value(x) for x in item]
    if item is None:
        return None
    return np.asarray(item)


def _run(model: onnx.ModelProto, feeds: dict[str, Any]) -> list[Any]:
    # the graph as written, not what the runtime makes of it
    session = create_session(model, optimize=False, log_severity=4)
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def _assert_similar(expected: list[Any], actual: list[Any], rtol: float, atol: float) -> None:
    from onnx.backend.test.runner import Runner

    # onnx's own comparison (shapes, dtypes, strings, sequences, bfloat16 tolerances)
    Runner.assert_similar_outputs(expected, actual, rtol=rtol, atol=atol)


def _matches(expected: list[Any], actual: list[Any], rtol: float, atol: float) -> str:
    """Empty when ``actual`` matches ``expected``, else why not (one line)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            _assert_similar(expected, actual, rtol, atol)
    except Exception as exc:  # AssertionError, or a type that cannot be compared
        return first_line(exc, 240, typed=True)
    return ""


def _op_signature(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return sorted((n.domain, n.op_type) for n in model.graph.node)


def run_case(case, optimize: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
             self_check: bool = True) -> CaseResult:
    """Judge one node-test case before and after ``optimize`` (default: the whole
    pipeline with its defaults, all rules, default limits and the ILP extractor, its own
    check left to ``self_check``: that check is run on its own, so that a refusal of the
    random-input check is told apart from a refusal of the optimizer)."""
    start = time.perf_counter()
    model: onnx.ModelProto = case.model
    result = CaseResult(name=case.name, ops=sorted({n.op_type for n in model.graph.node}), original="pass")
    optimize = optimize or _default_optimize
    data = [([_value(x) for x in inputs], [_value(y) for y in outputs]) for inputs, outputs in case.data_sets]

    def feeds_of(inputs: list[Any]) -> dict[str, Any]:
        initializers = {t.name for t in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in initializers]
        return dict(zip(names, inputs))

    original_outputs: list[list[Any]] | None = []
    try:
        for inputs, expected in data:
            outputs = _run(model, feeds_of(inputs))
            original_outputs.append(outputs)
            why = _matches(expected, outputs, case.rtol, case.atol)
            if why and result.original == "pass":
                result.original, result.original_error = "fail", why
    except Exception as exc:  # onnxruntime refuses or fails the original model
        result.original, result.original_error = "fail", first_line(exc, 240, typed=True)
        original_outputs = None

    try:
        optimized = optimize(model)
        result.optimizer = "ok"
    except CheckError as exc:  # with no check of its own, only an invalid optimized model raises this
        result.optimizer = "crash"
        result.detail = f"optimizer: {exc}"
    except EqsatError as exc:
        result.optimizer = "refused"
        result.detail = f"optimizer: {exc}"
    except Exception as exc:  # anything else is a bug of ours
        result.optimizer = "crash"
        result.detail = f"optimizer: {first_line(exc, 240, typed=True)}"
    if result.optimizer != "ok":
        result.seconds = time.perf_counter() - start
        return result

    result.changed = _op_signature(optimized) != _op_signature(model)
    if self_check:
        _run_self_check(result, model, optimized)
    result.optimized = "pass"
    try:
        for k, (inputs, expected) in enumerate(data):
            outputs = _run(optimized, feeds_of(inputs))
            why = _matches(expected, outputs, case.rtol, case.atol)
            if why and result.optimized == "pass":  # the first failure says most; it outranks the check's note
                result.optimized, result.detail = "fail", f"optimized: {why}"
            if original_outputs is not None and result.original != "pass":
                agrees = not _matches(original_outputs[k], outputs, case.rtol, case.atol)
                result.agrees_with_original = agrees and result.agrees_with_original is not False
    except Exception as exc:
        if result.optimized == "pass":
            result.optimized, result.detail = "fail", f"optimized: {first_line(exc, 240, typed=True)}"
        if original_outputs is not None and result.original != "pass":
            result.agrees_with_original = False
    result.seconds = time.perf_counter() - start
    return result


def _run_self_check(result: CaseResult, model: onnx.ModelProto, optimized: onnx.ModelProto) -> None:
    from eqsat_dnn.runtime.check import compare_models

    try:
        report = compare_models(model, optimized, runs=1)
        result.self_check = "ok" if report.ok else "mismatch"
        if not report.ok and not result.detail:
            result.detail = f"self-check: {report.failures[0]}"
    except EqsatError as exc:
        result.self_check = "refused"
        result.detail = result.detail or f"self-check: {exc}"
    except Exception as exc:
        result.self_check = "crash"
        result.detail = f"self-check: {first_line(exc, 240, typed=True)}"


def _default_optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    from eqsat_dnn.pipeline import optimize

    optimized, _ = optimize(model, check=0)
    return optimized


@dataclass
class Summary:
    """Counts over a run of cases."""

    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    passes_unoptimized: int = 0
    passes_optimized: int = 0
    changed: int = 0
    failing_unoptimized_agreeing: int = 0
    """Cases onnxruntime fails unoptimized whose optimized model still agrees with the original's outputs."""


def summarize(results: list[CaseResult]) -> Summary:
    summary = Summary(total=len(results), counts={v: 0 for v in VERDICTS})
    for r in results:
        summary.counts[r.verdict] += 1
        summary.passes_unoptimized += r.original == "pass"
        summary.passes_optimized += r.optimized == "pass"
        summary.changed += r.changed
        summary.failing_unoptimized_agreeing += bool(r.agrees_with_original)
    return summary
