// int8 on the 256-bit VEX form of vpdpbusd (AVX-VNNI: Alder Lake and later, Zen 5): one row x 64
// columns, 8 ymm int32 accumulators, over the row's nonzero 4-pixel units.
#include <immintrin.h>

#include "dense-units.h"
#include "quant-x86.h"

namespace mnist_engine::kernels {
namespace {

struct AvxVnni : Int32x8 {
  using Xb = __m256i;
  static constexpr size_t kSubgroups = 1, kVectors = 8;
  static Xb broadcast(const uint8_t* unit) { return _mm256_set1_epi32(unit_word(unit)); }
  static Acc dot(Acc acc, Xb x, const uint8_t* w, size_t) {
    return _mm256_dpbusd_avx_epi32(acc, x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
  }
};

}  // namespace

void u8s8_dense_1x64_sparse_avxvnni(const QuantDenseArgs& a) { dense_units<AvxVnni>(a); }

}  // namespace mnist_engine::kernels
