"""Every kernel this CPU can run against the scalar reference kernel, and the scalar kernel against
the float64 numpy reference, on awkward shapes: tails of every tile size, single rows and columns."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import mnist_engine
from helpers import build, engine_for, random_layers
from mnist_engine.reference import forward

# Synthetic inputs (normal floats, activation tails up to 3e38) lie far outside the range these test
# models were checked on, on purpose: the InputRangeWarning they get is tests/test_input_range.py's subject.
pytestmark = pytest.mark.filterwarnings("ignore::mnist_engine.InputRangeWarning")

BATCHES = [0, 1, 7, 17, 1000]
# Around every tile edge: SIMD lanes (8, 16), the 64- and 128-column panels and the 64-input index
# block.
WIDTHS = [1, 3, 15, 16, 17, 63, 64, 65, 127, 128, 129, 784]
SHAPES = list(itertools.product(WIDTHS, WIDTHS))
SIMD_KERNELS = [k for k in mnist_engine.available_kernels("fp32") if k != "scalar"]


def test_scalar_reference_is_always_available():
    assert "scalar" in mnist_engine.available_kernels("fp32")
    assert mnist_engine.available_kernels("fp32")[-1] == "scalar"


@pytest.mark.parametrize("n_in, n_out", SHAPES)
def test_scalar_kernel_matches_numpy(rng, n_in, n_out):
    layers = random_layers(rng, [n_in, n_out], ["linear"])
    x = rng.random((17, n_in), dtype=np.float32)
    got = engine_for(layers, kernel="scalar").predict(x)
    np.testing.assert_allclose(got, forward(layers, x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not SIMD_KERNELS, reason="this CPU runs no SIMD kernel")
@pytest.mark.parametrize("kernel", SIMD_KERNELS)
@pytest.mark.parametrize("n_in, n_out", SHAPES)
@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("zeros", [0.0, 0.8, 1.0])
def test_simd_kernel_matches_scalar(rng, kernel, n_in, n_out, activation, zeros):
    layers = random_layers(rng, [n_in, n_out], [activation])
    # Exact zeros are skipped by the sparse kernels: test none, most (like MNIST) and all.
    x = rng.random((max(BATCHES), n_in), dtype=np.float32)
    x[rng.random(x.shape) < zeros] = 0.0
    simd, scalar = engine_for(layers, kernel=kernel), engine_for(layers, kernel="scalar")
    assert simd.kernel == kernel
    for rows in BATCHES:
        got, want = simd.predict(x[:rows]), scalar.predict(x[:rows])
        assert got.shape == (rows, n_out)
        # Only the summation order differs (FMA, lanes): a few ulps of sqrt(n_in)-sized sums.
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(n_in) / 28)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh", "softmax"])
def test_every_activation_matches_numpy(rng, kernel, activation):
    layers = random_layers(rng, [784, 33, 10], ["relu", activation])
    x = rng.integers(0, 256, (70, 784), dtype=np.uint8)
    got = engine_for(layers, kernel=kernel).predict(x)
    np.testing.assert_allclose(got, forward(layers, x / 255.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_softmax_is_stable_for_huge_logits(rng, kernel):
    # Logits near 1e4 overflow exp() unless the row max is subtracted first.
    layers = random_layers(rng, [4, 5], ["softmax"])
    layers[0] = type(layers[0])(layers[0].kernel * 2e4, layers[0].bias, "softmax")
    x = np.ones((3, 4), np.float32)
    got = engine_for(layers, kernel=kernel, input_scale=1.0).predict(x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, forward(layers, x), atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_deep_chain_of_mixed_widths(rng, kernel):
    widths = [784, 100, 50, 25, 10]  # the sklearn MLP shape
    layers = random_layers(rng, widths, ["relu", "relu", "relu", "softmax"])
    x = rng.integers(0, 256, (129, 784), dtype=np.uint8)
    np.testing.assert_allclose(engine_for(layers, kernel=kernel).predict(x), forward(layers, x / 255.0),
                               atol=1e-6)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_threads_do_not_change_results(rng, kernel):
    layers = random_layers(rng, [784, 64, 10], ["relu", "softmax"])
    engine = engine_for(layers, kernel=kernel)
    x = rng.integers(0, 256, (1000, 784), dtype=np.uint8)
    one = engine.predict(x, threads=1)
    # Rows are independent and each row's sums run in a fixed order, so the split cannot matter.
    np.testing.assert_array_equal(engine.predict(x, threads=2), one)
    np.testing.assert_array_equal(engine.predict(x, threads=7), one)


PANEL_WIDTH = {"avx512": 128, "avx2": 64, "neon": 32, "scalar": 1}


@pytest.mark.parametrize("kernel", SIMD_KERNELS)
def test_every_panel_remainder(rng, kernel):
    """Output widths that leave every possible remainder in the last panel (1..panel width, over
    one and two panels): the partial last panel is packed at its own width and read with masked
    loads, so each remainder is a different code path."""
    panel = PANEL_WIDTH[kernel]
    x = rng.random((70, 33), dtype=np.float32)
    x[rng.random(x.shape) < 0.5] = 0.0
    for n_out in range(1, 2 * panel + 2):
        layers = random_layers(rng, [33, n_out], ["relu"])
        got = engine_for(layers, kernel=kernel).predict(x)
        want = engine_for(layers, kernel="scalar").predict(x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{n_out} outputs")


@pytest.mark.parametrize("kernel", SIMD_KERNELS)
@pytest.mark.parametrize("n_in, n_out", [(784, 512), (129, 10), (64, 129), (1, 1), (65, 127)])
def test_zero_skipping_changes_no_bit(rng, kernel, n_in, n_out):
    """The sparse kernels sum over nonzero inputs only. With skipping switched off they visit every
    input in the same order; the results must be the same bits, not merely close."""
    layers = random_layers(rng, [n_in, n_out, 10], ["relu", "softmax"])
    x = rng.random((150, n_in), dtype=np.float32)
    x[rng.random(x.shape) < 0.8] = 0.0
    x[:3] = 0.0  # all-zero rows too
    data = build(layers)
    sparse = mnist_engine.Engine.from_bytes(data, kernel=kernel).predict(x)
    dense = mnist_engine.Engine.from_bytes(data, kernel=kernel, skip_zeros=False).predict(x)
    np.testing.assert_array_equal(sparse.view(np.uint32), dense.view(np.uint32))
