"""Shared fixtures: real models built or found at test time (no model files in git)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from eqsat_dnn.models.examples import attention_block

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True, scope="session")
def _private_cost_cache(tmp_path_factory):
    """Measured costs go to a temporary cache: tests never write to the user's ~/.cache."""
    os.environ["EQSAT_DNN_CACHE"] = str(tmp_path_factory.mktemp("cost-cache"))
    yield


def rule_instances(text: str, kind: str = "rewrite", dtype: int = onnx.TensorProto.DOUBLE, seed: int = 0,
                   trials: int = 60) -> list:
    """The rule checker's instances of one rule's left-hand side, from ``trials`` seeded streams
    (those ONNX rejects left out)."""
    import numpy as np

    from eqsat_dnn.eqsat.rules import Rule
    from eqsat_dnn.verify.instances import make_instance
    from eqsat_dnn.verify.patterns import Reject, directions

    rule = Rule(name="probe", family="probe", kind=kind, text=text, description="", file="probe.egg", line=1)
    (direction,) = directions(rule)
    built = []
    for stream in range(trials):
        try:
            built.append(make_instance(direction, np.random.default_rng([seed, stream]), dtype))
        except Reject:
            continue
    return built


def light_model(name: str) -> Path:
    path = LIGHT_DIR / f"light_{name}.onnx"
    if not path.exists():
        pytest.skip(f"onnx no longer ships {path.name}")
    return path


@pytest.fixture
def example_path(tmp_path: Path) -> Path:
    path = tmp_path / "example.onnx"
    onnx.save_model(attention_block(), path)
    return path


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """Tiny BERT and GPT-2 exported by torch's dynamo and TorchScript exporters."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from eqsat_dnn.models.exports import export_bert, export_gpt2

    root = tmp_path_factory.mktemp("exports")
    tiny = dict(layers=2, hidden=64, heads=4, vocab=97, seq=16)
    paths = {}
    for exporter in ("dynamo", "torchscript"):
        paths[f"bert-{exporter}"] = export_bert(root / f"bert-{exporter}.onnx", intermediate=128,
                                                exporter=exporter, **tiny)
        paths[f"gpt2-{exporter}"] = export_gpt2(root / f"gpt2-{exporter}.onnx", exporter=exporter, **tiny)
    paths["bert-dynamic"] = export_bert(root / "bert-dynamic.onnx", intermediate=128, dynamic=True, **tiny)
    return paths
