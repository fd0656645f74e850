"""Fixtures shared by test_predict.py and test_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny random-weight model saved exactly as `train` saves it."""
    from tiny_model import save_tiny_model
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.keras")


@pytest.fixture(scope="module")
def clf(model_path):
    from skinsage.app.classifier import Classifier
    return Classifier.load(model_path)


@pytest.fixture(autouse=True)
def skinsage_messages():
    """Tests see SkinSage's messages as a stage or the CLI shows them (logging configured)."""
    from skinsage.log import configure
    configure(0)
