// Pooling (format version 3) on one NHWC image, written so that the compiler vectorises the channel
// loops (selects, not branches): each f32-pool-<isa>.cpp includes it under its own ISA flags, so one
// source gives the scalar, AVX2 and AVX-512 versions (as f32-activation.h does for activations).
// Every version sums and compares in the same order, so they agree to the bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each ISA's file gets its own copy (see kernels.h)

// max that propagates NaN from either side, as Keras's max pooling does.
inline float max_keep_nan(float acc, float v) { return v > acc || v != v ? v : acc; }

// o[c] = x[c], then folded with each further pixel's channels.
inline void combine(bool max, const float* __restrict x, float* __restrict o, size_t channels) {
  if (max)
    for (size_t c = 0; c < channels; ++c) o[c] = max_keep_nan(o[c], x[c]);
  else
    for (size_t c = 0; c < channels; ++c) o[c] += x[c];
}

// Max pooling ignores the padding (as -inf would); average pooling divides by the window's real
// pixels (Keras's 'same') or, with kCountPadding, by the whole window (ONNX count_include_pad=1).
// The format guarantees pads smaller than the window, so every window holds a real pixel.
inline void pool_image(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y) {
  const size_t C = g.in.channels, W = g.in.width, H = g.in.height;
  if (op == Op::GlobalAvgPool || op == Op::GlobalMaxPool) {
    const bool max = op == Op::GlobalMaxPool;
    for (size_t c = 0; c < C; ++c) y[c] = x[c];
    for (size_t p = 1; p < H * W; ++p) combine(max, x + p * C, y, C);
    if (!max)
      for (size_t c = 0; c < C; ++c) y[c] /= float(H * W);
    return;
  }
  const bool max = op == Op::MaxPool;
  if (max && g.window_h == 2 && g.window_w == 2 && !(g.pad_top | g.pad_bottom | g.pad_left | g.pad_right)) {
    // The MNIST CNNs' pool: each output one pass over its 4 pixels' channels, which the compiler
    // keeps in registers (the general loop below folds through memory), in the same order.
    for (size_t oy = 0; oy < out.height; ++oy)
      for (size_t ox = 0; ox < out.width; ++ox) {
        const float* __restrict a = x + (oy * g.stride_h * W + ox * g.stride_w) * C;
        const float* __restrict b = a + C;
        const float* __restrict d = a + W * C;
        const float* __restrict e = d + C;
        float* __restrict o = y + (oy * out.width + ox) * C;
        for (size_t c = 0; c < C; ++c) o[c] = max_keep_nan(max_keep_nan(max_keep_nan(a[c], b[c]), d[c]), e[c]);
      }
    return;
  }
  for (size_t oy = 0; oy < out.height; ++oy) {
    // The window's real rows and columns: [top, bottom) x [left, right) of the image.
    const int64_t top_edge = int64_t(oy * g.stride_h) - g.pad_top;
    const size_t top = top_edge < 0 ? 0 : size_t(top_edge);
    const size_t bottom = size_t(top_edge + g.window_h) < H ? size_t(top_edge + g.window_h) : H;
    for (size_t ox = 0; ox < out.width; ++ox) {
      const int64_t left_edge = int64_t(ox * g.stride_w) - g.pad_left;
      const size_t left = left_edge < 0 ? 0 : size_t(left_edge);
      const size_t right = size_t(left_edge + g.window_w) < W ? size_t(left_edge + g.window_w) : W;
      float* o = y + (oy * out.width + ox) * C;
      for (size_t c = 0; c < C; ++c) o[c] = x[(top * W + left) * C + c];
      for (size_t iy = top; iy < bottom; ++iy)
        for (size_t ix = iy == top ? left + 1 : left; ix < right; ++ix) combine(max, x + (iy * W + ix) * C, o, C);
      if (!max) {
        const float divisor = float(g.flags & Geometry::kCountPadding ? g.window_h * g.window_w
                                                                       : (bottom - top) * (right - left));
        for (size_t c = 0; c < C; ++c) o[c] /= divisor;
      }
    }
  }
}

}  // namespace
}  // namespace mnist_engine::kernels
