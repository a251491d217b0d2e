"""Numerical rule verification: the library verifies, wrong rules are caught with a counterexample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eqsat_dnn.cli import main
from eqsat_dnn.eqsat.rules import library_dir, parse_rule_file, select_rules
from eqsat_dnn.verify import check_rule, check_rules, parse_sexp

WRONG = {
    "matmul-comm": '(rewrite (MatMul a b) (MatMul b a) :name "matmul-comm")',
    "relu-add": '(rewrite (Relu (Add a b)) (Add (Relu a) (Relu b)) :name "relu-add")',
    "sub-comm": '(rewrite (Sub a b) (Sub b a) :name "sub-comm")',
    # shape-conditioned, but the condition is too weak: same rank is not same shape
    "reshape-same-rank": '(rule ((= e (Reshape x s z)) (= (vec-length (shape x)) (vec-length s))) '
                         '((union e x)) :name "reshape-same-rank")',
    "transpose-2d-noop": '(rule ((= e (Transpose x p)) (= (vec-length (shape x)) 2)) ((union e x)) '
                         ':name "transpose-2d-noop")',
    # distributivity without the same-shape condition breaks under broadcasting
    "distribute-unconditional": '(rule ((= e (Add (MatMul x a) (MatMul x b)))) ((union e (MatMul x (Add a b)))) '
                                ':name "distribute-unconditional")',
    # a rule that unions two terms it creates
    "fresh-union": '(rule ((= e (Add a b))) ((union (Mul a b) (Sub a b))) :name "fresh-union")',
    "softmax-any-axis": '(rule ((= e (Softmax x ax)) (= (vec-length (shape x)) 2)) ((union e (Softmax x 0))) '
                        ':name "softmax-any-axis")',
    # a round trip through float32 loses float64 precision (a relative 6e-8: tolerances must see it)
    "cast-through-float": '(rule ((= e (Cast (Cast x 1 s1) 11 s2)) (= (dtype x) 11)) ((union e x)) '
                          ':name "cast-through-float")',
    # BatchNormalization folded into a conv without its shift (the bias is forgotten)
    "bn-fold-no-bias": '(rule ((= e (BatchNormalization (Conv x w (Absent) st pa di g) sc bi mu va eps))) '
                       '((let z (Sub mu mu)) (union e (Conv x (Transpose (BatchNormalization '
                       '(Transpose w (vec-of 1 0 2 3)) sc z z va eps) (vec-of 1 0 2 3)) (Absent) st pa di g))) '
                       ':name "bn-fold-no-bias")',
}


def _rules(tmp_path: Path, text: str, name: str = "scratch") -> list:
    path = tmp_path / f"{name}.egg"
    path.write_text(text + "\n")
    return parse_rule_file(path)


RULE_FILES = sorted(path.relative_to(library_dir()).as_posix() for path in library_dir().rglob("*.egg"))


@pytest.mark.parametrize("rule_file", RULE_FILES)
def test_library_verifies(rule_file):
    """Every file of the library (the opt-in multi-pattern family included), one test per file so
    the two workers share the checker's two minutes."""
    results = check_rules(parse_rule_file(library_dir() / rule_file), trials=3, jobs=1)
    assert results
    bad = {r.rule.name: (r.status, r.note, r.counterexample) for r in results if r.status != "verified"}
    assert not bad
    for r in results:
        assert r.checked >= 1 and r.counterexample is None


def test_every_library_rule_is_in_a_verified_file():
    files = {rule.name for path in RULE_FILES for rule in parse_rule_file(library_dir() / path)}
    assert {rule.name for rule in select_rules()} <= files


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_rule_is_caught(tmp_path, name):
    (rule,) = _rules(tmp_path, WRONG[name])
    result = check_rule(rule, trials=10)
    assert result.status == "failed", (result.note, result.fired)
    cx = result.counterexample
    assert cx is not None and cx.message
    assert cx.inputs and all("[" in shape for shape in cx.inputs.values())
    assert cx.lhs.startswith("(") or cx.lhs in cx.inputs
    assert cx.rhs and cx.rhs != cx.lhs
    assert "lhs" in cx.values or "invalid" in cx.message or "not a valid" in cx.message
    if cx.message.startswith("values differ"):
        # an error well above rounding: float32's own for a precision loss, else a wrong value
        floor = 1e-8 if name == "cast-through-float" else 1e-3
        assert cx.max_abs_error is not None and cx.max_abs_error > floor * max(cx.scale or 0.0, 1.0)


def test_counterexample_names_attributes(tmp_path):
    (rule,) = _rules(tmp_path, WRONG["softmax-any-axis"])
    cx = check_rule(rule, trials=10).counterexample
    assert cx.attributes == {"ax": 1}
    assert cx.lhs == "(Softmax x 1)" and cx.rhs == "(Softmax x 0)"


def test_impossible_condition_is_untested(tmp_path):
    (rule,) = _rules(tmp_path, '(rule ((= e (Relu x)) (= (vec-length (shape x)) -1)) ((union e x)) :name "never")')
    result = check_rule(rule, trials=5, attempts=40)
    assert result.status == "untested" and result.fired == 0 and result.attempts == 40
    assert "never fired" in result.note


def test_rule_that_changes_nothing_is_untested(tmp_path):
    (rule,) = _rules(tmp_path, '(rewrite (Relu x) (Relu x) :name "self")')
    result = check_rule(rule, trials=3, attempts=30)
    assert result.status == "untested" and result.fired > 0 and result.checked == 0


def test_birewrite_checks_both_directions(tmp_path):
    good, bad, rejected = _rules(tmp_path, "\n".join([
        '(birewrite (Mul a (Add b c)) (Add (Mul a b) (Mul a c)) :name "mul-distrib")',
        '(birewrite (Add (Relu a) (Relu b)) (Relu (Add a b)) :name "relu-add-both")',
        '(birewrite (Neg (Neg x)) x :name "neg-neg")',  # egglog refuses a bare-variable side
    ]))
    result = check_rule(good, trials=4)
    assert result.status == "verified" and result.checked == 8  # 4 per direction
    result = check_rule(bad, trials=4)
    assert result.status == "failed" and result.counterexample.direction in ("forward", "backward")
    result = check_rule(rejected, trials=4)
    assert result.status == "failed" and "egglog rejects" in result.note


def test_rewrite_when_and_rule_bindings(tmp_path):
    rules = _rules(tmp_path, "\n".join([
        '(rewrite (Add a b) (Add b a) :when ((= (shape a) (shape b))) :name "add-comm-when")',
        '(rule ((= e (Concat l ax)) (= l (TCons a (TNil)))) ((union e a)) :name "concat-one")',
        '(rule ((= e (Softmax x ax))) ((union e (Div (Exp x) (ReduceSum (Exp x) (vec-of ax) 1)))) '
        ':name "softmax-expand")',
        '(rewrite (Relu (Split x ax sp i)) (Split (Relu x) ax sp i) :name "relu-split")',
    ]))
    for result in check_rules(rules, trials=4):
        assert result.status == "verified", (result.rule.name, result.note, result.counterexample)


def test_deterministic_whatever_the_workers(tmp_path):
    rules = select_rules(["layout"])[:3] + _rules(tmp_path, WRONG["sub-comm"])

    def run(jobs: int) -> list[dict]:
        out = [r.to_dict() for r in check_rules(rules, trials=4, seed=7, jobs=jobs)]
        for item in out:
            item.pop("seconds")
        return out

    serial = run(1)
    assert serial == run(1)
    assert serial == run(2)


def test_parse_sexp():
    form = parse_sexp('(rewrite (Gemm a b (Absent) 1.0 -2 0 1) a :name "x \\"y\\"") ; comment')
    assert form[0] == "rewrite" and form[1][4] == 1.0 and form[1][5] == -2
    assert form[-1] == 'x "y"'


# -- the command line ----------------------------------------------------------------------


def test_cli_check_library_family(capsys):
    assert main(["rules", "check", "layout", "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "identity-elim" in out and "verified" in out and "failed" not in out


def test_cli_wrong_rule_exits_5_with_counterexample(tmp_path, capsys):
    path = tmp_path / "wrong.egg"
    path.write_text(WRONG["sub-comm"] + "\n")
    assert main(["rules", "check", str(path), "--trials", "3"]) == 5
    captured = capsys.readouterr()
    assert "failed" in captured.out and "(Sub b a)" in captured.out and "values differ" in captured.out
    assert captured.err.startswith("eqsat-dnn: error:") and "1 failed" in captured.err


def test_cli_untested_exits_5_unless_allowed(tmp_path, capsys):
    path = tmp_path / "never.egg"
    path.write_text('(rule ((= e (Relu x)) (= (vec-length (shape x)) -1)) ((union e x)) :name "never")\n')
    assert main(["rules", "check", str(path), "--trials", "1", "--attempts", "30"]) == 5
    assert "never fired in 30 instances" in capsys.readouterr().out
    assert main(["rules", "check", str(path), "--trials", "1", "--attempts", "30", "--allow-untested"]) == 0


def test_cli_json_and_subprocess_exit_code(tmp_path):
    path = tmp_path / "mixed.egg"
    path.write_text(WRONG["relu-add"] + '\n(rewrite (Mul a b) (Mul b a) :name "mul-comm")\n')
    result = subprocess.run([sys.executable, "-m", "eqsat_dnn.cli", "rules", "check", str(path), "--json",
                             "--trials", "3"], capture_output=True, text=True)
    assert result.returncode == 5, result.stderr
    data = {r["name"]: r for r in json.loads(result.stdout)}
    assert data["mul-comm"]["status"] == "verified" and data["mul-comm"]["fired"] == 3
    assert data["relu-add"]["status"] == "failed"
    assert data["relu-add"]["counterexample"]["rhs"] == "(Add (Relu a) (Relu b))"
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
