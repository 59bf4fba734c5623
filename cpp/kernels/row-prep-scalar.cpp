// Row preparation, portable versions: the reference for the SIMD ones in row-prep-*.cpp.
#include "kernels.h"

namespace mnist_engine::kernels {

void nonzero_index_scalar(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range) {
  nonzero_index_tail(x, 0, width, out, 0, block_ends);
  if (range) widen_range(x, 0, width, range);
}

void pixels_to_float_scalar(const uint8_t* pixels, size_t n, double scale, float* out) {
  // Scaling in double and rounding once gives each pixel the float nearest v * scale, which for a
  // scale of 1/255 is exactly numpy's float32 `x / 255`.
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(pixels[i] * scale);
}

}  // namespace mnist_engine::kernels
