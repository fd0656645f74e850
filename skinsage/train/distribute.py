"""GPUs and clusters: mixed precision and the tf.distribute strategy of `train`.

`train.distribute` picks the strategy (`auto` decides from TF_CONFIG and the visible GPUs). The
model is built, compiled and fitted inside the strategy's scope; each replica gets
`train.batch_size` images, so the global batch is batch_size x replicas. The learning rate is not
scaled with it: the usual linear scaling rule needs warm-up to be safe with Adam, and the defaults
were tuned for one device; raise `train.learning_rate` yourself when the global batch grows a lot.

Only the chief writes files (`is_chief`): TF_CONFIG's `chief` task, or worker 0 when there is none.
Workers stay in step because every collective (gradients, metrics) is called by all of them in the
same order; everything after training (tau sweep, saving) runs on a local copy of the model
(`local_copy`), so it needs no collectives and cannot deadlock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from ..errors import SkinSageError

log = logging.getLogger(__name__)

MIXED_POLICY = "mixed_float16"
STRATEGY_NAMES = {"mirrored": "MirroredStrategy", "multi_worker": "MultiWorkerMirroredStrategy"}


class DistributeError(SkinSageError, RuntimeError):
    """train.distribute or TF_CONFIG cannot be used as set."""


def tf_config(environ=os.environ) -> dict:
    """TF_CONFIG as a dict ({} when unset); a malformed value is named, not ignored."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({err}); expected e.g. "
                              '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                              '"task": {"type": "worker", "index": 0}}') from None
    if not isinstance(config, dict):
        raise DistributeError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return config


def cluster_workers(config: dict) -> int:
    """Processes that train: the chief plus the workers TF_CONFIG lists."""
    cluster = config.get("cluster") or {}
    return len(cluster.get("chief") or []) + len(cluster.get("worker") or [])


def is_chief(config: dict | None = None) -> bool:
    """Whether this process writes the model, metrics and dvclive files: TF_CONFIG's chief, or
    worker 0 when the cluster has no chief; always true without TF_CONFIG."""
    config = tf_config() if config is None else config
    task = config.get("task") or {}
    if not task:
        return True
    cluster = config.get("cluster") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if cluster.get("chief"):
        return kind == "chief"
    return kind == "worker" and index == 0


def resolve_mode(mode: str, config: dict, gpus: int) -> str:
    """`auto`: multi_worker when TF_CONFIG lists more than one worker, mirrored with more than one
    GPU, else none; other modes as given (multi_worker needs TF_CONFIG)."""
    if mode == "auto":
        if cluster_workers(config) > 1:
            return "multi_worker"
        return "mirrored" if gpus > 1 else "none"
    if mode == "multi_worker" and not cluster_workers(config):
        raise DistributeError("train.distribute: multi_worker needs the TF_CONFIG environment variable "
                              "(cluster and task; see docs/clusters.md), which is not set; "
                              "set it on every worker or use train.distribute: none")
    return mode


def make_strategy(mode: str):
    """The strategy for `train.distribute`, or None (no strategy: the single-device path). Call it
    before any other TensorFlow op: MultiWorkerMirroredStrategy must come first in the process."""
    import tensorflow as tf

    config = tf_config()
    gpus = tf.config.list_physical_devices("GPU")  # lists devices without initialising TensorFlow
    resolved = resolve_mode(mode, config, len(gpus))
    if resolved == "none":
        return None
    if resolved == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_multi_worker_mean()
    else:
        strategy = tf.distribute.MirroredStrategy(devices=mirrored_devices())
    log.info(f"distribute: {resolved} ({STRATEGY_NAMES[resolved]}), {strategy.num_replicas_in_sync} "
             f"replicas in sync; this process is {'the chief' if is_chief(config) else 'a worker (writes nothing)'}")
    return strategy


def mirrored_devices() -> list[str]:
    """Every local GPU; without GPUs, every logical CPU device (more than one only when configured
    with tf.config.set_logical_device_configuration, as the tests do)."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [device.name for device in devices]


def replicas(strategy) -> int:
    return 1 if strategy is None else strategy.num_replicas_in_sync


def scope(strategy):
    """The strategy's scope, or nothing for the single-device path."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def local_copy(model, strategy):
    """The model with plain (non-distributed, uncompiled) variables, built outside the strategy:
    predicting with it needs no collectives. Without a strategy the model itself."""
    if strategy is None:
        return model
    copy = type(model).from_config(model.get_config())  # Sequential or functional, as built
    copy.set_weights(model.get_weights())
    return copy


def patch_symbolic_build(model, strategy) -> None:
    """Work around Keras 3.15 under MultiWorkerMirroredStrategy: before the first step, fit and
    evaluate reduce the whole (images, labels) batch with a single strategy.reduce, which MWMS
    refuses ("ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type
    ... to a Tensor"). That build only needs the batch's shapes and dtypes, so this model builds
    from this worker's local batch instead: no collective, identical on every worker."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build  # this instance only; Keras' private hook (pinned 3.15.1)


def _patch_keras_multi_worker_mean() -> None:
    """Work around Keras 3.15 under MultiWorkerMirroredStrategy: each train/test step averages its
    scalar logs (loss, metrics) across workers with strategy.reduce("MEAN", value, axis=0), which
    fails for a scalar ("ValueError: Invalid reduction dimension 0 for input with 0 dimensions";
    tensorflow/tensorflow#72388). A mean over the replicas (axis=None) is what is meant; every
    worker still calls the same collective in the same order. Other reductions are Keras' own."""
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "skinsage_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return trainer.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.skinsage_patched = True
    trainer.reduce_per_replica = reduce_per_replica  # looked up by name when a step is traced


def set_precision(mode: str) -> str:
    """Set Keras' global dtype policy for `train.mixed_precision` and return its name. `auto` is
    mixed_float16 only with a visible GPU: on a CPU, float16 is emulated and slower."""
    import keras
    import tensorflow as tf

    mixed = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
    policy = MIXED_POLICY if mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    if mixed:
        log.info("mixed precision: mixed_float16 (float16 compute, float32 weights, output and loss)")
    return policy
