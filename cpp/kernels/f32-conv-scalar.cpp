// The reference convolution: one output at a time, with the packing of panel width 1 (each filter's
// weights contiguous). The most obviously correct form; the direct SIMD kernels (conv-direct.h) are
// tested against it, and it sums as they do: in (ky, kx, c) order from the bias, and where
// conv_sums_rows_apart, window row 0 onto the bias, each later row from zero and then added.
#include "kernels.h"

namespace mnist_engine::kernels {

void f32_conv_scalar(const ConvArgs& a) {
  const size_t segment = a.window_w * a.channels, depth = a.window_h * segment;
  const size_t row_step = a.padded_w * a.channels;
  const bool apart = conv_sums_rows_apart(a.window_h, segment);
  for (size_t oy = 0; oy < a.out_h; ++oy)
    for (size_t ox = 0; ox < a.out_w; ++ox) {
      const float* window = a.x + oy * a.stride_h * row_step + ox * a.stride_w * a.channels;
      float* y = a.y + (oy * a.out_w + ox) * a.y_stride;
      for (size_t f = 0; f < a.panels; ++f) {
        const float* w = a.packed + f * depth;
        float acc = a.bias[f];
        for (size_t ky = 0; ky < a.window_h; ++ky) {
          float row = apart && ky > 0 ? 0.0f : acc;
          for (size_t t = 0; t < segment; ++t) row += window[ky * row_step + t] * w[ky * segment + t];
          acc = apart && ky > 0 ? acc + row : row;
        }
        y[f] = (a.relu && acc < 0.0f) ? 0.0f : acc;
      }
    }
}

}  // namespace mnist_engine::kernels
