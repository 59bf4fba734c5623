#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {

constexpr size_t kNR = kAvx2PanelWidth;
constexpr size_t kMR = 4;

// MR rows x 16 columns: 2*MR accumulators, 2 weight registers and one broadcast stay within the
// 16 ymm registers for MR = 4 without spilling.
template <size_t MR>
inline void tile(const DenseArgs& a, const float* x, const float* w, const float* b, float* y) {
  __m256 acc[MR][2];
  const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
  for (size_t r = 0; r < MR; ++r) acc[r][0] = b0, acc[r][1] = b1;
  for (size_t k = 0; k < a.in; ++k) {
    const __m256 w0 = _mm256_loadu_ps(w + k * kNR), w1 = _mm256_loadu_ps(w + k * kNR + 8);
    for (size_t r = 0; r < MR; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * a.x_stride + k);
      acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
    }
  }
  if (a.relu) {
    // max_ps returns its second operand when either is NaN: with the accumulator second, a NaN
    // input propagates as it does in Keras instead of becoming 0.
    const __m256 zero = _mm256_setzero_ps();
    for (size_t r = 0; r < MR; ++r)
      acc[r][0] = _mm256_max_ps(zero, acc[r][0]), acc[r][1] = _mm256_max_ps(zero, acc[r][1]);
  }
  for (size_t r = 0; r < MR; ++r) {
    _mm256_storeu_ps(y + r * a.y_stride, acc[r][0]);
    _mm256_storeu_ps(y + r * a.y_stride + 8, acc[r][1]);
  }
}

}  // namespace

void f32_dense_4x16_avx2_fma(const DenseArgs& a) {
  // Panels outer, rows inner: one 16-column panel of weights (in * 64 bytes) stays in L1/L2 while
  // every row of the tile passes over it.
  for (size_t p = 0; p < a.panels; ++p) {
    const float* w = a.packed + p * a.in * kNR;
    const float* b = a.bias + p * kNR;
    size_t r = 0;
    for (; r + kMR <= a.rows; r += kMR)
      tile<kMR>(a, a.x + r * a.x_stride, w, b, a.y + r * a.y_stride + p * kNR);
    const float* x = a.x + r * a.x_stride;
    float* y = a.y + r * a.y_stride + p * kNR;
    switch (a.rows - r) {
      case 3: tile<3>(a, x, w, b, y); break;
      case 2: tile<2>(a, x, w, b, y); break;
      case 1: tile<1>(a, x, w, b, y); break;
      default: break;
    }
  }
}

}  // namespace mnist_engine::kernels
