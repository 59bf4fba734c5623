"""Every activation of the format, on every kernel that runs here, against Keras (float32, the
framework the models come from) and against numpy in float64 (mnist_engine.reference), on inputs
that cover each function's tails: large |x| (overflow and underflow of e^x), ±0, values on and
around each kink, and NaN.

The engine computes an activation after a layer's operation; here that operation is an exact
identity (a scale_shift with scale 1 and shift 0, or a dense identity matrix), so what is compared
is the activation alone."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from helpers import build
from mnist_engine import _core
from mnist_engine.model_file import ACTIVATION_PARAMETERS, DenseLayer, ScaleShiftLayer
from mnist_engine.reference import forward, scale_pixels

# Synthetic inputs (normal floats, activation tails up to 3e38) lie far outside the range these test
# models were checked on, on purpose: the InputRangeWarning they get is tests/test_input_range.py's subject.
pytestmark = pytest.mark.filterwarnings("ignore::mnist_engine.InputRangeWarning")

# Parameters tried for the activations that take some (prelu's slopes are drawn per unit).
PARAMETERS = {
    "elu": [(1.0,), (0.5,), (2.0,)],
    "leaky_relu": [(0.2,), (0.3,), (0.01,)],
    "relu_general": [(0.0, 0.0, 6.0), (0.1, 0.0, np.inf), (0.1, 0.5, 3.0), (0.0, 0.5, np.inf), (0.2, 1.0, 6.0),
                     (0.0, 0.0, 1.5)],
}
KINKS = [0.0, -3.0, 3.0, 6.0, 0.5, 1.0, 1.5]


def tail_inputs() -> np.ndarray:
    """One row of every value worth checking, NaN last."""
    around = [k + d for k in KINKS for d in (-1e-3, -1e-6, 0.0, 1e-6, 1e-3)]
    large = [s * v for s in (1, -1) for v in (10.0, 20.0, 40.0, 80.0, 86.0, 87.5, 88.5, 88.72, 90.0, 103.0, 200.0,
                                               1e3, 1e6, 3e38)]
    tiny = [s * v for s in (1, -1) for v in (1e-30, 1e-10, 1e-7, 1e-4, 0.01, 0.1, 0.3, 0.49, 0.51, 0.99, 1.01,
                                              2.0, 3.9, 4.1)]
    grid = np.linspace(-12, 12, 241).tolist()
    return np.array(around + large + tiny + grid + [0.0, -0.0, np.nan], np.float32)


def cases():
    for name in _core.ACTIVATIONS:
        names, per_unit, _ = ACTIVATION_PARAMETERS[name]
        if per_unit:
            yield name, "drawn"
        elif names:
            yield from ((name, p) for p in PARAMETERS[name])
        else:
            yield name, ()


CASES = list(cases())
IDS = [f"{n}{'' if p == () else p}" for n, p in CASES]


def parameters_for(name, parameters, width):
    if parameters == "drawn":
        return np.random.default_rng(7).uniform(-0.5, 0.8, width).astype(np.float32)
    return np.asarray(parameters, np.float32)


def keras_activation(keras, name, parameters, x):
    a = keras.activations
    if name == "gelu_tanh":
        return a.gelu(x, approximate=True)
    if name == "gelu":
        return a.gelu(x, approximate=False)
    if name == "elu":
        return a.elu(x, alpha=float(parameters[0]))
    if name == "leaky_relu":
        return a.leaky_relu(x, negative_slope=float(parameters[0]))
    if name == "relu_general":
        slope, threshold, top = (float(v) for v in parameters)
        return keras.layers.ReLU(max_value=None if top == np.inf else top, negative_slope=slope,
                                 threshold=threshold)(x)
    if name == "prelu":
        layer = keras.layers.PReLU()
        layer.build(x.shape)
        layer.set_weights([np.asarray(parameters, np.float32)])
        return layer(x)
    return a.get(name)(x)


def engine_for_activation(name, parameters, width, kernel="", precision="fp32", dense=False):
    """An engine computing activation(x) on rows of `width` values, through an exact identity."""
    layer = (DenseLayer(np.eye(width), np.zeros(width), name, parameters) if dense
             else ScaleShiftLayer(np.ones(width), np.zeros(width), name, parameters))
    return mnist_engine.Engine.from_bytes(build([layer], input_scale=1 / 255), kernel=kernel, precision=precision)


def float32_kernels():
    return mnist_engine.available_kernels("fp32")


@pytest.fixture(scope="module")
def x_row():
    return tail_inputs()


@pytest.mark.parametrize("name, parameters", CASES, ids=IDS)
def test_activation_matches_keras_on_its_tails(keras, name, parameters, x_row):
    row_wise = name in ("softmax", "log_softmax")
    # Row-wise activations get rows of a few values each (a row with 3e38 and -3e38 tests nothing).
    x = x_row[:-1].reshape(-1, 1) if not row_wise else np.stack([x_row[:-1][i::40] for i in range(5)])
    if not row_wise:
        x = np.concatenate([x, [[np.nan]]]).reshape(1, -1)
    x = x.astype(np.float32)
    width = x.shape[1]
    p = parameters_for(name, parameters, width)
    want = np.asarray(keras_activation(keras, name, p, x))
    for kernel in float32_kernels():
        got = engine_for_activation(name, p, width, kernel).predict(x)
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{kernel}: NaN where Keras has NaN, only there")
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite & ~nan], want[~finite & ~nan], err_msg=f"{kernel}: infinities")
        error = np.abs(got[finite].astype(np.float64) - want[finite]) / np.maximum(1.0, np.abs(want[finite]))
        worst = int(np.argmax(error))
        assert error[worst] <= 1e-5, (f"{kernel}: {name}{parameters} at x={x[finite][worst]!r}: "
                                      f"engine {got[finite][worst]!r}, Keras {want[finite][worst]!r}")


@pytest.mark.parametrize("name, parameters", CASES, ids=IDS)
def test_activation_matches_the_float64_reference(name, parameters, x_row, rng):
    """numpy in float64 is independent of both Keras and the engine's polynomials: 2e-7 relative
    (a few float32 steps) everywhere the function is finite."""
    x = np.concatenate([rng.normal(0, 4, (3, 64)), rng.uniform(-90, 90, (3, 64))]).astype(np.float32)
    width = x.shape[1]
    p = parameters_for(name, parameters, width)
    layer = ScaleShiftLayer(np.ones(width), np.zeros(width), name, p)
    want = forward([layer], x)
    for kernel in float32_kernels():
        got = engine_for_activation(name, p, width, kernel).predict(x).astype(np.float64)
        finite = np.isfinite(want) & (np.abs(want) < 3e38)
        error = np.abs(got[finite] - want[finite]) / np.maximum(1.0, np.abs(want[finite]))
        assert error.max() <= 1e-6, f"{kernel}: {name}{parameters} off by {error.max():.3g}"


@pytest.mark.parametrize("name, parameters", CASES, ids=IDS)
def test_every_path_computes_the_same_activation(name, parameters, rng):
    """The dense path and the element-wise path, every fp32 kernel and the reduced-precision
    engines' float activations agree with the scalar kernel to a few float32 steps."""
    x = rng.normal(0, 5, (70, 37)).astype(np.float32)  # 70 rows: more than one tile
    p = parameters_for(name, parameters, 37)
    want = engine_for_activation(name, p, 37, "scalar").predict(x)
    engines = [engine_for_activation(name, p, 37, k, dense=d) for k in float32_kernels() for d in (False, True)]
    for precision in mnist_engine.available_precisions():
        if precision != "fp32":
            engines += [engine_for_activation(name, p, 37, k, precision) for k in
                        mnist_engine.available_kernels(precision)]
    for engine in engines:
        np.testing.assert_allclose(engine.predict(x), want, rtol=1e-6, atol=1e-6, err_msg=repr(engine))


def test_an_element_wise_first_layer_takes_uint8_pixels(rng):
    """uint8 pixels reach a scale_shift first layer converted exactly as float input would be, on
    every kernel of every precision (the reduced-precision engines convert them separately)."""
    from mnist_engine.model_file import LayerNormLayer

    layers = [ScaleShiftLayer(rng.uniform(0.5, 2, 30), rng.normal(size=30), "gelu"),
              DenseLayer(rng.normal(size=(30, 12)) / 5, rng.normal(size=12), "relu"),
              LayerNormLayer(np.ones(12), np.zeros(12), 1e-3, "softmax")]
    data = build(layers, input_scale=1 / 255)
    pixels = rng.integers(0, 256, (70, 30)).astype(np.uint8)
    floats = scale_pixels(pixels, 1 / 255)  # exactly the engine's conversion
    for precision in mnist_engine.available_precisions():
        for kernel in mnist_engine.available_kernels(precision):
            engine = mnist_engine.Engine.from_bytes(data, kernel=kernel, precision=precision)
            np.testing.assert_array_equal(engine.predict(pixels), engine.predict(floats), err_msg=kernel)


@pytest.mark.parametrize("name, parameters", CASES, ids=IDS)
def test_the_benchmarks_onnx_graph_computes_the_same_activation(name, parameters, rng):
    """tools/bench.py runs other runtimes on the same model; its ONNX form of each activation (one
    operator, or a few for silu, relu6, relu_general) must compute what the engine does."""
    ort = pytest.importorskip("onnxruntime")
    from mnist_engine import bench

    x = rng.normal(0, 5, (20, 16)).astype(np.float32)
    p = parameters_for(name, parameters, 16)
    layer = DenseLayer(np.eye(16), np.zeros(16), name, p)
    session = ort.InferenceSession(bench.onnx_model([layer]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    want = engine_for_activation(name, p, 16, dense=True).predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
