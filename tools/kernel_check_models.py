"""Writes the models cpp/tools/kernel_check runs every kernel on: two dense layers (relu, softmax)
for every pair of awkward widths around the SIMD lanes, panels and tiles.

    python tools/kernel_check_models.py DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import mnist_engine
from mnist_engine.model_file import DenseLayer


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for a in (1, 3, 17, 33, 65, 784):
        for b in (1, 5, 31, 32, 33, 100):
            layers = [DenseLayer(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1, "relu"),
                      DenseLayer(rng.normal(size=(b, 7)) / np.sqrt(b), rng.normal(size=7) * 0.1, "softmax")]
            mnist_engine.write_model(out / f"m_{a}_{b}.mnw", layers)


if __name__ == "__main__":
    main(sys.argv[1])
