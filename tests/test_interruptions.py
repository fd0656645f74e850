"""Interrupted stages: `kill -9` leaves every output either complete (old) or absent, never half.

Unit tests pin the atomic-write helpers; the subprocess tests kill real `prepare` and `train`
stage processes at the worst moment (while an output is being written) and run them again.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skinsage import fileio
from skinsage.fileio import atomic_dir, atomic_path, write_npz

from dvc_project import ROOT, copy_project, env, git, set_params

WORKING_TREE_CODE = ("skinsage", "stages")


# --- the helpers ------------------------------------------------------------------------------

def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "eval.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["eval.json"]


def test_leftover_temporaries_of_the_same_target_are_removed(tmp_path):
    for name in (".model.abcd1234.tmp.keras", ".model.zz_zz_zz.tmp.keras",  # a killed run's
                 ".model.v2.abcd1234.tmp.keras", ".other.abcd1234.tmp.keras", "model.keras.bak"):
        (tmp_path / name).write_text("x")
    fileio.write_text(tmp_path / "model.keras", "new")
    assert sorted(os.listdir(tmp_path)) == [".model.v2.abcd1234.tmp.keras", ".other.abcd1234.tmp.keras",
                                            "model.keras", "model.keras.bak"]


def test_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "train.npz").write_text("old train")
    (target / "obsolete.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as staging:
            (staging / "train.npz").write_text("new train")
            raise RuntimeError("killed")
    assert sorted(os.listdir(target)) == ["obsolete.csv", "train.npz"]
    assert (target / "train.npz").read_text() == "old train"
    with atomic_dir(target) as staging:
        (staging / "train.npz").write_text("new train")
    assert os.listdir(target) == ["train.npz"] and (target / "train.npz").read_text() == "new train"
    assert os.listdir(tmp_path) == ["prepared"]


def test_folder_swap_interrupted_between_renames_leaves_none_then_recovers(tmp_path, monkeypatch):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "train.npz").write_text("old")
    real_replace, calls = os.replace, []

    def dies_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed right after moving the old folder aside
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", dies_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as staging:
            (staging / "train.npz").write_text("new")
    monkeypatch.undo()
    assert not target.exists()  # "none": a later stage fails clearly instead of reading a mix
    with atomic_dir(target) as staging:
        (staging / "train.npz").write_text("newer")
    assert os.listdir(tmp_path) == ["prepared"]  # the old and staging leftovers are cleaned up
    assert (target / "train.npz").read_text() == "newer"


def test_npz_bytes_depend_only_on_the_arrays(tmp_path, monkeypatch):
    arrays = {"images": np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3), "labels": np.array([2])}
    write_npz(tmp_path / "a.npz", **arrays)
    monkeypatch.setattr(time, "time", lambda: 2e9)  # another day: np.savez would differ
    write_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "b.npz", allow_pickle=False) as npz:
        assert np.array_equal(npz["images"], arrays["images"]) and npz["labels"].tolist() == [2]


# --- every writer goes through the atomic helpers --------------------------------------------

WRITE_METHODS = {"save", "savez", "savez_compressed", "savefig", "save_weights", "write_text",
                 "write_bytes", "to_csv", "dump"}
RECEIVER_IS_PATH = {"write_text", "write_bytes", "open"}


def _writes(tree: ast.AST):
    """(call, expression naming the written path) for every call that writes a file."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("open", "ZipFile"):
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(func, ast.Attribute) and name == "open":
                mode = node.args[0] if node.args else mode
            if not (isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+")):
                continue
        elif name not in WRITE_METHODS or not isinstance(func, ast.Attribute):
            continue
        if isinstance(func, ast.Attribute) and name in RECEIVER_IS_PATH:
            yield node, func.value
        elif node.args:
            yield node, node.args[0]


def _atomic_names(tree: ast.AST, call: ast.Call) -> set[str]:
    """Names bound by `with atomic_path(...) as name` / `atomic_dir` blocks enclosing `call`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(call is n for n in ast.walk(node)):
            for item in node.items:
                fn = item.context_expr.func if isinstance(item.context_expr, ast.Call) else None
                fn_name = getattr(fn, "id", getattr(fn, "attr", ""))
                if fn_name in ("atomic_path", "atomic_dir") and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    return names


def _in_memory_names(tree: ast.AST) -> set[str]:
    """Names assigned an `io.BytesIO()` / `StringIO()`: writing to them writes no file."""
    return {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", getattr(node.value.func, "id", "")) in ("BytesIO", "StringIO")
            for target in node.targets if isinstance(target, ast.Name)}


def test_every_file_write_targets_an_atomic_temporary():
    offenders = []
    for path in sorted([*ROOT.glob("skinsage/**/*.py"), *ROOT.glob("stages/*.py")]):
        if path.name == "fileio.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call, target in _writes(tree):
            used = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            if not used & (_atomic_names(tree, call) | _in_memory_names(tree)):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)[:80]}")
    assert not offenders, "write outside `with atomic_path(...) as tmp` (fileio):\n" + "\n".join(offenders)


# --- killing real stage processes ------------------------------------------------------------

def project_copy(dest: Path, overrides: dict) -> Path:
    """The project as committed plus the working tree's code (new modules included)."""
    copy_project(dest, overrides)
    for folder in WORKING_TREE_CODE:
        shutil.copytree(ROOT / folder, dest / folder, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "--allow-empty", "-m", "working tree code")
    return dest


def run_stage(project: Path, stage: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=project, env=env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_while_writing(project: Path, stage: str, writing) -> bool:
    """Start the stage and SIGKILL it the moment `writing(project)` sees an output half-written.
    False if the stage finished first (too fast to catch; the caller tries again)."""
    process = subprocess.Popen([sys.executable, f"stages/{stage}.py"], cwd=project, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            if writing(project):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        return process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()


def _hidden_entries(folder: Path, prefix: str) -> list[Path]:
    try:
        return [folder / n for n in os.listdir(folder) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


def prepared_half_written(project: Path) -> bool:
    """A staging folder of data/prepared already holds (part of) a split file."""
    for staging in _hidden_entries(project / "data", ".prepared."):
        try:
            if os.listdir(staging):
                return True
        except OSError:
            pass
    return False


def model_half_written(project: Path) -> bool:
    """Keras has started writing the model's temporary file."""
    for temp in _hidden_entries(project / "models", ".model."):
        try:
            if temp.stat().st_size > 0:
                return True
        except OSError:
            pass
    return False


def snapshot(project: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of every file under `paths` (relative names), ignoring hidden temporaries."""
    digests = {}
    for rel in paths:
        base = project / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for file in files:
            if not file.name.startswith("."):
                digests[str(file.relative_to(project))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


# A param of the stage alone, changed so that it must rewrite its outputs (train refuses
# data/prepared made with other params, so train's change must not be one of prepare's).
RERUN_CHANGE = {"prepare": lambda attempt: {"data.seed": attempt},
                "train": lambda attempt: {"train.learning_rate": (attempt + 1) * 1e-3}}


def kill_a_rerun_while_writing(project, stage, half_written, outputs) -> dict:
    """Change a param of the stage (so it must rewrite its outputs) and kill it mid-write; the
    outputs as they were before. Retried: on a fast run the kill can miss the write."""
    for attempt in range(1, 4):
        before = snapshot(project, outputs)
        set_params(project, RERUN_CHANGE[stage](attempt))
        if kill_while_writing(project, stage, half_written):
            return before
    pytest.fail(f"{stage} finished three times before the kill landed")


PREPARE_OVERRIDES = {"model": "cnn", "models.cnn.image_size": 64, "data.source": "synthetic",
                     "data.synthetic.num_classes": 6, "data.synthetic.images_per_class": 400}


@pytest.mark.e2e
def test_prepare_killed_mid_write_leaves_old_outputs_then_reruns(tmp_path):
    project = project_copy(tmp_path / "project", PREPARE_OVERRIDES)
    outputs = ["data/prepared", "metrics/data.json"]
    run_stage(project, "prepare")
    before = kill_a_rerun_while_writing(project, "prepare", prepared_half_written, outputs)
    assert snapshot(project, outputs) == before  # the complete old dataset, not a mix
    assert any(n.startswith(".prepared.") for n in os.listdir(project / "data"))  # the dead temp

    run_stage(project, "prepare")
    after = snapshot(project, outputs)
    assert set(after) == set(before) and after != before
    assert [n for n in os.listdir(project / "data") if n.startswith(".prepared.")] == []
    for split in ("train", "val", "test"):
        with np.load(project / "data" / "prepared" / f"{split}.npz", allow_pickle=False) as npz:
            assert npz["images"].shape[1:] == (64, 64, 3) and len(npz["labels"]) > 0


TRAIN_OVERRIDES = {"model": "cnn", "data.source": "synthetic", "data.synthetic.num_classes": 3,
                   "data.synthetic.images_per_class": 20, "train.epochs": 1, "train.batch_size": 16,
                   "models.cnn.filters": [8], "models.cnn.dense_units": 16}


@pytest.mark.e2e
def test_train_killed_while_saving_the_model_leaves_the_old_one_then_reruns(tmp_path):
    project = project_copy(tmp_path / "project", TRAIN_OVERRIDES)
    outputs = ["models/model.keras", "metrics/train.json", "metrics/train_full.json"]
    run_stage(project, "prepare")
    run_stage(project, "train")
    before = kill_a_rerun_while_writing(project, "train", model_half_written, outputs)
    assert snapshot(project, outputs) == before
    with zipfile.ZipFile(project / "models" / "model.keras") as archive:  # complete and readable
        assert archive.testzip() is None and "skinsage.json" in archive.namelist()

    run_stage(project, "train")
    after = snapshot(project, outputs)
    assert set(after) == set(before) and after["models/model.keras"] != before["models/model.keras"]
    assert sorted(os.listdir(project / "models")) == ["model.keras"]  # the dead temp is gone
