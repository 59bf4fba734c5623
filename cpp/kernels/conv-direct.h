// Direct convolution, written once over a vector "ISA" type (f32-vector-<isa>.h) and instantiated
// by one kernel file per instruction set (f32-conv-12x32-avx512f.cpp, ...), each compiled with its
// own ISA flags. Include it from kernel files only.
//
// The filters are the vector axis: a tile is MR neighbouring output pixels of one output row times
// one panel of NV vectors of filters, MR x NV accumulators held in registers for the whole window.
// Per window element it loads NV weight vectors once and broadcasts each pixel's input value once:
// MR x NV FMAs for NV + MR loads, so the FMA units, not the loads, set the pace. There is no
// im2col copy: the image is NHWC and padded by the caller, so one window row of a pixel,
// (kx, c) for every kx and c, is window_w x channels contiguous floats, and neighbouring pixels'
// rows are stride_w x channels apart.
//
// Every output sums its window in (ky, kx, c) order from the bias, one FMA per term. Where window
// rows are long (conv_sums_rows_apart, kernels.h) it sums row by row: window row 0 onto the bias,
// each later row from zero, added to the sum when the row is done; a long chain rounds more than
// short ones (tests/test_parity.py's ill-conditioned model). Every FMA ISA therefore gives the
// same bits for any MR, and tail tiles the same bits as full ones (the scalar reference, without
// FMA, rounds each product: within 1e-5 relative).
//
// Zeros (unless ConvArgs::skip_zeros is off): where all MR pixels of a tile have a zero at the same window position, that position is
// skipped (fma(0, w, acc) == acc for finite w, as in dense-sparse-rows.h). A pixel's zeros are
// found a vector at a time (Isa::nonzero_bits). MNIST's background gives whole zero windows to
// the first layer, and a ReLU channel that is off across a region gives the second layer runs of
// zeros at the same channel.
#pragma once

#include <cstdint>
#include <utility>

#include "conv-tiles.h"
#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

// Bit t of the result is set when any of the MR rows (x + i * step, i < MR) has a nonzero (or NaN)
// value at t, for t < count <= 64. With step 1 (one channel, stride 1: the first layer of most
// MNIST CNNs) the MR values of one t are neighbours, and one vector tells.
template <class Isa, int MR>
inline uint64_t any_nonzero(const float* x, size_t step, size_t count) {
  constexpr size_t L = Isa::kLanes;
  uint64_t bits = 0;
  if (step == 1 && MR <= L) {
    for (size_t t = 0; t < count; ++t) bits |= uint64_t(Isa::nonzero_bits_first(x + t, MR) != 0) << t;
    return bits;
  }
  size_t t = 0;
  for (; t + L <= count; t += L) {
    uint64_t lanes = 0;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) lanes |= Isa::nonzero_bits(x + i * step + t);
    bits |= lanes << t;
  }
  for (; t < count; ++t) {
    bool any = false;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) any |= x[i * step + t] != 0.0f;
    bits |= uint64_t(any) << t;
  }
  return bits;
}

// A tile's geometry and the layer's epilogue flags, passed by reference to every tile.
struct DirectTile {
  size_t pixel_step, row_step, out_row_step;  // floats: next pixel, next window row, next output row
  size_t window_h, segment;                   // window rows; floats per window row
  size_t y_stride;
  bool relu, skip_zeros, split_rows;
};

// MR pixels x NV vectors of filters over the whole window: ROWS output rows (1, or 2 for a fused
// 2 x 2 max pool) of MR / ROWS neighbouring pixels. x: pixel 0's window origin in the padded image;
// pixel (r, c)'s is x + r * out_row_step + c * pixel_step, window row ky is row_step further;
// w: the panel's weights, one row of NV vectors per window element in (ky, kx, c) order; y: the
// tile's first output of this panel, the next at y + y_stride. Pooled, each 2 x 2 block of
// pixels gives one output, relu then max_keep_nan in f32-pool.h's order: the same bits as the
// conv's stored outputs pooled by f32_pool_<isa>.
//
// Accumulators are an array whose every index is a constant after unrolling, so GCC keeps them in
// registers (checked in the assembly: no stores inside the window loop). The sum of the rows done
// waits in `done`, in memory: MR x NV more registers would not fit, and it is touched once a row.
template <class Isa, int MR, int NV, int ROWS>
__attribute__((noinline)) void conv_tile(const DirectTile& t, const float* x, const float* w, const float* bias,
                                         float* y) {
  using V = typename Isa::V;
  constexpr size_t L = Isa::kLanes, P = NV * L;
  constexpr int COLS = MR / ROWS;
  static_assert(MR % ROWS == 0 && (ROWS == 1 || COLS % 2 == 0), "a pooled tile is whole 2 x 2 blocks");
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::load(bias + v * L);
  alignas(64) float done[MR][NV][L];
  for (size_t ky = 0; ky < t.window_h; ++ky) {
    if (ky > 0 && t.split_rows)
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = Isa::zero();
    const float* row = x + ky * t.row_step;
    const float* wrow = w + ky * t.segment * P;
    for (size_t t0 = 0; t0 < t.segment; t0 += 64) {
      const size_t count = t.segment - t0 < 64 ? t.segment - t0 : 64;
      uint64_t bits = ~0ull >> (64 - count);
      if (t.skip_zeros) {
        bits = any_nonzero<Isa, COLS>(row + t0, t.pixel_step, count);
        if (ROWS == 2) bits |= any_nonzero<Isa, COLS>(row + t.out_row_step + t0, t.pixel_step, count);
      }
      for (; bits; bits &= bits - 1) {
        const size_t k = t0 + size_t(__builtin_ctzll(bits));
        const float* wk = wrow + k * P;
        V wv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = Isa::load(wk + v * L);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const V xv = Isa::broadcast(row + (i / COLS) * t.out_row_step + (i % COLS) * t.pixel_step + k);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = Isa::fmadd(xv, wv[v], acc[i][v]);
        }
      }
    }
    if (!t.split_rows) continue;
    const bool first = ky == 0, last = ky + 1 == t.window_h;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if (first) {
          Isa::store(done[i][v], acc[i][v]);
        } else if (last) {
          acc[i][v] = Isa::add(Isa::load(done[i][v]), acc[i][v]);
        } else {
          Isa::store(done[i][v], Isa::add(Isa::load(done[i][v]), acc[i][v]));
        }
      }
  }
  const auto out = [&](int i, int v) { return t.relu ? Isa::relu(acc[i][v]) : acc[i][v]; };
  if constexpr (ROWS == 1) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) Isa::store(y + i * t.y_stride + v * L, out(i, v));
  } else {
#pragma GCC unroll 8
    for (int q = 0; q < COLS / 2; ++q)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const V top = Isa::max_keep_nan(out(2 * q, v), out(2 * q + 1, v));
        const V m = Isa::max_keep_nan(Isa::max_keep_nan(top, out(COLS + 2 * q, v)), out(COLS + 2 * q + 1, v));
        Isa::store(y + q * t.y_stride + v * L, m);
      }
  }
}

using ConvTileFn = void (*)(const DirectTile&, const float*, const float*, const float*, float*);

// conv_tile for 1..N tile widths, indexed by width - 1 (output pixels, or pooled pixels of
// 2 x 2 blocks: the tile that finishes a row). A plain array (std::array's operator[] would be a
// weak symbol compiled with this file's ISA flags).
template <class Isa, int NV, int ROWS, class Widths>
struct TileTable;
template <class Isa, int NV, size_t... Widths>
struct TileTable<Isa, NV, 1, std::index_sequence<Widths...>> {
  static constexpr ConvTileFn tiles[] = {conv_tile<Isa, int(Widths) + 1, NV, 1>...};
};
template <class Isa, int NV, size_t... Widths>
struct TileTable<Isa, NV, 2, std::index_sequence<Widths...>> {
  static constexpr ConvTileFn tiles[] = {conv_tile<Isa, 4 * (int(Widths) + 1), NV, 2>...};
};

// MR: pixels per tile; PQ: pooled pixels per tile with a fused 2 x 2 max pool (4 * PQ pixels, as
// many accumulators as the ISA's registers leave room for).
template <class Isa, int MR, int NV, int PQ>
void conv_direct(const ConvArgs& a) {
  constexpr size_t P = NV * Isa::kLanes;
  const size_t segment = a.window_w * a.channels, depth = a.window_h * segment;
  const size_t pixel_step = a.stride_w * a.channels, row_step = a.padded_w * a.channels;
  const DirectTile t{pixel_step, row_step, a.stride_h * row_step, a.window_h, segment, a.y_stride,
                     a.relu, a.skip_zeros, conv_sums_rows_apart(a.window_h, segment)};
  if (a.pool == 2) {
    const ConvTileFn* tiles = TileTable<Isa, NV, 2, std::make_index_sequence<PQ>>::tiles;
    const size_t pooled_w = a.out_w / 2;
    for (size_t p = 0; p < a.panels; ++p)
      for_each_tile<PQ>(a.out_h / 2, pooled_w, [&](size_t py, size_t px, size_t pooled) {
        tiles[pooled - 1](t, a.x + 2 * (py * t.out_row_step + px * pixel_step), a.packed + p * depth * P,
                          a.bias + p * P, a.y + (py * pooled_w + px) * a.y_stride + p * P);
      });
    return;
  }
  const ConvTileFn* tiles = TileTable<Isa, NV, 1, std::make_index_sequence<MR>>::tiles;
  for (size_t p = 0; p < a.panels; ++p)
    for_each_tile<MR>(a.out_h, a.out_w, [&](size_t oy, size_t ox, size_t pixels) {
      tiles[pixels - 1](t, a.x + oy * t.out_row_step + ox * pixel_step, a.packed + p * depth * P, a.bias + p * P,
                        a.y + (oy * a.out_w + ox) * a.y_stride + p * P);
    });
}

}  // namespace
}  // namespace mnist_engine::kernels
