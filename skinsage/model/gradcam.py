"""Grad-CAM (Selvaraju et al., 2017): where in the image the model found evidence for a class.

The map is computed on the saved model itself (the one `predict` runs): a functional sub-model from
the model's input to [the last convolutional block's output, the class scores], differentiated with
`tf.GradientTape`. Each channel of the block is weighted by the spatial mean of the class score's
gradient with respect to it; the weighted sum, ReLU'd, is the map (positive evidence only).

The class score is the logit before the softmax, as in the paper: the gradient of a saturated
softmax probability vanishes, which would leave a confident model with an empty map. A
`LogitAdjustment` layer on top only shifts the logits by a per-class constant (-tau log prior), so
the gradient is the same with or without it; the class explained by default is the one the adjusted
model predicts. With TTA "flips" the map of each flipped view is flipped back and the four averaged,
as the probabilities are.

    cam = GradCam(model)                    # builds the sub-model once
    result = cam.explain(images, tta="flips")
    result.maps                             # (N, h, w) in [0, 1] at the conv block's resolution
    overlay(photo, result.maps[0])          # the map stretched over the photo, colour-mapped
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SkinSageError
from .inference import flip_variants, predict_probabilities

# ResNet50's last block: its residual sum after ReLU (the layer Grad-CAM papers use for ResNets)
RESNET_LAST_BLOCK = "conv5_block3_out"
# Layers that keep a conv's spatial grid and belong to its block: the map is taken after them
BLOCK_TAIL_TYPES = ("BatchNormalization", "ReLU", "Activation")
DEFAULT_ALPHA = 0.45
DEFAULT_COLORMAP = "turbo"


class GradCamError(SkinSageError, ValueError):
    """The model cannot be explained with Grad-CAM as asked (no such layer, no conv layer)."""


@dataclass(frozen=True)
class GradCamResult:
    maps: np.ndarray           # (N, h, w) float32 in [0, 1]; all zeros where no positive evidence
    class_indices: np.ndarray  # (N,) the class each map explains
    probabilities: np.ndarray  # (N, C) the model's probabilities (the one inference path, same TTA)
    layer: str                 # the layer the maps come from


class GradCam:
    """Grad-CAM for one Keras model; `layer` defaults to its last convolutional block."""

    def __init__(self, model, layer: str | None = None, name: str | None = None):
        self.model = model
        self.name = name or model.name  # how errors refer to the model (its file, when known)
        self.layer = layer or last_conv_layer(model, self.name)
        self._sub_model, self._logit_layer = _sub_model(model, self.layer, self.name)

    def explain(self, images: np.ndarray, class_indices=None, tta: str = "none",
                batch_size: int = 32, temperature: float = 1.0,
                probabilities: np.ndarray | None = None) -> GradCamResult:
        """Maps for (N, S, S, 3) uint8 model inputs: for `class_indices` (one per image, or one
        int for all), else for each image's predicted class. `tta` and `temperature` are how the
        model is run (the probabilities reported; the temperature does not change the maps).
        `probabilities`: the (N, C) the caller already has from the inference path (then the
        model is not run a second time for them)."""
        probs = (predict_probabilities(self.model, images, batch_size, tta, temperature)
                 if probabilities is None else np.asarray(probabilities))
        if class_indices is None:
            targets = probs.argmax(axis=1)
        else:
            targets = np.broadcast_to(np.asarray(class_indices, dtype=np.int64), (len(images),)).copy()
        num_classes = probs.shape[1]
        if np.any((targets < 0) | (targets >= num_classes)):
            raise GradCamError(f"{self.name}: class indices must be in 0..{num_classes - 1}, got "
                               f"{sorted(set(targets.tolist()))}")
        maps = [self._tta_maps(images[i:i + batch_size], targets[i:i + batch_size], tta)
                for i in range(0, len(images), batch_size)]
        maps = np.concatenate(maps) if maps else np.zeros((0, 1, 1), np.float32)
        return GradCamResult(maps=maps, class_indices=targets, probabilities=probs, layer=self.layer)

    def _tta_maps(self, images: np.ndarray, targets: np.ndarray, tta: str) -> np.ndarray:
        # the views are flip_variants' (none; horizontal; vertical; both): undo each on its map
        undo = [(), (2,), (1,), (1, 2)]
        raw = [np.flip(self._raw_maps(np.ascontiguousarray(view), targets), axis=undo[v])
               for v, view in enumerate(flip_variants(images, tta))]
        return normalise(np.mean(raw, axis=0))

    def _raw_maps(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N, h, w) ReLU(sum_k alpha_k A_k), unnormalised (comparable across flipped views)."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            features, head_input, outputs = self._sub_model(images, training=False)
            scores = self._class_scores(head_input, outputs)
            chosen = tf.gather(scores, targets, axis=1, batch_dims=1)
        grads = tape.gradient(chosen, features)
        if grads is None:
            raise GradCamError(f"{self.name}: the class score does not depend on layer "
                               f"'{self.layer}'; choose a layer on the path to the output")
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # alpha_k: pooled gradients
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        return cam.numpy().astype(np.float32)

    def _class_scores(self, head_input, outputs):
        """Pre-softmax logits when the head is a softmax Dense layer; otherwise the log of the
        model's output (monotonic in it, and its gradient passes through any layer on top)."""
        import tensorflow as tf

        if self._logit_layer is None:
            return tf.math.log(tf.maximum(tf.cast(outputs, tf.float32), 1e-12))
        layer = self._logit_layer
        logits = tf.matmul(tf.cast(head_input, tf.float32), layer.kernel)
        return logits + layer.bias if layer.use_bias else logits


def last_conv_layer(model, name: str | None = None) -> str:
    """The layer Grad-CAM explains by default: ResNet50's `conv5_block3_out`; otherwise the last
    Conv2D, extended over the BatchNorm/ReLU right after it (its block's activation)."""
    names = [layer.name for layer in model.layers]
    if RESNET_LAST_BLOCK in names:
        return RESNET_LAST_BLOCK
    convs = [i for i, layer in enumerate(model.layers) if type(layer).__name__ in ("Conv2D", "SeparableConv2D")]
    if not convs:
        raise GradCamError(f"{name or model.name}: no convolutional layer found for Grad-CAM (its "
                           f"layers: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}); "
                           "pass the layer to explain by name")
    i = convs[-1]
    while i + 1 < len(model.layers) and type(model.layers[i + 1]).__name__ in BLOCK_TAIL_TYPES:
        i += 1
    return names[i]


def _sub_model(model, layer_name: str, name: str):
    """(keras.Model input -> [layer output, input of the softmax Dense head, model output], the
    softmax Dense layer or None). Sequential models are re-traced as a functional graph over the
    same layers (same weights): a Sequential's inner tensors are not reliably reachable."""
    import keras

    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise GradCamError(f"{name}: no layer named '{layer_name}' to explain; its convolutional "
                           f"layers: {', '.join(_spatial_layers(model)) or 'none'}")
    logit_layer = _softmax_head(model)
    if isinstance(model, keras.Sequential):
        return _trace_sequential(model, layer_name, logit_layer, name), logit_layer
    target = model.get_layer(layer_name)
    _check_spatial(target.output, layer_name, name)
    head_input = logit_layer.input if logit_layer is not None else model.outputs[0]
    (inputs,) = model.inputs  # the tensor, not a one-element list: Keras warns about the structure
    return keras.Model(inputs, [target.output, head_input, model.outputs[0]]), logit_layer


def _trace_sequential(model, layer_name: str, logit_layer, name: str):
    import keras

    (original,) = model.inputs
    inputs = keras.Input(original.shape[1:], dtype=original.dtype)
    x, features, head_input = inputs, None, None
    for layer in model.layers:
        if layer is logit_layer:
            head_input = x
        x = layer(x)
        if layer.name == layer_name:
            features = x
    _check_spatial(features, layer_name, name)
    return keras.Model(inputs, [features, x if head_input is None else head_input, x])


def _softmax_head(model):
    """The Dense layer with a softmax activation that makes the class probabilities, looked for
    below any LogitAdjustment (a per-class logit shift) at the top; None if there is none."""
    layers = [layer for layer in model.layers  # the out-of-distribution detector is a side branch
              if type(layer).__name__ not in ("InputLayer", "ChannelStats", "OodScore")]
    while layers and type(layers[-1]).__name__ == "LogitAdjustment":
        layers.pop()
    last = layers[-1] if layers else None
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    return last if type(last).__name__ == "Dense" and activation == "softmax" else None


def _check_spatial(tensor, layer_name: str, name: str) -> None:
    if tensor is None or len(tensor.shape) != 4:
        shape = None if tensor is None else tuple(tensor.shape)
        raise GradCamError(f"{name}: layer '{layer_name}' has output shape {shape}; Grad-CAM needs a "
                           "convolutional (batch, height, width, channels) output")


def _spatial_layers(model) -> list[str]:
    return [layer.name for layer in model.layers
            if type(layer).__name__ in ("Conv2D", "SeparableConv2D") or layer.name == RESNET_LAST_BLOCK]


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum -> [0, 1]; an all-zero map (no positive evidence) stays 0."""
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1), 0).astype(np.float32)


def upsample(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """A (h, w) map stretched bilinearly to (height, width): the model saw the whole photo squashed
    to a square, so stretching the map back puts each cell over the part of the photo it saw."""
    from PIL import Image

    image = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F")
    return np.clip(np.asarray(image.resize((width, height), Image.Resampling.BILINEAR)), 0.0, 1.0)


def overlay(photo: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA,
            colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """(H, W, 3) uint8: the photo with the colour-mapped heat map blended in, weighted by the map
    itself so cold regions leave the photo visible."""
    from matplotlib import colormaps

    height, width = photo.shape[:2]
    heat = upsample(heatmap, width, height)
    colours = colormaps[colormap](heat)[..., :3] * 255.0
    weight = alpha * (0.25 + 0.75 * heat)[..., None]  # a faint tint everywhere shows the map's extent
    blended = (1.0 - weight) * photo[..., :3].astype(np.float32) + weight * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
