"""The ``mnist-engine`` command: evaluate, inspect and export models."""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import mnist_engine

CALIBRATION_IMAGES = 1024  # enough for the neuron order (docs/PERFORMANCE.md); a fraction of a second


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cmd_eval(args: argparse.Namespace) -> int:
    from .datasets import load_mnist

    engine = mnist_engine.load(args.model or mnist_engine.default_model_path(), kernel=args.kernel,
                               precision=args.precision)
    (_, _), (x_test, y_test) = load_mnist(args.data)
    labels = engine.classify(x_test, threads=args.threads)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        engine.predict(x_test, threads=args.threads)
        best = min(best, time.perf_counter() - start)
    threads = args.threads or mnist_engine.get_num_threads()
    print(f"model     {args.model or mnist_engine.default_model_path()}")
    print(f"engine    {engine!r}")
    print(f"accuracy  {(labels == y_test).mean() * 100:.2f}% on {len(y_test)} MNIST test images")
    if engine.precision != "fp32":
        exact = mnist_engine.load(args.model or mnist_engine.default_model_path())
        agree = (exact.classify(x_test, threads=args.threads) == labels).mean()
        print(f"precision {engine.precision}: agrees with fp32 on {agree * 100:.2f}% of the images; "
              f"max |output - file reference| {engine.reference_deviation:.2e}")
    print(f"speed     {len(x_test) / best:,.0f} images/s ({best * 1e3:.1f} ms per 10k, best of {args.repeat}, "
          f"{threads} thread{'s' if threads != 1 else ''})")
    print(f"kernel    {engine.kernel} (available for {engine.precision}: "
          f"{', '.join(mnist_engine.available_kernels(engine.precision))}; precisions: "
          f"{', '.join(mnist_engine.available_precisions())})")
    print(f"cpu       {cpu_name()}")
    return 0


def printable(text: str) -> str:
    """`text` with every character a terminal would act on (escape sequences, carriage returns,
    bidi overrides: whatever str.isprintable rejects) shown as its escape. A model file is
    untrusted input, and its metadata must not be able to rewrite the user's screen."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def cmd_info(args: argparse.Namespace) -> int:
    engine = mnist_engine.load(args.model, verify=not args.no_verify)
    print(repr(engine))
    for i, (n_in, n_out, act) in enumerate(engine.layers):
        print(f"  layer {i}: {n_in} -> {n_out} {act}")
    print(f"  input scale for uint8 pixels: {engine.input_scale!r}")
    if engine.classes is not None:
        print(f"  classify returns: {', '.join(printable(str(c)) for c in engine.classes)}")
    for key, value in engine.metadata.items():
        print(f"  {key}: {printable(value)}")
    if not args.no_verify:
        print(f"  verified: reference outputs within tolerance (margin {engine.verification_margin:.3g})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .datasets import load_mnist

    calibration = None
    if args.calibration_data is not None:
        (train_x, _), _ = load_mnist(args.calibration_data, download=False)
        calibration = train_x[:CALIBRATION_IMAGES]
    out = mnist_engine.export_keras(args.model, args.out, input_scale=args.input_scale, allow_h5=args.allow_h5,
                                    source=args.source, calibration_images=calibration)
    print(f"wrote {out}: {mnist_engine.load(out)!r}")
    return 0


def file_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-engine", description=mnist_engine.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mnist-engine {mnist_engine.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (any position)")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="accuracy and speed of a model on the MNIST test set")
    ev.add_argument("--model", type=file_path, help="a .mnw file (default: the bundled model)")
    ev.add_argument("--data", type=file_path, help="MNIST .npz or IDX folder (default: see mnist_engine.datasets)")
    ev.add_argument("--threads", type=positive_int, help="OpenMP threads (default: all cores)")
    ev.add_argument("--precision", choices=["fp32", "bf16", "int8"],
                    help="arithmetic: fp32 (default, exact), bf16 or int8 (see available_precisions())")
    ev.add_argument("--kernel", help="force a kernel (see available_kernels()); implies its precision")
    ev.add_argument("--repeat", type=positive_int, default=5, help="timed runs; the best is reported")
    ev.set_defaults(run=cmd_eval)

    info = sub.add_parser("info", help="describe and verify a .mnw file")
    info.add_argument("model", type=file_path, help="the .mnw file")
    info.add_argument("--no-verify", action="store_true", help="skip the reference-output check")
    info.set_defaults(run=cmd_info)

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
    ex.set_defaults(run=cmd_export)

    sub.add_parser("bench", help="benchmark against Keras, TFLite, ONNX Runtime, numpy (see --help)", add_help=False)
    return parser


# Optional extras: the package a missing module comes from, for a one-line hint.
EXTRAS = {"PIL": "images", "matplotlib": "plots", "dask": "dask", "distributed": "dask", "tensorflow": "export",
          "keras": "export", "sklearn": "sklearn"}


def user_error(e: BaseException) -> Optional[str]:
    """The one line a user should see for `e`, or None when `e` is a bug (not the user's input)."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        root = e.name.split(".")[0]
        extra = EXTRAS.get(root)
        hint = f'pip install "mnist-engine[{extra}]"' if extra else f"pip install {root}"
        return f"this needs {root}, which is not installed: {hint}"
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or e}: {e.filename}"
    if isinstance(e, (ValueError, TypeError, OSError, KeyError)):  # FormatError is a ValueError
        return " ".join(str(e).split()) or type(e).__name__
    return None


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; user errors print one line to stderr and return 2 (no traceback unless
    --debug is given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv[:1] == ["bench"]:  # the benchmark has its own options (tools/bench.py)
            from . import bench

            return bench.main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt:
        print("mnist-engine: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        line = user_error(e)
        if line is None:
            print(f"mnist-engine: internal error: {type(e).__name__}: {e} (run again with --debug for the "
                  "traceback, and please report it)", file=sys.stderr)
            return 1
        print(f"mnist-engine: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
