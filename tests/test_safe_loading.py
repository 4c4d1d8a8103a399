"""No code path loads a file in a way that can run code: checked on the source of the package."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "baselines", "user_methods")


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    """Every call ``<anything>.<name>(...)`` or ``name(...)`` in the package sources, with its place."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                    if called == name:
                        found.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_torch_load_always_uses_weights_only():
    calls = [(where, call) for where, call in _calls("load") if isinstance(call.func, ast.Attribute)]
    torch_loads = [(w, c) for w, c in calls if getattr(c.func.value, "id", None) == "torch"]
    assert torch_loads, "the scan found no torch.load at all: it is not looking at the right code"
    unsafe = [where for where, call in torch_loads if _keyword(call, "weights_only") is not True]
    assert not unsafe, f"torch.load without weights_only=True at {unsafe}"


def test_no_unsafe_yaml_pickle_or_numpy_loading():
    assert not [w for w, c in _calls("load") if getattr(getattr(c.func, "value", None), "id", None) == "yaml"]
    assert not _calls("unsafe_load") and not _calls("full_load")
    assert not [w for w, c in _calls("load") if getattr(getattr(c.func, "value", None), "id", None) == "pickle"]
    numpy_loads = [(w, c) for w, c in _calls("load") if getattr(getattr(c.func, "value", None), "id", None) == "np"]
    assert not [w for w, c in numpy_loads if _keyword(c, "allow_pickle") is True]
