// Pooling (format version 3) on one image, NHWC, scalar: the engine's only version (pooling is a small
// share of a CNN's work; convolution runs as a dense layer over im2col rows, Engine::run_conv).
#include "kernels.h"

namespace mnist_engine::kernels {

// Max pooling ignores the padding (as -inf would); average pooling divides by the window's real
// pixels (Keras's 'same') or, with kCountPadding, by the whole window (ONNX count_include_pad=1).
void f32_pool_scalar(Op op, const float* x, const Geometry& g, float* y) {
  const size_t C = g.in.channels, W = g.in.width, H = g.in.height;
  if (op == Op::GlobalAvgPool || op == Op::GlobalMaxPool) {
    for (size_t c = 0; c < C; ++c) {
      float acc = x[c];
      for (size_t p = 1; p < H * W; ++p) {
        const float v = x[p * C + c];
        acc = op == Op::GlobalMaxPool ? (v > acc || v != v ? v : acc) : acc + v;
      }
      y[c] = op == Op::GlobalMaxPool ? acc : acc / float(H * W);
    }
    return;
  }
  const ImageShape out = output_shape(op, g);
  const bool max = op == Op::MaxPool;
  for (uint32_t oy = 0; oy < out.height; ++oy)
    for (uint32_t ox = 0; ox < out.width; ++ox) {
      float* o = y + (size_t(oy) * out.width + ox) * C;
      uint32_t count = 0;
      for (uint32_t ky = 0; ky < g.window_h; ++ky) {
        const int64_t iy = int64_t(oy) * g.stride_h + ky - g.pad_top;
        if (iy < 0 || iy >= int64_t(H)) continue;
        for (uint32_t kx = 0; kx < g.window_w; ++kx) {
          const int64_t ix = int64_t(ox) * g.stride_w + kx - g.pad_left;
          if (ix < 0 || ix >= int64_t(W)) continue;
          const float* in = x + (size_t(iy) * W + size_t(ix)) * C;
          for (size_t c = 0; c < C; ++c) {
            const float v = in[c];
            // NaN propagates through max, as in Keras.
            o[c] = count == 0 ? v : max ? (v > o[c] || v != v ? v : o[c]) : o[c] + v;
          }
          ++count;
        }
      }
      if (!max) {
        const float divisor = float(g.flags & Geometry::kCountPadding ? g.window_h * g.window_w : count);
        for (size_t c = 0; c < C; ++c) o[c] /= divisor;
      }
    }
}

}  // namespace mnist_engine::kernels
