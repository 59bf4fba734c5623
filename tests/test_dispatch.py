"""Run-time kernel choice: what is listed, what is picked, and forcing by name."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mnist_engine


def run_with_kernel_env(value: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNIST_ENGINE_KERNEL": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_available_is_a_subset_of_compiled_in_priority_order():
    compiled, available = mnist_engine.compiled_kernels(), mnist_engine.available_kernels()
    assert set(available) <= set(compiled)
    assert available == [k for k in compiled if k in available]


PRECISIONS = mnist_engine.available_precisions()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_default_is_the_best_available(monkeypatch, precision):
    monkeypatch.delenv("MNIST_ENGINE_KERNEL", raising=False)
    best = mnist_engine.available_kernels(precision)[0]
    assert mnist_engine.default_kernel(precision) == best
    assert mnist_engine.load(mnist_engine.default_model_path(), precision=precision).kernel == best
    assert mnist_engine.default_kernel() == mnist_engine.available_kernels("fp32")[0]


def test_every_kernel_computes_one_precision():
    by_precision = [k for p in ("fp32", "bf16", "int8") for k in mnist_engine.available_kernels(p)]
    assert sorted(by_precision) == sorted(mnist_engine.available_kernels())
    assert all(mnist_engine.available_kernels(p)[-1].endswith("scalar") for p in ("fp32", "bf16", "int8"))


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels())
def test_env_variable_forces_each_available_kernel(kernel):
    """The variable holds one name per precision; each applies to loads of its own precision only."""
    precision = mnist_engine._core.kernel_precision(kernel)
    code = ("import mnist_engine as m, numpy as np; "
            f"e = m.load(m.default_model_path(), precision={precision!r}); "
            f"print(e.kernel, e.precision, m.default_kernel({precision!r}), "
            "e.predict(np.zeros((1, 784), np.uint8)).shape, "
            "m.load(m.default_model_path()).precision)")
    result = run_with_kernel_env(kernel, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [kernel, precision, kernel, "(1,", "10)", "fp32"]


def test_env_variable_with_one_kernel_per_precision():
    code = "import mnist_engine as m; print(m.default_kernel('fp32'), m.default_kernel('int8'))"
    result = run_with_kernel_env("int8-scalar,scalar", code)
    assert result.stdout.split() == ["scalar", "int8-scalar"], result.stderr
    result = run_with_kernel_env("int8-scalar,int8-scalar", code)
    assert "MNIST_ENGINE_KERNEL names two int8 kernels" in result.stderr


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


SIMD = [k for k in mnist_engine.available_kernels() if not k.endswith("scalar")]


def env_disabling(*kernels: str) -> dict:
    """This process's environment with `kernels` disabled too: a run that already acts as another
    CPU (MNIST_ENGINE_DISABLE_KERNELS set by .ci/run's CPU profiles) keeps acting as it."""
    already = [k for k in os.environ.get("MNIST_ENGINE_DISABLE_KERNELS", "").split(",") if k]
    env = {**os.environ, "MNIST_ENGINE_DISABLE_KERNELS": ",".join(already + list(kernels))}
    if not env["MNIST_ENGINE_DISABLE_KERNELS"]:
        env.pop("MNIST_ENGINE_DISABLE_KERNELS")
    env.pop("MNIST_ENGINE_KERNEL", None)
    return env


@pytest.mark.skipif(not SIMD, reason="this CPU runs only the scalar kernels")
@pytest.mark.parametrize("kernel", SIMD)
def test_unsupported_kernel_path_forced_on_any_cpu(kernel):
    """MNIST_ENGINE_DISABLE_KERNELS makes the process treat a kernel as unsupported, so the path a
    machine without it takes (listing, default choice, error on request) runs on every CPU."""
    precision = mnist_engine._core.kernel_precision(kernel)
    code = ("import mnist_engine as m\n"
            f"print(','.join(m.available_kernels({precision!r})), m.default_kernel({precision!r}), "
            f"m.load(m.default_model_path(), precision={precision!r}).kernel)\n"
            f"m.load(m.default_model_path(), kernel={kernel!r})\n")
    result = subprocess.run([sys.executable, "-c", code], env=env_disabling(kernel), capture_output=True, text=True,
                            timeout=120)
    remaining = [k for k in mnist_engine.available_kernels(precision) if k != kernel]
    if remaining[0].endswith("scalar") and precision != "fp32":
        # The reference alone does not make a precision available: loading it is the error.
        assert f"precision '{precision}' has no kernel for this CPU" in result.stderr
        return
    assert result.stdout.split() == [",".join(remaining), remaining[0], remaining[0]], result.stderr
    assert f"requested kernel '{kernel}' is not supported by this CPU; available: {', '.join(remaining)}" \
        in result.stderr


def test_unavailable_precision_names_the_ones_this_cpu_runs():
    code = "import mnist_engine as m; print(m.available_precisions()); m.load(m.default_model_path(), precision='bf16')"
    disabled = [k for k in mnist_engine.available_kernels("bf16") if not k.endswith("scalar")]
    result = subprocess.run([sys.executable, "-c", code], env=env_disabling(*disabled), capture_output=True,
                            text=True, timeout=120)
    assert "'bf16'" not in result.stdout
    assert "precision 'bf16' has no kernel for this CPU (it needs AVX512-BF16 or AMX-BF16); this CPU runs: fp32" \
        in result.stderr


def test_kernel_of_another_precision_is_an_error():
    with pytest.raises(ValueError, match="kernel 'int8-scalar' computes int8, but precision 'fp32' was asked for"):
        mnist_engine.load(mnist_engine.default_model_path(), kernel="int8-scalar", precision="fp32")
    with pytest.raises(ValueError, match="precision 'fp16' is not one of: fp32, bf16, int8"):
        mnist_engine.load(mnist_engine.default_model_path(), precision="fp16")


@pytest.mark.parametrize("value", ["scalar", "int8-scalar", "avx9000"])
def test_disabling_the_reference_or_an_unknown_kernel_is_an_error(value):
    env = {**os.environ, "MNIST_ENGINE_DISABLE_KERNELS": value}
    result = subprocess.run([sys.executable, "-c", "import mnist_engine as m; m.available_kernels()"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"MNIST_ENGINE_DISABLE_KERNELS names '{value}'" in result.stderr


# Kernels that hand small tiles to another kernel (AMX: a tile instruction computes 32 rows whatever
# the batch, so it loses below a measured minimum; cpp/src/dispatch.cpp).
TILE_KERNELS = [k for k in mnist_engine.compiled_kernels() if mnist_engine._core.kernel_min_rows(k) > 1]


def test_only_the_amx_kernels_have_a_minimum_batch():
    assert TILE_KERNELS == [k for k in mnist_engine.compiled_kernels() if k.endswith("-amx")]


def small_batch_partner(kernel: str) -> str:
    """The documented rule: the next kernel of the precision without a minimum, the reference last."""
    precision = mnist_engine._core.kernel_precision(kernel)
    later = [k for k in mnist_engine.available_kernels(precision) if mnist_engine._core.kernel_min_rows(k) == 1]
    return ([k for k in later if not k.endswith("scalar")] or later)[0]


@pytest.mark.skipif(not set(TILE_KERNELS) & set(mnist_engine.available_kernels()),
                    reason="this CPU runs no AMX kernel (tests/test_amx_model.py runs their sources on a model)")
@pytest.mark.parametrize("kernel", [k for k in TILE_KERNELS if k in mnist_engine.available_kernels()])
def test_small_tiles_run_on_the_small_batch_partner(rng, monkeypatch, kernel):
    monkeypatch.delenv("MNIST_ENGINE_KERNEL", raising=False)
    precision, minimum = mnist_engine._core.kernel_precision(kernel), mnist_engine._core.kernel_min_rows(kernel)
    partner = small_batch_partner(kernel)
    auto = mnist_engine.load(mnist_engine.default_model_path(), precision=precision)
    assert auto.kernel == kernel
    assert [auto.kernel_for_rows(n) for n in (0, 1, minimum - 1, minimum, 64)] == [partner] * 3 + [kernel] * 2
    assert f"kernel={kernel} ({partner} for small batches)" in repr(auto)
    # What runs is what kernel_for_rows says: every tile of a batch (64 rows, the last partial)
    # equals, bit for bit, the forced kernel that the tile's size names.
    forced = {k: mnist_engine.load(mnist_engine.default_model_path(), kernel=k) for k in (kernel, partner)}
    x = rng.integers(0, 256, (64 + minimum - 1, 784), dtype=np.uint8)
    for rows in (1, minimum - 1, minimum, 64, 64 + minimum - 1):
        want = np.concatenate([forced[auto.kernel_for_rows(len(tile))].predict(tile)
                               for tile in np.split(x[:rows], range(64, rows, 64))])
        np.testing.assert_array_equal(auto.predict(x[:rows]), want)
    # Forcing the AMX kernel runs every tile on it, the smallest included.
    assert forced[kernel].kernel_for_rows(1) == kernel
