"""DVC-native sharing and sweeps, with the real `dvc` on a throw-away copy of the project: data and
models round-trip through a remote, and a grid of experiments runs on DVC's queue."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from dvc_project import TINY_SYNTHETIC, copy_project, dvc, git

pytestmark = pytest.mark.e2e
CACHED_OUTPUTS = ("data/downloads", "data/prepared", "models/model.keras")  # what `dvc push` shares


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("sharing") / "project", TINY_SYNTHETIC)
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "baseline run")
    return project


def digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path.parent).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def test_push_wipe_pull_round_trip_through_a_local_remote(project, tmp_path):
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "--default", "storage", str(remote))
    dvc(project, "push")
    before = {name: digest(project / name) for name in CACHED_OUTPUTS}
    assert before["models/model.keras"] and before["data/prepared"]

    shutil.rmtree(project / ".dvc" / "cache")  # a teammate's fresh clone: no cache, no outputs
    for name in CACHED_OUTPUTS:
        path = project / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert "deleted" in dvc(project, "status").stdout

    dvc(project, "pull")
    assert {name: digest(project / name) for name in CACHED_OUTPUTS} == before
    assert dvc(project, "status").stdout.strip().startswith("Data and pipelines are up to date")


def test_a_grid_on_dvcs_queue_runs_every_combination(project):
    dvc(project, "exp", "run", "--queue", "-S", "train.learning_rate=0.001,0.003", "-S", "seed=range(1,2)")
    dvc(project, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while True:
        status = dvc(project, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(3)
    assert status.count("Success") == 2, status

    table = json.loads(dvc(project, "exp", "show", "--json").stdout)
    runs = [exp for entry in table for exp in entry.get("experiments") or []]
    done = [run["revs"][0]["data"] for run in runs]
    params = {(d["params"]["params.yaml"]["data"]["train"]["learning_rate"],
               d["params"]["params.yaml"]["data"]["seed"]) for d in done}
    assert params == {(0.001, 1), (0.003, 1)}
    assert all(0 <= d["metrics"]["metrics/eval.json"]["data"]["accuracy"] <= 1 for d in done)
    ranked = dvc(project, "exp", "show", "--csv", "--sort-by", "accuracy", "--sort-order", "desc").stdout
    header = ranked.splitlines()[0].split(",")
    assert header[header.index("model_type") + 1] == "accuracy"
    rows = [row.split(",") for row in ranked.splitlines()[1:]]
    experiments = [row for row in rows if row[header.index("typ")].startswith("branch")]  # not the baselines
    accuracies = [float(row[header.index("accuracy")]) for row in experiments]
    assert len(accuracies) == 2 and accuracies == sorted(accuracies, reverse=True), ranked
