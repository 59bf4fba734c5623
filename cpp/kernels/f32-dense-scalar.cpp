#include "f32-fma-peak.h"
#include "kernels.h"

namespace mnist_engine::kernels {

// Panel width 1 makes the packed layout the transposed kernel, so each output is a plain dot
// product: the most obviously correct form, which is what a reference should be. It is summed as
// the SIMD kernels sum it (dense-sparse-rows.h): each block of kIndexBlock inputs from zero, then
// added to the bias and the blocks before it.
void f32_dense_scalar(const DenseArgs& a) {
  for (size_t r = 0; r < a.rows; ++r) {
    const float* x = a.x + r * a.x_stride;
    float* y = a.y + r * a.y_stride;
    for (size_t j = 0; j < a.panels; ++j) {
      const float* w = a.packed + j * a.in;
      float acc = a.bias[j];
      for (size_t k0 = 0; k0 < a.in; k0 += kIndexBlock) {
        const size_t k1 = k0 + kIndexBlock < a.in ? k0 + kIndexBlock : a.in;
        float block = 0.0f;
        for (size_t k = k0; k < k1; ++k) block += x[k] * w[k];
        acc += block;
      }
      y[j] = (a.relu && acc < 0.0f) ? 0.0f : acc;
    }
  }
}

namespace {
struct Scalar {
  using V = float;
  static constexpr size_t kLanes = 1;
  static V broadcast(const float* p) { return *p; }
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static void store(float* p, V v) { *p = v; }
};
}  // namespace

float fma_peak_scalar(uint64_t iterations) { return fma_peak_loop<Scalar>(iterations); }

}  // namespace mnist_engine::kernels
