"""The data every extractor reads and writes.

An :class:`EGraph` here is a plain, immutable-by-convention snapshot in the
egraph-serialize shape that egglog writes: e-nodes keyed by id, each in one
e-class, with children given as e-class ids. It is deliberately decoupled from
egglog so the same extractors run on our own saturated e-graphs and on the
extraction-gym JSON files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from eqsat_dnn.errors import InputError
from eqsat_dnn.io.files import check_input_file


@dataclass(frozen=True)
class ENode:
    """One e-node: an operator applied to e-classes."""

    op: str
    children: tuple[str, ...]
    eclass: str
    cost: float = 0.0


@dataclass
class EGraph:
    """An e-graph snapshot: nodes by id, classes by id, and the root classes."""

    nodes: dict[str, ENode]
    roots: list[str]
    classes: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            for node_id, node in self.nodes.items():
                self.classes.setdefault(node.eclass, []).append(node_id)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ExtractionStatus(StrEnum):
    """How good an extraction's program is known to be (a ``str``: compares, prints and
    serializes as its value)."""

    OPTIMAL = "optimal"
    """Proven optimal (within the extractor's gap)."""
    FEASIBLE = "feasible"
    """Better than the greedy program, not proven optimal (a time or gap limit stopped the search)."""
    GREEDY = "greedy"
    """The greedy program (or a known program no costlier), nothing better found or searched for."""


class ExtractionStop(StrEnum):
    """Why an extractor's search ended."""

    NONE = ""
    """No search: extractors that do not search (greedy)."""
    OPTIMAL = "optimal"
    """Optimality proven."""
    TIME_LIMIT = "time limit"
    """Cut short: the answer is the best found, the greedy program if nothing better."""
    SOLVER_ERROR = "solver error"
    """The solver failed: the answer is the best found before, at worst greedy."""
    NO_GAIN = "no gain possible"
    """A bound proved that no program beats the caller's ``target``: searching on could not
    change the caller's decision (the input program is kept)."""


@dataclass
class Extraction:
    """What an extractor chose, and how sure it is."""

    choices: dict[str, str]
    """e-class id -> chosen e-node id, for every class reachable from the roots."""
    cost: float
    """DAG cost: each chosen node paid once."""
    status: ExtractionStatus
    """``optimal``, ``feasible`` (a time or gap limit stopped the search), or ``greedy``."""
    bound: float
    """Best proven lower bound on the cost (equal to ``cost`` when optimal)."""
    seconds: float
    extractor: str
    stop_reason: ExtractionStop = ExtractionStop.NONE
    """Why the search ended: ``optimal`` (proven), ``time limit`` (cut short: the answer is the
    best found, the greedy program if nothing better), ``solver error``, or empty for extractors
    that do not search (greedy)."""
    warning: str = ""
    """One line for the user when the answer is a fallback (a time limit or a solver error)."""

    @property
    def gap(self) -> float:
        if self.cost <= 0:
            return 0.0
        return max(0.0, (self.cost - self.bound) / self.cost)


class Extractor(Protocol):
    """One interface, many extractors (extraction-gym's one ``Extractor`` trait): every
    extractor in :data:`eqsat_dnn.extract.EXTRACTORS` is a class of this shape, built with
    keyword options (``time_limit`` for those that search)."""

    name: str

    def extract(self, egraph: EGraph, initial: dict[str, str] | None = None,
                target: float | None = None) -> Extraction:
        """The chosen program; never costlier than ``initial``, a known valid program, if given.
        ``target`` is the cost the caller needs beaten: a search may stop once it proves that
        no program costs less (:attr:`ExtractionStop.NO_GAIN`)."""
        ...


def reachable_choices(egraph: EGraph, choices: dict[str, str]) -> dict[str, str]:
    """Restrict ``choices`` to the classes the chosen program reaches from the roots."""
    kept: dict[str, str] = {}
    stack = list(egraph.roots)
    while stack:
        cls = stack.pop()
        if cls in kept:
            continue
        node_id = choices[cls]
        kept[cls] = node_id
        stack.extend(egraph.nodes[node_id].children)
    return kept


def known_program(egraph: EGraph, choices: dict[str, str] | None) -> tuple[dict[str, str], float] | None:
    """``choices`` restricted to what it reaches, with its DAG cost; ``None`` unless it is a
    complete, acyclic program (an extractor's ``initial`` that does not fit is ignored)."""
    if choices is None:
        return None
    try:
        validate(egraph, choices)
    except (ValueError, KeyError):
        return None
    program = reachable_choices(egraph, choices)
    return program, dag_cost(egraph, program)


def settle_ties(egraph: EGraph, choices: dict[str, str], initial: dict[str, str]) -> dict[str, str]:
    """``choices`` moved back to ``initial``'s e-node in every class where that costs no more.

    Programs the cost model prices alike are alike to the model only: where a rewrite gains
    nothing by the model's count (a bias moved off its GEMM and onto the residual, say), the
    runtime can only lose by it, so each tie goes to the input program. Classes are visited
    from the roots down, so a consumer that goes back can take its producers' changes with it.
    ``initial`` must be a complete program (:func:`known_program`)."""
    program = reachable_choices(egraph, choices)
    cost = dag_cost(egraph, program)
    for cls in _reachable_classes(egraph, program):
        want = initial.get(cls)
        if cls not in program or want is None or program[cls] == want:
            continue
        trial = {**initial, **program, cls: want}
        if find_cycle(egraph, trial) is not None:
            continue
        trial = reachable_choices(egraph, trial)
        trial_cost = dag_cost(egraph, trial)
        if trial_cost <= cost + 1e-9 * abs(cost):
            program, cost = trial, trial_cost
    return program


def dag_cost(egraph: EGraph, choices: dict[str, str]) -> float:
    """Cost of the program ``choices`` picks, each reachable node counted once."""
    reached = reachable_choices(egraph, choices)
    return math.fsum(egraph.nodes[node_id].cost for node_id in reached.values())


def find_cycle(egraph: EGraph, choices: dict[str, str]) -> list[str] | None:
    """A cycle of classes in the chosen program, or ``None`` if it is acyclic."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in egraph.roots:
        if state.get(root) == 2:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            cls, child_index = stack.pop()
            if child_index == 0:
                if state.get(cls) == 2:
                    continue
                state[cls] = 1
                path.append(cls)
            children = egraph.nodes[choices[cls]].children
            if child_index < len(children):
                stack.append((cls, child_index + 1))
                child = children[child_index]
                if state.get(child) == 1:
                    return path[path.index(child):]
                if state.get(child) != 2:
                    stack.append((child, 0))
            else:
                state[cls] = 2
                path.pop()
    return None


def validate(egraph: EGraph, choices: dict[str, str]) -> None:
    """Raise ``ValueError`` unless ``choices`` is a complete, acyclic program."""
    for cls in _reachable_classes(egraph, choices):
        node_id = choices.get(cls)
        if node_id is None:
            raise ValueError(f"class {cls} is reachable but has no chosen node")
        if egraph.nodes[node_id].eclass != cls:
            raise ValueError(f"node {node_id} chosen for class {cls} belongs to {egraph.nodes[node_id].eclass}")
    cycle = find_cycle(egraph, choices)
    if cycle:
        raise ValueError(f"chosen program has a cycle through classes {cycle[:5]}")


def _reachable_classes(egraph: EGraph, choices: dict[str, str]) -> list[str]:
    """Classes reached from the roots through ``choices``, tolerating missing or bad entries."""
    seen: set[str] = set()
    order: list[str] = []
    stack = list(egraph.roots)
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        order.append(cls)
        node_id = choices.get(cls)
        if node_id is not None and node_id in egraph.nodes:
            stack.extend(egraph.nodes[node_id].children)
    return order


def load_egraph_json(path: str | Path) -> EGraph:
    """Read an egraph-serialize JSON file (what egglog and extraction-gym write)."""
    path = check_input_file(path)  # a FIFO would block: refused before it is opened
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: not an e-graph JSON file ({exc.__class__.__name__}: {exc})") from None
    return egraph_from_dict(data, source=str(path))


def egraph_from_dict(data: object, source: str = "e-graph") -> EGraph:
    """Build an :class:`EGraph` from the egraph-serialize dictionary form."""
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise InputError(f"{source}: expected an object with a 'nodes' mapping")
    raw_nodes: dict = data["nodes"]
    nodes: dict[str, ENode] = {}
    try:
        for node_id, raw in raw_nodes.items():
            if not isinstance(raw, dict) or not isinstance(raw.get("children", []), list):
                raise TypeError(f"node {node_id!r}: expected an object whose 'children' is a list")
            children = tuple(str(raw_nodes[str(c)]["eclass"]) for c in raw.get("children", []))
            cost = float(raw.get("cost", 1.0))
            if not math.isfinite(cost) or cost < 0:
                raise ValueError(f"node {node_id!r}: cost {cost} is not a finite number >= 0")
            nodes[str(node_id)] = ENode(
                op=str(raw["op"]),
                children=children,
                eclass=str(raw["eclass"]),
                cost=cost,
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: malformed node ({exc.__class__.__name__}: {exc})") from None
    roots = data.get("root_eclasses", [])
    if not isinstance(roots, list) or not all(isinstance(r, (str, int)) for r in roots):
        raise InputError(f"{source}: 'root_eclasses' must be a list of e-class ids, not {type(roots).__name__} "
                         f"{json.dumps(roots)[:60]}")
    roots = [str(r) for r in roots]
    classes: dict[str, list[str]] = {}
    for node_id, node in nodes.items():
        classes.setdefault(node.eclass, []).append(node_id)
    missing = [r for r in roots if r not in classes]
    if not roots or missing:
        raise InputError(f"{source}: root e-classes missing or unknown: {missing[:3] or 'none given'}")
    return EGraph(nodes=nodes, roots=roots, classes=classes)
