"""Reduced precision (bf16, int8): every SIMD kernel against its scalar reference (int8 bit for bit),
the references against an independent numpy model of the same arithmetic, and the accuracy gates
on the 10,000 MNIST test images for the bundled model and for a model trained during this run."""
from __future__ import annotations

import itertools
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from helpers import build, random_layers, stored_neuron_orders, train_dense50
from mnist_engine.model_file import DenseLayer, read_layers
from mnist_engine.reference import _sigmoid, _softmax

# Synthetic inputs (normal floats, activation tails up to 3e38) lie far outside the range these test
# models were checked on, on purpose: the InputRangeWarning they get is tests/test_input_range.py's subject.
pytestmark = pytest.mark.filterwarnings("ignore::mnist_engine.InputRangeWarning")

PRECISIONS = mnist_engine.available_precisions()
INT8 = [k for k in mnist_engine.available_kernels("int8") if k != "int8-scalar"]
BF16 = [k for k in mnist_engine.available_kernels("bf16") if k != "bf16-scalar"]
UNTESTABLE = sorted(set(mnist_engine.compiled_kernels()) - set(mnist_engine.available_kernels()))
# Around every tile edge: 4-input units, 16-unit index blocks (64 int8 or 32 bf16 inputs), the
# 8/16-lane vectors and the 16-, 64- and 128-column panels.
WIDTHS = [1, 3, 15, 16, 17, 63, 64, 65, 127, 128, 129, 784]
OUT_WIDTHS = [1, 10, 16, 17, 64, 127, 129, 200]
BATCHES = [0, 1, 7, 33, 70]


def test_report_kernels_this_cpu_cannot_run():
    """Not a check: prints which compiled kernels this CPU skips, so a run's log says what it did not test."""
    print(f"\nprecisions here: {PRECISIONS}; kernels not testable on this CPU: {UNTESTABLE or 'none'}")
    assert set(UNTESTABLE) | set(mnist_engine.available_kernels()) == set(mnist_engine.compiled_kernels())


def engine(layers, kernel="", precision=None, skip_zeros=True, **kw):
    return mnist_engine.Engine.from_bytes(build(layers, **kw), kernel=kernel, precision=precision,
                                          skip_zeros=skip_zeros)


def inputs(rng, n_in, zeros):
    """uint8 pixels with a fraction of zeros, and signed floats (which need a zero point)."""
    pixels = rng.integers(0, 256, (max(BATCHES), n_in), dtype=np.uint8)
    pixels[rng.random(pixels.shape) < zeros] = 0
    floats = rng.normal(size=(max(BATCHES), n_in)).astype(np.float32)
    floats[rng.random(floats.shape) < zeros] = 0.0
    return pixels, floats


@pytest.mark.skipif(not INT8, reason="this CPU runs no SIMD int8 kernel")
@pytest.mark.parametrize("kernel", INT8)
@pytest.mark.parametrize("n_in, n_out", list(itertools.product(WIDTHS, OUT_WIDTHS)))
def test_int8_kernel_is_bit_identical_to_the_scalar_reference(rng, kernel, n_in, n_out):
    for activation, zeros in [("linear", 0.0), ("relu", 0.8), ("relu", 1.0)]:
        layers = random_layers(rng, [n_in, n_out, 5], [activation, "linear"])
        simd, scalar = engine(layers, kernel), engine(layers, "int8-scalar")
        assert (simd.kernel, simd.precision) == (kernel, "int8")
        for x in inputs(rng, n_in, zeros):
            for rows in BATCHES:
                np.testing.assert_array_equal(simd.predict(x[:rows]), scalar.predict(x[:rows]))


@pytest.mark.skipif(not BF16, reason="this CPU runs no SIMD bf16 kernel")
@pytest.mark.parametrize("kernel", BF16)
@pytest.mark.parametrize("n_in, n_out", list(itertools.product(WIDTHS, OUT_WIDTHS)))
def test_bf16_kernel_matches_the_scalar_reference(rng, kernel, n_in, n_out):
    for activation, zeros in [("linear", 0.0), ("relu", 0.8), ("relu", 1.0)]:
        layers = random_layers(rng, [n_in, n_out], [activation])
        simd, scalar = engine(layers, kernel), engine(layers, "bf16-scalar")
        for x in inputs(rng, n_in, zeros):
            for rows in BATCHES:
                # The same bf16 products (exact in float32), summed in another order.
                np.testing.assert_allclose(simd.predict(x[:rows]), scalar.predict(x[:rows]),
                                           rtol=1e-5, atol=2e-6 * np.sqrt(n_in))


@pytest.mark.parametrize("kernel", INT8 + BF16)
def test_skipping_zero_units_changes_no_bit(rng, kernel):
    layers = random_layers(rng, [784, 300, 10], ["relu", "softmax"])
    x = inputs(rng, 784, 0.8)[0]
    dense = engine(layers, kernel, skip_zeros=False)
    np.testing.assert_array_equal(engine(layers, kernel).predict(x), dense.predict(x))


# ---- the references against numpy ----

def bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


def quantize_rows(x: np.ndarray):
    """docs/PERFORMANCE.md's int8 activations: uint8 per row, range including 0."""
    x = x.astype(np.float32)
    lo = np.minimum(x.min(1, initial=0), 0).astype(np.float32)
    hi = np.maximum(x.max(1, initial=0), 0).astype(np.float32)
    span = hi - lo
    safe = np.where(span > 0, span, np.float32(1))
    inverse = np.where(span > 0, np.float32(255) / safe, np.float32(0)).astype(np.float32)
    zero = np.minimum(np.rint(-lo * inverse), 255).astype(np.float32)
    q = np.clip(np.rint(x * inverse[:, None]) + zero[:, None], 0, 255)
    return q.astype(np.int64), np.where(span > 0, span / np.float32(255), 1).astype(np.float32), zero.astype(np.int64)


def quantize_weights(w: np.ndarray):
    w = w.astype(np.float32)
    amax = np.abs(w).max(0)
    inverse = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.clip(np.rint(w * inverse), -127, 127).astype(np.int64)
    return q, np.where(amax > 0, amax / np.float32(127), 1).astype(np.float32)


ACTIVATIONS = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "sigmoid": _sigmoid,
               "tanh": np.tanh, "softmax": _softmax}


def numpy_int8(layers, pixels: np.ndarray, input_scale: float) -> np.ndarray:
    h = None
    for i, layer in enumerate(layers):
        q, col_scale = quantize_weights(layer.kernel)
        if i == 0:
            xq, row_scale, zero = pixels.astype(np.int64), np.full(len(pixels), np.float32(input_scale)), 0
        else:
            xq, row_scale, zero = quantize_rows(h)
            zero = zero[:, None]
        acc = (xq - zero) @ q
        z = acc * (row_scale[:, None].astype(np.float64) * col_scale) + layer.bias.astype(np.float32)
        h = ACTIVATIONS[layer.activation](z).astype(np.float32)
    return h


def numpy_bf16(layers, x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float32)
    for layer in layers:
        z = bf16(h).astype(np.float64) @ bf16(layer.kernel.astype(np.float32)) + layer.bias.astype(np.float32)
        h = ACTIVATIONS[layer.activation](z).astype(np.float32)
    return h


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "linear"])
def test_int8_scalar_reference_is_the_documented_arithmetic(rng, activation):
    layers = random_layers(rng, [784, 64, 33, 10], [activation, "relu", "softmax"])
    pixels = rng.integers(0, 256, (50, 784), dtype=np.uint8)
    got = engine(layers, "int8-scalar").predict(pixels)
    # numpy sums exactly and rounds once; the engine's fused multiply-add differs in the last bit,
    # which can move a later layer's quantized byte by one step: tolerances of a few such steps.
    np.testing.assert_allclose(got, numpy_int8(layers, pixels, 1 / 255), rtol=1e-4, atol=2e-4)


def test_bf16_scalar_reference_is_the_documented_arithmetic(rng):
    layers = random_layers(rng, [784, 64, 33, 10], ["relu", "tanh", "softmax"])
    x = rng.normal(size=(50, 784)).astype(np.float32)
    got = engine(layers, "bf16-scalar").predict(x)
    np.testing.assert_allclose(got, numpy_bf16(layers, x), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kernel", ["int8-scalar", "bf16-scalar"] + INT8 + BF16)
def test_non_finite_input_rows_give_nan_rows(rng, kernel):
    layers = random_layers(rng, [20, 12, 3], ["relu", "softmax"])
    x = rng.random((4, 20), dtype=np.float32)
    x[1, 5], x[2, 0] = np.nan, np.inf
    got = engine(layers, kernel, input_scale=1.0).predict(x)
    assert np.isnan(got[1]).all() and np.isnan(got[2]).any()
    assert np.isfinite(got[[0, 3]]).all()


# ---- the edges of the arithmetic (issue 22) ----

INT8_ALL = ["int8-scalar"] + INT8


def test_rows_with_a_tiny_range_quantize_like_any_other(rng):
    """A row whose range is below 255 / FLT_MAX once got an infinite inverse and a NaN zero point
    (undefined behaviour in the cast, 0 instead of the answer); it is now prescaled by 2^64."""
    layers = [DenseLayer(rng.normal(size=(64, 10)) * 1e30, np.zeros(10), "linear"),
              DenseLayer(np.eye(10), np.zeros(10), "linear")]
    x = (rng.random((33, 64)) * 1e-37).astype(np.float32)
    x[:, ::2] *= -1
    exact = engine(layers, input_scale=1.0).predict(x)
    assert np.abs(exact).max() > 1e-8
    outputs = [engine(layers, k, input_scale=1.0).predict(x) for k in INT8_ALL]
    for got in outputs:
        np.testing.assert_array_equal(got, outputs[0])
    assert np.isfinite(outputs[0]).all()
    np.testing.assert_allclose(outputs[0], exact, atol=0.02 * np.abs(exact).max())


def test_a_weight_column_with_a_tiny_maximum_keeps_its_signs(rng):
    """max |w| below 127 / FLT_MAX: 0 * inf once made every zero weight of the column -127."""
    kernel = np.zeros((32, 3))
    kernel[0] = [1e-37, 1.0, -2e-38]
    kernel[1:, 1] = rng.normal(size=31)
    layers = [DenseLayer(kernel, np.zeros(3), "linear")]
    pixels = np.zeros((5, 32), np.uint8)
    pixels[:, 0] = 255
    pixels[:, 1:] = rng.integers(0, 256, (5, 31))
    exact = engine(layers).predict(pixels).astype(np.float64)
    assert exact[:, 0].min() > 0 and exact[:, 2].max() < 0
    outputs = [engine(layers, k).predict(pixels) for k in INT8_ALL]
    for got in outputs:
        np.testing.assert_array_equal(got, outputs[0])
    np.testing.assert_allclose(outputs[0], exact, rtol=0.02)


def test_bf16_treats_denormals_as_the_instructions_do(rng):
    """vcvtneps2bf16 and vdpbf16ps read denormals as zero and flush denormal sums: the reference
    and every kernel follow that rule, in the 16-wide body of a row and in its tail alike."""
    n_in = 37  # two 16-wide blocks and a tail of 5
    kernel = rng.normal(size=(n_in, 17)) * 1e-20
    kernel[3, :] = 1e-39  # denormal weights
    layers = [DenseLayer(kernel, np.full(17, 1e-39), "linear"),
              DenseLayer(np.eye(17) * 1e20, np.zeros(17), "linear")]
    x = (rng.normal(size=(40, n_in)) * 1e-20).astype(np.float32)
    x[:, [2, 20, 35]] = 3e-39  # denormal inputs in both blocks and in the tail
    x[0] = 0
    x[0, [2, 35]] = 3e-39  # only denormals: every kernel must give bias-free zeros
    reference = engine(layers, "bf16-scalar", input_scale=1.0).predict(x)
    np.testing.assert_array_equal(reference[0], 0)
    want = numpy_bf16_flushed(layers, x)
    np.testing.assert_allclose(reference, want, rtol=1e-2, atol=1e-6)
    for kernel_name in BF16:
        got = engine(layers, kernel_name, input_scale=1.0).predict(x)
        np.testing.assert_array_equal(got[0], 0)
        if kernel_name.endswith("-amx"):  # even and odd products summed apart: the same values, another order
            np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, reference)


def numpy_bf16_flushed(layers, x: np.ndarray) -> np.ndarray:
    """numpy_bf16 with denormal operands read as zero."""
    def flush(a):
        a = np.asarray(a, np.float32)
        return np.where(np.abs(a) < np.finfo(np.float32).tiny, np.float32(0), a)
    h = x.astype(np.float32)
    for layer in layers:
        z = bf16(flush(h)).astype(np.float64) @ bf16(flush(layer.kernel)) + flush(layer.bias)
        h = ACTIVATIONS[layer.activation](z).astype(np.float32)
    return h


ROUNDING_PROBE = """
import ctypes, sys
import numpy as np
import mnist_engine
from helpers import build, random_layers
libm = ctypes.CDLL("libm.so.6")
rng = np.random.default_rng(5)
layers = random_layers(rng, [100, 40, 7], ["relu", "linear"])
data = build(layers, input_scale=1.0)
x = rng.normal(size=(70, 100)).astype(np.float32)
kernels = sys.argv[1:]
engines = [mnist_engine.Engine.from_bytes(data, kernel=k) for k in kernels]
assert libm.fesetround(0x800) == 0 and libm.fegetround() == 0x800  # FE_UPWARD, this thread
outputs = [e.predict(x, threads=1) for e in engines]
libm.fesetround(0)
for k, y in zip(kernels[1:], outputs[1:]):
    print(k, int((y != outputs[0]).sum()))
"""


@pytest.mark.skipif(not (INT8 + BF16), reason="this CPU runs no SIMD int8 or bf16 kernel")
@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_the_rounding_mode_does_not_break_bit_identity(precision):
    """Under fesetround(FE_UPWARD) the references still round as the instructions do (nearest even)."""
    if platform.system() != "Linux":
        pytest.skip("the probe calls glibc's fesetround")
    kernels = [k for k in (INT8 if precision == "int8" else BF16) if not k.endswith("-amx")]
    if not kernels:
        pytest.skip(f"no SIMD {precision} kernel that claims bit-identity runs here")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    result = subprocess.run([sys.executable, "-c", ROUNDING_PROBE, f"{precision}-scalar", *kernels], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [part for k in kernels for part in (k, "0")]


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "fp32"])
def test_threads_do_not_change_the_result(rng, precision):
    layers = random_layers(rng, [784, 100, 10], ["relu", "softmax"])
    e = engine(layers, precision=precision)
    x = rng.integers(0, 256, (1000, 784), dtype=np.uint8)
    np.testing.assert_array_equal(e.predict(x, threads=1), e.predict(x, threads=2))


def test_reduced_precision_is_built_from_verified_weights(rng):
    """The file's references are checked on the exact path first, so a corrupt reference fails
    the load whatever the precision; the engine then reports how far its outputs moved."""
    layers = random_layers(rng, [784, 64, 10], ["relu", "softmax"])
    data = build(layers)
    for precision in PRECISIONS:
        e = mnist_engine.Engine.from_bytes(data, precision=precision)
        assert e.precision == precision
        assert (e.reference_deviation == 0) == (precision == "fp32")
        assert e.reference_deviation < 0.05
    with pytest.raises(ValueError, match="kernel 'int8-scalar' computes int8"):
        mnist_engine.Engine.from_bytes(data, kernel="int8-scalar", precision="bf16")


# ---- the gates: docs/PERFORMANCE.md ----

GATES = {"int8": 0.999, "bf16": 0.9995}  # argmax agreement with Keras; accuracy within 0.1 point


def check_gates(engine_p: np.ndarray, keras_p: np.ndarray, labels: np.ndarray, precision: str) -> str:
    agreement = float((engine_p.argmax(1) == keras_p.argmax(1)).mean())
    accuracy, keras_accuracy = (engine_p.argmax(1) == labels).mean(), (keras_p.argmax(1) == labels).mean()
    report = (f"{precision}: agreement {agreement:.4%}, accuracy {accuracy:.4f} vs Keras {keras_accuracy:.4f}, "
              f"max |dp| {np.abs(engine_p - keras_p).max():.2e}")
    print("\n" + report)
    assert agreement >= GATES[precision], report
    assert abs(accuracy - keras_accuracy) <= 0.001, report
    return report


@pytest.fixture(scope="module")
def keras_reference(bundled_keras_model, mnist):
    x = mnist[1][0].reshape(-1, 784).astype(np.float32) / np.float32(255)
    return x, bundled_keras_model.predict(x, batch_size=10000, verbose=0)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bundled_model_meets_the_gates(mnist, keras_reference, precision):
    if precision not in PRECISIONS:
        pytest.skip(f"this CPU does not run {precision}")
    (_, _), (x_test, y_test) = mnist
    e = mnist_engine.load(mnist_engine.default_model_path(), precision=precision)
    check_gates(e.predict(x_test), keras_reference[1], y_test, precision)
    check_gates(e.predict(keras_reference[0]), keras_reference[1], y_test, precision)


@pytest.fixture(scope="module")
def trained_now(keras, mnist, tmp_path_factory):
    """The reference notebook's Dense(50)-Dense(50)-Dense(10) net, trained here for 2 epochs."""
    x_test = mnist[1][0]
    model = train_dense50(keras, mnist, seed=11, epochs=2)
    path = mnist_engine.export_keras(model, tmp_path_factory.mktemp("m") / "m50.mnw", reference_images=x_test[:32])
    return path, model.predict(x_test.astype(np.float32) / 255, batch_size=10000, verbose=0), model


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_model_trained_now_meets_the_gates(mnist, trained_now, precision):
    if precision not in PRECISIONS:
        pytest.skip(f"this CPU does not run {precision}")
    path, keras_p, _ = trained_now
    e = mnist_engine.load(path, precision=precision)
    check_gates(e.predict(mnist[1][0]), keras_p, mnist[1][1], precision)


@pytest.fixture(scope="module")
def keras_int8(keras, mnist, trained_now, tmp_path_factory):
    """The same trained net after Keras's own model.quantize("int8"), exported."""
    import warnings

    model = keras.models.clone_model(trained_now[2])
    model.set_weights(trained_now[2].get_weights())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "InputLayer does not have a quantize method"
        model.quantize("int8")
    x_test = mnist[1][0]
    path = mnist_engine.export_keras(model, tmp_path_factory.mktemp("q") / "q50.mnw", reference_images=x_test[:32])
    return path, model


def test_engine_int8_runs_keras_int8_weights_unchanged(keras_int8):
    """The exported kernel q / s, quantized by the engine's rule (quantize_weights, the numpy
    model the int8 reference is tested against), is Keras's q again."""
    path, model = keras_int8
    dense = [layer for layer in model.layers if getattr(layer, "quantization_mode", None)]
    stored = read_layers(path)
    kernels = [(np.asarray(layer._kernel, np.float64) / np.asarray(layer.kernel_scale, np.float64)).astype(np.float32)
               for layer in dense]
    rows = None
    for layer, keras_layer, order in zip(stored, dense, stored_neuron_orders(stored, kernels), strict=True):
        q, _ = quantize_weights(layer.kernel)
        keras_q = np.asarray(keras_layer._kernel)
        np.testing.assert_array_equal(q, (keras_q if rows is None else keras_q[rows])[:, order])
        rows = order


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_keras_int8_model_parity(mnist, trained_now, keras_int8, precision):
    """Against the quantized Keras model itself, over the 10k test images. Keras's int8 forward
    quantizes each layer's input to signed int8 per row (7 bits for the pixels and the ReLU
    outputs), which the file does not store: the engine's fp32 path reproduces the dequantized
    float model, its int8 path quantizes inputs to 8 bits. Each is about 0.1% of argmax away from
    the float model in a different direction, so against Keras's int8 outputs the bar is 99.8%
    and accuracy within 0.1 point; and the engine must stay at least as close to the float Keras
    model as Keras's own int8 is."""
    if precision not in PRECISIONS:
        pytest.skip(f"this CPU does not run {precision}")
    path, model = keras_int8
    (_, _), (x_test, y_test) = mnist
    float_p = trained_now[1]
    keras_p = model.predict(x_test.astype(np.float32) / 255, batch_size=10000, verbose=0)
    ours = mnist_engine.load(path, precision=precision).predict(x_test)

    def agreement(a, b):
        return float((a.argmax(1) == b.argmax(1)).mean())

    report = (f"{precision} vs Keras int8: agreement {agreement(ours, keras_p):.4%}, accuracy "
              f"{(ours.argmax(1) == y_test).mean():.4f} vs {(keras_p.argmax(1) == y_test).mean():.4f}, max |dp| "
              f"{np.abs(ours - keras_p).max():.2e}; vs float Keras: ours {agreement(ours, float_p):.4%}, "
              f"Keras int8 {agreement(keras_p, float_p):.4%}")
    print("\n" + report)
    assert agreement(ours, keras_p) >= 0.998, report
    assert abs((ours.argmax(1) == y_test).mean() - (keras_p.argmax(1) == y_test).mean()) <= 0.001, report
    assert agreement(ours, float_p) >= agreement(keras_p, float_p), report


@pytest.fixture(scope="module")
def convnet_keras_reference(keras, mnist):
    """The bundled convnet's Keras source (models/mnist_convnet.keras) on the 10k test images."""
    path = Path(__file__).resolve().parent.parent / "models" / "mnist_convnet.keras"
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    x = mnist[1][0].reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255)
    return model.predict(x, batch_size=2000, verbose=0)


@pytest.mark.parametrize("kernel", [k for k in mnist_engine.available_kernels() if not k.endswith("scalar")])
def test_bundled_convnet_meets_the_gates_on_every_kernel(mnist, convnet_keras_reference, kernel):
    """The gates hold for a CNN too: fp32 exactly (the 10k in three input forms), int8 with its conv
    layers in int8 where this CPU has an int8 convolution, bf16 in bf16 on AMX (elsewhere in fp32)."""
    (_, _), (x_test, y_test) = mnist
    e = mnist_engine.load("convnet", kernel=kernel)
    got = e.predict(x_test)
    if e.precision == "fp32":
        np.testing.assert_allclose(got, convnet_keras_reference, atol=1e-5)
        np.testing.assert_array_equal(e.predict(x_test.reshape(-1, 784)), got)
        np.testing.assert_allclose(e.predict(x_test.reshape(-1, 28, 28, 1).astype(np.float32) / np.float32(255)),
                                   convnet_keras_reference, atol=1e-5)
        return
    report = check_gates(got, convnet_keras_reference, y_test, e.precision)
    print(f"{kernel} (conv: {e.conv_kernel}): {report}")
