"""The runtime layer: the one session factory, the one io-binding timer, the one first-line helper."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.errors import first_line
from eqsat_dnn.runtime import sessions
from eqsat_dnn.runtime.sessions import BoundTimer, create_session, session_options


def relu_model() -> onnx.ModelProto:
    """y = Relu(x + w), with w a weight (so export and external data have something to carry)."""
    w = numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_first_line():
    assert first_line(ValueError("bad\nmore")) == "bad"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(ValueError("x" * 500)) == "x" * 200 and first_line(ValueError("x" * 500), 300) == "x" * 300
    assert first_line(KeyError("k"), typed=True) == "KeyError: 'k'"
    assert first_line(RuntimeError(""), typed=True) == "RuntimeError: RuntimeError"


def test_session_options():
    import onnxruntime as ort

    fast = session_options(optimize=True, threads=2, log_severity=4)
    assert fast.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert (fast.intra_op_num_threads, fast.inter_op_num_threads, fast.log_severity_level) == (2, 1, 4)
    plain = session_options(optimize=False)
    assert plain.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert plain.intra_op_num_threads == 0 and plain.log_severity_level == 3  # onnxruntime's default threads
    assert plain.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_create_session_from_every_source(tmp_path, monkeypatch):
    model = relu_model()
    x = np.array([[-1, 0, 1], [-2, 2, 3]], np.float32)
    want = np.maximum(x + 0.5, 0)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for source in (model, model.SerializeToString(), str(path), path):
        assert np.allclose(create_session(source, optimize=False).run(None, {"x": x})[0], want)
    optimized = tmp_path / "opt.onnx"
    create_session(model, optimize=True, optimized_path=optimized)
    assert optimized.exists()
    # a model near protobuf's limit goes through a file with external data, in `scratch`
    monkeypatch.setattr(sessions, "PROTOBUF_LIMIT", 0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert np.allclose(create_session(model, optimize=False, scratch=scratch).run(None, {"x": x})[0], want)
    assert not any(scratch.iterdir())  # removed once the session holds it


def test_bound_timer():
    session = create_session(relu_model(), optimize=True, threads=1)
    x = np.ones((2, 3), np.float32)
    timer = BoundTimer(session, {"x": x, "unused": x})
    assert list(timer.feeds) == ["x"] and np.allclose(timer.outputs[0], 1.5)
    assert timer.once() > 0
    timer.warm(1e-4)
    assert timer.inner >= 1 and timer.sample() > 0
    assert np.allclose(timer.kept[0].numpy(), 1.5)  # the bound output was written


def test_bound_timer_refuses_non_tensor_outputs():
    graph = helper.make_graph([helper.make_node("SequenceConstruct", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_sequence_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TypeError, match="non-tensor output"):
        BoundTimer(create_session(model, optimize=False), {"x": np.ones(2, np.float32)})
