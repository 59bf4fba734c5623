"""Run-time kernel choice: what is listed, what is picked, and forcing by name."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mnist_engine


def run_with_kernel_env(value: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNIST_ENGINE_KERNEL": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_available_is_a_subset_of_compiled_in_priority_order():
    compiled, available = mnist_engine.compiled_kernels(), mnist_engine.available_kernels()
    assert set(available) <= set(compiled)
    assert available == [k for k in compiled if k in available]


def test_default_is_the_best_available(monkeypatch):
    monkeypatch.delenv("MNIST_ENGINE_KERNEL", raising=False)
    assert mnist_engine.default_kernel() == mnist_engine.available_kernels()[0]
    assert mnist_engine.load(mnist_engine.default_model_path()).kernel == mnist_engine.available_kernels()[0]


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels())
def test_env_variable_forces_each_available_kernel(kernel):
    code = ("import mnist_engine as m, numpy as np; e = m.load(m.default_model_path()); "
            "print(e.kernel, m.default_kernel(), m.predict(np.zeros((1, 784), np.uint8)).shape)")
    result = run_with_kernel_env(kernel, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [kernel, kernel, "(1,", "10)"]


def test_unknown_kernel_in_env_is_an_error_not_a_fallback():
    result = run_with_kernel_env("avx9000", "import mnist_engine as m; m.load(m.default_model_path())")
    assert result.returncode != 0
    assert "MNIST_ENGINE_KERNEL 'avx9000' is not a kernel of this build" in result.stderr


def test_unknown_kernel_argument_is_an_error():
    with pytest.raises(ValueError, match="'nope' is not a kernel of this build; expected one of: .*scalar"):
        mnist_engine.load(mnist_engine.default_model_path(), kernel="nope")


def test_unsupported_kernel_is_an_error():
    unsupported = [k for k in mnist_engine.compiled_kernels() if k not in mnist_engine.available_kernels()]
    if not unsupported:
        pytest.skip("this CPU supports every compiled kernel")
    with pytest.raises(ValueError, match="not supported by this CPU"):
        mnist_engine.load(mnist_engine.default_model_path(), kernel=unsupported[0])
