"""Counting the collectives DTensor issues in a training step and attributing each to the tensor of the
plan whose conversion (forward) or gradient (backward) issued it, and the plan's collectives in the same
form, for :mod:`eqsat_dnn.partition.train` and :mod:`eqsat_dnn.partition.pipeline_run` to compare.

On a CPU mesh DTensor performs an all-to-all as an all-gather plus a local chunk
(``shard_dim_alltoall``): the expected form counts each planned all-to-all so, and says how many were
substituted."""

from __future__ import annotations

from collections import Counter
from typing import Any

from eqsat_dnn.partition.plan import Plan

_KINDS = {"all_reduce": "all_reduce", "all_gather_into_tensor": "all_gather", "all_gather": "all_gather",
          "reduce_scatter_tensor": "reduce_scatter", "all_to_all_single": "all_to_all"}
"""torch's functional collectives (as CommDebugMode names them) -> the plan's kinds."""

Collective = tuple[str, str, str, int, int]
"""(phase, kind, tensor, mesh axis, bytes)."""


def expected_collectives(plan: Plan, cpu: bool) -> tuple[list[Collective], dict[str, int]]:
    """The plan's forward and backward collectives as DTensor issues them (on a CPU mesh an
    all-to-all is an all-gather of the whole buffer), and the substitutions made."""
    return as_issued([(c.phase, c) for c in plan.collectives], plan.mesh.shape, cpu)


def as_issued(collectives: list[tuple[str, Any]], mesh_shape: tuple[int, ...], cpu: bool,
              scale: float = 1.0) -> tuple[list[Collective], dict[str, int]]:
    """(phase, plan collective) pairs as DTensor issues them on a mesh of ``mesh_shape`` (see
    :func:`expected_collectives`), their bytes times ``scale`` (a microbatch's share)."""
    out: list[Collective] = []
    substituted: Counter = Counter()
    for phase, c in collectives:
        kind, size = c.kind, c.bytes * scale
        if cpu and kind == "all_to_all":
            kind, size = "all_gather", size * mesh_shape[c.mesh_axis]
            substituted["all_to_all->all_gather"] += 1
        out.append((phase, kind, c.tensor, c.mesh_axis, int(round(size))))
    return out, dict(substituted)


def comm_counter():
    """CommDebugMode that also records each collective's op, process group and input bytes under
    the current tag (the conversion or gradient that issued it)."""
    from torch.distributed.tensor.debug import CommDebugMode

    class Counter_(CommDebugMode):
        def __init__(self) -> None:
            super().__init__()
            self.tag: tuple[str, str] | None = None
            self.log: list[tuple] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            before = self.get_total_counts()
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if out is not NotImplemented and self.get_total_counts() > before:
                group = next((a for a in reversed(args) if isinstance(a, str)), None)
                tensor = args[0] if args else None
                nbytes = int(tensor.numel() * tensor.element_size()) if hasattr(tensor, "numel") else 0
                self.log.append((self.tag, func._overloadpacket.__name__, group, nbytes))
            return out

    return Counter_


def counted(counter, groups: dict[str, int], shape: tuple[int, ...]) -> tuple[list[Collective], int, int]:
    """What ``counter`` logged: the collectives attributed to a conversion or gradient (all-gathers by the
    bytes they gather, as the plan counts them), how many were attributed to nothing, and the optimizer's."""
    issued, unattributed, optimizer = [], 0, 0
    for tag, op, group, nbytes in counter.log:
        kind = _KINDS.get(op, op)
        axis = groups.get(group, -1)
        if tag is None:
            unattributed += 1
        elif tag[0] == "optimizer":
            optimizer += 1
        else:
            size = nbytes * shape[axis] if kind == "all_gather" and axis >= 0 else nbytes
            issued.append((tag[0], kind, tag[1], axis, int(size)))
    return issued, unattributed, optimizer


__all__ = ["Collective", "as_issued", "comm_counter", "counted", "expected_collectives"]
