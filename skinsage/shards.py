"""The `shards` store of data/prepared: a split as TFRecord files streamed with tf.data.

A split is a folder <split>/ holding shard-00000.tfrecord, shard-00001.tfrecord, ... (records in
the split's order, each a tf.train.Example with the image as raw uint8 bytes and its label) and
fields.npz with the per-image fields small enough to keep in memory: `labels` today; further
per-image arrays (e.g. clinical data) go beside it under their own names.

Raw uint8, not PNG: measured at 64 px (README, "Datasets bigger than memory"), parsing raw bytes
costs next to nothing while decoding PNG competes with training for the same CPU cores, and the
lossless PNG of a dermoscopic photo saves little space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARD_BYTES = 64 << 20     # ~64 MB of pixels per shard: large enough to read fast, enough files to share out
SHUFFLE_BYTES = 128 << 20  # the training shuffle buffer's pixels: bounded whatever the split's size
FIELDS_FILE = "fields.npz"
SHARD_GLOB = "shard-*.tfrecord"


def shard_capacity(image_size: int) -> int:
    """Images per shard file at this image size."""
    return max(1, SHARD_BYTES // (image_size * image_size * 3))


class ShardWriter:
    """Writes one split's images to shard files as they come (`add`), never holding more than one
    image; `close` writes fields.npz. The caller makes the folder appear atomically (the prepared
    folder is written in a temporary folder that is renamed whole)."""

    def __init__(self, folder: str | Path, image_size: int):
        self.folder, self.image_size = Path(folder), image_size
        self.capacity = shard_capacity(image_size)
        self.labels: list[int] = []
        self._writer = None
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, image: np.ndarray, label: int) -> None:
        """Append one (S, S, 3) uint8 image with its label."""
        if image.shape != (self.image_size, self.image_size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a ({self.image_size}, {self.image_size}, 3) uint8 image, "
                             f"got {image.dtype} {image.shape}")
        self.add_record(encode_record(image, label), label)

    def add_record(self, record: bytes, label: int) -> None:
        """Append an already serialized record (copied from another shard set) with its label."""
        import tensorflow as tf

        if len(self.labels) % self.capacity == 0:
            self._close_shard()
            name = f"shard-{len(self.labels) // self.capacity:05d}.tfrecord"
            self._writer = tf.io.TFRecordWriter(str(self.folder / name))
        self._writer.write(record)
        self.labels.append(int(label))

    def close(self) -> None:
        from .fileio import write_npz

        self._close_shard()
        write_npz(self.folder / FIELDS_FILE, labels=np.asarray(self.labels, dtype=np.int64))

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if kind is None:
            self.close()
        else:
            self._close_shard()
        return False


def encode_record(image: np.ndarray, label: int) -> bytes:
    """One serialized tf.train.Example: the image's raw bytes and its label."""
    import tensorflow as tf

    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
               "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(folder: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A split already in memory (MedMNIST, synthetic) written as shards."""
    with ShardWriter(folder, images.shape[1]) as writer:
        for image, label in zip(images, labels):
            writer.add(image, label)


def shard_files(folder: str | Path) -> tuple[str, ...]:
    """The split's shard files in order."""
    return tuple(str(p) for p in sorted(Path(folder).glob(SHARD_GLOB)))


def read_fields(folder: str | Path) -> dict[str, np.ndarray]:
    """The in-memory per-image fields of a sharded split (`labels`, ...)."""
    with np.load(Path(folder) / FIELDS_FILE, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def records(files: tuple[str, ...]):
    """The serialized records of the files, in order."""
    import tensorflow as tf

    return tf.data.TFRecordDataset(list(files), num_parallel_reads=None)


def parse_batch(serialized, image_size: int):
    """A batch of serialized records -> (uint8 images (B, S, S, 3), int64 labels (B,))."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([], tf.string),
                                              "label": tf.io.FixedLenFeature([], tf.int64)})
    images = tf.io.decode_raw(parsed["image"], tf.uint8)
    return tf.reshape(images, (-1, image_size, image_size, 3)), parsed["label"]


def ordered_batches(files: tuple[str, ...], image_size: int, batch_size: int):
    """(images, labels) batches in the split's stored order (evaluation, features, tau sweep)."""
    import tensorflow as tf

    return (records(files).batch(batch_size)
            .map(lambda s: parse_batch(s, image_size), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def training_batches(files: tuple[str, ...], count: int, image_size: int, batch_size: int,
                     shuffle: bool, seed: int, workers: int = 1):
    """(images, labels) batches for fitting: shard files interleaved (in a new seeded order each
    epoch when shuffling) and records shuffled in a buffer of at most SHUFFLE_BYTES of pixels.
    `count`: the split's images. Under MultiWorkerMirroredStrategy every worker reads its own files
    (AutoShardPolicy.FILE), or every n-th record when there are fewer files than `workers` (DATA)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4), block_length=16,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if workers == 1:  # a known length: Keras need not read an epoch to count the batches
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if shuffle:
        buffer = max(1, SHUFFLE_BYTES // (image_size * image_size * 3))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = (ds.batch(batch_size).map(lambda s: parse_batch(s, image_size), num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    return ds.with_options(sharding_options(len(files), workers))


def sharding_options(n_files: int, workers: int):
    """tf.data options splitting the input among the workers of a multi-worker run."""
    import tensorflow as tf

    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.FILE if n_files >= workers else policy.DATA
    return options
