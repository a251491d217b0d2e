"""Weights that stay in their files.

A model read from a file with external data keeps its large weights *there*: import does not
read them, it marks each external tensor with the absolute folder its ``location`` is relative
to (an extra ``external_data`` entry, :data:`BASE_DIR_KEY`), and every stage passes the
``TensorProto`` reference along. Whoever needs the values (constant folding, the importer's
integer constants) gets a read-only memory map of that tensor alone (:func:`tensor_view`).
Folded weights too large to keep in memory are written to a scratch file at once and become
references of the same kind (:func:`spill`).

:func:`write_model` writes a model and its external data without ever holding a weight twice:
referenced weights are copied file to file by the kernel (``copy_file_range``, or 16 MiB reads),
inline ones one tensor at a time. It writes the output's own references (relative ``location``,
no :data:`BASE_DIR_KEY`), which onnx and onnxruntime read as usual; tensors are aligned to
:data:`ALIGN` bytes so that onnxruntime can memory-map them too.

onnx's own writer is not used: ``onnx.save_model(..., save_as_external_data=True)`` converts
the caller's model in place (its tensors stay marked external, pointing at the file just
written), which is what made saving after the check fail.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

BASE_DIR_KEY = "eqsat_dnn.base_dir"
"""The ``external_data`` entry holding the absolute folder a lazily read tensor's ``location``
is relative to. Written by :func:`reference_external_data`, never into a file."""

ALIGN = 4096
"""Offset alignment of tensors in written data files (a page: onnxruntime maps aligned ones)."""

COPY_CHUNK = 16 << 20


def external_entries(tensor: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def is_reference(tensor: onnx.TensorProto) -> bool:
    """A tensor whose data is in a file this process can find (:func:`reference_external_data`)."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(e.key == BASE_DIR_KEY for e in
                                                                        tensor.external_data)


def nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of a tensor's data from its dims and element type; ``None`` for strings and the
    packed types (4-bit ones)."""
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    if tensor.data_type in _PACKED:
        return None
    return math.prod(tensor.dims) * itemsize


_PACKED = {getattr(onnx.TensorProto, name) for name in ("UINT4", "INT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, name)}


def reference_location(tensor: onnx.TensorProto) -> tuple[Path, int, int]:
    """``(file, offset, length)`` of a referenced tensor's data."""
    entries = external_entries(tensor)
    path = Path(entries.get(BASE_DIR_KEY, "")) / entries.get("location", "")
    offset = int(entries.get("offset", 0) or 0)
    length = entries.get("length")
    if length is None or length == "":
        expected = nbytes(tensor)
        length = expected if expected is not None else os.path.getsize(path) - offset
    return path, offset, int(length)


def reference_external_data(model: onnx.ModelProto, base_dir: str | Path, tensors: Iterator | None = None) -> int:
    """Mark every external tensor of ``model`` (initializers, Constant values, subgraphs) as a
    reference into its file under ``base_dir``, after checking that the file holds its bytes;
    reads no data. Returns the bytes referenced. Raises :class:`ValueError` (one line) for a
    location outside ``base_dir``, a missing file, or data shorter than the tensor."""
    base = Path(os.path.abspath(base_dir))
    sizes: dict[Path, int] = {}
    total = 0
    for tensor in tensors if tensors is not None else all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL or not tensor.external_data:
            continue
        entries = external_entries(tensor)
        if BASE_DIR_KEY in entries:
            continue
        location = entries.get("location", "")
        resolved = Path(os.path.normpath(base / location))
        if not location or os.path.isabs(location) or (resolved != base and base not in resolved.parents):
            raise ValueError(f"tensor {tensor.name!r}: external data location {location!r} is not a file "
                             "inside the model's folder")
        if resolved not in sizes:
            try:
                sizes[resolved] = os.path.getsize(resolved)
            except OSError as exc:
                raise ValueError(f"tensor {tensor.name!r}: external data file {location!r}: "
                                 f"{exc.strerror or exc}") from None
        entry = tensor.external_data.add()
        entry.key, entry.value = BASE_DIR_KEY, str(base)
        _, offset, length = reference_location(tensor)
        expected = nbytes(tensor)
        if expected is not None and length != expected:
            raise ValueError(f"tensor {tensor.name!r}: external data length {length} is not its size {expected}")
        if offset < 0 or offset + length > sizes[resolved]:
            raise ValueError(f"tensor {tensor.name!r}: external data {location!r} ends at byte {offset + length}, "
                             f"past the file's end ({sizes[resolved]})")
        total += length
    return total


def read_references(model: onnx.ModelProto) -> None:
    """Read every referenced tensor of ``model`` into its proto, one at a time (the model then
    holds its weights, as ``onnx.load`` gives them)."""
    for tensor in all_tensors(model.graph):
        if is_reference(tensor):
            tensor.CopyFrom(_inline(tensor))


def tensor_view(tensor: onnx.TensorProto) -> np.ndarray:
    """A read-only memory map of a referenced tensor's data (no copy; pages are read when touched)."""
    path, offset, length = reference_location(tensor)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    shape = tuple(tensor.dims)
    if tensor.data_type in _NOT_NUMPY or sys.byteorder != "little":
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        with open(path, "rb") as f:
            f.seek(offset)
            copy.raw_data = f.read(length)
        copy.data_location = onnx.TensorProto.DEFAULT
        del copy.external_data[:]
        return numpy_helper.to_array(copy)
    if length == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


_NOT_NUMPY = {onnx.TensorProto.STRING, onnx.TensorProto.BFLOAT16, *_PACKED,
              *(getattr(onnx.TensorProto, name) for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                                                             "FLOAT8E5M2FNUZ", "FLOAT8E8M0")
                if hasattr(onnx.TensorProto, name))}


def without_initializers(model: onnx.ModelProto, skip_node=None) -> onnx.ModelProto:
    """A copy of ``model`` with no initializers, made without copying any weight (nor the
    nodes ``skip_node`` says to leave out)."""
    copy = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(copy, field.name, value)
    for field, value in model.graph.ListFields():
        if field.name == "node" and skip_node is not None:
            copy.graph.node.extend(n for n in value if not skip_node(n))
        elif field.name != "initializer":
            _copy_field(copy.graph, field.name, value)
    return copy


def _copy_field(target, name: str, value) -> None:
    if isinstance(value, (int, float, str, bytes)):
        setattr(target, name, value)
    elif hasattr(value, "CopyFrom"):
        getattr(target, name).CopyFrom(value)
    else:
        getattr(target, name).extend(value)


def all_tensors(graph: onnx.GraphProto):
    """Every TensorProto stored in ``graph`` and its subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from all_tensors(sub)


# -- reading a model file without its inline weights --------------------------------------------

INLINE_KEY = "eqsat_dnn.inline"
"""Marks a reference that does not make the output use external data: an inline weight left in
its model file, a folded weight in scratch."""

READ_WHOLE_BYTES = 64 << 20
"""Model files up to this size are parsed whole; larger ones by :func:`read_model_file`."""

INLINE_REFERENCE_BYTES = 1 << 16
"""Inline ``raw_data`` of this size or more in a large model file stays in the file, referenced."""


def read_model_file(path: str | Path) -> onnx.ModelProto:
    """Parse the ONNX file ``path`` as ``onnx.load(path, load_external_data=False)`` would, except
    that in a file over :data:`READ_WHOLE_BYTES` every initializer's inline ``raw_data`` of
    :data:`INLINE_REFERENCE_BYTES` or more is left in the file: the tensor becomes a reference to
    its bytes there (:data:`INLINE_KEY`). The file is memory-mapped and walked in protobuf's wire
    format; only the rest of the model is copied and parsed."""
    import mmap

    path = Path(path)
    if os.path.getsize(path) <= READ_WHOLE_BYTES:
        return onnx.load(str(path), load_external_data=False)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        stripped, found = _strip_model(buffer)
    model = onnx.ModelProto()
    model.ParseFromString(bytes(stripped))
    base = str(Path(os.path.abspath(path)).parent)
    for index, (offset, length) in found.items():
        tensor = model.graph.initializer[index]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", path.name), ("offset", str(offset)), ("length", str(length)),
                           (BASE_DIR_KEY, base), (INLINE_KEY, "1")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model


def _read_varint(buffer, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("not a protobuf (varint too long)")


def _fields(buffer, start: int, end: int):
    """``(field, wire type, field start, value start, value end)`` of each field in ``[start, end)``."""
    pos = start
    while pos < end:
        first = pos
        key, pos = _read_varint(buffer, pos)
        wire = key & 7
        if wire == 0:
            _, value_end = _read_varint(buffer, pos)
        elif wire == 1:
            value_end = pos + 8
        elif wire == 2:
            length, pos = _read_varint(buffer, pos)
            value_end = pos + length
        elif wire == 5:
            value_end = pos + 4
        else:
            raise ValueError(f"not a protobuf (wire type {wire})")
        if value_end > end:
            raise ValueError("not a protobuf (truncated)")
        yield key >> 3, wire, first, pos, value_end
        pos = value_end


def _strip_model(buffer) -> tuple[bytearray, dict[int, tuple[int, int]]]:
    out, found, count = bytearray(), {}, [0]
    for field, wire, first, start, end in _fields(buffer, 0, len(buffer)):
        if field == 7 and wire == 2:  # ModelProto.graph
            graph = _strip_graph(buffer, start, end, found, count)
            out += _GRAPH_KEY + _varint(len(graph)) + graph
        else:
            out += buffer[first:end]
    return out, found


def _strip_graph(buffer, start: int, end: int, found: dict, count: list[int]) -> bytearray:
    out = bytearray()
    for field, wire, first, value_start, value_end in _fields(buffer, start, end):
        if field == 5 and wire == 2:  # GraphProto.initializer
            tensor = bytearray()
            for tfield, twire, tfirst, tstart, tend in _fields(buffer, value_start, value_end):
                if tfield == 9 and twire == 2 and tend - tstart >= INLINE_REFERENCE_BYTES:  # raw_data
                    found[count[0]] = (tstart, tend - tstart)
                else:
                    tensor += buffer[tfirst:tend]
            count[0] += 1
            out += _INITIALIZER_KEY + _varint(len(tensor)) + tensor
        else:
            out += buffer[first:value_end]
    return out


# -- scratch: folded weights that go straight to disk -----------------------------------------

SPILL_BYTES = 1 << 20
"""Folded weights of this size or more from a model whose weights are referenced are written to
scratch at once (:func:`spill`) instead of kept in memory."""

_scratch_lock = threading.Lock()
_scratch_dir: Path | None = None


def scratch_dir() -> Path:
    """This process's scratch folder (under ``TMPDIR``), removed at exit."""
    global _scratch_dir
    with _scratch_lock:
        if _scratch_dir is None or not _scratch_dir.is_dir():
            _scratch_dir = Path(tempfile.mkdtemp(prefix="eqsat-dnn-"))
            atexit.register(shutil.rmtree, _scratch_dir, True)
        return _scratch_dir


def spill(array: np.ndarray, name: str) -> onnx.TensorProto:
    """``array`` written to a new scratch file, as a referenced tensor named ``name``; the caller
    may drop the array."""
    array = np.ascontiguousarray(array)
    tensor = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
    directory = scratch_dir()
    handle, location = tempfile.mkstemp(dir=directory, suffix=".data")
    with os.fdopen(handle, "wb") as f:
        f.write(memoryview(array.reshape(-1)).cast("B"))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", os.path.basename(location)), ("offset", "0"), ("length", str(array.nbytes)),
                       (BASE_DIR_KEY, str(directory)), (INLINE_KEY, "1")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


# -- writing ----------------------------------------------------------------------------------

def write_model(model: onnx.ModelProto, path: str | Path, data_path: str | Path | None, location: str,
                size_threshold: int = 1024) -> None:
    """Write ``model`` to ``path``; with ``data_path``, every initializer of more than
    ``size_threshold`` bytes (and every referenced one) goes there, at :data:`ALIGN`-ed offsets,
    recorded under ``location`` (its name relative to ``path``'s folder). ``model`` is not
    changed, and no weight is held in memory twice. Without ``data_path`` referenced weights are
    read inline (a model small enough for one protobuf). A tensor marked external that this
    process cannot find (a shapes-only stub, a relative reference with no folder) raises
    :class:`ValueError`."""

    if data_path is None:
        with open(path, "wb") as f:
            if any(is_reference(t) for t in all_tensors(model.graph)):
                _write_inline(model, f)
            else:  # nothing to read or move: the model as it is
                f.write(model.SerializeToString())
        return
    out = without_initializers(model)
    data = None if data_path is None else open(data_path, "xb")  # the mode open() gives
    try:
        for tensor in model.graph.initializer:
            if data is not None and (is_reference(tensor) or _inline_bytes(tensor) > size_threshold):
                out.graph.initializer.append(_write_data(tensor, data, location))
            else:
                out.graph.initializer.append(_inline(tensor))
    finally:
        if data is not None:
            data.close()
    # tensors outside the initializers (Constant values, subgraphs) that are references: inline
    for tensor in all_tensors(out.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not (
                tensor.external_data and external_entries(tensor).get("location") == location
                and BASE_DIR_KEY not in external_entries(tensor)):
            tensor.CopyFrom(_inline(tensor))
    with open(path, "wb") as f:
        f.write(out.SerializeToString())


def needs_external_data(model: onnx.ModelProto, threshold: int) -> bool:
    """Whether :func:`write_model` should write ``model`` with a data file: its weights are more
    than ``threshold`` bytes, or some were read from a data file (a model keeps its format), or
    one is marked external without data (which then fails there, in one line)."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = external_entries(tensor)
            if BASE_DIR_KEY not in entries or INLINE_KEY not in entries:
                return True
            total += reference_location(tensor)[2]
        else:
            total += _inline_bytes(tensor)
        if total > threshold:
            return True
    return False


def _inline_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 1 << 40
    size = nbytes(tensor)
    return size if size is not None else tensor.ByteSize()


def _inline(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """``tensor`` with its data in the proto (a reference read from its file)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return tensor
    if not is_reference(tensor):
        raise ValueError(f"weight {tensor.name!r} has no data here (it is marked external, with no file "
                         "this process can read)")
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    file, offset, length = reference_location(tensor)
    with open(file, "rb") as f:
        f.seek(offset)
        copy.raw_data = f.read(length)
    copy.data_location = onnx.TensorProto.DEFAULT
    del copy.external_data[:]
    return copy


def _write_data(tensor: onnx.TensorProto, data: BinaryIO, location: str) -> onnx.TensorProto:
    """Append ``tensor``'s data to ``data`` (aligned) and return a reference to it there."""
    start = -(-data.tell() // ALIGN) * ALIGN
    if start > data.tell():
        data.write(b"\0" * (start - data.tell()))
    written = _header(tensor)
    if is_reference(tensor):
        source, offset, length = reference_location(tensor)
        _copy_range(source, offset, length, data)
    elif tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(f"weight {tensor.name!r} has no data here (it is marked external, with no file "
                         "this process can read)")
    else:
        if tensor.HasField("raw_data"):
            length = data.write(tensor.raw_data)  # one tensor's bytes at a time
        else:
            array = numpy_helper.to_array(tensor)
            if array.dtype == object:  # strings have no raw layout: keep them inline
                return tensor
            length = data.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    written.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(start)), ("length", str(length))):
        entry = written.external_data.add()
        entry.key, entry.value = key, value
    return written


def _header(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """``tensor`` without its data: name, type, dims and the rest of its fields."""
    header = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                              doc_string=tensor.doc_string)
    if tensor.HasField("segment"):
        header.segment.CopyFrom(tensor.segment)
    header.metadata_props.extend(tensor.metadata_props)
    return header


def _write_inline(model: onnx.ModelProto, f: BinaryIO) -> None:
    """Serialize ``model`` to ``f`` with every weight inline, a referenced one copied from its file
    into its ``raw_data`` as it is written: the protobuf is written field by field (the graph after
    the model's other fields, which parsers accept), never whole in memory."""
    skeleton = without_initializers(model)
    for tensor in all_tensors(skeleton.graph):  # Constant values, subgraphs: small, read inline
        if is_reference(tensor):
            tensor.CopyFrom(_inline(tensor))
    graph = skeleton.graph.SerializeToString()
    skeleton.ClearField("graph")
    parts: list[tuple[onnx.TensorProto, tuple[Path, int, int] | None, int]] = []
    total = len(graph)
    for tensor in model.graph.initializer:
        if is_reference(tensor):
            tensor, where = _header(tensor), reference_location(tensor)
            size = tensor.ByteSize() + len(_RAW_DATA_KEY) + len(_varint(where[2])) + where[2]
        elif tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"weight {tensor.name!r} has no data here (it is marked external, with no file "
                             "this process can read)")
        else:
            where, size = None, tensor.ByteSize()
        parts.append((tensor, where, size))
        total += len(_INITIALIZER_KEY) + len(_varint(size)) + size
    f.write(skeleton.SerializeToString())
    f.write(_GRAPH_KEY + _varint(total) + graph)
    for tensor, where, size in parts:
        f.write(_INITIALIZER_KEY + _varint(size) + tensor.SerializeToString())
        if where is not None:
            f.write(_RAW_DATA_KEY + _varint(where[2]))
            _copy_range(*where, f)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_GRAPH_KEY = _varint(7 << 3 | 2)  # ModelProto.graph
_INITIALIZER_KEY = _varint(5 << 3 | 2)  # GraphProto.initializer
_RAW_DATA_KEY = _varint(9 << 3 | 2)  # TensorProto.raw_data


def _copy_range(source: Path, offset: int, length: int, data: BinaryIO) -> None:
    """Copy ``length`` bytes at ``offset`` of ``source`` to the end of ``data``, in the kernel where
    it can (no page of it enters this process)."""
    data.flush()
    target = data.tell()
    with open(source, "rb") as src:
        done = 0
        use_kernel = hasattr(os, "copy_file_range")
        while done < length:
            count = min(COPY_CHUNK, length - done)
            moved = 0
            if use_kernel:
                try:
                    moved = os.copy_file_range(src.fileno(), data.fileno(), count, offset + done, target + done)
                except OSError:
                    use_kernel = False
            if not use_kernel:
                chunk = os.pread(src.fileno(), count, offset + done)
                moved = os.pwrite(data.fileno(), chunk, target + done)
            if moved == 0:
                raise ValueError(f"external data file {source.name} ends before byte {offset + length}")
            done += moved
    data.seek(target + length)


__all__ = ["ALIGN", "BASE_DIR_KEY", "INLINE_KEY", "SPILL_BYTES", "needs_external_data", "read_references", "read_model_file", "all_tensors", "is_reference", "reference_external_data",
           "scratch_dir", "spill", "tensor_view", "without_initializers", "write_model"]
