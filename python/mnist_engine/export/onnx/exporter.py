"""Export an ONNX graph of an MLP or a small CNN to a ``.mnw`` file. ``onnx`` is imported only when
an export runs, never by ``import mnist_engine``.

The graph is read as one chain from its input to its output (nodes whose results never reach the
output are ignored). _GraphBuilder maps each node on the way, as ONNX_HANDLING lists: MatMul and
Gemm become engine dense layers; Add, Sub, Mul and Div by constants, and BatchNormalization, are
affine maps that fold into a neighbouring dense layer (or run as a scale_shift op when none can take
them); activation ops merge into the layer before them; LayerNormalization is an engine op;
Flatten, Reshape and Transpose before the first dense layer become a permutation of its rows.
Where a tensor feeds two chains that meet again in a Mul, the product x * g(x) is matched against
the activations written that way (SiLU, Mish, HardSwish, erf-GELU, as torch.onnx.export writes
them). The file is then proven against ONNX's own reference evaluator (onnx.reference) before it is
written (see ..common.prove_and_write)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ..._extras import require
from ...model_file import DEFAULT_ATOL, DEFAULT_RTOL
from ..common import (
    Stage,
    UnsupportedModelError,
    base_metadata,
    graph_inputs,
    prove_and_write,
)
from .builder import ONNX_HANDLING, OnnxChain, _GraphBuilder
from .graph import _Graph

__all__ = ["MIN_OPSET", "ONNX_HANDLING", "export_onnx", "load_onnx_model", "onnx_dense_chain"]

# Earlier onnx releases follow symlinks out of the model's folder when loading external data
# (CVE-2026-27489) and let a file inject ExternalDataInfo attributes (CVE-2026-34445); torch's
# exporter writes weights as external data by default, so loading it must be safe.
MIN_ONNX = (1, 21)

# Opset 13 made Softmax and LogSoftmax act on one axis (before, they flattened the trailing axes) and
# moved Clip's bounds and Reshape's shape into inputs: what this reader assumes.
MIN_OPSET = 13


def supported_markdown() -> str:
    """The README's list of what ONNX graphs export, generated from ONNX_HANDLING."""
    lines = ["| ONNX op | becomes |", "| --- | --- |"]
    for ops, what in ONNX_HANDLING.items():
        names = ops if "(" in ops else ", ".join(f"`{op}`" for op in ops.split(", "))
        lines.append(f"| {names} | {what} |")
    return "\n".join(lines)


def _import_onnx():
    onnx = require("onnx", "mnist_engine.export_onnx")
    version = tuple(int(p) for p in re.findall(r"\d+", onnx.__version__)[:2])
    if version < MIN_ONNX:
        raise RuntimeError(f"onnx >= {'.'.join(map(str, MIN_ONNX))} is required (earlier versions let a model's "
                           f"external data reach files outside its folder); found {onnx.__version__}")
    return onnx


def load_onnx_model(model_or_path: Any):
    """An ``onnx.ModelProto`` from a path, serialized bytes or a ModelProto, checked by onnx's checker."""
    onnx = _import_onnx()
    if isinstance(model_or_path, onnx.ModelProto):
        model, what = model_or_path, "the ONNX model"
    elif isinstance(model_or_path, (str, os.PathLike)):
        what = os.fspath(model_or_path)
        try:
            model = onnx.load(what)
        except OSError:
            raise
        except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
            raise ValueError(f"{what} is not an ONNX model file ({type(e).__name__}: {e})") from None
    elif isinstance(model_or_path, (bytes, bytearray)):
        what = "the ONNX bytes"
        try:
            model = onnx.load_from_string(bytes(model_or_path))
        except Exception as e:
            raise ValueError(f"{what} are not a serialized ONNX model ({type(e).__name__}: {e})") from None
    else:
        raise TypeError(f"expected an onnx.ModelProto, a path or bytes, got {type(model_or_path).__name__}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"{what} is not a valid ONNX model: {str(e).strip().splitlines()[0]}") from None
    return model


def _opset(model) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise UnsupportedModelError("the model imports no version of the default ONNX opset")
    if version < MIN_OPSET:
        raise UnsupportedModelError(
            f"the model uses opset {version}; opsets {MIN_OPSET} onward are supported. Convert it first: "
            f"onnx.version_converter.convert_version(model, {MIN_OPSET})")
    return version


def onnx_dense_chain(model) -> OnnxChain:
    """The ONNX model (a checked ModelProto) as engine layers. Raises UnsupportedModelError naming the
    first node it cannot map."""
    onnx = _import_onnx()
    _opset(model)
    return _GraphBuilder(_Graph(onnx, model)).build()


def reference_stages(model, chain: OnnxChain, x: np.ndarray) -> Tuple[np.ndarray, List[Stage]]:
    """ONNX's reference evaluator on input rows `x` (batch, *input shape): the graph's output, and what
    each engine layer of `chain` must reproduce (the tensor where its output can be seen, less the
    affine map that a Clip's shift or an x * g(x)'s constant factor leaves there)."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    input_name = next(i.name for i in graph.input if i.name not in {t.name for t in graph.initializer})
    values = ReferenceEvaluator(model).run(None, {input_name: x}, intermediate=True)
    def rows(value) -> np.ndarray:
        """A tensor as the engine's rows: NCHW images become NHWC first."""
        value = np.asarray(value, np.float64)
        return (value.transpose(0, 2, 3, 1) if value.ndim == 4 else value).reshape(len(x), -1)

    output = rows(values[graph.output[0].name])
    stages = [Stage(description, (rows(values[name]) - offset) / scale)
              for description, (name, scale, offset) in zip(chain.descriptions, chain.ends_at)]
    return output, stages


def export_onnx(
    model_or_path: Any,
    out_path: Union[str, "os.PathLike[str]"],
    *,
    input_scale: Optional[float] = None,
    reference_images: Optional[np.ndarray] = None,
    calibration_images: Optional[np.ndarray] = None,
    source: Optional[str] = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    reject_class: Optional[int] = None,
    output_kind: Optional[str] = None,
    input_mean: Any = None,
    input_std: Any = None,
) -> Path:
    """Write an ONNX model of an MLP or a small CNN (an ``onnx.ModelProto``, a ``.onnx`` path or
    its bytes) to ``out_path`` in the ``.mnw`` format.

    Opsets 13 onward; what each op becomes is listed in ONNX_HANDLING (and the README). The graph
    must be one chain from its float32 input (batch, ...) to its output: a node the exporter cannot
    map raises UnsupportedModelError naming the node and its op type.

    ``input_scale`` is what a raw uint8 pixel must be multiplied by to become the graph's input:
    1/255 by default, or 1 when the graph scales its input itself (a Mul by 1/255 or a Div by 255
    before the first MatMul or Gemm); a graph of features (no image, not 784 wide) has none, as in
    :func:`export_keras`. ``reference_images``, ``calibration_images``, ``atol`` and ``rtol`` work as
    in :func:`export_keras`: the reference outputs stored in the file, and every layer's expected
    output, come from ONNX's own reference evaluator (``onnx.reference``), and the file is loaded and
    checked against them before anything is written. ``reject_class``, ``output_kind``,
    ``input_mean`` and ``input_std`` work as in :func:`export_keras`: PyTorch's examples/mnist
    trains behind Normalize((0.1307,), (0.3081,)) (one mean and std: ONNX images have one channel here), and
    its Net ends in LogSoftmax, which gives log-probabilities; a graph ending in its last Gemm gives
    logits, one whose output is not a vector values."""
    onnx = _import_onnx()
    model = load_onnx_model(model_or_path)
    if source is None:
        source = Path(model_or_path).name if isinstance(model_or_path, (str, os.PathLike)) else (
            model.graph.name or "onnx model")
    opset = _opset(model)
    chain = _GraphBuilder(_Graph(onnx, model)).build()
    # One mean and std for every value: an ONNX image reaches the engine with one channel (a
    # multi-channel NCHW input is refused by spatial.py), so a value per channel has nothing to
    # tell apart.
    inputs = graph_inputs(chain.layers, input_scale, chain.rescales, input_mean, input_std, reference_images,
                          calibration_images, per_channel=False)
    input_scale, reference, calibration = inputs.input_scale, inputs.reference, inputs.calibration
    x = reference.values.reshape((len(reference.values),) + chain.input_shape)
    ref_out, stages = reference_stages(model, chain, x)
    meta = base_metadata("mnist_engine.export_onnx", source, reject_class)
    meta.update({"onnx_version": onnx.__version__, "opset": str(opset),
                 "onnx_producer": f"{model.producer_name} {model.producer_version}".strip() or "unknown",
                 "reference_precision": "float32", "reference_runtime": "onnx.reference.ReferenceEvaluator"})
    if chain.output_shape is not None:
        # predict gives (N, features); this is how the graph's own output held each row's values.
        meta["output_shape"] = " ".join(map(str, chain.output_shape))
    if inputs.normalization:
        meta.update(inputs.normalization.metadata())
    meta["input_kind"] = inputs.kind
    return prove_and_write(out_path, chain.layers, framework="ONNX", stages=stages, input_scale=input_scale,
                           metadata=meta, reference=reference, reference_outputs=ref_out, atol=atol, rtol=rtol,
                           calibration=calibration, output_kind=output_kind,
                           output_hint="values" if chain.output_shape is not None else None)
