"""Where images come from: the MedMNIST download, a class-per-folder dataset, a folder of images
with a CSV of labels, or generated shapes.

Every source returns a `RawDataset`; `prepare` turns it into model-ready splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...params import Params


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
    # split -> {field: (N,) array}: clinical metadata per image (age, sex, site; csv source with
    # data.csv.clinical). Empty when the source has none.
    metadata: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

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
    metadata: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # as RawDataset.metadata

    @property
    def has_official_split(self) -> bool:
        return set(self.paths) == {"train", "val", "test"}


def decode_listing(listing: Listing, size: int, workers: int) -> RawDataset:
    """Every listed file decoded into memory (the npz store); unreadable ones join `skipped`."""
    from .folder import decode_files

    raw = RawDataset(name=listing.name, class_names=listing.class_names, images={}, labels={},
                     skipped=list(listing.skipped))
    for split, paths in listing.paths.items():
        where = "" if split == "all" else f"/{split}"
        raw.images[split], kept, not_decoded = decode_files(paths, size, workers, f"decode {listing.name}{where}")
        raw.labels[split] = listing.labels[split][kept]
        raw.paths[split] = [paths[i] for i in kept]
        if listing.groups:
            raw.groups[split] = listing.groups[split][kept]
        if listing.metadata:
            raw.metadata[split] = {key: values[kept] for key, values in listing.metadata[split].items()}
        raw.skipped += not_decoded
    raw.skipped.sort()
    return raw


def list_source(params: Params) -> Listing | None:
    """The files of a folder or csv source (None for the in-memory sources: medmnist, synthetic)."""
    if params.data.source == "csv":
        from .csv_table import list_csv_table
        return list_csv_table(params.data.csv)
    if params.data.source != "folder":
        return None
    from .folder import list_folder
    listing = list_folder(params.data.folder.path)
    if params.data.folder.groups is None:
        return listing
    from .folder_groups import attach_groups
    return attach_groups(listing, params.data.folder.groups)


def load_source(params: Params) -> RawDataset:
    """Load the source selected by `data.source`, already resized to the selected model's size."""
    size = params.image_size
    source = params.data.source
    if source == "medmnist":
        from .medmnist import load_medmnist
        return load_medmnist(params.data.medmnist, size)
    if source in ("csv", "folder"):
        return decode_listing(list_source(params), size, params.data.workers)
    from .synthetic import make_synthetic
    return make_synthetic(params.data.synthetic, size, seed=params.data.seed)
