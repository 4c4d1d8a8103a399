"""dvc.yaml's code deps are exact: every project file a stage's command imports is a dep (no result
goes stale), and every code dep covers an imported file no other dep covers (nothing reruns for
nothing, nothing is redundant: removing any one dep fails the first check).

Static analysis with ``ast`` (nothing is imported or run): :func:`benchmark.imports.imported_files`
(what counts as an import is written there), checked here on known cases. The one route that is
not an import: a train or evaluate stage imports its run's method module by name, from
``configs/<run>.json``; that file holds the digest of the module and of every project file it
imports (``configure``), so a method's code reaches exactly its own runs through the config, and
``configure`` must depend on every method's files (:func:`test_method_code_reaches_its_runs_through_the_config`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from benchmark.imports import ROOT, absolute, covered, imported_files, project_modules

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "baselines", "floors", "user_methods")
COMMAND = re.compile(r"^python -m ([\w.]+)")
RUN_STAGES = ("train", "evaluate")  # the stages that import their run's method module by name


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _body(stage: dict) -> dict:
    """A stage's definition; a ``foreach`` stage's is under ``do``."""
    return stage.get("do", stage)


def _dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else str(d) for d in _body(stage).get("deps", [])]


def _covered(path: Path, deps: list[str]) -> bool:
    return covered(path.as_posix(), deps)


def test_the_analysis_sees_function_level_and_dynamic_imports():
    """Checks of the checker: an import inside a function, a submodule named by ``from``, a relative
    import and the registries' ``_BUILTIN_MODULES``."""
    schema = imported_files("benchmark.schema")
    assert Path("benchmark/data/section.py") in schema  # validate_params imports it inside the function
    assert Path("benchmark/__init__.py") in schema
    config = {p.name for p in imported_files("benchmark.config")}
    assert config == {"__init__.py", "config.py", "errors.py", "layout.py"}
    catalog = imported_files("benchmark.methods.catalog")
    assert {Path("baselines/__init__.py"), Path("baselines/muss.py"), Path("floors/ndwi.py")} <= catalog
    assert Path("benchmark/methods/sgma.py") in catalog
    muss = imported_files("baselines.muss")  # a method: itself, the contract, no other method
    assert {Path("baselines/muss.py"), Path("benchmark/methods/registry.py")} <= muss
    assert not {p for p in muss if p.parts[0] in ("baselines", "floors") and p.name not in ("muss.py", "__init__.py")}
    assert Path("floors/water.py") in imported_files("floors.ndwi")
    assert Path("benchmark/data/synthetic.py") in imported_files("benchmark.data.source")
    assert Path("benchmark/report/__main__.py") in imported_files("benchmark.report")
    assert absolute("x", 1, "a.b.c", False) == "a.b.x" and absolute(None, 1, "a.b", True) == "a.b"
    assert ROOT == REPO


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_project_file_is_a_dep_of_the_stage(name: str):
    stage = stages()[name]
    match = COMMAND.match(_body(stage)["cmd"])
    assert match, f"stage {name}: cmd {_body(stage)['cmd']!r} is not `python -m <module> ...`"
    assert match[1] in project_modules(), f"stage {name}: {match[1]} is not a module of {PACKAGES}"
    deps = _dep_paths(stage)
    missing = sorted(p.as_posix() for p in imported_files(match[1]) if not _covered(p, deps))
    assert not missing, f"stage {name}: `{match[0]}` imports {missing}, which no entry of its deps covers"


#: code deps no import shows: the folder of the user's own method modules, which configure imports
#: when params.yaml's ``method_modules`` names them (dynamic: unknown to a static walk)
DYNAMIC_DEPS = {"configure": ("user_methods",)}


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_code_dep_of_the_stage_is_needed(name: str):
    """The converse: each code dep covers a file the command imports that no other dep covers. So no
    dep reruns the stage for nothing (editing a baseline does not rerun the data stages), none is
    redundant, and removing any one of them fails the test above."""
    stage = stages()[name]
    files = imported_files(COMMAND.match(_body(stage)["cmd"])[1])
    deps = _dep_paths(stage)
    code = [d for d in deps if d.split("/")[0] in PACKAGES and d.rstrip("/") not in DYNAMIC_DEPS.get(name, ())]
    needless = [
        d for d in code if not any(_covered(f, [d]) and not _covered(f, [o for o in deps if o != d]) for f in files)
    ]
    assert not needless, f"stage {name}: deps {needless} cover no imported file that another dep does not; remove them"


def _method_modules() -> list[str]:
    """Every built-in method's module (benchmark.methods.catalog's list)."""
    from benchmark.methods import catalog

    return list(catalog._BUILTIN_MODULES)


def test_method_code_reaches_its_runs_through_the_config():
    """A run's stages import its method module by name (not seen above). So: no train or evaluate
    stage depends on a method folder or module; each depends on its run's configs/<run>.json; every
    method's files are deps of configure, which digests them into that file; and a method's files
    outside the run stages' deps are those of methods (each stage imports no method itself)."""
    all_stages = stages()
    configure = _dep_paths(all_stages["configure"])
    for module in _method_modules():
        files = imported_files(module)
        uncovered = sorted(p.as_posix() for p in files if not _covered(p, configure))
        assert not uncovered, f"configure digests {module} but does not depend on {uncovered}"
    method_files = {p for m in _method_modules() for p in imported_files(m)}
    for stage in RUN_STAGES:
        deps = _dep_paths(all_stages[stage])
        assert "configs/${item.run}.json" in deps, f"{stage}: the run's configuration is not a dep"
        own = imported_files(COMMAND.match(_body(all_stages[stage])["cmd"])[1])
        methods_only = sorted(p.as_posix() for p in method_files - own if _covered(p, deps))
        assert not methods_only, f"{stage}: deps cover method files {methods_only}; the config carries their digest"
        assert "user_methods" not in deps


def test_the_digest_follows_the_method_files(tmp_path: Path):
    """benchmark.imports.code_digest changes with a file the method imports and with no other."""
    from benchmark.imports import code_digest

    project = tmp_path / "project"
    for package in ("pkg", "other"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
    (project / "pkg" / "a.py").write_text("from pkg import b\n")
    (project / "pkg" / "b.py").write_text("X = 1\n")
    (project / "other" / "c.py").write_text("import pkg.a\n")
    digest, files = code_digest("pkg.a", project)
    assert files == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py"]
    (project / "other" / "c.py").write_text("import pkg.a  # edited\n")
    assert code_digest("pkg.a", project)[0] == digest
    (project / "pkg" / "b.py").write_text("X = 2\n")
    assert code_digest("pkg.a", project)[0] != digest
