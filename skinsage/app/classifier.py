"""Using a trained model: `Classifier` for Python code, and what `skinsage predict` runs.

    from skinsage import Classifier
    clf = Classifier.load("models/model.keras")   # load once ...
    clf.predict("lesion.jpg").label                # ... predict many times
    clf.predict(["a.jpg", pil_image, uint8_array])  # a list is one batch, a list comes back
    clf.predict("lesion.jpg", clinical={"age": 55, "sex": "male", "site": "back"})  # a model with clinical inputs

Images go through `data.images.load_image`, the function `prepare` uses, so a photo is seen exactly
as in training; probabilities come from `model.inference`, the path the `evaluate` stage scores, with
the TTA recorded in the model file (override with `tta=`). Class names and input size come from the
metadata `train` saved inside the model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from ..data.images import ImageError, load_image, load_photo
from ..errors import SkinSageError, debug_mode, unexpected_reason
from ..model.decision import statuses
from ..model.inference import check_tta, predict_outputs
from ..model.model_file import (check_metadata, check_network, clinical_record, decision_settings,
                                inference_settings, referral_settings)
from ..model.referral import decide
from .clinical_input import ClinicalTable, checked_value, missing_clinical_message, resolve

log = logging.getLogger(__name__)
DEFAULT_TOP_K = 3
BATCH_SIZE = 32


class PredictError(SkinSageError, ValueError):
    """The model or the input cannot be used for prediction."""


@dataclass(frozen=True, eq=False)
class Prediction:
    """One image's answer: the most probable class, the k most probable, and every class's probability."""

    label: str
    probability: float
    top_k: list[tuple[str, float]]
    probabilities: dict[str, float]  # all classes, sums to 1
    image_size: int                  # the model's input size the image was resized to
    source: str | None = None        # the file, when predicted from a path
    # ok | uncertain | out_of_distribution (model/decision.py); ood_score: higher = less like the
    # training lesions, None for a model file without a detector
    status: str = "ok"
    ood_score: float | None = None
    # the referral advice (model/referral.py): P(refer) >= the threshold fitted on validation; both
    # None for a model without a recorded referral, refer None for an out-of-distribution image
    refer: bool | None = None
    refer_probability: float | None = None

    def to_dict(self) -> dict:
        return {"path": self.source, "label": self.label, "probability": self.probability,
                "top_k": [{"label": name, "probability": p} for name, p in self.top_k],
                "probabilities": dict(self.probabilities), "image_size": self.image_size,
                "status": self.status, "ood_score": self.ood_score,
                "refer": self.refer, "refer_probability": self.refer_probability}


@dataclass(frozen=True, eq=False)
class Explanation:
    """Grad-CAM of one image: why the model gave `explained` the score it did."""

    prediction: Prediction
    explained: str           # the class the map is for: the predicted one unless asked otherwise
    heatmap: np.ndarray      # (h, w) float32 in [0, 1] at the conv block's resolution
    layer: str               # the layer the map comes from
    photo: np.ndarray        # (H, W, 3) uint8, the input as people see it (oriented, own aspect)
    overlay: np.ndarray      # (H, W, 3) uint8, the map stretched over the photo

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(), "explained_class": self.explained, "layer": self.layer,
                "heatmap_shape": list(self.heatmap.shape)}


@dataclass(frozen=True)
class FileOutcome:
    """A file given to `predict_files`: its prediction, or why it could not be read."""

    path: str
    prediction: Prediction | None = None
    error: str | None = None


class Classifier:
    """A loaded SkinSage model with its class names and input size. Load once, reuse."""

    def __init__(self, model, metadata: dict, path: str | None = None, tta: str | None = None):
        """`tta`: None runs the model as it was evaluated (recorded in its metadata); "none" or
        "flips" overrides that."""
        where = path or "model"
        self.model = model
        self.metadata = metadata
        self.path = path
        self.classes, self.image_size = check_metadata(metadata, where)
        check_network(model, metadata, where)
        if tta is not None:
            check_tta(tta, PredictError)
        settings = inference_settings(metadata, where)
        self.tta = tta or settings["tta"]
        self.temperature = settings["temperature"]  # fitted on validation by `train`
        # An exported file may average the flips (and apply the temperature) inside its graph: then
        # Python must not do it again
        in_graph = getattr(model, "tta_in_graph", "none")
        if in_graph == "flips" and self.tta == "none":
            raise PredictError(f"{where}: this exported model applies flips TTA inside its graph "
                               "and cannot run without it; use the .keras model for TTA none")
        self.runtime_tta = "none" if in_graph == "flips" else self.tta
        self.runtime_temperature = 1.0 if getattr(model, "temperature_in_graph", False) else self.temperature
        self.decision = decision_settings(metadata, where)  # the thresholds behind `status`
        if self.decision["ood"] is None:
            log.warning(f"{where}: this model file has no out-of-distribution detector (trained before "
                        "it existed, or with train.ood.method: none): ood_score is null and no image "
                        "is refused as out_of_distribution; retrain it to get one")
        record = clinical_record(metadata)
        # the clinical inputs the model takes (age, sex, site) and the CSV columns it learnt them from
        self.clinical_inputs, self.clinical_columns = record["inputs"], record["columns"]
        self.referral = referral_settings(metadata, where)  # None: an older file, refer stays None
        self._grad_cam = None  # built by the first explain()

    @classmethod
    def load(cls, path: str | Path, tta: str | None = None) -> "Classifier":
        """Read a `.keras` file written by `train` (Keras safe mode: the file cannot run code), or a
        file written by `skinsage export` (.tflite, .onnx, SavedModel folder) with its side JSON."""
        from ..export.formats import exported_format
        from ..export.runtime import load_exported
        from ..model.model_file import load_model

        model, metadata = load_exported(path) if exported_format(path) else load_model(path)
        return cls(model, metadata, str(path), tta=tta)

    @property
    def kind(self) -> str:
        return str(self.metadata.get("model", "unknown"))

    def input_array(self, source, max_pixels: int | None = None) -> np.ndarray:
        """A path, Pillow image or uint8 array -> the model's (size, size, 3) uint8 input.
        `max_pixels`: refuse files with more (tighter than the decoder's own bound)."""
        if isinstance(source, (str, os.PathLike)):
            return load_image(source, self.image_size, max_pixels)
        if isinstance(source, Image.Image):
            return load_image(source, self.image_size)
        if isinstance(source, np.ndarray):
            return load_image(_array_to_image(source), self.image_size)
        raise PredictError(f"cannot predict a {type(source).__name__}: give a file path, a Pillow "
                           "image or a uint8 array (H, W), (H, W, 3) or (H, W, 4)")

    def predict(self, inputs, top_k: int = DEFAULT_TOP_K, batch_size: int = BATCH_SIZE, clinical=None):
        """One input -> a Prediction; a list (or an (N, H, W, C) array) -> a list of them.
        `clinical` for a model with clinical inputs: a dict ({"age": 55, "sex": "male", "site":
        "back"}; keys may also be the training CSV's column names) for one input, a list of them
        for a list; None or empty for a value not known."""
        single = not isinstance(inputs, (list, tuple)) and not (
            isinstance(inputs, np.ndarray) and inputs.ndim == 4)
        items = [inputs] if single else list(inputs)
        rows = None if clinical is None else ([clinical] if single else list(clinical))
        if rows is not None and len(rows) != len(items):
            raise PredictError(f"clinical: {len(rows)} row(s) for {len(items)} image(s); give one per image")
        arrays = [self.input_array(item) for item in items]
        sources = [str(item) if isinstance(item, (str, os.PathLike)) else None for item in items]
        results = self._predict_arrays(arrays, sources, top_k, batch_size, rows)
        return results[0] if single else results

    def explain(self, source, class_name: str | None = None, top_k: int = DEFAULT_TOP_K,
                max_side: int | None = None, max_pixels: int | None = None) -> Explanation:
        """Grad-CAM of one image (path, Pillow image or uint8 array) for `class_name`, else for the
        predicted class; with the model's TTA, like its probabilities. `max_side` shrinks the
        returned photo and overlay (not the model's input); `max_pixels` bounds what a file may
        decode to."""
        from ..model.gradcam import overlay

        if class_name is not None and class_name not in self.classes:
            raise PredictError(f"unknown class {class_name!r}; the model's classes: "
                               f"{', '.join(self.classes)}")
        array = self.input_array(source, max_pixels)
        grad_cam = self.grad_cam  # refuses a model it cannot explain before any inference
        source_name = str(source) if isinstance(source, (str, os.PathLike)) else None
        # one inference pass: the prediction (status, ood_score, refer) and the class to explain
        prediction = self._predict_arrays([array], [source_name], top_k, BATCH_SIZE)[0]
        target = self.classes.index(class_name or prediction.label)
        result = grad_cam.explain(array[None], class_indices=target, tta=self.tta,
                                  probabilities=np.array([[prediction.probabilities[c] for c in self.classes]]))
        photo = self._photo(source, max_side, max_pixels)
        return Explanation(prediction=prediction, explained=self.classes[result.class_indices[0]],
                           heatmap=result.maps[0], layer=result.layer, photo=photo,
                           overlay=overlay(photo, result.maps[0]))

    @property
    def grad_cam(self):
        """The model's Grad-CAM (built on first use, then reused)."""
        if self._grad_cam is None:
            import keras

            self._refuse_clinical("Grad-CAM (`skinsage explain`, the web app)")
            from ..model.gradcam import GradCam
            if not isinstance(self.model, keras.Model):  # an exported runtime has no gradients
                raise PredictError(f"{self.path or 'model'}: Grad-CAM needs the .keras model (it takes "
                                   "gradients); exported .tflite/.onnx files only predict")
            self._grad_cam = GradCam(self.model, name=self.path or "model")
        return self._grad_cam

    @staticmethod
    def _photo(source, max_side: int | None, max_pixels: int | None = None) -> np.ndarray:
        if isinstance(source, np.ndarray):
            source = _array_to_image(source)
        return load_photo(source, max_side, max_pixels)

    def _refuse_clinical(self, what: str) -> None:
        if self.clinical_inputs:
            raise PredictError(f"{self.path or 'model'}: {what} supports image-only models; this one also "
                               f"takes clinical data ({', '.join(self.clinical_inputs)}). Use `skinsage "
                               "predict --clinical FILE.csv` (or --age/--sex/--site) for its predictions")

    def probabilities(self, images: np.ndarray, batch_size: int = BATCH_SIZE,
                      clinical: dict | None = None) -> np.ndarray:
        """(N, C) float64 probabilities of prepared (N, size, size, 3) uint8 images, rows sum to 1:
        exactly what the `evaluate` stage scores for them. `clinical`: field -> (N,) values, for a
        model with clinical inputs."""
        return self.outputs(images, batch_size, clinical)[0]

    def outputs(self, images: np.ndarray, batch_size: int = BATCH_SIZE,
                clinical: dict | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
        """(probabilities as `probabilities`, (N,) ood scores or None, N statuses): one pass."""
        probs, scores = predict_outputs(self.model, images, batch_size, self.runtime_tta,
                                        self.runtime_temperature, clinical=clinical)
        return probs, scores, statuses(probs, scores, self.decision)

    def clinical_table(self, path: str | Path) -> ClinicalTable:
        """A `--clinical` CSV read for this model's clinical inputs (id column: the training one too)."""
        csv_params = ((self.metadata.get("params") or {}).get("data") or {}).get("csv") or {}
        return ClinicalTable(path, self.clinical_inputs, self.clinical_columns, csv_params.get("id"))

    def clinical_for_files(self, n_files: int, csv_path: str | Path | None = None, values: dict | None = None,
                           where: str | None = None):
        """What `predict_files` takes for `skinsage predict`: a ClinicalTable (`csv_path`), one dict
        (`values` of a single image, e.g. {"age": 55}), or None. Refused when the model needs the
        data and it is missing; ignored (with a warning) by an image-only model."""
        where, values = where or self.path or "model", values or {}
        if csv_path and values:
            raise PredictError("give the clinical data either as --clinical FILE.csv or as --age/--sex/--site, "
                               "not both")
        if not self.clinical_inputs:
            if csv_path or values:
                self._warn_image_only("--clinical" if csv_path else "/".join(f"--{name}" for name in values))
            return None
        if csv_path:
            return self.clinical_table(csv_path)
        if not values:
            raise PredictError(missing_clinical_message(where, self.clinical_inputs, self.clinical_columns))
        if n_files > 1:
            raise PredictError(f"--age/--sex/--site describe a single image, but {n_files} were given; "
                               "use --clinical FILE.csv with a row per image")
        missing = [name for name in self.clinical_inputs if name not in values]
        if missing:
            raise PredictError(f"{where} takes {', '.join(self.clinical_inputs)}: also pass "
                               + " ".join(f"--{name}" for name in missing) + " ('unknown' when not known)")
        # the rules prepare applied to the training data (age 0-130, finite), named by flag
        return {name: checked_value(name, value, f"--{name} {value}") for name, value in values.items()}

    def require_clinical_data(self, split, source) -> None:
        """Labelled data for `skinsage evaluate` must carry the clinical inputs the model takes."""
        if self.clinical_inputs and not split.clinical:
            raise PredictError(f"{self.path or 'model'} takes clinical data ({', '.join(self.clinical_inputs)}) "
                               f"besides the image, and {source} has none: evaluate it on a folder written by "
                               "`prepare` with data.csv.clinical (e.g. --data data/prepared), or on a CSV of "
                               "labels with its clinical columns (--images DIR, --clinical FIELD=COLUMN)")

    def _warn_image_only(self, given: str) -> None:
        """The one warning for clinical data given to an image-only model (CLI and Python alike)."""
        log.warning(f"{self.path or 'model'} takes images only; {given} is ignored")

    def predict_files(self, paths: Iterable[str | Path], top_k: int = DEFAULT_TOP_K,
                      batch_size: int = BATCH_SIZE, clinical=None) -> Iterator[FileOutcome]:
        """Outcomes in input order, a batch at a time; an unreadable file is reported, not raised.
        `clinical`: a ClinicalTable (rows looked up by file name; a file without a row is
        reported), or one dict used for every file.

        So is any unexpected exception while reading one file (its type in the reason), unless
        SKINSAGE_DEBUG=1, which re-raises it to show the traceback."""
        paths = iter(paths)
        while chunk := list(islice(paths, batch_size)):
            arrays, readable, rows, errors = [], [], [], {}
            for path in chunk:
                row = self._row_for(path, clinical)
                if row is _NO_ROW:
                    errors[str(path)] = f"no row for this image in --clinical {clinical.path}"
                    continue
                try:
                    arrays.append(self.input_array(path))
                    readable.append(str(path))
                    rows.append(row)
                except ImageError as err:
                    errors[str(path)] = str(err).removeprefix(f"{path}: ")
                except Exception as err:  # noqa: BLE001  one odd file must not cost the batch
                    if debug_mode():
                        raise
                    errors[str(path)] = unexpected_reason(err)
            rows = None if clinical is None else rows
            predictions = iter(self._predict_arrays(arrays, readable, top_k, batch_size, rows))
            for path in map(str, chunk):
                yield (FileOutcome(path, error=errors[path]) if path in errors
                       else FileOutcome(path, prediction=next(predictions)))

    def _row_for(self, path, clinical):
        if not isinstance(clinical, ClinicalTable):
            return clinical
        row = clinical.lookup(path)
        return _NO_ROW if row is None and self.clinical_inputs else row

    def _columns(self, rows: list | None) -> dict | None:
        """field -> n values for the model's clinical inputs from per-image rows; None for an
        image-only model (clinical data given to it is ignored, with a warning)."""
        if not self.clinical_inputs:
            if rows is not None and any(row for row in rows):
                self._warn_image_only("the clinical data given")
            return None
        if rows is None:
            raise PredictError(missing_clinical_message(self.path or "model", self.clinical_inputs,
                                                        self.clinical_columns))
        resolved = [resolve(row or {}, self.clinical_inputs, self.clinical_columns, "clinical") for row in rows]
        return {field: [row[field] for row in resolved] for field in self.clinical_inputs}

    def _predict_arrays(self, arrays: list[np.ndarray], sources: list[str | None], top_k: int,
                        batch_size: int, rows: list | None = None) -> list[Prediction]:
        if top_k < 1:
            raise PredictError(f"top-k must be at least 1, got {top_k}")
        columns = self._columns(rows)  # before the early return: a missing-clinical-data error is never skipped
        if not arrays:
            return []
        probs, scores, status = self.outputs(np.stack(arrays), batch_size, columns)
        # an out-of-distribution image gets no referral advice (refer None), never "no referral"
        refer, refer_probability = decide(probs, self.classes, self.referral, status)
        return [self._result(probs[i], sources[i], top_k, status[i], None if scores is None else float(scores[i]),
                             refer[i], refer_probability[i])
                for i in range(len(probs))]

    def _result(self, row: np.ndarray, source: str | None, top_k: int, status: str, ood_score: float | None,
                refer: bool | None, refer_probability: float | None) -> Prediction:
        order = np.argsort(-row, kind="stable")[:top_k]  # ties keep the class order
        ranked = [(self.classes[i], float(row[i])) for i in order]
        return Prediction(label=ranked[0][0], probability=ranked[0][1], top_k=ranked,
                          probabilities={name: float(p) for name, p in zip(self.classes, row)},
                          image_size=self.image_size, source=source, status=status, ood_score=ood_score,
                          refer=refer, refer_probability=refer_probability)


_NO_ROW = object()  # a ClinicalTable without a row for the file


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise PredictError(f"expected a uint8 image array (0-255, as decoded from a file), got "
                           f"{array.dtype}; convert with (array * 255).round().astype('uint8') if "
                           "it holds 0-1 floats")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise PredictError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got "
                           f"{array.shape}")
    return Image.fromarray(array)
