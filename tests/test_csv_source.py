"""The `csv` source (images in a folder, labels and groups in a CSV, as HAM10000 and ISIC ship) and
the group-aware split, on small datasets generated into tmp_path; one e2e test on real HAM10000."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage.data.prepare import prepare
from skinsage.data.sources import load_source
from skinsage.data.sources.csv_table import CsvError, load_csv_table
from skinsage.data.splits import group_summary, grouped_stratified_split
from skinsage.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
CLASSES = {"mel": 6, "nv": 10, "bcc": 5}  # lesions per class; lesion i has 1 + i % 3 images


def png(path: Path, seed: int) -> None:
    """A small random image (distinct pixels per seed, so no duplicate is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 14, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def ham_like(tmp_path: Path) -> tuple[Path, Path, list[list]]:
    """HAM10000's layout: images (in two sub-folders) + a CSV of lesion_id,image_id,dx, ids
    without the extension. Returns (csv, image folder, rows)."""
    images, rows, seed = tmp_path / "images", [], 0
    for dx, lesions in CLASSES.items():
        for lesion in range(lesions):
            for _ in range(1 + lesion % 3):
                seed += 1
                image_id = f"ISIC_{seed:05d}"
                png(images / f"part_{seed % 2}" / f"{image_id}.png", seed)
                rows.append([f"HAM_{dx}_{lesion}", image_id, dx])
    return write_csv(tmp_path / "metadata.csv", ["lesion_id", "image_id", "dx"], rows), images, rows


def params(csv_path: Path, images: Path, **overrides):
    """The repository's params with the csv source on the generated data."""
    return load_params(ROOT / "params.yaml", {
        "data.source": "csv", "data.csv.path": str(csv_path), "data.csv.images": str(images),
        "model": "cnn", "models.cnn.image_size": SIZE, "data.workers": 1,
        **{f"data.csv.{key}": value for key, value in overrides.items()}})


def load(csv_path: Path, images: Path, **overrides):
    p = params(csv_path, images, **overrides)
    return load_csv_table(p.data.csv, SIZE, workers=1)


HAM = {"id": "image_id", "label": "dx"}


# --- labels ------------------------------------------------------------------------------------

def test_label_column_with_extensionless_ids_in_sub_folders(tmp_path):
    csv_path, images, rows = ham_like(tmp_path)
    raw = load(csv_path, images, **HAM)
    assert raw.name == "CSV metadata.csv" and raw.class_names == ["bcc", "mel", "nv"]
    assert raw.images["all"].shape == (len(rows), SIZE, SIZE, 3) and raw.images["all"].dtype == np.uint8
    got = {Path(path).stem: raw.class_names[label] for path, label in zip(raw.paths["all"], raw.labels["all"])}
    assert got == {image_id: dx for _, image_id, dx in rows}
    assert not raw.skipped and not raw.groups  # no data.csv.group: no groups


def test_ids_with_and_without_extension_and_with_a_folder(tmp_path):
    for i, name in enumerate(["a.png", "b.png", "sub/c.png", "d.jpg"]):
        png(tmp_path / "img" / name, i)
    csv_path = write_csv(tmp_path / "t.csv", ["file", "y"],
                         [["a.png", "x"], ["b", "x"], ["sub/c", "y"], ["d.JPG", "y"]])
    raw = load(csv_path, tmp_path / "img", id="file", label="y")
    # d.JPG: the id's extension is optional, so a differently-cased one falls back to the stem
    assert sorted(Path(p).name for p in raw.paths["all"]) == ["a.png", "b.png", "c.png", "d.jpg"]


def test_one_hot_columns_with_exclude(tmp_path):
    columns = ["MEL", "NV", "UNK"]
    rows = []
    for i in range(9):
        png(tmp_path / "img" / f"ISIC_{i}.jpg", i)
        hot = columns[i % 3]
        rows.append([f"ISIC_{i}", *("1.0" if c == hot else "0.0" for c in columns)])
    csv_path = write_csv(tmp_path / "gt.csv", ["image", *columns], rows)
    raw = load(csv_path, tmp_path / "img", id="image", label=columns, exclude=["UNK"])
    assert raw.class_names == ["MEL", "NV"]
    assert sorted(Path(p).stem for p in raw.paths["all"]) == [f"ISIC_{i}" for i in range(9) if i % 3 != 2]
    assert Counter(raw.labels["all"].tolist()) == {0: 3, 1: 3}


def test_classes_rename_and_merge(tmp_path):
    csv_path, images, rows = ham_like(tmp_path)
    raw = load(csv_path, images, **HAM, classes={"mel": "malignant", "bcc": "malignant", "nv": "benign"})
    assert raw.class_names == ["benign", "malignant"]
    expected = Counter("benign" if dx == "nv" else "malignant" for *_, dx in rows)
    assert Counter(raw.class_names[label] for label in raw.labels["all"]) == expected


def test_integer_labels_renamed_through_classes(tmp_path):
    """ISIC 2020's `target` column is 0/1; YAML reads {0: benign} with an int key."""
    for i in range(4):
        png(tmp_path / "img" / f"p{i}.jpg", i)
    csv_path = write_csv(tmp_path / "train.csv", ["image_name", "target"], [[f"p{i}", i % 2] for i in range(4)])
    raw = load(csv_path, tmp_path / "img", id="image_name", label="target", classes={0: "benign", 1: "malignant"})
    assert raw.class_names == ["benign", "malignant"] and raw.labels["all"].tolist() == [0, 1, 0, 1]


# --- rows that are skipped, CSVs that are refused ------------------------------------------------

def test_missing_and_unreadable_images_are_skipped_with_the_row(tmp_path):
    csv_path, images, rows = ham_like(tmp_path)
    next(images.rglob(f"{rows[0][1]}.png")).unlink()
    next(images.rglob(f"{rows[1][1]}.png")).write_bytes(b"not a png")
    raw = load(csv_path, images, **HAM)
    assert len(raw.labels["all"]) == len(rows) - 2
    reasons = dict(raw.skipped)
    assert reasons[str(images / rows[0][1])] == "no image file for this id under data.csv.images (metadata.csv row 2)"
    unreadable = [reason for path, reason in raw.skipped if rows[1][1] in path]
    assert unreadable == ["not an image Pillow can read"]


def test_ambiguous_id_is_skipped_not_guessed(tmp_path):
    csv_path, images, rows = ham_like(tmp_path)
    png(images / "copies" / f"{rows[3][1]}.jpg", 999)  # same id, second file
    raw = load(csv_path, images, **HAM)
    (reason,) = [r for p, r in raw.skipped if rows[3][1] in p]
    assert reason.startswith("ambiguous id: 2 files match") and "row 5" in reason


@pytest.mark.parametrize("edit, overrides, message", [
    (lambda rows: rows.append([rows[0][0], rows[0][1], "nv"]), {},
     r"row 42, column 'image_id': duplicate id 'ISIC_00001' \(first on row 2\)"),
    (lambda rows: rows.append([rows[0][0], rows[0][1] + ".png", "nv"]), {},
     r"row 42, column 'image_id': duplicate id 'ISIC_00001.png' \(first on row 2\)"),
    (lambda rows: rows[4].__setitem__(2, " "), {}, r"row 6, column 'dx': empty label"),
    (lambda rows: rows[6].__setitem__(2, "scc"), {"classes": {"mel": "m", "nv": "n", "bcc": "b"}},
     r"row 8, column 'dx': unknown label 'scc': not in data.csv.classes \(mel, nv, bcc\)"),
    (lambda rows: None, {"label": "diagnosis"}, r"data.csv.label: no column 'diagnosis' in .*metadata.csv"),
    (lambda rows: None, {"group": "patient_id"}, r"data.csv.group: no column 'patient_id'"),
    (lambda rows: None, {"id": "image"}, r"data.csv.id: no column 'image'.*columns: lesion_id, image_id, dx"),
    (lambda rows: rows[2].append("extra"), {}, r"row 4 has 4 field\(s\), the header has 3"),
])
def test_bad_csv_is_refused_naming_row_and_column(tmp_path, edit, overrides, message):
    csv_path, images, rows = ham_like(tmp_path)
    edit(rows)
    write_csv(csv_path, ["lesion_id", "image_id", "dx"], rows)
    with pytest.raises(CsvError, match=message):
        load(csv_path, images, **{**HAM, **overrides})


def test_bad_one_hot_rows_are_refused(tmp_path):
    png(tmp_path / "img" / "a.jpg", 0)
    header = ["image", "MEL", "NV"]
    cases = [(["a", "1", "1"], r"row 2, columns MEL, NV: exactly one one-hot column must be 1, found 2"),
             (["a", "0", "0"], r"row 2, columns MEL, NV: exactly one .* found 0 \(none\)"),
             (["a", "yes", "0"], r"row 2, column 'MEL': one-hot value 'yes' is not 0 or 1")]
    for row, message in cases:
        csv_path = write_csv(tmp_path / "gt.csv", header, [row])
        with pytest.raises(CsvError, match=message):
            load(csv_path, tmp_path / "img", id="image", label=["MEL", "NV"])
    with pytest.raises(CsvError, match=r"data.csv.exclude: 'UNK' is not one of the one-hot columns"):
        load(csv_path, tmp_path / "img", id="image", label=["MEL", "NV"], exclude=["UNK"])


def test_extra_csv_supplies_the_group(tmp_path):
    """ISIC 2019: labels in the ground-truth CSV, lesion_id in a second one joined on the id."""
    csv_path, images, rows = ham_like(tmp_path)
    labels = write_csv(tmp_path / "gt.csv", ["image_id", "dx"], [[image_id, dx] for _, image_id, dx in rows])
    raw = load(labels, images, **HAM, group="lesion_id", extra_csv=str(csv_path))
    lesion = {image_id: lesion_id for lesion_id, image_id, _ in rows}
    assert [lesion[Path(p).stem] for p in raw.paths["all"]] == raw.groups["all"].tolist()

    write_csv(csv_path, ["lesion_id", "image_id", "dx"], rows[1:])
    with pytest.raises(CsvError, match=r"gt.csv: row 2, column 'image_id': id 'ISIC_00001' has no row in"):
        load(labels, images, **HAM, group="lesion_id", extra_csv=str(csv_path))


def test_empty_group_cell_is_a_group_of_its_own(tmp_path):
    csv_path, images, rows = ham_like(tmp_path)
    rows[0][0] = rows[1][0] = ""
    write_csv(csv_path, ["lesion_id", "image_id", "dx"], rows)
    groups = load(csv_path, images, **HAM, group="lesion_id").groups["all"].tolist()
    assert len({groups[0], groups[1]}) == 2 and rows[1][1] in groups[1]


def test_params_refuse_a_one_element_label_list_and_a_name_both_renamed_and_excluded(tmp_path):
    from skinsage.params import ParamsError
    with pytest.raises(ParamsError, match=r"data.csv.label: a list names one-hot columns and needs at least 2"):
        params(tmp_path / "x.csv", tmp_path, label=["dx"])
    with pytest.raises(ParamsError, match=r"data.csv.classes and data.csv.exclude both name 'UNK'"):
        params(tmp_path / "x.csv", tmp_path, classes={"UNK": "unknown"}, exclude=["UNK"])
    assert params(tmp_path / "x.csv", tmp_path, exclude=[]).data.csv.exclude is None
    with pytest.raises(ParamsError, match=r"data.folder.groups: missing key 'group'"):
        load_params(ROOT / "params.yaml", {"data.folder.groups": {"path": "m.csv", "id": "image_id"}})


# --- the group-aware split ---------------------------------------------------------------------

def random_groups(seed: int = 0, n_groups: int = 400):
    """Labels and group ids as in HAM10000: 1-6 images per lesion, imbalanced classes, and a rare
    class with only 2 lesions (no val image possible)."""
    rng = np.random.default_rng(seed)
    per_group_label = rng.choice(5, size=n_groups, p=[0.6, 0.2, 0.1, 0.07, 0.03])
    per_group_label[:2] = 5  # class 5: two lesions
    per_group_label[2:] = np.where(per_group_label[2:] == 5, 0, per_group_label[2:])
    sizes = rng.integers(1, 7, size=n_groups)
    labels = np.repeat(per_group_label, sizes)
    groups = np.repeat([f"lesion_{i}" for i in range(n_groups)], sizes)
    order = rng.permutation(len(labels))  # rows of one lesion are not adjacent in a real CSV
    return labels[order], groups[order]


NAMES = [f"c{i}" for i in range(6)]


def test_group_split_has_no_group_in_two_splits_and_stratifies():
    labels, groups = random_groups()
    index = grouped_stratified_split(labels, groups, val=0.1, test=0.2, seed=42, class_names=NAMES)
    assert np.array_equal(np.sort(np.concatenate(list(index.values()))), np.arange(len(labels)))
    summary = group_summary({split: groups[idx] for split, idx in index.items()})
    assert summary["crossing_splits"] == 0
    assert sum(summary["per_split"].values()) == len(set(groups.tolist()))
    for label in range(5):  # each class's images within 3 points of the fractions (whole groups)
        share = {split: np.mean(labels[idx] == label) * len(idx) / np.sum(labels == label)
                 for split, idx in index.items()}
        assert share["test"] == pytest.approx(0.2, abs=0.03) and share["val"] == pytest.approx(0.1, abs=0.03)
    rare = {split: int(np.sum(labels[idx] == 5)) for split, idx in index.items()}
    assert rare["train"] > 0 and rare["test"] > 0 and rare["val"] == 0  # 2 lesions: train and test


def test_group_split_is_deterministic_for_a_seed_and_changes_with_it():
    labels, groups = random_groups()
    split = lambda seed: grouped_stratified_split(labels, groups, 0.1, 0.2, seed, NAMES)  # noqa: E731
    first, again, other = split(7), split(7), split(8)
    assert all(np.array_equal(first[s], again[s]) for s in first)
    assert not np.array_equal(first["test"], other["test"])


def test_a_class_with_one_group_is_kept_in_train():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2])
    groups = np.array(["a", "a", "a", "b", "c", "d", "e", "f", "g", "h", "i", "i", "i"])
    for seed in range(5):
        index = grouped_stratified_split(labels, groups, 0.2, 0.2, seed, ["x", "y", "z"])
        assert set(groups[index["train"]]) >= {"i"}  # z: one lesion, in train whatever the seed
        assert all({0, 1} <= set(labels[idx]) for idx in index.values())  # x and y: 3+ groups, in every split


# --- prepare end to end ------------------------------------------------------------------------

def test_prepare_on_a_csv_with_groups(tmp_path, capsys):
    csv_path, images, rows = ham_like(tmp_path)
    next(images.rglob(f"{rows[1][1]}.png")).unlink()  # lesion HAM_mel_1 keeps its other image
    p = params(csv_path, images, **HAM, group="lesion_id")
    data = prepare(p, tmp_path / "prepared", tmp_path / "data.json")
    metrics = json.loads((tmp_path / "data.json").read_text())
    assert metrics["groups"]["crossing_splits"] == 0
    assert sum(metrics["groups"]["per_split"].values()) == len({lesion for lesion, *_ in rows})
    assert sum(len(s.labels) for s in data.splits.values()) == len(rows) - 1
    assert metrics["skipped_files"] == 1
    skipped = (tmp_path / "prepared" / "skipped.csv").read_text().splitlines()
    assert skipped[1].startswith(str(images / rows[1][1])) and "metadata.csv row 3" in skipped[1]
    assert "0 in more than one split" in capsys.readouterr().out
    assert json.loads((tmp_path / "prepared" / "labels.json").read_text())["source"] == "csv"


def test_prepare_without_groups_reports_none(tmp_path):
    csv_path, images, _ = ham_like(tmp_path)
    prepare(params(csv_path, images, **HAM), tmp_path / "prepared", tmp_path / "data.json")
    assert "groups" not in json.loads((tmp_path / "data.json").read_text())


# --- a class-per-folder dataset with groups from a CSV (data.folder.groups) ----------------------

def folder_with_groups(tmp_path: Path, split_folders: bool = False) -> tuple[Path, Path, list[list]]:
    """The HAM-like images sorted into class folders (or train/test/val/<class> by row), and the
    metadata CSV as the group map."""
    csv_path, images, rows = ham_like(tmp_path)
    root = tmp_path / "classes"
    for i, (_, image_id, dx) in enumerate(rows):
        split = ("train", "train", "val", "test")[i % 4] + "/" if split_folders else ""  # by row: leaks
        target = root / f"{split}{dx}" / f"{image_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        next(images.rglob(f"{image_id}.png")).rename(target)
    return csv_path, root, rows


def folder_params(root: Path, csv_path: Path):
    return load_params(ROOT / "params.yaml", {
        "data.source": "folder", "data.folder.path": str(root), "model": "cnn",
        "models.cnn.image_size": SIZE, "data.workers": 1,
        "data.folder.groups": {"path": str(csv_path), "id": "image_id", "group": "lesion_id"}})


def test_folder_groups_from_a_csv_split_by_group(tmp_path):
    csv_path, root, rows = folder_with_groups(tmp_path)
    write_csv(csv_path, ["lesion_id", "image_id", "dx"], rows[1:])  # the first image: no group listed
    raw = load_source(folder_params(root, csv_path))
    lesion = {image_id: lesion_id for lesion_id, image_id, _ in rows[1:]}
    assert [lesion.get(Path(p).stem, f"(no group) {p}") for p in raw.paths["all"]] == raw.groups["all"].tolist()
    prepare(folder_params(root, csv_path), tmp_path / "prepared", tmp_path / "data.json")
    groups = json.loads((tmp_path / "data.json").read_text())["groups"]
    assert groups["crossing_splits"] == 0 and sum(groups["per_split"].values()) == len(set(lesion.values())) + 1


def test_folder_own_split_counts_groups_crossing_splits(tmp_path, capsys):
    csv_path, root, rows = folder_with_groups(tmp_path, split_folders=True)
    splits_of = {}  # lesion -> the given splits its images are in (as folder_with_groups files them)
    for i, (lesion, *_) in enumerate(rows):
        splits_of.setdefault(lesion, set()).add(("train", "train", "val", "test")[i % 4])
    crossing = {lesion for lesion, splits in splits_of.items() if len(splits) > 1}
    assert crossing  # the generated split leaks, on purpose
    prepare(folder_params(root, csv_path), tmp_path / "prepared", tmp_path / "data.json")
    assert json.loads((tmp_path / "data.json").read_text())["groups"]["crossing_splits"] == len(crossing)
    assert f"warning: {len(crossing)} group(s) have images in more than one split" in capsys.readouterr().err


def test_folder_groups_csv_with_a_duplicate_file_is_refused(tmp_path):
    csv_path, root, rows = folder_with_groups(tmp_path)
    write_csv(csv_path, ["lesion_id", "image_id", "dx"], rows + [["HAM_x", rows[3][1] + ".jpg", "nv"]])
    with pytest.raises(CsvError, match=r"row 42, column 'image_id': duplicate id 'ISIC_00004.jpg' \(first on row 5\)"):
        load_source(folder_params(root, csv_path))


# --- real HAM10000 (../shared/data) ---------------------------------------------------------------

REAL = (ROOT / ".." / "shared" / "data").resolve()


REAL_SOURCES = {  # the same images and lesions, as a CSV dataset and as class folders + group map
    "csv": {"data.csv.path": str(REAL / "ham10000_metadata.csv"), "data.csv.images": str(REAL / "ham10000_jpg"),
            "data.csv.id": "image_id", "data.csv.label": "dx", "data.csv.group": "lesion_id"},
    "folder": {"data.folder.path": str(REAL / "ham10000_jpg"), "data.folder.groups": {
        "path": str(REAL / "ham10000_metadata.csv"), "id": "image_id", "group": "lesion_id"}},
}


@pytest.mark.e2e
@pytest.mark.skipif(not (REAL / "ham10000_metadata.csv").exists(), reason=f"real data not found at {REAL}")
@pytest.mark.parametrize("source", sorted(REAL_SOURCES))
def test_real_ham10000_split_by_lesion_has_no_leakage(tmp_path, capsys, source):
    p = load_params(ROOT / "params.yaml", {
        "model": "cnn", "models.cnn.image_size": 28, "data.source": source, **REAL_SOURCES[source]})
    prepare(p, tmp_path / "prepared", tmp_path / "data.json")
    metrics = json.loads((tmp_path / "data.json").read_text())
    # independently of the split's bookkeeping: the lesion of every image, from the metadata
    raw = load_source(p)
    index = grouped_stratified_split(raw.labels["all"], raw.groups["all"], p.data.split.val,
                                     p.data.split.test, p.data.seed, raw.class_names)
    with open(REAL / "ham10000_metadata.csv", newline="") as f:
        lesion_of = {row["image_id"]: row["lesion_id"] for row in csv.DictReader(f)}
    lesions = {split: {lesion_of[Path(raw.paths["all"][i]).stem] for i in idx} for split, idx in index.items()}
    assert not (lesions["train"] & lesions["val"] or lesions["train"] & lesions["test"]
                or lesions["val"] & lesions["test"])
    assert metrics["groups"]["crossing_splits"] == 0
    assert metrics["groups"]["per_split"] == {split: len(found) for split, found in lesions.items()}
    totals = {split: s["total"] for split, s in metrics["splits"].items()}
    assert totals["test"] / sum(totals.values()) == pytest.approx(p.data.split.test, abs=0.01)
    assert all(n > 0 for s in metrics["splits"].values() for n in s["per_class"].values())
    with capsys.disabled():
        print(f"\nHAM10000 {source} by lesion: images {totals}, lesions {metrics['groups']['per_split']}, "
              f"crossing {metrics['groups']['crossing_splits']}")
