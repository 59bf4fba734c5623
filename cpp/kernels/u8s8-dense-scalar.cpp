#include <cmath>

#include "kernels.h"

namespace mnist_engine::kernels {

// The int8 reference, panel width 1: column j's int8 weights are contiguous (units * 4 bytes), so
// each output is a plain integer dot product. Every int8 kernel must match it bit for bit.
void u8s8_dense_scalar(const QuantDenseArgs& a) {
  const size_t in = a.units * kUnitBytes;
  for (size_t r = 0; r < a.rows; ++r) {
    const uint8_t* x = a.x + r * a.x_stride;
    float* y = a.y + r * a.y_stride;
    for (size_t j = 0; j < a.panels; ++j) {
      const auto* w = reinterpret_cast<const int8_t*>(a.packed) + j * in;
      // uint32 arithmetic wraps where int32 would overflow (undefined); the true sum
      // x . w - zero * sum(w) = sum((x - zero) * w) always fits in int32.
      uint32_t acc = 0;
      for (size_t k = 0; k < in; ++k) acc += static_cast<uint32_t>(int32_t(x[k]) * int32_t(w[k]));
      acc -= static_cast<uint32_t>(a.row_zero[r]) * static_cast<uint32_t>(a.col_sum[j]);
      const float v = std::fma(static_cast<float>(static_cast<int32_t>(acc)), a.row_scale[r] * a.col_scale[j], a.bias[j]);
      y[j] = (a.relu && v < 0.0f) ? 0.0f : v;
    }
  }
}

}  // namespace mnist_engine::kernels
