"""The prepared dataset on disk (data/prepared): what `prepare` writes and every later stage reads.

One npz per split (uint8 images, int64 labels) and labels.json (class names, dataset, image size).
It lives at the top of the package because it is the contract between stages, not any stage's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import read_json, write_json, write_npz

SPLITS = ("train", "val", "test")


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


def is_prepared_dir(path: str | Path) -> bool:
    """A folder written by `prepare` (labels.json beside the split files)."""
    return (Path(path) / "labels.json").is_file()


def count_summary(data: PreparedData) -> dict:
    """Images per split and per class, for metrics/data.json."""
    summary = {}
    for name, split in data.splits.items():
        counts = np.bincount(split.labels, minlength=len(data.class_names))
        summary[name] = {"total": int(len(split.labels)),
                         "per_class": {c: int(n) for c, n in zip(data.class_names, counts)}}
    return summary
