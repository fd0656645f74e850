"""Random augmentation of training batches, with Keras preprocessing layers in the tf.data pipeline.

Dermatoscopic lesions have no canonical orientation, so flips and 90-degree rotations (exact, no
interpolation or filled corners) are safe; small any-angle rotations and zooms (borders filled by
reflection) vary framing and scale; brightness/contrast jitter mimics lighting differences.
Augmentation runs on training batches only, so the saved model never contains it.
"""

from __future__ import annotations

import keras

from ..params import AugmentParams


class RandomRotate90(keras.layers.Layer):
    """Rotates each (square) image by a random multiple of 90 degrees."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        turns = keras.random.randint((keras.ops.shape(images)[0],), 0, 4, seed=self.seed_generator)
        rotations = keras.ops.stack([keras.ops.rot90(images, k, axes=(1, 2)) for k in range(4)], axis=1)
        index = keras.ops.reshape(turns, (-1, 1, 1, 1, 1))
        return keras.ops.take_along_axis(rotations, index, axis=1)[:, 0]


def augmentation_layers(p: AugmentParams, seed: int) -> list[keras.layers.Layer]:
    """The layers `p` switches on, geometric first; each seeded from `seed`."""
    chosen = []
    if p.flip:
        chosen.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if p.rotate90:
        chosen.append(RandomRotate90(seed=seed + 1))
    if p.rotation > 0:
        chosen.append(keras.layers.RandomRotation(p.rotation / 360, fill_mode="reflect", seed=seed + 4))
    if p.zoom > 0:  # negative factors zoom in; width follows height, keeping the aspect ratio
        chosen.append(keras.layers.RandomZoom((-p.zoom, 0.0), fill_mode="reflect", seed=seed + 5))
    if p.brightness > 0:
        chosen.append(keras.layers.RandomBrightness(p.brightness, value_range=(0, 255), seed=seed + 2))
    if p.contrast > 0:
        chosen.append(keras.layers.RandomContrast(p.contrast, value_range=(0, 255), seed=seed + 3))
    return chosen


def augment_summary(p: AugmentParams) -> str:
    parts = [name for name in ("flip", "rotate90") if getattr(p, name)]
    parts += [f"{name} {getattr(p, name):g}" for name in ("rotation", "zoom", "brightness", "contrast")
              if getattr(p, name) > 0]
    return ", ".join(parts) or "none"


def augment_dataset(ds, p: AugmentParams, seed: int):
    """(uint8 images, labels) batches -> randomly transformed uint8 batches, new draws every epoch.

    Mapped sequentially: parallel calls would draw from the layers' random state in varying order
    and break run-to-run determinism.
    """
    import tensorflow as tf

    chosen = augmentation_layers(p, seed)
    if not chosen:
        return ds

    def transform(inputs, labels):
        x = tf.cast(inputs["image"] if isinstance(inputs, dict) else inputs, "float32")  # clinical inputs stay
        for layer in chosen:
            x = layer(x, training=True)
        images = tf.cast(tf.round(tf.clip_by_value(x, 0, 255)), "uint8")
        return ({**inputs, "image": images} if isinstance(inputs, dict) else images), labels

    return ds.map(transform).prefetch(tf.data.AUTOTUNE)


def one_hot_dataset(ds, num_classes: int):
    """(images, class indices) -> (images, one-hot float labels), for losses that need them."""
    import tensorflow as tf

    return ds.map(lambda x, y: (x, tf.one_hot(tf.cast(tf.reshape(y, [-1]), "int32"), num_classes)))


def mixup_dataset(ds, alpha: float, seed: int):
    """Mixup (Zhang et al., 2018): each input and its one-hot label mixed with another of the batch,
    weight ~ Beta(alpha, alpha). uint8 images stay uint8 (rounded), as the model expects; float
    inputs (ResNet50's cached features) are mixed as they are."""
    import tensorflow as tf

    seeds = keras.random.SeedGenerator(seed + 10)

    def mix(images, labels):
        n = tf.shape(images)[0]
        weight = keras.random.beta((n,), alpha, alpha, seed=seeds)
        partner = keras.random.shuffle(tf.range(n), seed=seeds)
        x = tf.cast(images, "float32")
        w = tf.reshape(weight, tf.concat([[-1], tf.ones([tf.rank(x) - 1], "int32")], axis=0))
        mixed = w * x + (1 - w) * tf.gather(x, partner)
        labels = weight[:, None] * labels + (1 - weight[:, None]) * tf.gather(labels, partner)
        if images.dtype.is_integer:
            mixed = tf.round(mixed)
        return tf.cast(mixed, images.dtype), labels

    return ds.map(mix).prefetch(tf.data.AUTOTUNE)
