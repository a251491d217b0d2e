"""Training under a plan on torch's DTensor (eqsat_dnn.partition.train): the repo's transformer
blocks at tiny sizes, on 4 gloo processes, on a 4-device mesh and a 2x2 one; losses, gradients and
updated weights against single-device training, and DTensor's collectives against the plan's."""

from __future__ import annotations

import itertools
import json

import pytest

torch = pytest.importorskip("torch")

from eqsat_dnn.cli import main  # noqa: E402
from eqsat_dnn.errors import InputError  # noqa: E402
from eqsat_dnn.io.onnx_in import load_model  # noqa: E402
from eqsat_dnn.models.blocks import transformer_attention, transformer_layer, transformer_mlp  # noqa: E402
from eqsat_dnn.partition import Shard, get_mesh, partition  # noqa: E402
from eqsat_dnn.partition.collectives import partial_detour, redistribute  # noqa: E402
from eqsat_dnn.partition.mesh import GIB  # noqa: E402
from eqsat_dnn.partition.placements import PARTIAL, REPLICATE, Partial, all_specs  # noqa: E402
from eqsat_dnn.partition.plan import plan_from_assignment  # noqa: E402
from eqsat_dnn.partition.problem import BASELINES, build_problem  # noqa: E402
from eqsat_dnn.partition.train import train_plans  # noqa: E402

TINY = dict(batch=2, seq=8, hidden=16)
BLOCKS = {
    "mlp": lambda: transformer_mlp(ffn=32, **TINY),
    "attention": lambda: transformer_attention(heads=4, **TINY),
    "layer": lambda: transformer_layer(heads=4, ffn=32, **TINY),
}


def test_redistribution_is_dtensors_own():
    """The plan's conversions are, step for step, the transforms torch's DTensor plans (its greedy
    planner, read through a fake process group: no process started), for every pair of placements."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Partial as TP, Replicate as TR, Shard as TS
    from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta
    from torch.distributed.tensor._redistribute import _gen_transform_infos
    from torch.testing._internal.distributed.fake_pg import FakeStore

    def placement(p):
        return TS(p.dim) if isinstance(p, Shard) else TP() if isinstance(p, Partial) else TR()

    def kind(a, b):
        if b.is_replicate():
            return "all_reduce" if a.is_partial() else "all_gather"
        if b.is_shard():
            return "reduce_scatter" if a.is_partial() else "all_to_all" if a.is_shard() else "slice"
        return "zero"

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=8)
    try:
        shape = (8, 8, 4)
        meta = TensorMeta(torch.Size(shape), (32, 4, 1), torch.float32)
        for mesh_shape in [(4,), (2, 2), (2, 4)]:
            mesh = init_device_mesh("cpu", mesh_shape)
            specs = all_specs(shape, mesh_shape, partial_ok=True)
            for src, dst in itertools.product(specs, specs):
                middle = partial_detour(src, dst)
                legs = [(src, middle), (middle, dst)] if middle else [(src, dst)]
                theirs = []
                for a, b in legs:
                    infos = _gen_transform_infos(DTensorSpec(mesh, tuple(map(placement, a)), meta),
                                                 DTensorSpec(mesh, tuple(map(placement, b)), meta))
                    theirs += [(kind(*i.src_dst_placements), i.mesh_dim) for i in infos
                               if i.src_dst_placements[0] != i.src_dst_placements[1]]
                ours = [(s.kind, s.axis) for s in redistribute(shape, 4, src, dst, mesh_shape)]
                assert ours == theirs, (mesh_shape, src, dst)
    finally:
        dist.destroy_process_group()


def test_backward_prices_the_gradient_redistribution():
    """Megatron's column-parallel input: a replicated read by divided work all-reduces its gradient;
    FSDP's weight: its gathered read's gradient is reduce-scattered; a partial tensor's read
    replicated passes its gradient through."""
    model = load_model(transformer_mlp(ffn=32, **TINY))
    problem = build_problem(model, get_mesh("4", "cpu"), "train")
    x = "mlp0.ln"
    assert [s.kind for s in problem.backward_steps(x, (REPLICATE,), (REPLICATE,), frozenset({0}))] == ["all_reduce"]
    w = "mlp0.fc1.weight"
    assert [s.kind for s in problem.backward_steps(w, (Shard(0),), (REPLICATE,), frozenset({0}))] == ["reduce_scatter"]
    assert problem.backward_steps(w, (Shard(0),), (REPLICATE,), frozenset()) == []
    assert problem.backward_steps(x, (PARTIAL,), (REPLICATE,), frozenset()) == []


def _plans(model, meshes=("4", "2x2"), optimizer="sgd"):
    """The ILP's plan and the three baselines' on each mesh, in train mode on the cpu preset."""
    graph = load_model(model)
    jobs = []
    for mesh in meshes:
        problem = build_problem(graph, get_mesh(mesh, "cpu"), "train", optimizer=optimizer)
        jobs.append((f"ilp-{mesh}", partition(graph, mesh, machine="cpu", mode="train", optimizer=optimizer)))
        for name, make in BASELINES.items():
            jobs.append((f"{name}-{mesh}", plan_from_assignment(problem, make(problem))))
    return graph, jobs


def _check(reports, names, steps=3):
    for name, report in zip(names, reports):
        assert report.ok, (name, report.failures)
        assert report.steps == steps and len(report.losses) == steps
        assert report.loss_max_rel_error <= 1e-4 and report.weights_max_rel_error <= 1e-4, name
        assert report.grads_max_rel_error <= 1e-4, name
        assert report.collectives_match, (name, report.mismatch())
        assert report.weights_max_rel_update > 1e-3, name  # the weights did move
        assert report.losses[-1] < report.losses[0], name
    # the check is not vacuous: plans with forward and backward collectives ran
    assert any(r.counts(r.issued, "forward") and r.counts(r.issued, "backward") for r in reports)


@pytest.mark.parametrize("block,optimizer", [("mlp", "sgd"), ("attention", "adam"), ("layer", "sgd")])
def test_blocks_train_on_4_processes_like_one_device(block, optimizer):
    graph, jobs = _plans(BLOCKS[block](), optimizer=optimizer)
    reports = train_plans([(graph, plan) for _, plan in jobs], steps=3, optimizer=optimizer,
                          lr=0.01 if optimizer == "sgd" else 0.001)
    _check(reports, [name for name, _ in jobs])
    by_name = dict(zip((name for name, _ in jobs), reports))
    for mesh in ("4", "2x2"):  # data parallelism: every replicated weight's gradient all-reduced
        dp = by_name[f"data_parallel-{mesh}"]
        synced = {t for phase, kind, t, *_ in dp.issued if phase == "backward" and kind == "all_reduce"}
        assert {n for n in synced if n.endswith(".weight")}, mesh
        fsdp = by_name[f"fsdp-{mesh}"]
        assert fsdp.counts(fsdp.issued, "backward").get("reduce_scatter", 0) > 0
    if block == "attention":
        assert by_name["data_parallel-4"].weights_without_gradient == {"attn0.k.bias": 16}  # softmax ignores it


def test_random_plans_issue_exactly_their_collectives():
    """Plans no solver would pick (a random strategy for every op and placement for every weight,
    input and output, outputs left sharded), so that every kind of conversion turns up: all-to-alls
    (all-gathers on gloo), partial reads, detours through replicate, nested 2-D shards."""
    import random

    graph = load_model(BLOCKS["layer"]())
    rng = random.Random(1)
    jobs = []
    for mesh in ("4", "2x2", "2x2", "4", "2x2", "4"):
        problem = build_problem(graph, get_mesh(mesh, "cpu"), "train", optimizer="sgd", tie=False, outputs="any")
        jobs.append((mesh, plan_from_assignment(problem, [rng.randrange(len(i.choices)) for i in problem.items])))
    reports = train_plans([(graph, plan) for _, plan in jobs], steps=3, optimizer="sgd", lr=0.01)
    _check(reports, [mesh for mesh, _ in jobs])
    assert all(r.substituted.get("all_to_all->all_gather") for r in reports)
    assert any(any(isinstance(p, Shard) for p in plan.outputs["y"]) for _, plan in jobs)


def test_a_real_gpt2_export_trains_like_one_device(tmp_path):
    """torch's dynamo export of a tiny GPT-2 (embeddings, fused QKV split, masks through GatherND, Where
    and And), with Adam: Megatron on 4, FSDP and data parallel on 2x2. Adam turns the rounding noise of
    gradients that are zero (unused embedding rows, the key bias) into full steps: those elements are
    listed and left out of the weights' error."""
    pytest.importorskip("transformers")
    from eqsat_dnn.models.exports import export_gpt2

    graph = load_model(export_gpt2(tmp_path / "gpt2.onnx", layers=1, hidden=64, heads=4, vocab=97, seq=16))
    jobs = []
    for mesh, names in (("4", ("megatron",)), ("2x2", ("fsdp", "data_parallel"))):
        problem = build_problem(graph, get_mesh(mesh, "cpu"), "train", optimizer="adam")
        jobs += [(f"{name}-{mesh}", plan_from_assignment(problem, BASELINES[name](problem))) for name in names]
    reports = train_plans([(graph, plan) for _, plan in jobs], steps=3, optimizer="adam", lr=0.001)
    _check(reports, [name for name, _ in jobs])
    # token rows not in the batch; the position table is gathered at constant positions, which now
    # fold (Gather is vocabulary): the rows used become a weight of their own, all of them trained
    assert "inner.wte.weight" in reports[0].weights_without_gradient
    assert "inner.wpe.weight" not in reports[0].weights_without_gradient


def _conv_net():
    """Conv, Relu, strided Conv, Relu, GlobalAveragePool, Flatten, Gemm over x: [4, 4, 8, 8]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32),
                                       name)

    inits = [weight("w1", 8, 4, 3, 3), weight("b1", 8), weight("w2", 8, 8, 3, 3), weight("b2", 8),
             weight("fc", 8, 4), weight("fcb", 4)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"])]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_conv_net_trains_split_by_batch_and_channels():
    """Convolutions split by output channels (Megatron's column rule) and input channels (a partial
    result), and random plans of the same net."""
    import random

    graph = load_model(_conv_net())
    rng = random.Random(0)
    jobs = []
    for mesh in ("4", "2x2"):
        problem = build_problem(graph, get_mesh(mesh, "cpu"), "train", optimizer="sgd")
        jobs.append((f"megatron-{mesh}", plan_from_assignment(problem, BASELINES["megatron"](problem))))
        jobs.append((f"random-{mesh}", plan_from_assignment(problem, [rng.randrange(len(i.choices))
                                                                     for i in problem.items])))
    reports = train_plans([(graph, plan) for _, plan in jobs], steps=3, optimizer="sgd", lr=0.01)
    _check(reports, [name for name, _ in jobs])
    strategies = {n.strategy for _, plan in jobs for n in plan.nodes if n.op == "Conv"}
    assert {"outch", "inch"} <= {part for s in strategies for part in s.split("/")}


def test_memory_bound_forces_sharded_weights_and_still_trains(tmp_path, capsys):
    """Below the replicated need (weights, gradients, Adam state and activations) the ILP shards the
    weights; the CLI's training run of that plan (--mode train --run --json) still matches."""
    model_path = tmp_path / "layer.onnx"
    import onnx

    onnx.save(BLOCKS["layer"](), model_path)
    graph = load_model(model_path)
    free = partition(graph, "4", machine="cpu", mode="train")
    replicated = free.baselines["data_parallel"].memory_bytes_per_device
    bound = 0.7 * replicated
    plan_path = tmp_path / "plan.json"
    code = main(["partition", str(model_path), "--mesh", "4", "--machine", "cpu", "--mode", "train",
                 "--memory-gb", str(bound / GIB), "--run", "--steps", "3", "--optimizer", "adam",
                 "-o", str(plan_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    run = data["run"]
    assert run["mode"] == "train" and run["steps"] == 3 and run["ok"]
    assert run["loss_max_rel_error"] <= 1e-4 and run["weights_max_rel_error"] <= 1e-4 and run["collectives_match"]
    assert run["predicted_step_s"] > 0 and run["measured_step_s"] > 0
    assert data["predicted"]["memory_bytes_per_device"] <= bound < replicated
    plan = json.loads(plan_path.read_text())
    assert any(p.startswith("Shard") for n, spec in plan["placements"].items() if n.endswith(".weight") for p in spec)
    assert run["collectives_issued"]["backward"]
    assert run["substituted"] or run["collectives_issued"] == data["collectives_by_phase"]  # the plan's, by phase


@pytest.mark.parametrize("extra,message", [(["--steps", "0"], ">= 1"), (["--lr", "nan"], "finite"),
                                           (["--optimizer", "lion"], "invalid choice")])
def test_cli_refuses_bad_training_options(tmp_path, capsys, extra, message):
    import onnx

    onnx.save(BLOCKS["mlp"](), tmp_path / "mlp.onnx")
    with pytest.raises(SystemExit) as exit_:
        main(["partition", str(tmp_path / "mlp.onnx"), "--mesh", "4", "--mode", "train", "--run",
              "-o", str(tmp_path / "plan.json"), *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "plan.json").exists()


def test_training_refuses_what_it_cannot_run():
    graph = load_model(BLOCKS["mlp"]())
    inference = partition(graph, "4", machine="cpu")
    with pytest.raises(InputError, match="train mode"):
        train_plans([(graph, inference)])
    train = partition(graph, "4", machine="cpu", mode="train")
    with pytest.raises(InputError, match="steps"):
        train_plans([(graph, train)], steps=0)
    with pytest.raises(InputError, match="optimizer"):
        train_plans([(graph, train)], optimizer="lion")
