"""The ``mnist-engine`` command (also ``python -m mnist_engine``): one module per subcommand, on top
of the public API; the library never imports this package."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import mnist_engine

from . import evaluate, export, info, predict, serve
from .common import user_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-engine", description=mnist_engine.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mnist-engine {mnist_engine.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (any position)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (predict, evaluate, info, export, serve):
        command.add_parser(sub)
    sub.add_parser("bench", help="benchmark against Keras, TFLite, ONNX Runtime, numpy (see --help)", add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; user errors print one line to stderr and return 2 (no traceback unless
    --debug is given)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv[:1] == ["bench"]:  # the benchmark has its own options (tools/bench.py)
            from .. import bench

            return bench.main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt:
        print("mnist-engine: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mnist-engine predict ... | head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
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
