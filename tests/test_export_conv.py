"""Keras CNNs to format version 3: the canonical MNIST convnets (keras-io's "Simple MNIST convnet",
LeNet-5 with ZeroPadding2D and average pooling, a BatchNormalization-after-conv net fed (784,)
rows), a seeded grid of layer options, the convnet trained in this run on all 10,000 test images,
and the refusals, each one line naming the layer."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from mnist_engine import UnsupportedModelError

GRID = np.random.default_rng(5)


def convnet(keras):
    """keras-io examples/vision/mnist_convnet.py."""
    layers = keras.layers
    return keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
                             layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                             layers.Dropout(0.5), layers.Dense(10, activation="softmax")])


def lenet5(keras):
    layers = keras.layers
    return keras.Sequential([keras.Input((28, 28, 1)), layers.ZeroPadding2D(2), layers.Conv2D(6, 5, activation="tanh"),
                             layers.AveragePooling2D(2), layers.Conv2D(16, 5, activation="tanh"),
                             layers.AveragePooling2D(2), layers.Flatten(), layers.Dense(120, activation="tanh"),
                             layers.Dense(84, activation="sigmoid"), layers.Dense(10, activation="softmax")])


def batch_norm_net(keras):
    layers = keras.layers
    model = keras.Sequential([keras.Input((784,)), layers.Reshape((28, 28, 1)),
                              layers.Conv2D(8, 3, padding="same", use_bias=False), layers.BatchNormalization(),
                              layers.ReLU(), layers.MaxPooling2D(2, padding="same"),
                              layers.Conv2D(16, 3, strides=2, padding="same"), layers.Activation("relu"),
                              layers.SpatialDropout2D(0.2), layers.GlobalAveragePooling2D(),
                              layers.Dense(10, activation="softmax")])
    norm = model.layers[2]
    rng = np.random.default_rng(0)
    norm.moving_mean.assign(rng.normal(size=8) * 0.1)
    norm.moving_variance.assign(rng.uniform(0.5, 2, 8))
    return model


def assert_parity(model, engine, pixels, atol=1e-5):
    want = model.predict((pixels / np.float32(255)).reshape((len(pixels),) + tuple(model.input_shape[1:])),
                         verbose=0)
    for x in (pixels, pixels.reshape(len(pixels), -1), pixels[..., None].astype(np.float32) / 255):
        got = engine.predict(x)
        assert np.abs(got - want).max() <= atol, np.abs(got - want).max()
        ties = np.sort(want, axis=1)[:, -2] > np.sort(want, axis=1)[:, -1] - 1e-5
        assert np.array_equal(got.argmax(1)[~ties], want.argmax(1)[~ties])


@pytest.mark.parametrize("make, ops", [
    (convnet, ("conv2d", "max_pool", "conv2d", "max_pool", "dense")),
    (lenet5, ("conv2d", "avg_pool", "conv2d", "avg_pool", "dense", "dense", "dense")),
    (batch_norm_net, ("conv2d", "max_pool", "conv2d", "global_avg_pool", "dense")),
])
def test_canonical_convnets_export_exactly(keras, mnist, tmp_path, make, ops):
    (_, _), (x_test, _) = mnist
    model = make(keras)
    engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "m.mnw"))
    assert engine.layer_ops == ops
    assert_parity(model, engine, x_test[:1000])


def grid_cases(count):
    cases = []
    for _ in range(count):
        k = int(GRID.integers(1, 8))
        padding, pool_padding = (str(GRID.choice(["valid", "same"])) for _ in range(2))
        cases.append((k, int(GRID.integers(1, 4)), padding, int(GRID.integers(1, 17)),
                      str(GRID.choice(["max", "average"])), int(GRID.integers(1, 4)), pool_padding,
                      bool(GRID.integers(0, 2))))
    return cases


@pytest.mark.parametrize("k, stride, padding, filters, pool, pool_size, pool_padding, bias", grid_cases(12))
def test_a_grid_of_layer_options_matches_keras(keras, rng, tmp_path, k, stride, padding, filters, pool, pool_size,
                                                pool_padding, bias):
    layers = keras.layers
    keras.utils.set_random_seed(k * 1000 + stride * 100 + filters)  # the same weights every run
    size = int(rng.integers(k + 4, 20))
    pooling = layers.MaxPooling2D if pool == "max" else layers.AveragePooling2D
    model = keras.Sequential([keras.Input((size, size + 1, 2)),
                              layers.Conv2D(filters, k, strides=stride, padding=padding, use_bias=bias,
                                            activation="elu", bias_initializer="random_normal"),
                              pooling(pool_size, padding=pool_padding), layers.Flatten(), layers.Dense(5)])
    # Inputs in 0..1, as MNIST models take them: with raw 0..255 values, a 2000-wide dense sum near zero
    # differs from Keras's by more than the file's 1e-5 absolute tolerance in float32 (a known limit).
    engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "m.mnw"))
    x = rng.random((40, size, size + 1, 2), dtype=np.float32)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(engine.predict(x.reshape(40, -1)), want, rtol=1e-5,
                               atol=2e-5 * max(1.0, float(np.abs(want).max())))


def test_the_convnet_trained_now_matches_keras_on_all_10000_test_images(keras, mnist, tmp_path):
    (x_train, y_train), (x_test, _) = mnist
    keras.utils.set_random_seed(7)
    model = convnet(keras)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train[:6000, ..., None] / np.float32(255), y_train[:6000], batch_size=128, epochs=1, verbose=0)
    engine = mnist_engine.load(mnist_engine.export_keras(model, tmp_path / "convnet.mnw", source="test fit"))
    assert_parity(model, engine, x_test)


@pytest.mark.parametrize("build, message", [
    (lambda k: k.layers.Conv2D(4, 3, dilation_rate=2, name="c"), r"^layer 'c' \(Conv2D\): dilation_rate=\(2, 2\) is "
                                                                   r"not supported; dilation_rate=\(1, 1\) is$"),
    (lambda k: k.layers.Conv2D(4, 3, groups=1, activation="softmax", name="c"),
     r"^layer 'c' \(Conv2D\): activation='softmax' on an image is not supported"),
    (lambda k: k.layers.Conv2DTranspose(4, 3, name="t"), r"^layer 't' \(Conv2DTranspose\) is not supported"),
    (lambda k: k.layers.DepthwiseConv2D(3, name="d"), r"^layer 'd' \(DepthwiseConv2D\) is not supported"),
    (lambda k: k.layers.SeparableConv2D(4, 3, name="s"), r"^layer 's' \(SeparableConv2D\) is not supported"),
    (lambda k: k.layers.Conv2D(4, 3, groups=2, name="g"), r"^layer 'g' \(Conv2D\): groups=2 is not supported"),
    (lambda k: k.layers.Conv2D(4, 1, data_format="channels_first", name="f"),
     r"^layer 'f' \(Conv2D\): data_format='channels_first' is not supported"),
])
def test_what_is_refused_is_named_in_one_line(keras, tmp_path, build, message):
    layers = keras.layers
    model = keras.Sequential([keras.Input((12, 12, 2)), build(keras), layers.Flatten(), layers.Dense(3)])
    with pytest.raises(UnsupportedModelError, match=message):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
    assert not (tmp_path / "m.mnw").exists()


def test_zero_padding_before_a_pool_is_refused(keras, tmp_path):
    layers = keras.layers
    model = keras.Sequential([keras.Input((12, 12, 1)), layers.ZeroPadding2D(1, name="z"), layers.MaxPooling2D(2),
                              layers.Flatten(), layers.Dense(3)])
    with pytest.raises(UnsupportedModelError, match=r"^layer 'z' \(ZeroPadding2D\): a ZeroPadding2D before "
                                                    r"'max_pooling2d.*' \(MaxPooling2D\) is not supported"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
