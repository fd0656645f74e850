"""Real-world messy inputs, each with its exact behaviour: image files, class folders, MedMNIST
npz files and downloads, params.yaml. Every file is generated here; no binary fixtures.

Policy under test (skinsage/prepare.py): unreadable files are skipped and listed with the reason
in skipped.csv, a summary line is printed, and prepare fails only when a class has too few images.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinsage.data.duplicates import count_leakage
from skinsage.data.images import ImageError, load_image
from skinsage.data.prepare import PrepareError, prepare
from skinsage.data.sources import medmnist
from skinsage.data.sources.medmnist import MedmnistError, fetch, read_npz
from skinsage.errors import SkinSageError
from skinsage.params import ParamsError, load_params
from skinsage.prepared import PreparedData, Split

from local_server import QuietHandler, serving

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
RED, BLUE, CYAN = (220, 30, 30), (30, 30, 220), (0, 255, 255)


# --- generated image files ------------------------------------------------------------------

def solid(path: Path, colour=RED, size=(24, 24), mode="RGB", fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt, **save)
    return path


def noisy_jpeg(path: Path, seed: int, size=(24, 24)) -> Path:
    """Distinct content per seed, so no two generated photos are identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def truncated_jpeg(path: Path) -> Path:
    data = noisy_jpeg(path, seed=999, size=(48, 48)).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def png_16bit_rgb(path: Path, rgb16: tuple[int, int, int], size=4) -> Path:
    """Pillow cannot write 16-bit RGB PNGs, so write the chunks by hand (as a scanner would)."""
    rows = np.tile(np.array(rgb16, dtype=">u2"), (size, size, 1))
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)  # 16 bits, colour type RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def palette_with_transparency(path: Path) -> Path:
    """Index 0 (white) is transparent; index 1 is an opaque brown on the diagonal."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 255, 255, 150, 75, 0] + [0] * 762)
    for i in range(4):
        image.putpixel((i, i), 1)
    image.save(path, transparency=0)
    return path


def exif_rotated(path: Path) -> Path:
    """Stored landscape, red left / blue right, with EXIF orientation 6 (display rotated 90° CW)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20], pixels[:, 20:] = RED, BLUE
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=95)
    return path


# --- load_image: one file, one behaviour ----------------------------------------------------

def assert_model_input(array: np.ndarray, size: int = SIZE) -> None:
    assert array.dtype == np.uint8 and array.shape == (size, size, 3)


def test_png_saved_as_jpg_loads_by_content(tmp_path):
    array = load_image(solid(tmp_path / "really_a_png.jpg", RED, fmt="PNG"), SIZE)
    assert_model_input(array)
    assert (array == RED).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    array = load_image(solid(tmp_path / "cmyk.jpg", (255, 0, 0, 0), mode="CMYK", quality=95), SIZE)
    assert_model_input(array)
    assert np.abs(array.astype(int) - CYAN).max() <= 3


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 32896], [65535, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    array = load_image(path, 2)
    assert_model_input(array, 2)
    assert array[..., 0].tolist() == [[0, 128], [255, 255]] and (array[..., 0] == array[..., 2]).all()


def test_16bit_rgb_png(tmp_path):
    array = load_image(png_16bit_rgb(tmp_path / "rgb16.png", (65535, 32896, 0)), 4)
    assert_model_input(array, 4)
    assert (array == (255, 128, 0)).all()


def test_palette_png_transparency_is_flattened_onto_black(tmp_path):
    array = load_image(palette_with_transparency(tmp_path / "palette.png"), 4)
    assert_model_input(array, 4)
    assert (array[np.eye(4, dtype=bool)] == (150, 75, 0)).all()
    assert (array[~np.eye(4, dtype=bool)] == 0).all()  # transparent white -> black, not white


def test_grayscale_becomes_three_equal_channels(tmp_path):
    array = load_image(solid(tmp_path / "grey.jpg", 90, mode="L"), SIZE)
    assert_model_input(array)
    assert (array == array[..., :1]).all() and abs(int(array[0, 0, 0]) - 90) <= 2


def test_exif_orientation_is_applied(tmp_path):
    array = load_image(exif_rotated(tmp_path / "phone.jpg"), 8)
    assert_model_input(array, 8)
    top, bottom = array[:3].reshape(-1, 3).mean(0), array[-3:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60        # displayed upright: red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def empty_file(folder: Path) -> Path:
    (folder / "empty.jpg").write_bytes(b"")
    return folder / "empty.jpg"


def text_as_jpg(folder: Path) -> Path:
    (folder / "notes.jpg").write_text("hello")
    return folder / "notes.jpg"


@pytest.mark.parametrize("make, message", [
    (empty_file, "empty file (0 bytes)"),
    (lambda folder: truncated_jpeg(folder / "cut.jpg"), "corrupt or truncated image"),
    (text_as_jpg, "not an image Pillow can read"),
    (lambda folder: folder / "missing.jpg", "no such file"),
    (lambda folder: folder, "is a directory"),
])
def test_unreadable_file_raises_image_error_with_reason(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=f"^{re.escape(str(path))}: {re.escape(message)}"):
        load_image(path, SIZE)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warn_size = solid(tmp_path / "big.png", size=(40, 40))       # 1600 px: Pillow only warns
    error_size = solid(tmp_path / "bigger.png", size=(50, 50))   # 2500 px > 2x limit: Pillow errors
    for path in (warn_size, error_size):
        with pytest.raises(ImageError, match="too large to decode safely"):
            load_image(path, SIZE)


# --- a messy class-per-folder dataset through `prepare` -------------------------------------

def tiny_params(tmp_path: Path, **overrides):
    values = {"model": "cnn", "models.cnn.image_size": SIZE, "data.workers": 1,
              "data.source": "folder", "data.folder.path": str(tmp_path / "images"), **overrides}
    return load_params(ROOT / "params.yaml", overrides=values)


def run_prepare(tmp_path: Path, **overrides):
    params = tiny_params(tmp_path, **overrides)
    data = prepare(params, tmp_path / "prepared", tmp_path / "metrics" / "data.json")
    return data, json.loads((tmp_path / "metrics" / "data.json").read_text())


def read_skipped(tmp_path: Path) -> dict[str, str]:
    with open(tmp_path / "prepared" / "skipped.csv", newline="", encoding="utf-8") as f:
        return {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f)}


def build_messy_folder(tmp_path: Path) -> dict:
    """Three classes (one with a space, one with accents) full of what real folders contain."""
    root = tmp_path / "images"
    benign, melanoma, nevus = root / "benign lesion", root / "mélanome", root / "nevus"
    for i in range(4):
        noisy_jpeg(benign / f"b{i}.jpg", seed=i)
        noisy_jpeg(melanoma / f"m{i}.jpg", seed=10 + i)
        noisy_jpeg(nevus / f"n{i}.jpg", seed=20 + i)
    good = {  # readable oddities: all must be used
        solid(benign / "really_a_png.jpg", RED, fmt="PNG"),
        solid(benign / "cmyk.jpg", (255, 0, 0, 0), mode="CMYK"),
        png_16bit_rgb(benign / "scan16.png", (1000, 40000, 65535)),
        palette_with_transparency(melanoma / "palette.png"),
        solid(melanoma / "grey.jpg", 77, mode="L"),
        exif_rotated(melanoma / "phone.jpg"),
        noisy_jpeg(nevus / "photo 1 — ü ñ 🙂.jpg", seed=30),
        noisy_jpeg(nevus / "2024" / "visit 2" / "deep.jpg", seed=31),
    }
    truncated_jpeg(benign / "truncated.jpg")
    (benign / "empty.jpg").write_bytes(b"")
    (benign / "notes.txt").write_text("camera settings")
    (benign / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (melanoma / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    solid(melanoma / "huge.png", size=(120, 120))
    os.symlink("loop.jpg", nevus / "loop.jpg")
    os.symlink("..", nevus / "2024" / "back")  # a folder loop
    outside = noisy_jpeg(tmp_path / "private" / "secret.jpg", seed=40)
    os.symlink(outside, nevus / "outside.jpg")
    os.symlink("n0.jpg", nevus / "same_class_link.jpg")  # inside the root: read, then a duplicate
    os.mkfifo(nevus / "pipe.jpg")
    (melanoma / "copy_of_b0.jpg").write_bytes((benign / "b0.jpg").read_bytes())  # label conflict
    expected_skips = {
        "truncated.jpg": "corrupt or truncated image", "empty.jpg": "empty file (0 bytes)",
        "notes.txt": "not an image (.txt file extension)", "huge.png": "too large to decode safely",
        "loop.jpg": "symlink loop", "back": "symlinked folder (not followed)",
        "outside.jpg": "symlink pointing outside the dataset folder", "pipe.jpg": "not a regular file",
        "same_class_link.jpg": "duplicate (same class) of ",
    }
    used = 12 + len(good) + 1  # the conflicting copy is kept (as filed) and warned about
    return {"root": root, "skips": expected_skips, "used": used, "secret": outside}


def test_messy_folder_prepares_with_every_problem_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # huge.png (14400 px) trips the bomb guard
    corpus = build_messy_folder(tmp_path)
    data, metrics = run_prepare(tmp_path)
    out, err = capsys.readouterr()

    assert data.class_names == ["benign lesion", "mélanome", "nevus"]
    for split in data.splits.values():
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (SIZE, SIZE, 3)
        assert set(split.labels.tolist()) == {0, 1, 2}
    assert sum(len(s.labels) for s in data.splits.values()) == corpus["used"]

    skipped = read_skipped(tmp_path)
    assert set(skipped) == set(corpus["skips"])  # .DS_Store and Thumbs.db are not data: ignored
    for name, reason in corpus["skips"].items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert skipped["same_class_link.jpg"].endswith("n0.jpg")
    secret = load_image(corpus["secret"], SIZE)  # the link's target was never read into the data
    assert not any((split.images == secret).all(axis=(1, 2, 3)).any() for split in data.splits.values())

    assert metrics["skipped_files"] == 8
    assert metrics["duplicates"]["removed_same_class"] == 1
    assert metrics["duplicates"]["label_conflicts"] == 1
    assert "warning: label conflict" in err
    assert "b0.jpg [benign lesion] = " in err and "copy_of_b0.jpg [mélanome]" in err
    assert (f"data: {corpus['used']} images used, 8 skipped (" in out
            and "1 duplicate(s) removed, 1 label conflict(s)" in out and "skipped.csv" in out)
    labels = json.loads((tmp_path / "prepared" / "labels.json").read_text(encoding="utf-8"))
    assert labels["classes"][1] == "mélanome"


def test_symlinked_class_folder_outside_the_root_is_skipped_but_a_symlinked_root_works(tmp_path):
    real = tmp_path / "photos"
    for label in ("a", "b"):
        for i in range(3):
            noisy_jpeg(real / label / f"{i}.jpg", seed=ord(label) * 10 + i)
    for i in range(3):
        noisy_jpeg(tmp_path / "elsewhere" / "c" / f"{i}.jpg", seed=200 + i)
    os.symlink(tmp_path / "elsewhere" / "c", real / "c")
    os.symlink(real, tmp_path / "images")  # data.folder.path may itself be a link (a mounted disk)
    data, metrics = run_prepare(tmp_path)
    assert data.class_names == ["a", "b"]
    assert read_skipped(tmp_path) == {"c": "symlink pointing outside the dataset folder"}
    assert metrics["skipped_files"] == 1


def test_parallel_decoding_gives_the_same_arrays_as_serial(tmp_path):
    root = tmp_path / "images"
    for label in ("a", "b"):
        for i in range(6):
            noisy_jpeg(root / label / f"{i}.jpg", seed=ord(label) * 10 + i)
    (root / "a" / "bad.jpg").write_bytes(b"")
    from skinsage.data.sources.folder import load_folder
    serial, parallel = load_folder(root, SIZE, workers=1), load_folder(root, SIZE, workers=2)
    assert np.array_equal(serial.images["all"], parallel.images["all"])
    assert serial.paths == parallel.paths and serial.skipped == parallel.skipped


def test_empty_class_folder_is_a_clear_error(tmp_path):
    root = tmp_path / "images"
    for label in ("a", "b"):
        for i in range(3):
            noisy_jpeg(root / label / f"{i}.jpg", seed=ord(label) * 10 + i)
    (root / "empty_class").mkdir()
    (root / "all_broken").mkdir()
    (root / "all_broken" / "zero.jpg").write_bytes(b"")
    truncated_jpeg(root / "all_broken" / "cut.jpg")
    with pytest.raises(PrepareError) as caught:
        run_prepare(tmp_path)
    message = str(caught.value)
    assert "class 'empty_class' has no usable image(s) (no image files in " in message
    assert ("class 'all_broken' has no usable image(s) (2 file(s) skipped: "
            "1 corrupt or truncated image, 1 empty file)") in message
    assert "data.min_per_class is 3" in message
    assert not (tmp_path / "prepared").exists()  # nothing half-made


@pytest.mark.parametrize("count, min_per_class, rule", [
    (1, 3, "data.min_per_class is 3"),
    (2, 3, "data.min_per_class is 3"),
    (2, 1, "a stratified train/val/test split needs at least 3, one per split"),
])
def test_class_with_one_or_two_images_says_why_it_cannot_be_split(tmp_path, count, min_per_class, rule):
    root = tmp_path / "images"
    for i in range(5):
        noisy_jpeg(root / "common" / f"{i}.jpg", seed=i)
    for i in range(count):
        noisy_jpeg(root / "rare" / f"{i}.jpg", seed=100 + i)
    with pytest.raises(PrepareError, match=f"class 'rare' has {count} usable image\\(s\\) \\({rule}\\)"):
        run_prepare(tmp_path, **{"data.min_per_class": min_per_class})


def test_class_with_exactly_three_images_gets_one_per_split(tmp_path):
    root = tmp_path / "images"
    for i in range(10):
        noisy_jpeg(root / "common" / f"{i}.jpg", seed=i)
    for i in range(3):
        noisy_jpeg(root / "rare" / f"{i}.jpg", seed=100 + i)
    data, _ = run_prepare(tmp_path)
    assert [int((s.labels == 1).sum()) for s in data.splits.values()] == [1, 1, 1]


def test_stage_script_reports_an_empty_class_without_a_traceback(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        noisy_jpeg(root / "a" / f"{i}.jpg", seed=i)
    (root / "b").mkdir()
    import yaml
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="folder", workers=1)
    params["data"]["folder"]["path"] = str(root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: too few images: class 'b' has no")
    assert "Traceback" not in result.stderr


# --- duplicates across splits ---------------------------------------------------------------

def test_leakage_counts_identical_images_in_later_splits():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    val = np.concatenate([train[:1], rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)])
    test = np.concatenate([train[1:3], val[1:2], rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)])
    data = PreparedData(["a"], "t", 4, {name: Split(x, np.zeros(len(x), np.int64))
                                        for name, x in (("train", train), ("val", val), ("test", test))})
    assert count_leakage(data) == {"val_in_train": 1, "test_in_train": 2, "test_in_val": 1}


def medmnist_arrays(n=(12, 4, 4), size=8, classes=3, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    return arrays


def test_official_split_leakage_and_conflict_are_reported(tmp_path, capsys):
    arrays = medmnist_arrays(classes=7)
    arrays["test_images"][0] = arrays["train_images"][0]   # same image, same label 0: leakage
    arrays["test_images"][1] = arrays["train_images"][2]   # label 1 in test, 2 in train: conflict too
    np.savez(tmp_path / "local.npz", **arrays)
    data, metrics = run_prepare(tmp_path, **{"data.source": "medmnist", "data.min_per_class": 1,
                                             "data.medmnist.path": str(tmp_path / "local.npz")})
    _, err = capsys.readouterr()
    assert metrics["duplicates"] == {"removed_same_class": 0, "label_conflicts": 1,
                                     "leakage": {"val_in_train": 0, "test_in_train": 2, "test_in_val": 0}}
    assert len(data.splits["test"].labels) == 4  # official splits are reported, never altered
    assert "2 test image(s) also in train" in err and "test[1] [" in err


# --- MedMNIST npz layouts -------------------------------------------------------------------

def _set(arrays, key, value):
    return {**arrays, key: value}


BAD_NPZ = {
    "missing key": (lambda a: {k: v for k, v in a.items() if k != "val_labels"},
                    "missing arrays ['val_labels']"),
    "float pixels": (lambda a: _set(a, "train_images", a["train_images"].astype(np.float32)),
                     "train_images: expected uint8 pixels, got float32"),
    "four channels": (lambda a: _set(a, "val_images", np.zeros((4, 8, 8, 4), np.uint8)),
                      "val_images: expected shape (N, S, S) or (N, S, S, 3), got (4, 8, 8, 4)"),
    "not square": (lambda a: _set(a, "test_images", np.zeros((4, 8, 6, 3), np.uint8)),
                   "expected shape (N, S, S) or (N, S, S, 3)"),
    "label too big": (lambda a: _set(a, "test_labels", np.array([[0], [1], [7], [2]])),
                      "test_labels: labels must be in 0..6, found 0..7"),
    "negative label": (lambda a: _set(a, "train_labels", -a["train_labels"].astype(np.int64)),
                       "labels must be in 0..6, found -2..0"),
    "float labels": (lambda a: _set(a, "val_labels", np.zeros((4, 1), np.float32)),
                     "expected integer labels"),
    "multi-label": (lambda a: _set(a, "val_labels", np.zeros((4, 7), np.uint8)),
                    "multi-label MedMNIST sets are not supported"),
    "length mismatch": (lambda a: _set(a, "train_labels", a["train_labels"][:-1]),
                        "train has 12 images but 11 labels"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_layout_is_refused_with_the_reason(tmp_path, case):
    change, message = BAD_NPZ[case]
    np.savez(tmp_path / "bad.npz", **change(medmnist_arrays()))
    with pytest.raises(MedmnistError, match=re.escape(message)):
        read_npz(tmp_path / "bad.npz", num_classes=7)


def object_array(path: Path) -> None:
    np.savez(path, train_images=np.array([{"x": 1}], dtype=object))


def truncated_npz(path: Path) -> None:
    np.savez(path, **medmnist_arrays())
    path.write_bytes(path.read_bytes()[:300])


def npy_named_npz(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


@pytest.mark.parametrize("write, message", [
    (object_array, "Object arrays cannot be loaded when allow_pickle=False"),
    (truncated_npz, "not a readable .npz file"),
    (lambda path: path.write_bytes(b""), "not a readable .npz file"),
    (npy_named_npz, "a single array (.npy), not an archive"),
])
def test_unreadable_npz_is_refused_and_never_unpickled(tmp_path, write, message):
    write(tmp_path / "bad.npz")
    with pytest.raises(MedmnistError, match=re.escape(message)):
        read_npz(tmp_path / "bad.npz", num_classes=7)


# --- MedMNIST downloads from a local server -------------------------------------------------

PAYLOAD = b"pretend npz " * 5000


class _Handler(QuietHandler):
    def do_GET(self):  # noqa: N802
        body = {"/good.npz": PAYLOAD, "/wrong.npz": PAYLOAD[::-1]}.get(self.path)
        if self.path == "/midway.npz":  # promises everything, sends a third, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_body(body)


@pytest.fixture(scope="module")
def server():
    with serving(_Handler) as url:
        yield url


MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_download_succeeds_and_replaces_leftovers_of_a_killed_run(server, tmp_path):
    stale = tmp_path / ".derma.abcd1234.tmp.npz"  # what a kill -9 mid-download leaves
    stale.write_bytes(PAYLOAD[:100])
    assert fetch(f"{server}/good.npz", tmp_path / "derma.npz", MD5) == tmp_path / "derma.npz"
    assert (tmp_path / "derma.npz").read_bytes() == PAYLOAD
    assert sorted(os.listdir(tmp_path)) == ["derma.npz"]


def test_download_failing_midway_leaves_nothing_under_the_final_name(server, tmp_path):
    with pytest.raises(MedmnistError, match=f"connection closed after {len(PAYLOAD) // 3} of {len(PAYLOAD)}"):
        fetch(f"{server}/midway.npz", tmp_path / "derma.npz", MD5)
    assert os.listdir(tmp_path) == []


def test_download_with_wrong_md5_is_discarded(server, tmp_path):
    with pytest.raises(MedmnistError,
                       match=f"its MD5 is [0-9a-f]{{32}}, expected {MD5}; the file was discarded"):
        fetch(f"{server}/wrong.npz", tmp_path / "derma.npz", MD5)
    assert os.listdir(tmp_path) == []


def test_cached_file_with_wrong_md5_is_fetched_again(server, tmp_path, capsys):
    (tmp_path / "derma.npz").write_bytes(PAYLOAD[:-1])
    fetch(f"{server}/good.npz", tmp_path / "derma.npz", MD5)
    assert (tmp_path / "derma.npz").read_bytes() == PAYLOAD
    assert f"expected {MD5}" in capsys.readouterr().err


def test_cached_file_with_wrong_md5_is_refused_when_offline(server, tmp_path, monkeypatch):
    arrays = medmnist_arrays(classes=7)
    np.savez(tmp_path / "dermamnist.npz", **arrays)  # readable, but not the official file
    monkeypatch.setattr(medmnist, "official_file",
                        lambda flag, size: (f"{server}/missing.npz", "dermamnist.npz", MD5))
    params = tiny_params(tmp_path, **{"data.source": "medmnist", "data.medmnist.path": str(tmp_path)})
    with pytest.raises(MedmnistError) as caught:
        medmnist.load_medmnist(params.data.medmnist, SIZE)
    assert "dermamnist.npz has MD5 " in str(caught.value) and f"expected {MD5}" in str(caught.value)
    assert "HTTP Error 404" in str(caught.value) and "make demo" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; "
                    "see test_unwritable_cache_dir_simulated")
def test_unwritable_cache_dir_is_a_clear_error(server, tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(MedmnistError, match=f"cannot write to {re.escape(str(tmp_path))} "
                                                "\\(Permission denied\\)"):
            fetch(f"{server}/good.npz", tmp_path / "derma.npz", MD5)
    finally:
        tmp_path.chmod(0o755)


def test_unwritable_cache_dir_simulated(server, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))
    monkeypatch.setattr("skinsage.fileio.tempfile.mkstemp", refuse)
    with pytest.raises(MedmnistError, match=f"data.medmnist.path: cannot write to {re.escape(str(tmp_path))} "
                                            "\\(Permission denied\\); make it writable"):
        fetch(f"{server}/good.npz", tmp_path / "derma.npz", MD5)


def test_cache_path_below_a_file_is_a_clear_error(server, tmp_path):
    (tmp_path / "raw").write_text("not a folder")
    with pytest.raises(MedmnistError, match="data.medmnist.path: cannot write .*raw/derma.npz"):
        fetch(f"{server}/good.npz", tmp_path / "raw" / "derma.npz", MD5)


# --- params.yaml: what tests/test_params.py does not cover ----------------------------------

def test_missing_section_is_named(tmp_path):
    import yaml
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["evaluate"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="missing key 'evaluate'"):
        load_params(tmp_path / "params.yaml")


def test_params_never_execute_code(tmp_path):
    marker = tmp_path / "pwned"
    text = (ROOT / "params.yaml").read_text().replace(
        "seed: 42", f"seed: !!python/object/apply:os.system ['touch {marker}']")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError, match="'__import__\\(.os.\\)' is not one of: cnn, resnet50"):
        load_params(ROOT / "params.yaml", overrides={"model": "__import__('os')"})
    assert not marker.exists()


def test_errors_are_skinsage_errors():
    for error in (ImageError, PrepareError, MedmnistError, ParamsError):
        assert issubclass(error, SkinSageError)


# --- security: nothing in a dataset, model file or params runs code ---------------------------

def _calls():
    """(file:line, dotted name such as `np.load`, call node) for every call in the package and stages."""
    import ast
    for path in sorted([*ROOT.glob("skinsage/**/*.py"), *ROOT.glob("stages/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", ast.unparse(node.func), node


def _keyword(call, name: str):
    return next((getattr(k.value, "value", "not a constant") for k in call.keywords if k.arg == name),
                "missing")


FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads",
                   "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "os.system",
                   "os.popen", "subprocess.run", "subprocess.Popen", "subprocess.call",
                   "subprocess.check_output"}


def test_static_no_pickle_no_unsafe_model_loading_no_eval():
    calls = list(_calls())
    np_loads = [(where, call) for where, name, call in calls if name in ("np.load", "numpy.load")]
    assert np_loads and all(_keyword(call, "allow_pickle") is False for _, call in np_loads), np_loads
    keras_loads = [(where, call) for where, name, call in calls
                   if name.endswith("load_model") and name.startswith(("keras", "tf."))]
    assert keras_loads and all(_keyword(call, "safe_mode") is True for _, call in keras_loads)
    forbidden = [f"{where} {name}()" for where, name, _ in calls if name in FORBIDDEN_CALLS]
    assert not forbidden, forbidden


def test_model_file_with_a_python_lambda_is_refused(tmp_path):
    import keras
    from skinsage.model.model_file import load_model, save_model
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    save_model(model, tmp_path / "untrusted.keras", {"classes": ["a", "b"], "image_size": 2})
    with pytest.raises(ValueError, match="arbitrary code execution"):
        load_model(tmp_path / "untrusted.keras")
