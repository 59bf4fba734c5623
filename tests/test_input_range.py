"""Float input far outside (or far inside) the range a model was checked on is never answered
silently: an InputRangeWarning once per engine, or InputRangeError with range_check='raise'. The
range is measured in the kernels' own pass over the input rows, so every kernel, precision and
path (zero skipping off, an element-wise first layer, a small-batch partner) must see an outlier
wherever it sits: in a vector body, in a row's tail, in a later tile on another thread."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mnist_engine
from helpers import build, random_layers
from mnist_engine.model_file import ScaleShiftLayer


def engine(layers, kernel="", precision=None, skip_zeros=True, **kw):
    return mnist_engine.Engine.from_bytes(build(layers, **kw), kernel=kernel, precision=precision,
                                          skip_zeros=skip_zeros)


def range_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, mnist_engine.InputRangeWarning)]


def test_unscaled_pixels_as_floats_warn_once_per_engine(mnist):
    (_, _), (x_test, y_test) = mnist
    e = mnist_engine.load(mnist_engine.default_model_path())
    assert e.input_range == (0.0, 1.0)
    first = range_warnings(lambda: e.predict(x_test[:100].astype(np.float32)))
    assert len(first) == 1
    message = str(first[0].message)
    assert message.startswith("float inputs in 0..255 are far outside 0..1, the range this model was checked on "
                              "(reference images: uint8 pixels 0..255 x input_scale 0.00392157): raw 0..255 pixels? "
                              "Pass them as uint8"), message
    assert range_warnings(lambda: e.predict(x_test[:100].astype(np.float32))) == []  # once per engine
    assert len(range_warnings(lambda: mnist_engine.load(mnist_engine.default_model_path()).predict(
        x_test[:3].astype(np.float32)))) == 1
    for fine in (x_test[:100], x_test[:100] / np.float32(255), np.zeros((4, 784), np.float32)):
        fresh = mnist_engine.load(mnist_engine.default_model_path())
        assert range_warnings(lambda x=fine, e=fresh: e.predict(x)) == []


def test_the_module_functions_warn_too(mnist):
    (_, _), (x_test, _) = mnist
    with pytest.raises(mnist_engine.InputRangeError, match="far outside 0..1"):
        mnist_engine.classify(x_test[:5].astype(np.float32), range_check="raise")


def test_scaled_floats_sent_to_a_raw_pixel_model_warn(rng):
    """A model with its Rescaling(1/255) inside takes raw 0..255 values (input_scale 1)."""
    layers = random_layers(rng, [784, 32, 10], ["relu", "softmax"])
    e = engine(layers, input_scale=1.0, meta={"reference_input_range": "uint8 0 255"})
    assert e.input_range == (0.0, 255.0)
    x = rng.random((20, 784), dtype=np.float32)
    (w,) = range_warnings(lambda: e.predict(x))
    assert str(w.message).startswith("float inputs in 0..") and "use under 1% of 0..255" in str(w.message)
    assert "this model takes raw 0..255 values (input_scale 1): pass uint8 pixels, or multiply by 255" in str(w.message)
    assert range_warnings(lambda: engine(layers, input_scale=1.0).predict(x * 255)) == []


def test_range_check_modes(rng, small_layers):
    e = engine(small_layers, input_scale=1 / 255, meta={"reference_input_range": "float -1 1"})
    x = np.full((3, 6), 12.0, np.float32)  # 12 > 1 + 4 * 2
    for _ in range(2):  # every time
        with pytest.raises(mnist_engine.InputRangeError, match=r"float inputs in 0\.\.12 are far outside -1\.\.1"):
            e.predict(x, range_check="raise")
    assert range_warnings(lambda: e.predict(x, range_check="ignore")) == []
    assert range_warnings(lambda: e.predict(np.full((3, 6), 8.9, np.float32))) == []  # within 4 spans
    with pytest.raises(ValueError, match="expected range_check='warn', 'raise' or 'ignore', got 'loud'"):
        e.predict(x, range_check="loud")
    with warnings.catch_warnings():
        warnings.simplefilter("error", mnist_engine.InputRangeWarning)
        with pytest.raises(mnist_engine.InputRangeWarning):
            engine(small_layers, meta={"reference_input_range": "float -1 1"}).classify(x)
    assert e.input_range_problem(-1, 1) is None
    assert e.input_range_problem(0, 12).startswith("float inputs in 0..12 are far outside")


def every_engine(rng, layers_for):
    """(label, engine) for every kernel of every precision, and the paths beside the kernels."""
    for kernel in mnist_engine.available_kernels():
        precision = mnist_engine._core.kernel_precision(kernel)
        if kernel.endswith("scalar") and precision != "fp32":
            continue
        yield kernel, engine(layers_for(rng), kernel=kernel, input_scale=1.0)
    for precision in mnist_engine.available_precisions():  # automatic choice: small tiles on the partner
        yield f"{precision} auto", engine(layers_for(rng), precision=precision, input_scale=1.0)
        yield f"{precision} no zero skipping", engine(layers_for(rng), precision=precision, skip_zeros=False,
                                                      input_scale=1.0)
        first = ScaleShiftLayer(np.ones(37), np.zeros(37), "linear")
        yield f"{precision} element-wise first", engine([first] + layers_for(rng), precision=precision,
                                                        input_scale=1.0)


@pytest.mark.parametrize("rows, row, column", [(1, 0, 0), (1, 0, 36), (7, 5, 17), (130, 100, 33), (130, 129, 36)])
def test_every_path_sees_an_outlier_wherever_it_is(rng, rows, row, column):
    """37 inputs: two 16-wide blocks and a tail; 130 rows: three tiles, the last on another thread."""
    def layers_for(r):
        return random_layers(r, [37, 20, 4], ["relu", "linear"])
    x = rng.random((rows, 37), dtype=np.float32) * 255
    x[0, 3] = np.nan  # ignored by the measurement
    x[row, column] = -2000.0  # far below 0..255
    for label, e in every_engine(rng, layers_for):
        try:
            e.predict(x, threads=2, range_check="raise")
        except mnist_engine.InputRangeError as error:
            assert str(error).startswith("float inputs in -2000..25"), (label, str(error))
        else:
            pytest.fail(f"{label}: the outlier at row {row}, column {column} was not seen")
        x_fine = x.copy()
        x_fine[row, column] = 1.0
        e.predict(x_fine, threads=2, range_check="raise")  # no error: the NaN alone is not out of range
