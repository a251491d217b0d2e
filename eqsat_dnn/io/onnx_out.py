"""Stage 5: :class:`~eqsat_dnn.ir.graph.Graph` -> ONNX model, and saving it safely.

Vocabulary nodes are written back in the model's opset flavour (constant
inputs versus attributes), opaque nodes verbatim; an op that needs a newer opset (or onnxruntime's
own operator set) has it declared. Sub-expressions over weights
only are evaluated once here and become new initializers. The result passes
``onnx.checker`` with ``full_check``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from eqsat_dnn.errors import OutputError, first_line
from eqsat_dnn.ir.graph import Dim, Graph, Node, fresh_name
from eqsat_dnn.ir.language import OPAQUE, OPS
from eqsat_dnn.io.external import SPILL_BYTES, is_reference, needs_external_data, spill, write_model
from eqsat_dnn.io.files import check_input_file, check_output_path, write_atomic
from eqsat_dnn.io.onnx_in import input_files
from eqsat_dnn.io.protos import light_copy, tensor_view, without_initializers
from eqsat_dnn.runtime.sessions import create_session

EXTERNAL_DATA_THRESHOLD = 1 << 30
"""Models whose weights exceed this are saved with external data (protobuf stops at 2 GB)."""


def to_onnx(graph: Graph, fold_constants: bool = True,
            computed: Callable[[tuple[Dim, ...] | None], bool] | None = None) -> onnx.ModelProto:
    """Write ``graph`` as a checked ONNX model; ``computed``: see :func:`fold_weight_expressions`."""
    if fold_constants:
        graph = fold_weight_expressions(graph, computed=computed)
    model = without_initializers(graph.model)
    # only vocabulary nodes need it, and a model without a default-domain opset has none
    opset = graph.opset if any(n.op != OPAQUE for n in graph.nodes) else 0
    taken = {o for n in graph.nodes for o in n.outputs} | set(graph.weights) | set(graph.inputs)
    extra: list[onnx.TensorProto] = []
    protos = []
    for node in graph.nodes:
        protos.append(_node_proto(node, opset, taken, extra))
    model.graph.node.extend(protos)
    used = {i for p in protos for i in p.input if i} | set(graph.outputs)
    used |= {v for n in graph.nodes for v in n.implicit_inputs}  # read by subgraphs
    model.graph.initializer.extend(t for name, t in graph.weights.items() if name in used)
    model.graph.initializer.extend(extra)
    # the defaults of inputs that have one (kept in the skeleton by import): the interface is kept
    inputs = set(graph.inputs)
    model.graph.initializer.extend(t for t in graph.model.graph.initializer if t.name in inputs)
    return _declare_opsets(model, [OPS[n.op] for n in graph.nodes if n.op != OPAQUE], opset)


def _declare_opsets(model: onnx.ModelProto, specs: list, opset: int) -> onnx.ModelProto:
    """Declare each operator set the chosen ops come from, raising the standard one where an op
    needs a newer version than the model's.

    The rest of the model moves up with onnx's version converter; the ops that need the new
    version are out of its sight meanwhile (the converter has no adapter for an op that does not
    exist yet in the version it starts from)."""
    imports = {imp.domain: imp for imp in model.opset_import}
    for spec in specs:
        if spec.domain and spec.domain not in imports:
            imports[spec.domain] = model.opset_import.add(domain=spec.domain, version=spec.since)
        elif spec.domain:
            imports[spec.domain].version = max(imports[spec.domain].version, spec.since)
    needed = max((spec.since for spec in specs if not spec.domain), default=0)
    if not opset or needed <= opset:
        return model
    hidden = {spec.name for spec in specs if not spec.domain and spec.since > opset}
    for node in model.graph.node:
        if not node.domain and node.op_type in hidden:
            node.domain = _HELD
    model.opset_import.add(domain=_HELD, version=1)
    try:
        raised = version_converter.convert_version(model, needed)
    except Exception as exc:  # the converter raises bare RuntimeErrors and ValueErrors alike
        raise OpsetError(f"cannot raise the model's opset from {opset} to {needed} for "
                         f"{', '.join(sorted(hidden))}: {first_line(exc)}") from None
    for node in raised.graph.node:
        if node.domain == _HELD:
            node.domain = ""
    kept = [imp for imp in raised.opset_import if imp.domain != _HELD]
    del raised.opset_import[:]
    raised.opset_import.extend(kept)
    return raised


class OpsetError(ValueError):
    """The model cannot move to the opset a chosen op needs."""


_HELD = "eqsat_dnn.held"
"""A private operator set that hides ops from the version converter while it raises the rest."""


def _node_proto(node: Node, opset: int, taken: set[str], extra: list[onnx.TensorProto]) -> onnx.NodeProto:
    if node.op == OPAQUE:
        proto = onnx.NodeProto()
        proto.CopyFrom(node.proto)
        del proto.input[:]
        proto.input.extend(node.inputs)
        for k, out in enumerate(node.outputs):
            if out:
                proto.output[k] = out
            elif proto.output[k]:
                proto.output[k] = fresh_name(f"{proto.name or proto.op_type}_unused{k}", taken)
        return proto
    spec = OPS[node.op]
    inputs = list(node.inputs)
    while inputs and not inputs[-1] and not spec.variadic:
        inputs.pop()
    attributes = {}
    for attr in spec.attrs:
        if attr.name == "index":
            continue
        value = node.attrs.get(attr.name)
        if attr.from_input is not None and opset >= attr.input_since:
            tensor_name = fresh_name(f"{node.name or node.op}_{attr.name}", taken)
            extra.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), tensor_name))
            while len(inputs) < attr.from_input:
                inputs.append("")
            inputs.append(tensor_name)
            continue
        if value is None or _is_default(value, attr.default):
            continue
        attributes[attr.name] = value
    if node.op in _WRITE:
        attributes = _WRITE[node.op](node.attrs)
    outputs = [o or fresh_name(f"{node.name or node.op}_unused{k}", taken) for k, o in enumerate(node.outputs)]
    proto = helper.make_node(node.written_op, inputs, outputs, name=node.name or None, domain=spec.domain or None,
                             **{k: v for k, v in attributes.items() if v != []})
    # make_node cannot tell the type of an empty list; the spec can
    proto.attribute.extend(helper.make_attribute(k, [], attr_type=onnx.AttributeProto.INTS)
                           for k, v in attributes.items() if v == [])
    return proto


def _constant_of_shape_attrs(attrs: dict) -> dict:
    """ConstantOfShape's value and element type, as ONNX's one-element ``value`` tensor."""
    dtype = helper.tensor_dtype_to_np_dtype(int(attrs["dtype"]))
    return {"value": numpy_helper.from_array(np.array([attrs["value"]], dtype=dtype), "value")}


_WRITE = {"ConstantOfShape": _constant_of_shape_attrs}
"""Ops whose ONNX attributes are not their e-graph attributes one for one: their writers (the
inverse of :mod:`eqsat_dnn.io.onnx_in`'s normalisers)."""


def _is_default(value, default) -> bool:
    if default == "ones":
        return all(v == 1 for v in value)
    if default == "zeros":
        return all(v == 0 for v in value)
    return value == default


def fold_weight_expressions(graph: Graph, values: bool = True,
                            computed: Callable[[tuple[Dim, ...] | None], bool] | None = None) -> Graph:
    """Evaluate every vocabulary node whose inputs are all constant; its outputs become weights.

    Constant opaque nodes, and nodes that read no tensor at all (ConstantOfShape), are evaluated
    where a folded node reads them and otherwise left as they are: folding them alone would only
    trade a small node for a large initializer. ``values=False`` evaluates nothing: the outputs become data-less stubs
    of their inferred types (the same nodes fold; where a type is unknown, none does). A node
    with an output whose shape ``computed`` holds must stay computed (a probe-sized one,
    :meth:`~eqsat_dnn.io.probes.Probes.in_shape`), or whose type is unknown then, stays."""
    weights = dict(graph.weights)
    foldable: list[Node] = []
    kept: list[Node] = []
    known = set(weights)
    for node in graph.nodes:
        stays = computed is not None and any(
            o and (o not in graph.types or computed(graph.types[o].shape)) for o in node.outputs)
        if node.folds and node.op != "Identity" and not stays and all((not i) or i in known for i in node.inputs):
            foldable.append(node)
            known.update(o for o in node.outputs if o)
        else:
            kept.append(node)
    if not foldable:
        return graph
    folded = {id(n) for n in foldable}
    while True:  # an opaque constant read by a node that stays, stays itself
        staying_nodes = [n for n in graph.nodes if id(n) not in folded]
        needed = ({i for n in staying_nodes for i in n.inputs + n.implicit_inputs} | set(graph.outputs)) - set(weights)
        staying = {id(n) for n in foldable if id(n) in folded and (n.op == OPAQUE or not any(n.inputs))
                   and any(o in needed for o in n.outputs)}
        if not staying:
            break
        folded -= staying
    kept = [n for n in graph.nodes if id(n) not in folded]
    wanted = [o for n in foldable if n.op != OPAQUE and id(n) in folded for o in n.outputs if o and o in needed]
    if not wanted:
        return Graph(kept, graph.inputs, graph.outputs, graph.types, weights, graph.model)
    if not values:
        types = [graph.types.get(name) for name in wanted]
        if any(t is None or not t.is_static for t in types):
            return graph
        for name, t in zip(wanted, types):
            weights[name] = onnx.TensorProto(name=name, data_type=t.dtype, dims=list(t.shape),
                                             data_location=onnx.TensorProto.EXTERNAL)
        return Graph(kept, graph.inputs, graph.outputs, graph.types, weights, graph.model)
    referenced = any(is_reference(w) for w in graph.weights.values())
    if not referenced:
        arrays = _evaluate(graph, foldable, wanted)
        if arrays is None:
            return graph  # the runtime cannot evaluate it: keep the nodes, still correct
        for name, array in zip(wanted, arrays):
            weights[name] = numpy_helper.from_array(np.asarray(array), name)
        return Graph(kept, graph.inputs, graph.outputs, graph.types, weights, graph.model)
    # a model whose weights stay in files: one folded weight at a time, from the nodes it needs
    # (its inputs memory-mapped), and a large one written to scratch at once
    producers = {o: n for n in foldable for o in n.outputs if o}
    for name in wanted:
        stack, seen = [name], set()
        while stack:
            node = producers.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend(i for i in node.inputs if i)
        order = [n for n in foldable if id(n) in seen]
        arrays = _evaluate(graph, order, [name])
        if arrays is None:
            return graph
        array = np.asarray(arrays[0])
        del arrays
        weights[name] = spill(array, name) if array.nbytes >= SPILL_BYTES else numpy_helper.from_array(array, name)
        del array
    return Graph(kept, graph.inputs, graph.outputs, graph.types, weights, graph.model)


def _evaluate(graph: Graph, nodes: list[Node], wanted: list[str]) -> list[np.ndarray] | None:
    read = {i for n in nodes for i in n.inputs if i in graph.weights}
    # the weights travel as fed inputs, not initializers: serializing them into the model and
    # parsing them back is most of the time on models with large weights (NasNet-A: 159 MB)
    sub = Graph(nodes, [], wanted, graph.types, {}, graph.model)
    model = to_onnx(sub, fold_constants=False)
    del model.graph.input[:]
    del model.graph.output[:]
    feeds = {name: tensor_view(graph.weights[name]) for name in sorted(read)}
    model.graph.input.extend(helper.make_tensor_value_info(name, graph.weights[name].data_type,
                                                           list(graph.weights[name].dims)) for name in feeds)
    model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in wanted)
    try:
        # a failure here only keeps the nodes: onnxruntime must not log a line of its own on stderr
        session = create_session(model, optimize=False, log_severity=4, lean=True)
        return session.run(wanted, feeds)
    except Exception:
        return None


def check_model(model: onnx.ModelProto) -> None:
    """onnx's full check (with shape inference), on a light copy: weights are checked
    for name, type and shape, which is all the graph can get wrong about them."""
    onnx.checker.check_model(light_copy(model), full_check=True)


def save_model(model: onnx.ModelProto, path: str | Path, source: str | Path | None = None) -> None:
    """Write ``model`` atomically: to a temporary file beside ``path``, then renamed
    (:func:`eqsat_dnn.io.files.write_atomic`; the file gets the mode ``open()`` would give it).

    Large models go to external data (one ``<name>.data`` file beside it).
    Refuses to overwrite ``source``.
    """
    ensure_writable(path, source)
    path = Path(path)
    data_name = path.name + ".data"

    def write(tmp: Path) -> None:
        # weights over the threshold, or read from external data, go to external data again;
        # written by eqsat_dnn.io.external, which neither changes ``model`` nor copies it whole
        external = needs_external_data(model, EXTERNAL_DATA_THRESHOLD)
        try:
            write_model(model, tmp, tmp.with_name(tmp.name + ".data") if external else None, data_name)
        except ValueError as exc:
            raise OutputError(f"{path}: cannot write the model: {exc}") from None

    write_atomic(path, write, companions=[".data"])


def data_path(path: str | Path) -> Path:
    """Where :func:`save_model` puts the external data of a model saved at ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def ensure_writable(path: str | Path, source: str | Path | None = None) -> None:
    """Fail early, before any work, if ``path`` cannot receive the output.

    Neither the output nor its data file (:func:`data_path`) may be a file that ``source``
    owns: the model file itself or any external-data file its tensors read from.
    """
    path = Path(path)
    check_output_path(path)  # a name too long, a FIFO or a device: before anything stats it further
    if isinstance(source, (str, Path)) and _is_regular(Path(source)):  # a FIFO is not opened here
        owned = input_files(source)
        for target, what in ((path, "output path"), (data_path(path), "output's data file")):
            if any(_same_file(target, f) for f in owned):
                kind = "the input model" if _same_file(target, Path(source)) else "a data file the input reads"
                raise OutputError(f"{path}: the {what} {target.name} is {kind}; choose another file")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputError(f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: directory {directory} is not writable")
    if isinstance(source, (str, Path)):
        check_input_file(source)  # missing, a directory, a FIFO, a device...


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names: the same path once links are resolved, or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return a.resolve() == b.resolve()
