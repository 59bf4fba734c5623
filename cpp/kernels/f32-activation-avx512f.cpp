// The version-2 activations compiled for AVX-512F: f32-activation.h is the whole algorithm.
#include "f32-activation.h"

namespace mnist_engine::kernels {

void f32_activation_avx512f(uint32_t activation, const float* params, float* y, size_t n) {
  activate_row(Activation(activation), params, y, n);
}

}  // namespace mnist_engine::kernels
