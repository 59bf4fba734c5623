"""``mnist-engine export``: a Keras model to a .mnw file."""
from __future__ import annotations

import argparse

import mnist_engine

from .common import file_path

CALIBRATION_IMAGES = 1024  # enough for the neuron order (docs/PERFORMANCE.md); a fraction of a second


def add_parser(sub) -> None:
    ex = sub.add_parser("export", help="export a Keras model (.keras) to .mnw (needs TensorFlow)")
    ex.add_argument("model", type=file_path, help="the Keras model (.keras; .h5 with --allow-h5)")
    ex.add_argument("out", type=file_path, help="the .mnw file to write (atomically)")
    ex.add_argument("--input-scale", type=float, help="uint8 pixel scale (default 1/255, or 1 with Rescaling)")
    ex.add_argument("--source", help="free-text provenance stored in the file")
    ex.add_argument("--allow-h5", action="store_true", help="load a legacy .h5 model (only if you trust it)")
    ex.add_argument("--calibration-data", type=file_path,
                    help=f"MNIST .npz or IDX folder: its first {CALIBRATION_IMAGES} training images choose the order "
                         "of hidden neurons that lets int8/bf16 skip the most zero units (default: the reference "
                         "images)")
    ex.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..datasets import load_mnist

    calibration = None
    if args.calibration_data is not None:
        (train_x, _), _ = load_mnist(args.calibration_data, download=False)
        calibration = train_x[:CALIBRATION_IMAGES]
    out = mnist_engine.export_keras(args.model, args.out, input_scale=args.input_scale, allow_h5=args.allow_h5,
                                    source=args.source, calibration_images=calibration)
    print(f"wrote {out}: {mnist_engine.load(out)!r}")
    return 0
