"""The one ONNX builder the zoo, the transformer blocks and the rule checkers share."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from eqsat_dnn.models.builder import ModelBuilder, make_model


def test_fresh_names_are_unique_and_stable():
    b = ModelBuilder("m")
    assert [b.fresh("x"), b.fresh("x"), b.fresh("x"), b.fresh("y")] == ["x", "x_1", "x_2", "y"]
    assert b.input("x", (2, 3)) == "x_3"
    assert b.const(np.zeros(2, np.float32), "y") == "y_1"


def test_constants_keep_their_shape():
    b = ModelBuilder("m")
    scalar = b.scalar(2.5, "s")
    ints = b.ints([1, 2, 3], "i")
    by_name = {t.name: t for t in b.initializers}
    assert list(by_name[scalar].dims) == [] and by_name[scalar].data_type == TensorProto.FLOAT
    assert list(by_name[ints].dims) == [3] and by_name[ints].data_type == TensorProto.INT64
    assert b.shapes[scalar] == () and b.shapes[ints] == (3,)


def test_seeded_weights_follow_the_seed_and_the_draw_precision():
    def draw(seed: int, **kw) -> np.ndarray:
        return ModelBuilder("m", seed).normal((4, 5), 0.5, **kw)

    assert np.array_equal(draw(1), draw(1)) and not np.array_equal(draw(1), draw(2))
    expected64 = (np.random.default_rng(1).standard_normal((4, 5)) * 0.5).astype(np.float32)
    expected32 = np.random.default_rng(1).standard_normal((4, 5), dtype=np.float32) * np.float32(0.5) + np.float32(1)
    assert np.array_equal(draw(1), expected64)
    assert np.array_equal(draw(1, draw=np.float32, offset=1.0), expected32)
    assert draw(1, dtype=np.float64).dtype == np.float64


def test_model_is_valid_and_writes_only_what_it_is_given():
    b = ModelBuilder("tiny", seed=0, opset=17, ir_version=8)
    x = b.input("x", (1, 4))
    w = b.weight((4, 2), 0.5, "w")
    (y,) = b.node("MatMul", [x, w], [b.fresh("y")], name="mm")
    b.shapes[y], b.dtypes[y] = (1, 2), TensorProto.FLOAT
    model = b.model([y])
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and model.opset_import[0].version == 17
    assert not model.HasField("producer_name") and not model.graph.HasField("doc_string")
    assert model.graph.node[0].name == "mm"
    named = make_model("g", [], [], [], opset=20, ir_version=9, producer="p", doc="d")
    assert named.producer_name == "p" and named.doc_string == "d" and named.graph.doc_string == "d"
