// Pooling for the baseline ISA (SSE2 on x86-64): f32-pool.h is the whole algorithm.
#include "f32-pool.h"

namespace mnist_engine::kernels {

void f32_pool_scalar(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y) {
  pool_image(op, x, g, out, y);
}

}  // namespace mnist_engine::kernels
