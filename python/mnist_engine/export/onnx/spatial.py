"""ONNX's convolution and pooling (Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, and
ReduceMean / ReduceMax over height and width) as
engine spatial layers (format version 3): handlers of _GraphBuilder.

ONNX images are NCHW; the engine's rows are NHWC. The builder's `index` says where each element of
the current ONNX tensor sits in the engine's row, so after a spatial layer it is the NHWC position
of each (c, y, x), and the first dense layer after a Flatten takes its rows in that order."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ...reference_conv import same_padding
from ..common import LayerDraft


def nhwc_index(channels: int, height: int, width: int) -> np.ndarray:
    """index[c, y, x]: where element (c, y, x) of an NCHW image sits in its NHWC row."""
    return np.arange(height * width * channels).reshape(height, width, channels).transpose(2, 0, 1)


class SpatialOps:
    """The spatial handlers of _GraphBuilder (its state and helpers live there)."""

    HANDLERS = {
        "Conv": "_conv",
        "MaxPool": "_pool",
        "AveragePool": "_pool",
        "GlobalAveragePool": "_global_pool",
        "GlobalMaxPool": "_global_pool",
        "ReduceMean": "_reduce",
        "ReduceMax": "_reduce",
    }

    def _image(self, node) -> Tuple[int, int, int]:
        """The current tensor as (channels, height, width), laid out in the engine's row as NHWC."""
        if len(self.shape) != 3:
            raise self._refuse(node, f"data of shape (batch, {', '.join(map(str, self.shape))})",
                               "(batch, channels, height, width) images are")
        if not np.array_equal(self.index, nhwc_index(*self.shape)):
            raise self._refuse(node, "an image whose values were moved (a multi-channel input, a Transpose)",
                               "a one-channel input, or the output of a Conv or pooling node, is")
        self._flush(node.input[0])
        return self.shape

    def _window_attributes(self, node, window: Tuple[int, int], channels_hw: Tuple[int, int]):
        """strides and pads (top, bottom, left, right) of a windowed node; refuses what the engine lacks."""
        if any(d != 1 for d in self._attribute(node, "dilations", [1, 1])):
            raise self._refuse(node, f"dilations={list(self._attribute(node, 'dilations', []))}", "dilations 1 are")
        strides = tuple(int(s) for s in self._attribute(node, "strides", [1, 1]))
        auto_pad = self._attribute(node, "auto_pad", "NOTSET")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            (top, bottom), (left, right) = (same_padding(channels_hw[i], window[i], strides[i]) for i in range(2))
            pads = (top, bottom, left, right) if auto_pad == "SAME_UPPER" else (bottom, top, right, left)
        elif auto_pad in ("NOTSET", "VALID"):
            begin_h, begin_w, end_h, end_w = (int(p) for p in self._attribute(node, "pads", [0, 0, 0, 0]))
            pads = (begin_h, end_h, begin_w, end_w) if auto_pad == "NOTSET" else (0, 0, 0, 0)
        else:
            raise self._refuse(node, f"auto_pad={auto_pad!r}", "NOTSET, VALID, SAME_UPPER or SAME_LOWER is")
        if pads[0] >= window[0] or pads[1] >= window[0] or pads[2] >= window[1] or pads[3] >= window[1]:
            raise self._refuse(node, f"pads {list(pads)} for a {window[0]}x{window[1]} window",
                               "pads smaller than the window are (a window of padding alone has no value)")
        return strides, pads

    def _emit(self, node, draft: LayerDraft, channels: int, height: int, width: int) -> None:
        self.drafts.append(draft)
        self.shape = (channels, height, width)
        self.index = nhwc_index(*self.shape)
        self._reset_pending()

    def _conv(self, node, _) -> None:
        if int(self._attribute(node, "group", 1)) != 1:
            raise self._refuse(node, f"group={self._attribute(node, 'group', 1)}", "group=1 is")
        channels, height, width = self._image(node)
        weight = self._constant(node, 1)  # (F, C, kh, kw)
        if weight.ndim != 4 or weight.shape[1] != channels:
            raise self._refuse(node, f"a weight of shape {weight.shape} on {channels} channels",
                               f"(filters, {channels}, kh, kw) is")
        filters, window = weight.shape[0], (weight.shape[2], weight.shape[3])
        bias = self._constant(node, 2, np.zeros(filters)).reshape(-1)
        strides, pads = self._window_attributes(node, window, (height, width))
        draft = LayerDraft("conv2d", [weight.transpose(2, 3, 1, 0), bias], ends_at=(node.output[0], 1.0, 0.0),
                           parts=[f"{self.graph.describe(node)} {window[0]}x{window[1]}, {channels}->{filters}"],
                           geometry={"input_shape": (height, width, channels), "strides": strides, "pads": pads})
        out_h = (height + pads[0] + pads[1] - window[0]) // strides[0] + 1
        out_w = (width + pads[2] + pads[3] - window[1]) // strides[1] + 1
        self._emit(node, draft, filters, out_h, out_w)

    def _ceil_mode_pads(self, node, window, strides, pads, size_hw) -> Tuple[int, int, int, int]:
        """ceil_mode=1 (PyTorch's MaxPool2d(ceil_mode=True)) as pads: where ceil and floor give the
        same windows (an even map under a 2x2 pool) nothing changes; where ceil adds a last, partial
        window, a max pool's padding is -inf, so that window is the floor one over more bottom or
        right padding (a window starting past the image and its begin padding is dropped, as
        PyTorch and ONNX drop it). An average pool's partial windows divide by counts the engine's
        flags do not express: refused where ceil changes its output."""
        padded = list(pads)
        for axis, (size, k, s) in enumerate(zip(size_hw, window, strides)):
            begin, end = pads[2 * axis], pads[2 * axis + 1]
            span = size + begin + end - k
            floor_out = span // s + 1
            ceil_out = -(-span // s) + 1
            if (ceil_out - 1) * s >= size + begin:
                ceil_out -= 1
            if ceil_out == floor_out:
                continue
            if node.op_type != "MaxPool":
                raise self._refuse(node, "ceil_mode=1 where it adds a partial window",
                                   "ceil_mode=0, or ceil_mode=1 where the windows fit the map exactly, is")
            # The last window starts inside the image and its begin padding, so the end padding it
            # needs stays below the window, as the format requires.
            padded[2 * axis + 1] = end + (ceil_out - 1) * s + k - (size + begin + end)
        return tuple(padded)

    def _pool(self, node, _) -> None:
        channels, height, width = self._image(node)
        if int(self._attribute(node, "storage_order", 0)):
            raise self._refuse(node, "storage_order=1", "storage_order=0 is")
        if len(node.output) > 1 and node.output[1]:
            raise self._refuse(node, "its Indices output", "the values alone are")
        window = tuple(int(k) for k in self._attribute(node, "kernel_shape", []))
        if len(window) != 2:
            raise self._refuse(node, f"kernel_shape={list(window)}", "a 2-D kernel_shape is")
        strides, pads = self._window_attributes(node, window, (height, width))
        if int(self._attribute(node, "ceil_mode", 0)):
            pads = self._ceil_mode_pads(node, window, strides, pads, (height, width))
        average = node.op_type == "AveragePool"
        draft = LayerDraft("avg_pool" if average else "max_pool", [], ends_at=(node.output[0], 1.0, 0.0),
                           parts=[f"{self.graph.describe(node)} {window[0]}x{window[1]}"],
                           geometry={"input_shape": (height, width, channels), "window": window, "strides": strides,
                                     "pads": pads,
                                     **({"count_padding": bool(self._attribute(node, "count_include_pad", 0))}
                                        if average else {})})
        out_h = (height + pads[0] + pads[1] - window[0]) // strides[0] + 1
        out_w = (width + pads[2] + pads[3] - window[1]) // strides[1] + 1
        self._emit(node, draft, channels, out_h, out_w)

    def _reduce(self, node, _) -> None:
        """ReduceMean / ReduceMax over an image's height and width: a global pool (PyTorch's
        AdaptiveAvgPool2d(1) and x.mean((2, 3)) as the dynamo exporter writes them). keepdims=0
        leaves the (batch, channels) vector that a Flatten would."""
        if len(self.shape) != 3:
            raise self._refuse(node, f"a reduction of data of shape (batch, {', '.join(map(str, self.shape))})",
                               "a reduction over an image's height and width is")
        axes = self._attribute(node, "axes", None)
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self._constant(node, 1).astype(int).reshape(-1).tolist()
        if axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            raise self._refuse(node, f"axes={None if axes is None else list(axes)}",
                               "a reduction over the height and width, axes [2, 3], is")
        self._global_pool(node, _)
        if not int(self._attribute(node, "keepdims", 1)):
            self.shape = (self.shape[0],)
            self.index = np.arange(self.shape[0])
            self._reset_pending()

    def _global_pool(self, node, _) -> None:
        channels, height, width = self._image(node)
        op = "global_avg_pool" if node.op_type in ("GlobalAveragePool", "ReduceMean") else "global_max_pool"
        draft = LayerDraft(op, [], ends_at=(node.output[0], 1.0, 0.0), parts=[self.graph.describe(node)],
                           geometry={"input_shape": (height, width, channels)})
        self._emit(node, draft, channels, 1, 1)
