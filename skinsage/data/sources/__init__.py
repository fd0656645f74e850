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


def load_source(params: Params) -> RawDataset:
    """Load the source selected by `data.source`, already resized to the selected model's size."""
    size = params.image_size
    source = params.data.source
    if source == "medmnist":
        from .medmnist import load_medmnist
        return load_medmnist(params.data.medmnist, size)
    if source == "csv":
        from .csv_table import load_csv_table
        return load_csv_table(params.data.csv, size, workers=params.data.workers)
    if source == "folder":
        from .folder import load_folder
        raw = load_folder(params.data.folder.path, size, workers=params.data.workers)
        if params.data.folder.groups is None:
            return raw
        from .folder_groups import attach_groups
        return attach_groups(raw, params.data.folder.groups)
    from .synthetic import make_synthetic
    return make_synthetic(params.data.synthetic, size, seed=params.data.seed)
