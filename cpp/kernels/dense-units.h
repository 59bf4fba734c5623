// The sparse-row algorithm of dense-sparse-rows.h for reduced-precision layers (QuantDenseArgs):
// one row against up to 8 accumulator vectors of a panel, over the row's nonzero 4-byte units,
// the panel's weights visited in L1-sized blocks of units. Written once over an "Isa" type and
// instantiated by one kernel file per instruction set. Include it from kernel files only.
//
// Isa provides: Acc, a vector of kLanes 32-bit sums; kSubgroups, the 4-byte column blocks of a
// weight unit (QuantDenseArgs); Xb broadcast(const uint8_t* unit), the unit's inputs in the form
// `dot` wants; Acc dot(Acc, Xb, const uint8_t* w, size_t block_stride) for the vector of columns
// starting at w; Acc init(args, column), the sum before any input (0, or the bias); raw
// load/store of partial sums (kept in y between blocks); and finish(acc, args, row, column, y),
// which applies scales, bias and relu and stores floats.
#pragma once

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

template <class Isa, int N>
inline void unit_row_panel(const QuantDenseArgs& a, size_t r, const uint16_t* index, const uint16_t* end,
                           const uint8_t* w, size_t stride, size_t column, float* y, bool first, bool last) {
  using Acc = typename Isa::Acc;
  constexpr size_t L = Isa::kLanes;
  const uint8_t* x = a.x + r * a.x_stride;
  const size_t block = stride * kUnitBytes, unit = block * Isa::kSubgroups;
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

template <class Isa, int N>
void unit_panel(const QuantDenseArgs& a, size_t p, size_t group, bool tail) {
  constexpr size_t kPanel = 8 * Isa::kLanes;
  const size_t stride = tail ? a.tail_stride : kPanel;
  const uint8_t* w = a.packed + p * a.units * kPanel * kUnitBytes * Isa::kSubgroups;
  const size_t blocks = (a.units + kUnitBlock - 1) / kUnitBlock;
  for (size_t b0 = 0; b0 < blocks; b0 += group) {
    const size_t b1 = b0 + group < blocks ? b0 + group : blocks;
    for (size_t r = 0; r < a.rows; ++r) {
      const uint16_t* index = a.unit_index + r * a.units;
      const uint32_t* ends = a.block_ends + r * blocks;
      unit_row_panel<Isa, N>(a, r, index + (b0 ? ends[b0 - 1] : 0), index + ends[b1 - 1], w, stride,
                             p * kPanel, a.y + r * a.y_stride + p * kPanel, b0 == 0, b1 == blocks);
    }
  }
}

template <class Isa>
void dense_units(const QuantDenseArgs& a) {
  constexpr size_t L = Isa::kLanes, kPanel = 8 * L;
  // As in dense_sparse_rows: sparser rows touch fewer weight units per block, so more blocks fit
  // in L1 at once. A block of a 128-column int8 panel is 8 KiB.
  uint64_t nonzeros = 0;
  const size_t blocks = (a.units + kUnitBlock - 1) / kUnitBlock;
  for (size_t r = 0; r < a.rows; ++r) nonzeros += a.block_ends[r * blocks + blocks - 1];
  const uint64_t total = uint64_t(a.rows) * a.units;
  const size_t group = a.rows == 1 ? blocks : nonzeros * 2 <= total ? 4 : 2;
  for (size_t p = 0; p < a.panels; ++p) {
    const size_t live = a.out_width - p * kPanel;
    const bool tail = live < kPanel;
    switch (tail ? (live + L - 1) / L : 8) {
      case 1: unit_panel<Isa, 1>(a, p, group, tail); break;
      case 2: unit_panel<Isa, 2>(a, p, group, tail); break;
      case 3: unit_panel<Isa, 3>(a, p, group, tail); break;
      case 4: unit_panel<Isa, 4>(a, p, group, tail); break;
      case 5: unit_panel<Isa, 5>(a, p, group, tail); break;
      case 6: unit_panel<Isa, 6>(a, p, group, tail); break;
      case 7: unit_panel<Isa, 7>(a, p, group, tail); break;
      default: unit_panel<Isa, 8>(a, p, group, tail); break;
    }
  }
}

}  // namespace
}  // namespace mnist_engine::kernels
