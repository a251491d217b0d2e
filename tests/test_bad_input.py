"""Bad input: every mistake a user can make ends in one clear line on stderr, a documented
exit code (2 bad input, 3 output not writable, 4 check failed, 5 bad rule, 130 interrupted),
no traceback unless ``--debug``, no output file (nor a temporary one) and the input untouched.

Unknown dimensions: a dim with neither a value nor a name is kept unknown, like a symbolic
one, and the check feeds it size 2. An input with no shape at all (rank unknown) is refused
with the ``--overwrite-input-shape`` that fixes it; with that override the model is optimized.

Most cases call :func:`eqsat_dnn.cli.main` in this process (``capfd`` sees what the C++
libraries print, too); a few run the real command in a subprocess: tracebacks, and
interrupts by a real SIGINT.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.cli import main
from eqsat_dnn.errors import InputError
from eqsat_dnn.models.examples import attention_block

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "extraction-gym"


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _run(capfd, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as done:  # argparse
        code = done.code
    out, err = capfd.readouterr()
    return code, out, err


def _assert_refused(code: int, err: str, expected: int, out_path: Path, source: Path | None = None,
                    digest: str | None = None, says: str = "") -> None:
    assert code == expected, err
    assert err.count("\n") == 1 and err.startswith("eqsat-dnn"), f"not one line: {err!r}"
    assert "error:" in err and "Traceback" not in err
    assert says.lower() in err.lower(), err
    assert not out_path.exists()
    leftovers = [p.name for p in out_path.parent.iterdir() if p.name.startswith(f".{out_path.name}.")] \
        if out_path.parent.is_dir() else []
    assert not leftovers, f"temporary files left: {leftovers}"
    if source is not None:
        assert _digest(source) == digest, "the input was modified"


def _model(nodes, inputs, outputs, opset: int = 17, initializers=(), extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


def _x(shape=(2, 3), name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _relu(opset: int = 17, extra_opsets=()) -> onnx.ModelProto:
    return _model([helper.make_node("Relu", ["x"], ["y"])], [_x()], [_x(name="y")], opset, extra_opsets=extra_opsets)


def _write(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


# -- inputs that are not (valid, supported) ONNX --------------------------------------------------------


def _missing(tmp):
    return tmp / "missing.onnx"


def _text(tmp):
    (tmp / "in.onnx").write_text("not an onnx model at all")
    return tmp / "in.onnx"


def _empty(tmp):
    (tmp / "in.onnx").write_bytes(b"")
    return tmp / "in.onnx"


def _truncated_protobuf(tmp):
    (tmp / "in.onnx").write_bytes(b"\x08\x07\x12\x03abc\x3a\x05")
    return tmp / "in.onnx"


def _truncated_model(tmp):
    data = attention_block().SerializeToString()
    (tmp / "in.onnx").write_bytes(data[: len(data) // 2])  # a copy or a download cut short
    return tmp / "in.onnx"


def _a_directory(tmp):
    (tmp / "in.onnx").mkdir()
    return tmp / "in.onnx"


def _undefined_value(tmp):
    return _write(tmp / "in.onnx", _model([helper.make_node("Relu", ["nowhere"], ["y"])], [_x()], [_x(name="y")]))


def _wrong_arity(tmp):
    return _write(tmp / "in.onnx", _model([helper.make_node("Relu", ["x", "x"], ["y"])], [_x()], [_x(name="y")]))


def _unknown_op(tmp):
    return _write(tmp / "in.onnx", _model([helper.make_node("NoSuchOp", ["x"], ["y"])], [_x()], [_x(name="y")]))


def _opset_too_new(tmp):
    return _write(tmp / "in.onnx", _relu(opset=99))


def _ml_opset_too_new(tmp):
    return _write(tmp / "in.onnx", _relu(extra_opsets=[helper.make_opsetid("ai.onnx.ml", 99)]))


def _ir_too_new(tmp):
    model = _relu()
    model.ir_version = 99
    return _write(tmp / "in.onnx", model)


def _rank_unknown(tmp):
    x = onnx.ValueInfoProto(name="x")
    x.type.tensor_type.elem_type = TensorProto.FLOAT
    return _write(tmp / "in.onnx", _model([helper.make_node("Relu", ["x"], ["y"])], [x], [_x(name="y")]))


def _external_data_missing(tmp):
    onnx.save_model(attention_block(), tmp / "in.onnx", save_as_external_data=True, location="in.onnx.data",
                    size_threshold=0)
    (tmp / "in.onnx.data").unlink()
    return tmp / "in.onnx"


def _sequence_input(tmp):
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2, 3])
    index = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    return _write(tmp / "in.onnx", _model([helper.make_node("SequenceAt", ["s", "i"], ["y"])], [seq, index],
                                          [_x(name="y")]))


BAD_INPUTS = {
    "missing file": (_missing, 2, "no such file"),
    "a directory": (_a_directory, 2, "no such file"),
    "not onnx": (_text, 2, "onnx"),
    "empty file": (_empty, 2, "empty or truncated"),
    "truncated protobuf": (_truncated_protobuf, 2, ""),
    "truncated model": (_truncated_model, 2, ""),
    "fails the checker: undefined value": (_undefined_value, 2, "checker"),
    "fails the checker: wrong arity": (_wrong_arity, 2, "checker"),
    "fails the checker: unknown op": (_unknown_op, 2, "checker"),
    "unsupported opset": (_opset_too_new, 2, "unsupported opset"),
    "unsupported ai.onnx.ml opset": (_ml_opset_too_new, 2, "unsupported opset"),
    "unsupported IR version": (_ir_too_new, 2, "ir_version"),
    "rank-unknown input": (_rank_unknown, 2, "--overwrite-input-shape x:"),
    "external data missing": (_external_data_missing, 2, "external data"),
    "no check inputs for a sequence": (_sequence_input, 2, "not a tensor"),
}


@pytest.mark.parametrize("make, code, says", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_model_gives_one_line_and_writes_nothing(tmp_path, capfd, make, code, says):
    source = make(tmp_path)
    digest = _digest(source)
    out = tmp_path / "out.onnx"
    result, _, err = _run(capfd, "optimize", str(source), str(out), "--extractor", "greedy")
    _assert_refused(result, err, code, out, source, digest, says)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(InputError):
        main(["--debug", "optimize", str(tmp_path / "missing.onnx"), str(tmp_path / "out.onnx")])


def test_the_real_command_prints_no_traceback(tmp_path):
    """Through the installed entry point, for an input error and for an internal one."""
    source = _truncated_model(tmp_path)
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "eqsat_dnn.cli", "optimize", str(source), str(out)],
                          capture_output=True, text=True)
    _assert_refused(done.returncode, done.stderr, 2, out)
    done = subprocess.run([sys.executable, "-m", "eqsat_dnn.cli", "--debug", "optimize", str(source), str(out)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" in done.stderr


# -- outputs that cannot be written -----------------------------------------------------------------


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save_model(attention_block(), path)
    return path


def _same_path(tmp, model):
    return model


def _same_file_other_spelling(tmp, model):
    return tmp / "." / ".." / tmp.name / model.name


def _symlink_to_input(tmp, model):
    link = tmp / "link.onnx"
    link.symlink_to(model)
    return link


def _missing_directory(tmp, model):
    return tmp / "missing" / "out.onnx"


def _output_is_directory(tmp, model):
    (tmp / "out.onnx").mkdir()
    return tmp / "out.onnx"


def _parent_is_a_file(tmp, model):
    (tmp / "file").write_text("")
    return tmp / "file" / "out.onnx"


BAD_OUTPUTS = {
    "output is the input": (_same_path, "input"),
    "output is the input, spelled otherwise": (_same_file_other_spelling, "input"),
    "output is a link to the input": (_symlink_to_input, "input"),
    "directory missing": (_missing_directory, "does not exist"),
    "output is a directory": (_output_is_directory, "directory"),
    "parent is a file": (_parent_is_a_file, "does not exist"),
}


@pytest.mark.parametrize("make, says", BAD_OUTPUTS.values(), ids=BAD_OUTPUTS.keys())
def test_unwritable_output_gives_one_line(tmp_path, capfd, model_file, make, says):
    out = make(tmp_path, model_file)
    digest = _digest(model_file)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(capfd, "optimize", str(model_file), str(out), "--extractor", "greedy")
    assert code == 3 and err.count("\n") == 1 and says in err, err
    assert _digest(model_file) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, not even a temporary file


def _model_with_data(tmp: Path, location: str) -> Path:
    """The example model with every weight in one external-data file named ``location``."""
    source = tmp / "in.onnx"
    onnx.save_model(attention_block(), source, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return source


def _tree(tmp: Path) -> dict[str, str | None]:
    return {p.name: _digest(p) for p in sorted(tmp.iterdir())}


@pytest.mark.parametrize("location, output, says", [
    ("w.bin", "w.bin", "data file the input reads"),  # the output is the input's weights
    ("out.onnx.data", "out.onnx", "data file the input reads"),  # the output's data file is the input's
    ("w.bin", "hard-link", "data file the input reads"),  # the weights under another name
])
def test_an_output_over_the_inputs_data_is_refused(tmp_path, capfd, location, output, says):
    """Defect 1 of the reliability issue: the output, or the data file written beside it, is
    one of the files the input reads its weights from. Refused (exit 3); nothing changes."""
    source = _model_with_data(tmp_path, location)
    if output == "hard-link":
        os.link(tmp_path / location, tmp_path / "other.bin")
        output = "other.bin"
    before = _tree(tmp_path)
    code, _, err = _run(capfd, "optimize", str(source), str(tmp_path / output), "--extractor", "greedy")
    assert code == 3 and err.count("\n") == 1 and says in err, err
    assert _tree(tmp_path) == before


def test_the_input_data_file_survives_the_python_api(tmp_path):
    """``save_model(..., source=...)`` guards the same files as the command."""
    from eqsat_dnn import optimize, save_model
    from eqsat_dnn.errors import OutputError

    source = _model_with_data(tmp_path, "out.onnx.data")
    before = _tree(tmp_path)
    model, _ = optimize(str(source), extractor="greedy", check=0)
    with pytest.raises(OutputError, match="data file the input reads"):
        save_model(model, tmp_path / "out.onnx", source=source)
    assert _tree(tmp_path) == before


def test_partition_refuses_an_annotation_over_its_plan(tmp_path, capfd, model_file):
    plan = tmp_path / "plan.json"
    code, _, err = _run(capfd, "partition", str(model_file), "--mesh", "2", "-o", str(plan),
                        "--annotate", str(plan))
    assert code == 3 and err.count("\n") == 1 and "plan" in err, err
    assert not plan.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to read-only directories")
def test_read_only_directory(tmp_path, capfd, model_file):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = _run(capfd, "optimize", str(model_file), str(locked / "out.onnx"), "--extractor", "greedy")
    finally:
        locked.chmod(0o700)
    assert code == 3 and "not writable" in err and not list(locked.iterdir())


# -- options, rules, e-graph files ----------------------------------------------------------------


BAD_OPTIONS = {
    "zero ILP time": (["--extract-time-limit", "0"], 2, "must be > 0"),
    "negative iterations": (["--iter-limit", "-1"], 2, "must be >= 0"),
    "not a number": (["--check", "x"], 2, "not a number"),
    "unknown option": (["--bogus"], 2, "unrecognized"),
    "unknown cost model": (["--cost-model", "nope"], 2, "unknown cost model"),
    "shape of no input": (["--overwrite-input-shape", "nope:1,2"], 2, "not a graph input"),
    "malformed shape": (["--overwrite-input-shape", "x:a,b"], 2, "bad input shape"),
    "unknown rule family": (["--rules", "no-such-family"], 5, "no rule file, family or rule"),
    "missing rule file": (["--rules", "/nonexistent/rules.egg"], 5, "no such rule file"),
}


@pytest.mark.parametrize("extra, code, says", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_gives_one_line(tmp_path, capfd, model_file, extra, code, says):
    out = tmp_path / "out.onnx"
    result, _, err = _run(capfd, "optimize", str(model_file), str(out), *extra)
    _assert_refused(result, err, code, out, says=says)


RULE_FILES = {
    "unbalanced": ("(rewrite (MatMul a b)\n", "unbalanced"),
    "unknown constructor": (';; no such op\n(rewrite (Frobnicate a) a :name "frob")\n', "frob"),
    "ill-typed": (';; an attribute where a tensor goes\n(rewrite (Relu a) (Relu 3) :name "typed")\n', "typed"),
}


@pytest.mark.parametrize("text, says", RULE_FILES.values(), ids=RULE_FILES.keys())
def test_malformed_rule_file(tmp_path, capfd, model_file, text, says):
    rules = tmp_path / "bad.egg"
    rules.write_text(text)
    out = tmp_path / "out.onnx"
    code, _, err = _run(capfd, "optimize", str(model_file), str(out), "--rules", str(rules))
    _assert_refused(code, err, 5, out, says=says)
    assert str(rules) in err


def test_a_wrong_rule_never_fails_a_valid_model(tmp_path, capfd, model_file):
    """The check or onnx's checker catches the wrong program; the model is still optimized
    (at worst to its own program), exit 0, with one warning naming the rules to blame."""
    wrong = tmp_path / "wrong.egg"
    wrong.write_text(';; matmul does not commute\n(rewrite (MatMul a b) (MatMul b a) :name "matmul-comm")\n'
                     ';; and this one makes it pay off\n(rewrite (Relu x) (Sigmoid x) :name "relu-sigmoid")\n')
    out = tmp_path / "out.onnx"
    code, _, err = _run(capfd, "optimize", str(model_file), str(out), "--rules", str(wrong), "--extractor", "greedy",
                        "--quiet")
    assert code == 0 and out.is_file()
    assert err.count("\n") == 0  # --quiet: not even the warning


EGRAPHS = {
    "missing": (None, ""),
    "not json": ("{nodes: ", "json"),
    "wrong structure": ('{"nodes": 3}', ""),
    "unknown child": ('{"nodes": {"a": {"op": "f", "children": ["zz"], "eclass": "c", "cost": 1}}, '
                      '"root_eclasses": ["c"]}', ""),
    "no roots": ('{"nodes": {"a": {"op": "x", "children": [], "eclass": "c", "cost": 1}}, '
                 '"root_eclasses": ["nope"]}', ""),
}


@pytest.mark.parametrize("text, says", EGRAPHS.values(), ids=EGRAPHS.keys())
def test_malformed_egraph_json(tmp_path, capfd, text, says):
    path = tmp_path / "e.json"
    if text is not None:
        path.write_text(text)
    for extractor in ("greedy", "ilp"):
        code, out, err = _run(capfd, "extract", str(path), "--extractor", extractor)
        assert code == 2 and err.count("\n") == 1 and err.startswith("eqsat-dnn: error:"), err
        assert says in err.lower() and not out


# -- unknown dimensions ----------------------------------------------------------------------------


def _unknown_dim_model(tmp: Path) -> Path:
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Identity", ["t"], ["u"]),
             helper.make_node("Relu", ["u"], ["y"])]
    return _write(tmp / "in.onnx", _model(nodes, [_x((None, 4))], [_x((None, 4), "y")], initializers=[weight]))


def test_unknown_dims_stay_unknown(tmp_path, capfd):
    source = _unknown_dim_model(tmp_path)
    out = tmp_path / "out.onnx"
    code, output, err = _run(capfd, "optimize", str(source), str(out), "--json", "--check", "2")
    assert code == 0, err
    report = json.loads(output)
    assert report["check"]["ok"] and report["nodes_after"] < report["nodes_before"]  # the Identity went
    dim = onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim.HasField("dim_value") and not dim.dim_param


def test_rank_unknown_input_with_an_override_is_optimized(tmp_path, capfd):
    source = _rank_unknown(tmp_path)
    out = tmp_path / "out.onnx"
    code, _, err = _run(capfd, "optimize", str(source), str(out), "--overwrite-input-shape", "x:3,4", "--quiet")
    assert code == 0, err
    dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 4]


# -- interrupts and atomic writes -------------------------------------------------------------------


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _module_attribute(target: str) -> tuple[object, str]:
    """``package.module[.Class].name`` -> (the module or class, name); ``eqsat_dnn.eqsat.saturate``
    names both a module and the function the package exports, so modules are imported by name."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:-1]:
            owner = getattr(owner, part)
        return owner, parts[-1]
    raise ValueError(target)


@pytest.mark.parametrize("target", ["eqsat_dnn.eqsat.saturate._run_step", "eqsat_dnn.extract.ilp.ILPExtractor._extract",
                                    "eqsat_dnn.pipeline.compare_models"])
def test_interrupt_in_any_stage_writes_nothing(tmp_path, capfd, model_file, monkeypatch, target):
    monkeypatch.setattr(*_module_attribute(target), _interrupt)
    out = tmp_path / "out.onnx"
    code, _, err = _run(capfd, "optimize", str(model_file), str(out))
    assert code == 130 and err == "eqsat-dnn: interrupted; nothing written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_interrupt_while_writing_leaves_no_partial_file(tmp_path, capfd, model_file, monkeypatch):
    """The output goes to a temporary file that is renamed when complete: a write cut
    short (here half-written, then interrupted) leaves neither file behind."""
    from eqsat_dnn.io import onnx_out

    real_save = onnx_out.write_model

    def save_half_then_interrupt(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_out, "write_model", save_half_then_interrupt)
    out = tmp_path / "out.onnx"
    code, _, err = _run(capfd, "optimize", str(model_file), str(out), "--extractor", "greedy")
    assert code == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


_HOOKED = textwrap.dedent("""
    import importlib, os, sys, time
    target = importlib.import_module("{module}")
    for part in "{inner}".split(".") if "{inner}" else []:
        target = getattr(target, part)
    original = getattr(target, "{attribute}")
    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        os.write({marker_fd}, b"REACHED\\n")  # on a pipe of its own: the ILP mutes stdout
        time.sleep(60)  # the test interrupts us here, in the middle of the stage
        return result
    setattr(target, "{attribute}", hooked)
    from eqsat_dnn.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _interrupted_run(module: str, hook: str, args: list[str], at_marker=None) -> tuple[subprocess.CompletedProcess, object]:
    """Run the command with a marker at ``module``'s ``hook`` (``name`` or ``Class.name``) and
    send it a real SIGINT once it gets there; ``at_marker(pid)`` runs just before the signal."""
    inner, _, attribute = hook.rpartition(".")
    read_fd, write_fd = os.pipe()
    script = _HOOKED.format(module=module, inner=inner, attribute=attribute, marker_fd=write_fd)
    # started as from a terminal: a suite run as a background job inherits SIGINT ignored, and a
    # Python started so never turns the signal into KeyboardInterrupt
    process = subprocess.Popen([sys.executable, "-c", script, *args], pass_fds=(write_fd,),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(write_fd)
    seen = None
    try:
        with os.fdopen(read_fd) as marker:
            line = marker.readline()  # blocks until the hook is reached (or the process ends)
        assert line.strip() == "REACHED", process.communicate(timeout=60)
        seen = at_marker(process.pid) if at_marker else None
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), seen


def test_sigint_during_saturation(tmp_path, model_file):
    out = tmp_path / "out.onnx"
    done, _ = _interrupted_run("eqsat_dnn.eqsat.saturate", "_run_step", ["optimize", str(model_file), str(out)])
    assert done.returncode == 130 and done.stderr == "eqsat-dnn: interrupted; nothing written\n", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.skipif(not (SHARED / "vgg.json").exists(), reason="needs ../shared/reference/extraction-gym")
def test_sigint_during_the_ilp_stops_its_solver_process(tmp_path):
    """The ILP solves large programs in a child process; an interrupt must not leave it running."""
    start = time.perf_counter()
    done, solvers = _interrupted_run("eqsat_dnn.extract.ilp.worker", "_FullSolve.start",
                                     ["extract", str(SHARED / "vgg.json"), "--time-limit", "120"],
                                     at_marker=_solver_children)
    assert done.returncode == 130 and done.stderr.endswith("eqsat-dnn: interrupted; nothing written\n"), done.stderr
    assert time.perf_counter() - start < 60
    assert solvers, "the ILP started no solver process: the test does not test anything"
    time.sleep(0.5)
    assert not [pid for pid in solvers if _running(pid)], "the solver process outlived the interrupt"


# A real SIGINT sent from inside HiGHS (its improving-solution callback), once, wherever
# ``highs._subscribe`` sets up a solve (every solve, here or in the child process, goes through it):
# HiGHS is then in the middle of its run, in C++.
_SIGINT_IN_HIGHS = textwrap.dedent("""
    import os, signal
    from eqsat_dnn.extract.ilp import highs as target
    subscribe, sent = target._subscribe, []
    def subscribe_and_interrupt(h, **kwargs):
        def interrupt(event):
            if not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)
        h.cbMipImprovingSolution.subscribe(interrupt)
        subscribe(h, **kwargs)
    target._subscribe = subscribe_and_interrupt
""")


def test_sigint_inside_highs_ends_the_run_with_130_and_writes_nothing(tmp_path):
    """Ctrl-C while HiGHS solves in this process used to become a failed solve: the ILP fell back
    to its best program and the optimized model was written with exit code 0."""
    out = tmp_path / "out.onnx"
    onnx.save_model(attention_block(), tmp_path / "model.onnx")
    script = _SIGINT_IN_HIGHS + textwrap.dedent("""
        import sys
        from eqsat_dnn.cli import main
        code = main(sys.argv[1:])
        assert sent, "HiGHS reported no solution: the test interrupted nothing"
        sys.exit(code)
    """)
    done = subprocess.run([sys.executable, "-c", script, "optimize", str(tmp_path / "model.onnx"), str(out),
                           "--no-check"], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130 and done.stderr == "eqsat-dnn: interrupted; nothing written\n", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler (a suite run as a background job inherits the signal ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("module, options", [
    ("cvxpy_solver", {"lns": False}),  # the whole program, solved in this process
    ("cvxpy_solver", {"full_solve": False}),  # the neighbourhood search's sub-programs
    ("worker", {"isolate_above": 0, "lns": False}),  # the whole program, in the child process
], ids=["here", "neighbourhood", "child"])
def test_sigint_in_any_solve_interrupts_the_extraction(sigint_raises, monkeypatch, module, options):
    from eqsat_dnn.extract.base import EGraph, ENode
    from eqsat_dnn.extract.ilp import ILPExtractor, worker

    # greedy takes both private leaves (7); sharing S is cheaper (6): HiGHS has a solution to report
    nodes = {"r": ENode("add", ("A", "B"), "R", 1.0), "a1": ENode("f", ("S",), "A", 1.0),
             "a2": ENode("la", (), "A", 3.0), "b1": ENode("g", ("S",), "B", 1.0),
             "b2": ENode("lb", (), "B", 3.0), "s": ENode("s", (), "S", 3.0)}
    sent: list = []
    if module == "worker":  # the child process runs the hook, then its usual main
        monkeypatch.setattr(worker, "WORKER_COMMAND", _SIGINT_IN_HIGHS + worker.WORKER_COMMAND)
    else:
        target = importlib.import_module("eqsat_dnn.extract.ilp.highs")
        subscribe = target._subscribe

        def subscribe_and_interrupt(h, **kwargs):
            def interrupt(event):
                if not sent:
                    sent.append(True)
                    os.kill(os.getpid(), signal.SIGINT)
            h.cbMipImprovingSolution.subscribe(interrupt)
            subscribe(h, **kwargs)

        monkeypatch.setattr(target, "_subscribe", subscribe_and_interrupt)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        ILPExtractor(time_limit=60, **options).extract(EGraph(nodes=nodes, roots=["R"]))
    assert time.perf_counter() - start < 30
    assert sent or module == "worker", "HiGHS reported no solution: the test interrupted nothing"
    assert not [pid for pid in _children(os.getpid()) if _running(pid)], "a solver process outlived the interrupt"


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended while we listed them
            continue
    return children


def _solver_children(pid: int) -> list[int]:
    """The HiGHS worker processes that ``pid`` started."""
    return [c for c in _children(pid) if "eqsat_dnn.extract.ilp.worker" in _command_line(c)]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):  # it ended in between
        return ""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its exit status is left
