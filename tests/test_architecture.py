"""The layers of the README's Architecture section, checked on the imports of every module (read
from the source, so a lazy import inside a function counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The CLI and the user tools sit on top and may name a kind's helpers (`bench perf gpu` scores
# like the lens-finding kind and prints its columns; `bench predict` predicts lens-model
# parameters as the modeling kind does).
CORE_USERS_OF_KINDS = {"bench/cli.py"}


def imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """The lensbench modules ``path`` imports (``lensbench.bench.tasks``, ...)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "lensbench"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lensbench"))
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["datasets", "baselines", "deep"])
def test_lower_layers_never_import_the_bench(folder):
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                                  if m.startswith("lensbench.bench"))
                 for p in modules(folder)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_datasets_import_no_method():
    offenders = {str(p.relative_to(ROOT)): sorted(
        m for m in imports(p) if m.startswith(("lensbench.baselines", "lensbench.deep")))
        for p in modules("datasets")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_bench_core_names_no_kind():
    """The core finds a kind through bench/kinds.py's registry, by the task's kind; it never
    imports a kind's module (which would also make an import circle)."""
    core = [p for p in (ROOT / "bench").glob("*.py")  # bench/tools/ and bench/suites/ excluded
            if str(p.relative_to(ROOT)) not in CORE_USERS_OF_KINDS]
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                                  if m.startswith("lensbench.bench.suites"))
                 for p in core}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nothing_below_the_user_tools_imports_them():
    """bench/tools/ (scan, inspect page, predict, perf) sits on top: only the CLI and the tools
    themselves import it."""
    below = [p for folder in ("datasets", "baselines", "deep", "bench") for p in modules(folder)
             if not str(p.relative_to(ROOT)).startswith("bench/tools/")
             and str(p.relative_to(ROOT)) != "bench/cli.py"]
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                                  if m.startswith("lensbench.bench.tools"))
                 for p in below}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("folders, lazy", [
    (("bench", "baselines", "deep", "datasets"), False),  # module-level imports, everywhere
    (("bench",), True),  # the bench layers, lazy imports inside functions too
])
def test_no_import_circles(folders, lazy):
    """Imports between lensbench modules form no cycle."""
    graph = {}
    for path in ROOT.glob("*/**/*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] not in folders:
            continue
        name = "lensbench." + ".".join(relative.with_suffix("").parts)
        name = name.removesuffix(".__init__")
        graph[name] = imports(path, module_level_only=not lazy)
    graph = {name: {m for m in targets if m in graph and m != name}
             for name, targets in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target] if target in trail else [target]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
