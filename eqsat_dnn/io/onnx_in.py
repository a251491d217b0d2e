"""Stage 1: ONNX model -> :class:`~eqsat_dnn.ir.graph.Graph`.

Shapes and dtypes come from onnx's own shape inference. Every node whose op,
domain, attributes and constant inputs fit the vocabulary in
:mod:`eqsat_dnn.ir.language` becomes a vocabulary node with normalised attributes
(explicit pads, non-negative axes, constant inputs read as attributes);
everything else is kept as an opaque node, untouched.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter
from onnx.external_data_helper import uses_external_data

from eqsat_dnn.errors import InputError, first_line
from eqsat_dnn.io.files import check_input_file
from eqsat_dnn.io.fold import fold_shape_arithmetic
from eqsat_dnn.io.probes import Probes
from eqsat_dnn.ir.graph import Dim, Graph, Node, TensorType
from eqsat_dnn.ir.language import ALIASES, OPS, RENAMED, Attr, OpSpec
from eqsat_dnn.io.external import all_tensors as _all_tensors, read_model_file, read_references, reference_external_data
from eqsat_dnn.io.protos import light_copy, shapes_only, tensor_view, without_initializers

MIN_OPSET = 13
"""Older models are brought up to this opset with onnx's version converter."""

_DROPPED_ATTRS = {
    "Conv": {"kernel_shape", "auto_pad"},
    "MaxPool": {"auto_pad"},
    "AveragePool": {"auto_pad"},
    "BatchNormalization": {"momentum", "training_mode", "spatial"},
    "Split": {"num_outputs"},
    # the reductions' flag for an empty axes list, which import leaves opaque (see _normalise_axes)
    "ReduceMean": {"noop_with_empty_axes"},
    "ReduceSum": {"noop_with_empty_axes"},
    "ReduceMax": {"noop_with_empty_axes"},
}
"""ONNX attributes that import folds into the normalised form (or checks)."""


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """Parse onnx-simplifier style ``name:d1,d2,...`` overrides."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.split(",")]
            if any(not 0 <= d < 1 << 63 for d in shapes[name]):  # a dim is an int64
                raise ValueError
        except ValueError:
            raise InputError(f"bad input shape {spec[:80]!r}: expected name:d1,d2,... with sizes from 0 to "
                             "2^63-1") from None
    return shapes


def read_model(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    """Load a model without its external data (that comes later), with clear errors."""
    if isinstance(source, onnx.ModelProto):
        copied = onnx.ModelProto()
        copied.CopyFrom(source)
        return copied, None
    path = check_input_file(source)  # a FIFO or a device would block or never end: refused unopened
    try:
        model = read_model_file(path)  # a large file's inline weights stay in it, referenced
    except Exception as exc:  # protobuf raises several unrelated types
        raise InputError(f"{path}: not a readable ONNX model ({first_line(exc, 300)})") from None
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{path}: not an ONNX model (empty or truncated graph)")
    return model, path.parent


def input_files(path: str | Path) -> set[Path]:
    """Every file a model on disk owns: the model file and each external-data file that one of
    its tensors (initializers, sparse initializers, Constant values, in subgraphs too) reads.

    An output must never be written over any of these. A file that is not a readable model
    owns only itself.
    """
    path = Path(path)
    owned = {path}
    try:
        model = read_model_file(path)  # a large file's inline weights are not read
    except Exception:  # not a model: nothing else to protect (load_model will refuse it)
        return owned
    for tensor in _all_tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value:
                owned.add(path.parent / entry.value)
    return owned


def load_model(
    source: str | Path | onnx.ModelProto,
    input_shapes: dict[str, list[int]] | None = None,
    load_weights: bool = True,
    lazy: bool = False,
    probes: Probes | None = None,
) -> Graph:
    """Read an ONNX model into a :class:`Graph`.

    ``input_shapes`` fixes graph input dims (symbolic ones otherwise stay
    symbolic). External data is loaded from beside the file. ``load_weights=False``
    reads shapes only: large weights become data-less stubs (:func:`~eqsat_dnn.io.protos.shapes_only`),
    none is read from external data nor copied from a ``ModelProto``.

    ``probes``: the symbolic dims ``input_shapes`` pins at probe sizes (:mod:`eqsat_dnn.io.probes`);
    shape arithmetic then folds as for static dims, but no tensor of a probe-sized shape does.

    ``lazy=True`` (what :func:`~eqsat_dnn.pipeline.optimize` uses) reads no weight: those in
    external data, and the inline ones of a large file, stay where they are as references
    (:mod:`eqsat_dnn.io.external`), memory-mapped by whoever reads their values
    (:func:`~eqsat_dnn.io.protos.tensor_view`). Otherwise they are read into the graph's
    ``TensorProto``s, which any onnx tool can read.
    """
    if load_weights:
        model, base_dir = read_model(source)
    else:
        model, base_dir = read_model(source) if not isinstance(source, onnx.ModelProto) else (source, None)
        try:
            model = shapes_only(model, None if base_dir is None else str(base_dir))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise InputError(f"cannot read external data: {first_line(exc, 300)}") from None
    _check_opsets(model)
    # overrides first: they may give a rank-unknown input the shape the checker demands
    _override_input_shapes(model, input_shapes or {})
    _require_input_ranks(model)
    _infer_output_ranks(model)
    try:
        onnx.checker.check_model(light_copy(model))
    except onnx.checker.ValidationError as exc:
        raise InputError(f"model fails onnx's checker: {first_line(exc, 300)}") from None
    upgraded = _upgrade_opset(model)
    vocabulary = upgraded is not None
    model = upgraded if upgraded is not None else model
    try:
        if vocabulary:  # shape arithmetic over known dims is constant: reshape targets become readable
            fold_shape_arithmetic(model, _infer_types, None if probes is None else probes.in_shape)
        # inference needs types, not weights: run it on a light copy and keep its value infos
        inferred = _infer_types(model)
    except Exception as exc:
        raise InputError(f"onnx shape inference failed: {first_line(exc, 300)}") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for original, typed in zip(model.graph.output, inferred.graph.output):
        original.CopyFrom(typed)
    if load_weights and base_dir is not None and any(uses_external_data(t) for t in _all_tensors(model.graph)):
        for location in sorted({e.value for t in _all_tensors(model.graph) for e in t.external_data
                                if e.key == "location" and e.value}):
            if os.path.exists(base_dir / location):  # a missing one is said below
                check_input_file(base_dir / location, what="(external data)")
        try:
            # weights stay in their files: references, read (memory-mapped) only where needed
            reference_external_data(model, base_dir)
            if not lazy:
                read_references(model)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read external data: {first_line(exc, 300)}") from None
    return _Importer(model, vocabulary).run()


PROPAGATED_ELEMENTS = 4096
"""Data propagation (the values of shape computations) is limited to tensors of this size."""


def _infer_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference with data propagation, on a light copy (no weight data), with
    propagation bounded: onnx's Gather propagator materialises a 1-D data input of N elements
    as N symbolic dims (a 32 MiB vector took 761 MB, a 1 GiB one 21 GB), so every Gather of a
    large 1-D tensor reads a stand-in input of the same type and a symbolic length instead; its
    output's shape does not depend on that length. Shape data lives in short int vectors."""
    light = light_copy(model)
    plain = shape_inference.infer_shapes(light, strict_mode=False)
    sizes: dict[str, int] = {}
    for info in list(plain.graph.input) + list(plain.graph.value_info):
        dims = info.type.tensor_type.shape.dim if info.type.HasField("tensor_type") else []
        if len(dims) == 1 and dims[0].HasField("dim_value"):
            sizes[info.name] = dims[0].dim_value
    for tensor in light.graph.initializer:
        if len(tensor.dims) == 1:
            sizes[tensor.name] = tensor.dims[0]
    stand_ins: dict[str, str] = {}
    for node in light.graph.node:
        if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input \
                and sizes.get(node.input[0], 0) > PROPAGATED_ELEMENTS:
            source = node.input[0]
            if source not in stand_ins:
                stand_ins[source] = f"{source}__eqsat_dnn_unpropagated"
                elem = next((v.type.tensor_type.elem_type for v in list(plain.graph.input) + list(plain.graph.value_info)
                             if v.name == source), 0) or next(t.data_type for t in light.graph.initializer
                                                              if t.name == source)
                light.graph.input.append(helper.make_tensor_value_info(stand_ins[source], elem, ["unpropagated"]))
            node.input[0] = stand_ins[source]
    if not stand_ins:
        return shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    kept = {v.name: v for v in plain.graph.value_info}
    kept.update((v.name, v) for v in inferred.graph.value_info)  # a stand-in never names a value
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(kept.values())
    return inferred


@functools.cache
def _newest_opsets() -> dict[str, int]:
    """Domain -> the newest opset version this onnx release has schemas for."""
    newest: dict[str, int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        newest[schema.domain] = max(newest.get(schema.domain, 0), schema.since_version)
    newest[""] = max(newest.get("", 0), onnx.defs.onnx_opset_version())
    newest["ai.onnx"] = newest[""]
    return newest


def _check_opsets(model: onnx.ModelProto) -> None:
    """Refuse opsets of onnx's own domains that this onnx release does not know: onnx's checker
    lets them through, and nothing downstream can interpret them. Custom domains pass (their
    nodes stay opaque)."""
    newest = _newest_opsets()
    for entry in model.opset_import:
        known = newest.get(entry.domain)
        if known is not None and entry.version > known:
            domain = entry.domain or "ai.onnx"
            raise InputError(f"unsupported opset: the model imports {domain} opset {entry.version}, but onnx "
                             f"{onnx.__version__} knows opsets up to {known}")


def _upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model at :data:`MIN_OPSET` or later; ``None`` where onnx's converter cannot bring
    it there faithfully (it fails, or changes the graph's inputs or outputs, as its Scan-8
    adapter does): such a model is imported all opaque and comes out unchanged."""
    version = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    if version is None or version >= MIN_OPSET:
        # no default-domain opset (an ai.onnx.ml-only model): no node can be a vocabulary op,
        # so the model travels through opaque and unchanged
        return model
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception:
        return None
    if _interface(converted) != _interface(model):
        return None
    converted.ir_version = max(converted.ir_version, 7)  # the IR that opset 13 needs
    return converted


def _require_input_ranks(model: onnx.ModelProto) -> None:
    """A tensor input without a shape (rank unknown) cannot be typed in the e-graph, fed by the
    check, or pass onnx's checker: say how to fix it. Unknown dims (no value, no name) are fine:
    they stay unknown, as symbolic dims do."""
    for info in model.graph.input:
        if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape"):
            raise InputError(f"input {info.name!r} has no shape (its rank is unknown); give it one with "
                             f"--overwrite-input-shape {info.name}:D1,D2,...")


def _infer_output_ranks(model: onnx.ModelProto) -> None:
    """Give shapeless tensor outputs (which onnxruntime runs but onnx's checker rejects) the
    shapes that shape inference finds for them, where it finds one."""
    shapeless = [o for o in model.graph.output
                 if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")]
    if not shapeless:
        return
    try:
        inferred = shape_inference.infer_shapes(light_copy(model), strict_mode=False)
    except Exception:
        return  # the checker says what is wrong
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for output in shapeless:
        typed = known.get(output.name)
        if typed is not None and typed.type.tensor_type.HasField("shape"):
            output.type.CopyFrom(typed.type)


def _interface(model: onnx.ModelProto) -> list[bytes]:
    return [v.SerializeToString(deterministic=True) for v in list(model.graph.input) + list(model.graph.output)]


def _override_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    inputs = {i.name: i for i in model.graph.input}
    for name, dims in shapes.items():
        if name not in inputs:
            raise InputError(f"--overwrite-input-shape names {name!r}, which is not a graph input "
                             f"(inputs: {', '.join(inputs) or 'none'})")
        if not inputs[name].type.HasField("tensor_type"):
            raise InputError(f"--overwrite-input-shape names {name!r}, which is not a tensor input")
        tensor_type = inputs[name].type.tensor_type
        if tensor_type.HasField("shape") and len(tensor_type.shape.dim) != len(dims):
            raise InputError(f"--overwrite-input-shape gives {name!r} {len(dims)} dims, but the model's input "
                             f"{name!r} has rank {len(tensor_type.shape.dim)}")
        tensor_type.shape.Clear()
        for d in dims:
            tensor_type.shape.dim.add().dim_value = d
    # inferred types of everything downstream must be recomputed from the new dims, the
    # outputs' fixed dims too (they may follow from an input dim the override changed)
    if shapes:
        del model.graph.value_info[:]
        for output in model.graph.output:
            if output.type.HasField("tensor_type") and output.type.tensor_type.HasField("shape"):
                for dim in output.type.tensor_type.shape.dim:
                    if dim.HasField("dim_value"):
                        dim.Clear()


def _tensor_type(type_proto: onnx.TypeProto) -> TensorType | None:
    if not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        )
    return TensorType(tt.elem_type, shape)


class _Importer:
    """Walks the inferred model once, turning NodeProtos into Nodes."""

    def __init__(self, model: onnx.ModelProto, vocabulary: bool = True) -> None:
        self.model = model
        self.vocabulary = vocabulary
        """False: every node stays opaque, Constants included (the opset is too old to write any other)."""
        self.graph = model.graph
        self.opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
        self.types: dict[str, TensorType] = {}
        for info in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            t = _tensor_type(info.type)
            if t is not None:
                self.types[info.name] = t
        # an initializer that is also a graph input is only that input's default: a caller may
        # feed another value, so it is an input to the rules, never a constant (as in onnxruntime)
        listed = {i.name for i in self.graph.input}
        self.defaults = [t for t in self.graph.initializer if t.name in listed]
        self.weights: dict[str, onnx.TensorProto] = {t.name: t for t in self.graph.initializer
                                                     if t.name not in listed}
        for t in self.graph.initializer:
            self.types[t.name] = TensorType(t.data_type, tuple(t.dims))
        self.consumed: set[str] = {i for n in self.graph.node for i in n.input if i}
        self.consumed |= {o.name for o in self.graph.output}

    def run(self) -> Graph:
        nodes: list[Node] = []
        for index, proto in enumerate(self.graph.node):
            node = self._convert(proto, index)
            if node is not None:
                nodes.append(node)
        inputs = [i.name for i in self.graph.input]
        skeleton = without_initializers(self.model, skip_node=lambda node: True)
        del skeleton.graph.value_info[:]
        skeleton.graph.initializer.extend(self.defaults)  # written back with the inputs they belong to
        return Graph(
            nodes=nodes,
            inputs=inputs,
            outputs=[o.name for o in self.graph.output],
            types=self.types,
            weights=self.weights,
            model=skeleton,
        )

    # -- one node ---------------------------------------------------------

    def _convert(self, proto: onnx.NodeProto, index: int) -> Node | None:
        if not self.vocabulary:
            name = proto.name or f"{proto.op_type}_{index}"
            return Node(op="Opaque", inputs=list(proto.input), outputs=list(proto.output), name=name, proto=proto)
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx") and len(proto.output) == 1:
            tensor = self._constant_value(proto)
            if tensor is not None:
                self.weights[proto.output[0]] = tensor
                self.types[proto.output[0]] = TensorType(tensor.data_type, tuple(tensor.dims))
                return None
        if proto.op_type == "Shape" and proto.domain in ("", "ai.onnx") and len(proto.output) == 1:
            tensor = self._static_shape(proto)
            if tensor is not None:  # a shape known at import is a constant: what reads it may fold
                self.weights[proto.output[0]] = tensor
                self.types[proto.output[0]] = TensorType(tensor.data_type, tuple(tensor.dims))
                return None
        spec = RENAMED.get((proto.op_type, proto.domain)) or OPS.get(
            ALIASES.get(proto.op_type, proto.op_type) if len(proto.input) == 2 else proto.op_type)
        attrs = None
        if spec is not None and proto.domain in ((spec.domain,) if spec.domain else ("", "ai.onnx")):
            attrs = self._vocabulary_attrs(proto, spec)
        name = proto.name or f"{proto.op_type}_{index}"
        if attrs is None:
            return Node(op="Opaque", inputs=list(proto.input), outputs=list(proto.output), name=name, proto=proto)
        inputs = [] if spec.variadic else list(proto.input[: len(spec.inputs)])
        if spec.variadic:
            inputs = list(proto.input)
        while len(inputs) < spec.tensor_arity and not spec.variadic:
            inputs.append("")
        outputs = list(proto.output[:1]) if spec.name != "Split" else list(proto.output)
        return Node(op=spec.name, inputs=inputs, outputs=outputs, attrs=attrs, name=name, proto=proto)

    def _static_shape(self, proto: onnx.NodeProto) -> onnx.TensorProto | None:
        """The value of a ``Shape`` node whose input's dims are all known (its ``start``/``end``
        clamp as Python's slices do)."""
        shape = self._shape(proto.input[0]) if proto.input else None
        if shape is None or not all(isinstance(d, int) for d in shape):
            return None
        given = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        if set(given) - {"start", "end"}:
            return None
        dims = list(shape)[given.get("start", 0):given.get("end", len(shape))]
        return numpy_helper.from_array(np.array(dims, dtype=np.int64), proto.output[0])

    def _constant_value(self, proto: onnx.NodeProto) -> onnx.TensorProto | None:
        if len(proto.attribute) != 1:
            return None
        attr = proto.attribute[0]
        value: Any
        if attr.name == "value":
            tensor = attr.t  # the model is this import's own copy: take the value, not a copy of it
            tensor.name = proto.output[0]
            return tensor
        if attr.name == "value_float":
            value = np.array(attr.f, dtype=np.float32)
        elif attr.name == "value_floats":
            value = np.array(list(attr.floats), dtype=np.float32)
        elif attr.name == "value_int":
            value = np.array(attr.i, dtype=np.int64)
        elif attr.name == "value_ints":
            value = np.array(list(attr.ints), dtype=np.int64)
        else:
            return None
        return numpy_helper.from_array(value, proto.output[0])

    def _const_ints(self, name: str) -> list[int] | None:
        tensor = self.weights.get(name)
        if tensor is None or tensor.data_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            return None
        return [int(v) for v in tensor_view(tensor).reshape(-1)]

    def _rank(self, name: str) -> int | None:
        t = self.types.get(name)
        return None if t is None or t.shape is None else len(t.shape)

    def _shape(self, name: str) -> tuple[Dim, ...] | None:
        t = self.types.get(name)
        return None if t is None else t.shape

    def _vocabulary_attrs(self, proto: onnx.NodeProto, spec: OpSpec) -> dict[str, Any] | None:
        """Normalised attributes, or ``None`` when the node must stay opaque."""
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in proto.attribute):
            return None
        given = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        known = {a.name for a in spec.attrs} | _DROPPED_ATTRS.get(spec.name, set())
        if set(given) - known:
            return None
        # extra outputs (LayerNormalization's mean, BatchNormalization's running stats) must be unused
        if spec.name != "Split" and any(o and o in self.consumed for o in proto.output[1:]):
            return None
        if not spec.variadic and not _arity_fits(proto, spec):
            return None
        rank = self._rank(proto.input[0]) if proto.input and proto.input[0] else None
        attrs: dict[str, Any] = {}
        for attr in spec.attrs:
            value = self._attr_value(proto, spec, attr, given, rank)
            if value is _MISSING:
                return None
            attrs[attr.name] = value
        attrs.pop("index", None)  # a Split node carries all its outputs; parts are e-graph terms
        return _NORMALISE.get(spec.name, _keep)(self, proto, attrs, given, rank)

    def _attr_value(self, proto: onnx.NodeProto, spec: OpSpec, attr: Attr, given: dict, rank: int | None) -> Any:
        if attr.from_input is not None and self.opset >= attr.input_since:
            if len(proto.input) > attr.from_input and proto.input[attr.from_input]:
                value = self._const_ints(proto.input[attr.from_input])
                if value is not None and attr.sort == "i64":  # a one-element tensor (CumSum's axis)
                    return int(value[0]) if len(value) == 1 else _MISSING
                return _MISSING if value is None else value
            value = None
        elif attr.name in given:
            value = given[attr.name]
        else:
            value = None
        if value is None:
            value = attr.default
        if isinstance(value, bytes):
            value = value.decode()
        if value in ("ones", "zeros"):
            if rank is None or rank < 3:
                return _MISSING
            spatial = rank - 2
            value = [1] * spatial if value == "ones" else [0] * (2 * spatial)
        if value is None and attr.from_input is None:
            return _MISSING
        if attr.sort == "IVec" and value is not None:
            value = [int(v) for v in value]
        return value


_MISSING = object()


_CHECKED_INPUTS = {"Pad": 4}
"""Inputs past the spec's that an op's normaliser reads (Pad's fill value and axes, which must
be the default zero and absent)."""


def _arity_fits(proto: onnx.NodeProto, spec: OpSpec) -> bool:
    """Whether the node has every input the spec requires and none it does not know: a
    two-operand Max is vocabulary, a one- or three-operand one stays opaque."""
    required = sum(1 for name in spec.inputs if not name.endswith("?"))
    known = max([len(spec.inputs), _CHECKED_INPUTS.get(spec.name, 0)]
                + [a.from_input + 1 for a in spec.attrs if a.from_input is not None])
    present = [i for i in proto.input[:len(spec.inputs)] if i]
    return len(present) >= required and len(proto.input) <= known


def _keep(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    return attrs


def _axis(value: int, rank: int | None) -> int | None:
    if value >= 0:
        return value if rank is None or value < rank else None
    return None if rank is None else value + rank


def _normalise_axis(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    axis = _axis(attrs["axis"], rank)
    if axis is None:
        return None
    attrs["axis"] = axis
    return attrs


def _normalise_axes(out_rank: bool):
    def normalise(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
        axes = attrs.get("axes")
        if axes is None or (not axes and proto.op_type.startswith("Reduce")):
            # "all axes" forms stay opaque: their meaning depends on the shape (and, for a
            # reduction's empty list, on noop_with_empty_axes, which the vocabulary does not carry)
            return None
        if out_rank:
            rank = None if rank is None else rank + len(axes)
        normalised = [_axis(a, rank) for a in axes]
        if any(a is None for a in normalised):
            return None
        attrs["axes"] = sorted(normalised) if proto.op_type != "Slice" else normalised
        return attrs
    return normalise


def _normalise_slice(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    if attrs["starts"] is None or attrs["ends"] is None:
        return None
    count = len(attrs["starts"])
    if attrs["axes"] is None:
        attrs["axes"] = list(range(count))
    if attrs["steps"] is None:
        attrs["steps"] = [1] * count
    if not (len(attrs["ends"]) == len(attrs["axes"]) == len(attrs["steps"]) == count):
        return None
    attrs = _normalise_axes(False)(imp, proto, attrs, given, rank)
    if attrs is not None:
        _clamp_slice(imp.types.get(proto.input[0]), attrs)
    return attrs


def _clamp_slice(source: TensorType | None, attrs: dict) -> None:
    """Write a forward slice over known dims in the canonical 0 <= start <= end <= dim form
    (ONNX clamps the same way), which the e-graph's shape rule and the slicing rules expect."""
    if source is None or source.shape is None:
        return
    dims = [source.shape[a] if a < len(source.shape) else None for a in attrs["axes"]]
    if any(not isinstance(d, int) for d in dims) or any(step <= 0 for step in attrs["steps"]):
        return

    def clamp(index: int, dim: int) -> int:
        return min(max(index + dim if index < 0 else index, 0), dim)

    starts = [clamp(s, d) for s, d in zip(attrs["starts"], dims)]
    attrs["ends"] = [max(clamp(e, d), s) for e, s, d in zip(attrs["ends"], starts, dims)]
    attrs["starts"] = starts


def _normalise_pad(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    if attrs["pads"] is None or any(p < 0 for p in attrs["pads"]) or (len(proto.input) > 3 and proto.input[3]):
        return None  # negative pads crop, and an axes input pads some axes only: both stay opaque
    if len(proto.input) > 2 and proto.input[2]:
        value = imp.weights.get(proto.input[2])
        if value is None or np.any(tensor_view(value) != 0):
            return None  # only the default zero fill is in the vocabulary
    return attrs


def _normalise_reshape(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    return attrs if attrs["shape"] is not None else None


def _normalise_split(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    axis = _axis(attrs["axis"], rank)
    if axis is None:
        return None
    attrs["axis"] = axis
    if attrs["split"] is None:
        shape = imp._shape(proto.input[0])
        size = shape[axis] if shape is not None else None
        parts = given.get("num_outputs", len(proto.output))
        if not isinstance(size, int) or parts <= 0:
            return None
        chunk = -(-size // parts)
        attrs["split"] = [min(chunk, size - i * chunk) for i in range(parts)]
    if len(attrs["split"]) != len(proto.output):
        return None
    return attrs


def _explicit_pads(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, kernel: list[int]) -> bool:
    """Turn auto_pad into explicit pads; False when the input shape is not known."""
    auto_pad = given.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "NOTSET":
        return True
    spatial = len(kernel)
    if auto_pad == "VALID":
        attrs["pads"] = [0] * (2 * spatial)
        return True
    shape = imp._shape(proto.input[0])
    if shape is None or not all(isinstance(d, int) for d in shape[2:]):
        return False
    begins, ends = [], []
    for i in range(spatial):
        size, stride, dilation = shape[2 + i], attrs["strides"][i], attrs["dilations"][i]
        out = -(-size // stride)
        total = max(0, (out - 1) * stride + (kernel[i] - 1) * dilation + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    attrs["pads"] = begins + ends
    return True


def _normalise_conv(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    weight = imp._shape(proto.input[1])
    if weight is None or not all(isinstance(d, int) for d in weight[2:]):
        return None
    kernel = list(weight[2:])
    if "kernel_shape" in given and list(given["kernel_shape"]) != kernel:
        return None
    return attrs if _explicit_pads(imp, proto, attrs, given, kernel) else None


def _normalise_pool(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    if len(proto.output) > 1 and proto.output[1]:
        return None
    return attrs if _explicit_pads(imp, proto, attrs, given, attrs["kernel_shape"]) else None


def _normalise_batchnorm(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    return None if given.get("training_mode", 0) else attrs


def _normalise_flatten(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict, rank: int | None) -> dict | None:
    axis = attrs["axis"]
    if axis < 0:
        if rank is None:
            return None
        axis += rank
    attrs["axis"] = axis
    return attrs


def _normalise_constant_of_shape(imp: _Importer, proto: onnx.NodeProto, attrs: dict, given: dict,
                                 rank: int | None) -> dict | None:
    """ONNX's one-element ``value`` tensor as a number and its element type (float32 0 by default)."""
    if attrs["shape"] is None or "dtype" in given:
        return None
    tensor = attrs["value"]
    if isinstance(tensor, onnx.TensorProto):
        array = numpy_helper.to_array(tensor)
        if array.size != 1 or array.dtype.kind not in "biuf" or float(array.item()) != array.item():
            return None  # a number a float cannot hold exactly stays opaque
        attrs["value"], attrs["dtype"] = float(array.item()), tensor.data_type
    return attrs


_NORMALISE = {
    "Softmax": _normalise_axis,
    "LayerNormalization": _normalise_axis,
    "RMSNormalization": _normalise_axis,
    "Concat": _normalise_axis,
    "Flatten": _normalise_flatten,
    "Split": _normalise_split,
    "Slice": _normalise_slice,
    "Pad": _normalise_pad,
    "Squeeze": _normalise_axes(False),
    "Unsqueeze": _normalise_axes(True),
    "ReduceMean": _normalise_axes(False),
    "ReduceSum": _normalise_axes(False),
    "ReduceMax": _normalise_axes(False),
    "Gather": _normalise_axis,
    "GatherElements": _normalise_axis,
    "CumSum": _normalise_axis,
    "ConstantOfShape": _normalise_constant_of_shape,
    "Reshape": _normalise_reshape,
    "Conv": _normalise_conv,
    "MaxPool": _normalise_pool,
    "AveragePool": _normalise_pool,
    "BatchNormalization": _normalise_batchnorm,
}
