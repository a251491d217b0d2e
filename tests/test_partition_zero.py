"""ZeRO-1/2/3 as per-weight choices of the partitioning ILP (eqsat_dnn.partition.zero): prices,
memory, the choice under a memory bound, the plan JSON, and training under such plans on 4 gloo
processes against single-device training."""

from __future__ import annotations

import json

import pytest

from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.models.blocks import transformer_mlp
from eqsat_dnn.partition import get_mesh, partition
from eqsat_dnn.partition.mesh import GIB
from eqsat_dnn.partition.placements import REPLICATE, Shard
from eqsat_dnn.partition.plan import Plan, plan_from_assignment
from eqsat_dnn.partition.problem import build_problem, data_parallel
from eqsat_dnn.partition.zero import ZeroStage, state_spec, with_zero

WIDE = dict(batch=32, seq=64, hidden=64, ffn=256)
"""An MLP whose activations make tensor parallelism dear: under a memory bound ZeRO is the cheap way."""


def _zero_assignment(problem, stage: ZeroStage) -> list[int]:
    """Data parallelism with every weight that can take ``stage`` taking it."""
    return with_zero(problem, data_parallel(problem), stage)


def test_zero_choices_price_memory_and_collectives():
    problem = build_problem(load_model(transformer_mlp(ffn=32, batch=2, seq=8, hidden=16)), get_mesh("4", "cpu"),
                            "train", optimizer="adam")
    item = next(i for i in problem.items if i.kind == "weight" and i.label == "mlp0.fc1.weight")
    by_stage = {c.zero: c for c in item.choices if c.produces == ((REPLICATE,),)}
    assert set(by_stage) == {ZeroStage.NONE, ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS}
    assert by_stage[ZeroStage.GRADIENTS].state == (Shard(0),)
    w = 16 * 32 * 4  # bytes of the weight
    assert problem.weight_bytes(item, by_stage[ZeroStage.NONE]) == 4 * w  # weight, gradient, Adam's m and v
    assert problem.weight_bytes(item, by_stage[ZeroStage.OPTIMIZER]) == 2 * w + 2 * w / 4
    assert problem.weight_bytes(item, by_stage[ZeroStage.GRADIENTS]) == w + 3 * w / 4
    update = problem.update_collectives(item, by_stage[ZeroStage.OPTIMIZER])
    assert [(c.kind, c.bytes, c.phase) for c in update] == [("all_gather", w, "update")]
    assert problem.update_collectives(item, by_stage[ZeroStage.NONE]) == []
    # ZeRO-2 reduce-scatters the gradient that data parallelism all-reduces
    name, read = "mlp0.fc1.weight", (REPLICATE,)
    plain = problem.backward_steps(name, read, read, frozenset({0}))
    zero2 = problem.backward_steps(name, read, read, frozenset({0}),
                                   problem.gradient_target(by_stage[ZeroStage.GRADIENTS]))
    assert [s.kind for s in plain] == ["all_reduce"] and [s.kind for s in zero2] == ["reduce_scatter"]
    # SGD keeps no state: no ZeRO-1
    sgd = build_problem(problem.graph, problem.mesh, "train", optimizer="sgd")
    assert {c.zero for i in sgd.items if i.kind == "weight" for c in i.choices} == {ZeroStage.NONE,
                                                                                    ZeroStage.GRADIENTS}
    assert state_spec((Shard(0),), (16, 32), (4,)) is None
    assert state_spec((REPLICATE, Shard(1)), (16, 32), (2, 2)) == (Shard(0), Shard(1))


def test_plan_json_round_trips_zero_stages(tmp_path):
    graph = load_model(transformer_mlp(ffn=32, batch=2, seq=8, hidden=16))
    problem = build_problem(graph, get_mesh("2x2", "cpu"), "train")
    plan = plan_from_assignment(problem, _zero_assignment(problem, ZeroStage.OPTIMIZER))
    assert {z.stage for z in plan.zero.values()} == {ZeroStage.OPTIMIZER}
    assert plan.collective_counts("update")["all_gather"] >= len(plan.zero)
    plan.save(tmp_path / "plan.json")
    back = Plan.load(tmp_path / "plan.json")
    assert back.zero == plan.zero and back.to_dict() == plan.to_dict()
    assert json.loads((tmp_path / "plan.json").read_text())["zero"]["mlp0.fc1.weight"]["stage"] == 1


def test_a_memory_bound_below_replicated_chooses_zero_and_trains(tmp_path, capsys):
    """Below data parallelism's need the ILP keeps the weights replicated but shards their training
    state (ZeRO); the CLI's training run (--mode train --run) matches single-device training and
    issues the plan's collectives, the update's all-gathers included."""
    import onnx

    pytest.importorskip("torch")
    from eqsat_dnn.cli import main

    model = tmp_path / "mlp.onnx"
    onnx.save(transformer_mlp(**WIDE), model)
    free = partition(load_model(model), "4", machine="cpu", mode="train")
    replicated = free.baselines["data_parallel"].memory_bytes_per_device
    bound = 0.9 * replicated
    code = main(["partition", str(model), "--mesh", "4", "--machine", "cpu", "--mode", "train",
                 "--memory-gb", str(bound / GIB), "--run", "--steps", "3", "--optimizer", "adam",
                 "-o", str(tmp_path / "plan.json"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    run = data["run"]
    assert run["ok"] and run["collectives_match"]
    assert run["loss_max_rel_error"] <= 1e-4 and run["weights_max_rel_error"] <= 1e-4
    assert data["predicted"]["memory_bytes_per_device"] <= bound
    assert data["zero"] and {z["stage"] for z in data["zero"].values()} & {1, 2}
    assert run["collectives_issued"]["update"]["all_gather"] == data["collectives_by_phase"]["update"]["all_gather"]


def test_zero_1_and_2_train_like_one_device_on_both_meshes():
    pytest.importorskip("torch")
    from eqsat_dnn.partition.train import train_plans

    graph = load_model(transformer_mlp(ffn=32, batch=4, seq=8, hidden=16))
    jobs = []
    for mesh in ("4", "2x2"):
        problem = build_problem(graph, get_mesh(mesh, "cpu"), "train", optimizer="adam")
        for stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS):
            jobs.append(((mesh, stage), plan_from_assignment(problem, _zero_assignment(problem, stage))))
    reports = train_plans([(graph, plan) for _, plan in jobs], steps=3, optimizer="adam", lr=0.001)
    for (name, plan), report in zip(jobs, reports):
        assert report.ok, (name, report.failures)
        assert report.collectives_match and report.loss_max_rel_error <= 1e-4, name
        assert report.weights_max_rel_error <= 1e-4, name
        assert report.counts(report.issued, "update").get("all_gather", 0) >= len(plan.zero) > 0, name
        if name[1] == ZeroStage.GRADIENTS:
            assert report.counts(report.issued, "backward").get("reduce_scatter", 0) > 0, name
