// Pooling compiled for AVX-512F: f32-pool.h is the whole algorithm.
#include "f32-pool.h"

namespace mnist_engine::kernels {

void f32_pool_avx512f(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y) {
  pool_image(op, x, g, out, y);
}

}  // namespace mnist_engine::kernels
