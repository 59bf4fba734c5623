"""The exporters' hidden-neuron order (mnist_engine.unit_order): it changes no output, and it makes
whole 4-neuron units zero more often, which is what the int8 and bf16 kernels skip."""
from __future__ import annotations

import numpy as np
import pytest

import mnist_engine
from helpers import random_layers
from mnist_engine.model_file import DenseLayer, read_layers
from mnist_engine.reference import forward
from mnist_engine.unit_order import UNIT, co_zero_order, order_hidden_units


def zero_unit_share(h: np.ndarray) -> float:
    """The share of (row, 4-neuron unit) pairs that are all zero: the units a kernel skips."""
    n = h.shape[1] - h.shape[1] % UNIT
    return float((h[:, :n].reshape(len(h), -1, UNIT) <= 0).all(2).mean())


def test_co_zero_order_finds_planted_groups(rng):
    """Three groups of four neurons, each group zero on its own rows, interleaved: the order puts
    each group in one unit, where every unit is then zero whenever its group is."""
    rows, groups = 300, 3
    silent = rng.random((rows, groups)) < 0.6
    zero = np.repeat(silent, UNIT, axis=1)[:, rng.permutation(groups * UNIT)]
    order = co_zero_order(zero)
    assert sorted(order) == list(range(groups * UNIT))
    assert zero_unit_share(~zero[:, order]) == pytest.approx(silent.mean())
    assert zero_unit_share(~zero) < silent.mean() / 2


def test_order_changes_no_output_and_leaves_non_relu_layers(rng):
    layers = random_layers(rng, [30, 17, 9, 5], ["relu", "tanh", "softmax"])
    x = rng.standard_normal((40, 30))
    ordered, perms = order_hidden_units(layers, x)
    np.testing.assert_allclose(forward(ordered, x), forward(layers, x), rtol=1e-6, atol=1e-7)
    assert sorted(perms[0]) == list(range(17)) and list(perms[0]) != list(range(17))
    np.testing.assert_array_equal(perms[1], np.arange(9))  # tanh is never exactly zero: left alone
    np.testing.assert_array_equal(perms[2], np.arange(5))  # the outputs keep their order
    np.testing.assert_array_equal(ordered[1].kernel, layers[1].kernel[perms[0]])


@pytest.mark.parametrize("activation, parameters", [("elu", (0.7,)), ("leaky_relu", (0.05,)), ("prelu", None)])
def test_order_keeps_the_next_layers_activation_parameters(rng, activation, parameters):
    """Renumbering a relu layer rebuilds the layer after it: its activation's parameters (a slope,
    one slope per unit) must survive, or the model would change or fail to build."""
    layers = random_layers(rng, [12, 16, 4], ["relu", "linear"])
    parameters = rng.uniform(0.05, 0.3, 4) if parameters is None else parameters
    layers[1] = DenseLayer(layers[1].kernel, layers[1].bias, activation, parameters)
    x = rng.standard_normal((40, 12))
    ordered, perms = order_hidden_units(layers, x)
    assert list(perms[0]) != list(range(16))
    np.testing.assert_array_equal(ordered[1].parameters, layers[1].parameters)
    np.testing.assert_allclose(forward(ordered, x), forward(layers, x), rtol=1e-6, atol=1e-7)


def test_order_with_no_calibration_rows_is_the_identity(rng):
    layers = random_layers(rng, [8, 6, 3], ["relu", "linear"])
    ordered, perms = order_hidden_units(layers, np.zeros((0, 8)))
    np.testing.assert_array_equal(perms[0], np.arange(6))
    np.testing.assert_array_equal(ordered[0].kernel, layers[0].kernel)


def test_order_makes_more_zero_units_on_mnist(mnist, rng):
    """The bundled model with its hidden neurons shuffled, then ordered from 256 training images:
    on the 10k test images, the share of skippable units of each hidden layer grows by a third or
    more (docs/PERFORMANCE.md has the measured figures)."""
    (x_train, _), (x_test, _) = mnist
    layers = read_layers(mnist_engine.default_model_path())
    shuffled = list(layers)
    for i in range(len(layers) - 1):
        p = rng.permutation(layers[i].kernel.shape[1])
        shuffled[i] = DenseLayer(shuffled[i].kernel[:, p], shuffled[i].bias[p], shuffled[i].activation)
        shuffled[i + 1] = DenseLayer(shuffled[i + 1].kernel[p], shuffled[i + 1].bias, shuffled[i + 1].activation)
    ordered, _ = order_hidden_units(shuffled, x_train[:256].reshape(256, -1) / 255.0)
    test = x_test.reshape(len(x_test), -1) / 255.0
    for depth in (1, 2):
        before = zero_unit_share(forward(shuffled[:depth], test))
        after = zero_unit_share(forward(ordered[:depth], test))
        print(f"\nhidden layer {depth}: zero units {before:.3f} shuffled -> {after:.3f} ordered")
        assert after >= 1.33 * before
