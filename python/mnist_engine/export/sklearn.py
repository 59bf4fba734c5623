"""Export a fitted scikit-learn MLPClassifier or MLPRegressor, alone or at the end of a Pipeline of
feature scalers, to a ``.mnw`` file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ..model_file import DEFAULT_ATOL, DEFAULT_RTOL, DenseLayer, encode_classes
from ..reference import forward
from .common import (
    REFERENCE_ROWS,
    Stage,
    base_metadata,
    feature_rows,
    fold_before,
    pixels_possible,
    prove_and_write,
    reference_inputs_for,
)

_HIDDEN = {"relu": "relu", "logistic": "sigmoid", "tanh": "tanh", "identity": "linear"}
SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "PCA")


def _fold_step(step: Any, kernel: np.ndarray, bias: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A pipeline step before the first dense layer, folded into it (float64, rounded once when
    written). A scaler is per feature; PCA is a full linear map, x -> (x - mean_) P with P =
    components_.T (over sqrt(explained_variance_) when whitened): (x - m) P W + b = x (P W) + (b - m P W)."""
    if type(step).__name__ != "PCA":
        return fold_before(kernel, bias, *_scaler_affine(step, kernel.shape[0]))
    projection = np.asarray(step.components_, np.float64).T
    if step.whiten:
        projection = projection / np.sqrt(np.asarray(step.explained_variance_, np.float64))
    if projection.shape[1] != kernel.shape[0]:
        raise ValueError(f"PCA gives {projection.shape[1]} components, but the MLP takes {kernel.shape[0]} inputs")
    folded = projection @ kernel
    mean = np.zeros(projection.shape[0]) if step.mean_ is None else np.asarray(step.mean_, np.float64)
    return folded, bias - mean @ folded


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


def _training_top(step: Any) -> Optional[float]:
    """About the largest value the scaler saw when it was fitted (the training data's scale)."""
    kind = type(step).__name__
    if kind == "StandardScaler" and getattr(step, "mean_", None) is not None:
        spread = getattr(step, "scale_", None)
        return float(np.max(np.asarray(step.mean_) + (0 if spread is None else np.asarray(spread))))
    if kind == "MinMaxScaler":
        return float(np.max(step.data_max_))
    if kind == "MaxAbsScaler":
        return float(np.max(step.max_abs_))
    if kind == "PCA" and getattr(step, "mean_", None) is not None:
        return float(np.max(step.mean_))  # the brightest pixel's mean: ~140 on raw MNIST, ~0.55 on x / 255
    return None


def _infer_input_scale(transforms: List[Any], reference_images: Any) -> float:
    """What a uint8 pixel must be multiplied by to become the data the pipeline was fitted on, where
    something says so: a scaler's fitted statistics, or float reference images. An MLP alone keeps
    no trace of its training data's scale, and a wrong guess costs ~90 points of accuracy without a
    word (an MLP fitted on raw 0..255 pixels, exported as /255, classifies 10%), so then the caller
    must say."""
    tops = [top for top in (_training_top(step) for step in transforms[:1]) if top is not None]
    if reference_images is not None and np.asarray(reference_images).dtype.kind == "f":
        tops.append(float(np.max(reference_images)))
    if tops:
        top = tops[0]
        if 0 < top <= 1.5:
            return 1 / 255
        if 1.5 < top <= 300:
            return 1.0
    raise ValueError("export_sklearn cannot tell the scale the model was fitted on: pass input_scale=1/255 if it "
                     "was fitted on pixels / 255, or input_scale=1 if on raw 0..255 pixels (or float "
                     "reference_images as it was fitted)")


def _drawn_feature_rows(transforms: List[Any], width: int) -> Optional[np.ndarray]:
    """Rows drawn from what the pipeline's first step learned of the data (a scaler's ranges or
    moments, PCA's mean and variances); None when it learned nothing of them."""
    rng = np.random.default_rng(0)
    step = transforms[0] if transforms else None
    kind = type(step).__name__
    if kind == "StandardScaler":
        mean = np.zeros(width) if step.mean_ is None or not step.with_mean else np.asarray(step.mean_)
        spread = np.ones(width) if step.scale_ is None or not step.with_std else np.asarray(step.scale_)
        return mean + rng.normal(size=(REFERENCE_ROWS, width)) * spread
    if kind == "MinMaxScaler":
        return rng.uniform(step.data_min_, step.data_max_, (REFERENCE_ROWS, width))
    if kind == "MaxAbsScaler":
        return rng.uniform(-step.max_abs_, step.max_abs_, (REFERENCE_ROWS, width))
    if kind == "PCA":
        mean = np.zeros(width) if step.mean_ is None else np.asarray(step.mean_)
        z = rng.normal(size=(REFERENCE_ROWS, len(step.explained_variance_)))
        return mean + (z * np.sqrt(step.explained_variance_)) @ np.asarray(step.components_)
    return None


def export_sklearn(
    mlp: Any,
    out_path: Union[str, "os.PathLike[str]"],
    *,
    input_scale: Optional[float] = None,
    reference_images: Any = None,
    calibration_images: Any = None,
    source: str = "",
    store_classes: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    output_kind: Optional[str] = None,
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
    A model of pixels (784 inputs, uint8 ``reference_images``, or an ``input_scale`` given) gets a
    uint8 path: ``input_scale``, ``reference_images`` and ``calibration_images`` work as in
    :func:`export_keras`, except that ``input_scale`` has no default guess: when it is not given, it
    is read from the pipeline's first scaler (the data it was fitted on) or from float
    ``reference_images`` (their values, 0..1 or 0..255), and otherwise export refuses, saying which
    two values to choose from. Any other model takes features (tabular data): the file says so
    (``input_kind`` ``features``), float rows are computed exactly as given and uint8 input is
    refused; ``reference_images`` are then float rows of features (by default, rows drawn from what
    the pipeline's first step learned of the data, or standard normal rows).
    The file states what the outputs are (``output_kind``): a classifier's probabilities, a
    regressor's values.
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
        coefs[0], intercepts[0] = _fold_step(step, coefs[0], intercepts[0])
    layers = [DenseLayer(w, b, a) for w, b, a in zip(coefs, intercepts, acts)]
    width = layers[0].kernel.shape[0]
    pixels = pixels_possible(layers, input_scale, reference_images)
    if pixels:
        if input_scale is None:
            input_scale = _infer_input_scale(transforms, reference_images)
        reference = reference_inputs_for(reference_images, width, input_scale)
    else:  # features: float input only, exactly as given; the file refuses uint8 (input_kind)
        input_scale = 1.0
        reference = feature_rows(reference_images, width, _drawn_feature_rows(transforms, width))
    x = reference.values
    if hasattr(mlp, "predict_proba"):
        ref_out = pipeline.predict_proba(x)
        if mlp.out_activation_ == "logistic" and ref_out.shape[1] == 2 and layers[-1].kernel.shape[1] == 1:
            ref_out = ref_out[:, 1:]
    else:
        ref_out = np.asarray(pipeline.predict(x)).reshape(len(x), -1)
    meta = base_metadata("mnist_engine.export_sklearn", source or type(mlp).__name__)
    meta["sklearn_version"] = sklearn.__version__
    meta["input_kind"] = "pixels" if pixels else "features"
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
    calibration = None if calibration_images is None else (
        reference_inputs_for(calibration_images, width, input_scale) if pixels
        else feature_rows(calibration_images, width))
    return prove_and_write(out_path, layers, framework="scikit-learn", stages=stages, input_scale=input_scale,
                           metadata=meta, reference=reference, reference_outputs=ref_out, atol=atol, rtol=rtol,
                           calibration=calibration, output_kind=output_kind,
                           output_hint="probabilities" if hasattr(mlp, "predict_proba") else "values")
