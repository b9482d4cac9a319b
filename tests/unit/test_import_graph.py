"""No file-level import loop between the project's modules.

The graph is read from the source (``ast``), not by importing anything: an edge ``a -> b`` is an import
at module level of ``a`` (including under ``if``/``try``) that names ``b`` or something in it. Imports
inside functions are the sanctioned way for a module to reach one that imports it back (they run after
both are loaded) and are not edges. A module's own parent packages are not edges either: Python loads
them first whatever the module says.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Import roots: the repository (ml, workers, bench, tests) and platform/ (the Django apps).
PACKAGES = {ROOT: ("ml", "workers", "bench"), ROOT / "platform": None}


def project_modules() -> dict[str, Path]:
    modules = {}
    for base, tops in PACKAGES.items():
        names = tops or sorted(p.name for p in base.iterdir() if (p / "__init__.py").is_file())
        for top in names:
            for path in (base / top).rglob("*.py"):
                if "migrations" in path.parts:
                    continue
                parts = list(path.relative_to(base).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = path
    return modules


def _module_level_nodes(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            yield from ast.walk(node)
        else:
            yield node


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    named = set()
    for node in _module_level_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            named.add(module)
            named.update(f"{module}.{alias.name}" for alias in node.names)
    edges = set()
    for target in named:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            edges.add(target)
    return edges


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_checker_finds_a_loop():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_file_level_import_loop_between_project_modules():
    modules = project_modules()
    assert {"ml.training.trainer", "rounds.workflow", "workers.celery_app"} <= set(modules)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "rounds.config_schema" in graph["rounds.config"]  # edges are read
    assert import_cycles(graph) == []
