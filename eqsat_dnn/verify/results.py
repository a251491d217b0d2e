"""What ``eqsat-dnn rules check`` reports: a verdict per rule, with a counterexample for a wrong one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from eqsat_dnn.eqsat.rules import Rule


@dataclass
class Counterexample:
    """One instance on which a rule's two sides disagree."""

    message: str
    lhs: str
    """The instantiated left-hand side, e.g. ``(MatMul a b)``."""
    rhs: str
    """The term the rule made equal to it (one rewrite step)."""
    inputs: dict[str, str]
    """Tensor input -> ``dtype[shape]``."""
    attributes: dict[str, Any]
    """Pattern variable -> the value it took."""
    max_abs_error: float | None = None
    scale: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    """Inputs and both sides: nested lists for small tensors, else a summary."""
    direction: str = ""
    """``forward``/``backward`` for a birewrite."""
    symbolic: bool = False
    """Whether the e-graph saw the input dims as symbols."""

    def to_dict(self) -> dict:
        return {
            "message": self.message, "lhs": self.lhs, "rhs": self.rhs, "inputs": self.inputs,
            "attributes": _jsonable(self.attributes), "max_abs_error": self.max_abs_error,
            "scale": self.scale, "values": _jsonable(self.values), "direction": self.direction,
            "symbolic": self.symbolic,
        }


class RuleStatus(StrEnum):
    """The verdict on one rule (a string enum: it prints and serialises as its text)."""

    VERIFIED = "verified"
    """Every checked instance agreed."""
    FAILED = "failed"
    """A counterexample, or egglog rejects the rule."""
    UNTESTED = "untested"
    """No instance on which the rule fired and changed the e-graph."""


@dataclass
class RuleCheck:
    """The verdict on one rule."""

    rule: Rule
    status: RuleStatus
    fired: int = 0
    """Instances on which the rule matched."""
    checked: int = 0
    """Instances on which it changed the e-graph and every change was compared."""
    attempts: int = 0
    """Instances generated (most are rejected by ONNX or do not match)."""
    comparisons: int = 0
    max_error: float = 0.0
    """Largest relative difference (|lhs - rhs| / magnitude) over passing comparisons."""
    seconds: float = 0.0
    counterexample: Counterexample | None = None
    note: str = ""
    edge: Counterexample | None = None
    """For a rule tagged ``finite`` that holds on every finite instance: an instance with
    infinities or NaN in its inputs on which it does not (the rule is finite-only, as tagged)."""

    @property
    def finite_only(self) -> bool:
        """Whether the rule held on finite inputs and broke only on non-finite ones."""
        return self.status is RuleStatus.VERIFIED and self.edge is not None

    @property
    def ok(self) -> bool:
        return self.status is RuleStatus.VERIFIED

    @property
    def trials(self) -> int:
        """Number of firing trials (an alias of :attr:`fired`)."""
        return self.fired

    def to_dict(self) -> dict:
        return {
            "name": self.rule.name, "family": self.rule.family, "file": self.rule.file,
            "line": self.rule.line, "kind": self.rule.kind, "status": self.status,
            "fired": self.fired, "checked": self.checked, "attempts": self.attempts,
            "comparisons": self.comparisons, "max_error": self.max_error,
            "seconds": round(self.seconds, 3), "note": self.note,
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
            "finite_only": self.finite_only, "edge": self.edge.to_dict() if self.edge else None,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return _jsonable(float(value))
    return value

