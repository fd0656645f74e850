"""Where images come from: the MedMNIST download, a class-per-folder dataset, a folder of images
with a CSV of labels, or generated shapes.

Every source returns a `RawDataset` (dataset.py); `prepare` turns it into model-ready splits. The
file-based sources (folder, csv) list a `Listing` first; folder.decode_listing decodes it.
"""

from __future__ import annotations

from ...params import Params
from .dataset import Listing, RawDataset


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
        from .folder import decode_listing
        return decode_listing(list_source(params), size, params.data.workers)
    from .synthetic import make_synthetic
    return make_synthetic(params.data.synthetic, size, seed=params.data.seed)
