"""Cost models: the measured one (onnxruntime timings, cached), the roofline one, the factory."""

from __future__ import annotations

import time

import onnx
import pytest
from onnx import TensorProto, helper

from eqsat_dnn import load_model
from eqsat_dnn.cost import (
    CPU_PROFILE,
    GPU_PROFILES,
    RooflineCostModel,
    dim_size,
    fusion_role,
    get_cost_model,
    graph_cost,
    node_costs,
)
from eqsat_dnn.errors import InputError
from eqsat_dnn.models.examples import attention_block
from eqsat_dnn.ir.graph import Node, TensorType
from eqsat_dnn.cost.measured.model import MeasuredCostModel

F32, F16, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64


def t(*shape, dtype=F32) -> TensorType:
    return TensorType(dtype, tuple(shape))


def matmul(m: int, k: int, n: int) -> tuple[Node, list[TensorType], TensorType]:
    return Node("MatMul", [], [], {}), [t(1, m, k), t(k, n)], t(1, m, n)


def quick(tmp_path, **kw) -> MeasuredCostModel:
    """A measured model that measures quickly, with a private cache."""
    options = dict(cache_dir=tmp_path, runs=5, passes=1, retries=0, min_sample=2e-5, tolerance=1e9,
                   fallback=RooflineCostModel(CPU_PROFILE))
    options.update(kw)
    return MeasuredCostModel(**options)


# -- the measured model ---------------------------------------------------------


def test_measured_cache_hit_costs_nothing(tmp_path):
    model = quick(tmp_path)
    node, inputs, output = matmul(32, 64, 64)
    first = model.node_cost(node, inputs, output)
    assert first > 0 and model.stats["measured"] >= 1
    measured = model.stats["measured"]
    start = time.perf_counter()
    for _ in range(100):
        assert model.node_cost(node, inputs, output) == first
    assert time.perf_counter() - start < 0.5
    assert model.stats["measured"] == measured
    # a fresh model on the same directory reads the file: nothing is measured again
    again = quick(tmp_path)
    assert again.cache_path == model.cache_path and again.cache_path.exists()
    assert again.node_cost(node, inputs, output) == first
    assert again.stats["measured"] == 0


def test_cache_is_keyed_by_threads_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_DNN_CACHE", str(tmp_path / "env"))
    one = MeasuredCostModel(threads=1)
    two = MeasuredCostModel(threads=2)
    assert one.cache_path.parent == tmp_path / "env"
    assert one.cache_path != two.cache_path
    assert "1t" in one.cache_path.name and "2t" in two.cache_path.name
    assert one.device["onnxruntime"] and one.device["cores"] >= 1


def test_measured_orders_work_sensibly(tmp_path):
    model = quick(tmp_path)
    model.prepare([matmul(16, 64, 64), matmul(256, 512, 512)])  # measured side by side
    measured = model.stats["measured"]
    small = model.node_cost(*matmul(16, 64, 64))
    big = model.node_cost(*matmul(256, 512, 512))
    assert model.stats["measured"] == measured
    assert big > 5 * small
    # a view costs the runtime's per-node overhead only
    reshape = Node("Reshape", [], [], {"shape": [256, 512], "allowzero": 0})
    assert model.node_cost(reshape, [t(1, 256, 512)], t(256, 512)) < small


def test_measured_fused_bias_is_cheaper_than_standalone_add(tmp_path):
    model = quick(tmp_path)
    add = Node("Add", [], [], {})
    args = [t(1, 256, 512), t(512)], t(1, 256, 512)
    assert fusion_role("Add", {}, *args) == "gemm_epilogue"
    bias = model.node_cost(add, *args)
    assert model.stats["measured"] == 2  # the MatMul producer alone, then with the Add behind it
    # priced by the difference, never below half the per-node floor (how much the two timings
    # differ is the machine's business: under CI load a quick measurement is noisy)
    plan = model._plan(add, *args)
    pair, producer = model._value(plan.pair_key), model._value(plan.producer_key)
    assert 0 < producer and bias == max(pair - producer, model.calibration()["node"] * 0.5)
    standalone = quick(tmp_path / "nofusion", fusion=False)._plan(add, *args)
    assert standalone.role == "kernel" and standalone.pair_key is None  # without fusion: the Add alone


def test_unmeasurable_ops_fall_back_to_roofline(tmp_path):
    model = quick(tmp_path)
    custom = helper.make_node("MyOp", ["x"], ["y"], domain="com.example")
    node = Node("Opaque", ["x"], ["y"], {}, proto=custom)
    fallback = model.fallback.node_cost(node, [t(4, 8)], t(4, 8))
    assert model.node_cost(node, [t(4, 8)], t(4, 8)) == fallback
    assert model.stats["fallback"] == 1
    # an op whose integer input is a shape, not data
    expand = Node("Opaque", ["x", "s"], ["y"], {}, proto=helper.make_node("Expand", ["x", "s"], ["y"]))
    assert model.node_cost(expand, [t(1, 8), t(2, dtype=I64)], t(4, 8)) > 0
    # an op with a subgraph
    body = helper.make_graph([], "b", [], [helper.make_tensor_value_info("x", F32, [1])])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    node = Node("Opaque", ["c"], ["y"], {}, proto=cond)
    assert model.node_cost(node, [t(dtype=TensorProto.BOOL)], t(1)) > 0
    # unknown input types
    assert model.node_cost(Node("Relu", [], [], {}), [None], None) > 0
    assert model.stats["fallback"] == 4
    assert model.stats["measured"] == 0


def test_measured_prices_opaque_gather_and_a_whole_graph(tmp_path):
    model = quick(tmp_path)
    gather = Node("Opaque", ["w", "i"], ["y"], {}, proto=helper.make_node("Gather", ["w", "i"], ["y"]))
    assert model.node_cost(gather, [t(1000, 64), t(1, 16, dtype=I64)], t(1, 16, 64)) > 0
    assert model.stats["fallback"] == 0
    graph = load_model(attention_block())
    costs = node_costs(graph, model)
    assert all(c > 0 for c in costs.values())
    assert graph_cost(graph, model) == pytest.approx(sum(costs.values()))
    assert model.stats["fallback"] == 0


def test_channel_split_pays_the_layout_round_trip(tmp_path):
    """Merging parallel 1x1 convs into one Conv + Split leaves onnxruntime's NCHWc layout."""
    model = quick(tmp_path)
    x = t(1, 64, 28, 28)
    channels = Node("Split", [], [], {"axis": 1, "split": [32, 32]})
    width = Node("Split", [], [], {"axis": 3, "split": [14, 14]})
    cost = model.node_cost(channels, [x], t(1, 32, 28, 28))
    model.node_cost(width, [x], t(1, 64, 28, 14))
    plan, other = model._plan(channels, [x], t(1, 32, 28, 28)), model._plan(width, [x], t(1, 64, 28, 14))
    assert other.boundary == ([], [])  # along the width the blocked layout holds
    before, after = plan.boundary
    assert before and after  # out of the blocked layout before the Split, back in after it
    reorders = [model._value(model._reorder("out", s, s[1])[0]) for s in before] + \
        [model._value(model._reorder("in", s, s[1])[0]) for s in after]
    assert all(r > 0 for r in reorders)
    # the Split's own time plus the round trip (compared by construction, not as two noisy timings)
    own = max(model._value(plan.node_key), model.calibration()["node"])
    assert cost == pytest.approx(own + sum(reorders))


# -- roofline and the factory ------------------------------------------------------


def test_roofline_ordering():
    cpu, t4, h100 = (RooflineCostModel(p) for p in (CPU_PROFILE, GPU_PROFILES["t4"], GPU_PROFILES["h100"]))
    big, small = matmul(512, 1024, 1024), matmul(16, 64, 64)
    for model in (cpu, t4, h100):
        assert model.node_cost(*big) > model.node_cost(*small) > 0
    assert cpu.node_cost(*big) > t4.node_cost(*big) > h100.node_cost(*big)
    # half precision uses the tensor-core peak
    node, inputs, output = big
    half = [TensorType(F16, i.shape) for i in inputs], TensorType(F16, output.shape)
    assert t4.node_cost(node, *half) < t4.node_cost(*big)
    # views are nearly free, fused epilogues cost less than a standalone kernel
    reshape = Node("Reshape", [], [], {"shape": [512, 1024]})
    assert cpu.node_cost(reshape, [t(1, 512, 1024)], t(512, 1024)) < cpu.profile.overhead
    relu = Node("Relu", [], [], {})
    assert cpu.node_cost(relu, [t(1, 64, 56, 56)], t(1, 64, 56, 56)) < \
        RooflineCostModel(CPU_PROFILE, fusion=False).node_cost(relu, [t(1, 64, 56, 56)], t(1, 64, 56, 56))
    # a channel split between convolutions pays NCHWc reorders on the CPU, not on a GPU
    split = Node("Split", [], [], {"axis": 1, "split": [32, 32]})
    args = [t(1, 64, 56, 56)], t(1, 32, 56, 56)
    assert cpu.node_cost(split, *args) > RooflineCostModel(CPU_PROFILE, fusion=False).node_cost(split, *args)
    assert t4.node_cost(split, *args) == RooflineCostModel(GPU_PROFILES["t4"], fusion=False).node_cost(split, *args)


def test_fusion_roles():
    assert fusion_role("Reshape", {}, [t(2, 3)], t(3, 2)) == "view"
    assert fusion_role("Relu", {}, [t(1, 64, 8, 8)], t(1, 64, 8, 8)) == "conv_epilogue"
    assert fusion_role("Add", {}, [t(1, 64, 8, 8), t(1, 64, 8, 8)], t(1, 64, 8, 8)) == "conv_epilogue"
    assert fusion_role("BatchNormalization", {}, [t(1, 64, 8, 8)] + [t(64)] * 4, t(1, 64, 8, 8)) == "conv_epilogue"
    assert fusion_role("Add", {}, [t(1, 128, 768), t(768)], t(1, 128, 768)) == "gemm_epilogue"
    assert fusion_role("Mul", {}, [t(1, 12, 128, 128), t()], t(1, 12, 128, 128)) == "gemm_epilogue"
    assert fusion_role("Pow", {}, [t(1, 128, 3072), t()], t(1, 128, 3072)) == "gelu_part"
    assert fusion_role("Add", {}, [t(1, 128, 768), t(1, 128, 768)], t(1, 128, 768)) == "kernel"
    assert fusion_role("MatMul", {}, [t(1, 128, 768), t(768, 768)], t(1, 128, 768)) == "kernel"


def test_symbolic_dims_policy():
    assert dim_size(7) == 7
    assert dim_size("batch") == 1 and dim_size("batch_size") == 1 and dim_size("N") == 1
    assert dim_size("seq") == 128 and dim_size(None) == 128


def test_factory(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_DNN_CACHE", str(tmp_path))
    for gpu in ("t4", "v100", "a100", "h100"):
        model = get_cost_model(f"roofline:{gpu}")
        assert isinstance(model, RooflineCostModel) and model.profile.name == gpu
        assert model.name == f"roofline:{gpu}" and model.profile.source
    assert get_cost_model("roofline:cpu-nominal").profile is CPU_PROFILE
    measured = get_cost_model("measured", runs=3)
    assert isinstance(measured, MeasuredCostModel) and measured.cache_path.parent == tmp_path
    with pytest.raises(InputError, match="unknown cost model"):
        get_cost_model("roofline:tpu")
    from eqsat_dnn.cost.measured import MeasuredCostModel as reexported

    assert reexported is MeasuredCostModel


def test_calibrated_cpu_roofline_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_DNN_CACHE", str(tmp_path))
    first = get_cost_model("roofline")
    assert first.profile.flops > 1e9 and first.profile.bandwidth > 1e8 and first.profile.nchwc
    start = time.perf_counter()
    second = get_cost_model("roofline")
    assert time.perf_counter() - start < 0.5
    assert second.profile.flops == first.profile.flops
    node, inputs, output = matmul(128, 768, 768)
    assert second.node_cost(node, inputs, output) > 0


def test_graph_cost_skips_weight_only_nodes():
    w = onnx.numpy_helper.from_array(__import__("numpy").ones((4, 4), "float32"), "w")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
        "g", [helper.make_tensor_value_info("x", F32, [2, 4])], [helper.make_tensor_value_info("y", F32, [2, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    loaded = load_model(model)
    costs = node_costs(loaded, RooflineCostModel())
    assert len(costs) == 1 and loaded.nodes[list(costs)[0]].op == "MatMul"


def test_graph_cost_skips_constant_opaque_nodes():
    # the causal mask of an export: Range and And over constants only; onnxruntime folds them
    lo, hi, one = (onnx.numpy_helper.from_array(__import__("numpy").array(v, "int64"), n)
                   for v, n in ((0, "lo"), (8, "hi"), (1, "one")))
    graph = helper.make_graph(
        [helper.make_node("Range", ["lo", "hi", "one"], ["r"]), helper.make_node("Cast", ["r"], ["rf"], to=F32),
         helper.make_node("Add", ["x", "rf"], ["y"])],
        "g", [helper.make_tensor_value_info("x", F32, [8])], [helper.make_tensor_value_info("y", F32, [8])],
        [lo, hi, one])
    loaded = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    costs = node_costs(loaded, RooflineCostModel())
    assert [loaded.nodes[i].op for i in costs] == ["Add"]


def residual_layernorm(shape=(1, 128, 768), extra_use: bool = False, bias: str = "") -> onnx.ModelProto:
    """x + y -> LayerNormalization (BERT's residual), which onnxruntime fuses into
    SkipLayerNormalization; with ``bias="inner"`` (x + bias) + y, with ``"outer"`` (x + y) + bias."""
    import numpy as np

    h = shape[-1]
    inits = [onnx.numpy_helper.from_array(np.linspace(-0.5, 0.5, h, dtype=np.float32), "bias")] if bias else []
    nodes = {"": [helper.make_node("Add", ["x", "y"], ["s"])],
             "inner": [helper.make_node("Add", ["x", "bias"], ["xb"]), helper.make_node("Add", ["xb", "y"], ["s"])],
             "outer": [helper.make_node("Add", ["x", "y"], ["xy"]), helper.make_node("Add", ["xy", "bias"], ["s"])]}[bias]
    nodes.append(helper.make_node("LayerNormalization", ["s", "g", "b"], ["o"], axis=-1, epsilon=1e-5))
    outputs = [helper.make_tensor_value_info("o", F32, list(shape))]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["s"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", F32, list(shape)))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F32, list(shape)) for n in "xy"], outputs,
        [onnx.numpy_helper.from_array(np.linspace(0.5, 1.5, h, dtype=np.float32), "g"),
         onnx.numpy_helper.from_array(np.linspace(-1, 1, h, dtype=np.float32), "b")] + inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_skip_layernorm_sites_and_penalties():
    from eqsat_dnn.cost import fusion_penalties, fusion_sites

    graph = load_model(residual_layernorm())
    (site,) = fusion_sites(graph)
    assert site.kind == "skip_layernorm" and [graph.nodes[i].op for i in site.nodes] == ["Add", "LayerNormalization"]
    assert fusion_sites(load_model(residual_layernorm(extra_use=True))) == []  # the sum is needed elsewhere
    inner = load_model(residual_layernorm(bias="inner"))
    (with_bias,) = fusion_sites(inner)
    assert [inner.nodes[i].op for i in with_bias.nodes] == ["Add", "LayerNormalization"]
    assert fusion_sites(load_model(residual_layernorm(bias="outer"))) == []
    cpu, t4 = RooflineCostModel(CPU_PROFILE), RooflineCostModel(GPU_PROFILES["t4"])
    assert fusion_penalties(graph, t4) == {}  # CUDA's fused kernel is the fast one
    penalty = fusion_penalties(graph, cpu)[site]
    parts = sum(node_costs(graph, cpu).values())
    assert penalty > 3 * parts
    assert graph_cost(graph, cpu) == pytest.approx(parts + penalty)


def test_measured_fusion_penalty_compares_fused_and_apart(tmp_path):
    from eqsat_dnn.cost import fusion_sites

    model = quick(tmp_path)
    (site,) = fusion_sites(load_model(residual_layernorm((1, 16, 64))))
    fused, apart = model.fusion_times(site)
    assert fused > 0 and apart > 0
    assert model.fusion_penalty(site) == pytest.approx(max(0.0, fused - apart))


def test_node_op_type_is_the_one_definition():
    """Cost models and the partitioner see an alias as its vocabulary op (a lowered Sum is an Add);
    export and the fusion sites read the written op; an opaque node is its own ONNX type."""
    sum_as_add = Node("Add", ["a", "b"], ["y"], proto=helper.make_node("Sum", ["a", "b"], ["y"]))
    assert sum_as_add.op_type == "Add" and sum_as_add.written_op == "Sum"
    opaque = Node("Opaque", ["a"], ["y"], proto=helper.make_node("Range", ["a", "b", "c"], ["y"]))
    assert opaque.op_type == opaque.written_op == "Range"
    plain = Node("MatMul", ["a", "b"], ["y"], proto=helper.make_node("MatMul", ["a", "b"], ["y"]))
    assert plain.op_type == plain.written_op == "MatMul"
    assert Node("Relu", ["a"], ["y"]).op_type == Node("Relu", ["a"], ["y"]).written_op == "Relu"
    model = RooflineCostModel(CPU_PROFILE)
    x = t(1, 128, 768)
    assert model.node_cost(sum_as_add, [x, x], x) == model.node_cost(Node("Add", [], [], {}), [x, x], x)
