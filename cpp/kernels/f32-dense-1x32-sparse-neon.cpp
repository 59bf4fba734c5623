#include <arm_neon.h>

#include "dense-sparse-rows.h"
#include "f32-fma-peak.h"

namespace mnist_engine::kernels {
namespace {

// The AVX2 algorithm with 4-lane vectors: 8 accumulators cover 32 columns. NEON is part of the
// AArch64 baseline, so this file needs no ISA flags and the kernel is always available there.
struct Neon {
  using V = float32x4_t;
  static constexpr size_t kLanes = 4;
  static V load(const float* p) { return vld1q_f32(p); }
  static V broadcast(const float* p) { return vld1q_dup_f32(p); }
  static V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  // fmax (not fmaxnm) returns NaN when either input is NaN: a NaN input propagates as in Keras.
  static V relu(V v) { return vmaxq_f32(vdupq_n_f32(0.0f), v); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  // NEON has no masked load: the packing pads a tail row to whole vectors instead (tail granule 4,
  // at most 3 floats of padding per weight row).
  using Mask = int;
  static Mask tail_mask(size_t) { return 0; }
  static V load_masked(const float* p, Mask) { return vld1q_f32(p); }
};
static_assert(8 * Neon::kLanes == kNeonPanelWidth);

}  // namespace

void f32_dense_1x32_sparse_neon(const DenseArgs& a) { dense_sparse_rows<Neon>(a); }

float fma_peak_neon(uint64_t iterations) { return fma_peak_loop<Neon>(iterations); }

}  // namespace mnist_engine::kernels
