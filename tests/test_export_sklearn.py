"""scikit-learn: MLPClassifier with every hidden activation, binary and multi-label outputs,
MLPRegressor with one and several outputs, and fitted Pipelines whose scalers fold into the first
layer, each checked against scikit-learn's own predictions on 2000 MNIST test images."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mnist_engine

pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler  # noqa: E402

TRAIN, TEST = 4000, 2000


@pytest.fixture(scope="module")
def data(mnist):
    (x, y), (x_test, y_test) = mnist
    scale = np.float32(1 / 255)
    return (x[:TRAIN].reshape(TRAIN, -1) * scale, y[:TRAIN], x_test[:TEST])


def fit(model, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def export(model, tmp_path, **kw):
    return mnist_engine.load(mnist_engine.export_sklearn(model, tmp_path / "m.mnw", **kw))


def sklearn_input(pixels):
    """What scikit-learn was fed: pixels / 255 in float32, exactly as the engine scales uint8 input."""
    return pixels.reshape(len(pixels), -1).astype(np.float64) * (1 / 255)


def assert_parity(got, want, atol=1e-5):
    worst = float(np.max(np.abs(got - np.asarray(want).reshape(got.shape))))
    assert worst <= atol, f"max |engine - scikit-learn| = {worst:.3g}"


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_mlp_classifier_every_hidden_activation(data, tmp_path, activation):
    x, y, test = data
    mlp = fit(MLPClassifier(hidden_layer_sizes=(40, 20), activation=activation, max_iter=15, random_state=0), x, y)
    engine = export(mlp, tmp_path, input_scale=1 / 255)
    x_test = sklearn_input(test).astype(np.float32)
    assert_parity(engine.predict(test), mlp.predict_proba(x_test))
    assert np.array_equal(engine.classify(test), mlp.predict(x_test))


def test_mlp_classifier_multi_label(data, tmp_path):
    x, y, test = data
    labels = np.stack([y % 2 == 0, y > 4, np.isin(y, [0, 6, 8, 9])], axis=1).astype(int)
    mlp = fit(MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0), x, labels)
    engine = export(mlp, tmp_path, input_scale=1 / 255)
    assert engine.layers[-1] == (32, 3, "sigmoid")
    assert_parity(engine.predict(test), mlp.predict_proba(sklearn_input(test).astype(np.float32)))


@pytest.mark.parametrize("outputs", [1, 2])
def test_mlp_regressor(data, tmp_path, outputs):
    x, y, test = data
    target = y.astype(float) if outputs == 1 else np.stack([y, (y - 4.5) ** 2 / 10], axis=1)
    mlp = fit(MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=20, random_state=0), x, target)
    engine = export(mlp, tmp_path, input_scale=1 / 255)
    assert engine.layers[-1] == (16, outputs, "linear")
    assert_parity(engine.predict(test), mlp.predict(sklearn_input(test).astype(np.float32)), atol=1e-4)


@pytest.mark.parametrize("scaler", [StandardScaler(), StandardScaler(with_mean=False), MinMaxScaler((-1, 1)),
                                    MaxAbsScaler()], ids=["standard", "standard-no-mean", "minmax", "maxabs"])
def test_pipeline_scalers_fold_into_the_first_layer(data, tmp_path, scaler):
    x, y, test = data
    pipe = fit(make_pipeline(scaler, MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0)), x, y)
    engine = export(pipe, tmp_path)
    assert len(engine.layers) == 2  # no engine layer for the scaler
    x_test = sklearn_input(test).astype(np.float32)
    assert_parity(engine.predict(test), pipe.predict_proba(x_test))
    assert np.array_equal(engine.classify(test), pipe.predict(x_test))


def test_pipeline_regressor_with_a_scaler(data, tmp_path):
    x, y, test = data
    mlp = MLPRegressor(hidden_layer_sizes=(16,), max_iter=20, random_state=0)
    pipe = fit(make_pipeline(StandardScaler(), mlp), x, y.astype(float))
    assert_parity(export(pipe, tmp_path).predict(test), pipe.predict(sklearn_input(test).astype(np.float32)),
                  atol=1e-4)


@pytest.mark.parametrize("steps", ["pca", "pca-whiten", "scaler-pca", "pca-scaler"])
def test_pca_folds_into_the_first_layer(data, tmp_path, steps):
    """PCA is affine: x -> (x - mean_) components_.T (whitened: over sqrt(explained_variance_))."""
    from sklearn.decomposition import PCA

    x, y, test = data
    parts = {"pca": [PCA(30, random_state=0)], "pca-whiten": [PCA(30, whiten=True, random_state=0)],
             "scaler-pca": [StandardScaler(), PCA(30, random_state=0)],
             "pca-scaler": [PCA(30, random_state=0), MinMaxScaler()]}[steps]
    pipe = fit(make_pipeline(*parts, MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0)), x, y)
    engine = export(pipe, tmp_path)
    assert engine.layers[0][:2] == (784, 32)  # no layer for the projection
    x_test = sklearn_input(test).astype(np.float32)
    assert_parity(engine.predict(test), pipe.predict_proba(x_test))
    assert np.array_equal(engine.classify(test), pipe.predict(x_test))


def test_pipeline_steps_that_do_not_fold_are_refused_by_name(data, tmp_path):
    from sklearn.preprocessing import Normalizer

    x, y, _ = data
    pipe = fit(make_pipeline(Normalizer(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)), x, y)
    with pytest.raises(ValueError, match=r"^pipeline step Normalizer is not supported: only StandardScaler, "
                                         r"MinMaxScaler, MaxAbsScaler, PCA before the MLP fold into its first layer$"):
        mnist_engine.export_sklearn(pipe, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_a_plain_mlp_needs_its_input_scale_named(data, tmp_path):
    """An MLP keeps no trace of its training data's scale: export refuses to guess."""
    x, y, _ = data
    mlp = fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0), x, y)
    with pytest.raises(ValueError, match=r"^export_sklearn cannot tell the scale the model was fitted on: pass "
                                         r"input_scale=1/255 .* or input_scale=1 if on raw 0\.\.255 pixels"):
        mnist_engine.export_sklearn(mlp, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_an_mlp_fitted_on_raw_pixels_classifies_uint8_images_as_sklearn_does(mnist, tmp_path):
    (x, y), (x_test, _) = mnist
    raw = x[:TRAIN].reshape(TRAIN, -1).astype(np.float64)
    mlp = fit(MLPClassifier(hidden_layer_sizes=(32,), max_iter=10, random_state=0), raw, y[:TRAIN])
    engine = export(mlp, tmp_path, input_scale=1)
    want = mlp.predict(x_test[:2000].reshape(2000, -1).astype(np.float64))
    assert (engine.classify(x_test[:2000]) == want).mean() >= 0.999
    # Float reference images in 0..255 say the same without input_scale.
    inferred = export(mlp, tmp_path, reference_images=raw[:16].astype(np.float32))
    assert inferred.input_scale == 1.0


@pytest.mark.parametrize("scaler", [StandardScaler(), MinMaxScaler(), MaxAbsScaler()],
                         ids=["standard", "minmax", "maxabs"])
@pytest.mark.parametrize("pixels_scale", [1.0, 1 / 255])
def test_a_pipeline_scaler_tells_the_input_scale(mnist, tmp_path, scaler, pixels_scale):
    (x, y), (x_test, _) = mnist
    train = x[:TRAIN].reshape(TRAIN, -1).astype(np.float64) * pixels_scale
    pipe = fit(make_pipeline(scaler, MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)),
               train, y[:TRAIN])
    engine = export(pipe, tmp_path)
    assert engine.input_scale == pytest.approx(pixels_scale)
    want = pipe.predict(x_test[:1000].reshape(1000, -1).astype(np.float64) * pixels_scale)
    assert (engine.classify(x_test[:1000]) == want).mean() >= 0.999


def tabular_models():
    """The public tabular models of the issue, rebuilt: (name, fitted model, float rows it takes)."""
    from sklearn.datasets import load_breast_cancer, load_digits, make_classification, make_moons, make_regression
    from sklearn.decomposition import PCA

    cancer = load_breast_cancer()
    digits = load_digits()
    x_moons, y_moons = make_moons(200, noise=0.2, random_state=0)
    x_reg, y_reg = make_regression(300, n_features=100, random_state=0)
    x_20, y_20 = make_classification(300, n_features=20, n_informative=8, n_classes=3, random_state=0)
    x_20 = StandardScaler().fit_transform(x_20)  # standardized before the model, as its notebook did
    labels = np.stack([y_moons, x_moons[:, 0] > 0.5], axis=1).astype(int)

    def mlp(kind=MLPClassifier, **kw):
        return kind(hidden_layer_sizes=(16,), max_iter=200, random_state=0, **kw)

    return [
        ("breast cancer, MinMaxScaler", fit(make_pipeline(MinMaxScaler(), mlp()), cancer.data, cancer.target),
         cancer.data),
        ("100-feature MLPRegressor", fit(mlp(MLPRegressor), x_reg, y_reg / 100), x_reg),
        ("8x8 digits, 0..16", fit(mlp(), digits.data, digits.target), digits.data),
        ("2 features, binary", fit(mlp(), x_moons, y_moons), x_moons),
        ("2 features, multi-label", fit(mlp(), x_moons, labels), x_moons),
        ("20 standardized features", fit(mlp(), x_20, y_20), x_20),
        ("StandardScaler + PCA", fit(make_pipeline(StandardScaler(), PCA(10), mlp()), cancer.data, cancer.target),
         cancer.data),
    ]


@pytest.mark.parametrize("case", range(7))
def test_tabular_models_export_as_features_exactly(tmp_path, case):
    """Models of tabular data have no pixels: they export without asking for a pixel scale, take
    their float rows exactly as scikit-learn does (predict_proba / predict), refuse uint8 in one
    line, and say "features" in the file. Without reference rows the export draws its own."""
    name, model, rows = tabular_models()[case]
    for reference in (None, rows[:16]):
        engine = export(model, tmp_path, reference_images=reference)
        assert engine.input_kind == "features" and engine.metadata["input_kind"] == "features", name
        want = model.predict_proba(rows) if hasattr(model, "predict_proba") else model.predict(rows)
        got = engine.predict_proba(rows.astype(np.float32)) if hasattr(model, "predict_proba") else \
            engine.predict(rows.astype(np.float32))
        if want.ndim == 2 and want.shape[1] == 2 and got.shape[1] == 1:  # binary: the positive column
            want = want[:, 1:]
        np.testing.assert_allclose(got, np.asarray(want).reshape(got.shape), atol=1e-5, rtol=1e-5, err_msg=name)
        if hasattr(model, "predict_proba") and "multi-label" not in name:  # the labels travel in the file
            np.testing.assert_array_equal(engine.classify(rows.astype(np.float32)), model.predict(rows))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the refusal alone: no range warning about pixels first
            with pytest.raises(ValueError, match="^expected float32 features: this model takes tabular features"):
                engine.predict(np.zeros((1, rows.shape[1]), np.uint8))


def test_a_784_wide_bare_mlp_still_asks_for_its_pixel_scale(data, tmp_path):
    """Only where uint8 pixels are possible: 784 inputs (or uint8 reference images, or a scale given)."""
    x, y, _ = data
    mlp = fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0), x, y)
    with pytest.raises(ValueError, match="cannot tell the scale the model was fitted on"):
        mnist_engine.export_sklearn(mlp, tmp_path / "m.mnw")
    digits = fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0), x[:, :64] * 16, y)
    assert export(digits, tmp_path, input_scale=16 / 255).input_kind == "pixels"  # 8x8 images as uint8, by choice
