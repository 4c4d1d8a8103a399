"""The code stays readable: no function of the pipeline over 80 lines unless it says why."""

from __future__ import annotations

import ast
from pathlib import Path

from tiny import REPO

MAX_LINES = 80
PACKAGES = ("benchmark", "baselines", "floors")
REASON = "Long because:"  # a docstring line that starts so gives the reason a function may exceed MAX_LINES


def long_functions(root: Path = REPO, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` of every function or method over ``limit`` lines (``def`` to its
    last line) under ``root``'s packages whose docstring has no line starting with :data:`REASON`."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > limit and not any(line.strip().startswith(REASON) for line in doc.splitlines()):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_over_80_lines_without_its_reason() -> None:
    assert long_functions() == [], f"split them into named parts, or give the reason ({REASON} ...)"


def test_the_check_finds_a_long_function_and_accepts_a_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "long.py").write_text(f'def f():\n    """Short doc."""\n{body}\n')
    assert long_functions(tmp_path) == [f"{Path('benchmark/long.py')}:1 f ({MAX_LINES + 2} lines)"]
    (tmp_path / "benchmark" / "long.py").write_text(f'def f():\n    """Doc.\n\n    {REASON} a table.\n    """\n{body}')
    assert long_functions(tmp_path) == []
