"""Second pass: partition a program across a device mesh, and run the plan on torch.distributed.

One stage per module::

    mesh.get_mesh("2x4", machine)      shape, preset   -> DeviceMesh        (mesh)
    calibrate.measured_figures(4)      process count   -> gloo and torch figures measured here, cached (``cpu:measured``)  (calibrate)
    strategies.node_strategies(...)    node            -> its strategies    (strategies)
    ir.blocks.repeated_layers(graph)   Graph           -> copies of repeated layers, tied in the ILP  (ir.blocks)
    problem.build_problem(graph, mesh) Graph, mesh     -> PartitionProblem  (problem)
    ilp.solve(problem)                 problem         -> an assignment     (ilp)
    plan.partition(graph, mesh)        all the above   -> Plan (JSON, table, ONNX annotation)  (plan)
    run.run_plan(graph, plan, ...)     Graph, Plan     -> RunReport (outputs and collectives checked)  (run)
    train.train_plan(graph, plan, ...) Graph, Plan     -> TrainReport (training steps on DTensor, checked)  (train)
    pipeline_run.train_pipeline(...)   Graph, Plan     -> PipelineReport (stages in 1F1B, checkpointing)  (pipeline_run)
    torch_plan.torch_plan(graph, plan) Graph, Plan     -> TorchPlan (parallelize_module styles for the exported module)  (torch_plan)
    torch_train.check_torch_plans(...) module, TorchPlan -> TorchTrainReport (parallelize_module, trained, checked)  (torch_train)

Training's larger search space: ZeRO-1/2/3 per weight (``zero``: choices of the ILP) and pipeline
stages with 1F1B and activation checkpointing (``stages``: a dynamic programme over the layers, each
stage's units priced by the ILP on its sub-mesh).

``run``, ``train`` and ``pipeline_run`` (with ``ops_torch``, the ONNX ops in torch), ``torch_train``, ``calibrate``'s
measurement and the styles of ``torch_plan`` need torch
(``pip install eqsat-dnn[dist]``); everything else does not.
"""

from eqsat_dnn.partition.mesh import MACHINES, DeviceMesh, Link, MeshAxis, get_mesh, parse_mesh_shape
from eqsat_dnn.partition.placements import PARTIAL, REPLICATE, Partial, Replicate, Shard
from eqsat_dnn.partition.plan import Plan, PlanNode, annotate, partition, plan_table
from eqsat_dnn.partition.problem import Collective, Evaluation, build_problem
from eqsat_dnn.partition.stages import Pipeline, Schedule, bubble_fraction
from eqsat_dnn.partition.zero import ZeroStage


def run_plan(*args, **kwargs):
    """See :func:`eqsat_dnn.partition.run.run_plan` (imported on first use: it needs torch)."""
    from eqsat_dnn.partition.run import run_plan as _run_plan

    return _run_plan(*args, **kwargs)


def train_plan(*args, **kwargs):
    """See :func:`eqsat_dnn.partition.train.train_plan` (imported on first use: it needs torch); plans with
    pipeline stages or checkpointing train by :func:`eqsat_dnn.partition.pipeline_run.train_pipeline`."""
    from eqsat_dnn.partition.pipeline_run import train_plan as _train_plan

    return _train_plan(*args, **kwargs)


__all__ = ["Collective", "DeviceMesh", "Evaluation", "Link", "MACHINES", "MeshAxis", "PARTIAL", "Partial", "Pipeline",
           "Plan", "PlanNode", "REPLICATE", "Replicate", "Schedule", "Shard", "ZeroStage", "annotate",
           "bubble_fraction", "build_problem", "get_mesh", "parse_mesh_shape", "partition", "plan_table", "run_plan",
           "train_plan"]
