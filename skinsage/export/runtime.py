"""Running an exported file as `Classifier` runs a Keras model: each adapter has `input_shape`,
`output_shape` and `predict_on_batch(uint8 images) -> probabilities`, so `inference.
predict_probabilities` (the one inference path) and `model_file.check_network` work unchanged.

The metadata comes from the side JSON written by `convert.export_model`; `tta_in_graph` on the
adapter tells `Classifier` not to apply test-time augmentation a second time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..fileio import not_regular
from ..model.model_file import MAX_METADATA_BYTES, ModelFileError, check_metadata, check_network
from .formats import EXPORT_FORMAT, exported_format, sidecar_path


def refuse_saved_model(path: str | Path) -> None:
    """SavedModel folders are an export target only: loading one runs its graph (resource
    initialisers at load, any op at predict), which may read or write files or open sockets."""
    if exported_format(path) == "saved_model":
        raise ModelFileError(f"{path}: a TF SavedModel folder; SkinSage does not load SavedModels "
                             "(loading one runs the graph it carries, which can read and write files). "
                             "Serve it with TensorFlow Serving if you trust it; here use the .keras model, "
                             "or export to --format litert or onnx")


def read_sidecar(path: str | Path) -> dict:
    """The metadata exported beside `path` (checked like a .keras file's); SavedModels refused."""
    refuse_saved_model(path)
    side = sidecar_path(path)
    if not Path(path).exists():
        raise ModelFileError(f"{path}: no such model file")
    for file in (path, side):  # opening a FIFO would block forever
        kind = not_regular(file)
        if kind or Path(file).is_dir():
            raise ModelFileError(f"{file}: not a regular file ({kind or 'a folder'}); give the file "
                                 "`skinsage export` wrote")
    if not side.is_file():
        raise ModelFileError(f"{path}: no {side.name} beside it (class names, input size); "
                             "export the model with `skinsage export`, which writes both")
    if side.stat().st_size > MAX_METADATA_BYTES:
        raise ModelFileError(f"{side}: larger than {MAX_METADATA_BYTES // 2**20} MiB; not a file "
                             "`skinsage export` wrote")
    try:
        metadata = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{side}: not valid JSON ({err})") from None
    except RecursionError:
        raise ModelFileError(f"{side}: JSON nested too deeply; not a file `skinsage export` wrote") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("export"), dict) \
            or metadata["export"].get("format") != EXPORT_FORMAT:
        raise ModelFileError(f"{side}: not SkinSage export metadata (expected format {EXPORT_FORMAT})")
    check_metadata(metadata, str(side))
    return metadata


def load_exported(path: str | Path):
    """(runner, metadata) for an exported file, the network checked against its metadata."""
    metadata = read_sidecar(path)
    fmt = exported_format(path)
    if metadata["export"].get("target") != fmt:
        raise ModelFileError(f"{sidecar_path(path)}: describes a {metadata['export'].get('target')} "
                             f"export, but {path} is {fmt}")
    runner = open_runner(path, fmt, tta_in_graph=metadata["export"].get("tta_in_graph", "none"),
                         temperature_in_graph=bool(metadata["export"].get("temperature_in_graph", False)))
    check_network(runner, metadata, str(path))
    return runner, metadata


def open_runner(path: str | Path, fmt: str, tta_in_graph: str = "none", temperature_in_graph: bool = False):
    """A runner for a .tflite or .onnx file (a SavedModel is never loaded from a user's path:
    `refuse_saved_model`)."""
    refuse_saved_model(path)
    runners = {"litert": LiteRTRunner, "onnx": OnnxRunner}
    try:
        runner = runners[fmt](path)
    except ImportError as err:
        raise ModelFileError(f"{path}: running {fmt} files needs {err.name}; install it with "
                             "`pip install skinsage[export]`") from None
    except Exception as err:  # noqa: BLE001  ONNX Runtime's and LiteRT's errors share no base class
        raise ModelFileError(f"{path}: cannot load it as a {fmt} model ({type(err).__name__}: "
                             f"{str(err).strip()[:300]})") from None
    runner.tta_in_graph = tta_in_graph
    runner.temperature_in_graph = temperature_in_graph
    return runner


def _shape(dims) -> tuple:
    return tuple(None if d is None or not isinstance(d, (int, np.integer)) or d < 0 else int(d)
                 for d in dims)


def _shapes(shapes: list) -> tuple | list:
    """One output's shape, or [probabilities, ood_score] shapes (as a two-output Keras model)."""
    return _shape(shapes[0]) if len(shapes) == 1 else [_shape(s) for s in shapes]


def _result(outputs: list):
    return outputs[0] if len(outputs) == 1 else outputs


def _uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8:
        raise ValueError(f"exported models take uint8 images, got {images.dtype}")
    return np.ascontiguousarray(images)


class LiteRTRunner:
    """A .tflite file in `ai-edge-litert` (else TensorFlow's bundled interpreter)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # TensorFlow still bundles the same interpreter
            import tensorflow as tf
            Interpreter = tf.lite.Interpreter
        # all cores, like Keras; the interpreter's default may be a single thread
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        self._input = self._interpreter.get_input_details()[0]
        # the probabilities first, then the ood_score (rank 1) of a model with a detector
        self._outputs = sorted(self._interpreter.get_output_details(), key=lambda d: -len(d["shape_signature"]))
        self.input_shape = _shape(self._input["shape_signature"])
        self.output_shape = _shapes([d["shape_signature"] for d in self._outputs])
        # now, not at the first image: an op the runtime lacks (Select TF ops, custom ops) fails
        # here, at load, and is never run
        self._interpreter.allocate_tensors()
        self._batch_shape = None

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        images = _uint8(images)
        if images.shape != self._batch_shape:  # resizing re-plans memory: only when it changes
            self._interpreter.resize_tensor_input(self._input["index"], images.shape)
            self._interpreter.allocate_tensors()
            self._batch_shape = images.shape
        self._interpreter.set_tensor(self._input["index"], images)
        self._interpreter.invoke()
        return _result([self._interpreter.get_tensor(d["index"]).copy() for d in self._outputs])


class OnnxRunner:
    """An .onnx file in ONNX Runtime (CPU)."""

    def __init__(self, path: str | Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        self._session = onnxruntime.InferenceSession(str(path), options,
                                                     providers=["CPUExecutionProvider"])
        (inp,) = self._session.get_inputs()
        outs = sorted(self._session.get_outputs(), key=lambda o: -len(o.shape))  # probabilities first
        self._name, self._outputs = inp.name, [o.name for o in outs]
        self.input_shape, self.output_shape = _shape(inp.shape), _shapes([o.shape for o in outs])

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        return _result(self._session.run(self._outputs, {self._name: _uint8(images)}))
