// The dense-layer microkernel interface. Each kernel lives in its own file, named
// dtype-op-tile-isa (XNNPACK style), and is compiled with only its own ISA flags.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mnist_engine/vocabulary.h"

namespace mnist_engine::kernels {

// Computes y[r][j] = b[j] + sum_k x[r][k] * W[k][j] for r < rows and j < out_width, then
// max(y, 0) when `relu` is set (the one activation cheap enough to fuse into every kernel). A
// kernel may also write the padding columns of its last panel.
//
// The weights are packed once at load into column panels of `panel_width` columns: panel p holds
// `in` rows of panel_width floats, packed[(p * in + k) * panel_width + c] = W[k][p * panel_width + c].
// The last panel, when the layer's width is not a multiple of panel_width, holds only its real
// columns, rounded up to the kernel's tail granule: rows of `tail_stride` floats, so narrow
// layers cost no padding memory. `bias` is zero-padded to whole panels, so a kernel may compute
// and store whole vectors; `y_stride` is at least the padded width.
struct DenseArgs {
  const float* x;
  size_t x_stride;
  size_t rows;
  size_t in;
  // The nonzero inputs of each row, in increasing k, starting at nz_index + r * in, and where each
  // block of kIndexBlock inputs ends in that list: row r's ends start at block_ends + r * blocks,
  // blocks = ceil(in / kIndexBlock). Set only for kernels whose KernelInfo asks. A kernel that sums
  // over these alone gets the same bits as one summing over every k: fma(0, w, acc) == acc for
  // finite w, and the format guarantees finite weights.
  const uint32_t* block_ends;  // row r, block b: how many of its nonzeros have k < (b + 1) * kIndexBlock
  const uint16_t* nz_index;
  const float* packed;
  size_t tail_stride;  // floats per weight row of the last panel when it is partial
  const float* bias;
  size_t panels;
  size_t out_width;  // real output columns; a kernel may skip the padding of the last panel
  float* y;
  size_t y_stride;
  bool relu;
};

using DenseFn = void (*)(const DenseArgs&);

// Writes the indices of the nonzero (or NaN) values of x[0..width) in increasing order to `out`,
// which has room for `width` entries, and for each block b of kIndexBlock inputs how many of them
// have k < (b + 1) * kIndexBlock to block_ends[b] (the last entry is the total). When `range` is
// not null, also widens range[0]..range[1] to the row's smallest and largest value (NaN ignored):
// the engine's input-range check rides on this pass over the input rows (InputRange, engine.h).
inline constexpr size_t kIndexBlock = 64;
using NonzeroIndexFn = void (*)(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range);
// out[i] = float(pixels[i] * scale), the product taken in double and rounded once.
using PixelsToFloatFn = void (*)(const uint8_t* pixels, size_t n, double scale, float* out);

void nonzero_index_scalar(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range);

// Helpers defined in this header are compiled into files with different ISA flags, so they have
// internal linkage: an `inline` function with external linkage would be one symbol to the linker,
// which may keep the AVX-512 copy for the scalar path (tests/test_build.py checks the objects).
namespace {

// Widens range[0]..range[1] to x[k..width) (NaN compares false and is ignored); the scalar part
// every version of the range measurement uses for its tail.
inline void widen_range(const float* x, size_t k, size_t width, float* range) {
  float lo = range[0], hi = range[1];
  for (; k < width; ++k) {
    lo = x[k] < lo ? x[k] : lo;
    hi = x[k] > hi ? x[k] : hi;
  }
  range[0] = lo;
  range[1] = hi;
}

// Finishes a nonzero index from input k on, given the n entries found before k; k must be a
// block boundary or a multiple of the caller's SIMD step. The scalar form that every version
// uses for its tail (and the scalar version for everything). Branch-free: every k is written and
// the count advances past the nonzero ones only, so the cost does not depend on how predictable
// the zeros are. NaN compares unequal to 0 and is kept.
inline void nonzero_index_tail(const float* x, size_t k, size_t width, uint16_t* out, uint32_t n,
                               uint32_t* block_ends) {
  for (; k < width; ++k) {
    out[n] = static_cast<uint16_t>(k);
    n += x[k] != 0.0f;
    if ((k + 1) % kIndexBlock == 0) block_ends[k / kIndexBlock] = n;
  }
  if (width % kIndexBlock != 0) block_ends[width / kIndexBlock] = n;
}

// Whether a conv layer's outputs sum their window row by row (window row 0 onto the bias, each
// later row from zero and then added: conv-direct.h) rather than in one chain. A long chain rounds
// more (its error grows with its length), but summing apart costs a pass over the tile's
// accumulators per row, which only pays where a row is long: a one-channel 3 x 3 window has rows
// of 3 terms. Decided by the layer's shape alone, so that every kernel sums alike.
inline bool conv_sums_rows_apart(size_t window_h, size_t row_terms) { return window_h > 1 && row_terms >= 32; }

// Whether a conv layer runs as Winograd F(2x2, 3x3) (conv-winograd.h) on a kernel that has one: a
// 3 x 3 window at stride 1, on 8 to kWinogradMaxChannels input channels. It does 2.25x fewer
// multiply-adds than the direct kernel but cannot skip zeros, so a layer of a few channels (a
// first layer on pixels, mostly background) stays direct. The bound on channels sizes the
// kernel's stack buffer (16 x 12 tiles x 128 channels: 96 KiB).
inline constexpr size_t kWinogradMaxChannels = 128;
inline bool conv_winograd_fits(size_t window_h, size_t window_w, size_t stride_h, size_t stride_w, size_t channels) {
  return window_h == 3 && window_w == 3 && stride_h == 1 && stride_w == 1 && channels >= 8 &&
         channels <= kWinogradMaxChannels;
}

}  // namespace

void pixels_to_float_scalar(const uint8_t* pixels, size_t n, double scale, float* out);

// A version-2 activation (docs/FORMAT.md, code >= 5) applied in place to one row of n values;
// `params` as the format stores them (prelu: one per value). f32-activation.h, one file per ISA.
using ActivationFn = void (*)(uint32_t activation, const float* params, float* y, size_t n);
void f32_activation_scalar(uint32_t activation, const float* params, float* y, size_t n);

// The machine's FMA throughput probe (f32-fma-peak.h): 12 * lanes multiply-adds per iteration.
using FmaPeakFn = float (*)(uint64_t iterations);
float fma_peak_scalar(uint64_t iterations);

// Pooling (format version 3) on one NHWC image of g.in's shape, into y of shape `out` (the op's
// output_shape, computed by the caller: an ISA file must not emit that inline function's code):
// f32-pool.h, compiled per ISA.
using PoolFn = void (*)(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y);
void f32_pool_scalar(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y);

// A convolution (format version 3) on one image, direct (conv-direct.h). `x` is the image NHWC
// with the layer's padding already added around it (padded_w columns); output pixel (oy, ox)'s
// window starts at padded pixel (oy * stride_h, ox * stride_w). The kernel is packed in panels of
// `panel` filters (KernelInfo::conv_panel): packed[(p * depth + k) * panel + f] = W[k][p * panel + f],
// k = (ky * window_w + kx) * channels + c (Keras's layout), zero past the last filter; `bias` is
// zero-padded likewise. Writes y[(oy * out_w + ox) * y_stride + f] for every f < panels * panel,
// each output the bias plus its window's terms in k order (by window rows where
// conv_sums_rows_apart), then max(y, 0) when `relu` is set.
struct ConvArgs {
  const float* x;
  size_t padded_w, channels;
  size_t window_h, window_w, stride_h, stride_w;
  size_t out_h, out_w;
  const float* packed;
  const float* bias;
  size_t panels;
  float* y;
  size_t y_stride;  // at least panels * panel
  bool relu;
  bool skip_zeros;  // skip window positions that are zero in every pixel of a tile (same bits)
  // 2: a 2 x 2 max pool (stride 2, no padding) fused, for kernels with KernelInfo::conv_pools: y
  // is the pooled map, (out_h / 2) x (out_w / 2) pixels, each the largest of its four outputs
  // (after ReLU), compared in the pooling kernels' order and NaN rule: the same bits. 0: none.
  uint32_t pool;
};
using ConvFn = void (*)(const ConvArgs&);
// Reference: one output at a time (panel 1), summing k in order. Tested against Keras and numpy.
void f32_conv_scalar(const ConvArgs& a);
// Winograd F(2x2, 3x3) (conv-winograd.h) on a layer that conv_winograd_fits: the same arguments,
// but `packed` holds each panel's transformed filters, packed[((p * 16 + q) * channels + c) * panel
// + f] = (G g Gt)[q / 4][q % 4] of filter p * panel + f, channel c (Engine::pack_conv_winograd), and
// the kernel never skips zeros. It reads the padded image up to row out_h + 1 and column out_w + 1.

// Reference: one output at a time, summing k in order. Every other kernel is tested against it.
void f32_dense_scalar(const DenseArgs& a);
inline constexpr uint32_t kScalarPanelWidth = 1;

// ---- Reduced precision (int8, bf16): docs/PERFORMANCE.md, "Precision modes" ----
//
// The activations of a quantized layer are bytes: uint8 (int8 mode) or bfloat16 (bf16 mode),
// `x_stride` bytes per row, zero-padded to a whole number of 4-byte units (one 32-bit lane of a
// dot-product instruction: 4 uint8 inputs for vpdpbusd, 2 bf16 for vdpbf16ps). Weights are packed
// per panel of `panel_width` columns, unit by unit: unit u of panel p is `subgroups` blocks of
// (panel columns x 4 bytes), column j's 4 bytes holding its weights for the unit's inputs of that
// block. The last panel holds only its real columns rounded up to the kernel's granule
// (`tail_stride` columns). Every kernel computes, per row r and column j,
//   int8: y = fma(float(acc - row_zero[r] * col_sum[j]), row_scale[r] * col_scale[j], bias[j]),
//         acc = sum_k x_u8[r][k] * w_s8[k][j] in int32 (wrapping: the true value fits);
//   bf16: y = bias[j] + sum_k float(x_bf16[r][k]) * float(w_bf16[k][j]), summed in float32;
// then max(y, 0) when `relu` is set. Sparse kernels visit only the row's nonzero units (listed as
// for DenseArgs, kUnitBlock units per block); integer sums do not depend on order, so skipping
// zero units changes no bit.
struct QuantDenseArgs {
  const uint8_t* x;
  size_t x_stride;  // bytes
  size_t rows;
  size_t units;     // 4-byte units per row (every one, zero or not)
  const uint32_t* block_ends;
  const uint16_t* unit_index;
  const float* row_scale;    // int8: x = row_scale * (x_u8 - row_zero)
  const int32_t* row_zero;
  const uint8_t* packed;
  size_t tail_stride;        // columns of the last panel
  const float* col_scale;    // int8: w = col_scale * w_s8
  const int32_t* col_sum;    // int8: sum_k w_s8[k][j], for the zero point
  const float* bias;
  size_t panels;
  size_t out_width;
  float* y;
  size_t y_stride;
  bool relu;
};
using QuantDenseFn = void (*)(const QuantDenseArgs&);

inline constexpr size_t kUnitBytes = 4;
inline constexpr size_t kUnitBlock = 16;  // units per index block: one 64-byte line of activations
// The unit-level index of a row of `units` 4-byte units: like NonzeroIndexFn over uint32 words.
using UnitIndexFn = void (*)(const uint8_t* x, size_t units, uint16_t* out, uint32_t* block_ends);
void unit_index_scalar(const uint8_t* x, size_t units, uint16_t* out, uint32_t* block_ends);

// Float rows to the activations of a quantized layer: `width` floats of each row to `out` (rows of
// `out_stride` bytes, padding zeroed). int8: asymmetric uint8 per row (quantization_params), so
// ReLU outputs use the whole 0..255 range with zero point 0; a row with a NaN or infinity gets
// scale NaN, so its outputs are NaN as on the exact path. bf16: round to nearest even. `range`:
// as for NonzeroIndexFn, over all the rows (int8 measures each row's range anyway).
using QuantizeRowsFn = void (*)(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                                size_t out_stride, float* scale, int32_t* zero, float* range);
void quantize_rows_u8_scalar(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                             size_t out_stride, float* scale, int32_t* zero, float* range);
void convert_rows_bf16_scalar(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                              size_t out_stride, float* scale, int32_t* zero, float* range);

// An int8 or bf16 convolution (conv-quant.h, conv-amx.h), one image. `x` is the layer's
// input image quantized to uint8 as one row (value = scale * (x - zero)), NHWC, with the layer's
// padding around it holding the zero point, and readable for quant_conv_slack() bytes past its
// end. A window row of a pixel is window_w * channels bytes, summed a 4-byte unit at a time; its
// last units may reach into the next pixels, whose bytes meet zero weights. The kernel is s8 per
// filter (col_scale), packed per panel of `panel` filters (KernelInfo::quant_conv_panel), unit by
// unit: packed[(((p * window_h + ky) * units + u) * panel + f) * 4 + b] = w_s8[ky][4u + b][p * panel + f],
// units = ceil(window_w * channels / 4) rounded up to KernelInfo::quant_conv_units (a tile kernel
// reads whole 64-byte tile columns), zero past the window row and past the last filter.
// For a tile kernel, the engine may instead pack the whole window as one row (window_h 1): the
// bytes from a pixel's window origin to its window's last, padded_w * channels per image row, with
// zero weights between the window's rows, when that takes fewer tile columns (a 3 x 3 window on
// one channel: one column, not three).
// Every int8 kernel computes, per output pixel and filter f, as u8s8_dense_scalar does,
//   y = fma(float(acc - zero * col_sum[f]), scale * col_scale[f], bias[f]), then relu,
// acc the window's sum of x_u8 * w_s8 in int32 (wrapping: the true value fits). A bf16 kernel
// reads bf16 values (channels is then bytes per pixel, 2 per image channel; the padding is +0),
// its units hold pairs of bf16 weights, and y = bias[f] + the window's products summed in float32
// (bf16_dense_scalar's arithmetic; scale, zero, col_sum and col_scale unused), then relu.
struct QuantConvArgs {
  const uint8_t* x;
  size_t padded_w, channels;
  size_t window_h, window_w, stride_h, stride_w;
  size_t out_h, out_w;
  size_t units;  // per window row in the packing
  const int8_t* packed;
  const int32_t* col_sum;  // per filter, panels * panel
  const float* col_scale;
  const float* bias;
  float scale;
  int32_t zero;
  size_t panels;
  float* y;
  size_t y_stride;  // at least panels * panel
  bool relu;
  bool skip_zeros;  // skip units that are zero in every pixel of a tile (integer sums: same bits)
  // 2: a 2 x 2 max pool (stride 2, no padding) fused, for kernels with KernelInfo::quant_conv_pools:
  // y is the pooled map, (out_h / 2) x (out_w / 2) pixels, each the epilogue of the largest of its
  // four sums, which is the largest of their outputs (the epilogue is monotone). 0: none.
  uint32_t pool;
};
using QuantConvFn = void (*)(const QuantConvArgs&);
void u8s8_conv_scalar(const QuantConvArgs& a);
void bf16_conv_scalar(const QuantConvArgs& a);
namespace {  // internal linkage, as the helpers below (an ISA file must not emit it for the others)
// Bytes an int8 or bf16 conv kernel may read past the image frame: a tile kernel loads 16 pixels' window
// rows at once, up to 15 pixels past a run's last, each a whole packed window row of units.
inline constexpr size_t quant_conv_slack(size_t channels, size_t stride_w, size_t units) {
  return 16 * stride_w * channels + units * kUnitBytes;
}
}  // namespace

void u8s8_dense_scalar(const QuantDenseArgs& a);
void bf16_dense_scalar(const QuantDenseArgs& a);

namespace {

// Per-row int8 parameters from the row's range, computed by this one scalar function for every
// kernel so that all of them quantize a row to the same bytes. The range always includes 0, so 0
// is exactly representable (ReLU zeros stay zeros, and skippable). Every kernel computes a value's
// byte from (x * prescale) * inverse: prescale is 1 but for rows whose range is so small that
// 255 / range would overflow (below 255 / FLT_MAX); those are first scaled by 2^64 (exactly), so
// they quantize like any other row instead of getting an infinite inverse and a NaN zero point.
struct RowQuantization {
  float scale, inverse, zero, prescale;
};

// Nearest-even whatever the rounding mode, as the SIMD versions round (an explicit
// _MM_FROUND_TO_NEAREST_INT); nearbyintf would follow fesetround. Without libm (roundevenf is
// glibc 2.25+) and without SSE4.1: truncation is mode-free and every step after it is exact. No
// branches on the data (a load quantizes ~400k weights; branches cost 7 ms there). NaN and
// |v| >= 2^30 (never a byte or weight value) come back unchanged.
inline float round_nearest_even(float v) {
  if (!(v < 1073741824.0f && v > -1073741824.0f)) return v;
  const int32_t whole = static_cast<int32_t>(v);                // toward zero
  const float rest = v - static_cast<float>(whole);             // exact
  const float half = rest < 0.0f ? -rest : rest;
  const int32_t away = (half > 0.5f) | ((half == 0.5f) & (whole & 1));
  return static_cast<float>(whole + (v < 0.0f ? -away : away));
}

// `finite`: the row holds no NaN or infinity (min and max alone may not see a NaN).
inline RowQuantization quantization_params(float lo, float hi, bool finite) {
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  const float range = hi - lo;
  if (!finite || !(range - range == 0.0f)) return {__builtin_nanf(""), 0.0f, 0.0f, 1.0f};  // range may overflow
  if (range == 0.0f) return {1.0f, 0.0f, 0.0f, 1.0f};  // an all-zero row
  constexpr float kTiny = 0x1p-100f, kPrescale = 0x1p64f;
  const float prescale = range < kTiny ? kPrescale : 1.0f;
  const float inverse = 255.0f / (range * prescale);
  float zero = round_nearest_even(-(lo * prescale) * inverse);
  zero = zero > 255.0f ? 255.0f : zero;
  return {range / 255.0f, inverse, zero, prescale};
}

// One value's byte: nearest-even rounding, then clamping in float, where NaN becomes 0 (the same
// steps and the same NaN rule as _mm512_max_ps(v, 0) then min with 255).
inline uint8_t quantize_value(float x, const RowQuantization& q) {
  float v = round_nearest_even((x * q.prescale) * q.inverse) + q.zero;
  v = v >= 0.0f ? v : 0.0f;
  v = v <= 255.0f ? v : 255.0f;
  return static_cast<uint8_t>(v);
}

// float -> bfloat16 as vcvtneps2bf16 converts (Intel SDM, convert_fp32_to_bfloat16): nearest
// even, denormals to a zero of their sign (the instruction treats them as zero: DAZ), NaN stays a
// (quiet) NaN. Integer arithmetic, so the rounding mode does not matter, as for the instruction.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  if ((u & 0x7f800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// Denormal float32 to a zero of its sign: what the bf16 dot-product instructions do with a
// denormal sum (FTZ) or operand (DAZ).
inline float flush_denormal(float v) {
  uint32_t u;
  __builtin_memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
  __builtin_memcpy(&v, &u, 4);
  return v;
}
inline float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// The unit index's tail, scalar (and the scalar version's whole loop): branch-free like
// nonzero_index_tail.
inline void unit_index_tail(const uint8_t* x, size_t u, size_t units, uint16_t* out, uint32_t n,
                            uint32_t* block_ends) {
  for (; u < units; ++u) {
    uint32_t word;
    __builtin_memcpy(&word, x + kUnitBytes * u, 4);
    out[n] = static_cast<uint16_t>(u);
    n += word != 0;
    if ((u + 1) % kUnitBlock == 0) block_ends[u / kUnitBlock] = n;
  }
  if (units % kUnitBlock != 0) block_ends[units / kUnitBlock] = n;
}

}  // namespace

#if defined(MNIST_ENGINE_X86_KERNELS)
// One row x 64 columns (8 ymm accumulators) over the row's nonzero inputs; AVX2 and FMA.
void f32_dense_1x64_sparse_avx2_fma(const DenseArgs& a);
inline constexpr uint32_t kAvx2PanelWidth = 64;
// Direct convolution: 6 pixels x 16 filters (12 ymm accumulators).
void f32_conv_6x16_avx2_fma(const ConvArgs& a);
void f32_conv_winograd_6x16_avx2_fma(const ConvArgs& a);  // 6 tiles x 16 filters
void nonzero_index_avx2(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range);
void pixels_to_float_avx2(const uint8_t* pixels, size_t n, double scale, float* out);
float fma_peak_avx2(uint64_t iterations);
void f32_activation_avx2_fma(uint32_t activation, const float* params, float* y, size_t n);
void f32_pool_avx2_fma(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y);

// The same at 128 columns (8 zmm accumulators); needs AVX-512F.
void f32_dense_1x128_sparse_avx512f(const DenseArgs& a);
inline constexpr uint32_t kAvx512PanelWidth = 128;
// Direct convolution: 12 pixels x 32 filters (24 zmm accumulators).
void f32_conv_12x32_avx512f(const ConvArgs& a);
void f32_conv_winograd_12x32_avx512f(const ConvArgs& a);  // 12 tiles x 32 filters
void nonzero_index_avx512f(const float* x, size_t width, uint16_t* out, uint32_t* block_ends, float* range);
void pixels_to_float_avx512f(const uint8_t* pixels, size_t n, double scale, float* out);
float fma_peak_avx512f(uint64_t iterations);
void f32_activation_avx512f(uint32_t activation, const float* params, float* y, size_t n);
void f32_pool_avx512f(Op op, const float* x, const Geometry& g, const ImageShape& out, float* y);

// int8 (u8 activations x s8 weights) and bf16 kernels; see QuantDenseArgs.
void u8s8_dense_1x64_sparse_avx512vnni(const QuantDenseArgs& a);  // vpdpbusd zmm
void u8s8_conv_12x32_avx512vnni(const QuantConvArgs& a);         // vpdpbusd zmm, 12 pixels x 32 filters
void u8s8_dense_1x64_sparse_avxvnni(const QuantDenseArgs& a);      // vpdpbusd ymm (VEX)
void u8s8_conv_6x16_avxvnni(const QuantConvArgs& a);              // vpdpbusd ymm, 6 pixels x 16 filters
void u8s8_dense_1x64_sparse_avx2(const QuantDenseArgs& a);         // vpmaddwd on int16 pairs
void u8s8_dense_32x32_amx(const QuantDenseArgs& a);                // tdpbusd
void u8s8_conv_32x32_amx(const QuantConvArgs& a);                  // tdpbusd, 32 pixels x 32 filters
void bf16_dense_1x128_sparse_avx512bf16(const QuantDenseArgs& a);  // vdpbf16ps zmm
void bf16_dense_32x32_amx(const QuantDenseArgs& a);                // tdpbf16ps
void bf16_conv_32x32_amx(const QuantConvArgs& a);                  // tdpbf16ps, 32 pixels x 32 filters
void unit_index_avx512f(const uint8_t* x, size_t units, uint16_t* out, uint32_t* block_ends);
void quantize_rows_u8_avx512f(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                              size_t out_stride, float* scale, int32_t* zero, float* range);
void quantize_rows_u8_avx2(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                           size_t out_stride, float* scale, int32_t* zero, float* range);
void convert_rows_bf16_avx512bf16(const float* x, size_t x_stride, size_t rows, size_t width, uint8_t* out,
                                  size_t out_stride, float* scale, int32_t* zero, float* range);
#endif

#if defined(MNIST_ENGINE_ARM_KERNELS)
// One row x 32 columns (8 q-register accumulators) over the row's nonzero inputs; AArch64 NEON.
void f32_dense_1x32_sparse_neon(const DenseArgs& a);
inline constexpr uint32_t kNeonPanelWidth = 32;
// Direct convolution: 6 pixels x 16 filters (24 q-register accumulators).
void f32_conv_6x16_neon(const ConvArgs& a);
void f32_conv_winograd_6x16_neon(const ConvArgs& a);  // 6 tiles x 16 filters
float fma_peak_neon(uint64_t iterations);
#endif

}  // namespace mnist_engine::kernels
