"""Resharding: the steps that turn one spec of a tensor into another, and their cost.

:func:`redistribute` plans a conversion as a list of :class:`Step`: collectives
along one mesh axis (``all_reduce``, ``all_gather``, ``reduce_scatter``,
``all_to_all``) and local steps (``slice``: keep one's own block, ``zero``:
keep the value on the first device of the axis and zeros elsewhere, which turns
a replicated tensor into a partial one). The planner prices these steps and the
executor (:mod:`eqsat_dnn.partition.run`) performs exactly these steps, so the
collectives a plan predicts are the collectives a run issues.

The order, as in DTensor's redistribution: partial axes are reduced first
(reduce-scatter when the target shards a dim no other axis touches, else
all-reduce), then shards move (all-to-all when one axis moves its shard from one
dim to another and nothing else shards either dim; otherwise all-gather, the
minor axis of a dim first, down to the prefix of axes the target keeps), then
the target's new shards are sliced out locally and new partial axes zeroed.

Costs are the alpha-beta formulas of a ring (FIELD-NOTES), with ``n`` devices
on the axis, ``S`` the message size in bytes and ``beta = 1 / bandwidth``:

* all-reduce ``2(n-1) alpha + 2(n-1)/n S beta``, ``S`` the tensor on one device;
* all-gather ``(n-1) alpha + (n-1)/n S beta``, ``S`` the gathered result;
* reduce-scatter ``(n-1) alpha + (n-1)/n S beta``, ``S`` the input on one device;
* all-to-all ``(n-1) alpha + (n-1)/n S beta``, ``S`` the buffer on one device;

plus a fixed launch overhead per collective (``DeviceMesh.collective_overhead``),
so one all-reduce is cheaper than the reduce-scatter and all-gather it is made of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from eqsat_dnn.partition.mesh import DeviceMesh
from eqsat_dnn.partition.placements import PARTIAL, REPLICATE, Partial, Replicate, Shard, Spec, shard_axes

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
"""The kinds of collective a plan may contain."""


@dataclass(frozen=True)
class Step:
    """One step of a conversion along mesh axis ``axis``."""

    kind: str
    """A collective (see :data:`COLLECTIVES`) or a local ``slice`` / ``zero``."""
    axis: int
    dim: int | None = None
    """The tensor dim gathered, scattered or sliced (all-to-all: the one gathered)."""
    dim2: int | None = None
    """All-to-all only: the tensor dim that becomes sharded."""
    bytes: int = 0
    """The message size ``S`` of the cost formula (see the module docstring)."""

    @property
    def is_collective(self) -> bool:
        return self.kind in COLLECTIVES


def _local_numel(shape: tuple[int, ...], state: list, mesh_shape: tuple[int, ...]) -> int:
    n = math.prod(shape)
    for d in {p.dim for p in state if isinstance(p, Shard)}:
        n //= math.prod(mesh_shape[k] for k in shard_axes(tuple(state), d))
    return n


@lru_cache(maxsize=200_000)
def redistribute(shape: tuple[int, ...], itemsize: int, src: Spec, dst: Spec,
                 mesh_shape: tuple[int, ...]) -> tuple[Step, ...]:
    """The steps from ``src`` to ``dst`` for a tensor of static ``shape`` (see the module docstring)."""
    if src == dst:
        return ()
    state: list = list(src)
    steps: list[Step] = []

    def nbytes() -> int:
        return _local_numel(shape, state, mesh_shape) * itemsize

    # 1. reduce partial axes the target does not keep partial
    for k, p in enumerate(src):
        if not isinstance(p, Partial) or isinstance(dst[k], Partial):
            continue
        target = dst[k]
        if (isinstance(target, Shard) and not shard_axes(tuple(state), target.dim)
                and shard_axes(dst, target.dim) == [k]):
            steps.append(Step("reduce_scatter", k, target.dim, bytes=nbytes()))
            state[k] = target
        else:
            steps.append(Step("all_reduce", k, bytes=nbytes()))
            state[k] = REPLICATE

    # 2a. one axis moving its shard from one dim to another: all-to-all
    for k, p in enumerate(state):
        target = dst[k]
        if (isinstance(p, Shard) and isinstance(target, Shard) and p.dim != target.dim
                and shard_axes(tuple(state), p.dim) == [k] and not shard_axes(dst, p.dim)
                and shard_axes(dst, target.dim) == [k] and not shard_axes(tuple(state), target.dim)):
            steps.append(Step("all_to_all", k, p.dim, target.dim, bytes=nbytes()))
            state[k] = target

    # 2b. gather every shard the target does not keep, minor axis first
    for d in sorted({p.dim for p in state if isinstance(p, Shard)}):
        have, want = shard_axes(tuple(state), d), shard_axes(dst, d)
        keep = 0
        while keep < min(len(have), len(want)) and have[keep] == want[keep]:
            keep += 1
        for k in reversed(have[keep:]):
            state[k] = REPLICATE
            steps.append(Step("all_gather", k, d, bytes=nbytes()))

    # 3. slice new shards (major axis first) and zero new partial axes
    for d in sorted({p.dim for p in dst if isinstance(p, Shard)}):
        for k in shard_axes(dst, d):
            if state[k] != dst[k]:
                assert isinstance(state[k], Replicate), (src, dst, state)
                state[k] = dst[k]
                steps.append(Step("slice", k, d))
    for k, p in enumerate(dst):
        if isinstance(p, Partial) and not isinstance(state[k], Partial):
            assert isinstance(state[k], Replicate), (src, dst, state)
            state[k] = PARTIAL
            steps.append(Step("zero", k))
    assert tuple(state) == dst, (src, dst, state)
    return tuple(steps)


def step_seconds(step: Step, mesh: DeviceMesh) -> float:
    """Alpha-beta time of one step (local steps are free)."""
    if not step.is_collective:
        return 0.0
    axis = mesh.axes[step.axis]
    n = axis.size
    factor = 2.0 if step.kind == "all_reduce" else 1.0
    return (mesh.collective_overhead + factor * (n - 1) * axis.alpha
            + factor * (n - 1) / n * step.bytes / axis.bandwidth)


def step_traffic(step: Step, mesh: DeviceMesh) -> float:
    """Bytes one device sends in this step (the beta term's volume)."""
    if not step.is_collective:
        return 0.0
    n = mesh.axes[step.axis].size
    factor = 2.0 if step.kind == "all_reduce" else 1.0
    return factor * (n - 1) / n * step.bytes


DUAL = {"all_gather": "reduce_scatter", "reduce_scatter": "all_gather", "all_to_all": "all_to_all"}
"""The backward pass's collective for a forward one (an all-reduce's gradient needs none)."""


__all__ = ["COLLECTIVES", "DUAL", "Step", "redistribute", "step_seconds", "step_traffic"]
