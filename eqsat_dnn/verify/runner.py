"""The egglog side: one shared e-graph holding the prelude and each rule under test, and
running one rule once on an instance."""

from __future__ import annotations

import re
from dataclasses import replace

from egglog import bindings
from onnx import TensorProto

from eqsat_dnn.eqsat.egraph import Snapshot, TensorEGraph
from eqsat_dnn.eqsat.rules import Rule
from eqsat_dnn.eqsat.saturate import add_rules, run_analysis
from eqsat_dnn.eqsat.variants import base_name
from eqsat_dnn.errors import RuleError
from eqsat_dnn.ir.graph import Graph
from eqsat_dnn.ir.language import OPS, lit
from eqsat_dnn.verify.instances import Instance, skeleton
from eqsat_dnn.verify.patterns import RULESET, Direction, Reject


class Panic(Exception):
    """egglog itself failed while running the rule (a primitive in it failed, ...)."""


_NAME_RE = re.compile(r':name\s+"((?:[^"\\]|\\.)*)"')


class _Base:
    """One e-graph for every check in this process: the prelude plus each rule under test,
    each in a ruleset of its own (so only that rule runs). Instances come and go with
    push/pop, which costs far less than loading the prelude again."""

    def __init__(self) -> None:
        # instances with symbolic input dims come and go in this one e-graph
        self.teg = TensorEGraph(Graph([], [], [], {}, {}, skeleton([], {}, [], TensorProto.FLOAT)), symbolic=True)
        self.rules: dict[tuple[str, str], tuple[str, str]] = {}
        """(name, text) -> (name inside egglog, ruleset)."""
        self.poisoned = False
        """Set when egglog failed mid-run: this e-graph is not used again."""
        self.vocabulary = tuple(OPS.items())
        """The ops its prelude declares: a vocabulary grown since (a new OpSpec) needs a new one."""

    def add(self, rule: Rule) -> tuple[str, str]:
        """Add ``rule`` (once) under a unique name and ruleset; raises RuleError if egglog refuses it."""
        key = (rule.name, rule.text)
        if key not in self.rules:
            k = len(self.rules)
            name = f"{rule.name}#{k}"
            text = _NAME_RE.sub(lambda _: f":name {lit(name, 'String')}", rule.text, count=1)
            renamed = replace(rule, name=name, text=text, family=f"{RULESET}{k}")
            try:
                (ruleset,) = add_rules(self.teg, [renamed])  # multi- rules get a ruleset of their own
            except RuleError as exc:
                raise RuleError(str(exc).replace(repr(name), repr(rule.name))) from None
            self.rules[key] = (name, ruleset)
        return self.rules[key]


_BASE: _Base | None = None


def shared_base() -> _Base:
    global _BASE
    if _BASE is None or _BASE.poisoned or len(_BASE.rules) > 400 or _BASE.vocabulary != tuple(OPS.items()):
        _BASE = _Base()
    return _BASE


class RuleRunner:
    """One direction of one rule, run on one instance at a time in the shared e-graph."""

    def __init__(self, direction: Direction) -> None:
        self.d = direction
        self.base = shared_base()
        self.name, self.ruleset = self.base.add(direction.rule)

    def fire(self, inst: Instance) -> Snapshot | None:
        """Load ``inst``, run the rule once; the snapshot if it matched."""
        teg = self.base.teg
        teg.command("(push)")
        try:
            teg.graph = inst.graph
            teg.globals, teg.opaque = {}, {}
            try:
                teg.build()
                run_analysis(teg)
            except (bindings.EggSmolError, ValueError):
                raise Reject from None
            try:
                report = teg.command(f"(run-schedule (run {self.ruleset}))")[0].report
                if not any(n for rule, n in report.num_matches_per_rule.items() if base_name(rule) == self.name):
                    return None
                run_analysis(teg)
            except bindings.EggSmolError as exc:
                self.base.poisoned = True
                raise Panic(" ".join(str(exc).split())[:400]) from None
            return teg.snapshot(None)
        finally:
            if not self.base.poisoned:
                teg.command("(pop)")
