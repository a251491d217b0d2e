"""Pipeline stages, their 1F1B schedule and activation checkpointing (eqsat_dnn.partition.stages):
the bubble, the dynamic programme on a deep toy model under memory bounds, the plan JSON and the
command line (which prints them, and refuses to --run a batch of one in microbatches; runs are
tested in test_partition_pipeline.py)."""

from __future__ import annotations

import json

import pytest

from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.models.blocks import transformer_mlp
from eqsat_dnn.partition import Plan, annotate, get_mesh, partition
from eqsat_dnn.partition.mesh import GIB, with_memory
from eqsat_dnn.partition.plan import unit_candidates
from eqsat_dnn.partition.problem import prepare_graph
from eqsat_dnn.partition.stages import (Schedule, UnitCost, bubble_fraction, in_flight, layer_units, plan_stages,
                                        stage_devices, stage_price, sub_mesh)

DEEP = dict(batch=1, seq=64, hidden=32, ffn=128, layers=8)
"""Eight MLP layers whose batch cannot be split four ways."""


@pytest.fixture(scope="module")
def deep():
    graph = load_model(transformer_mlp(**DEEP))
    free = partition(graph, "4", machine="cpu", mode="train")
    return graph, free.predicted.memory_bytes_per_device


def test_1f1b_bubble_and_in_flight_microbatches():
    assert bubble_fraction(1, 8) == 0.0
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert bubble_fraction(2, 1) == pytest.approx(1 / 2)
    assert [in_flight(s, 4, 8) for s in range(4)] == [4, 3, 2, 1]
    assert in_flight(0, 4, 2) == 2
    with pytest.raises(Exception, match="microbatch"):
        bubble_fraction(2, 0)


def test_stage_price_checkpoints_only_what_memory_needs():
    mesh = get_mesh("4", "cpu")
    unit = UnitCost(compute_s=3e-3, latency_s=1e-5, bandwidth_s=1e-4, weight_comm_s=2e-4, weight_bytes=100.0,
                    activation_bytes=1000.0, input_bytes=10.0, output_bytes=40.0)
    costs = [{"ilp": unit}] * 3
    free = stage_price(costs, 0, 2, 4, 1e9, mesh, 40.0)
    assert free[3] == 0  # no checkpointing when memory allows
    # 2 microbatches in flight of 1/4 of the batch each: 300 + 1500 bytes; checkpointing one unit saves 495
    tight = stage_price(costs, 0, 2, 4, 300 + 1500 - 200, mesh, 40.0)
    assert tight[3] == 1 and tight[0] == pytest.approx(free[0] + unit.forward_s / 4)
    assert stage_price(costs, 0, 2, 4, 100.0, mesh, 40.0) is None


def test_units_sub_meshes_and_devices():
    graph = prepare_graph(load_model(transformer_mlp(**DEEP)), values=False)
    units = layer_units(graph)
    assert len(units) == 8 and sum(map(len, units)) == len(graph.nodes)
    mesh = get_mesh("2x2", "cpu")
    assert sub_mesh(mesh, 2).shape == (1, 2)
    assert stage_devices(mesh, 2, 1) == [2, 3]


def test_the_dp_pipelines_a_deep_model_when_memory_demands(deep):
    graph, need = deep
    graph = prepare_graph(graph, values=False)
    mesh = get_mesh("4", "cpu")
    candidates = unit_candidates("adam")
    roomy = plan_stages(graph, with_memory(mesh, 10 * need), candidates, 8)
    tight = plan_stages(graph, with_memory(mesh, 0.2 * need), candidates, 8)
    # one stage fits only with slow plans (or not at all): stages are faster
    assert len(tight.stages) > 1 and tight.time_s < (tight.options[1] or float("inf")) / 2
    assert tight.memory_bytes <= 0.2 * need
    assert [u for st in tight.stages for u in st.units] == [f"unit{k}" for k in range(8)]
    assert tight.time_s == pytest.approx((8 + len(tight.stages) - 1) * max(s.microbatch_s for s in tight.stages)
                                         + max(s.sync_s for s in tight.stages))
    assert roomy.options[1] is not None and all(not st.checkpointed for st in roomy.stages)
    tighter = plan_stages(graph, with_memory(mesh, 0.15 * need), candidates, 8)
    assert tighter.checkpointed() and tighter.time_s > tight.time_s  # recomputation costs time


def test_partition_falls_back_to_a_pipeline_and_the_json_round_trips(deep, tmp_path):
    graph, need = deep
    with pytest.raises(Exception, match="cannot fit"):
        partition(graph, "4", machine="cpu", mode="train", memory_gb=0.1 * need / GIB)
    plan = partition(graph, "4", machine="cpu", mode="train", memory_gb=0.18 * need / GIB)
    assert plan.solver["source"] == "pipeline" and plan.predicted.fits
    assert plan.pipeline.schedule == Schedule.ONE_F_ONE_B and len(plan.pipeline.stages) == 4
    assert len(plan.nodes) == len(prepare_graph(graph, values=False).nodes)
    with pytest.raises(Exception, match="sub-meshes"):
        annotate(graph, plan)
    data = plan.to_dict()
    assert data["schedule"]["microbatches"] == 8 and data["schedule"]["bubble"] == pytest.approx(3 / 11)
    assert data["checkpointed"] and data["stages"][0]["devices"] == [0]
    plan.save(tmp_path / "plan.json")
    back = Plan.load(tmp_path / "plan.json").to_dict()
    assert {k: v for k, v in back.items() if k != "baselines"} == {k: v for k, v in data.items() if k != "baselines"}


def test_cli_prints_the_pipeline_and_refuses_to_run_a_batch_it_cannot_split(tmp_path, capsys):
    import onnx

    from eqsat_dnn.cli import main

    model = tmp_path / "deep.onnx"
    onnx.save(transformer_mlp(**DEEP), model)
    args = ["partition", str(model), "--mesh", "4", "--machine", "cpu", "--mode", "train", "--microbatches", "4",
            "-o", str(tmp_path / "plan.json")]
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schedule"]["microbatches"] == 4 and data["stages"]
    assert main(args) == 0
    assert "pipeline:" in capsys.readouterr().out
    pytest.importorskip("torch")
    (tmp_path / "plan.json").unlink()
    code = main(args + ["--run"])
    err = capsys.readouterr().err
    assert code == 2 and "microbatches split the batch" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "plan.json").exists()
