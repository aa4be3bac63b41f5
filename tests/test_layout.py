"""The package's shape, checked: no import knots, small modules, Docker and views kept apart.

Every import counts, the ones inside functions too (a function-level import is still a
dependency); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "magics" / "celltrain"
MAX_KNOT = 2
MAX_LINES = 400
# Modules allowed past MAX_LINES because they do one thing; each says which.
ONE_THING: dict[str, str] = {}
# The layer that draws (widgets, charts, HTML and text tables) and the layers above it.
VIEWS = "celltrain.views"
ABOVE_VIEWS = ("celltrain.views", "celltrain.magics", "celltrain.cell_magic", "celltrain.cli",
               "celltrain.server", "celltrain.demo", "celltrain.azureml")
DOCKER_TARGET = "celltrain.targets.docker"
# In-container code: the standard library only (and cloudpickle for cells), Python 3.8.
RUNTIME = "celltrain.runtime"
RUNTIME_THIRD_PARTY = {"cloudpickle"}
# The deployment server runs the model with the runtime the image brings: these, imported
# inside functions only, in the serving modules only.
RUNTIME_MODEL_RUNTIMES = {"numpy", "onnxruntime", "torch"}
RUNTIME_SERVING = "celltrain.runtime.serve"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str) -> list[tuple[str, list[str], int, bool]]:
    """(imported module, names, line, at module level) for every import that can run."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_one(sub, top)
                continue
            visit_one(child, top)

    def visit_one(child, top: bool):
        if isinstance(child, ast.Import):
            for alias in child.names:
                out.append((alias.name, [], child.lineno, top))
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = package.split(".")
                base = base[:len(base) - (child.level - 1)]
                target = ".".join(base + ([child.module] if child.module else []))
            else:
                target = child.module or ""
            out.append((target, [a.name for a in child.names], child.lineno, top))
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(child, False)
        else:
            visit(child, top)

    visit(tree, True)
    return out


def internal_edges(name: str) -> set[str]:
    """The celltrain modules ``name`` imports (``from .x import y`` with y a module counts y)."""
    edges = set()
    for target, names, _, _ in imports(name):
        if not target.startswith("celltrain"):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        edges.update(subs)
        if len(subs) < len(names) or not names:
            if target in MODULES:
                edges.add(target)
    edges.discard(name)
    return edges


def knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def strongconnect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    return out


def test_no_import_knot_is_wider_than_two_modules():
    wide = [k for k in knots({m: internal_edges(m) for m in MODULES}) if len(k) > MAX_KNOT]
    assert not wide, f"modules that import each other in a circle: {wide}"


def test_the_knot_finder_finds_a_circle_and_only_that():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert knots(graph) == [["a", "b", "c"]]


def test_function_level_imports_count_and_type_checking_ones_do_not():
    edges = internal_edges("celltrain.workspace") if "celltrain.workspace" in MODULES else set()
    assert edges, "the workspace module imports celltrain modules"
    found = {t for t, _, _, top in imports("celltrain.run") if not top}
    assert found, "celltrain.run has function-level imports that the checker must see"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES or name in ONE_THING, (
        f"{name} has {lines} lines: split it by job, or say in ONE_THING why it is one thing")


def test_no_private_name_is_imported_across_modules():
    found = []
    for name in MODULES:
        for target, names, line, _ in imports(name):
            if target.startswith("celltrain"):
                found += [f"{name}:{line} imports {target}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
    assert not found, "\n".join(found)


def test_only_the_docker_target_imports_the_docker_sdk():
    found = [f"{name}:{line}" for name in MODULES for target, _, line, _ in imports(name)
             if (target == "docker" or target.startswith("docker."))
             and not (name == DOCKER_TARGET or name.startswith(DOCKER_TARGET + "."))]
    assert not found, f"the docker SDK is imported outside {DOCKER_TARGET}: {found}"


def test_the_core_never_imports_views_at_module_level():
    found = [f"{name}:{line} imports {target}" for name in MODULES
             if not name.startswith(ABOVE_VIEWS)
             for target, _, line, top in imports(name)
             if top and (target == VIEWS or target.startswith(VIEWS + "."))]
    assert not found, "\n".join(found)


def test_the_runtime_needs_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names)
    runtime = [m for m in MODULES if m == RUNTIME or m.startswith(RUNTIME + ".")]
    assert runtime, f"{RUNTIME} is missing"
    found = []
    for name in runtime:
        for target, _, line, top in imports(name):
            root = target.split(".")[0]
            if (not top and root in RUNTIME_MODEL_RUNTIMES
                    and name.startswith(RUNTIME_SERVING)):
                continue
            if target.startswith("celltrain"):
                if not (target == RUNTIME or target.startswith(RUNTIME + ".")
                        or target == "celltrain"):
                    found.append(f"{name}:{line} imports {target}")
            elif root not in stdlib and root not in RUNTIME_THIRD_PARTY and root != "__future__":
                found.append(f"{name}:{line} imports {target}")
    assert not found, "\n".join(found)


def test_the_runtime_parses_as_python_3_8():
    for name, path in MODULES.items():
        if name == RUNTIME or name.startswith(RUNTIME + "."):
            ast.parse(path.read_text(), str(path), feature_version=(3, 8))
