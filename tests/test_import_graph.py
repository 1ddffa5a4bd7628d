"""The rooms of ../shared/DESIGN.md, checked on the source: imports run one way, no cycles.

Standard library only: every module's `hardenml` imports are read from its AST (including
imports inside functions, which a cycle can hide behind), mapped to rooms, and checked
against the order of the loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hardenml"

# The ground floor first, then the rooms in the order of the loop. A room may import its
# own modules and any room before it, never one after it.
ROOMS: list[tuple[str, ...]] = [
    ("_version", "_progress", "stats", "records"),
    ("config",),
    ("targets",),
    ("data", "datachecks", "imaging"),
    ("threats",),
    ("scan",),
    ("ledger",),
    ("train", "zoo", "text_train"),
    ("patch",),
    ("validate",),
    ("gate",),
    ("report",),
    ("monitor",),
    ("continuous",),
    ("executors",),
    ("workflow", "demo", "demo_text", "api", "integrity_zoo", "intake"),
    ("cli", "__main__", "__init__"),
]
LEVEL = {name: i for i, room in enumerate(ROOMS) for name in room}


def room_of(module: str) -> str:
    """`hardenml.scan.policy` -> `scan`; `hardenml` (the package) -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def hardenml_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hardenml"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hardenml":
                # `from hardenml import workflow` imports the module hardenml.workflow;
                # `from hardenml import Workspace` the package's public API.
                for alias in node.names:
                    sub = f"hardenml.{alias.name}"
                    found.add(
                        sub
                        if (SRC / alias.name).exists() or (SRC / f"{alias.name}.py").exists()
                        else "hardenml"
                    )
            elif node.module.split(".")[0] == "hardenml":
                found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def test_every_module_lives_in_a_known_room() -> None:
    unknown = sorted({room_of(m) for m in MODULES} - set(LEVEL))
    assert not unknown, f"modules outside DESIGN.md's rooms: {unknown}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module: str) -> None:
    own = LEVEL[room_of(module)]
    against = []
    for imported in sorted(hardenml_imports(MODULES[module])):
        target_room = room_of(imported)
        if target_room not in LEVEL:
            continue
        if LEVEL[target_room] > own:
            against.append(f"{imported} (room {target_room})")
    assert not against, f"{module} (room {room_of(module)}) imports rooms to its right: {against}"


def test_the_ground_floor_imports_nothing_of_hardenml() -> None:
    for module, path in MODULES.items():
        if LEVEL[room_of(module)] == 0:
            assert not hardenml_imports(path), f"{module} is ground floor but imports hardenml"


def test_no_import_cycle_between_modules() -> None:
    graph = {
        m: {i for i in hardenml_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()
    }
    # A package's __init__ importing its own submodules is how packages work; a cycle
    # through two different rooms, or between sibling modules, is not.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # package <-> its own submodule
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_planted_violation(tmp_path: Path) -> None:
    planted = tmp_path / "bad.py"
    planted.write_text("def f():\n    from hardenml.patch import make_patch\n")
    assert hardenml_imports(planted) == {"hardenml.patch"}
    assert LEVEL[room_of("hardenml.patch")] > LEVEL[room_of("hardenml.scan.policy")]
