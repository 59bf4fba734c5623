"""Export a fitted scikit-learn MLPClassifier or MLPRegressor to a ``.mnw`` file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._export_common import base_metadata, reference_inputs_for
from .model_file import DEFAULT_ATOL, DEFAULT_RTOL, DenseLayer, write_model

_HIDDEN = {"relu": "relu", "logistic": "sigmoid", "tanh": "tanh", "identity": "linear"}
_OUTPUT = {"softmax": "softmax", "logistic": "sigmoid", "identity": "linear"}


def export_sklearn(
    mlp: Any,
    out_path: Union[str, "os.PathLike[str]"],
    *,
    input_scale: float = 1 / 255,
    reference_images: Optional[np.ndarray] = None,
    source: str = "",
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> Path:
    """Write a fitted MLP to ``out_path``. The engine's output is the network's last layer: for a
    multi-class classifier that is ``predict_proba``; for a binary one, its positive column."""
    import sklearn  # noqa: PLC0415 (only exports need it)

    if not all(hasattr(mlp, a) for a in ("coefs_", "intercepts_", "activation", "out_activation_")):
        raise TypeError(f"expected a fitted sklearn MLPClassifier or MLPRegressor, got {type(mlp).__name__}")
    if mlp.activation not in _HIDDEN or mlp.out_activation_ not in _OUTPUT:
        raise ValueError(f"unsupported activations {mlp.activation!r}/{mlp.out_activation_!r}")
    acts = [_HIDDEN[mlp.activation]] * (len(mlp.coefs_) - 1) + [_OUTPUT[mlp.out_activation_]]
    layers = [DenseLayer(w, b, a) for w, b, a in zip(mlp.coefs_, mlp.intercepts_, acts)]
    ref_in = reference_inputs_for(reference_images, layers[0].kernel.shape[0], input_scale)
    if hasattr(mlp, "predict_proba"):
        ref_out = mlp.predict_proba(ref_in)
        if mlp.out_activation_ == "logistic" and ref_out.shape[1] == 2 and layers[-1].kernel.shape[1] == 1:
            ref_out = ref_out[:, 1:]
    else:
        ref_out = np.asarray(mlp.predict(ref_in)).reshape(len(ref_in), -1)
    meta = base_metadata("mnist_engine.export_sklearn", source or type(mlp).__name__)
    meta["sklearn_version"] = sklearn.__version__
    return write_model(out_path, layers, input_scale=input_scale, metadata=meta, reference_inputs=ref_in,
                       reference_outputs=ref_out, atol=atol, rtol=rtol)
