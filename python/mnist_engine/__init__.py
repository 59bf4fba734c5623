"""mnist_engine: a small, fast, verifiable inference engine for the networks people train on MNIST:
dense MLPs and small CNNs, from Keras, PyTorch (via ONNX) and scikit-learn.

    >>> import mnist_engine, numpy as np
    >>> mnist_engine.predict(np.zeros((2, 784), np.uint8)).shape
    (2, 10)

Models are ``.mnw`` files (docs/FORMAT.md) written by :func:`export_keras`, :func:`export_onnx`
or :func:`export_sklearn`; :func:`load` reads and verifies one. TensorFlow and onnx are never
imported here: only the exporters need them, and they import them when called.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from . import _core
from ._core import (
    Engine,
    FormatError,
    InputRangeError,
    InputRangeWarning,
    available_kernels,
    available_precisions,
    compiled_kernels,
    default_kernel,
    get_num_threads,
    set_num_threads,
)

if TYPE_CHECKING:  # imported lazily below: `import mnist_engine` must stay fast and free of Keras
    from pathlib import Path
    from typing import Optional, Union

    import numpy as np

    from .export.common import ExportMismatchError, UnsupportedModelError
    from .export.keras import export_keras
    from .export.onnx.exporter import export_onnx
    from .export.sklearn import export_sklearn
    from .images import ImageError, NoDigitError, preprocess_image
    from .model_file import write_model

    PathLike = Union[str, "os.PathLike[str]"]

__version__: str = _core.__version__

__all__ = [
    "Engine",
    "ExportMismatchError",
    "FormatError",
    "ImageError",
    "InputRangeError",
    "InputRangeWarning",
    "NoDigitError",
    "UnsupportedModelError",
    "__version__",
    "available_kernels",
    "available_precisions",
    "bundled_model_path",
    "BUNDLED_MODELS",
    "classify",
    "compiled_kernels",
    "default_kernel",
    "default_model_path",
    "export_keras",
    "export_onnx",
    "export_sklearn",
    "get_num_threads",
    "load",
    "predict",
    "preprocess_image",
    "set_num_threads",
    "write_model",
]

# The writer, the exporters and the image reader (Pillow) load on first use (PEP 562): importing
# them here would cost more than the rest of `import mnist_engine` together.
_LAZY = {"export_keras": ".export.keras", "export_onnx": ".export.onnx.exporter", "export_sklearn": ".export.sklearn",
         "write_model": ".model_file", "UnsupportedModelError": ".export.common",
         "ExportMismatchError": ".export.common",
         "preprocess_image": ".images", "ImageError": ".images", "NoDigitError": ".images"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'mnist_engine' has no attribute {name!r}")


# The models shipped in the package, by the names `load`, `--model` and tools/train.py --arch
# use: each trained and exported by tools/train.py (docs/MODELS.md has their recipes and scores).
BUNDLED_MODELS = {
    "mlp512": "mnist_mlp_512x2.mnw",  # Dense(512)-relu-Dropout x2, Dense(10)-softmax: the default
    "convnet": "mnist_convnet.mnw",  # keras-io's "Simple MNIST convnet"
    # The convnet with an 11th output, "not a digit" (reject_class 10), trained on digits as people
    # write, photograph and scan them and on letters and scribbles: the model for images.
    "reader": "mnist_reader.mnw",
}
_MODELS_DIR = os.path.join(os.path.dirname(__file__), "models")
# The file `mnist-engine` and `mnist_engine.predict` serve.
_DEFAULT_MODEL = os.path.join(_MODELS_DIR, BUNDLED_MODELS["mlp512"])


def default_model_path() -> Path:
    """Path of the bundled default model file."""
    from pathlib import Path

    return Path(_DEFAULT_MODEL)


def bundled_model_path(name: str) -> Path:
    """Path of the bundled model called ``name`` (a key of :data:`BUNDLED_MODELS`)."""
    from pathlib import Path

    if name not in BUNDLED_MODELS:
        raise KeyError(f"no bundled model {name!r}: expected one of {', '.join(BUNDLED_MODELS)}")
    return Path(_MODELS_DIR, BUNDLED_MODELS[name])


def _resolve_model(path: PathLike) -> PathLike:
    """``path``, or the bundled model it names when it is a bundled name and no such file exists
    (a file of that name in the working directory wins: a name never hides a file)."""
    text = os.fspath(path)
    if text in BUNDLED_MODELS and not os.path.exists(text):
        return os.path.join(_MODELS_DIR, BUNDLED_MODELS[text])
    return path


def load(path: PathLike, verify: bool = True, kernel: Optional[str] = None,
         precision: Optional[str] = None, threads: Optional[int] = None) -> Engine:
    """Load a ``.mnw`` model file, or a bundled model by name, and return its :class:`Engine`.

        >>> engine = mnist_engine.load(mnist_engine.default_model_path(), precision="int8")
        >>> engine.classify(images)          # (N, 784) or (N, 28, 28) uint8 pixels
        >>> mnist_engine.load("convnet")     # a name of BUNDLED_MODELS

    The whole file is validated (docs/FORMAT.md) and, unless ``verify=False``, the engine re-computes
    the file's reference inputs and compares them with the exporter's framework outputs. A bad
    file raises :class:`FormatError` (a ``ValueError``) naming the broken rule and its byte offset.

    ``precision`` is ``"fp32"`` (the default: exact), ``"bf16"`` or ``"int8"`` (faster, approximate:
    see docs/PERFORMANCE.md for their accuracy); :func:`available_precisions` lists what this CPU
    runs, and any other raises ``ValueError`` naming those. The file is verified on the exact path
    first, then the weights are converted. ``kernel`` forces a compute kernel by name (see
    :func:`available_kernels`; it implies its precision); by default the best one this CPU supports
    for the precision is used, or the one named by ``MNIST_ENGINE_KERNEL``. ``threads`` is the
    engine's default for ``predict`` (else :func:`get_num_threads`); it travels when the engine is
    pickled.

    A path that is not a readable file raises ``FileNotFoundError``, ``IsADirectoryError`` or
    ``PermissionError`` naming it.
    """
    if os.fspath(path) == "":
        raise FileNotFoundError("expected the path of a .mnw model file, got an empty path")
    path = _resolve_model(path)
    # Read whole, not memory-mapped: another process truncating the file cannot fault us later.
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    return Engine.from_bytes(data, verify=verify, kernel=kernel or "", precision=precision, threads=threads)


FormatError.__doc__ = """A model file broke a rule of docs/FORMAT.md: it is rejected whole, never half-loaded.

A ``ValueError``. ``rule`` names the broken rule (one of ``mnist_engine._core.FORMAT_RULES``) and
``offset`` is the byte offset where it was found; the message says what was expected and what came.
"""


_default_engine: Optional[Engine] = None
_default_lock = threading.Lock()


def _default() -> Engine:
    global _default_engine
    if _default_engine is None:
        with _default_lock:
            if _default_engine is None:
                _default_engine = load(_DEFAULT_MODEL)
    return _default_engine


def predict(batch: np.ndarray, threads: Optional[int] = None, range_check: str = "warn") -> np.ndarray:
    """Class probabilities, shape (N, 10) float32, from the bundled default model.

    ``batch`` holds uint8 pixels 0..255 or float32 values already scaled to 0..1, shaped (N, 784)
    or (N, 28, 28). Other float dtypes and non-contiguous arrays are converted. Float values far
    outside 0..1 (pixels not yet divided by 255) give an :class:`InputRangeWarning`, once
    (``range_check``: see :meth:`Engine.predict`).
    """
    return _default().predict(batch, threads=threads, range_check=range_check)


def classify(batch: np.ndarray, threads: Optional[int] = None, range_check: str = "warn") -> np.ndarray:
    """Predicted digits, shape (N,) int64, from the bundled default model.

    For any engine, :meth:`Engine.classify` is the argmax of ``predict`` mapped through the file's
    ``classes`` (scikit-learn's labels, ints or strings) when it has them. A one-output model is
    a binary classifier: the label is 1 (or ``classes[1]``) where the output is above its decision
    threshold, 0.5 for a sigmoid and 0 for a linear (logit), tanh or relu output, as Keras users
    write ``model.predict(x) > 0.5`` and as scikit-learn's binary ``predict`` decides.
    """
    return _default().classify(batch, threads=threads, range_check=range_check)
