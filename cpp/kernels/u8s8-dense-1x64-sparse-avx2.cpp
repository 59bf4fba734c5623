// int8 without VNNI: one row x 64 columns, 8 ymm int32 accumulators. vpmaddubsw would take the
// uint8 x int8 pairs directly, but it sums each pair into a saturating int16 (2 * 255 * 127 >
// 32767), so results would depend on the data. This kernel keeps the weights as int16 (packed
// two per 32-bit lane, two blocks per unit) and uses vpmaddwd, whose int32 pair sums are exact:
// bit-identical to the scalar reference.
#include <immintrin.h>

#include "dense-units.h"
#include "quant-x86.h"

namespace mnist_engine::kernels {
namespace {

struct Avx2Int16 : Int32x8 {
  struct Xb {
    __m256i low, high;  // inputs 0,1 and 2,3 of the unit as int16 pairs, in every lane
  };
  static constexpr size_t kSubgroups = 2, kVectors = 8;
  static Xb broadcast(const uint8_t* unit) {
    const uint32_t v = static_cast<uint32_t>(unit_word(unit));
    const uint32_t low = (v & 0xffu) | ((v & 0xff00u) << 8);
    const uint32_t high = ((v >> 16) & 0xffu) | ((v >> 8) & 0xff0000u);
    return {_mm256_set1_epi32(static_cast<int>(low)), _mm256_set1_epi32(static_cast<int>(high))};
  }
  static Acc dot(Acc acc, const Xb& x, const uint8_t* w, size_t block_stride) {
    const __m256i w01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i w23 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + block_stride));
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(x.low, w01), _mm256_madd_epi16(x.high, w23)));
  }
};

}  // namespace

void u8s8_dense_1x64_sparse_avx2(const QuantDenseArgs& a) { dense_units<Avx2Int16>(a); }

}  // namespace mnist_engine::kernels
