// The version-2 activations compiled for the reference, and every CPU's fallback (and AArch64's: NEON is its baseline): f32-activation.h is the whole algorithm.
#include "f32-activation.h"

namespace mnist_engine::kernels {

void f32_activation_scalar(uint32_t activation, const float* params, float* y, size_t n) {
  activate_row(Activation(activation), params, y, n);
}

}  // namespace mnist_engine::kernels
