"""Issue #20, "Hardening, round two": inputs and environments that used to crash, hang, mislead or
run other programs. One section per item of the issue; every file is generated here."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from skinsage import fileio
from skinsage.app import classifier as classifier_module
from skinsage.app import cli
from skinsage.app.classifier import Prediction
from skinsage.app.console import predictions_csv, predictions_table
from skinsage.data.images import ImageError, load_image
from skinsage.data.prepare import prepare
from skinsage.data.sources.medmnist import MedmnistError, read_npz
from skinsage.errors import run_reporting_errors
from skinsage.model.model_file import METADATA_ENTRY, ModelFileError, save_model
from skinsage.params import ParamsError, load_params
from tiny_model import CLASSES, ROOT, SIZE, noise, save

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def photo(path: Path, seed: int = 0) -> Path:
    return save(Image.fromarray(noise(seed)), path, quality=90)


def folder_params(root: Path, **overrides):
    values = {"model": "cnn", "models.cnn.image_size": SIZE, "data.workers": 1,
              "data.source": "folder", "data.folder.path": str(root), **overrides}
    return load_params(ROOT / "params.yaml", overrides=values)


def synthetic_params(**overrides):
    values = {"model": "cnn", "models.cnn.image_size": SIZE, "data.workers": 1,
              "data.source": "synthetic", "data.synthetic.num_classes": 3,
              "data.synthetic.images_per_class": 6, **overrides}
    return load_params(ROOT / "params.yaml", overrides=values)


# --- 1. only the documented image formats are opened: no Ghostscript behind a .jpg ----------

EPS = textwrap.dedent("""\
    %!PS-Adobe-3.0 EPSF-3.0
    %%BoundingBox: 0 0 24 24
    %%EndComments
    newpath 0 0 moveto 24 24 lineto stroke
    showpage
    %%EOF
    """).encode()


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch) -> Path:
    """A `gs` first on PATH that leaves a marker file when anything runs it."""
    bin_dir, marker = tmp_path / "fake-bin", tmp_path / "gs-was-run"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow caches its search for gs
    return marker


def eps_as_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(EPS)
    return path


def test_eps_named_jpg_is_refused_by_load_image_and_classifier(tmp_path, fake_ghostscript, clf):
    path = eps_as_jpg(tmp_path / "lesion.jpg")
    for attempt in (lambda: load_image(path, SIZE), lambda: clf.predict(path)):
        with pytest.raises(ImageError, match=f"^{re.escape(str(path))}: not a supported image "
                                             r"\(EPS\b.*JPEG, PNG, BMP, GIF, TIFF or WebP"):
            attempt()
    assert not fake_ghostscript.exists()


def test_eps_named_jpg_is_skipped_by_prepare_without_running_gs(tmp_path, fake_ghostscript):
    root = tmp_path / "images"
    for name in ("a", "b"):
        for i in range(4):
            photo(root / name / f"{i}.jpg", seed=10 * len(name) + i + (0 if name == "a" else 50))
    eps_as_jpg(root / "a" / "poster.jpg")
    prepare(folder_params(root), tmp_path / "prepared", tmp_path / "metrics" / "data.json")
    skipped = (tmp_path / "prepared" / "skipped.csv").read_text()
    assert 'poster.jpg,"not a supported image (EPS file; SkinSage reads JPEG' in skipped
    assert not fake_ghostscript.exists()


def test_eps_named_jpg_is_skipped_by_skinsage_predict(tmp_path, fake_ghostscript, capsys, model_path):
    good, bad = photo(tmp_path / "good.jpg"), eps_as_jpg(tmp_path / "bad.jpg")
    code, out, err = run(capsys, "predict", "--model", model_path, good, bad)
    assert code == 0 and f"skipped {bad}: not a supported image (EPS" in err
    assert len(json.loads(out)["predictions"]) == 1
    assert not fake_ghostscript.exists()


# --- 2. one unexpected exception does not abort a batch -------------------------------------

def flaky_loader(monkeypatch, bad_name: str):
    real = classifier_module.load_image

    def load(source, size):
        if Path(str(source)).name == bad_name:
            raise RuntimeError("decoder crashed")
        return real(source, size)
    monkeypatch.setattr(classifier_module, "load_image", load)


def test_unexpected_error_in_one_file_is_reported_and_the_others_predicted(tmp_path, clf, monkeypatch):
    files = [photo(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    flaky_loader(monkeypatch, "1.jpg")
    monkeypatch.delenv("SKINSAGE_DEBUG", raising=False)
    outcomes = list(clf.predict_files(files, batch_size=2))
    assert [o.path for o in outcomes] == [str(f) for f in files]
    assert outcomes[1].prediction is None
    assert outcomes[1].error == "could not decode (RuntimeError: decoder crashed)"
    assert outcomes[0].prediction and outcomes[2].prediction


def test_unexpected_error_is_raised_in_debug_mode(tmp_path, clf, monkeypatch):
    files = [photo(tmp_path / f"{i}.jpg", seed=i) for i in range(2)]
    flaky_loader(monkeypatch, "1.jpg")
    monkeypatch.setenv("SKINSAGE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="decoder crashed"):
        list(clf.predict_files(files))


def test_skinsage_predict_reports_the_unexpected_error_and_predicts_the_rest(tmp_path, capsys,
                                                                              model_path, monkeypatch):
    files = [photo(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    flaky_loader(monkeypatch, "0.jpg")
    monkeypatch.delenv("SKINSAGE_DEBUG", raising=False)
    code, out, err = run(capsys, "predict", "--model", model_path, *files)
    assert code == 0 and f"skipped {files[0]}: could not decode (RuntimeError: decoder crashed)" in err
    assert len(json.loads(out)["predictions"]) == 2


# --- 3. write failures: one error line naming the path, old outputs intact -------------------

def raise_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_file_writes(monkeypatch, where: str) -> None:
    """Simulate a full disk at the rename (the last step) or while the bytes are written."""
    if where == "rename":
        monkeypatch.setattr(fileio.os, "replace", raise_enospc)
    else:
        monkeypatch.setattr(fileio.np.lib.format, "write_array", raise_enospc)
        monkeypatch.setattr(Path, "write_text", raise_enospc)


@pytest.mark.parametrize("where", ["rename", "write"])
def test_full_disk_during_prepare_is_one_error_and_keeps_the_old_dataset(tmp_path, monkeypatch, where):
    out, metrics = tmp_path / "data" / "prepared", tmp_path / "metrics" / "data.json"
    prepare(synthetic_params(), out, metrics)
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), metrics]}
    fail_file_writes(monkeypatch, where)
    with pytest.raises(fileio.WriteError) as caught:
        prepare(synthetic_params(seed=7), out, metrics)
    message = str(caught.value)
    assert message.startswith(str(out)) and "No space left on device" in message
    assert ".tmp" not in message  # the user's path, not a temporary's
    assert {p.name: p.read_bytes() for p in [*out.iterdir(), metrics]} == before
    assert sorted(os.listdir(out.parent)) == ["prepared"]  # no temporaries left behind


def test_full_disk_while_saving_the_model_keeps_the_old_one(tmp_path, monkeypatch, clf, capsys):
    path = tmp_path / "models" / "model.keras"
    save_model(clf.model, path, clf.metadata)
    before = path.read_bytes()
    monkeypatch.setattr(fileio.os, "replace", raise_enospc)
    with pytest.raises(SystemExit) as exited:
        run_reporting_errors(save_model, clf.model, path, clf.metadata)
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err == f"error: {path}: cannot write it (No space left on device); the previous version was kept\n"
    assert path.read_bytes() == before and os.listdir(path.parent) == ["model.keras"]


def make_unwritable(folder: Path, monkeypatch) -> None:
    """chmod for normal users; root ignores permissions, so there the refusal is simulated."""
    if RUNNING_AS_ROOT:
        real = fileio.tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    else:
        folder.chmod(0o555)


def test_read_only_metrics_folder_is_one_error_naming_the_file(tmp_path, monkeypatch, capsys):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "eval.json").write_text('{"accuracy": 0.5}\n')
    make_unwritable(metrics, monkeypatch)
    try:
        with pytest.raises(SystemExit):
            run_reporting_errors(fileio.write_json, metrics / "eval.json", {"accuracy": 0.9})
    finally:
        metrics.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith(f"error: {metrics / 'eval.json'}: cannot write it (Permission denied)")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (metrics / "eval.json").read_text() == '{"accuracy": 0.5}\n'


@pytest.mark.parametrize("case", ["below a file", "a folder", "read-only folder"])
def test_evaluate_refuses_an_unwritable_out_before_the_slow_work(tmp_path, monkeypatch, capsys,
                                                                 model_path, case):
    import skinsage.app.evaluation_data as evaluation_data
    calls = []
    monkeypatch.setattr(evaluation_data, "load_labelled", lambda *a, **k: calls.append(a))
    if case == "below a file":
        (tmp_path / "report").write_text("a file")
        out, reason = tmp_path / "report" / "metrics.json", f"{tmp_path / 'report'} is not a folder"
    elif case == "a folder":
        out, reason = tmp_path / "results", "is a folder; give a file name"
        out.mkdir()
    else:
        (tmp_path / "ro").mkdir()
        make_unwritable(tmp_path / "ro", monkeypatch)
        out, reason = tmp_path / "ro" / "metrics.json", "Permission denied"
    try:
        code, stdout, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path,
                                "--out", out)
    finally:
        (tmp_path / "ro").exists() and (tmp_path / "ro").chmod(0o755)
    assert code == 1 and stdout == "" and calls == []
    assert err.startswith(f"error: --out {out}: ") and reason in err and err.count("\n") == 1


# --- 4. malformed model metadata ------------------------------------------------------------

def model_with_metadata(path: Path, clf, entry: bytes) -> Path:
    """The tiny model's network with `entry` as its skinsage.json."""
    clf.model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_ENTRY, entry)
    return path


def metadata_with(clf, **changes) -> bytes:
    return json.dumps({**clf.metadata, **changes}).encode()


BAD_METADATA = {
    "not an object": (lambda clf: b'["melanoma"]', "its SkinSage metadata is not a JSON object"),
    "invalid JSON": (lambda clf: b'{"classes": [', "its SkinSage metadata is not valid JSON"),
    "params a string": (lambda clf: metadata_with(clf, params="seed=1"),
                        "'params' must be an object, got str"),
    "params.evaluate a list": (lambda clf: metadata_with(clf, params={"evaluate": [1]}),
                               "'params.evaluate' must be an object, got list"),
    "inference a string": (lambda clf: metadata_with(clf, inference="flips"),
                           "'inference' must be an object, got str"),
    "model a list": (lambda clf: metadata_with(clf, model=["cnn"]), "'model' must be a string, got list"),
    "duplicate classes": (lambda clf: metadata_with(clf, classes=["nevus", "melanoma", "nevus"]),
                          "duplicate class name(s): nevus"),
    "huge": (lambda clf: metadata_with(clf, padding="x" * (2 << 20)),
             "its SkinSage metadata is 2.0 MiB, more than the 1 MiB allowed"),
}


@pytest.mark.parametrize("case", BAD_METADATA)
def test_malformed_metadata_is_refused_by_predict_evaluate_and_info(tmp_path, capsys, clf, case):
    make, message = BAD_METADATA[case]
    path = model_with_metadata(tmp_path / "model.keras", clf, make(clf))
    image = photo(tmp_path / "a.jpg")
    for argv in (["predict", "--model", path, image], ["info", "--model", path],
                 ["evaluate", "--model", path, "--data", tmp_path]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "" and "Traceback" not in err, (argv, err)
        assert err.startswith(f"error: {path}: ") and message in err, (argv, err)


def test_huge_metadata_is_not_read(tmp_path, clf, monkeypatch):
    from skinsage.model.model_file import read_metadata
    path = model_with_metadata(tmp_path / "model.keras", clf, metadata_with(clf, padding="x" * (2 << 20)))
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a, **k: pytest.fail("metadata was read"))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("metadata was opened"))
    with pytest.raises(ModelFileError, match="more than the 1 MiB allowed"):
        read_metadata(path)


# --- 5. numbers that pass validation but break later ----------------------------------------

@pytest.mark.parametrize("key, value", [
    ("train.epochs", 10**9), ("train.batch_size", 10**7), ("evaluate.batch_size", 10**7),
    ("evaluate.bootstrap", 10**9), ("evaluate.ece_bins", 10**7), ("data.synthetic.num_classes", 10**6),
    ("data.synthetic.images_per_class", 10**9), ("data.workers", 10**5), ("models.cnn.dense_units", 10**8),
    ("models.cnn.filters", [10**7]), ("train.early_stopping.patience", 10**9),
    ("models.resnet50.fine_tune.epochs", 10**9), ("data.min_per_class", 10**12),
])
def test_absurd_sizes_are_refused_naming_the_key(key, value):
    with pytest.raises(ParamsError, match=f"^{re.escape(key)}: must be"):
        load_params(ROOT / "params.yaml", overrides={key: value})


@pytest.mark.parametrize("argv, option", [
    (["evaluate", "--data", ".", "--bootstrap"], "--bootstrap"),
    (["evaluate", "--data", ".", "--batch-size"], "--batch-size"),
    (["predict", "x.jpg", "--batch-size"], "--batch-size"),
])
def test_sizes_on_the_command_line_are_bounded(capsys, argv, option):
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, str(10**9)])
    assert exited.value.code == 2 and f"{option}: must be at most" in capsys.readouterr().err


def npz_declaring(path: Path, shapes: dict[str, tuple]) -> Path:
    """An npz whose members' headers declare `shapes` but hold only a few bytes each."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, shape in shapes.items():
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                          "shape": shape})
            archive.writestr(f"{name}.npy", buffer.getvalue() + b"\x00" * 64)
    return path


def test_npz_declaring_huge_arrays_is_refused_before_allocating(tmp_path):
    shapes = {f"{s}_{k}": (4, 8, 8, 3) if k == "images" else (4, 1)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    shapes["train_images"] = (10**9, 224, 224, 3)  # 150 TB
    path = npz_declaring(tmp_path / "crafted.npz", shapes)
    with pytest.raises(MedmnistError, match=re.escape(f"{path}:train_images: its header declares "
                                                      "(1000000000, 224, 224, 3) uint8")):
        read_npz(path, num_classes=3)


def test_npz_larger_than_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    from skinsage.data.sources import medmnist
    arrays = {f"{s}_{k}": np.zeros((4, 8, 8, 3) if k == "images" else (4, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "ok.npz", **arrays)
    assert len(read_npz(tmp_path / "ok.npz", 3)[0]["train"]) == 4
    monkeypatch.setattr(medmnist, "memory_bytes", lambda: 1000)
    with pytest.raises(MedmnistError, match=r"needs 0\.0 GB .* more than this machine's 0\.0 GB"):
        read_npz(tmp_path / "ok.npz", num_classes=3)


@pytest.mark.parametrize("make", [lambda: Image.new("RGB", (0, 0)), lambda: Image.new("L", (0, 12)),
                                  lambda: np.zeros((0, 0, 3), np.uint8), lambda: np.zeros((5, 0), np.uint8)])
def test_empty_image_is_refused(clf, make):
    with pytest.raises(ImageError, match=r"empty image \(\d+x\d+ pixels\)"):
        clf.predict(make())


# --- 6. big real photos are accepted, true bombs refused -------------------------------------

def test_95_megapixel_phone_jpeg_is_decoded_at_reduced_scale(tmp_path, clf):
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (10000, 9500), (200, 120, 90)).save(path, quality=50)  # 95 MP, ~1.5 MB
    assert 10000 * 9500 > Image.MAX_IMAGE_PIXELS
    array = load_image(path, SIZE)
    assert array.shape == (SIZE, SIZE, 3) and np.abs(array.astype(int) - (200, 120, 90)).max() <= 3
    assert clf.predict(path).label in CLASSES


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height; Pillow's bomb check reads only the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# 95 MP: above Pillow's warning, decoded in full (PNG has no draft mode); 200 MP: above its hard limit
@pytest.mark.parametrize("width, height", [(10000, 9500), (20000, 10000)])
def test_png_bombs_are_still_refused(tmp_path, width, height):
    path = png_header_only(tmp_path / "bomb.png", width, height)
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(path, SIZE)


def test_jpeg_above_the_hard_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # hard limit 2000 px
    path = save(Image.new("RGB", (50, 50), (1, 2, 3)), tmp_path / "big.jpg")
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(path, SIZE)


def test_jpeg_whose_reduced_scale_is_still_too_big_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(Image.new("RGB", (40, 40), (1, 2, 3)), tmp_path / "big.jpg")  # 1600 px: warns
    assert load_image(path, 16).shape == (16, 16, 3)  # drafted to 20x20 = 400 px
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(path, 40)  # no reduction possible at 40 px: 1600 px decoded


# --- 7. params.yaml changed between prepare and train ---------------------------------------

def test_prepare_records_its_params_and_train_refuses_a_mismatch(tmp_path):
    from skinsage.prepared import PreparedParamsError, check_prepared_params, load_labels
    prepare(synthetic_params(), tmp_path / "prepared", tmp_path / "data.json")
    labels = load_labels(tmp_path / "prepared")
    assert labels["classes"] and labels["prepare_params"]["data.seed"] == synthetic_params().data.seed
    assert "seed" not in labels["prepare_params"]  # the training seed: a new one keeps data/prepared
    check_prepared_params(synthetic_params(**{"train.epochs": 3}), tmp_path / "prepared")  # not prepare's
    with pytest.raises(PreparedParamsError, match=r"data\.split\.val is 0\.3 in params\.yaml but "
                                                  r"data/prepared was made with 0\.1.*--queue.*--temp"):
        check_prepared_params(synthetic_params(**{"data.split.val": 0.3, "data.split.test": 0.1}),
                              tmp_path / "prepared", name="data/prepared")


def test_train_stage_stops_when_params_changed_since_prepare(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    params = (ROOT / "params.yaml").read_text()
    (project / "params.yaml").write_text(params)
    prepare(load_params(project / "params.yaml", overrides={
        "data.source": "synthetic", "data.synthetic.images_per_class": 6, "data.workers": 1}),
        project / "data" / "prepared", project / "metrics" / "data.json")
    # prepared from synthetic data, but params.yaml (as another `dvc exp run -S` left it) says medmnist
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py")], cwd=project,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # TF logs too
    assert len(errors) == 1 and errors[0].startswith(
        "error: params.yaml changed since `prepare` made data/prepared: data.source is 'medmnist' in "
        "params.yaml but data/prepared was made with 'synthetic'")
    assert not (project / "models").exists()


def test_readme_advises_queue_or_temp_for_parallel_runs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Working with DVC"):]
    section = section[:section.index("\n## ", 5)]
    assert "dvc exp run --queue" in section and "--temp" in section


# --- 8. smaller ones ------------------------------------------------------------------------

def fake_prediction(source: str, labels: list[str]) -> Prediction:
    probs = [0.6, 0.4]
    return Prediction(label=labels[0], probability=0.6, top_k=list(zip(labels, probs)),
                      probabilities=dict(zip(labels, probs)), image_size=SIZE, source=source)


def test_csv_cells_cannot_be_formulas():
    rows = predictions_csv([fake_prediction("=HYPERLINK(\"http://x\")", ["@SUM(1)", "-1+2"]),
                            fake_prediction("+cmd.jpg", ["\tx", "ok"])])
    cells = [row.split(",") for row in rows.splitlines()[1:]]
    assert cells[0][0] == "\"'=HYPERLINK(\"\"http://x\"\")\"" and cells[0][2] == "'@SUM(1)"
    assert cells[0][4] == "'-1+2" and cells[1][0] == "'+cmd.jpg" and cells[1][2] == "'\tx"
    assert cells[1][4] == "ok" and cells[0][3] == "0.600000"  # numbers stay numbers


def test_control_characters_in_file_names_are_escaped_in_the_table(tmp_path, capsys, model_path, clf):
    odd = photo(tmp_path / "a\x1b[2Jb\nc.jpg")
    table = predictions_table(clf, [clf.predict(odd)])
    assert "\x1b" not in table and "a\\x1b[2Jb\\nc.jpg" in table and len(table.splitlines()) == 3
    code, out, err = run(capsys, "predict", "--model", model_path, odd, tmp_path / "gone\x07.jpg",
                         "--format", "table")
    assert code == 0 and "\x1b" not in out and "\x07" not in err and "gone\\x07.jpg" in err


def test_fifo_is_not_a_regular_file(tmp_path, capsys, model_path, clf):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        clf.predict(fifo)
    code, _, err = run(capsys, "predict", "--model", model_path, fifo, photo(tmp_path / "ok.jpg"))
    assert code == 0 and f"skipped {fifo}: not a regular file" in err


def test_directory_given_as_model_is_named_a_directory(tmp_path, capsys):
    image = photo(tmp_path / "a.jpg")
    for argv in (["predict", "--model", tmp_path, image], ["info", "--model", tmp_path],
                 ["evaluate", "--model", tmp_path, "--data", tmp_path]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and err.startswith(f"error: {tmp_path}: is a folder, not a model file"), err


def test_evaluate_works_on_a_folder_holding_a_single_class(tmp_path, capsys, model_path):
    for i in range(4):
        save(Image.fromarray(noise(i, (SIZE, SIZE, 3))), tmp_path / "data" / "melanoma" / f"{i}.png")
    out_file = tmp_path / "m.json"
    code, out, err = run(capsys, "evaluate", "--model", model_path, "--data", tmp_path / "data",
                         "--workers", "1", "--out", out_file)
    assert code == 0, err
    written = json.loads(out_file.read_text())
    assert written["metrics"]["num_images"] == 4 and "(1 classes)" in written["data"]
    assert sum(written["confusion"]["matrix"][2]) == 4


def test_synthetic_source_ignores_a_missing_folder_path(tmp_path):
    params = synthetic_params(**{"data.folder.path": str(tmp_path / "no" / "such" / "folder")})
    data = prepare(params, tmp_path / "prepared", tmp_path / "data.json")
    assert len(data.class_names) == 3


KILL_MID_WRITE = """
import os, sys
from skinsage import fileio
target = sys.argv[1]
if sys.argv[2] == "file":
    with fileio.atomic_path(target) as tmp:
        tmp.write_text("half")
        os._exit(9)
with fileio.atomic_dir(target) as tmp:
    (tmp / "half.npz").write_text("half")
    os._exit(9)
"""


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_temporaries_of_a_killed_write_are_removed_by_the_next_run(tmp_path, kind):
    target = tmp_path / ("eval.json" if kind == "file" else "prepared")
    result = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(target), kind], cwd=ROOT)
    assert result.returncode == 9
    leftovers = [n for n in os.listdir(tmp_path) if n != target.name]
    assert len(leftovers) == 1 and ".tmp" in leftovers[0]  # the killed run's temporary
    if kind == "file":
        fileio.write_json(target, {"ok": True})
    else:
        with fileio.atomic_dir(target) as staging:
            (staging / "train.npz").write_text("new")
    assert os.listdir(tmp_path) == [target.name]


def test_failed_folder_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "train.npz").write_text("old")
    real, calls = os.replace, []

    def second_rename_fails(src, dst):  # the old folder moved aside, then the new one refused
        calls.append(dst)
        if len(calls) == 2:
            raise_enospc()
        return real(src, dst)
    monkeypatch.setattr(fileio.os, "replace", second_rename_fails)
    with pytest.raises(fileio.WriteError, match=f"^{re.escape(str(target))}: cannot write it"):
        with fileio.atomic_dir(target) as staging:
            (staging / "train.npz").write_text("new")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["prepared"] and (target / "train.npz").read_text() == "old"
