"""The two SkinSage models. Both take raw RGB uint8 images: scaling is a layer inside the model."""

from __future__ import annotations

import keras
from keras import layers

from .errors import SkinSageError
from .params import CnnParams, Resnet50Params

RESNET50_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
# keras.applications.resnet50.preprocess_input ("caffe" mode): RGB -> BGR, minus ImageNet means
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


class ModelError(SkinSageError, RuntimeError):
    """A model cannot be built as configured."""


@keras.saving.register_keras_serializable(package="skinsage")
class ResNet50Preprocess(layers.Layer):
    """`keras.applications.resnet50.preprocess_input` as a layer, so the saved model owns it."""

    def call(self, inputs):
        bgr = keras.ops.flip(keras.ops.cast(inputs, "float32"), axis=-1)
        return bgr - keras.ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype="float32")


def build_model(kind: str, num_classes: int, params: CnnParams | Resnet50Params) -> keras.Model:
    if kind == "cnn":
        return build_cnn(num_classes, params)
    if kind == "resnet50":
        return build_resnet50(num_classes, params)
    raise ModelError(f"unknown model '{kind}'; choose cnn or resnet50")


def build_cnn(num_classes: int, p: CnnParams) -> keras.Model:
    """The seed CNN: conv + max-pool blocks, flatten, two dense layers."""
    model = keras.Sequential(name="skinsage_cnn")
    model.add(keras.Input((p.image_size, p.image_size, 3), dtype="uint8", name="image"))
    model.add(layers.Rescaling(1.0 / 255))
    for filters in p.filters:
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.MaxPooling2D())
    model.add(layers.Flatten())
    model.add(layers.Dense(p.dense_units, activation="relu"))
    model.add(layers.Dropout(p.dropout))
    model.add(layers.Dense(num_classes, activation="softmax", name="probabilities"))
    return model


def build_resnet50(num_classes: int, p: Resnet50Params) -> keras.Model:
    """ResNet50 backbone (frozen) + global average pooling + two dense layers, as one flat graph."""
    inputs = keras.Input((p.image_size, p.image_size, 3), dtype="uint8", name="image")
    x = ResNet50Preprocess(name="resnet50_preprocess")(inputs)
    backbone = _resnet50_backbone(x, p.weights)
    backbone.trainable = False
    x = layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    x = layers.Dense(p.dense_units, activation="relu", name="head_dense")(x)
    x = layers.Dropout(p.dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="skinsage_resnet50")


def _resnet50_backbone(input_tensor, weights: str | None) -> keras.Model:
    try:
        return keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=input_tensor)
    except Exception as err:  # Keras raises a bare Exception when its download fails
        if weights == "imagenet":
            raise ModelError(_imagenet_offline_message(err)) from None
        raise ModelError(f"models.resnet50.weights: cannot load '{weights}' into ResNet50 ({err}). "
                         "Use imagenet, null, or a ResNet50 no-top weights file.") from None


def _imagenet_offline_message(err: Exception) -> str:
    return (f"ResNet50 ImageNet weights could not be downloaded ({err}).\n"
            f"Keras looks for {RESNET50_WEIGHTS_FILE} in ~/.keras/models/ (or $KERAS_HOME/models/). "
            "On a machine without network access, copy that file there, or set "
            "models.resnet50.weights to the path of a copy, or to null to train from random "
            "initialisation (much less accurate).")
