"""Numerical verification of rewrite rules (``eqsat-dnn rules check``).

Every rule is tested the same way, whatever it says:

1. **Instantiate its left-hand side.** The constructor terms of the rule's query
   (a ``rewrite``'s left side, the facts of a ``rule``, ``:when`` facts) are
   built as a small concrete program: tensor variables become graph inputs with
   random shapes and values, attribute variables (the i64/f64/IVec/String
   positions of :data:`eqsat_dnn.ir.language.OPS` signatures) get random valid
   values chosen from the shapes around them. ONNX shape inference rejects
   invalid instances at once; many shape strategies are mixed so that the
   conditions a rule needs (matching inner dims, equal shapes, a reshape target
   that equals an input shape, ...) come up often.
2. **Let egglog decide whether it fires.** The instance goes into a
   :class:`~eqsat_dnn.eqsat.egraph.TensorEGraph` exactly as an imported model would
   (shapes and dtypes from ONNX inference, symbolic dims in some trials), the
   analyses run, then the rule alone runs once. Its own match count says
   whether it fired; shape conditions are judged by egglog, not by us.
3. **Check every equality it asserted.** After one run, each e-class holding
   more than one e-node is a claim that those terms are equal. For every e-node
   the rule added to a class (and every pair of original values it merged), a
   *one-step* program is built: that e-node on top, its children computed the
   original way. All of them run in onnxruntime next to the original program
   on the same random inputs and must agree with the class's original value,
   within a tolerance scaled to the values' magnitude (float64 where the
   runtime supports every op involved, else float32). A rewritten term that
   onnxruntime rejects on a valid instance is a failure too, and so is a term
   the rule built whose analysed shape differs from what it computes (shape
   conditions of later rules would trust it), and so is egglog failing while
   running the rule.

``birewrite`` rules are checked in both directions, ``rule`` forms through
whatever their actions union. A rule that never fires (or fires but never
changes the e-graph) is reported ``untested``; a rule that breaks once is
``failed``, with the counterexample (input shapes, attribute values, both
terms, the difference and, for small tensors, the values themselves), after a
short search for a smaller one.

Everything is seeded per rule: the same rules, seed and trial count give the
same report, however many worker processes share the work.

The modules, in the order a check goes through them: :mod:`~eqsat_dnn.ir.sexpr` (egglog
source as data), :mod:`~eqsat_dnn.verify.patterns` (what a rule's query says),
:mod:`~eqsat_dnn.verify.sampling` (random shapes and attribute values, from what
:data:`eqsat_dnn.ir.language.OPS` declares about each op), :mod:`~eqsat_dnn.verify.instances`
(the left-hand side as a program), :mod:`~eqsat_dnn.verify.runner` (running the rule in egglog),
:mod:`~eqsat_dnn.verify.planner` (what the run claims, as programs),
:mod:`~eqsat_dnn.verify.oracle` (running them in onnxruntime), :mod:`~eqsat_dnn.verify.driver`
(trials, shrinking, worker processes) and :mod:`~eqsat_dnn.verify.results`.
:mod:`~eqsat_dnn.verify.tensat` checks the coverage of Tensat's rule set.
"""

from __future__ import annotations

from eqsat_dnn.verify.driver import (DEFAULT_TRIALS, SHRINK_ATTEMPTS, UNFIRED_PATIENCE, check_rule, check_rules,
                                     default_jobs)
from eqsat_dnn.verify.instances import OPSET, TOLERANCES
from eqsat_dnn.verify.patterns import RULESET
from eqsat_dnn.verify.results import Counterexample, RuleCheck, RuleStatus
from eqsat_dnn.ir.sexpr import Str, Sym, parse_sexp, to_source

__all__ = [
    "DEFAULT_TRIALS", "OPSET", "RULESET", "SHRINK_ATTEMPTS", "TOLERANCES", "UNFIRED_PATIENCE", "Counterexample",
    "RuleCheck", "RuleStatus", "Str", "Sym", "check_rule", "check_rules", "default_jobs", "parse_sexp", "to_source",
]
