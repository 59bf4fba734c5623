"""numpy references for the spatial layers of the CNNs people train on MNIST (issue 23): 2-D
convolution, max and average pooling, their global forms, and the padding arithmetic of Keras's
'same' and of ONNX's explicit pads. Tensors are NHWC (batch, height, width, channels), computed in
float64 so that their own rounding is negligible: the independent oracle the engine's conv kernels
will be held to, itself held to Keras and to onnx.reference by tests/test_reference_conv.py.

Pads are (top, bottom, left, right). Windows that reach into padding see zeros (convolution), -inf
(max pooling), or are averaged over their real pixels only (Keras's 'same' average pooling,
ONNX's count_include_pad=0) or over the whole window (count_include_pad=1)."""
from __future__ import annotations

from typing import Tuple

import numpy as np

Pads = Tuple[int, int, int, int]


def same_padding(size: int, window: int, stride: int) -> Tuple[int, int]:
    """TensorFlow's (and Keras's) 'same': the output has ceil(size / stride) positions, and the
    padding they need is split with the extra pixel after (bottom, right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def keras_pads(height: int, width: int, window: Tuple[int, int], strides: Tuple[int, int], padding: str) -> Pads:
    """Pads for Keras's padding='valid' or 'same'."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding != "same":
        raise ValueError(f"expected padding 'valid' or 'same', got {padding!r}")
    return same_padding(height, window[0], strides[0]) + same_padding(width, window[1], strides[1])


def output_size(size: int, window: int, stride: int, before: int, after: int) -> int:
    """Positions of a window sliding over `size` padded by `before` and `after` (floor, as
    ceil_mode=0 and Keras)."""
    span = size + before + after - window
    if span < 0:
        raise ValueError(f"a window of {window} does not fit {size} pixels padded by {before} and {after}")
    return span // stride + 1


def _windows(x: np.ndarray, window: Tuple[int, int], strides: Tuple[int, int], pads: Pads,
             fill: float) -> np.ndarray:
    """(N, OH, OW, C, kh, kw): every window of the padded input, strided."""
    top, bottom, left, right = pads
    padded = np.pad(np.asarray(x, np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)),
                    constant_values=fill)
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=(1, 2))
    return views[:, ::strides[0], ::strides[1]]


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, strides: Tuple[int, int] = (1, 1),
           pads: Pads = (0, 0, 0, 0)) -> np.ndarray:
    """x (N, H, W, C) with kernel (kh, kw, C, F) as Keras stores it, plus bias (F,): (N, OH, OW, F)."""
    kernel = np.asarray(kernel, np.float64)
    kh, kw, channels, _ = kernel.shape
    if x.shape[3] != channels:
        raise ValueError(f"a kernel for {channels} channels on input with {x.shape[3]}")
    windows = _windows(x, (kh, kw), strides, pads, 0.0)  # (N, OH, OW, C, kh, kw)
    return np.einsum("nhwcij,ijcf->nhwf", windows, kernel) + np.asarray(bias, np.float64)


def max_pool2d(x: np.ndarray, window: Tuple[int, int], strides: Tuple[int, int], pads: Pads = (0, 0, 0, 0)):
    return _windows(x, window, strides, pads, -np.inf).max(axis=(4, 5))


def avg_pool2d(x: np.ndarray, window: Tuple[int, int], strides: Tuple[int, int], pads: Pads = (0, 0, 0, 0),
               count_include_pad: bool = False) -> np.ndarray:
    sums = _windows(x, window, strides, pads, 0.0).sum(axis=(4, 5))
    if count_include_pad:
        return sums / (window[0] * window[1])
    ones = np.ones((1,) + x.shape[1:3] + (1,))
    counts = _windows(ones, window, strides, pads, 0.0).sum(axis=(4, 5))
    return sums / counts


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).mean(axis=(1, 2))


def global_max_pool(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).max(axis=(1, 2))
