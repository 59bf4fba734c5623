// Winograd convolution F(2x2, 3x3) for 3x3, stride-1 conv layers (kernels.h: conv_winograd_fits),
// written once over a vector "ISA" type (f32-vector-<isa>.h) and instantiated by one kernel file
// per instruction set (f32-conv-winograd-12x32-avx512f.cpp, ...). Include it from kernel files only.
//
// Each 2 x 2 block of outputs (a "tile") comes from a 4 x 4 patch d of the input: per channel the
// patch is transformed to V = Bt d B, multiplied element by element with the filter's transformed
// window U = G g Gt (the engine's pack_conv_winograd, in double), summed over the channels, and the
// 4 x 4 sum M is transformed back to the tile's outputs At M A. That is 16 multiply-adds per channel
// for 4 outputs instead of 36: 2.25x fewer. The sums over channels are 16 small matrix products
// (tiles x channels times channels x filters), one per position of the 4 x 4 patch, run here as
// register tiles of MR tiles x NV vectors of filters, as the direct kernel's are.
//
//   Bt = | 1  0 -1  0 |    G = | 1    0    0   |    At = | 1  1  1  0 |
//        | 0  1  1  0 |        | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
//        | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
//        | 0  1  0 -1 |        | 0    0    1   |
//
// Bits: the input and output transforms are additions in a fixed order, lane by lane; each
// product sums its channels in order from zero, one FMA per term; the bias is added to each output
// after the output transform, then ReLU, then a fused 2 x 2 max pool in the direct kernel's order
// (a pooled pixel is exactly one tile). Every ISA therefore gives the same bits for any MR, and
// an image split over threads the bits of one thread. They differ from the direct kernel's by
// rounding (tests/test_spatial.py holds both to the float64 reference and to each other).
//
// Edges: an output map of odd height or width ends in tiles of one row or column. Such a tile's
// missing input row (or column) only reaches the outputs it lacks (the last row of Bt d B reads
// d's last row, and only At's second row reads M's last row), so it is read as zeros: the
// kernel never reads past row out_h + 1 or column out_w + 1 of the padded image.
#pragma once

#include <cstddef>
#include <utility>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

// The scalar lane type for a channel count that is not a multiple of the vector width: the same
// additions, one channel at a time, so the bits are the vector lanes'.
struct OneLane {
  using V = float;
  static V load(const float* p) { return *p; }
  static V zero() { return 0.0f; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static void store(float* p, V v) { *p = v; }
};

// V = Bt d B for one group of channels: d[i][j] is patch row i, column j (zeros where `rows` or
// `cols` < 4); v + (4 * i + j) * position_stride receives V[i][j].
template <class Ops>
inline void transform_patch(const float* d, size_t row_step, size_t pixel_step, size_t rows, size_t cols, float* v,
                            size_t position_stride) {
  using V = typename Ops::V;
  V p[4][4];
#pragma GCC unroll 4
  for (size_t i = 0; i < 4; ++i)
#pragma GCC unroll 4
    for (size_t j = 0; j < 4; ++j) p[i][j] = i < rows && j < cols ? Ops::load(d + i * row_step + j * pixel_step) : Ops::zero();
  V r[4][4];
#pragma GCC unroll 4
  for (size_t j = 0; j < 4; ++j) {
    r[0][j] = Ops::sub(p[0][j], p[2][j]);
    r[1][j] = Ops::add(p[1][j], p[2][j]);
    r[2][j] = Ops::sub(p[2][j], p[1][j]);
    r[3][j] = Ops::sub(p[1][j], p[3][j]);
  }
#pragma GCC unroll 4
  for (size_t i = 0; i < 4; ++i) {
    Ops::store(v + (4 * i + 0) * position_stride, Ops::sub(r[i][0], r[i][2]));
    Ops::store(v + (4 * i + 1) * position_stride, Ops::add(r[i][1], r[i][2]));
    Ops::store(v + (4 * i + 2) * position_stride, Ops::sub(r[i][2], r[i][1]));
    Ops::store(v + (4 * i + 3) * position_stride, Ops::sub(r[i][1], r[i][3]));
  }
}

// One position's products for MR tiles: m[i][f] = sum over c of v[i * channels + c] * u[c * P + f],
// in channel order from zero. Accumulators are constant-indexed arrays kept in registers.
template <class Isa, int MR, int NV>
__attribute__((noinline)) void winograd_products(const float* v, size_t channels, const float* u, float* m) {
  using V = typename Isa::V;
  constexpr size_t L = Isa::kLanes, P = NV * L;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[i][n] = Isa::zero();
  for (size_t c = 0; c < channels; ++c) {
    V w[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) w[n] = Isa::load(u + c * P + n * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V x = Isa::broadcast(v + i * channels + c);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[i][n] = Isa::fmadd(x, w[n], acc[i][n]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) Isa::store(m + i * P + n * L, acc[i][n]);
}

using WinogradProductsFn = void (*)(const float*, size_t, const float*, float*);
template <class Isa, int NV, class Counts>
struct ProductsTable;
template <class Isa, int NV, size_t... Counts>
struct ProductsTable<Isa, NV, std::index_sequence<Counts...>> {
  static constexpr WinogradProductsFn products[] = {winograd_products<Isa, int(Counts) + 1, NV>...};
};

// MR: tiles per register tile; NV: vectors of filters per panel (the direct kernel's panel).
template <class Isa, int MR, int NV>
void conv_winograd(const ConvArgs& a) {
  using V = typename Isa::V;
  constexpr size_t L = Isa::kLanes, P = NV * L, kPositions = 16;
  const size_t C = a.channels, pixel_step = C, row_step = a.padded_w * C;
  // The outputs computed: a fused pool drops an odd map's last row and column.
  const size_t rows = a.pool == 2 ? a.out_h / 2 * 2 : a.out_h, cols = a.pool == 2 ? a.out_w / 2 * 2 : a.out_w;
  const size_t tiles_w = (cols + 1) / 2, tiles = (rows + 1) / 2 * tiles_w;
  if (tiles == 0) return;
  alignas(64) float transformed[kPositions * MR * kWinogradMaxChannels];  // [position][tile][channel]
  alignas(64) float sums[kPositions * MR * P];                             // [position][tile][filter]
  const WinogradProductsFn* products = ProductsTable<Isa, NV, std::make_index_sequence<MR>>::products;
  // Runs of tiles in row-major order, of nearly equal size (as conv-tiles.h cuts rows).
  const size_t runs = (tiles + MR - 1) / MR, small = tiles / runs, larger = tiles % runs;
  for (size_t run = 0, first = 0; run < runs; first += small + (run < larger), ++run) {
    const size_t count = small + (run < larger);
    for (size_t i = 0; i < count; ++i) {
      const size_t ty = (first + i) / tiles_w, tx = (first + i) % tiles_w;
      const size_t patch_rows = 2 * ty + 1 < rows ? 4 : 3, patch_cols = 2 * tx + 1 < cols ? 4 : 3;
      const float* d = a.x + 2 * ty * row_step + 2 * tx * pixel_step;
      float* v = transformed + i * C;
      const size_t stride = MR * C;
      size_t c = 0;
      for (; c + L <= C; c += L)
        transform_patch<Isa>(d + c, row_step, pixel_step, patch_rows, patch_cols, v + c, stride);
      for (; c < C; ++c) transform_patch<OneLane>(d + c, row_step, pixel_step, patch_rows, patch_cols, v + c, stride);
    }
    for (size_t p = 0; p < a.panels; ++p) {
      const float* u = a.packed + p * kPositions * C * P;
      for (size_t q = 0; q < kPositions; ++q)
        products[count - 1](transformed + q * MR * C, C, u + q * C * P, sums + q * MR * P);
      for (size_t i = 0; i < count; ++i) {
        const size_t ty = (first + i) / tiles_w, tx = (first + i) % tiles_w;
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) {
          const size_t f = p * P + n * L;
          V m[4][4];
#pragma GCC unroll 4
          for (size_t r = 0; r < 4; ++r)
#pragma GCC unroll 4
            for (size_t s = 0; s < 4; ++s) m[r][s] = Isa::load(sums + ((4 * r + s) * MR + i) * P + n * L);
          V t[2][4];  // At M
#pragma GCC unroll 4
          for (size_t s = 0; s < 4; ++s) {
            t[0][s] = Isa::add(Isa::add(m[0][s], m[1][s]), m[2][s]);
            t[1][s] = Isa::sub(Isa::sub(m[1][s], m[2][s]), m[3][s]);
          }
          const V bias = Isa::load(a.bias + f);
          V out[2][2];  // (At M A) + bias, then ReLU
#pragma GCC unroll 2
          for (size_t r = 0; r < 2; ++r) {
            out[r][0] = Isa::add(Isa::add(Isa::add(t[r][0], t[r][1]), t[r][2]), bias);
            out[r][1] = Isa::add(Isa::sub(Isa::sub(t[r][1], t[r][2]), t[r][3]), bias);
            if (a.relu) out[r][0] = Isa::relu(out[r][0]), out[r][1] = Isa::relu(out[r][1]);
          }
          if (a.pool == 2) {
            const V top = Isa::max_keep_nan(out[0][0], out[0][1]);
            Isa::store(a.y + (ty * (a.out_w / 2) + tx) * a.y_stride + f,
                       Isa::max_keep_nan(Isa::max_keep_nan(top, out[1][0]), out[1][1]));
            continue;
          }
          for (size_t r = 0; r < 2 && 2 * ty + r < rows; ++r)
            for (size_t s = 0; s < 2 && 2 * tx + s < cols; ++s)
              Isa::store(a.y + ((2 * ty + r) * a.out_w + 2 * tx + s) * a.y_stride + f, out[r][s]);
        }
      }
    }
  }
}

}  // namespace
}  // namespace mnist_engine::kernels
