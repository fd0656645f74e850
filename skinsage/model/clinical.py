"""Clinical data (age, sex, anatomical site) as model inputs beside the image.

The encoding lives inside the model, fitted on the training split: sex and site through a
`StringLookup` (the training vocabulary plus one out-of-vocabulary index, which is also where
"unknown" goes, so a category never seen in training is read as unknown); age standardised with the
training mean and standard deviation, a missing age imputed with the mean plus a missing flag
(`layers.AgeEncoding`). The encoded vector is concatenated with the image network's pooled features
before the dense head, as in ISIC 2019's winning entry. Inputs are named by field; the image input
is "image".
"""

from __future__ import annotations


import numpy as np

from ..clinical_rules import UNKNOWN, ClinicalValueError, age_value, category_value
from ..errors import SkinSageError

IMAGE_INPUT = "image"
FUSION_LAYER = "metadata_fusion"


class ClinicalInputError(SkinSageError, ValueError):
    """A model's clinical inputs and the clinical data given do not fit."""


def fit_encoding(fields, clinical: dict[str, np.ndarray] | None) -> dict:
    """The encoding of `fields` fitted on training clinical data: {"age": {"mean", "std"},
    "sex": {"vocabulary": [...]}, ...}, in the order of `fields`; {} for an image-only model."""
    if not fields:
        return {}
    missing = [name for name in fields if name not in (clinical or {})]
    if missing:
        raise ClinicalInputError(f"the model takes {', '.join(fields)} but the prepared training data has no "
                                 f"{', '.join(missing)}: set data.csv.clinical.{missing[0]} and run prepare again")
    encoding = {}
    for name in fields:
        values = clinical[name]
        if name == "age":
            known = np.asarray(values, dtype=np.float64)
            known = known[~np.isnan(known)]
            std = float(known.std()) if len(known) > 1 else 1.0
            encoding[name] = {"mean": float(known.mean()) if len(known) else 0.0, "std": std if std > 0 else 1.0}
        else:
            encoding[name] = {"vocabulary": sorted(set(values.tolist()) - {UNKNOWN}) or [UNKNOWN]}
    return encoding


def encoding_layers(encoding: dict) -> dict:
    """field -> the layer encoding it (named `<field>_encoding`)."""
    import keras

    from .layers import AgeEncoding

    built = {}
    for name, spec in encoding.items():
        built[name] = (AgeEncoding(spec["mean"], spec["std"], name=f"{name}_encoding", dtype="float32")
                       if name == "age" else
                       keras.layers.StringLookup(vocabulary=spec["vocabulary"], num_oov_indices=1,
                                                 output_mode="one_hot", name=f"{name}_encoding"))
    return built


def clinical_input_layers(fields) -> dict:
    """field -> its keras.Input: age a float (NaN = unknown), sex and site strings."""
    import keras

    return {name: keras.Input((1,), dtype="float32" if name == "age" else "string", name=name)
            for name in fields}


def fuse(features, inputs: dict, layers: dict):
    """The pooled image features concatenated with every field's encoding (Concatenate casts the
    float32 encodings to the features' dtype under mixed precision)."""
    import keras

    encoded = [layers[name](inputs[name]) for name in inputs]
    return keras.layers.Concatenate(name=FUSION_LAYER)([features, *encoded])


def shared_layers(model, fields) -> dict:
    """The encoding layers of a built model, to reuse them in another graph (ResNet50's head)."""
    return {name: model.get_layer(f"{name}_encoding") for name in fields}


# --- at inference ---------------------------------------------------------------------------

def clinical_fields(model) -> list[str]:
    """The clinical inputs a model takes (in its input order); [] for an image-only model or an
    exported runtime."""
    names = [getattr(tensor, "name", None) for tensor in getattr(model, "inputs", None) or []]
    return [name for name in names if name and name != IMAGE_INPUT] if len(names) > 1 else []


def image_input_shape(model) -> tuple:
    """(None, S, S, 3): the image input's shape, whatever other inputs the model has."""
    tensors = getattr(model, "inputs", None) or []
    if len(tensors) > 1:
        return tuple(next(t for t in tensors if t.name == IMAGE_INPUT).shape)
    return tuple(model.input_shape)


def model_inputs(images: np.ndarray, clinical: dict | None, fields: list[str]):
    """What the model's predict takes: the images alone, or a dict with each field's column."""
    if not fields:
        return images
    return {IMAGE_INPUT: images, **{name: column(name, clinical[name]) for name in fields}}


def column(name: str, values) -> np.ndarray:
    """(N, 1) model input of one field: float32 ages (NaN when missing), lower-case strings
    ("unknown" when missing), as `prepare` writes them."""
    values = list(np.asarray(values, dtype=object).reshape(-1))
    convert = age_value if name == "age" else category_value
    try:
        converted = [convert(v) for v in values]
    except ClinicalValueError as err:
        raise ClinicalInputError(f"{name}: {err}") from None
    if name == "age":
        return np.asarray(converted, dtype=np.float32).reshape(-1, 1)
    return np.asarray(converted, dtype=object).reshape(-1, 1)


def check_clinical_given(fields: list[str], clinical: dict | None, n: int) -> None:
    """Every field the model takes, one value per image; else a ClinicalInputError naming them."""
    missing = [name for name in fields if name not in (clinical or {})]
    if missing:
        raise ClinicalInputError(f"this model takes clinical data ({', '.join(fields)}) besides the "
                                 f"image, and {', '.join(missing)} was not given; pass it (an unknown "
                                 f"value as empty or '{UNKNOWN}')")
    for name in fields:
        if len(np.asarray(clinical[name], dtype=object).reshape(-1)) != n:
            raise ClinicalInputError(f"clinical '{name}' has {len(clinical[name])} value(s) for {n} image(s)")
