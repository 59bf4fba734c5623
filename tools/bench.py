#!/usr/bin/env python3
"""The benchmark of record (mnist_engine.bench):
python tools/bench.py [--model mlp512|convnet|FILE] [--threads N] [--json F] [--plot F.png] [--quick]

Thin wrapper: sets the thread count for every runtime before any of them is imported, and points
the Keras/TFLite runners at the bundled models' Keras sources in this repository."""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    threads = early.parse_known_args()[0].threads
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from mnist_engine.bench import main

    sys.exit(main(sys.argv[1:], keras_dir=ROOT / "models"))
