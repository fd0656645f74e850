"""ResNet50 transfer learning: a head phase on the frozen backbone (on cached features when nothing
random comes before the backbone), then optional fine-tuning of the backbone's top blocks."""

from __future__ import annotations

import difflib
import logging
import re
import time

import numpy as np

from ..log import progress
from ..model.architectures import FEATURES_LAYER, HEAD_LAYERS, ModelError
from ..model.clinical import IMAGE_INPUT, clinical_fields, column, fuse, clinical_input_layers, shared_layers
from ..params import RESNET50_BLOCKS, Params
from ..prepared import PreparedData
from .augment import augment_summary
from .distribute import local_copy, replicas, scope
from .inputs import arrays_dataset, image_datasets
from .phase import PhaseResult, best_phase, fit_phase, training_args

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"^(conv\d_block\d+)_")


def backbone_layers(model) -> list:
    """The ResNet50 layers, in graph order: between the preprocessing and the pooled features."""
    names = [layer.name for layer in model.layers]
    start, end = names.index("resnet50_preprocess") + 1, names.index(FEATURES_LAYER)
    return model.layers[start:end]


def residual_blocks(model) -> list[str]:
    """Block names bottom to top: conv2_block1 ... conv5_block3 (RESNET50_BLOCKS in ResNet50)."""
    blocks = []
    for layer in backbone_layers(model):
        match = _BLOCK.match(layer.name)
        if match and match.group(1) not in blocks:
            blocks.append(match.group(1))
    return blocks


def layers_to_unfreeze(model, unfreeze: str) -> list:
    """`unfreeze`: a count of top residual blocks, or the name of the lowest backbone layer to train."""
    layers = backbone_layers(model)
    if unfreeze.strip().isdigit():
        top = set(residual_blocks(model)[-int(unfreeze):])
        first = next(i for i, layer in enumerate(layers) if _block_of(layer.name) in top)
        return layers[first:]
    names = [layer.name for layer in layers]
    if unfreeze not in names:
        close = difflib.get_close_matches(unfreeze, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else " (e.g. conv5_block1_1_conv)"
        raise ModelError(f"models.resnet50.fine_tune.unfreeze: '{unfreeze}' is neither a block count "
                         f"(1..{RESNET50_BLOCKS}) nor a ResNet50 layer name{hint}")
    return layers[names.index(unfreeze):]


def _block_of(name: str) -> str | None:
    match = _BLOCK.match(name)
    return match.group(1) if match else None


def set_trainable_backbone(model, layers: list) -> None:
    """Freeze the whole backbone, then unfreeze `layers` except BatchNormalization: frozen BN runs
    in inference mode (Keras 3), keeping ImageNet statistics that small batches would wreck."""
    import keras

    for layer in backbone_layers(model):
        layer.trainable = False
    for layer in layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def feature_extractor(model):
    """Image -> pooled backbone features, sharing the model's layers."""
    import keras

    image = model.get_layer(IMAGE_INPUT).output  # the image input, also when clinical inputs sit beside it
    return keras.Model(image, model.get_layer(FEATURES_LAYER).output, name="resnet50_features")


def head_model(model):
    """Pooled features (and the clinical inputs, if the model has them) -> class probabilities
    through the model's own encoding and head layers (shared weights: training it trains the full
    model)."""
    import keras

    features = keras.Input(model.get_layer(FEATURES_LAYER).output.shape[1:], name="features")
    fields = clinical_fields(model)
    clinical = clinical_input_layers(fields)
    x = fuse(features, clinical, shared_layers(model, fields)) if fields else features
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return keras.Model({"features": features, **clinical} if fields else features, x, name="resnet50_head")


def compute_features(model, splits: dict, batch_size: int) -> dict[str, np.ndarray]:
    """Pooled features of every split's images (frozen backbone: BatchNorm in inference mode),
    read batch by batch in the split's order (a sharded split streams; the features stay small)."""
    extractor = feature_extractor(model)
    features = {}
    for name, split in splits.items():
        with progress(total=len(split), desc=f"ResNet50 features ({name})") as bar:
            batches = []
            for images in split.batches(batch_size):
                batches.append(np.asarray(extractor.predict_on_batch(images)))
                bar.update(len(images))
        dim = extractor.output_shape[-1]
        features[name] = np.concatenate(batches) if batches else np.zeros((0, dim), np.float32)
    return features


def train_resnet50(model, params: Params, data: PreparedData, class_weight: dict | None,
                   live=None, strategy=None) -> list[PhaseResult]:
    """The head phase, then fine-tuning if `fine_tune.epochs` > 0; the model ends with the best
    weights of either phase (when early stopping restores best weights). With a tf.distribute
    `strategy` (the model built in its scope), both phases train distributed."""
    tune, es = params.model_params.fine_tune, params.train.early_stopping
    to_unfreeze = layers_to_unfreeze(model, tune.unfreeze) if tune.epochs else []  # fail before training
    set_trainable_backbone(model, [])
    head = _head_phase(model, params, data, class_weight, live, strategy)
    if not tune.epochs:
        return [head]
    best_head_weights = model.get_weights() if es.restore_best_weights else None
    set_trainable_backbone(model, to_unfreeze)
    log.info(f"fine-tuning {len(to_unfreeze)} backbone layers from '{to_unfreeze[0].name}' up "
             f"(BatchNorm frozen), learning rate {tune.learning_rate:g}")
    train, val = image_datasets(params, data, params.train.batch_size * replicas(strategy))
    fine = fit_phase("fine_tune", model, train, val, class_weight=class_weight, strategy=strategy, **{
        **training_args(params.train, params.seed, live), "epochs": tune.epochs,
        "learning_rate": tune.learning_rate})
    if best_head_weights is not None and best_phase([head, fine], es.monitor) == 0:
        log.info(f"fine-tuning did not improve {es.monitor}: keeping the head phase's best weights")
        model.set_weights(best_head_weights)
    return [head, fine]


def _head_phase(model, params: Params, data: PreparedData, class_weight: dict | None,
                live=None, strategy=None) -> PhaseResult:
    """Under a strategy, every worker computes the features of the full train and val splits
    itself, with a local copy of the frozen backbone: no collectives and no shared cache to agree
    on, at the price of duplicated (one-off) feature compute; then the head trains distributed."""
    t = params.train
    batch = t.batch_size * replicas(strategy)  # global batch
    fit_args = dict(class_weight=class_weight, strategy=strategy, **training_args(t, params.seed, live))
    if params.model_params.augment.enabled:
        log.info(f"augmentation on ({augment_summary(params.model_params.augment)}): feature caching off "
                 "for the head phase; every epoch runs the frozen backbone on new random variants")
        train, val = image_datasets(params, data, batch)
        result = fit_phase("head", model, train, val, **fit_args)
        result.notes = {"feature_caching": False}
        return result
    start = time.perf_counter()
    features = compute_features(local_copy(model, strategy), {name: data.splits[name] for name in ("train", "val")},
                                t.batch_size)
    seconds = time.perf_counter() - start
    log.info(f"feature caching: backbone features of {sum(len(f) for f in features.values())} images "
             f"computed once in {seconds:.1f} s; the head trains on them")
    labels = {name: data.splits[name].labels for name in ("train", "val")}
    inputs = {name: _head_inputs(features[name], data.splits[name], clinical_fields(model)) for name in labels}
    train = arrays_dataset(inputs["train"], labels["train"], batch, shuffle=True, seed=params.seed)
    val = arrays_dataset(inputs["val"], labels["val"], batch)
    with scope(strategy):  # Keras binds a model to the strategy in scope when it is created
        head = head_model(model)
    result = fit_phase("head", head, train, val, **fit_args)
    result.seconds += seconds
    result.notes = {"feature_caching": True, "feature_seconds": round(seconds, 1)}
    return result


def _head_inputs(features: np.ndarray, split, fields: list[str]):
    """The head model's inputs: the cached features, with the clinical columns if it takes them."""
    if not fields:
        return features
    return {"features": features, **{name: column(name, split.clinical[name]) for name in fields}}

