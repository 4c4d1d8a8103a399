"""dvc.yaml's code deps are exact: every project file a stage's command imports is a dep (no result
goes stale), and every code dep covers an imported file no other dep covers (nothing reruns for
nothing, nothing is redundant: removing any one dep fails the first check).

Static analysis with ``ast`` (nothing is imported or run): for each stage, the module of its
``python -m <module>`` command and, transitively, every project module it imports (packages
benchmark, baselines, floors, user_methods) must be covered by an entry of the stage's ``deps``
(a folder covers everything under it). What counts as an import:

- ``import a.b`` and ``from a.b import c`` anywhere in a file (module level and inside functions),
  ``c`` included when it is a submodule (``from benchmark import stats``); relative imports too;
- importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first: their ``__init__.py`` count;
- ``python -m a.b`` of a package runs ``a/b/__init__.py`` and ``a/b/__main__.py``;
- the registries' dynamic imports: a module-level ``_BUILTIN_MODULES = ("x", "y.z", ...)``
  (benchmark.methods.registry: the built-in method packages; benchmark.data.source: the built-in
  data sets) imports each listed module, as ``importlib.import_module`` does on first lookup;
- not: imports under ``if TYPE_CHECKING:`` (never run), and the modules a user lists in
  params.yaml's ``method_modules`` (unknown here; the stages that import them list user_methods/).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "baselines", "floors", "user_methods")
DYNAMIC_IMPORTS = "_BUILTIN_MODULES"  # a module-level tuple of module names a registry imports
COMMAND = re.compile(r"^python -m ([\w.]+)")


@cache
def project_modules() -> dict[str, Path]:
    """Dotted module name -> its file (a package: its ``__init__.py``), relative to the repository."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.setdefault(name, path.relative_to(REPO))
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


def _dynamic_names(node: ast.Assign) -> list[str]:
    """The module names of ``_BUILTIN_MODULES = ("a", "b.c")``; [] for any other assignment."""
    if not any(isinstance(t, ast.Name) and t.id == DYNAMIC_IMPORTS for t in node.targets):
        return []
    assert isinstance(node.value, (ast.Tuple, ast.List)), f"{DYNAMIC_IMPORTS} must be a literal tuple"
    names = [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    assert len(names) == len(node.value.elts), f"{DYNAMIC_IMPORTS} must list module names as strings"
    return names


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join([*base, *([module] if module else [])])


@cache
def direct_imports(name: str) -> frozenset[str]:
    """Dotted names module ``name`` imports (project or not; submodules of ``from`` included)."""
    path = project_modules()[name]
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, name, is_package)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # kept only if a module
        elif isinstance(node, ast.Assign) and node in tree.body:
            names.update(_dynamic_names(node))
    return frozenset(names)


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> the project modules among ``a``, ``a.b``, ``a.b.c`` (a package runs before its modules)."""
    parts = name.split(".")
    return [m for i in range(1, len(parts) + 1) if (m := ".".join(parts[:i])) in project_modules()]


def imported_files(entry: str) -> set[Path]:
    """The project files ``python -m <entry>`` runs: the entry and everything it imports, transitively."""
    modules = project_modules()
    todo = _with_parents(entry) + ([f"{entry}.__main__"] if f"{entry}.__main__" in modules else [])
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in direct_imports(name):
            todo.extend(_with_parents(imported))
    return {modules[m] for m in seen}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _body(stage: dict) -> dict:
    """A stage's definition; a ``foreach`` stage's is under ``do``."""
    return stage.get("do", stage)


def _dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else str(d) for d in _body(stage).get("deps", [])]


def _covered(path: Path, deps: list[str]) -> bool:
    text = path.as_posix()
    return any(text == d.rstrip("/") or text.startswith(d.rstrip("/") + "/") for d in deps)


def test_the_analysis_sees_function_level_and_dynamic_imports():
    """Checks of the checker: an import inside a function, a submodule named by ``from``, a relative
    import and the registries' ``_BUILTIN_MODULES``."""
    schema = imported_files("benchmark.schema")
    assert Path("benchmark/data/section.py") in schema  # validate_params imports it inside the function
    assert Path("benchmark/__init__.py") in schema
    assert {p.name for p in imported_files("benchmark.config")} == {"__init__.py", "config.py", "errors.py"}
    registry = imported_files("benchmark.methods.registry")
    assert {Path("baselines/__init__.py"), Path("baselines/muss.py"), Path("floors/ndwi.py")} <= registry
    assert Path("benchmark/methods/sgma.py") in registry
    assert Path("benchmark/data/synthetic.py") in imported_files("benchmark.data.source")
    assert Path("benchmark/report/__main__.py") in imported_files("benchmark.report")
    assert _absolute("x", 1, "a.b.c", False) == "a.b.x" and _absolute(None, 1, "a.b", True) == "a.b"


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_project_file_is_a_dep_of_the_stage(name: str):
    stage = stages()[name]
    match = COMMAND.match(_body(stage)["cmd"])
    assert match, f"stage {name}: cmd {_body(stage)['cmd']!r} is not `python -m <module> ...`"
    assert match[1] in project_modules(), f"stage {name}: {match[1]} is not a module of {PACKAGES}"
    deps = _dep_paths(stage)
    missing = sorted(p.as_posix() for p in imported_files(match[1]) if not _covered(p, deps))
    assert not missing, f"stage {name}: `{match[0]}` imports {missing}, which no entry of its deps covers"


#: code deps no import shows: the folder of the user's own method modules, which a stage imports
#: when params.yaml's ``method_modules`` names them (dynamic: unknown to a static walk)
DYNAMIC_DEPS = ("user_methods",)


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_code_dep_of_the_stage_is_needed(name: str):
    """The converse: each code dep covers a file the command imports that no other dep covers. So no
    dep reruns the stage for nothing (editing a baseline does not rerun the data stages), none is
    redundant, and removing any one of them fails the test above."""
    stage = stages()[name]
    files = imported_files(COMMAND.match(_body(stage)["cmd"])[1])
    deps = _dep_paths(stage)
    code = [d for d in deps if d.split("/")[0] in PACKAGES and d.rstrip("/") not in DYNAMIC_DEPS]
    needless = [
        d for d in code if not any(_covered(f, [d]) and not _covered(f, [o for o in deps if o != d]) for f in files)
    ]
    assert not needless, f"stage {name}: deps {needless} cover no imported file that another dep does not; remove them"
