"""onnxruntime sessions: the one place the package creates them, and the one io-binding timer.

Every stage that runs a model in onnxruntime (the output check, the conformance run, constant
folding at export, the measured cost model's probes, the benchmark, the partitioned runner)
creates its session with :func:`create_session`, which states what differs between them:

* ``optimize``: ``ORT_ENABLE_ALL`` (what a user runs, so what is timed) or ``ORT_DISABLE_ALL``
  (the graph as written, what a check compares);
* ``threads``: intra-op threads (and one inter-op thread); ``None`` keeps onnxruntime's default;
* ``log_severity``: 3 (errors) by default, 4 where a failure is expected and reported by its
  exception;
* ``optimized_path``: where onnxruntime writes the model it optimized (to read its layout
  changes, or as the ``ort-offline`` peer);
* ``profiling``, ``disabled_optimizers``: for the benchmarks that look inside the runtime.

Always the CPU execution provider and sequential execution. A model is given as a
``ModelProto``, its serialized bytes, or a path; a ``ModelProto`` whose weights approach
protobuf's 2 GB limit goes through a temporary file with external data.

:class:`BoundTimer` times a session with its inputs and outputs bound once
(``run_with_iobinding``): a run moves no data between Python and onnxruntime.

onnxruntime is imported when a session is made, never at import.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from eqsat_dnn.io.external import write_model
from eqsat_dnn.io.protos import weight_bytes

PROTOBUF_LIMIT = 1_800_000_000
"""A ``ModelProto`` with this many bytes of weights or more is handed over as a file with
external data (protobuf serializes nothing over 2 GB)."""

PROVIDERS = ("CPUExecutionProvider",)


def session_options(*, optimize: bool, threads: int | None = None, log_severity: int = 3,
                    optimized_path: str | Path | None = None, profiling: bool = False) -> Any:
    """The ``SessionOptions`` :func:`create_session` uses (see the module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = log_severity
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    if profiling:
        options.enable_profiling = True
    return options


def create_session(model: onnx.ModelProto | bytes | str | Path, *, optimize: bool, threads: int | None = None,
                   log_severity: int = 3, optimized_path: str | Path | None = None, profiling: bool = False,
                   disabled_optimizers: Sequence[str] = (), scratch: str | Path | None = None,
                   lean: bool = False) -> Any:
    """An onnxruntime ``InferenceSession`` on the CPU provider (see the module docstring);
    ``scratch``: the folder in which a model near protobuf's limit is written (in a temporary
    folder, removed once the session holds it; default: the system's). ``lean``: memory before
    speed, for sessions that run a model a few times (the check, folding): no repacked copy of
    every MatMul weight (so onnxruntime reads the weights from its memory map of the external
    data file), no arena or memory pattern keeping the largest intermediates of every run."""
    import onnxruntime as ort

    options = session_options(optimize=optimize, threads=threads, log_severity=log_severity,
                              optimized_path=optimized_path, profiling=profiling)
    if lean:
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    extra = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    if isinstance(model, Path):
        model = str(model)
    if not isinstance(model, onnx.ModelProto):
        return ort.InferenceSession(model, options, providers=list(PROVIDERS), **extra)
    if weight_bytes(model) < PROTOBUF_LIMIT:
        return ort.InferenceSession(model.SerializeToString(), options, providers=list(PROVIDERS), **extra)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = Path(tmp) / "model.onnx"
        # not onnx.save_model, which would convert the caller's model to external data in place
        write_model(model, path, Path(tmp) / "model.data", "model.data")
        return ort.InferenceSession(str(path), options, providers=list(PROVIDERS), **extra)


class BoundTimer:
    """A session with its inputs and outputs bound once, ready to be timed.

    Construction runs the session once with ``feeds`` (those it takes), keeps the outputs
    (``outputs``), binds the feeds as inputs and fresh arrays shaped like the outputs as outputs
    (a non-tensor output raises ``TypeError``). :meth:`once` times one run;
    :meth:`warm` and :meth:`sample` average enough runs to last a minimum time."""

    def __init__(self, session: Any, feeds: dict[str, np.ndarray]) -> None:
        import onnxruntime as ort

        self.session = session
        names = {i.name for i in session.get_inputs()}
        self.feeds = {k: v for k, v in feeds.items() if k in names}
        self.outputs = session.run(None, self.feeds)
        self.binding = session.io_binding()
        for name, value in self.feeds.items():
            self.binding.bind_cpu_input(name, value)
        self.kept: list[Any] = []
        """The bound outputs (``OrtValue``)."""
        self._arrays = list(self.feeds.values())  # what the binding points into stays alive
        for meta, value in zip(session.get_outputs(), self.outputs):
            if not isinstance(value, np.ndarray) or value.dtype == object:
                raise TypeError("non-tensor output")
            array = np.empty_like(value)
            ortvalue = ort.OrtValue.ortvalue_from_numpy(array)
            self.kept.append(ortvalue)
            self._arrays.append(array)
            self.binding.bind_ortvalue_output(meta.name, ortvalue)
        self.inner = 1
        """Runs per :meth:`sample`."""

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def once(self) -> float:
        """Seconds of one run."""
        t = time.perf_counter()
        self.session.run_with_iobinding(self.binding)
        return time.perf_counter() - t

    def warm(self, min_sample: float) -> None:
        """Two runs, then a timed one that sets :attr:`inner` so that a sample lasts ``min_sample``."""
        for _ in range(2):
            self.run()
        once = self.once()
        self.inner = max(1, min(10_000, int(min_sample / max(once, 1e-7))))

    def sample(self) -> float:
        """Seconds per run: one untimed run first (other work ran in between and evicted this
        session's buffers; inside a real model a node's input was just written), then
        :attr:`inner` timed runs."""
        run = self.session.run_with_iobinding
        binding = self.binding
        run(binding)
        t = time.perf_counter()
        for _ in range(self.inner):
            run(binding)
        return (time.perf_counter() - t) / self.inner


__all__ = ["BoundTimer", "PROTOBUF_LIMIT", "create_session", "session_options"]
