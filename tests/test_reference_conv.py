"""The numpy references for convolution and pooling (mnist_engine.reference_conv), held to the
frameworks whose models the engine will run: Keras's layers on a randomized grid of their options
(kernel 1-7, strides 1-3, valid/same, odd input sizes, 1-16 channels), and ONNX's operators (explicit
pads, count_include_pad either way) through onnx.reference. These are the oracle the conv kernels
of issue 23 will be tested against, so they are tested first."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require
from mnist_engine import reference_conv as ref

GRID = np.random.default_rng(23)


def conv_cases(count: int):
    cases = []
    for _ in range(count):
        k = (int(GRID.integers(1, 8)), int(GRID.integers(1, 8)))
        stride = (int(GRID.integers(1, 4)), int(GRID.integers(1, 4)))
        size = (int(GRID.integers(max(k[0], 3), 20)), int(GRID.integers(max(k[1], 3), 20)))
        channels, filters = int(GRID.integers(1, 9)), int(GRID.integers(1, 17))
        cases.append((k, stride, size, channels, filters, str(GRID.choice(["valid", "same"]))))
    return cases


def pool_cases(count: int):
    cases = []
    for _ in range(count):
        window = (int(GRID.integers(1, 4)), int(GRID.integers(1, 4)))
        stride = (int(GRID.integers(1, 4)), int(GRID.integers(1, 4)))
        size = (int(GRID.integers(max(window[0], 2), 16)), int(GRID.integers(max(window[1], 2), 16)))
        cases.append((window, stride, size, int(GRID.integers(1, 9)), str(GRID.choice(["valid", "same"]))))
    return cases


def assert_close(got, want):
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("k, stride, size, channels, filters, padding", conv_cases(24))
def test_conv2d_matches_keras(keras, rng, k, stride, size, channels, filters, padding):
    layer = keras.layers.Conv2D(filters, k, strides=stride, padding=padding, bias_initializer="random_normal")
    x = rng.normal(size=(3, *size, channels)).astype(np.float32)
    want = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    got = ref.conv2d(x, kernel, bias, stride, ref.keras_pads(*size, k, stride, padding))
    assert_close(got, want)


@pytest.mark.parametrize("window, stride, size, channels, padding", pool_cases(16))
@pytest.mark.parametrize("kind", ["max", "average"])
def test_pooling_matches_keras(keras, rng, kind, window, stride, size, channels, padding):
    """Keras's 'same' average pooling divides by the window's real pixels only."""
    layer = (keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D)(
        window, strides=stride, padding=padding)
    x = rng.normal(size=(2, *size, channels)).astype(np.float32)
    pads = ref.keras_pads(*size, window, stride, padding)
    got = ref.max_pool2d(x, window, stride, pads) if kind == "max" else ref.avg_pool2d(x, window, stride, pads)
    assert_close(got, keras.ops.convert_to_numpy(layer(x)))


def test_global_pooling_and_zero_padding_match_keras(keras, rng):
    x = rng.normal(size=(4, 9, 7, 5)).astype(np.float32)
    assert_close(ref.global_avg_pool(x), keras.ops.convert_to_numpy(keras.layers.GlobalAveragePooling2D()(x)))
    assert_close(ref.global_max_pool(x), keras.ops.convert_to_numpy(keras.layers.GlobalMaxPooling2D()(x)))
    # ZeroPadding2D then a valid convolution is the convolution with those pads.
    padded = keras.ops.convert_to_numpy(keras.layers.ZeroPadding2D(((1, 2), (3, 0)))(x))
    kernel, bias = rng.normal(size=(3, 3, 5, 4)), rng.normal(size=4)
    assert_close(ref.conv2d(x, kernel, bias, pads=(1, 2, 3, 0)), ref.conv2d(padded, kernel, bias))


def onnx_pool(onnx, op: str, x_nchw: np.ndarray, **attrs) -> np.ndarray:
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x_nchw})[0]


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 0, 1, 0), (2, 2, 1, 1)])  # each pad < the window
def test_pooling_matches_onnx_with_explicit_pads(rng, pads, count_include_pad):
    onnx = require("onnx")
    x = rng.normal(size=(2, 11, 9, 3)).astype(np.float32)
    top, bottom, left, right = pads
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    attrs = dict(kernel_shape=[3, 2], strides=[2, 1], pads=[top, left, bottom, right])  # ONNX: begins, then ends
    want = onnx_pool(onnx, "AveragePool", nchw, count_include_pad=count_include_pad, **attrs).transpose(0, 2, 3, 1)
    assert_close(ref.avg_pool2d(x, (3, 2), (2, 1), pads, bool(count_include_pad)), want)
    if count_include_pad == 0:
        want = onnx_pool(onnx, "MaxPool", nchw, **attrs).transpose(0, 2, 3, 1)
        assert_close(ref.max_pool2d(x, (3, 2), (2, 1), pads), want)


def test_onnx_conv_with_explicit_pads(rng):
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    x = rng.normal(size=(2, 10, 13, 3)).astype(np.float32)
    kernel, bias = rng.normal(size=(3, 5, 3, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)
    weight = kernel.transpose(3, 2, 0, 1)  # ONNX: (F, C, kh, kw)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 3], pads=[2, 1, 0, 3])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    want = ReferenceEvaluator(model).run(None, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    assert_close(ref.conv2d(x, kernel, bias, (2, 3), (2, 0, 1, 3)), want.transpose(0, 2, 3, 1))
    assert onnx is not None


def test_padding_arithmetic():
    assert ref.same_padding(28, 3, 1) == (1, 1)
    assert ref.same_padding(28, 2, 2) == (0, 0)
    assert ref.same_padding(7, 2, 2) == (0, 1)  # TensorFlow puts the odd pixel after
    assert ref.same_padding(5, 4, 1) == (1, 2)
    assert ref.output_size(28, 3, 1, 0, 0) == 26 and ref.output_size(7, 2, 2, 0, 1) == 4
    with pytest.raises(ValueError, match="a window of 5 does not fit 3 pixels"):
        ref.output_size(3, 5, 1, 0, 0)
