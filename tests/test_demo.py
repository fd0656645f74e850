"""`make demo`'s two paths, with the real `dvc exp run` in a copy of the project: real DermaMNIST when
it is reachable (here: a loopback server, named by a stand-in `medmnist` package whose INFO has the
server's URL and the file's MD5, as the real INFO has Zenodo's), generated shapes when it is not."""

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
                                "label": {{"0": "lesion a", "1": "lesion b", "2": "lesion c"}}}}}}
        """))
    return folder


def run_demo(project, medmnist_path) -> subprocess.CompletedProcess:
    """What `make demo` runs: the overrides skinsage.app.demo chooses, then `dvc exp run` with them
    (plus a shorter schedule for the test); stderr of the first step carries the one-line notice."""
    environment = {**env(), "PYTHONPATH": f"{medmnist_path}{os.pathsep}{project}"}
    chosen = subprocess.run([sys.executable, "-m", "skinsage.app.demo"], cwd=project, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert chosen.returncode == 0, chosen.stderr
    run = subprocess.run([str(Path(sys.executable).parent / "dvc"), "exp", "run", *chosen.stdout.split(), *SHORT],
                         cwd=project, env=environment, capture_output=True, text=True, timeout=900)
    return subprocess.CompletedProcess(run.args, run.returncode, chosen.stderr + run.stdout, run.stderr)


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
    assert "demo: real DermaMNIST images" in result.stdout
    assert (project / "data" / "downloads" / "dermamnist.npz").read_bytes() == payload  # in DVC's cache
    labels = (project / "data" / "prepared" / "labels.json").read_text()
    assert "MedMNIST dermamnist (28 px, official split)" in labels and "lesion b" in labels


def test_demo_falls_back_to_generated_shapes_in_one_line_when_offline(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    project = copy_project(tmp_path / "project")
    fake = stand_in_medmnist(tmp_path / "pkg", f"http://127.0.0.1:{closed}/dermamnist.npz", "0" * 32)
    result = run_demo(project, fake)
    assert result.returncode == 0, result.stderr[-3000:]
    notice = [line for line in result.stdout.splitlines() if line.startswith("demo:")]
    assert len(notice) == 1 and "DermaMNIST is not reachable from here" in notice[0]
    assert "generated shapes" in notice[0] and "Connection refused" in notice[0]
    assert "synthetic shapes" in (project / "data" / "prepared" / "labels.json").read_text()
