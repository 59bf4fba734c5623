// The version-2 activations compiled for AVX2 + FMA: f32-activation.h is the whole algorithm.
#include "f32-activation.h"

namespace mnist_engine::kernels {

void f32_activation_avx2_fma(uint32_t activation, const float* params, float* y, size_t n) {
  activate_row(Activation(activation), params, y, n);
}

}  // namespace mnist_engine::kernels
