"""The order of a model's hidden ReLU neurons, chosen so that neurons which are zero for the same
inputs sit in the same group of four.

The reduced-precision kernels skip inputs a whole unit at a time: 4 consecutive uint8 activations
for int8 (one vpdpbusd operand), 2 for bf16. A ReLU layer of the bundled model has about 23% of
its neurons nonzero per image, yet in the trained order 65% of its 4-neuron units hold at least
one of them: neurons fire nearly independently of their neighbours. Renumbering the neurons
changes nothing a model computes (the next layer's rows move with them), so the exporters pick
an order from calibration rows in which whole units are zero as often as possible.

The grouping is greedy: start a group with the neuron that is zero most often, then add the
neuron that keeps the group all-zero on the most calibration rows, until the group has four."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from .model_file import DenseLayer
from .reference import forward

UNIT = 4  # the int8 kernels' unit; a bf16 unit (2) is half of one


def co_zero_order(zero: np.ndarray) -> np.ndarray:
    """A permutation of the columns of ``zero`` ((rows, neurons) bool: the neuron's output is 0 on
    that row) grouping, four at a time, neurons that are zero on the same rows."""
    z = np.asarray(zero, dtype=np.float32)
    n = z.shape[1]
    zero_count = z.sum(0)
    remaining = np.ones(n, dtype=bool)
    order: List[int] = []
    while remaining.any():
        # Ties are broken by the lowest index, so the order is deterministic.
        seed = int(np.argmax(np.where(remaining, zero_count, -1)))
        remaining[seed] = False
        order.append(seed)
        together = z[:, seed].copy()  # rows where the group so far is all zero
        for _ in range(UNIT - 1):
            if not remaining.any():
                break
            # The neuron's own zero count breaks ties between equally good partners, in favour of
            # the one most often zero elsewhere.
            score = together @ z + zero_count / (z.shape[0] + 1)
            pick = int(np.argmax(np.where(remaining, score, -1)))
            remaining[pick] = False
            order.append(pick)
            together *= z[:, pick]
    return np.asarray(order, dtype=np.int64)


def order_hidden_units(layers: Sequence[DenseLayer], x: np.ndarray) -> Tuple[List[DenseLayer], List[np.ndarray]]:
    """The same model with each hidden ReLU layer's neurons renumbered by co_zero_order on the
    calibration rows ``x`` (model-domain inputs), and the permutation of each layer's outputs
    (the identity for layers left alone: non-ReLU layers and the output layer)."""
    layers = list(layers)
    perms = [np.arange(layer.widths[1]) for layer in layers]
    h = np.asarray(x, dtype=np.float64)
    for i in range(len(layers) - 1):
        h = forward(layers[i: i + 1], h)
        # Only a dense ReLU layer feeding a dense layer: its neurons are the next one's input rows.
        dense_pair = layers[i].op == layers[i + 1].op == "dense"
        if layers[i].activation != "relu" or not dense_pair or len(h) == 0:
            continue
        perm = co_zero_order(h <= 0)
        layer, following = layers[i], layers[i + 1]
        layers[i] = DenseLayer(layer.kernel[:, perm], layer.bias[perm], layer.activation)
        layers[i + 1] = DenseLayer(following.kernel[perm, :], following.bias, following.activation,
                                   following.parameters)
        perms[i], h = perm, h[:, perm]
    return layers, perms
