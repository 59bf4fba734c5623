// The int8 direct convolution on AVX-VNNI (the 256-bit VEX vpdpbusd: Alder Lake and later, Zen 5):
// 6 pixels x 16 filters (12 ymm accumulators).
#include <immintrin.h>

#include "conv-quant.h"
#include "quant-x86.h"

namespace mnist_engine::kernels {
namespace {

struct AvxVnniConv {
  using Acc = __m256i;
  using Weights = __m256i;
  static constexpr size_t kLanes = 8;
  static Acc zero() { return _mm256_setzero_si256(); }
  static Weights load_weights(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Acc dot(Acc acc, uint32_t word, Weights w) {
    return _mm256_dpbusd_avx_epi32(acc, _mm256_set1_epi32(static_cast<int>(word)), w);
  }
  // vpmaskmovd: words past `count` are not read.
  static uint64_t nonzero_words(const uint8_t* p, size_t count) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i v = _mm256_maskload_epi32(reinterpret_cast<const int*>(p), m);
    const __m256i zero = _mm256_cmpeq_epi32(v, _mm256_setzero_si256());
    return ~uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(zero))) & 0xffu;
  }
  static void finish(Acc acc, const QuantConvArgs& a, size_t col, float* y) {
    u8s8_epilogue_256(acc, a.zero, a.scale, a.col_sum + col, a.col_scale + col, a.bias + col, a.relu, y);
  }
};

}  // namespace

void u8s8_conv_6x16_avxvnni(const QuantConvArgs& a) { quant_conv_direct<AvxVnniConv, 6, 2>(a); }

}  // namespace mnist_engine::kernels
