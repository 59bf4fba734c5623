#!/usr/bin/env python3
"""Python-level fuzz (atheris) of the public API: mnist_engine.Engine.from_bytes on mutated files,
then predict on arrays of fuzzer-chosen dtype and shape. Uses the control byte of fuzz_loader.cpp.

    pip install atheris
    python fuzz/fuzz_python.py fuzz/corpus -atheris_runs=200000
Only FormatError (from load) and TypeError/ValueError (from predict) are acceptable outcomes."""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

with atheris.instrument_imports():
    import numpy as np

    from helpers import fuzz_case
    from mnist_engine import Engine, FormatError

DTYPES = [np.uint8, np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64]


@atheris.instrument_func
def test_one_input(blob: bytes) -> None:
    if not blob:
        return
    data, kernel, verify = fuzz_case(blob)
    try:
        engine = Engine.from_bytes(data, verify=verify, kernel=kernel)
    except FormatError:
        return
    fdp = atheris.FuzzedDataProvider(data)
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    rows = fdp.ConsumeIntInRange(0, 70)
    width = engine.input_width + fdp.ConsumeIntInRange(-1, 1)
    raw = np.frombuffer((data * (rows * max(width, 1) * 16 // max(len(data), 1) + 1)), np.uint8)
    x = raw[: rows * max(width, 0) * np.dtype(dtype).itemsize].view(dtype).reshape(rows, max(width, 0))
    try:
        y = engine.predict(x)
    except (TypeError, ValueError):
        return
    assert y.shape == (rows, engine.output_width), y.shape


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
