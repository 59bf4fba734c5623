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


def pytest_report_header(config):
    """Which kernels this run tests and which it cannot, and why: every kernel is built everywhere,
    and a run tests those the CPU (as tools/as_cpu.sh may present it) runs."""
    import platform

    import mnist_engine

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    disabled = [k for k in os.environ.get("MNIST_ENGINE_DISABLE_KERNELS", "").split(",") if k]
    available = mnist_engine.available_kernels()

    def why(kernel: str) -> str:
        reason = "MNIST_ENGINE_DISABLE_KERNELS" if kernel in disabled else "not on this CPU"
        return reason + ("; its source runs on the AMX model in tests/test_amx_model.py" if "amx" in kernel else "")

    skipped = [f"{k} ({why(k)})" for k in mnist_engine.compiled_kernels() if k not in available]
    return [f"mnist_engine kernels tested on {cpu}: {', '.join(available)}",
            f"mnist_engine kernels skipped: {', '.join(skipped) or 'none'}"]


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
