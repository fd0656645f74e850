"""SkinSage: skin-lesion image classification as a reproducible DVC pipeline."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of logs

__version__ = "0.1.0"
