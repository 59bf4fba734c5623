"""ONNX's matrix products as engine dense layers (MatMul, Gemm): handlers of _GraphBuilder."""
from __future__ import annotations

import numpy as np

from ..common import LayerDraft, fold_before, rows_in_input_order


class DenseOps:
    """The dense handlers of _GraphBuilder (its state and helpers live there)."""

    HANDLERS = {
        "MatMul": "_matmul",
        "Gemm": "_gemm",
    }

    def _dense(self, node, kernel: np.ndarray, bias: np.ndarray) -> None:
        features = self._features(node)
        if kernel.ndim != 2 or kernel.shape[0] != features:
            raise self._refuse(node, f"a weight of shape {kernel.shape} on {features} features",
                               f"a 2-D weight with {features} rows is")
        described = [f"{self.graph.describe(node)} {kernel.shape[0]}->{kernel.shape[1]}"]
        if self.pending_from:
            kernel, bias = fold_before(kernel, bias, self.scale, self.offset)
            described = [f"{', '.join(self.pending_from)} folded into"] + described
        if not np.array_equal(self.index, np.arange(self.index.size)):  # moved inputs, or an NHWC image
            kernel = rows_in_input_order(kernel, self.index)
        self.drafts.append(LayerDraft("dense", [kernel, bias], ends_at=(node.output[0], 1.0, 0.0),
                                      parts=described))
        self.shape = (kernel.shape[1],)
        self.index = np.arange(kernel.shape[1])  # the row is this layer's outputs, in order
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
