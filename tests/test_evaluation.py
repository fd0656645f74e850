"""Metrics against hand-computed answers and scikit-learn / MedMNIST; the evaluate stage's files."""

import ast
import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from skinsage.contracts.evaluation import EVALUATION_FILES, HEADLINE_KEYS, json_safe, read_rows
from skinsage.evaluate.curves import calibration_bins
from skinsage.evaluate.outputs import write_evaluation
from skinsage.evaluate.scoring import evaluate_split
from skinsage.prepared import Split
from skinsage.evaluate.metrics import (SUMMARY_KEYS, bootstrap_ci, brier_score, confusion, evaluate_predictions,
                                       expected_calibration_error, medmnist_auc, rank_macro_auc)
from skinsage.params import ParamsError, load_params

NAMES3 = ["alpha", "beta", "gamma"]


def probs_for(predicted, num_classes, top=0.8):
    """Probabilities putting `top` on each predicted class and the rest evenly on the others."""
    probs = np.full((len(predicted), num_classes), (1 - top) / (num_classes - 1))
    probs[np.arange(len(predicted)), predicted] = top
    return probs


def random_case(n=300, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_perfect_predictions():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    m = evaluate_predictions(y, np.eye(3)[y], NAMES3)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auc_macro_ovr",
                "cohen_kappa", "top2_accuracy"):
        assert m[key] == pytest.approx(1.0), key
    assert m["ece"] == pytest.approx(0.0) and m["brier"] == pytest.approx(0.0)
    assert m["loss"] < 1e-6 and m["num_images"] == 7
    assert set(SUMMARY_KEYS) <= set(m) and "ci95" not in m
    for stats in m["per_class"].values():
        assert stats["precision"] == stats["recall"] == stats["specificity"] == stats["f1"] == 1.0
        assert stats["auc"] == stats["average_precision"] == 1.0


def test_always_the_majority_class():
    # 60% class 0: constant probabilities always say class 0
    y = np.array([0] * 6 + [1] * 3 + [2])
    probs = np.tile([0.6, 0.3, 0.1], (10, 1))
    m = evaluate_predictions(y, probs, NAMES3)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert m["cohen_kappa"] == pytest.approx(0.0)
    assert m["macro_f1"] == pytest.approx(0.75 / 3)  # class 0: precision 0.6, recall 1
    assert m["auc_macro_ovr"] == pytest.approx(0.5)  # constant scores rank nothing
    assert m["top2_accuracy"] == pytest.approx(0.9)
    c0, c1 = m["per_class"]["alpha"], m["per_class"]["beta"]
    assert (c0["recall"], c0["specificity"]) == (1.0, 0.0)
    assert (c1["precision"], c1["recall"], c1["specificity"]) == (0.0, 0.0, 1.0)
    assert [m["per_class"][n]["support"] for n in NAMES3] == [6, 3, 1]


def test_known_confusion():
    y = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    m = evaluate_predictions(y, probs_for(predicted, 3), NAMES3)
    assert confusion(y, predicted, NAMES3)["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["cohen_kappa"] == pytest.approx(0.5)  # p_o = 2/3, p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3
    per = m["per_class"]
    assert [per[n]["precision"] for n in NAMES3] == pytest.approx([1, 1 / 2, 1 / 2])
    assert [per[n]["recall"] for n in NAMES3] == pytest.approx([2 / 3, 1 / 2, 1])
    assert [per[n]["specificity"] for n in NAMES3] == pytest.approx([1, 3 / 4, 4 / 5])
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))


def test_ece_hand_case():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    # bins: {0.9 right, 0.9 wrong} gap 0.4 (x2), {0.7 right} gap 0.3, {0.6 right} gap 0.4
    for bins in (10, 15):
        assert expected_calibration_error(y, probs, bins) == pytest.approx((2 * 0.4 + 0.3 + 0.4) / 4)
    rows = calibration_bins(y, probs, 10)
    assert [(r["count"], r["accuracy"]) for r in rows] == [(1, 1.0), (1, 1.0), (2, 0.5)]
    assert [r["confidence"] for r in rows] == pytest.approx([0.6, 0.7, 0.9])


def test_brier_hand_case():
    y = np.array([0, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    # (0.3² + 0.2² + 0.1²) = 0.14 and (0.2² + 0.5² + 0.7²) = 0.78
    assert brier_score(y, probs) == pytest.approx((0.14 + 0.78) / 2)
    # the same [0, 2] scale for two classes (scikit-learn would halve it)
    assert brier_score(np.array([0]), np.array([[0.0, 1.0]])) == pytest.approx(2.0)


def _medmnist_get_auc():
    """medmnist.evaluator.getAUC's own source; its module imports pandas, which is not installed."""
    source = Path(importlib.util.find_spec("medmnist").origin).with_name("evaluator.py").read_text()
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "getAUC")
    namespace = {"np": np, "roc_auc_score": skm.roc_auc_score}
    exec(compile(ast.Module([function], type_ignores=[]), "medmnist/evaluator.py", "exec"), namespace)
    return namespace["getAUC"]


def test_macro_auc_is_medmnist_get_auc():
    get_auc = _medmnist_get_auc()
    for seed in range(3):
        y, probs = random_case(seed=seed)
        probs = np.round(probs, 2)  # ties
        expected = get_auc(y[:, None], probs, "multi-class")
        assert medmnist_auc(y, probs) == pytest.approx(expected, abs=1e-12)
        assert rank_macro_auc(y, probs) == pytest.approx(expected, abs=1e-12)


def test_class_absent_from_labels_has_no_auc_and_writes_null():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    m = evaluate_predictions(y, probs, NAMES3)
    assert math.isnan(m["per_class"]["gamma"]["auc"])
    assert m["auc_macro_ovr"] == pytest.approx(np.mean([skm.roc_auc_score(y == c, probs[:, c])
                                                        for c in (0, 1)]))
    assert json_safe(m)["per_class"]["gamma"]["auc"] is None


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    y, probs = random_case(n=400, classes=4, seed=3)
    m = evaluate_predictions(y, probs, list("abcd"), bootstrap=300, seed=7)
    for key, ci in m["ci95"].items():
        assert ci["low"] < m[key] < ci["high"], key
        assert ci["high"] - ci["low"] < 0.2
    assert bootstrap_ci(y, probs, 300, seed=7) == m["ci95"]
    assert bootstrap_ci(y, probs, 300, seed=8) != m["ci95"]


def test_params_reject_negative_bootstrap(tmp_path):
    with pytest.raises(ParamsError, match="evaluate.bootstrap"):
        load_params("params.yaml", {"evaluate.bootstrap": -1})
    assert load_params("params.yaml", {"evaluate.bootstrap": 0}).evaluate.bootstrap == 0


class FixedModel:
    """Stands in for a Keras model: `predict` returns stored (unnormalised float32) scores."""

    def __init__(self, probs):
        self.probs = probs

    def predict_on_batch(self, images):
        """The probabilities of the images whose first pixel holds their index (unnormalised,
        as float32: the inference path must renormalise)."""
        return (self.probs[images[:, 0, 0, 0]] * 3).astype(np.float32)


def test_evaluate_split_and_written_files(tmp_path):
    y, probs = random_case(n=120, classes=3, seed=5)
    images = np.zeros((120, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(120)
    split = Split(images=images, labels=y)
    metrics, matrix, got = evaluate_split(FixedModel(probs), split, NAMES3, 32, tta="none")
    assert np.allclose(got, probs, atol=1e-6) and "ci95" not in metrics
    metrics, matrix, got = evaluate_split(FixedModel(probs), split, NAMES3, 32, tta="none", bootstrap=50,
                                          seed=1)
    val, _, _ = evaluate_split(FixedModel(probs[:60]), Split(split.images[:60], y[:60]), NAMES3, 32,
                               tta="none")
    write_evaluation(tmp_path, metrics, val, matrix, y, got, NAMES3, model_type="cnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EVALUATION_FILES)

    headline = json.loads((tmp_path / "eval.json").read_text())  # the DVC metrics: few, named first
    assert list(headline) == ["model_type", *HEADLINE_KEYS, "val"] and headline["model_type"] == "cnn"
    assert list(headline["val"]) == list(HEADLINE_KEYS)
    assert headline["val"]["accuracy"] == pytest.approx(np.mean(probs[:60].argmax(1) == y[:60]))
    summary = json.loads((tmp_path / "eval_full.json").read_text())
    assert all(summary[key] == headline[key] for key in HEADLINE_KEYS)
    assert "per_class" not in summary and summary["val"]["num_images"] == 60
    assert set(summary) == {*SUMMARY_KEYS, "ci95", "val"}
    assert all(isinstance(v, (int, float)) for k, v in summary.items() if k not in ("ci95", "val"))
    assert summary["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    per_class = json.loads((tmp_path / "per_class.json").read_text())
    assert list(per_class) == NAMES3
    assert json.loads((tmp_path / "confusion.json").read_text())["classes"] == NAMES3

    roc = read_rows(tmp_path / "roc.csv")
    assert {r["class"] for r in roc} == set(NAMES3)
    fpr, tpr, _ = skm.roc_curve(y == 1, got[:, 1])
    beta = [r for r in roc if r["class"] == "beta"]
    assert [r["fpr"] for r in beta] == pytest.approx(fpr, abs=1e-6)
    assert [r["tpr"] for r in beta] == pytest.approx(tpr, abs=1e-6)
    pr = [r for r in read_rows(tmp_path / "precision_recall.csv") if r["class"] == "beta"]
    recall = [r["recall"] for r in pr]
    assert recall == sorted(recall) and recall[0] == 0 and recall[-1] == 1
    assert sum(r["count"] for r in read_rows(tmp_path / "calibration.csv")) == 120
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and rows[0]["actual"] == NAMES3[y[0]]
