"""Assigning images to train, val and test for sources without a split of their own."""

from __future__ import annotations

import numpy as np

from ..errors import SkinSageError
from ..prepared import SPLITS


class SplitError(SkinSageError, ValueError):
    """The data cannot be split as asked."""


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
