"""The plot stage: every figure and the model card from evaluate's files, and the real DVC commands."""

import csv
import json
import re

import numpy as np
import pytest
from dvclive import Live
import yaml
from PIL import Image

from skinsage.evaluate.outputs import write_evaluation
from skinsage.fileio import write_json
from skinsage.params import load_params
from skinsage.prepared import PreparedData, Split, count_summary, save_prepared
from skinsage.contracts.evaluation import read_rows
from skinsage.report.charts import answered_point, pixel_size, select_examples
from skinsage.contracts.training import best_epoch
from skinsage.report.render import PLOT_FILES, render_all
from skinsage.contracts.history import read_history

DERMA_NAMES = ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
               "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
               "vascular lesions"]
SHAPES = ["circle", "square", "triangle", "cross"]
PNG_KINDS = ("training_curves", "confusion_matrix", "roc_pr_curves", "reliability_diagram", "test_examples",
             "gradcam_examples", "referral_roc", "risk_coverage")


def fake_run(root, class_names, dataset, per_class=8, phases=False):
    """What prepare, train and evaluate leave behind: lesion-like test images and a few noise ones,
    a tiny random-weight model with train's detector and thresholds, evaluate's real output of it
    (statuses included), a short history."""
    from tiny_model import lesion_like, noise, save_tiny_model

    from skinsage.evaluate.scoring import evaluate_split
    from skinsage.model.model_file import decision_settings, load_model
    n = len(class_names)
    splits = {}
    for i, name in enumerate(("train", "val", "test")):
        labels = np.repeat(np.arange(n), per_class)
        images = lesion_like(len(labels), 28, seed=10 + i)
        images[::per_class] = [noise(k, (28, 28, 3)) for k in range(n)]  # one per class: not a lesion
        splits[name] = Split(images, labels)
    data = PreparedData(class_names, dataset, 28, splits)
    save_prepared(root / "data" / "prepared", data, extra_info={"source": "test"})
    metrics_dir = root / "metrics"
    write_json(metrics_dir / "data.json", {"splits": count_summary(data)})
    save_tiny_model(root / "models" / "model.keras", classes=class_names, size=28)
    model, metadata = load_model(root / "models" / "model.keras")
    run = {"tta": "none", "temperature": 1.0, "decision": decision_settings(metadata)}
    test, matrix, probs = evaluate_split(model, splits["test"], class_names, 32, bootstrap=20, seed=0, **run)
    val, _, _ = evaluate_split(model, splits["val"], class_names, 32, **run)
    val.pop("per_image")
    write_evaluation(metrics_dir, test, val, matrix, splits["test"].labels, probs, class_names,
                     per_image=test.pop("per_image"))
    with Live(str(root / "dvclive"), dvcyaml=None, save_dvc_exp=False) as live:  # as `train` logs
        for epoch in range(1, 7):
            live.log_metric("phase", ("head" if epoch <= 3 else "fine_tune") if phases else "train")
            for name, value in (("train/loss", 1.5 / epoch), ("train/accuracy", 0.4 + 0.05 * epoch),
                                ("eval/loss", 1.6 / epoch + 0.02 * epoch), ("eval/accuracy", 0.35 + 0.04 * epoch)):
                live.log_metric(name, value)
            live.next_step()
    write_json(metrics_dir / "train_full.json", {"epochs_run": 6, "best_epoch": 5, "stopped_early": False})
    return load_params("params.yaml", {"evaluate.bootstrap": 20})


@pytest.mark.parametrize("class_names, dataset", [
    (SHAPES, "synthetic shapes (4 classes, generated, not skin images)"),
    (DERMA_NAMES, "MedMNIST dermamnist (28 px, official split)"),
])
def test_plot_stage_writes_every_figure_at_its_size_and_the_model_card(tmp_path, class_names, dataset):
    params = fake_run(tmp_path, class_names, dataset, phases=len(class_names) == 7)
    render_all(params, tmp_path / "data" / "prepared", tmp_path / "metrics", tmp_path / "plots",
               tmp_path / "dvclive", model_path=tmp_path / "models" / "model.keras")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(PLOT_FILES)
    for kind in PNG_KINDS:
        with Image.open(tmp_path / "plots" / f"{kind}.png") as image:
            assert image.format == "PNG" and image.mode == "RGBA"
            assert image.size == pixel_size(kind, len(class_names)), kind
            assert image.size[0] >= 700 and image.size[1] >= 450
            image.load()  # decodes fully: not truncated

    card = (tmp_path / "plots" / "report.md").read_text()
    evaluation = json.loads((tmp_path / "metrics" / "eval_full.json").read_text())
    for heading in ("## Data", "## Model and parameters", "## Results", "## Figures", "## Intended use",
                    "## Limits of the data"):
        assert heading in card
    assert "Not for clinical decisions" in card
    for kind in PNG_KINDS:
        assert f"]({kind}.png)" in card
    ci = evaluation["ci95"]["accuracy"]
    assert f"| Accuracy | {evaluation['accuracy']:.3f} | {ci['low']:.3f} – {ci['high']:.3f} |" in card
    assert all(name.replace("_", " ") in card for name in class_names)
    assert "`train.learning_rate`" in card and "`evaluate.bootstrap` | `20`" in card
    _assert_status_section(card, evaluation, tmp_path / "metrics" / "predictions.csv",
                           read_rows(tmp_path / "metrics" / "risk_coverage.csv"))
    if len(class_names) == 7:
        assert "HAM10000" in card and "CC BY-NC 4.0" in card and "Dermatoscopic images only" in card
    else:
        assert "generated shapes, not skin images" in card and "HAM10000" not in card


def _assert_status_section(card: str, evaluation: dict, predictions_csv, curve: list[dict]) -> None:
    """The card shows evaluate's status figures, which are those of predictions.csv's statuses; the
    figure's marked point answers exactly the test images at or above the uncertain threshold."""
    with open(predictions_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    status = np.array([row["status"] for row in rows])
    correct = np.array([row["actual"] == row["predicted"] for row in rows])
    confidence = np.array([float(row["confidence"]) for row in rows])
    assert set(status) == {"ok", "uncertain", "out_of_distribution"}  # lesion-like, less sure, and noise
    assert "## Knowing when not to answer" in card
    for name in ("ok", "uncertain", "out_of_distribution"):
        assert evaluation[f"share_{name}"] == pytest.approx(np.mean(status == name))
        assert re.search(rf"\| share `{name}` [^|]* \| {np.mean(status == name):.3f} \| ", card), name
    assert evaluation["accuracy_ok"] == pytest.approx(correct[status == "ok"].mean())
    assert f"| accuracy on the `ok` images | {correct[status == 'ok'].mean():.3f} |" in card
    assert f"| accuracy on all images | {correct.mean():.3f} |" in card
    assert f"| {evaluation['aurc']:.4f} |" in card
    ood, uncertain = evaluation["decision"]["ood"], evaluation["decision"]["uncertain"]
    assert f"**{ood['threshold']:.4g}**" in card and f"keeps {ood['retain']:.0%} of the validation" in card
    assert f"**{uncertain['threshold']:.4f}**" in card and f"answers {uncertain['coverage']:.0%}" in card
    point = answered_point(curve, uncertain["threshold"])
    answered = confidence >= uncertain["threshold"]
    assert point["coverage"] == pytest.approx(answered.mean())
    assert point["accuracy"] == pytest.approx(correct[answered].mean(), abs=1e-6)
    assert curve[-1]["coverage"] == 1 and curve[-1]["accuracy"] == pytest.approx(correct.mean(), abs=1e-6)


def test_dvclive_history_is_read_with_its_phases(tmp_path):
    fake_run(tmp_path, SHAPES, "x", phases=True)
    rows = read_history(tmp_path / "dvclive")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[1]["loss"] == pytest.approx(1.5 / 2) and rows[5]["val_accuracy"] == pytest.approx(0.35 + 0.24)
    assert [row["phase"] for row in rows] == ["head"] * 3 + ["fine_tune"] * 3
    # the epoch train_full.json records (Keras' EarlyStopping's), never re-derived from the history
    assert best_epoch({"best_epoch": 5}, len(rows)) == 5
    assert best_epoch({}, len(rows)) is None and best_epoch({"best_epoch": 7}, len(rows)) is None


def test_example_grid_shows_most_confident_mistakes_and_fills_rows():
    predictions = [{"index": i, "actual": "a", "predicted": p, "confidence": c}
                   for i, (p, c) in enumerate([("b", 0.6), ("b", 0.9), ("a", 0.7), ("c", 0.8),
                                               ("b", 0.5), ("a", 0.95)])]
    predictions.append({"index": 6, "actual": "b", "predicted": "a", "confidence": 0.99})
    rows = select_examples(predictions, ["a", "b", "c"], per_row=4, seed=0)
    assert [p["index"] for p in rows[0][2:]] == [1, 3]  # the two most confident of four mistakes
    assert {p["index"] for p in rows[0][:2]} == {2, 5}  # both correct ones
    assert [p["index"] for p in rows[1]] == [6] and rows[2] == []
    assert select_examples(predictions, ["a", "b", "c"], 4, seed=0) == rows  # seeded


# --- the real `dvc repro` / `dvc plots show` on a throw-away copy -----------------------------------

@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    from dvc_project import TINY_SYNTHETIC, copy_project, dvc
    project = copy_project(tmp_path_factory.mktemp("plots") / "project",
                           {**TINY_SYNTHETIC, "evaluate.bootstrap": 50})
    dvc(project, "repro")
    return project


def _declared(stage: dict, section: str) -> list[str]:
    return [next(iter(item)) if isinstance(item, dict) else item for item in stage.get(section, [])]


@pytest.mark.e2e
def test_dvc_repro_writes_every_declared_evaluate_and_plot_output(repro):
    pipeline = yaml.safe_load((repro / "dvc.yaml").read_text())
    for stage in ("evaluate", "plot"):
        for section in ("outs", "metrics", "plots"):
            for path in _declared(pipeline["stages"][stage], section):
                assert (repro / path).is_file() and (repro / path).stat().st_size > 0, path
    summary = json.loads((repro / "metrics" / "eval_full.json").read_text())
    assert {"ci95", "val", "auc_macro_ovr", "ece", "brier", "cohen_kappa", "top2_accuracy"} <= set(summary)
    for kind in PNG_KINDS:
        with Image.open(repro / "plots" / f"{kind}.png") as image:
            assert image.size == pixel_size(kind, 3)


@pytest.mark.e2e
def test_dvc_plots_show_renders_every_plot(repro, tmp_path):
    from dvc_project import dvc
    dvc(repro, "plots", "show", "--out", str(tmp_path / "html"))
    html = (tmp_path / "html" / "index.html").read_text()
    pipeline = yaml.safe_load((repro / "dvc.yaml").read_text())
    names = [path for stage in pipeline["stages"].values() for path in _declared(stage, "plots")]
    names += [next(iter(item)) for item in pipeline["plots"]]
    for name in names:
        assert name in html or re.sub(r"[^a-zA-Z0-9]", "_", name) in html, name
    assert len(list((tmp_path / "html" / "static").glob("*.png"))) == len(PNG_KINDS)
    shown = json.loads(dvc(repro, "metrics", "show", "--json").stdout)
    files = {name for entry in shown.values() for name in entry.get("data", {})}
    assert files == {"metrics/eval.json", "metrics/train.json", "dvclive/metrics.json"}  # counts are not metrics


@pytest.mark.e2e
def test_dvc_exp_show_leads_with_the_model_and_accuracy_in_few_columns(repro):
    from dvc_project import dvc
    header = dvc(repro, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    params_start = next(i for i, column in enumerate(header) if column in ("seed", "model", "params.yaml:model"))
    metrics = header[header.index("parent") + 1:params_start]
    # 25, plus the referral sensitivity and specificity (#26) and share_ok and accuracy_ok (#25) of test and val
    assert metrics[:3] == ["model_type", "accuracy", "balanced_accuracy"] and len(metrics) <= 33, metrics
    assert {"share_ok", "accuracy_ok"} <= set(metrics)
    assert not any(column.startswith(("splits.", "duplicates.", "num_classes", "synthetic_")) for column in header)
    # In a terminal `dvc exp show` pages the whole table through `less -RS`: the first screen is
    # its left 80 columns. Rendered that wide here, they must name the run, the model and accuracy.
    table = dvc(repro, "exp", "show", "--no-pager", extra_env={"COLUMNS": "4000"}).stdout.splitlines()
    first_screen = [line[:80] for line in table]
    assert all(word in first_screen[1] for word in ("Experiment", "model_type", "accuracy"))
    assert any("workspace" in line and "cnn" in line for line in first_screen)
