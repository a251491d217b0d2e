"""Benchmark: the partitioning ILP's solve time, and its plans against pure data parallelism and Megatron-LM.

For each model and mesh it reports the ILP's wall time (median of ``--repeats`` solves), whether
it proved optimality, and the predicted step time of the ILP's plan, of the pure data-parallel
plan and of the Megatron plan (tensor parallelism on the last mesh axis, data parallelism on the
others), with the collectives the ILP's plan uses. The headline is BERT-base (torch's dynamo
export, 12 layers, seq 128, cached in ``--cache``) on 8 devices.

``--llama 2,8,32`` instead plans LLaMA-2-7B-shaped stacks of that many layers (hidden 4096,
batch 8, sequence 2048, weights a sparse external file) on a 2x8 mesh of ``--machine`` in train
mode, each in a fresh process, and reports load, ILP build+solve and total time and the process's
peak memory against the layer count (``--untied`` adds the same without tied layers).

    python bench/partition.py [--repeats 3] [--skip-bert] [--out bench/results/partition.json]
    python bench/partition.py --llama 2,8,32 [--untied 2,8] [--out bench/results/partition-llama.json]
    python bench/partition.py --train-timing [--steps 8] [--out bench/results/partition-train.json]
    python bench/partition.py --memory-bounds [--out bench/results/partition-memory.json]

``--train-timing`` trains several plans of one model (two transformer MLP blocks, hidden 128, 256
tokens) on 4 local gloo processes on DTensor (:mod:`eqsat_dnn.partition.train`): the ILP's plans
on a 4-device and a 2x2 mesh of the ``cpu`` preset, with and without a memory bound that forces
sharded weights, the data-parallel, Megatron and FSDP baselines and data parallelism with ZeRO-2 on
each mesh, and two pipelines of two stages (one layer each, 1F1B over 2 microbatches; the second under
a memory bound that checkpoints, :mod:`eqsat_dnn.partition.pipeline_run`). Per plan it
reports the predicted step time, the measured one (median of the steps after the first), whether
the collectives DTensor issued are the plan's, and the losses' and weights' errors against
single-device training; then the Spearman rank correlation of predicted against measured. It does so
for two presets: the nominal ``cpu`` and ``cpu:measured`` (:mod:`eqsat_dnn.partition.calibrate`: the
same figures measured on this machine's gloo processes, once, then cached). Each preset ranks the plans
it makes: a plan both make is trained once and priced by both; where they differ (the measured
preset's milliseconds per collective steer the ILP and the pipeline planner elsewhere) both plans are
trained, so each Spearman is over 14 plans.

``--memory-bounds`` plans two models in train mode (Adam) on 4 devices of the ``cpu`` preset at memory
bounds below what data parallelism needs: a wide MLP block, where the ILP keeps weights replicated and
shards their gradients and Adam state (ZeRO), and an 8-layer stack whose batch cannot be split four
ways, where nothing fits over the whole mesh and the planner cuts it into pipeline stages (1F1B, 8
microbatches), checkpointing layers as the bound tightens. Per bound: the chosen plan, its ZeRO
stages, stages, bubble, checkpointed layers, predicted step time, memory and planning time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.partition import get_mesh, partition
from eqsat_dnn.partition.mesh import GIB
from eqsat_dnn.models.blocks import transformer_layer, transformer_mlp


def _cases(args) -> list[tuple[str, object, str, str, str]]:
    """(label, model, mesh, machine, mode)."""
    cases = []
    if not args.skip_bert:
        path = Path(args.cache) / "bert-base.onnx"
        if not path.exists():
            from eqsat_dnn.models.exports import export_bert

            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"exporting BERT-base to {path} ...", file=sys.stderr)
            export_bert(path)
        bert = load_model(path)
        cases += [("BERT-base (seq 128)", bert, "8", "dgx-a100", "inference"),
                  ("BERT-base (seq 128)", bert, "8", "dgx-a100", "train"),
                  ("BERT-base (seq 128)", bert, "2x4", "dgx-a100", "inference")]
    layer = transformer_layer(batch=1, seq=32, hidden=2048, heads=16)
    cases += [
        ("layer h2048, 32 tokens", layer, "4", "dgx-a100", "inference"),
        ("layer h2048, 32 tokens", layer, "8", "dgx-a100", "inference"),
        ("layer h2048, 32 tokens", layer, "4", "dgx-a100", "train"),
        ("MLP h256, 64x128 tokens", transformer_mlp(batch=64, seq=128, hidden=256), "8", "dgx-a100", "inference"),
        ("MLP h256, 64x128 tokens", transformer_mlp(batch=64, seq=128, hidden=256), "8", "dgx-a100", "train"),
        ("MLP h1024, 16x128 tokens", transformer_mlp(batch=16, seq=128, hidden=1024), "2x4", "dgx-a100", "train"),
        ("layer h512, 16 tokens", transformer_layer(batch=1, seq=16, hidden=512, heads=8), "4", "cpu", "inference"),
    ]
    return cases


def _llama_case(layers: int, mesh: str, machine: str, tie: bool, time_limit: float) -> dict:
    """One LLaMA-shaped plan, in this process (run it in a fresh one: peak memory is per process)."""
    from eqsat_dnn.models.llama import LlamaConfig, llama

    with tempfile.TemporaryDirectory() as tmp:
        path = llama(Path(tmp) / "llama.onnx", layers=layers)
        start = time.perf_counter()
        graph = load_model(path, load_weights=False)
        loaded = time.perf_counter()
        plan = partition(graph, get_mesh(mesh, machine), mode="train", time_limit=time_limit, tie=tie)
        done = time.perf_counter()
    dp, meg, fsdp = plan.baselines["data_parallel"], plan.baselines["megatron"], plan.baselines["fsdp"]
    return {"layers": layers, "tied": tie, "mesh": mesh, "machine": machine, "mode": "train",
            "weights_gb": LlamaConfig(layers=layers).parameters * 4 / 1e9,
            "load_s": loaded - start, "ilp_s": plan.solver["seconds"], "total_s": done - start,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "status": plan.solver["status"], "source": plan.solver["source"], "items": plan.solver["items"],
            "tied_items": plan.solver["tied_items"], "variables": plan.solver["variables"],
            "constraints": plan.solver["constraints"],
            "plan_s": plan.predicted.time_s, "dp_s": dp.time_s, "megatron_s": meg.time_s, "fsdp_s": fsdp.time_s,
            "plan_gib_per_device": plan.predicted.memory_bytes_per_device / GIB,
            "dp_gib_per_device": dp.memory_bytes_per_device / GIB,
            "megatron_gib_per_device": meg.memory_bytes_per_device / GIB,
            "fsdp_gib_per_device": fsdp.memory_bytes_per_device / GIB, "fsdp_fits": fsdp.fits,
            "device_gib": plan.mesh.memory_bytes / GIB, "fits": plan.predicted.fits, "dp_fits": dp.fits,
            "megatron_fits": meg.fits, "zero": _zero_counts(plan)}


def _zero_counts(plan) -> dict[str, int]:
    """Weights per ZeRO stage of a plan (``zero2``: 6)."""
    return dict(sorted(Counter(f"zero{int(z.stage)}" for z in plan.zero.values()).items()))


def _llama(args) -> int:
    rows = []
    runs = [(n, True) for n in _counts(args.llama)] + [(n, False) for n in _counts(args.untied)]
    for layers, tie in runs:
        command = [sys.executable, __file__, "--llama-child", str(layers), "--machine", args.machine,
                   "--mesh", args.mesh, "--time-limit", str(args.time_limit)] + ([] if tie else ["--untied", "0"])
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{layers} layers ({'tied' if tie else 'untied'}): {r['total_s']:.1f} s, peak {r['peak_rss_gb']:.2f} GB",
              file=sys.stderr)
    print(f"| layers | weights GB | tied | items (tied) | ILP vars | load s | ILP build+solve s | total s | "
          f"peak RSS GB | status | plan s | DP s | Megatron s | FSDP s | plan GiB/dev | DP GiB/dev | Megatron GiB/dev | "
          f"FSDP GiB/dev | ZeRO weights |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def gb(value: float, fits: bool) -> str:
            return f"{value:.1f}" + ("" if fits else " (over)")

        print(f"| {r['layers']} | {r['weights_gb']:.1f} | {'yes' if r['tied'] else 'no'} | {r['items']} "
              f"({r['tied_items']}) | {r['variables']} | {r['load_s']:.2f} | {r['ilp_s']:.1f} | {r['total_s']:.1f} | "
              f"{r['peak_rss_gb']:.2f} | {r['status']} ({r['source']}) | {r['plan_s']:.3f} | {r['dp_s']:.3f} | "
              f"{r['megatron_s']:.3f} | {r['fsdp_s']:.3f} | {gb(r['plan_gib_per_device'], r['fits'])} | "
              f"{gb(r['dp_gib_per_device'], r['dp_fits'])} | {gb(r['megatron_gib_per_device'], r['megatron_fits'])} | "
              f"{gb(r['fsdp_gib_per_device'], r['fsdp_fits'])} | "
              f"{', '.join(f'{k} x{v}' for k, v in r['zero'].items()) or '-'} |")
    print(f"\n{args.mesh} mesh of {args.machine} ({rows[0]['device_gib']:.0f} GiB per device), train mode with Adam; "
          f"batch 8, sequence 2048; ILP time limit {args.time_limit:g} s")
    out = Path(args.out if args.out != DEFAULT_OUT else "bench/results/partition-llama.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return 0


def _timing_jobs(graph, machine: str, time_limit: float, pipeline_bound: float) -> list[tuple[str, object]]:
    """(label, plan) of the ``--train-timing`` plans of ``graph`` on the ``machine`` preset (see the module
    docstring); the second pipeline within ``pipeline_bound`` bytes per device."""
    from eqsat_dnn.partition.plan import plan_from_assignment
    from eqsat_dnn.partition.problem import BASELINES, build_problem
    from eqsat_dnn.partition.zero import ZeroStage, with_zero

    jobs = []
    for mesh in ("4", "2x2"):
        free = partition(graph, mesh, machine=machine, mode="train", optimizer="sgd", time_limit=time_limit)
        jobs.append((f"ilp {mesh}", free))
        bound = 0.6 * free.baselines["data_parallel"].memory_bytes_per_device
        jobs.append((f"ilp {mesh}, memory {bound / 1024:.0f} KiB", partition(
            graph, mesh, machine=machine, mode="train", optimizer="sgd", memory_gb=bound / GIB,
            time_limit=time_limit)))
        problem = build_problem(graph, get_mesh(mesh, machine), "train", optimizer="sgd")
        for name, make in BASELINES.items():
            jobs.append((f"{name} {mesh}", plan_from_assignment(problem, make(problem))))
        # data parallelism with ZeRO-2 (SGD keeps no state, so ZeRO-1 would change nothing)
        zero2 = with_zero(problem, BASELINES["data_parallel"](problem), ZeroStage.GRADIENTS)
        jobs.append((f"data_parallel+zero2 {mesh}", plan_from_assignment(problem, zero2)))
    # two pipeline stages of one layer each on the 4-device mesh (1F1B), then the same with less memory
    roomy = _two_stages(graph, machine, 2, None, time_limit)
    jobs.append(("pipeline 2 stages x2, 2 microbatches", roomy))
    tight = _two_stages(graph, machine, 2, pipeline_bound, time_limit)
    jobs.append((f"pipeline 2 stages x2, 2 microbatches, {len(tight.pipeline.checkpointed())} checkpointed", tight))
    return jobs


def _same_plan(a, b) -> bool:
    """Whether two presets' plans are one plan (placements, ZeRO stages, collectives, pipeline cut)."""
    def shape(plan):
        pipe = plan.pipeline
        return (plan.placements, plan.outputs, {k: int(z.stage) for k, z in plan.zero.items()},
                sorted((c.kind, c.phase) for c in plan.collectives),
                None if pipe is None else (len(pipe.stages), pipe.microbatches, [c["unit"] for c in pipe.checkpointed()]))
    return shape(a) == shape(b)


def _train_timing(args) -> int:
    """Predicted against measured step time over several plans of one model (see the module docstring)."""
    from scipy.stats import spearmanr

    from eqsat_dnn.partition.calibrate import measured_figures
    from eqsat_dnn.partition.pipeline_run import train_plans

    graph = load_model(transformer_mlp(batch=4, seq=64, hidden=128, layers=2))
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    figures = measured_figures(4)  # (measured once per torch version and process count, then cached)
    print(f"cpu:measured: {figures['overhead_s'] * 1e6:.0f} us per collective, {figures['alpha_s'] * 1e6:.0f} us "
          f"per step, {figures['bandwidth'] / 1e9:.2f} GB/s; {figures['flops'] / 1e9:.1f} GFLOP/s, "
          f"{figures['memory_bandwidth'] / 1e9:.1f} GB/s, {figures['op_overhead_s'] * 1e6:.1f} us per op",
          file=sys.stderr)
    presets = ("cpu", "cpu:measured")
    # one memory bound for both presets' second pipeline: the measured preset's roomy pipeline keeps its
    # weights replicated (collectives cost milliseconds), and nothing fits in 0.6 of that
    bound = 0.6 * _two_stages(graph, "cpu", 2, None, args.time_limit).predicted.memory_bytes_per_device
    chosen = {machine: _timing_jobs(graph, machine, args.time_limit, bound) for machine in presets}
    # each preset ranks the plans it makes; where both make the same plan it is trained once, priced by both
    jobs: list[dict] = []
    for (label, nominal), (_, measured) in zip(chosen["cpu"], chosen["cpu:measured"]):
        if _same_plan(nominal, measured):
            jobs.append({"plan": label, "object": measured, "predicted": {"cpu": nominal.predicted.time_s,
                                                                           "cpu:measured": measured.predicted.time_s}})
        else:
            jobs.append({"plan": f"{label} (cpu)", "object": nominal, "predicted": {"cpu": nominal.predicted.time_s}})
            jobs.append({"plan": f"{label} (cpu:measured)", "object": measured,
                         "predicted": {"cpu:measured": measured.predicted.time_s}})
    print(f"training {len(jobs)} plans, {args.steps} steps each, on 4 gloo processes (load {load}) ...",
          file=sys.stderr)
    reports = train_plans([(graph, job["object"]) for job in jobs], steps=args.steps, optimizer="sgd", lr=0.01)
    rows = []
    for job, r in zip(jobs, reports):
        plan = job["object"]
        rows.append({"plan": job["plan"], "predicted_step_s": job["predicted"], "measured_step_s": r.measured_step_s,
                     "zero": _zero_counts(plan),
                     "memory_bytes_per_device": plan.predicted.memory_bytes_per_device,
                     "weight_bytes_per_device": plan.predicted.weight_bytes_per_device,
                     "collectives": len(r.issued), "collectives_match": r.collectives_match,
                     "loss_max_rel_error": r.loss_max_rel_error, "weights_max_rel_error": r.weights_max_rel_error,
                     "ok": r.ok})
    spearman = {}
    for machine in presets:
        mine = [r for r in rows if machine in r["predicted_step_s"]]
        rho, p_value = spearmanr([r["predicted_step_s"][machine] for r in mine], [r["measured_step_s"] for r in mine])
        spearman[machine] = {"rho": rho, "p_value": p_value, "plans": len(mine)}
    print("| plan | ZeRO weights | predicted ms (cpu) | predicted ms (cpu:measured) | measured ms | memory / device KiB "
          "| collectives (match) | loss err | weights err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        zero = ", ".join(f"{k} x{v}" for k, v in r["zero"].items()) or "-"
        predicted = [f"{r['predicted_step_s'][m] * 1e3:.3f}" if m in r["predicted_step_s"] else "-" for m in presets]
        print(f"| {r['plan']} | {zero} | {' | '.join(predicted)} | {r['measured_step_s'] * 1e3:.2f} | "
              f"{r['memory_bytes_per_device'] / 1024:.0f} | {r['collectives']} ({'yes' if r['collectives_match'] else 'NO'}) | "
              f"{r['loss_max_rel_error']:.1e} | {r['weights_max_rel_error']:.1e} |")
    end_load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    for machine, s in spearman.items():
        print(f"\nSpearman rank correlation, predicted ({machine} preset) vs measured step time over {s['plans']} "
              f"plans: {s['rho']:.3f} (p = {s['p_value']:.3g})")
    print(f"machine load {load} at the start, {end_load} at the end")
    out = Path(args.out if args.out != DEFAULT_OUT else "bench/results/partition-train.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"spearman": spearman, "steps": args.steps, "load": [load, end_load],
                               "cpu_measured": {k: v for k, v in figures.items() if k != "collectives"},
                               "plans": rows}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


def _two_stages(graph, machine: str, microbatches: int, memory: float | None, time_limit: float):
    """The planner's best two-stage pipeline on a 4-device mesh of ``machine`` (within ``memory`` bytes per device)."""
    from eqsat_dnn.partition.mesh import with_memory
    from eqsat_dnn.partition.plan import _pipelined_plan, unit_candidates
    from eqsat_dnn.partition.problem import build_problem
    from eqsat_dnn.partition.stages import plan_stages

    mesh = get_mesh("4", machine) if memory is None else with_memory(get_mesh("4", machine), memory)
    problem = build_problem(graph, mesh, "train", optimizer="sgd")
    pipe = plan_stages(problem.graph, mesh, unit_candidates("sgd", time_limit), microbatches, stage_counts=[2])
    return _pipelined_plan(problem, pipe, {})


def _memory_bounds(args) -> int:
    """What the planner chooses as the memory per device falls below the replicated need (see the module
    docstring): a wide MLP (ZeRO) and a deep one (pipeline stages, checkpointing), on 4 devices of the cpu preset."""
    cases = [("wide MLP (batch 32, seq 64, hidden 64)", transformer_mlp(batch=32, seq=64, hidden=64, ffn=256),
              ((1.0, None), (0.9, None), (0.85, None))),
             ("deep MLP (8 layers, batch 1, seq 64, hidden 32)",
              transformer_mlp(batch=1, seq=64, hidden=32, ffn=128, layers=8), ((1.0, None), (1.0, 8), (0.3, None), (0.24, None), (0.2, None)))]
    rows = []
    for label, model, fractions in cases:
        graph = load_model(model)
        free = partition(graph, "4", machine="cpu", mode="train", time_limit=args.time_limit)
        need = free.baselines["data_parallel"].memory_bytes_per_device
        for fraction, microbatches in fractions:
            start = time.perf_counter()
            try:
                plan = partition(graph, "4", machine="cpu", mode="train", memory_gb=fraction * need / GIB,
                                 time_limit=args.time_limit, microbatches=microbatches)
            except Exception as exc:  # noqa: BLE001 (a bound nothing fits is a row too)
                rows.append({"model": label, "fraction": fraction, "error": str(exc)[:100]})
                continue
            pipe = plan.pipeline
            rows.append({"model": label, "fraction": fraction, "microbatches_option": microbatches,
                         "bound_bytes": fraction * need,
                         "source": plan.solver["source"], "predicted_step_s": plan.predicted.time_s,
                         "memory_bytes_per_device": plan.predicted.memory_bytes_per_device,
                         "zero": _zero_counts(plan),
                         "stages": len(pipe.stages) if pipe else 1, "microbatches": pipe.microbatches if pipe else 1,
                         "bubble": pipe.bubble if pipe else 0.0,
                         "checkpointed": [c["unit"] for c in pipe.checkpointed()] if pipe else [],
                         "seconds": time.perf_counter() - start})
    print("| model | bound / DP need | chosen | ZeRO weights | stages (bubble) | checkpointed | predicted ms | "
          "memory KiB | plan s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['fraction']:.2f} | {r['error']} | | | | | | |")
            continue
        zero = ", ".join(f"{k} x{v}" for k, v in r["zero"].items()) or "-"
        option = f" (--microbatches {r['microbatches_option']})" if r["microbatches_option"] else ""
        print(f"| {r['model']} | {r['fraction']:.2f}{option} | {r['source']} | {zero} | {r['stages']} ({r['bubble']:.0%}) | "
              f"{len(r['checkpointed'])} | {r['predicted_step_s'] * 1e3:.3f} | "
              f"{r['memory_bytes_per_device'] / 1024:.0f} | {r['seconds']:.2f} |")
    out = Path(args.out if args.out != DEFAULT_OUT else "bench/results/partition-memory.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return 0


def _counts(text: str | None) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()] if text else []


DEFAULT_OUT = "bench/results/partition.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="solves per case (median time reported)")
    parser.add_argument("--time-limit", type=float, help="ILP seconds (default 10; 50 with --llama)")
    parser.add_argument("--skip-bert", action="store_true", help="leave out BERT-base (no torch export)")
    parser.add_argument("--cache", default="/tmp/eqsat-dnn-bench", help="where the BERT-base export is kept")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--llama", metavar="N,N,...", help="LLaMA-2-7B-shaped stacks of these layer counts instead")
    parser.add_argument("--untied", metavar="N,N,...", help="with --llama: also these layer counts untied")
    parser.add_argument("--mesh", default="2x8", help="with --llama: the mesh (default 2x8)")
    parser.add_argument("--machine", default="dgx-a100", help="with --llama: the machine preset (default dgx-a100)")
    parser.add_argument("--llama-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--train-timing", action="store_true",
                        help="predicted vs measured step time of plans trained on DTensor (4 gloo processes)")
    parser.add_argument("--steps", type=int, default=8, help="with --train-timing: steps per plan (default 8)")
    parser.add_argument("--memory-bounds", action="store_true",
                        help="the plans chosen below the replicated memory need (ZeRO, pipeline stages, checkpointing)")
    args = parser.parse_args()
    if args.time_limit is None:
        args.time_limit = 50.0 if args.llama or args.llama_child is not None else 10.0
    if args.llama_child is not None:
        print(json.dumps(_llama_case(args.llama_child, args.mesh, args.machine, args.untied is None, args.time_limit)))
        return 0
    if args.llama:
        return _llama(args)
    if args.train_timing:
        return _train_timing(args)
    if args.memory_bounds:
        return _memory_bounds(args)
    rows = []
    for label, model, mesh, machine, mode in _cases(args):
        graph = model if not hasattr(model, "graph") else load_model(model)
        plans = [partition(graph, get_mesh(mesh, machine), mode=mode, time_limit=args.time_limit)
                 for _ in range(args.repeats)]
        plan = plans[-1]
        dp, meg = plan.baselines["data_parallel"], plan.baselines["megatron"]
        counts = plan.collective_counts(None)
        rows.append({
            "model": label, "mesh": mesh, "machine": machine, "mode": mode,
            "ilp_seconds_median": statistics.median(p.solver["seconds"] for p in plans),
            "status": plan.solver["status"], "source": plan.solver["source"],
            "variables": plan.solver["variables"],
            "ilp_time_s": plan.predicted.time_s, "dp_time_s": dp.time_s, "megatron_time_s": meg.time_s,
            "dp_fits": dp.fits, "megatron_fits": meg.fits,
            "vs_dp": dp.time_s / plan.predicted.time_s, "vs_megatron": meg.time_s / plan.predicted.time_s,
            "collectives": dict(counts),
            "mlp_weights": {k: "/".join(map(str, v)) for k, v in plan.placements.items()
                            if k.endswith(("fc1.weight", "fc2.weight")) and k.startswith(("mlp0", "layer0"))},
        })
        r = rows[-1]
        print(f"{label} on {mesh} ({machine}, {mode}): ILP {r['ilp_seconds_median']:.2f} s ({r['status']}), "
              f"plan {r['ilp_time_s'] * 1e3:.3f} ms, DP x{r['vs_dp']:.2f}, Megatron x{r['vs_megatron']:.2f}",
              file=sys.stderr)
    print("| model | mesh | machine | mode | ILP s (median) | status | plan ms | DP ms | Megatron ms | "
          "DP / plan | Megatron / plan | collectives | MLP weights (fc1, fc2) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["collectives"].items())) or "none"
        weights = ", ".join(v for _, v in sorted(r["mlp_weights"].items())) or "-"
        print(f"| {r['model']} | {r['mesh']} | {r['machine']} | {r['mode']} | {r['ilp_seconds_median']:.2f} | "
              f"{r['status']} | {r['ilp_time_s'] * 1e3:.3f} | {r['dp_time_s'] * 1e3:.3f} | "
              f"{r['megatron_time_s'] * 1e3:.3f} | {r['vs_dp']:.2f} | {r['vs_megatron']:.2f} | {counts} | "
              f"{weights} |")
    worst = min(min(r["vs_dp"], r["vs_megatron"]) for r in rows)
    print(f"\nthe plan is never worse than either baseline: {worst >= 1 - 1e-9} (smallest ratio {worst:.3f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
