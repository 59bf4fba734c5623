#!/usr/bin/env python3
"""Thread scaling of the bundled model on the 60,000 MNIST training images (float32 x / 255):
best-of-N time at 1, 2, 4, ... threads up to the machine's cores, and the speed-up over 1 thread.
Prints a markdown table for docs/PERFORMANCE.md.

    python tools/scaling.py [--repeats 5] [--kernel NAME] [--json FILE]
"""
import argparse
import json
import os
import time

import numpy as np

import mnist_engine
from mnist_engine._system import cpu_name
from mnist_engine.datasets import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernel")
    parser.add_argument("--json")
    args = parser.parse_args()
    (x_train, _), _ = load_mnist()
    x = x_train.reshape(len(x_train), -1).astype(np.float32) / np.float32(255)
    engine = mnist_engine.load(mnist_engine.default_model_path(), kernel=args.kernel)
    cores = os.cpu_count() or 1
    counts = sorted({1, *[t for t in (2, 4, 8, 16, 32, 64) if t <= cores], cores})
    rows = []
    for threads in counts:
        engine.predict(x[:4096], threads=threads)  # wake the team
        best = min(_timed(engine, x, threads) for _ in range(args.repeats))
        rows.append({"threads": threads, "ms": best * 1e3, "images_per_s": len(x) / best})
    for r in rows:
        r["speedup"] = rows[0]["ms"] / r["ms"]
    print(f"{cpu_name()}, {cores} cores, kernel {engine.kernel}, {len(x)} images, best of {args.repeats}\n")
    print("| threads | ms | images/s | speed-up |\n| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['threads']} | {r['ms']:.1f} | {r['images_per_s']:,.0f} | {r['speedup']:.2f} × |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "cores": cores, "kernel": engine.kernel, "rows": rows}, f, indent=2)


def _timed(engine, x, threads) -> float:
    t0 = time.perf_counter()
    engine.predict(x, threads=threads)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
