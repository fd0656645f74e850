"""GPUs and clusters without a GPU: mixed precision on a CPU, MirroredStrategy over two logical CPU
devices, and a real two-process MultiWorkerMirroredStrategy run of the `train` stage on loopback.

Device set-up and MultiWorkerMirroredStrategy must come before TensorFlow initialises, so those runs
are subprocesses (tests/distributed_run.py, stages/train.py)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dvc_project import copy_project, dvc, env, set_params
from skinsage.train.distribute import DistributeError, is_chief, resolve_mode, tf_config

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds per subprocess: 2 shared CPU cores
# A distributed run must reach the single-device accuracy within this (absolute, validation split).
TOLERANCE = 0.1


def workers(n: int, index: int, chief: bool = False) -> dict:
    cluster = {"worker": [f"localhost:{1000 + i}" for i in range(n)]}
    if chief:
        cluster["chief"] = ["localhost:999"]
    return {"cluster": cluster, "task": {"type": "chief" if chief and index < 0 else "worker", "index": max(index, 0)}}


# --- choosing the strategy and the chief (no TensorFlow) ---------------------------------------

def test_auto_picks_multi_worker_mirrored_or_none():
    assert resolve_mode("auto", workers(2, 0), gpus=0) == "multi_worker"
    assert resolve_mode("auto", workers(1, 0), gpus=0) == "none"  # a one-worker TF_CONFIG: nothing to sync
    assert resolve_mode("auto", {}, gpus=2) == "mirrored"
    assert resolve_mode("auto", {}, gpus=1) == "none"
    assert resolve_mode("mirrored", {}, gpus=0) == "mirrored"
    with pytest.raises(DistributeError, match="multi_worker needs the TF_CONFIG"):
        resolve_mode("multi_worker", {}, gpus=0)


def test_only_the_chief_or_worker_zero_writes():
    assert is_chief({})  # no cluster: the only process
    assert is_chief(workers(2, 0)) and not is_chief(workers(2, 1))
    assert is_chief(workers(2, -1, chief=True))  # an explicit chief task
    assert not is_chief(workers(2, 0, chief=True))  # worker 0 is not the chief when there is one


def test_malformed_tf_config_is_named():
    assert tf_config({}) == {}
    with pytest.raises(DistributeError, match="TF_CONFIG is not valid JSON"):
        tf_config({"TF_CONFIG": "{cluster: oops"})


# --- mixed precision -------------------------------------------------------------------------

def test_mixed_precision_model_saves_loads_and_predicts_float32_on_cpu(tmp_path):
    import keras

    from distributed_run import OVERRIDES, separable_data
    from skinsage.model.inference import predict_probabilities
    from skinsage.model.model_file import load_model, save_model
    from skinsage.params import load_params
    from skinsage.train.trainer import model_metadata, train_model

    params = load_params(ROOT / "params.yaml", overrides={
        **OVERRIDES, "train.epochs": 2, "train.mixed_precision": "on", "train.distribute": "none",
        "train.logit_adjustment.tau": 1.0})  # the LogitAdjustment layer too
    data = separable_data(32, 16)
    try:
        model, _, summary = train_model(params, data)
        assert keras.mixed_precision.global_policy().name == "float32"  # train_model restored it
        assert "mixed_float16" in {layer.dtype_policy.name for layer in model.layers}  # it did train mixed
        save_model(model, tmp_path / "model.keras", model_metadata(params, data, summary))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded, _ = load_model(tmp_path / "model.keras")
    images = data.splits["val"].images
    raw = loaded.predict_on_batch(images)
    raw = raw[0] if isinstance(raw, list) else raw  # [probabilities, ood_score] with the detector
    assert raw.dtype == np.float32
    assert loaded.get_layer("probabilities").dtype_policy.name == "float32"
    probs = predict_probabilities(loaded, images, 8)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


# --- MirroredStrategy over two logical CPU devices ---------------------------------------------

def run_helper(*args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_run.py"), *args],
                            capture_output=True, text=True, timeout=TIMEOUT, env=env())
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_mirrored_over_two_logical_cpus_matches_one_device():
    single = run_helper("none")
    mirrored = run_helper("mirrored", "2")
    print(f"val accuracy: single device {single['val_accuracy']:.3f}, mirrored x2 {mirrored['val_accuracy']:.3f}")
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    assert single["val_accuracy"] >= 0.9  # the data are separable: otherwise the comparison says nothing
    assert mirrored["val_accuracy"] >= single["val_accuracy"] - TOLERANCE


def test_resnet50_caches_features_per_worker_and_trains_both_phases_mirrored():
    run = run_helper("mirrored", "2", "resnet50")
    assert run["replicas"] == 2 and run["feature_caching"] is True
    assert run["phases"] == ["fine_tune", "head"]
    assert run["val_accuracy"] >= 0.9  # separable by brightness even with a random backbone


# --- two processes, MultiWorkerMirroredStrategy, the real stage --------------------------------

STAGE_PARAMS = {
    "model": "cnn", "data.source": "synthetic", "data.synthetic.num_classes": 3,
    "data.synthetic.images_per_class": 60, "data.split.val": 0.25, "data.workers": 1,
    "models.cnn.filters": [8, 16], "models.cnn.dense_units": 32, "train.epochs": 8, "evaluate.tta": "none",
    # no random augmentation: each replica would draw its own, and the runs would differ by more
    **{f"models.cnn.augment.{k}": False for k in ("flip", "rotate90")},
}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def listing(project: Path) -> dict[str, float]:
    return {str(p.relative_to(project)): p.stat().st_mtime for p in project.rglob("*")
            if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts}


def start_train(project: Path, config: dict | None) -> subprocess.Popen:
    extra = {"PYTHONDONTWRITEBYTECODE": "1"}  # the non-chief's copy must stay byte-for-byte untouched
    if config:
        extra["TF_CONFIG"] = json.dumps(config)
    return subprocess.Popen([sys.executable, "stages/train.py"], cwd=project, env={**env(), **extra},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, name: str) -> str:
    try:
        out, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"{name}: no result in {TIMEOUT} s:\n{out[-3000:]}") from None
    assert process.returncode == 0, f"{name} failed ({process.returncode}):\n{out[-4000:]}"
    return out


@pytest.mark.e2e
def test_two_worker_stage_matches_one_worker_and_only_the_chief_writes(tmp_path):
    chief = copy_project(tmp_path / "chief", {**STAGE_PARAMS, "train.batch_size": 16,
                                              "train.distribute": "multi_worker"})
    dvc(chief, "repro", "prepare")
    other = Path(shutil.copytree(chief, tmp_path / "worker1", symlinks=True))  # each worker its own copy
    single = Path(shutil.copytree(chief, tmp_path / "single", symlinks=True))
    # the same global batch (16 x 2 workers) on one process
    set_params(single, {"train.batch_size": 32, "train.distribute": "none"})
    before = listing(other)
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    runs = [start_train(project, {"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i, project in enumerate((chief, other))]
    outputs = [finish(run, f"worker {i}") for i, run in enumerate(runs)]
    finish(start_train(single, None), "single worker")

    assert "distribute: multi_worker (MultiWorkerMirroredStrategy), 2 replicas in sync" in outputs[0]
    assert "this process is a worker (writes nothing)" in outputs[1]
    assert listing(other) == before, "the non-chief worker wrote into its project"
    assert len(list(chief.glob("models/*.keras"))) == 1 and (chief / "metrics" / "train.json").is_file()
    multi = json.loads((chief / "metrics" / "train_full.json").read_text())
    alone = json.loads((single / "metrics" / "train_full.json").read_text())
    print(f"best val accuracy: single worker {alone['best_val_accuracy']:.3f}, "
          f"two workers {multi['best_val_accuracy']:.3f}")
    assert multi["replicas"] == 2 and "replicas" not in alone
    assert alone["best_val_accuracy"] >= 0.6  # 3 classes: well above chance, or the comparison is empty
    assert multi["best_val_accuracy"] >= alone["best_val_accuracy"] - TOLERANCE
