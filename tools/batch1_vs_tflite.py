"""Batch-1 latency of the engine and TFLite, interleaved in one process: blocks of calls taken in
turn, so that the machine's drift between runs (TFLite's batch-1 time alone has swung 2x between
bench runs) reaches every runner alike. The bench times each runner once, one after another.

    python tools/batch1_vs_tflite.py --model convnet --rounds 12

Needs the test extras (TensorFlow, ai-edge-litert) and the model's Keras source in models/.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import mnist_engine
from mnist_engine import bench
from mnist_engine.datasets import load_mnist


def interleaved(runners: Dict[str, Callable[[int], object]], rounds: int, calls: int) -> Dict[str, List[float]]:
    """Seconds per call of each runner: `rounds` rounds of a warm-up and `calls` timed calls each."""
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, one in runners.items():
            for i in range(50):
                one(i)
            for i in range(calls):
                t0 = time.perf_counter()
                one(i)
                samples[name].append(time.perf_counter() - t0)
    return samples


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convnet", help="a bundled model's name (its Keras source: models/)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per runner per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    source = bench.bundled_keras_source(Path(mnist_engine.bundled_model_path(args.model)), bench.KERAS_DIR)
    if source is None:
        parser.error(f"no Keras source for {args.model} under {bench.KERAS_DIR}/ (run from the repository root)")
    (_, _), (images, _) = load_mnist()
    x = (images.reshape(len(images), -1)[:2000] / np.float32(255)).astype(np.float32)
    model = keras.saving.load_model(source, compile=False, safe_mode=True)
    shape = (-1, *model.inputs[0].shape[1:])
    runners = {r.name: r.one for r in bench.tflite_runners(model, x.reshape(shape), args.threads)}
    engines = {"engine fp32": mnist_engine.load(args.model),
               "engine int8": mnist_engine.load(args.model, precision="int8")}
    for name, e in engines.items():
        runners[f"{name} ({e.kernel_for_rows(1)})"] = lambda i, e=e: e.predict(x[i:i + 1], threads=args.threads)
    samples = interleaved(runners, args.rounds, args.calls)
    median = {name: float(np.median(s)) * 1e6 for name, s in samples.items()}
    for name, s in samples.items():
        print(f"{name:40s} median {median[name]:7.1f} us   p10 {np.percentile(s, 10) * 1e6:7.1f} us")
    fp32, int8 = (next(n for n in median if n.startswith(f"engine {p}")) for p in ("fp32", "int8"))
    print(f"engine fp32 / tflite fp32: {median[fp32] / median['tflite fp32']:.2f}; "
          f"engine int8 / tflite dynamic int8: {median[int8] / median['tflite dynamic int8']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
