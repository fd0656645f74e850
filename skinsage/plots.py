"""Static figures (PNG) for people; DVC renders its own interactive plots from the CSV/JSON files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .fileio import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_training_curves(history: list[dict], path: str | Path, title: str) -> None:
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [row[metric] for row in history], "o-", label=f"train {metric}")
        ax.plot(epochs, [row[f"val_{metric}"] for row in history], "s-", label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    _save(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: str | Path,
                          title: str) -> None:
    counts = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    n = len(class_names)
    side = max(5.0, 0.7 * n + 3)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, values, subtitle, fmt in ((axes[0], counts, "counts", "d"),
                                      (axes[1], normalized, "row-normalised (recall)", ".2f")):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(subtitle)
        threshold = values.max() / 2 if values.max() else 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > threshold else "black")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
