"""Grad-CAM examples for the model card: per class, a correct and the most confident wrong test image.

The maps are computed on models/model.keras itself with the TTA it was evaluated with, for the class
it predicted (why it said what it said); the picks come from evaluate's predictions.csv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import logging

from ..model.clinical import clinical_fields
from ..model.gradcam import GradCam, overlay
from ..model.model_file import ModelFileError, inference_settings, load_model

log = logging.getLogger(__name__)
DISPLAY_SIDE = 112  # px: small test images are enlarged (nearest, pixels kept) so the map reads smoothly


def select_gradcam_examples(predictions: list[dict], class_names: list[str]) -> list[dict]:
    """Per true class (in order): its most confident correct prediction and its most confident
    mistake, each None when the class has none."""
    rows = []
    for name in class_names:
        mine = [p for p in predictions if p["actual"] == name]
        right = [p for p in mine if p["predicted"] == name]
        wrong = [p for p in mine if p["predicted"] != name]
        pick = lambda group: max(group, key=lambda p: p["confidence"]) if group else None  # noqa: E731
        rows.append({"class": name, "correct": pick(right), "wrong": pick(wrong)})
    return rows


def explain_examples(model_path: str | Path, images: np.ndarray, rows: list[dict],
                     class_names: list[str]) -> tuple[list[dict], str]:
    """(`rows` with, for each pick, {"pick", "image", "overlay"} (display-sized uint8 arrays), the
    layer the maps come from)."""
    model, metadata = load_model(model_path)
    if list(metadata["classes"]) != list(class_names):
        raise ModelFileError(f"{model_path}: its classes {metadata['classes']} are not the evaluated "
                             f"ones {class_names}; re-run the pipeline (dvc repro)")
    if clinical_fields(model):  # Grad-CAM supports image-only models: the figure stays empty
        log.warning(f"{model_path} also takes clinical data: no Grad-CAM examples (image-only models)")
        return [{"class": row["class"], "correct": None, "wrong": None} for row in rows], None
    cam = GradCam(model, name=str(model_path))
    picks = [row[kind] for row in rows for kind in ("correct", "wrong") if row[kind] is not None]
    if not picks:
        return [{"class": row["class"], "correct": None, "wrong": None} for row in rows], cam.layer
    batch = images[[p["index"] for p in picks]]
    predicted = [class_names.index(p["predicted"]) for p in picks]
    result = cam.explain(batch, class_indices=predicted, **inference_settings(metadata, str(model_path)))
    drawn = {id(p): _drawn(p, image, heat) for p, image, heat in zip(picks, batch, result.maps)}
    return [{"class": row["class"], **{kind: drawn.get(id(row[kind])) for kind in ("correct", "wrong")}}
            for row in rows], cam.layer


def _drawn(pick: dict, image: np.ndarray, heatmap: np.ndarray) -> dict:
    scale = max(1, -(-DISPLAY_SIDE // max(image.shape[:2])))  # ceil: at least DISPLAY_SIDE px
    large = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    return {"pick": pick, "image": large, "overlay": overlay(large, heatmap)}
