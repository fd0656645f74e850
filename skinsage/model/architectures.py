"""The two SkinSage models. Both take raw RGB uint8 images: scaling is a layer inside the model.
With clinical data (`models.<model>.clinical`) they also take it, encoded inside (clinical.py)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras
from keras import layers

from ..errors import SkinSageError
from ..params import CnnParams, Resnet50Params
from .clinical import fuse, encoding_layers, clinical_input_layers
from .layers import ResNet50Preprocess, ShadesOfGray

RESNET50_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_CHOICES = "Use imagenet, null (random initialisation) or the path of a ResNet50 no-top weights file."
# The layers after the backbone, in order; `avg_pool` gives the pooled features that are cached.
FEATURES_LAYER = "avg_pool"
HEAD_LAYERS = ("head_dense", "head_dropout", "probabilities")


class ModelError(SkinSageError, RuntimeError):
    """A model cannot be built as configured."""


def build_model(kind: str, num_classes: int, params: CnnParams | Resnet50Params,
                encoding: dict | None = None) -> keras.Model:
    """`encoding`: the clinical inputs' encoding fitted on training data (clinical.fit_encoding);
    None or {} = image only."""
    if kind == "cnn":
        return build_cnn(num_classes, params, encoding)
    if kind == "resnet50":
        return build_resnet50(num_classes, params, encoding)
    raise ModelError(f"unknown model '{kind}'; choose cnn or resnet50")


def build_cnn(num_classes: int, p: CnnParams, encoding: dict | None = None) -> keras.Model:
    """The seed CNN: conv + max-pool blocks, flatten, two dense layers. Options for larger inputs and
    more accuracy: colour constancy, BatchNorm, more convs per block (VGG-style), a strided first
    conv, global average pooling instead of flatten. With clinical inputs, the pooled features are
    concatenated with their encoding before the dense layers."""
    model = keras.Sequential(name="skinsage_cnn")
    image = keras.Input((p.image_size, p.image_size, 3), dtype="uint8", name="image")
    model.add(image)
    model.add(layers.Rescaling(1.0 / 255))
    if p.color_constancy == "shades_of_gray":
        model.add(ShadesOfGray(dtype="float32"))  # x ** 6 of dark pixels underflows in float16
    for i, filters in enumerate(p.filters):
        for j in range(p.convs_per_block):
            stride = p.stem_stride if i == j == 0 else 1
            model.add(layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=not p.batch_norm,
                                    activation=None if p.batch_norm else "relu"))
            if p.batch_norm:
                model.add(layers.BatchNormalization())
                model.add(layers.ReLU())
        model.add(layers.MaxPooling2D())
    model.add(layers.Flatten() if p.pooling == "flatten" else layers.GlobalAveragePooling2D())
    head = [layers.Dense(p.dense_units, activation="relu"), layers.Dropout(p.dropout),
            # float32 even under mixed precision: a float16 softmax rounds small probabilities to 0
            layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")]
    if not encoding:
        for layer in head:
            model.add(layer)
        return model
    # one flat functional graph: the image layers above, the features fused with the clinical inputs
    x = image
    for layer in model.layers:
        x = layer(x)
    clinical = clinical_input_layers(encoding)
    x = fuse(x, clinical, encoding_layers(encoding))
    for layer in head:
        x = layer(x)
    return keras.Model({"image": image, **clinical}, x, name="skinsage_cnn")


def build_resnet50(num_classes: int, p: Resnet50Params, encoding: dict | None = None) -> keras.Model:
    """ResNet50 backbone (frozen) + global average pooling + two dense layers, as one flat graph
    (backbone layers are the model's own, so inner layers stay reachable, e.g. for Grad-CAM). With
    clinical inputs, the pooled features are concatenated with their encoding before the head."""
    inputs = keras.Input((p.image_size, p.image_size, 3), dtype="uint8", name="image")
    x = ResNet50Preprocess(name="resnet50_preprocess")(inputs)
    backbone = _resnet50_backbone(x, p.weights)
    backbone.trainable = False
    x = layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(backbone.output)
    clinical = clinical_input_layers(encoding or {})
    if clinical:
        x = fuse(x, clinical, encoding_layers(encoding))
    dense_name, dropout_name, output_name = HEAD_LAYERS
    x = layers.Dense(p.dense_units, activation="relu", name=dense_name)(x)
    x = layers.Dropout(p.dropout, name=dropout_name)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=output_name, dtype="float32")(x)  # as in build_cnn
    return keras.Model({"image": inputs, **clinical} if clinical else inputs, outputs, name="skinsage_resnet50")


def _resnet50_backbone(input_tensor, weights: str | None) -> keras.Model:
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ModelError(f"models.resnet50.weights: no file '{weights}' (relative paths start at the "
                         f"project root). {WEIGHTS_CHOICES}")
    try:
        with warnings.catch_warnings():  # .weights.h5 files: noise about containers without variables
            warnings.filterwarnings("ignore", message="Skipping nested container")
            return keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=input_tensor)
    except Exception as err:  # noqa: BLE001  Keras raises a bare Exception when its download fails
        if weights == "imagenet":
            raise ModelError(_imagenet_offline_message(err)) from None
        raise ModelError(_weights_mismatch_message(weights, err)) from None


def keras_models_dir() -> str:
    """Where Keras caches downloaded weights: $KERAS_HOME/models, else ~/.keras/models."""
    try:
        from keras.src.backend.config import keras_home  # no public accessor in Keras 3
        return str(Path(keras_home()) / "models")
    except ImportError:  # pragma: no cover - a Keras without it
        return str(Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models")


def _imagenet_offline_message(err: Exception) -> str:
    return (f"ResNet50 ImageNet weights are not in the Keras cache and could not be downloaded ({err}).\n"
            f"Keras looks for {RESNET50_WEIGHTS_FILE} in ~/.keras/models/ ($KERAS_HOME/models/ if "
            f"KERAS_HOME is set; here: {keras_models_dir()}). On a machine without network access, "
            "copy that file there, or set models.resnet50.weights to the path of a copy "
            "(dvc exp run -S models.resnet50.weights=path/to/file.h5), or to null to train from "
            "random initialisation (much less accurate).")


def _weights_mismatch_message(path: str, err: Exception) -> str:
    reason = str(err).strip().splitlines()[0][:300]
    return (f"models.resnet50.weights: '{path}' does not fit ResNet50 without its top ({reason}). "
            f"It must hold weights for keras.applications.ResNet50(include_top=False), like Keras' "
            f"{RESNET50_WEIGHTS_FILE} (the file without '_notop' also has the 1000-class top and "
            f"does not fit). {WEIGHTS_CHOICES}")
