"""Export a trained Keras model to a ``.mnw`` file. Keras and TensorFlow are imported only when an
export runs, never by ``import mnist_engine``.

The model is traced through its graph (the nodes of each layer call), so a chain is recognised
however it was built, shared stateless layers included. Layers that only move values around
before the first Dense (Flatten in either data format, Reshape, Permute) become a permutation of
the first Dense's rows; a Rescaling there is folded into its weights; Dropout is the identity;
Activation/ReLU/Softmax merge into the Dense before them. The file is then proven against Keras
before it is written (see _export_common.prove_and_write)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from . import _core
from ._export_common import ExportMismatchError, Stage, base_metadata, prove_and_write, reference_inputs_for
from .model_file import DEFAULT_ATOL, DEFAULT_RTOL, DenseLayer

__all__ = ["ExportMismatchError", "UnsupportedModelError", "export_keras", "keras_dense_chain", "load_keras_model"]

# Earlier Keras 3 releases have known safe_mode bypasses (arbitrary code on load).
MIN_KERAS = (3, 13, 2)
SUPPORTED_ACTIVATIONS = _core.ACTIVATIONS
SUPPORTED_LAYERS = ("InputLayer, Flatten, Reshape, Permute (before the first Dense), Dense, Activation, ReLU, "
                    "Softmax, Dropout, Rescaling (before the first Dense)")


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
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as e:  # Keras 2 files fail deep inside Keras 3's legacy loader
            raise ValueError(f"{path} could not be read by Keras {keras.__version__} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}). A Keras 2 .h5 file converts with the "
                             "Keras 2 it was made with: load it there and model.save('model.keras'), or rebuild "
                             "the model in Keras 3 and model.load_weights('model.h5')") from None
    if path.suffix.lower() != ".keras":
        raise ValueError(f"expected a .keras model file, got {path}")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


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
        links.append(_Link(layer, tuple(inputs[0].shape[1:]), tuple(tensor.shape[1:])))
        tensor = inputs[0]
    return links[::-1]


def _activation_of(layer, config_key: str = "activation") -> str:
    name = layer.get_config().get(config_key)
    if not isinstance(name, str) or name not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(f"layer {_describe(layer)} has activation {name!r}; "
                                    f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}")
    return name


def _merge_activation(layer, keras) -> str:
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        for key in ("max_value", "negative_slope", "threshold"):
            if cfg.get(key):  # None or 0 for a plain relu
                raise UnsupportedModelError(f"layer {_describe(layer)} sets {key}={cfg.get(key)!r}; only a plain relu "
                                            "(max_value=None, negative_slope=0, threshold=0) is supported")
        return "relu"
    if isinstance(layer, keras.layers.Softmax):
        if layer.get_config().get("axis", -1) not in (-1, 1):
            raise UnsupportedModelError(f"layer {_describe(layer)} is not over the last axis")
        return "softmax"
    return _activation_of(layer)


def _scalar(value: Any, what: str, layer) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise UnsupportedModelError(f"layer {_describe(layer)} has a per-channel {what}; only scalars fold")
    return float(arr.reshape(()))


def _numpy(keras, tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor))


@dataclass
class _Dense:
    kernel: np.ndarray
    bias: np.ndarray
    activation: str
    ends_at: int  # index in the chain of the last layer merged into this one
    parts: List[str] = field(default_factory=list)


@dataclass
class DenseChain:
    """A Keras model as engine layers, with what the exporter needs to prove them."""
    layers: List[DenseLayer]
    rescales: bool  # a Rescaling was folded in: uint8 pixels need no further input scale
    links: List[Any]
    ends_at: List[int]  # per engine layer: the chain position whose output it reproduces
    descriptions: List[str]


def keras_dense_chain(model) -> DenseChain:
    """The model as dense layers. Raises UnsupportedModelError naming the first layer it cannot map."""
    keras = _import_keras()
    if not model.built:
        raise UnsupportedModelError("the model is not built: give it an Input or call it once first")
    links = _chain(model, keras)
    if not links:
        raise UnsupportedModelError("the model has no Dense layer")
    scale, offset, rescales = 1.0, 0.0, False
    # Where each input value sits as the values move through Flatten/Reshape/Permute before the
    # first Dense: index[p] is the engine's (row-major) input position of Keras's position p.
    index = np.arange(int(np.prod(links[0].in_shape))).reshape(links[0].in_shape)
    dense: List[_Dense] = []
    for pos, link in enumerate(links):
        layer, kind = link.layer, type(link.layer).__name__
        if isinstance(layer, keras.layers.Dropout):
            continue  # the identity at inference
        if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute)):
            if dense:
                if len(link.out_shape) != 1:
                    raise UnsupportedModelError(f"layer {_describe(layer)} reshapes a Dense output to "
                                                f"{link.out_shape}; only flat vectors can follow a Dense")
                continue
            if isinstance(layer, keras.layers.Permute):
                index = np.transpose(index, [d - 1 for d in layer.dims])
            elif isinstance(layer, keras.layers.Flatten):
                # Keras moves the channels axis last before flattening channels_first data.
                if layer.get_config().get("data_format") == "channels_first" and index.ndim >= 2:
                    index = np.moveaxis(index, 0, -1)
                index = index.reshape(-1)
            else:
                index = index.reshape(link.out_shape)
            continue
        if isinstance(layer, keras.layers.Rescaling):
            if dense:
                raise UnsupportedModelError(f"layer {_describe(layer)} follows a Dense layer; only a Rescaling "
                                            "before the first Dense can be folded")
            s, o = _scalar(layer.scale, "scale", layer), _scalar(layer.offset, "offset", layer)
            scale, offset, rescales = scale * s, offset * s + o, True
        elif isinstance(layer, keras.layers.Dense):
            if len(link.in_shape) != 1:
                raise UnsupportedModelError(f"layer {_describe(layer)} gets a rank-{len(link.in_shape) + 1} input; "
                                            "add a Flatten before it")
            kernel = dense_kernel(layer, keras)
            bias = _numpy(keras, layer.bias).astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[1])
            if not dense:
                order = index.reshape(-1)
                if not np.array_equal(order, np.arange(order.size)):
                    permuted = np.empty_like(kernel)
                    permuted[order] = kernel
                    kernel = permuted
            dense.append(_Dense(kernel, bias, _activation_of(layer), pos, [f"{layer.name!r} (Dense "
                                                                          f"{kernel.shape[0]}->{kernel.shape[1]})"]))
        elif isinstance(layer, (keras.layers.Activation, keras.layers.ReLU, keras.layers.Softmax)):
            act = _merge_activation(layer, keras)
            if not dense or dense[-1].activation != "linear":
                where = ("before any Dense layer" if not dense
                         else f"after a Dense with activation {dense[-1].activation!r}")
                raise UnsupportedModelError(f"layer {_describe(layer)} comes {where}; it can only be merged "
                                            "into a Dense layer with a linear activation")
            dense[-1].activation, dense[-1].ends_at = act, pos
            dense[-1].parts.append(f"{layer.name!r} ({kind} {act})")
        else:
            raise UnsupportedModelError(f"layer {_describe(layer)} is not supported; supported: {SUPPORTED_LAYERS}")
    if not dense:
        raise UnsupportedModelError("the model has no Dense layer")
    if rescales:
        # (x*s + o) @ W + b = x @ (s*W) + (b + o * sum_k W[k]); folded in float64, rounded once.
        first = dense[0]
        first.kernel, first.bias = first.kernel * scale, first.bias + offset * first.kernel.sum(axis=0)
    # Layers after the last Dense that change nothing (Dropout, Flatten) end where the model does.
    dense[-1].ends_at = len(links) - 1
    return DenseChain([DenseLayer(d.kernel, d.bias, d.activation) for d in dense], rescales,
                      [link.layer for link in links], [d.ends_at for d in dense], [" + ".join(d.parts) for d in dense])


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
        y = layer(y, training=False)
        if pos in wanted:
            outputs.append(_numpy(keras, y).astype(np.float64).reshape(len(x), -1))
    return outputs


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
) -> Path:
    """Write a Keras model (object or ``.keras`` path) to ``out_path`` in the ``.mnw`` format.

    ``input_scale`` is what a raw uint8 pixel must be multiplied by to become this model's input:
    1/255 for a model trained on ``x / 255`` (the default), 1 for a model trained on raw 0..255
    values or with its own Rescaling layer (the default when it has one). ``reference_images``
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
    """
    keras = _import_keras()
    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_keras_model(model_or_path, allow_h5=allow_h5)
        source = source if source is not None else Path(model_or_path).name
    _check_is_graph_model(model, keras)  # before cloning: a subclassed model gets our message, not Keras's
    precisions = _compute_dtypes(model)
    quantized = _is_quantized(model)
    checked = model if precisions == ["float32"] and not quantized else _float32_twin(model, keras)
    chain = keras_dense_chain(checked)
    if input_scale is None:
        input_scale = 1.0 if chain.rescales else 1 / 255
    width = chain.layers[0].kernel.shape[0]
    reference = reference_inputs_for(reference_images, width, input_scale)
    x = reference.values.reshape((len(reference.values),) + tuple(checked.inputs[0].shape[1:]))
    ref_out = np.asarray(checked.predict(x, verbose=0, batch_size=len(x))).reshape(len(x), -1)
    meta = base_metadata("mnist_engine.export_keras", source if source is not None else model.name)
    meta.update({"keras_version": keras.__version__, "backend": keras.backend.backend(), "model_name": model.name,
                 "reference_precision": "float32"})
    if precisions != ["float32"]:
        meta["model_precision"] = "+".join(precisions)
    if quantized:
        # How far the quantized Keras model itself is from what the file reproduces, on the same rows.
        keras_out = np.asarray(model.predict(x, verbose=0, batch_size=len(x))).reshape(len(x), -1)
        meta["keras_quantization"] = "int8, weights exported as kernel / kernel_scale"
        meta["keras_quantized_max_abs_diff"] = f"{float(np.max(np.abs(keras_out - ref_out))):.3g}"
    stages = [Stage(d, y) for d, y in zip(chain.descriptions, _stage_outputs(keras, chain, x))]
    calibration = None if calibration_images is None else reference_inputs_for(calibration_images, width, input_scale)
    return prove_and_write(out_path, chain.layers, framework="Keras", stages=stages, input_scale=input_scale,
                           metadata=meta, reference=reference, reference_outputs=ref_out, atol=atol, rtol=rtol,
                           calibration=calibration)
