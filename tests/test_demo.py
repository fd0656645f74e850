"""`make demo`'s two paths, the real Makefile target in a copy of the project: real DermaMNIST when
it is reachable (here: a loopback server, named by a stand-in `medmnist` package whose INFO has the
server's URL and the file's MD5, as the real INFO has Zenodo's), generated shapes when it is not.
Afterwards the workspace is the demo's experiment, applied: `dvc status` clean, `dvc repro` a no-op,
and a second `make demo` with nothing changed records no second experiment."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dvc_project import copy_project, env
from local_server import QuietHandler, serving

pytestmark = pytest.mark.e2e
SHORT = ["-S", "train.epochs=2", "-S", "evaluate.bootstrap=0", "-S", "data.workers=1",
         "-S", "data.synthetic.images_per_class=20", "-S", "train.batch_size=16"]


def small_dermamnist() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 36), ("val", 9), ("test", 9)):
        labels = np.arange(n) % 3
        images = (rng.integers(0, 60, (n, 28, 28, 3), dtype=np.uint8)
                  + (labels * 60)[:, None, None, None].astype(np.uint8))
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def stand_in_medmnist(folder, url: str, md5: str):
    """A `medmnist` package with only info.py (all SkinSage reads of it), first on PYTHONPATH."""
    package = folder / "medmnist"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "info.py").write_text(textwrap.dedent(f"""\
        INFO = {{"dermamnist": {{"url": {url!r}, "MD5": {md5!r},
                                "label": {{"0": "melanoma", "1": "melanocytic nevi", "2": "vascular lesions"}}}}}}
        """))
    return folder


def run_demo(project, medmnist_path) -> subprocess.CompletedProcess:
    """`make demo` with this interpreter's environment (set up already: `-o` skips `make setup`) and
    a shorter schedule; stderr of the demo module carries the one-line notice."""
    venv = Path(sys.executable).parent.parent
    environment = {**env(), "PYTHONPATH": f"{medmnist_path}{os.pathsep}{project}"}
    return subprocess.run(["make", "-o", f"{venv}/.installed", "demo", f"VENV={venv}", f"DEMO_SET={' '.join(SHORT)}"],
                          cwd=project, env=environment, capture_output=True, text=True, timeout=900, check=False)


def dvc(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env(), check=False,
                          capture_output=True, text=True, timeout=300)


def experiments(project) -> list[str]:
    return dvc(project, "exp", "list", "--name-only").stdout.split()


def test_demo_trains_on_real_dermamnist_when_it_is_reachable(tmp_path):
    payload = small_dermamnist()

    class Zenodo(QuietHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()

        def do_GET(self):
            self.send_body(payload if self.path == "/dermamnist.npz" else None)

    project = copy_project(tmp_path / "project")
    with serving(Zenodo) as base:
        fake = stand_in_medmnist(tmp_path / "pkg", f"{base}/dermamnist.npz", hashlib.md5(payload).hexdigest())
        result = run_demo(project, fake)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo: real DermaMNIST images" in result.stderr
    assert (project / "data" / "downloads" / "dermamnist.npz").read_bytes() == payload  # in DVC's cache
    labels = (project / "data" / "prepared" / "labels.json").read_text()
    assert "MedMNIST dermamnist (28 px, official split)" in labels and "melanocytic nevi" in labels


def test_demo_falls_back_to_generated_shapes_in_one_line_when_offline(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    project = copy_project(tmp_path / "project")
    fake = stand_in_medmnist(tmp_path / "pkg", f"http://127.0.0.1:{closed}/dermamnist.npz", "0" * 32)
    result = run_demo(project, fake)
    assert result.returncode == 0, result.stderr[-3000:]
    notice = [line for line in result.stderr.splitlines() if line.startswith("demo:")]
    assert len(notice) == 1 and "DermaMNIST is not reachable from here" in notice[0]
    assert "generated shapes" in notice[0] and "Connection refused" in notice[0]
    assert "synthetic shapes" in (project / "data" / "prepared" / "labels.json").read_text()
    assert "is empty" not in result.stderr  # the download stage's output holds its manifest
    assert "plots/gradcam_examples.png" in result.stdout  # the closing list names every figure

    # the workspace is the demo's experiment, applied
    assert len(experiments(project)) == 1
    status = dvc(project, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, status.stdout
    repro = dvc(project, "repro")
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date" in repro.stdout
    # `make exps`: the headline metrics, then exactly the params that differ from the committed
    # defaults (the demo's and this test's overrides); no dependency hashes, no other metric
    venv = Path(sys.executable).parent.parent
    table = subprocess.run(["make", "-s", "-o", f"{venv}/.installed", "exps", f"VENV={venv}", "EXPS=--no-pager"],
                           cwd=project, env={**env(), "COLUMNS": "1000"}, capture_output=True, text=True,
                           timeout=300, check=False)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[1].split()
    overridden = {item.split("=")[0] for item in ["model=cnn", "data.source=synthetic", *SHORT] if item != "-S"}
    assert header[:5] == ["Experiment", "accuracy", "balanced_accuracy", "auc_macro_ovr", "ece"], header
    assert set(header[5:]) == overridden, header
    # again, nothing changed: no second experiment
    again = run_demo(project, fake)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "no new experiment" in again.stdout and "Running stage" not in again.stdout
    assert len(experiments(project)) == 1
