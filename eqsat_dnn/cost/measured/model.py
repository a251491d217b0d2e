"""The measured cost model: every distinct op configuration timed in onnxruntime here
(the pricing policy; see :mod:`eqsat_dnn.cost.measured` for the method)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from onnx import TensorProto, helper

from eqsat_dnn.cost.fusion import FusionSite, fusion_role, layout_boundary
from eqsat_dnn.cost.measured.cache import Cache, attr_key, cache_file, canonical, default_threads, type_key
from eqsat_dnn.cost.measured.calibration import cpu_profile, executor_calibration
from eqsat_dnn.cost.measured.harness import Bench, measure_benches
from eqsat_dnn.cost.measured.probes import (
    Spec,
    Unmeasurable,
    fusion_spec,
    gelu_spec,
    gemm_path_spec,
    is_residual,
    node_spec,
    pair_main,
    pair_spec,
    producer_spec,
    reorder_spec,
    weight_slots,
)
from eqsat_dnn.cost.roofline import RooflineCostModel
from eqsat_dnn.cost.shapes import dims, itemsize, split_output_types
from eqsat_dnn.ir.graph import Node, TensorType

if TYPE_CHECKING:  # the protocol's package imports this module when asked for a measured model
    from eqsat_dnn.cost import CostModel

RUNS = 15
"""Samples per configuration (median taken)."""

PASSES = 3
"""Separate passes over the configurations to measure; the lowest pass median is kept."""

NORMALIZE_ABOVE = 1.25
"""A chunk whose canary ran this much slower than its best is divided by the slowdown (below it,
the slowdown is mostly shared caches, which a compute-bound canary does not read well)."""

MIN_SAMPLE = 2e-4
"""Each sample averages enough runs to last at least this long (seconds)."""

WEIGHT_STREAM_EXPOSED = 0.5
"""Fraction of the time to stream a node's weights from memory that is not hidden behind its
compute. Probes run with their weights in cache; inside BERT-base (440 MB of weights) and
ResNet-50 (100 MB) they come from memory, and kernels ran 0.4 to 1.0 times their weight
streaming time slower in the model than in the probe (fitted on those two models)."""

GELU_PARTS = 4
"""A piece of a decomposed GELU costs this fraction of the fused GELU kernel."""


@dataclass
class _Plan:
    """How a node's price is made of measured configurations."""

    role: str
    node_key: str | None = None
    node_spec: Callable[[], Spec] | None = None
    pair_key: str | None = None
    pair_spec: Callable[[], Spec] | None = None
    producer_key: str | None = None
    producer_spec: Callable[[], Spec] | None = None
    boundary: tuple[list[list[int]], list[list[int]]] = ([], [])
    bias: "_Plan | None" = None
    """For a MatMul priced through its Gemm path: the plan of the bias Add to take off."""
    weight_bytes: int = 0
    """Bytes of the node's weights (initializers in real models), streamed from memory."""


class MeasuredCostModel:
    """Prices nodes by timing them in onnxruntime on this machine (see :mod:`eqsat_dnn.cost.measured`).

    ``cache_dir``: where the JSON cache lives (default :func:`~eqsat_dnn.cost.measured.cache.cache_dir`);
    ``runs``: samples per configuration; ``threads``: onnxruntime intra-op threads
    (default ``$EQSAT_DNN_THREADS`` or 1); ``fusion``: price fused epilogues by their
    marginal cost (``False``: every node standalone); ``fallback``: the model for what
    cannot be measured (default: the calibrated roofline of this CPU).
    """

    def __init__(self, cache_dir: str | Path | None = None, runs: int = RUNS, threads: int | None = None,
                 fusion: bool = True, fallback: CostModel | None = None, min_sample: float = MIN_SAMPLE,
                 chunk: int = 16, passes: int = PASSES, retries: int = 2, tolerance: float = 0.1) -> None:
        self.threads = threads or default_threads()
        self.runs = runs
        self.fusion = fusion
        self.min_sample = min_sample
        self.chunk = chunk
        self.passes = max(1, passes)
        self.retries = max(0, retries)
        self.tolerance = tolerance
        self._canary_bench: Bench | None = None
        self.cache_path, self.device = cache_file(self.threads, cache_dir)
        self.cache = Cache(self.cache_path, self.device)
        self._fallback = fallback
        self.name = f"measured:{self.threads}t" if self.threads != 1 else "measured"
        self.profile = None  # prices come from timings, not from a device's figures
        self.stats = {"priced": 0, "measured": 0, "fallback": 0, "retries": 0}
        self._calibration: dict[str, float] | None = None
        self._bandwidth: float | None = None
        self._memo: dict[tuple, float] = {}

    # -- public ----------------------------------------------------------------

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float:
        self.stats["priced"] += 1
        plan = self._plan(node, inputs, output)
        memo = (plan.role, plan.node_key, canonical(plan.boundary))
        if memo in self._memo:
            return self._memo[memo]
        self._ensure([plan])
        fallbacks = self.stats["fallback"]
        cost = self._price(plan, node, inputs, output)
        if self.stats["fallback"] == fallbacks:
            self._memo[memo] = cost
        return cost

    def fusion_penalty(self, site: FusionSite) -> float:
        """The site's parts timed as onnxruntime fuses them, less the same parts timed where it
        cannot fuse them (see :func:`fusion_spec`); never below zero."""
        if not self.fusion:
            return 0.0
        fused, avoided = self.fusion_times(site)
        if fused is None or avoided is None:
            return 0.0
        return max(0.0, fused - avoided)

    def fusion_times(self, site: FusionSite) -> tuple[float | None, float | None]:
        """The site's parts timed fused and apart (None where they cannot be built)."""
        keys = {canonical(["fusion", site.kind, avoided, [type_key(t) for t in (*site.operands, *site.types[-1])],
                           attr_key(site.ops[-1])]): (lambda avoided=avoided: fusion_spec(site, avoided))
                for avoided in (False, True)}
        missing = {k: make for k, make in keys.items() if self.cache.get(k) is None}
        if missing:
            self._measure(missing)
        fused, avoided = (self._value(k) for k in keys)
        return fused, avoided

    def prepare(self, items: Iterable[tuple[Node, list[TensorType | None], TensorType | None]]) -> None:
        """Measure, in one interleaved batch, every configuration these nodes need."""
        self._ensure([self._plan(node, inputs, output) for node, inputs, output in items])

    @property
    def fallback(self) -> CostModel:
        if self._fallback is None:
            self._fallback = RooflineCostModel(cpu_profile(self))
        return self._fallback

    def bandwidth(self) -> float:
        """This machine's memory bandwidth in bytes/s (the calibrated roofline's figure)."""
        if self._bandwidth is None:
            profile = self.fallback.profile
            self._bandwidth = (profile.bandwidth if profile is not None and profile.nchwc
                               else cpu_profile(self).bandwidth)
        return self._bandwidth

    def calibration(self) -> dict[str, float]:
        """``call``: run time of an empty model (Python and session overhead); ``node``: the
        executor's cost per extra node (both seconds, cached)."""
        if self._calibration is None:
            cal = self.cache.get("calibration")
            if not cal:
                cal = executor_calibration(self.threads, self.runs)
                self.cache.put("calibration", cal)
                self.cache.save()
            self._calibration = cal
        return self._calibration

    # -- planning -----------------------------------------------------------------

    def _plan(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> _Plan:
        op = node.op_type
        role = fusion_role(op, node.attrs, inputs, output) if self.fusion else (
            "view" if op in ("Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten") else "kernel")
        ins = [type_key(t) for t in inputs]
        attrs = attr_key(node)
        if role == "view":
            return _Plan(role)
        if role == "gelu_part":
            approximate = "none" if op == "Erf" else "tanh"
            return _Plan(role, canonical(["gelu", approximate, type_key(output)]),
                         lambda: gelu_spec(approximate, output))
        plan = _Plan(role, canonical(["node", op, attrs, ins]), lambda: node_spec(node, inputs))
        slots = weight_slots(op, inputs)
        if op in ("MatMul", "Gemm", "Conv", "ConvTranspose"):  # ops that read all of their weights
            plan.weight_bytes = sum(math.prod(dims(inputs[k])) * itemsize(inputs[k]) for k in slots
                                    if inputs[k] is not None and inputs[k].shape is not None)
        if self.fusion and op == "MatMul" and slots == {1} and output is not None and output.dtype in (
                TensorProto.FLOAT,) and len(dims(output)) >= 2:
            plan.node_key = canonical(["gemm_path", attrs, ins])
            plan.node_spec = lambda: gemm_path_spec(node, inputs)
            n = dims(output)[-1]
            plan.bias = self._plan(Node("Add", [], [], {}), [output, TensorType(output.dtype, (n,))], output)
        if role in ("conv_epilogue", "gemm_epilogue"):
            main = pair_main(op, inputs)
            twin = is_residual(role, inputs)
            plan.pair_key = canonical(["pair2" if twin else "pair", role, op, attrs, ins])
            plan.pair_spec = lambda: pair_spec(role, node, inputs)
            plan.producer_key = canonical(["producer2" if twin else "producer", role, type_key(inputs[main])])
            plan.producer_spec = lambda: producer_spec(role, inputs[main], twin)
        if self.fusion:
            plan.boundary = layout_boundary(op, node.attrs, inputs, split_output_types(node, inputs, output))
        return plan

    def _keys(self, plan: _Plan) -> list[tuple[str, Callable[[], Spec]]]:
        wanted = []
        if plan.role in ("conv_epilogue", "gemm_epilogue"):
            wanted += [(plan.pair_key, plan.pair_spec), (plan.producer_key, plan.producer_spec)]
            pair = self.cache.get(plan.pair_key)
            if pair is not None and "fail" in pair:
                wanted.append((plan.node_key, plan.node_spec))
        elif plan.node_key:
            wanted.append((plan.node_key, plan.node_spec))
        if plan.bias is not None:
            wanted += self._keys(plan.bias)
        before, after = plan.boundary
        for shape in before:
            wanted.append(self._reorder("out", shape, shape[1]))
        for shape in after:
            wanted.append(self._reorder("in", shape, shape[1]))
        # reorders that measured probes reported
        for key, _ in list(wanted):
            entry = self.cache.get(key)
            for reorder in (entry or {}).get("reorders", []):
                wanted.append(self._reorder(reorder[0], reorder[1], reorder[2] if len(reorder) > 2 else 0))
        return wanted

    def _reorder(self, direction: str, shape: list[int], channels: int) -> tuple[str, Callable[[], Spec]]:
        key = canonical(["reorder", direction, list(shape), int(channels)])
        if direction == "out":
            block = int(self.calibration().get("block", 8))
            padded = list(shape)
            padded[1] = -(-channels // block) * block
            return key, lambda: reorder_spec("out", padded, channels)
        return key, lambda: reorder_spec("in", list(shape), channels)

    # -- measuring --------------------------------------------------------------------

    def _ensure(self, plans: list[_Plan]) -> None:
        for _ in range(3):  # probes can reveal reorders, which are measured next
            missing: dict[str, Callable[[], Spec]] = {}
            for plan in plans:
                for key, make in self._keys(plan):
                    if key and self.cache.get(key) is None:
                        missing[key] = make
            if not missing:
                return
            self._measure(missing)

    def _measure(self, missing: dict[str, Callable[[], Spec]]) -> None:
        cal = self.calibration()
        items = list(missing.items())
        interleave = self.threads == 1
        step = self.chunk if interleave else 1
        best: dict[str, float] = {}
        for _ in range(self.passes):  # a pass caught in another job's burst reads high: keep the lowest
            for start in range(0, len(items), step):
                benches, keys = [], []
                for key, make in items[start:start + step]:
                    entry = self.cache.get(key)
                    if entry is not None and "fail" in entry:
                        continue
                    try:
                        benches.append(self._bench(make))
                        keys.append(key)
                    except Unmeasurable as exc:
                        self.cache.put(key, {"fail": str(exc)})
                if not benches:
                    continue
                for attempt in range(self.retries + 1):
                    times = measure_benches(benches + [self._canary()], self.runs, self.min_sample, interleave)
                    load = self._load(times[-1])
                    for key, bench, t in zip(keys, benches, times):
                        raw = t - cal["call"] + cal["node"]
                        # time-sliced with a busy job, every probe ran about `load` times slower
                        value = raw / load if load > NORMALIZE_ABOVE else raw
                        if key not in best or value < best[key]:
                            best[key] = value
                            self.cache.put(key, {"t": value, "raw": raw, "load": round(load, 3),
                                                 "reorders": bench.reorders})
                    if load <= 1.0 + self.tolerance or attempt == self.retries:
                        break
                    self.stats["retries"] = self.stats.get("retries", 0) + 1
                    time.sleep(0.5 * (attempt + 1))  # another job is busy: wait, then measure again
                del benches
        self.stats["measured"] += len(best)
        self.cache.save()

    def _canary(self) -> Bench:
        """A fixed probe sampled beside every chunk: when it reads slower than its best, the chunk
        ran beside another job's burst and is measured again."""
        if self._canary_bench is None:
            f32 = TensorProto.FLOAT
            spec = Spec([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": TensorType(f32, (64, 256))},
                        {"b": TensorType(f32, (256, 256))}, ["y"], [])
            self._canary_bench = Bench(spec, self.threads)
        return self._canary_bench

    def _load(self, canary: float) -> float:
        """How much slower the canary ran than its best ever (1.0: the machine was quiet)."""
        best = self.cache.get("canary")
        if not best or canary < best:
            self.cache.put("canary", canary)
            return 1.0
        return canary / best

    def _bench(self, make: Callable[[], Spec]) -> Bench:
        spec = make()
        last = Unmeasurable("no opset works")
        for opset in spec.opsets or (spec.opset,):
            spec.opset = opset
            try:
                return Bench(spec, self.threads)
            except Unmeasurable as exc:
                last = exc
        raise last

    # -- pricing ---------------------------------------------------------------------------

    def _value(self, key: str | None) -> float | None:
        """A probe's time less the reorders onnxruntime put at its edge; None when it failed."""
        entry = self.cache.get(key) if key else None
        if not entry or "t" not in entry:
            return None
        total = entry["t"]
        for reorder in entry.get("reorders", []):
            rkey, _ = self._reorder(reorder[0], reorder[1], reorder[2] if len(reorder) > 2 else 0)
            value = self.cache.get(rkey)
            if value and "t" in value:
                total -= value["t"]
        return total

    def _price(self, plan: _Plan, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float:
        floor = self.calibration()["node"]
        if plan.role == "view":
            return floor
        cost: float | None = None
        if plan.role == "gelu_part":
            value = self._value(plan.node_key)
            if value is None:
                self.stats["fallback"] += 1
                return self.fallback.node_cost(node, inputs, output)
            return value / GELU_PARTS
        if plan.role in ("conv_epilogue", "gemm_epilogue"):
            pair, producer = self._value(plan.pair_key), self._value(plan.producer_key)
            if pair is not None and producer is not None:
                # fused away it costs next to nothing, but never zero: a free node invites the
                # extractor to keep useless ones
                cost = max(pair - producer, floor * 0.5)
        if cost is None:
            value = self._value(plan.node_key)
            if value is not None and plan.bias is not None:
                bias = self._price(plan.bias, Node("Add", [], [], {}), [], None)
                value -= bias
            cost = max(value, floor) if value is not None else None
        if cost is None:
            self.stats["fallback"] += 1
            return self.fallback.node_cost(node, inputs, output)
        if plan.weight_bytes:
            # in a real model the weights are not in cache: part of their streaming shows, and no
            # kernel beats streaming them in
            stream = plan.weight_bytes / self.bandwidth()
            cost = max(cost + WEIGHT_STREAM_EXPOSED * stream, stream)
        before, after = plan.boundary
        for shape in before:
            cost += self._value(self._reorder("out", shape, shape[1])[0]) or 0.0
        for shape in after:
            cost += self._value(self._reorder("in", shape, shape[1])[0]) or 0.0
        return cost

__all__ = ["GELU_PARTS", "MIN_SAMPLE", "MeasuredCostModel", "NORMALIZE_ABOVE", "PASSES", "RUNS",
           "WEIGHT_STREAM_EXPOSED"]
