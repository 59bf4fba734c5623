"""The spatial layers of format version 3 (conv2d, max/avg pooling, global pooling) in the engine,
against the float64 numpy reference (mnist_engine.reference_conv, itself held to Keras and ONNX by
tests/test_reference_conv.py): every fp32 kernel, uint8 and float input, several threads, and the
reduced precisions, which run spatial layers in float and their dense layers as before."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from helpers import build
from mnist_engine.model_file import Conv2DLayer, DenseLayer, PoolLayer
from mnist_engine.reference import forward

GRID = np.random.default_rng(2023)


def random_cnn(rng, image, k, stride, pads, pool, filters):
    """conv (relu) -> pool -> conv -> global pool or flatten -> dense softmax, on `image` (H, W, C)."""
    conv = Conv2DLayer(rng.normal(size=(*k, image[2], filters)) / np.sqrt(k[0] * k[1] * image[2]),
                       rng.normal(size=filters) * 0.1, image, stride, pads, "relu")
    layers = [conv]
    shape = conv.output_shape
    kind, window = pool
    if min(shape[:2]) >= window:
        p = PoolLayer(kind, shape, (window, window), (window, window))
        layers.append(p)
        shape = p.output_shape
    second = Conv2DLayer(rng.normal(size=(1, 1, shape[2], 6)) / np.sqrt(shape[2]), rng.normal(size=6) * 0.1, shape)
    layers.append(second)
    shape = second.output_shape
    if kind == "avg_pool":
        layers.append(PoolLayer("global_avg_pool", shape))
        width = 6
    else:
        width = int(np.prod(shape))
    layers.append(DenseLayer(rng.normal(size=(width, 10)) / np.sqrt(width), rng.normal(size=10) * 0.1, "softmax"))
    return layers


def grid(count):
    cases = []
    for _ in range(count):
        k = (int(GRID.integers(1, 6)), int(GRID.integers(1, 6)))
        stride = (int(GRID.integers(1, 3)), int(GRID.integers(1, 3)))
        pads = tuple(int(GRID.integers(0, k[i // 2])) for i in range(4))
        image = (int(GRID.integers(k[0] + 2, 16)), int(GRID.integers(k[1] + 2, 16)), int(GRID.integers(1, 4)))
        pool = (str(GRID.choice(["max_pool", "avg_pool"])), int(GRID.integers(2, 4)))
        cases.append((image, k, stride, pads, pool, int(GRID.integers(1, 9))))
    return cases


CASES = grid(12)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
@pytest.mark.parametrize("image, k, stride, pads, pool, filters", CASES)
def test_spatial_models_match_the_numpy_reference(rng, kernel, image, k, stride, pads, pool, filters):
    layers = random_cnn(rng, image, k, stride, pads, pool, filters)
    engine = mnist_engine.Engine.from_bytes(build(layers), kernel=kernel)
    width = int(np.prod(image))
    pixels = np.where(rng.random((70, width)) < 0.7, 0, rng.integers(1, 256, (70, width))).astype(np.uint8)
    want = forward(layers, pixels / 255.0)
    np.testing.assert_allclose(engine.predict(pixels), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(engine.predict(pixels.astype(np.float32) / 255), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(engine.predict(pixels, threads=1), engine.predict(pixels, threads=2))


def test_pools_with_padding_counted_or_not_and_nan(rng):
    image = (7, 6, 3)
    for count_padding in (False, True):
        layers = [PoolLayer("avg_pool", image, (3, 2), (2, 2), (1, 1, 1, 0), count_padding),
                  PoolLayer("global_max_pool", (4, 3, 3))]
        engine = mnist_engine.Engine.from_bytes(build(layers, input_scale=1.0))
        x = rng.normal(size=(9, 126)).astype(np.float32)
        np.testing.assert_allclose(engine.predict(x), forward(layers, x), rtol=1e-6, atol=1e-6)
    x[0, 5] = np.nan  # a NaN pixel reaches every output of its channel through the max
    got = engine.predict(x)
    assert np.isnan(got[0]).sum() >= 1 and np.isfinite(got[1:]).all()


@pytest.mark.parametrize("precision", [p for p in mnist_engine.available_precisions() if p != "fp32"])
def test_reduced_precisions_run_spatial_layers_in_float(rng, precision):
    layers = random_cnn(rng, (12, 12, 1), (3, 3), (1, 1), (1, 1, 1, 1), ("max_pool", 2), 8)
    data = build(layers)
    exact = mnist_engine.Engine.from_bytes(data).predict
    reduced = mnist_engine.Engine.from_bytes(data, precision=precision)
    pixels = np.where(rng.random((200, 144)) < 0.7, 0, rng.integers(1, 256, (200, 144))).astype(np.uint8)
    # Only the dense layer is quantized: its outputs move by the precision's step, no more.
    np.testing.assert_allclose(reduced.predict(pixels), exact(pixels), atol=0.03)
    assert (reduced.predict(pixels).argmax(1) == exact(pixels).argmax(1)).mean() >= 0.97


def test_a_spatial_first_layer_still_checks_the_input_range(rng):
    layers = random_cnn(rng, (8, 8, 1), (3, 3), (1, 1), (0, 0, 0, 0), ("max_pool", 2), 4)
    engine = mnist_engine.Engine.from_bytes(build(layers))
    with pytest.raises(mnist_engine.InputRangeError, match="far outside 0..1"):
        engine.predict(np.full((2, 64), 200.0, np.float32), range_check="raise")
