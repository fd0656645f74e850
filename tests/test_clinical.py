"""Clinical data (age, sex, anatomical site) carried by `prepare` and used as model inputs, on a
small generated CSV dataset whose label is decided by the clinical data alone (the images are noise)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from skinsage.data.prepare import prepare
from skinsage.data.sources.table import CsvError
from skinsage.params import ParamsError, load_params
from skinsage.prepared import load_labels, load_prepared
from test_csv_source import png, write_csv

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
SITE_OF = {"bcc": "face", "mel": "back", "nv": "leg"}  # the label follows the site
HEADER = ["lesion_id", "image_id", "dx", "age", "sex", "localization"]
HAM_CLINICAL = {"age": "age", "sex": "sex", "site": "localization"}


def clinical_dataset(tmp_path: Path, per_class: int = 30) -> tuple[Path, Path, list[list]]:
    """HAM10000-like CSV (ids without extension, one lesion per image) with age, sex and site; a
    few missing values of each kind. Returns (csv, image folder, rows)."""
    images, rows = tmp_path / "images", []
    for c, (dx, site) in enumerate(SITE_OF.items()):
        for i in range(per_class):
            n = c * per_class + i
            png(images / f"ISIC_{n:05d}.png", n)
            age = "" if i % 10 == 3 else str(20.0 + 25 * c + i % 7)
            sex = ("male", "female", "", "unknown")[i % 4]
            rows.append([f"HAM_{n}", f"ISIC_{n:05d}", dx, age, sex, site])
    return write_csv(tmp_path / "metadata.csv", HEADER, rows), images, rows


def clinical_params(csv_path: Path, images: Path, clinical=("age", "sex", "site"), **overrides):
    return load_params(ROOT / "params.yaml", {
        "data.source": "csv", "data.csv.path": str(csv_path), "data.csv.images": str(images),
        "data.csv.id": "image_id", "data.csv.label": "dx", "data.csv.group": "lesion_id",
        "data.csv.clinical": HAM_CLINICAL, "model": "cnn", "models.cnn.image_size": SIZE,
        "models.cnn.filters": [4, 8], "models.cnn.dense_units": 16, "models.cnn.clinical": list(clinical),
        "data.workers": 1, "train.epochs": 25, "train.batch_size": 16, "train.learning_rate": 0.01,
        "train.early_stopping.start_from_epoch": 25, "evaluate.bootstrap": 0, "models.cnn.dropout": 0,
        "train.label_smoothing": 0, "train.lr_schedule": "constant", **overrides})


# --- prepare ---------------------------------------------------------------------------------------

def test_prepare_keeps_age_sex_and_site_per_split(tmp_path):
    csv_path, images, rows = clinical_dataset(tmp_path)
    prepare(clinical_params(csv_path, images), tmp_path / "prepared", tmp_path / "data.json")
    assert load_labels(tmp_path / "prepared")["clinical"] == ["age", "sex", "site"]
    data = load_prepared(tmp_path / "prepared")
    missing_ages, sexes = 0, set()
    for split in data.splits.values():
        meta = split.clinical
        assert meta["age"].dtype == np.float64 and len(meta["sex"]) == len(split.labels)
        # each image kept its own row's values through the split: the site is its class's
        assert [SITE_OF[data.class_names[label]] for label in split.labels] == meta["site"].tolist()
        missing_ages += int(np.isnan(meta["age"]).sum())
        sexes |= set(meta["sex"].tolist())
    assert sexes == {"male", "female", "unknown"}  # empty cells become "unknown"
    assert missing_ages == sum(1 for row in rows if row[3] == "") > 0


def test_prepare_without_clinical_columns_writes_no_clinical_data(tmp_path):
    csv_path, images, _ = clinical_dataset(tmp_path, per_class=4)
    p = clinical_params(csv_path, images, clinical=(), **{"data.csv.clinical": None})
    prepare(p, tmp_path / "prepared", tmp_path / "data.json")
    assert load_labels(tmp_path / "prepared")["clinical"] == []
    assert all(s.clinical is None for s in load_prepared(tmp_path / "prepared").splits.values())


def test_a_missing_clinical_column_and_a_bad_age_are_refused_naming_them(tmp_path):
    csv_path, images, rows = clinical_dataset(tmp_path, per_class=4)
    p = clinical_params(csv_path, images, **{"data.csv.clinical": {**HAM_CLINICAL, "site": "anatom_site"}})
    with pytest.raises(CsvError, match="data.csv.clinical.site: no column 'anatom_site'"):
        prepare(p, tmp_path / "prepared", tmp_path / "data.json")
    rows[2][3] = "forty"
    write_csv(csv_path, HEADER, rows)
    with pytest.raises(CsvError, match=r"row 4, column of data.csv.clinical.age: 'forty' is not a number"):
        prepare(clinical_params(csv_path, images), tmp_path / "prepared", tmp_path / "data.json")


@pytest.mark.parametrize("overrides, message", [
    ({"data.source": "medmnist"}, "models.cnn.clinical: .* only the csv source carries"),
    ({"data.csv.clinical": {"age": "age", "sex": "sex", "site": None}},
     "models.cnn.clinical: lists site but data.csv.clinical names no column for it; set data.csv.clinical.site"),
    ({"data.csv.clinical": {"age": None, "sex": None, "site": None}}, "data.csv.clinical: name at least one column"),
    ({"train.mixup": 0.2}, "train.mixup: mixup blends images but not clinical data"),
    ({"models.cnn.clinical": ["age", "age"]}, "models.cnn.clinical: a field is listed twice"),
])
def test_params_refuse_clinical_data_the_data_cannot_supply(tmp_path, overrides, message):
    with pytest.raises(ParamsError, match=message):
        clinical_params(tmp_path / "x.csv", tmp_path, **overrides)


# --- a model trained where the clinical data decides the label ----------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """prepare + train as the stages run them, on the generated dataset: (project dir, params)."""
    from skinsage.model.model_file import save_model
    from skinsage.train.trainer import model_metadata, train_model

    root = tmp_path_factory.mktemp("clinical")
    csv_path, images, _ = clinical_dataset(root)
    p = clinical_params(csv_path, images)
    prepare(p, root / "prepared", root / "data.json")
    data = load_prepared(root / "prepared", splits=("train", "val"))
    model, _, summary = train_model(p, data)
    save_model(model, root / "model.keras", model_metadata(p, data, summary))
    return root, p


def one_image(root: Path) -> np.ndarray:
    return load_prepared(root / "prepared", splits=("test",)).splits["test"].images[:1]


def test_clinical_data_reaches_the_model_and_decides_the_prediction(trained):
    from skinsage.app.classifier import Classifier

    root, _ = trained
    clf = Classifier.load(root / "model.keras")
    image = one_image(root)[0]
    labels = {dx: clf.predict(image, clinical={"age": 40, "sex": "male", "site": site}).label
              for dx, site in SITE_OF.items()}
    assert labels == {dx: dx for dx in SITE_OF}  # same image, different site -> its class


def test_missing_and_unseen_values_are_encoded_not_refused(trained):
    from skinsage.app.classifier import Classifier

    root, _ = trained
    clf = Classifier.load(root / "model.keras")
    image = one_image(root)[0]
    for clinical in ({"age": None, "sex": "", "site": "face"}, {"age": float("nan"), "sex": "unknown", "site": "face"},
                     {"age": "", "sex": "intersex", "site": "face"}):  # "intersex": never seen in training
        prediction = clf.predict(image, clinical=clinical)
        assert prediction.label == "bcc" and math.isclose(sum(prediction.probabilities.values()), 1, abs_tol=1e-6)
    unseen_site = clf.predict(image, clinical={"age": 40, "sex": "male", "site": "sole of the foot"})
    assert sum(unseen_site.probabilities.values()) == pytest.approx(1)


def test_the_encoding_is_inside_the_saved_file(trained):
    """Load from the file alone (the training vocabulary recorded in the network, not in Python)."""
    import keras

    from skinsage.model.clinical import clinical_fields
    from skinsage.model.model_file import load_model

    root, _ = trained
    keras.backend.clear_session()
    model, metadata = load_model(root / "model.keras")
    assert clinical_fields(model) == ["age", "sex", "site"]
    assert model.get_layer("site_encoding").get_vocabulary() == ["[UNK]", "back", "face", "leg"]
    assert metadata["clinical"]["columns"] == HAM_CLINICAL
    assert metadata["clinical"]["encoding"]["sex"] == {"vocabulary": ["female", "male"]}  # "unknown" is OOV


# --- the command line -----------------------------------------------------------------------------

def run(capsys, *argv) -> tuple[int, str, str]:
    from skinsage.app.cli import main

    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_matches_clinical_csv_rows_by_file_name(trained, tmp_path, capsys):
    """Rows named with or without the extension, columns named as in training (localization) or
    by field; each image predicted with its own row; an image without a row is reported."""
    from PIL import Image

    root, _ = trained
    image = one_image(root)[0]
    for name in ("a", "b", "c", "d"):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    write_csv(tmp_path / "clinical.csv", ["image", "age", "sex", "localization"],
              [["a.png", "40", "male", "face"], ["b", "", "", "back"], ["c.PNG", "60", "unknown", "leg"]])
    code, out, err = run(capsys, "predict", "--model", root / "model.keras", "--format", "json",
                         "--clinical", tmp_path / "clinical.csv", tmp_path)
    labels = {Path(p["path"]).stem: p["label"] for p in json.loads(out)["predictions"]}
    assert code == 0 and labels == {"a": "bcc", "b": "mel", "c": "nv"}
    assert f"skipped {tmp_path / 'd.png'}: no row for this image in --clinical" in err


def test_predict_one_image_with_flags_and_refusals(trained, tmp_path, capsys):
    from PIL import Image

    root, _ = trained
    Image.fromarray(one_image(root)[0]).save(tmp_path / "x.png")
    model = root / "model.keras"
    code, out, _ = run(capsys, "predict", "--model", model, "--format", "csv", "--age", "", "--sex", "female",
                       "--site", "leg", tmp_path / "x.png")
    assert code == 0 and out.splitlines()[1].split(",")[4] == "nv"  # path, image_size, status, ood_score, label_1
    code, _, err = run(capsys, "predict", "--model", model, tmp_path / "x.png")
    assert code == 1 and "takes clinical data besides the image (age, sex, site) and none was given. " \
        "Pass --clinical FILE.csv" in err and "--age VALUE --sex VALUE --site VALUE" in err
    code, _, err = run(capsys, "predict", "--model", model, "--site", "leg", tmp_path / "x.png")
    assert code == 1 and "also pass --age --sex ('unknown' when not known)" in err
    write_csv(tmp_path / "bad.csv", ["image", "age", "sex", "site_name"], [["x", "1", "male", "leg"]])
    code, _, err = run(capsys, "predict", "--model", model, "--clinical", tmp_path / "bad.csv", tmp_path / "x.png")
    assert code == 1 and "no value for 'site' (give it as site or localization" in err
    code, _, err = run(capsys, "explain", "--model", model, "--out", tmp_path / "maps", tmp_path / "x.png")
    assert code == 1 and "Grad-CAM (`skinsage explain`, the web app) supports image-only models" in err
    code, _, err = run(capsys, "export", "--model", model, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 1 and "export supports image-only models; this one also takes clinical data" in err


def test_info_lists_the_clinical_inputs(trained, capsys):
    root, _ = trained
    code, out, _ = run(capsys, "info", "--model", root / "model.keras")
    assert code == 0 and "inputs:       image + age (column age) + sex (column sex) + site (column localization)" in out


def test_web_app_refuses_a_clinical_model_at_start(trained):
    from skinsage.app.classifier import Classifier, PredictError
    from skinsage.app.server import create_app

    with pytest.raises(PredictError, match="the web app\\) supports image-only models"):
        create_app(Classifier.load(trained[0] / "model.keras"))


def test_image_only_model_warns_that_clinical_data_is_ignored(model_path, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    code, _, err = run(capsys, "predict", "--model", model_path, "--sex", "male", tmp_path / "x.png")
    assert code == 0 and "takes images only; --sex is ignored" in err


def test_evaluate_stage_and_skinsage_evaluate_agree_with_clinical_data(trained, tmp_path, capsys, monkeypatch):
    """The `evaluate` stage's script and `skinsage evaluate --data data/prepared` on one project."""
    import runpy
    import shutil

    root, p = trained
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    shutil.copytree(root / "prepared", project / "data" / "prepared")
    shutil.copy(root / "model.keras", project / "models" / "model.keras")
    import yaml
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["evaluate"]["bootstrap"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(project)
    runpy.run_path(str(ROOT / "stages" / "evaluate.py"), run_name="__main__")
    recorded = json.loads((project / "metrics" / "eval_full.json").read_text())
    code, _, _ = run(capsys, "evaluate", "--data", "data/prepared", "--out", "cli.json", "--bootstrap", "0")
    cli = json.loads((project / "cli.json").read_text())["metrics"]
    assert code == 0 and recorded["accuracy"] > 0.8  # the clinical data was used: the images are noise
    for key in ("accuracy", "balanced_accuracy", "auc_macro_ovr", "loss"):
        assert cli[key] == pytest.approx(recorded[key], abs=1e-9), key
    folders = tmp_path / "classes"
    for i, (image, label) in enumerate(zip(one_image(root), ["bcc"])):
        (folders / label).mkdir(parents=True)
        from PIL import Image
        Image.fromarray(image).save(folders / label / f"{i}.png")
    code, _, err = run(capsys, "evaluate", "--data", folders)
    assert code == 1 and f"and {folders} has none: evaluate it on a folder written by `prepare`" in err


def clinical_split(per_class: int, seed: int, size: int):
    """Noise images whose class is given by the site; ages and sexes with missing values."""
    from skinsage.prepared import Split

    labels = np.repeat(np.arange(len(SITE_OF)), per_class)
    rng = np.random.default_rng(seed)
    sites = np.asarray([list(SITE_OF.values())[label] for label in labels])
    ages = np.where(rng.random(len(labels)) < 0.2, np.nan, rng.integers(20, 80, len(labels)).astype(float))
    sexes = rng.choice(["male", "female", "unknown"], len(labels))
    return Split(rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8), labels.astype(np.int64),
                 clinical={"age": ages, "sex": sexes, "site": sites})


def test_resnet50_head_trains_on_cached_features_with_clinical_data(tmp_path):
    """The head phase takes cached features + clinical data; fine-tuning then the whole model's inputs."""
    from skinsage.app.classifier import Classifier
    from skinsage.model.model_file import save_model
    from skinsage.prepared import PreparedData
    from skinsage.train.trainer import model_metadata, train_model

    p = clinical_params(tmp_path / "x.csv", tmp_path, **{
        "model": "resnet50", "models.resnet50.weights": None, "models.resnet50.image_size": 32,
        "models.resnet50.dense_units": 16, "models.resnet50.clinical": ["age", "sex", "site"],
        "models.resnet50.fine_tune.epochs": 1, "models.resnet50.dropout": 0, "train.epochs": 30})
    data = PreparedData(list(SITE_OF), "generated", 32, {"train": clinical_split(12, 1, 32),
                                                         "val": clinical_split(3, 2, 32)})
    model, _, summary = train_model(p, data)
    assert summary["feature_caching"] and summary["fine_tune_epochs_run"] == 1
    save_model(model, tmp_path / "model.keras", model_metadata(p, data, summary))
    clf = Classifier.load(tmp_path / "model.keras")
    image = data.splits["val"].images[0]
    probs = np.array([list(clf.predict(image, clinical={"age": 50, "sex": "male", "site": site}).probabilities.values())
                      for site in SITE_OF.values()])  # row: site given, column: class (SITE_OF's order)
    # each class is most probable when its own site is given: the clinical data reaches the head
    assert (probs.argmax(axis=0) == np.arange(len(SITE_OF))).all(), probs


# --- real HAM10000 (../shared/data) ---------------------------------------------------------------

REAL = (ROOT / ".." / "shared" / "data").resolve()


@pytest.mark.e2e
@pytest.mark.skipif(not (REAL / "ham10000_metadata.csv").exists(), reason=f"real data not found at {REAL}")
def test_real_ham10000_clinical_arrays(tmp_path):
    """The csv source on HAM10000's own metadata at 28 px: every image's age, sex and site as in
    its CSV row (ages 0-90, NaN exactly where the cell is empty)."""
    import csv

    p = load_params(ROOT / "params.yaml", {
        "model": "cnn", "models.cnn.image_size": 28, "data.source": "csv",
        "data.csv.path": str(REAL / "ham10000_metadata.csv"), "data.csv.images": str(REAL / "ham10000_jpg"),
        "data.csv.id": "image_id", "data.csv.label": "dx", "data.csv.group": "lesion_id",
        "data.csv.clinical": HAM_CLINICAL})
    prepare(p, tmp_path / "prepared", tmp_path / "data.json")
    with open(REAL / "ham10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "prepared" / "skipped.csv", newline="") as f:  # e.g. same-class duplicates
        skipped = {Path(row["path"]).stem for row in csv.DictReader(f)}
    rows = [row for row in rows if row["image_id"] not in skipped]  # the images in the splits
    data = load_prepared(tmp_path / "prepared")
    ages = np.concatenate([s.clinical["age"] for s in data.splits.values()])
    sites = set(np.concatenate([s.clinical["site"] for s in data.splits.values()]).tolist())
    sexes = set(np.concatenate([s.clinical["sex"] for s in data.splits.values()]).tolist())
    assert len(ages) == len(rows)  # every image of the CSV is in a split, or in skipped.csv
    assert np.nanmin(ages) >= 0 and np.nanmax(ages) <= 90
    assert int(np.isnan(ages).sum()) == sum(1 for row in rows if not row["age"].strip())
    assert sites == {row["localization"].strip().lower() or "unknown" for row in rows}
    assert sexes <= {"male", "female", "unknown"}


def test_model_card_grad_cam_examples_are_skipped_for_a_clinical_model(trained):
    from skinsage.report.explanations import explain_examples

    root, _ = trained
    picks = [{"class": "bcc", "correct": {"index": 0, "predicted": "bcc", "confidence": 0.9}, "wrong": None}]
    rows, layer = explain_examples(root / "model.keras", one_image(root), picks, list(SITE_OF))
    assert layer is None and rows == [{"class": "bcc", "correct": None, "wrong": None}]


@pytest.mark.e2e
def test_dvc_exp_run_with_the_csv_source_and_clinical_inputs(tmp_path, capsys):
    """The documented way in: `dvc exp run -S data.source=csv ... -S models.cnn.clinical=[...]` on a
    CSV dataset split by lesion; no lesion crosses splits, the clinical model learns what the site
    decides, and the model it saves predicts from `--clinical`."""
    from dvc_project import copy_project, dvc

    csv_path, images, rows = clinical_dataset(tmp_path / "raw", per_class=30)
    project = copy_project(tmp_path / "project", {  # the training settings of clinical_params: few images
        "data.workers": 1, "train.epochs": 25, "train.batch_size": 16, "train.learning_rate": 0.01,
        "train.lr_schedule": "constant", "train.label_smoothing": 0.0, "models.cnn.dropout": 0.0,
        "evaluate.bootstrap": 0})
    dvc(project, "exp", "run", "-S", "model=cnn", "-S", "data.source=csv", "-S", f"data.csv.path={csv_path}",
        "-S", f"data.csv.images={images}", "-S", "data.csv.id=image_id", "-S", "data.csv.label=dx",
        "-S", "data.csv.group=lesion_id", "-S", "data.csv.clinical={age: age, sex: sex, site: localization}",
        "-S", "models.cnn.clinical=[age, sex, site]", "-S", f"models.cnn.image_size={SIZE}",
        "-S", "models.cnn.filters=[4, 8]")
    data = json.loads((project / "metrics" / "data.json").read_text())
    assert data["groups"]["crossing_splits"] == 0 and sum(data["groups"]["per_split"].values()) == len(rows)
    assert json.loads((project / "metrics" / "eval.json").read_text())["accuracy"] >= 0.9  # the site decides
    code, out, err = run(capsys, "predict", "--model", project / "models" / "model.keras", "--format", "json",
                       "--age", "40", "--sex", "unknown", "--site", "back",
                       images / "ISIC_00000.png")  # a bcc image, said to be on the back
    assert code == 0 and json.loads(out)["predictions"][0]["label"] == "mel", err
