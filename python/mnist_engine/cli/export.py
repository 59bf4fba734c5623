"""``mnist-engine export``: a Keras model (.keras) or an ONNX graph (.onnx) to a .mnw file."""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import tempfile

import mnist_engine

from .._progress import Stages
from .common import file_path

CALIBRATION_IMAGES = 1024  # enough for the neuron order (docs/PERFORMANCE.md); a fraction of a second


def add_parser(sub) -> None:
    ex = sub.add_parser("export", help="export a Keras model (.keras, needs TensorFlow) or an ONNX graph (.onnx, "
                                       "needs onnx) to .mnw")
    ex.add_argument("model", type=file_path,
                    help="the Keras model (.keras; .h5 with --allow-h5) or ONNX graph (.onnx)")
    ex.add_argument("out", type=file_path, help="the .mnw file to write (atomically)")
    ex.add_argument("--input-scale", type=float,
                    help="uint8 pixel scale (default 1/255, or 1 when the model scales its input itself)")
    ex.add_argument("--source", help="free-text provenance stored in the file")
    ex.add_argument("--allow-h5", action="store_true", help="load a legacy .h5 model (only if you trust it)")
    ex.add_argument("--calibration-data", type=file_path,
                    help=f"MNIST .npz or IDX folder: its first {CALIBRATION_IMAGES} training images choose the order "
                         "of hidden neurons that lets int8/bf16 skip the most zero units (default: the reference "
                         "images)")
    ex.add_argument("--output-kind", choices=mnist_engine._core.OUTPUT_KINDS,
                    help="what the model outputs (default: what its last layer, its loss or its outputs say); "
                         "predict's and the server's probabilities are derived from it")
    ex.add_argument("--input-mean", type=numbers,
                    help="the Normalize(mean, std) the model was trained behind, after x/255: its mean, one value "
                         "or one per channel, comma-separated (PyTorch's MNIST example: 0.1307)")
    ex.add_argument("--input-std", type=numbers, help="... and its std (PyTorch's MNIST example: 0.3081)")
    ex.set_defaults(run=run)


def numbers(text: str):
    """'0.1307' or '0.485,0.456,0.406': floats, for argparse."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


@contextlib.contextmanager
def native_stderr_held_back():
    """Hold back what native code writes to file descriptor 2: TensorFlow's C++ start-up log
    (absl and oneDNN notices, CPU-feature hints) ignores TF_CPP_MIN_LOG_LEVEL in recent releases.
    If the block fails, the held-back text is shown after all, so no error is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def run(args: argparse.Namespace) -> int:
    from ..datasets import load_mnist

    if args.out.is_dir():  # say so before the seconds TensorFlow takes to load
        raise IsADirectoryError(errno.EISDIR, "expected a file path to write, got a directory", str(args.out))
    is_onnx = args.model.suffix.lower() == ".onnx"
    if is_onnx and args.allow_h5:
        raise ValueError("--allow-h5 is for Keras .h5 files, not for an ONNX graph")
    with Stages(3, "export") as stages:
        if is_onnx:
            stages.step("loading onnx")
            from ..export.onnx.exporter import _import_onnx

            _import_onnx()  # a missing onnx is named here, with the extra that installs it
        else:
            stages.step("loading TensorFlow")
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Python-side TensorFlow logging too
            with native_stderr_held_back():
                import keras  # noqa: F401  (loaded here so that its start-up noise is held back)
        calibration = None
        if args.calibration_data is not None:
            (train_x, _), _ = load_mnist(args.calibration_data, download=False)
            calibration = train_x[:CALIBRATION_IMAGES]
        stages.step("exporting and verifying")
        if is_onnx:
            out = mnist_engine.export_onnx(args.model, args.out, input_scale=args.input_scale, source=args.source,
                                           calibration_images=calibration, output_kind=args.output_kind,
                                           input_mean=args.input_mean, input_std=args.input_std)
        else:
            out = mnist_engine.export_keras(args.model, args.out, input_scale=args.input_scale,
                                            allow_h5=args.allow_h5, source=args.source, calibration_images=calibration,
                                            output_kind=args.output_kind, input_mean=args.input_mean,
                                            input_std=args.input_std)
        stages.step("reading the file back")
        engine = mnist_engine.load(out)
    print(f"wrote {out}: {engine!r}")
    return 0
