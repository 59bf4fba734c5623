// The int8 direct convolution on AVX-512 VNNI: 12 pixels x 32 filters (24 zmm accumulators), one
// vpdpbusd per pixel, filter vector and 4-byte unit of the window; a following 2 x 2 max pool runs
// inside it, 2 pooled pixels (2 rows of 4) per tile: at 3 (24 accumulators) GCC spilled
// registers, and the tile was no faster than running the pool apart.
#include <immintrin.h>

#include "conv-quant.h"
#include "quant-x86.h"

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
  static Acc max(Acc a, Acc b) { return _mm512_max_epi32(a, b); }
  // Masked: words past `count` are not read (a window row's last units end near the frame's end).
  static uint64_t nonzero_words(const uint8_t* p, size_t count) {
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1);
    const __m512i v = _mm512_maskz_loadu_epi32(m, p);
    return _mm512_test_epi32_mask(v, v);
  }
  static void finish(Acc acc, const QuantConvArgs& a, size_t col, float* y) {
    u8s8_epilogue_512(acc, a.zero, a.scale, a.col_sum + col, a.col_scale + col, a.bias + col, a.relu, y);
  }
};

}  // namespace

void u8s8_conv_12x32_avx512vnni(const QuantConvArgs& a) { quant_conv_direct<Vnni512, 12, 2, 2>(a); }

}  // namespace mnist_engine::kernels
