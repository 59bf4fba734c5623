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
// Every output sums its window in the order (ky, kx, c) from the bias, one FMA per term, so every
// FMA ISA gives the same bits for any MR, and tail tiles the same bits as full ones (the scalar
// reference, without FMA, rounds each product: within 1e-5 relative).
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

// MR pixels x NV vectors of filters over the whole window. x: pixel 0's window origin in the padded
// image; pixel i's is x + i * pixel_step, window row ky is row_step further; w: the panel's weights,
// one row of NV vectors per window element in (ky, kx, c) order; y: pixel 0's outputs of this panel,
// pixel i's at y + i * y_stride.
//
// Accumulators are an array whose every index is a constant after unrolling, so GCC keeps them in
// registers (checked in the assembly: no stores inside the window loop).
template <class Isa, int MR, int NV>
__attribute__((noinline)) void conv_tile(const float* x, size_t pixel_step, size_t row_step, size_t window_h,
                                         size_t segment, const float* w, const float* bias, float* y,
                                         size_t y_stride, bool relu, bool skip_zeros) {
  using V = typename Isa::V;
  constexpr size_t L = Isa::kLanes, P = NV * L;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::load(bias + v * L);
  for (size_t ky = 0; ky < window_h; ++ky) {
    const float* row = x + ky * row_step;
    const float* wrow = w + ky * segment * P;
    for (size_t t0 = 0; t0 < segment; t0 += 64) {
      const size_t count = segment - t0 < 64 ? segment - t0 : 64;
      uint64_t bits = skip_zeros ? any_nonzero<Isa, MR>(row + t0, pixel_step, count) : ~0ull >> (64 - count);
      for (; bits; bits &= bits - 1) {
        const size_t t = t0 + size_t(__builtin_ctzll(bits));
        const float* wk = wrow + t * P;
        V wv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) wv[v] = Isa::load(wk + v * L);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
          const V xv = Isa::broadcast(row + i * pixel_step + t);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = Isa::fmadd(xv, wv[v], acc[i][v]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Isa::store(y + i * y_stride + v * L, relu ? Isa::relu(acc[i][v]) : acc[i][v]);
}

using ConvTileFn = void (*)(const float*, size_t, size_t, size_t, size_t, const float*, const float*, float*,
                            size_t, bool, bool);

// conv_tile for 1..MR pixels, indexed by pixels - 1: the tile that finishes an output row. A plain
// array (std::array's operator[] would be a weak symbol compiled with this file's ISA flags).
template <class Isa, int NV, class Pixels>
struct TileTable;
template <class Isa, int NV, size_t... Pixels>
struct TileTable<Isa, NV, std::index_sequence<Pixels...>> {
  static constexpr ConvTileFn tiles[] = {conv_tile<Isa, int(Pixels) + 1, NV>...};
};

template <class Isa, int MR, int NV>
void conv_direct(const ConvArgs& a) {
  constexpr size_t P = NV * Isa::kLanes;
  const ConvTileFn* tiles = TileTable<Isa, NV, std::make_index_sequence<MR>>::tiles;
  const size_t segment = a.window_w * a.channels, depth = a.window_h * segment;
  const size_t pixel_step = a.stride_w * a.channels, row_step = a.padded_w * a.channels;
  for (size_t p = 0; p < a.panels; ++p)
    for_each_tile<MR>(a.out_h, a.out_w, [&](size_t oy, size_t ox, size_t pixels) {
      tiles[pixels - 1](a.x + oy * a.stride_h * row_step + ox * pixel_step, pixel_step, row_step, a.window_h,
                        segment, a.packed + p * depth * P, a.bias + p * P,
                        a.y + (oy * a.out_w + ox) * a.y_stride + p * P, a.y_stride, a.relu, a.skip_zeros);
    });
}

}  // namespace
}  // namespace mnist_engine::kernels
