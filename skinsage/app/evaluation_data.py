"""Labelled images for `skinsage evaluate`, labelled in the model's own class order.

Four layouts: a class-per-folder tree (read by `data.sources.folder`, as `prepare` reads it;
folders matched to the model's class names by name), a CSV of labels beside a folder of images
(read by `data.sources.csv_table`, the `csv` source's own reader, with its clinical columns), a
MedMNIST-layout `.npz` (one of its splits), or a folder written by `prepare` (data/prepared: one of
its splits, exactly what `evaluate` scored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import resize_array
from ..errors import SkinSageError
from ..params import CsvParams, loose_name
from ..prepared import SPLITS, Split, has_split, is_prepared_dir, load_labels, load_split


class LabelledDataError(SkinSageError, ValueError):
    """The evaluation data does not fit the model."""


@dataclass
class LabelledData:
    split: Split                    # images at the model's size, labels as indices into its classes
    description: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def load_labelled(path: str | Path, classes: list[str], size: int, *, split: str = "test",
                  renames: dict[str, str] | None = None, workers: int = 0,
                  csv: CsvParams | None = None) -> LabelledData:
    """`csv`: how to read `path` when it is a CSV of labels (its `path` is `path`)."""
    path = Path(path)
    if split not in SPLITS:
        raise LabelledDataError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    if path.suffix.lower() == ".csv" and path.is_file():
        if csv is None:
            raise LabelledDataError(f"{path}: a CSV of labels needs --images DIR (the folder of its images)")
        return _from_csv(csv, classes, size, renames or {}, workers)
    if is_prepared_dir(path):
        return _from_prepared(path, classes, size, split)
    if path.is_dir():
        return _from_folder(path, classes, size, renames or {}, workers)
    if not path.exists():
        raise LabelledDataError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".npz":
        return _from_npz(path, classes, size, split)
    raise LabelledDataError(f"{path}: expected a folder with one sub-folder per class, a CSV of labels "
                            "(with --images), a folder written by `prepare` (data/prepared), or a "
                            "MedMNIST-layout .npz file")


# The csv source's messages name params.yaml keys; `skinsage evaluate` names its own options.
CSV_OPTIONS = {"data.csv.path": "--data", "data.csv.images": "--images", "data.csv.id": "--id",
               "data.csv.label": "--label", "data.csv.extra_csv": "--extra-csv",
               "data.csv.classes": "--classes", "data.csv.exclude": "--exclude",
               "data.csv.clinical.": "--clinical-column ", "data.csv.clinical": "--clinical-column"}


def _from_csv(c: CsvParams, classes: list[str], size: int, renames: dict[str, str], workers: int) -> LabelledData:
    """The csv source's rows (the same reader `prepare` uses: ids, labels, exclusions, renames,
    clinical columns), decoded at the model's size, labels matched to the model's classes."""
    from ..data.sources.folder import decode_listing
    from ..data.sources.csv_table import list_csv_table
    from ..data.sources.table import CsvError

    try:
        listing = list_csv_table(c)
        mapping = match_folders(listing.class_names, classes, renames, what="labels")  # before decoding
    except CsvError as err:
        message = str(err)
        for key, option in CSV_OPTIONS.items():
            message = message.replace(key, option)
        raise LabelledDataError(message) from None
    raw = decode_listing(listing, size, workers)
    to_model = np.array([mapping[name] for name in raw.class_names], dtype=np.int64)
    labels = to_model[raw.labels["all"]] if len(raw.labels["all"]) else raw.labels["all"]
    if not len(labels):
        raise LabelledDataError(f"{c.path}: none of its images could be read ({len(raw.skipped)} skipped)")
    clinical = raw.clinical.get("all") or None
    fields = f", clinical {', '.join(clinical)}" if clinical else ""
    return LabelledData(Split(raw.images["all"], labels, clinical=clinical),
                        f"CSV {c.path} with images in {c.images} ({len(raw.class_names)} labels{fields})",
                        raw.skipped)


def match_folders(folder_names: list[str], classes: list[str],
                  renames: dict[str, str], what: str = "folders") -> dict[str, int]:
    """Folder name -> class index. Names match exactly, else ignoring case and separators
    ('Basal cell carcinoma' = 'basal_cell_carcinoma'); `renames` maps a folder to a class by hand."""
    unused = set(renames) - set(folder_names)
    if unused:
        raise LabelledDataError(f"--map names {what} that do not exist: {', '.join(sorted(unused))}; "
                                f"the {what} are: {', '.join(folder_names)}")
    loose = {}
    for index, name in enumerate(classes):
        loose.setdefault(loose_name(name), []).append(index)
    mapping, unknown = {}, []
    for folder in folder_names:
        wanted = renames.get(folder, folder)
        candidates = [classes.index(wanted)] if wanted in classes else loose.get(loose_name(wanted), [])
        if len(candidates) == 1:
            mapping[folder] = candidates[0]
        else:
            unknown.append(folder)
    if unknown:
        raise LabelledDataError(
            f"class {what} the model does not know: {', '.join(unknown)}.\n"
            f"  {what + ':':<20} {', '.join(folder_names)}\n"
            f"  the model's classes: {', '.join(classes)}\n"
            f"Rename the {what} to the model's class names, or map them: --map {what[:-1].upper()}=CLASS")
    return mapping


def _from_folder(root: Path, classes: list[str], size: int, renames: dict[str, str],
                 workers: int) -> LabelledData:
    from ..data.sources.folder import FolderError, list_class_dirs, load_folder

    try:
        class_dirs, _ = list_class_dirs(root, min_classes=1)  # a folder of one class can be scored
        mapping = match_folders([d.name for d in class_dirs], classes, renames)  # before decoding
        raw = load_folder(root, size, workers=workers, min_classes=1)
    except FolderError as err:
        raise LabelledDataError(str(err).removeprefix("data.folder.path: ")) from None
    to_model = np.array([mapping[name] for name in raw.class_names], dtype=np.int64)
    labels = to_model[raw.labels["all"]] if len(raw.labels["all"]) else raw.labels["all"]
    if not len(labels):
        raise LabelledDataError(f"{root}: none of its images could be read "
                                f"({len(raw.skipped)} files skipped)")
    return LabelledData(Split(raw.images["all"], labels),
                        f"class folders {root} ({len(class_dirs)} classes)", raw.skipped)


def _from_npz(path: Path, classes: list[str], size: int, split: str) -> LabelledData:
    from ..data.sources.medmnist import read_npz

    images, labels = read_npz(path, num_classes=len(classes))
    if not len(labels[split]):
        raise LabelledDataError(f"{path}: its {split} split is empty")
    return LabelledData(Split(resize_array(images[split], size), labels[split]),
                        f"{path} ({split} split)")


def _from_prepared(path: Path, classes: list[str], size: int, split: str) -> LabelledData:
    """A split of data/prepared: its classes must be the model's, in the model's order."""
    info = load_labels(path)
    if info.get("classes") != classes:
        raise LabelledDataError(f"{path}: prepared for classes {info.get('classes')}, but the model "
                                f"has {classes}; run `dvc repro` so data and model match")
    if not has_split(path, split):
        raise LabelledDataError(f"{path}: no {split}.npz (or sharded {split}/) in this prepared folder")
    data = load_split(path, split).in_memory()
    if not len(data.labels):
        raise LabelledDataError(f"{path}: its {split} split is empty")
    return LabelledData(Split(resize_array(data.images, size), data.labels, clinical=data.clinical),
                        f"{path} ({split} split of {info.get('dataset', 'a prepared dataset')})")
