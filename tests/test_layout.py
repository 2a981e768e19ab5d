"""The package's architecture, checked: each module belongs to a floor, imports only
its own floor or the floors below, and no import cycle exists inside the package."""

from __future__ import annotations

import ast
from pathlib import Path

import d2lcore

PACKAGE = Path(d2lcore.__file__).parent

#: The floors, lowest first (the README's layout table and the package docstring say
#: the same). A new module must be placed here.
FLOORS: dict[str, tuple[str, ...]] = {
    "foundation": ("device", "profile", "datafiles", "download", "data", "pipeline", "models",
                   "conv", "init", "metrics", "step", "train"),
    "runs": ("cache", "keys", "grid", "config", "stacks", "sequential_stack", "batched",
             "stack_choice", "sweep"),
    "figures": ("figure_page", "figure_text", "plotting", "sliders", "tiles", "widgets"),
    "topics": ("polynomial", "surface", "optim", "diagnostics", "modern_cnn", "attention",
               "sequence_tasks", "transformer", "heads", "checkpoint", "probe", "finetune",
               "playground_data", "playground", "playground_figure", "lr_range"),
}
FLOOR_OF = {module: i for i, modules in enumerate(FLOORS.values()) for module in modules}


def imports_of(path: Path) -> set[str]:
    """The modules of ``path``'s package that it imports (at any place: top level,
    inside a function, under ``TYPE_CHECKING``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "d2lcore":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("d2lcore."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("d2lcore."))  # fmt: skip
    return {m for m in found if (path.parent / f"{m}.py").is_file()} - {path.stem}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in package.glob("*.py") if p.stem != "__init__"}


def find_cycle(deps: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``deps`` (a module -> the modules it imports), or ``None``."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for dep in sorted(deps.get(module, ())):
            cycle = visit(dep, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(deps):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_every_module_has_a_floor() -> None:
    unplaced = sorted(set(graph()) - set(FLOOR_OF))
    assert not unplaced, f"place these modules in a floor of tests/test_layout.py: {unplaced}"


def test_imports_go_only_downward() -> None:
    names = list(FLOORS)
    upward = [f"{m} ({names[FLOOR_OF[m]]}) imports {dep} ({names[FLOOR_OF[dep]]})"
              for m, deps in graph().items() for dep in deps
              if FLOOR_OF[dep] > FLOOR_OF[m]]  # fmt: skip
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_a_cycle_under_type_checking(tmp_path: Path) -> None:
    """Not vacuous: a cycle through a ``TYPE_CHECKING`` import is found."""
    (tmp_path / "a.py").write_text("from d2lcore.b import x\n")
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from d2lcore.a import y\n"
    )
    (tmp_path / "c.py").write_text("import torch\nfrom d2lcore import a\n")
    deps = graph(tmp_path)
    assert deps == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert find_cycle(deps) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
