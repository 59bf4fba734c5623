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
        pytest.skip("this CPU supports every compiled kernel (the forced test below covers the path)")
    with pytest.raises(ValueError, match="not supported by this CPU"):
        mnist_engine.load(mnist_engine.default_model_path(), kernel=unsupported[0])


SIMD = [k for k in mnist_engine.available_kernels() if k != "scalar"]


@pytest.mark.skipif(not SIMD, reason="this CPU runs only the scalar kernel")
@pytest.mark.parametrize("kernel", SIMD)
def test_unsupported_kernel_path_forced_on_any_cpu(kernel):
    """MNIST_ENGINE_DISABLE_KERNELS makes the process treat a kernel as unsupported, so the path a
    machine without it takes (listing, default choice, error on request) runs on every CPU."""
    code = ("import mnist_engine as m\n"
            "print(','.join(m.available_kernels()), m.default_kernel(), m.load(m.default_model_path()).kernel)\n"
            f"m.load(m.default_model_path(), kernel={kernel!r})\n")
    env = {**os.environ, "MNIST_ENGINE_DISABLE_KERNELS": kernel}
    env.pop("MNIST_ENGINE_KERNEL", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    remaining = [k for k in mnist_engine.available_kernels() if k != kernel]
    assert result.stdout.split() == [",".join(remaining), remaining[0], remaining[0]], result.stderr
    assert f"requested kernel '{kernel}' is not supported by this CPU; available: {', '.join(remaining)}" \
        in result.stderr


@pytest.mark.parametrize("value", ["scalar", "avx9000"])
def test_disabling_the_reference_or_an_unknown_kernel_is_an_error(value):
    env = {**os.environ, "MNIST_ENGINE_DISABLE_KERNELS": value}
    result = subprocess.run([sys.executable, "-c", "import mnist_engine as m; m.available_kernels()"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"MNIST_ENGINE_DISABLE_KERNELS names '{value}'" in result.stderr
