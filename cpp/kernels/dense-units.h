// The sparse-row algorithm of dense-sparse-rows.h for reduced-precision layers (QuantDenseArgs):
// one row against the kVectors accumulator vectors of a panel, over the row's nonzero 4-byte
// units; a large panel's weights are visited in L1-sized blocks of units. Written once over an "Isa" type and
// instantiated by one kernel file per instruction set. Include it from kernel files only.
//
// Isa provides: Acc, a vector of kLanes 32-bit sums; kVectors (at most 8), the accumulators of a
// panel, so a panel is kVectors * kLanes columns; kSubgroups, the 4-byte column blocks of a
// weight unit (QuantDenseArgs); Xb broadcast(const uint8_t* unit), the unit's inputs in the form
// `dot` wants; Acc dot(Acc, Xb, const uint8_t* w, size_t block_stride) for the vector of columns
// starting at w; Acc init(args, column), the sum before any input (0, or the bias); raw
// load/store of partial sums (kept in y between blocks); and finish(acc, args, row, column, y),
// which applies scales, bias and relu and stores floats.
#pragma once

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

// kFull: a whole panel (N = kVectors, stride = the panel width), whose unit stride is a constant,
// so the unit loop computes a weight address with a shift rather than a multiply. Not inlined:
// inside the row and panel loops GCC ran out of registers and reloaded spilled values in the
// unit loop (6% of the int8 time on Zen 4).
template <class Isa, int N, bool kFull>
__attribute__((noinline)) void unit_row_panel(const QuantDenseArgs& a, size_t r, const uint16_t* index, const uint16_t* end,
                           const uint8_t* w, size_t stride, size_t column, float* y, bool first, bool last) {
  using Acc = typename Isa::Acc;
  constexpr size_t L = Isa::kLanes;
  const uint8_t* x = a.x + r * a.x_stride;
  const size_t block = (kFull ? Isa::kVectors * L : stride) * kUnitBytes, unit = block * Isa::kSubgroups;
  // Named accumulators, not an array (see dense-sparse-rows.h: GCC would keep an array in memory).
  Acc a0, a1, a2, a3, a4, a5, a6, a7;
#define MNIST_ENGINE_EACH(F) F(0, a0) F(1, a1) F(2, a2) F(3, a3) F(4, a4) F(5, a5) F(6, a6) F(7, a7)
#define MNIST_ENGINE_INIT(v, acc) \
  if constexpr (N > v) acc = first ? Isa::init(a, column + L * v) : Isa::load(y + L * v);
#define MNIST_ENGINE_DOT(v, acc) if constexpr (N > v) acc = Isa::dot(acc, xb, wu + kUnitBytes * L * v, block);
#define MNIST_ENGINE_STORE(v, acc) \
  if constexpr (N > v) {           \
    if (last)                      \
      Isa::finish(acc, a, r, column + L * v, y + L * v); \
    else                           \
      Isa::store(y + L * v, acc);  \
  }
  MNIST_ENGINE_EACH(MNIST_ENGINE_INIT)
  for (; index != end; ++index) {
    const size_t u = *index;
    const auto xb = Isa::broadcast(x + kUnitBytes * u);
    const uint8_t* wu = w + u * unit;
    MNIST_ENGINE_EACH(MNIST_ENGINE_DOT)
  }
  MNIST_ENGINE_EACH(MNIST_ENGINE_STORE)
#undef MNIST_ENGINE_STORE
#undef MNIST_ENGINE_DOT
#undef MNIST_ENGINE_INIT
#undef MNIST_ENGINE_EACH
}

template <class Isa, int N, bool kFull = false>
void unit_panel(const QuantDenseArgs& a, size_t p, size_t group, bool tail) {
  constexpr size_t kPanel = Isa::kVectors * Isa::kLanes;
  const size_t stride = tail ? a.tail_stride : kPanel;
  const uint8_t* w = a.packed + p * a.units * kPanel * kUnitBytes * Isa::kSubgroups;
  const size_t blocks = (a.units + kUnitBlock - 1) / kUnitBlock;
  for (size_t b0 = 0; b0 < blocks; b0 += group) {
    const size_t b1 = b0 + group < blocks ? b0 + group : blocks;
    for (size_t r = 0; r < a.rows; ++r) {
      const uint16_t* index = a.unit_index + r * a.units;
      const uint32_t* ends = a.block_ends + r * blocks;
      unit_row_panel<Isa, N, kFull>(a, r, index + (b0 ? ends[b0 - 1] : 0), index + ends[b1 - 1], w, stride,
                             p * kPanel, a.y + r * a.y_stride + p * kPanel, b0 == 0, b1 == blocks);
    }
  }
}

inline constexpr size_t kWholePanelBytes = 64 * 1024;

// The last, narrower panel with as many accumulators as it has live vectors (1..N).
template <class Isa, int N>
void tail_panel(const QuantDenseArgs& a, size_t p, size_t group, size_t vectors) {
  if constexpr (N > 1)
    if (vectors < size_t(N)) return tail_panel<Isa, N - 1>(a, p, group, vectors);
  unit_panel<Isa, N>(a, p, group, true);
}

template <class Isa>
void dense_units(const QuantDenseArgs& a) {
  static_assert(Isa::kVectors >= 1 && Isa::kVectors <= 8, "unit_row_panel names 8 accumulators");
  constexpr size_t L = Isa::kLanes, kPanel = Isa::kVectors * L;
  // A panel small enough to stay near the core (L1 and the nearest part of L2) across a tile's
  // rows runs each row over all its units at once: no partial sums go through memory. A larger
  // panel is visited in groups of L1-sized blocks, as in dense_sparse_rows, where sparser rows
  // touch fewer units per block and so more blocks fit at once. Measured on Zen 4: a 64-column
  // int8 panel (50 KiB for 784 inputs) runs 10% faster unsplit, a 128-column bf16 one (200 KiB)
  // 25% slower, and a 64 KiB AVX2 one 6% slower.
  uint64_t nonzeros = 0;
  const size_t blocks = (a.units + kUnitBlock - 1) / kUnitBlock;
  for (size_t r = 0; r < a.rows; ++r) nonzeros += a.block_ends[r * blocks + blocks - 1];
  const uint64_t total = uint64_t(a.rows) * a.units;
  const size_t panel_bytes = a.units * kPanel * kUnitBytes * Isa::kSubgroups;
  const bool whole = a.rows == 1 || panel_bytes < kWholePanelBytes;
  const size_t group = whole ? blocks : nonzeros * 2 <= total ? 4 : 2;
  for (size_t p = 0; p < a.panels; ++p) {
    const size_t live = a.out_width - p * kPanel;
    const bool tail = live < kPanel;
    if (!tail) {
      unit_panel<Isa, Isa::kVectors, true>(a, p, group, false);
      continue;
    }
    tail_panel<Isa, Isa::kVectors>(a, p, group, (live + L - 1) / L);
  }
}

}  // namespace
}  // namespace mnist_engine::kernels
