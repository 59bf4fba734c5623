// The sparse-row dense-layer algorithm, written once over a vector "ISA" type and instantiated by
// one kernel file per instruction set (f32-dense-1x64-sparse-avx2-fma.cpp, ...), each compiled
// with its own ISA flags. Include it from kernel files only.
//
// Isa provides: a vector type V with kLanes floats, and static load/broadcast/fmadd/relu/store;
// a Mask type with tail_mask(count) and load_masked(p, mask), which reads only the first `count`
// floats (a plain load where the packing pads the tail instead: see KernelInfo::tail_granule).
// A panel is 8 vectors wide (kPanel = 8 * kLanes columns).
#pragma once

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

// The weight vector v of a row: the last vector of a layer's last, partial panel holds fewer than
// kLanes real columns and is read masked, so that panel needs no zero padding in memory.
template <class Isa, bool Masked>
inline typename Isa::V load_weights(const float* p, typename Isa::Mask mask) {
  if constexpr (Masked) return Isa::load_masked(p, mask);
  else return Isa::load(p);
}

// One row's nonzero inputs in index blocks [b0, b1) against N vectors of one panel, starting from
// `init` (the bias, or the sums of earlier blocks). The N accumulators are independent FMA chains;
// N = 8 covers the FMA latency (4 cycles) at two FMAs per cycle. A Tail panel (the last of a layer,
// narrower than kPanel) is packed `stride` floats per row instead of kPanel.
//
// Each block of kIndexBlock inputs is summed from zero and then added to the running sum, instead
// of one chain over every k: a serial sum's rounding error grows with its length, and a 3200-input
// layer summed in one chain was less accurate than Keras (tests/test_parity.py's ill-conditioned
// model). The blocks are fixed by k alone, so every ISA, grouping and thread count gives the same
// bits; f32_dense_scalar sums in the same blocks.
//
// Only nonzero inputs are visited. MNIST images are ~81% zero pixels and ReLU layers 50-80%
// zeros, so this skips most of the work; because fma(0, w, acc) == acc and a block of zeros adds
// +0, the result is bit-identical to the dense sum in the same order (one exception: a sum that
// is exactly -0.0, e.g. a -0.0 bias with every input zero, would become +0.0 in the dense sum).
// tests/test_kernels.py compares the bits with skipping switched off (Engine skip_zeros=False).
//
// Not inlined: inside the row and panel loops GCC ran out of registers and reloaded spilled
// values in the k loop; out of line the loop keeps everything in registers (AVX2 kernel 15%
// faster on Zen 4, AVX-512 3%).
template <class Isa, int N, bool Tail>
__attribute__((noinline)) void row_panel(const float* x, const uint16_t* index, const uint32_t* ends, size_t b0,
                                         size_t b1, const float* w, size_t tail_stride, typename Isa::Mask mask,
                                         const float* init, float* y, bool relu) {
  using V = typename Isa::V;
  constexpr size_t L = Isa::kLanes, kPanel = 8 * L;
  const size_t stride = Tail ? tail_stride : kPanel;
  // Named sums and accumulators, not arrays: GCC keeps a vector array in memory and stores it on
  // every iteration (8 extra stores per k), which halves the kernel's speed.
  V s0, s1, s2, s3, s4, s5, s6, s7;
  V a0, a1, a2, a3, a4, a5, a6, a7;
#define MNIST_ENGINE_EACH(F) F(0, s0, a0) F(1, s1, a1) F(2, s2, a2) F(3, s3, a3) F(4, s4, a4) F(5, s5, a5) \
  F(6, s6, a6) F(7, s7, a7)
#define MNIST_ENGINE_INIT(v, s, a) if constexpr (N > v) s = Isa::load(init + L * v);
#define MNIST_ENGINE_ZERO(v, s, a) if constexpr (N > v) a = Isa::zero();
#define MNIST_ENGINE_FMA(v, s, a) \
  if constexpr (N > v) a = Isa::fmadd(xv, load_weights<Isa, Tail && v == N - 1>(wk + L * v, mask), a);
#define MNIST_ENGINE_ADD(v, s, a) if constexpr (N > v) s = Isa::add(s, a);
#define MNIST_ENGINE_STORE(v, s, a) if constexpr (N > v) Isa::store(y + L * v, relu ? Isa::relu(s) : s);
  MNIST_ENGINE_EACH(MNIST_ENGINE_INIT)
  const uint16_t* at = index + (b0 ? ends[b0 - 1] : 0);
  for (size_t b = b0; b < b1; ++b) {
    const uint16_t* end = index + ends[b];
    if (at == end) continue;  // a block of zeros adds +0
    MNIST_ENGINE_EACH(MNIST_ENGINE_ZERO)
    for (; at != end; ++at) {
      const size_t k = *at;
      const V xv = Isa::broadcast(x + k);
      const float* wk = w + k * stride;
      MNIST_ENGINE_EACH(MNIST_ENGINE_FMA)
    }
    MNIST_ENGINE_EACH(MNIST_ENGINE_ADD)
  }
  MNIST_ENGINE_EACH(MNIST_ENGINE_STORE)
#undef MNIST_ENGINE_STORE
#undef MNIST_ENGINE_ADD
#undef MNIST_ENGINE_FMA
#undef MNIST_ENGINE_ZERO
#undef MNIST_ENGINE_INIT
#undef MNIST_ENGINE_EACH
}

// All rows of the tile against panel p, `group` index blocks at a time: that part of the panel
// (group x 64 weight rows) stays in L1 while every row passes over it. Without the blocks each
// row would stream the whole panel from L2, and L2 bandwidth, not the FMA units, would set the
// pace. Sums wait in y between groups; the blocks are added in the same order either way, so the
// result does not depend on the grouping.
template <class Isa, int N, bool Tail>
void panel(const DenseArgs& a, size_t p, size_t group) {
  constexpr size_t L = Isa::kLanes, kPanel = 8 * L;
  // Tail: the real columns of the last vector (1..L); the mask is built once per panel.
  const typename Isa::Mask mask = Isa::tail_mask(Tail ? a.out_width - p * kPanel - (N - 1) * L : L);
  const float* w = a.packed + p * a.in * kPanel;
  const float* bias = a.bias + p * kPanel;
  const size_t blocks = (a.in + kIndexBlock - 1) / kIndexBlock;
  for (size_t b0 = 0; b0 < blocks; b0 += group) {
    const size_t b1 = b0 + group < blocks ? b0 + group : blocks;
    const bool last = b1 == blocks;
    for (size_t r = 0; r < a.rows; ++r) {
      float* y = a.y + r * a.y_stride + p * kPanel;
      row_panel<Isa, N, Tail>(a.x + r * a.x_stride, a.nz_index + r * a.in, a.block_ends + r * blocks, b0, b1, w,
                              a.tail_stride, mask, b0 ? y : bias, y, a.relu && last);
    }
  }
}

template <class Isa>
void dense_sparse_rows(const DenseArgs& a) {
  constexpr size_t L = Isa::kLanes, kPanel = 8 * L;
  // Sparser inputs touch fewer weight rows per block, so more blocks fit in L1 at once; merging
  // them saves reloading the partial sums.
  uint64_t nonzeros = 0;
  const size_t blocks = (a.in + kIndexBlock - 1) / kIndexBlock;
  for (size_t r = 0; r < a.rows; ++r) nonzeros += a.block_ends[r * blocks + blocks - 1];
  const uint64_t total = uint64_t(a.rows) * a.in;
  // A single row reuses nothing from L1 anyway: one pass, no partial sums.
  const size_t group = a.rows == 1 ? blocks : nonzeros * 4 <= total ? 4 : nonzeros * 2 <= total ? 2 : 1;
  for (size_t p = 0; p < a.panels; ++p) {
    // The last panel of a narrow layer (a classifier's 10 outputs) needs only its live vectors.
    const size_t live = a.out_width - p * kPanel;
    switch (live >= kPanel ? 0 : (live + L - 1) / L) {
      case 1: panel<Isa, 1, true>(a, p, group); break;
      case 2: panel<Isa, 2, true>(a, p, group); break;
      case 3: panel<Isa, 3, true>(a, p, group); break;
      case 4: panel<Isa, 4, true>(a, p, group); break;
      case 5: panel<Isa, 5, true>(a, p, group); break;
      case 6: panel<Isa, 6, true>(a, p, group); break;
      case 7: panel<Isa, 7, true>(a, p, group); break;
      case 8: panel<Isa, 8, true>(a, p, group); break;
      default: panel<Isa, 8, false>(a, p, group); break;
    }
  }
}

}  // namespace
}  // namespace mnist_engine::kernels
