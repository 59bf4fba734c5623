"""The product's promise: the engine computes what Keras computes, on all 10,000 MNIST test images,
for the bundled model and for a model trained during this test run."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from helpers import train_dense50

MAX_ABS_DIFF = 1e-5
# Where Keras's two best classes are closer than this, rounding may legitimately swap them.
TIE = 1e-6


def assert_parity(engine_p: np.ndarray, keras_p: np.ndarray) -> None:
    assert engine_p.shape == keras_p.shape == (10000, 10)
    worst = float(np.abs(engine_p - keras_p).max())
    assert worst <= MAX_ABS_DIFF, f"max |dp| = {worst:.3g}"
    disagree = np.flatnonzero(engine_p.argmax(1) != keras_p.argmax(1))
    top2 = np.sort(keras_p[disagree], axis=1)[:, -2:]
    ties = (top2[:, 1] - top2[:, 0]) < TIE
    assert ties.all(), f"argmax differs on rows {disagree[~ties][:10]} where Keras is not tied"


@pytest.fixture(scope="module")
def keras_reference(bundled_keras_model, mnist):
    (_, _), (x_test, _) = mnist
    x = x_test.reshape(-1, 784).astype(np.float32) / np.float32(255)
    return x, bundled_keras_model.predict(x, batch_size=10000, verbose=0)


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_bundled_model_uint8_input_matches_keras(mnist, keras_reference, kernel):
    (_, _), (x_test, _) = mnist
    engine = mnist_engine.load(mnist_engine.default_model_path(), kernel=kernel)
    assert_parity(engine.predict(x_test), keras_reference[1])


@pytest.mark.parametrize("kernel", mnist_engine.available_kernels("fp32"))
def test_bundled_model_float_input_matches_keras(keras_reference, kernel):
    x, want = keras_reference
    engine = mnist_engine.load(mnist_engine.default_model_path(), kernel=kernel)
    assert_parity(engine.predict(x), want)


def test_bundled_model_accuracy(mnist):
    (_, _), (x_test, y_test) = mnist
    accuracy = (mnist_engine.classify(x_test) == y_test).mean()
    assert accuracy >= 0.975, accuracy


def test_model_trained_now_matches_keras(keras, mnist, tmp_path):
    (_, _), (x_test, _) = mnist
    model = train_dense50(keras, mnist, seed=5, epochs=1)
    path = mnist_engine.export_keras(model, tmp_path / "m50.mnw", reference_images=x_test[:32])
    engine = mnist_engine.load(path)
    want = model.predict(x_test.astype(np.float32) / 255, batch_size=10000, verbose=0)
    assert_parity(engine.predict(x_test), want)
    assert_parity(engine.predict(x_test.astype(np.float32) / np.float32(255)), want)
    accuracy = (engine.classify(x_test) == mnist[1][1]).mean()
    assert accuracy > 0.9, accuracy


def test_an_ill_conditioned_linear_cnn_is_no_less_accurate_than_keras(keras, mnist, tmp_path):
    """Three linear convs and two linear Dense layers on raw 0..255 pixels: nothing bounds the sums
    (logits in the hundreds, a 3200-input Dense), so their rounding shows. Against float64 with the
    same float32 weights, every fp32 kernel's error must be no larger than Keras's own, in the
    largest and the typical (rms) case. Summing each window, or each Dense row, in one chain was
    about 2x Keras's error; the kernels sum in blocks (dense-sparse-rows.h, conv-direct.h)."""
    from mnist_engine import reference_conv as rc
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(16, 3), layers.Conv2D(32, 3),
                              layers.MaxPooling2D(), layers.Conv2D(32, 3), layers.Flatten(), layers.Dense(64),
                              layers.Dense(10)])
    (_, _), (x_test, _) = mnist
    x = x_test[:300].reshape(-1, 28, 28, 1).astype(np.float32)
    w = model.get_weights()
    y = rc.conv2d(rc.conv2d(x, w[0], w[1]), w[2], w[3])
    y = rc.conv2d(rc.max_pool2d(y, (2, 2), (2, 2)), w[4], w[5]).reshape(len(x), -1)
    exact = (y @ w[6].astype(np.float64) + w[7]) @ w[8].astype(np.float64) + w[9]
    assert np.abs(exact).max() > 100, "the model is meant to be ill-conditioned"
    keras_error = np.abs(model.predict(x, batch_size=300, verbose=0) - exact)
    # The file's check at load compares with Keras's outputs, and Keras's own error here (~1e-4)
    # is more than the default tolerance allows on outputs near 0.
    path = mnist_engine.export_keras(model, tmp_path / "linear.mnw", input_scale=1.0, output_kind="logits",
                                     atol=3e-4)
    for kernel in mnist_engine.available_kernels("fp32"):
        error = np.abs(mnist_engine.load(path, kernel=kernel).predict(x.reshape(len(x), -1)) - exact)
        assert error.max() <= keras_error.max(), f"{kernel}: max error {error.max():.3g}, Keras {keras_error.max():.3g}"
        rms, keras_rms = np.sqrt((error ** 2).mean()), np.sqrt((keras_error ** 2).mean())
        assert rms <= keras_rms, f"{kernel}: rms error {rms:.3g}, Keras {keras_rms:.3g}"
