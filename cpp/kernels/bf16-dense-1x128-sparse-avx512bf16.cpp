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

// 16 floats at a time with vcvtneps2bf16 (nearest even, like to_bf16); the tail in scalar.
void convert_rows_bf16_avx512bf16(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                                  size_t out_stride, float*, int32_t*) {
  for (size_t r = 0; r < rows; ++r) {
    const float* in = x + r * x_stride;
    uint8_t* row = out + r * out_stride;
    size_t k = 0;
    for (; k + 16 <= width; k += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + k));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 2 * k), reinterpret_cast<const __m256i&>(h));
    }
    for (; k < width; ++k) {
      const uint16_t h = to_bf16(in[k]);
      __builtin_memcpy(row + 2 * k, &h, 2);
    }
    __builtin_memset(row + 2 * width, 0, out_stride - 2 * width);
  }
}

}  // namespace mnist_engine::kernels
