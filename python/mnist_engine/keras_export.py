"""Export a trained Keras model to a ``.mnw`` file. Keras and TensorFlow are imported only when an
export runs, never by ``import mnist_engine``."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ._export_common import base_metadata, reference_inputs_for
from .model_file import DEFAULT_ATOL, DEFAULT_RTOL, DenseLayer, write_model

# Earlier Keras 3 releases have known safe_mode bypasses (arbitrary code on load).
MIN_KERAS = (3, 13, 2)
SUPPORTED_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")


class UnsupportedModelError(ValueError):
    """The Keras model contains something the engine cannot represent."""


def _import_keras():
    try:
        import keras  # noqa: PLC0415 (deliberately lazy)
    except ImportError as e:  # pragma: no cover - exercised only without TensorFlow
        raise ImportError("exporting a Keras model needs Keras: pip install 'mnist-engine[export]'") from e
    version = tuple(int(p) for p in re.findall(r"\d+", keras.__version__)[:3])
    if version < MIN_KERAS:
        raise RuntimeError(f"Keras >= {'.'.join(map(str, MIN_KERAS))} is required (earlier versions have "
                           f"known safe_mode bypasses); found {keras.__version__}")
    return keras


def load_keras_model(path: Union[str, "os.PathLike[str]"], *, allow_h5: bool = False):
    """Load a ``.keras`` file with ``safe_mode=True`` (no code from the file is run). Legacy HDF5 files
    bypass those protections, so they are refused unless the caller trusts the file: ``allow_h5``."""
    keras = _import_keras()
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        if not allow_h5:
            raise ValueError(f"{path} is a legacy HDF5 model, which Keras cannot load safely; re-save it as "
                             ".keras, or pass allow_h5=True (--allow-h5) if you trust its origin")
        return keras.saving.load_model(path, compile=False)
    if path.suffix.lower() != ".keras":
        raise ValueError(f"expected a .keras model file, got {path}")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _activation_of(layer, config_key: str = "activation") -> str:
    name = layer.get_config().get(config_key)
    if not isinstance(name, str) or name not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(f"layer {layer.name!r} ({type(layer).__name__}) has activation {name!r}; "
                                    f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}")
    return name


def _scalar(value: Any, what: str, layer) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise UnsupportedModelError(f"layer {layer.name!r} (Rescaling) has a per-channel {what}; only scalars fold")
    return float(arr.reshape(()))


def _check_single_chain(model, keras) -> List[Any]:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError(f"expected one input and one output, got {len(model.inputs)} and "
                                    f"{len(model.outputs)}")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    previous = model.inputs[0]
    for layer in layers:
        if layer.input is not previous:
            raise UnsupportedModelError(f"layer {layer.name!r} does not take the previous layer's output: only "
                                        "single-chain models (no branches, skips or shared layers) are supported")
        previous = layer.output
    return layers


def keras_dense_chain(model) -> Tuple[List[DenseLayer], bool]:
    """The model as dense layers, and whether it rescales its input itself (a Rescaling layer,
    folded into the first Dense). Raises UnsupportedModelError naming the first layer it cannot map."""
    keras = _import_keras()
    if not model.built:
        raise UnsupportedModelError("the model is not built: give it an Input or call it once first")
    scale, offset, rescales = 1.0, 0.0, False
    dense: List[List[Any]] = []  # [kernel, bias, activation], mutable while Activation layers merge in
    for layer in _check_single_chain(model, keras):
        kind = type(layer).__name__
        if isinstance(layer, (keras.layers.Dropout, keras.layers.Flatten, keras.layers.Reshape)):
            # Dropout is the identity at inference; Flatten and Reshape never change the row-major order.
            continue
        if isinstance(layer, keras.layers.Rescaling):
            if dense:
                raise UnsupportedModelError(f"layer {layer.name!r} (Rescaling) follows a Dense layer; only a "
                                            "Rescaling before the first Dense can be folded")
            s, o = _scalar(layer.scale, "scale", layer), _scalar(layer.offset, "offset", layer)
            scale, offset, rescales = scale * s, offset * s + o, True
        elif isinstance(layer, keras.layers.Dense):
            if len(layer.output.shape) != 2:
                raise UnsupportedModelError(f"layer {layer.name!r} (Dense) gets a rank-{len(layer.input.shape)} "
                                            "input; add a Flatten before it")
            weights = layer.get_weights()
            kernel = weights[0]
            bias = weights[1] if layer.use_bias else np.zeros(kernel.shape[1], np.float32)
            dense.append([kernel, bias, _activation_of(layer)])
        elif isinstance(layer, (keras.layers.Activation, keras.layers.ReLU, keras.layers.Softmax)):
            act = _merge_activation(layer, keras)
            if not dense or dense[-1][2] != "linear":
                where = "before any Dense layer" if not dense else f"after a Dense with activation {dense[-1][2]!r}"
                raise UnsupportedModelError(f"layer {layer.name!r} ({kind}) comes {where}; it can only be merged "
                                            "into a Dense layer with a linear activation")
            dense[-1][2] = act
        else:
            raise UnsupportedModelError(f"layer {layer.name!r} of type {kind} is not supported; supported: "
                                        "InputLayer, Flatten, Reshape, Dense, Activation, ReLU, Softmax, "
                                        "Dropout, Rescaling")
    if not dense:
        raise UnsupportedModelError("the model has no Dense layer")
    if rescales:
        # (x*s + o) @ W + b = x @ (s*W) + (b + o * sum_k W[k]); folded in float64, rounded once.
        kernel, bias = np.asarray(dense[0][0], np.float64), np.asarray(dense[0][1], np.float64)
        dense[0][0], dense[0][1] = kernel * scale, bias + offset * kernel.sum(axis=0)
    return [DenseLayer(k, b, a) for k, b, a in dense], rescales


def _merge_activation(layer, keras) -> str:
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            raise UnsupportedModelError(f"layer {layer.name!r} (ReLU) is not a plain relu: {cfg}")
        return "relu"
    if isinstance(layer, keras.layers.Softmax):
        if layer.get_config().get("axis", -1) not in (-1, 1):
            raise UnsupportedModelError(f"layer {layer.name!r} (Softmax) is not over the last axis")
        return "softmax"
    return _activation_of(layer)


def export_keras(
    model_or_path: Any,
    out_path: Union[str, "os.PathLike[str]"],
    *,
    input_scale: Optional[float] = None,
    reference_images: Optional[np.ndarray] = None,
    source: Optional[str] = None,
    allow_h5: bool = False,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> Path:
    """Write a Keras model (object or ``.keras`` path) to ``out_path`` in the ``.mnw`` format.

    ``input_scale`` is what a raw uint8 pixel must be multiplied by to become this model's input:
    1/255 for a model trained on ``x / 255`` (the default), 1 for a model with its own Rescaling
    layer (the default when it has one). ``reference_images`` (uint8 pixels or scaled floats) are
    stored with Keras's outputs for them, and every load re-checks them; by default 16 synthetic
    MNIST-like images are used.
    """
    keras = _import_keras()
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_keras_model(model_or_path, allow_h5=allow_h5)
        source = source if source is not None else Path(model_or_path).name
    layers, rescales = keras_dense_chain(model)
    if input_scale is None:
        input_scale = 1.0 if rescales else 1 / 255
    width = layers[0].kernel.shape[0]
    ref_in = reference_inputs_for(reference_images, width, input_scale)
    model_shape = tuple(model.inputs[0].shape[1:])
    ref_out = np.asarray(model.predict(ref_in.reshape((len(ref_in),) + model_shape), verbose=0,
                                       batch_size=len(ref_in)))
    meta = base_metadata("mnist_engine.export_keras", source if source is not None else model.name)
    meta.update({"keras_version": keras.__version__, "backend": keras.backend.backend(),
                 "model_name": model.name})
    return write_model(out_path, layers, input_scale=input_scale, metadata=meta, reference_inputs=ref_in,
                       reference_outputs=ref_out.reshape(len(ref_in), -1), atol=atol, rtol=rtol)
