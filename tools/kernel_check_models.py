"""Writes the models cpp/tools/kernel_check runs every kernel on: two dense layers (relu, softmax)
for every pair of awkward widths around the SIMD lanes, panels and tiles, and small CNNs whose conv
layers leave partial filter panels and short pixel tiles, with padding, strides and both pools,
and the 2x2 max pools that an int8 tile kernel runs inside the conv.

    python tools/kernel_check_models.py DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import mnist_engine
from mnist_engine.model_file import Conv2DLayer, DenseLayer, PoolLayer


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for a in (1, 3, 17, 33, 65, 784):
        for b in (1, 5, 31, 32, 33, 100):
            layers = [DenseLayer(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1, "relu"),
                      DenseLayer(rng.normal(size=(b, 7)) / np.sqrt(b), rng.normal(size=7) * 0.1, "softmax")]
            mnist_engine.write_model(out / f"m_{a}_{b}.mnw", layers)
    # (image, window, strides, pads, filters): 1-48 channels, 5-70 filters, widths 3-28; the 3x3, stride-1
    # layers of 8 or more channels run as Winograd (conv-winograd.h).
    for i, (image, window, strides, pads, filters) in enumerate([
            ((28, 28, 1), (3, 3), (1, 1), (0, 0, 0, 0), 32), ((13, 13, 32), (3, 3), (1, 1), (1, 1, 1, 1), 70),
            ((9, 17, 48), (2, 3), (2, 1), (1, 0, 1, 1), 5), ((5, 3, 7), (5, 3), (1, 1), (2, 2, 1, 1), 17),
            ((12, 9, 10), (3, 3), (1, 1), (1, 1, 1, 1), 24)]):  # Winograd: channels past whole vectors
        conv = Conv2DLayer(rng.normal(size=(*window, image[2], filters)) / np.sqrt(np.prod(window) * image[2]),
                           rng.normal(size=filters) * 0.1, image, strides, pads, "relu")
        pool = PoolLayer("max_pool" if i % 2 else "avg_pool", conv.output_shape, (2, 2), (1, 1), (0, 1, 0, 1))
        width = int(np.prod(pool.output_shape))
        head = DenseLayer(rng.normal(size=(width, 10)) / np.sqrt(width), rng.normal(size=10) * 0.1, "softmax")
        mnist_engine.write_model(out / f"cnn_{i}.mnw", [conv, pool, head])
    # 2x2 max pools, stride 2, which an int8 tile kernel runs inside the conv: odd and even maps,
    # a one-channel window packed as one row, a strided, padded conv without activation.
    for i, (image, window, strides, pads, filters, activation) in enumerate([
            ((28, 28, 1), (3, 3), (1, 1), (0, 0, 0, 0), 20, "relu"),
            ((17, 12, 3), (5, 5), (2, 1), (2, 2, 2, 2), 40, "linear"),
            ((13, 13, 32), (3, 3), (1, 1), (0, 0, 0, 0), 64, "relu")]):
        conv = Conv2DLayer(rng.normal(size=(*window, image[2], filters)) / np.sqrt(np.prod(window) * image[2]),
                           rng.normal(size=filters) * 0.1, image, strides, pads, activation)
        pool = PoolLayer("max_pool", conv.output_shape, (2, 2), (2, 2))
        width = int(np.prod(pool.output_shape))
        head = DenseLayer(rng.normal(size=(width, 10)) / np.sqrt(width), rng.normal(size=10) * 0.1, "softmax")
        mnist_engine.write_model(out / f"cnn_pooled_{i}.mnw", [conv, pool, head])


if __name__ == "__main__":
    main(sys.argv[1])
