"""Identical images: copies within a class, label conflicts across classes, leakage across splits.

"Identical" means identical model input: the same pixels after decoding and resizing, which is
what a model could memorise. Near-duplicates (re-compressed, cropped) are not detected.
Every check works on 16-byte digests (`image_digest`), so the sharded `prepare` runs them while it
streams images to disk; the in-memory functions below feed the same checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict

import numpy as np

from ..prepared import PreparedData
from .sources import RawDataset


def image_digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def image_digests(images: np.ndarray) -> list[bytes]:
    return [image_digest(image) for image in images]


class CopyFilter:
    """Streaming same-class copy detection: `is_copy` is True for an image identical to an earlier
    one of the same class (the first is kept), and records (name, reason) in `removed`."""

    def __init__(self):
        self.first: dict[tuple[bytes, int], str] = {}
        self.removed: list[tuple[str, str]] = []

    def is_copy(self, digest: bytes, label: int, name: str) -> bool:
        key = (digest, int(label))
        if key in self.first:
            self.removed.append((name, f"duplicate (same class) of {self.first[key]}"))
            return True
        self.first[key] = name
        return False


def conflicts_of(members: list[tuple[bytes, str, int]], class_names: list[str]) -> list[list[tuple[str, str]]]:
    """Label conflicts from (digest, image name, label) of every image."""
    groups: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
    for digest, name, label in members:
        groups[digest].append((name, int(label)))
    return [[(name, class_names[label]) for name, label in group]
            for group in groups.values() if len({label for _, label in group}) > 1]


def leakage_of(digests: dict[str, list[bytes]]) -> dict[str, int]:
    """How many val/test images are identical to an image of an earlier split, from digests per split."""
    seen = {name: set(values) for name, values in digests.items()}
    counts = {}
    for later, earlier in (("val", "train"), ("test", "train"), ("test", "val")):
        if later in digests and earlier in digests:
            counts[f"{later}_in_{earlier}"] = sum(d in seen[earlier] for d in digests[later])
    return counts


def image_names(raw: RawDataset, split: str) -> list[str]:
    """A name per image: its file when the source has files, else split[index]."""
    return raw.paths.get(split) or [f"{split}[{i}]" for i in range(len(raw.labels[split]))]


def remove_same_class_copies(raw: RawDataset) -> tuple[RawDataset, list[tuple[str, str]]]:
    """For a source we split ourselves: keep the first of identical images within a class, so no
    copy can land in both train and test. Returns the reduced dataset and (image, reason) rows."""
    images, labels, names = raw.images["all"], raw.labels["all"], image_names(raw, "all")
    copies = CopyFilter()
    keep = [i for i, (digest, label) in enumerate(zip(image_digests(images), labels))
            if not copies.is_copy(digest, label, names[i])]
    removed = copies.removed
    if not removed:
        return raw, []
    keep = np.asarray(keep, dtype=np.int64)
    paths = {"all": [names[i] for i in keep]} if raw.paths.get("all") else {}
    groups = {"all": raw.groups["all"][keep]} if "all" in raw.groups else {}
    clinical = {"all": {k: v[keep] for k, v in raw.clinical["all"].items()}} if "all" in raw.clinical else {}
    return dataclasses.replace(raw, images={"all": images[keep]}, labels={"all": labels[keep]},
                               paths=paths, groups=groups, clinical=clinical), removed


def find_label_conflicts(raw: RawDataset) -> list[list[tuple[str, str]]]:
    """Groups of identical images filed under more than one class: [(image, class name), ...]."""
    members = [(digest, name, label) for split in raw.images
               for digest, name, label in zip(image_digests(raw.images[split]), image_names(raw, split),
                                              raw.labels[split])]
    return conflicts_of(members, raw.class_names)


def count_leakage(data: PreparedData) -> dict[str, int]:
    """How many val/test images are identical to an image of an earlier split (any label)."""
    return leakage_of({name: image_digests(split.images) for name, split in data.splits.items()})
