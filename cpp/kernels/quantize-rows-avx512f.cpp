// Row preparation for the AVX-512 int8 kernels: range, quantization and the unit index, 16 lanes
// at a time, byte-identical to quantize-rows-scalar.cpp.
#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {

void unit_index_avx512f(const uint8_t* x, size_t units, uint16_t* out, uint32_t* block_ends) {
  uint32_t n = 0;
  size_t u = 0;
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // One vector is one index block (kUnitBlock units of 4 bytes).
  static_assert(kUnitBlock * kUnitBytes == 64);
  for (; u + kUnitBlock <= units; u += kUnitBlock) {
    const __m512i v = _mm512_loadu_si512(x + kUnitBytes * u);
    const __mmask16 nonzero = _mm512_test_epi32_mask(v, v);
    const __m512i positions =
        _mm512_maskz_compress_epi32(nonzero, _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(u))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + n), _mm512_cvtepi32_epi16(positions));
    n += static_cast<uint32_t>(__builtin_popcount(nonzero));
    block_ends[u / kUnitBlock] = n;
  }
  unit_index_tail(x, u, units, out, n, block_ends);
}

void quantize_rows_u8_avx512f(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                              size_t out_stride, float* scale, int32_t* zero, float* range) {
  for (size_t r = 0; r < rows; ++r) {
    const float* in = x + r * x_stride;
    // Masked-off lanes load as 0, which the range includes anyway. x * 0 is NaN exactly for NaN
    // and infinite x, so `probe` stays 0 for a finite row.
    __m512 lo = _mm512_setzero_ps(), hi = lo, probe = lo;
    for (size_t k = 0; k < width; k += 16) {
      const __mmask16 m = width - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (width - k)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(m, in + k);
      lo = _mm512_min_ps(lo, v);
      hi = _mm512_max_ps(hi, v);
      probe = _mm512_fmadd_ps(v, _mm512_setzero_ps(), probe);
    }
    const float p = _mm512_reduce_add_ps(probe), row_lo = _mm512_reduce_min_ps(lo), row_hi = _mm512_reduce_max_ps(hi);
    // The row's range, which quantization needs anyway, is the input-range measurement too (0
    // included, which the check allows for); a row with NaN or inf is measured value by value.
    if (range && p == 0.0f) {
      range[0] = row_lo < range[0] ? row_lo : range[0];
      range[1] = row_hi > range[1] ? row_hi : range[1];
    } else if (range) {
      widen_range(in, 0, width, range);
    }
    const RowQuantization q = quantization_params(row_lo, row_hi, p == 0.0f);
    const __m512 inverse = _mm512_set1_ps(q.inverse), zp = _mm512_set1_ps(q.zero);
    const __m512 prescale = _mm512_set1_ps(q.prescale);
    const __m512 top = _mm512_set1_ps(255.0f);
    uint8_t* row = out + r * out_stride;
    for (size_t k = 0; k < width; k += 16) {
      const __mmask16 m = width - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (width - k)) - 1);
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, in + k), prescale), inverse),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      // max returns its second operand (0) when v is NaN: the scalar version's NaN rule.
      v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zp), _mm512_setzero_ps()), top);
      _mm512_mask_cvtepi32_storeu_epi8(row + k, m, _mm512_cvttps_epi32(v));
    }
    __builtin_memset(row + width, 0, out_stride - width);
    scale[r] = q.scale;
    zero[r] = static_cast<int32_t>(q.zero);
  }
}

}  // namespace mnist_engine::kernels
