// The AMX dense-layer algorithm, written once for the int8 (tdpbusd) and bf16 (tdpbf16ps) tile
// instructions. Include it from kernel files only.
//
// Dense tiles, no zero skipping: one tile instruction is a 16 x 16 x 64-byte block product, so
// skipping would have to find whole 64-byte column blocks that are zero in 16 rows at once.
// Tiles: C0..C3 (tmm0-3) are 32 rows x 32 columns of 32-bit sums, A0/A1 (tmm4-5) two 16-row slices
// of the activations (16 rows x 64 bytes: 64 uint8 or 32 bf16 inputs), B0/B1 (tmm6-7) 16 units of
// two 16-column panels. Needs (the engine guarantees): units a multiple of 16, panel width 16 (the
// last panel padded to 16), and activation rows readable up to round_up(rows, 32): the extra rows
// are computed and never stored.
#pragma once

#include <immintrin.h>

#include "amx-tiles.h"
#include "kernels.h"

namespace mnist_engine::kernels {
namespace {

// The including file defines MNIST_ENGINE_AMX_DOT(c, a, b), its tile instruction (GCC's tile
// intrinsics paste their register numbers into assembly text, so they must be literals, not
// template arguments), and Op provides finish(const uint32_t* sums16, args, row, column, y) for
// 16 columns of one row.
template <class Op>
void dense_amx(const QuantDenseArgs& a) {
  _tile_loadconfig(&kFullTiles);
  alignas(64) uint32_t sums[kAmxRows][2 * kAmxPanel];
  constexpr size_t kSumStride = sizeof(sums[0]);
  const size_t panel_bytes = a.units * kAmxPanel * kUnitBytes;
  for (size_t r0 = 0; r0 < a.rows; r0 += kAmxRows) {
    const uint8_t* x0 = a.x + r0 * a.x_stride;
    const uint8_t* x1 = x0 + 16 * a.x_stride;
    for (size_t p = 0; p < a.panels; p += 2) {
      const bool pair = p + 1 < a.panels;
      const uint8_t* w0 = a.packed + p * panel_bytes;
      const uint8_t* w1 = w0 + panel_bytes;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (size_t u = 0; u < a.units; u += kAmxUnits) {
        _tile_loadd(4, x0 + kUnitBytes * u, a.x_stride);
        _tile_loadd(5, x1 + kUnitBytes * u, a.x_stride);
        _tile_loadd(6, w0 + u * kAmxPanel * kUnitBytes, kAmxPanel * kUnitBytes);
        MNIST_ENGINE_AMX_DOT(0, 4, 6);
        MNIST_ENGINE_AMX_DOT(2, 5, 6);
        if (pair) {
          _tile_loadd(7, w1 + u * kAmxPanel * kUnitBytes, kAmxPanel * kUnitBytes);
          MNIST_ENGINE_AMX_DOT(1, 4, 7);
          MNIST_ENGINE_AMX_DOT(3, 5, 7);
        }
      }
      _tile_stored(0, &sums[0][0], kSumStride);
      _tile_stored(1, &sums[0][kAmxPanel], kSumStride);
      _tile_stored(2, &sums[16][0], kSumStride);
      _tile_stored(3, &sums[16][kAmxPanel], kSumStride);
      const size_t rows = a.rows - r0 < kAmxRows ? a.rows - r0 : kAmxRows;
      for (size_t i = 0; i < rows; ++i) {
        float* y = a.y + (r0 + i) * a.y_stride + p * kAmxPanel;
        Op::finish(&sums[i][0], a, r0 + i, p * kAmxPanel, y);
        if (pair) Op::finish(&sums[i][kAmxPanel], a, r0 + i, (p + 1) * kAmxPanel, y + kAmxPanel);
      }
    }
  }
  _tile_release();
}

}  // namespace
}  // namespace mnist_engine::kernels
