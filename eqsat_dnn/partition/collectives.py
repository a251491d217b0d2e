"""Resharding: the steps that turn one spec of a tensor into another, and their cost.

:func:`redistribute` plans a conversion as a list of :class:`Step`: collectives
along one mesh axis (``all_reduce``, ``all_gather``, ``reduce_scatter``,
``all_to_all``) and local steps (``slice``: keep one's own block, ``zero``:
keep the value on the first device of the axis and zeros elsewhere, which turns
a replicated tensor into a partial one). The planner prices these steps and the
executor (:mod:`eqsat_dnn.partition.run`) performs exactly these steps, so the
collectives a plan predicts are the collectives a run issues.

The order is DTensor's own (torch's greedy ``generate_greedy_transform_infos``, see
:func:`transform_order`), so that a plan run on DTensor issues exactly the plan's collectives: one
transform per mesh axis whose placement changes, partial -> replicate an all-reduce, partial ->
shard a reduce-scatter, shard -> replicate an all-gather, shard -> another dim an all-to-all,
replicate -> shard a local slice, replicate -> partial a local zeroing (DTensor divides by the
axis size instead: the same sum); on a 2-D mesh an inner axis is first replicated wherever it
would otherwise keep a shard nested under a different outer sharding. DTensor cannot go from a
shard straight to a partial value: that conversion goes through the replicated placement
(:func:`partial_detour`). (On CPU process groups DTensor performs an all-to-all as an all-gather
and a local chunk; :mod:`eqsat_dnn.partition.train` counts it so.)

Costs are the alpha-beta formulas of a ring (FIELD-NOTES), with ``n`` devices
on the axis, ``S`` the message size in bytes and ``beta = 1 / bandwidth``:

* all-reduce ``2(n-1) alpha + 2(n-1)/n S beta``, ``S`` the tensor on one device;
* all-gather ``(n-1) alpha + (n-1)/n S beta``, ``S`` the gathered result;
* reduce-scatter ``(n-1) alpha + (n-1)/n S beta``, ``S`` the input on one device;
* all-to-all ``(n-1) alpha + (n-1)/n S beta``, ``S`` the buffer on one device;

plus a fixed launch overhead per collective (``DeviceMesh.collective_overhead``),
so one all-reduce is cheaper than the reduce-scatter and all-gather it is made of; the whole times a
measured machine's factor for the kind (``DeviceMesh.collective_scale``, 1 unless measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from eqsat_dnn.partition.mesh import DeviceMesh
from eqsat_dnn.partition.placements import REPLICATE, Partial, Replicate, Shard, Spec, shard_axes

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
    middle = partial_detour(src, dst)
    if middle is not None:
        return _transforms(shape, itemsize, src, middle, mesh_shape) + _transforms(shape, itemsize, middle, dst,
                                                                                  mesh_shape)
    return _transforms(shape, itemsize, src, dst, mesh_shape)


def partial_detour(src: Spec, dst: Spec) -> Spec | None:
    """DTensor cannot turn a shard into a partial value on one axis: such a conversion goes through
    this spec (those axes replicated), as two redistributions; ``None`` when none is needed."""
    if not any(isinstance(p, Shard) and isinstance(q, Partial) for p, q in zip(src, dst)):
        return None
    return tuple(REPLICATE if isinstance(p, Shard) and isinstance(q, Partial) else q for p, q in zip(src, dst))


def transform_order(src: Spec, dst: Spec, mesh_shape: tuple[int, ...]) -> list[tuple[int, object, object]]:
    """DTensor's greedy order of per-axis transforms ``(mesh axis, from, to)`` (torch's
    ``generate_greedy_transform_infos``): on a 2-D mesh, inner axes first wherever an axis would
    otherwise keep a shard nested under a different outer sharding (it is replicated first), then the
    remaining transforms from the outer axis to the inner one."""
    current, target = list(src), list(dst)
    out: list[tuple[int, object, object]] = []
    if len(mesh_shape) == 1:
        return [(0, current[0], target[0])] if current[0] != target[0] else []
    if math.prod(mesh_shape[k] for k, p in enumerate(src) if isinstance(p, Shard)) > 1:
        for k in reversed(range(len(current))):
            cur, tgt = current[k], target[k]
            if isinstance(tgt, Shard):
                before_cur = [i for i in range(k) if isinstance(current[i], Shard) and current[i].dim == tgt.dim]
                before_tgt = [i for i in range(k) if isinstance(target[i], Shard) and target[i].dim == tgt.dim]
                if before_cur != before_tgt:
                    tgt = REPLICATE
            if cur != tgt:
                out.append((k, cur, tgt))
                current[k] = tgt
    for k, (cur, tgt) in enumerate(zip(current, target)):
        if cur != tgt:
            out.append((k, cur, tgt))
            current[k] = tgt
    return out


def _transforms(shape: tuple[int, ...], itemsize: int, src: Spec, dst: Spec,
                mesh_shape: tuple[int, ...]) -> tuple[Step, ...]:
    state: list = list(src)
    steps: list[Step] = []

    def nbytes() -> int:
        return _local_numel(shape, state, mesh_shape) * itemsize

    for k, cur, tgt in transform_order(src, dst, mesh_shape):
        if mesh_shape[k] == 1:
            state[k] = tgt
            continue
        if isinstance(tgt, Replicate):
            if isinstance(cur, Partial):
                steps.append(Step("all_reduce", k, bytes=nbytes()))
            elif isinstance(cur, Shard):
                state[k] = tgt
                steps.append(Step("all_gather", k, cur.dim, bytes=nbytes()))
        elif isinstance(tgt, Shard):
            if isinstance(cur, Partial):
                steps.append(Step("reduce_scatter", k, tgt.dim, bytes=nbytes()))
            elif isinstance(cur, Replicate):
                steps.append(Step("slice", k, tgt.dim))
            elif cur.dim != tgt.dim:
                steps.append(Step("all_to_all", k, cur.dim, tgt.dim, bytes=nbytes()))
        elif isinstance(tgt, Partial):
            assert isinstance(cur, Replicate), (src, dst, state)
            steps.append(Step("zero", k))
        state[k] = tgt
    assert tuple(state) == dst, (src, dst, state)
    return tuple(steps)


def step_seconds(step: Step, mesh: DeviceMesh) -> float:
    """Alpha-beta time of one step (local steps are free)."""
    if not step.is_collective:
        return 0.0
    axis = mesh.axes[step.axis]
    n = axis.size
    factor = 2.0 if step.kind == "all_reduce" else 1.0
    return mesh.scale(step.kind) * (mesh.collective_overhead + factor * (n - 1) * axis.alpha
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


__all__ = ["COLLECTIVES", "DUAL", "Step", "partial_detour", "redistribute", "step_seconds", "step_traffic",
           "transform_order"]
