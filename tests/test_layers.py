"""The architecture as a rule the build enforces: which layer may import which, and no import cycles.

Every `import` of our packages counts, function-local ones included (they defer loading, they do
not change the dependency). README "Architecture" draws the same layers.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

from tests.conftest import ROOT

PACKAGES = ("pipelines", "trainer", "transforms")

# layer -> the layers it may import (itself included where listed)
ALLOWED = {
    "core": {"core"},
    "transforms": {"core", "transforms"},
    "trainer": {"core", "transforms", "trainer"},
    "stage": {"core", "transforms", "trainer", "stage"},   # its own modules only (checked below)
    "tools": {"core", "tools"},
    "cli": {"core", "transforms", "trainer", "stage", "tools", "cli"},
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("trainer", "transforms"):
        return parts[0]
    if len(parts) == 1:
        return "cli"
    return {"core": "core", "stages": "stage", "tools": "tools", "cli": "cli"}[parts[1]]


def stage_of(module: str) -> str | None:
    """pipelines.stages.preprocess.rows -> "preprocess"; pipelines.stages.embed -> "embed"."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["pipelines", "stages"] else None


def imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """Our modules `path` imports (a `from package import module` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES and name in modules)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imports(path, modules) - {name} for name, path in modules.items()}


def test_layers_import_only_what_they_may(graph):
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            if layer(target) not in ALLOWED[layer(module)]:
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
            elif layer(module) == layer(target) == "stage" and stage_of(module) != stage_of(target):
                wrong.append(f"stage {module} imports another stage: {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles(graph):
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2
    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_kernel_loads_neither_tensorflow_nor_beam():
    """Read-only commands import the kernel; it must stay fast to load."""
    heavy = ("tensorflow", "tensorflow_transform", "tfx_bsl", "apache_beam")
    offenders = []
    for name, path in our_modules().items():
        if layer(name) != "core" or name.endswith("beam_runner"):
            continue
        for node in ast.parse(path.read_text()).body:   # module level only: local imports are deferred
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{name} imports {n}" for n in names if n.split(".")[0] in heavy]
    assert not offenders, offenders


def test_the_rule_catches_a_violation():
    assert layer("pipelines.stages.embed") == "stage" and "tools" not in ALLOWED["stage"]
    assert layer("pipelines.tools.align") == "tools" and "stage" not in ALLOWED["tools"]
    assert stage_of("pipelines.stages.preprocess.rows") != stage_of("pipelines.stages.embed")
