"""Score a large image array with mnist_engine on a Dask cluster: the README's scale-out example.

    pip install ".[dask]"
    python tools/dask_score.py                                  # a LocalCluster of 2 workers here
    python tools/dask_score.py --scheduler tcp://10.0.0.5:8786  # a running multi-machine cluster

The engine travels to the workers by pickling (its file's bytes and load options), and each
worker parses, verifies and packs the model again for its own CPU, so workers of different CPU
kinds each run their best kernel. Every block is an independent `engine.predict` call; the result
is compared with a local predict of the same images, bit for bit.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

import mnist_engine


def score(engine: mnist_engine.Engine, images, chunk_rows: int = 10_000) -> np.ndarray:
    """Class probabilities of `images` ((N, 784) or (N, 28, 28) uint8, a numpy or Dask array),
    computed block by block on the active Dask scheduler (a distributed Client, when one exists)."""
    import dask.array as da

    x = images if isinstance(images, da.Array) else da.from_array(images, chunks=chunk_rows)
    x = x.reshape(x.shape[0], -1).rechunk((chunk_rows, -1))  # one block = whole rows
    probs = x.map_blocks(engine.predict, dtype=np.float32, chunks=(x.chunks[0], (engine.output_width,)))
    return probs.compute()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    parser.add_argument("--images", type=int, default=200_000, help="images to score (MNIST test set, repeated)")
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="images per Dask block")
    parser.add_argument("--stack-dir", help="folder for the images as a .npy stack (default: a temporary one; on a "
                                                "multi-machine cluster, shared storage)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or int8 (see available_precisions())")
    args = parser.parse_args(argv)

    import dask.array as da
    from distributed import Client, LocalCluster

    from mnist_engine.datasets import load_mnist

    _, (x_test, y_test) = load_mnist()
    reps = -(-args.images // len(x_test))
    images = np.tile(x_test, (reps, 1, 1))[: args.images]
    labels = np.tile(y_test, reps)[: args.images]
    engine = mnist_engine.load(mnist_engine.default_model_path(), precision=args.precision)

    # The workers read the images from disk, as they would from a data lake: embedding a large
    # array in the task graph would ship it through the scheduler. On a multi-machine cluster the
    # folder must be on storage every worker sees (--stack-dir).
    with tempfile.TemporaryDirectory() as scratch:
        stack = args.stack_dir or scratch
        da.to_npy_stack(stack, da.from_array(images.reshape(len(images), -1), chunks=(args.chunk_rows, -1)))
        cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                           dashboard_address=None)
        with Client(args.scheduler or cluster) as client:
            print(f"dask      {client}")
            start = time.perf_counter()
            probs = score(engine, da.from_npy_stack(stack), args.chunk_rows)
            seconds = time.perf_counter() - start
        if cluster is not None:
            cluster.close()
    same = np.array_equal(probs, engine.predict(images))
    print(f"scored    {len(images):,} images in {seconds:.2f} s ({len(images) / seconds:,.0f} images/s, "
          f"including reading them and starting the workers' engines)")
    print(f"accuracy  {(probs.argmax(1) == labels).mean() * 100:.2f}%")
    print(f"bitwise   {'equal' if same else 'DIFFERENT'} to a local predict")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
