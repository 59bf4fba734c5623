#include <immintrin.h>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {

constexpr size_t kNR = kAvx2PanelWidth;

// One row's nonzero inputs [index, end) against V vectors of one 64-column panel, starting from
// `init` (the bias, or the partial sums of earlier k blocks). The V accumulators are independent
// FMA chains; V = 8 covers the FMA latency (4 cycles) at two FMAs per cycle.
//
// Only nonzero inputs are visited. MNIST images are ~81% zero pixels and ReLU layers 50-80%
// zeros, so this skips most of the work; because fma(0, w, acc) == acc, the result is
// bit-identical to the dense sum in the same k order.
template <int V>
inline void row_panel(const float* x, const uint16_t* index, const uint16_t* end, const float* w,
                      const float* init, float* y, bool relu) {
  // Named accumulators, not an array: GCC keeps a __m256 array in memory and stores it on every
  // iteration (8 extra stores per k), which halves the kernel's speed.
  __m256 a0, a1, a2, a3, a4, a5, a6, a7;
#define MNIST_ENGINE_EACH(F) F(0, a0) F(1, a1) F(2, a2) F(3, a3) F(4, a4) F(5, a5) F(6, a6) F(7, a7)
#define INIT(v, a) if constexpr (V > v) a = _mm256_loadu_ps(init + 8 * v);
  MNIST_ENGINE_EACH(INIT)
  for (; index != end; ++index) {
    const size_t k = *index;
    const __m256 xv = _mm256_broadcast_ss(x + k);
    const float* wk = w + k * kNR;
#define FMA(v, a) if constexpr (V > v) a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(wk + 8 * v), a);
    MNIST_ENGINE_EACH(FMA)
  }
  // max_ps returns its second operand when either is NaN: with the accumulator second, a NaN
  // input propagates as it does in Keras instead of becoming 0.
  const __m256 zero = _mm256_setzero_ps();
#define STORE(v, a) \
  if constexpr (V > v) _mm256_storeu_ps(y + 8 * v, relu ? _mm256_max_ps(zero, a) : a);
  MNIST_ENGINE_EACH(STORE)
#undef STORE
#undef FMA
#undef INIT
#undef MNIST_ENGINE_EACH
}

// All rows of the tile against panel p, `group` index blocks at a time: a group of a panel
// (group x 64 rows of 256 bytes) stays in L1 while every row passes over it. Without the blocks
// each row would stream the whole panel from L2, and L2 bandwidth, not the FMA units, would set
// the pace. Partial sums wait in y between groups; each column still sums its k in increasing
// order, so the result does not depend on the grouping.
template <int V>
void panel(const DenseArgs& a, size_t p, size_t group) {
  const float* w = a.packed + p * a.in * kNR;
  const float* bias = a.bias + p * kNR;
  const size_t blocks = (a.in + kIndexBlock - 1) / kIndexBlock;
  for (size_t b0 = 0; b0 < blocks; b0 += group) {
    const size_t b1 = b0 + group < blocks ? b0 + group : blocks;
    const bool last = b1 == blocks;
    for (size_t r = 0; r < a.rows; ++r) {
      const uint16_t* index = a.nz_index + r * a.in;
      const uint32_t* ends = a.block_ends + r * blocks;
      float* y = a.y + r * a.y_stride + p * kNR;
      row_panel<V>(a.x + r * a.x_stride, index + (b0 ? ends[b0 - 1] : 0), index + ends[b1 - 1], w,
                   b0 ? y : bias, y, a.relu && last);
    }
  }
}

}  // namespace

void f32_dense_1x64_sparse_avx2_fma(const DenseArgs& a) {
  // Sparser inputs touch fewer weight rows per block, so more blocks fit in L1 at once; merging
  // them saves the per-block reload of the partial sums.
  uint64_t nonzeros = 0;
  const size_t blocks = (a.in + kIndexBlock - 1) / kIndexBlock;
  for (size_t r = 0; r < a.rows; ++r) nonzeros += a.block_ends[r * blocks + blocks - 1];
  const uint64_t total = uint64_t(a.rows) * a.in;
  const size_t group = nonzeros * 4 <= total ? 4 : nonzeros * 2 <= total ? 2 : 1;
  for (size_t p = 0; p < a.panels; ++p) {
    const size_t live = a.out_width - p * kNR;
    switch (live >= kNR ? 8 : (live + 7) / 8) {
      case 1: panel<1>(a, p, group); break;
      case 2: panel<2>(a, p, group); break;
      case 3: panel<3>(a, p, group); break;
      case 4: panel<4>(a, p, group); break;
      case 5: panel<5>(a, p, group); break;
      case 6: panel<6>(a, p, group); break;
      case 7: panel<7>(a, p, group); break;
      default: panel<8>(a, p, group); break;
    }
  }
}

}  // namespace mnist_engine::kernels
