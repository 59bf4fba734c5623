// bf16: one row x 128 columns (8 zmm float32 accumulators) over the row's nonzero input pairs.
// vdpbf16ps multiplies 2 bf16 inputs by 2 bf16 weights per column (exact products) and adds them
// into float32: twice the float kernel's multiply-adds per instruction, half its weight bytes.
#include <immintrin.h>

#include "dense-units.h"
#include "quant-x86.h"

namespace mnist_engine::kernels {
namespace {

struct Avx512Bf16 {
  using Acc = __m512;
  using Xb = __m512i;
  static constexpr size_t kLanes = 16, kSubgroups = 1, kVectors = 8;
  static Xb broadcast(const uint8_t* unit) { return _mm512_set1_epi32(unit_word(unit)); }
  static Acc dot(Acc acc, Xb x, const uint8_t* w, size_t) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(x), load_bf16(w));
  }
  static Acc init(const QuantDenseArgs& a, size_t col) { return _mm512_loadu_ps(a.bias + col); }
  static Acc load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Acc v) { _mm512_storeu_ps(p, v); }
  static void finish(Acc acc, const QuantDenseArgs& a, size_t, size_t, float* y) {
    _mm512_storeu_ps(y, a.relu ? _mm512_max_ps(_mm512_setzero_ps(), acc) : acc);
  }

 private:
  static __m512bh load_bf16(const uint8_t* w) {
    __m512i v = _mm512_loadu_si512(w);
    return reinterpret_cast<__m512bh&>(v);
  }
};

}  // namespace

void bf16_dense_1x128_sparse_avx512bf16(const QuantDenseArgs& a) { dense_units<Avx512Bf16>(a); }

namespace {
// 16 floats at a time with vcvtneps2bf16 (nearest even, like to_bf16); the tail in scalar. Measures
// the rows' range only when asked (the first layer): hidden layers are converted on every call.
template <bool kMeasure>
void convert_rows(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out, size_t out_stride,
                  float* range) {
  __m512 lo = _mm512_set1_ps(kMeasure ? range[0] : 0.0f), hi = _mm512_set1_ps(kMeasure ? range[1] : 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    const float* in = x + r * x_stride;
    uint8_t* row = out + r * out_stride;
    size_t k = 0;
    for (; k + 16 <= width; k += 16) {
      const __m512 v = _mm512_loadu_ps(in + k);
      if (kMeasure) {
        lo = _mm512_min_ps(v, lo);  // a NaN v leaves lo as it was
        hi = _mm512_max_ps(v, hi);
      }
      const __m256bh h = _mm512_cvtneps_pbh(v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 2 * k), reinterpret_cast<const __m256i&>(h));
    }
    if (kMeasure) widen_range(in, k, width, range);
    for (; k < width; ++k) {
      const uint16_t h = to_bf16(in[k]);
      __builtin_memcpy(row + 2 * k, &h, 2);
    }
    __builtin_memset(row + 2 * width, 0, out_stride - 2 * width);
  }
  if (kMeasure) {
    const float l = _mm512_reduce_min_ps(lo), h = _mm512_reduce_max_ps(hi);
    range[0] = l < range[0] ? l : range[0];
    range[1] = h > range[1] ? h : range[1];
  }
}
}  // namespace

void convert_rows_bf16_avx512bf16(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                                  size_t out_stride, float*, int32_t*, float* range) {
  if (range)
    convert_rows<true>(x, x_stride, rows, width, out, out_stride, range);
  else
    convert_rows<false>(x, x_stride, rows, width, out, out_stride, nullptr);
}

}  // namespace mnist_engine::kernels
