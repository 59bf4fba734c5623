"""x * g(x): a tensor that feeds two chains which meet again in a Mul, matched against the activations
written that way (SiLU, Mish, HardSwish, erf-GELU, as torch.onnx.export writes them). Handlers of
_GraphBuilder (the walk calls _product where a tensor has two readers)."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import numpy as np

from ..common import UnsupportedModelError
from .elementwise import _ELEMENTWISE_AFFINE, _close, _is_identity


class ProductOps:
    """The product handlers of _GraphBuilder (its state and helpers live there)."""

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
