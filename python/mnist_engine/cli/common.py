"""What several subcommands share: argument types, safe printing, loading the engine they run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Optional

import mnist_engine

from .._extras import our_message


def file_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def number_in(convert: Callable[[str], float], low: float, high: float, expected: str,
              expected_type: Optional[str] = None) -> Callable[[str], float]:
    """An argparse type: `convert(text)` within low..high (NaN is outside), else a one-line error
    "expected EXPECTED, got ..." (`expected_type` when the text is not a number at all)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected_type or expected}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = number_in(int, 1, float("inf"), "a whole number of at least 1")
probability = number_in(float, 0.0, 1.0, "a probability 0..1")
# A finite number of seconds or milliseconds (inf and NaN are refused).
non_negative_float = number_in(float, 0.0, sys.float_info.max, "a finite number >= 0", "a number")
positive_float = number_in(float, 1e-3, sys.float_info.max, "a finite number >= 0.001", "a number")


def add_engine_options(parser: argparse.ArgumentParser, default_model: str = "mlp512") -> None:
    """--model, --precision, --kernel and --threads, spelled the same in every subcommand."""
    parser.add_argument("--model", type=file_path, help="a .mnw file, or a bundled model's name: " +
                        ", ".join(mnist_engine.BUNDLED_MODELS) + f" (default: {default_model})")
    parser.set_defaults(default_model=default_model)
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"],
                        help="arithmetic: fp32 (default, exact), bf16 or int8 (see available_precisions())")
    parser.add_argument("--kernel", help="force a kernel (see available_kernels()); implies its precision")
    parser.add_argument("--threads", type=positive_int, help="threads (default: OMP_NUM_THREADS, else all cores)")


def model_path(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(mnist_engine._resolve_model(args.model))
    return mnist_engine.bundled_model_path(getattr(args, "default_model", "mlp512"))


def load_engine(args: argparse.Namespace) -> mnist_engine.Engine:
    return mnist_engine.load(model_path(args), kernel=args.kernel, precision=args.precision, threads=args.threads)


def output_names(engine: mnist_engine.Engine, outputs: int) -> List[str]:
    """What each output means: the file's classes (scikit-learn's labels) or the output's index."""
    from ..answers import output_labels

    return output_labels(engine.classes, outputs)


def user_error(e: BaseException) -> Optional[str]:
    """The one line a user should see for `e`, or None when `e` is a bug (not the user's input)."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        return our_message(e)
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or e}: {e.filename}"
    if isinstance(e, (ValueError, TypeError, OSError, KeyError)):  # FormatError is a ValueError
        return " ".join(str(e).split()) or type(e).__name__
    return None
