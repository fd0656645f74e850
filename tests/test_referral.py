"""Issue #26: the referral operating point (chosen on validation, recorded, applied by every user of
the model), its figures in `evaluate` (checked against scikit-learn), subgroup figures, and
`skinsage evaluate` on a CSV of labels with clinical columns."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from skinsage.app.cli import main
from skinsage.evaluate.referral import referral_metrics, roc_rows
from skinsage.evaluate.subgroups import subgroup_table
from skinsage.model.referral import (ReferralError, decide, fit_referral, fit_threshold, refer_class_names)
from skinsage.params import ParamsError, SubgroupParams, load_params
from tiny_model import CLASSES, REFERRAL, ROOT, noise, save, save_tiny_model

DEFAULT = load_params(ROOT / "params.yaml")
NAMES = DEFAULT.train.referral.classes

# --- which classes are refer classes ------------------------------------------------------------


@pytest.mark.parametrize("classes, expected", [
    (["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
      "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"],  # DermaMNIST (medmnist.INFO)
     ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "melanoma"]),
    (["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], ["akiec", "bcc", "mel"]),  # HAM10000 codes
    (["AK", "BCC", "BKL", "DF", "MEL", "NV", "SCC", "VASC"], ["AK", "BCC", "MEL", "SCC"]),  # ISIC 2019 one-hot
    (["actinic_keratoses", "basal_cell_carcinoma", "benign_keratosis", "melanocytic_nevi", "melanoma"],
     ["actinic_keratoses", "basal_cell_carcinoma", "melanoma"]),  # folder names (shared/data/ham10000_jpg)
    (["benign", "malignant"], ["malignant"]),  # ISIC 2020
])
def test_default_refer_classes_match_every_source_naming(classes, expected):
    assert refer_class_names(NAMES, classes) == expected


def test_refer_classes_absent_or_all_is_a_clear_error():
    with pytest.raises(ReferralError, match=r"train.referral.classes: none of melanoma, mel, .* is a class "
                                            r"of this data \(its classes: cat, dog\).*train.referral.classes: null"):
        refer_class_names(NAMES, ["cat", "dog"])
    with pytest.raises(ReferralError, match="every class of this data is a refer class"):
        refer_class_names(NAMES, ["mel", "bcc"])


@pytest.mark.parametrize("key, value, message", [
    ("train.referral.target_sensitivity", 0, r"train.referral.target_sensitivity: .* in \(0, 1\]"),
    ("train.referral.target_sensitivity", 1.5, r"train.referral.target_sensitivity"),
    ("train.referral.classes", ["MEL", "mel"], "'mel' and 'MEL' are the same name"),
    ("train.referral.classes", ["--"], "is not a class name"),
    ("evaluate.subgroups.min_images", 0, "evaluate.subgroups.min_images: must be >= 1"),
    ("evaluate.subgroups.age_bands", [60, 30], "evaluate.subgroups.age_bands: ascending"),
])
def test_params_refuse_bad_referral_and_subgroup_settings(key, value, message):
    with pytest.raises(ParamsError, match=message):
        load_params(ROOT / "params.yaml", {key: value})
    assert load_params(ROOT / "params.yaml", {"train.referral.classes": None}).train.referral.classes is None


def test_train_stage_refuses_a_bad_class_name_before_training_but_not_generated_shapes():
    from skinsage.train.operating_point import refer_classes

    folder = load_params(ROOT / "params.yaml", {"data.source": "folder"})
    with pytest.raises(ReferralError, match="none of"):
        refer_classes(folder, ["cat", "dog"])
    shapes = load_params(ROOT / "params.yaml", {"data.source": "synthetic"})
    assert refer_classes(shapes, ["synthetic_circle", "synthetic_square"]) is None
    listed = load_params(ROOT / "params.yaml", {"data.source": "synthetic",
                                                 "train.referral.classes": ["synthetic_circle"]})
    assert refer_classes(listed, ["synthetic_circle", "synthetic_square"]) == ["synthetic_circle"]


# --- the threshold -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.95, 0.9, 0.5, 1.0])
def test_threshold_is_the_highest_that_reaches_the_target_sensitivity(target):
    rng = np.random.default_rng(3)
    positive = rng.random(400) < 0.25
    scores = np.clip(rng.normal(0.3 + 0.3 * positive, 0.15), 0, 1)
    threshold = fit_threshold(scores, positive, target)
    assert (scores[positive] >= threshold).mean() >= target
    higher = np.unique(scores[scores > threshold])
    assert not len(higher) or (scores[positive] >= higher[0]).mean() < target
    # the same point on scikit-learn's ROC: the first (highest) threshold reaching the target
    fpr, tpr, thresholds = skm.roc_curve(positive, scores, drop_intermediate=False)
    assert threshold == thresholds[np.argmax(tpr >= target)]


def test_fit_referral_records_what_it_achieves_on_validation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 300)
    labels = rng.integers(0, 3, 300)
    record = fit_referral(probs, labels, CLASSES, ["melanoma"], 0.9)
    positive = labels == 2
    referred = probs[:, 2] >= record["threshold"]
    assert record["val_sensitivity"] == pytest.approx(skm.recall_score(positive, referred))
    assert record["val_sensitivity"] >= 0.9
    assert record["val_specificity"] == pytest.approx(skm.recall_score(~positive, ~referred))
    assert record["val_refer_images"] == positive.sum() and record["classes"] == ["melanoma"]
    with pytest.raises(ReferralError, match="validation split has no image of the refer classes"):
        fit_referral(probs, np.zeros(300, int), CLASSES, ["melanoma"], 0.9)


def test_decide_sums_the_refer_classes_and_never_says_no_to_an_out_of_distribution_image():
    probs = np.array([[0.5, 0.2, 0.3], [0.1, 0.8, 0.1], [0.1, 0.3, 0.6]])
    record = {"classes": ["benign keratosis", "melanoma"], "threshold": 0.5}
    refer, p = decide(probs, CLASSES, record)
    assert refer == [True, False, True] and p == pytest.approx([0.8, 0.2, 0.7])
    refer, _ = decide(probs, CLASSES, record, ["ok", "out_of_distribution", "uncertain"])
    assert refer == [True, None, True]
    assert decide(probs, CLASSES, None) == ([None] * 3, [None] * 3)


# --- evaluate's figures, against scikit-learn ----------------------------------------------------


def test_referral_metrics_match_scikit_learn_and_the_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 500)
    probs = rng.dirichlet(np.ones(3), 500)
    probs[labels == 2, 2] += 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    record = {"classes": ["melanoma", "benign keratosis"], "threshold": 0.6, "target_sensitivity": 0.95}
    m = referral_metrics(labels, probs, CLASSES, record, bootstrap=200, seed=7)
    positive = np.isin(labels, [0, 2])
    score = probs[:, 0] + probs[:, 2]
    referred = score >= 0.6
    tn, fp, fn, tp = skm.confusion_matrix(positive, referred).ravel()
    assert m["sensitivity"] == pytest.approx(skm.recall_score(positive, referred))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"] == pytest.approx(skm.precision_score(positive, referred))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["referral_rate"] == pytest.approx(referred.mean())
    assert m["auc"] == pytest.approx(skm.roc_auc_score(positive, score))
    assert m["melanoma_sensitivity"] == pytest.approx(referred[labels == 2].mean())
    assert m["refer_images"] == positive.sum() and m["melanoma_images"] == (labels == 2).sum()
    for key in ("sensitivity", "specificity", "ppv", "npv", "referral_rate", "auc", "melanoma_sensitivity"):
        assert m["ci95"][key]["low"] <= m[key] <= m["ci95"][key]["high"], key
        assert m["ci95"][key]["low"] < m["ci95"][key]["high"], key
    assert referral_metrics(labels, probs, CLASSES, record, bootstrap=200, seed=7)["ci95"] == m["ci95"]
    assert referral_metrics(labels, probs, CLASSES, record, bootstrap=200, seed=8)["ci95"] != m["ci95"]
    rows = roc_rows(labels, probs, CLASSES, record)
    point = [r for r in rows if r["curve"] == "operating point"]
    assert len(point) == 1 and point[0]["tpr"] == pytest.approx(m["sensitivity"])
    assert point[0]["fpr"] == pytest.approx(1 - m["specificity"])


def metadata_case(n=600, seed=2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    ages = rng.choice([20.0, 29.9, 30.0, 44.0, 50.0, 65.0, 80.0, np.nan], n)
    sexes = rng.choice(["male", "female", "unknown"], n, p=[0.48, 0.48, 0.04])
    sites = rng.choice(["back", "face", "trunk", "ear"], n, p=[0.45, 0.3, 0.2, 0.05])
    probs = rng.dirichlet(np.ones(3), n)
    probs[labels == 2, 2] += 0.5
    # the face's melanomas are missed: their P(refer) is pushed down
    missed = (labels == 2) & (sites == "face")
    probs[missed, 2] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    return labels, probs, {"age": ages, "sex": sexes, "site": sites}


def test_subgroup_figures_match_scikit_learn_per_group_and_flag_a_clearly_worse_one():
    labels, probs, metadata = metadata_case()
    record = {"classes": ["melanoma"], "threshold": 0.5}
    overall = referral_metrics(labels, probs, CLASSES, record)["sensitivity"]
    table = subgroup_table(labels, probs, CLASSES, metadata, record, SubgroupParams(50, (30, 45, 60, 75)),
                           bootstrap=300, seed=0, overall_sensitivity=overall)
    rows = {(row["field"], row["value"]): row for row in table["rows"]}
    assert [v for f, v in rows if f == "age"] == ["<30", "30-44", "45-59", "60-74", ">=75", "unknown"]
    age = metadata["age"]
    assert rows[("age", "<30")]["images"] == int(((age < 30)).sum())  # 29.9 is below 30, 30.0 is not
    assert rows[("age", "30-44")]["images"] == int(((age >= 30) & (age < 45)).sum())
    assert rows[("age", "unknown")]["images"] == int(np.isnan(age).sum())
    assert ("site", "ear") not in rows and {"field": "site", "value": "ear",
                                            "images": int((metadata["site"] == "ear").sum())} in table["left_out"]
    predicted = probs.argmax(axis=1)
    for (field, value), row in rows.items():
        mask = (np.char.mod("%s", metadata[field]) == value) if field != "age" else None
        if mask is None:
            continue
        positive, referred = labels[mask] == 2, probs[mask, 2] >= 0.5
        assert row["images"] == mask.sum()
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(labels[mask], predicted[mask]))
        assert row["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels[mask], predicted[mask]))
        assert row["sensitivity"] == pytest.approx(skm.recall_score(positive, referred))
        assert row["specificity"] == pytest.approx(skm.recall_score(~positive, ~referred))
        assert row["flagged"] == (row["ci95"]["sensitivity"]["high"] < overall)
    assert rows[("site", "face")]["flagged"] and rows[("site", "face")]["sensitivity"] == 0
    assert not rows[("site", "back")]["flagged"] and not any(rows[k]["flagged"] for k in rows if k[0] == "sex")
    assert subgroup_table(labels, probs, CLASSES, None, record, SubgroupParams(50, (30,))) is None


def test_model_card_lists_the_referral_and_flags_the_subgroup():
    from skinsage.report.model_card import _referral_section, _subgroup_section

    labels, probs, metadata = metadata_case()
    record = {"classes": ["melanoma"], "threshold": 0.5, "target_sensitivity": 0.95}
    referral = referral_metrics(labels, probs, CLASSES, record, bootstrap=100)
    table = subgroup_table(labels, probs, CLASSES, metadata, record, SubgroupParams(50, (30, 60)),
                           bootstrap=100, overall_sensitivity=referral["sensitivity"])
    evaluation = {"referral": referral, "subgroups": table, "val": {"referral": referral}}
    card = _referral_section(evaluation) + _subgroup_section(evaluation)
    assert "P(melanoma) >= **0.5000**" in card and "Melanoma sensitivity" in card
    face = next(line for line in card.splitlines() if line.startswith("| site | face |"))
    assert face.endswith("| **below** |")
    assert "Rule: flagged: the upper end" in card and "site ear" in card


# --- the one inference path: Classifier, predict, evaluate ---------------------------------------


@pytest.fixture(scope="module")
def plain_model_path(tmp_path_factory) -> Path:
    """Without the out-of-distribution detector: these noise images would all be refused, and a
    refused image gets no referral advice (test_an_out_of_distribution_image_gets_no_advice)."""
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.keras", detector=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("photos")
    return [save(Image.fromarray(noise(seed, (20, 20, 3))), root / f"ISIC_{seed:03d}.png") for seed in range(24)]


def test_classifier_predictions_carry_the_recorded_referral(plain_model_path, images):
    from skinsage.app.classifier import Classifier

    clf = Classifier.load(plain_model_path)
    predictions = clf.predict([str(p) for p in images])
    probs = np.array([[p.probabilities[c] for c in CLASSES] for p in predictions])
    assert [p.refer for p in predictions] == list(probs[:, 2] >= REFERRAL["threshold"])
    assert {True, False} <= {p.refer for p in predictions}  # the threshold splits these images
    assert [p.refer_probability for p in predictions] == pytest.approx(probs[:, 2])
    assert set(predictions[0].to_dict()) >= {"refer", "refer_probability"}


def test_an_out_of_distribution_image_gets_no_advice(tmp_path, images):
    """Never "no referral needed" for a picture the model refuses: refer is None, P(refer) stays."""
    from skinsage.app.classifier import Classifier

    clf = Classifier.load(save_tiny_model(tmp_path / "detector.keras"))
    predictions = clf.predict([str(p) for p in images])
    refused = [p for p in predictions if p.status == "out_of_distribution"]
    assert refused, "noise images should be refused by the detector"
    assert all(p.refer is None and p.refer_probability is not None for p in refused)
    assert all(p.refer is not None for p in predictions if p.status != "out_of_distribution")


def test_a_model_without_a_recorded_referral_keeps_working_with_refer_null(tmp_path, images, capsys):
    old = save_tiny_model(tmp_path / "old.keras", referral=None)
    capsys.readouterr()  # the detector fit's log lines, not predict's output
    assert main(["predict", "--model", str(old), "--format", "json", str(images[0])]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["predictions"][0]["refer"] is None and document["predictions"][0]["refer_probability"] is None
    assert "records no referral threshold" in document["referral"]["note"]


def test_info_states_what_the_threshold_achieved_on_validation(tmp_path, capsys):
    """`skinsage info` gives the recorded operating point's validation sensitivity and specificity
    (the error rates a user is told before trusting `refer`); a record without them still prints."""
    fitted = {**REFERRAL, "val_images": 855, "val_refer_images": 166, "val_sensitivity": 0.9518,
              "val_specificity": 0.6413}
    path = save_tiny_model(tmp_path / "fitted.keras", referral=fitted, detector=False)
    capsys.readouterr()
    assert main(["info", "--model", str(path)]) == 0
    assert ("referral:     P(melanoma) >= 0.4350 (target sensitivity 0.95, chosen on validation: there sensitivity "
            "0.952, specificity 0.641 on 855 images, 166 of a refer class)") in capsys.readouterr().out
    bare = save_tiny_model(tmp_path / "bare.keras", referral={**REFERRAL, "val_specificity": "high"}, detector=False)
    capsys.readouterr()
    assert main(["info", "--model", str(bare)]) == 0
    plain = "referral:     P(melanoma) >= 0.4350 (target sensitivity 0.95, chosen on validation)\n"
    assert plain in capsys.readouterr().out


def test_predict_json_csv_and_table_carry_refer(plain_model_path, images, capsys):
    from skinsage.app.classifier import Classifier

    expected = {str(p): Classifier.load(plain_model_path).predict(str(p)) for p in images[:4]}
    assert main(["predict", "--model", str(plain_model_path), "--format", "json", *map(str, images[:4])]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["referral"] == {"classes": ["melanoma"], "threshold": 0.435, "target_sensitivity": 0.95}
    for row in document["predictions"]:
        assert row["refer"] == expected[row["path"]].refer
        assert row["refer_probability"] == pytest.approx(expected[row["path"]].refer_probability)
    assert main(["predict", "--model", str(plain_model_path), "--format", "csv", *map(str, images[:4])]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [row["refer"] for row in rows] == [str(expected[r["path"]].refer).lower() for r in rows]
    assert main(["predict", "--model", str(plain_model_path), "--format", "table", str(images[0])]) == 0
    table = capsys.readouterr().out
    assert "referral: refer when P(melanoma) >= 0.4350" in table
    assert ("yes (P " if expected[str(images[0])].refer else "no (P ") in table


def test_train_stage_fit_matches_what_the_classifier_then_refers(tmp_path):
    """fit_operating_point on validation gives a threshold under which the saved model, run as
    users run it, refers at least the target share of the validation refer images."""
    import keras

    from skinsage.app.classifier import Classifier
    from skinsage.model.architectures import build_cnn
    from skinsage.model.model_file import inference_settings, save_model
    from skinsage.prepared import PreparedData, Split
    from skinsage.train.operating_point import fit_operating_point, refer_classes
    from skinsage.train.trainer import model_metadata
    from tiny_model import tiny_params

    params = tiny_params()
    keras.utils.set_random_seed(0)
    model = build_cnn(3, params.model_params)
    rng = np.random.default_rng(0)
    val = Split(rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), np.repeat(np.arange(3), [14, 14, 12]))
    data = PreparedData(CLASSES, "generated", 16, {"val": val})
    metadata = model_metadata(params, data, {"temperature": 1.7})
    record = fit_operating_point(model, params, data, refer_classes(params, CLASSES), inference_settings(metadata))
    assert record["classes"] == ["melanoma"] and record["val_sensitivity"] >= 0.95
    save_model(model, tmp_path / "m.keras", {**metadata, "referral": record})
    clf = Classifier.load(tmp_path / "m.keras")
    refer = [p.refer for p in clf.predict(list(val.images))]
    assert np.mean([r for r, label in zip(refer, val.labels) if label == 2]) == record["val_sensitivity"]


# --- skinsage evaluate on a CSV of labels ------------------------------------------------------


def ham_csv(path: Path, images: list[Path]) -> Path:
    """HAM10000-style: ids without extension, codes as labels, age/sex/localization columns."""
    codes = ["bkl", "nv", "mel"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "image_id", "dx", "age", "sex", "localization"])
        for i, image in enumerate(images):
            writer.writerow([f"HAM_{i}", image.stem, codes[i % 3], "" if i == 5 else 30 + 2 * i,
                             ("male", "female")[i % 2], ("back", "face")[i // 12]])
    return path


def test_skinsage_evaluate_on_a_csv_with_clinical_columns(model_path, images, tmp_path, capsys):
    from skinsage.app.classifier import Classifier

    labels_csv = ham_csv(tmp_path / "HAM10000_metadata.csv", images)
    args = ["evaluate", "--model", str(model_path), "--data", str(labels_csv), "--images", str(images[0].parent),
            "--id", "image_id", "--label", "dx", "--classes", "bkl=benign keratosis",
            "--classes", "nv=melanocytic nevi", "--classes", "mel=melanoma", "--clinical-column", "age=age",
            "--clinical-column", "sex=sex", "--clinical-column", "site=localization", "--bootstrap", "50"]
    assert main([*args, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    metrics = document["metrics"]
    clf = Classifier.load(model_path)
    # the threshold's decision on every image (a refused image's advice is None, but the figures
    # measure the operating point itself on all labelled images)
    refer = np.array([clf.predict(str(p)).refer_probability >= clf.referral["threshold"] for p in images])
    melanoma = np.arange(len(images)) % 3 == 2
    assert metrics["referral"]["images"] == len(images) and metrics["referral"]["refer_images"] == melanoma.sum()
    assert metrics["referral_sensitivity"] == pytest.approx(refer[melanoma].mean())
    assert metrics["referral_specificity"] == pytest.approx((~refer[~melanoma]).mean())
    sub = {(row["field"], row["value"]): row for row in metrics["subgroups"]["rows"]}
    assert metrics["subgroups"]["min_images"] == 50 and not sub  # 24 images: every group is too small
    assert main([*args, "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert "referral at P(melanoma) >= 0.4350: 24 images, 8 of a refer class" in text
    assert "left out (too few images): age 30-44 (7), age 45-59 (7)" in text and "site face (12)" in text


@pytest.mark.parametrize("extra, message", [
    (["--label", "diagnosis"], "--label: no column 'diagnosis' in"),
    (["--label", "dx"], "class labels the model does not know: bkl, mel, nv"),
    (["--clinical-column", "height=age"], "--clinical-column: unknown key 'height'"),
])
def test_skinsage_evaluate_csv_errors_name_the_option(model_path, images, tmp_path, capsys, extra, message):
    labels_csv = ham_csv(tmp_path / "labels.csv", images)
    code = main(["evaluate", "--model", str(model_path), "--data", str(labels_csv), "--images",
                 str(images[0].parent), "--id", "image_id", *extra])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and message in err and "Traceback" not in err
    code = main(["evaluate", "--model", str(model_path), "--data", str(labels_csv)])
    assert code == 1 and "give the folder of its images with --images DIR" in capsys.readouterr().err


def test_exported_sidecar_carries_the_referral(model_path, tmp_path):
    """The export writes the model's metadata (referral included) beside the file, and the runtime
    adapter is run by Classifier, so the same `decide` applies."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from skinsage.app.classifier import Classifier
    from skinsage.export.convert import export_model
    from skinsage.model.model_file import load_model

    model, metadata = load_model(model_path)
    result = export_model(model, metadata, tmp_path / "m.onnx", "onnx", source=str(model_path))
    assert json.loads(result.sidecar.read_text())["referral"] == REFERRAL
    exported, keras_clf = Classifier.load(result.path), Classifier.load(model_path)
    image = noise(4, (16, 16, 3))
    a, b = exported.predict(image), keras_clf.predict(image)
    assert a.refer == b.refer and a.refer_probability == pytest.approx(b.refer_probability, abs=1e-4)
    assert not math.isnan(a.refer_probability)
