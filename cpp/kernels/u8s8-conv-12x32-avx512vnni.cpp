// The int8 direct convolution on AVX-512 VNNI: 12 pixels x 32 filters (24 zmm accumulators), one
// vpdpbusd per pixel, filter vector and 4-byte unit of the window.
#include <immintrin.h>

#include "conv-quant.h"

namespace mnist_engine::kernels {
namespace {

struct Vnni512 {
  using Acc = __m512i;
  using Weights = __m512i;
  static constexpr size_t kLanes = 16;
  static Acc zero() { return _mm512_setzero_si512(); }
  static Weights load_weights(const int8_t* p) { return _mm512_loadu_si512(p); }
  static Acc dot(Acc acc, uint32_t word, Weights w) {
    return _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(static_cast<int>(word)), w);
  }
  // Masked: words past `count` are not read (a window row's last units end near the frame's end).
  static uint64_t nonzero_words(const uint8_t* p, size_t count) {
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(m, p);
    return _mm512_test_epi32_mask(v, v);
  }
  // u8s8_conv_scalar's epilogue, lane for lane: the int32 product wraps, the conversion rounds to
  // nearest even, and the scale is one fused multiply-add.
  static void finish(Acc acc, const QuantConvArgs& a, size_t col, float* y) {
    if (a.zero)
      acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(a.zero), _mm512_loadu_si512(a.col_sum + col)));
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(a.scale), _mm512_loadu_ps(a.col_scale + col));
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, _mm512_loadu_ps(a.bias + col));
    if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN (second operand) propagates
    _mm512_storeu_ps(y, v);
  }
};

}  // namespace

void u8s8_conv_12x32_avx512vnni(const QuantConvArgs& a) { quant_conv_direct<Vnni512, 12, 2>(a); }

}  // namespace mnist_engine::kernels
