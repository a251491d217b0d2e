"""The package's shape: no import cycle between its modules, no module too long to read, and an
``import eqsat_dnn`` that stays light.

Imports are read from the source (``ast``), function-level ones included (a cycle hidden in a
function is still a cycle); those under ``if TYPE_CHECKING:`` are not imports at run time and do
not count, nor does the import of a package that importing one of its modules implies.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eqsat_dnn"

def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter that imports this checkout's package."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE.parent),
                                                                    os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]


MAX_LINES = 800
"""The longest a module may be."""

LONG_MODULES_LEFT: set[str] = set()
"""Modules over :data:`MAX_LINES` that are being split (none: extract/ilp.py and verify.py are
packages now)."""


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every import statement that runs (anywhere, but not under ``if TYPE_CHECKING:``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b` imports the module a.b when there is one, else a name of a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_import_reader_sees_what_runs(tmp_path):
    """Function-level imports count, TYPE_CHECKING ones do not, relative ones resolve."""
    code = tmp_path / "m.py"
    code.write_text("from typing import TYPE_CHECKING\n"
                    "from . import b\n"
                    "if TYPE_CHECKING:\n    from pkg.c import X\n"
                    "def f():\n    from pkg.d.e import g\n    import pkg.f.h\n")
    known = {name: code for name in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.d.e", "pkg.f")}
    assert imports_of("pkg.a", code, known) == {"pkg.b", "pkg.d.e", "pkg.f"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "eqsat_dnn.cost.roofline" in graph["eqsat_dnn.cost.measured.model"]  # the reader reads
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_over_800_lines():
    too_long = {name: n for name, path in modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_LINES
                and not (name in LONG_MODULES_LEFT and path.name != "__init__.py")}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


@pytest.mark.parametrize("heavy", ["torch", "eqsat_dnn.partition", "eqsat_dnn.cost.measured", "onnxruntime"])
def test_import_eqsat_dnn_stays_light(heavy):
    """``import eqsat_dnn`` loads neither torch nor the partitioner, the measured cost model or
    onnxruntime: they come when first used."""
    run_python(f"import sys, eqsat_dnn; assert {heavy!r} not in sys.modules, 'eqsat_dnn imports {heavy}'")


def test_the_lazy_names_of_eqsat_dnn_still_resolve():
    code = ("import sys, eqsat_dnn; from eqsat_dnn import partition_model, run_plan, get_mesh, DeviceMesh, Plan; "
            "import eqsat_dnn.partition as p; assert partition_model is p.partition and run_plan is p.run_plan; "
            "assert 'torch' not in sys.modules")
    run_python(code)
