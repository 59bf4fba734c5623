#include <cmath>

#include "kernels.h"
#include "nearest-even.h"

namespace mnist_engine::kernels {


// The bf16 reference, panel width 1: column j's bf16 weights are contiguous. Products of two
// bf16 values are exact in float32, so each step is one rounding of a sum, in the order
// vdpbf16ps documents (the odd element of each pair first), with its DAZ and FTZ: the bias it
// starts from and every sum are flushed when denormal (the bf16 operands never are: to_bf16
// flushes them).
void bf16_dense_scalar(const QuantDenseArgs& a) {
  const NearestEven rounding;
  const size_t pairs = a.units;
  for (size_t r = 0; r < a.rows; ++r) {
    const uint8_t* x = a.x + r * a.x_stride;
    float* y = a.y + r * a.y_stride;
    for (size_t j = 0; j < a.panels; ++j) {
      const uint8_t* w = a.packed + j * pairs * kUnitBytes;
      float acc = flush_denormal(a.bias[j]);
      for (size_t u = 0; u < pairs; ++u) {
        uint16_t xs[2], ws[2];
        __builtin_memcpy(xs, x + kUnitBytes * u, 4);
        __builtin_memcpy(ws, w + kUnitBytes * u, 4);
        acc = flush_denormal(std::fma(from_bf16(xs[1]), from_bf16(ws[1]), acc));
        acc = flush_denormal(std::fma(from_bf16(xs[0]), from_bf16(ws[0]), acc));
      }
      y[j] = (a.relu && acc < 0.0f) ? 0.0f : acc;
    }
  }
}

}  // namespace mnist_engine::kernels
