"""The import graph of the project points only down (ARCHITECTURE.md, "Jobs and CLI").

Every import counts: module level, inside functions, under ``TYPE_CHECKING``. A cycle between
project modules, or a stage module importing the runner, the run directory, an engine, the job
layer, an entry point or another stage, fails here with the offending path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curation", "pretrain", "schemas", "jobs")

# What a stage module may import from the project (besides third-party packages).
STAGE_MAY_IMPORT = (
    "curation.stages.base",
    "curation.io",
    "curation.storage",  # the filesystem layer io sits on (local paths and URIs)
    "curation.imaging",
    "curation.config",
    "curation.safe_names",
    "curation.readers",
    "curation.models",
    "curation.index",
    "schemas",
    "pretrain",
)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports: ``from a.b import c`` counts as ``a.b.c`` when that is a
    module, else as ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
            targets = [t for t in targets if t in modules][:1] or [module]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
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
                    found.append(sorted(component))
    return found


def test_the_walker_sees_imports_inside_functions_and_type_checking(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from curation.runner import run_stage\n"
        "def f():\n    import curation.jobs.config\n    from curation.readers import image_bytes\n"
    )
    modules = project_modules()
    found = imported_modules("curation.stages.fake", source, modules)
    assert found == {"curation.runner", "curation.jobs.config", "curation.readers.image_bytes"}


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_stages_import_only_what_sits_below_them(graph):
    offending = {}
    for name, imports in graph.items():
        if not name.startswith("curation.stages.") or name == "curation.stages.base":
            continue
        bad = sorted(
            target
            for target in imports
            if not any(target == ok or target.startswith(ok + ".") for ok in STAGE_MAY_IMPORT)
        )
        if bad:
            offending[name] = bad
    assert offending == {}


def test_nothing_below_the_job_layer_imports_it(graph):
    # Entry points (the CLI, the HTTP service, cluster jobs) and the job layer.
    upper = ("curation.jobs", "curation.commands", "curation.cli", "curation.serve", "jobs")
    lower = [n for n in graph if not n.startswith(upper) and n != "curation"]
    offending = {
        name: sorted(t for t in graph[name] if t.startswith(upper))
        for name in lower
        if any(t.startswith(upper) for t in graph[name])
    }
    assert offending == {}
