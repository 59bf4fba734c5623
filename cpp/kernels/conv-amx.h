// The AMX convolution algorithm (kernels::QuantConvArgs), written once for the int8 (tdpbusd) and
// bf16 (tdpbf16ps) tile instructions, as dense-amx.h is for dense layers. Include it from kernel
// files only (u8s8-conv-32x32-amx.cpp, bf16-conv-32x32-amx.cpp).
//
// Tiles: 32 output pixels x 32 filters of 32-bit sums (four 16 x 16 tiles), the window read from
// the padded image in place, one 64-byte tile column (16 units) of a window row at a time. No
// im2col: with a row stride of `step` bytes, a tile load takes the same window-row piece of 16
// output pixels at once, because output pixel j's window row starts step * j bytes after pixel 0's.
//
// Which pixels share a tile: at stride 1 (both ways) a whole image is one run of pixels. Its
// output rows are read as rows of padded_w pixels, the last window_w - 1 of each a window that
// wraps into the next image row: computed, never stored (for the keras-io convnet's second layer,
// 11 x 13 computed for 11 x 11 kept). With other strides each output row is a run of its own.
// With a fused 2 x 2 max pool (QuantConvArgs::pool), the two tiles are the same 16 columns of two
// neighbouring output rows, and Op::finish_pooled takes the four sums of each pooled pixel.
//
// The tile column of a window row covers its bytes and the rest of its 64; the packing's units
// past the window row are zero (units is a multiple of 16), so the bytes they meet, the next
// pixels', add nothing. Reads reach kernels::quant_conv_slack bytes past the frame.
#pragma once

#include <immintrin.h>

#include "amx-tiles.h"
#include "kernels.h"

namespace mnist_engine::kernels {
namespace {

inline constexpr size_t kPanel = 2 * kAmxPanel;  // filters per panel of the packing: two B tiles
using Sums = uint32_t[kAmxRows][kPanel];  // int32 or float32 sums, as the tile instruction writes them

// The sums of panel p's filters for 16 pixels from x0 (and 16 from x1 when `second`), `step`
// bytes apart, into sums[0..16) (and sums[16..32)).
void tile_sums(const QuantConvArgs& a, const uint8_t* x0, const uint8_t* x1, size_t step, bool second, size_t p,
               Sums& sums) {
  constexpr size_t kUnitRow = kPanel * kUnitBytes, kSumStride = sizeof(sums[0]);
  const size_t row_step = a.padded_w * a.channels;
  const int8_t* w = a.packed + p * a.window_h * a.units * kUnitRow;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (size_t ky = 0; ky < a.window_h; ++ky) {
    const uint8_t* r0 = x0 + ky * row_step;
    const uint8_t* r1 = x1 + ky * row_step;
    const int8_t* wk = w + ky * a.units * kUnitRow;
    for (size_t u = 0; u < a.units; u += kAmxUnits) {
      _tile_loadd(4, r0 + kUnitBytes * u, step);
      _tile_loadd(6, wk + u * kUnitRow, kUnitRow);
      _tile_loadd(7, wk + u * kUnitRow + kAmxPanel * kUnitBytes, kUnitRow);
      MNIST_ENGINE_AMX_DOT(0, 4, 6);
      MNIST_ENGINE_AMX_DOT(1, 4, 7);
      if (second) {
        _tile_loadd(5, r1 + kUnitBytes * u, step);
        MNIST_ENGINE_AMX_DOT(2, 5, 6);
        MNIST_ENGINE_AMX_DOT(3, 5, 7);
      }
    }
  }
  _tile_stored(0, &sums[0][0], kSumStride);
  _tile_stored(1, &sums[0][kAmxPanel], kSumStride);
  if (second) {
    _tile_stored(2, &sums[16][0], kSumStride);
    _tile_stored(3, &sums[16][kAmxPanel], kSumStride);
  }
}

// One run of `length` pixels starting at x, `step` bytes apart; pixel j is stored at
// y + (j / per_row * out_w + j % per_row) * y_stride when j % per_row < out_w.
template <class Op>
void conv_run(const QuantConvArgs& a, const uint8_t* x, size_t length, size_t step, size_t per_row, float* y) {
  alignas(64) Sums sums;
  for (size_t j0 = 0; j0 < length; j0 += kAmxRows) {
    const size_t pixels = length - j0 < kAmxRows ? length - j0 : kAmxRows;
    for (size_t p = 0; p < a.panels; ++p) {
      tile_sums(a, x + j0 * step, x + (j0 + 16) * step, step, pixels > 16, p, sums);
      size_t oy = j0 / per_row, ox = j0 % per_row;  // one division per tile, not per pixel
      for (size_t i = 0; i < pixels; ++i) {
        if (ox < a.out_w)
          for (size_t half = 0; half < kPanel; half += kAmxPanel)
            Op::finish(a, &sums[i][half], p * kPanel + half, y + (oy * a.out_w + ox) * a.y_stride + p * kPanel + half);
        if (++ox == per_row) {
          ox = 0;
          ++oy;
        }
      }
    }
  }
}

// Output rows 2py and 2py + 1 as the two tiles, 16 columns (8 pooled pixels) at a time.
template <class Op>
void conv_pooled(const QuantConvArgs& a) {
  alignas(64) Sums sums;
  const size_t row_step = a.padded_w * a.channels, step = a.stride_w * a.channels;
  const size_t pooled_h = a.out_h / 2, pooled_w = a.out_w / 2;
  for (size_t py = 0; py < pooled_h; ++py) {
    const uint8_t* top = a.x + 2 * py * a.stride_h * row_step;
    const uint8_t* bottom = top + a.stride_h * row_step;
    for (size_t px0 = 0; px0 < pooled_w; px0 += kAmxRows / 4) {
      const size_t pixels = pooled_w - px0 < kAmxRows / 4 ? pooled_w - px0 : kAmxRows / 4;
      for (size_t p = 0; p < a.panels; ++p) {
        tile_sums(a, top + 2 * px0 * step, bottom + 2 * px0 * step, step, true, p, sums);
        for (size_t i = 0; i < pixels; ++i) {
          float* out = a.y + (py * pooled_w + px0 + i) * a.y_stride + p * kPanel;
          for (size_t half = 0; half < kPanel; half += kAmxPanel)
            Op::finish_pooled(a, &sums[2 * i][half], &sums[2 * i + 1][half], &sums[16 + 2 * i][half],
                              &sums[16 + 2 * i + 1][half], p * kPanel + half, out + half);
        }
      }
    }
  }
}

// The including file defines MNIST_ENGINE_AMX_DOT(c, a, b), its tile instruction, and Op provides
// finish(args, sums16, first filter, y) for 16 filters of one pixel and finish_pooled(args, four
// pixels' sums16 (top left, top right, bottom left, bottom right), first filter, y).
template <class Op>
void conv_amx(const QuantConvArgs& a) {
  _tile_loadconfig(&kFullTiles);
  if (a.pool == 2) {
    conv_pooled<Op>(a);
  } else if (a.stride_h == 1 && a.stride_w == 1) {
    conv_run<Op>(a, a.x, a.out_h * a.padded_w, a.channels, a.padded_w, a.y);
  } else {
    const size_t row_step = a.padded_w * a.channels;
    for (size_t oy = 0; oy < a.out_h; ++oy)
      conv_run<Op>(a, a.x + oy * a.stride_h * row_step, a.out_w, a.stride_w * a.channels, a.out_w,
                   a.y + oy * a.out_w * a.y_stride);
  }
  _tile_release();
}

}  // namespace
}  // namespace mnist_engine::kernels
