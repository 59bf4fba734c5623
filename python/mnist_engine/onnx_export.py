"""Export an ONNX graph of a multilayer perceptron to a ``.mnw`` file. ``onnx`` is imported only when
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
written (see _export_common.prove_and_write)."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ._export_common import (
    LayerDraft,
    Stage,
    UnsupportedModelError,
    base_metadata,
    fold_after,
    fold_before,
    prove_and_write,
    reference_inputs_for,
    rows_in_input_order,
)
from ._extras import require
from .model_file import DEFAULT_ATOL, DEFAULT_RTOL
from .reference import SELU_ALPHA, SELU_SCALE

__all__ = ["MIN_OPSET", "ONNX_HANDLING", "export_onnx", "load_onnx_model", "onnx_dense_chain"]

# Earlier onnx releases follow symlinks out of the model's folder when loading external data
# (CVE-2026-27489) and let a file inject ExternalDataInfo attributes (CVE-2026-34445); torch's
# exporter writes weights as external data by default, so loading it must be safe.
MIN_ONNX = (1, 21)

# Opset 13 made Softmax and LogSoftmax act on one axis (before, they flattened the trailing axes) and
# moved Clip's bounds and Reshape's shape into inputs: what this reader assumes.
MIN_OPSET = 13

# What each op type becomes; the README's list is generated from this table (supported_markdown;
# tests/test_readme.py checks it, tests/test_export_onnx.py checks it names every handled op).
ONNX_HANDLING: Dict[str, str] = {
    "MatMul": "an engine dense layer: the data times a constant 2-D weight",
    "Gemm": "an engine dense layer, with `alpha`, `beta`, `transB` and a bias `C` of shape (), (1,), (out,) or "
            "(1, out); the data must be input A, with `transA=0`",
    "Add, Sub, Mul, Div": "with a constant (a scalar, or per feature or per element): folded into the neighbouring "
                          "dense layer, or an engine scale_shift op when none can take it",
    "BatchNormalization": "folded likewise (inference mode: `epsilon`, scale, bias, mean, variance)",
    "LayerNormalization": "an engine layer_norm op over the last axis",
    "Relu, Sigmoid, Tanh, Softplus, Softsign, Exp, Mish": "the activation of that name, merged into the layer "
                                                          "before it (exp → exponential)",
    "LeakyRelu, Elu": "leaky_relu, elu with its `alpha`",
    "Selu": "selu (ONNX's default `alpha` and `gamma` are Keras's constants; others are refused)",
    "Gelu": "gelu, or gelu_tanh with `approximate='tanh'`",
    "HardSigmoid": "hard_sigmoid, any `alpha` and `beta` (their affine part folds into the layer before)",
    "HardSwish": "hard_silu",
    "Clip": "relu, relu6 or relu_general by its constant `min` and `max` (a `min` other than 0 becomes a shift "
            "before and after, folded into the neighbouring layers)",
    "PRelu": "prelu with its slopes, one per feature or shared",
    "Softmax, LogSoftmax": "softmax, log_softmax over the last axis",
    "x * g(x)": "a `Mul` of a tensor with Sigmoid, Tanh(Softplus), HardSigmoid or 1 + Erf(·/√2) of itself: "
                "silu, mish, hard_silu, gelu (how torch.onnx.export writes them)",
    "Flatten, Reshape, Transpose": "before the first dense layer: a permutation of its rows; the batch axis stays "
                                   "first. After it: only to the same (batch, features) shape, or as the graph's "
                                   "last node (a generator's view(-1, 1, 28, 28)), whose shape the file records as "
                                   "`output_shape`",
    "Shape, Gather, Unsqueeze, Squeeze, Concat, Slice, Cast": "shape arithmetic (TorchScript's "
                                   "x.view(x.size(0), -1)): folded into the constant shape of the Reshape it feeds, "
                                   "the batch size as its first dimension",
    "Identity, Dropout": "the identity at inference",
    "Constant": "a constant input of the ops above, like an initializer",
}


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


# The batch size in a shape computed by the graph: TorchScript writes x.view(x.size(0), -1) as
# Shape -> Gather -> Unsqueeze -> Concat -> Reshape. Those nodes are folded into a constant shape with
# this stand-in for the batch; a Reshape then accepts it as its first dimension only, and any
# arithmetic on it yields something else, which Reshape refuses.
BATCH = -(1 << 40)
_SHAPE_OPS = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity")


class _Graph:
    """The graph's one input and output, its constants, and its live nodes (those the output needs)
    with, for each tensor, the live nodes that read it."""

    def __init__(self, onnx, model):
        from onnx import numpy_helper

        graph = model.graph
        self.onnx = onnx
        self.constants: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UnsupportedModelError(f"expected one input and one output, got {len(inputs)} and "
                                        f"{len(graph.output)}")
        self.input, self.output = inputs[0], graph.output[0].name
        nodes = list(graph.node)  # one Python object per node: identity below is by id()
        self.position = {id(node): i for i, node in enumerate(nodes)}
        for node in nodes:  # in topological order, as ONNX requires
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self._constant_value(node)
            elif node.op_type == "Identity" and node.input[0] in self.constants:  # torch wraps weights so
                self.constants[node.output[0]] = self.constants[node.input[0]]
        self._fold_shapes(model, nodes)
        producer = {name: node for node in nodes for name in node.output if name}
        live, todo = set(), [self.output]
        while todo:
            node = producer.get(todo.pop())
            if node is not None and id(node) not in live:
                live.add(id(node))
                todo.extend(name for name in node.input if name)
        self.nodes = [n for n in nodes if id(n) in live and n.output[0] not in self.constants]
        self.readers: Dict[str, List[Any]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.input):
                if name and name not in self.constants:
                    self.readers.setdefault(name, []).append(node)

    def _fold_shapes(self, model, nodes) -> None:
        """Shape nodes, and the index arithmetic on their outputs, as constants with BATCH for the
        batch size (needs the tensor's feature axes from ONNX's shape inference)."""
        if not any(n.op_type == "Shape" for n in nodes):
            return
        inferred = self.onnx.shape_inference.infer_shapes(model)
        dims: Dict[str, List[Optional[int]]] = {}
        for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            shape = info.type.tensor_type.shape
            dims[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        shapes = set()
        for node in nodes:
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Shape":
                known = dims.get(node.input[0])
                if not known or any(d is None for d in known[1:]):
                    continue  # left to the walk, which refuses it by name
                value = np.asarray([BATCH] + known[1:], np.int64)
                start, end = _attribute(self.onnx, node, "start", 0), _attribute(self.onnx, node, "end", None)
                self.constants[node.output[0]] = value[start:end]
                shapes.add(node.output[0])
            elif node.op_type in _SHAPE_OPS and any(i in shapes for i in node.input) and all(
                    not i or i in self.constants for i in node.input):
                self.constants[node.output[0]] = self._shape_op(node)
                shapes.add(node.output[0])

    def _shape_op(self, node) -> np.ndarray:
        """numpy's version of one index op on constant inputs."""
        args = [np.asarray(self.constants[i]) if i else None for i in node.input]
        attr = lambda name, default=None: _attribute(self.onnx, node, name, default)  # noqa: E731
        op = node.op_type
        if op == "Gather":
            return np.take(args[0], args[1].astype(np.int64), axis=attr("axis", 0))
        if op in ("Unsqueeze", "Squeeze"):
            axes = attr("axes") if len(args) < 2 or args[1] is None else args[1].tolist()
            if op == "Squeeze":
                return np.squeeze(args[0], axis=tuple(axes) if axes is not None else None)
            out = args[0]
            for axis in sorted(a % (out.ndim + len(axes)) for a in axes):
                out = np.expand_dims(out, axis)
            return out
        if op == "Concat":
            return np.concatenate([a.reshape(-1) if a.ndim == 0 else a for a in args], axis=attr("axis", 0))
        if op == "Slice":
            starts, ends = args[1].tolist(), args[2].tolist()
            axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
            steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
            index = [slice(None)] * args[0].ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                index[a] = slice(s, e, st)
            return args[0][tuple(index)]
        return args[0].astype(np.int64)  # Cast (of an integer shape) and Identity

    def _constant_value(self, node) -> np.ndarray:
        for attr in node.attribute:
            value = self.onnx.helper.get_attribute_value(attr)
            if attr.name == "value":
                return self.onnx.numpy_helper.to_array(value)
            if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                return np.asarray(value)
        raise UnsupportedModelError(f"{self.describe(node)} holds no numeric value")

    def describe(self, node) -> str:
        name = node.name or f"#{self.position.get(id(node), '?')}"
        return f"node {name!r} ({node.op_type})"

    def input_shape(self) -> Tuple[int, ...]:
        """The input's shape without the batch axis; the input must be float32 with static feature axes."""
        kind = self.input.type.tensor_type
        if kind.elem_type != self.onnx.TensorProto.FLOAT:
            name = self.onnx.TensorProto.DataType.Name(kind.elem_type) if kind.elem_type else "not a tensor"
            raise UnsupportedModelError(f"input {self.input.name!r} is {name}; a FLOAT (float32) input is supported")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim]
        if len(dims) < 2 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            shown = ", ".join(str(d) for d in dims)
            raise UnsupportedModelError(f"input {self.input.name!r} has shape [{shown}]: expected (batch, features) "
                                        "or (batch, ...) with fixed feature axes; give the graph input a static "
                                        "shape after the batch axis")
        return tuple(dims[1:])


def _attribute(onnx, node, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _is_identity(scale: float, offset: float) -> bool:
    return scale == 1.0 and offset == 0.0


def _close(a: float, b: float) -> bool:
    """Equal up to the float32 rounding of a constant stored in the graph."""
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


@dataclass
class OnnxChain:
    """An ONNX graph as engine layers, with what the exporter needs to prove them."""
    layers: List[Any]
    rescales: bool  # the input is multiplied by 1/255 (or divided by 255) before the first dense layer
    input_shape: Tuple[int, ...]
    # Per engine layer: (tensor, s, o), where the graph's tensor is s * the layer's output + o.
    ends_at: List[Tuple[str, float, float]]
    descriptions: List[str]
    output_shape: Optional[Tuple[int, ...]] = None  # the graph's output per row, when not a vector


_ELEMENTWISE_AFFINE = ("Add", "Sub", "Mul", "Div")


class _GraphBuilder:
    """Walks the chain once, folding what folds and emitting engine layers. The affine bookkeeping
    is the Keras exporter's (keras_export._ChainBuilder): an affine map folds into the dense layer
    before it while that one has no activation; otherwise it waits ("pending", per element of the
    current tensor) and folds into the next dense layer's rows; when something else needs the values
    first, it becomes a scale_shift engine layer."""

    HANDLERS = {
        "MatMul": "_matmul", "Gemm": "_gemm", "Add": "_binary", "Sub": "_binary", "Mul": "_binary", "Div": "_binary",
        "BatchNormalization": "_batch_norm", "LayerNormalization": "_layer_norm", "Relu": "_named",
        "Sigmoid": "_named", "Tanh": "_named", "Softplus": "_named", "Softsign": "_named", "Exp": "_named",
        "Mish": "_named", "HardSwish": "_named", "LeakyRelu": "_alpha", "Elu": "_alpha", "Selu": "_selu",
        "Gelu": "_gelu", "HardSigmoid": "_hard_sigmoid", "Clip": "_clip", "PRelu": "_prelu", "Softmax": "_softmax",
        "LogSoftmax": "_softmax", "Flatten": "_flatten", "Reshape": "_reshape", "Transpose": "_transpose",
        "Identity": "_identity", "Dropout": "_dropout",
    }
    NAMED = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
             "Exp": "exponential", "Mish": "mish", "HardSwish": "hard_silu", "LeakyRelu": "leaky_relu", "Elu": "elu",
             "Softmax": "softmax", "LogSoftmax": "log_softmax"}

    def __init__(self, graph: _Graph):
        self.graph, self.onnx = graph, graph.onnx
        # The input's shape, kept for the chain; self.shape follows the values along the walk.
        self.input_shape = self.shape = graph.input_shape()
        # index[p]: the engine's (row-major) input position of the graph input's element p, until the
        # first dense layer; Transpose moves it, Flatten and Reshape keep the row-major order.
        self.index = np.arange(int(np.prod(self.shape))).reshape(self.shape)
        self._reset_pending()
        self.drafts: List[LayerDraft] = []
        self.rescales = False
        self.output_shape: Optional[Tuple[int, ...]] = None  # a reshape of the last layer's output

    # -- the walk -------------------------------------------------------------------------------

    def build(self) -> OnnxChain:
        tensor = self.graph.input.name
        while tensor != self.graph.output:
            readers = self.graph.readers.get(tensor, [])
            if len(readers) == 1:
                tensor = self._node(readers[0], tensor)
            elif len(readers) == 2:
                tensor = self._product(tensor, readers)
            else:
                raise UnsupportedModelError(
                    f"tensor {tensor!r} feeds {len(readers)} nodes ({self._list(readers)}): only a single chain of "
                    "nodes, and x * g(x) activations, are supported (no branches or skip connections)")
        if not any(d.op == "dense" for d in self.drafts):
            raise UnsupportedModelError("the graph has no MatMul or Gemm node")
        self._flush(self.graph.output)
        return OnnxChain([d.layer() for d in self.drafts], self.rescales, self.input_shape,
                         [d.ends_at for d in self.drafts], [" + ".join(d.parts) for d in self.drafts],
                         self.output_shape)

    def _list(self, nodes) -> str:
        return ", ".join(self.graph.describe(n) for n in nodes)

    def _node(self, node, tensor: str) -> str:
        describe = self.graph.describe(node)
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(f"{describe} is from the custom domain {node.domain!r}; only standard ONNX "
                                        f"ops are supported: {', '.join(ONNX_HANDLING)}")
        handler = self.HANDLERS.get(node.op_type)
        if handler is None:
            raise UnsupportedModelError(f"{describe} is not supported; supported op types: "
                                        f"{', '.join(ONNX_HANDLING)}")
        for extra in node.output[1:]:
            if extra and (extra in self.graph.readers or extra == self.graph.output):
                raise self._refuse(node, f"its output {extra!r} is used", "only its first output is supported")
        positions = [i for i, name in enumerate(node.input) if name == tensor]
        if len(positions) != 1:
            raise self._refuse(node, "the same tensor as both inputs", "ops of the data and a constant are")
        if positions[0] != 0 and node.op_type not in ("Add", "Sub", "Mul"):
            raise self._refuse(node, f"the data is its input {positions[0]}, not input 0",
                               "the data must be the first input (A for MatMul and Gemm)")
        getattr(self, handler)(node, positions[0])
        return node.output[0]

    def _refuse(self, node, setting: str, instead: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{self.graph.describe(node)}: {setting} is not supported; {instead}")

    def _attribute(self, node, name: str, default: Any) -> Any:
        return _attribute(self.onnx, node, name, default)

    def _constant(self, node, i: int, default: Optional[np.ndarray] = None) -> np.ndarray:
        name = node.input[i] if i < len(node.input) else ""
        if not name:
            if default is None:
                raise self._refuse(node, f"a missing input {i}", "give it a constant")
            return default
        if name not in self.graph.constants:
            raise self._refuse(node, f"a weight computed by the graph (input {i}, {name!r})",
                               "only constants (initializers or Constant nodes) are supported there")
        return np.asarray(self.graph.constants[name], np.float64)

    def _broadcast(self, node, value: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
        """A constant as one value per element of the data tensor (batch, *shape), by ONNX's
        (numpy's) broadcasting; one that varies along the batch axis is refused."""
        value = np.asarray(value, np.float64)
        if value.ndim > len(shape) + 1 or (value.ndim == len(shape) + 1 and value.shape[0] != 1):
            raise self._refuse(node, f"a constant of shape {value.shape} on data of shape (batch, "
                               f"{', '.join(map(str, shape))})", "constants that are the same for every row are")
        try:
            return np.broadcast_to(value.reshape(value.shape[1:]) if value.ndim == len(shape) + 1 else value,
                                   shape).copy()
        except ValueError:
            raise self._refuse(node, f"a constant of shape {value.shape}", f"it does not broadcast to the data's "
                               f"shape (batch, {', '.join(map(str, shape))})") from None

    def _features(self, node) -> int:
        if len(self.shape) != 1:
            raise self._refuse(node, f"a rank-{len(self.shape) + 1} input (batch, {', '.join(map(str, self.shape))})",
                               "add a Flatten before it")
        return self.shape[0]

    # -- affine maps, pending until something can take them --------------------------------------

    def _reset_pending(self) -> None:
        self.scale, self.offset = np.ones(self.shape), np.zeros(self.shape)
        self.pending_from: List[str] = []

    def _affine(self, node, scale, offset, what: str = "") -> None:
        scale = np.broadcast_to(np.asarray(scale, np.float64), self.shape)
        offset = np.broadcast_to(np.asarray(offset, np.float64), self.shape)
        described = f"{self.graph.describe(node)}{what}"
        last = self.drafts[-1] if self.drafts else None
        if last is not None and last.op == "dense" and last.activation == "linear" and not self.pending_from:
            last.values = list(fold_after(*last.values, scale, offset))
            last.ends_at = (node.output[0], 1.0, 0.0)
            last.parts.append(f"{described} folded")
            return
        self.scale, self.offset = self.scale * scale, self.offset * scale + offset
        self.pending_from.append(described)

    def _flush(self, tensor: str) -> None:
        """Emit the pending affine map as a scale_shift layer, observable at `tensor`."""
        if not self.pending_from:
            return
        # Every caller has been through _features or a dense layer, which refuse multi-dimensional data.
        assert len(self.shape) == 1, self.shape
        self.drafts.append(LayerDraft("scale_shift", [self.scale.copy(), self.offset.copy()],
                                      ends_at=(tensor, 1.0, 0.0), parts=list(self.pending_from)))
        self._reset_pending()

    # -- dense layers ----------------------------------------------------------------------------

    def _dense(self, node, kernel: np.ndarray, bias: np.ndarray) -> None:
        features = self._features(node)
        if kernel.ndim != 2 or kernel.shape[0] != features:
            raise self._refuse(node, f"a weight of shape {kernel.shape} on {features} features",
                               f"a 2-D weight with {features} rows is")
        described = [f"{self.graph.describe(node)} {kernel.shape[0]}->{kernel.shape[1]}"]
        if self.pending_from:
            kernel, bias = fold_before(kernel, bias, self.scale, self.offset)
            described = [f"{', '.join(self.pending_from)} folded into"] + described
        if not self.drafts:
            kernel = rows_in_input_order(kernel, self.index)
        self.drafts.append(LayerDraft("dense", [kernel, bias], ends_at=(node.output[0], 1.0, 0.0),
                                      parts=described))
        self.shape = (kernel.shape[1],)
        self._reset_pending()

    def _matmul(self, node, _) -> None:
        weight = self._constant(node, 1)
        self._dense(node, weight, np.zeros(weight.shape[-1] if weight.ndim else 0))

    def _gemm(self, node, _) -> None:
        if self._attribute(node, "transA", 0):
            raise self._refuse(node, "transA=1 on the data (it would transpose the batch)", "transA=0 is")
        weight = self._constant(node, 1)
        if weight.ndim != 2:
            raise self._refuse(node, f"a weight B of shape {weight.shape}", "a 2-D weight is")
        kernel = weight.T if self._attribute(node, "transB", 0) else weight
        kernel = float(self._attribute(node, "alpha", 1.0)) * kernel
        bias = float(self._attribute(node, "beta", 1.0)) * self._broadcast(
            node, self._constant(node, 2, np.zeros(kernel.shape[1])), (kernel.shape[1],))
        self._dense(node, kernel, bias)

    # -- affine ops ------------------------------------------------------------------------------

    def _binary(self, node, position: int) -> None:
        value = self._broadcast(node, self._constant(node, 1 - position), self.shape)
        op = node.op_type
        if op == "Add":
            scale, offset = 1.0, value
        elif op == "Sub":
            scale, offset = (1.0, -value) if position == 0 else (-1.0, value)
        elif op == "Mul":
            scale, offset = value, 0.0
        else:
            if np.any(value == 0):
                raise self._refuse(node, "a divisor of 0", "nonzero divisors are")
            scale, offset = 1.0 / value, 0.0
        if op in ("Mul", "Div") and not self.drafts and np.all(np.float32(scale) == np.float32(1 / 255)):
            self.rescales = True  # the graph takes raw 0..255 pixels (a standardization alone does not)
        self._affine(node, scale, offset)

    def _batch_norm(self, node, _) -> None:
        if self._attribute(node, "training_mode", 0):
            raise self._refuse(node, "training_mode=1", "inference mode (training_mode=0) is")
        channels = self.shape[0]
        gamma, beta, mean, variance = (self._constant(node, i) for i in (1, 2, 3, 4))
        if not all(v.shape == (channels,) for v in (gamma, beta, mean, variance)):
            raise self._refuse(node, f"statistics of shapes {[v.shape for v in (gamma, beta, mean, variance)]}",
                               f"one value per channel ({channels}) is")
        scale = gamma / np.sqrt(variance + float(self._attribute(node, "epsilon", 1e-5)))
        offset = beta - mean * scale
        along_channels = (channels,) + (1,) * (len(self.shape) - 1)  # the data's axis 1
        self._affine(node, scale.reshape(along_channels), offset.reshape(along_channels))

    # -- activations and element-wise engine ops -------------------------------------------------

    def _activation(self, node, activation: str, parameters: Tuple[float, ...] = (),
                    before: Optional[Tuple[float, float]] = None, after: Tuple[float, float] = (1.0, 0.0),
                    described: str = "") -> None:
        """Apply `activation` to the current tensor, after the scalar affine map `before` and followed
        by `after`, (s, o): the graph's tensor at `node`'s output is s * activation + o."""
        features = self._features(node)
        if before is not None and not _is_identity(*before):
            self._affine(node, *before, what=" (its input scaling)")
        self._flush(node.output[0])  # a scale_shift that the activation merges into: it ends there
        last = self.drafts[-1] if self.drafts else None
        if last is None or last.activation != "linear":
            # Nothing to merge into: an identity scale_shift carries the activation.
            last = LayerDraft("scale_shift", [np.ones(features), np.zeros(features)])
            self.drafts.append(last)
        last.activation, last.parameters = activation, tuple(float(p) for p in parameters)
        last.ends_at = (node.output[0], *after)
        last.parts.append(described or f"{self.graph.describe(node)} {activation}")
        if not _is_identity(*after):
            self._affine(node, *after, what=" (the affine map after it)")

    def _named(self, node, _) -> None:
        self._activation(node, self.NAMED[node.op_type])

    def _alpha(self, node, _) -> None:
        default = {"LeakyRelu": 0.01, "Elu": 1.0}[node.op_type]
        self._activation(node, self.NAMED[node.op_type], (float(self._attribute(node, "alpha", default)),))

    def _selu(self, node, _) -> None:
        alpha, gamma = (float(self._attribute(node, k, d)) for k, d in (("alpha", SELU_ALPHA), ("gamma", SELU_SCALE)))
        if not (_close(alpha, SELU_ALPHA) and _close(gamma, SELU_SCALE)):
            raise self._refuse(node, f"alpha={alpha:g}, gamma={gamma:g}",
                               f"selu with ONNX's defaults (alpha={SELU_ALPHA:.7g}, gamma={SELU_SCALE:.7g}) is")
        self._activation(node, "selu")

    def _gelu(self, node, _) -> None:
        approximate = self._attribute(node, "approximate", "none")
        if approximate not in ("none", "tanh"):
            raise self._refuse(node, f"approximate={approximate!r}", "'none' and 'tanh' are")
        self._activation(node, "gelu" if approximate == "none" else "gelu_tanh")

    def _hard_sigmoid(self, node, _) -> None:
        # max(0, min(1, a x + b)) = hard_sigmoid(6 a x + 6 b - 3), with hard_sigmoid(z) = relu6(z + 3) / 6.
        alpha, beta = float(self._attribute(node, "alpha", 0.2)), float(self._attribute(node, "beta", 0.5))
        keras_form = np.float32(alpha) == np.float32(1 / 6) and beta == 0.5
        self._activation(node, "hard_sigmoid", before=None if keras_form else (6 * alpha, 6 * beta - 3))

    def _clip(self, node, _) -> None:
        lo, hi = (self._scalar(node, i) for i in (1, 2))
        if lo is not None and hi is not None and hi < lo:
            raise self._refuse(node, f"min={lo:g} > max={hi:g}", "min <= max is")
        if lo is None and hi is None:
            return
        if lo is None:  # min(x, hi) = hi - relu(hi - x)
            return self._activation(node, "relu", before=(-1.0, hi), after=(-1.0, hi))
        top = np.inf if hi is None else hi - lo  # clip(x, lo, hi) = lo + clip(x - lo, 0, hi - lo)
        activation, parameters = ("relu", ()) if top == np.inf else (
            ("relu6", ()) if top == 6 else ("relu_general", (0.0, 0.0, top)))
        self._activation(node, activation, parameters, before=(1.0, -lo), after=(1.0, lo))

    def _scalar(self, node, i: int) -> Optional[float]:
        name = node.input[i] if i < len(node.input) else ""
        if not name:
            return None
        value = self._constant(node, i)
        if value.size != 1:
            raise self._refuse(node, f"a bound of shape {value.shape}", "scalar bounds are")
        return float(value.reshape(()))

    def _prelu(self, node, _) -> None:
        features = self._features(node)
        slopes = self._broadcast(node, self._constant(node, 1), (features,))
        self._activation(node, "prelu", tuple(slopes))

    def _softmax(self, node, _) -> None:
        self._features(node)
        if self._attribute(node, "axis", -1) not in (-1, 1):
            raise self._refuse(node, f"axis={self._attribute(node, 'axis', -1)}", "the last axis (-1) is")
        self._activation(node, self.NAMED[node.op_type])

    def _layer_norm(self, node, _) -> None:
        features = self._features(node)
        if self._attribute(node, "axis", -1) not in (-1, 1):
            raise self._refuse(node, f"axis={self._attribute(node, 'axis', -1)}", "the last axis (-1) is")
        gamma = self._broadcast(node, self._constant(node, 1), (features,))
        beta = self._broadcast(node, self._constant(node, 2, np.zeros(features)), (features,))
        self._flush(node.input[0])
        epsilon = float(self._attribute(node, "epsilon", 1e-5))
        self.drafts.append(LayerDraft("layer_norm", [gamma, beta], epsilon=epsilon, ends_at=(node.output[0], 1.0, 0.0),
                                      parts=[self.graph.describe(node)]))

    # -- moving values ---------------------------------------------------------------------------

    def _identity(self, node, _) -> None:
        pass

    def _dropout(self, node, _) -> None:
        name = node.input[2] if len(node.input) > 2 else ""
        if name and (name not in self.graph.constants or bool(np.asarray(self.graph.constants[name]))):
            raise self._refuse(node, "training_mode that is not a constant False", "inference mode is")

    def _reshape_to(self, node, shape: Tuple[int, ...], transform=None) -> None:
        if self.drafts:
            if node.output[0] == self.graph.output and int(np.prod(shape)) == int(np.prod(self.shape)):
                # The output viewed as an image (a generator's .view(-1, 1, 28, 28)): the engine's rows
                # are the same values in the same order; the shape is recorded in the file.
                self.output_shape = shape
                return
            if shape != self.shape:
                raise self._refuse(node, f"reshaping dense outputs to (batch, {', '.join(map(str, shape))})",
                                   "after the first MatMul or Gemm, only (batch, features) vectors are")
            return
        transform = transform or (lambda a: a.reshape(shape))
        self.index, self.scale, self.offset = transform(self.index), transform(self.scale), transform(self.offset)
        self.shape = shape

    def _flatten(self, node, _) -> None:
        axis = int(self._attribute(node, "axis", 1))
        if axis % (len(self.shape) + 1) != 1:
            raise self._refuse(node, f"axis={axis} (it would merge the batch axis)", "axis=1 is")
        self._reshape_to(node, (int(np.prod(self.shape)),))

    def _reshape(self, node, _) -> None:
        target = [int(d) for d in self._constant(node, 1).reshape(-1)]
        if target and target[0] == BATCH:  # x.view(x.size(0), ...): the batch size, computed by the graph
            target[0] = -1 if -1 not in target[1:] else 0
        if BATCH in target[1:] or any(d < -1 for d in target):
            raise self._refuse(node, "a target shape computed from the batch size other than as its first dimension",
                               "the batch size (x.size(0)) as the first dimension, or 0 or -1 there, is")
        keep_zeros = bool(self._attribute(node, "allowzero", 0))
        if not target or target[0] not in (0, -1) or (target[0] == 0 and keep_zeros):
            raise self._refuse(node, f"the target shape {target}", "a first dimension of 0 or -1 (the batch) is")
        size = int(np.prod(self.shape))
        rest = [self.shape[i] if d == 0 and not keep_zeros and i < len(self.shape) else d
                for i, d in enumerate(target[1:])]
        if target[0] == 0 and rest.count(-1) == 1:
            known = int(np.prod([d for d in rest if d != -1]))
            rest = [size // known if d == -1 and known and size % known == 0 else d for d in rest]
        if any(d <= 0 for d in rest) or int(np.prod(rest)) != size:
            raise self._refuse(node, f"the target shape {target} for data of shape (batch, "
                               f"{', '.join(map(str, self.shape))})", "a shape that keeps the batch axis is")
        self._reshape_to(node, tuple(rest))

    def _transpose(self, node, _) -> None:
        perm = list(self._attribute(node, "perm", []))
        if not perm or perm[0] != 0:
            raise self._refuse(node, f"perm={perm or 'reversed'} (it moves the batch axis)",
                               "a perm that keeps axis 0 first is")
        axes = [p - 1 for p in perm[1:]]
        self._reshape_to(node, tuple(self.shape[a] for a in axes), lambda a: np.transpose(a, axes))

    # -- x * g(x) ---------------------------------------------------------------------------------

    GATE_OPS = ("Sigmoid", "Tanh", "Softplus", "Erf", "HardSigmoid")

    def _product(self, tensor: str, readers) -> str:
        """`tensor` feeds two chains of element-wise nodes that meet again in one Mul: x * g(x)."""
        chains, joins = [], []
        for reader in readers:
            chain, node = [], reader
            while node is not None and self._data_inputs(node) == 1:
                chain.append(node)
                following = self.graph.readers.get(node.output[0], [])
                node = following[0] if len(following) == 1 and node.output[0] != self.graph.output else None
            chains.append(chain)
            joins.append(node)
        join = joins[0]
        if join is None or joins[1] is not join or join.op_type != "Mul" or join.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(
                f"tensor {tensor!r} feeds two nodes ({self._list(readers)}) whose results do not meet again in one "
                "Mul: only a single chain of nodes, and x * g(x) activations (silu, mish, hard_silu, erf-gelu "
                "written out), are supported (no branches or skip connections)")
        activation, factor = self._split_product(chains, join)
        nodes = [n for chain in chains for n in chain] + [join]
        self._activation(join, activation, after=(factor, 0.0),
                         described=f"{self._list(nodes)}: x * g(x) = {activation}")
        return join.output[0]

    def _data_inputs(self, node) -> int:
        return sum(1 for name in dict.fromkeys(node.input) if name and name not in self.graph.constants)

    def _split_product(self, chains, join) -> Tuple[str, float]:
        """(activation, c) with join's output = c * activation(x): one chain is c1 * x, the other a gate
        g with x * g(x) = c2 * activation(x)."""
        steps = [self._steps(chain) for chain in chains]
        for linear, gate in ((steps[0], steps[1]), (steps[1], steps[0])):
            scale = self._linear_scale(linear)
            recognized = self._gate(gate)
            if scale is not None and recognized is not None:
                return recognized[0], scale * recognized[1]
        shown = " and ".join("x" if not s else " -> ".join(t if isinstance(t, str) else f"{t[1]:.6g}*x+{t[2]:.6g}"
                                                           for t in s) for s in steps)
        raise self._refuse(join, f"the product of {shown}",
                           "x times Sigmoid(x), Tanh(Softplus(x)), HardSigmoid(x) or 1 + Erf(x/sqrt(2)) (each up to a "
                           "constant factor) is")

    def _steps(self, chain) -> List[Any]:
        """A chain as its nonlinear ops (names) and the scalar affine maps between them, ("affine", s, o)."""
        steps: List[Any] = []
        scale, offset = 1.0, 0.0
        for node in chain:
            if node.domain not in ("", "ai.onnx") or node.op_type not in self.GATE_OPS + _ELEMENTWISE_AFFINE:
                raise UnsupportedModelError(
                    f"{self.graph.describe(node)} is not supported inside x * g(x); there, supported op types: "
                    f"{', '.join(self.GATE_OPS + _ELEMENTWISE_AFFINE)}")
            if node.op_type in _ELEMENTWISE_AFFINE:
                s, o = self._scalar_affine(node)
                scale, offset = scale * s, offset * s + o
                continue
            if not _is_identity(scale, offset):
                steps.append(("affine", scale, offset))
            scale, offset = 1.0, 0.0
            if node.op_type == "HardSigmoid":
                alpha, beta = (float(self._attribute(node, k, d)) for k, d in (("alpha", 0.2), ("beta", 0.5)))
                if not (np.float32(alpha) == np.float32(1 / 6) and beta == 0.5):
                    raise self._refuse(node, f"alpha={alpha:g}, beta={beta:g} inside x * g(x)",
                                       "HardSigmoid(alpha=1/6, beta=0.5), which makes hard_silu, is")
            steps.append(node.op_type)
        if not _is_identity(scale, offset):
            steps.append(("affine", scale, offset))
        return steps

    def _scalar_affine(self, node) -> Tuple[float, float]:
        position = next(i for i, name in enumerate(node.input) if name not in self.graph.constants)
        value = self._constant(node, 1 - position)
        if value.size != 1:
            raise self._refuse(node, f"a constant of shape {value.shape} inside x * g(x)", "scalar constants are")
        v = float(value.reshape(()))
        if node.op_type == "Add":
            return 1.0, v
        if node.op_type == "Sub":
            return (1.0, -v) if position == 0 else (-1.0, v)
        if node.op_type == "Mul":
            return v, 0.0
        if position != 0 or v == 0:
            raise self._refuse(node, "a division of a constant, or by 0", "x / c with c != 0 is")
        return 1.0 / v, 0.0

    @staticmethod
    def _linear_scale(steps) -> Optional[float]:
        if not steps:
            return 1.0
        if len(steps) == 1 and not isinstance(steps[0], str) and steps[0][2] == 0.0:
            return steps[0][1]
        return None

    @staticmethod
    def _gate(steps) -> Optional[Tuple[str, float]]:
        """(activation, c) with x * g(x) = c * activation(x), for the gates g that make one."""
        named = {("Sigmoid",): "silu", ("Softplus", "Tanh"): "mish", ("HardSigmoid",): "hard_silu"}
        if tuple(steps) in named:
            return named[tuple(steps)], 1.0
        # gelu(x) = x * (1 + erf(x / sqrt(2))) / 2, so x * (a + a erf(x / sqrt(2))) = 2 a gelu(x).
        if (len(steps) == 3 and steps[1] == "Erf" and not isinstance(steps[0], str) and not isinstance(steps[2], str)
                and steps[0][2] == 0.0 and _close(steps[0][1], 1 / math.sqrt(2)) and _close(steps[2][1], steps[2][2])):
            return "gelu", 2.0 * steps[2][1]
        return None


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
    output = np.asarray(values[graph.output[0].name], np.float64).reshape(len(x), -1)
    stages = [Stage(description, (np.asarray(values[name], np.float64).reshape(len(x), -1) - offset) / scale)
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
) -> Path:
    """Write an ONNX model of a multilayer perceptron (an ``onnx.ModelProto``, a ``.onnx`` path or
    its bytes) to ``out_path`` in the ``.mnw`` format.

    Opsets 13 onward; what each op becomes is listed in ONNX_HANDLING (and the README). The graph
    must be one chain from its float32 input (batch, ...) to its output: a node the exporter cannot
    map raises UnsupportedModelError naming the node and its op type.

    ``input_scale`` is what a raw uint8 pixel must be multiplied by to become the graph's input:
    1/255 by default, or 1 when the graph scales its input itself (a Mul by 1/255 or a Div by 255
    before the first MatMul or Gemm). ``reference_images``, ``calibration_images``, ``atol`` and ``rtol`` work as
    in :func:`export_keras`: the reference outputs stored in the file, and every layer's expected
    output, come from ONNX's own reference evaluator (``onnx.reference``), and the file is loaded and
    checked against them before anything is written."""
    onnx = _import_onnx()
    model = load_onnx_model(model_or_path)
    if source is None:
        source = Path(model_or_path).name if isinstance(model_or_path, (str, os.PathLike)) else (
            model.graph.name or "onnx model")
    opset = _opset(model)
    chain = _GraphBuilder(_Graph(onnx, model)).build()
    if input_scale is None:
        input_scale = 1.0 if chain.rescales else 1 / 255
    width = int(np.prod(chain.input_shape))
    reference = reference_inputs_for(reference_images, width, input_scale)
    x = reference.values.reshape((len(reference.values),) + chain.input_shape)
    ref_out, stages = reference_stages(model, chain, x)
    meta = base_metadata("mnist_engine.export_onnx", source)
    meta.update({"onnx_version": onnx.__version__, "opset": str(opset),
                 "onnx_producer": f"{model.producer_name} {model.producer_version}".strip() or "unknown",
                 "reference_precision": "float32", "reference_runtime": "onnx.reference.ReferenceEvaluator"})
    if chain.output_shape is not None:
        # predict gives (N, features); this is how the graph's own output held each row's values.
        meta["output_shape"] = " ".join(map(str, chain.output_shape))
    calibration = None if calibration_images is None else reference_inputs_for(calibration_images, width, input_scale)
    return prove_and_write(out_path, chain.layers, framework="ONNX", stages=stages, input_scale=input_scale,
                           metadata=meta, reference=reference, reference_outputs=ref_out, atol=atol, rtol=rtol,
                           calibration=calibration)
