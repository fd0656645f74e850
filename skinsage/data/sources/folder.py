"""A class-per-folder image dataset: <root>/<class name>/**/<image>, or one with its own split:
<root>/{train,val,test}/<class name>/**/<image>.

Unreadable files are skipped and reported with the reason; nothing outside the root is read.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from ...errors import SkinSageError, debug_mode, unexpected_reason
from ...log import progress
from ..images import ImageError, is_image_name, is_os_clutter, load_image
from .dataset import Listing, RawDataset


class FolderError(SkinSageError, ValueError):
    """The folder cannot serve as a class-per-folder dataset."""


SPLIT_FOLDERS = ("train", "val", "test")
WINDOW = 1024  # files handed to the decoding pool at a time: bounds the decoded images in flight


def load_folder(root: str | Path, size: int, workers: int = 0, min_classes: int = 2) -> RawDataset:
    """<root>/<class>/... (split later, stratified) or, when the dataset has a split of its own,
    <root>/{train,val,test}/<class>/... (kept as given, e.g. split by patient or lesion).
    Training needs two classes; `skinsage evaluate` may score a folder of one (min_classes=1)."""
    return decode_listing(list_folder(root, min_classes), size, workers)


def list_folder(root: str | Path, min_classes: int = 2) -> Listing:
    """The dataset's image files and labels, nothing decoded (see `load_folder`)."""
    root = Path(root)
    if split_folders(root):
        return _list_own_split(root)
    class_dirs, skipped = list_class_dirs(root, min_classes=min_classes)
    paths, labels, not_read = _list_classes(root, class_dirs, range(len(class_dirs)))
    return Listing(name=f"image folder {root.name}", class_names=[d.name for d in class_dirs],
                   paths={"all": paths}, labels={"all": labels}, skipped=sorted(skipped + not_read))


def split_folders(root: Path) -> bool:
    """True when the root's folders are exactly train, val and test."""
    if not root.is_dir():
        return False
    names = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    return names == set(SPLIT_FOLDERS)


def _list_own_split(root: Path) -> Listing:
    """Class names are the union over the splits (sorted); a class may be missing from val or test
    but not from train."""
    per_split = {name: list_class_dirs(root / name, min_classes=2 if name == "train" else 1)
                 for name in SPLIT_FOLDERS}
    class_names = sorted({d.name for dirs, _ in per_split.values() for d in dirs})
    missing = sorted(set(class_names) - {d.name for d in per_split["train"][0]})
    if missing:
        raise FolderError(f"data.folder.path: {root}/train has no folder for class(es) "
                          f"{', '.join(missing)} found in val/test; every class needs training images")
    listing = Listing(name=f"image folder {root.name}", class_names=class_names, paths={}, labels={})
    for name, (class_dirs, skipped) in per_split.items():
        labels = [class_names.index(d.name) for d in class_dirs]
        listing.paths[name], listing.labels[name], not_read = _list_classes(root, class_dirs, labels)
        listing.skipped += skipped + not_read
    listing.skipped.sort()
    return listing


def _list_classes(root: Path, class_dirs: list[Path], class_labels):
    """Every file under the class folders: (paths, labels, skipped with reasons)."""
    paths, labels, skipped = [], [], []
    for label, class_dir in zip(class_labels, class_dirs):
        found, not_read = walk_files(class_dir, Path(os.path.realpath(root)))
        paths += [str(path) for path in found]
        labels += [label] * len(found)
        skipped += not_read
    return paths, np.asarray(labels, dtype=np.int64), skipped


def decode_listing(listing: Listing, size: int, workers: int) -> RawDataset:
    """Every listed file decoded into memory (the npz store); unreadable ones join `skipped`."""
    raw = RawDataset(name=listing.name, class_names=listing.class_names, images={}, labels={},
                     skipped=list(listing.skipped))
    for split, paths in listing.paths.items():
        where = "" if split == "all" else f"/{split}"
        raw.images[split], kept, not_decoded = decode_files(paths, size, workers, f"decode {listing.name}{where}")
        raw.labels[split] = listing.labels[split][kept]
        raw.paths[split] = [paths[i] for i in kept]
        if listing.groups:
            raw.groups[split] = listing.groups[split][kept]
        if listing.clinical:
            raw.clinical[split] = {key: values[kept] for key, values in listing.clinical[split].items()}
        raw.skipped += not_decoded
    raw.skipped.sort()
    return raw


def decode_files(paths: list, size: int, workers: int, desc: str):
    """Decode files in parallel: (images (N, size, size, 3) uint8, indices of the decoded paths,
    [(path, reason)] for the others). One bad file never stops the rest."""
    images, kept, skipped = [], [], []
    for i, array, error in iter_decoded(paths, size, workers, desc):
        if error:
            skipped.append((str(paths[i]), error))
        else:
            images.append(array)
            kept.append(i)
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return stacked, kept, skipped


def iter_decoded(paths: list, size: int, workers: int, desc: str):
    """(index, image or None, reason or None) per path, in order, decoded in parallel by `workers`
    processes. Paths go to the pool a window at a time, so at most WINDOW decoded images wait in
    memory however long the list: the sharded `prepare` writes each to disk as it comes."""
    with _pool(workers) as pool, progress(total=len(paths), desc=desc) as bar:
        for start in range(0, len(paths), WINDOW):
            window = paths[start:start + WINDOW]
            for offset, (array, error) in enumerate(pool.map(partial(_decode, size=size), window, chunksize=32)):
                bar.update(1)
                yield start + offset, array, error


def list_class_dirs(root: Path, min_classes: int = 2) -> tuple[list[Path], list[tuple[str, str]]]:
    """Class folders sorted by name, and the symlinked ones skipped because they leave `root`."""
    if not root.exists():
        raise FolderError(f"data.folder.path: {root} does not exist")
    if not root.is_dir():
        raise FolderError(f"data.folder.path: {root} is not a folder")
    real_root = Path(os.path.realpath(root))
    class_dirs, skipped = [], []
    for entry in sorted(root.iterdir(), key=lambda d: d.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # hidden folders and loose files at the top level are not classes
        problem = _link_problem(entry, real_root)
        if problem:
            skipped.append((str(entry), problem))
        else:
            class_dirs.append(entry)
    if len(class_dirs) < min_classes:
        raise FolderError(f"data.folder.path: {root} needs one sub-folder per class (at least {min_classes}), "
                          f"found {len(class_dirs)}")
    return class_dirs, skipped


def walk_files(class_dir: Path, root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Regular files under class_dir (any depth), sorted, and what was skipped with the reason.

    Symlinked files are read only when they resolve inside `root`; symlinked folders are never
    followed (no loops, no escapes) but reported. OS clutter and hidden files are ignored silently.
    """
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(class_dir):  # does not follow symlinked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                skipped.append((os.path.join(dirpath, name), "symlinked folder (not followed)"))
        for name in sorted(filenames):
            if is_os_clutter(name):
                continue
            path = Path(dirpath) / name
            problem = _link_problem(path, root) or _not_regular(path)
            if problem:
                skipped.append((str(path), problem))
            else:
                files.append(path)
    return files, skipped


def _link_problem(path: Path, root: Path) -> str | None:
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if not target.is_relative_to(root):
        return "symlink pointing outside the dataset folder"
    try:
        target.stat()
    except OSError as err:
        return "symlink loop" if err.errno == errno.ELOOP else "broken symlink"
    return None


def _not_regular(path: Path) -> str | None:
    """FIFOs, sockets and devices: opening one could block forever."""
    return None if path.is_file() else "not a regular file"


def _decode(path: str | Path, size: int) -> tuple[np.ndarray | None, str | None]:
    path = Path(path)
    try:
        return load_image(path, size), None
    except ImageError as err:
        reason = str(err).removeprefix(f"{path}: ")
        if reason.startswith("not an image") and not is_image_name(path):
            reason = f"not an image ({path.suffix or 'no'} file extension)"
        return None, reason
    except Exception as err:  # noqa: BLE001  one odd file must not stop a dataset of thousands
        if debug_mode():
            raise
        return None, unexpected_reason(err)


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items, chunksize=1):
        return map(fn, items)


def _pool(workers: int):
    workers = workers or os.cpu_count() or 1
    return _Serial() if workers == 1 else ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"))  # fork + TF threads can hang
