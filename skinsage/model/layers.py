"""SkinSage's custom Keras layers. Each is registered, so a saved model loads in safe mode
(nothing in the file can run code) once this module is imported: `model_file.load_model` does that."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

# keras.applications.resnet50.preprocess_input ("caffe" mode): RGB -> BGR, minus ImageNet means
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="skinsage")
class ResNet50Preprocess(layers.Layer):
    """`keras.applications.resnet50.preprocess_input` as a layer, so the saved model owns it."""

    def call(self, inputs):
        bgr = keras.ops.flip(keras.ops.cast(inputs, "float32"), axis=-1)
        return bgr - keras.ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype="float32")


@keras.saving.register_keras_serializable(package="skinsage")
class ShadesOfGray(layers.Layer):
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004; p = 6 as in ISIC challenge
    entries): each image's channels are divided by their Minkowski p-norm mean, so the same lesion
    photographed under differently tinted light or devices gets the same colours. Input in [0, 1]."""

    def __init__(self, power: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.power = power

    def call(self, images):
        ops = keras.ops
        p_norm_mean = ops.mean(ops.power(images, self.power), axis=(1, 2), keepdims=True)
        illuminant = ops.power(p_norm_mean, 1.0 / self.power)
        # scaled so that a neutral (grey) illuminant leaves the image unchanged
        gain = ops.mean(illuminant, axis=-1, keepdims=True) / ops.maximum(illuminant, 1e-6)
        return ops.clip(images * gain, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package="skinsage")
class LogitAdjustment(layers.Layer):
    """Probabilities -> probabilities * prior ** -tau, renormalised."""

    def __init__(self, class_prior, tau: float, **kwargs):
        super().__init__(**kwargs)
        self.class_prior = [float(p) for p in class_prior]
        self.tau = float(tau)

    def call(self, probabilities):
        scale = keras.ops.convert_to_tensor(np.power(self.class_prior, -self.tau), dtype="float32")
        adjusted = keras.ops.cast(probabilities, "float32") * scale
        return adjusted / keras.ops.sum(adjusted, axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "class_prior": self.class_prior, "tau": self.tau}


@keras.saving.register_keras_serializable(package="skinsage")
class AgeEncoding(layers.Layer):
    """(N, 1) ages in years, NaN when unknown -> (N, 2): the age standardised with the training
    mean and standard deviation (a missing age imputed with the mean, so 0), and a missing flag."""

    def __init__(self, mean: float, std: float, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = float(mean), float(std)

    def call(self, ages):
        ops = keras.ops
        ages = ops.cast(ages, "float32")
        missing = ops.isnan(ages)
        standardised = (ops.where(missing, self.mean, ages) - self.mean) / self.std
        return ops.concatenate([standardised, ops.cast(missing, "float32")], axis=-1)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}
