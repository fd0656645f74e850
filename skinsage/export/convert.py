"""Converting a loaded SkinSage model to LiteRT, ONNX or a TF SavedModel, then checking the file
against Keras on real inputs before anyone relies on it.

LiteRT goes Keras -> SavedModel -> `tf.lite.TFLiteConverter` with built-in ops only: Keras' own
`model.export(format="litert")` also allows SELECT_TF_OPS, which the standalone `ai-edge-litert`
runtime cannot run, so an unsupported layer would only fail on the device. ONNX uses Keras'
`model.export(format="onnx")` (tf2onnx), then checks every node is a standard ONNX op.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_dir, atomic_path, write_json
from .formats import EXPORT_FORMAT, FORMAT_NAMES, FORMATS, SUFFIXES, SUPPORTED, sidecar_path
from .serving import ExportError, UnsupportedLayerError, layers_in, serving_model

DEFAULT_CALIBRATION_DIR = "data/prepared"  # int8's training images when no folder is named
CALIBRATION_IMAGES = 300  # post-training quantisation needs a few hundred representative inputs
VERIFY_IMAGES = 256
FLOAT_TOLERANCE = 1e-3  # max |Δp| an unquantised export may differ from Keras (float reordering)


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    verification: dict


def check_request(fmt: str, quantize: str, out: str | Path) -> None:
    """Refuse a format/quantisation pair or output name before any slow work."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantize not in SUPPORTED[fmt]:
        raise ExportError(f"{FORMAT_NAMES[fmt]} export supports --quantize "
                          f"{' or '.join(SUPPORTED[fmt])}, not {quantize!r}")
    suffix = SUFFIXES[fmt]
    if suffix and Path(out).suffix.lower() != suffix:
        raise ExportError(f"--out {out}: a {FORMAT_NAMES[fmt]} file must end in {suffix} "
                          "(`skinsage predict` recognises the format by it)")


def check_image_only(metadata: dict, where: str) -> None:
    """Exported files take images only: a model with clinical inputs is refused, naming them."""
    from ..model.model_file import clinical_record

    fields = clinical_record(metadata)["inputs"]
    if fields:
        raise ExportError(f"{where}: export supports image-only models; this one also takes clinical "
                          f"data ({', '.join(fields)}). Use the .keras file (skinsage predict "
                          "--clinical, Classifier) or retrain with models.<model>.clinical: []")


def calibration_images(prepared_dir: str | Path, size: int, count: int = CALIBRATION_IMAGES,
                       seed: int = 0) -> np.ndarray:
    """`count` training images (a seeded random sample) from a folder written by `prepare`."""
    from ..prepared import has_split, load_split

    train = Path(prepared_dir) / "train"
    if not has_split(prepared_dir, "train"):
        raise ExportError(f"int8 quantisation is calibrated on training images, but {train}.npz (or "
                          f"the sharded {train}/) does not exist; run `dvc repro prepare` or give "
                          "--calibration DIR (a folder written by `prepare`)")
    split = load_split(prepared_dir, "train")
    if len(split) == 0:
        raise ExportError(f"{train}: no images to calibrate with")
    chosen = np.random.default_rng(seed).choice(len(split), min(count, len(split)), replace=False)
    images = split.take(np.sort(chosen))  # a sharded split streams: only the sample is kept
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise ExportError(f"{train}: images are {images.dtype} {images.shape[1:]}, the model takes "
                          f"uint8 ({size}, {size}, 3); calibrate with the data the model was trained on")
    return images


def export_files(model_path: str | Path, requests: list[tuple[str | Path, str, str]],
                 calibration_dir: str | Path | None = None) -> list[ExportResult]:
    """The one export orchestration (`skinsage export` and the `export` stage): load the .keras
    model once, then write and check each (out, format, quantisation). int8 calibrates on training
    images from `calibration_dir` (default data/prepared); a folder named explicitly is also what
    every other request is checked on."""
    from ..model.model_file import load_model

    for out, fmt, quantize in requests:
        check_request(fmt, quantize, out)  # before loading anything
    model, metadata = load_model(model_path)
    check_image_only(metadata, str(model_path))
    images = None
    results = []
    for out, fmt, quantize in requests:
        calibration = None
        if quantize == "int8" or calibration_dir is not None:
            if images is None:
                images = calibration_images(calibration_dir or DEFAULT_CALIBRATION_DIR, metadata["image_size"])
            calibration = images
        results.append(export_model(model, metadata, out, fmt, quantize, calibration=calibration,
                                    source=str(model_path)))
    return results


def export_model(model, metadata: dict, out: str | Path, fmt: str, quantize: str = "none",
                 calibration: np.ndarray | None = None, source: str | None = None) -> ExportResult:
    """Write `model` (the TTA and temperature of its metadata inside) as `fmt` to `out`, check it
    against Keras on `calibration` images (else generated ones), and write the side JSON."""
    from ..model.model_file import check_metadata, inference_settings

    check_request(fmt, quantize, out)
    check_image_only(metadata, source or "model")
    _, size = check_metadata(metadata, source or "model")
    settings = inference_settings(metadata, source or "model")
    tta, temperature = settings["tta"], settings["temperature"]
    if quantize == "int8" and calibration is None:
        raise ExportError("int8 quantisation needs calibration images (--calibration data/prepared)")
    serving = serving_model(model, tta, temperature)
    out = Path(out)
    if fmt == "litert":
        data = litert_bytes(serving, size, quantize, calibration)
        with atomic_path(out) as tmp:
            Path(tmp).write_bytes(data)
    elif fmt == "onnx":
        with atomic_path(out) as tmp:
            write_onnx(serving, size, tmp)
    else:  # checked in its temporary folder: SkinSage never loads a SavedModel from a user's path
        with atomic_dir(out) as tmp:
            write_saved_model(serving, size, tmp)
            verification = verify(model, settings, out, fmt, quantize, calibration, size,
                                  runner=SavedModelRunner(tmp))
    try:
        if fmt != "saved_model":
            verification = verify(model, settings, out, fmt, quantize, calibration, size)
    except ExportError:
        _remove(out)  # a file that disagrees with Keras must not be left for anyone to use
        raise
    sidecar = sidecar_path(out)
    write_json(sidecar, {**metadata, "export": {
        "format": EXPORT_FORMAT, "target": fmt, "quantize": quantize, "tta_in_graph": tta,
        "temperature_in_graph": temperature != 1.0,
        "source": source, "calibration_images": 0 if calibration is None else len(calibration),
        "verification": verification, **_versions()}})
    return ExportResult(out, sidecar, verification)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _archive(serving, size: int, folder: str) -> None:
    """A SavedModel with one `serve` signature: (None, size, size, 3) uint8 -> probabilities."""
    import tensorflow as tf
    from keras.export import ExportArchive

    archive = ExportArchive()
    archive.track(serving)
    archive.add_endpoint("serve", lambda image: serving(image, training=False),
                         input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8, name="image")])
    archive.write_out(folder, verbose=False)


def write_saved_model(serving, size: int, folder: str | Path) -> None:
    _archive(serving, size, str(folder))


def litert_bytes(serving, size: int, quantize: str, calibration: np.ndarray | None) -> bytes:
    """The .tflite flatbuffer. float16: weights stored as float16; int8: weights and activations
    int8 where a kernel exists, calibrated on `calibration`; input stays uint8, output float32."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        _archive(serving, size, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        try:
            return converter.convert()
        except Exception as err:  # noqa: BLE001  ConverterError and friends; the user needs the reason
            raise _unsupported("LiteRT", str(err), serving) from None


def _unsupported(fmt: str, message: str, serving) -> ExportError:
    import re

    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", message)))
    layers = layers_in(message, serving)
    if ops or layers:
        return UnsupportedLayerError(fmt, layers, ops)
    first = message.strip().splitlines()[0][:500] if message.strip() else "no message"
    return ExportError(f"cannot export to {fmt}: the converter failed ({first})")


def write_onnx(serving, size: int, path: str | Path) -> None:
    """Keras' ONNX export, then a check that every node is an op ONNX defines: tf2onnx writes an
    op it cannot translate as-is, which only fails when a runtime loads the file."""
    import keras
    import onnx

    signature = [keras.InputSpec(shape=(None, size, size, 3), dtype="uint8", name="image")]
    try:
        with warnings.catch_warnings():  # Keras' NumPy 2 patch for tf2onnx probes np.object
            warnings.simplefilter("ignore", FutureWarning)
            serving.export(str(path), format="onnx", verbose=False, input_signature=signature)
    except Exception as err:  # noqa: BLE001  tf2onnx raises many kinds
        raise _unsupported("ONNX", str(err), serving) from None
    graph = onnx.load(str(path)).graph
    unknown = [node for node in graph.node if not onnx.defs.has(node.op_type, node.domain or "")]
    if unknown:
        raise UnsupportedLayerError("ONNX", layers_in("\n".join(n.name for n in unknown), serving),
                                    sorted({n.op_type for n in unknown}))


def verify(model, settings: dict, path: Path, fmt: str, quantize: str, images: np.ndarray | None,
           size: int, runner=None) -> dict:
    """Top-1 agreement and max |Δp| of the exported file against Keras' `predict_probabilities`
    (with the model's TTA and temperature, `settings`). An unquantised export that disagrees is a
    broken export: refused."""
    from ..model.inference import predict_probabilities
    from .runtime import open_runner

    data = "generated" if images is None else "calibration"
    if images is None:  # no data given: generated images still catch a broken graph
        images = np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    images = images[:VERIFY_IMAGES]
    expected = predict_probabilities(model, images, 32, **settings)
    got = predict_probabilities(runner or open_runner(path, fmt), images, 32, "none")
    result = {"images": int(len(images)), "data": data,
              "top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1))),
              "max_abs_diff": float(np.abs(expected - got).max())}
    if quantize == "none" and result["max_abs_diff"] > FLOAT_TOLERANCE:
        raise ExportError(f"{path}: the {FORMAT_NAMES[fmt]} export differs from Keras by up to "
                          f"{result['max_abs_diff']:.2g} in probability (allowed {FLOAT_TOLERANCE:g}); "
                          "the conversion is wrong, do not use the file")
    return result


class SavedModelRunner:
    """The `serve` signature of the SavedModel `export_model` has just written, in TensorFlow. Only
    for that check: loading a SavedModel runs its graph, so one from elsewhere is never loaded."""

    def __init__(self, folder: str | Path):
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(folder))  # owns the variables: keep it alive
        (spec,) = self._loaded.serve.input_signature
        self.input_shape = tuple(spec.shape)
        outs = self._loaded.serve.get_concrete_function().structured_outputs
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        # [probabilities, ood_score] like the Keras model when it carries a detector
        self.output_shape = tuple(outs[0].shape) if len(outs) == 1 else [tuple(o.shape) for o in outs]

    def predict_on_batch(self, images: np.ndarray):
        result = self._loaded.serve(np.ascontiguousarray(images, dtype=np.uint8))
        return [o.numpy() for o in result] if isinstance(result, (list, tuple)) else result.numpy()


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"keras": keras.__version__, "tensorflow": tf.__version__}
