"""Building and breaking model files in tests."""
from __future__ import annotations

import struct
from typing import Dict, Optional, Sequence

import numpy as np

import mnist_engine
from mnist_engine.model_file import DenseLayer, encode_model, sample_pixel_inputs
from mnist_engine.reference import forward

__all__ = ["DenseLayer", "Layout", "as_version_2", "build", "engine_for", "fuzz_case", "put", "random_layers",
           "reframe", "reseal"]

BASE_META = {"producer": "tests", "producer_version": "0", "source": "tests/helpers.py"}


def build(layers: Sequence[DenseLayer], *, input_scale: float = 1 / 255, meta: Optional[Dict[str, str]] = None,
          refs: int = 2, **kw) -> bytes:
    """A valid file for `layers`, its reference outputs from the numpy reference."""
    x = sample_pixel_inputs(refs, layers[0].widths[0], input_scale)
    return encode_model(layers, input_scale=input_scale, metadata={**BASE_META, **(meta or {})},
                        reference_inputs=x, reference_outputs=forward(layers, x), **kw)


def engine_for(layers: Sequence[DenseLayer], kernel: str = "", verify: bool = True, **kw) -> mnist_engine.Engine:
    return mnist_engine.Engine.from_bytes(build(layers, **kw), verify=verify, kernel=kernel)


def random_layers(rng: np.random.Generator, widths: Sequence[int], activations: Sequence[str]):
    """Layers scaled so every activation stays O(1): float32 rounding then stays far below 1e-5."""
    return [DenseLayer(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b) * 0.1, act)
            for a, b, act in zip(widths[:-1], widths[1:], activations)]


def reseal(data: bytes) -> bytes:
    """Recompute the trailing CRC32C so a deliberate edit tests its own rule, not the checksum."""
    body = data[:-4]
    return body + struct.pack("<I", mnist_engine._core.crc32c(body))


def as_version_2(data: bytes) -> bytes:
    """A version-1 file rewritten as the version-2 file of the same model: every layer dense."""
    layout = Layout(data)
    assert layout.version == 1
    table = b"".join(data[48 + 16 * i: 64 + 16 * i] + struct.pack("<I", 0) for i in range(layout.layers))
    body = data[:8] + struct.pack("<I", 2) + data[12:48] + table + data[layout.weights:]
    return reframe(body)


def reframe(data: bytes) -> bytes:
    """Rewrite the header's file_size to the real length, then reseal: damage of any kind (cuts,
    insertions) then reaches the rules behind the frame checks."""
    return reseal(data[:16] + len(data).to_bytes(8, "little") + data[24:]) if len(data) >= 52 else data


FUZZ_KERNELS = ["", "avx2", "scalar", "avx512"]


def fuzz_case(blob: bytes):
    """Decode a fuzz input the way fuzz/fuzz_loader.cpp does: (file bytes, kernel, verify).
    Control byte: bit 0 reframe, bits 1-2 kernel (unavailable -> default), bit 3 verify."""
    control, data = blob[0], blob[1:]
    if control & 1:
        data = reframe(data)
    kernel = FUZZ_KERNELS[(control >> 1) & 3]
    if kernel not in mnist_engine.available_kernels("fp32"):
        kernel = ""
    return data, kernel, bool(control & 8)


def put(data: bytes, offset: int, fmt: str, *values, seal: bool = True) -> bytes:
    b = bytearray(data)
    struct.pack_into("<" + fmt, b, offset, *values)
    return reseal(bytes(b)) if seal else bytes(b)


class Layout:
    """Section offsets of a file written by `build`, computed from FORMAT.md independently of the
    loader (versions 1 and 2)."""

    OP_VALUES = {0: lambda i, o: i * o + o, 1: lambda i, o: 2 * o, 2: lambda i, o: 2 * o + 1}

    def __init__(self, data: bytes):
        (self.version,) = struct.unpack_from("<I", data, 8)
        (self.layers, self.width, _, self.refs, self.meta_count) = struct.unpack_from("<IIdII", data, 24)
        self.table = 48
        self.entry_size = 16 if self.version == 1 else 20
        rows = [struct.unpack_from("<IIII" if self.version == 1 else "<IIIII", data, 48 + self.entry_size * i)
                for i in range(self.layers)]
        self.weights = 48 + self.entry_size * self.layers
        # Per layer: where its values start, and where its activation parameters start.
        self.layer_at, self.parameters_at = [], []
        at = self.weights
        for row in rows:
            n_in, n_out, activation = row[:3]
            op = row[4] if self.version > 1 else 0
            names, per_unit, _ = mnist_engine._core.ACTIVATION_PARAMETERS[mnist_engine._core.ACTIVATIONS[activation]]
            self.layer_at.append(at)
            at += 4 * self.OP_VALUES[op](n_in, n_out)
            self.parameters_at.append(at)
            at += 4 * (len(names) + per_unit * n_out)
        self.metadata = at
        self.out_width = rows[-1][1]
        at, self.entries = self.metadata, []
        for _ in range(self.meta_count):
            (klen,) = struct.unpack_from("<H", data, at)
            key = data[at + 2: at + 2 + klen].decode()
            (vlen,) = struct.unpack_from("<I", data, at + 2 + klen)
            self.entries.append((key, at, at + 2 + klen, at + 6 + klen))  # key, entry, value length, value
            at += 6 + klen + vlen
        self.reference = at
        self.ref_inputs = at + 8
        self.ref_expected = self.ref_inputs + 4 * self.refs * self.width

    def entry(self, key: str):
        return next(e for e in self.entries if e[0] == key)


def train_dense50(keras, mnist, seed: int, epochs: int):
    """The reference notebook's Dense(50, relu)-Dense(50, relu)-Dense(10, softmax) net, trained on
    x / 255 here, in the test run."""
    (x_train, y_train), _ = mnist
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(50, activation="relu"), keras.layers.Dense(50, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train.astype(np.float32) / 255, y_train, epochs=epochs, batch_size=128, verbose=0)
    return model


def stored_neuron_orders(stored, kernels):
    """The exporters may renumber hidden neurons (mnist_engine.unit_order). For each stored layer,
    the original index of each of its output columns, found by exact match against the original
    ``kernels`` (whose rows are first put in the previous layer's stored order)."""
    orders, rows = [], None
    for layer, kernel in zip(stored, kernels, strict=True):
        kernel = np.asarray(kernel) if rows is None else np.asarray(kernel)[rows]
        order = [int(np.flatnonzero((kernel == column[:, None]).all(0))[0]) for column in layer.kernel.T]
        assert sorted(order) == list(range(kernel.shape[1])), "the stored columns are not a permutation"
        orders.append(order)
        rows = order
    return orders
