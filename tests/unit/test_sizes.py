"""The size rules of the code (issue 24): no module over 450 lines, no function over 60, and
the task manager actor a shell of at most 200 lines around the task service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "raytask"
MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 450, f"{path.name} has {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            assert lines <= 60, f"{path.name}:{node.lineno} {node.name} has {lines} lines"


def test_the_manager_actor_is_a_thin_shell() -> None:
    tree = ast.parse((PACKAGE / "server" / "manager.py").read_text())
    (manager,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TaskManager"]
    assert (manager.end_lineno or 0) - manager.lineno + 1 <= 200
