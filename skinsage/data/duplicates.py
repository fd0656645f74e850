"""Identical images: copies within a class, label conflicts across classes, leakage across splits.

"Identical" means identical model input: the same pixels after decoding and resizing, which is
what a model could memorise. Near-duplicates (re-compressed, cropped) are not detected.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict

import numpy as np

from ..prepared import PreparedData
from .sources import RawDataset


def image_digests(images: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]


def image_names(raw: RawDataset, split: str) -> list[str]:
    """A name per image: its file when the source has files, else split[index]."""
    return raw.paths.get(split) or [f"{split}[{i}]" for i in range(len(raw.labels[split]))]


def remove_same_class_copies(raw: RawDataset) -> tuple[RawDataset, list[tuple[str, str]]]:
    """For a source we split ourselves: keep the first of identical images within a class, so no
    copy can land in both train and test. Returns the reduced dataset and (image, reason) rows."""
    images, labels, names = raw.images["all"], raw.labels["all"], image_names(raw, "all")
    first: dict[tuple[bytes, int], int] = {}
    keep, removed = [], []
    for i, (digest, label) in enumerate(zip(image_digests(images), labels)):
        key = (digest, int(label))
        if key in first:
            removed.append((names[i], f"duplicate (same class) of {names[first[key]]}"))
        else:
            first[key] = i
            keep.append(i)
    if not removed:
        return raw, []
    keep = np.asarray(keep, dtype=np.int64)
    paths = {"all": [names[i] for i in keep]} if raw.paths.get("all") else {}
    groups = {"all": raw.groups["all"][keep]} if "all" in raw.groups else {}
    metadata = {"all": {k: v[keep] for k, v in raw.metadata["all"].items()}} if "all" in raw.metadata else {}
    return dataclasses.replace(raw, images={"all": images[keep]}, labels={"all": labels[keep]},
                               paths=paths, groups=groups, metadata=metadata), removed


def find_label_conflicts(raw: RawDataset) -> list[list[tuple[str, str]]]:
    """Groups of identical images filed under more than one class: [(image, class name), ...]."""
    groups: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
    for split in raw.images:
        names = image_names(raw, split)
        for i, (digest, label) in enumerate(zip(image_digests(raw.images[split]), raw.labels[split])):
            groups[digest].append((names[i], int(label)))
    return [[(name, raw.class_names[label]) for name, label in members]
            for members in groups.values() if len({label for _, label in members}) > 1]


def count_leakage(data: PreparedData) -> dict[str, int]:
    """How many val/test images are identical to an image of an earlier split (any label)."""
    seen = {name: set(image_digests(split.images)) for name, split in data.splits.items()}
    counts = {}
    for later, earlier in (("val", "train"), ("test", "train"), ("test", "val")):
        if later in data.splits and earlier in data.splits:
            digests = image_digests(data.splits[later].images)
            counts[f"{later}_in_{earlier}"] = sum(d in seen[earlier] for d in digests)
    return counts
