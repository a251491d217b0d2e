"""Real ONNX exports of tiny BERT and GPT-2 models (needs the [export] extra)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from eqsat_dnn.models import exports  # noqa: E402

VOCAB = 97
SEQ = 16
TINY = dict(layers=2, hidden=64, heads=4, vocab=VOCAB, seq=SEQ)

MODELS = {
    "bert": (exports.export_bert, exports.bert_module, dict(TINY, intermediate=128)),
    "gpt2": (exports.export_gpt2, exports.gpt2_module, dict(TINY)),
}


def _feeds(batch: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (batch, seq), dtype=np.int64)
    mask = (rng.random((batch, seq)) > 0.3).astype(np.int64)
    mask[:, 0] = 1  # no row fully masked
    return ids, mask


def _compare(path, module, shapes) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, (batch, seq) in enumerate(shapes):
        ids, mask = _feeds(batch, seq, seed)
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})
        with torch.no_grad():
            want = module(torch.from_numpy(ids), torch.from_numpy(mask))
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_static_export_matches_torch(tmp_path, model, exporter):
    export, build, sizes = MODELS[model]
    path = export(tmp_path / f"{model}.onnx", exporter=exporter, **sizes)
    assert path.exists()
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert proto.graph.output[0].name == "last_hidden_state"
    for inp in proto.graph.input:
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == [1, SEQ]
    # biases/LayerNorm scales are re-drawn, so no initializer is aliased
    assert "Identity" not in {n.op_type for n in proto.graph.node}
    _compare(path, build(**sizes), [(1, SEQ)])


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_dynamic_export_runs_other_shapes(tmp_path, model, exporter):
    export, build, sizes = MODELS[model]
    path = export(tmp_path / f"{model}.onnx", exporter=exporter, dynamic=True, **sizes)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    for inp in proto.graph.input:
        dims = [d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert dims == ["batch", "seq"]
    _compare(path, build(**sizes), [(1, SEQ), (3, 9)])


def test_export_is_reproducible(tmp_path):
    sizes = MODELS["gpt2"][2]
    a = exports.export_gpt2(tmp_path / "a.onnx", exporter="torchscript", **sizes)
    b = exports.export_gpt2(tmp_path / "b.onnx", exporter="torchscript", **sizes)
    inits_a = {t.name: t.raw_data for t in onnx.load(str(a)).graph.initializer}
    inits_b = {t.name: t.raw_data for t in onnx.load(str(b)).graph.initializer}
    assert inits_a == inits_b


def test_export_is_quiet(tmp_path, capfd):
    exports.export_bert(tmp_path / "bert.onnx", **MODELS["bert"][2])
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


def test_bad_exporter_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        exports.export_bert(tmp_path / "x.onnx", exporter="tracing", **MODELS["bert"][2])


def test_missing_torch_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"eqsat-dnn\[export\]"):
        exports.export_gpt2(tmp_path / "x.onnx", **MODELS["gpt2"][2])
