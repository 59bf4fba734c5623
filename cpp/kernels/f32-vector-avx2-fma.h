// The float vector of AVX2 and FMA (8 floats) that the fp32 kernel algorithms (dense-sparse-rows.h,
// conv-direct.h, f32-fma-peak.h) are written over. Include from kernel files compiled with its ISA
// flags only.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace mnist_engine::kernels {
namespace {  // internal linkage: see kernels.h

struct Avx2Fma {
  using V = __m256;
  static constexpr size_t kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  // max_ps returns its second operand when either is NaN: with the value second, a NaN input
  // propagates as it does in Keras instead of becoming 0.
  static V relu(V v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // f32-pool.h's max_keep_nan lane by lane: v where v > acc or v is NaN, else acc.
  static V max_keep_nan(V acc, V v) {
    return _mm256_blendv_ps(acc, v, _mm256_or_ps(_mm256_cmp_ps(v, acc, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  }
  // vmaskmovps: masked-off lanes are not read, so a tail row may end at the buffer's end.
  using Mask = __m256i;
  static Mask tail_mask(size_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load_masked(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  // Bit i set where lane i is nonzero or NaN (unordered compares true).
  static uint64_t nonzero_bits(const float* p) {
    return uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
  }
  // The same for the first `count` lanes only (the rest are not read, and compare as zero).
  static uint64_t nonzero_bits_first(const float* p, size_t count) {
    const V v = load_masked(p, tail_mask(count));
    return uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
  }
};

}  // namespace
}  // namespace mnist_engine::kernels
