"""Assigning images to train, val and test for sources without a split of their own."""

from __future__ import annotations

from collections import Counter

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


def grouped_stratified_split(labels: np.ndarray, groups: np.ndarray, val: float, test: float, seed: int,
                             class_names: list[str]) -> dict[str, np.ndarray]:
    """Indices per split with each group (lesion, patient) in exactly one split and each class's
    images divided as close to the fractions as whole groups allow.

    Greedy, deterministic for a seed: first every class gets a group in train, then in test, then
    in val, while it has unassigned groups left (a class with 2 groups is missing from val, with 1
    from val and test); then the other groups, largest first, each go to the split whose share of
    the group's classes is furthest below target (relative to the class's size, so rare classes
    weigh as much as common ones).
    """
    names, member_of = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.zeros((len(names), len(class_names)), dtype=np.int64)
    np.add.at(counts, (member_of, labels), 1)
    fractions = np.array([1 - val - test, val, test])  # in SPLITS order
    state = _GroupState(counts, fractions, np.random.default_rng(seed).permutation(len(names)))
    for split in ("train", "test", "val"):
        for label in np.argsort((counts > 0).sum(axis=0), kind="stable"):  # fewest groups first
            state.seed_class(SPLITS.index(split), label, class_names[label])
    state.assign_rest()
    return {split: np.flatnonzero(state.assigned[member_of] == i) for i, split in enumerate(SPLITS)}


class _GroupState:
    """Groups' class counts and the split each is assigned to (-1 = not yet)."""

    def __init__(self, counts: np.ndarray, fractions: np.ndarray, order: np.ndarray):
        self.counts, self.order = counts, order  # order: the seed's tie-break between equal groups
        self.totals = counts.sum(axis=0)
        self.target = fractions[:, None] * self.totals[None, :]
        self.current = np.zeros_like(self.target)
        self.assigned = np.full(len(counts), -1)

    def put(self, group: int, split: int) -> None:
        self.assigned[group] = split
        self.current[split] += self.counts[group]

    def seed_class(self, split: int, label: int, name: str) -> None:
        """One group of the class into `split` if it has none there yet and a group is free:
        for train the largest (most to learn from), for val/test the smallest (least distortion)."""
        if self.current[split, label] > 0:
            return
        free = [g for g in self.order if self.assigned[g] < 0 and self.counts[g, label] > 0]
        if not free:
            if split == SPLITS.index("train"):
                raise SplitError(f"class '{name}': every group holding it is already in val or test "
                                 "(groups with several classes); it needs training images")
            return
        sizes = [self.counts[g].sum() for g in free]
        pick = free[int(np.argmax(sizes)) if split == SPLITS.index("train") else int(np.argmin(sizes))]
        self.put(pick, split)

    def assign_rest(self) -> None:
        rest = [g for g in self.order if self.assigned[g] < 0]
        rest.sort(key=lambda g: -self.counts[g].sum())  # stable: the seed's order among equal sizes
        for group in rest:
            # each split's unfilled share of its target per class: splits fill at the same pace,
            # so large groups spread over the splits instead of all landing in the largest one
            need = (self.target - self.current) / np.maximum(self.target, 1e-9)
            self.put(group, int(np.argmax(need @ self.counts[group])))


def group_summary(groups: dict[str, np.ndarray]) -> dict:
    """Groups per split and groups found in more than one split (leakage; 0 for our own split)."""
    members = {split: set(values.tolist()) for split, values in groups.items()}
    seen = [g for values in members.values() for g in values]
    crossing = sum(1 for n in Counter(seen).values() if n > 1)
    return {"per_split": {split: len(values) for split, values in members.items()}, "crossing_splits": crossing}
