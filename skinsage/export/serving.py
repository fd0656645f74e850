"""The graph that is exported: raw uint8 RGB (N, S, S, 3) in, class probabilities out.

Preprocessing and logit adjustment are already layers of a SkinSage model; the only thing the
Python inference path adds is test-time augmentation, so a model recorded with `tta: flips` gets
the four flipped views and their mean as part of the graph. An exported file then needs no
SkinSage code to give the numbers `evaluate` scored.
"""

from __future__ import annotations

import re

from ..errors import SkinSageError

SERVING_NAME = "skinsage_serving"


class ExportError(SkinSageError, ValueError):
    """The model cannot be exported as asked."""


class UnsupportedLayerError(ExportError):
    """A layer of the model uses operations the target format has no kernel for."""

    def __init__(self, fmt: str, layers: list[str], ops: list[str], detail: str = ""):
        self.format, self.layers, self.ops = fmt, layers, ops
        where = (f"layer(s) {', '.join(layers)}" if layers else "the model")
        what = f"operation(s) {', '.join(ops)}" if ops else "operations"
        super().__init__(f"cannot export to {fmt}: {where} use(s) {what} that {fmt} has no built-in "
                         f"kernel for; replace the layer with standard Keras ops or use another "
                         f"--format{detail}")


def serving_model(model, tta: str, temperature: float = 1.0):
    """`model` as one functional graph run as it is evaluated: with its TTA (`inference.flip_variants`:
    the image, its horizontal, vertical and double flip; the mean of their probabilities), then its
    temperature (softmax(log p / T), as `temperature.apply_temperature`)."""
    import keras

    from ..model.inference import check_tta

    check_tta(tta, ExportError, "TTA")
    if tta == "none" and temperature == 1.0:
        return model
    (image,) = model.inputs
    inputs = keras.Input(tuple(image.shape[1:]), dtype=image.dtype, name="image")
    ops = keras.ops
    if tta == "flips":
        # the four views stacked along the batch: one call of the network, so converters keep one
        # copy of its weights (four calls duplicated them in the .tflite) and run one bigger batch
        views = ops.concatenate([inputs, ops.flip(inputs, axis=2), ops.flip(inputs, axis=1),
                                 ops.flip(ops.flip(inputs, axis=1), axis=2)], axis=0)
        probabilities, *ood = _outputs(model(views))
        outputs = ops.mean(ops.reshape(probabilities, (4, -1, probabilities.shape[-1])), axis=0)
        ood = [ops.mean(ops.reshape(ood[0], (4, -1)), axis=0)] if ood else []  # as inference averages it
    else:
        outputs, *ood = _outputs(model(inputs))
    if temperature != 1.0:
        outputs = ops.softmax(ops.log(ops.maximum(outputs, 1e-30)) / temperature, axis=-1)
    # the ood_score (model/ood.py) travels as a second output; the adapters return both
    return keras.Model(inputs, [outputs, *ood] if ood else outputs, name=SERVING_NAME)


def _outputs(result) -> list:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def leaf_layers(model) -> dict[str, str]:
    """Every layer's name -> its class name, the layers of nested models included (the converted
    graph's op names are paths through them) but not the nested models themselves."""
    import keras

    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(leaf_layers(layer))
        else:
            found[layer.name] = type(layer).__name__
    return found


def layers_in(text: str, model) -> list[str]:
    """The layers, as "'name' (Class)", whose op paths (e.g. `skinsage_cnn_1/bad_svd_1/Svd`) occur
    in a converter's message."""
    return [f"'{name}' ({cls})" for name, cls in leaf_layers(model).items()
            if re.search(rf'(?:^|[/"\s]){re.escape(name)}(?:_\d+)?/', text)]
