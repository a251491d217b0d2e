"""Building ONNX models in code: unique value names, graph inputs, seeded weights, nodes and
the model around them.

The zoo (:mod:`eqsat_dnn.models.zoo`), the transformer blocks (:mod:`eqsat_dnn.models.blocks`),
the rule checker's instances (:mod:`eqsat_dnn.verify.instances`) and Tensat's rule instances
(:mod:`eqsat_dnn.verify.tensat`) all build through :class:`ModelBuilder`, and write models with
:func:`make_model`; each adds only the layers or terms it knows about.

    b = ModelBuilder("tiny", seed=0)
    x = b.input("x", (1, 4))
    w = b.weight((4, 2), std=0.5, base="w")
    (y,) = b.node("MatMul", [x, w], [b.fresh("y")])
    b.shapes[y], b.dtypes[y] = (1, 2), TensorProto.FLOAT
    model = b.model([y])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Shape = tuple[int, ...]


def make_model(name: str, nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto], initializers: Sequence[onnx.TensorProto] = (), *,
               opset: int, ir_version: int, producer: str | None = None, doc: str | None = None) -> onnx.ModelProto:
    """One graph in a model importing the default domain at ``opset``. ``producer`` and ``doc``
    are written only when given (an empty string is still a field in the proto)."""
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), initializer=list(initializers),
                              doc_string=doc)
    extra: dict[str, str] = {}
    if producer is not None:
        extra["producer_name"] = producer
    if doc is not None:
        extra["doc_string"] = doc
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **extra)
    model.ir_version = ir_version
    return model


class ModelBuilder:
    """Collects a graph's inputs, initializers and nodes, with the shape and element type of
    every value it is told about; names are made unique by :meth:`fresh`."""

    def __init__(self, name: str = "model", seed: int | None = 0, *, rng: np.random.Generator | None = None,
                 opset: int = 17, ir_version: int = 8, producer: str | None = None) -> None:
        self.name = name
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        """The stream every weight is drawn from (``seed``'s, unless a generator is given)."""
        self.opset = opset
        self.ir_version = ir_version
        self.producer = producer
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, Shape] = {}
        self.dtypes: dict[str, int] = {}
        self._taken: set[str] = set()

    # names, inputs, constants -------------------------------------------------

    def fresh(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``, ... if that name is taken; the name is taken now."""
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name

    def input(self, name: str, shape: Sequence[int], dtype: int = TensorProto.FLOAT) -> str:
        """A graph input (its name made unique)."""
        name = self.fresh(name)
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        self.shapes[name], self.dtypes[name] = tuple(shape), dtype
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        """An initializer holding ``value`` (its shape as it is, a scalar's included)."""
        name = self.fresh(base)
        value = np.asarray(value)
        if value.ndim:  # np.ascontiguousarray would make a 0-d array 1-d
            value = np.ascontiguousarray(value)
        self.initializers.append(numpy_helper.from_array(value, name))
        self.shapes[name] = tuple(value.shape)
        self.dtypes[name] = helper.np_dtype_to_tensor_dtype(value.dtype)
        return name

    def ints(self, values: Sequence[int], base: str) -> str:
        """An int64 vector initializer (a shape, axes, pads, split sizes)."""
        return self.const(np.array(values, dtype=np.int64), base)

    def scalar(self, value: float, base: str = "c") -> str:
        """A float32 scalar (0-d) initializer."""
        return self.const(np.array(value, dtype=np.float32), base)

    # seeded weights -----------------------------------------------------------

    def normal(self, shape: Sequence[int], std: float = 1.0, *, offset: float | None = None,
               draw: type = np.float64, dtype: type = np.float32) -> np.ndarray:
        """Values ``std * N(0, 1) (+ offset)`` from :attr:`rng`, drawn in ``draw`` precision (float64
        or float32: the two give different streams) and stored as ``dtype``. An offset is added
        when given, even 0.0 (which turns a -0.0 into 0.0: the bytes of a model depend on it)."""
        values = self.rng.standard_normal(tuple(shape), dtype=draw)
        if std != 1.0:
            values = values * draw(std)
        if offset is not None:
            values = values + draw(offset)
        return values.astype(dtype)

    def weight(self, shape: Sequence[int], std: float, base: str = "w", **normal: Any) -> str:
        """An initializer of seeded normal values (see :meth:`normal`)."""
        return self.const(self.normal(shape, std, **normal), base)

    def uniform(self, shape: Sequence[int], low: float, high: float, base: str) -> str:
        """An initializer of seeded float32 values uniform in ``[low, high)``."""
        return self.const(self.rng.uniform(low, high, tuple(shape)).astype(np.float32), base)

    # nodes and the model ----------------------------------------------------------

    def node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
             **attrs: Any) -> list[str]:
        """Append a node; its outputs."""
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs))
        return list(outputs)

    def value_info(self, name: str) -> onnx.ValueInfoProto:
        """``name`` typed with the element type and shape recorded for it."""
        return helper.make_tensor_value_info(name, self.dtypes.get(name, TensorProto.FLOAT), list(self.shapes[name]))

    def model(self, outputs: Sequence[str | onnx.ValueInfoProto], doc: str | None = None) -> onnx.ModelProto:
        """The model computing ``outputs`` (names are typed from what was recorded)."""
        infos = [self.value_info(o) if isinstance(o, str) else o for o in outputs]
        return make_model(self.name, self.nodes, self.inputs, infos, self.initializers, opset=self.opset,
                          ir_version=self.ir_version, producer=self.producer, doc=doc)
