"""The package's shape: data flows one way, no import circles, views only for the CLI.

Layers, highest first (README, "Architecture"): ``cli`` → ``views/`` and ``autopilot`` →
``search/`` → ``run/`` → ``rules/`` and ``notes`` → ``envs/``, ``jsonio``, ``errors``,
``shipped``. A module imports its own layer or lower, never higher.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "drex_opt"

LAYERS = {  # module prefix -> layer; the longest matching prefix decides
    "drex_opt": 0, "drex_opt.errors": 0, "drex_opt.jsonio": 0, "drex_opt.shipped": 0, "drex_opt.envs": 0,
    "drex_opt.rules": 1, "drex_opt.notes": 1,
    "drex_opt.run": 2,
    "drex_opt.search": 3,
    "drex_opt.autopilot": 4, "drex_opt.views": 4,
    "drex_opt.cli": 5,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported drex_opt module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, nested) for a in child.names if a.name.startswith("drex_opt"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("drex_opt"):
                for alias in child.names:
                    candidate = f"{child.module}.{alias.name}"
                    found.append((candidate if candidate in MODULES else child.module, child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return found


GRAPH = {name: sorted({target for target, _, _ in imports(path) if target != name}) for name, path in MODULES.items()}


def test_every_import_names_a_module_of_the_package():
    unknown = [(m, t) for m, targets in GRAPH.items() for t in targets if t not in MODULES]
    assert unknown == []


def test_no_import_circles():
    # Tarjan-free: a depth-first search that reports the first back edge as the circle.
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in GRAPH.get(node, []):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in GRAPH:
        if node not in state:
            walk(node)
    assert circles == [], " ; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_imports(module):
    upward = [t for t in GRAPH[module] if layer(t) > layer(module)]
    assert upward == [], f"{module} (layer {layer(module)}) imports {upward}"


def test_views_are_imported_by_the_cli_only():
    users = sorted(m for m, targets in GRAPH.items()
                   if any(t.startswith("drex_opt.views") for t in targets)
                   and not m.startswith(("drex_opt.views", "drex_opt.cli")))
    assert users == []


# The one lazy import outside the CLI, and why: a warm child imports the training entry point
# in the forked process; importing it in the study's own process would import PufferLib
# there, whose import writes a ``resources`` link into the working directory (a refused
# study must write nothing) and costs the study's start-up time.
ALLOWED_LAZY = {("drex_opt.run.forkserver", "drex_opt.run.train")}


def test_lazy_imports_of_our_modules_belong_to_the_cli():
    """Elsewhere an import inside a function hides the dependency graph."""
    lazy = [f"{m}:{line} {t}" for m, path in MODULES.items() if m != "drex_opt.cli"
            for t, line, nested in imports(path) if nested and (m, t) not in ALLOWED_LAZY]
    assert lazy == []


def test_the_layer_table_knows_every_module():
    for module in MODULES:
        layer(module)


def test_a_circle_is_caught(tmp_path, monkeypatch):
    """The circle check itself: a made-up graph with a circle fails it."""
    monkeypatch.setattr(__import__(__name__), "GRAPH", {"a": ["b"], "b": ["c"], "c": ["a"]})
    with pytest.raises(AssertionError, match="a -> b -> c -> a"):
        test_no_import_circles()
