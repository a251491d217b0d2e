"""Device profiles: the peak rates the roofline model prices against.

:data:`CPU_PROFILE` holds nominal figures of a 2-core x86 server slice; the ``roofline`` cost
model measures this CPU's own (:func:`eqsat_dnn.cost.calibrated_cpu_profile`).
:data:`GPU_PROFILES` are published datasheet figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx import TensorProto

@dataclass(frozen=True)
class DeviceProfile:
    """Peak rates of one device."""

    name: str
    flops: float
    """Peak FLOP/s for float32."""
    bandwidth: float
    """Memory bandwidth in bytes/s."""
    overhead: float
    """Fixed cost per kernel launch, seconds."""
    peaks: dict[int, float] = field(default_factory=dict, hash=False, compare=False)
    """Peak FLOP/s per ONNX element type (``TensorProto.FLOAT16``, ...); ``flops`` when absent."""
    view_overhead: float | None = None
    """Cost of a view op (Reshape, ...); a tenth of ``overhead`` when ``None``."""
    nchwc: bool = False
    """The runtime uses onnxruntime's blocked NCHWc CPU layout (charge its reorders)."""
    merges_kernels: bool = False
    """One larger kernel beats two launches here (a GPU): optimizing for this device searches the
    multi-pattern merges of parallel products and convs as well
    (:func:`eqsat_dnn.eqsat.rules.default_rules`)."""
    slow_fusions: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    """Fusions the runtime makes (:class:`~eqsat_dnn.cost.fusion.FusionSite` kinds) whose fused
    kernel runs slower than its parts on this device: the fused time over the parts' time."""
    slow_kernels: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    """Kernels of the runtime that run slower than the roofline prices their work here, by a
    factor: ``"attention_softcap"``, an ``Attention`` with a ``softcap``."""
    source: str = ""
    """Where the figures come from."""

    def peak(self, dtype: int | None) -> float:
        return self.peaks.get(dtype or TensorProto.FLOAT, self.flops)


SKIP_LAYERNORM_SLOWDOWN = 5.2
"""onnxruntime 1.32's CPU ``SkipLayerNormalization`` over the ``Add`` + ``LayerNormalization``
it replaces, measured on this project's 2-core x86 machines at 1x128x768, one thread
(533 us against 103 us); :func:`eqsat_dnn.cost.calibrated_cpu_profile` measures it afresh."""

ATTENTION_SOFTCAP_SLOWDOWN = 2.9
"""onnxruntime 1.32's CPU ``Attention`` with a ``softcap`` over the same kernel without one,
measured on this project's 2-core x86 machines at 1x8x512x256 with 4 key/value heads, one thread
(56 ms against 19 ms; the decomposed form with its tanh took 23 ms): a capped Attention is
slower than its parts here, so extraction keeps Gemma 2's decomposition on CPU."""

CPU_PROFILE = DeviceProfile("cpu-2core", flops=60e9, bandwidth=12e9, overhead=3e-6, nchwc=True,
                            slow_fusions={"skip_layernorm": SKIP_LAYERNORM_SLOWDOWN},
                            slow_kernels={"attention_softcap": ATTENTION_SOFTCAP_SLOWDOWN},
                            source="nominal: a 2-core x86 server slice with AVX2 FMA")
"""A 2-core x86 server slice with AVX2 FMA (nominal figures; see :func:`eqsat_dnn.cost.calibrated_cpu_profile`)."""

_F16, _BF16, _F32 = TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT


GPU_PROFILES: dict[str, DeviceProfile] = {
    # NVIDIA's datasheets; half precision through tensor cores (dense, no sparsity)
    "t4": DeviceProfile("t4", merges_kernels=True, flops=8.1e12, bandwidth=320e9, overhead=5e-6,
                        peaks={_F16: 65e12}, source="NVIDIA T4 datasheet: 8.1 TFLOPS fp32, 65 fp16, 320 GB/s"),
    "v100": DeviceProfile("v100", merges_kernels=True, flops=15.7e12, bandwidth=900e9, overhead=5e-6,
                          peaks={_F16: 125e12},
                          source="NVIDIA V100 SXM2 datasheet: 15.7 TFLOPS fp32, 125 fp16 tensor, 900 GB/s"),
    "a100": DeviceProfile("a100", merges_kernels=True, flops=19.5e12, bandwidth=1555e9, overhead=5e-6,
                          peaks={_F16: 312e12, _BF16: 312e12},
                          source="NVIDIA A100 40GB SXM datasheet: 19.5 TFLOPS fp32, 312 fp16/bf16 tensor, "
                                 "1,555 GB/s"),
    "h100": DeviceProfile("h100", merges_kernels=True, flops=67e12, bandwidth=3.35e12, overhead=5e-6,
                          peaks={_F16: 989e12, _BF16: 989e12},
                          source="NVIDIA H100 SXM5 datasheet: 67 TFLOPS fp32, 989 fp16/bf16 tensor (dense), "
                                 "3.35 TB/s"),
}
"""Published peak figures of common GPUs (kernel launch overhead ~5 us)."""


__all__ = ["CPU_PROFILE", "DeviceProfile", "GPU_PROFILES", "SKIP_LAYERNORM_SLOWDOWN"]
