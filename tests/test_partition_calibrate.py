"""The ``cpu:measured`` machine (eqsat_dnn.partition.calibrate): the fit on synthetic timings, and the
fitted machine through ``get_mesh`` and the planner. Nothing here measures or times anything."""

from __future__ import annotations

import json

import pytest

from eqsat_dnn.partition import get_mesh
from eqsat_dnn.partition.calibrate import FACTORS, RING, cache_key, fit_link, kind_scales
from eqsat_dnn.partition.mesh import machine_from_figures
from eqsat_dnn.partition.collectives import Step, step_seconds

FIGURES = {"overhead_s": 2e-3, "alpha_s": 7e-4, "bandwidth": 2e9, "flops": 1e11, "memory_bandwidth": 1e10,
           "op_overhead_s": 2e-6, "processes": 4, "scale": {"reduce_scatter": 2.0}}


def _synthetic(overhead: float, alpha: float, bandwidth: float, n: int = 4) -> list[tuple[str, int, int, float]]:
    return [(kind, n, size, overhead + f * (n - 1) * alpha + f * (n - 1) / n * size / bandwidth)
            for kind, f in FACTORS.items() for size in (4 << 10, 64 << 10, 512 << 10, 2 << 20)]


@pytest.mark.parametrize("overhead, alpha, bandwidth", [(2e-3, 7e-4, 2e9), (20e-6, 30e-6, 3e9), (0.0, 1e-4, 5e8)])
def test_fit_recovers_the_figures_of_exact_timings(overhead, alpha, bandwidth):
    fit = fit_link(_synthetic(overhead, alpha, bandwidth))
    assert fit.overhead == pytest.approx(overhead, rel=1e-6, abs=1e-9)
    assert fit.alpha == pytest.approx(alpha, rel=1e-6)
    assert fit.bandwidth == pytest.approx(bandwidth, rel=1e-6)


def test_fit_of_noisy_timings_is_close_and_never_negative():
    import random

    rng = random.Random(0)
    noisy = [(k, n, s, t * rng.uniform(0.95, 1.05)) for k, n, s, t in _synthetic(2e-3, 7e-4, 2e9)]
    fit = fit_link(noisy)
    assert fit.alpha == pytest.approx(7e-4, rel=0.3) and fit.bandwidth == pytest.approx(2e9, rel=0.3)
    # timings flat in size (a latency-bound link): no negative bandwidth, an infinite one
    flat = fit_link([(k, 4, s, 5e-3) for k, _, s, _ in _synthetic(0, 0, 1)])
    assert flat.overhead >= 0 and flat.alpha >= 0 and flat.bandwidth > 1e12
    with pytest.raises(ValueError):
        fit_link(noisy[:2])


def test_kinds_the_backend_runs_slower_than_their_formula_get_a_factor():
    # a backend that reduce-scatters by all-reducing: twice its ring time, whatever the size
    samples = [(k, n, s, t * (2.0 if k == "reduce_scatter" else 1.0))
               for k, n, s, t in _synthetic(1e-3, 5e-4, 1e9) + _synthetic(1e-3, 5e-4, 1e9, n=2)]
    fit = fit_link([x for x in samples if x[0] in RING])
    assert fit.alpha == pytest.approx(5e-4, rel=1e-6) and fit.overhead == pytest.approx(1e-3, rel=1e-6)
    scales = kind_scales(samples, fit)
    assert scales["reduce_scatter"] == pytest.approx(2.0) and scales["all_gather"] == pytest.approx(1.0)


def test_the_measured_machine_plugs_into_get_mesh(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_DNN_CACHE", str(tmp_path))
    # the cache as a measurement leaves it: get_mesh reads it and measures nothing
    (tmp_path / "partition-machine.json").write_text(json.dumps({cache_key(4): FIGURES}))
    mesh = get_mesh("2x2", "cpu:measured")
    assert mesh.machine == "cpu:measured" and mesh.shape == (2, 2)
    assert mesh.collective_overhead == 2e-3 and mesh.axes[0].alpha == 7e-4 and mesh.axes[1].bandwidth == 2e9
    assert mesh.device.flops == 1e11 and mesh.device.bandwidth == 1e10 and mesh.device.overhead == 2e-6
    # an all-reduce of 1 MB priced with the fitted figures (the collectives' formula, unchanged)
    step = Step("all_reduce", 0, bytes=1 << 20)
    assert step_seconds(step, mesh) == pytest.approx(2e-3 + 2 * 1 * 7e-4 + 2 * 0.5 * (1 << 20) / 2e9)
    gather, scatter = Step("all_gather", 0, bytes=1 << 20), Step("reduce_scatter", 0, bytes=1 << 20)
    assert step_seconds(scatter, mesh) == pytest.approx(2 * step_seconds(gather, mesh))  # the measured factor
    assert machine_from_figures(FIGURES).mesh((4,)).to_dict()["collective_overhead_s"] == 2e-3


def test_the_planner_uses_the_measured_machine(tmp_path, monkeypatch):
    from eqsat_dnn.io.onnx_in import load_model
    from eqsat_dnn.models.blocks import transformer_mlp
    from eqsat_dnn.partition import partition

    monkeypatch.setenv("EQSAT_DNN_CACHE", str(tmp_path))
    (tmp_path / "partition-machine.json").write_text(json.dumps({cache_key(4): FIGURES}))
    graph = load_model(transformer_mlp(batch=2, seq=8, hidden=16))
    plan = partition(graph, "4", machine="cpu:measured", mode="train", optimizer="sgd", time_limit=5)
    nominal = partition(graph, "4", machine="cpu", mode="train", optimizer="sgd", time_limit=5)
    assert plan.mesh.machine == "cpu:measured"
    # milliseconds per collective instead of microseconds: data parallelism's gradient all-reduces cost
    # milliseconds, and the planner issues no more collectives than under the nominal figures
    dp = plan.baselines["data_parallel"]
    assert dp.collectives and dp.comm_s >= 2e-3 * len(dp.collectives)
    assert len(plan.collectives) <= len(nominal.collectives)
    from eqsat_dnn.partition.mesh import DeviceMesh

    assert DeviceMesh.from_dict(plan.mesh.to_dict()).to_dict() == plan.mesh.to_dict()  # a saved plan keeps the measured figures
