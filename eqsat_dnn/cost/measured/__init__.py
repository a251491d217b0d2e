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
* fused epilogues (see :func:`eqsat_dnn.cost.fusion.fusion_role`): a cheap producer
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
* a fusion site (:func:`eqsat_dnn.cost.fusion.fusion_sites`, a residual Add feeding only a
  LayerNormalization): its two nodes as onnxruntime fuses them, and again with the Add
  written as Sum, which it does not fuse; :meth:`MeasuredCostModel.fusion_penalty` is the
  difference (the nodes themselves are priced one by one as usual).

Ops that cannot run alone with random inputs (custom domains, subgraphs, ops whose
integer inputs are shapes or indices other than gather indices, unknown shapes)
fall back to the roofline model of this CPU (:func:`~eqsat_dnn.cost.measured.calibration.cpu_profile`).

**Cache.** One JSON file per (CPU model and flags, core count, onnxruntime version,
thread count, method version) under :func:`~eqsat_dnn.cost.measured.cache.cache_dir`
(``$EQSAT_DNN_CACHE``, else ``~/.cache/eqsat-dnn``); a configuration measured once
is never measured again, and a failure to build one is remembered too.

**Threads.** ``threads`` defaults to ``$EQSAT_DNN_THREADS``, else 1. On a machine
shared with other CPU-heavy work, timings with more threads than free cores are
dominated by descheduled worker threads (measured here on 2 cores with another job
running: a 128x768x768 MatMul took 1.36 ms with 1 thread and 8-13 ms with 2), so 1
is the default; pass the thread count your deployment runs with, and benchmark
with the same.

**Symbolic dims** use the policy of :func:`eqsat_dnn.cost.shapes.dim_size` (batch-like
names 1, other symbolic or unknown dims 128).

The modules: :mod:`~eqsat_dnn.cost.measured.cache` (the cache file and its keys),
:mod:`~eqsat_dnn.cost.measured.probes` (the one-node models), :mod:`~eqsat_dnn.cost.measured.harness`
(sessions and sampling), :mod:`~eqsat_dnn.cost.measured.calibration` (empty-model time, per-node
overhead, this CPU's roofline), :mod:`~eqsat_dnn.cost.measured.model` (the pricing policy).
"""

from eqsat_dnn.cost.measured.calibration import cpu_profile
from eqsat_dnn.cost.measured.model import MeasuredCostModel
from eqsat_dnn.cost.measured.probes import Unmeasurable

__all__ = ["MeasuredCostModel", "Unmeasurable", "cpu_profile"]
