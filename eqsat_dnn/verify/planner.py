"""Reading the e-graph after one run of a rule: which terms it claims equal, and programs
computing each claimed term one rewrite step away from the original program."""

from __future__ import annotations

from eqsat_dnn.eqsat.egraph import Snapshot
from eqsat_dnn.extract.base import EGraph, ENode
from eqsat_dnn.extract.greedy import greedy_choices
from eqsat_dnn.ir.graph import Graph, Node
from eqsat_dnn.ir.language import OPS, lit
from eqsat_dnn.verify.instances import Instance, skeleton
from eqsat_dnn.verify.oracle import Check
from eqsat_dnn.verify.patterns import freeze


class Planner:
    """Reads the e-graph after one run: which terms must be equal, and programs computing them."""

    def __init__(self, snapshot: Snapshot, inst: Instance) -> None:
        self.snap = snapshot
        self.inst = inst
        self.note = ""
        self.nodes = snapshot.egraph.nodes
        self.info = snapshot.info
        self.classes = snapshot.egraph.classes
        self.value_class = {v: cls for cls, names in snapshot.names.items() for v in names}
        # pattern roots first: a class's reference is the left-hand side where it holds one
        order = [o for n in reversed(inst.graph.nodes) for o in n.outputs if o] + list(inst.graph.inputs) + list(
            inst.weights)
        self.originals: dict[str, list[str]] = {}
        for v in order:
            if v in self.value_class:
                self.originals.setdefault(self.value_class[v], []).append(v)
        self.original_sigs = self._original_signatures()
        self.choices = self._resolver_choices()
        self.extra: list[Node] = []
        self.emitted: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.rendered: dict[str, str] = {v: inst.terms.get(v, v) for v in order}
        self.counter = 0

    def _sig(self, node_id: str) -> tuple:
        info = self.info[node_id]
        return (info.op, tuple(info.children), freeze(info.attrs))

    def _original_signatures(self) -> set[tuple]:
        sigs: set[tuple] = set()
        for v in self.inst.graph.inputs:
            sigs.add(("Input", (), freeze({"arg0": v})))
        for v in self.inst.weights:
            sigs.add(("Weight", (), freeze({"arg0": v})))
        tl_index: dict[tuple, str] = {}
        nil = None
        for node_id, info in self.info.items():
            if info.op == "TCons":
                tl_index[tuple(info.children)] = self.nodes[node_id].eclass
            elif info.op == "TNil":
                nil = self.nodes[node_id].eclass
        for node in self.inst.graph.nodes:
            spec = OPS[node.op]
            if spec.variadic:
                cls = nil
                for v in reversed(node.inputs):
                    cls = tl_index.get((self.value_class.get(v), cls)) if cls is not None else None
                children = (cls,)
            else:
                children = tuple(self.value_class.get(v) if v else self._absent_class() for v in node.inputs)
            for k, out in enumerate(node.outputs):
                if out:
                    attrs = dict(node.attrs, index=k) if node.op == "Split" else node.attrs
                    sigs.add((node.op, children, freeze(attrs)))
        return sigs

    def _absent_class(self) -> str | None:
        for node_id, info in self.info.items():
            if info.op == "Absent":
                return self.nodes[node_id].eclass
        return None

    def _resolver_choices(self) -> dict[str, str]:
        """Least-new-nodes choice for every class without an original value (acyclic)."""
        nodes: dict[str, ENode] = {}
        for cls in self.originals:
            nodes[f"orig:{cls}"] = ENode("orig", (), cls, 0.0)
        for node_id, node in self.nodes.items():
            if node.eclass in self.originals:
                continue
            cost = 0.0 if node.op in ("TNil", "TCons", "Absent") else 1.0
            nodes[node_id] = ENode(node.op, node.children, node.eclass, cost)
        return greedy_choices(EGraph(nodes=nodes, roots=[]))

    # -- what to compare ------------------------------------------------------------

    def checks(self) -> list[Check]:
        checks: list[Check] = []
        for cls, members in self.classes.items():
            if not cls.startswith("T") or cls.startswith("TL"):
                continue
            origs = self.originals.get(cls, [])
            others = [n for n in members if self._sig(n) not in self.original_sigs]
            try:
                if origs:
                    reference = origs[0]
                    checks += [Check(reference, v, self.rendered[v], self.rendered[reference]) for v in origs[1:]]
                    checks += [self._one_step(reference, n) for n in others]
                elif len(members) > 1:
                    chosen = self.choices.get(cls)
                    if chosen is None:
                        continue
                    reference = self._resolve(cls)
                    checks += [self._one_step(reference, n) for n in members if n != chosen]
            except _Unresolvable as exc:
                self.note = f"cannot build a term for class {exc} (cyclic only)"
        return checks

    def _one_step(self, reference: str, node_id: str) -> Check:
        value, text = self._emit(node_id)
        return Check(reference, value, text, self.rendered.get(reference, reference))

    # -- building the programs ----------------------------------------------------

    def _resolve(self, cls: str) -> str:
        """A value computing class ``cls`` the original way where possible."""
        if cls in self.originals:
            return self.originals[cls][0]
        if cls in self.emitted:
            return self.emitted[cls]
        node_id = self.choices.get(cls)
        if node_id is None:
            raise _Unresolvable(cls)
        value, _ = self._emit(node_id)
        self.emitted[cls] = value
        return value

    def _resolve_list(self, cls: str) -> list[str]:
        if cls in self.lists:
            return self.lists[cls]
        node_id = self.choices.get(cls)
        if node_id is None:
            raise _Unresolvable(cls)
        info = self.info[node_id]
        values = [] if info.op == "TNil" else [self._resolve(info.children[0])] + self._resolve_list(info.children[1])
        self.lists[cls] = values
        return values

    def _emit(self, node_id: str) -> tuple[str, str]:
        """Emit e-node ``node_id`` over resolved children: its value and its term as text."""
        info = self.info[node_id]
        if info.op in ("Input", "Weight"):
            return info.attrs["arg0"], info.attrs["arg0"]
        if info.op not in OPS:
            raise _Unresolvable(f"{self.nodes[node_id].eclass} ({info.op})")
        spec = OPS[info.op]
        if spec.variadic:
            inputs = self._resolve_list(info.children[0])
            shown = ["[" + " ".join(self.rendered.get(v, v) for v in inputs) + "]"]
        else:
            inputs = [self._absent_or(c) for c in info.children]
            shown = [self.rendered.get(v, v) if v else "(Absent)" for v in inputs]
        self.counter += 1
        value = f"_rw{self.counter}"
        attrs = {k: v for k, v in info.attrs.items()}
        if info.op == "Split":
            index = attrs.pop("index")
            outputs = [""] * max(len(attrs.get("split", [])), index + 1)
            outputs[index] = value
        else:
            outputs = [value]
        self.extra.append(Node(info.op, inputs, outputs, attrs, name=f"rw{self.counter}"))
        self.value_class[value] = self.nodes[node_id].eclass
        text = "(" + " ".join([info.op] + shown + [lit(info.attrs[a.name], a.sort) for a in spec.attrs]) + ")"
        self.rendered[value] = text
        return value, text

    def _absent_or(self, cls: str) -> str:
        members = self.classes.get(cls, [])
        if members and all(self.info[m].op == "Absent" for m in members):
            return ""
        return self._resolve(cls)

    def graph(self, checks: list[Check]) -> Graph:
        """The original program plus the terms of ``checks``; outputs: every value compared."""
        needed = _needed(self.extra, [c.other for c in checks] + [c.reference for c in checks])
        extra = [n for n in self.extra if any(o in needed for o in n.outputs if o)]
        originals = [o for n in self.inst.graph.nodes for o in n.outputs if o]
        outputs = originals + [o for n in extra for o in n.outputs if o and o in needed and o not in originals]
        g = self.inst.graph
        model = skeleton(g.inputs, g.types, outputs, self.inst.dtype, g.opset)
        return Graph(list(g.nodes) + extra, list(g.inputs), outputs, dict(g.types), dict(g.weights), model)


class _Unresolvable(Exception):
    pass


def _needed(extra: list[Node], wanted: list[str]) -> set[str]:
    producer = {o: n for n in extra for o in n.outputs if o}
    needed: set[str] = set()
    stack = list(wanted)
    while stack:
        v = stack.pop()
        if v in needed:
            continue
        needed.add(v)
        node = producer.get(v)
        if node is not None:
            stack.extend(i for i in node.inputs if i)
    return needed
