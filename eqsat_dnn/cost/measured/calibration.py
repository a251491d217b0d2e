"""Calibration: what the measured model subtracts from every probe, and this CPU's roofline.

:func:`executor_calibration` times an empty model and the executor's cost per extra node (a
probe's time is ``run time - empty-model run time + per-node overhead``) and the NCHWc block
size; :func:`cpu_profile` measures this CPU's peak rate, bandwidth and per-kernel overhead for
the ``roofline`` cost model (:func:`eqsat_dnn.cost.calibrated_cpu_profile`), and the slowdown
of onnxruntime's slow ``SkipLayerNormalization`` fusion. Both are cached in the model's cache.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from onnx import TensorProto, helper

from eqsat_dnn.cost.measured.harness import Bench, measure_benches
from eqsat_dnn.cost.measured.probes import Spec, reorder_spec, skip_layernorm_probe
from eqsat_dnn.cost.profiles import ATTENTION_SOFTCAP_SLOWDOWN, SKIP_LAYERNORM_SLOWDOWN, DeviceProfile
from eqsat_dnn.ir.graph import TensorType

if TYPE_CHECKING:  # the model calls these functions with itself
    from eqsat_dnn.cost.measured.model import MeasuredCostModel


def executor_calibration(threads: int, runs: int) -> dict[str, float]:
    """``call``: run time of an empty model (Python and session overhead); ``node``: the
    executor's cost per extra node (both seconds); ``block``: the NCHWc channel block."""
    t = TensorType(TensorProto.FLOAT, (1,))

    def chain(k: int) -> Spec:
        nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(k)]
        return Spec(nodes, {"x": t}, {}, [f"t{k - 1}"], [])

    one, many = Bench(chain(1), threads), Bench(chain(65), threads)
    t1, t65 = measure_benches([one, many], max(runs, 21), 1e-3, threads == 1)
    node = max((t65 - t1) / 64, 0.0)
    block = 8
    with contextlib.suppress(Exception):
        probe = Bench(reorder_spec("in", [1, 8, 2, 2], 8), threads)
        block = int(probe.timer.kept[0].shape()[1])
    return {"call": t1 - node, "node": node, "block": block}


def cpu_profile(model: MeasuredCostModel) -> DeviceProfile:
    """This CPU's roofline figures, measured in onnxruntime once with ``model``'s threads and
    cached in its cache: fp32 peak from a 1024^3 MatMul, bandwidth from an Add over 64 MB
    operands (three streams), per-kernel overhead from a chain of tiny nodes
    (:func:`executor_calibration`), the ``skip_layernorm`` slowdown from BERT-base's residual
    Add + LayerNormalization."""
    entry = model.cache.get("roofline")
    if not entry:
        f32 = TensorProto.FLOAT
        n, big = 1024, 16 * 1024 * 1024
        gemm = Spec([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": TensorType(f32, (n, n))},
                    {"b": TensorType(f32, (n, n))}, ["y"], [])
        add = Spec([helper.make_node("Add", ["a", "b"], ["y"])],
                   {"a": TensorType(f32, (big,)), "b": TensorType(f32, (big,))}, {}, ["y"], [])
        t_gemm, t_add = measure_benches([Bench(gemm, model.threads), Bench(add, model.threads)],
                                        5, 0.0, model.threads == 1)
        cal = model.calibration()
        entry = {"flops": 2.0 * n ** 3 / t_gemm, "bandwidth": 3.0 * 4 * big / t_add,
                 "overhead": cal["node"] + 1e-6, "view": cal["node"]}
        model.cache.put("roofline", entry)
        model.cache.save()
    if "skip_layernorm" not in entry:
        fused, apart = model.fusion_times(skip_layernorm_probe())
        entry = dict(entry, skip_layernorm=fused / apart if fused and apart else SKIP_LAYERNORM_SLOWDOWN)
        model.cache.put("roofline", entry)
        model.cache.save()
    return DeviceProfile(f"cpu-{model.threads}t", flops=entry["flops"], bandwidth=entry["bandwidth"],
                         overhead=entry["overhead"], view_overhead=entry["view"], nchwc=True,
                         slow_fusions={"skip_layernorm": entry["skip_layernorm"]},
                         slow_kernels={"attention_softcap": ATTENTION_SOFTCAP_SLOWDOWN},  # nominal, not probed
                         source=f"measured in onnxruntime {model.device['onnxruntime']} on {model.device['cpu']}, "
                                f"{model.threads} thread(s)")

__all__ = ["cpu_profile", "executor_calibration"]
