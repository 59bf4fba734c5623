// The float vector of AVX-512F (16 floats) that the fp32 kernel algorithms (dense-sparse-rows.h,
// conv-direct.h, f32-fma-peak.h) are written over. Include from kernel files compiled with its ISA
// flags only.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace mnist_engine::kernels {
namespace {  // internal linkage: see kernels.h

struct Avx512F {
  using V = __m512;
  static constexpr size_t kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  // As in AVX2, max returns its second operand when either is NaN: NaN propagates.
  static V relu(V v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // f32-pool.h's max_keep_nan lane by lane: v where v > acc or v is NaN, else acc (the max pool's
  // order decides which zero survives of +0 and -0, and a NaN anywhere wins).
  static V max_keep_nan(V acc, V v) {
    const __mmask16 take = _mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(take, acc, v);
  }
  // Masked-off lanes are not read (no fault past the buffer) and come back as zero.
  using Mask = __mmask16;
  static Mask tail_mask(size_t count) { return static_cast<Mask>((1u << count) - 1); }
  static V load_masked(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  // Bit i set where lane i is nonzero or NaN (unordered compares true).
  static uint64_t nonzero_bits(const float* p) {
    return _mm512_cmp_ps_mask(_mm512_loadu_ps(p), _mm512_setzero_ps(), _CMP_NEQ_UQ);
  }
  // The same for the first `count` lanes only (the rest are not read).
  static uint64_t nonzero_bits_first(const float* p, size_t count) {
    return _mm512_cmp_ps_mask(load_masked(p, tail_mask(count)), _mm512_setzero_ps(), _CMP_NEQ_UQ);
  }
};

}  // namespace
}  // namespace mnist_engine::kernels
