// The dense-layer microkernel interface. Each kernel lives in its own file, named
// dtype-op-tile-isa (XNNPACK style), and is compiled with only its own ISA flags.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mnist_engine::kernels {

// Computes y[r][j] = b[j] + sum_k x[r][k] * W[k][j] for r < rows and every j of the padded width,
// then max(y, 0) when `relu` is set (the one activation cheap enough to fuse into every kernel).
//
// The weights are packed once at load into column panels of `panel_width` columns: panel p holds
// `in` rows of panel_width floats, packed[(p * in + k) * panel_width + c] = W[k][p * panel_width + c],
// zero-padded past the last real column. `bias` is zero-padded the same way, so a kernel may
// compute and store whole panels; `y_stride` is at least the padded width.
struct DenseArgs {
  const float* x;
  size_t x_stride;
  size_t rows;
  size_t in;
  const float* packed;
  const float* bias;
  size_t panels;
  float* y;
  size_t y_stride;
  bool relu;
};

using DenseFn = void (*)(const DenseArgs&);

// Reference: one output at a time, summing k in order. Every other kernel is tested against it.
void f32_dense_scalar(const DenseArgs& a);
inline constexpr uint32_t kScalarPanelWidth = 1;

#if defined(MNIST_ENGINE_X86_KERNELS)
// 4 rows x 16 columns of accumulators in 8 ymm registers; needs AVX2 and FMA.
void f32_dense_4x16_avx2_fma(const DenseArgs& a);
inline constexpr uint32_t kAvx2PanelWidth = 16;
#endif

}  // namespace mnist_engine::kernels
