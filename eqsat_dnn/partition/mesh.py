"""Device meshes: how many devices, how they are wired, how much memory each has.

A :class:`DeviceMesh` is a 1-D or 2-D grid of identical devices (``"8"``,
``"2x4"``). Devices are numbered row-major: rank ``r`` sits at coordinate
``(r // 4, r % 4)`` on a ``2x4`` mesh, and a *mesh axis* is the set of lines of
devices that differ in one coordinate only. Collectives run along one mesh
axis at a time, so each axis carries its own link figures: ``alpha`` (seconds
per message step) and ``bandwidth`` (bytes per second each device can send).

Presets describe common machines (:data:`MACHINES`): an axis whose lines stay
inside one node (``size * stride <= devices_per_node``) gets the node's fast
link (NVLink), any other axis the network between nodes. The figures are
nominal, from vendors' datasheets and typical NCCL measurements; they are
meant to rank plans, not to predict wall-clock time to the microsecond.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from eqsat_dnn.cost import CPU_PROFILE, GPU_PROFILES, DeviceProfile
from eqsat_dnn.errors import InputError

GIB = 1 << 30


@dataclass(frozen=True)
class Link:
    """One kind of interconnect, for the alpha-beta collective formulas."""

    alpha: float
    """Latency of one message step, seconds."""
    bandwidth: float
    """Bytes per second one device sends (beta = 1 / bandwidth)."""
    name: str = ""


@dataclass(frozen=True)
class MeshAxis:
    """One axis of a mesh: its size and the link its collectives use."""

    size: int
    link: Link

    @property
    def alpha(self) -> float:
        return self.link.alpha

    @property
    def bandwidth(self) -> float:
        return self.link.bandwidth


@dataclass(frozen=True)
class DeviceMesh:
    """A grid of identical devices (see the module docstring)."""

    axes: tuple[MeshAxis, ...]
    memory_bytes: float
    """Memory of one device, bytes (the plan's bound)."""
    device: DeviceProfile
    """Roofline figures of one device (compute costs come from these)."""
    collective_overhead: float = 5e-6
    """Fixed cost of launching one collective, seconds (on top of alpha-beta)."""
    machine: str = "custom"
    collective_scale: tuple[tuple[str, float], ...] = ()
    """Per collective kind, a factor on its alpha-beta time where a backend runs it otherwise than the
    ring the formula assumes (gloo reduce-scatters as slowly as it all-reduces: see
    :mod:`eqsat_dnn.partition.calibrate`); a kind not listed is 1."""

    def scale(self, kind: str) -> float:
        """The :attr:`collective_scale` of one kind of collective."""
        return dict(self.collective_scale).get(kind, 1.0)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(axis.size for axis in self.axes)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def num_devices(self) -> int:
        return math.prod(self.shape)

    def coordinate(self, rank: int) -> tuple[int, ...]:
        """Mesh coordinate of a device (row-major numbering)."""
        coord = []
        for size in reversed(self.shape):
            coord.append(rank % size)
            rank //= size
        return tuple(reversed(coord))

    def rank(self, coordinate: tuple[int, ...]) -> int:
        rank = 0
        for c, size in zip(coordinate, self.shape):
            rank = rank * size + c
        return rank

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape))
        links = ", ".join(f"axis {k}: {a.link.name or 'link'} {a.bandwidth / 1e9:g} GB/s, "
                          f"{a.alpha * 1e6:g} us" for k, a in enumerate(self.axes))
        return (f"{shape} mesh of {self.device.name} ({self.machine}), "
                f"{self.memory_bytes / GIB:g} GiB per device; {links}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "machine": self.machine,
            "device": self.device.name,
            "device_flops": self.device.flops,
            "device_bandwidth": self.device.bandwidth,
            "device_overhead": self.device.overhead,
            "memory_bytes_per_device": self.memory_bytes,
            "collective_overhead_s": self.collective_overhead,
            "collective_scale": dict(self.collective_scale),
            "axes": [{"size": a.size, "link": a.link.name, "alpha_s": a.alpha, "bandwidth_bytes_per_s": a.bandwidth}
                     for a in self.axes],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DeviceMesh:
        """The inverse of :meth:`to_dict` (the device profile by name when it is a known one)."""
        try:
            name = data["device"]
            device = _PROFILES_BY_NAME.get(name) or DeviceProfile(
                name, flops=float(data["device_flops"]), bandwidth=float(data["device_bandwidth"]),
                overhead=float(data["device_overhead"]))
            axes = tuple(MeshAxis(int(a["size"]), Link(float(a["alpha_s"]), float(a["bandwidth_bytes_per_s"]),
                                                       str(a.get("link", ""))))
                         for a in data["axes"])
            return DeviceMesh(axes, float(data["memory_bytes_per_device"]), device,
                              float(data.get("collective_overhead_s", 5e-6)), str(data.get("machine", "custom")),
                              tuple((str(k), float(v)) for k, v in dict(data.get("collective_scale") or {}).items()))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"bad mesh in plan: {exc}") from None


_PROFILES_BY_NAME = {p.name: p for p in [CPU_PROFILE, *GPU_PROFILES.values()]}


@dataclass(frozen=True)
class Machine:
    """A preset: one kind of device, nodes of ``devices_per_node``, two kinds of link."""

    name: str
    description: str
    device: DeviceProfile
    memory_bytes: float
    devices_per_node: int
    intra: Link
    inter: Link
    default_shape: tuple[int, ...]
    collective_overhead: float = 5e-6
    collective_scale: tuple[tuple[str, float], ...] = ()

    def mesh(self, shape: tuple[int, ...] | None = None, memory_bytes: float | None = None) -> DeviceMesh:
        """A mesh of this machine; axes inside one node get the fast link."""
        shape = tuple(shape or self.default_shape)
        axes = []
        for k, size in enumerate(shape):
            stride = math.prod(shape[k + 1:])
            inside = size * stride <= self.devices_per_node
            axes.append(MeshAxis(size, self.intra if inside else self.inter))
        return DeviceMesh(tuple(axes), float(memory_bytes if memory_bytes is not None else self.memory_bytes),
                          self.device, self.collective_overhead, self.name, self.collective_scale)


_NVLINK3 = Link(2e-6, 230e9, "NVLink3")
_NVLINK4 = Link(2e-6, 370e9, "NVLink4")
_IB_HDR = Link(8e-6, 23e9, "InfiniBand HDR")
_IB_NDR = Link(8e-6, 45e9, "InfiniBand NDR")
_GLOO = Link(30e-6, 3e9, "gloo loopback")

MACHINES: dict[str, Machine] = {m.name: m for m in [
    Machine("dgx-a100", "8 A100-80GB over NVLink3 (NCCL bus bandwidth ~230 GB/s); nodes over 200 Gb/s "
            "InfiniBand per GPU", GPU_PROFILES["a100"], 80 * GIB, 8, _NVLINK3, _IB_HDR, (8,)),
    Machine("dgx-h100", "8 H100-80GB over NVLink4 (~370 GB/s); nodes over 400 Gb/s InfiniBand per GPU",
            GPU_PROFILES["h100"], 80 * GIB, 8, _NVLINK4, _IB_NDR, (8,)),
    Machine("a100-cluster", "several DGX A100 nodes: mesh axis 0 across nodes (InfiniBand HDR, 23 GB/s), "
            "the others inside a node (NVLink3)", GPU_PROFILES["a100"], 80 * GIB, 8, _NVLINK3, _IB_HDR, (4, 8)),
    Machine("cpu", "this CPU's processes talking over gloo (nominal CPU figures)", CPU_PROFILE, 8 * GIB,
            1 << 16, _GLOO, _GLOO, (4,), collective_overhead=20e-6),
]}
"""Presets by name (``--machine``)."""

DEFAULT_MACHINE = "dgx-a100"

MEASURED_MACHINE = "cpu:measured"
"""The ``cpu`` preset with this machine's measured figures (:mod:`eqsat_dnn.partition.calibrate`)."""

MAX_DEVICES = 1 << 16
"""The largest mesh (65,536 devices): beyond the largest clusters built, and the ILP's size grows with it."""


def parse_mesh_shape(text: str) -> tuple[int, ...]:
    """``"8"`` -> ``(8,)``, ``"2x4"`` -> ``(2, 4)``."""
    if not re.fullmatch(r"\s*\d+(\s*[xX*,]\s*\d+)?\s*", text or ""):
        raise InputError(f"bad mesh {text!r}: expected N or AxB (1-D or 2-D), e.g. 8 or 2x4")
    shape = tuple(int(p) for p in re.split(r"[xX*,]", text.strip()))
    if any(s < 1 for s in shape) or math.prod(shape) < 2:
        raise InputError(f"bad mesh {text!r}: sizes must be >= 1 and the mesh must have at least 2 devices")
    if math.prod(shape) > MAX_DEVICES:
        raise InputError(f"bad mesh {text.strip()[:40]!r}: {math.prod(shape):,} devices; at most {MAX_DEVICES:,}")
    return shape


def get_mesh(shape: str | tuple[int, ...] | None = None, machine: str = DEFAULT_MACHINE,
             memory_gb: float | None = None) -> DeviceMesh:
    """A mesh of a preset machine: ``get_mesh("2x4", "a100-cluster", memory_gb=16)``. ``cpu:measured``
    is the ``cpu`` preset with figures measured on this machine for as many processes as the mesh has
    devices (:mod:`eqsat_dnn.partition.calibrate`: measured once, then cached)."""
    if isinstance(shape, str):
        shape = parse_mesh_shape(shape)
    if machine == MEASURED_MACHINE:
        from eqsat_dnn.partition.processes import check_run_size

        devices = math.prod(shape or MACHINES["cpu"].default_shape)
        check_run_size(devices)  # measured on one process per device
        preset = calibrated_machine(devices)
    else:
        preset = MACHINES.get(machine)
    if preset is None:
        raise InputError(f"unknown machine {machine!r} (choose from {', '.join(MACHINES)}, {MEASURED_MACHINE})")
    if shape is not None and (len(shape) not in (1, 2) or any(int(s) < 1 for s in shape)
                              or not 2 <= math.prod(shape) <= MAX_DEVICES):
        raise InputError(f"bad mesh {shape}: 1-D or 2-D with at least 2 devices, at most {MAX_DEVICES:,}")
    if memory_gb is not None and not (memory_gb > 0 and math.isfinite(memory_gb * GIB)):
        raise InputError(f"--memory-gb must be a finite number > 0, not {memory_gb}")
    return preset.mesh(shape, None if memory_gb is None else memory_gb * GIB)


def machine_from_figures(figures: dict[str, Any]) -> Machine:
    """The ``cpu:measured`` :class:`Machine` of fitted figures (as
    :func:`eqsat_dnn.partition.calibrate.measured_figures` returns them); memory and shape as the ``cpu`` preset's."""
    # (no NCHWc layout nor onnxruntime fusion slowdowns in the device: these figures are torch's)
    device = DeviceProfile(f"cpu-gloo-{figures.get('processes', '?')}p-measured", flops=float(figures["flops"]),
                           bandwidth=float(figures["memory_bandwidth"]), overhead=float(figures["op_overhead_s"]),
                           source="measured in torch at one thread per gloo process (eqsat_dnn.partition.calibrate)")
    link = Link(float(figures["alpha_s"]), float(figures["bandwidth"]), "gloo loopback (measured)")
    cpu = MACHINES["cpu"]
    return Machine(MEASURED_MACHINE, "this CPU's processes over gloo, figures measured here (calibrate.py)", device,
                   cpu.memory_bytes, cpu.devices_per_node, link, link, cpu.default_shape,
                   collective_overhead=float(figures["overhead_s"]),
                   collective_scale=tuple(sorted((k, float(v)) for k, v in figures.get("scale", {}).items())))


def calibrated_machine(world: int = 4, *, refresh: bool = False) -> Machine:
    """The ``cpu`` preset with this machine's figures for ``world`` gloo processes (measured once, cached;
    ``refresh`` measures again)."""
    from eqsat_dnn.partition.calibrate import measured_figures

    return machine_from_figures(measured_figures(world, refresh=refresh))


def with_memory(mesh: DeviceMesh, memory_bytes: float) -> DeviceMesh:
    return replace(mesh, memory_bytes=float(memory_bytes))


__all__ = ["DEFAULT_MACHINE", "MEASURED_MACHINE", "calibrated_machine", "machine_from_figures", "DeviceMesh", "GIB", "Link", "MACHINES", "MAX_DEVICES", "Machine", "MeshAxis",
           "get_mesh", "parse_mesh_shape", "with_memory"]
