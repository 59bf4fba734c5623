"""A plain numpy forward pass: the independent reference that files written from raw arrays carry,
and that the tests hold the engine to. Computed in float64 so its own rounding is negligible."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


ACTIVATION_FUNCTIONS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
}


def scale_pixels(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 pixels to the model's float inputs exactly as the engine converts them: the product
    taken in double and rounded once to float32."""
    return (np.asarray(pixels).astype(np.float64) * scale).astype(np.float32)


def forward(layers: Sequence, x: np.ndarray) -> np.ndarray:
    """Apply ``layers`` (objects with kernel, bias, activation) to float inputs ``x`` (N, in)."""
    y = np.asarray(x, dtype=np.float64)
    y = y.reshape(y.shape[0], int(np.prod(y.shape[1:])))  # not -1: that cannot infer 0-row shapes
    for layer in layers:
        y = ACTIVATION_FUNCTIONS[layer.activation](y @ np.asarray(layer.kernel, np.float64)
                                                   + np.asarray(layer.bias, np.float64))
    return y
