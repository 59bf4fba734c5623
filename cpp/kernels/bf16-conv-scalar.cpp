// The bf16 convolution reference, panel width 1 (each filter's units contiguous): each output the
// bias plus its window's bf16 products, summed unit by unit in the order vdpbf16ps documents (the
// odd element of each pair first), with its DAZ and FTZ, as bf16_dense_scalar sums a row.
#include <cmath>

#include "kernels.h"
#include "nearest-even.h"

namespace mnist_engine::kernels {

void bf16_conv_scalar(const QuantConvArgs& a) {
  const NearestEven rounding;
  const size_t row = a.padded_w * a.pixel_bytes, units = (a.window_w * a.pixel_bytes + kUnitBytes - 1) / kUnitBytes;
  for (size_t oy = 0; oy < a.out_h; ++oy)
    for (size_t ox = 0; ox < a.out_w; ++ox) {
      const uint8_t* window = a.x + oy * a.stride_h * row + ox * a.stride_w * a.pixel_bytes;
      float* y = a.y + (oy * a.out_w + ox) * a.y_stride;
      for (size_t f = 0; f < a.panels; ++f) {
        float acc = flush_denormal(a.bias[f]);
        for (size_t ky = 0; ky < a.window_h; ++ky) {
          const int8_t* w = a.packed + (f * a.window_h + ky) * units * kUnitBytes;
          for (size_t u = 0; u < units; ++u) {
            uint16_t xs[2], ws[2];
            __builtin_memcpy(xs, window + ky * row + kUnitBytes * u, 4);
            __builtin_memcpy(ws, w + kUnitBytes * u, 4);
            acc = flush_denormal(std::fma(from_bf16(xs[1]), from_bf16(ws[1]), acc));
            acc = flush_denormal(std::fma(from_bf16(xs[0]), from_bf16(ws[0]), acc));
          }
        }
        y[f] = (a.relu && acc < 0.0f) ? 0.0f : acc;
      }
    }
}

}  // namespace mnist_engine::kernels
