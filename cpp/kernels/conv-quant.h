// The int8 direct convolution (kernels::QuantConvArgs), written once over an integer "ISA" type
// and instantiated per instruction set (u8s8-conv-12x32-avx512vnni.cpp, u8s8-conv-6x16-avxvnni.cpp).
// The shape of the fp32 conv_tile (conv-direct.h): MR neighbouring output pixels x NV vectors of
// filters, held in int32 accumulators over the whole window; per 4-byte unit of a window row it
// loads NV weight vectors once and broadcasts each pixel's 4 input bytes once, and one
// dot-product instruction adds 4 multiply-adds per lane (vpdpbusd: 4x the fp32 FMA's work).
// Integer sums do not depend on order, so every kernel, skipping or not, gives the bits of
// u8s8_conv_scalar. Include it from kernel files only.
//
// Isa provides: Acc (kLanes int32 lanes) with zero(), load_weights(p) (kLanes x 4 bytes),
// dot(acc, word, weights) (acc += the 4 u8 bytes of `word` times each lane's 4 s8 weights),
// nonzero_words(p, count) (bit u set where the 4-byte word u of p, u < count <= kLanes, is
// nonzero; only those words are read) and finish(acc, args, first filter, y) (the epilogue).
#pragma once

#include <cstdint>
#include <utility>

#include "conv-tiles.h"
#include "kernels.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

inline uint32_t word_at(const uint8_t* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// Bit u set when any of the MR rows (x + i * step) has a nonzero word u, u < count <= 64.
template <class Isa, int MR>
inline uint64_t any_nonzero_units(const uint8_t* x, size_t step, size_t count) {
  constexpr size_t L = Isa::kLanes;
  uint64_t bits = 0;
  if (step % kUnitBytes == 0) {  // whole units per pixel: the words of a pixel are aligned to units
    for (size_t u = 0; u < count; u += L) {
      const size_t n = count - u < L ? count - u : L;
      uint64_t lanes = 0;
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) lanes |= Isa::nonzero_words(x + i * step + kUnitBytes * u, n);
      bits |= lanes << u;
    }
    return bits;
  }
  for (size_t u = 0; u < count; ++u) {
    uint32_t any = 0;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) any |= word_at(x + i * step + kUnitBytes * u);
    bits |= uint64_t(any != 0) << u;
  }
  return bits;
}

// The tile's geometry and the layer's epilogue numbers, passed by reference to every tile.
struct QuantTile {
  const QuantConvArgs* args;
  size_t pixel_step, row_step, out_row_step, units;
};

// MR pixels x NV vectors of filters: ROWS output rows (1, or 2 for a fused 2 x 2 max pool) of
// MR / ROWS neighbouring pixels. x: pixel 0's window origin, pixel (r, c)'s at x + r *
// out_row_step + c * pixel_step; w: the panel's weights; col: the panel's first filter; y: the
// tile's first output of the panel. Pooled, each 2 x 2 block of pixels gives one output, the
// epilogue of the largest of its four int32 sums: the epilogue is monotone (kernels.h: scale and
// col_scale are not negative), so that is the largest of the four outputs, bit for bit, as in
// conv-amx.h.
template <class Isa, int MR, int NV, int ROWS>
__attribute__((noinline)) void quant_conv_tile(const QuantTile& t, const uint8_t* x, const int8_t* w, size_t col,
                                               float* y) {
  using Acc = typename Isa::Acc;
  constexpr size_t L = Isa::kLanes, P = NV * L;
  constexpr int COLS = MR / ROWS;
  static_assert(MR % ROWS == 0 && (ROWS == 1 || COLS % 2 == 0), "a pooled tile is whole 2 x 2 blocks");
  const QuantConvArgs& a = *t.args;
  Acc acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::zero();
  for (size_t ky = 0; ky < a.window_h; ++ky) {
    const uint8_t* row = x + ky * t.row_step;
    const int8_t* wrow = w + ky * t.units * P * kUnitBytes;
    for (size_t u0 = 0; u0 < t.units; u0 += 64) {
      const size_t count = t.units - u0 < 64 ? t.units - u0 : 64;
      uint64_t bits = ~0ull >> (64 - count);
      if (a.skip_zeros) {
        bits = any_nonzero_units<Isa, COLS>(row + kUnitBytes * u0, t.pixel_step, count);
        if (ROWS == 2) bits |= any_nonzero_units<Isa, COLS>(row + t.out_row_step + kUnitBytes * u0, t.pixel_step, count);
      }
      for (; bits; bits &= bits - 1) {
        const size_t u = u0 + size_t(__builtin_ctzll(bits));
        const int8_t* wk = wrow + u * P * kUnitBytes;
        typename Isa::Weights wv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = Isa::load_weights(wk + v * L * kUnitBytes);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const uint32_t word =
              word_at(row + (i / COLS) * t.out_row_step + (i % COLS) * t.pixel_step + kUnitBytes * u);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = Isa::dot(acc[i][v], word, wv[v]);
        }
      }
    }
  }
  if constexpr (ROWS == 1) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) Isa::finish(acc[i][v], a, col + v * L, y + i * a.y_stride + v * L);
  } else {
#pragma GCC unroll 8
    for (int q = 0; q < COLS / 2; ++q)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const Acc top = Isa::max(acc[2 * q][v], acc[2 * q + 1][v]);
        const Acc bottom = Isa::max(acc[COLS + 2 * q][v], acc[COLS + 2 * q + 1][v]);
        Isa::finish(Isa::max(top, bottom), a, col + v * L, y + q * a.y_stride + v * L);
      }
  }
}

using QuantTileFn = void (*)(const QuantTile&, const uint8_t*, const int8_t*, size_t, float*);

// quant_conv_tile for 1..N tile widths, indexed by width - 1: pixels, or pooled pixels of 2 x 2
// blocks (a plain array: see conv-direct.h).
template <class Isa, int NV, int ROWS, class Widths>
struct QuantTileTable;
template <class Isa, int NV, size_t... Widths>
struct QuantTileTable<Isa, NV, 1, std::index_sequence<Widths...>> {
  static constexpr QuantTileFn tiles[] = {quant_conv_tile<Isa, int(Widths) + 1, NV, 1>...};
};
template <class Isa, int NV, size_t... Widths>
struct QuantTileTable<Isa, NV, 2, std::index_sequence<Widths...>> {
  static constexpr QuantTileFn tiles[] = {quant_conv_tile<Isa, 4 * (int(Widths) + 1), NV, 2>...};
};

// MR: pixels per tile; PQ: pooled pixels per tile with a fused 2 x 2 max pool (4 * PQ pixels), 0
// for a kernel that does not fuse one (KernelInfo::quant_conv_pools; Isa then needs no max).
template <class Isa, int MR, int NV, int PQ = 0>
void quant_conv_direct(const QuantConvArgs& a) {
  constexpr size_t P = NV * Isa::kLanes;
  const size_t pixel_step = a.stride_w * a.channels, row_step = a.padded_w * a.channels;
  const QuantTile t{&a, pixel_step, row_step, a.stride_h * row_step, a.units};
  const size_t panel_bytes = a.window_h * t.units * P * kUnitBytes;
  if constexpr (PQ > 0) {
    if (a.pool == 2) {
      const QuantTileFn* tiles = QuantTileTable<Isa, NV, 2, std::make_index_sequence<PQ>>::tiles;
      const size_t pooled_w = a.out_w / 2;
      for (size_t p = 0; p < a.panels; ++p)
        for_each_tile<PQ>(a.out_h / 2, pooled_w, [&](size_t py, size_t px, size_t pooled) {
          tiles[pooled - 1](t, a.x + 2 * (py * t.out_row_step + px * pixel_step), a.packed + p * panel_bytes, p * P,
                            a.y + (py * pooled_w + px) * a.y_stride + p * P);
        });
      return;
    }
  }
  const QuantTileFn* tiles = QuantTileTable<Isa, NV, 1, std::make_index_sequence<MR>>::tiles;
  for (size_t p = 0; p < a.panels; ++p)
    for_each_tile<MR>(a.out_h, a.out_w, [&](size_t oy, size_t ox, size_t pixels) {
      tiles[pixels - 1](t, a.x + oy * t.out_row_step + ox * pixel_step, a.packed + p * panel_bytes, p * P,
                        a.y + (oy * a.out_w + ox) * a.y_stride + p * P);
    });
}

}  // namespace
}  // namespace mnist_engine::kernels
