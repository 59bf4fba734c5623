// Row preparation for the AVX-512 kernel: the compress instruction does in one step what AVX2
// needs a lookup table for.
#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {

void nonzero_index_avx512f(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range) {
  uint32_t n = 0;
  size_t k = 0;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // The range costs a min and a max per vector already loaded; kept even when not asked for (hidden
  // layers), where a branch in the loop would cost more. min(v, lo) returns lo for a NaN v.
  __m512 lo = _mm512_set1_ps(range ? range[0] : 0.0f), hi = _mm512_set1_ps(range ? range[1] : 0.0f);
  for (; k + 16 <= width; k += 16) {
    const __m512 v = _mm512_loadu_ps(x + k);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
    // _CMP_NEQ_UQ is true for NaN too, so a NaN input is kept and propagates.
    const __mmask16 mask = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);
    const __m512i positions = _mm512_maskz_compress_epi32(
        mask, _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(k))));
    // Writes 16 slots and keeps popcount(mask): n <= k and k + 16 <= width, so they fit.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + n), _mm512_cvtepi32_epi16(positions));
    n += static_cast<uint32_t>(__builtin_popcount(mask));
    if ((k + 16) % kIndexBlock == 0) block_ends[k / kIndexBlock] = n;
  }
  nonzero_index_tail(x, k, width, out, n, block_ends);
  if (range) {
    range[0] = _mm512_reduce_min_ps(lo);
    range[1] = _mm512_reduce_max_ps(hi);
    widen_range(x, k, width, range);
  }
}

void pixels_to_float_avx512f(const uint8_t* pixels, size_t n, double scale, float* out) {
  // Multiplying in double and rounding once gives exactly the scalar version's values.
  const __m512d s = _mm512_set1_pd(scale);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pixels + i)));
    const __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(v)), s));
    const __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(v, 1)), s));
    // insertf64x4 rather than insertf32x8, which would need AVX512DQ.
    _mm512_storeu_ps(out + i, _mm512_castpd_ps(_mm512_insertf64x4(
                                  _mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1)));
  }
  for (; i < n; ++i) out[i] = static_cast<float>(pixels[i] * scale);
}

}  // namespace mnist_engine::kernels
