"""ONNX ops that move values without computing them (Flatten, Reshape, Transpose) or pass them on
(Identity, Dropout at inference): handlers of _GraphBuilder."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ...model_file import SPATIAL_OPS
from .graph import BATCH


class MovingOps:
    """The moving handlers of _GraphBuilder (its state and helpers live there)."""

    HANDLERS = {
        "Flatten": "_flatten",
        "Reshape": "_reshape",
        "Transpose": "_transpose",
        "Identity": "_identity",
        "Dropout": "_dropout",
    }

    def _identity(self, node, _) -> None:
        pass

    def _dropout(self, node, _) -> None:
        name = node.input[2] if len(node.input) > 2 else ""
        if name and (name not in self.graph.constants or bool(np.asarray(self.graph.constants[name]))):
            raise self._refuse(node, "training_mode that is not a constant False", "inference mode is")

    def _reshape_to(self, node, shape: Tuple[int, ...], transform=None) -> None:
        if self.drafts and self.drafts[-1].op not in SPATIAL_OPS:
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
