"""Instances: a rule's left-hand side as a small concrete program.

:class:`InstanceBuilder` instantiates the constructor terms of a rule's query bottom-up:
tensor variables become graph inputs (or ``(Weight ...)`` initializers) with shapes the
sampler proposes, attribute variables get values drawn for the op around them, and every
node's output shape comes from ONNX shape inference, which rejects an invalid instance at
once. :func:`make_instance` wraps the result as an :class:`Instance`, sometimes with the
inputs' dims declared symbolic to the e-graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from eqsat_dnn.io.onnx_out import to_onnx
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.ir.language import OPS, Values, lit
from eqsat_dnn.models.builder import ModelBuilder, make_model
from eqsat_dnn.verify.patterns import (UNSET, Direction, Pending, Reject, Unsupported, convert, freeze,
                                       is_constructor_term, is_var, primitive)
from eqsat_dnn.verify.sampling import (HOOKS, Sampler, attribute_value, generic_value, numel, scalar_value,
                                       suggest_shape)
from eqsat_dnn.ir.sexpr import Str, Sym, to_source

OPSET = 20
"""Instances are written in this opset (Gelu needs 20; the e-graph form does not depend on it)."""

TOLERANCES = {TensorProto.DOUBLE: (1e-10, 1e-12), TensorProto.FLOAT: (1e-4, 1e-6)}
"""The element types instances use -> (rtol, atol): a difference is an error above
``atol + rtol * scale``."""


EXACT_TYPES = {Values.BOOL: TensorProto.BOOL, Values.INDEX: TensorProto.INT64}
"""The element types of inputs that are not the instance's float type (masks, indices); their
values and the outputs of that type are compared exactly."""


def np_dtype(dtype: int) -> type:
    return np.float64 if dtype == TensorProto.DOUBLE else np.float32


def dtype_name(dtype: int) -> str:
    return "float64" if dtype == TensorProto.DOUBLE else "float32"


def random_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: int, values: Values,
                  bound: int = 1, positive: bool = False) -> np.ndarray:
    """Random values for an input or weight: normal floats of ``dtype`` (positive ones where an op
    needs them), a mask, or int64 indices from 0 to below ``bound``."""
    if values is Values.BOOL:
        return rng.random(shape) < 0.5
    if values is Values.INDEX:
        return rng.integers(0, max(bound, 1), size=shape, dtype=np.int64)
    drawn = rng.standard_normal(shape).astype(np_dtype(dtype))
    return positive_values(drawn) if positive else drawn


def positive_values(values: np.ndarray) -> np.ndarray:
    """Random normal values made positive (and kept away from 0), for inputs of ops declared
    positive there (:attr:`~eqsat_dnn.ir.language.OpSpec.positive`); draws nothing."""
    return np.abs(values) + values.dtype.type(0.5)


EDGE_VALUES = (np.inf, -np.inf, np.nan)
"""What :func:`edge_feeds` scatters into float inputs."""


def edge_feeds(feeds: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``feeds`` with infinities and NaN in their float inputs: scattered entries, or a whole
    last-axis row of ``-inf`` (an attention score row that a mask hides entirely)."""
    edged = dict(feeds)
    for name, x in feeds.items():
        if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
            continue
        y = x.copy()
        if y.ndim and rng.random() < 0.3:
            y[tuple(int(rng.integers(d)) for d in y.shape[:-1])] = -np.inf
        else:
            hit = rng.random(y.shape) < 0.3
            y[hit] = np.asarray(EDGE_VALUES, dtype=y.dtype)[rng.integers(len(EDGE_VALUES), size=int(hit.sum()))]
        edged[name] = y
    return edged


@dataclass
class Instance:
    """One instantiated left-hand side, ready for the e-graph and for onnxruntime."""

    graph: Graph
    """The left-hand side program; every node output is a graph output."""
    weights: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    """Concrete shape of every value."""
    dtype: int
    attributes: dict[str, Any]
    terms: dict[str, str]
    """Value -> its term as egglog-like text."""
    roots: list[str]
    """Values of the instantiated patterns."""
    symbolic: bool
    positive: frozenset[str] = frozenset()
    """Graph inputs to feed positive values (see :func:`positive_values`)."""
    values: dict[str, Values] = field(default_factory=dict)
    """Graph inputs fed something other than floats (masks, indices)."""
    index_bounds: dict[str, int] = field(default_factory=dict)
    """Index inputs -> the bound their values stay below (the smallest dim they index)."""

    def feeds(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random values for every graph input (see :func:`random_values`)."""
        return {v: random_values(rng, self.shapes[v], self.dtype, self.values.get(v, Values.FLOAT),
                                 self.index_bounds.get(v, 1), v in self.positive) for v in self.graph.inputs}

    def type_names(self) -> dict[str, str]:
        """Every input and weight as ``float32[2, 3]``, ``bool[4]``, ..."""
        return {v: f"{_TYPE_NAMES.get(self.graph.types[v].dtype, dtype_name(self.dtype))}{list(self.shapes[v])}"
                for v in [*self.graph.inputs, *self.weights]}


_TYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.BOOL: "bool",
               TensorProto.INT64: "int64"}


class InstanceBuilder:
    """Instantiates the query patterns of one rule into a Graph, bottom-up."""

    def __init__(self, direction: Direction, sampler: Sampler, dtype: int) -> None:
        self.d = direction
        self.s = sampler
        self.dtype = dtype
        self.onnx = ModelBuilder("rule_instance", rng=sampler.rng, opset=OPSET, ir_version=9, producer="eqsat-dnn")
        """Names, inputs and seeded weights (from the sampler's stream); the nodes are IR nodes, here."""
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.weights: dict[str, np.ndarray] = {}
        """``(Weight name)`` leaves of the pattern: initializers with random values."""
        self.shapes: dict[str, tuple[int, ...]] = self.onnx.shapes
        self.tensor_vars: dict[str, str] = {}
        self.list_vars: dict[str, list[str]] = {}
        self.attrs: dict[str, Any] = {}
        self.memo: dict[tuple, str] = {}
        self.terms: dict[str, str] = {}
        self.expanding: set[str] = set()
        self.counter = 0
        self.plan: dict[str, Any] = {}
        """Attributes an op's hook drew together for the op being built (Slice's: they constrain
        each other)."""
        self.positive: set[str] = set()
        """Inputs that feed an op declared positive there: fed positive values only."""
        self.values: dict[str, Values] = {}
        """Inputs and weights that hold masks or indices (see :attr:`OpSpec.input_values`)."""
        self.index_bounds: dict[str, int] = {}
        """Index inputs and weights -> the smallest dim of the tensors they index."""
        self.scalar_tensor: dict[str, str] = {}
        """A tensor variable (canonical) or leaf term's source that the query reads with
        ``(scalar t)`` -> its key in :attr:`Facts.scalars`: built as a one-element initializer."""
        self.scalar_of: dict[str, str] = {}
        """An f64 variable bound to such a tensor's value -> the tensor's key."""
        for key, values in direction.facts.scalars.items():
            is_leaf_term = key.startswith("(")
            self.scalar_tensor[key if is_leaf_term else self.canon(key)] = key
            bound = None if is_leaf_term else direction.bindings.get(self.canon(key), direction.bindings.get(key))
            if bound is not None:
                self.scalar_tensor[to_source(bound)] = key
            for v in values:
                self.scalar_of[self.canon(v)] = key

    # -- variables ------------------------------------------------------------

    def canon(self, var: str) -> str:
        seen = set()
        while var in self.d.aliases and var not in seen:
            seen.add(var)
            var = self.d.aliases[var]
        return var

    def bound(self, var: str, build: Callable[[Any], Any]) -> Any:
        """``build`` of the term an ``(= var term)`` fact binds ``var`` to (None if none, or while
        that term is being built: a cyclic binding)."""
        if var not in self.d.bindings or var in self.expanding:
            return None
        self.expanding.add(var)
        value = build(self.d.bindings[var])
        self.expanding.discard(var)
        return value

    def fresh_input(self, name: str, shape: tuple[int, ...], values: Values = Values.FLOAT) -> str:
        name = self.onnx.input(name, tuple(int(d) for d in shape), EXACT_TYPES.get(values, self.dtype))
        if values is not Values.FLOAT:
            self.values[name] = values
        self.inputs.append(name)
        self.terms[name] = name
        return name

    def fresh_value(self) -> str:
        self.counter += 1
        return self.onnx.fresh(f"_t{self.counter}")

    def derive(self, term: Any, depth: int = 0) -> Any:
        """The value of a condition's primitive expression from what is built and drawn so far:
        ``(shape x)`` of a built tensor, variables already drawn or themselves derived
        (:attr:`Facts.derived`). Raises ``Pending`` where something is still unknown."""
        if depth > 16:
            raise Pending  # a cycle of derivations (d = 2 h, h = d / 2)
        if is_var(term):
            var = self.canon(str(term))
            if var in self.attrs:
                return self.attrs[var]
            if var in self.d.facts.derived:
                return self.derive(self.d.facts.derived[var], depth + 1)
            raise Pending
        if isinstance(term, list) and len(term) == 2 and str(term[0]) == "shape" and is_var(term[1]):
            var = self.canon(str(term[1]))
            if var not in self.tensor_vars:
                raise Pending
            return list(self.shapes[self.tensor_vars[var]])
        if isinstance(term, list):
            if not term or not isinstance(term[0], Sym) or is_constructor_term(term):
                raise Unsupported(f"cannot derive {to_source(term)}")
            return primitive(str(term[0]), [self.derive(t, depth + 1) for t in term[1:]])
        return term

    def _derived_shape(self, var: str) -> tuple[int, ...] | None:
        for template in self.d.facts.templates.get(var, []):
            try:
                shape = self.derive(template)
            except (Pending, Reject, Unsupported, TypeError, ValueError, ZeroDivisionError):
                continue
            if isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape):
                return tuple(shape)
        return None

    def new_shape(self, suggestion: Callable[[], tuple[int, ...] | None] | None,
                  var: str | None = None) -> tuple[int, ...]:
        facts = self.d.facts
        if var is not None and self.s.chance(0.9):
            derived = self._derived_shape(var)
            if derived is not None:
                return derived
        if var is not None and self.s.chance(0.7):
            if facts.shapes.get(var):
                return tuple(int(d) for d in self.s.pick(facts.shapes[var]))
            partners = [self.shapes[self.tensor_vars[w]] for w in facts.same.get(var, []) if w in self.tensor_vars]
            if partners:
                return self.s.pick(partners)
            if facts.ranks.get(var):
                rank = self.s.pick(facts.ranks[var])
                suggested = suggestion() if suggestion is not None else None
                if suggested is not None and len(suggested) == rank:
                    return suggested
                # inputs a rule ranks alike often play alike parts (attention's Q, K and V)
                alike = [self.shapes[v] for v in self.inputs if len(self.shapes[v]) == rank]
                return self.s.pick(alike) if alike and self.s.chance(0.5) else self.s.shape(rank)
        mode = self.s.mode
        suggested = suggestion() if suggestion is not None and mode != "free" else None
        if mode == "same":
            if self.s.same_shape is None:
                self.s.same_shape = suggested if suggested is not None else self.s.shape()
            return self.s.same_shape
        if suggested is not None and (mode == "guided" or self.s.chance(0.5)):
            return suggested
        return self.s.shape()

    # -- terms ------------------------------------------------------------------

    def tensor(self, term: Any, suggestion=None, positive: bool = False, values: Values = Values.FLOAT,
               bound: int = 5) -> str:
        """The value of a term in a ``T`` position (``positive``: an op needs positive values there;
        ``values``: what it holds, indices below ``bound``)."""
        value = self._tensor(term, suggestion, positive, values)
        if positive and value in self.inputs:
            self.positive.add(value)
        if self.values.get(value) is Values.INDEX:
            self.index_bounds[value] = min(self.index_bounds.get(value, max(bound, 1)), max(bound, 1))
        return value

    def _tensor(self, term: Any, suggestion, positive: bool, values: Values = Values.FLOAT) -> str:
        if is_var(term):
            var = self.canon(str(term))
            if var in self.tensor_vars:
                return self.tensor_vars[var]
            value = self.bound(var, lambda term: self.tensor(term, suggestion))
            if value is not None:
                self.tensor_vars[var] = value
                return value
            if var in self.scalar_tensor:
                value = self.scalar_weight(self.scalar_tensor[var], var)
            else:
                # a condition on the variable's type (a mask's, an index's) wins over the op's default
                wanted = self.d.facts.var_dtypes.get(var)
                values = next((k for k, t in EXACT_TYPES.items() if t == wanted), values)
                value = self.fresh_input(var, self.new_shape(suggestion, var), values)
            self.tensor_vars[var] = value
            return value
        if not is_constructor_term(term):
            raise Unsupported(f"cannot build a tensor from {to_source(term)}")
        head = str(term[0])
        if head in ("Input", "Weight"):
            if len(term) != 2:
                raise Unsupported(f"bad leaf {to_source(term)}")
            arg = term[1]
            if isinstance(arg, Str):
                name = str(arg)
            elif is_var(arg):
                var = self.canon(str(arg))
                name = self.attrs.setdefault(var, f"in_{var}")
            else:
                raise Unsupported(f"bad leaf {to_source(term)}")
            if name in self.shapes:
                return name
            if head == "Input":
                return self.fresh_input(name, self.new_shape(suggestion), values)
            if to_source(term) in self.scalar_tensor:
                return self.scalar_weight(self.scalar_tensor[to_source(term)], name)
            shape = self.new_shape(suggestion)
            if values is Values.FLOAT:
                data = self.onnx.normal(shape, dtype=np_dtype(self.dtype))
                data = positive_values(data) if positive else data
            else:  # indices below the smallest dim anything here has: every index weight is valid
                data = random_values(self.s.rng, shape, self.dtype, values, min(self.s.pool))
                self.values[name] = values
            self.weights[name] = data
            self.terms[name] = f"(Weight {lit(name, 'String')})"
            return self.onnx.const(data, name)
        if head == "Absent":
            return ""
        if head in OPS:
            return self.op(term, values)
        raise Unsupported(f"cannot build ({head} ...) in a tensor position")

    def scalar_weight(self, key: str, name: str) -> str:
        """A one-element float initializer for a tensor the query reads with ``(scalar t)``
        (:attr:`Facts.scalars` ``key``), shape ``[]`` or ``[1]`` unless a condition gives another.

        The e-graph's scalar analysis reads exactly the value stored, so the f64 variables bound
        to it take that value (which an attribute position may have drawn first)."""
        facts = self.d.facts
        bound = [self.canon(v) for v in facts.scalars[key]]
        given = [self.attrs[v] for v in bound if v in self.attrs]
        value = float(given[0]) if given else self.scalar_draw(key)
        for v in bound:
            self.attrs[v] = value
        shapes = [tuple(sh) for sh in facts.shapes.get(key, []) if numel(sh) == 1]
        values = np.full(self.s.pick(shapes or [(), (1,)]), value, dtype=np_dtype(self.dtype))
        name = self.onnx.const(values, name)
        self.weights[name] = values
        self.terms[name] = name
        return name

    def scalar_draw(self, key: str) -> float:
        """A value for the scalar tensor ``key`` that passes the query's comparisons on it."""
        return scalar_value(self.s, self.d.facts.bounds.get(key, []))

    def tensor_list(self, term: Any, suggestion=None, values: Values = Values.FLOAT) -> list[str]:
        """The values of a term in a ``TL`` position (holding ``values``)."""
        if is_var(term):
            var = self.canon(str(term))
            if var in self.list_vars:
                return self.list_vars[var]
            items = self.bound(var, lambda term: self.tensor_list(term, suggestion, values))
            if items is None:
                count = int(self.s.rng.integers(1, 4))
                items = []
                for k in range(count):
                    first = self.shapes[items[0]] if items else None
                    items.append(self.fresh_input(f"{var}{k}", self.new_shape(
                        (lambda f=first: f) if first is not None and self.s.chance(0.8) else suggestion), values))
            self.list_vars[var] = items
            return items
        if is_constructor_term(term) and term[0] == "TNil":
            return []
        if is_constructor_term(term) and term[0] == "TCons" and len(term) == 3:
            head = self.tensor(term[1], suggestion, values=values)
            return [head] + self.tensor_list(term[2], lambda h=head: self.shapes.get(h), values)
        raise Unsupported(f"cannot build a tensor list from {to_source(term)}")

    def literal_attr(self, arg: Any, sort: str) -> Any:
        """The value of an attribute argument if it is already determined, else ``UNSET``."""
        try:
            if is_var(arg):
                value = self.attrs.get(self.canon(str(arg)), UNSET)
                return value if value is UNSET else convert(value, sort)
            if isinstance(arg, list):
                return convert(self.evaluate(arg, sort, assign=False), sort)
            return convert(arg, sort)
        except (Pending, Reject, TypeError, ValueError):
            return UNSET

    def evaluate(self, expr: Any, sort: str, assign: bool = True) -> Any:
        """A primitive expression in an attribute position (variables in it drawn at random)."""
        if isinstance(expr, list):
            if not expr or not isinstance(expr[0], Sym):
                raise Unsupported(f"cannot evaluate {to_source(expr)}")
            head = str(expr[0])
            args_sort = "i64" if head.startswith("vec-") or sort == "IVec" else sort
            args = [self.evaluate(a, args_sort, assign) for a in expr[1:]]
            return primitive(head, args)
        if is_var(expr):
            var = self.canon(str(expr))
            if var not in self.attrs:
                if not assign:
                    raise Pending
                if var in self.scalar_of:
                    self.attrs[var] = self.scalar_draw(self.scalar_of[var])
                else:
                    self.attrs[var] = self.s.i64() if sort == "i64" else self.s.f64() if sort == "f64" else \
                        generic_value(self.s, sort, None)
            return self.attrs[var]
        return expr

    def op(self, term: list, values: Values = Values.FLOAT) -> str:
        """The output of an op term; ``values``: what the consumer wants it to hold (a mask, ...),
        which inputs that pass their element type through (a transpose's) are built to hold too."""
        spec = OPS[str(term[0])]
        passes_type = spec.output_dtype is None and spec.dtype_attr is None
        signature = spec.signature()
        args = term[1:]
        if len(args) != len(signature):
            raise Unsupported(f"({spec.name} ...) takes {len(signature)} arguments, the rule gives {len(args)}")
        n_tensor = spec.tensor_arity
        known = {a.name: self.literal_attr(arg, a.sort) for a, arg in zip(spec.attrs, args[n_tensor:])}
        known = {k: v for k, v in known.items() if v is not UNSET}
        if spec.variadic:
            inputs = self.tensor_list(args[0], lambda: suggest_shape(self, spec, 0, [], known),
                                      values if passes_type else Values.FLOAT)
        else:
            inputs = []
            for i, arg in enumerate(args[:n_tensor]):
                shapes_so_far = [self.shapes.get(v) if v else None for v in inputs]
                kind = spec.input_values[i] if i < len(spec.input_values) else (
                    values if passes_type else Values.FLOAT)
                first = shapes_so_far[0] if shapes_so_far else None
                inputs.append(self.tensor(arg, lambda i=i, s=shapes_so_far: suggest_shape(self, spec, i, s, known),
                                          positive=i in spec.positive, values=kind,
                                          bound=min(first) if first else 1))
        in_shapes = [self.shapes.get(v) if v else None for v in inputs]
        for arg in args[n_tensor:]:
            var = self.canon(str(arg)) if is_var(arg) else None
            if var in self.d.facts.derived and var not in self.attrs and self.s.chance(0.9):
                try:  # a condition computes it from the inputs' shapes: take that value
                    self.attrs[var] = self.derive(self.d.facts.derived[var])
                except (Pending, Reject, Unsupported, TypeError, ValueError, ZeroDivisionError):
                    pass
        if spec.sampler is not None and in_shapes and in_shapes[0]:
            given = dict(known)
            for attr, arg in zip(spec.attrs, args[n_tensor:]):
                if is_var(arg) and self.canon(str(arg)) in self.attrs:
                    given[attr.name] = self.attrs[self.canon(str(arg))]
            self.plan = HOOKS[spec.sampler](self.s, in_shapes, given)
        attrs: dict[str, Any] = {}
        for attr, arg in zip(spec.attrs, args[n_tensor:]):
            if is_var(arg):
                var = self.canon(str(arg))
                if var not in self.attrs:
                    # a condition compares this vector with a tensor's shape: often take that shape
                    shaped = [self.shapes[self.tensor_vars[v]] for v in self.d.facts.shape_vars.get(var, [])
                              if v in self.tensor_vars]
                    if attr.sort == "IVec" and shaped and self.s.chance(0.5):
                        self.attrs[var] = list(self.s.pick(shaped))
                    elif var in self.scalar_of:
                        # also a (scalar t)'s value: one a float32 constant can hold exactly
                        self.attrs[var] = self.scalar_draw(self.scalar_of[var])
                    else:
                        self.attrs[var] = attribute_value(self.s, spec, attr, in_shapes, attrs, self)
                value = self.attrs[var]
            elif isinstance(arg, list):
                value = self.evaluate(arg, attr.sort)
            else:
                value = arg
            try:
                attrs[attr.name] = convert(value, attr.sort)
            except (TypeError, ValueError):
                raise Reject from None
        key = (spec.name, tuple(inputs), freeze(attrs))
        if key in self.memo:
            return self.memo[key]
        out = self.fresh_value()
        index = attrs.pop("index", 0) if spec.name == "Split" else None
        if index is not None:
            if not isinstance(attrs.get("split"), list) or not 0 <= index < len(attrs["split"]):
                raise Reject
            outputs = [""] * len(attrs["split"])
            outputs[index] = out
            attrs_node = dict(attrs)
        else:
            outputs = [out]
            attrs_node = attrs
        self.nodes.append(Node(spec.name, list(inputs), outputs, attrs_node, name=f"n{len(self.nodes)}"))
        self.memo[key] = out
        shown_attrs = dict(attrs, index=index) if index is not None else attrs
        rendered = [self.terms.get(v, "(Absent)") if v else "(Absent)" for v in inputs]
        if spec.variadic:
            rendered = ["[" + " ".join(rendered) + "]"]
        self.terms[out] = "(" + " ".join([spec.name] + rendered + [
            lit(shown_attrs[a.name], a.sort) for a in spec.attrs]) + ")"
        self.shapes[out] = self.infer(out)
        return out

    # -- ONNX -------------------------------------------------------------------

    def graph(self, symbolic: dict[str, tuple] | None = None, outputs: list[str] | None = None) -> Graph:
        outputs = outputs if outputs is not None else [o for n in self.nodes for o in n.outputs if o]
        declared = symbolic or {}
        types = {v: TensorType(self.onnx.dtypes[v], declared.get(v, self.shapes[v])) for v in self.inputs}
        types.update({w: TensorType(self.onnx.dtypes[w], self.shapes[w]) for w in self.weights})
        weights = {t.name: t for t in self.onnx.initializers}
        model = skeleton(self.inputs, types, outputs, self.dtype)
        return Graph(list(self.nodes), list(self.inputs), list(outputs), types, weights, model)

    def infer(self, value: str) -> tuple[int, ...]:
        try:
            model = to_onnx(self.graph(outputs=[value]), fold_constants=False)
            inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        except Exception:  # onnx raises InferenceError, ValidationError and others
            raise Reject from None
        for info in inferred.graph.output:
            if info.name == value:
                t = info.type.tensor_type
                if not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
                    raise Reject
                if t.elem_type not in TOLERANCES and t.elem_type not in EXACT_TYPES.values():
                    # a Cast may change float32 <-> float64, nothing else; masks and indices are exact
                    raise Reject
                return tuple(d.dim_value for d in t.shape.dim)
        raise Reject


def skeleton(inputs: list[str], types: dict[str, TensorType], outputs: list[str], dtype: int,
             opset: int = OPSET) -> onnx.ModelProto:
    """The model an instance's :class:`Graph` carries: typed inputs and untyped outputs (a Cast
    inside the instance may give one another float type), no nodes (the Graph holds them)."""
    typed = [helper.make_tensor_value_info(v, types[v].dtype or dtype, list(types[v].shape)) for v in inputs]
    untyped = [helper.make_empty_tensor_value_info(o) for o in outputs]
    return make_model("rule_instance", [], typed, untyped, opset=opset, ir_version=9, producer="eqsat-dnn")


def make_instance(direction: Direction, rng: np.random.Generator, dtype: int, small: bool = False) -> Instance:
    sampler = Sampler(rng, direction.hints, small)
    builder = InstanceBuilder(direction, sampler, dtype)
    roots = [builder.tensor(p) for p in direction.patterns if str(p[0]) not in ("TNil", "TCons")]
    for p in direction.patterns:
        if str(p[0]) in ("TNil", "TCons"):
            builder.tensor_list(p)
    if not builder.nodes:
        raise Unsupported("the query has no operator to instantiate")
    graph = builder.graph()
    symbolic = False
    if sampler.chance(0.2):
        # the e-graph sees input dims as symbols (one symbol per distinct size); onnxruntime gets sizes
        declared = {v: tuple(f"n{d}" if d > 1 and sampler.chance(0.7) else d for d in builder.shapes[v])
                    for v in builder.inputs}
        if any(isinstance(d, str) for shape in declared.values() for d in shape):
            graph = builder.graph(symbolic=declared)
            symbolic = True
    try:
        model = to_onnx(graph, fold_constants=False)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception:  # to_onnx cannot write some attribute values (empty lists); onnx raises several types
        raise Reject from None
    types = dict(graph.types)
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = info.type.tensor_type
        if info.type.HasField("tensor_type"):
            shape = None
            if t.HasField("shape"):
                shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            types[info.name] = TensorType(t.elem_type, shape)
    graph = replace(graph, types=types)
    return Instance(graph, dict(builder.weights), dict(builder.shapes), dtype, dict(builder.attrs), dict(builder.terms),
                    roots, symbolic, frozenset(builder.positive), dict(builder.values), dict(builder.index_bounds))
