"""data.store shards: `prepare` streams images to TFRecord shards, train and evaluate stream them,
and everything they compute matches the in-memory npz store on the same images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage import shards
from skinsage.data import prepare as prepare_module
from skinsage.data.prepare import chosen_store, prepare
from skinsage.data.sources import folder as folder_source
from skinsage.params import ParamsError, load_params
from skinsage.prepared import PreparedData, Split, load_labels, load_prepared, load_split, save_prepared

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


def folder_params(root: Path, store: str, **overrides):
    return load_params(ROOT / "params.yaml", {"data.source": "folder", "data.folder.path": str(root),
                                              "model": "cnn", "models.cnn.image_size": SIZE,
                                              "data.workers": 1, "data.store": store, **overrides})


def image_tree(root: Path, per_class: int = 12) -> Path:
    """Three classes of random photos, plus a same-class copy, a label conflict and a broken file."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        for i in range(per_class):
            path = root / name / f"{name}{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    shutil.copy(root / "a" / "a00.png", root / "a" / "z_copy.png")      # removed: same class
    shutil.copy(root / "a" / "a01.png", root / "b" / "z_conflict.png")  # kept, warned: other class
    (root / "c" / "z_broken.png").write_bytes(b"not a png")             # skipped: unreadable
    return root


@pytest.fixture
def small_shards(monkeypatch):
    """5 images of 16 px per shard file, so a small split spans several shards."""
    monkeypatch.setattr(shards, "SHARD_BYTES", 5 * SIZE * SIZE * 3)


def test_prepare_shards_writes_the_same_splits_and_checks_as_npz(tmp_path, small_shards):
    root = image_tree(tmp_path / "images")
    for store in ("npz", "shards"):
        prepare(folder_params(root, store), tmp_path / store, tmp_path / f"{store}.json")
    npz_metrics, shard_metrics = (json.loads((tmp_path / f"{s}.json").read_text()) for s in ("npz", "shards"))
    assert shard_metrics == npz_metrics  # counts, skipped, duplicates removed, conflicts, leakage
    assert npz_metrics["duplicates"]["removed_same_class"] == 1 and npz_metrics["duplicates"]["label_conflicts"] == 1
    assert load_labels(tmp_path / "shards")["store"] == "shards"
    assert (tmp_path / "npz" / "skipped.csv").read_text() == (tmp_path / "shards" / "skipped.csv").read_text()
    train_files = sorted(p.name for p in (tmp_path / "shards" / "train").iterdir())
    assert train_files[0] == "fields.npz" and len(train_files) > 2  # labels + several shards
    assert not (tmp_path / "shards" / "_all").exists() and not list((tmp_path / "shards").glob("*.npz"))
    for split in ("train", "val", "test"):
        a, b = load_split(tmp_path / "npz", split), load_split(tmp_path / "shards", split)
        assert b.images is None and len(b.shards) >= 1  # opened for streaming: labels only in memory
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.images, b.in_memory().images)  # same images, same order


def test_prepare_shards_feeds_the_writer_one_image_at_a_time(tmp_path, monkeypatch):
    """The streamed path never builds the dataset's array: the in-memory decoders are off limits,
    each decoded image is written before the next is decoded, and the pool gets bounded windows."""
    root = image_tree(tmp_path / "images", per_class=8)

    def forbidden(*args, **kwargs):
        raise AssertionError("the shards store must not decode the whole dataset into memory")
    monkeypatch.setattr(prepare_module, "decode_listing", forbidden)
    monkeypatch.setattr(folder_source, "decode_files", forbidden)
    monkeypatch.setattr(folder_source, "WINDOW", 4)
    windows, count = [], {"decoded": 0, "written": 0}

    class RecordingPool(folder_source._Serial):
        @staticmethod
        def map(fn, items, chunksize=1):
            windows.append(len(items))
            for item in items:
                count["decoded"] += 1
                yield fn(item)
    monkeypatch.setattr(folder_source, "_pool", lambda workers: RecordingPool())
    add = shards.ShardWriter.add

    def add_checked(self, image, label):
        # this image, plus at most the broken file and the same-class copy (never written)
        assert count["decoded"] - count["written"] <= 3, "decoded images piled up before being written"
        count["written"] += 1
        add(self, image, label)
    monkeypatch.setattr(shards.ShardWriter, "add", add_checked)
    prepare(folder_params(root, "shards"), tmp_path / "prepared", tmp_path / "data.json")
    assert max(windows) == 4 and sum(windows) == 3 * 8 + 3
    assert sum(len(load_split(tmp_path / "prepared", s)) for s in ("train", "val", "test")) == 3 * 8 + 1


def test_leakage_and_conflicts_are_found_across_shards_of_different_splits(tmp_path, small_shards):
    """A folder with its own split: the same image in train and test (in different shard files) is
    counted as leakage, one filed under another class as a label conflict."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        for name in ("a", "b"):
            for i in range(n):
                path = tmp_path / "own" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    shutil.copy(tmp_path / "own/train/a/11.png", tmp_path / "own/test/a/leaked.png")
    shutil.copy(tmp_path / "own/train/a/10.png", tmp_path / "own/test/b/conflict.png")
    prepare(folder_params(tmp_path / "own", "shards"), tmp_path / "prepared", tmp_path / "data.json")
    metrics = json.loads((tmp_path / "data.json").read_text())
    assert metrics["duplicates"]["leakage"] == {"val_in_train": 0, "test_in_train": 2, "test_in_val": 0}
    assert metrics["duplicates"]["label_conflicts"] == 1
    assert len(load_split(tmp_path / "prepared", "train").shards) == 5  # 24 images, 5 per shard


def same_split_both_stores(tmp_path: Path, n: int = 23) -> tuple[Split, Split]:
    rng = np.random.default_rng(2)
    split = Split(rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, 3, n))
    data = PreparedData(["x", "y", "z"], "generated", SIZE, {"test": split})
    save_prepared(tmp_path / "npz", data, store="npz")
    save_prepared(tmp_path / "shards", data, store="shards")
    return load_split(tmp_path / "npz", "test"), load_split(tmp_path / "shards", "test")


def test_evaluating_a_shard_store_gives_the_npz_stores_probabilities(tmp_path, small_shards):
    """One inference path: the same batches reach the model whichever the store, so the numbers
    are identical, not merely close (TTA flips included; batches cross shard boundaries)."""
    import keras

    from skinsage.evaluate.scoring import evaluate_split
    from skinsage.model.architectures import build_cnn
    from tiny_model import tiny_params

    keras.utils.set_random_seed(0)
    model = build_cnn(3, tiny_params(SIZE).model_params)
    in_memory, streamed = same_split_both_stores(tmp_path)
    assert streamed.streamed and len(streamed.shards) == 5
    expected = evaluate_split(model, in_memory, ["x", "y", "z"], 8, tta="flips")
    got = evaluate_split(model, streamed, ["x", "y", "z"], 8, tta="flips")
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[0]["accuracy"] == expected[0]["accuracy"]


def test_take_picks_images_across_shards(tmp_path, small_shards):
    in_memory, streamed = same_split_both_stores(tmp_path)
    picked = np.array([0, 4, 5, 17, 22])
    np.testing.assert_array_equal(streamed.take(picked), in_memory.images[picked])


def test_training_input_shards_per_worker_by_file_or_by_record(tmp_path, small_shards):
    """Under MultiWorkerMirroredStrategy each worker reads its own shard files when there are at
    least as many files as workers, else every n-th record (FILE needs a file per worker)."""
    import tensorflow as tf

    _, streamed = same_split_both_stores(tmp_path)  # 5 shard files
    policy = tf.data.experimental.AutoShardPolicy
    for workers, expected in ((1, policy.FILE), (5, policy.FILE), (6, policy.DATA)):
        ds = shards.training_batches(streamed.shards, len(streamed), SIZE, 4, True, 0, workers=workers)
        assert ds.options().experimental_distribute.auto_shard_policy == expected
    one_worker = shards.training_batches(streamed.shards, len(streamed), SIZE, 4, True, 0)
    assert int(one_worker.cardinality()) == 6  # 23 images in batches of 4: known without reading
    labels = np.concatenate([y for _, y in one_worker.as_numpy_iterator()])
    assert sorted(labels) == sorted(streamed.labels)  # every image once per epoch, shuffled


def synthetic_data(tmp_path: Path, store: str) -> PreparedData:
    params = load_params(ROOT / "params.yaml", {"data.source": "synthetic", "model": "cnn",
                                                "data.synthetic.images_per_class": 60, "data.store": store})
    prepare(params, tmp_path / store, tmp_path / f"{store}.json")
    return load_prepared(tmp_path / store)


def test_train_and_evaluate_on_shards_match_npz_within_tolerance(tmp_path, monkeypatch):
    """Same data, same seed: the two stores shuffle differently (a bounded buffer over shard files
    vs the whole array), so the weights differ; the test accuracy must agree within 0.1 (the
    synthetic shapes are easy: both reach > 0.8 in 20 epochs)."""
    from skinsage.evaluate.scoring import evaluate_split
    from skinsage.train.trainer import train_model

    monkeypatch.setattr(shards, "SHARD_BYTES", 20 * 28 * 28 * 3)  # 20 images per shard
    params = load_params(ROOT / "params.yaml", {
        "model": "cnn", "train.epochs": 20, "train.batch_size": 16, "models.cnn.filters": [8, 16],
        "models.cnn.dense_units": 16, "train.early_stopping.start_from_epoch": 20,
        # the plain recipe: the comparison is of the stores, not of weight averaging or tau
        "train.ema": 0.0, "train.logit_adjustment.tau": None})
    accuracy = {}
    for store in ("npz", "shards"):
        data = synthetic_data(tmp_path, store)
        assert data.splits["train"].streamed == (store == "shards")
        model, _, _ = train_model(params, data)
        test = load_split(tmp_path / store, "test")
        accuracy[store] = evaluate_split(model, test, data.class_names, 64, tta="none")[0]["accuracy"]
    assert min(accuracy.values()) > 0.8, accuracy
    assert abs(accuracy["npz"] - accuracy["shards"]) <= 0.1, accuracy


def test_store_auto_switches_to_shards_above_two_gib(tmp_path):
    params = folder_params(tmp_path, "auto", **{"models.cnn.image_size": 224})
    assert chosen_store(params, 14_000) == "npz"   # 14,000 x 224 x 224 x 3 = 1.97 GiB
    assert chosen_store(params, 15_000) == "shards"
    assert chosen_store(folder_params(tmp_path, "npz", **{"models.cnn.image_size": 224}), 10**6) == "npz"


def test_a_bad_store_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(ParamsError, match=r"data.store: 'shard' is not one of: npz, shards, auto"):
        folder_params(tmp_path, "shard")


@pytest.mark.e2e
def test_dvc_repro_with_the_shards_store(tmp_path):
    from dvc_project import TINY_SYNTHETIC, copy_project, dvc

    project = copy_project(tmp_path / "project", {**TINY_SYNTHETIC, "data.store": "shards"})
    dvc(project, "repro")
    prepared = project / "data" / "prepared"
    assert json.loads((prepared / "labels.json").read_text())["store"] == "shards"
    assert list((prepared / "test").glob("shard-*.tfrecord")) and not list(prepared.glob("*.npz"))
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert 0 <= evaluation["accuracy"] <= 1 and (project / "plots" / "report.md").is_file()


def test_clinical_data_stays_in_the_npz_store():
    """The shards store carries no clinical data yet: asked for, it is refused by name; auto
    keeps such a dataset in npz whatever its size."""
    clinical = {"data.source": "csv", "data.csv.clinical": {"age": "age", "sex": "sex", "site": None}}
    with pytest.raises(ParamsError, match="data.store: shards does not carry clinical data"):
        load_params(ROOT / "params.yaml", {**clinical, "data.store": "shards"})
    params = load_params(ROOT / "params.yaml", {**clinical, "data.store": "auto"})
    assert chosen_store(params, 10**7) == "npz"
