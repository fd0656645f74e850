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
from skinsage.app.classifier import Classifier, Prediction
from skinsage.app.console import predictions_csv, predictions_table
from skinsage.data.images import ImageError, load_image
from skinsage.data.prepare import prepare
from skinsage.data.sources.medmnist import MedmnistError, read_npz
from skinsage.errors import SkinSageError, run_reporting_errors
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

    def load(source, size, *bounds):
        if Path(str(source)).name == bad_name:
            raise RuntimeError("decoder crashed")
        return real(source, size, *bounds)
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
    "referral threshold above 1": (
        lambda clf: metadata_with(clf, referral={"classes": clf.classes[:1], "threshold": 1.5}),
        "records referral.threshold 1.5; expected a number in 0..1"),
    "referral class unknown": (lambda clf: metadata_with(clf, referral={"classes": ["mole"], "threshold": 0.5}),
                               "(classes ['mole']); expected a non-empty list of the model's classes"),
    "ood threshold a string": (
        lambda clf: metadata_with(clf, inference={**clf.metadata.get("inference", {}), "ood": {"threshold": "high"}}),
        "records inference.ood.threshold 'high'; expected a number"),
    "uncertain a bare number": (
        lambda clf: metadata_with(clf, inference={**clf.metadata.get("inference", {}), "uncertain": 0.5}),
        "records inference.uncertain 0.5; expected an object with a numeric 'threshold'"),
    "temperature infinite": (
        lambda clf: metadata_with(clf, inference={**clf.metadata.get("inference", {}), "temperature": 1e999}),
        "records temperature inf; expected a positive number"),
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


def test_95_megapixel_phone_jpeg_is_explained_on_a_half_size_photo(tmp_path, capsys, model_path):
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (10000, 9500), (200, 120, 90)).save(path, quality=50)
    code, out, err = run(capsys, "explain", "--model", model_path, path, "--out", tmp_path / "maps")
    assert code == 0 and "Traceback" not in err, err
    with Image.open(tmp_path / "maps" / "phone_gradcam.png") as overlay:
        assert overlay.size == (5000, 4750)  # draft mode's half scale: within Pillow's bound


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, capsys, monkeypatch, model_path, command):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "would_be_found.png")
    out_dir = ["--out", tmp_path / "maps"] if command == "explain" else []
    code, out, err = run(capsys, command, "--model", model_path, "", *out_dir)
    assert code == 1 and "would_be_found" not in out + err
    assert "skipped '': an empty path (to predict the current folder, give '.')" in err


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


def test_docs_advise_queue_or_temp_for_parallel_runs():
    text = (ROOT / "docs" / "dvc.md").read_text()
    section = text[text.index("## Everyday commands"):]
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
    # path, image_size, status, ood_score, label_1, probability_1, label_2, ...
    assert cells[0][0] == "\"'=HYPERLINK(\"\"http://x\"\")\"" and cells[0][4] == "'@SUM(1)"
    assert cells[0][6] == "'-1+2" and cells[1][0] == "'+cmd.jpg" and cells[1][4] == "'\tx"
    assert cells[1][6] == "ok" and cells[0][5] == "0.600000"  # numbers stay numbers


def test_control_characters_in_file_names_are_escaped_in_the_table(tmp_path, capsys, model_path, clf):
    odd = photo(tmp_path / "a\x1b[2Jb\nc.jpg")
    table = predictions_table(clf, [clf.predict(odd)])
    # model line, header, the row, the referral rule
    assert "\x1b" not in table and "a\\x1b[2Jb\\nc.jpg" in table and len(table.splitlines()) == 4
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


# === Issue #27, "Hardening, round three" ========================================================

# --- 27.1 a model file cannot act: SavedModel folders are refused for inference -----------------

def crafted_saved_model(folder: Path, marker: Path, clf) -> Path:
    """A SavedModel with a sidecar that passes every metadata check, whose graph reads
    /etc/hostname and writes `marker`.load when the folder is loaded (a resource initialiser) and
    `marker`.serve when it predicts."""
    import tensorflow as tf

    class Initialiser(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[])

        def _initialize(self):
            tf.io.write_file(f"{marker}.load", tf.io.read_file("/etc/hostname"))
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    class Hostile(tf.Module):
        def __init__(self):
            super().__init__()
            self.resource = Initialiser()

        @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.uint8, name="image")])
        def serve(self, images):
            tf.io.write_file(f"{marker}.serve", tf.io.read_file("/etc/hostname"))
            return tf.ones((tf.shape(images)[0], len(CLASSES))) / len(CLASSES)

    module = Hostile()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    from skinsage.export.convert import EXPORT_FORMAT, sidecar_path
    sidecar_path(folder).write_text(json.dumps({**clf.metadata, "export": {
        "format": EXPORT_FORMAT, "target": "saved_model", "tta_in_graph": "none"}}))
    return folder


@pytest.fixture(scope="module")
def hostile_saved_model(tmp_path_factory, clf):
    root = tmp_path_factory.mktemp("hostile")
    return crafted_saved_model(root / "model_savedmodel", root / "acted", clf), root / "acted"


def written_by(marker: Path) -> list[str]:
    return sorted(p.name for p in marker.parent.glob(marker.name + ".*"))


@pytest.mark.parametrize("command", ["predict", "evaluate", "info", "serve", "explain"])
def test_a_crafted_saved_model_writes_nothing_and_is_refused_by_every_command(
        tmp_path, capsys, hostile_saved_model, command):
    folder, marker = hostile_saved_model
    image = photo(tmp_path / "a.jpg")
    argv = {"predict": ["predict", "--model", folder, image],
            "evaluate": ["evaluate", "--model", folder, "--data", tmp_path],
            "info": ["info", "--model", folder],
            "serve": ["serve", "--model", folder, "--port", "0"],
            "explain": ["explain", "--model", folder, image, "--out", tmp_path / "maps"]}[command]
    code, out, err = run(capsys, *argv)
    assert written_by(marker) == [], "the model file's graph ran"
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert err.startswith(f"error: {folder}: a TF SavedModel folder") and "use the .keras model" in err, err


def test_classifier_load_refuses_a_crafted_saved_model_without_running_it(hostile_saved_model):
    folder, marker = hostile_saved_model
    with pytest.raises(ModelFileError, match="a TF SavedModel folder"):
        Classifier.load(folder)
    assert written_by(marker) == []


def test_the_saved_model_export_is_still_written_and_checked(tmp_path, clf):
    from skinsage.export.convert import export_model
    result = export_model(clf.model, clf.metadata, tmp_path / "model_savedmodel", "saved_model")
    assert (result.path / "saved_model.pb").is_file() and result.verification["max_abs_diff"] < 1e-3


def test_a_tflite_carrying_tensorflow_file_ops_is_refused_without_running_them(tmp_path, capsys, clf):
    """Select TF ops (Flex) could read and write files: neither LiteRT runtime links them."""
    import tensorflow as tf

    marker = tmp_path / "acted"

    @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.uint8)])
    def hostile(images):
        tf.io.write_file(str(marker), tf.io.read_file("/etc/hostname"))
        return tf.ones((tf.shape(images)[0], len(CLASSES))) / len(CLASSES)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([hostile.get_concrete_function()], hostile)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = exported_beside(tmp_path / "m.tflite", clf, "litert", converter.convert())
    code, out, err = run(capsys, "predict", "--model", path, photo(tmp_path / "a.jpg"))
    assert not marker.exists()
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert err.startswith(f"error: {path}: cannot load it as a litert model") and "Select TensorFlow op" in err, err


def test_static_only_the_export_check_loads_a_saved_model():
    """tf.saved_model.load runs the graph it loads: only on the folder `export` has just written."""
    import ast
    loads = [str(path.relative_to(ROOT)) for path in sorted(ROOT.glob("skinsage/**/*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("saved_model.load")]
    assert loads == ["skinsage/export/convert.py"], loads


# --- 27.3 clinical inputs: the rules prepare applies, at prediction time; never a NaN probability -

CLINICAL_ENCODING = {"age": {"mean": 50.0, "std": 15.0}, "sex": {"vocabulary": ["female", "male"]},
                     "site": {"vocabulary": ["back", "face", "leg"]}}


@pytest.fixture(scope="module")
def clinical_model(tmp_path_factory, clf) -> Path:
    """An untrained tiny CNN taking age, sex and site, saved with the record `train` writes."""
    import keras

    from skinsage.model.architectures import build_cnn
    from tiny_model import tiny_params

    keras.utils.set_random_seed(0)
    model = build_cnn(len(CLASSES), tiny_params().model_params, CLINICAL_ENCODING)
    path = tmp_path_factory.mktemp("clinical") / "model.keras"
    save_model(model, path, {**clf.metadata, "clinical": {
        "inputs": ["age", "sex", "site"], "columns": {"age": "age", "sex": "sex", "site": "localization"},
        "encoding": CLINICAL_ENCODING}})
    return path


@pytest.mark.parametrize("age", ["1e39", "inf", "-inf", "-5", "1000", "130.5", "45 years"])
def test_an_age_prepare_refuses_is_refused_by_predict(tmp_path, capsys, clinical_model, age):
    image = photo(tmp_path / "a.jpg")
    code, out, err = run(capsys, "predict", "--model", clinical_model, "--format", "json",
                         f"--age={age}", "--sex", "male", "--site", "back", image)
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert err.startswith(f"error: --age {age}: ") and ("0-130" in err or "not a number" in err), err


def test_an_age_prepare_refuses_is_refused_in_a_clinical_csv(tmp_path, capsys, clinical_model):
    image = photo(tmp_path / "a.jpg")
    (tmp_path / "clinical.csv").write_text("image,age,sex,localization\na.jpg,1e39,male,back\n")
    code, out, err = run(capsys, "predict", "--model", clinical_model, "--format", "json",
                         "--clinical", tmp_path / "clinical.csv", image)
    assert code == 1 and out == "", err
    assert "row 2" in err and "1e39" in err and "0-130" in err, err


def test_prepare_and_predict_share_one_age_rule():
    from skinsage.clinical_rules import ClinicalValueError, age_value
    from skinsage.data.sources import csv_table
    from skinsage.model import clinical

    assert csv_table.age_value is age_value and clinical.age_value is age_value
    assert age_value("") != age_value("")  # NaN: unknown
    assert age_value(" 45 ") == 45.0 and age_value(0) == 0.0 and age_value("130") == 130.0
    for bad in ("1e39", "inf", "-1", "131", "old", True):
        with pytest.raises(ClinicalValueError, match="0-130|not a number"):
            age_value(bad)


def test_predict_accepts_an_in_range_age_and_unknowns(tmp_path, capsys, clinical_model):
    image = photo(tmp_path / "a.jpg")
    code, out, err = run(capsys, "predict", "--model", clinical_model, "--format", "json",
                         "--age", "130", "--sex", "unknown", "--site", "", image)
    probabilities = json.loads(out)["predictions"][0]["probabilities"]
    assert code == 0 and abs(sum(probabilities.values()) - 1) < 1e-6, err


def test_no_probability_is_ever_nan(monkeypatch, clf):
    """The one inference path raises rather than returning a NaN (whatever the cause)."""
    from skinsage.model import inference

    class Broken:
        output_shape = (None, 3)
        input_shape = (None, SIZE, SIZE, 3)

        def predict_on_batch(self, batch):
            out = np.full((len(batch), 3), 1 / 3)
            out[-1] = np.nan
            return out

    with pytest.raises(inference.NonFiniteOutputError, match="image 2 of 2"):
        inference.predict_probabilities(Broken(), np.zeros((2, SIZE, SIZE, 3), np.uint8), 8)


# --- 27.4 sizes that grow without bound: a CSV cell, the class count, a class name --------------

def csv_dataset(tmp_path: Path, rows: list[list[str]], header=("image_id", "dx", "age", "sex", "site")) -> Path:
    from test_csv_source import png, write_csv

    for row in rows:
        png(tmp_path / "images" / f"{row[0]}.png", abs(hash(row[0])) % 1000)
    return write_csv(tmp_path / "meta.csv", list(header), rows)


def csv_params(tmp_path: Path, csv_path: Path, clinical: bool = True, **overrides):
    values = {"data.source": "csv", "data.csv.path": str(csv_path), "data.csv.images": str(tmp_path / "images"),
              "data.csv.id": "image_id", "data.csv.label": "dx", "model": "cnn", "models.cnn.image_size": SIZE,
              "data.workers": 1, **overrides}
    if clinical:
        values["data.csv.clinical"] = {"age": "age", "sex": "sex", "site": "site"}
    return load_params(ROOT / "params.yaml", overrides=values)


def three_classes(n: int = 4) -> list[list[str]]:
    return [[f"img_{c}_{i}", c, "40", "male", "back"] for c in ("a", "b", "c") for i in range(n)]


def test_a_huge_clinical_cell_is_refused_with_the_bound(tmp_path):
    rows = three_classes()
    rows[5][4] = "x" * 130_000  # 130,000 characters: over the csv module's own limit too
    rows[6][4] = "y" * 5_000
    csv_path = csv_dataset(tmp_path, rows)
    with pytest.raises(SkinSageError, match=r"at most 1,000 characters") as refused:
        prepare(csv_params(tmp_path, csv_path), tmp_path / "prepared", tmp_path / "data.json")
    assert "row 7" in str(refused.value) and "'site'" in str(refused.value)
    assert not (tmp_path / "prepared").exists()


def test_a_long_class_name_is_refused_with_the_bound(tmp_path):
    rows = three_classes()
    for row in rows[:4]:
        row[1] = "m" * 101
    with pytest.raises(SkinSageError, match=r"class name of 101 characters.*at most 100"):
        prepare(csv_params(tmp_path, csv_dataset(tmp_path, rows), clinical=False),
                tmp_path / "prepared", tmp_path / "data.json")


def test_too_many_classes_are_refused_before_decoding(tmp_path, monkeypatch):
    from skinsage.data import prepare as prepare_module

    rows = [[f"img_{c}_{i}", f"class_{c}", "40", "male", "back"] for c in range(1001) for i in range(3)]
    from test_csv_source import write_csv
    csv_path = write_csv(tmp_path / "meta.csv", ["image_id", "dx", "age", "sex", "site"], rows)
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(prepare_module, "decode_listing", lambda *a: pytest.fail("decoded first"))
    with pytest.raises(SkinSageError, match=r"1,001 classes; at most 1,000"):
        prepare(csv_params(tmp_path, csv_path, clinical=False), tmp_path / "prepared", tmp_path / "data.json")


def test_model_metadata_train_cannot_read_back_is_refused_when_saving(tmp_path, clf):
    with pytest.raises(ModelFileError, match="more than the 1 MiB"):
        save_model(clf.model, tmp_path / "m.keras", {**clf.metadata, "padding": "x" * (2 << 20)})
    assert not (tmp_path / "m.keras").exists()


def test_a_clinical_column_with_thousands_of_values_is_refused(tmp_path):
    rows = [[f"img_{c}_{i}", c, "40", "male", f"site {c} {i}"] for c in ("a", "b", "c") for i in range(334)]
    csv_path = csv_dataset(tmp_path, rows)
    with pytest.raises(SkinSageError, match=r"1,002 different values; at most 1,000"):
        prepare(csv_params(tmp_path, csv_path), tmp_path / "prepared", tmp_path / "data.json")


# --- 27.7 CSV files that used to end in a traceback ----------------------------------------------

BAD_CSV = {
    "not UTF-8": (b"image_id,dx\nimg_\xe9,a\n", "not UTF-8 text"),
    "unbalanced quote": (b'image_id,dx\n"img_1,a\nimg_2,b\n', "unbalanced quote"),
    "field over the csv limit": (b"image_id,dx\nimg_1," + b"a" * 140_000 + b"\n", "at most 1,000 characters"),
    "NUL byte": (b"image_id,dx\nimg\x00_1,a\n", "NUL"),
}


@pytest.mark.parametrize("case", BAD_CSV)
def test_a_broken_csv_is_one_error_line(tmp_path, case):
    content, message = BAD_CSV[case]
    (tmp_path / "meta.csv").write_bytes(content)
    (tmp_path / "images").mkdir()
    script = ("import sys; from skinsage.errors import run_reporting_errors; "
              "from skinsage.data.sources.table import read_table; from pathlib import Path; "
              f"run_reporting_errors(read_table, Path({str(tmp_path / 'meta.csv')!r}), 'data.csv.path')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr


@pytest.mark.parametrize("case", ["not UTF-8", "unbalanced quote"])
def test_a_broken_clinical_csv_given_to_predict_is_one_error_line(tmp_path, capsys, clinical_model, case):
    content, message = BAD_CSV[case]
    (tmp_path / "clinical.csv").write_bytes(content.replace(b"image_id,dx", b"image,age,sex,localization"))
    code, out, err = run(capsys, "predict", "--model", clinical_model, "--clinical", tmp_path / "clinical.csv",
                         photo(tmp_path / "a.jpg"))
    assert code == 1 and out == "" and message in err and err.startswith("error: "), err


# --- 27.7 more tracebacks where an `error:` line is promised --------------------------------------

def test_an_error_line_is_cut_to_a_sane_length(capsys, monkeypatch):
    names = ", ".join(f"class_{i}" for i in range(10_000))  # ~110,000 characters

    def fail(args):
        raise SkinSageError(f"unknown classes: {names}")
    monkeypatch.setattr(cli, "run_info", fail)
    code, out, err = run(capsys, "info", "--model", "m.keras")
    assert code == 1 and err.count("\n") == 1 and len(err) < 2_100, len(err)
    assert err.startswith("error: unknown classes: class_0, class_1") and re.search(
        r"\.\.\. \([\d,]+ more characters\)\n$", err), err[-80:]


def exported_beside(path: Path, clf, target: str, content: bytes | None = None) -> Path:
    from skinsage.export.convert import EXPORT_FORMAT, sidecar_path
    if content is not None:
        path.write_bytes(content)
    sidecar_path(path).write_text(json.dumps({**clf.metadata, "export": {
        "format": EXPORT_FORMAT, "target": target, "tta_in_graph": "none"}}))
    return path


def custom_op_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("Exfiltrate", ["image"], ["probabilities"], domain="com.example.evil")
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, [None, SIZE, SIZE, 3])
    graph = helper.make_graph([node], "g", [image],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example.evil", 1)]), str(path))
    return path


MODEL_FILES = {
    "garbage .onnx": (lambda tmp, clf: exported_beside(tmp / "m.onnx", clf, "onnx", b"not a protobuf at all"),
                      "cannot load it as a onnx model"),
    "custom-op .onnx": (lambda tmp, clf: exported_beside(custom_op_onnx(tmp / "m.onnx"), clf, "onnx"),
                        "cannot load it as a onnx model"),
    "garbage .tflite": (lambda tmp, clf: exported_beside(tmp / "m.tflite", clf, "litert", b"TFL3" + b"\0" * 64),
                        "cannot load it as a litert model"),
    "nested sidecar": (lambda tmp, clf: _nested_sidecar(tmp / "m.onnx"), "nested too deeply"),
    "nested .keras metadata": (lambda tmp, clf: model_with_metadata(tmp / "m.keras", clf, b"[" * 200_000),
                               "nested too deeply"),
    "FIFO .tflite": (lambda tmp, clf: exported_beside(_fifo(tmp / "m.tflite"), clf, "litert"),
                     "not a regular file"),
    "FIFO .keras": (lambda tmp, clf: _fifo(tmp / "m.keras"), "not a regular file"),
}


def _nested_sidecar(path: Path) -> Path:
    path.write_bytes(b"onnx")
    Path(f"{path}.json").write_text("[" * 200_000)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", MODEL_FILES)
def test_a_broken_model_file_is_one_error_line_and_never_hangs(tmp_path, capsys, clf, case):
    make, message = MODEL_FILES[case]
    path = make(tmp_path, clf)
    for argv in (["predict", "--model", path, photo(tmp_path / "a.jpg")], ["info", "--model", path]):
        if argv[0] == "info" and "sidecar" not in case and "metadata" not in case and "FIFO" not in case:
            continue  # info reads the metadata only
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "" and "Traceback" not in err, (argv, err)
        assert err.startswith(f"error: {path}") and message in err, (argv, err)


@pytest.mark.parametrize("target", ["file", "/dev/null"])
def test_explain_out_at_a_file_is_refused(tmp_path, capsys, model_path, target):
    out = tmp_path / "taken.txt" if target == "file" else Path("/dev/null")
    if target == "file":
        out.write_text("keep me")
    code, stdout, err = run(capsys, "explain", "--model", model_path, photo(tmp_path / "a.jpg"), "--out", out)
    assert code == 1 and "Traceback" not in err and err.startswith(f"error: --out {out}: "), err
    assert "not a folder" in err
    if target == "file":
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("fmt, name", [("saved_model", "taken.txt"), ("onnx", "folder.onnx")])
def test_export_out_at_something_else_is_refused(tmp_path, capsys, model_path, fmt, name):
    out = tmp_path / name
    out.mkdir() if name.endswith(".onnx") else out.write_text("keep me")
    code, stdout, err = run(capsys, "export", "--model", model_path, "--format", fmt, "--out", out)
    assert code == 1 and "Traceback" not in err and err.startswith(f"error: --out {out}: "), err
    assert out.is_dir() if name.endswith(".onnx") else out.read_text() == "keep me"


def test_a_fifo_as_the_download_file_or_npz_is_refused_without_blocking(tmp_path):
    from skinsage.data.sources.medmnist import fetch
    fifo = _fifo(tmp_path / "dermamnist.npz")
    with pytest.raises(MedmnistError, match=r"not a regular file \(a FIFO\)"):
        fetch("http://127.0.0.1:9/never.npz", fifo, "0" * 32, timeout=1)
    with pytest.raises(MedmnistError, match=r"not a regular file \(a FIFO\)"):
        read_npz(fifo, 7)


def test_groups_that_leave_no_validation_split_are_refused_by_prepare(tmp_path):
    rows = [[f"img_{c}_{g}_{i}", c, f"lesion_{c}_{g}"] for c in ("a", "b", "c") for g in range(2) for i in range(2)]
    csv_path = csv_dataset(tmp_path, rows, header=("image_id", "dx", "lesion"))
    p = csv_params(tmp_path, csv_path, clinical=False, **{"data.csv.group": "lesion"})
    with pytest.raises(SkinSageError, match=r"no images in val: 6 group\(s\) in all"):
        prepare(p, tmp_path / "prepared", tmp_path / "data.json")


# --- 27.6 / 27.7 the sharded store: its index must agree with its records; damage is an error ------

@pytest.fixture
def sharded(tmp_path, monkeypatch):
    from skinsage import shards
    from skinsage.prepared import PreparedData, Split, save_prepared
    monkeypatch.setattr(shards, "SHARD_BYTES", 5 * SIZE * SIZE * 3)  # 5 images per shard
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (23, SIZE, SIZE, 3), dtype=np.uint8), np.arange(23) % 3)
    save_prepared(tmp_path / "prepared", PreparedData(CLASSES, "generated", SIZE, {"test": split}), store="shards")
    return tmp_path / "prepared"


def _read_all(prepared: Path):
    from skinsage.prepared import load_split
    return sum(len(batch) for batch in load_split(prepared, "test").batches(8))


def _relabel(prepared: Path) -> None:
    fields = prepared / "test" / "fields.npz"
    with np.load(fields) as npz:
        labels = npz["labels"]
    np.savez(fields, labels=np.roll(labels, 1))


def _truncate(prepared: Path) -> None:
    shard = sorted((prepared / "test").glob("*.tfrecord*"))[1]
    shard.write_bytes(shard.read_bytes()[:-40])


def _remove_shards(prepared: Path) -> None:
    for shard in (prepared / "test").glob("*.tfrecord*"):
        shard.unlink()


def _corrupt_fields(prepared: Path) -> None:
    (prepared / "test" / "fields.npz").write_bytes(b"PK\x03\x04 not a zip")


@pytest.mark.parametrize("damage, message", [
    (_relabel, "the labels in the shards disagree with fields.npz"),
    (_truncate, "a shard is truncated or corrupt"),
    (_remove_shards, "there is no shard file"),
    (_corrupt_fields, "fields.npz: not readable"),
])
def test_a_damaged_shard_store_is_a_clear_error(sharded, damage, message):
    from skinsage.prepared import StoreError
    assert _read_all(sharded) == 23
    damage(sharded)
    with pytest.raises(StoreError, match=message):
        _read_all(sharded)


def test_skinsage_evaluate_on_relabelled_shards_is_an_error_not_a_wrong_accuracy(sharded, model_path, capsys):
    _relabel(sharded)
    code, out, err = run(capsys, "evaluate", "--model", model_path, "--data", sharded)
    assert code == 1 and "disagree with fields.npz" in err and "Traceback" not in err, err


# --- 27.5 text from data is escaped where it is written -------------------------------------------

HOSTILE_CLASSES = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "<script>alert(1)</script> | **b**",
                   "'=quoted", "plain"]


def test_class_names_cannot_be_formulas_in_the_evaluation_csvs_and_read_back_unchanged(tmp_path):
    import csv as csv_module

    from skinsage.contracts.evaluation import read_predictions, read_rows, write_predictions, write_rows
    from skinsage.evaluate.curves import roc_rows
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=10)
    write_predictions(tmp_path / "predictions.csv", labels, probs, HOSTILE_CLASSES)
    write_rows(tmp_path / "roc.csv", roc_rows(labels, probs, HOSTILE_CLASSES), ("class", "fpr", "tpr", "threshold"))
    for name in ("predictions.csv", "roc.csv"):
        with open(tmp_path / name, newline="") as f:
            cells = [cell for row in csv_module.reader(f) for cell in row]
        assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))], (name, cells[:12])
    back = read_predictions(tmp_path / "predictions.csv")
    assert [row["actual"] for row in back] == [HOSTILE_CLASSES[i] for i in labels]
    assert list(back[0]["probabilities"]) == HOSTILE_CLASSES
    assert sorted({row["class"] for row in read_rows(tmp_path / "roc.csv")}) == sorted(HOSTILE_CLASSES)


def test_the_model_card_escapes_class_and_dataset_names():
    from skinsage.report.model_card import model_card
    params = synthetic_params()
    classes = HOSTILE_CLASSES
    per_split = {"total": 5, "per_class": {name: 1 for name in classes}}
    card = model_card(params=params, labels={"classes": classes, "dataset": "<img src=x onerror=alert(1)>",
                                             "image_size": SIZE, "source": "csv"},
                      data={"splits": {"train": per_split, "val": per_split, "test": per_split}},
                      train={}, evaluation={"num_images": 5}, per_class={name: {} for name in classes})
    assert "<script>" not in card and "<img" not in card and "&lt;script&gt;" in card
    header = None
    for line in card.splitlines():
        if line.startswith("| class |"):
            header = line
        elif "script" in line and line.startswith("|"):  # the name's pipe is escaped: no extra column
            assert "\\|" in line
            assert len(re.findall(r"(?<!\\)\|", line)) == header.count("|"), (header, line)
