// The int8 convolution reference, panel width 1 (each filter's units contiguous): each output an
// integer dot product over its window, then u8s8_dense_scalar's epilogue. Every int8 conv kernel
// must match it bit for bit.
#include <cmath>

#include "kernels.h"

namespace mnist_engine::kernels {

void u8s8_conv_scalar(const QuantConvArgs& a) {
  const size_t row = a.padded_w * a.channels, units = a.units;
  for (size_t oy = 0; oy < a.out_h; ++oy)
    for (size_t ox = 0; ox < a.out_w; ++ox) {
      const uint8_t* window = a.x + oy * a.stride_h * row + ox * a.stride_w * a.channels;
      float* y = a.y + (oy * a.out_w + ox) * a.y_stride;
      for (size_t f = 0; f < a.panels; ++f) {
        // uint32 arithmetic wraps where int32 would overflow (undefined), as in u8s8_dense_scalar.
        uint32_t acc = 0;
        for (size_t ky = 0; ky < a.window_h; ++ky) {
          const int8_t* w = a.packed + (f * a.window_h + ky) * units * kUnitBytes;
          for (size_t t = 0; t < units * kUnitBytes; ++t)
            acc += static_cast<uint32_t>(int32_t(window[ky * row + t]) * int32_t(w[t]));
        }
        acc -= static_cast<uint32_t>(a.zero) * static_cast<uint32_t>(a.col_sum[f]);
        const float v = std::fma(static_cast<float>(static_cast<int32_t>(acc)), a.scale * a.col_scale[f], a.bias[f]);
        y[f] = (a.relu && v < 0.0f) ? 0.0f : v;
      }
    }
}

}  // namespace mnist_engine::kernels
