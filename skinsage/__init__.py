"""SkinSage: skin-lesion image classification as a reproducible DVC pipeline."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of logs

__version__ = "0.1.0"
__all__ = ["Classifier", "Prediction"]


def __getattr__(name: str):
    """`from skinsage import Classifier` without importing TensorFlow until a model is loaded."""
    if name in __all__:
        from . import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'skinsage' has no attribute '{name}'")
