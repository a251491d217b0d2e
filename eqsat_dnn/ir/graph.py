"""The graph IR every stage speaks: a tiny torch.fx-like Graph of Nodes.

A :class:`Graph` is what ONNX import produces, what extraction hands back, and
what ONNX export consumes. Tensors are named values; nodes refer to them by
name. Weights (initializers) stay as ONNX ``TensorProto`` objects, so nothing is
copied or decoded until it is needed, and external data survives the trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from eqsat_dnn.ir.language import ALIASES, OPAQUE, OPS

Dim = int | str | None
"""A dimension: a size, a symbolic name, or unknown."""


@dataclass(frozen=True)
class TensorType:
    """Element type (ONNX ``TensorProto`` enum) and shape of a tensor."""

    dtype: int
    shape: tuple[Dim, ...] | None
    """``None`` when even the rank is unknown."""

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)


@dataclass
class Node:
    """One operator application.

    ``op`` is a vocabulary name from :mod:`eqsat_dnn.ir.language` (``"MatMul"``) or
    ``"Opaque"`` for anything the rules do not reason about; an opaque node
    keeps its original ``NodeProto`` in ``proto`` and is written back verbatim
    (with its inputs and outputs renamed as the graph needs).
    """

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    proto: onnx.NodeProto | None = None

    @property
    def op_type(self) -> str:
        """The ONNX op type this node computes, as the rules, the cost models and the partitioner
        see it: an opaque node's own type, else its vocabulary op (an alias is its vocabulary op:
        a two-operand ``Sum`` is an ``Add``, see :data:`eqsat_dnn.ir.language.ALIASES`).

        The one definition of a node's op type; :attr:`written_op` only adds an alias's spelling."""
        return self.proto.op_type if self.op == OPAQUE and self.proto is not None else self.op

    @property
    def written_op(self) -> str:
        """The ONNX op type export writes: :attr:`op_type`, except that an alias keeps its own
        spelling (a two-operand ``Sum`` read as ``Add`` is written back as ``Sum``)."""
        if self.proto is not None and ALIASES.get(self.proto.op_type) == self.op:
            return self.proto.op_type
        spec = OPS.get(self.op)
        return spec.op_type if spec is not None else self.op_type

    @property
    def implicit_inputs(self) -> list[str]:
        """Outer-scope values that this node's subgraphs (If, Loop, Scan bodies) read by name:
        every stage must keep them computed, and under these names."""
        if self.proto is None:
            return []
        found: list[str] = []

        def visit(graph: onnx.GraphProto, outer_defined: set[str]) -> None:
            defined = set(outer_defined)
            defined |= {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for n in graph.node:
                for name in n.input:
                    if name and name not in defined and name not in found:
                        found.append(name)
                for sub in _subgraphs(n):
                    visit(sub, defined)
                defined |= set(n.output)

        for sub in _subgraphs(self.proto):
            visit(sub, set())
        return [n for n in found if n not in self.inputs]

    @property
    def folds(self) -> bool:
        """Whether, given constant inputs, this node computes a constant that export may
        evaluate once: every vocabulary op, and opaque standard ops that are deterministic
        and carry no subgraph (ConstantOfShape, Range, Cast, ...)."""
        if self.op != OPAQUE:
            return True
        proto = self.proto
        return (proto is not None and proto.domain in ("", "ai.onnx") and proto.op_type not in _NOT_FOLDABLE
                and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in proto.attribute))


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken``, which it joins."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _subgraphs(proto: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for a in proto.attribute
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


_NOT_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "Dropout"}
"""Standard ops whose result is not a function of their inputs alone."""


@dataclass
class Graph:
    """A computation graph plus everything needed to write it back as ONNX."""

    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    types: dict[str, TensorType]
    weights: dict[str, onnx.TensorProto]
    model: onnx.ModelProto
    """The source model with its graph's nodes and initializers removed:
    metadata, opset imports, functions and input/output value infos."""

    @property
    def opset(self) -> int:
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return imp.version
        raise ValueError("model has no default-domain opset import")

    def producers(self) -> dict[str, Node]:
        """Value name -> the node that computes it."""
        return {out: node for node in self.nodes for out in node.outputs if out}

    def op_counts(self) -> dict[str, int]:
        """Number of nodes per ONNX op type as written (:attr:`Node.written_op`)."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.written_op] = counts.get(node.written_op, 0) + 1
        return counts

    def lint(self) -> None:
        """Raise ``ValueError`` unless the graph is well formed: every value is defined once
        (an input, a weight or one node's output) and before it is read, subgraphs' outer reads
        included, every output is defined, and every node is a vocabulary op or an opaque node
        with its proto. The pipeline runs it between stages (torch.fx's ``Graph.lint``)."""
        defined = set(self.inputs)
        for name in self.weights:
            if name in defined and name not in self.inputs:
                raise ValueError(f"value {name!r} is defined twice")
            defined.add(name)
        for node in self.nodes:
            if node.op == OPAQUE and node.proto is None:
                raise ValueError(f"opaque node {node.name!r} has no proto to write back")
            if node.op != OPAQUE and node.op not in OPS:
                raise ValueError(f"node {node.name!r}: {node.op!r} is neither a vocabulary op nor opaque")
            for name in [*node.inputs, *node.implicit_inputs]:
                if name and name not in defined:
                    raise ValueError(f"node {node.name!r} ({node.op}) reads {name!r} before it is defined")
            for name in node.outputs:
                if name and name in defined:
                    raise ValueError(f"value {name!r} is defined twice (again by node {node.name!r})")
                defined.update([name] if name else [])
        missing = [o for o in self.outputs if o not in defined]
        if missing:
            raise ValueError(f"graph outputs {missing[:3]} are not defined")
