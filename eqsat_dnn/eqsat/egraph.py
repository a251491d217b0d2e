"""Stage 2: :class:`~eqsat_dnn.ir.graph.Graph` <-> egglog e-graph.

:class:`TensorEGraph` owns one egglog ``EGraph`` loaded with the language
prelude and one model. It converts in both directions:

* :meth:`TensorEGraph.build` puts a Graph in, one ``let`` per tensor, with the
  shape and dtype of every tensor set from ONNX shape inference;
* :meth:`TensorEGraph.snapshot` reads the (saturated) e-graph out as a plain
  :class:`~eqsat_dnn.extract.base.EGraph` with a cost on every e-node;
* :meth:`TensorEGraph.program` turns an extractor's choices back into a Graph.

Commands are fed to egglog one at a time: egglog's cost per batch grows
super-linearly with batch size, while one command costs a fraction of a ms.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import onnx
from egglog import bindings

from eqsat_dnn.cost import CostModel
from eqsat_dnn.extract.base import EGraph, ENode, Extraction
from eqsat_dnn.io.protos import is_stub, tensor_view
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.ir.language import LEAVES, OPAQUE, OPS, Target, Unknown, lit
from eqsat_dnn.ir.prelude import dims_prelude, prelude

_TENSOR_SORTS = {"T", "TL"}


def split_forms(text: str) -> Iterator[tuple[str, str, int]]:
    """Top-level s-expressions of egglog source, each with the comment lines just above it
    and its 1-based starting line."""
    depth = 0
    start = 0
    line = 1
    start_line = 1
    comment: list[str] = []
    pending_comment: list[str] = []
    i = 0
    in_string = False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == ";":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            if depth == 0:
                pending_comment.append(text[i:end].lstrip(";").strip())
            i = end
            continue
        elif ch == "(":
            if depth == 0:
                start, start_line = i, line
                comment, pending_comment = pending_comment, []
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                yield text[start : i + 1], "\n".join(comment), start_line
            elif depth < 0:
                raise ValueError(f"line {line}: unbalanced ')'")
        elif ch == "\n":
            line += 1
            if depth == 0 and i + 1 < len(text) and text[i + 1] == "\n":
                pending_comment = []
        elif depth == 0 and not ch.isspace():
            raise ValueError(f"line {line}: text outside any form: {text[i:i + 20]!r}")
        i += 1
    if depth != 0 or in_string:
        raise ValueError("unbalanced parentheses or unterminated string at end of file")


@dataclass
class NodeInfo:
    """What an e-node means, decoded from egglog values."""

    op: str
    children: list[str]
    """Child e-class ids of tensor sorts, in order (a ``TL`` class for Concat/Opaque)."""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Snapshot:
    """The e-graph as extractors see it, plus what the program builder needs."""

    egraph: EGraph
    info: dict[str, NodeInfo]
    types: dict[str, TensorType]
    """e-class id -> shape and dtype, where the analysis knows them."""
    names: dict[str, list[str]]
    """e-class id -> the original value names it holds, in import order."""
    constant: set[str]
    """e-classes computable from weights alone (folded at export)."""


class TensorEGraph:
    """An egglog e-graph holding one model."""

    def __init__(self, graph: Graph, symbolic: bool | None = None) -> None:
        """``symbolic``: whether to load the analysis of symbolic shapes (see
        :func:`~eqsat_dnn.ir.prelude.dims_prelude`); by default, where ``graph`` has a shape
        with a dim that is not a size."""
        self.graph = graph
        self.egraph = bindings.EGraph()
        self.globals: dict[str, str] = {}
        """value name -> egglog global holding its e-class."""
        self.opaque: dict[str, Node] = {}
        self.rulesets: set[str] = {"analysis"}
        self.rule_names: set[str] = set()
        if symbolic is None:
            symbolic = any(t.shape is not None and not all(isinstance(d, int) for d in t.shape)
                           for t in graph.types.values())
        self.symbolic = symbolic
        """Whether the analysis of symbolic shapes is loaded (rules then get their symbolic
        variants, see :mod:`eqsat_dnn.eqsat.variants`)."""
        for form, _, _ in split_forms(prelude() + ("\n" + dims_prelude() if symbolic else "")):
            self.command(form)
        self.build()

    # -- feeding egglog ---------------------------------------------------

    def command(self, text: str) -> list:
        """Run one egglog command (the cheap way: one parse per command)."""
        return self.egraph.run_program(*self.egraph.parse_program(text))

    def build(self) -> None:
        """Load the graph: one global per tensor value, its type set from ONNX."""
        fresh = [0]
        counter = 0

        def bind(value: str, term: str) -> None:
            nonlocal counter
            name = f"$v{counter}"
            counter += 1
            text = f"(let {name} {term})"
            self.globals[value] = name
            t = self.graph.types.get(value)
            if t is not None:
                text += f" (set (dtype {name}) {t.dtype})"
                if t.shape is not None and all(isinstance(d, int) for d in t.shape):
                    text += f" (set (shape {name}) {lit(t.shape, 'IVec')})"
                elif t.shape is not None:
                    dims = []
                    for d in t.shape:
                        if d is None:  # a dim of its own, equal to no other
                            fresh[0] += 1
                            d = Unknown(fresh[0])
                        dims.append(d)
                    text += f" (set (dims {name}) {lit(dims, 'DVec')})"
            self.command(text)  # one parse and run per value (a whole graph's in one program is far slower)

        used = {i for node in self.graph.nodes for i in node.inputs if i} | set(self.graph.outputs)
        for value in self.graph.inputs:
            bind(value, f"(Input {lit(value, 'String')})")
        for value, tensor in self.graph.weights.items():
            if value in used:
                bind(value, f"(Weight {lit(value, 'String')})")
                scalar = _scalar_value(tensor)
                if scalar is not None:
                    self.command(f"(set (scalar {self.globals[value]}) {lit(scalar, 'f64')})")
                halves = _equal_halves(tensor)
                if halves is not None:
                    self.command(_concat_of_halves(self.globals[value], *halves))
                pairs = _equal_pairs(tensor)
                if pairs is not None:
                    self.command(_repeat_of_pairs(self.globals[value], pairs))
                if _lower_triangular(tensor):
                    self.command(_trilu_of_itself(self.globals[value]))
        for index, node in enumerate(self.graph.nodes):
            args = [self._ref(v) for v in node.inputs]
            if node.op == OPAQUE:
                key = str(index)
                self.opaque[key] = node
                implicit = [self._ref(v) for v in node.implicit_inputs if v in self.globals]
                tl = _tlist(args + implicit)
                for k, out in enumerate(node.outputs):
                    if out:
                        bind(out, f"({OPAQUE} {lit(key, 'String')} {tl} {k})")
                continue
            spec = OPS[node.op]
            tensors = [_tlist(args)] if spec.variadic else args
            for k, out in enumerate(node.outputs):
                if not out:
                    continue
                attrs = dict(node.attrs, index=k) if spec.name == "Split" else node.attrs
                values = [lit(attrs[a.name], a.sort) for a in spec.attrs]
                bind(out, f"({spec.name} {' '.join(tensors + values)})")
            if spec.name == "Gather":
                selection = self._gather_as_slice(node)
                if selection is not None:
                    self.command(selection)
        missing = [o for o in self.graph.outputs if o not in self.globals]
        if missing:
            raise ValueError(f"graph outputs {missing[:3]} are not computed by any node")

    def _gather_as_slice(self, node: Node) -> str | None:
        """The union of a Gather by one constant index (an int weight of shape [] or [1]) with the
        slice of that index along its axis (reshaped to the Gather's shape where the index is 0-d and
        drops the axis): the form rules match a selection in (BLOOM picks Q, K and V out of each head
        so). None for any other Gather."""
        data, indices = node.inputs[0], node.inputs[1]
        tensor = self.graph.weights.get(indices)
        source, out = self.graph.types.get(data), self.graph.types.get(node.outputs[0])
        if (tensor is None or list(tensor.dims) not in ([], [1]) or tensor.data_type not in _INDEX_TYPES
                or is_stub(tensor) or source is None or out is None or out.shape is None or source.shape is None
                or not all(isinstance(d, int) for d in (*out.shape, *source.shape))):
            return None
        axis = node.attrs["axis"] % len(source.shape)
        dim = source.shape[axis]
        index = int(tensor_view(tensor).reshape(-1)[0])
        index += dim if index < 0 else 0
        if not 0 <= index < dim:
            return None
        part = (f"(Slice {self.globals[data]} {lit([index], 'IVec')} {lit([index + 1], 'IVec')} "
                f"{lit([axis], 'IVec')} {lit([1], 'IVec')})")
        if not tensor.dims:
            part = f"(Reshape {part} {lit(list(out.shape), 'IVec')} 0)"
        return f"(union {self.globals[node.outputs[0]]} {part})"

    def _ref(self, value: str) -> str:
        if not value:
            return "(Absent)"
        if value not in self.globals:
            raise ValueError(f"value {value!r} is used before it is defined")
        return self.globals[value]

    def roots(self) -> list[str]:
        return [self.globals[o] for o in self.graph.outputs]

    # -- reading it back ----------------------------------------------------

    def snapshot(self, cost_model: CostModel | None = None, target: Target = Target.ONNXRUNTIME) -> Snapshot:
        """Read the e-graph out, each e-node priced by ``cost_model`` (zero when ``None``).

        E-nodes of ops ``target`` does not run are left out, with the e-nodes only they feed,
        except where the program needs them (an input model's own onnxruntime kernel that no
        rule decomposes)."""
        functions = self.egraph.freeze().functions  # each access of .functions rebuilds every table
        eg = self.egraph
        constructors = {name: sig for name, sig in _constructor_signatures().items() if name in functions}
        nodes: dict[str, Any] = {}
        info: dict[str, NodeInfo] = {}
        rows: list[tuple[str, str, list[str], dict[str, Any]]] = []
        for name, sorts in constructors.items():
            spec = OPS.get(name)
            attr_names = [a.name for a in spec.attrs] if spec else []
            for i, row in enumerate(functions[name].rows):
                if row.subsumed:
                    continue
                out_sort = "TL" if name in ("TNil", "TCons") else "T"
                cls = _class_id(out_sort, row.output)
                children: list[str] = []
                attrs: dict[str, Any] = {}
                prim_index = 0
                for value, sort in zip(row.inputs, sorts):
                    if sort in _TENSOR_SORTS:
                        children.append(_class_id(sort, value))
                        continue
                    decoded = _decode(eg, value, sort)
                    if spec is not None:
                        attrs[attr_names[prim_index]] = decoded
                    else:
                        attrs[f"arg{prim_index}"] = decoded
                    prim_index += 1
                node_id = f"{name}-{i}"
                rows.append((node_id, cls, children, attrs))
                info[node_id] = NodeInfo(name, children, attrs)

        types = self._class_types(functions)
        names: dict[str, list[str]] = {}
        class_of_global = {
            fname: _class_id("T", fn.rows[0].output)
            for fname, fn in functions.items()
            if fn.is_let_binding and fn.rows
        }
        for value, global_name in self.globals.items():
            names.setdefault(class_of_global[global_name], []).append(value)

        constant = _constant_classes(rows, info, self.opaque)
        first_of = {cls: node_id for node_id, cls, _, _ in reversed(rows)}

        for node_id, cls, children, attrs in rows:
            node_info = info[node_id]
            if node_info.op in ("TNil", "TCons", "Absent", "Input", "Weight") or cost_model is None:
                cost = 0.0
            elif all(c in constant for c in children) and _folds(node_info, self.opaque):
                cost = 0.0  # evaluated once at export
            else:
                inputs = [types.get(c) for c in _flat_children(node_info, info, first_of)]
                if node_info.op == OPAQUE:
                    node = self.opaque[node_info.attrs["arg0"]]
                    outputs = len(node.outputs)
                else:
                    node = Node(node_info.op, [], [], node_info.attrs)
                    outputs = len(node_info.attrs["split"]) if node_info.op == "Split" else 1
                # a multi-output node is one kernel: each output e-node carries its share
                cost = cost_model.node_cost(node, inputs, types.get(cls)) / outputs
            nodes[node_id] = ENode(node_info.op, tuple(children), cls, cost)
        roots = [class_of_global[g] for g in self.roots()]
        _leave_out_foreign(nodes, target, roots)
        return Snapshot(EGraph(nodes=nodes, roots=roots), info, types, names, constant)

    def _class_types(self, functions: dict) -> dict[str, TensorType]:
        eg = self.egraph
        dtypes = {
            _class_id("T", row.inputs[0]): eg.value_to_i64(row.output)
            for row in functions["dtype"].rows
        }
        dims: dict[str, int | str | None] = {}
        for constructor, decode in (("Lit", eg.value_to_i64), ("Sym", eg.value_to_string), ("Unknown", None)):
            for row in functions[constructor].rows if constructor in functions else ():
                dims[_class_id("Dim", row.output)] = decode(row.inputs[0]) if decode else None
        shapes: dict[str, tuple] = {
            _class_id("T", row.inputs[0]): tuple(dims.get(_class_id("Dim", v)) for v in eg.value_to_vec(row.output))
            for row in functions["dims"].rows
        }
        # a static shape wins over the symbolic form of the same class (which it was lowered from)
        shapes.update({
            _class_id("T", row.inputs[0]): tuple(eg.value_to_i64(v) for v in eg.value_to_vec(row.output))
            for row in functions["shape"].rows
        })
        return {cls: TensorType(dtypes.get(cls, 0), shapes.get(cls)) for cls in set(dtypes) | set(shapes)}

    def input_choices(self, snapshot: Snapshot) -> dict[str, str]:
        """The input program, as one e-node per e-class of ``snapshot``: a starting incumbent for
        extraction (any node of a class computes its value; taking, per class, the node of the
        first original node that computes it keeps the program acyclic). Where it cannot be found
        whole the choices are incomplete, and extractors ignore them (``known_program``)."""
        class_of = {value: cls for cls, values in snapshot.names.items() for value in values}
        classes, info = snapshot.egraph.classes, snapshot.info
        absent = next((snapshot.egraph.nodes[n].eclass for n in info if info[n].op == "Absent"), None)
        choices: dict[str, str] = {}

        def pick(cls: str, op: str, children: list[str] | None = None, name: str | None = None) -> str | None:
            if cls in choices:
                return choices[cls]
            for node_id in classes.get(cls, []):
                node = info[node_id]
                if node.op == op and (children is None or node.children == children) and (
                        name is None or node.attrs.get("arg0") == name):
                    choices[cls] = node_id
                    return node_id
            return None

        def pick_list(cls: str, items: list[str]) -> None:
            while True:
                candidates = [n for n in classes.get(cls, []) if info[n].op in ("TNil", "TCons")]
                fitting = [n for n in candidates if (info[n].op == "TNil") == (not items)
                           and (not items or info[n].children[0] == items[0])]
                chosen = choices.setdefault(cls, (fitting or candidates or [None])[0])
                if chosen is None or info[chosen].op == "TNil":
                    return
                cls, items = info[chosen].children[1], items[1:]

        for value in self.graph.inputs:
            if value in class_of:
                pick(class_of[value], "Input", name=value)
        for value in self.graph.weights:
            if value in class_of:
                pick(class_of[value], "Weight", name=value)
        for node in self.graph.nodes:
            inputs = [class_of.get(i) if i else absent for i in node.inputs]
            for out in node.outputs:
                cls = class_of.get(out)
                if not out or cls is None or cls in choices:
                    continue
                variadic = node.op == OPAQUE or OPS[node.op].variadic
                chosen = pick(cls, node.op, None if variadic else inputs)
                if chosen is not None and variadic:
                    pick_list(info[chosen].children[0], inputs)
        return choices

    def program(self, snapshot: Snapshot, extraction: Extraction) -> Graph:
        """The Graph that ``extraction`` chose, named after the original where possible."""
        return _ProgramBuilder(self, snapshot, extraction.choices).build()


def _constructor_signatures() -> dict[str, list[str]]:
    sigs: dict[str, list[str]] = {"TNil": [], "TCons": ["T", "TL"], OPAQUE: ["String", "TL", "i64"]}
    sigs.update(LEAVES)
    for spec in OPS.values():
        sigs[spec.name] = spec.signature()
    return sigs


_VALUE_RE = re.compile(r"Value\((\d+)\)")


def _class_id(sort: str, value: Any) -> str:
    match = _VALUE_RE.fullmatch(str(value))
    return f"{sort}{match.group(1) if match else str(value)}"


def _decode(eg: bindings.EGraph, value: Any, sort: str) -> Any:
    if sort == "i64":
        return eg.value_to_i64(value)
    if sort == "f64":
        return eg.value_to_f64(value)
    if sort == "String":
        return eg.value_to_string(value)
    if sort == "IVec":
        return [eg.value_to_i64(v) for v in eg.value_to_vec(value)]
    raise ValueError(f"cannot decode sort {sort}")


def _leave_out_foreign(nodes: dict[str, ENode], target: Target, roots: list[str]) -> None:
    """Drop the e-nodes of ops ``target`` does not run, and the e-nodes that only they feed.

    A foreign e-node alone in its e-class goes too where that leaves every root computable (a
    fused kernel a rule built: its consumers have other forms); where it does not, the input
    model's own kernel is needed and such e-nodes stay. One nobody reads stays, harmlessly."""
    foreign = [node_id for node_id, node in nodes.items() if not target.admits(node.op)]
    if not foreign:
        return
    members: dict[str, int] = {}
    for node in nodes.values():
        members[node.eclass] = members.get(node.eclass, 0) + 1
    for node_id in foreign:
        if members[nodes[node_id].eclass] > 1:
            members[nodes[node_id].eclass] -= 1
            del nodes[node_id]
    read = {child for node in nodes.values() for child in node.children}
    alone = {node_id for node_id in foreign if node_id in nodes and nodes[node_id].eclass in read}
    if not alone:
        return
    kept = {node_id: node for node_id, node in nodes.items() if node_id not in alone}
    while True:  # an e-class left empty empties the e-nodes that read it, up to a fixpoint
        present = {node.eclass for node in kept.values()}
        orphans = [node_id for node_id, node in kept.items() if any(c not in present for c in node.children)]
        if not orphans:
            break
        for node_id in orphans:
            del kept[node_id]
    if all(root in present for root in roots):
        nodes.clear()
        nodes.update(kept)


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


_INDEX_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _scalar_value(tensor: onnx.TensorProto) -> float | None:
    """The value of a one-element float weight (the rules read it through ``(scalar t)``)."""
    if tensor.data_type not in _FLOAT_TYPES or math.prod(tensor.dims) != 1 or is_stub(tensor):
        return None
    return float(tensor_view(tensor).reshape(-1)[0])


_HALVES_MAX_ELEMENTS = 1 << 22


def _equal_halves(tensor: onnx.TensorProto) -> tuple[int, int] | None:
    """``(axis, half)`` where a float32 weight of rank 3 or more is its last axis's first half
    twice over, bit for bit (and not one value throughout): a rotary cache ``cos(concat(f, f))``
    that the exporter folded to a constant (it does for small ones). Else None."""
    dims = list(tensor.dims)
    if (tensor.data_type != onnx.TensorProto.FLOAT or len(dims) < 3 or dims[-1] < 2 or dims[-1] % 2
            or math.prod(dims) > _HALVES_MAX_ELEMENTS or is_stub(tensor)):
        return None
    bits = tensor_view(tensor).view("uint32")
    half = dims[-1] // 2
    if not (bits[..., :half] == bits[..., half:]).all() or (bits == bits.flat[0]).all():
        return None
    return len(dims) - 1, half


def _concat_of_halves(name: str, axis: int, half: int) -> str:
    """The union of weight ``name`` with the concat of its first half with itself (see
    :func:`_equal_halves`): the form rules/rotary.egg matches a constant cache in."""
    first = f"(Slice {name} {lit([0], 'IVec')} {lit([half], 'IVec')} {lit([axis], 'IVec')} {lit([1], 'IVec')})"
    return f"(union {name} (Concat (TCons {first} (TCons {first} (TNil))) {axis}))"


def _equal_pairs(tensor: onnx.TensorProto) -> list[int] | None:
    """The dims of a float32 weight of rank 3 or more whose last axis holds each value twice in a
    row, bit for bit (and not one value throughout): an interleaved rotary cache
    ``cos(repeat_interleave(f, 2))`` the exporter folded. Else None."""
    dims = list(tensor.dims)
    if (tensor.data_type != onnx.TensorProto.FLOAT or len(dims) < 3 or dims[-1] < 2 or dims[-1] % 2
            or math.prod(dims) > _HALVES_MAX_ELEMENTS or is_stub(tensor)):
        return None
    bits = tensor_view(tensor).view("uint32")
    if not (bits[..., 0::2] == bits[..., 1::2]).all() or (bits == bits.flat[0]).all():
        return None
    return dims


def _repeat_of_pairs(name: str, dims: list[int]) -> str:
    """The union of weight ``name`` with the repeat-interleave of its even entries (see
    :func:`_equal_pairs`), spelled as torch's export spells it: Unsqueeze, Expand, Reshape."""
    r = len(dims)
    even = (f"(Slice {name} {lit([0], 'IVec')} {lit([dims[-1]], 'IVec')} {lit([r - 1], 'IVec')} "
            f"{lit([2], 'IVec')})")
    pairs = f"(Expand (Unsqueeze {even} {lit([r], 'IVec')}) {lit([1] * r + [2], 'IVec')})"
    return f"(union {name} (Reshape {pairs} {lit(dims, 'IVec')} 0))"


_TRIANGLE_MAX_ELEMENTS = 1 << 26
"""The largest mask :func:`_lower_triangular` reads (a causal mask of 8192 x 8192: 64 MB of bools)."""


def _lower_triangular(tensor: onnx.TensorProto) -> bool:
    """Whether a bool weight of rank 2 or more is false above the diagonal of its last two axes
    (entry ``[..., i, j]`` false for every ``j > i``), and true somewhere: a causal mask the exporter
    folded (with a sliding window, or a padding mask of the export's example, folded in too)."""
    dims = list(tensor.dims)
    if (tensor.data_type != onnx.TensorProto.BOOL or len(dims) < 2 or min(dims[-2:]) < 2
            or math.prod(dims) > _TRIANGLE_MAX_ELEMENTS or is_stub(tensor)):
        return False
    mask = tensor_view(tensor)
    return bool(mask.any()) and not np.triu(mask, 1).any()


def _trilu_of_itself(name: str) -> str:
    """The union of lower-triangular weight ``name`` (see :func:`_lower_triangular`) with its own
    lower triangle, ``Trilu(w, 0, upper=0)``: the form rules/attention.egg reads a causal mask in."""
    return f"(union {name} (Trilu {name} 0 0))"


def _tlist(items: list[str]) -> str:
    text = "(TNil)"
    for item in reversed(items):
        text = f"(TCons {item} {text})"
    return text


def _folds(node: NodeInfo, opaque: dict[str, Node]) -> bool:
    """Whether the e-node computes a constant from constant children (see :attr:`Node.folds`)."""
    if node.op == OPAQUE:
        return opaque[node.attrs["arg0"]].folds
    return node.op not in ("Input", "Absent")


def _constant_classes(rows: list[tuple[str, str, list[str], dict]], info: dict[str, NodeInfo],
                      opaque: dict[str, Node]) -> set[str]:
    """Classes that some node computes from weights alone (a fixpoint over the rows)."""
    constant: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node_id, cls, children, _ in rows:
            if cls in constant:
                continue
            if not _folds(info[node_id], opaque):
                continue
            if all(c in constant for c in children):
                constant.add(cls)
                changed = True
    return constant


def _flat_children(node: NodeInfo, info: dict[str, NodeInfo], first_of: dict[str, str]) -> list[str]:
    """Tensor children with any TL list expanded (through one representative per list class)."""
    flat: list[str] = []
    for child in node.children:
        if not child.startswith("TL"):
            flat.append(child)
            continue
        seen = set()
        while child not in seen:
            seen.add(child)
            element = info[first_of[child]]
            if element.op != "TCons":
                break
            flat.append(element.children[0])
            child = element.children[1]
    return flat


class _ProgramBuilder:
    """Walks the chosen nodes from the roots and emits Graph nodes in topological order."""

    def __init__(self, teg: TensorEGraph, snapshot: Snapshot, choices: dict[str, str]) -> None:
        self.teg = teg
        self.snap = snapshot
        self.choices = choices
        self.graph = teg.graph
        self.value_of: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.nodes: list[Node] = []
        self.groups: dict[tuple, Node] = {}
        self.taken: set[str] = set(self.graph.inputs) | set(self.graph.weights)
        self.original_producer = {out: n for n in self.graph.nodes for out in n.outputs if out}
        self.counter = 0
        self.types = dict(self.graph.types)
        """The original's value types, and the e-graph analysis's for the values the program adds."""
        self.aliased: set[str] = set()
        """Outer values read by subgraphs that an Identity writes under their own names."""

    def build(self) -> Graph:
        for root in self.snap.egraph.roots:
            self._visit(root)
        outputs: list[str] = []
        for name, root in zip(self.graph.outputs, self.snap.egraph.roots):
            value = self.value_of[root]
            if value != name:
                self.nodes.append(Node("Identity", [value], [name], {}, name=self._fresh(f"{name}_identity")))
            outputs.append(name)
        used = {i for n in self.nodes for i in n.inputs if i} | set(outputs)
        used |= {v for n in self.nodes for v in n.implicit_inputs}  # read by subgraphs
        weights = {k: v for k, v in self.graph.weights.items() if k in used}
        return Graph(self.nodes, list(self.graph.inputs), outputs, self.types, weights,
                     self.graph.model)

    def _fresh(self, base: str) -> str:
        name = base
        while name in self.taken:
            self.counter += 1
            name = f"{base}_{self.counter}"
        self.taken.add(name)
        return name

    def _value_name(self, cls: str, op: str) -> str:
        originals = self.snap.names.get(cls, [])
        outputs = [n for n in originals if n in self.graph.outputs]
        for name in outputs + originals:
            if name not in self.taken:
                self.taken.add(name)
                return name
        name = self._fresh(f"{op.lower()}_out")
        known = self.snap.types.get(cls)
        if known is not None and known.shape is not None and known.dtype:
            self.types[name] = known
        return name

    def _node_name(self, value: str, op: str) -> str:
        original = self.original_producer.get(value)
        if original is not None and original.op == op and original.name not in self.taken:
            self.taken.add(original.name)
            return original.name
        return self._fresh(f"{op}_{self.counter}")

    def _visit(self, root: str) -> None:
        # iterative post-order: a node is emitted after all of its children
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            cls, expanded = stack.pop()
            if cls in self.value_of or cls in self.lists:
                continue
            node = self.snap.info[self.choices[cls]]
            if not expanded:
                stack.append((cls, True))
                stack.extend((c, False) for c in reversed(node.children)
                             if c not in self.value_of and c not in self.lists)
                continue
            self._emit(cls, node)

    def _emit(self, cls: str, node: NodeInfo) -> None:
        op = node.op
        if op == "TNil":
            self.lists[cls] = []
            return
        if op == "TCons":
            self.lists[cls] = [self.value_of[node.children[0]]] + self.lists[node.children[1]]
            return
        if op == "Absent":
            self.value_of[cls] = ""
            return
        if op in ("Input", "Weight"):
            self.value_of[cls] = node.attrs["arg0"]
            return
        if op == OPAQUE:
            key, index = node.attrs["arg0"], node.attrs["arg1"]
            original = self.teg.opaque[key]
            inputs = self.lists[node.children[0]][: len(original.inputs)]
            self._name_implicit_inputs(original, self.lists[node.children[0]][len(original.inputs):])
            self._grouped_output(cls, (OPAQUE, key, tuple(inputs)), index, op, lambda outs, name: Node(
                OPAQUE, inputs, outs, {}, name=name, proto=original.proto))
            return
        spec = OPS[op]
        inputs = self.lists[node.children[0]] if spec.variadic else [self.value_of[c] for c in node.children]
        if op == "Split":
            attrs = {k: v for k, v in node.attrs.items() if k != "index"}
            key = ("Split", tuple(inputs), attrs["axis"], tuple(attrs["split"]))
            self._grouped_output(cls, key, node.attrs["index"], op, lambda outs, name: Node(
                "Split", inputs, outs, attrs, name=name))
            return
        value = self._value_name(cls, op)
        self.value_of[cls] = value
        self.nodes.append(Node(op, inputs, [value], dict(node.attrs), name=self._node_name(value, op)))

    def _name_implicit_inputs(self, original: Node, chosen: list[str]) -> None:
        """A subgraph reads outer values by name: where the program computes such a value under
        another name (an Identity removed, a class merged with an input), alias it back."""
        implicit = [v for v in original.implicit_inputs if v in self.teg.globals]
        for name, value in zip(implicit, chosen):
            if value != name and name not in self.aliased:
                self.aliased.add(name)
                self.taken.add(name)
                self.nodes.append(Node("Identity", [value], [name], {}, name=self._fresh(f"{name}_identity")))

    def _grouped_output(self, cls: str, key: tuple, index: int, op: str, make) -> None:
        """Multi-output nodes: every chosen output of the same node joins one Graph node."""
        node = self.groups.get(key)
        if node is None:
            node = make([], "")
            if node.proto is not None:
                outs = ["" for _ in node.proto.output]
            else:
                outs = ["" for _ in node.attrs["split"]]
            node.outputs = outs
            self.nodes.append(node)
            self.groups[key] = node
        value = self._value_name(cls, op)
        self.value_of[cls] = value
        node.outputs[index] = value
        if not node.name:
            node.name = self._node_name(value, op)
