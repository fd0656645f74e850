"""A throw-away copy of the project as its own git + DVC repo, for tests that run real `dvc` commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Small and fast: the whole pipeline on generated shapes with the 28 px CNN.
TINY_SYNTHETIC = {
    "model": "cnn",
    "data.source": "synthetic",
    "data.synthetic.num_classes": 3,
    "data.synthetic.images_per_class": 30,
    "data.workers": 1,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.referral.classes": ["synthetic_circle"],  # shapes have no malignant class: one stands in
}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


def copy_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the git-tracked files (as in a clean clone) to `dest`, apply params overrides, commit."""
    for name in tracked_files():
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if overrides:
        set_params(dest, overrides)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "test copy")
    return dest


def set_params(project: Path, overrides: dict) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def env() -> dict:
    """The stage commands say `python`: make it this interpreter; keep git usable without a HOME config."""
    return {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project, env=env(), check=True, capture_output=True, text=True)


def dvc(project: Path, *args: str, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    dvc_bin = Path(sys.executable).parent / "dvc"
    result = subprocess.run([str(dvc_bin), *args], cwd=project, env={**env(), **(extra_env or {})},
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result
