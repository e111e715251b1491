"""The package's modules import each other without a circle, counting imports inside functions too:
a function-level import hides a cycle from Python's start-up but not from a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mathforge

ROOT = Path(mathforge.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name; a package is named by its `__init__.py`."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]  # `from . import x` in a package's __init__ means the package
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported(importer: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules `importer` imports anywhere in its file (functions included).

    `import a.b.c` and `from a.b import c` (c a module) run a.b.c and the inits of a and a.b: edges to
    each. An init that is an ancestor of the importer is already running when the importer runs, so
    that implicit edge is left out; a name taken from an init (`from a.b import f`) is a real edge."""
    targets: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets |= {alias.name} | _ancestors(alias.name) - _ancestors(importer)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, importer, is_package)
            submodules = {f"{base}.{a.name}" for a in node.names} & modules
            names_from_init = len(submodules) < len(node.names)
            targets |= submodules | {base} | _ancestors(base)
            if not names_from_init:  # only submodules named: the init is run but not depended on
                targets -= _ancestors(importer) | {importer}
            else:
                targets -= _ancestors(importer) - {base}
    return (targets & modules) - {importer}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imported(name, path, set(names)) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_edges_are_resolved(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "s").mkdir(parents=True)
    for name in ("__init__.py", "m.py", "s/__init__.py", "s/x.py", "s/y.py"):
        (pkg / name).write_text("")
    (pkg / "m.py").write_text("def f():\n    from p.s import x\n")
    (pkg / "s/x.py").write_text("from . import y\nfrom .. import m\n")
    (pkg / "s/y.py").write_text("from p.s import helper\n")
    (pkg / "s/__init__.py").write_text("from .y import helper\n")
    modules = {"p", "p.m", "p.s", "p.s.x", "p.s.y"}
    assert imported("p.m", pkg / "m.py", modules) == {"p.s", "p.s.x"}
    assert imported("p.s.x", pkg / "s/x.py", modules) == {"p.s.y", "p.m"}
    assert imported("p.s.y", pkg / "s/y.py", modules) == {"p.s"}  # a name from its own init: a real edge
    assert imported("p.s", pkg / "s/__init__.py", modules) == {"p.s.y"}


def test_no_import_cycle():
    graph = import_graph()
    assert {"mathforge.quality", "mathforge.quality.coreset"} <= graph["mathforge.synth.pipeline"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_cycle_between_subpackages():
    """Nor do the subpackages (synth, quality, eval, ...) and top-level modules, taken whole: synthesis
    uses quality's judge and core-set selection, so quality must not reach back into synth."""
    def top(name: str) -> str:
        return ".".join(name.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        graph.setdefault(top(name), set()).update(top(t) for t in targets if top(t) != top(name))
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between subpackages: " + " -> ".join(cycle)
