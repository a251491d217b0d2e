"""Issue 14: the command's reliability defects, each a case of one table.

Every bad option, input or output ends in ONE line on stderr with its documented exit code
(2 bad input, 3 output not writable, 5 bad rule), never "internal error", never a hang, and
nothing written: not-a-number and infinite floats, negative and absurdly large numbers,
dims of 2^40 (an override or the model's own), a wrong-rank override, a non-list
``root_eclasses``, names too long for the file system, FIFOs, devices and directories where
a file is read. Outputs get the mode ``open()`` gives (0666 less the umask), not mkstemp's
0600. onnxruntime's own log lines never reach stderr beside ours.

The cases run :func:`eqsat_dnn.cli.main` in this process (``capfd`` sees what onnxruntime's
C++ logger prints, too). A FIFO case would block forever on a version that opens the FIFO:
a watchdog thread unblocks such a reader with an end of file, so that version fails the
test instead of hanging it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.cli import main

LONG = "n" * 300  # longer than any file system's NAME_MAX (255)


def _run(capfd, *args: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as done:  # argparse
        code = done.code
    out, err = capfd.readouterr()
    return code, out, err


def _save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _relu(tmp: Path, shape=(2, 3), name="model.onnx") -> Path:
    return _save(tmp / name, [helper.make_node("Relu", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])


def _symbolic(tmp: Path) -> Path:
    return _relu(tmp, ("N", 4), "symbolic.onnx")


def _fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    stop = threading.Event()
    _WATCHDOGS.append(stop)

    def unblock() -> None:  # a reader that opened the FIFO gets an end of file, not a hang
        while not stop.wait(0.2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.ENXIO, errno.ENOENT):  # no reader (yet), or gone
                    continue
                return
            os.close(fd)

    threading.Thread(target=unblock, daemon=True).start()
    return path


_WATCHDOGS: list[threading.Event] = []


@pytest.fixture(autouse=True)
def _stop_watchdogs():
    yield
    while _WATCHDOGS:
        _WATCHDOGS.pop().set()


def _egraph(tmp: Path, data: object) -> Path:
    path = tmp / "e.json"
    path.write_text(json.dumps(data))
    return path


_NODES = {"a": {"op": "x", "children": [], "eclass": "c", "cost": 1.0}}


def _external_data_fifo(tmp: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    model = tmp / "ext.onnx"
    _save(model, [helper.make_node("MatMul", ["x", "w"], ["y"])],
          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], [weight])
    onnx.save_model(onnx.load(model), model, save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    (tmp / "ext.onnx.data").unlink()
    _fifo(tmp, "ext.onnx.data")
    return model


def _measured_cache_fifo(tmp: Path, monkeypatch) -> None:
    from eqsat_dnn.cost.measured.cache import cache_file

    monkeypatch.setenv("EQSAT_DNN_CACHE", str(tmp / "cache"))
    monkeypatch.delenv("EQSAT_DNN_THREADS", raising=False)
    (tmp / "cache").mkdir()
    path, _ = cache_file(1, tmp / "cache")
    _fifo(path.parent, path.name)


def _folding_fails(tmp: Path) -> Path:
    """Weights only, so export evaluates them in onnxruntime: a Reshape of 12 values to [5, -1]
    (its shape computed, so only running it finds out) fails there, and onnxruntime logs it."""
    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "w"),
             numpy_helper.from_array(np.array([2, -1], np.int64), "s1"),
             numpy_helper.from_array(np.array([3, 0], np.int64), "s2")]
    nodes = [helper.make_node("Add", ["s1", "s2"], ["s"]), helper.make_node("Reshape", ["w", "s"], ["r"]),
             helper.make_node("ReduceSum", ["r"], ["t"], keepdims=0), helper.make_node("Add", ["x", "t"], ["y"])]
    return _save(tmp / "fold.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)


# name: (tmp_path -> argv, exit code, what the one line says); every case also checks that nothing
# was written. ANNOTATE, RULES_FIFO and CACHE_FIFO are filled in by the test.
def _opt(*extra):
    return lambda tmp: ["optimize", _relu(tmp), tmp / "out.onnx", "--extractor", "greedy", *extra]


def _part(*extra, model=None):
    return lambda tmp: ["partition", (model or _relu)(tmp), "-o", tmp / "out.json", "--machine", "cpu", *extra]


def _bench(*extra, models=None, out="results"):
    return lambda tmp: ["bench", *(models(tmp) if models else [_relu(tmp)]), "--out", tmp / out,
                        "--peers", "none", "--runs", "1", "--min-seconds", "0", "--gpu-profile", "none", *extra]


CASES = {
    # dims of 2^40: the check cannot draw such inputs; an int64 overflow is not a dim
    "dim 2^40 by --overwrite-input-shape": (
        lambda tmp: ["optimize", _symbolic(tmp), tmp / "out.onnx", "--overwrite-input-shape", "x:1099511627776,4"],
        2, "too large to check"),
    "dim 2^40 declared by the model": (
        lambda tmp: ["optimize", _relu(tmp, (1 << 40, 4)), tmp / "out.onnx"], 2, "too large to check"),
    "dim past int64": (_opt("--overwrite-input-shape", "x:9223372036854775808,3"), 2, "2^63-1"),
    "wrong-rank override": (_opt("--overwrite-input-shape", "x:2,3,4"), 2, "rank 2"),
    "wrong-rank override, partition": (_part("--overwrite-input-shape", "x:6"), 2, "rank 2"),
    # e-graph files
    "root_eclasses a number": (lambda tmp: ["extract", _egraph(tmp, {"nodes": _NODES, "root_eclasses": 3})],
                               2, "root_eclasses"),
    "root_eclasses a string": (lambda tmp: ["extract", _egraph(tmp, {"nodes": _NODES, "root_eclasses": "c"})],
                               2, "root_eclasses"),
    "root_eclasses an object": (lambda tmp: ["extract", _egraph(tmp, {"nodes": _NODES, "root_eclasses": {}})],
                                2, "root_eclasses"),
    "e-node not an object": (lambda tmp: ["extract", _egraph(tmp, {"nodes": {"a": 3}, "root_eclasses": ["c"]})],
                             2, "malformed node"),
    "e-node cost nan": (lambda tmp: ["extract", _egraph(tmp, {"nodes": {"a": {**_NODES["a"], "cost": "nan"}},
                                                              "root_eclasses": ["c"]})], 2, "cost"),
    "e-node cost negative": (lambda tmp: ["extract", _egraph(tmp, {"nodes": {"a": {**_NODES["a"], "cost": -1}},
                                                                   "root_eclasses": ["c"]})], 2, "cost"),
    # names too long for the file system: the output (3) and the input (2)
    "output name too long": (lambda tmp: ["optimize", _relu(tmp), tmp / f"{LONG}.onnx"], 3, "too long"),
    "example output name too long": (lambda tmp: ["example", tmp / f"{LONG}.onnx"], 3, "too long"),
    "zoo output name too long": (lambda tmp: ["zoo", "nasrnn", "-o", tmp / f"{LONG}.onnx", "--set", "hidden=8"],
                                 3, "too long"),
    "plan name too long": (lambda tmp: ["partition", _relu(tmp), "-o", tmp / f"{LONG}.json"], 3, "too long"),
    "annotation name too long": (_part("--annotate", "ANNOTATE"), 3, "too long"),
    "input name too long": (lambda tmp: ["optimize", tmp / f"{LONG}.onnx", tmp / "out.onnx"], 2, "too long"),
    "e-graph name too long": (lambda tmp: ["extract", tmp / f"{LONG}.json"], 2, "too long"),
    # not-a-number, infinite and absurd floats, wherever a float is read
    "--time-limit nan": (_opt("--time-limit", "nan"), 2, "finite"),
    "--time-limit inf": (_opt("--time-limit", "inf"), 2, "finite"),
    "--memory-limit nan": (_opt("--memory-limit", "nan"), 2, "finite"),
    "--memory-limit inf": (_opt("--memory-limit", "inf"), 2, "finite"),
    "--extract-time-limit nan": (_opt("--extract-time-limit", "nan"), 2, "finite"),
    "--extract-time-limit 1e300": (_opt("--extract-time-limit", "1e300"), 2, "<= 1e+07"),
    "extract --time-limit nan": (lambda tmp: ["extract", _egraph(tmp, {"nodes": _NODES, "root_eclasses": ["c"]}),
                                              "--time-limit", "nan"], 2, "finite"),
    "partition --time-limit nan": (_part("--time-limit", "nan"), 2, "finite"),
    "partition --memory-gb nan": (_part("--memory-gb", "nan"), 2, "finite"),
    "partition --memory-gb inf": (_part("--memory-gb", "inf"), 2, "finite"),
    "partition --memory-gb 1e300": (_part("--memory-gb", "1e300"), 2, "finite"),
    "bench --min-seconds nan": (_bench("--min-seconds", "nan"), 2, "finite"),
    "bench --time-limit inf": (_bench("--time-limit", "inf"), 2, "finite"),
    "bench --extract-time-limit nan": (_bench("--extract-time-limit", "nan"), 2, "finite"),
    # bench: every option checked before any work
    "bench --runs 0": (_bench("--runs", "0"), 2, "--runs"),
    "bench --runs -1": (_bench("--runs", "-1"), 2, "--runs"),
    "bench --min-seconds -1": (_bench("--min-seconds", "-1"), 2, "must be >= 0"),
    "bench --peers unknown": (_bench("--peers", "tvm"), 2, "unknown peer"),
    "bench --gpu-profile cpu": (_bench("--gpu-profile", "cpu"), 2, "--gpu-profile"),
    "bench --gpu-profile unknown": (_bench("--gpu-profile", "abacus"), 2, "abacus"),
    "bench --threads -1": (_bench("--threads", "-1"), 2, "--threads"),
    "bench --threads 10^6": (_bench("--threads", "1000000"), 2, "--threads"),
    "bench --iter-limit -1": (_bench("--iter-limit", "-1"), 2, "must be >= 0"),
    "bench --out name too long": (_bench(out=LONG), 3, "too long"),
    # meshes
    "mesh of 10^20 devices": (_part("--mesh", "100000000000000000000"), 2, "at most 65,536"),
    "mesh 256x257": (_part("--mesh", "256x257"), 2, "at most 65,536"),
    "mesh 0": (_part("--mesh", "0"), 2, "bad mesh"),
    "mesh 2x0": (_part("--mesh", "2x0"), 2, "bad mesh"),
    "--run on 128 local processes": (_part("--mesh", "128", "--run"), 2, "one local process per device"),
    # the other numeric options
    "rules check --seed -1": (lambda tmp: ["rules", "check", "identity-elim", "--seed", "-1"], 2, "must be >= 0"),
    "rules check --jobs -1": (lambda tmp: ["rules", "check", "identity-elim", "--jobs", "-1"], 2, "must be >= 0"),
    "rules check --jobs 10^6": (lambda tmp: ["rules", "check", "identity-elim", "--jobs", "1000000"], 2, "<= 256"),
    "zoo --seed -1": (lambda tmp: ["zoo", "nasrnn", "-o", tmp / "out.onnx", "--seed", "-1"], 2, "must be >= 0"),
    "zoo --set width=nan": (lambda tmp: ["zoo", "resnet50", "-o", tmp / "out.onnx", "--set", "width=nan"],
                            2, "finite"),
    "zoo --set width=-1": (lambda tmp: ["zoo", "resnet50", "-o", tmp / "out.onnx", "--set", "width=-1"],
                           2, ">= 0"),
    "zoo --set layers=-1": (lambda tmp: ["zoo", "bert", "-o", tmp / "out.onnx", "--set", "layers=-1"], 2, ">= 0"),
    # FIFOs, devices, directories where a file is read (refused before they are opened)
    "model a FIFO": (lambda tmp: ["optimize", _fifo(tmp, "in.onnx"), tmp / "out.onnx"], 2, "FIFO"),
    "partition model a FIFO": (lambda tmp: ["partition", _fifo(tmp, "in.onnx"), "-o", tmp / "out.json"], 2, "FIFO"),
    "bench model a FIFO": (_bench(models=lambda tmp: [_fifo(tmp, "in.onnx")]), 2, "FIFO"),
    "external data a FIFO": (lambda tmp: ["optimize", _external_data_fifo(tmp), tmp / "out.onnx"], 2, "FIFO"),
    "e-graph a FIFO": (lambda tmp: ["extract", _fifo(tmp, "e.json")], 2, "FIFO"),
    "rule file a FIFO": (_opt("--rules", "RULES_FIFO"), 5, "FIFO"),
    "measured cost cache a FIFO": (_opt("--cost-model", "measured", "CACHE_FIFO"), 2, "FIFO"),
    "model a device": (lambda tmp: ["optimize", "/dev/zero", tmp / "out.onnx"], 2, "character device"),
    "e-graph a directory": (lambda tmp: ["extract", tmp], 2, "directory"),
    "output a FIFO": (lambda tmp: ["optimize", _relu(tmp), _fifo(tmp, "out.onnx")], 3, "FIFO"),
}


@pytest.mark.parametrize("argv, code, says", CASES.values(), ids=CASES.keys())
def test_one_line_and_the_right_code(tmp_path, capfd, monkeypatch, argv, code, says):
    args = [str(a) for a in argv(tmp_path)]
    if "ANNOTATE" in args:
        args[args.index("ANNOTATE")] = str(tmp_path / f"{LONG}.onnx")
    if "RULES_FIFO" in args:
        args[args.index("RULES_FIFO")] = str(_fifo(tmp_path, "rules.egg"))
    if "CACHE_FIFO" in args:
        args.remove("CACHE_FIFO")
        _measured_cache_fifo(tmp_path, monkeypatch)
    before = {p.name for p in tmp_path.iterdir()}
    started = time.perf_counter()
    result, out, err = _run(capfd, *args)
    assert result == code, err
    assert err.count("\n") == 1 and err.startswith("eqsat-dnn") and "error:" in err, f"not one line: {err!r}"
    assert "internal error" not in err and "Traceback" not in err
    assert says.lower() in err.lower(), err
    assert not out
    assert time.perf_counter() - started < 60
    written = {p.name for p in tmp_path.iterdir()} - before - {"cache"}
    assert not written, f"written on failure: {written}"
    if "--out" in args:
        assert not (tmp_path / "results").exists()


def test_bench_needs_matplotlib_before_any_work(tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: importing it fails
    started = time.perf_counter()
    code, out, err = _run(capfd, *[str(a) for a in _bench()(tmp_path)])
    assert code == 2 and err.count("\n") == 1, err
    assert 'pip install "eqsat-dnn[bench]"' in err and "matplotlib" in err
    assert not out and not (tmp_path / "results").exists()
    assert time.perf_counter() - started < 5  # refused up front, not after timing anything


# -- onnxruntime's log lines ------------------------------------------------------------------------


def test_constant_folding_prints_no_onnxruntime_log(tmp_path, capfd):
    source = _folding_fails(tmp_path)
    out = tmp_path / "out.onnx"
    code, _, err = _run(capfd, "optimize", source, out, "--no-check", "--quiet")
    assert code == 0 and err == "", err  # the nodes are kept, and onnxruntime says nothing
    code, _, err = _run(capfd, "optimize", source, tmp_path / "out2.onnx", "--quiet")
    assert code == 2 and err.count("\n") == 1, err  # the check's own error, alone


def test_constant_folding_session_logs_nothing(monkeypatch):
    import onnxruntime as ort

    from eqsat_dnn.io.onnx_out import to_onnx
    from eqsat_dnn.io.onnx_in import load_model

    seen = []
    real = ort.InferenceSession

    def spy(model, options=None, *args, **kwargs):
        seen.append(options.log_severity_level)
        return real(model, options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")]
    nodes = [helper.make_node("Relu", ["w"], ["r"]), helper.make_node("Add", ["x", "r"], ["y"])]
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 3]) for n in "xy")
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    to_onnx(load_model(model))  # Relu(w) is a weight expression: evaluated once, in onnxruntime
    assert seen and all(level == 4 for level in seen)  # 4: fatal only


# -- the mode of written files ----------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=["umask 022", "umask 027", "umask 002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_get_the_mode_open_gives(tmp_path, capfd, umask):
    expected = 0o666 & ~umask
    source = _relu(tmp_path)
    for argv, outputs in [
        (["example", tmp_path / "example.onnx"], ["example.onnx"]),
        (["zoo", "nasrnn", "-o", tmp_path / "zoo.onnx", "--set", "hidden=8", "--set", "steps=1"], ["zoo.onnx"]),
        (["optimize", source, tmp_path / "opt.onnx", "--extractor", "greedy", "--quiet"], ["opt.onnx"]),
        (["partition", source, "--mesh", "2", "--machine", "cpu", "-o", tmp_path / "plan.json",
          "--annotate", tmp_path / "sharded.onnx", "--quiet"], ["plan.json", "sharded.onnx"]),
    ]:
        code, _, err = _run(capfd, *[str(a) for a in argv])
        assert code == 0, err
        for name in outputs:
            assert _mode(tmp_path / name) == expected, f"{name}: {oct(_mode(tmp_path / name))}"


def test_external_data_and_bench_results_get_the_mode_open_gives(tmp_path, monkeypatch, umask):
    from eqsat_dnn import bench
    from eqsat_dnn.io import onnx_out
    from eqsat_dnn.models.examples import attention_block

    expected = 0o666 & ~umask
    monkeypatch.setattr(onnx_out, "EXTERNAL_DATA_THRESHOLD", 0)  # any model goes to external data
    onnx_out.save_model(attention_block(), tmp_path / "big.onnx")
    assert _mode(tmp_path / "big.onnx") == expected and _mode(tmp_path / "big.onnx.data") == expected
    results = [bench.BenchResult(model="m", family="f", nodes_before=1)]
    written = bench.write_results(results, tmp_path / "results", bench.metadata(bench.BenchSettings(), 0.0, 0.0))
    assert {p.name for p in written} == {"bench.md", "bench.csv", "bench.json", "bench.png"}
    assert all(_mode(p) == expected for p in written), [oct(_mode(p)) for p in written]


def test_measured_cache_gets_the_mode_open_gives(tmp_path, umask):
    from eqsat_dnn.cost.measured.cache import Cache

    cache = Cache(tmp_path / "cache.json", {"cpu": "test"})
    cache.put("k", 1.0)
    cache.save()
    assert _mode(tmp_path / "cache.json") == 0o666 & ~umask


def test_a_name_at_the_limit_is_written(tmp_path, capfd):
    """A 255-byte name is legal: the temporary file beside it must not be longer than the limit."""
    out = tmp_path / ("m" * 250 + ".onnx")
    code, _, err = _run(capfd, "example", out)
    assert code == 0, err
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
