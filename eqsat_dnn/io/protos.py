"""Cheap views of large ONNX models.

Serialising a model with hundreds of MB of weights costs seconds, and onnx's
checker and shape inference both serialise. They only need each weight's name,
type and shape, so they run on a *light* copy where every large initializer is
replaced by a graph input of the same type.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eqsat_dnn.io.external import is_reference, tensor_view as _mapped, without_initializers

SMALL_TENSOR_BYTES = 4096
"""Initializers up to this size stay in light copies (shape inference reads small int tensors)."""


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each large initializer turned into a typed graph input."""
    # a large Constant's value likewise: the graph reads a typed input of that name instead
    large = [n for n in model.graph.node if _large_constant(n)]
    light = without_initializers(model, skip_node=_large_constant)
    for node in large:
        value = node.attribute[0].t
        light.graph.input.append(helper.make_tensor_value_info(node.output[0], value.data_type, list(value.dims)))
    listed = {i.name for i in model.graph.input}
    for tensor in model.graph.initializer:
        if _tensor_bytes(tensor) <= SMALL_TENSOR_BYTES:
            light.graph.initializer.append(tensor)
        elif tensor.name not in listed:  # an input's default: the input is there already
            light.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return light


def _large_constant(node: onnx.NodeProto) -> bool:
    return (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1
            and node.attribute[0].name == "value" and len(node.output) == 1
            and _tensor_bytes(node.attribute[0].t) > SMALL_TENSOR_BYTES)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    """A tensor's data size from its dims and element type: ``ByteSize()`` serialises the
    tensor to count it (a transient copy of every weight measured)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 1 << 40
    count = 1
    for d in tensor.dims:
        count *= d
    if tensor.data_type == onnx.TensorProto.STRING:
        return sum(len(v) for v in tensor.string_data)
    try:
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # an element type numpy has no dtype for
        return count * 8


def shapes_only(model: onnx.ModelProto, base_dir: str | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose weights are stubs: name, type and dims, no data, marked external so
    light copies type them as inputs (reading one fails loudly); a large Constant becomes a stub
    initializer of its output's name (import reads Constants as weights anyway). Small inline
    initializers are copied, and small external integer ones read from ``base_dir`` (shape
    constants must keep their values); no float weight is read from external data, no large one
    copied."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    copy = without_initializers(model, skip_node=_large_constant)
    for node in model.graph.node:
        if _large_constant(node):
            value = node.attribute[0].t
            copy.graph.initializer.add(name=node.output[0], data_type=value.data_type, dims=value.dims,
                                       data_location=onnx.TensorProto.EXTERNAL)
    for tensor in model.graph.initializer:
        external = uses_external_data(tensor)
        if external:
            small = (tensor.data_type in _INTEGERS and base_dir is not None and int(np.prod(tensor.dims))
                     * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize <= SMALL_TENSOR_BYTES)
        else:
            small = _tensor_bytes(tensor) <= SMALL_TENSOR_BYTES
        if small:
            kept = copy.graph.initializer.add()
            kept.CopyFrom(tensor)
            if external:
                load_external_data_for_tensor(kept, base_dir)
                kept.data_location = onnx.TensorProto.DEFAULT
                del kept.external_data[:]
        else:
            copy.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                       data_location=onnx.TensorProto.EXTERNAL)
    return copy


_INTEGERS = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
             onnx.TensorProto.UINT64, onnx.TensorProto.UINT32, onnx.TensorProto.UINT16, onnx.TensorProto.UINT8,
             onnx.TensorProto.BOOL}


def is_stub(tensor: onnx.TensorProto) -> bool:
    """A weight :func:`shapes_only` left without data."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.external_data


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of initializer data, without serialising."""
    return sum(_tensor_bytes(t) for t in model.graph.initializer)


_NOT_PLAIN = {onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16, onnx.TensorProto.UNDEFINED,
              *(getattr(onnx.TensorProto, name) for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                                                             "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1")
                if hasattr(onnx.TensorProto, name))}
"""Element types whose raw bytes are not numpy's own layout for their dtype."""


def tensor_view(tensor: onnx.TensorProto) -> np.ndarray:
    """A weight's values: a read-only view of its raw bytes where it has them (no copy), a
    read-only memory map where they are in a file (:mod:`eqsat_dnn.io.external`), else
    ``numpy_helper.to_array``."""
    if is_reference(tensor):  # data in a file: a memory map of this tensor alone
        return _mapped(tensor)
    if (tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.HasField("raw_data")
            and sys.byteorder == "little" and tensor.data_type not in _NOT_PLAIN):
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(tuple(tensor.dims))
    return numpy_helper.to_array(tensor)
