"""Symbolic dims searched at probe sizes, and given back to the output.

A model exported with dynamic axes computes its reshape targets, expand shapes and mask ranges
at run time (``Reshape(x, Concat(Shape(ids)[0:1], Shape(mask)[1:2], [12], [64]))``). The rules
read static shapes, so over symbolic dims they see through none of it and nothing fuses. Here
each symbolic dim of the graph's inputs is pinned to a *probe*: a prime that divides no number
the model holds (no dim, no integer constant, no integer attribute). The pipeline searches the
pinned model as any static one (its shape arithmetic folds, its attention fuses), and
:func:`restore` gives the output its symbolic dims back:

* an integer constant whose entries carry a probe's factor (a reshape target ``[7, 509, 12, 64]``,
  a slice end, a range limit) is computed at run time again, each such entry as a product of
  ``Shape`` reads of the inputs that carry those dims (``7 * 509`` as batch times seq) times its
  static factor;
* a constant whose *shape* carries a probe (a folded causal mask ``[1, 1, 509, 509]``) cannot be
  given back: the pipeline does not fold such tensors (:meth:`Probes.in_shape`), and
  :func:`restore` refuses a model that still has one, as it refuses a probe in an attribute.

A value derived from a dim by anything but products (``seq - 1``) carries no factor that shows.
The pipeline's check is what catches it: it runs both models with every symbolic dim at a small
size of its own (:attr:`Probes.check_sizes`), never at the probes, so a value frozen at a probe's
size disagrees there. Where a model cannot be restored or checked this way, the pipeline searches it
with its symbolic dims as they are, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eqsat_dnn.io.protos import tensor_view
from eqsat_dnn.ir.graph import fresh_name

BATCH_PROBE_START = 7
"""The smallest probe for a dim at axis 0 of an input of rank 2 or more (a batch, priced as a small one)."""

PROBE_START = 509
"""The smallest probe for any other dim (a sequence: priced as the 512 the models are usually run at)."""

CHECK_SIZES = (2, 3, 5, 7, 11, 13)
"""The sizes the check gives the symbolic dims, one each, in the order the inputs name them."""

_SENTINEL = (1 << 31) - 1
"""Integers this large (INT64_MAX as a slice's open end) are flags, not sizes: never a probe's multiple."""

_SCANNED_ELEMENTS = 64
"""Integer constants over this size are data (position ids, an index range), not shape targets:
neither read for the sizes a model states nor given back (one derived from a probe has a probe-sized shape)."""

_INTEGER_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


class ProbeError(ValueError):
    """A probe's size is left in the optimized model where no run-time form can replace it."""


@dataclass(frozen=True)
class Probes:
    """The probe of each symbolic dim of a model's inputs, and where each dim is read at run time."""

    sizes: dict[str, int]
    """Symbolic dim (its ``dim_param``, or ``input:axis`` for an unnamed one) -> probe (a prime)."""
    sources: dict[str, tuple[str, int]]
    """Symbolic dim -> the first graph input that has it, and its axis there."""
    check_sizes: dict[str, int]
    """Symbolic dim -> the small size the check gives it (:data:`CHECK_SIZES`)."""
    input_shapes: dict[str, list[int]]
    """The pinned dims of every input with a symbolic one (what ``--overwrite-input-shape`` takes)."""
    types: dict[str, onnx.TypeProto] = field(repr=False)
    """The model's inputs' and outputs' types, symbolic dims and all, by name."""
    batch_like: frozenset[str] = field(default=frozenset())
    """The dims at axis 0 of an input of rank 2 or more: batches, as far as a model can tell."""

    @property
    def measure_sizes(self) -> dict[str, int]:
        """Sizes to time the models at: a batch-like dim at 1, the others at their probes."""
        return {dim: 1 if dim in self.batch_like else size for dim, size in self.sizes.items()}

    def describe(self) -> str:
        """``batch=7, seq=509``."""
        return ", ".join(f"{dim}={size}" for dim, size in self.sizes.items())

    def factor(self, value: int) -> tuple[int, list[str]]:
        """``value`` as its static factor and the symbolic dims (with repeats) whose product it is
        multiplied by; no dims for a value that carries no probe."""
        if value == 0 or abs(value) >= _SENTINEL:
            return value, []
        dims = []
        for dim, prime in self.sizes.items():
            while value % prime == 0:
                value //= prime
                dims.append(dim)
        return value, dims

    def in_value(self, values: Iterable[int]) -> bool:
        """Whether any of these integers carries a probe's factor."""
        return any(self.factor(int(v))[1] for v in values)

    def in_shape(self, shape: Iterable[object] | None) -> bool:
        """Whether a tensor of this shape may have a dim a probe made (such a tensor must stay
        computed): one of its dims carries a probe's factor, or is not known."""
        if shape is None:
            return True
        dims = list(shape)
        return not all(isinstance(d, int) for d in dims) or self.in_value(dims)


def find_probes(model: onnx.ModelProto, pinned: dict[str, list[int]] | None = None) -> Probes | None:
    """Probes for the symbolic dims of ``model``'s inputs (those ``pinned`` fixes aside); ``None``
    when every input dim is known."""
    pinned = pinned or {}
    order: list[str] = []
    sources: dict[str, tuple[str, int]] = {}
    batch_like: set[str] = set()
    inputs = {name: dims for name, dims in _input_dims(model).items() if name not in pinned}
    for name, dims in inputs.items():
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                continue
            if dim not in sources:
                order.append(dim)
                sources[dim] = (name, axis)
            if axis == 0 and len(dims) >= 2:
                batch_like.add(dim)
    if not order:
        return None
    taken = _numbers(model)
    sizes: dict[str, int] = {}
    for dim in order:
        prime = _next_prime(BATCH_PROBE_START if dim in batch_like else PROBE_START)
        while any(n % prime == 0 for n in taken) or prime in sizes.values():
            prime = _next_prime(prime + 1)
        sizes[dim] = prime
    checks = {dim: CHECK_SIZES[i % len(CHECK_SIZES)] for i, dim in enumerate(order)}
    types = {v.name: v.type for v in list(model.graph.input) + list(model.graph.output)}
    shapes = {name: [d if isinstance(d, int) else sizes[d] for d in dims]
              for name, dims in inputs.items() if not all(isinstance(d, int) for d in dims)}
    return Probes(sizes, sources, checks, shapes, types, frozenset(batch_like))


def restore(optimized: onnx.ModelProto, probes: Probes) -> onnx.ModelProto:
    """``optimized`` (searched with ``probes`` pinned) with the input model's symbolic dims back: its
    inputs' and outputs' types, and every integer constant that carries a probe computed at run
    time (see the module doc). Raises :class:`ProbeError` where a probe is left that no run-time
    form replaces."""
    out = onnx.ModelProto()
    out.CopyFrom(optimized)
    graph = out.graph
    for value in list(graph.input) + list(graph.output):
        if value.name in probes.types:
            value.type.CopyFrom(probes.types[value.name])
    del graph.value_info[:]  # inferred at the probes: the runtime infers them again
    _refuse_in_attributes(graph, probes)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    taken = ({t.name for t in graph.initializer} | {v.name for v in graph.input}
             | {o for n in graph.node for o in n.output})
    computed: list[onnx.NodeProto] = []
    reads: dict[str, str] = {}  # symbolic dim -> the [1] int64 tensor that holds it at run time
    kept: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        if tensor.name not in used:
            kept.append(tensor)
            continue
        if probes.in_shape(tensor.dims):
            raise ProbeError(f"constant {tensor.name!r} has the probe-sized shape {list(tensor.dims)}")
        if tensor.data_type not in _INTEGER_TYPES or np.prod(tensor.dims, dtype=np.int64) > _SCANNED_ELEMENTS:
            kept.append(tensor)
            continue
        values = tensor_view(tensor).astype(np.int64).ravel().tolist()
        if not probes.in_value(values):
            kept.append(tensor)
            continue
        computed.extend(_computed(tensor, values, probes, reads, taken))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(computed + nodes)  # they read graph inputs only: first is in order
    return out


def _computed(tensor: onnx.TensorProto, values: list[int], probes: Probes, reads: dict[str, str],
              taken: set[str]) -> list[onnx.NodeProto]:
    """Nodes that compute ``tensor`` (named as it is) at run time from the inputs' dims; their
    tensors get names not in ``taken``."""
    nodes: list[onnx.NodeProto] = []

    def read(dim: str) -> str:
        if dim not in reads:
            source, axis = probes.sources[dim]
            reads[dim] = fresh_name(f"{dim}_size", taken)
            nodes.append(helper.make_node("Shape", [source], [reads[dim]], start=axis, end=axis + 1))
        return reads[dim]

    def constant(array: list[int]) -> str:
        name = fresh_name(f"{tensor.name}_part", taken)
        nodes.append(helper.make_node("Constant", [], [name],
                                      value=numpy_helper.from_array(np.array(array, np.int64), name)))
        return name

    parts: list[str] = []
    static_run: list[int] = []
    for value in values:
        factor, dims = probes.factor(value)
        if not dims:
            static_run.append(value)
            continue
        if static_run:
            parts.append(constant(static_run))
            static_run = []
        entry = read(dims[0])
        for dim in dims[1:] + ([] if factor == 1 else [None]):
            product = fresh_name(f"{tensor.name}_product", taken)
            nodes.append(helper.make_node("Mul", [entry, read(dim) if dim else constant([factor])], [product]))
            entry = product
        parts.append(entry)
    if static_run:
        parts.append(constant(static_run))
    flat = parts[0] if len(parts) == 1 else fresh_name(f"{tensor.name}_flat", taken)
    if len(parts) > 1:
        nodes.append(helper.make_node("Concat", parts, [flat], axis=0))
    typed = flat
    if tensor.data_type != onnx.TensorProto.INT64:
        typed = fresh_name(f"{tensor.name}_typed", taken)
        nodes.append(helper.make_node("Cast", [flat], [typed], to=tensor.data_type))
    shape = constant(list(tensor.dims))
    nodes.append(helper.make_node("Reshape", [typed, shape], [tensor.name]))
    return nodes


def _refuse_in_attributes(graph: onnx.GraphProto, probes: Probes) -> None:
    """A probe in an attribute (an integer, a tensor's dims or values, a subgraph) has no run-time form."""
    for node in graph.node:
        for attribute in node.attribute:
            if probes.in_value(_attribute_numbers(attribute)):
                raise ProbeError(f"attribute {attribute.name!r} of {node.op_type} holds a probe's size")


def _input_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Each fed input's dims: a size, or the symbolic dim's key (its name, else ``input:axis``)."""
    initializers = {t.name for t in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        found[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{value.name}:{axis}")
                             for axis, d in enumerate(value.type.tensor_type.shape.dim)]
    return found


def _numbers(model: onnx.ModelProto) -> set[int]:
    """Every size the model states: dims, small integer constants and integer attributes."""
    return {abs(v) for v in _graph_numbers(model.graph) if 2 <= abs(v) < _SENTINEL}


def _graph_numbers(graph: onnx.GraphProto) -> Iterator[int]:
    """The integers a graph states: its constants' dims, the values of its small integer constants,
    its values' dims and its nodes' integer attributes (subgraphs included)."""
    for tensor in graph.initializer:
        yield from _tensor_numbers(tensor)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        yield from (d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value"))
    for node in graph.node:
        for attribute in node.attribute:
            yield from _attribute_numbers(attribute)


def _attribute_numbers(attribute: onnx.AttributeProto) -> Iterator[int]:
    value = helper.get_attribute_value(attribute)
    if attribute.type == onnx.AttributeProto.INT:
        yield int(value)
    elif attribute.type == onnx.AttributeProto.INTS:
        yield from (int(v) for v in value)
    elif attribute.type == onnx.AttributeProto.TENSOR:
        yield from _tensor_numbers(value)
    elif attribute.type == onnx.AttributeProto.GRAPH:
        yield from _graph_numbers(value)
    elif attribute.type == onnx.AttributeProto.GRAPHS:
        for graph in value:
            yield from _graph_numbers(graph)


def _tensor_numbers(tensor: onnx.TensorProto) -> Iterator[int]:
    yield from (int(d) for d in tensor.dims)
    if tensor.data_type in _INTEGER_TYPES and np.prod(tensor.dims, dtype=np.int64) <= _SCANNED_ELEMENTS \
            and not tensor.external_data:
        yield from (int(v) for v in numpy_helper.to_array(tensor).ravel())


def _next_prime(n: int) -> int:
    n = max(n, 2)
    while any(n % k == 0 for k in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n


__all__ = ["BATCH_PROBE_START", "CHECK_SIZES", "PROBE_START", "ProbeError", "Probes", "find_probes", "restore"]
