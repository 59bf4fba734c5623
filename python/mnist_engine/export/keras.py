"""Export a trained Keras model to a ``.mnw`` file. Keras and TensorFlow are imported only when an
export runs, never by ``import mnist_engine``.

The model is traced through its graph (the nodes of each layer call), so a chain is recognised
however it was built, shared stateless layers and nested models included. _ChainBuilder then maps
it layer by layer (LAYER_HANDLING lists what each type becomes): Flatten/Reshape/Permute before
the first Dense become a permutation of its rows; Rescaling, Normalization and BatchNormalization
fold into a neighbouring Dense, or run as a scale_shift op when none can take them; activation
layers merge into the layer before them; LayerNormalization is an engine op; layers that are the
identity at inference vanish. The file is then proven against Keras before it is written (see
common.prove_and_write)."""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..model_file import DEFAULT_ATOL, DEFAULT_RTOL, SPATIAL_OPS
from ..reference_conv import keras_pads
from .common import (
    ExportMismatchError,
    LayerDraft,
    Stage,
    UnsupportedModelError,
    base_metadata,
    fold_after,
    fold_before,
    graph_inputs,
    prove_and_write,
    rows_in_input_order,
)

__all__ = ["ExportMismatchError", "UnsupportedModelError", "export_keras", "keras_dense_chain", "load_keras_model"]

# Earlier Keras 3 releases have known safe_mode bypasses (arbitrary code on load).
MIN_KERAS = (3, 13, 2)


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
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as e:  # Keras 2 files fail deep inside Keras 3's legacy loader
            raise ValueError(f"{path} could not be read by Keras {keras.__version__} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}). A Keras 2 .h5 file converts with the "
                             "Keras 2 it was made with: load it there and model.save('model.keras'), or rebuild "
                             "the model in Keras 3 and model.load_weights('model.h5')") from None
    if path.is_dir() and (path / "saved_model.pb").is_file():
        raise ValueError(f"{path} is a TensorFlow SavedModel folder (model.save('{path.name}') in TF 2), which Keras 3 "
                         "cannot load as a model: load it where it was made (tf.keras in TF 2.15 or earlier) and "
                         "model.save('model.keras'), or export the model object itself")
    if path.suffix.lower() != ".keras":
        raise ValueError(f"expected a .keras model file, got {path}")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (TypeError, ValueError) as e:  # Keras's own deserialization errors are pages of config dicts
        if path.is_file():
            raise ValueError(f"{path}: Keras {keras.__version__} cannot reload this file: {_keras_load_cause(e)}. "
                             "Export the model object instead (export_keras(model, ...)) in the program that "
                             "built it, where Keras does not need to re-create it from the file") from None
        raise


def _keras_load_cause(error: Exception) -> str:
    """The one line of a Keras load error that names the cause. Keras wraps deserialization
    failures in an 11-line, 4-5 KB message whose real cause ('Could not locate function
    \'softmax_v2\'', 'Unknown layer: \'Mish\'') comes last, after whole config dicts."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for marker in ("Could not locate", "Unknown layer", "Unknown activation", "Unknown object", "not found"):
        for line in reversed(lines):
            if marker in line:
                cause = line[line.index(marker):]
                return " ".join(cause.split(". ")[0].split())[:300]
    last = lines[-1] if lines else type(error).__name__
    return " ".join(last.split())[:300]


@dataclass
class _Link:
    """One layer call of the chain: the layer and the shapes (without batch) it maps."""
    layer: Any
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]


def _describe(layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


def _check_is_graph_model(model, keras) -> None:
    if isinstance(model, keras.Sequential) or type(model).__name__ == "Functional":
        return
    try:
        from keras.src.models.functional import Functional  # noqa: PLC0415

        if isinstance(model, Functional):
            return
    except ImportError:  # pragma: no cover - a Keras without that module path
        pass
    kind = "a subclassed keras.Model" if isinstance(model, keras.Model) else f"not a Keras model ({type(model)})"
    raise UnsupportedModelError(
        f"model {getattr(model, 'name', '?')!r} is {kind} ({type(model).__name__}): its call() is Python code the "
        "exporter cannot read. Rebuild the same layers as keras.Sequential([...]) or a functional "
        "keras.Model(inputs, outputs), copy the weights over (new.set_weights(model.get_weights())), and export that")


def _chain(model, keras) -> List[_Link]:
    """The layer calls from the model's input to its output, traced through the graph's nodes."""
    _check_is_graph_model(model, keras)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError(f"expected one input and one output, got {len(model.inputs)} and "
                                    f"{len(model.outputs)}")
    links: List[_Link] = []
    tensor, start = model.outputs[0], model.inputs[0]
    while tensor is not start:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            raise UnsupportedModelError("the model's graph cannot be traced from its output back to its input")
        layer = history.operation
        inputs = layer._inbound_nodes[history.node_index].input_tensors
        if len(inputs) != 1:
            raise UnsupportedModelError(f"layer {_describe(layer)} takes {len(inputs)} inputs: only single-chain "
                                        "models (no branches or skip connections) are supported")
        if isinstance(layer, keras.layers.InputLayer):
            raise UnsupportedModelError(f"the chain reaches {_describe(layer)}, which is not the model's input")
        if isinstance(layer, keras.Model):
            # A Sequential or functional model used as a layer: its own chain, in place (reversed,
            # as this list is built from the output back).
            links.extend(_chain(layer, keras)[::-1])
        else:
            links.append(_Link(layer, tuple(inputs[0].shape[1:]), tuple(tensor.shape[1:])))
        tensor = inputs[0]
    return links[::-1]


# Keras's activation names (and the names of the functions one may pass instead, as their
# configs serialize them) -> the format's name and parameters. A name absent here is refused.
KERAS_ACTIVATIONS: Dict[str, Tuple[str, Tuple[float, ...]]] = {
    "linear": ("linear", ()), "relu": ("relu", ()), "sigmoid": ("sigmoid", ()), "tanh": ("tanh", ()),
    "softmax": ("softmax", ()), "softmax_v2": ("softmax", ()), "gelu": ("gelu", ()), "silu": ("silu", ()),
    "swish": ("silu", ()), "elu": ("elu", (1.0,)), "selu": ("selu", ()), "softplus": ("softplus", ()),
    "softsign": ("softsign", ()), "leaky_relu": ("leaky_relu", (0.2,)), "relu6": ("relu6", ()),
    "hard_sigmoid": ("hard_sigmoid", ()), "hard_silu": ("hard_silu", ()), "hard_swish": ("hard_silu", ()),
    "exponential": ("exponential", ()), "exp": ("exponential", ()), "mish": ("mish", ()),
    "log_softmax": ("log_softmax", ()),
}
# Layers that are the identity at inference.
IDENTITY_LAYERS = ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout1D",
                   "SpatialDropout2D", "ActivityRegularization", "Identity")
# Layers on (height, width, channels) images, channels last: engine spatial layers (format version 3).
SPATIAL_LAYERS = ("Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
                  "ZeroPadding2D")
# Layers that only move values around (before the first Dense), and layers folded into Dense weights.
MOVING_LAYERS = ("Flatten", "Reshape", "Permute")
AFFINE_LAYERS = ("Rescaling", "Normalization", "BatchNormalization")
ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax")
# What the exporter does with each layer type it takes: the README's list is generated from this
# table (supported_markdown; tests/test_readme.py checks it).
LAYER_HANDLING: Dict[str, str] = {
    "InputLayer": "the model's input; any shape that a Flatten makes a vector, e.g. (784,), (28, 28), "
                  "(28, 28, 1), (1, 28, 28)",
    "Dense": "an engine dense layer, its `activation=` any name below (or the function itself, e.g. "
             "`tf.nn.softmax`); with LoRA, its effective kernel; `model.quantize('int8')`, its dequantized kernel",
    "LayerNormalization": "an engine layer_norm op (over the last axis; `rms_scaling=True` is refused)",
    "Activation": "merged into the layer before it when that one is linear, else an element-wise engine layer",
    "ReLU": "relu, relu6, leaky_relu or relu_general, by its `max_value`, `negative_slope`, `threshold`",
    "LeakyReLU": "leaky_relu with its `negative_slope`",
    "ELU": "elu with its `alpha`",
    "PReLU": "prelu with its learned per-feature slopes",
    "Softmax": "softmax over the last axis",
    "Rescaling": "folded into the next Dense (or the previous one, if still linear)",
    "Normalization": "folded likewise (mean and variance, adapted or given, `invert` too, any axis layout)",
    "BatchNormalization": "folded likewise (inference statistics, `epsilon`, `center`, `scale`); with no Dense "
                          "to fold into, an engine scale_shift op",
    "Flatten": "before the first Dense: a permutation of its rows (either data format); after: nothing",
    "Reshape": "likewise",
    "Permute": "likewise",
    **{name: "the identity at inference" for name in IDENTITY_LAYERS},
    "Conv2D": "an engine conv2d layer (channels last; any kernel size, strides, padding 'valid' or 'same', with "
              "or without bias, any activation but softmax; dilation and groups other than 1 are refused); a "
              "BatchNormalization after it, while it is linear, is folded into it",
    "MaxPooling2D, AveragePooling2D": "engine max_pool, avg_pool (any pool size and strides, 'valid' or 'same': "
                                      "the average over the window's real pixels, as Keras computes it)",
    "GlobalAveragePooling2D, GlobalMaxPooling2D": "engine global_avg_pool, global_max_pool",
    "ZeroPadding2D": "merged into the pads of the Conv2D that follows it (before anything else it is refused)",
    "Sequential or functional model used as a layer": "unwrapped into its own layers",
    "Any other layer on a vector (an `Activation` subclass such as Mish, ReLU6 or Swish, a `Lambda`)":
        "identified by its values: probed on inputs across every activation's range, it must equal one of the "
        "engine's parameter-free activations (or leaky_relu, elu with a fitted parameter), or a per-feature affine "
        "map, within 1e-6 relative everywhere; then handled as that, and the whole model is checked as always",
}
SUPPORTED_LAYERS = tuple(LAYER_HANDLING)


def supported_markdown() -> str:
    """The README's list of what exports, generated from the tables above."""
    lines = ["| Keras layer | becomes |", "| --- | --- |"]
    lines += [f"| {name if ' ' in name else f'`{name}`'} | {what} |" for name, what in LAYER_HANDLING.items()]
    by_target: Dict[str, List[str]] = {}
    for keras_name, (name, _) in KERAS_ACTIVATIONS.items():
        by_target.setdefault(name, []).append(f"`{keras_name}`")
    lines += ["", "Activations (Keras name → engine activation): "
              + "; ".join(f"{', '.join(names)} → {name}" for name, names in by_target.items()) + "."]
    return "\n".join(lines)


def _refuse(layer, setting: str, instead: str) -> UnsupportedModelError:
    """One line: the layer, its type, the setting that blocks it, and what would work."""
    return UnsupportedModelError(f"layer {_describe(layer)}: {setting} is not supported; {instead}")


def _keras_activation(layer, value: Any) -> Tuple[str, Tuple[float, ...]]:
    """A Dense's or Activation's `activation` (a name, or a function as its config serializes it)."""
    name = value
    if isinstance(value, dict):  # a function object, e.g. tf.nn.softmax: {"config": "softmax_v2", ...}
        name = value.get("config")
    if name is None:
        name = "linear"
    if not isinstance(name, str) or name not in KERAS_ACTIVATIONS:
        raise _refuse(layer, f"activation={name!r}",
                      f"supported activations: {', '.join(sorted(KERAS_ACTIVATIONS))}")
    return KERAS_ACTIVATIONS[name]


def _activation_layer(layer, keras, features: int) -> Tuple[str, Tuple[float, ...]]:
    """The format's activation for an activation layer on a vector of `features` values."""
    cfg = layer.get_config()
    kind = type(layer).__name__
    if kind == "Activation":
        return _keras_activation(layer, cfg.get("activation"))
    if kind == "ReLU":
        slope, top = float(cfg.get("negative_slope") or 0.0), cfg.get("max_value")
        threshold = float(cfg.get("threshold") or 0.0)
        top = np.inf if top is None else float(top)
        if slope == 0 and threshold == 0:
            return ("relu", ()) if top == np.inf else (("relu6", ()) if top == 6 else ("relu_general", (0, 0, top)))
        if threshold == 0 and top == np.inf:
            return "leaky_relu", (slope,)
        return "relu_general", (slope, threshold, top)
    if kind == "LeakyReLU":
        return "leaky_relu", (float(cfg.get("negative_slope", cfg.get("alpha", 0.3))),)
    if kind == "ELU":
        return "elu", (float(cfg.get("alpha", 1.0)),)
    if kind == "Softmax":
        if cfg.get("axis", -1) not in (-1, 1):
            raise _refuse(layer, f"axis={cfg.get('axis')!r}", "a Softmax over the last axis (axis=-1) is")
        return "softmax", ()
    # PReLU: one learned slope per feature.
    alpha = _numpy(keras, layer.alpha).astype(np.float64).reshape(-1)
    if alpha.size == 1:
        alpha = np.full(features, alpha[0])
    if alpha.size != features:
        raise _refuse(layer, f"shared_axes={cfg.get('shared_axes')!r}", "a PReLU with one slope per feature is")
    return "prelu", tuple(alpha)


# What identify_elementwise feeds a layer: both signs of every scale an activation's shape shows at
# (the kinks at 0, 3 and 6, the saturations past 20), and zero; every feature sees every value.
_PROBE_VALUES = np.unique(np.concatenate([
    np.linspace(-25.0, 25.0, 201), [0.0, 1e-4, -1e-4, 1e-2, -1e-2, 2.9, 3.1, 5.9, 6.1, 40.0, -40.0]]))
# Parameter-free engine activations a layer's values may match (softmax over the feature vector too).
_PROBED = ("relu", "sigmoid", "tanh", "softmax", "gelu", "gelu_tanh", "silu", "selu", "softplus", "softsign",
           "relu6", "hard_sigmoid", "hard_silu", "exponential", "mish", "log_softmax")


def identify_elementwise(layer, keras, in_shape, out_shape):
    """A layer whose code the exporter cannot read, identified by what it computes: ("activation",
    (name, parameters)) or ("affine", (scale, offset)) when it equals one within 1e-6 relative on
    every probe, else None. Only layers from a feature vector to one of the same width qualify; the
    whole model is still checked against Keras afterwards."""
    from ..reference import ACTIVATION_FUNCTIONS

    if len(in_shape) != 1 or tuple(out_shape) != tuple(in_shape):
        return None
    features = int(in_shape[0])
    # Row r, feature j holds value (r + j) mod len: every feature sees every value, and rows mix them
    # (a layer that mixes features, or a softmax, shows it).
    n = len(_PROBE_VALUES)
    x = _PROBE_VALUES[(np.arange(n)[:, None] + np.arange(features)[None, :]) % n].astype(np.float32)
    try:
        y = np.asarray(keras.ops.convert_to_numpy(layer(x)), np.float64)
    except Exception:  # a layer that cannot run on its own is not element-wise in the sense needed here
        return None
    if y.shape != x.shape or not np.all(np.isfinite(y)):
        return None
    z = x.astype(np.float64)

    def matches(want: np.ndarray) -> bool:
        with np.errstate(all="ignore"):
            return bool(np.all(np.abs(y - want) <= 1e-6 * np.maximum(np.abs(want), 1e-3)))

    for name in _PROBED:
        with np.errstate(all="ignore"):
            if matches(ACTIVATION_FUNCTIONS[name](z)):
                return "activation", (name, ())
    # One fitted parameter: leaky_relu's slope from x = -1, elu's alpha from x = -25 (where it is -alpha).
    at = {v: int(np.flatnonzero(_PROBE_VALUES == v)[0]) for v in (-1.0, -25.0)}
    slope = -float(y[at[-1.0], 0])
    if np.isfinite(slope) and matches(ACTIVATION_FUNCTIONS["leaky_relu"](z, slope)):
        return "activation", ("leaky_relu", (slope,))
    alpha = -float(y[at[-25.0], 0]) / (1.0 - np.exp(-25.0))
    if np.isfinite(alpha) and alpha > 0 and matches(ACTIVATION_FUNCTIONS["elu"](z, alpha)):
        return "activation", ("elu", (alpha,))
    # Per-feature affine: s and o from the values at 0 and 1 of each feature, then held everywhere.
    rows = (np.flatnonzero(_PROBE_VALUES == 0.0)[0] - np.arange(features)) % n
    at0 = y[rows, np.arange(features)]
    at1 = y[(rows + int(np.flatnonzero(_PROBE_VALUES == 0.25)[0]) - int(np.flatnonzero(_PROBE_VALUES == 0.0)[0])) % n,
            np.arange(features)]
    scale, offset = (at1 - at0) / 0.25, at0
    if matches(z * scale + offset):
        return "affine", (scale, offset)
    return None


def _per_channel(scale: np.ndarray, offset: np.ndarray):
    """(s, o) per channel when an affine map on (height, width, channels) images is the same at
    every pixel (a BatchNormalization over the channels), else None."""
    scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
    if scale.ndim != 3:
        return None
    s, o = scale[0, 0], offset[0, 0]
    if not (np.all(scale == s) and np.all(offset == o)):
        return None
    return s, o


def _numpy(keras, tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def _per_element(values: np.ndarray, shape: Tuple[int, ...], batch_axis: bool = True) -> np.ndarray:
    """Values stored in Keras's broadcast shape (with a leading batch axis of 1 when `batch_axis`),
    as one value per element of a tensor of `shape` (no batch)."""
    values = np.asarray(values, np.float64)
    if batch_axis and values.ndim == len(shape) + 1:
        values = values.reshape(values.shape[1:])
    return np.broadcast_to(values, shape)


def _broadcast_axis(layer, values: np.ndarray, shape: Tuple[int, ...], axis) -> np.ndarray:
    """Per-feature `values` of a layer normalizing over `axis`, broadcast to a tensor `shape` (no batch)."""
    axes = [axis] if isinstance(axis, int) else list(axis)
    axes = sorted(a % (len(shape) + 1) - 1 for a in axes)  # Keras counts the batch axis
    if any(a < 0 for a in axes):
        raise _refuse(layer, f"axis={axis!r}", "normalizing over feature axes (not the batch) is")
    keep = [shape[a] if a in axes else 1 for a in range(len(shape))]
    return np.broadcast_to(np.asarray(values, np.float64).reshape(keep), shape)


def _affine_of(layer, keras, shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, offset) of an affine layer at inference, each of the tensor's `shape`."""
    kind = type(layer).__name__
    cfg = layer.get_config()
    if kind == "Rescaling":
        return (_per_element(_numpy(keras, layer.scale), shape, batch_axis=False),
                _per_element(_numpy(keras, layer.offset), shape, batch_axis=False))
    if kind == "Normalization":
        mean = _per_element(_numpy(keras, layer.mean), shape)
        spread = np.maximum(np.sqrt(_per_element(_numpy(keras, layer.variance), shape)), keras.config.epsilon())
        if cfg.get("invert"):
            return spread, mean
        return 1.0 / spread, -mean / spread
    # BatchNormalization, with its moving (inference) statistics.
    axis = cfg.get("axis", -1)
    gamma = _numpy(keras, layer.gamma) if layer.scale else 1.0
    beta = _numpy(keras, layer.beta) if layer.center else 0.0
    mean, variance = _numpy(keras, layer.moving_mean), _numpy(keras, layer.moving_variance)
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(variance, np.float64) + float(layer.epsilon))
    offset = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return _broadcast_axis(layer, scale, shape, axis), _broadcast_axis(layer, offset, shape, axis)


@dataclass
class DenseChain:
    """A Keras model as engine layers, with what the exporter needs to prove them."""
    layers: List[Any]
    rescales: bool  # a Rescaling was folded in: uint8 pixels need no further input scale
    links: List[Any]
    ends_at: List[int]  # per engine layer: the chain position whose output it reproduces
    descriptions: List[str]


class _ChainBuilder:
    """Walks the traced chain once, folding what folds and emitting engine layers.

    An affine map (Rescaling, Normalization, BatchNormalization) is folded, in float64:
    - into the Dense before it, when that Dense has no activation yet: W s, b s + o;
    - otherwise it waits ("pending", per feature of the current tensor, moved along by Flatten,
      Reshape and Permute) and folds into the next Dense's input rows: s W, b + o W;
    - and when something else needs the values first (an activation on a Dense that already has
      one, a LayerNormalization, the model's end), it becomes a scale_shift engine layer."""

    def __init__(self, keras, links: List[_Link]):
        self.keras, self.links = keras, links
        shape = links[0].in_shape
        # index[p]: the engine's (row-major) input position of Keras's position p, before the first Dense.
        self.index = np.arange(int(np.prod(shape))).reshape(shape)
        self.scale, self.offset = np.ones(shape), np.zeros(shape)
        self.pending_from: List[str] = []
        self.parts: List[LayerDraft] = []
        self.rescales = False
        # A ZeroPadding2D waiting for its Conv2D: ((top, bottom, left, right), the layer).
        self.zero_pads: Optional[Tuple[Tuple[int, int, int, int], Any]] = None

    def _has_pending(self) -> bool:
        return bool(self.pending_from)

    def _move(self, transform) -> None:
        self.index, self.scale, self.offset = transform(self.index), transform(self.scale), transform(self.offset)

    def _flush(self, pos: int) -> None:
        """Emit the pending affine map as a scale_shift layer."""
        if not self._has_pending():
            return
        if self.scale.ndim != 1 and (self.parts or not self._index_is_identity()):
            self.scale, self.offset = self.scale.reshape(-1), self.offset.reshape(-1)
        if self.scale.ndim != 1:
            if not self._index_is_identity():
                raise UnsupportedModelError(f"{', '.join(self.pending_from)} scale multi-dimensional values that no "
                                            "Dense layer follows; add a Flatten before them")
            self.scale, self.offset = self.scale.reshape(-1), self.offset.reshape(-1)
        self.parts.append(LayerDraft("scale_shift", [self.scale.copy(), self.offset.copy()], ends_at=pos - 1,
                                parts=list(self.pending_from)))
        self._reset_pending(self.scale.shape)

    def _reset_pending(self, shape) -> None:
        self.scale, self.offset, self.pending_from = np.ones(shape), np.zeros(shape), []

    def add(self, pos: int, link: _Link) -> None:
        keras, layer, kind = self.keras, link.layer, type(link.layer).__name__
        if kind in IDENTITY_LAYERS or (kind == "Activation" and _keras_activation(layer, layer.get_config().get(
                "activation"))[0] == "linear"):
            return
        if kind in MOVING_LAYERS:
            return self._moving(link, kind)
        if kind in SPATIAL_LAYERS:
            return self._spatial(pos, link, kind)
        if self.zero_pads is not None:
            raise _refuse(self.zero_pads[1], "a ZeroPadding2D before a layer other than Conv2D",
                          "ZeroPadding2D directly before a Conv2D (merged into its pads) is")
        if kind in AFFINE_LAYERS:
            return self._affine(pos, link, kind)
        if isinstance(layer, keras.layers.Dense):
            return self._dense(pos, link)
        if kind in ACTIVATION_LAYERS:
            return self._activation(pos, link)
        if kind == "LayerNormalization":
            return self._layer_norm(pos, link)
        found = identify_elementwise(layer, keras, link.in_shape, link.out_shape)
        if found is None:
            raise UnsupportedModelError(f"layer {_describe(layer)} is not supported (and its values match no "
                                        f"engine activation or per-feature affine map); supported: "
                                        f"{', '.join(SUPPORTED_LAYERS)}")
        if found[0] == "affine":
            return self._affine(pos, link, f"{kind}: per-feature affine by its values", found[1])
        return self._activation(pos, link, found[1], f"{kind}: {found[1][0]} by its values")

    def _moving(self, link: _Link, kind: str) -> None:
        layer = link.layer
        if self.parts:
            if len(link.out_shape) != 1:
                raise _refuse(layer, f"reshaping a layer's output to {link.out_shape}",
                              "after the first engine layer, only a Flatten (to the NHWC row) is")
            if kind == "Flatten" and len(link.in_shape) > 1 and \
                    layer.get_config().get("data_format") == "channels_first":
                # Keras would move the last axis first: a permutation of an image the engine keeps NHWC.
                raise _refuse(layer, "data_format='channels_first' after a Conv2D or pooling layer",
                              "Flatten() with the default channels_last, the order the image is in, is")
            # The engine's rows are already the flat NHWC values; a pending map follows them.
            self.scale, self.offset = self.scale.reshape(-1), self.offset.reshape(-1)
            return
        if kind == "Permute":
            self._move(lambda a: np.transpose(a, [d - 1 for d in layer.dims]))
        elif kind == "Flatten":
            # Keras moves the channels axis last before flattening channels_first data.
            channels_first = layer.get_config().get("data_format") == "channels_first" and self.index.ndim >= 2
            self._move(lambda a: (np.moveaxis(a, 0, -1) if channels_first else a).reshape(-1))
        else:
            self._move(lambda a: a.reshape(link.out_shape))

    def _affine(self, pos: int, link: _Link, kind: str, known: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> None:
        layer = link.layer
        scale, offset = known if known is not None else _affine_of(layer, self.keras, tuple(link.in_shape))
        self.rescales |= kind == "Rescaling" and not self.parts
        last = self.parts[-1] if self.parts else None
        if last is not None and last.op == "dense" and last.activation == "linear" and not self._has_pending():
            last.values = list(fold_after(*last.values, scale, offset))
            last.ends_at = pos
            last.parts.append(f"{layer.name!r} ({kind}, folded)")
            return
        per_channel = _per_channel(scale, offset)
        if last is not None and last.op == "conv2d" and last.activation == "linear" and not self._has_pending() \
                and per_channel is not None:
            s, o = per_channel  # a conv's kernel (kh, kw, C, F): each filter's column scaled
            last.values = [last.values[0] * s, last.values[1] * s + o]
            last.ends_at = pos
            last.parts.append(f"{layer.name!r} ({kind}, folded)")
            return
        # The pending map always has the current tensor's shape (moved along, reset after each layer).
        self.scale, self.offset = self.scale * scale, self.offset * scale + offset
        self.pending_from.append(f"{layer.name!r} ({kind})")

    def _dense(self, pos: int, link: _Link) -> None:
        layer, keras = link.layer, self.keras
        if len(link.in_shape) != 1:
            raise _refuse(layer, f"a rank-{len(link.in_shape) + 1} input {('batch',) + tuple(link.in_shape)}",
                          "add a Flatten before it")
        kernel = dense_kernel(layer, keras)
        bias = _numpy(keras, layer.bias).astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[1])
        described = [f"{layer.name!r} (Dense {kernel.shape[0]}->{kernel.shape[1]})"]
        if self._has_pending():
            kernel, bias = fold_before(kernel, bias, self.scale, self.offset)
            described = [f"{', '.join(self.pending_from)} folded into"] + described
        if not self.parts:
            kernel = rows_in_input_order(kernel, self.index)
        activation, parameters = _keras_activation(layer, layer.get_config().get("activation"))
        self.parts.append(LayerDraft("dense", [kernel, bias], activation, parameters, ends_at=pos, parts=described))
        self._reset_pending(kernel.shape[1])

    def _features(self, link: _Link, images: bool = False) -> int:
        """The width of the vector a layer works on; `images`: an element-wise layer may also work on
        an image that a spatial engine layer made (the engine's row is its flat NHWC values)."""
        if len(link.in_shape) != 1:
            if images and self.parts and self.parts[-1].op in SPATIAL_OPS:
                return int(np.prod(link.in_shape))
            raise _refuse(link.layer, f"a rank-{len(link.in_shape) + 1} input", "add a Flatten before it")
        return int(link.in_shape[0])

    def _index_is_identity(self) -> bool:
        """The values are still in the engine's input order (no Permute or Transpose moved them)."""
        return bool(np.array_equal(self.index.reshape(-1), np.arange(self.index.size)))

    def _spatial(self, pos: int, link: _Link, kind: str) -> None:
        layer, keras = link.layer, self.keras
        cfg = layer.get_config()
        if cfg.get("data_format", "channels_last") == "channels_first":
            raise _refuse(layer, "data_format='channels_first'", "channels_last images (Keras's default) are")
        if len(link.in_shape) != 3:
            raise _refuse(layer, f"a rank-{len(link.in_shape) + 1} input {('batch',) + tuple(link.in_shape)}",
                          "(batch, height, width, channels) images are")
        if not self.parts and not self._index_is_identity():
            raise _refuse(layer, "an input whose values a Permute moved", "images in the model input's own order are")
        if kind == "ZeroPadding2D":
            (top, bottom), (left, right) = cfg["padding"]
            before = self.zero_pads[0] if self.zero_pads else (0, 0, 0, 0)
            self.zero_pads = (tuple(a + b for a, b in zip(before, (top, bottom, left, right))), layer)
            return
        pads, padded_by = (self.zero_pads[0], self.zero_pads[1]) if self.zero_pads else ((0, 0, 0, 0), None)
        self.zero_pads = None
        if padded_by is not None and kind != "Conv2D":
            raise _refuse(padded_by, f"a ZeroPadding2D before {_describe(layer)}",
                          "ZeroPadding2D directly before a Conv2D (merged into its pads) is")
        self._flush(pos)
        image = tuple(int(v) for v in link.in_shape)
        if padded_by is not None:  # the conv reads the image from before the padding, with more pads
            image = (image[0] - pads[0] - pads[1], image[1] - pads[2] - pads[3], image[2])
        described = ([f"{padded_by.name!r} (ZeroPadding2D, merged)"] if padded_by is not None else []) + \
            [f"{layer.name!r} ({kind})"]
        if kind == "Conv2D":
            if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
                raise _refuse(layer, f"dilation_rate={tuple(cfg['dilation_rate'])}", "dilation_rate=(1, 1) is")
            if cfg.get("groups", 1) != 1:
                raise _refuse(layer, f"groups={cfg['groups']}", "groups=1 is")
            kernel = _numpy(keras, layer.kernel).astype(np.float64)
            bias = _numpy(keras, layer.bias).astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[3])
            strides = tuple(cfg["strides"])
            same = keras_pads(*image[:2], kernel.shape[:2], strides, cfg["padding"])
            activation, parameters = _keras_activation(layer, cfg.get("activation"))
            if activation in ("softmax", "log_softmax"):
                raise _refuse(layer, f"activation='{activation}' on an image",
                              "element-wise activations are (softmax after a Flatten or a global pool)")
            total = tuple(a + b for a, b in zip(pads, same))
            window = (kernel.shape[0], kernel.shape[0], kernel.shape[1], kernel.shape[1])
            if padded_by is not None and any(p >= k for p, k in zip(total, window)):
                raise _refuse(padded_by, f"padding {list(total)} (top, bottom, left, right) around the "
                              f"{kernel.shape[0]}x{kernel.shape[1]} window of {_describe(layer)}",
                              "pads smaller than the window are (a window of padding alone has no value)")
            draft = LayerDraft("conv2d", [kernel, bias], activation, parameters, ends_at=pos, parts=described,
                               geometry={"input_shape": image, "strides": strides, "pads": total})
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            window = tuple(cfg["pool_size"])
            strides = tuple(cfg.get("strides") or window)
            draft = LayerDraft("max_pool" if kind == "MaxPooling2D" else "avg_pool", [], ends_at=pos,
                               parts=described,
                               geometry={"input_shape": image, "window": window, "strides": strides,
                                         "pads": keras_pads(*image[:2], window, strides, cfg["padding"])})
        else:
            draft = LayerDraft("global_avg_pool" if kind == "GlobalAveragePooling2D" else "global_max_pool", [],
                               ends_at=pos, parts=described, geometry={"input_shape": image})
        self.parts.append(draft)
        self._reset_pending(tuple(link.out_shape))

    def _activation(self, pos: int, link: _Link, known: Optional[Tuple[str, Tuple[float, ...]]] = None,
                    what: str = "") -> None:
        layer = link.layer
        features = self._features(link, images=True)
        activation, parameters = known or _activation_layer(layer, self.keras, features)
        if len(link.in_shape) != 1 and activation in ("softmax", "log_softmax", "prelu"):
            raise _refuse(layer, f"{activation} on an image", "element-wise activations on images are (softmax "
                          "after a Flatten or a global pool)")
        self._flush(pos)
        last = self.parts[-1] if self.parts else None
        if last is None or last.activation != "linear":
            # Nothing to merge into: an identity scale_shift carries the activation.
            last = LayerDraft("scale_shift", [np.ones(features), np.zeros(features)], ends_at=pos)
            self.parts.append(last)
        last.activation, last.parameters, last.ends_at = activation, parameters, pos
        last.parts.append(f"{layer.name!r} ({what or f'{type(layer).__name__} {activation}'})")

    def _layer_norm(self, pos: int, link: _Link) -> None:
        layer, keras = link.layer, self.keras
        cfg = layer.get_config()
        features = self._features(link)
        if cfg.get("rms_scaling"):
            raise _refuse(layer, "rms_scaling=True", "LayerNormalization with rms_scaling=False is")
        axis = cfg.get("axis", -1)
        if axis not in (-1, 1, [-1], [1], (-1,), (1,)):
            raise _refuse(layer, f"axis={axis!r}", "normalizing over the last axis (axis=-1) is")
        self._flush(pos)
        gamma = _numpy(keras, layer.gamma).astype(np.float64) if cfg.get("scale", True) else np.ones(features)
        beta = _numpy(keras, layer.beta).astype(np.float64) if cfg.get("center", True) else np.zeros(features)
        self.parts.append(LayerDraft("layer_norm", [gamma, beta], epsilon=float(layer.epsilon), ends_at=pos,
                                parts=[f"{layer.name!r} (LayerNormalization)"]))

    def finish(self) -> DenseChain:
        if self.zero_pads is not None:
            raise _refuse(self.zero_pads[1], "a ZeroPadding2D at the end", "ZeroPadding2D before a Conv2D is")
        if not any(part.op in ("dense", "conv2d") for part in self.parts):
            raise UnsupportedModelError("the model has no Dense or Conv2D layer")
        self._flush(len(self.links))
        # Layers after the last engine layer that change nothing (Dropout, Flatten) end where the model does.
        self.parts[-1].ends_at = len(self.links) - 1
        return DenseChain([p.layer() for p in self.parts], self.rescales, [link.layer for link in self.links],
                          [p.ends_at for p in self.parts], [" + ".join(p.parts) for p in self.parts])


def keras_dense_chain(model) -> DenseChain:
    """The model as engine layers. Raises UnsupportedModelError naming the first layer it cannot map."""
    keras = _import_keras()
    if not model.built:
        raise UnsupportedModelError("the model is not built: give it an Input or call it once first")
    links = _chain(model, keras)
    if not links:
        raise UnsupportedModelError("the model has no Dense layer")
    builder = _ChainBuilder(keras, links)
    for pos, link in enumerate(links):
        builder.add(pos, link)
    return builder.finish()


def dense_kernel(layer, keras) -> np.ndarray:
    """The float kernel a Dense layer's matmul applies, in float64.

    A layer quantized by ``model.quantize("int8")`` stores int8 values q and a scale s per output
    column and multiplies by q / s (Keras also quantizes the layer's input per row, which the
    float engine does not: see export_keras): that quotient is the kernel exported. Its int8
    image under the engine's own int8 quantization (symmetric per column, amax -> 127) is q again,
    so ``precision="int8"`` runs Keras's weights unchanged."""
    mode = getattr(layer, "quantization_mode", None)
    if not mode:
        # `kernel` is the effective kernel: with LoRA enabled, kernel + alpha/rank * A @ B.
        return _numpy(keras, layer.kernel).astype(np.float64)
    if mode != "int8":
        raise UnsupportedModelError(
            f"layer {_describe(layer)} is quantized ({mode}, by model.quantize): only int8 quantized Dense layers "
            "are imported. Export the float model from before quantization, or quantize it with "
            "model.quantize('int8')")
    kernel = _numpy(keras, layer._kernel).astype(np.float64) / _numpy(keras, layer.kernel_scale).astype(np.float64)
    if layer.lora_enabled:
        a, b = (_numpy(keras, v).astype(np.float64) for v in (layer.lora_kernel_a, layer.lora_kernel_b))
        kernel = kernel + (layer.lora_alpha / layer.lora_rank) * (a @ b)
    return kernel


def _is_quantized(model) -> bool:
    return any(getattr(layer, "quantization_mode", None) for layer in model.layers)


def _compute_dtypes(model) -> List[str]:
    return sorted({str(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32"))
                   for layer in model.layers})


def _float32_twin(model, keras):
    """The same model computing in float32 throughout, with every int8 kernel replaced by its float
    kernel (dense_kernel): what the file stores and the float32 engine reproduces at a float32
    tolerance. A float16 forward pass, or an int8 one (which also quantizes each Dense input per
    row), is not a reference the engine's float32 arithmetic can be held to."""
    def clone(layer):
        config = {**layer.get_config(), "dtype": "float32"}
        config.pop("quantization_config", None)
        if getattr(layer, "quantization_mode", None):
            config.pop("lora_rank", None)  # folded into the kernel
            config.pop("lora_alpha", None)
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, twin.layers):
        if getattr(source, "quantization_mode", None):
            weights = [dense_kernel(source, keras).astype(np.float32)]
            if source.use_bias:
                weights.append(_numpy(keras, source.bias))
            target.set_weights(weights)
        elif source.weights:
            target.set_weights(source.get_weights())
    return twin


def _stage_outputs(keras, chain: DenseChain, x: np.ndarray) -> List[np.ndarray]:
    """Keras's own outputs after each chain position that an engine layer reproduces."""
    outputs, wanted = [], set(chain.ends_at)
    y = x
    for pos, layer in enumerate(chain.links):
        # A Keras op called on a tensor (keras.activations.relu(x), keras.ops.tanh(x)) is an
        # Operation in the graph, not a Layer: it takes no `training`.
        y = layer(y, training=False) if isinstance(layer, keras.layers.Layer) else layer(y)
        if pos in wanted:
            outputs.append(_numpy(keras, y).astype(np.float64).reshape(len(x), -1))
    return outputs


# Keras's regression losses, by their names and class names in lower case without underscores:
# a model trained on one outputs values, not class scores.
_REGRESSION_LOSSES = {"mse", "mae", "mape", "msle", "meansquarederror", "meanabsoluteerror",
                      "meanabsolutepercentageerror", "meansquaredlogarithmicerror", "huber", "huberloss",
                      "logcosh", "cosinesimilarity"}


def _compile_config(model, model_or_path) -> Dict[str, Any]:
    """The model's compile() arguments as Keras serializes them: from the model when it is
    compiled, else from the .keras file's config.json (load_keras_model reads files with
    compile=False, so the loaded model knows none). {} when there are none."""
    config = model.get_compile_config() if hasattr(model, "get_compile_config") else None
    if config:
        return config
    if isinstance(model_or_path, (str, os.PathLike)) and zipfile.is_zipfile(model_or_path):
        try:
            with zipfile.ZipFile(model_or_path) as archive:
                return json.loads(archive.read("config.json")).get("compile_config") or {}
        except (KeyError, ValueError, OSError):  # no config.json, or not JSON: nothing said
            return {}
    return {}


def _output_kind_of_loss(compile_config: Dict[str, Any]) -> Optional[str]:
    """What the training loss says the outputs are: logits for a loss with from_logits=True, values
    for a regression loss, None when it says nothing (a crossentropy on probabilities, no loss,
    several losses)."""
    loss = compile_config.get("loss")
    if isinstance(loss, dict) and "class_name" in loss:
        if (loss.get("config") or {}).get("from_logits") is True:
            return "logits"
        loss = loss.get("class_name")
    if isinstance(loss, str) and loss.lower().replace("_", "") in _REGRESSION_LOSSES:
        return "values"
    return None


def export_keras(
    model_or_path: Any,
    out_path: Union[str, "os.PathLike[str]"],
    *,
    input_scale: Optional[float] = None,
    reference_images: Optional[np.ndarray] = None,
    calibration_images: Optional[np.ndarray] = None,
    source: Optional[str] = None,
    allow_h5: bool = False,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    reject_class: Optional[int] = None,
    output_kind: Optional[str] = None,
    input_mean: Any = None,
    input_std: Any = None,
) -> Path:
    """Write a Keras model (object or ``.keras`` path) to ``out_path`` in the ``.mnw`` format.

    ``input_scale`` is what a raw uint8 pixel must be multiplied by to become this model's input:
    1/255 for a model trained on ``x / 255`` (the default), 1 for a model trained on raw 0..255
    values or with its own Rescaling layer (the default when it has one). A model that no image
    feeds and that is not 784 wide, given no scale, mean, std or uint8 reference images, takes
    tabular features instead (``input_kind``: float rows exactly as given, uint8 refused; its
    reference rows are the caller's floats, or standard normal rows). ``reference_images``
    (uint8 pixels or floats in the model's input domain) are stored with Keras's outputs for them,
    and every load re-checks them; by default 16 synthetic MNIST-like images are used. Float
    reference images outside 0..255*input_scale give an InputRangeWarning: the scale is likely wrong.
    ``calibration_images`` (same forms; a few hundred training images is plenty) choose the order
    of hidden ReLU neurons so that the int8 and bf16 engines skip more zero units (unit_order); by
    default the reference images are used. The order changes no output.

    The file is built in memory and loaded with full verification before anything is written; if
    the engine does not reproduce Keras, ExportMismatchError names the first layer that diverges
    and ``out_path`` is left untouched. A mixed-precision model is exported from its float32
    variables and checked against a float32 copy of itself (``reference_precision`` in the file).
    A model quantized by ``model.quantize("int8")`` is exported as its dequantized float kernels
    (``kernel / kernel_scale``) and checked against the float model with those kernels; how far
    Keras's own int8 outputs are from that is stored as ``keras_quantized_max_abs_diff``. Loading
    the file with ``precision="int8"`` runs Keras's int8 weights unchanged.
    ``reject_class`` names the output that means "none of these" (for a digit reader: not a
    digit), stored as ``reject_class`` (docs/FORMAT.md): ``mnist-engine predict``, the server's
    page and ``Engine.reject_class`` read it as "not sure", never as an answer.
    ``output_kind`` states what the model outputs ("probabilities", "log_probabilities", "logits" or
    "values"); by default it is what the compiled loss says (``from_logits=True``: logits; a
    regression loss: values), else what the last activation gives (softmax: probabilities), else
    what Keras's outputs on the reference rows are. ``Engine.predict_proba``, ``mnist-engine
    predict`` and the server's page turn logits and log-probabilities into probabilities by it.
    ``input_mean`` and ``input_std`` (one value, or one per channel) are the Normalize(mean, std)
    the model was trained behind (after x / 255): uint8 pixels then reach it as ``(p * input_scale -
    mean) / std``, exactly as the transform computes them in float32. Float ``reference_images``
    that are plainly standardized say the same without them (the shortest mean and std that give
    back every value).
    """
    keras = _import_keras()
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_keras_model(model_or_path, allow_h5=allow_h5)
        source = source if source is not None else Path(model_or_path).name
    compile_config = _compile_config(model, model_or_path)
    _check_is_graph_model(model, keras)  # before cloning: a subclassed model gets our message, not Keras's
    precisions = _compute_dtypes(model)
    quantized = _is_quantized(model)
    checked = model if precisions == ["float32"] and not quantized else _float32_twin(model, keras)
    chain = keras_dense_chain(checked)
    inputs = graph_inputs(chain.layers, input_scale, chain.rescales, input_mean, input_std, reference_images,
                          calibration_images)
    input_scale, reference, calibration = inputs.input_scale, inputs.reference, inputs.calibration
    x = reference.values.reshape((len(reference.values),) + tuple(checked.inputs[0].shape[1:]))
    ref_out = np.asarray(checked.predict(x, verbose=0, batch_size=len(x))).reshape(len(x), -1)
    meta = base_metadata("mnist_engine.export_keras", source if source is not None else model.name,
                         reject_class)
    meta.update({"keras_version": keras.__version__, "backend": keras.backend.backend(), "model_name": model.name,
                 "reference_precision": "float32"})
    if precisions != ["float32"]:
        meta["model_precision"] = "+".join(precisions)
    if quantized:
        # How far the quantized Keras model itself is from what the file reproduces, on the same rows.
        keras_out = np.asarray(model.predict(x, verbose=0, batch_size=len(x))).reshape(len(x), -1)
        meta["keras_quantization"] = "int8, weights exported as kernel / kernel_scale"
        meta["keras_quantized_max_abs_diff"] = f"{float(np.max(np.abs(keras_out - ref_out))):.3g}"
    if inputs.normalization:
        meta.update(inputs.normalization.metadata())
    meta["input_kind"] = inputs.kind
    stages = [Stage(d, y) for d, y in zip(chain.descriptions, _stage_outputs(keras, chain, x))]
    return prove_and_write(out_path, chain.layers, framework="Keras", stages=stages, input_scale=input_scale,
                           metadata=meta, reference=reference, reference_outputs=ref_out, atol=atol, rtol=rtol,
                           calibration=calibration, output_kind=output_kind,
                           output_hint=_output_kind_of_loss(compile_config))
