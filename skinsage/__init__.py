"""SkinSage: skin-lesion image classification as a reproducible DVC pipeline.

One sub-package per DVC stage (each stage's `deps` in dvc.yaml is its folder), plus the app:

    data/      prepare   sources, decoding, duplicates, splits -> data/prepared
    train/     train     fitting, ResNet50 phases, augmentation, tau sweep -> models/model.keras
    evaluate/  evaluate  metrics, curves, the files in metrics/
    report/    plot      figures and the model card in plots/
    model/     the saved model: architectures, layers, file format, the one inference path
    app/       the `skinsage` command and the `Classifier` API

and what every stage shares: params.py (params.yaml, validated), prepared.py (the data/prepared
format), fileio.py (atomic writes), errors.py (errors reported as messages), log.py (messages and
progress bars), startup.py (what `import skinsage` arranges before TensorFlow loads).
"""

from . import startup

startup.install()  # before TensorFlow loads: its C++ start-up lines off stderr; our Keras layers registered

__version__ = "0.1.0"
__all__ = ["Classifier", "Prediction"]


def __getattr__(name: str):
    """`from skinsage import Classifier` without importing TensorFlow until a model is loaded."""
    if name in __all__:
        from .app import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'skinsage' has no attribute '{name}'")
