"""The model zoo: every model builds, passes onnx's full check and runs in onnxruntime, at
Tensat's input shapes (narrower channels to stay fast), with the architecture's layer counts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eqsat_dnn.models import zoo
from eqsat_dnn.runtime.check import random_inputs
from eqsat_dnn.cli import main
from eqsat_dnn.errors import InputError

# (overrides, input shape, output shape, op counts the architecture fixes); CNNs keep Tensat's
# image size and are made narrower, the transformers smaller
SMALL = {
    "bert": (dict(seq=32, hidden=128, heads=4), [32, 128], [256, 128], {"MatMul": 47, "Concat": 1}),
    "nasrnn": (dict(hidden=32), [1, 32], [1, 32], {"MatMul": 80, "Tanh": 40}),
    "resnext50": (dict(width=0.125), [1, 3, 224, 224], [1, 1000], {"Conv": 53, "BatchNormalization": 53}),
    "nasneta": (dict(width=0.0625), [1, 3, 224, 224], [1, 320, 7, 7], {"Concat": 18, "AveragePool": 51}),
    "resnet50": (dict(width=0.125), [1, 8, 56, 56], [1, 256, 7, 7], {"Conv": 52, "Add": 16}),
    "vgg19": (dict(width=0.0625), [1, 3, 224, 224], [1, 32, 7, 7], {"Conv": 16, "MaxPool": 5}),
    "squeezenet": (dict(width=0.25), [1, 3, 224, 224], [1, 1000], {"Conv": 26, "Concat": 8}),
    "inception_v3": (dict(width=0.0625), [1, 3, 299, 299], [1, 1000], {"Conv": 94, "Concat": 15}),
    "mobilenet_v2": (dict(width=0.5), [1, 3, 224, 224], [1, 1000], {"Conv": 52, "Clip": 35, "Add": 10}),
    "bert_layer": (dict(seq=16, hidden=64, heads=4, intermediate=128), [1, 16, 64], [1, 16, 64],
                   {"MatMul": 8, "LayerNormalization": 2, "Erf": 1, "Softmax": 1}),
    "gpt2_layer": (dict(seq=16, hidden=64, heads=4), [1, 16, 64], [1, 16, 64],
                   {"MatMul": 6, "Split": 1, "Where": 1, "Pow": 1, "Gemm": 0}),
    "lora_layer": (dict(seq=16, hidden=64, heads=4, intermediate=128), [1, 16, 64], [1, 16, 64],
                   {"MatMul": 20, "Erf": 1}),
}


def _dims(info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in info.type.tensor_type.shape.dim]


def test_every_model_has_a_small_case():
    assert set(SMALL) == set(zoo.SUITE) == {m.name for m in zoo.list_models()}
    assert all(m.description and m.family in ("tensat", "real-world") for m in zoo.list_models())
    assert sum(m.tensat_speedup is not None for m in zoo.list_models()) == 9


@pytest.mark.parametrize("name", list(SMALL))
def test_builds_checks_and_runs(name):
    overrides, input_shape, output_shape, counts = SMALL[name]
    model = zoo.build(name, **overrides)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert _dims(model.graph.input[0]) == input_shape
    assert _dims(model.graph.output[0]) == output_shape
    ops = Counter(n.op_type for n in model.graph.node)
    assert {op: ops.get(op, 0) for op in counts} == counts
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, random_inputs(model, seed=0))
    assert list(outputs[0].shape) == output_shape
    # finite, not collapsed to zero, and the weights matter (a meaningful check)
    assert np.isfinite(outputs[0]).all() and np.abs(outputs[0]).max() > 1e-3


def test_default_shapes_are_tensats():
    # the cheap-to-build ones at full size; the others' layer arithmetic is checked above at
    # Tensat's image size
    assert _dims(zoo.build("bert", layers=1).graph.input[0]) == [64, 1024]
    assert _dims(zoo.build("nasrnn", steps=1).graph.input[0]) == [1, 512]
    assert _dims(zoo.build("resnet50", width=0.125).graph.input[0])[2:] == [56, 56]
    for name in ("squeezenet", "mobilenet_v2"):
        model = zoo.build(name)
        assert _dims(model.graph.input[0]) == [1, 3, 224, 224] and _dims(model.graph.output[0]) == [1, 1000]
    assert [_dims(i) for i in zoo.build("bert_layer").graph.input] == [[1, 128, 768], [1, 128]]


def test_seeded_and_deterministic():
    a = zoo.build("gpt2_layer", seed=3, **SMALL["gpt2_layer"][0])
    b = zoo.build("gpt2_layer", seed=3, **SMALL["gpt2_layer"][0])
    c = zoo.build("gpt2_layer", seed=4, **SMALL["gpt2_layer"][0])
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_batch_norm_is_optional():
    model = zoo.build("resnext50", width=0.125, batch_norm=False, head=False)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Conv"] == 53 and ops["Gemm"] == 0


def test_bad_names_and_overrides_are_input_errors():
    with pytest.raises(InputError, match="unknown zoo model"):
        zoo.build("alexnet")
    with pytest.raises(InputError, match="unknown size override"):
        zoo.build("bert", depth=3)
    with pytest.raises(InputError, match="must equal seq"):
        zoo.build("bert", hidden=128)
    with pytest.raises(InputError, match="multiple of heads"):
        zoo.build("gpt2_layer", hidden=100, heads=12)
    assert zoo.get("Inception-V3").name == "inception_v3"


def test_cli_list_and_write(tmp_path, capsys):
    assert main(["zoo", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in zoo.SUITE)
    out = tmp_path / "bert.onnx"
    assert main(["zoo", "bert", "-o", str(out), "--set", "layers=2", "--set", "seq=32",
                 "--set", "hidden=128", "--set", "heads=4"]) == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert _dims(model.graph.input[0]) == [32, 128]
    assert [p.name for p in tmp_path.iterdir()] == ["bert.onnx"]  # nothing else left behind


@pytest.mark.parametrize("args, code, message", [
    (["zoo", "alexnet", "-o", "{tmp}/a.onnx"], 2, "unknown zoo model"),
    (["zoo", "bert"], 2, "needs -o"),
    (["zoo", "bert", "-o", "{tmp}/a.onnx", "--set", "layers=two"], 2, "of type int"),
    (["zoo", "bert", "-o", "{tmp}/a.onnx", "--set", "depth=2"], 2, "bad size override"),
    (["zoo", "vgg19", "-o", "{tmp}/missing/a.onnx"], 3, "does not exist"),
])
def test_cli_errors_are_one_line(tmp_path, args, code, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = subprocess.run([sys.executable, "-m", "eqsat_dnn.cli", *args], capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "a.onnx").exists()


def test_gpt2_layer_keeps_its_biases_on_their_gemms():
    # at these sizes moving a projection's bias onto the residual costs the roofline nothing and
    # onnxruntime its MatMul + Add -> Gemm fusion; a tie goes to the input program
    from eqsat_dnn.pipeline import optimize

    out, _ = optimize(zoo.build("gpt2_layer"))
    made = {o: n.op_type for n in out.graph.node for o in n.output}
    weights = {i.name for i in out.graph.initializer}
    bias_adds = [n for n in out.graph.node if n.op_type == "Add" and any(i in weights for i in n.input)]
    # one bias per projection (Q, K and V may be cut apart, each with its part of the packed bias)
    assert len(bias_adds) == sum(n.op_type == "MatMul" for n in out.graph.node) >= 4
    assert all(any(made.get(i) == "MatMul" for i in n.input) for n in bias_adds)
