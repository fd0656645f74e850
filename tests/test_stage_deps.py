"""dvc.yaml's code deps cannot drift from the code: every module a stage script runs (its import
closure inside the project, computed from the source) must be covered by one of that stage's deps,
and DVC must notice an edit to any of them."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

from dvc_project import TINY_SYNTHETIC, copy_project, dvc

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "skinsage"


def load_stages(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def module_file(dotted: str, root: Path = ROOT) -> Path | None:
    """The project file of a module or package named `a.b.c`, if it is the project's own."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` may import, at the top or inside a function (lazy imports run too),
    except in a module-level `__getattr__` (PEP 562): skinsage's lazy `from skinsage import
    Classifier`, which runs only when that name is asked for, never by a stage."""
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import x`
    return names


def import_closure(script: Path, root: Path = ROOT) -> set[Path]:
    """The script and every project file it imports, transitively; importing `a.b.c` runs the
    `__init__.py` of `a` and `a.b` as well."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path, root):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]), root)
                if found is not None:
                    todo.append(found)
    return seen


def stage_script(stage: dict, root: Path = ROOT) -> Path:
    words = stage["cmd"].split()
    return root / words[words.index("python") + 1]


def uncovered_files(stages: dict, root: Path = ROOT) -> dict[str, list[str]]:
    """Per stage: project files its script imports that none of its deps covers (a dep covers
    itself and, for a folder, everything under it)."""
    missing = {}
    for name, stage in stages.items():
        deps = [root / dep for dep in stage.get("deps", []) if "${" not in dep]
        files = sorted(path.relative_to(root).as_posix() for path in import_closure(stage_script(stage, root), root)
                       if not any(path == dep or path.is_relative_to(dep) for dep in deps))
        if files:
            missing[name] = files
    return missing


def test_every_module_a_stage_runs_is_in_its_deps():
    stages = load_stages()
    assert set(stages) == {"download", "prepare", "train", "evaluate", "plot", "export"}
    assert uncovered_files(stages) == {}


def test_a_removed_dep_is_caught():
    stages = copy.deepcopy(load_stages())
    stages["prepare"]["deps"].remove("skinsage/data")
    stages["evaluate"]["deps"].remove("skinsage/fileio.py")
    missing = uncovered_files(stages)
    assert set(missing) == {"prepare", "evaluate"}
    assert {"skinsage/data/duplicates.py", "skinsage/data/sources/folder.py"} <= set(missing["prepare"])
    assert missing["evaluate"] == ["skinsage/fileio.py"]


def test_closure_follows_relative_lazy_and_package_imports():
    prepare = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages" / "prepare.py")}
    # relative (`from .duplicates import`), lazy (inside load_source), and the packages' __init__s
    assert {"skinsage/data/duplicates.py", "skinsage/data/sources/medmnist.py", "skinsage/__init__.py",
            "skinsage/data/__init__.py", "skinsage/fileio.py"} <= prepare
    assert not any(path.startswith(("skinsage/train/", "skinsage/model/")) for path in prepare)


def test_deps_name_folders_and_stages_stay_in_their_lane():
    """Each stage's code deps are sub-package folders (plus the shared top-level modules and the
    contracts it reads or writes), and training does not run the evaluate stage's code."""
    for name, stage in load_stages().items():
        code = [dep for dep in stage["deps"] if dep.startswith(f"{PACKAGE}/")]
        folders = [dep for dep in code if (ROOT / dep).is_dir()]
        files = [dep for dep in code if (ROOT / dep).is_file()]
        assert folders and all(Path(f).parent.as_posix() in (PACKAGE, f"{PACKAGE}/contracts") for f in files), name
    train = import_closure(ROOT / "stages" / "train.py")
    assert not any("evaluate" in path.relative_to(ROOT).parts for path in train)


@pytest.mark.e2e
def test_editing_a_module_in_a_stage_closure_makes_dvc_status_report_that_stage(tmp_path):
    project = copy_project(tmp_path / "project", TINY_SYNTHETIC)
    dvc(project, "repro", "prepare")
    assert "up to date" in dvc(project, "status", "prepare").stdout

    with open(project / "skinsage" / "data" / "duplicates.py", "a", encoding="utf-8") as f:
        f.write("\n# a change to the duplicate policy's module\n")
    status = dvc(project, "status", "prepare").stdout
    assert "prepare:" in status and "modified:" in status and "skinsage/data" in status

    dvc(project, "repro", "prepare")
    with open(project / "skinsage" / "train" / "phase.py", "a", encoding="utf-8") as f:
        f.write("\n# a change to training only\n")
    assert "up to date" in dvc(project, "status", "prepare").stdout
    assert "skinsage/train" in dvc(project, "status", "train").stdout
