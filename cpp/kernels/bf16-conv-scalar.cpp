// The bf16 convolution reference, panel width 1 (each filter's units contiguous): each output its
// window's bf16 products summed in float32 as bf16_dense_scalar sums a row (from the flushed
// bias, unit by unit, the odd element of each pair first, DAZ and FTZ), then ReLU. The AMX
// kernel sums in its own order: within the bf16 tolerance of this, not bit for bit.
#include "bf16-reference.h"
#include "kernels.h"

namespace mnist_engine::kernels {

void bf16_conv_scalar(const QuantConvArgs& a) {
  const NearestEven rounding;
  const size_t row = a.padded_w * a.channels;
  for (size_t oy = 0; oy < a.out_h; ++oy)
    for (size_t ox = 0; ox < a.out_w; ++ox) {
      const uint8_t* window = a.x + oy * a.stride_h * row + ox * a.stride_w * a.channels;
      float* y = a.y + (oy * a.out_w + ox) * a.y_stride;
      for (size_t f = 0; f < a.panels; ++f) {
        float acc = flush_denormal(a.bias[f]);
        const uint8_t* w = reinterpret_cast<const uint8_t*>(a.packed) + f * a.window_h * a.units * kUnitBytes;
        for (size_t ky = 0; ky < a.window_h; ++ky)
          acc = bf16_unit_products(acc, window + ky * row, w + ky * a.units * kUnitBytes, a.units);
        y[f] = (a.relu && acc < 0.0f) ? 0.0f : acc;
      }
    }
}

}  // namespace mnist_engine::kernels
