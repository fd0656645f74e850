"""A class-per-folder image dataset: <root>/<class name>/**/<image>.

Unreadable files are skipped and reported with the reason; nothing outside the root is read.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import SkinSageError
from ..images import ImageError, load_image
from . import RawDataset


class FolderError(SkinSageError, ValueError):
    """The folder cannot serve as a class-per-folder dataset."""


def load_folder(root: str | Path, size: int, workers: int = 0) -> RawDataset:
    root = Path(root)
    class_dirs = list_class_dirs(root)
    files, skipped = [], []
    for label, class_dir in enumerate(class_dirs):
        found, outside = _walk_files(class_dir, root.resolve())
        files += [(path, label) for path in found]
        skipped += [(str(path), "symlink pointing outside the dataset folder") for path in outside]
    images, labels, paths = [], [], []
    decode = partial(_decode, size=size)
    with _pool(workers) as pool:
        results = pool.map(decode, [path for path, _ in files], chunksize=32)
        for (path, label), (array, error) in tqdm(zip(files, results), total=len(files),
                                                  desc=f"decode {root.name}", unit="img"):
            if error:
                skipped.append((str(path), error))
            else:
                images.append(array)
                labels.append(label)
                paths.append(str(path))
    return RawDataset(
        name=f"image folder {root.name}",
        class_names=[d.name for d in class_dirs],
        images={"all": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)},
        labels={"all": np.asarray(labels, dtype=np.int64)},
        skipped=skipped,
        paths={"all": paths},
    )


def list_class_dirs(root: Path) -> list[Path]:
    if not root.exists():
        raise FolderError(f"data.folder.path: {root} does not exist")
    if not root.is_dir():
        raise FolderError(f"data.folder.path: {root} is not a folder")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    if len(class_dirs) < 2:
        raise FolderError(f"data.folder.path: {root} needs one sub-folder per class (at least 2), "
                          f"found {len(class_dirs)}")
    return class_dirs


def _walk_files(class_dir: Path, root: Path) -> tuple[list[Path], list[Path]]:
    """Files under class_dir, sorted; symlinks that leave `root` are returned separately."""
    inside, outside = [], []
    for dirpath, dirnames, filenames in os.walk(class_dir):  # does not follow symlinked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name == "Thumbs.db":
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                outside.append(path)
            else:
                inside.append(path)
    return inside, outside


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_image(path, size), None
    except ImageError as err:
        return None, str(err).removeprefix(f"{path}: ")


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
