// What engine.cpp and engine_quantized.cpp share: the per-thread scratch of a tile, and small
// helpers. Private to the engine.
#pragma once

#include <algorithm>
#include <memory>
#include <type_traits>

#include "dispatch.h"
#include "mnist_engine/engine.h"

namespace mnist_engine {
namespace internal {

inline size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
inline const KernelInfo& kernel_of(const void* p) { return *static_cast<const KernelInfo*>(p); }

}  // namespace internal

// One thread's buffers for one tile of rows, carved from one allocation (a single-image call
// would otherwise pay for eight). Sized for the rows a tile will really hold and left
// uninitialised (every element is written before it is read): a single-image call must not pay
// for clearing a 64-row tile.
struct Engine::Scratch {
  float* input = nullptr;         // fp32: one tile of uint8 rows converted to floats
  float* ping = nullptr;          // alternating layer outputs
  float* pong = nullptr;
  uint32_t* block_ends = nullptr;  // per row: where each block of its index list ends
  uint16_t* nz_index = nullptr;    // fp32, per row: its nonzero inputs (widths are <= 65536)
  uint8_t* act = nullptr;          // bf16/int8: a layer's input rows in its precision
  float* row_scale = nullptr;      // int8: per row
  int32_t* row_zero = nullptr;
  uint16_t* unit_index = nullptr;  // bf16/int8, per row: its nonzero 4-byte units
  float* padded = nullptr;         // conv2d, one image at a time: the input inside its padding
  float* conv_out = nullptr;       // its outputs, panel-wide (Engine::run_conv)
  uint8_t* frame = nullptr;        // int8/bf16 conv: the padded input image, its slack, the unpadded one
  float range[2] = {0.0f, 0.0f};   // float input: the span this thread's tiles held (0 included)
  bool measure = false;            // measure it (predict was given `seen`)
  int conv_team = 1;               // threads a conv layer may split an image's rows over

  Scratch(const Engine& e, size_t rows, bool pixels) {
    const KernelInfo& k = internal::kernel_of(e.kernel_);
    // A quantized engine may run small tiles on a second kernel: room for either.
    const KernelInfo& small = e.small_plan_.kernel ? internal::kernel_of(e.small_plan_.kernel) : k;
    const size_t row_align = std::max(k.row_align, small.row_align);
    const bool indexed = k.unit_index || small.unit_index;
    size_t at = 0;
    // Two passes over the same plan: the first sums the sizes, the second hands out pointers.
    for (int pass = 0; pass < 2; ++pass) {
      at = 0;
      const auto take = [&](auto*& p, size_t count) {
        using T = std::remove_reference_t<decltype(*p)>;
        if (pass == 1) p = reinterpret_cast<T*>(arena_.data() + at);
        at += internal::round_up(count * sizeof(T), kAlign);
      };
      take(ping, rows * e.max_padded_width_);
      take(pong, rows * e.max_padded_width_);
      if (e.precision_ == Precision::Fp32) {
        take(input, pixels ? rows * e.input_width_ : 0);
        take(block_ends, rows * (e.max_input_width_ / kernels::kIndexBlock + 1));
        take(nz_index, k.wants_nonzero_index ? rows * e.max_input_width_ : 1);
      } else {
        // Pixels go straight into the first dense layer, unless an element-wise layer comes first.
        take(input, pixels && e.first_layer_elementwise_ ? rows * e.input_width_ : 0);
        // A tile kernel (AMX) reads whole blocks of rows; the rows past the tile are never stored.
        take(act, internal::round_up(rows, row_align) * e.max_act_bytes_);
        take(row_scale, rows);
        take(row_zero, rows);
        take(block_ends, rows * (e.max_units_ / kernels::kUnitBlock + 1));
        take(unit_index, indexed ? rows * e.max_units_ : 1);
      }
      // Conv layers run image by image: fp32 through `padded`, int8 through `frame`.
      take(padded, e.max_conv_padded_);
      take(frame, e.max_conv_frame_);
      take(conv_out, e.max_conv_out_);
      if (pass == 0) arena_ = AlignedArray<uint8_t>(at, AlignedArray<uint8_t>::kUninitialized);
    }
  }

 private:
  static constexpr size_t kAlign = 64;  // a cache line, and a zmm register
  AlignedArray<uint8_t> arena_;
};

}  // namespace mnist_engine
