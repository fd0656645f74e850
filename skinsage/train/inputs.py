"""tf.data pipelines for training: uint8 image batches (shuffled, augmented) or cached features.

A split of the npz store is cached in memory; one of the shards store streams from its files
(skinsage/shards.py), split among the workers of a multi-worker run by file when it can."""

from __future__ import annotations

import numpy as np

from ..params import Params
from ..prepared import Split
from ..shards import training_batches


def tf_dataset(split: Split, batch_size: int, shuffle: bool = False, seed: int = 0, fields=()):
    """uint8 images (with the clinical `fields`: a dict of named inputs) and labels, optionally
    shuffled per epoch, batched and prefetched: cached in memory (npz store) or streamed from the
    split's shards (image only: the shards store carries no clinical data)."""
    import tensorflow as tf

    from ..model.clinical import model_inputs

    if split.streamed:
        from .distribute import cluster_workers, tf_config

        return training_batches(split.shards, len(split), split.image_size, batch_size, shuffle, seed,
                                workers=max(1, cluster_workers(tf_config())))
    inputs = model_inputs(split.images, split.clinical, list(fields))
    ds = tf.data.Dataset.from_tensor_slices((inputs, split.labels)).cache()
    if shuffle:
        ds = ds.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def arrays_dataset(inputs: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False,
                   seed: int = 0):
    """Batches of in-memory arrays (e.g. cached features), shuffled per epoch with a fixed seed."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def image_datasets(params: Params, data, batch_size: int | None = None):
    """uint8 image batches: training (shuffled per epoch, augmented if `models.<model>.augment` asks) and
    validation (never augmented). `batch_size`: the global batch (default `train.batch_size`; under
    a tf.distribute strategy, train.batch_size x replicas, split among the replicas)."""
    from .augment import augment_dataset

    batch_size = batch_size or params.train.batch_size
    fields = params.model_params.clinical or ()
    train = tf_dataset(data.splits["train"], batch_size, shuffle=True, seed=params.seed, fields=fields)
    val = tf_dataset(data.splits["val"], batch_size, fields=fields)
    return augment_dataset(train, params.model_params.augment, params.seed), val
