// What engine.cpp and engine_quantized.cpp share: the per-thread scratch of a tile, and small
// helpers. Private to the engine.
#pragma once

#include <memory>

#include "dispatch.h"
#include "mnist_engine/engine.h"

namespace mnist_engine {
namespace internal {

inline size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
inline const KernelInfo& kernel_of(const void* p) { return *static_cast<const KernelInfo*>(p); }
// Relu is fused into the kernels; the rest run here on the real (unpadded) columns.
void apply_activation(Activation a, float* y, size_t rows, size_t stride, size_t width);

}  // namespace internal

// One thread's buffers for one tile of rows. Sized for the rows a tile will really hold and left
// uninitialised (every element is written before it is read): a single-image call must not pay
// for clearing a 64-row tile.
struct Engine::Scratch {
  AlignedFloats input;                     // fp32: one tile of uint8 rows converted to floats
  AlignedFloats ping, pong;                // alternating layer outputs
  std::unique_ptr<uint32_t[]> block_ends;  // per row: where each block of its index list ends
  std::unique_ptr<uint16_t[]> nz_index;    // fp32, per row: its nonzero inputs (widths are <= 65536)
  AlignedArray<uint8_t> act;               // bf16/int8: a layer's input rows in its precision
  std::unique_ptr<float[]> row_scale;      // int8: per row
  std::unique_ptr<int32_t[]> row_zero;
  std::unique_ptr<uint16_t[]> unit_index;  // bf16/int8, per row: its nonzero 4-byte units

  Scratch(const Engine& e, size_t rows, bool pixels) {
    const KernelInfo& k = internal::kernel_of(e.kernel_);
    ping = AlignedFloats(rows * e.max_padded_width_, AlignedFloats::kUninitialized);
    pong = AlignedFloats(rows * e.max_padded_width_, AlignedFloats::kUninitialized);
    if (e.precision_ == Precision::Fp32) {
      input = AlignedFloats(pixels ? rows * e.input_width_ : 0, AlignedFloats::kUninitialized);
      block_ends.reset(new uint32_t[rows * (e.max_input_width_ / kernels::kIndexBlock + 1)]);
      nz_index.reset(new uint16_t[k.wants_nonzero_index ? rows * e.max_input_width_ : 1]);
      return;
    }
    // A tile kernel (AMX) reads whole blocks of rows; the rows past the tile are never stored.
    const size_t padded_rows = round_up_rows(rows, k.row_align);
    act = AlignedArray<uint8_t>(padded_rows * e.max_act_bytes_, AlignedArray<uint8_t>::kUninitialized);
    row_scale.reset(new float[rows]);
    row_zero.reset(new int32_t[rows]);
    block_ends.reset(new uint32_t[rows * (e.max_units_ / kernels::kUnitBlock + 1)]);
    unit_index.reset(new uint16_t[k.unit_index ? rows * e.max_units_ : 1]);
  }

 private:
  static size_t round_up_rows(size_t rows, size_t align) { return internal::round_up(rows, align); }
};

}  // namespace mnist_engine
