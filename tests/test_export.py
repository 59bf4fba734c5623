"""The Keras and scikit-learn exporters: which layers map, how they fold, and what is refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnist_engine
from conftest import require
from helpers import stored_neuron_orders
from mnist_engine.export.common import ExportMismatchError, InputRangeWarning
from mnist_engine.export.keras import UnsupportedModelError
from mnist_engine.model_file import DenseLayer, read_layers
from mnist_engine.reference import forward

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
    with pytest.raises(UnsupportedModelError, match="'join' \\(Add\\) takes 2 inputs"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")


@pytest.mark.parametrize("make, match", [
    (lambda k: k.layers.Dense(10, activation="celu", name="g"),
     r"^layer 'g' \(Dense\): activation='celu' is not supported; supported activations: elu, exp, "),
    (lambda k: k.layers.LayerNormalization(rms_scaling=True, name="ln"),
     r"^layer 'ln' \(LayerNormalization\): rms_scaling=True is not supported; LayerNormalization with "
     r"rms_scaling=False is$"),
    (lambda k: k.layers.UnitNormalization(name="unit"),
     r"^layer 'unit' \(UnitNormalization\) is not supported \(and its values match no engine activation or "
     r"per-feature affine map\); supported: InputLayer, Dense, LayerNormalization, "),
])
@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")  # Keras's own deprecation
def test_unsupported_layers_are_named(keras, tmp_path, make, match):
    """A refusal is one line: the layer, its type, the setting that blocks it, what works instead."""
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10), make(keras)])
    with pytest.raises(UnsupportedModelError, match=match) as info:
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
    assert "\n" not in str(info.value) and "{" not in str(info.value)
    assert not (tmp_path / "m.mnw").exists()


def test_activation_after_nonlinear_dense_gets_its_own_layer(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="relu"),
                              keras.layers.Activation("softmax", name="sm")])
    engine = export_and_load(model, tmp_path)
    assert engine.layers == ((784, 10, "relu"), (10, 10, "softmax"))
    assert engine.layer_ops == ("dense", "scale_shift")
    want = model.predict(images.reshape(-1, 784).astype(np.float32) / 255, verbose=0)
    np.testing.assert_allclose(engine.predict(images), want, atol=1e-6)


def test_dense_on_images_without_flatten_is_refused(keras, tmp_path):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Dense(10, name="d")])
    with pytest.raises(UnsupportedModelError, match=r"^layer 'd' \(Dense\): a rank-3 input \('batch', 28, 28\) is "
                                                    r"not supported; add a Flatten before it$"):
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


def test_reject_class_travels_in_the_file_and_is_checked_before_anything_is_written(keras, tmp_path):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(11, activation="softmax")])
    assert export_and_load(model, tmp_path, reject_class=10).reject_class == 10
    assert export_and_load(model, tmp_path).reject_class is None
    out = tmp_path / "none.mnw"
    with pytest.raises(mnist_engine.FormatError, match=r"metadata-reject-class .*output index 0\.\.10 .*got '11'"):
        mnist_engine.export_keras(model, out, reject_class=11)
    for bad in (-1, True, "10", 2.0):
        with pytest.raises(ValueError, match=r"expected reject_class to be an output index \(an int >= 0\), got"):
            mnist_engine.export_keras(model, out, reject_class=bad)
    assert not out.exists()


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
    engine = mnist_engine.load(mnist_engine.export_sklearn(mlp, tmp_path / "mlp.mnw", reference_images=x_test[:16],
                                                             input_scale=1 / 255))
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


# Each case below once exported a file that its own loader then rejected (or that gave wrong
# answers with verify=False), or crashed the exporter. Each now exports with parity or is refused
# by name, and a refusal leaves nothing at the destination.

def keras_parity(model, engine, images):
    x = (images.astype(np.float32) / 255).reshape((len(images),) + tuple(model.inputs[0].shape[1:]))
    want = model.predict(x, verbose=0)
    got = engine.predict(images)
    return float(np.abs(got - want).max()), float((got.argmax(1) == want.argmax(1)).mean())


def test_channels_first_flatten_permutes_the_first_dense(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(data_format="channels_first"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    diff, agree = keras_parity(model, export_and_load(model, tmp_path), images)
    assert diff <= 1e-6 and agree == 1.0


def test_permute_before_flatten_is_folded(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Permute((2, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    diff, _ = keras_parity(model, export_and_load(model, tmp_path), images)
    assert diff <= 1e-6


def test_lora_exports_the_effective_kernel(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.layers[0].enable_lora(4)
    # A trained update: lora_b starts at zero, which would hide a missing LoRA term.
    model.layers[0].lora_kernel_b.assign(np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32))
    diff, agree = keras_parity(model, export_and_load(model, tmp_path), images)
    assert diff <= 1e-6 and agree == 1.0


def test_shared_stateless_layer_in_a_chain(keras, tmp_path, images):
    inputs = keras.Input((784,))
    relu = keras.layers.Activation("relu", name="shared_relu")
    h = relu(keras.layers.Dense(32)(inputs))
    h = relu(keras.layers.Dense(16)(h))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    engine = export_and_load(model, tmp_path)
    assert engine.layers == ((784, 32, "relu"), (32, 16, "relu"), (16, 10, "softmax"))
    assert keras_parity(model, engine, images)[0] <= 1e-6


def test_mixed_float16_exports_its_float32_variables(keras, tmp_path, images):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax", dtype="float32")])
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    model.layers[0].kernel.assign(model.layers[0].kernel * 8)  # larger activations: float16 rounding shows
    engine = export_and_load(model, tmp_path)
    assert engine.metadata["reference_precision"] == "float32"
    assert "float16" in engine.metadata["model_precision"]
    diff, agree = keras_parity(model, engine, images)
    assert diff <= 5e-3 and agree >= 0.95  # against the float16 model itself: its rounding, not ours


def test_subclassed_model_is_refused_with_what_to_do(keras, tmp_path):
    class TwoDense(keras.Model):
        def __init__(self):
            super().__init__(name="two_dense")
            self.a, self.b = keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)

        def call(self, x):
            return self.b(self.a(x))

    model = TwoDense()
    model(np.zeros((1, 784), np.float32))
    with pytest.raises(UnsupportedModelError, match=r"'two_dense' is a subclassed keras.Model \(TwoDense\).*"
                                                     r"keras.Sequential"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def quantized(keras, model, mode: str):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "InputLayer does not have a quantize method"
        model.quantize(mode)
    return model


def test_int8_quantized_model_exports_its_dequantized_kernels(keras, tmp_path, rng):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, activation="relu", name="q"),
                              keras.layers.Dense(10, activation="softmax")])
    quantized(keras, model, "int8")
    path = mnist_engine.export_keras(model, tmp_path / "m.mnw")
    hidden, out = read_layers(path)
    want = [(np.asarray(layer._kernel, np.float64) / np.asarray(layer.kernel_scale, np.float64)).astype(np.float32)
            for layer in model.layers]
    order, last = stored_neuron_orders([hidden, out], want)
    assert last == list(range(10))
    np.testing.assert_array_equal(hidden.kernel, want[0][:, order])
    np.testing.assert_array_equal(hidden.bias, np.asarray(model.layers[0].bias)[order])
    np.testing.assert_array_equal(out.kernel, want[1][order])
    np.testing.assert_array_equal(out.bias, np.asarray(model.layers[1].bias))
    meta = mnist_engine.load(path).metadata
    assert meta["keras_quantization"].startswith("int8")
    # Keras's own int8 forward also quantizes each layer's input: its distance is stated, and small.
    assert 0 < float(meta["keras_quantized_max_abs_diff"]) < 0.05


def test_other_quantization_modes_are_refused_by_layer_and_reason(keras, tmp_path):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32, name="q"), keras.layers.Dense(10)])
    quantized(keras, model, "int4")
    with pytest.raises(UnsupportedModelError, match=r"'q' \(Dense\) is quantized \(int4.*only int8"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_a_mismatch_names_the_first_diverging_layer_and_writes_nothing(keras, tmp_path, monkeypatch):
    """The exporter proves its file before writing it. A mapping bug (simulated: the second Dense's
    kernel exported 1% too large) is refused, naming that layer, and the old file stays."""
    from mnist_engine.export import keras as keras_export

    real = keras_export.keras_dense_chain

    def wrong_chain(model):
        chain = real(model)
        second = chain.layers[1]
        chain.layers[1] = type(second)(second.kernel * 1.01, second.bias, second.activation)
        return chain

    monkeypatch.setattr(keras_export, "keras_dense_chain", wrong_chain)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(20, activation="relu", name="first"),
                              keras.layers.Dense(12, name="second"), keras.layers.Activation("relu", name="act"),
                              keras.layers.Dense(10, activation="softmax")])
    (tmp_path / "m.mnw").write_bytes(b"old")
    with pytest.raises(ExportMismatchError) as info:
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
    message = str(info.value)
    assert "agree with Keras up to engine layer 0, then diverge at engine layer 1, 'second' (Dense 20->12) + " \
           "'act' (Activation relu)" in message
    assert "Nothing was written" in message
    assert (tmp_path / "m.mnw").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mnw"]


def test_float_references_outside_the_pixel_range_warn(keras, tmp_path, images):
    """A model trained on raw 0..255 floats, exported with the default input_scale (1/255): the
    reference images the user passes show the mismatch, and the export says how to fix it."""
    # Seeded: on raw 0..255 inputs the float32 sums of Keras and of the engine differ by ~1e-5, and an
    # unseeded model once put a near-tie row just past the bound below (a CI run: 2.2e-5).
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    raw = images.reshape(-1, 784).astype(np.float32)
    with pytest.warns(InputRangeWarning, match=r"lie in 0\.\.255.*export with input_scale=1"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw", reference_images=raw)
    assert mnist_engine.load(tmp_path / "m.mnw").metadata["reference_input_range"] == f"float 0 {raw.max():g}"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "ok.mnw", reference_images=raw,
                                                             input_scale=1.0))
    # Logits ~255x larger than on scaled inputs: float32 rounding of the sums is ~1e-5 there, in Keras as
    # in the engine (whose order differs, and Keras's order varies with oneDNN's path), so each is held to
    # the float64 answer: the engine within 3x Keras's own distance from it (and at least 2e-5). Held to
    # Keras instead, the bound failed on a near-tie row when the two roundings went opposite ways (CI:
    # 2.2e-5 apart, each ~1.1e-5 from the exact answer).
    want = model.predict(raw, verbose=0)
    exact = forward(read_layers(tmp_path / "ok.mnw"), raw)
    keras_error = float(np.abs(want - exact).max())
    np.testing.assert_allclose(engine.predict(images.reshape(-1, 784)), exact, atol=max(2e-5, 3 * keras_error))
    top2 = np.sort(exact, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    assert (engine.predict(images.reshape(-1, 784)).argmax(1) == exact.argmax(1))[clear].all()


@pytest.mark.parametrize("activation, threshold", [("sigmoid", 0.5), ("linear", 0.0), ("tanh", 0.0)])
def test_one_output_keras_model_classifies_by_threshold(keras, tmp_path, images, activation, threshold):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation=activation)])
    engine = export_and_load(model, tmp_path)
    p = model.predict(images.reshape(-1, 784).astype(np.float32) / 255, verbose=0)[:, 0]
    labels = engine.classify(images)
    np.testing.assert_array_equal(labels, (p > threshold).astype(np.int64))
    assert 0 < labels.sum() < len(labels) or np.all(labels == (p > threshold))


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # Keras agrees: that is the point
def test_one_output_softmax_classify_says_why_not(keras, tmp_path, images):
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(1, activation="softmax")])
    with pytest.raises(ValueError, match="one-output softmax model always outputs 1.0"):
        export_and_load(model, tmp_path).classify(images)


def test_keras2_h5_gives_a_one_line_hint(keras, tmp_path):
    h5py = require("h5py")
    with h5py.File(tmp_path / "old.h5", "w") as f:  # the layout of a Keras 2 weights-only file
        f.attrs["keras_version"] = "2.4.0"
        f.create_group("model_weights")
    with pytest.raises(ValueError, match=r"old\.h5 could not be read by Keras .*load it there and "
                                         r"model\.save\('model\.keras'\)") as info:
        mnist_engine.export_keras(tmp_path / "old.h5", tmp_path / "m.mnw", allow_h5=True)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    out = subprocess.run([sys.executable, "-m", "mnist_engine.cli", "export", str(tmp_path / "old.h5"),
                          str(tmp_path / "m.mnw"), "--allow-h5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    ours = [line for line in out.stderr.splitlines() if line.startswith("mnist-engine")]  # TF logs its own
    assert len(ours) == 1 and "could not be read by Keras" in ours[0], out.stderr


def _binary_data(mnist, labels):
    (x_train, y_train), (x_test, y_test) = mnist
    pick = lambda y: np.where(y < 5, labels[0], labels[1])  # noqa: E731
    return x_train[:3000].reshape(-1, 784), pick(y_train[:3000]), x_test[:2000].reshape(-1, 784)


@pytest.mark.parametrize("labels", [(0, 1), (-3, 7), ("low", "high")])
def test_sklearn_binary_classify_equals_predict(mnist, tmp_path, labels):
    neural = require("sklearn.neural_network")
    x, y, x_test = _binary_data(mnist, labels)
    clf = neural.MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x / 255.0, y)
    engine = mnist_engine.load(mnist_engine.export_sklearn(clf, tmp_path / "b.mnw", input_scale=1 / 255))
    assert engine.output_width == 1 and engine.classes == tuple(clf.classes_.tolist())
    got, want = engine.classify(x_test), clf.predict(x_test / 255.0)
    assert (got == want).mean() >= 0.999, (got != want).sum()  # float32 vs float64 exactly at 0.5
    np.testing.assert_allclose(engine.predict(x_test)[:, 0], clf.predict_proba(x_test / 255.0)[:, 1], atol=1e-5)


def test_sklearn_multiclass_with_string_labels(mnist, tmp_path):
    neural = require("sklearn.neural_network")
    (x_train, y_train), (x_test, _) = mnist
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = neural.MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x_train[:3000].reshape(-1, 784) / 255.0, names[y_train[:3000]])
    engine = mnist_engine.load(mnist_engine.export_sklearn(clf, tmp_path / "s.mnw", input_scale=1 / 255))
    got, want = engine.classify(x_test[:2000]), clf.predict(x_test[:2000].reshape(-1, 784) / 255.0)
    assert got.dtype.kind == "U" and (got == want).mean() >= 0.999


def test_sklearn_labels_the_format_cannot_hold_are_refused_by_name(mnist, tmp_path):
    neural = require("sklearn.neural_network")
    x, y, _ = _binary_data(mnist, (False, True))  # booleans: neither integers nor strings
    clf = neural.MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x / 255.0, y)
    with pytest.raises(ValueError, match=r"MLPClassifier.classes_ cannot be stored: .*all integers, all floats or "
                                         r"all strings.*store_classes=False"):
        mnist_engine.export_sklearn(clf, tmp_path / "f.mnw", input_scale=1 / 255)
    assert not (tmp_path / "f.mnw").exists()
    engine = mnist_engine.load(mnist_engine.export_sklearn(clf, tmp_path / "f.mnw", store_classes=False,
                                                             input_scale=1 / 255))
    assert engine.classes is None and set(np.unique(engine.classify(x[:200]))) <= {0, 1}


def test_cli_export_orders_neurons_from_calibration_data(keras, mnist, tmp_path):
    from mnist_engine.datasets import locate_mnist

    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "m.keras")
    out = subprocess.run([sys.executable, "-m", "mnist_engine.cli", "export", str(tmp_path / "m.keras"),
                          str(tmp_path / "m.mnw"), "--calibration-data", str(locate_mnist())],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # TensorFlow's start-up log is held back; the bar stays off without a terminal
    engine = mnist_engine.load(tmp_path / "m.mnw")
    assert engine.metadata["hidden_unit_order"] == "co-zero groups of 4 from 1024 calibration rows"
    x = mnist[1][0][:64].reshape(64, -1)
    np.testing.assert_allclose(engine.predict(x), model.predict(x / 255, verbose=0), atol=1e-5)


def test_cli_export_into_a_directory_is_refused_before_loading_tensorflow(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import sys; from mnist_engine.cli import main; "
                          f"code = main(['export', 'm.keras', {str(tmp_path)!r}]); "
                          "print('tensorflow' in sys.modules); sys.exit(code)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout.strip() == "False"
    assert out.stderr.strip() == f"mnist-engine: error: expected a file path to write, got a directory: {tmp_path}"


@pytest.mark.parametrize("what", ["tf.nn.softmax", "an unregistered layer"])
def test_a_file_keras_cannot_reload_is_one_line_naming_the_cause(keras, tmp_path, what):
    import tensorflow as tf

    if what == "tf.nn.softmax":
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3, activation=tf.nn.softmax)])
        cause = "Could not locate function 'softmax_v2'"
    else:
        class Swish(keras.layers.Layer):
            def call(self, x):
                return x * keras.ops.sigmoid(x)
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(5), Swish(), keras.layers.Dense(3)])
        cause = "Could not locate class 'Swish'"
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError) as e:
        mnist_engine.export_keras(tmp_path / "m.keras", tmp_path / "m.mnw")
    message = str(e.value)
    assert "\n" not in message and len(message) < 400, message
    assert f"cannot reload this file: {cause}. Export the model object instead" in message
    assert not (tmp_path / "m.mnw").exists()


def test_a_savedmodel_folder_gets_a_conversion_hint(keras, tmp_path):
    folder = tmp_path / "digits.model"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a TensorFlow SavedModel folder .*model.save\('model.keras'\)"):
        mnist_engine.export_keras(folder, tmp_path / "m.mnw")


def test_sklearn_float_labels_classify_exactly_as_predict(mnist, tmp_path):
    """fetch_mldata and y.astype(float) give 0.0 ... 9.0: classify returns those floats, as predict does."""
    neural = require("sklearn.neural_network")
    (x_train, y_train), (x_test, _) = mnist
    clf = neural.MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(x_train[:3000].reshape(-1, 784) / 255.0, y_train[:3000].astype(np.float64))
    engine = mnist_engine.load(mnist_engine.export_sklearn(clf, tmp_path / "f.mnw", input_scale=1 / 255))
    assert engine.classes == tuple(float(c) for c in range(10))
    got, want = engine.classify(x_test[:2000]), clf.predict(x_test[:2000].reshape(-1, 784) / 255.0)
    assert got.dtype == want.dtype == np.float64 and (got == want).mean() >= 0.999
    assert engine.classes_.dtype == np.float64


def custom_layers(keras):
    """Layers whose Python the exporter cannot read, as people write them, and what they compute."""
    ops = keras.ops

    class Mish(keras.layers.Layer):
        def call(self, x):
            return x * ops.tanh(ops.softplus(x))

    class Swish(keras.layers.Activation):
        def __init__(self, **kw):
            super().__init__(lambda x: x * ops.sigmoid(x), **kw)

    class ScaleShift(keras.layers.Layer):
        def call(self, x):
            return x * 2.0 - 0.5

    class QuickGelu(keras.layers.Layer):  # x * sigmoid(1.702 x): close to gelu, and not it
        def call(self, x):
            return x * ops.sigmoid(1.702 * x)

    class Mixes(keras.layers.Layer):  # not element-wise
        def call(self, x):
            return x * ops.mean(x, axis=-1, keepdims=True)

    return {"mish": (Mish, "mish"), "swish": (Swish, "silu"),
            "relu6 lambda": (lambda: keras.layers.Lambda(lambda x: ops.minimum(ops.relu(x), 6.0)), "relu6"),
            "leaky lambda": (lambda: keras.layers.Lambda(lambda x: ops.leaky_relu(x, 0.15)), "leaky_relu"),
            "affine": (ScaleShift, None), "quick gelu": (QuickGelu, "refused"), "mixes": (Mixes, "refused")}


@pytest.mark.parametrize("name", ["mish", "swish", "relu6 lambda", "leaky lambda", "affine", "quick gelu", "mixes"])
def test_layers_the_exporter_cannot_read_are_identified_by_their_values(keras, mnist, tmp_path, name):
    make, expected = custom_layers(keras)[name]
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32), make(),
                              keras.layers.Dense(10, activation="softmax")])
    (_, _), (x_test, _) = mnist
    if expected == "refused":
        with pytest.raises(mnist_engine.UnsupportedModelError, match=r"is not supported \(and its values match no "
                                                                     r"engine activation"):
            mnist_engine.export_keras(model, tmp_path / "m.mnw")
        assert not (tmp_path / "m.mnw").exists()
        return
    engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "m.mnw"))
    if expected is None:  # the affine map folds into the Dense around it
        assert [op for op in engine.layer_ops] == ["dense", "dense"]
    else:
        assert engine.layers[0] == (784, 32, expected)
    x = x_test[:500]
    got, want = engine.predict(x), model.predict(x.reshape(500, -1) / np.float32(255), verbose=0)
    assert np.abs(got - want).max() <= 1e-5


def test_a_mismatch_from_float32_rounding_is_not_called_an_engine_bug(rng, tmp_path):
    """When every layer agrees with the framework in float64 but the engine's float32 outputs do
    not, the exporter tells float32 rounding of large sums (both sides about as far from the exact
    answer: the fix is a wider atol, or scaled inputs) from an engine bug (the engine alone far
    from it)."""
    from mnist_engine.export.common import Stage, _diagnose

    layer = DenseLayer(rng.normal(0, 0.05, (784, 10)), rng.normal(0, 0.1, 10), "linear")
    x = rng.integers(0, 256, (8, 784)).astype(np.float64)
    exact = forward([layer], x)
    # Within the file's tolerance in float64 (so no layer diverges), apart from each other by more.
    signs = rng.choice([-1, 1], exact.shape)
    framework = Stage("'d' (Dense 784->10)", exact + signs * 0.8e-5)
    message = _diagnose([layer], [framework], x, "Keras", 1e-5, 0.0, tmp_path / "m.mnw", "loader says",
                        exact - signs * 2.2e-5)
    assert "both float32 roundings" in message and "pass atol=5e-05 to the export" in message
    assert "engine bug" not in message
    large = _diagnose([layer], [Stage("d", exact + signs * 9e-4)], x, "Keras", 1e-3, 0.0, tmp_path / "m.mnw", "",
                      exact - signs * 2e-3)
    assert "more than a file's tolerance allows (0.001); export a model whose inputs are scaled" in large
    broken = _diagnose([layer], [framework], x, "Keras", 1e-5, 0.0, tmp_path / "m.mnw", "loader says", exact + 0.5)
    assert "this is an engine bug, please report it" in broken and "the engine is 0.5 from the exact" in broken


def test_a_keras_mlp_of_tabular_features_exports_as_features(keras, tmp_path, rng):
    """A Keras MLP on 20 standardized features has no pixels (neither an image nor 784 values): it
    exports without a pixel scale, takes float rows exactly as Keras does, refuses uint8 in one
    line, and its file says "features". A scale given by the caller makes it a pixel model."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    rows = rng.normal(size=(200, 20)).astype(np.float32)
    want = model.predict(rows, verbose=0)
    for reference in (None, rows[:16]):
        engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "t.mnw", reference_images=reference))
        assert engine.input_kind == "features" and engine.metadata["input_kind"] == "features"
        np.testing.assert_allclose(engine.predict(rows), want, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="^expected float32 features: this model takes tabular features"):
            engine.predict(np.zeros((1, 20), np.uint8))
    scaled = mnist_engine.export_keras(model, tmp_path / "p.mnw", input_scale=1 / 16)
    assert mnist_engine.load(scaled).input_kind == "pixels"
