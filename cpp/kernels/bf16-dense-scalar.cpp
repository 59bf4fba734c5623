#include "bf16-reference.h"
#include "kernels.h"

namespace mnist_engine::kernels {

// The bf16 reference, panel width 1: column j's bf16 weights are contiguous. From the bias,
// flushed when denormal, the row's products summed as bf16_unit_products documents.
void bf16_dense_scalar(const QuantDenseArgs& a) {
  const NearestEven rounding;
  const size_t pairs = a.units;
  for (size_t r = 0; r < a.rows; ++r) {
    const uint8_t* x = a.x + r * a.x_stride;
    float* y = a.y + r * a.y_stride;
    for (size_t j = 0; j < a.panels; ++j) {
      const uint8_t* w = a.packed + j * pairs * kUnitBytes;
      const float acc = bf16_unit_products(flush_denormal(a.bias[j]), x, w, pairs);
      y[j] = (a.relu && acc < 0.0f) ? 0.0f : acc;
    }
  }
}

}  // namespace mnist_engine::kernels
