"""ONNX's element-wise ops: affine maps by constants (Add, Sub, Mul, Div, BatchNormalization), which
fold into a neighbouring dense layer or wait as a pending scale and shift; the activations, which
merge into the layer before them; LayerNormalization, an engine op. Handlers of _GraphBuilder."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...reference import SELU_ALPHA, SELU_SCALE
from ..common import LayerDraft


def _is_identity(scale: float, offset: float) -> bool:
    return scale == 1.0 and offset == 0.0


def _close(a: float, b: float) -> bool:
    """Equal up to the float32 rounding of a constant stored in the graph."""
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


_ELEMENTWISE_AFFINE = ("Add", "Sub", "Mul", "Div")


class ElementwiseOps:
    """The elementwise handlers of _GraphBuilder (its state and helpers live there)."""

    HANDLERS = {
        "Add": "_binary",
        "Sub": "_binary",
        "Mul": "_binary",
        "Div": "_binary",
        "BatchNormalization": "_batch_norm",
        "LayerNormalization": "_layer_norm",
        "Relu": "_named",
        "Sigmoid": "_named",
        "Tanh": "_named",
        "Softplus": "_named",
        "Softsign": "_named",
        "Exp": "_named",
        "Mish": "_named",
        "HardSwish": "_named",
        "LeakyRelu": "_alpha",
        "Elu": "_alpha",
        "Selu": "_selu",
        "Gelu": "_gelu",
        "HardSigmoid": "_hard_sigmoid",
        "Clip": "_clip",
        "PRelu": "_prelu",
        "Softmax": "_softmax",
        "LogSoftmax": "_softmax",
    }

    NAMED = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
             "Exp": "exponential", "Mish": "mish", "HardSwish": "hard_silu", "LeakyRelu": "leaky_relu", "Elu": "elu",
             "Softmax": "softmax", "LogSoftmax": "log_softmax"}

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

    def _activation(self, node, activation: str, parameters: Tuple[float, ...] = (),
                    before: Optional[Tuple[float, float]] = None, after: Tuple[float, float] = (1.0, 0.0),
                    described: str = "") -> None:
        """Apply `activation` to the current tensor, after the scalar affine map `before` and followed
        by `after`, (s, o): the graph's tensor at `node`'s output is s * activation + o."""
        features = self._features(node, images=activation not in ("softmax", "log_softmax", "prelu"))
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
