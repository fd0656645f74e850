"""What every source returns (`RawDataset`) and what the file-based ones list first (`Listing`);
apart from the package's __init__ so the sources import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawDataset:
    name: str                       # human-readable, shown in metrics, plots and the model's metadata
    class_names: list[str]
    images: dict[str, np.ndarray]   # split -> (N, size, size, 3) uint8; a single "all" when unsplit
    labels: dict[str, np.ndarray]   # split -> (N,) int64
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    paths: dict[str, list[str]] = field(default_factory=dict)       # split -> source file per image
    # split -> (N,) group id per image (lesion, patient): the split keeps each group in one split.
    # Empty when the source has no groups.
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    # split -> {field: (N,) array}: clinical data per image (age, sex, site; csv source with
    # data.csv.clinical). Empty when the source has none.
    clinical: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def has_official_split(self) -> bool:
        return set(self.images) == {"train", "val", "test"}


@dataclass
class Listing:
    """A file-based source (folder, csv) before decoding: the files and their labels, which the
    sharded `prepare` decodes one by one straight to disk and `decode_listing` into memory."""
    name: str
    class_names: list[str]
    paths: dict[str, list[str]]     # split -> image files; a single "all" when unsplit
    labels: dict[str, np.ndarray]   # split -> (N,) int64
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) found while listing
    groups: dict[str, np.ndarray] = field(default_factory=dict)   # as RawDataset.groups, per file
    clinical: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # as RawDataset.clinical

    @property
    def has_official_split(self) -> bool:
        return set(self.paths) == {"train", "val", "test"}
