"""The layers of the house (DESIGN.md): every tinyevo module imports only those below it or
beside it, no import circle, and only the backend imports CuPy.

The imports are read from the source (``ast``, function-level imports included), so an import
that only runs on some path counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "tinyevo"

# From the bottom up; a module may import its own layer and those below. The package
# tinyevo/__init__.py is the facade over everything; only the command line sits above it.
LAYERS = [
    ("version", ["tinyevo._version"]),
    ("backend", ["tinyevo.backend", "tinyevo._kernels"]),
    ("substrate", ["tinyevo.layers", "tinyevo.losses", "tinyevo.metrics",
                   "tinyevo.optimizers"]),
    ("graph", ["tinyevo.graph"]),
    ("search", ["tinyevo.search"]),
    ("evolution", ["tinyevo.evolution"]),
    ("app", ["tinyevo.app"]),
    ("facade", ["tinyevo"]),
    ("cli", ["tinyevo.cli"]),
]


def _module_names() -> dict[str, Path]:
    """Every tinyevo module by dotted name (a package by its ``__init__.py``)."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _imports(name: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import in module ``name``, tinyevo or not.

    ``from package import x`` counts as importing the submodule ``package.x`` where there is
    one, else the package itself (where ``x`` is defined or re-exported)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


def _tinyevo_graph() -> dict[str, list[tuple[str, int]]]:
    """Module -> the tinyevo modules it imports, with the line of each import."""
    graph = {}
    for name in MODULES:
        edges = []
        for target, line in _imports(name):
            while target and target not in MODULES and "." in target:
                target = target.rpartition(".")[0]        # import a.b.c of a name in a.b
            if target in MODULES and target != name:
                edges.append((target, line))
        graph[name] = edges
    return graph


def _layer(name: str) -> int:
    """The index in LAYERS of module ``name``: its longest matching prefix."""
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    assert best is not None, f"{name} belongs to no layer of LAYERS; add it there"
    return best


def _where(name: str, line: int) -> str:
    return f"{MODULES[name].relative_to(ROOT.parent)}:{line}"


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_upward_import():
    upward = []
    for name, edges in _tinyevo_graph().items():
        for target, line in edges:
            if _layer(target) > _layer(name):
                upward.append(f"{_where(name, line)}: {name} ({LAYERS[_layer(name)][0]}) "
                              f"imports {target} ({LAYERS[_layer(target)][0]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = {name: sorted({t for t, _ in edges}) for name, edges in _tinyevo_graph().items()}
    cycles, state = [], {}                   # state: 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [name, target]))
            elif target not in state:
                visit(target, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_backend_imports_cupy():
    offenders = [_where(name, line) for name in MODULES for target, line in _imports(name)
                 if target.split(".")[0] in ("cupy", "cupyx") and name != "tinyevo.backend"]
    assert not offenders, f"CuPy imported outside tinyevo/backend.py: {offenders}"


@pytest.mark.parametrize("source, expected", [
    ("from tinyevo import __version__", "tinyevo"),
    ("from tinyevo import backend", "tinyevo.backend"),
    ("from . import candidate", "tinyevo.evolution.candidate"),
    ("from ..graph.vertices import Vertex", "tinyevo.graph.vertices"),
    ("def f():\n    import tinyevo.app.fitting", "tinyevo.app.fitting"),
])
def test_imports_are_resolved(tmp_path, monkeypatch, source, expected):
    """The reader of imports itself: absolute, relative and function-level imports."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "tinyevo.evolution.probe", path)
    assert [t for t, _ in _imports("tinyevo.evolution.probe")] == [expected]


def test_no_name_hides_a_module():
    """``pkg.name`` is the module ``pkg/name.py`` wherever both exist: a function of the same name
    exported by the package would hide the module from ``import pkg.name as m``."""
    import importlib
    import sys
    import types

    for name in _module_names():
        importlib.import_module(name)
    hidden = []
    for name in _module_names():
        parent, _, child = name.rpartition(".")
        if parent:
            obj = getattr(sys.modules[parent], child, None)
            if not isinstance(obj, types.ModuleType):
                hidden.append(f"{parent}.{child} is a {type(obj).__name__}")
    assert not hidden, hidden
