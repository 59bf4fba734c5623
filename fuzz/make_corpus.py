#!/usr/bin/env python3
"""Write the fuzzers' seed corpus: small valid model files and one broken variant per format rule
family, each prefixed with the harness's control byte (see fuzz_loader.cpp). Deterministic.

    python fuzz/make_corpus.py            # rewrites fuzz/corpus/
"""
import hashlib
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import build, put, random_layers  # noqa: E402
from mnist_engine.model_file import Conv2DLayer, DenseLayer, LayerNormLayer, PoolLayer, ScaleShiftLayer  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    files = {}
    shapes = {"tiny": ([3, 2], ["softmax"]), "relu_chain": ([6, 5, 3], ["relu", "softmax"]),
              "wide": ([17, 65, 4], ["relu", "sigmoid"]), "tanh_linear": ([4, 4, 4], ["tanh", "linear"])}
    for name, (widths, acts) in shapes.items():
        files[name] = build(random_layers(rng, widths, acts), meta={"note": name}, refs=1)
    # Version 2: every op, scalar and per-unit activation parameters.
    files["v2_ops"] = build([DenseLayer(rng.normal(size=(6, 5)), rng.normal(size=5), "gelu"),
                             ScaleShiftLayer(rng.uniform(0.5, 2, 5), rng.normal(size=5), "relu_general",
                                             (0.1, 0.2, np.inf)),
                             LayerNormLayer(np.ones(5), np.zeros(5), 1e-3, "prelu", rng.uniform(0, 0.3, 5)),
                             DenseLayer(rng.normal(size=(5, 3)), rng.normal(size=3), "log_softmax")],
                            meta={"note": "v2_ops"}, refs=1)
    # Version 3: every spatial op on a small odd image.
    files["v3_spatial"] = build([Conv2DLayer(rng.normal(size=(3, 2, 2, 3)), rng.normal(size=3), (5, 6, 2), (1, 2),
                                             (1, 1, 0, 1), "relu"),
                                 PoolLayer("max_pool", (5, 3, 3), (2, 2), (1, 1)),
                                 PoolLayer("avg_pool", (4, 2, 3), (2, 2), (1, 1), (1, 0, 1, 0), True),
                                 PoolLayer("global_max_pool", (4, 2, 3)),
                                 DenseLayer(rng.normal(size=(3, 2)), rng.normal(size=2), "softmax")],
                                meta={"note": "v3_spatial"}, refs=1)
    # The metadata entries the loader parses (rules 30-33), for the fuzzer to mutate.
    files["meta_parsed"] = build(random_layers(rng, [6, 5, 3], ["relu", "softmax"]),
                                 meta={"classes": "int\n0\n7\n-1", "reference_input_range": "uint8 0 255",
                                       "reject_class": "2", "output_kind": "probabilities"}, refs=1)
    base = files["relu_chain"]
    files["bad_magic"] = b"PK" + base[2:]
    files["version_4"] = put(base, 8, "I", 4)
    files["v3_bad_window"] = put(files["v3_spatial"], 48 + 20 + 12, "I", 9)
    files["v2_bad_op"] = put(files["v2_ops"], 48 + 20 + 16, "I", 7)
    files["truncated"] = base[:-9]
    files["huge_layer"] = put(put(base, 48 + 4, "I", 65536), 48 + 16, "I", 65536)
    files["nan_weight"] = put(base, 48 + 32 + 4, "f", float("nan"))
    files["bad_activation"] = put(base, 48 + 8, "I", 9)
    files["zero_scale"] = put(base, 32, "d", 0.0)
    out = HERE / "corpus"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for name, data in files.items():
        for control in (0b0000, 0b1000, 0b0101):  # raw; raw + verify; resealed on avx2
            blob = bytes([control]) + data
            (out / f"{name}-{control:02x}-{hashlib.sha1(blob).hexdigest()[:8]}").write_bytes(blob)
    print(f"wrote {len(list(out.iterdir()))} seeds to {out}")


if __name__ == "__main__":
    main()
