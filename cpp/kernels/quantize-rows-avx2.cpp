// Row preparation for the 256-bit int8 kernels (AVX2, AVX-VNNI), byte-identical to
// quantize-rows-scalar.cpp.
#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {

namespace {
float reduce(__m256 v, __m128 (*op)(__m128, __m128)) {
  __m128 x = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = op(x, _mm_movehl_ps(x, x));
  x = op(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}
__m128 min4(__m128 a, __m128 b) { return _mm_min_ps(a, b); }
__m128 max4(__m128 a, __m128 b) { return _mm_max_ps(a, b); }
__m128 add4(__m128 a, __m128 b) { return _mm_add_ps(a, b); }
}  // namespace

void quantize_rows_u8_avx2(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                           size_t out_stride, float* scale, int32_t* zero, float* range) {
  const size_t whole = width / 8 * 8;
  for (size_t r = 0; r < rows; ++r) {
    const float* in = x + r * x_stride;
    __m256 lo = _mm256_setzero_ps(), hi = lo, probe = lo;
    for (size_t k = 0; k < whole; k += 8) {
      const __m256 v = _mm256_loadu_ps(in + k);
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
      probe = _mm256_fmadd_ps(v, _mm256_setzero_ps(), probe);  // NaN exactly when some v is not finite
    }
    float l = reduce(lo, min4), h = reduce(hi, max4);
    bool finite = reduce(probe, add4) == 0.0f;
    for (size_t k = whole; k < width; ++k) {
      l = in[k] < l ? in[k] : l;
      h = in[k] > h ? in[k] : h;
      finite &= in[k] - in[k] == 0.0f;
    }
    // The row's range, which quantization needs anyway, is the input-range measurement too (0
    // included, which the check allows for); a row with NaN or inf is measured value by value.
    if (range && finite) {
      range[0] = l < range[0] ? l : range[0];
      range[1] = h > range[1] ? h : range[1];
    } else if (range) {
      widen_range(in, 0, width, range);
    }
    const RowQuantization q = quantization_params(l, h, finite);
    const __m256 inverse = _mm256_set1_ps(q.inverse), zp = _mm256_set1_ps(q.zero);
    const __m256 prescale = _mm256_set1_ps(q.prescale);
    const __m256 top = _mm256_set1_ps(255.0f);
    uint8_t* row = out + r * out_stride;
    for (size_t k = 0; k < whole; k += 8) {
      __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(in + k), prescale), inverse),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zp), _mm256_setzero_ps()), top);
      const __m256i i32 = _mm256_cvttps_epi32(v);
      const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(row + k), _mm_packus_epi16(i16, i16));
    }
    for (size_t k = whole; k < width; ++k) row[k] = quantize_value(in[k], q);
    __builtin_memset(row + width, 0, out_stride - width);
    scale[r] = q.scale;
    zero[r] = static_cast<int32_t>(q.zero);
  }
}

}  // namespace mnist_engine::kernels
