"""A plain numpy forward pass: the independent reference that files written from raw arrays carry,
and that the tests hold the engine to. Computed in float64 so its own rounding is negligible, with
numpy's and the math module's functions (never the engine's own approximations)."""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import numpy as np

_ERF = np.vectorize(math.erf, otypes=[np.float64])
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _relu6(z: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(z, 0.0), 6.0)


def _relu_general(z: np.ndarray, negative_slope: float, threshold: float, max_value: float) -> np.ndarray:
    """Keras's ReLU(max_value, negative_slope, threshold), in Keras's steps (docs/FORMAT.md)."""
    a = np.maximum(z, 0.0) if threshold == 0 else np.where(z > threshold, z, 0.0)
    if max_value != np.inf:
        a = np.minimum(np.maximum(a, 0.0), max_value)
    return a - negative_slope * np.maximum(threshold - z, 0.0) if negative_slope != 0 else a


# Each takes the pre-activation (N, units) in float64 and the layer's activation parameters.
ACTIVATION_FUNCTIONS: Dict[str, Callable[..., np.ndarray]] = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "gelu": lambda z: 0.5 * z * (1.0 + _ERF(z / math.sqrt(2.0))),
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3))),
    "silu": lambda z: z * _sigmoid(z),
    "elu": lambda z, alpha: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0))),
    "selu": lambda z: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
    "softplus": _softplus,
    "softsign": lambda z: z / (1.0 + np.abs(z)),
    "leaky_relu": lambda z, negative_slope: np.where(z < 0, negative_slope * z, z),
    "relu6": _relu6,
    "hard_sigmoid": lambda z: _relu6(z + 3.0) / 6.0,
    "hard_silu": lambda z: z * _relu6(z + 3.0) / 6.0,
    "exponential": lambda z: np.exp(np.minimum(z, 709.0)),
    "mish": lambda z: z * np.tanh(_softplus(z)),
    "log_softmax": _log_softmax,
    "relu_general": _relu_general,
    "prelu": lambda z, *alpha: np.where(z < 0, np.asarray(alpha) * z, z),
}


def scale_pixels(pixels: np.ndarray, scale: float) -> np.ndarray:
    """uint8 pixels to the model's float inputs exactly as the engine converts them: the product
    taken in double and rounded once to float32."""
    return (np.asarray(pixels).astype(np.float64) * scale).astype(np.float32)


def normalize_pixels(pixels: np.ndarray, scale: float, mean, std) -> np.ndarray:
    """uint8 pixels to a normalized model's float inputs exactly as the engine converts them (and as
    ToTensor then Normalize(mean, std) do): scale_pixels, then the channel's mean subtracted and its
    std divided, each in float32. The channel of a value is its column modulo len(mean) (NHWC rows)."""
    flat = np.asarray(pixels).reshape(len(pixels), -1)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    channel = np.arange(flat.shape[1]) % len(mean)
    return (scale_pixels(flat, scale) - mean[channel]) / std[channel]


def _spatial(layer, y: np.ndarray) -> np.ndarray:
    """A spatial layer on rows that are NHWC images, flattened back to rows."""
    from . import reference_conv as conv

    images = y.reshape((len(y),) + tuple(layer.input_shape))
    if layer.op == "conv2d":
        out = conv.conv2d(images, layer.kernel, layer.bias, layer.strides, layer.pads)
    elif layer.op == "max_pool":
        out = conv.max_pool2d(images, layer.window, layer.strides, layer.pads)
    elif layer.op == "avg_pool":
        out = conv.avg_pool2d(images, layer.window, layer.strides, layer.pads, layer.count_padding)
    elif layer.op == "global_avg_pool":
        out = conv.global_avg_pool(images)
    else:
        out = conv.global_max_pool(images)
    return out.reshape(len(y), -1)


def _operation(layer, y: np.ndarray) -> np.ndarray:
    op = getattr(layer, "op", "dense")
    if op in ("conv2d", "max_pool", "avg_pool", "global_avg_pool", "global_max_pool"):
        return _spatial(layer, y)
    if op == "dense":
        return y @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias, np.float64)
    if op == "scale_shift":
        return y * np.asarray(layer.scale, np.float64) + np.asarray(layer.shift, np.float64)
    mean = y.mean(axis=1, keepdims=True)
    variance = ((y - mean) ** 2).mean(axis=1, keepdims=True)
    return ((y - mean) / np.sqrt(variance + float(layer.epsilon)) * np.asarray(layer.gamma, np.float64)
            + np.asarray(layer.beta, np.float64))


def forward(layers: Sequence, x: np.ndarray) -> np.ndarray:
    """Apply ``layers`` (DenseLayer, ScaleShiftLayer, LayerNormLayer, or any object with kernel,
    bias, activation) to float inputs ``x`` (N, in)."""
    y = np.asarray(x, dtype=np.float64)
    y = y.reshape(y.shape[0], int(np.prod(y.shape[1:])))  # not -1: that cannot infer 0-row shapes
    for layer in layers:
        parameters = [float(v) for v in getattr(layer, "parameters", ())]
        with np.errstate(over="ignore", invalid="ignore"):
            y = ACTIVATION_FUNCTIONS[layer.activation](_operation(layer, y), *parameters)
    return y
