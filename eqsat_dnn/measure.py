"""The measured cost model: every distinct op configuration timed in onnxruntime here.

As TASO timed its kernels, :class:`MeasuredCostModel` prices a node by running it:
a one-node ONNX model with the node's op, attributes, input shapes and dtypes
(random inputs; weights as initializers, as in real models, so onnxruntime
prepacks them), in an ``InferenceSession`` with the options a user runs
(``ORT_ENABLE_ALL``, ``threads`` intra-op threads, CPU provider, sequential
execution), inputs and outputs bound once (``run_with_iobinding``).

**Timing.** The configurations missing from the cache are built together (16 at a
time) and sampled round-robin, so a burst of another job's work hits them all
alike. A sample is one untimed run (which brings the probe's buffers back into
cache, as a real model's previous node leaves its input) and then enough timed
runs to last ``min_sample`` seconds. A configuration's time is the median of
``runs`` samples; ``passes`` (3) such passes are made, separated in time, and the
lowest pass median is kept. A fixed probe (a 64x256x256 MatMul, the *canary*) is
sampled beside every chunk: when its median is more than ``tolerance`` (10%) above
the best it has ever read, another job was busy; the chunk is measured again after
a pause (up to ``retries`` times), and when the canary ran more than 25% slow what
is kept is divided by that slowdown (time-slicing with another job slows every
probe of the chunk alike; each cache entry records its ``raw`` time and ``load``).
On this shared 2-core machine a configuration measured cold twice still differs by
up to 5-8%; configurations measured in one batch (:meth:`MeasuredCostModel.prepare`)
share their conditions, so compare alternatives after preparing them together.

Each number is ``run time - empty-model run time + per-node overhead`` (both
calibrated once per cache file), so a price includes the executor's cost per node
but not Python's call overhead. What is timed:

* ``kernel`` nodes: the node itself. A one-node Conv also pays the NCHWc reorders
  onnxruntime puts around it at the model's edge; they are read from the optimized
  model onnxruntime saves, measured on their own and subtracted (inside a real
  CNN, Conv feeds Conv in the blocked layout).
* fused epilogues (see :func:`eqsat_dnn.cost.fusion_role`): a cheap producer
  (a 1x1 Conv with 16 input channels, two for a residual Add, or a MatMul with
  K = 16) alone, then with the node behind it; the node costs the difference.
  Where onnxruntime fuses the pair the difference is the marginal epilogue cost,
  where it does not it is the node's own cost: the measurement decides.
* pieces of a decomposed GELU: a quarter of onnxruntime's fused ``Gelu`` kernel.
* a MatMul by a 2-D weight: through its Gemm path (MatMul + bias Add, which
  onnxruntime runs as one ``Gemm``, 5% apart from its MatMul kernel either way)
  less the bias's marginal cost: linear layers in real models have biases.
* ``view`` nodes (Reshape, Squeeze, ...): the runtime's per-node overhead.
* MatMul, Gemm and Conv pay for weights that are not in cache: a probe runs with
  its weights in cache, a real model (BERT-base: 440 MB of them) does not. They
  cost their probe time plus half the time to stream their weights at the
  calibrated bandwidth (:data:`WEIGHT_STREAM_EXPOSED`, fitted), and never less
  than that streaming time (ResNet-50's classifier GEMV: 0.2 ms in cache,
  0.46 ms in the model).
* Split/Slice along channels of a 4-D tensor: the node plus the NCHWc reorders
  around it.
* a fusion site (:func:`eqsat_dnn.cost.fusion_sites`, a residual Add feeding only a
  LayerNormalization): its two nodes as onnxruntime fuses them, and again with the Add
  written as Sum, which it does not fuse; :meth:`MeasuredCostModel.fusion_penalty` is the
  difference (the nodes themselves are priced one by one as usual).

Ops that cannot run alone with random inputs (custom domains, subgraphs, ops whose
integer inputs are shapes or indices other than gather indices, unknown shapes)
fall back to the roofline model of this CPU (:func:`cpu_profile`).

**Cache.** One JSON file per (CPU model and flags, core count, onnxruntime version,
thread count, method version) under :func:`eqsat_dnn.cost.cache_dir`
(``$EQSAT_DNN_CACHE``, else ``~/.cache/eqsat-dnn``); a configuration measured once
is never measured again, and a failure to build one is remembered too.

**Threads.** ``threads`` defaults to ``$EQSAT_DNN_THREADS``, else 1. On a machine
shared with other CPU-heavy work, timings with more threads than free cores are
dominated by descheduled worker threads (measured here on 2 cores with another job
running: a 128x768x768 MatMul took 1.36 ms with 1 thread and 8-13 ms with 2), so 1
is the default; pass the thread count your deployment runs with, and benchmark
with the same.

**Symbolic dims** use the policy of :func:`eqsat_dnn.cost.dim_size` (batch-like
names 1, other symbolic or unknown dims 128).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from eqsat_dnn.cost import (
    CONV_ACTIVATIONS,
    CPU_PROFILE,
    SKIP_LAYERNORM_SLOWDOWN,
    DeviceProfile,
    FusionSite,
    RooflineCostModel,
    cache_dir as default_cache_dir,
    canonical,
    dims,
    fusion_role,
    layout_boundary,
    split_output_types,
)
from eqsat_dnn.ir.graph import Node, TensorType
from eqsat_dnn.ir.language import OPAQUE, OPS

METHOD = 2
"""Version of the measuring method; part of the cache file name."""

RUNS = 15
"""Samples per configuration (median taken)."""

PASSES = 3
"""Separate passes over the configurations to measure; the lowest pass median is kept."""

NORMALIZE_ABOVE = 1.25
"""A chunk whose canary ran this much slower than its best is divided by the slowdown (below it,
the slowdown is mostly shared caches, which a compute-bound canary does not read well)."""

MIN_SAMPLE = 2e-4
"""Each sample averages enough runs to last at least this long (seconds)."""

VOCAB_OPSET = 20
OPAQUE_OPSETS = (20, 18, 17, 13)
"""Opsets tried, in order, for an opaque node (its model's opset is not known here)."""

WEIGHT_STREAM_EXPOSED = 0.5
"""Fraction of the time to stream a node's weights from memory that is not hidden behind its
compute. Probes run with their weights in cache; inside BERT-base (440 MB of weights) and
ResNet-50 (100 MB) they come from memory, and kernels ran 0.4 to 1.0 times their weight
streaming time slower in the model than in the probe (fitted on those two models)."""

GELU_PARTS = 4
"""A piece of a decomposed GELU costs this fraction of the fused GELU kernel."""

PRODUCER_K = 16
"""Reduction size of the cheap producer an epilogue is measured behind."""

_INT_INPUT_OK = frozenset({
    "Gather", "GatherElements", "GatherND", "Cast", "CastLike", "Where", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Add", "Sub", "Mul", "Div", "Neg", "Abs",
    "Max", "Min", "Mod", "Sign", "Identity", "Shape", "Size", "Transpose", "Concat",
})
"""Opaque ops whose integer inputs may be zeros (data or gather indices), so they run on random data."""

_WEIGHT_SLOTS = {
    "Gemm": {1, 2}, "Conv": {1, 2}, "ConvTranspose": {1, 2}, "LayerNormalization": {1, 2},
    "BatchNormalization": {1, 2, 3, 4}, "InstanceNormalization": {1, 2}, "Gather": {0},
    "PRelu": {1}, "SkipLayerNormalization": {2, 3, 4},
}
"""Inputs that are initializers in real models (onnxruntime may prepack them)."""


class Unmeasurable(Exception):
    """This configuration cannot be built or run alone."""


# ---------------------------------------------------------------------------
# device identity and the cache file


def default_threads() -> int:
    try:
        return max(1, int(os.environ.get("EQSAT_DNN_THREADS", "1")))
    except ValueError:
        return 1


def device_description() -> dict[str, Any]:
    """What identifies this machine for the cache: CPU model, its flags, core count."""
    model, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.strip()
    import onnxruntime as ort

    return {
        "cpu": model,
        "flags": hashlib.sha1(flags.encode()).hexdigest()[:12] if flags else "",
        "cores": os.cpu_count() or 1,
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
    }


class _Cache:
    """A JSON file of measurements, merged with what other processes wrote on save."""

    def __init__(self, path: Path, device: dict[str, Any]) -> None:
        self.path = path
        self.device = device
        self.entries: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.load()

    def load(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and isinstance(data.get("entries"), dict):
                self.entries.update(data["entries"])

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        self.entries[key] = value
        self.dirty.add(key)

    def save(self) -> None:
        if not self.dirty:
            return
        mine = {k: self.entries[k] for k in self.dirty}
        self.load()  # keep what others measured meanwhile
        self.entries.update(mine)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump({"device": self.device, "method": METHOD, "entries": self.entries}, f, indent=0)
            os.replace(tmp, self.path)
            self.dirty.clear()
        except OSError:
            pass  # a read-only cache directory: keep the numbers in memory


def cache_file(threads: int, directory: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    device = dict(device_description(), threads=threads, method=METHOD)
    digest = hashlib.sha1(canonical(device).encode()).hexdigest()[:12]
    base = Path(directory).expanduser() if directory is not None else default_cache_dir()
    return base / f"measured-ort{device['onnxruntime']}-{threads}t-{digest}.json", device


# ---------------------------------------------------------------------------
# building one-node models


def _np_dtype(dtype: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise Unmeasurable(f"element type {dtype}") from None


def _random(dtype: int, shape: list[int], rng: np.random.Generator, positive: bool = False) -> np.ndarray:
    return np.asarray(_random_values(dtype, shape, rng, positive))  # 0-d: an array, not a numpy scalar


def _random_values(dtype: int, shape: list[int], rng: np.random.Generator, positive: bool) -> Any:
    np_dtype = _np_dtype(dtype)
    if np_dtype.kind == "f":
        data = rng.standard_normal(shape, dtype=np.float32)
        if positive:
            data = np.abs(data) + 0.5
        return (data * 0.1 if not positive else data).astype(np_dtype, copy=False)
    if np_dtype.kind == "b":
        return rng.random(shape) < 0.5
    if np_dtype.kind in "iu":
        # zeros are valid gather indices; ones are safe divisors
        return (np.ones if positive else np.zeros)(shape, np_dtype)
    raise Unmeasurable(f"element type {np_dtype}")


@dataclass
class _Spec:
    """A small model to time: nodes, graph inputs (fed) and initializers."""

    nodes: list[onnx.NodeProto]
    inputs: dict[str, TensorType]
    weights: dict[str, TensorType]
    outputs: list[str]
    extra: list[onnx.TensorProto]
    domains: tuple[tuple[str, int], ...] = ()
    opset: int = VOCAB_OPSET
    positive: frozenset[str] = frozenset()
    layout: bool = False
    """Read the optimized model back for NCHWc reorders (Conv-like nodes)."""
    opsets: tuple[int, ...] = ()
    """Opsets to try in turn (an opaque node's own opset is not known)."""

    def build(self, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        from onnx import numpy_helper

        inits = [numpy_helper.from_array(_random(t.dtype, dims(t), rng, name in self.positive), name)
                 for name, t in self.weights.items()]
        graph = helper.make_graph(
            self.nodes, "cost_probe",
            [helper.make_tensor_value_info(name, t.dtype, dims(t)) for name, t in self.inputs.items()],
            [helper.make_empty_tensor_value_info(name) for name in self.outputs],
            inits + list(self.extra),
        )
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="eqsat-dnn-cost")
        model.ir_version = 9 if self.opset <= 20 else 10
        feeds = {name: _random(t.dtype, dims(t), rng, name in self.positive) for name, t in self.inputs.items()}
        return model, feeds


def _check_types(types: Iterable[TensorType | None]) -> None:
    for t in types:
        if t is None or t.shape is None:
            raise Unmeasurable("unknown input type or rank")
        _np_dtype(t.dtype)


def _itemsize(t: TensorType) -> int:
    try:
        return _np_dtype(t.dtype).itemsize
    except Unmeasurable:
        return 4


def _weight_slots(op: str, inputs: list[TensorType | None]) -> set[int]:
    present = [k for k, t in enumerate(inputs) if t is not None]
    slots = set(_WEIGHT_SLOTS.get(op, ()))
    if op == "MatMul" and len(inputs) == 2 and inputs[1] is not None and inputs[0] is not None:
        if len(dims(inputs[1])) == 2 and len(dims(inputs[0])) >= 2:
            slots = {1}
    elif op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min") and len(present) == 2:
        small = [k for k in present if len(dims(inputs[k])) <= 1 or math.prod(dims(inputs[k])) == 1]
        if len(small) == 1:
            slots = set(small)
    slots &= set(present)
    if present and slots >= set(present):
        slots.discard(present[0])  # something must be fed, or onnxruntime folds the node away
    return slots


def _node_protos(node: Node, in_names: list[str], out_names: list[str], opset: int,
                 extra: list[onnx.TensorProto]) -> onnx.NodeProto:
    from eqsat_dnn.io.onnx_out import _node_proto

    if node.op == OPAQUE:
        proto = onnx.NodeProto()
        proto.CopyFrom(node.proto)
        del proto.input[:]
        proto.input.extend(in_names)
        del proto.output[:]
        proto.output.extend(out_names)
        proto.name = "probe"
        return proto
    attrs = {k: v for k, v in node.attrs.items() if k != "index"}
    return _node_proto(Node(node.op, list(in_names), list(out_names), attrs, name="probe"), opset,
                       set(in_names) | set(out_names), extra)


def _n_outputs(node: Node, inputs: list[TensorType | None]) -> int:
    if node.op == OPAQUE:
        return max(1, len(node.proto.output))
    if node.op == "Split":
        return max(1, len(node.attrs.get("split") or [1]))
    return 1


def _measurable(node: Node, inputs: list[TensorType | None]) -> None:
    if node.op == OPAQUE:
        proto = node.proto
        if proto is None:
            raise Unmeasurable("opaque node without its NodeProto")
        if proto.domain not in ("", "ai.onnx"):
            raise Unmeasurable(f"custom domain {proto.domain}")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in proto.attribute):
            raise Unmeasurable("op with subgraphs")
        ints = [t for t in inputs if t is not None and _np_dtype(t.dtype).kind in "iu"]
        if ints and proto.op_type not in _INT_INPUT_OK:
            raise Unmeasurable(f"{proto.op_type} needs meaningful integer inputs")
    spec = OPS.get(node.op)
    optional = {k for k, name in enumerate(spec.inputs) if name.endswith("?")} if spec else set()
    _check_types(t for k, t in enumerate(inputs) if not (t is None and k in optional))


def node_spec(node: Node, inputs: list[TensorType | None], opset: int | None = None,
              replace: dict[int, str] | None = None) -> _Spec:
    """The one-node model of ``node`` (input ``k`` renamed to ``replace[k]`` when given)."""
    _measurable(node, inputs)
    op = node.op_type
    slots = _weight_slots(op, inputs)
    replace = replace or {}
    names, feeds, weights = [], {}, {}
    for k, t in enumerate(inputs):
        if k in replace:
            names.append(replace[k])
        elif t is None:
            names.append("")
        else:
            name = f"in{k}"
            names.append(name)
            (weights if k in slots else feeds)[name] = t
    outs = [f"out{k}" for k in range(_n_outputs(node, inputs))]
    extra: list[onnx.TensorProto] = []
    chosen = opset or (OPAQUE_OPSETS[0] if node.op == OPAQUE else VOCAB_OPSET)
    proto = _node_protos(node, names, outs, chosen, extra)
    positive = frozenset({"in4"}) if op == "BatchNormalization" else (
        frozenset(f"in{k}" for k in range(len(inputs))) if op in ("Div", "Mod") else frozenset())
    layout = op in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
    return _Spec([proto], feeds, weights, outs, extra, opset=chosen, positive=positive, layout=layout,
                 opsets=OPAQUE_OPSETS if node.op == OPAQUE and opset is None else ())


def producer_spec(role: str, main: TensorType, twin: bool = False) -> _Spec:
    """A cheap producer of a tensor shaped like ``main``, output ``p`` (and a second one, ``p2``,
    when ``twin``: a residual Add fuses into a Conv only when both operands are Conv outputs)."""
    shape = dims(main)
    if role == "conv_epilogue":
        x = TensorType(main.dtype, (shape[0], PRODUCER_K, shape[2], shape[3]))
        w = TensorType(main.dtype, (shape[1], PRODUCER_K, 1, 1))
        b = TensorType(main.dtype, (shape[1],))
        nodes = [helper.make_node("Conv", ["px", "pw", "pb"], ["p"], name="producer")]
        inputs, weights, outputs = {"px": x}, {"pw": w, "pb": b}, ["p"]
        if twin:
            nodes.append(helper.make_node("Conv", ["px2", "pw2", "pb2"], ["p2"], name="producer2"))
            inputs["px2"], weights["pw2"], weights["pb2"] = x, w, b
            outputs.append("p2")
        return _Spec(nodes, inputs, weights, outputs, [], layout=True)
    x = TensorType(main.dtype, tuple(shape[:-1]) + (PRODUCER_K,))
    w = TensorType(main.dtype, (PRODUCER_K, shape[-1]))
    node = helper.make_node("MatMul", ["px", "pw"], ["p"], name="producer")
    return _Spec([node], {"px": x}, {"pw": w}, ["p"], [])


def pair_spec(role: str, node: Node, inputs: list[TensorType | None]) -> _Spec:
    """The producer with ``node`` behind it (its main operand replaced by the producer's output)."""
    main = pair_main(node.op_type, inputs)
    twin = _is_residual(role, inputs)
    producer = producer_spec(role, inputs[main], twin)
    tail = node_spec(node, inputs, replace={main: "p", 1 - main: "p2"} if twin else {main: "p"})
    return _Spec(producer.nodes + tail.nodes, {**producer.inputs, **tail.inputs},
                 {**producer.weights, **tail.weights}, tail.outputs, producer.extra + tail.extra,
                 opset=tail.opset, positive=tail.positive, layout=True, opsets=tail.opsets)


def gemm_path_spec(node: Node, inputs: list[TensorType | None]) -> _Spec:
    """A MatMul by a 2-D weight with a bias Add behind it: onnxruntime runs the pair as one Gemm
    (``MatMulAddFusion``), a different kernel from its MatMul."""
    spec = node_spec(node, inputs)
    n = dims(inputs[1])[-1]
    bias = TensorType(inputs[0].dtype, (n,))
    add = helper.make_node("Add", [spec.outputs[0], "bias"], ["y"], name="bias")
    return _Spec(spec.nodes + [add], spec.inputs, {**spec.weights, "bias": bias}, ["y"], spec.extra,
                 opset=spec.opset)


def gelu_spec(approximate: str, t: TensorType | None) -> _Spec:
    """onnxruntime's fused GELU kernel on a tensor of type ``t``."""
    _check_types([t])
    node = helper.make_node("Gelu", ["x"], ["y"], name="probe", approximate=approximate)
    return _Spec([node], {"x": t}, {}, ["y"], [], opset=20)


def fusion_spec(site: FusionSite, avoided: bool) -> _Spec:
    """A :class:`~eqsat_dnn.cost.FusionSite`'s parts as onnxruntime would fuse them, or, when
    ``avoided``, as :mod:`eqsat_dnn.lower` writes them (its Add as a Sum, which no fusion matches)."""
    if site.kind != "skip_layernorm":
        raise Unmeasurable(f"unknown fusion {site.kind!r}")
    a, b = site.operands
    ln_types = site.types[-1]
    _check_types([a, b, *ln_types])
    add = helper.make_node("Sum" if avoided else "Add", ["a", "b"], ["s"], name="parts")
    ln = node_spec(site.ops[1], list(ln_types), replace={0: "s"})
    return _Spec([add] + ln.nodes, {"a": a, "b": b}, ln.weights, ln.outputs, ln.extra, opset=ln.opset)


def skip_layernorm_probe(shape: tuple[int, ...] = (1, 128, 768)) -> FusionSite:
    """A BERT-base residual Add + LayerNormalization, to calibrate the CPU roofline's slowdown."""
    x = TensorType(TensorProto.FLOAT, shape)
    w = TensorType(TensorProto.FLOAT, shape[-1:])
    add = Node("Add", ["a", "b"], ["s"])
    ln = Node("LayerNormalization", ["s", "g", "b"], ["y"], {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
    return FusionSite("skip_layernorm", (0, 1), (add, ln), ((x, x), (x, w, w)), (x, x))


def reorder_spec(direction: str, shape: list[int], channels: int) -> _Spec:
    """onnxruntime's NCHWc ``ReorderInput`` (NCHW -> blocked) or ``ReorderOutput`` (back)."""
    t = TensorType(TensorProto.FLOAT, tuple(shape))
    if direction == "in":
        node = helper.make_node("ReorderInput", ["x"], ["y"], domain="com.microsoft.nchwc", name="probe")
    else:
        node = helper.make_node("ReorderOutput", ["x"], ["y"], domain="com.microsoft.nchwc", name="probe",
                                channels=channels)
    return _Spec([node], {"x": t}, {}, ["y"], [], domains=(("com.microsoft.nchwc", 1),), opset=17)


# ---------------------------------------------------------------------------
# timing


def _session(model: onnx.ModelProto, threads: int, optimized_path: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # a probe that fails is reported by its exception, not on stderr
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class _Bench:
    """One built session, ready to be sampled."""

    def __init__(self, spec: _Spec, threads: int, seed: int = 0) -> None:
        import onnxruntime as ort

        model, self.feeds = spec.build(np.random.default_rng(seed))
        self.reorders: list[list[Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "opt.onnx") if spec.layout else None
            try:
                self.session = _session(model, threads, path)
                outputs = self.session.run(None, self.feeds)
            except Exception as exc:  # onnxruntime raises its own types for every failure
                raise Unmeasurable(str(exc).strip().splitlines()[0][:200] if str(exc).strip() else
                                   type(exc).__name__) from None
            if path and os.path.exists(path):
                self.reorders = _reorders(onnx.load(path, load_external_data=False), self.feeds,
                                          dict(zip(spec.outputs, outputs)))
        self.binding = self.session.io_binding()
        for name, value in self.feeds.items():
            self.binding.bind_cpu_input(name, value)
        self.kept = []
        self.arrays = list(self.feeds.values())
        for meta, value in zip(self.session.get_outputs(), outputs):
            if not isinstance(value, np.ndarray) or value.dtype == object:
                raise Unmeasurable("non-tensor output")
            array = np.empty_like(value)
            ortvalue = ort.OrtValue.ortvalue_from_numpy(array)
            self.kept.append(ortvalue)
            self.arrays.append(array)
            self.binding.bind_ortvalue_output(meta.name, ortvalue)
        self.inner = 1
        try:
            self.run()
        except Exception as exc:  # a probe that runs with session.run but not bound
            raise Unmeasurable(str(exc).strip().splitlines()[0][:200] if str(exc).strip() else
                               type(exc).__name__) from None

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def warm(self, min_sample: float) -> None:
        for _ in range(2):
            self.run()
        t = time.perf_counter()
        self.run()
        once = time.perf_counter() - t
        self.inner = max(1, min(10_000, int(min_sample / max(once, 1e-7))))

    def sample(self) -> float:
        """Seconds per run: one untimed run first (other probes ran in between and evicted this
        one's buffers; inside a real model its input was just written and its buffers are the
        runtime's recycled ones), then ``inner`` timed runs."""
        run = self.session.run_with_iobinding
        binding = self.binding
        run(binding)
        t = time.perf_counter()
        for _ in range(self.inner):
            run(binding)
        return (time.perf_counter() - t) / self.inner


def _reorders(optimized: onnx.ModelProto, feeds: dict[str, np.ndarray],
              outputs: dict[str, np.ndarray]) -> list[list[Any]]:
    """The NCHWc reorders onnxruntime put at the probe model's edge: ["in", shape] for a
    ReorderInput of a graph input, ["out", shape, channels] for a ReorderOutput of a graph output."""
    found = []
    for node in optimized.graph.node:
        if node.domain != "com.microsoft.nchwc":
            continue
        if node.op_type == "ReorderInput" and node.input[0] in feeds:
            found.append(["in", list(feeds[node.input[0]].shape)])
        elif node.op_type == "ReorderOutput" and node.output[0] in outputs:
            channels = next((a.i for a in node.attribute if a.name == "channels"), 0)
            found.append(["out", list(outputs[node.output[0]].shape), int(channels)])
    return found


def measure_benches(benches: list[_Bench], runs: int, min_sample: float, interleave: bool) -> list[float]:
    """Median per-run seconds of each bench; samples taken round-robin when ``interleave``."""
    for bench in benches:
        bench.warm(min_sample)
    samples: list[list[float]] = [[] for _ in benches]
    if interleave:
        for _ in range(runs):
            for k, bench in enumerate(benches):
                samples[k].append(bench.sample())
    else:
        for k, bench in enumerate(benches):
            samples[k] = [bench.sample() for _ in range(runs)]
    return [statistics.median(s) for s in samples]


# ---------------------------------------------------------------------------
# the model


@dataclass
class _Plan:
    """How a node's price is made of measured configurations."""

    role: str
    node_key: str | None = None
    node_spec: Callable[[], _Spec] | None = None
    pair_key: str | None = None
    pair_spec: Callable[[], _Spec] | None = None
    producer_key: str | None = None
    producer_spec: Callable[[], _Spec] | None = None
    boundary: tuple[list[list[int]], list[list[int]]] = ([], [])
    bias: "_Plan | None" = None
    """For a MatMul priced through its Gemm path: the plan of the bias Add to take off."""
    weight_bytes: int = 0
    """Bytes of the node's weights (initializers in real models), streamed from memory."""


def _type_key(t: TensorType | None) -> Any:
    return None if t is None or t.shape is None else [int(t.dtype), dims(t)]


def _attr_key(node: Node) -> Any:
    if node.op == OPAQUE and node.proto is not None:
        blob = b"".join(a.SerializeToString() for a in sorted(node.proto.attribute, key=lambda a: a.name))
        return [node.proto.domain, hashlib.sha1(blob).hexdigest()[:16]]
    return {k: v for k, v in node.attrs.items() if k != "index"}


class MeasuredCostModel:
    """Prices nodes by timing them in onnxruntime on this machine (see the module docstring).

    ``cache_dir``: where the JSON cache lives (default :func:`eqsat_dnn.cost.cache_dir`);
    ``runs``: samples per configuration; ``threads``: onnxruntime intra-op threads
    (default ``$EQSAT_DNN_THREADS`` or 1); ``fusion``: price fused epilogues by their
    marginal cost (``False``: every node standalone); ``fallback``: the model for what
    cannot be measured (default: the calibrated roofline of this CPU).
    """

    def __init__(self, cache_dir: str | Path | None = None, runs: int = RUNS, threads: int | None = None,
                 fusion: bool = True, fallback: Any = None, min_sample: float = MIN_SAMPLE,
                 chunk: int = 16, passes: int = PASSES, retries: int = 2, tolerance: float = 0.1) -> None:
        self.threads = threads or default_threads()
        self.runs = runs
        self.fusion = fusion
        self.min_sample = min_sample
        self.chunk = chunk
        self.passes = max(1, passes)
        self.retries = max(0, retries)
        self.tolerance = tolerance
        self._canary_bench: _Bench | None = None
        self.cache_path, self.device = cache_file(self.threads, cache_dir)
        self.cache = _Cache(self.cache_path, self.device)
        self._fallback = fallback
        self.name = f"measured:{self.threads}t" if self.threads != 1 else "measured"
        self.stats = {"priced": 0, "measured": 0, "fallback": 0, "retries": 0}
        self._calibration: dict[str, float] | None = None
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
        keys = {canonical(["fusion", site.kind, avoided, [_type_key(t) for t in (*site.operands, *site.types[-1])],
                           _attr_key(site.ops[-1])]): (lambda avoided=avoided: fusion_spec(site, avoided))
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
    def fallback(self) -> Any:
        if self._fallback is None:
            self._fallback = RooflineCostModel(cpu_profile(self.threads, self.cache_path.parent, model=self))
        return self._fallback

    def bandwidth(self) -> float:
        """This machine's memory bandwidth in bytes/s (the calibrated roofline's figure)."""
        if getattr(self, "_bandwidth", None) is None:
            profile = getattr(self.fallback, "profile", None)
            self._bandwidth = profile.bandwidth if profile is not None and profile.nchwc else \
                cpu_profile(self.threads, self.cache_path.parent, model=self).bandwidth
        return self._bandwidth

    def calibration(self) -> dict[str, float]:
        """``call``: run time of an empty model (Python and session overhead); ``node``: the
        executor's cost per extra node (both seconds, cached)."""
        if self._calibration is None:
            cal = self.cache.get("calibration")
            if not cal:
                cal = self._calibrate()
                self.cache.put("calibration", cal)
                self.cache.save()
            self._calibration = cal
        return self._calibration

    # -- planning -----------------------------------------------------------------

    def _plan(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> _Plan:
        op = node.op_type
        role = fusion_role(op, node.attrs, inputs, output) if self.fusion else (
            "view" if op in ("Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten") else "kernel")
        ins = [_type_key(t) for t in inputs]
        attrs = _attr_key(node)
        if role == "view":
            return _Plan(role)
        if role == "gelu_part":
            approximate = "none" if op == "Erf" else "tanh"
            return _Plan(role, canonical(["gelu", approximate, _type_key(output)]),
                         lambda: gelu_spec(approximate, output))
        plan = _Plan(role, canonical(["node", op, attrs, ins]), lambda: node_spec(node, inputs))
        slots = _weight_slots(op, inputs)
        if op in ("MatMul", "Gemm", "Conv", "ConvTranspose"):  # ops that read all of their weights
            plan.weight_bytes = sum(math.prod(dims(inputs[k])) * _itemsize(inputs[k]) for k in slots
                                    if inputs[k] is not None and inputs[k].shape is not None)
        if self.fusion and op == "MatMul" and slots == {1} and output is not None and output.dtype in (
                TensorProto.FLOAT,) and len(dims(output)) >= 2:
            plan.node_key = canonical(["gemm_path", attrs, ins])
            plan.node_spec = lambda: gemm_path_spec(node, inputs)
            n = dims(output)[-1]
            plan.bias = self._plan(Node("Add", [], [], {}), [output, TensorType(output.dtype, (n,))], output)
        if role in ("conv_epilogue", "gemm_epilogue"):
            main = pair_main(op, inputs)
            twin = _is_residual(role, inputs)
            plan.pair_key = canonical(["pair2" if twin else "pair", role, op, attrs, ins])
            plan.pair_spec = lambda: pair_spec(role, node, inputs)
            plan.producer_key = canonical(["producer2" if twin else "producer", role, _type_key(inputs[main])])
            plan.producer_spec = lambda: producer_spec(role, inputs[main], twin)
        if self.fusion:
            plan.boundary = layout_boundary(op, node.attrs, inputs, split_output_types(node, inputs, output))
        return plan

    def _keys(self, plan: _Plan) -> list[tuple[str, Callable[[], _Spec]]]:
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

    def _reorder(self, direction: str, shape: list[int], channels: int) -> tuple[str, Callable[[], _Spec]]:
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
            missing: dict[str, Callable[[], _Spec]] = {}
            for plan in plans:
                for key, make in self._keys(plan):
                    if key and self.cache.get(key) is None:
                        missing[key] = make
            if not missing:
                return
            self._measure(missing)

    def _measure(self, missing: dict[str, Callable[[], _Spec]]) -> None:
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

    def _canary(self) -> _Bench:
        """A fixed probe sampled beside every chunk: when it reads slower than its best, the chunk
        ran beside another job's burst and is measured again."""
        if getattr(self, "_canary_bench", None) is None:
            f32 = TensorProto.FLOAT
            spec = _Spec([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": TensorType(f32, (64, 256))},
                         {"b": TensorType(f32, (256, 256))}, ["y"], [])
            self._canary_bench = _Bench(spec, self.threads)
        return self._canary_bench

    def _load(self, canary: float) -> float:
        """How much slower the canary ran than its best ever (1.0: the machine was quiet)."""
        best = self.cache.get("canary")
        if not best or canary < best:
            self.cache.put("canary", canary)
            return 1.0
        return canary / best

    def _bench(self, make: Callable[[], _Spec]) -> _Bench:
        spec = make()
        last = Unmeasurable("no opset works")
        for opset in spec.opsets or (spec.opset,):
            spec.opset = opset
            try:
                return _Bench(spec, self.threads)
            except Unmeasurable as exc:
                last = exc
        raise last

    def _calibrate(self) -> dict[str, float]:
        t = TensorType(TensorProto.FLOAT, (1,))

        def chain(k: int) -> _Spec:
            nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(k)]
            return _Spec(nodes, {"x": t}, {}, [f"t{k - 1}"], [])

        one, many = _Bench(chain(1), self.threads), _Bench(chain(65), self.threads)
        t1, t65 = measure_benches([one, many], max(self.runs, 21), 1e-3, self.threads == 1)
        node = max((t65 - t1) / 64, 0.0)
        block = 8
        with contextlib.suppress(Exception):
            probe = _Bench(reorder_spec("in", [1, 8, 2, 2], 8), self.threads)
            block = int(probe.kept[0].shape()[1])
        return {"call": t1 - node, "node": node, "block": block}

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


def _is_residual(role: str, inputs: list[TensorType | None]) -> bool:
    return (role == "conv_epilogue" and len(inputs) == 2 and inputs[0] is not None and inputs[1] is not None
            and dims(inputs[0]) == dims(inputs[1]))


def pair_main(op: str, inputs: list[TensorType | None]) -> int:
    """Which input of an epilogue the producer feeds."""
    if op in CONV_ACTIVATIONS or op == "BatchNormalization" or len(inputs) < 2:
        return 0
    a, b = dims(inputs[0]), dims(inputs[1])
    return 0 if len(a) >= len(b) and math.prod(a) >= math.prod(b) else 1


# ---------------------------------------------------------------------------
# roofline calibration of this CPU


def cpu_profile(threads: int | None = None, cache_dir: str | Path | None = None,
                model: MeasuredCostModel | None = None) -> DeviceProfile:
    """This CPU's roofline figures, measured in onnxruntime once and cached beside the
    measurements: fp32 peak from a 1024^3 MatMul, bandwidth from an Add over 64 MB
    operands (three streams), per-kernel overhead from a chain of tiny nodes."""
    model = model or MeasuredCostModel(cache_dir=cache_dir, threads=threads, fallback=RooflineCostModel(CPU_PROFILE))
    entry = model.cache.get("roofline")
    if not entry:
        f32 = TensorProto.FLOAT
        n, big = 1024, 16 * 1024 * 1024
        gemm = _Spec([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": TensorType(f32, (n, n))},
                     {"b": TensorType(f32, (n, n))}, ["y"], [])
        add = _Spec([helper.make_node("Add", ["a", "b"], ["y"])],
                    {"a": TensorType(f32, (big,)), "b": TensorType(f32, (big,))}, {}, ["y"], [])
        t_gemm, t_add = measure_benches([_Bench(gemm, model.threads), _Bench(add, model.threads)],
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
                         source=f"measured in onnxruntime {model.device['onnxruntime']} on {model.device['cpu']}, "
                                f"{model.threads} thread(s)")
