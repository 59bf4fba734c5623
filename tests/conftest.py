"""Shared fixtures. Tests that need TensorFlow or the MNIST data are skipped when those are
missing on a developer machine, but under CI (CI=true) a missing dependency is a failure: CI must
never turn green by skipping the parity tests."""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from helpers import DenseLayer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"{module} is required under CI but cannot be imported: {e}")
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="session")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return require("keras")


@pytest.fixture(scope="session")
def mnist():
    from mnist_engine.datasets import load_mnist

    try:
        return load_mnist()
    except Exception as e:  # offline and nothing cached
        if IN_CI:
            pytest.fail(f"MNIST is required under CI: {e}")
        pytest.skip(f"MNIST is not available ({e}); see python -m mnist_engine.datasets")


@pytest.fixture(scope="session")
def bundled_keras_model(keras):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "models" / "mnist_mlp_512x2.keras"
    return keras.saving.load_model(path, compile=False, safe_mode=True)


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture
def small_layers(rng):
    """A 6 -> 5 (relu) -> 3 (softmax) network: small enough to break byte by byte."""
    return [DenseLayer(rng.normal(size=(6, 5)) / 2, rng.normal(size=5), "relu"),
            DenseLayer(rng.normal(size=(5, 3)) / 2, rng.normal(size=3), "softmax")]
