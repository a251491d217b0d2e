"""ZeRO (sharded optimizer state, gradients and parameters) as a per-weight choice of the ILP.

A trainable weight placed replicated along some mesh axes (the data-parallel axes of its plan) may
keep, on those axes, only a shard of what training stores with it:

* :attr:`ZeroStage.OPTIMIZER` (ZeRO-1): the optimizer state (Adam's two moments) is sharded; the
  gradient is still all-reduced (as without ZeRO), each device updates its shard of the weight and
  the updated shards are all-gathered back into the replicated weight (one all-gather per step);
* :attr:`ZeroStage.GRADIENTS` (ZeRO-2): the gradient is sharded too: it is reduce-scattered where it
  would have been all-reduced, then the same update and all-gather;
* :attr:`ZeroStage.PARAMETERS` (ZeRO-3, FSDP) needs no new choice: it is a weight *stored* sharded
  and all-gathered by the ops that read it (the all-gather in forward, the reduce-scatter of its
  gradient in backward), which the ILP has always been able to choose; :func:`zero_stages` names it.

The sharded placement of the state (:func:`state_spec`) shards one tensor dim over every such axis.
Prices use the existing collective model: the gradient's redistribution (ZeRO-2 sends it to the
state's placement instead of the weight's, see
:meth:`~eqsat_dnn.partition.problem.PartitionProblem.gradient_target`) and the update's all-gather
(:func:`update_steps`: the redistribution from the state's placement back to the weight's). Memory:
the weight as placed, its gradient as placed (ZeRO-2: as the state), the optimizer state as the state.
"""

from __future__ import annotations

from enum import IntEnum

from eqsat_dnn.partition.collectives import Step, redistribute
from eqsat_dnn.partition.placements import Replicate, Shard, Spec, is_valid


class ZeroStage(IntEnum):
    """What of a replicated weight's training state is sharded over its replicated mesh axes."""

    NONE = 0
    OPTIMIZER = 1
    """ZeRO-1: optimizer state."""
    GRADIENTS = 2
    """ZeRO-2: optimizer state and gradient."""
    PARAMETERS = 3
    """ZeRO-3 / FSDP: everything, the weight stored sharded (a placement, not an extra choice)."""


def state_spec(spec: Spec, shape: tuple[int, ...] | None, mesh_shape: tuple[int, ...]) -> Spec | None:
    """The placement of a ZeRO weight's sharded state: ``spec`` with every replicated mesh axis of
    more than one device sharding the first tensor dim that stays evenly divisible; ``None`` when
    there is no such axis or dim (a scalar, a weight already sharded on every axis)."""
    axes = [k for k, p in enumerate(spec) if isinstance(p, Replicate) and mesh_shape[k] > 1]
    if not axes or shape is None:
        return None
    for d in range(len(shape)):
        candidate = tuple(Shard(d) if k in axes else p for k, p in enumerate(spec))
        if is_valid(candidate, shape, mesh_shape, partial_ok=False):
            return candidate
    return None


def zero_options(has_state: bool) -> tuple[ZeroStage, ...]:
    """The extra stages a replicated weight may take: ZeRO-1 only when the optimizer keeps state
    (SGD keeps none, so ZeRO-1 would change nothing)."""
    return (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS) if has_state else (ZeroStage.GRADIENTS,)


def update_steps(shape: tuple[int, ...], itemsize: int, spec: Spec, stage: ZeroStage, state: Spec | None,
                 mesh_shape: tuple[int, ...]) -> tuple[Step, ...]:
    """The collectives after the optimizer step of a ZeRO-1/2 weight: its updated shards
    all-gathered back to ``spec`` (none without ZeRO-1/2)."""
    if stage not in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS) or state is None:
        return ()
    return tuple(s for s in redistribute(shape, itemsize, state, spec, mesh_shape) if s.is_collective)


def zero_stages(weights: dict[str, tuple[Spec, ZeroStage, Spec | None]],
                reads: dict[str, list[Spec]]) -> dict[str, tuple[ZeroStage, Spec]]:
    """Per trainable weight with sharded state, its stage and the state's placement: ZeRO-1/2 as
    chosen, ZeRO-3 for a weight stored sharded on a mesh axis along which some op reads it
    replicated (gathers it). ``weights``: name -> (placement, chosen stage, state placement);
    ``reads``: name -> the placements its consumers read it in."""
    out: dict[str, tuple[ZeroStage, Spec]] = {}
    for name, (spec, stage, state) in weights.items():
        if stage != ZeroStage.NONE and state is not None:
            out[name] = (stage, state)
        elif any(isinstance(p, Shard) and isinstance(r[k], Replicate)
                 for r in reads.get(name, []) for k, p in enumerate(spec)):
            out[name] = (ZeroStage.PARAMETERS, spec)
    return out


def with_zero(problem, assignment: list[int], stage: ZeroStage) -> list[int]:
    """``assignment`` (of a training :class:`~eqsat_dnn.partition.problem.PartitionProblem`) with every
    weight that has a ``stage`` choice at its placement taking it: e.g. data parallelism with ZeRO-2."""
    out = list(assignment)
    for i, item in enumerate(problem.items):
        if item.kind != "weight":
            continue
        chosen = item.choices[out[i]]
        out[i] = next((c for c, choice in enumerate(item.choices)
                       if choice.zero == stage and choice.produces == chosen.produces), out[i])
    return out


__all__ = ["ZeroStage", "with_zero", "state_spec", "update_steps", "zero_options", "zero_stages"]
