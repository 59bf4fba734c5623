#!/usr/bin/env python3
"""Python-level fuzz (atheris) of the public API: mnist_engine.Engine.from_bytes on mutated files,
then predict on arrays of fuzzer-chosen dtype and shape. Uses the control byte of fuzz_loader.cpp.

    pip install atheris
    python fuzz/fuzz_python.py fuzz/corpus -atheris_runs=200000
Only FormatError (from load) and TypeError/ValueError (from predict) are acceptable outcomes."""
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    import mnist_engine
    from mnist_engine import Engine, FormatError

KERNELS = ["", "avx2", "scalar", "avx512"]
DTYPES = [np.uint8, np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64]


def reseal(data: bytes) -> bytes:
    data = data[:16] + len(data).to_bytes(8, "little") + data[24:]
    return data[:-4] + mnist_engine._core.crc32c(data[:-4]).to_bytes(4, "little")


@atheris.instrument_func
def test_one_input(blob: bytes) -> None:
    if not blob:
        return
    control, data = blob[0], blob[1:]
    if control & 1 and len(data) >= 52:
        data = reseal(data)
    kernel = KERNELS[(control >> 1) & 3]
    if kernel not in mnist_engine.available_kernels():
        kernel = ""
    try:
        engine = Engine.from_bytes(data, verify=bool(control & 8), kernel=kernel)
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
