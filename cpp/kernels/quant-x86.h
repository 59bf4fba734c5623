// Parts shared by the x86 reduced-precision kernels. The int8 epilogue (QuantDenseArgs, and
// QuantConvArgs with the image as its one row):
// zero-point correction, scales, bias and relu, in the order of u8s8_dense_scalar so that every
// kernel's floats are bit-identical to it: the int32 product wraps as the scalar's uint32
// arithmetic does, the conversion rounds to nearest even, and the scale is one fused multiply-add.
// Include it from kernel files only.
#pragma once

#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {

#if defined(__AVX512F__)
// 16 outputs from their int32 sums: one row's zero point and scale, 16 columns' numbers.
inline void u8s8_epilogue_512(__m512i acc, int32_t zero, float row_scale, const int32_t* col_sum,
                              const float* col_scale, const float* bias, bool relu, float* y) {
  if (zero) acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(zero), _mm512_loadu_si512(col_sum)));
  const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(row_scale), _mm512_loadu_ps(col_scale));
  __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, _mm512_loadu_ps(bias));
  if (relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN (second operand) propagates
  _mm512_storeu_ps(y, v);
}
inline void u8s8_finish_512(__m512i acc, const QuantDenseArgs& a, size_t r, size_t col, float* y) {
  u8s8_epilogue_512(acc, a.row_zero[r], a.row_scale[r], a.col_sum + col, a.col_scale + col, a.bias + col, a.relu, y);
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
inline void u8s8_epilogue_256(__m256i acc, int32_t zero, float row_scale, const int32_t* col_sum,
                              const float* col_scale, const float* bias, bool relu, float* y) {
  if (zero)
    acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(zero),
                                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col_sum))));
  const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(row_scale), _mm256_loadu_ps(col_scale));
  __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), scale, _mm256_loadu_ps(bias));
  if (relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);
  _mm256_storeu_ps(y, v);
}
inline void u8s8_finish_256(__m256i acc, const QuantDenseArgs& a, size_t r, size_t col, float* y) {
  u8s8_epilogue_256(acc, a.row_zero[r], a.row_scale[r], a.col_sum + col, a.col_scale + col, a.bias + col, a.relu, y);
}

// The 256-bit integer kernels' shared parts: raw partial sums, and a zero start.
struct Int32x8 {
  using Acc = __m256i;
  static constexpr size_t kLanes = 8;
  static Acc init(const QuantDenseArgs&, size_t) { return _mm256_setzero_si256(); }
  static Acc load(const float* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(float* p, Acc v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void finish(Acc acc, const QuantDenseArgs& a, size_t r, size_t col, float* y) {
    u8s8_finish_256(acc, a, r, col, y);
  }
};
#endif

inline int32_t unit_word(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

}  // namespace
}  // namespace mnist_engine::kernels
