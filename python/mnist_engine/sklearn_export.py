"""Export a fitted scikit-learn MLPClassifier or MLPRegressor, alone or at the end of a Pipeline of
feature scalers, to a ``.mnw`` file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Tuple, Union

import numpy as np

from ._export_common import Stage, base_metadata, fold_before, prove_and_write, reference_inputs_for
from .model_file import DEFAULT_ATOL, DEFAULT_RTOL, DenseLayer, encode_classes
from .reference import forward

_HIDDEN = {"relu": "relu", "logistic": "sigmoid", "tanh": "tanh", "identity": "linear"}
SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler")


def _scaler_affine(step: Any, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, offset) with scaler.transform(x) == x * scale + offset, per feature."""
    kind = type(step).__name__
    if kind == "StandardScaler":
        # mean_ is fitted even when with_mean=False, and then not subtracted: the flags decide.
        spread = np.asarray(step.scale_, np.float64) if step.with_std else np.ones(width)
        mean = np.asarray(step.mean_, np.float64) if step.with_mean else np.zeros(width)
        return 1.0 / spread, -mean / spread
    if kind == "MinMaxScaler":
        if getattr(step, "clip", False):
            raise ValueError("MinMaxScaler(clip=True) clips its output, which is not an affine map; "
                             "refit it with clip=False to export")
        return np.asarray(step.scale_, np.float64), np.asarray(step.min_, np.float64)
    if kind == "MaxAbsScaler":
        return 1.0 / np.asarray(step.scale_, np.float64), np.zeros(width)
    raise ValueError(f"pipeline step {type(step).__name__} is not supported: only {', '.join(SCALERS)} before "
                     "the MLP fold into its first layer")


def _unpipe(model: Any) -> Tuple[Any, List[Any]]:
    """The MLP at the end of a fitted Pipeline and the steps before it (or the model itself)."""
    steps = getattr(model, "steps", None)
    if steps is None:
        return model, []
    transforms = [step for _, step in steps[:-1] if step not in (None, "passthrough")]
    return steps[-1][1], transforms
_OUTPUT = {"softmax": "softmax", "logistic": "sigmoid", "identity": "linear"}


def export_sklearn(
    mlp: Any,
    out_path: Union[str, "os.PathLike[str]"],
    *,
    input_scale: float = 1 / 255,
    reference_images: Any = None,
    calibration_images: Any = None,
    source: str = "",
    store_classes: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> Path:
    """Write a fitted MLP to ``out_path``. The engine's output is the network's last layer: for a
    multi-class classifier that is ``predict_proba``; for a binary one, its positive column; for a
    multi-label one, one probability per label; for a regressor, ``predict``.

    ``mlp`` may also be a fitted ``Pipeline`` of StandardScaler, MinMaxScaler or MaxAbsScaler steps
    ending in the MLP: the scalers are folded into the first layer's weights (exact algebra in
    float64, rounded once), and the file reproduces the whole pipeline.

    A classifier's ``classes_`` travel in the file, so ``Engine.classify`` returns sklearn's own
    labels (``clf.predict``): integers, or strings without newlines. Labels the format cannot hold
    (floats, booleans, mixed types) are refused by name; ``store_classes=False`` exports without them
    (classify then returns output indices). Multi-label classifiers store no classes.
    ``input_scale``, ``reference_images`` and ``calibration_images`` work as in :func:`export_keras`.
    """
    import sklearn  # noqa: PLC0415 (only exports need it)

    pipeline = mlp
    mlp, transforms = _unpipe(pipeline)
    if not all(hasattr(mlp, a) for a in ("coefs_", "intercepts_", "activation", "out_activation_")):
        raise TypeError(f"expected a fitted sklearn MLPClassifier or MLPRegressor, got {type(mlp).__name__}")
    if mlp.activation not in _HIDDEN or mlp.out_activation_ not in _OUTPUT:
        raise ValueError(f"unsupported activations {mlp.activation!r}/{mlp.out_activation_!r}")
    acts = [_HIDDEN[mlp.activation]] * (len(mlp.coefs_) - 1) + [_OUTPUT[mlp.out_activation_]]
    coefs = [np.asarray(w, np.float64) for w in mlp.coefs_]
    intercepts = [np.asarray(b, np.float64) for b in mlp.intercepts_]
    for step in reversed(transforms):
        coefs[0], intercepts[0] = fold_before(coefs[0], intercepts[0], *_scaler_affine(step, coefs[0].shape[0]))
    layers = [DenseLayer(w, b, a) for w, b, a in zip(coefs, intercepts, acts)]
    reference = reference_inputs_for(reference_images, layers[0].kernel.shape[0], input_scale)
    x = reference.values
    if hasattr(mlp, "predict_proba"):
        ref_out = pipeline.predict_proba(x)
        if mlp.out_activation_ == "logistic" and ref_out.shape[1] == 2 and layers[-1].kernel.shape[1] == 1:
            ref_out = ref_out[:, 1:]
    else:
        ref_out = np.asarray(pipeline.predict(x)).reshape(len(x), -1)
    meta = base_metadata("mnist_engine.export_sklearn", source or type(mlp).__name__)
    meta["sklearn_version"] = sklearn.__version__
    multilabel = getattr(getattr(mlp, "_label_binarizer", None), "y_type_", "") == "multilabel-indicator"
    if store_classes and hasattr(mlp, "classes_") and not multilabel:
        try:
            meta["classes"] = encode_classes(mlp.classes_, layers[-1].kernel.shape[1])
        except ValueError as e:
            raise ValueError(f"{type(mlp).__name__}.classes_ cannot be stored: {e}. Pass store_classes=False to "
                             "export without them (classify then returns output indices)") from None
    # sklearn's forward pass is this same algebra (_forward_pass_fast): each layer's expected output
    # is the float64 reference of the unfolded layers on the scalers' own transform of the rows.
    unfolded = [DenseLayer(w, b, a) for w, b, a in zip(mlp.coefs_, mlp.intercepts_, acts)]
    transformed = x
    for step in transforms:
        transformed = step.transform(transformed)
    stages = [Stage(f"layer {i} (coefs_[{i}] {w.shape[0]}->{w.shape[1]}, {a}"
                    f"{', scalers folded in' if i == 0 and transforms else ''})",
                    forward(unfolded[: i + 1], transformed))
              for i, (w, a) in enumerate(zip(mlp.coefs_, acts))]
    width = layers[0].kernel.shape[0]
    calibration = None if calibration_images is None else reference_inputs_for(calibration_images, width, input_scale)
    return prove_and_write(out_path, layers, framework="scikit-learn", stages=stages, input_scale=input_scale,
                           metadata=meta, reference=reference, reference_outputs=ref_out, atol=atol, rtol=rtol,
                           calibration=calibration)
