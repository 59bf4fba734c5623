"""The optional extras: which pip extra brings which module, so that a missing one is named in one
line (by the library and by the command line alike) instead of a bare ModuleNotFoundError."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

# top-level module -> (the package a user installs, the mnist-engine extra that brings it)
EXTRAS = {"PIL": ("Pillow", "images"), "matplotlib": ("matplotlib", "plots"), "dask": ("dask", "dask"),
          "distributed": ("distributed", "dask"), "tensorflow": ("TensorFlow", "export"),
          "keras": ("Keras", "export"), "sklearn": ("scikit-learn", "sklearn"), "onnx": ("onnx", "onnx"),
          "starlette": ("Starlette", "serve"), "uvicorn": ("uvicorn", "serve"),
          "prometheus_client": ("prometheus-client", "serve")}


def missing_message(module: str, purpose: str = "this") -> str:
    root = module.split(".")[0]
    package, extra = EXTRAS.get(root, (root, None))
    hint = f'pip install "mnist-engine[{extra}]"' if extra else f"pip install {package}"
    return f"{purpose} needs {package}, which is not installed: {hint}"


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise ModuleNotFoundError saying what needs it and which extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise  # something the module itself imports is missing: not ours to explain
        # A plain ModuleNotFoundError, as callers expect; the mark tells the CLI that its message
        # already says what to install.
        error = ModuleNotFoundError(missing_message(module, purpose), name=e.name)
        error.explained = True
        raise error from None


def our_message(e: ModuleNotFoundError) -> Optional[str]:
    """The one-line explanation for a missing module, for the command line."""
    if not e.name:
        return None
    if getattr(e, "explained", False):
        return str(e)
    return missing_message(e.name)
