"""Every Keras layer type and activation the exporter maps, each in a small model, exported and
checked against Keras itself on real MNIST test images: what folds (Normalization,
BatchNormalization, Rescaling), what becomes an engine op (an unfoldable BatchNormalization,
LayerNormalization, an activation with nothing to merge into), what passes through (the layers
that are the identity at inference, nested models, image-shaped inputs).

Parity: max |engine - Keras| <= 1e-5 on 2000 images, and the same predicted class wherever Keras's
top two outputs are not a near-tie (< 1e-6 apart)."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from mnist_engine.export.keras import KERAS_ACTIVATIONS

ROWS = 2000


@pytest.fixture(scope="module")
def test_images(mnist):
    _, (x, _) = mnist
    return x[:ROWS]


def bn(keras, rng, name="bn", **kw):
    """A BatchNormalization whose inference statistics are not the identity's."""
    layer = keras.layers.BatchNormalization(name=name, **kw)
    layer._mnist_engine_randomize = rng
    return layer


def randomize(model, rng):
    """Give every BatchNormalization moving statistics, and every PReLU slopes, worth folding."""
    for layer in _all_layers(model):
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([w + rng.normal(0, 0.3, w.shape) if i < len(layer.weights) - 1
                               else rng.uniform(0.2, 3.0, w.shape) for i, w in enumerate(layer.get_weights())])
        if type(layer).__name__ == "PReLU":
            layer.set_weights([rng.uniform(-0.3, 0.6, w.shape) for w in layer.get_weights()])
        if type(layer).__name__ == "LayerNormalization":
            layer.set_weights([w + rng.normal(0, 0.5, w.shape) for w in layer.get_weights()])


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def check_parity(keras, model, images, tmp_path, scale=1 / 255, **export_kw):
    """Export, load, and compare with Keras on `images` (uint8 MNIST). Returns the engine."""
    path = mnist_engine.export_keras(model, tmp_path / "m.mnw", **export_kw)
    engine = mnist_engine.load(path)
    shape = (len(images),) + tuple(model.inputs[0].shape[1:])
    want = np.asarray(model.predict((images.astype(np.float32) * np.float32(scale)).reshape(shape), verbose=0,
                                    batch_size=500)).reshape(len(images), -1)
    got = engine.predict(images)
    worst = float(np.max(np.abs(got - want)))
    print(f"parity: max |engine - Keras| = {worst:.2g} on {len(images)} images; layers {engine.layers}")
    assert worst <= 1e-5, f"max |engine - Keras| = {worst:.3g}"
    if want.shape[1] > 1:
        top2 = np.sort(want, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-6
        assert np.array_equal(got.argmax(1)[clear], want.argmax(1)[clear])
    return engine


def mlp(keras, *middle, inputs=(784,), head=True):
    layers = [keras.Input(inputs)] + (list(middle))
    if head:
        layers.append(keras.layers.Dense(10, activation="softmax", name="head"))
    return keras.Sequential(layers)


# --- folding ---------------------------------------------------------------------------------

def test_normalization_adapted_on_the_data_folds_into_the_first_dense(keras, test_images, tmp_path, mnist):
    (train, _), _ = mnist
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(train[:5000].reshape(-1, 784).astype(np.float32))
    model = mlp(keras, norm, keras.layers.Dense(64, activation="relu"))
    engine = check_parity(keras, model, test_images, tmp_path, scale=1.0, input_scale=1.0)
    assert engine.layer_ops == ("dense", "dense")


def test_normalization_per_column_of_an_image_input(keras, test_images, tmp_path, mnist):
    (train, _), _ = mnist
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(train[:2000].astype(np.float32) / 255)
    model = mlp(keras, norm, keras.layers.Flatten(), keras.layers.Dense(32, activation="tanh"), inputs=(28, 28))
    assert check_parity(keras, model, test_images, tmp_path).layer_ops == ("dense", "dense")


def test_normalization_inverted_and_rescaling_compose(keras, test_images, tmp_path):
    norm = keras.layers.Normalization(mean=0.3, variance=4.0, invert=True)
    model = mlp(keras, keras.layers.Rescaling(1 / 127.5, offset=-1), keras.layers.Flatten(), norm,
                keras.layers.Dense(32, activation="relu"), inputs=(28, 28))
    engine = check_parity(keras, model, test_images, tmp_path, scale=1.0)
    assert engine.input_scale == 1.0  # the Rescaling takes raw pixels


@pytest.mark.parametrize("kw", [{}, {"center": False}, {"scale": False}, {"epsilon": 0.1}])
def test_batchnorm_between_dense_and_activation_folds_into_the_dense(keras, rng, test_images, tmp_path, kw):
    model = mlp(keras, keras.layers.Dense(64), bn(keras, rng, **kw), keras.layers.Activation("relu"))
    randomize(model, rng)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.layers == ((784, 64, "relu"), (64, 10, "softmax"))


def test_batchnorm_after_a_nonlinearity_folds_into_the_next_dense(keras, rng, test_images, tmp_path):
    model = mlp(keras, keras.layers.Dense(64, activation="relu"), bn(keras, rng), keras.layers.Dropout(0.2),
                keras.layers.Dense(32, activation="gelu"), bn(keras, rng, name="bn2"))
    randomize(model, rng)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.layer_ops == ("dense", "dense", "dense")


def test_batchnorm_on_the_input_folds_into_the_first_dense(keras, rng, test_images, tmp_path):
    model = mlp(keras, keras.layers.Flatten(), bn(keras, rng), keras.layers.Dense(32, activation="relu"),
                inputs=(28, 28))
    randomize(model, rng)
    assert check_parity(keras, model, test_images, tmp_path).layer_ops == ("dense", "dense")


def test_batchnorm_with_nothing_to_fold_into_runs_as_a_scale_shift_op(keras, rng, test_images, tmp_path):
    """After a nonlinearity and before another one (or at the end), BatchNormalization has no
    Dense to fold into: the engine runs it as a per-feature scale and shift."""
    model = mlp(keras, keras.layers.Dense(64, activation="relu"), bn(keras, rng), keras.layers.Activation("elu"),
                keras.layers.Dense(10, activation="relu"), bn(keras, rng, name="last"), head=False)
    randomize(model, rng)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.layer_ops == ("dense", "scale_shift", "dense", "scale_shift")
    assert engine.layers[1] == (64, 64, "elu")


# --- engine ops ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"center": False}, {"scale": False}, {"epsilon": 0.5}])
def test_layer_normalization_runs_as_an_engine_op(keras, rng, test_images, tmp_path, kw):
    model = mlp(keras, keras.layers.Dense(64), keras.layers.LayerNormalization(**kw), keras.layers.Activation("gelu"),
                keras.layers.Dense(32, activation="relu"), keras.layers.LayerNormalization(name="ln2"))
    randomize(model, rng)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.layer_ops == ("dense", "layer_norm", "dense", "layer_norm", "dense")
    assert engine.layers[1] == (64, 64, "gelu")


# --- activations -----------------------------------------------------------------------------

# The names of functions (tf.nn.softmax serializes as softmax_v2, keras.ops.exp as exp) are not
# names Keras accepts as strings; test_activations_given_as_functions_map_to_their_names has them.
FUNCTION_NAMES = {"softmax_v2", "exp"}


@pytest.mark.parametrize("name", sorted(set(KERAS_ACTIVATIONS) - FUNCTION_NAMES))
def test_every_keras_activation_name_as_a_dense_activation(keras, test_images, tmp_path, name):
    model = mlp(keras, keras.layers.Dense(48, activation=name), keras.layers.Dense(24, activation=name))
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.layers[0][2] == KERAS_ACTIVATIONS[name][0]


@pytest.mark.parametrize("make, expect", [
    (lambda k: k.layers.ReLU(), "relu"),
    (lambda k: k.layers.ReLU(max_value=6.0), "relu6"),
    (lambda k: k.layers.ReLU(max_value=2.5), "relu_general"),
    (lambda k: k.layers.ReLU(negative_slope=0.1), "leaky_relu"),
    (lambda k: k.layers.ReLU(threshold=0.5), "relu_general"),
    (lambda k: k.layers.ReLU(max_value=3.0, negative_slope=0.1, threshold=0.5), "relu_general"),
    (lambda k: k.layers.ReLU(max_value=6.0, negative_slope=0.2), "relu_general"),
    (lambda k: k.layers.LeakyReLU(), "leaky_relu"),
    (lambda k: k.layers.LeakyReLU(negative_slope=0.01), "leaky_relu"),
    (lambda k: k.layers.ELU(), "elu"),
    (lambda k: k.layers.ELU(alpha=0.4), "elu"),
    (lambda k: k.layers.PReLU(), "prelu"),
    (lambda k: k.layers.Softmax(), "softmax"),
    (lambda k: k.layers.Activation("log_softmax"), "log_softmax"),
])
def test_activation_layers(keras, rng, test_images, tmp_path, make, expect):
    model = mlp(keras, keras.layers.Dense(40), make(keras), keras.layers.Dense(20), make(keras))
    randomize(model, rng)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.layers[0][2] == expect and engine.layer_ops[:2] == ("dense", "dense")


def test_activations_given_as_functions_map_to_their_names(keras, test_images, tmp_path):
    import tensorflow as tf

    model = mlp(keras, keras.layers.Dense(32, activation=keras.activations.swish),
                keras.layers.Dense(16, activation=keras.ops.relu), keras.layers.Dense(10, activation=tf.nn.gelu),
                keras.layers.Dense(10, activation=keras.ops.exp), keras.layers.Dense(10, activation=tf.nn.softmax),
                head=False)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert [a for _, _, a in engine.layers] == ["silu", "relu", "gelu", "exponential", "softmax"]


# --- pass-through ----------------------------------------------------------------------------

def test_layers_that_are_the_identity_at_inference_pass_through(keras, test_images, tmp_path):
    model = mlp(keras, keras.layers.SpatialDropout1D(0.3), keras.layers.Flatten(), keras.layers.GaussianNoise(0.5),
                keras.layers.Dense(64, activation="relu"), keras.layers.GaussianDropout(0.3),
                keras.layers.AlphaDropout(0.3), keras.layers.ActivityRegularization(l1=0.1),
                keras.layers.Identity(), keras.layers.Dense(10, activation="softmax"),
                keras.layers.Activation("linear"), inputs=(28, 28), head=False)
    assert check_parity(keras, model, test_images, tmp_path).layer_ops == ("dense", "dense")


def test_nested_sequential_and_functional_models_are_unwrapped(keras, test_images, tmp_path):
    inner_in = keras.Input((64,))
    inner = keras.Model(inner_in, keras.layers.Dense(32, activation="relu")(
        keras.layers.Dense(48, activation="tanh")(inner_in)), name="functional_block")
    block = keras.Sequential([keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.1)], name="block")
    model = mlp(keras, keras.layers.Flatten(), block, inner, inputs=(28, 28))
    engine = check_parity(keras, model, test_images, tmp_path)
    assert [w for _, w, _ in engine.layers] == [64, 48, 32, 10]


@pytest.mark.parametrize("shape, data_format", [((28, 28, 1), "channels_last"), ((1, 28, 28), "channels_last"),
                                                ((1, 28, 28), "channels_first"), ((784,), "channels_last")])
def test_image_shaped_inputs_with_a_flatten_export_like_28x28(keras, test_images, tmp_path, shape, data_format):
    model = mlp(keras, keras.layers.Flatten(data_format=data_format), keras.layers.Dense(32, activation="relu"),
                inputs=shape)
    engine = check_parity(keras, model, test_images, tmp_path)
    assert engine.input_width == 784


# --- Keras ops called on tensors in a functional model -------------------------------------

@pytest.mark.parametrize("op, activation", [("activations.relu", "relu"), ("ops.relu", "relu"), ("ops.tanh", "tanh"),
                                            ("activations.gelu", "gelu"), ("relu max_value=6", "relu6")])
def test_keras_ops_on_tensors_export(keras, test_images, tmp_path, op, activation):
    """keras.activations.relu(x) or keras.ops.tanh(x) inside a functional model is an Operation in
    its graph, not a layer (Keras 3): it exported with a TypeError naming nothing ('ReLU.call() got
    an unexpected keyword argument training'). It is an activation like any other."""
    functions = {"activations.relu": keras.activations.relu, "ops.relu": keras.ops.relu, "ops.tanh": keras.ops.tanh,
                 "activations.gelu": keras.activations.gelu,
                 "relu max_value=6": lambda t: keras.activations.relu(t, max_value=6.0)}
    inputs = keras.Input((784,))
    hidden = functions[op](keras.layers.Dense(32)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    engine = check_parity(keras, model, test_images[:300], tmp_path)
    assert engine.layers[0][2] == activation


def test_a_keras_op_the_engine_lacks_is_refused_by_name(keras, tmp_path):
    inputs = keras.Input((784,))
    hidden = keras.ops.sin(keras.layers.Dense(32)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    with pytest.raises(mnist_engine.UnsupportedModelError, match=r"^layer 'sin' \(Sin\) is not supported"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")


@pytest.mark.parametrize("padding, conv_padding", [(3, "valid"), (2, "same")])
def test_zero_padding_as_large_as_the_window_is_refused_by_name(keras, tmp_path, padding, conv_padding):
    """ZeroPadding2D(3), or ZeroPadding2D(2) then a 'same' 3x3 conv, merge into pads as large as the
    window: a one-line refusal naming the padding layer, not the loader's raw FormatError."""
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.ZeroPadding2D(padding, name="pad"),
                              keras.layers.Conv2D(4, 3, padding=conv_padding, name="conv"), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    with pytest.raises(mnist_engine.UnsupportedModelError, match=r"^layer 'pad' \(ZeroPadding2D\): padding \[\d, \d, "
                                                                 r"\d, \d\] .* 'conv' \(Conv2D\) is not supported"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")


def test_a_channels_first_flatten_after_a_conv_is_refused_by_name(keras, tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(data_format="channels_first", name="flat"), keras.layers.Dense(10)])
    with pytest.raises(mnist_engine.UnsupportedModelError, match=r"^layer 'flat' \(Flatten\): "
                                                                 r"data_format='channels_first' after a Conv2D"):
        mnist_engine.export_keras(model, tmp_path / "m.mnw")
