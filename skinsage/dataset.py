"""The prepared dataset on disk (data/prepared) and its tf.data input pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SkinSageError
from .fileio import read_json, write_json, write_npz

SPLITS = ("train", "val", "test")


class SplitError(SkinSageError, ValueError):
    """The data cannot be split as asked."""


@dataclass
class Split:
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class PreparedData:
    class_names: list[str]
    dataset: str
    image_size: int
    splits: dict[str, Split]


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int,
                     class_names: list[str]) -> dict[str, np.ndarray]:
    """Indices per split; every class gets at least one image in each of train, val and test."""
    rng = np.random.default_rng(seed)
    parts = {split: [] for split in SPLITS}
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        if len(members) < 3:
            raise SplitError(f"class '{name}' has {len(members)} usable image(s); a stratified "
                             "train/val/test split needs at least 3 (one per split)")
        members = rng.permutation(members)
        n_test = max(1, round(len(members) * test))
        n_val = max(1, round(len(members) * val))
        n_val = min(n_val, len(members) - n_test - 1)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    return {split: np.sort(np.concatenate(idx)) for split, idx in parts.items()}


def save_prepared(out_dir: str | Path, data: PreparedData, extra_info: dict | None = None) -> None:
    out_dir = Path(out_dir)
    for name, split in data.splits.items():
        write_npz(out_dir / f"{name}.npz", images=split.images, labels=split.labels)
    write_json(out_dir / "labels.json", {"classes": data.class_names, "dataset": data.dataset,
                                         "image_size": data.image_size, **(extra_info or {})})


def load_labels(prepared_dir: str | Path) -> dict:
    return read_json(Path(prepared_dir) / "labels.json")


def load_split(prepared_dir: str | Path, split: str) -> Split:
    with np.load(Path(prepared_dir) / f"{split}.npz", allow_pickle=False) as npz:
        return Split(images=npz["images"], labels=npz["labels"])


def load_prepared(prepared_dir: str | Path, splits=SPLITS) -> PreparedData:
    labels = load_labels(prepared_dir)
    return PreparedData(class_names=labels["classes"], dataset=labels["dataset"],
                        image_size=labels["image_size"],
                        splits={name: load_split(prepared_dir, name) for name in splits})


def count_summary(data: PreparedData) -> dict:
    """Images per split and per class, for metrics/data.json."""
    summary = {}
    for name, split in data.splits.items():
        counts = np.bincount(split.labels, minlength=len(data.class_names))
        summary[name] = {"total": int(len(split.labels)),
                         "per_class": {c: int(n) for c, n in zip(data.class_names, counts)}}
    return summary


def tf_dataset(split: Split, batch_size: int, shuffle: bool = False, seed: int = 0):
    """uint8 images and labels, cached, optionally shuffled per epoch, batched and prefetched."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels)).cache()
    if shuffle:
        ds = ds.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
