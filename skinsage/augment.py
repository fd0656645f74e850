"""Random augmentation of training batches, with Keras preprocessing layers in the tf.data pipeline.

Dermatoscopic lesions have no canonical orientation, so flips and 90-degree rotations (exact, no
interpolation or filled corners) are safe; brightness/contrast jitter mimics lighting differences.
Augmentation runs on training batches only, so the saved model never contains it.
"""

from __future__ import annotations

import keras

from .params import AugmentParams


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
    if p.brightness > 0:
        chosen.append(keras.layers.RandomBrightness(p.brightness, value_range=(0, 255), seed=seed + 2))
    if p.contrast > 0:
        chosen.append(keras.layers.RandomContrast(p.contrast, value_range=(0, 255), seed=seed + 3))
    return chosen


def describe(p: AugmentParams) -> str:
    parts = [name for name in ("flip", "rotate90") if getattr(p, name)]
    parts += [f"{name} {getattr(p, name):g}" for name in ("brightness", "contrast") if getattr(p, name) > 0]
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

    def transform(images, labels):
        x = tf.cast(images, "float32")
        for layer in chosen:
            x = layer(x, training=True)
        return tf.cast(tf.round(tf.clip_by_value(x, 0, 255)), "uint8"), labels

    return ds.map(transform).prefetch(tf.data.AUTOTUNE)
