"""Placements, as PyTorch's DTensor says them, and sharding specs built from them.

A tensor on a mesh has one placement per mesh axis:

* ``Shard(d)``: split along tensor dim ``d`` into equal contiguous blocks, one per
  device along that mesh axis;
* ``Replicate()``: every device along the axis holds the same data;
* ``Partial(sum)``: every device holds a summand; the tensor is their sum.

A :data:`Spec` is the tuple of placements, one per mesh axis. When several mesh
axes shard the same tensor dim, the lower mesh axis is the major one (block
index ``i0 * n1 + i1``), as in DTensor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

from eqsat_dnn.errors import InputError


@dataclass(frozen=True, order=True)
class Shard:
    dim: int

    def __str__(self) -> str:
        return f"Shard({self.dim})"


@dataclass(frozen=True, order=True)
class Replicate:
    def __str__(self) -> str:
        return "Replicate()"


@dataclass(frozen=True, order=True)
class Partial:
    reduce_op: str = "sum"

    def __str__(self) -> str:
        return f"Partial({self.reduce_op})"


Placement = Union[Shard, Replicate, Partial]
Spec = tuple[Placement, ...]

REPLICATE = Replicate()
PARTIAL = Partial()


def parse_placement(text: str) -> Placement:
    """The inverse of ``str(placement)``; also accepts DTensor's ``S(1)``, ``R``, ``P``."""
    t = text.strip()
    m = re.fullmatch(r"(?:Shard|S)\(\s*(?:dim\s*=\s*)?(\d+)\s*\)", t)
    if m:
        return Shard(int(m.group(1)))
    if t in ("Replicate()", "R", "Replicate"):
        return REPLICATE
    if t in ("Partial(sum)", "Partial()", "P", "Partial"):
        return PARTIAL
    raise InputError(f"bad placement {text!r}: expected Shard(d), Replicate() or Partial(sum)")


def spec_strings(spec: Spec) -> list[str]:
    return [str(p) for p in spec]


def parse_spec(items: list[str]) -> Spec:
    return tuple(parse_placement(s) for s in items)


def torch_spec(spec: Spec) -> tuple:
    """The same placements as torch DTensor's objects (imports torch)."""
    from torch.distributed.tensor import Partial as TPartial, Replicate as TReplicate, Shard as TShard

    return tuple(TShard(p.dim) if isinstance(p, Shard) else TPartial() if isinstance(p, Partial) else TReplicate()
                 for p in spec)


def short(spec: Spec) -> str:
    """Compact form for tables: ``S1.R`` (one letter per mesh axis, the dim after S)."""
    return ".".join(f"S{p.dim}" if isinstance(p, Shard) else ("P" if isinstance(p, Partial) else "R")
                    for p in spec)


def replicated(ndim: int) -> Spec:
    return (REPLICATE,) * ndim


def shard_axes(spec: Spec, dim: int) -> list[int]:
    """Mesh axes that shard tensor dim ``dim``, major first."""
    return [k for k, p in enumerate(spec) if isinstance(p, Shard) and p.dim == dim]


def shard_count(spec: Spec, dim: int, mesh_shape: tuple[int, ...]) -> int:
    return math.prod(mesh_shape[k] for k in shard_axes(spec, dim))


def is_valid(spec: Spec, shape: tuple | None, mesh_shape: tuple[int, ...], partial_ok: bool = True) -> bool:
    """Every sharded dim exists, is a static size and divides evenly; Partial only where allowed."""
    for p in spec:
        if isinstance(p, Partial) and not partial_ok:
            return False
        if isinstance(p, Shard):
            if shape is None or not 0 <= p.dim < len(shape) or not isinstance(shape[p.dim], int):
                return False
    if shape is None:
        # no static shape: replicated only (a partial tensor's all-reduce must know its bytes)
        return all(isinstance(p, Replicate) for p in spec)
    for d in {p.dim for p in spec if isinstance(p, Shard)}:
        count = shard_count(spec, d, mesh_shape)
        if shape[d] <= 0 or shape[d] % count:
            return False
    return True


def local_shape(shape: tuple[int, ...], spec: Spec, mesh_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one device's block."""
    out = list(shape)
    for d in {p.dim for p in spec if isinstance(p, Shard)}:
        out[d] //= shard_count(spec, d, mesh_shape)
    return tuple(out)


def block_index(spec: Spec, dim: int, coordinate: tuple[int, ...], mesh_shape: tuple[int, ...]) -> int:
    """Which block of tensor dim ``dim`` the device at ``coordinate`` holds (major axis first)."""
    index = 0
    for k in shard_axes(spec, dim):
        index = index * mesh_shape[k] + coordinate[k]
    return index


def all_specs(shape: tuple | None, mesh_shape: tuple[int, ...], partial_ok: bool = False) -> list[Spec]:
    """Every valid spec of a tensor: each mesh axis Replicate, Shard(d) or (if allowed) Partial."""
    options: list[Placement] = [REPLICATE]
    if shape is not None:
        options += [Shard(d) for d, size in enumerate(shape) if isinstance(size, int) and size > 1]
    if partial_ok:
        options.append(PARTIAL)
    specs: list[Spec] = [()]
    for _ in mesh_shape:
        specs = [s + (p,) for s in specs for p in options]
    return [s for s in specs if is_valid(s, shape, mesh_shape, partial_ok)]


__all__ = ["PARTIAL", "Partial", "Placement", "REPLICATE", "Replicate", "Shard", "Spec", "all_specs",
           "block_index", "is_valid", "local_shape", "parse_placement", "parse_spec", "replicated",
           "shard_axes", "shard_count", "short", "spec_strings", "torch_spec"]
