"""One-way rooms: the package's import graph has no cycle and no arrow from a lower room up.

Imports are read from the source with `ast`, including those inside functions (a function-level
import is still a dependency, only a hidden one); imports under `if TYPE_CHECKING:` count for the
rooms but not for cycles, since they never run. Adding a module is one line in ROOMS.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "rmswatch"

# (rank, room, module prefixes), lowest first. A module may import its own room and any room of
# a lower rank; rooms of the same rank know nothing of each other. A prefix covers the module and
# its submodules (the longest prefix wins), except "rmswatch", which is the package face only.
ROOMS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "leaves", ("rmswatch._validation", "rmswatch._limits", "rmswatch._ports",
                   "rmswatch.catalogue")),
    # The record dataclasses are the vocabulary hooks, sinks and the store speak (no torch, only
    # the catalogue's histogram edges): their own room, though they live in trainer_hooks/.
    (1, "records", ("rmswatch.trainer_hooks.records",)),
    (2, "trainer_hooks", ("rmswatch.trainer_hooks",)),
    (2, "store", ("rmswatch.store",)),
    (3, "collectors", ("rmswatch.collectors",)),
    (3, "checkpoint", ("rmswatch.checkpoint",)),
    # watch() wires hooks to the sinks; config is the composition root of the alerting side
    (4, "watch", ("rmswatch._watch",)),
    (4, "alerting", ("rmswatch.alerting", "rmswatch.config")),
    (5, "app", ("rmswatch.app",)),
    # the public face, `rmswatch/__init__.py`: what a user imports, so what the rooms above use
    (6, "api", ("rmswatch",)),
    (7, "integrations", ("rmswatch.integrations",)),
    (7, "entry points", ("rmswatch.server", "rmswatch.cli", "rmswatch.commands",
                         "rmswatch.generators", "rmswatch.demo", "rmswatch.__main__",
                         "rmswatch.wsgi")),
)  # fmt: skip

# Modules that may write to stdout/stderr: what a person runs. Everything else logs or returns.
MAY_PRINT = (
    "rmswatch.cli",
    "rmswatch.commands",
    "rmswatch.generators",
    "rmswatch.demo",
    "rmswatch.server",
    "rmswatch.app.report",  # report_command, the `rmswatch report` command (views' issue 12)
)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    type_checking: bool


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        guarded = type_checking or (isinstance(child, ast.If) and _is_type_checking(child.test))
        yield child, guarded
        yield from _walk(child, guarded)


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = []
    for node, type_checking in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # `from rmswatch import catalogue` imports the module rmswatch.catalogue
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            ]
        found.extend(
            Import(module, target, getattr(node, "lineno", 0), type_checking)
            for target in targets
            if (target == "rmswatch" or target.startswith("rmswatch.")) and target != module
        )
    return found


def room_of(module: str) -> tuple[int, str]:
    matches = [
        (len(prefix), rank, room)
        for rank, room, prefixes in ROOMS
        for prefix in prefixes
        if module == prefix or (prefix != "rmswatch" and module.startswith(prefix + "."))
    ]
    if not matches:
        raise AssertionError(f"{module} is in no room: add it to ROOMS in {__file__}")
    _, rank, room = max(matches)
    return rank, room


ALL_IMPORTS = [edge for module in MODULES for edge in imports_of(module)]


def test_every_module_is_in_a_room() -> None:
    for module in MODULES:
        room_of(module)


def test_no_module_imports_a_higher_room_or_a_sibling_room() -> None:
    wrong = []
    for edge in ALL_IMPORTS:
        (rank, room), (target_rank, target_room) = room_of(edge.source), room_of(edge.target)
        if room != target_room and target_rank >= rank:
            wrong.append(
                f"{edge.source}:{edge.line} ({room}) imports {edge.target} ({target_room})"
            )
    assert not wrong, "imports against the rooms' order:\n" + "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def runtime_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for edge in ALL_IMPORTS:
        if not edge.type_checking:
            graph[edge.source].add(edge.target)
    return graph


def test_the_import_graph_has_no_cycle_not_even_through_function_level_imports() -> None:
    cycle = find_cycle(runtime_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_level_and_type_checking_imports_are_read() -> None:
    edges = {(e.target, e.type_checking) for e in imports_of("rmswatch")}
    assert ("rmswatch._watch", True) in edges  # under `if TYPE_CHECKING:` in the package face
    deferred = {e.target for e in imports_of("rmswatch.cli")}
    assert "rmswatch" in deferred  # `from rmswatch import __version__` inside _version()


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("rmswatch.alerting.prom_names", "rmswatch.collectors"),
        ("rmswatch.store.retention", "rmswatch.config"),
        ("rmswatch.collectors.ingest", "rmswatch.config"),
        ("rmswatch.alerting.spec", "rmswatch.config"),
    ],
)
def test_the_arrows_the_review_found_the_wrong_way_are_gone(module: str, forbidden: str) -> None:
    assert not [
        e for e in imports_of(module) if e.target == forbidden or e.target.startswith(forbidden)
    ]


def test_nothing_in_the_package_imports_a_generator_or_a_command() -> None:
    users = {
        (e.source, e.target)
        for e in ALL_IMPORTS
        if e.target.startswith(("rmswatch.generators", "rmswatch.commands"))
        and not e.source.startswith(("rmswatch.generators", "rmswatch.commands"))
    }
    assert not users


def test_config_is_imported_only_by_the_composition_side() -> None:
    importers = {e.source for e in ALL_IMPORTS if e.target == "rmswatch.config"}
    allowed = ("rmswatch.server", "rmswatch.cli", "rmswatch.commands", "rmswatch.alerting",
               "rmswatch.generators", "rmswatch.app", "rmswatch.wsgi")  # fmt: skip
    assert importers and all(m.startswith(allowed) for m in importers), importers


def test_only_entry_points_print() -> None:
    printing = [
        f"{module}:{node.lineno}"
        for module, path in MODULES.items()
        if not module.startswith(MAY_PRINT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]
    assert not printing, "domain modules print: " + ", ".join(printing)
