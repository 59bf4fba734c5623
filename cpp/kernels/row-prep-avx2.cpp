// Row preparation for the AVX2 kernels: uint8 pixels to floats, and the list of nonzero inputs.
// Scalar, these two loops cost as much as a third of a sparse MNIST forward pass.
#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {

// For each 8-bit mask, the positions of its set bits, packed to the front: a compress by table.
// A plain array, not std::array: this file is built with AVX2 flags, and std::array's inline
// members would be weak symbols the linker could share with files built without them.
struct CompressTable {
  alignas(16) uint16_t positions[256][8]{};
  constexpr CompressTable() {
    for (int mask = 0; mask < 256; ++mask) {
      int n = 0;
      for (int bit = 0; bit < 8; ++bit)
        if (mask & (1 << bit)) positions[mask][n++] = static_cast<uint16_t>(bit);
    }
  }
};
constexpr CompressTable kCompress{};

}  // namespace

void nonzero_index_avx2(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range) {
  uint32_t n = 0;
  size_t k = 0;
  const __m256 zero = _mm256_setzero_ps();
  // The range rides on the loads (see nonzero_index_avx512f); min(v, lo) returns lo for a NaN v.
  __m256 lo = _mm256_set1_ps(range ? range[0] : 0.0f), hi = _mm256_set1_ps(range ? range[1] : 0.0f);
  for (; k + 8 <= width; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    lo = _mm256_min_ps(v, lo);
    hi = _mm256_max_ps(v, hi);
    // _CMP_NEQ_UQ is true for NaN too, so a NaN input is kept and propagates.
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ));
    const __m128i pos = _mm_load_si128(reinterpret_cast<const __m128i*>(kCompress.positions[mask]));
    // Writes 8 slots and keeps popcount(mask) of them: `out` has room for `width` entries and
    // k + 8 <= width here.
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + n),
                     _mm_add_epi16(pos, _mm_set1_epi16(static_cast<short>(k))));
    n += static_cast<uint32_t>(_mm_popcnt_u32(static_cast<unsigned>(mask)));
    if ((k + 8) % kIndexBlock == 0) block_ends[k / kIndexBlock] = n;
  }
  nonzero_index_tail(x, k, width, out, n, block_ends);
  if (range) {
    alignas(32) float lanes[2][8];
    _mm256_store_ps(lanes[0], lo);
    _mm256_store_ps(lanes[1], hi);
    for (int i = 0; i < 8; ++i) {
      range[0] = lanes[0][i] < range[0] ? lanes[0][i] : range[0];
      range[1] = lanes[1][i] > range[1] ? lanes[1][i] : range[1];
    }
    widen_range(x, k, width, range);
  }
}

void pixels_to_float_avx2(const uint8_t* pixels, size_t n, double scale, float* out) {
  // Multiplying in double and rounding once gives exactly the scalar table's values
  // (float(v * scale)), so every kernel sees the same inputs.
  const __m256d s = _mm256_set1_pd(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pixels + i)));
    const __m128 lo = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(v)), s));
    const __m128 hi = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1)), s));
    _mm256_storeu_ps(out + i, _mm256_set_m128(hi, lo));
  }
  for (; i < n; ++i) out[i] = static_cast<float>(pixels[i] * scale);
}

}  // namespace mnist_engine::kernels
