"""The walk over an ONNX graph's chain that turns it into engine layers: the builder's state (the
current tensor's shape, where each input element sits, the pending affine map, the layers so far)
and the shared steps every handler uses. The ops themselves are handled by family, one module each
(dense.py, elementwise.py, moving.py, products.py, spatial.py), behind one dispatch table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...model_file import SPATIAL_OPS
from ..common import LayerDraft, UnsupportedModelError, fold_after
from .dense import DenseOps
from .elementwise import ElementwiseOps
from .graph import _attribute, _Graph
from .moving import MovingOps
from .products import ProductOps
from .spatial import SpatialOps

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
    "Conv": "an engine conv2d layer (NCHW in the graph, NHWC in the engine: the first dense layer after it takes "
            "its rows in that order); pads, strides, auto_pad, a bias; group and dilations other than 1 are refused; "
            "a BatchNormalization right after it folds into it",
    "MaxPool, AveragePool": "engine max_pool, avg_pool (pads, strides, `count_include_pad` either way; "
                            "`ceil_mode=1` where its windows fit the map, and on MaxPool as more end padding; "
                            "pads as large as the window are refused)",
    "GlobalAveragePool, GlobalMaxPool": "engine global_avg_pool, global_max_pool",
    "ReduceMean, ReduceMax": "engine global_avg_pool, global_max_pool, over an image's height and width only "
                             "(axes [2, 3], keepdims either way: PyTorch's AdaptiveAvgPool2d(1), x.mean((2, 3)))",
    "Identity, Dropout": "the identity at inference",
    "Constant": "a constant input of the ops above, like an initializer",
}


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


class _GraphBuilder(DenseOps, ElementwiseOps, MovingOps, ProductOps, SpatialOps):
    """Walks the chain once, folding what folds and emitting engine layers. The affine bookkeeping
    is the Keras exporter's (export/keras.py's _ChainBuilder): an affine map folds into the dense layer
    before it while that one has no activation; otherwise it waits ("pending", per element of the
    current tensor) and folds into the next dense layer's rows; when something else needs the values
    first, it becomes a scale_shift engine layer."""

    # op type -> the method that handles it, from each family's table.
    HANDLERS = {**DenseOps.HANDLERS, **ElementwiseOps.HANDLERS, **MovingOps.HANDLERS, **SpatialOps.HANDLERS}

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
        if not any(d.op == "dense" or d.op in SPATIAL_OPS for d in self.drafts):
            raise UnsupportedModelError("the graph has no MatMul, Gemm, Conv or pooling node")
        if not np.array_equal(self.index.reshape(-1), np.arange(self.index.size)):
            raise UnsupportedModelError(
                f"the graph's output {self.graph.output!r} holds an image's values in NCHW order (a Flatten of a "
                "Conv or pooling output with more than one pixel and channel), but the engine's rows are NHWC: "
                "end the graph with a MatMul or Gemm, or a global pool, after its last Conv or pooling node")
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

    def _features(self, node, images: bool = False) -> int:
        """The width of the vector a node works on; `images`: an element-wise node may also work on an
        image that a spatial engine layer made (the engine's row holds its values, NHWC)."""
        if images and len(self.shape) == 3 and self.drafts and self.drafts[-1].op in SPATIAL_OPS:
            return int(np.prod(self.shape))
        if len(self.shape) != 1:
            raise self._refuse(node, f"a rank-{len(self.shape) + 1} input (batch, {', '.join(map(str, self.shape))})",
                               "add a Flatten before it")
        return self.shape[0]

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
        per_channel = scale.ndim == 3 and all(np.all(a == a[:, :1, :1]) for a in (scale, offset))
        if last is not None and last.op == "conv2d" and last.activation == "linear" and not self.pending_from \
                and per_channel:
            s, o = scale[:, 0, 0], offset[:, 0, 0]  # one per filter: the kernel's last axis
            last.values = [last.values[0] * s, last.values[1] * s + o]
            last.ends_at = (node.output[0], 1.0, 0.0)
            last.parts.append(f"{described} folded")
            return
        self.scale, self.offset = self.scale * scale, self.offset * scale + offset
        self.pending_from.append(described)

    def _flush(self, tensor: str) -> None:
        """Emit the pending affine map as a scale_shift layer, observable at `tensor`."""
        if not self.pending_from:
            return
        # The map per element of the current tensor, put in the engine row's order (an image's NHWC).
        scale, offset = np.empty(self.index.size), np.empty(self.index.size)
        scale[self.index.reshape(-1)], offset[self.index.reshape(-1)] = self.scale.reshape(-1), self.offset.reshape(-1)
        self.drafts.append(LayerDraft("scale_shift", [scale, offset], ends_at=(tensor, 1.0, 0.0),
                                      parts=list(self.pending_from)))
        self._reset_pending()
