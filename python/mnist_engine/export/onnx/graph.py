"""An ONNX graph as the exporter reads it: its one input and output, its constants (initializers,
Constant nodes, and the shape arithmetic TorchScript writes, folded), and its live nodes with, for
each tensor, the nodes that read it."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..common import UnsupportedModelError

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
