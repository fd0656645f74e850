"""Static figures (PNG) for people; DVC renders its own interactive plots from the CSV/JSON files.

Every figure has a fixed canvas (FIGURE_SIZES at DPI) so its pixel size is known in advance; class
names are wrapped, never overlapped; colours are the colour-blind-safe Okabe-Ito set and nothing is
told by colour alone (errors also get ✗ and a thick frame).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..contracts.evaluation import by_class, format_value  # noqa: E402
from ..fileio import atomic_path  # noqa: E402

DPI = 100
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
ERROR_COLOUR, CORRECT_COLOUR = "#D55E00", "#0072B2"
LINESTYLES = ("-", "--", "-.", ":")
GRID_COLUMNS = 6


def figure_size(kind: str, num_classes: int) -> tuple[float, float]:
    """Inches of each figure; times DPI gives the PNG's pixel size."""
    side = max(4.5, 0.9 * num_classes + 2.0)
    return {
        "training_curves": (12.0, 4.8),
        "confusion_matrix": (2 * side + 2.5, side + 1.6),
        "roc_pr_curves": (12.0, 7.5),
        "reliability_diagram": (7.0, 7.5),
        "test_examples": (GRID_COLUMNS * 1.9 + 2.2, num_classes * 2.2 + 1.0),
        "gradcam_examples": (4 * 2.1 + 2.6, num_classes * 2.3 + 1.6),
        "referral_roc": (7.0, 7.0),
        "risk_coverage": (7.0, 7.5),
    }[kind]


def pixel_size(kind: str, num_classes: int) -> tuple[int, int]:
    width, height = figure_size(kind, num_classes)
    return round(width * DPI), round(height * DPI)


def wrap(name: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(name.replace("_", " "), width)) or name


def class_style(i: int) -> dict:
    colours = OKABE_ITO if i < len(OKABE_ITO) else plt.get_cmap("tab20").colors
    return {"color": colours[i % len(colours)], "linestyle": LINESTYLES[(i // 2) % len(LINESTYLES)]}


def _figure(kind: str, num_classes: int = 0, **kwargs):
    return plt.figure(figsize=figure_size(kind, num_classes), dpi=DPI, layout="constrained", **kwargs)


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")  # no bbox "tight": the canvas size stays fixed
    plt.close(fig)


def plot_training_curves(history: list[dict], path: str | Path, title: str,
                         best_epoch: int | None = None) -> None:
    """Loss and accuracy per epoch; the best (restored) epoch and, when the history has a `phase`
    column (head, then fine-tuning), the phase boundary are marked."""
    epochs = np.arange(1, len(history) + 1)  # rows in order; robust to per-phase epoch numbering
    fig = _figure("training_curves")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label, style in ((metric, "train", "o-"), (f"val_{metric}", "validation", "s-")):
            values = [row.get(key, np.nan) for row in history]
            ax.plot(epochs, values, style, markersize=4, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="#555555", linestyle=":", linewidth=1.5,
                       label=f"best epoch ({best_epoch})")
        _mark_phases(ax, history, epochs)
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.margins(x=0.04)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    _save(fig, path)


def _mark_phases(ax, history: list[dict], epochs: np.ndarray) -> None:
    """Shade every phase after the first (e.g. fine-tuning after the frozen head), named in the legend."""
    phases = [str(row.get("phase", "")) for row in history]
    starts = [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(phases)
        ax.axvspan(epochs[start] - 0.5, epochs[end - 1] + 0.5, color="#888888", alpha=0.12 + 0.08 * k,
                   linewidth=0, label=f"phase {phases[start]} (from epoch {epochs[start]})")
    if starts:
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: str | Path,
                          title: str) -> None:
    counts = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    n = len(class_names)
    names = [wrap(name, 16) for name in class_names]
    fig = _figure("confusion_matrix", n)
    axes = fig.subplots(1, 2)
    for ax, values, subtitle, fmt in ((axes[0], counts, "counts", "d"),
                                      (axes[1], normalized, "row-normalised (recall per class)", ".2f")):
        shade = values / values.max() if values.max() else values
        ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), names, rotation=90, fontsize=9)
        ax.set_yticks(range(n), names, fontsize=9)
        ax.set(xlabel="predicted", ylabel="actual", title=subtitle)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center",
                        fontsize=10 if n <= 8 else 7, color="white" if shade[i, j] > 0.5 else "black")
    fig.suptitle(title)
    _save(fig, path)


def plot_roc_pr_curves(roc: list[dict], precision_recall: list[dict], per_class: dict,
                       path: str | Path, title: str) -> None:
    """One-vs-rest ROC (left) and precision-recall (right) per class, one shared legend."""
    class_names = list(per_class)
    fig = _figure("roc_pr_curves", len(class_names))
    roc_ax, pr_ax = fig.subplots(1, 2)
    roc_by, pr_by = by_class(roc), by_class(precision_recall)
    for i, name in enumerate(class_names):
        if name not in roc_by:
            continue  # absent from the test split: no curve
        style, stats = class_style(i), per_class[name]
        label = (f"{wrap(name, 30)}\nAUC {format_value(stats.get('auc'))} · "
                 f"AP {format_value(stats.get('average_precision'))}")
        roc_ax.plot([r["fpr"] for r in roc_by[name]], [r["tpr"] for r in roc_by[name]], linewidth=1.8,
                    label=label, **style)
        pr_ax.plot([r["recall"] for r in pr_by[name]], [r["precision"] for r in pr_by[name]],
                   linewidth=1.8, **style)
    roc_ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
    roc_ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
               title="ROC, one class vs rest")
    pr_ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(4, len(class_names) + 1), fontsize=9,
               frameon=False)
    fig.suptitle(title)
    _save(fig, path)


def plot_reliability_diagram(bins: list[dict], ece: float | None, num_bins: int, path: str | Path,
                             title: str, before: tuple[list[dict], float | None, float] | None = None) -> None:
    """Accuracy per confidence bin against the diagonal of perfect calibration, counts below.
    `before` = (bins, ECE, T) before temperature scaling: drawn as a second curve."""
    fig = _figure("reliability_diagram")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    width = 1.0 / num_bins
    lowers = [b["lower"] for b in bins]
    centres = [b["lower"] + width / 2 for b in bins]
    top.bar(lowers, [b["accuracy"] for b in bins], width=width, align="edge", color=CORRECT_COLOUR,
            alpha=0.8, edgecolor="white", label="accuracy in bin")
    top.vlines(centres, [b["accuracy"] for b in bins], [b["confidence"] for b in bins],
               color=ERROR_COLOUR, linewidth=2)
    top.plot(centres, [b["confidence"] for b in bins], "D", color=ERROR_COLOUR, markersize=6,
             label="mean confidence in bin (gap = miscalibration)")
    top.plot([0, 1], [0, 1], color="#333333", linestyle="--", linewidth=1, label="perfect calibration")
    heading = f"expected calibration error {format_value(ece)} ({num_bins} bins)"
    if before is not None:
        old_bins, old_ece, temperature = before
        top.plot([b["confidence"] for b in old_bins], [b["accuracy"] for b in old_bins], "o-",
                 color="#888888", markersize=4, linewidth=1,
                 label="before temperature scaling (accuracy at mean confidence)")
        heading = (f"expected calibration error {format_value(old_ece)} -> {format_value(ece)} "
                   f"with temperature {temperature:.2f} ({num_bins} bins)")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=heading)
    top.legend(loc="upper left", fontsize=9)
    top.grid(alpha=0.3)
    bottom.bar(lowers, [b["count"] for b in bins], width=width, align="edge", color="#777777",
               edgecolor="white")
    bottom.set(xlabel="confidence (probability of the predicted class)", ylabel="images")
    bottom.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def plot_prediction_grid(images: np.ndarray, predictions: list[dict], class_names: list[str],
                         path: str | Path, title: str, seed: int = 0) -> None:
    """Test images, one row per true class: correct predictions (random) on the left, then the most
    confident mistakes, each titled with the predicted class and its probability."""
    n = len(class_names)
    fig = _figure("test_examples", n)
    axes = np.atleast_2d(fig.subplots(n, GRID_COLUMNS, squeeze=False))
    rows = select_examples(predictions, class_names, GRID_COLUMNS, seed)
    for r, (name, picks) in enumerate(zip(class_names, rows)):
        for c, ax in enumerate(axes[r]):
            if c >= len(picks):
                ax.axis("off")
                continue
            _draw_example(ax, images[picks[c]["index"]], picks[c])
        axes[r][0].set_ylabel(wrap(name, 16), fontsize=9, rotation=0, ha="right", va="center",
                              labelpad=8)
        if not picks:
            axes[r][0].axis("on")
            axes[r][0].set(xticks=[], yticks=[], frame_on=False)
            axes[r][0].text(0.5, 0.5, "no test images", ha="center", va="center", fontsize=8)
    fig.suptitle(f"{title}\nrows: true class · ✓ correct · ✗ misclassified as … (framed; most "
                 "confident mistakes) · in brackets: probability of the predicted class", fontsize=11)
    _save(fig, path)


def _draw_example(ax, image: np.ndarray, pick: dict) -> None:
    wrong = pick["predicted"] != pick["actual"]
    ax.imshow(image, interpolation="nearest" if image.shape[0] < 64 else "antialiased")
    ax.set(xticks=[], yticks=[])
    label = f"✗ {wrap(pick['predicted'], 20)}" if wrong else "✓ correct"
    ax.set_title(f"{label} ({pick['confidence']:.2f})", fontsize=8,
                 color=ERROR_COLOUR if wrong else CORRECT_COLOUR)
    for spine in ax.spines.values():
        spine.set(color=ERROR_COLOUR if wrong else "#BBBBBB", linewidth=4 if wrong else 1)


def select_examples(predictions: list[dict], class_names: list[str], per_row: int,
                    seed: int) -> list[list[dict]]:
    """Per true class: up to half the row of mistakes (most confident first), the rest correct
    (seeded random); either side fills in when the other runs short."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in class_names:
        mine = [p for p in predictions if p["actual"] == name]
        wrong = sorted((p for p in mine if p["predicted"] != name), key=lambda p: -p["confidence"])
        right = [p for p in mine if p["predicted"] == name]
        right = [right[i] for i in rng.permutation(len(right))]
        n_wrong = min(len(wrong), max(per_row // 2, per_row - len(right)))
        n_right = min(len(right), per_row - n_wrong)
        rows.append(right[:n_right] + wrong[:n_wrong])
    return rows


def plot_gradcam_examples(rows: list[dict], path: str | Path, title: str, layer: str | None = None) -> None:
    """Per true class: a correct test image and the most confident mistake, each beside its Grad-CAM
    overlay for the class the model predicted (from report.explanations.explain_examples)."""
    fig = _figure("gradcam_examples", len(rows))
    axes = np.atleast_2d(fig.subplots(len(rows), 4, squeeze=False))
    headers = ("correct", "Grad-CAM", "most confident mistake", "Grad-CAM")
    for r, row in enumerate(rows):
        for c, kind in enumerate(("correct", "wrong")):
            _draw_gradcam_pair(axes[r][2 * c], axes[r][2 * c + 1], row[kind], kind == "wrong")
        axes[r][0].set_ylabel(wrap(row["class"], 16), fontsize=9, rotation=0, ha="right", va="center",
                              labelpad=8)
    for ax, header in zip(axes[0], headers):
        ax.text(0.5, 1.25, header, transform=ax.transAxes, ha="center", va="bottom", fontsize=9,
                fontweight="bold")
    where = f" of {layer}" if layer else ""
    fig.suptitle(f"{title}\nrows: true class · heat map{where} for the predicted class (red = most "
                 "evidence) · in brackets: its probability", fontsize=11)
    _save(fig, path)


def _draw_gradcam_pair(image_ax, map_ax, drawn: dict | None, wrong: bool) -> None:
    for ax in (image_ax, map_ax):
        ax.set(xticks=[], yticks=[])
    if drawn is None:
        map_ax.axis("off")
        image_ax.set(frame_on=False)
        image_ax.text(0.5, 0.5, "no mistakes" if wrong else "none correct", ha="center", va="center",
                      fontsize=8, transform=image_ax.transAxes)
        return
    pick = drawn["pick"]
    _draw_example(image_ax, drawn["image"], pick)
    map_ax.imshow(drawn["overlay"], interpolation="antialiased")
    map_ax.set_title(f"map: {wrap(pick['predicted'], 20)}", fontsize=8,
                     color=ERROR_COLOUR if wrong else CORRECT_COLOUR)


def plot_referral_roc(rows: list[dict], referral: dict | None, path: str | Path, title: str) -> None:
    """The ROC of P(refer) with the recorded operating point marked; a note when there is none."""
    fig = _figure("referral_roc")
    ax = fig.subplots()
    curve = [row for row in rows if row["curve"] == "ROC"]
    point = next((row for row in rows if row["curve"] == "operating point"), None)
    if referral is None or not curve or point is None:
        ax.text(0.5, 0.5, "no referral operating point recorded for this model\n(train.referral.classes)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        names = " + ".join(wrap(name, 40) for name in referral["classes"])
        ax.plot([r["fpr"] for r in curve], [r["tpr"] for r in curve], color=OKABE_ITO[0], linewidth=2,
                label=f"P(refer) = P({names})\nAUC {format_value(referral.get('auc'))}")
        ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
        target = referral.get("target_sensitivity")
        if target is not None:
            ax.axhline(target, color="#999999", linestyle="--", linewidth=1,
                       label=f"target sensitivity {target:g} (validation)")
        ax.plot([point["fpr"]], [point["tpr"]], marker="o", markersize=11, color=ERROR_COLOUR,
                linestyle="none", label=(f"operating point: P(refer) >= {point['threshold']:.3f}\n"
                                         f"sensitivity {point['tpr']:.3f}, specificity {1 - point['fpr']:.3f}"))
        ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
               xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=9)
    ax.set_title(title)
    _save(fig, path)


def answered_point(rows: list[dict], threshold: float) -> dict | None:
    """The risk-coverage row of answering the images whose top probability is >= `threshold` (those
    model/decision.py does not call uncertain); None when it answers none."""
    answered = [row for row in rows if row["threshold"] >= threshold]
    return max(answered, key=lambda row: row["coverage"]) if answered else None


def plot_risk_coverage(rows: list[dict], evaluation: dict, path: str | Path, title: str) -> None:
    """Accuracy on the test images answered against the share answered (most confident first), the
    recorded uncertain threshold and the images whose status is ok marked."""
    fig = _figure("risk_coverage")
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no test images", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(title)
        _save(fig, path)
        return
    ax.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], color=OKABE_ITO[0], linewidth=2,
            label=f"answering the most confident first\nAURC {format_value(evaluation.get('aurc'))} (lower is better)")
    ax.axhline(rows[-1]["accuracy"], color="#999999", linestyle=":", linewidth=1,
               label=f"accuracy on all test images {rows[-1]['accuracy']:.3f}")
    uncertain = (evaluation.get("decision") or {}).get("uncertain")
    point = answered_point(rows, uncertain["threshold"]) if uncertain else None
    if point is not None:
        ax.plot([point["coverage"]], [point["accuracy"]], marker="o", markersize=11, color=ERROR_COLOUR,
                linestyle="none", label=(f"uncertain below top probability {uncertain['threshold']:.3f}\n"
                                         f"(answers {uncertain['coverage']:.0%} of validation): test "
                                         f"{point['coverage']:.3f} answered, accuracy {point['accuracy']:.3f}"))
    if evaluation.get("share_ok") and evaluation.get("accuracy_ok") is not None:
        ax.plot([evaluation["share_ok"]], [evaluation["accuracy_ok"]], marker="s", markersize=9,
                color=OKABE_ITO[2], linestyle="none",
                label=(f"status ok (neither uncertain nor out_of_distribution):\n"
                       f"{evaluation['share_ok']:.3f} answered, accuracy {evaluation['accuracy_ok']:.3f}"))
    ax.set(xlabel="share of test images answered (coverage)", ylabel="accuracy on the images answered",
           xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=9, frameon=False)  # never over the curve
    ax.set_title(title)
    _save(fig, path)
