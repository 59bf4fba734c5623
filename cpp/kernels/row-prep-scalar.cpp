// Row preparation, portable versions: the reference for the SIMD ones in row-prep-*.cpp.
#include "kernels.h"

namespace mnist_engine::kernels {

void nonzero_index_scalar(const float* x, size_t width, uint16_t* out, uint32_t* block_ends) {
  // Branch-free: every k is written and the count advances past the nonzero ones only, so the
  // cost does not depend on how predictable the zeros are. NaN compares unequal to 0 and is kept.
  uint32_t n = 0;
  for (size_t k = 0; k < width; ++k) {
    out[n] = static_cast<uint16_t>(k);
    n += x[k] != 0.0f;
    if ((k + 1) % kIndexBlock == 0 || k + 1 == width) block_ends[k / kIndexBlock] = n;
  }
}

void pixels_to_float_scalar(const uint8_t* pixels, size_t n, double scale, float* out) {
  // Scaling in double and rounding once gives each pixel the float nearest v * scale, which for a
  // scale of 1/255 is exactly numpy's float32 `x / 255`.
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(pixels[i] * scale);
}

}  // namespace mnist_engine::kernels
