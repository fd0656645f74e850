"""A class-per-folder dataset that brings its own split: <root>/{train,val,test}/<class>/ is kept
as given (e.g. split by patient or lesion), never re-split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage.data.prepare import prepare
from skinsage.data.sources.folder import FolderError, load_folder
from skinsage.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


def photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def split_tree(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    seed = 0
    for split, classes in counts.items():
        for name, n in classes.items():
            for i in range(n):
                seed += 1
                photo(root / split / name / f"{split}_{name}_{i}.jpg", seed)
    return root


def test_own_split_is_kept_with_labels_from_the_union_of_class_names(tmp_path):
    root = split_tree(tmp_path / "lesions", {"train": {"nevus": 5, "melanoma": 3},
                                             "val": {"nevus": 2, "melanoma": 1},
                                             "test": {"nevus": 2}})  # no melanoma in test: allowed
    raw = load_folder(root, SIZE, workers=1)
    assert raw.has_official_split and raw.class_names == ["melanoma", "nevus"]
    assert {s: np.bincount(raw.labels[s], minlength=2).tolist() for s in raw.labels} == {
        "train": [3, 5], "val": [1, 2], "test": [0, 2]}
    for split, paths in raw.paths.items():
        assert all(f"/{split}/" in p for p in paths)
        names = [Path(p).parent.name for p in paths]
        assert [raw.class_names[label] for label in raw.labels[split]] == names
        assert raw.images[split].shape == (len(paths), SIZE, SIZE, 3) and raw.images[split].dtype == np.uint8


def test_prepare_keeps_the_given_split(tmp_path):
    root = split_tree(tmp_path / "data", {"train": {"a": 6, "b": 6}, "val": {"a": 3, "b": 3},
                                          "test": {"a": 4, "b": 2}})
    params = load_params(ROOT / "params.yaml", {"data.source": "folder", "data.folder.path": str(root),
                                                "model": "cnn", "models.cnn.image_size": SIZE,
                                                "data.workers": 1})
    data = prepare(params, tmp_path / "prepared", tmp_path / "data.json")
    assert {s: len(split.labels) for s, split in data.splits.items()} == {"train": 12, "val": 6, "test": 6}
    assert np.bincount(data.splits["test"].labels).tolist() == [4, 2]


def test_a_class_only_in_val_or_test_is_a_clear_error(tmp_path):
    root = split_tree(tmp_path / "data", {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1, "c": 1},
                                          "test": {"a": 1, "b": 1}})
    with pytest.raises(FolderError, match="train has no folder for class.*c"):
        load_folder(root, SIZE, workers=1)


def test_a_folder_that_only_looks_split_is_read_as_classes(tmp_path):
    root = split_tree(tmp_path / "data", {"train": {"x": 3}, "test": {"x": 3}})  # no val: classes
    raw = load_folder(root, SIZE, workers=1)
    assert not raw.has_official_split and raw.class_names == ["test", "train"]
