"""Imports run one way: each sub-package of skinsage/ may import only the layers below it (a stage
never imports another stage's package; files stages exchange go through skinsage/contracts/), and
no module imports itself back through others, at the top or inside a function."""

from __future__ import annotations

import graphlib
from pathlib import Path

import pytest

from test_stage_deps import ROOT, imported_names, module_file

PACKAGE = ROOT / "skinsage"
BASE = "base"  # the top-level modules: params, errors, log, fileio, prepared, shards, __init__
# sub-package -> what it may import besides itself. Adding a package means adding it here.
ALLOWED = {
    BASE: set(),
    "contracts": {BASE},
    "model": {BASE},
    "data": {BASE},                            # the prepare stage
    "train": {BASE, "model", "contracts"},
    "evaluate": {BASE, "model", "contracts"},
    "report": {BASE, "model", "contracts"},    # the plot stage: train's and evaluate's files, not code
    "export": {BASE, "model"},
    "app": {BASE, "model", "contracts", "data", "evaluate", "export"},  # the user's side: never train
}
ENTRY_POINTS = {"__main__.py": "app"}  # `python -m skinsage` is the command line


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ENTRY_POINTS.get(parts[0], BASE)


def module_graph() -> dict[Path, set[Path]]:
    """Every skinsage module -> the skinsage modules it imports (the module a name resolves to:
    `from .x import y` is x.py unless y is a module itself)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        targets = set()
        for name in imported_names(path):
            parts = name.split(".")
            found = next((f for depth in range(len(parts), 0, -1)
                          if (f := module_file(".".join(parts[:depth]))) is not None), None)
            if found is not None and found != path and found.is_relative_to(PACKAGE):
                targets.add(found)
        graph[path] = targets
    return graph


def wrong_way_imports(graph: dict[Path, set[Path]]) -> list[str]:
    return sorted(f"{src.relative_to(ROOT)} -> {dst.relative_to(ROOT)}"
                  for src, targets in graph.items() for dst in targets
                  if layer(dst) != layer(src) and layer(dst) not in ALLOWED[layer(src)])


def import_cycle(graph: dict) -> list | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_every_sub_package_has_its_allowed_imports():
    assert {layer(path) for path in PACKAGE.rglob("*.py")} <= set(ALLOWED)


def test_imports_run_only_down_the_layers():
    assert wrong_way_imports(module_graph()) == []


def test_a_wrong_way_import_is_caught():
    graph = module_graph()
    render = PACKAGE / "report" / "render.py"
    graph[render] = graph[render] | {PACKAGE / "train" / "trainer.py", PACKAGE / "evaluate" / "metrics.py"}
    assert wrong_way_imports(graph) == ["skinsage/report/render.py -> skinsage/evaluate/metrics.py",
                                        "skinsage/report/render.py -> skinsage/train/trainer.py"]


def test_no_import_cycle_in_skinsage():
    assert import_cycle(module_graph()) is None


def test_a_lazy_import_cycle_is_caught():
    """As runtime.py <-> convert.py was: one import at the top, the other inside a function."""
    assert import_cycle({"runtime": {"convert"}, "convert": {"runtime"}}) is not None
    graph = module_graph()
    graph[PACKAGE / "params.py"] = graph[PACKAGE / "params.py"] | {PACKAGE / "prepared.py"}
    assert import_cycle(graph) is not None


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "stages").glob("*.py")))
def test_a_stage_script_imports_no_other_stage_package(script):
    from test_stage_deps import import_closure

    own = {"download": "data", "prepare": "data", "train": "train", "evaluate": "evaluate",
           "plot": "report", "export": "export"}[Path(script).stem]
    stage_packages = {"data", "train", "evaluate", "report", "export"} - {own}
    reached = {layer(path) for path in import_closure(ROOT / "stages" / script) if path.is_relative_to(PACKAGE)}
    assert not reached & stage_packages, script
