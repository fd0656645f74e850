"""The one path from prepared images to the probabilities SkinSage reports.

The `evaluate` stage, the tau sweep in `train`, `Classifier` (so `skinsage predict` and `skinsage
evaluate`) all call `predict_probabilities`: the metrics in metrics/eval.json are what a user of the
model gets. Test-time augmentation (TTA) and the temperature are part of it: the mean over the
test-time views first, then the temperature (temperature.py says why in that order). Both are
recorded in the model file (`model_file.inference_settings`) and used by default. A model with
clinical inputs gets each image's clinical data beside it (the flips apply to the image only).
"""

from __future__ import annotations

import numpy as np

from ..errors import SkinSageError
from ..log import progress
from ..params import TTA_CHOICES
from .clinical import IMAGE_INPUT, check_clinical_given, clinical_fields, column
from .temperature import apply_temperature

def check_tta(tta, error: type[Exception] = ValueError, what: str = "tta") -> str:
    """The one TTA check (Classifier, the model file, the export graph, the views below): `tta`
    when it is one of TTA_CHOICES (evaluate.tta's type in params), else `error` saying so."""
    if tta not in TTA_CHOICES:
        raise error(f"{what} must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    return tta


class NonFiniteOutputError(SkinSageError, ValueError):
    """The model gave a NaN or infinite probability: never passed on as an answer."""


def flip_variants(images: np.ndarray, tta: str) -> list[np.ndarray]:
    """The test-time variants of (N, H, W, C) images: the images alone, or with their horizontal,
    vertical and double flips (lesions have no canonical orientation)."""
    check_tta(tta)
    variants = [images]
    if tta == "flips":
        variants += [images[:, :, ::-1], images[:, ::-1, :], images[:, ::-1, ::-1]]
    return variants


def variant_outputs(model, images, batch_size: int, tta: str = "none",
                    clinical: dict | None = None, raw: bool = False) -> list[np.ndarray]:
    """Each model output per test-time variant: [(V, N, C) float64 probabilities] and, for a model
    with an out-of-distribution detector (ood.py), (V, N) ood scores after them (V = 1 without
    TTA, 4 with flips). `images`: an (N, H, W, C) uint8 array, or a prepared `Split` of either
    store (read a batch at a time in its order, so a sharded split is never held whole): the same
    batches, the same numbers. `clinical`: field -> (N,) values, for a model with clinical inputs
    (ignored by others). `raw`: every output as (V, N, D) whatever its meaning (ood.py's fit)."""
    check_tta(tta)
    fields = clinical_fields(model)
    check_clinical_given(fields, clinical, len(images))
    columns = {name: column(name, clinical[name]) for name in fields}  # (N, 1) model inputs
    variants = 4 if tta == "flips" else 1
    per_batch, start = [], 0
    # a bar for whole splits (evaluate, the tau sweep); callers predicting a batch at a time
    # (`skinsage predict`) draw their own
    with progress(total=len(images) * variants, desc=f"predict ({tta} TTA)", enabled=len(images) >= 512) as bar:
        for batch in _batches(images, batch_size):
            rows = {name: c[start:start + len(batch)] for name, c in columns.items()}
            views = [_forward(model, v, rows, raw) for v in flip_variants(batch, tta)]
            per_batch.append([np.stack(out) for out in zip(*views)])
            start += len(batch)
            bar.update(len(batch) * variants)
    if not per_batch:
        empty = [np.zeros((variants, 0, output_width(model)))]
        return empty + ([np.zeros((variants, 0))] if has_ood_output(model) else [])
    return [np.concatenate(parts, axis=1) for parts in zip(*per_batch)]


def variant_probabilities(model, images, batch_size: int, tta: str = "none",
                          clinical: dict | None = None) -> np.ndarray:
    """(V, N, C) float64: each test-time variant's probabilities (`variant_outputs`' first)."""
    return variant_outputs(model, images, batch_size, tta, clinical)[0]


def predict_outputs(model, images, batch_size: int, tta: str = "none", temperature: float = 1.0,
                    clinical: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """((N, C) probabilities as `predict_probabilities`, (N,) ood scores averaged over the views,
    or None for a model without a detector), from one forward pass per view."""
    if len(images) == 0:
        return np.zeros((0, output_width(model))), (np.zeros(0) if has_ood_output(model) else None)
    outputs = variant_outputs(model, images, batch_size, tta, clinical)
    probs = _checked_finite(apply_temperature(average_views(outputs[0]), temperature))
    return probs, (outputs[1].mean(axis=0) if len(outputs) > 1 else None)


def output_width(model) -> int:
    """The number of classes: the probabilities' width, whatever other outputs the model has."""
    shape = model.output_shape
    return (shape[0] if isinstance(shape, list) else shape)[-1]


def has_ood_output(model) -> bool:
    """Whether the model (or exported runner) also outputs an ood_score."""
    return isinstance(model.output_shape, list) and len(model.output_shape) > 1


def predict_probabilities(model, images, batch_size: int, tta: str = "none",
                          temperature: float = 1.0, clinical: dict | None = None) -> np.ndarray:
    """(N, C) float64 probabilities of (N, size, size, 3) uint8 images (an array or a prepared
    `Split`), each row summing to 1: the mean over the TTA variants, then scaled by `temperature`.
    `clinical` as in `variant_probabilities`."""
    if len(images) == 0:
        return np.zeros((0, output_width(model)))
    return _checked_finite(apply_temperature(
        average_views(variant_probabilities(model, images, batch_size, tta, clinical)), temperature))


def _checked_finite(probs: np.ndarray) -> np.ndarray:
    """`probs` unchanged, or NonFiniteOutputError: no output anywhere carries a NaN probability."""
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if len(bad):
        raise NonFiniteOutputError(
            f"the model gave non-finite probabilities (NaN or infinity) for {len(bad)} of {len(probs)} "
            f"image(s), first image {bad[0] + 1} of {len(probs)}; its weights or inputs are broken, so "
            "no answer is given")
    return probs


def average_views(variants: np.ndarray) -> np.ndarray:
    """(N, C) rows summing to 1 from (V, N, C) per-view probabilities: what the temperature is
    applied to here and fitted on in `train`."""
    probs = variants.mean(axis=0)
    return probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within ~1e-7


def _batches(images, batch_size: int):
    """uint8 batches in order: slices of an array, or a prepared split's own `batches`."""
    if hasattr(images, "batches"):
        yield from images.batches(batch_size)
        return
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def _forward(model, batch: np.ndarray, columns: dict[str, np.ndarray], raw: bool = False) -> list[np.ndarray]:
    # predict_on_batch, not model.predict: the same graph without ~90 ms of set-up per call, which
    # matters for one photo at a time (predict, the web app); identical numbers for a whole split.
    batch = np.ascontiguousarray(batch)
    inputs = {IMAGE_INPUT: batch, **columns} if columns else batch
    outputs = model.predict_on_batch(inputs)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return [np.asarray(out, dtype=np.float64).reshape(len(batch), -1) if i == 0 or raw else
            np.asarray(out, dtype=np.float64).reshape(len(batch)) for i, out in enumerate(outputs)]
