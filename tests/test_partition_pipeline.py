"""Training under pipelined and checkpointed plans (eqsat_dnn.partition.pipeline_run) on 4 gloo
processes: two stages of a deep MLP in 1F1B over 4 microbatches, a checkpointed unit, and tensor
parallel layers whose checkpointed forward issues its collectives again; losses, gradients and
weights against single-device training, collectives and point-to-point sends against the plan."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from eqsat_dnn.cli import main  # noqa: E402
from eqsat_dnn.io.onnx_in import load_model  # noqa: E402
from eqsat_dnn.models.blocks import transformer_layer, transformer_mlp  # noqa: E402
from eqsat_dnn.partition import get_mesh, partition  # noqa: E402
from eqsat_dnn.partition.mesh import GIB, with_memory  # noqa: E402
from eqsat_dnn.partition.plan import _pipelined_plan, plan_from_assignment  # noqa: E402
from eqsat_dnn.partition.problem import BASELINES, build_problem  # noqa: E402
from eqsat_dnn.partition.stages import UnitCost, plan_stages, stage_price  # noqa: E402
from eqsat_dnn.partition.pipeline_run import train_plan  # noqa: E402

DEEP = dict(batch=32, seq=32, hidden=64, ffn=256, layers=4)
"""Four MLP layers whose data parallel plans need a pipeline (or checkpointing) under a memory bound."""


@pytest.fixture(scope="module")
def deep():
    graph = load_model(transformer_mlp(**DEEP))
    return graph, partition(graph, "4", machine="cpu", mode="train").predicted.memory_bytes_per_device


def _check(run: dict, stages: int, microbatches: int) -> None:
    assert run["ok"], run["failures"]
    assert run["stages"] == stages and run["microbatches"] == microbatches
    assert run["collectives_match"] and run["p2p_sends"] == run["p2p_sends_planned"]
    assert run["loss_max_rel_error"] <= 1e-4 and run["weights_max_rel_error"] <= 1e-4
    assert run["weights_max_rel_update"] > 1e-3  # training moved the weights
    assert run["measured_step_s"] > 0 and run["predicted_step_s"] > 0


def test_two_stages_train_in_1f1b_under_run(deep, tmp_path, capsys):
    import onnx

    graph, need = deep
    model = tmp_path / "deep.onnx"
    onnx.save(transformer_mlp(**DEEP), model)
    code = main(["partition", str(model), "--mesh", "4", "--machine", "cpu", "--mode", "train", "--optimizer", "sgd",
                 "--memory-gb", str(0.45 * need / GIB), "--microbatches", "4", "--run", "--steps", "2", "--json",
                 "-o", str(tmp_path / "plan.json")])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and len(data["stages"]) == 2 and data["schedule"]["microbatches"] == 4
    run = data["run"]
    _check(run, 2, 4)
    # the stages' data parallel gradients are synchronised once per step, not once per microbatch
    assert run["collectives_issued"]["backward"] == {"all_reduce": 24}
    assert run["p2p_sends"] == 2 * 2 * 4  # one activation forward and its gradient back, per rank and microbatch


def test_a_checkpointed_unit_trains(deep):
    graph, need = deep
    plan = partition(graph, "4", machine="cpu", mode="train", memory_gb=0.3 * need / GIB, microbatches=4)
    assert plan.pipeline.checkpointed() and len(plan.pipeline.stages) == 2
    report = train_plan(graph, plan, steps=2, optimizer="adam", lr=1e-3)
    _check(report.to_dict(), 2, 4)
    assert report.checkpointed == [c["unit"] for c in plan.pipeline.checkpointed()]


def _megatron(graph, mesh, final):
    """Megatron-LM for every unit (the graph's outputs replicated at the end)."""
    problem = build_problem(graph, mesh, "train", optimizer="sgd", outputs="replicate" if final else "any")
    return {"ilp": plan_from_assignment(problem, BASELINES["megatron"](problem))}


def test_recomputed_forward_issues_its_collectives_again():
    graph = load_model(transformer_layer(batch=8, seq=8, hidden=16, heads=2, ffn=32, layers=4))
    mesh = get_mesh("4", "cpu")
    problem = build_problem(graph, mesh, "train", optimizer="sgd")
    roomy = plan_stages(problem.graph, with_memory(mesh, 1e9), _megatron, 4, stage_counts=[2])
    pipe = plan_stages(problem.graph, with_memory(mesh, 70_000), _megatron, 4, stage_counts=[2])
    assert not roomy.checkpointed() and pipe.checkpointed()
    assert pipe.time_s > roomy.time_s  # recomputation (its compute and collectives) costs time
    report = train_plan(graph, _pipelined_plan(problem, pipe, {}), steps=2)
    run = report.to_dict()
    _check(run, 2, 4)
    # tensor parallel attention ends partial: the residual's conversion inside the layer runs again in backward
    assert sum(run["collectives_issued"]["recompute"].values()) > 0


def test_stage_price_counts_the_recomputed_collectives():
    mesh = get_mesh("4", "cpu")
    unit = UnitCost(compute_s=3e-3, latency_s=1e-5, bandwidth_s=1e-4, weight_comm_s=2e-4, weight_bytes=100.0,
                    activation_bytes=1000.0, input_bytes=10.0, output_bytes=40.0, forward_latency_s=4e-6,
                    forward_bandwidth_s=4e-5)
    costs = [{"ilp": unit}] * 3
    free = stage_price(costs, 0, 2, 4, 1e9, mesh, 40.0)
    tight = stage_price(costs, 0, 2, 4, 300 + 1500 - 200, mesh, 40.0)
    assert tight[3] == 1
    assert tight[0] == pytest.approx(free[0] + (unit.forward_s + 4e-5) / 4 + 4e-6)
