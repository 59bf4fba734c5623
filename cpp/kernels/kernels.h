// The dense-layer microkernel interface. Each kernel lives in its own file, named
// dtype-op-tile-isa (XNNPACK style), and is compiled with only its own ISA flags.
#pragma once

#include <cstddef>
#include <cstdint>

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
// have k < (b + 1) * kIndexBlock to block_ends[b] (the last entry is the total).
inline constexpr size_t kIndexBlock = 64;
using NonzeroIndexFn = void (*)(const float* x, size_t width, uint16_t* out, uint32_t* block_ends);
// out[i] = float(pixels[i] * scale), the product taken in double and rounded once.
using PixelsToFloatFn = void (*)(const uint8_t* pixels, size_t n, double scale, float* out);

void nonzero_index_scalar(const float* x, size_t width, uint16_t* out, uint32_t* block_ends);

// Helpers defined in this header are compiled into files with different ISA flags, so they have
// internal linkage: an `inline` function with external linkage would be one symbol to the linker,
// which may keep the AVX-512 copy for the scalar path (tests/test_build.py checks the objects).
namespace {

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

}  // namespace

void pixels_to_float_scalar(const uint8_t* pixels, size_t n, double scale, float* out);

// The machine's FMA throughput probe (f32-fma-peak.h): 12 * lanes multiply-adds per iteration.
using FmaPeakFn = float (*)(uint64_t iterations);
float fma_peak_scalar(uint64_t iterations);

// Reference: one output at a time, summing k in order. Every other kernel is tested against it.
void f32_dense_scalar(const DenseArgs& a);
inline constexpr uint32_t kScalarPanelWidth = 1;

#if defined(MNIST_ENGINE_X86_KERNELS)
// One row x 64 columns (8 ymm accumulators) over the row's nonzero inputs; AVX2 and FMA.
void f32_dense_1x64_sparse_avx2_fma(const DenseArgs& a);
inline constexpr uint32_t kAvx2PanelWidth = 64;
void nonzero_index_avx2(const float* x, size_t width, uint16_t* out, uint32_t* block_ends);
void pixels_to_float_avx2(const uint8_t* pixels, size_t n, double scale, float* out);
float fma_peak_avx2(uint64_t iterations);

// The same at 128 columns (8 zmm accumulators); needs AVX-512F.
void f32_dense_1x128_sparse_avx512f(const DenseArgs& a);
inline constexpr uint32_t kAvx512PanelWidth = 128;
void nonzero_index_avx512f(const float* x, size_t width, uint16_t* out, uint32_t* block_ends);
void pixels_to_float_avx512f(const uint8_t* pixels, size_t n, double scale, float* out);
float fma_peak_avx512f(uint64_t iterations);
#endif

#if defined(MNIST_ENGINE_ARM_KERNELS)
// One row x 32 columns (8 q-register accumulators) over the row's nonzero inputs; AArch64 NEON.
void f32_dense_1x32_sparse_neon(const DenseArgs& a);
inline constexpr uint32_t kNeonPanelWidth = 32;
float fma_peak_neon(uint64_t iterations);
#endif

}  // namespace mnist_engine::kernels
