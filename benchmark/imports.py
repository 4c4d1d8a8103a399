"""Which project files a module runs: a static walk of its imports (``ast``; nothing is imported).

The project is the folder holding the ``benchmark`` package: its top-level modules (``*.py``),
packages (folders with ``__init__.py``) and the namespace folder ``user_methods``. What counts as
an import of a project module:

- ``import a.b`` and ``from a.b import c`` anywhere in a file (module level and inside functions),
  ``c`` included when it is a submodule (``from benchmark import stats``); relative imports too;
- importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first: their ``__init__.py`` count;
- running a package (``python -m a.b``) runs ``a/b/__init__.py`` and ``a/b/__main__.py``;
- a registry's dynamic imports: a module-level ``_BUILTIN_MODULES = ("x", "y.z", ...)``
  (:mod:`benchmark.methods.catalog`, :mod:`benchmark.data.source`) imports each listed module, as
  ``importlib.import_module`` does on first lookup;
- not: imports under ``if TYPE_CHECKING:`` (never run), and the modules params.yaml's
  ``method_modules`` names (known only at run time).

:func:`imported_files` is what tests/test_dvc_deps.py checks dvc.yaml's deps against, and
:func:`code_digest` what ``configure`` records per run for its method (docs/adding_a_method.md).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project: the folder holding the benchmark package
NAMESPACE_PACKAGES = ("user_methods",)  # project folders without __init__.py that hold modules
DYNAMIC_IMPORTS = "_BUILTIN_MODULES"  # a module-level tuple of module names a registry imports


@cache
def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> its file (a package: its ``__init__.py``), relative to ``root``."""
    modules = {path.stem: path.relative_to(root) for path in sorted(root.glob("*.py"))}
    packages = [d for d in sorted(root.iterdir()) if (d / "__init__.py").is_file() or d.name in NAMESPACE_PACKAGES]
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.setdefault(name, path.relative_to(root))
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return out


def _dynamic_names(node: ast.Assign, where: Path) -> list[str]:
    """The module names of ``_BUILTIN_MODULES = ("a", "b.c")``; [] for any other assignment."""
    if not any(isinstance(t, ast.Name) and t.id == DYNAMIC_IMPORTS for t in node.targets):
        return []
    elements = node.value.elts if isinstance(node.value, (ast.Tuple, ast.List)) else []
    names = [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    if not elements or len(names) != len(elements):
        raise ValueError(f"{where}: {DYNAMIC_IMPORTS} must be a literal tuple of module names")
    return names


def absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join([*base, *([module] if module else [])])


@cache
def direct_imports(name: str, root: Path = ROOT, lookups: bool = True) -> frozenset[str]:
    """Dotted names module ``name`` imports (project or not; submodules of ``from`` included), with
    (``lookups``) or without the modules a registry imports by name on first lookup."""
    path = project_modules(root)[name]
    tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node.module, node.level, name, is_package)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # kept only if a module
        elif isinstance(node, ast.Assign) and node in tree.body and lookups:
            names.update(_dynamic_names(node, path))
    return frozenset(names)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Project module -> the project modules it imports itself: not its own packages (which Python
    runs first) and not a registry's lookups by name (which run when a name is first looked up)."""
    modules = project_modules(root)
    return {
        name: {
            m for m in direct_imports(name, root, lookups=False) if m in modules and not f"{name}.".startswith(f"{m}.")
        }
        for name in modules
    }


def _with_parents(name: str, root: Path) -> list[str]:
    """``a.b.c`` -> the project modules among ``a``, ``a.b``, ``a.b.c`` (a package runs before its modules)."""
    parts = name.split(".")
    return [m for i in range(1, len(parts) + 1) if (m := ".".join(parts[:i])) in project_modules(root)]


def imported_files(entry: str, root: Path = ROOT) -> set[Path]:
    """The project files importing (or ``python -m``) ``entry`` runs: it and everything it imports,
    transitively, relative to ``root``. ``KeyError`` if ``entry`` is not a project module."""
    modules = project_modules(root)
    if entry not in modules:
        raise KeyError(f"{entry!r} is not a module of the project at {root}")
    todo = _with_parents(entry, root) + ([f"{entry}.__main__"] if f"{entry}.__main__" in modules else [])
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in direct_imports(name, root):
            todo.extend(_with_parents(imported, root))
    return {modules[m] for m in seen}


def covered(path: str, deps: Iterable[str]) -> bool:
    """``path`` (relative, posix) is one of ``deps`` or under one of them (a folder covers its files),
    as dvc.yaml's deps cover files."""
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


def code_digest(entry: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """(sha256 hex of the files :func:`imported_files` lists for ``entry``, their paths, sorted): it
    changes when any of them does (its path or its bytes)."""
    files = sorted(p.as_posix() for p in imported_files(entry, root))
    digest = hashlib.sha256()
    for name in files:
        data = (root / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest(), files
