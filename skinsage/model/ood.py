"""The out-of-distribution detector: how unlike the training lesions an image is (`ood_score`).

For the last `train.ood.stages` resolution stages of the network (the last layer at each spatial
size: the conv blocks of the CNN, the residual stages of ResNet50) each channel's mean and standard
deviation over the image are taken (`ChannelStats`), and a Gaussian fitted on the training lesions scores how far those
statistics lie from theirs (a Mahalanobis distance; Lee et al. 2018 use such per-layer scores as a
feature ensemble). Each stage's distance is standardised by its spread on validation lesions and
the stages are averaged. A photo, a chart or a fundus image is far from the lesions there even when the
classifier is sure of a class (benchmarks/ood.py; docs/results.md has the figures).

Everything is a layer of the saved model (`OodScore`, its fitted statistics as weights) and a
second output beside the probabilities, computed in the same forward pass: exported graphs carry
it, and with TTA each view is scored and the scores averaged, as the probabilities are. Only
lesions are used to fit it (never pictures of other kinds: a detector fitted on a list of
outliers learns that list); its threshold keeps `train.ood.retain` of the validation lesions.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

log = logging.getLogger(__name__)

OOD_OUTPUT = "ood_score"
# A stage with more channel statistics than this (ResNet50: up to 4096) keeps the top principal
# directions exactly and the rest as one isotropic residual (probabilistic PCA): the weights stay
# small (512 x 4096 floats) and the covariance estimable from a few thousand training images.
MAX_RANK = 256
SHRINKAGE = 1e-3  # ridge on the covariance (relative to its mean eigenvalue): no direction has zero variance


@keras.saving.register_keras_serializable(package="skinsage")
class ChannelStats(keras.layers.Layer):
    """(N, H, W, C) -> (N, 2C): each channel's mean and standard deviation over the image."""

    def call(self, x):
        ops = keras.ops
        x = ops.cast(x, "float32")
        mean = ops.mean(x, axis=(1, 2))
        var = ops.maximum(ops.mean(ops.square(x), axis=(1, 2)) - ops.square(mean), 0.0)
        return ops.concatenate([mean, ops.sqrt(var + 1e-8)], axis=-1)


@keras.saving.register_keras_serializable(package="skinsage")
class OodScore(keras.layers.Layer):
    """[(N, D_s) statistics per stage] -> (N,) ood_score: the mean over stages of the standardised
    Gaussian distance. Weights per stage: mean (D), whitening (D, k), basis (D, k), residual
    precision, and the validation location and scale of the distance."""

    def __init__(self, dims, ranks, **kwargs):
        super().__init__(**kwargs)
        self.dims, self.ranks = [int(d) for d in dims], [int(k) for k in ranks]
        self.stage_weights = []
        for i, (d, k) in enumerate(zip(self.dims, self.ranks)):
            def make(name, shape, i=i):
                return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=f"{name}_{i}")
            self.stage_weights.append({"mean": make("mean", (d,)), "whiten": make("whiten", (d, k)),
                                       "basis": make("basis", (d, k)), "residual": make("residual", ()),
                                       "loc": make("loc", ()), "scale": make("scale", ())})

    def call(self, stats):
        ops = keras.ops
        total = 0.0
        for x, w in zip(stats, self.stage_weights):
            centred = ops.cast(x, "float32") - w["mean"]
            inside = ops.sum(ops.square(ops.matmul(centred, w["whiten"])), axis=-1)
            off = ops.sum(ops.square(centred), axis=-1) - ops.sum(ops.square(ops.matmul(centred, w["basis"])), axis=-1)
            distance = inside + w["residual"] * ops.maximum(off, 0.0)  # as `distances` below
            total = total + (distance - w["loc"]) / w["scale"]
        return total / len(self.stage_weights)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "dims": self.dims, "ranks": self.ranks}


def functional(model) -> keras.Model:
    """The model as a functional graph whose layers are each called once, so `layer.output` is the
    tensor the detector joins. A Sequential CNN (or a functional wrapper over its graph, as
    logit_adjustment makes: its layers keep the Sequential's calls) is a chain of layers: rebuilt as
    fresh copies with the same weights. Other functional models (ResNet50, whose head layers were
    also called on cached features; clinical inputs) as they are: stage_tensors walks their own graph."""
    single = all(len(layer._inbound_nodes) <= 1 for layer in model.layers)
    if not isinstance(model, keras.Sequential) and (single or len(model.inputs) > 1 or not _is_chain(model)):
        return model
    (original,) = model.inputs
    inputs = keras.Input(original.shape[1:], dtype=original.dtype, name="image")
    x = inputs
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        copy = type(layer).from_config(layer.get_config())
        x = copy(x)
        copy.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=model.name)


def _is_chain(model) -> bool:
    """Whether every layer of the model's own graph takes one tensor (no residual or merge layer)."""
    return all(len(layer._inbound_nodes[tensor._keras_history[1]].input_tensors) <= 1
               for layer, tensor in _graph_tensors(model))


def stage_tensors(model, stages: int) -> list:
    """The last 4-D output at each spatial size, in order, of the last `stages` resolution stages."""
    last = {}
    for layer, output in _graph_tensors(model):
        if len(output.shape) == 4 and type(layer).__name__ != "InputLayer":
            last[tuple(output.shape[1:3])] = output
    if not last:
        raise ValueError(f"{model.name}: no convolutional stage to fit an out-of-distribution detector on")
    return list(last.values())[-stages:]


def _graph_tensors(model) -> list:
    """(layer, tensor) of the model's own graph in topological order, walked back from its
    outputs: a layer also called in another graph (the CNN's layers, built in a Sequential first)
    has several outputs, and `layer.output` may be the other graph's."""
    seen, order = set(), []

    def visit(tensor):
        if id(tensor) in seen:
            return
        seen.add(id(tensor))
        layer, node_index, _ = tensor._keras_history
        for parent in layer._inbound_nodes[node_index].input_tensors:
            visit(parent)
        order.append((layer, tensor))

    for output in model.outputs:
        visit(output)
    return order


def statistics_model(model, stages: int) -> keras.Model:
    """inputs -> [per-stage channel statistics, probabilities]: what the detector is fitted on."""
    model = functional(model)
    stats = [ChannelStats(name=f"ood_stats_{i}")(t) for i, t in enumerate(stage_tensors(model, stages))]
    return keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0],
                       [*stats, model.outputs[0]], name=f"{model.name}_stats")


def fit_gaussian(stats: np.ndarray) -> dict:
    """Mean, whitening and residual of one stage's training statistics (N, D), float64."""
    mean = stats.mean(axis=0)
    cov = np.cov(stats - mean, rowvar=False, bias=True).reshape(stats.shape[1], stats.shape[1])
    cov += SHRINKAGE * max(np.trace(cov) / len(cov), 1e-12) * np.eye(len(cov))
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    k = min(MAX_RANK, len(values))
    rest = values[k:]
    return {"mean": mean, "whiten": vectors[:, :k] / np.sqrt(values[:k]), "basis": vectors[:, :k],
            "residual": float(1.0 / rest.mean()) if len(rest) else 0.0}


def with_detector(model, gaussians: list[dict], val_distances: np.ndarray) -> keras.Model:
    """The model with a second output `ood_score` (the per-stage distances standardised by their
    validation median and spread, `val_distances` (N, S))."""
    model = functional(model)
    stats = [ChannelStats(name=f"ood_stats_{i}")(t) for i, t in enumerate(stage_tensors(model, len(gaussians)))]
    dims = [int(s.shape[-1]) for s in stats]
    layer = OodScore(dims, [g["whiten"].shape[1] for g in gaussians], name=OOD_OUTPUT, dtype="float32")
    score = layer(stats)
    loc = np.median(val_distances, axis=0)
    scale = np.maximum(np.subtract(*np.percentile(val_distances, [75, 25], axis=0)), 1e-6)
    layer.set_weights([np.asarray(v, dtype=np.float32) for g, lo, sc in zip(gaussians, loc, scale)
                       for v in (g["mean"], g["whiten"], g["basis"], g["residual"], lo, sc)])
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.input
    return keras.Model(inputs, [model.outputs[0], score], name=model.name)


def distances(stats: list[np.ndarray], gaussians: list[dict]) -> np.ndarray:
    """(N, S) the layer's per-stage distance in NumPy (float64), for fitting its standardisation."""
    out = []
    for x, g in zip(stats, gaussians):
        centred = x - g["mean"]
        inside = np.sum((centred @ g["whiten"]) ** 2, axis=-1)
        off = np.sum(centred ** 2, axis=-1) - np.sum((centred @ g["basis"]) ** 2, axis=-1)
        out.append(inside + g["residual"] * np.maximum(off, 0.0))
    return np.stack(out, axis=-1)


def fit_detector(model, train, val, batch_size: int, tta: str, stages: int) -> keras.Model:
    """The model with its `ood_score` output, fitted on `train` (one view per image: training
    already saw flips) and standardised on `val`'s views as inference will see them (`tta`).
    `train`/`val`: prepared splits (their clinical metadata, if any, goes in beside the images)."""
    from .inference import variant_outputs

    stats_model = statistics_model(model, stages)
    fitted = variant_outputs(stats_model, train, batch_size, "none", clinical=train.clinical, raw=True)
    gaussians = [fit_gaussian(stage[0]) for stage in fitted[:-1]]
    seen = variant_outputs(stats_model, val, batch_size, tta, clinical=val.clinical, raw=True)
    val_distances = np.concatenate([distances(list(view), gaussians)
                                    for view in zip(*[stage for stage in seen[:-1]])])
    log.info(f"out-of-distribution detector: a Gaussian per stage on {len(train)} training images "
             f"({', '.join(str(g['mean'].shape[0]) for g in gaussians)} statistics)")
    return with_detector(model, gaussians, val_distances)
