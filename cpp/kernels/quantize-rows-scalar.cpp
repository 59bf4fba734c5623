// Row preparation for the reduced-precision kernels, scalar: the reference the SIMD versions
// (quantize-rows-avx2.cpp, quantize-rows-avx512f.cpp) must match byte for byte.
#include "kernels.h"

namespace mnist_engine::kernels {

void unit_index_scalar(const uint8_t* x, size_t units, uint16_t* out, uint32_t* block_ends) {
  unit_index_tail(x, 0, units, out, 0, block_ends);
}

void quantize_rows_u8_scalar(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                             size_t out_stride, float* scale, int32_t* zero, float* range) {
  for (size_t r = 0; r < rows; ++r) {
    const float* in = x + r * x_stride;
    float lo = 0.0f, hi = 0.0f;
    bool finite = true;
    for (size_t k = 0; k < width; ++k) {
      lo = in[k] < lo ? in[k] : lo;
      hi = in[k] > hi ? in[k] : hi;
      finite &= in[k] - in[k] == 0.0f;
    }
    if (range) widen_range(in, 0, width, range);
    const RowQuantization q = quantization_params(lo, hi, finite);
    uint8_t* row = out + r * out_stride;
    for (size_t k = 0; k < width; ++k) row[k] = quantize_value(in[k], q);
    __builtin_memset(row + width, 0, out_stride - width);
    scale[r] = q.scale;
    zero[r] = static_cast<int32_t>(q.zero);
  }
}

void convert_rows_bf16_scalar(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                              size_t out_stride, float*, int32_t*, float* range) {
  for (size_t r = 0; r < rows; ++r) {
    if (range) widen_range(x + r * x_stride, 0, width, range);
    uint8_t* row = out + r * out_stride;
    for (size_t k = 0; k < width; ++k) {
      const uint16_t h = to_bf16(x[r * x_stride + k]);
      __builtin_memcpy(row + 2 * k, &h, 2);
    }
    __builtin_memset(row + 2 * width, 0, out_stride - 2 * width);
  }
}

}  // namespace mnist_engine::kernels
