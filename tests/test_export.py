"""The Keras and scikit-learn exporters: which layers map, how they fold, and what is refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from conftest import require
from mnist_engine.keras_export import UnsupportedModelError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def images(rng):
    return np.where(rng.random((64, 28, 28)) < 0.8, 0, rng.integers(1, 256, (64, 28, 28))).astype(np.uint8)


def export_and_load(model, tmp_path, **kw):
    return mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "m.mnw", **kw))


def test_rescaling_is_folded_and_uint8_means_raw_pixels(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255, offset=-0.5),
                              keras.layers.Flatten(), keras.layers.Dense(32, activation="tanh"),
                              keras.layers.Dense(10), keras.layers.Softmax()])
    engine = export_and_load(model, tmp_path)
    assert engine.input_scale == 1.0
    assert engine.layers == ((784, 32, "tanh"), (32, 10, "softmax"))
    want = model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(engine.predict(images), want, atol=1e-5)


def test_activation_layers_merge_and_dropout_vanishes(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(20), keras.layers.Activation("relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(12), keras.layers.ReLU(),
                              keras.layers.Dense(10, use_bias=False), keras.layers.Activation("sigmoid")])
    engine = export_and_load(model, tmp_path)
    assert engine.layers == ((784, 20, "relu"), (20, 12, "relu"), (12, 10, "sigmoid"))
    x = images.reshape(-1, 784).astype(np.float32) / 255
    np.testing.assert_allclose(engine.predict(images), model.predict(x, verbose=0), atol=1e-6)


def test_functional_single_chain(keras, tmp_path, images):
    inputs = keras.Input((28, 28))
    h = keras.layers.Reshape((784,))(inputs)
    h = keras.layers.Dense(16, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    engine = export_and_load(model, tmp_path)
    want = model.predict(images.astype(np.float32) / 255, verbose=0)
    np.testing.assert_allclose(engine.predict(images), want, atol=1e-6)


def test_branching_model_is_refused(keras, tmp_path):
    inputs = keras.Input((784,))
    a = keras.layers.Dense(8, name="left")(inputs)
    b = keras.layers.Dense(8, name="right")(inputs)
    model = keras.Model(inputs, keras.layers.Add(name="join")([a, b]))
    with pytest.raises(UnsupportedModelError, match="'right'"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")


@pytest.mark.parametrize("make, match", [
    (lambda k: k.layers.BatchNormalization(name="bn"), r"'bn' of type BatchNormalization is not supported"),
    (lambda k: k.layers.Dense(10, activation="gelu", name="g"), r"'g' \(Dense\) has activation 'gelu'"),
    (lambda k: k.layers.LeakyReLU(name="leaky"), r"'leaky' of type LeakyReLU"),
])
def test_unsupported_layers_are_named(keras, tmp_path, make, match):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10), make(keras)])
    with pytest.raises(UnsupportedModelError, match=match):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_activation_after_nonlinear_dense_is_refused(keras, tmp_path):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="relu"),
                              keras.layers.Activation("softmax", name="sm")])
    with pytest.raises(UnsupportedModelError, match="'sm'.*after a Dense with activation 'relu'"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")


def test_dense_on_images_without_flatten_is_refused(keras, tmp_path):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Dense(10, name="d")])
    with pytest.raises(UnsupportedModelError, match="'d' \\(Dense\\) gets a rank-3 input"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")


def test_keras_file_round_trip_and_metadata(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")], name="tiny")
    model.save(tmp_path / "tiny.keras")
    engine = mnist_engine.load(mnist_engine.export_keras(tmp_path / "tiny.keras", tmp_path / "tiny.mnw"))
    meta = engine.metadata
    assert meta["source"] == "tiny.keras" and meta["model_name"] == "tiny"
    assert meta["keras_version"] == keras.__version__ and meta["producer"] == "mnist_engine.export_keras"
    assert meta["producer_version"] == mnist_engine.__version__
    x = images.reshape(-1, 784).astype(np.float32) / 255
    np.testing.assert_allclose(engine.predict(images), model.predict(x, verbose=0), atol=1e-6)


def test_legacy_h5_needs_opt_in(keras, tmp_path):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    model.save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="legacy HDF5"):
        mnist_engine.export_keras(tmp_path / "m.h5", tmp_path / "m.mnw")
    engine = mnist_engine.load(mnist_engine.export_keras(tmp_path / "m.h5", tmp_path / "m.mnw", allow_h5=True))
    assert engine.layers == ((784, 10, "linear"),)


def test_unknown_model_suffix_is_refused(keras, tmp_path):
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(ValueError, match="expected a .keras model file"):
        mnist_engine.export_keras(tmp_path / "m.pkl", tmp_path / "m.mnw")


def test_lambda_layers_do_not_load_in_safe_mode(keras, tmp_path):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(10)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        mnist_engine.export_keras(tmp_path / "lambda.keras", tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_export_cli(keras, tmp_path):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "cli.keras")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "export_weights.py"), str(tmp_path / "cli.keras"),
                          str(tmp_path / "cli.mnw")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "784 -> 10 softmax" in out.stdout
    assert mnist_engine.load(tmp_path / "cli.mnw").metadata["source"] == "cli.keras"


def test_sklearn_mlp_matches_predict_proba(mnist, tmp_path):
    neural = require("sklearn.neural_network")
    (x_train, y_train), (x_test, _) = mnist
    mlp = neural.MLPClassifier(hidden_layer_sizes=(100, 50, 25), activation="relu", max_iter=3, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 3 iterations are enough for a parity test
        mlp.fit(x_train[:5000].reshape(-1, 784) / 255.0, y_train[:5000])
    engine = mnist_engine.load(mnist_engine.export_sklearn(mlp, tmp_path / "mlp.mnw", reference_images=x_test[:16]))
    assert engine.layers == ((784, 100, "relu"), (100, 50, "relu"), (50, 25, "relu"), (25, 10, "softmax"))
    assert engine.metadata["sklearn_version"]
    want = mlp.predict_proba(x_test.reshape(-1, 784) / 255.0)
    got = engine.predict(x_test)
    assert np.abs(got - want).max() <= 1e-5
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9999


def test_keras_older_than_the_safe_mode_fixes_is_refused(keras, monkeypatch, tmp_path):
    monkeypatch.setattr(keras, "__version__", "3.13.1")
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    with pytest.raises(RuntimeError, match=r"Keras >= 3.13.2 is required.*found 3.13.1"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
