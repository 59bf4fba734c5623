// The float vector of AArch64 NEON (4 floats) that the fp32 kernel algorithms (dense-sparse-rows.h,
// conv-direct.h, f32-fma-peak.h) are written over. Include from kernel files compiled with its ISA
// flags only.
#pragma once

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

namespace mnist_engine::kernels {
namespace {  // internal linkage: see kernels.h

// NEON is part of the AArch64 baseline: its kernel files need no ISA flags and always run there.
struct Neon {
  using V = float32x4_t;
  static constexpr size_t kLanes = 4;
  static V load(const float* p) { return vld1q_f32(p); }
  static V broadcast(const float* p) { return vld1q_dup_f32(p); }
  static V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
  static V zero() { return vdupq_n_f32(0.0f); }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static V sub(V a, V b) { return vsubq_f32(a, b); }
  // fmax (not fmaxnm) returns NaN when either input is NaN: a NaN input propagates as in Keras.
  static V relu(V v) { return vmaxq_f32(vdupq_n_f32(0.0f), v); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  // f32-pool.h's max_keep_nan lane by lane: v where v > acc or v is NaN (unequal to itself), else acc.
  static V max_keep_nan(V acc, V v) { return vbslq_f32(vorrq_u32(vcgtq_f32(v, acc), vmvnq_u32(vceqq_f32(v, v))), v, acc); }
  // NEON has no masked load: the packing pads a tail row to whole vectors instead (tail granule 4,
  // at most 3 floats of padding per weight row).
  using Mask = int;
  static Mask tail_mask(size_t) { return 0; }
  static V load_masked(const float* p, Mask) { return vld1q_f32(p); }
  // Bit i set where lane i is nonzero or NaN (NaN compares unequal to 0).
  static uint64_t nonzero_bits(const float* p) {
    const uint32x4_t zero = vceqq_f32(vld1q_f32(p), vdupq_n_f32(0.0f));
    const uint32x4_t lane_bit = {1, 2, 4, 8};
    return vaddvq_u32(vbicq_u32(lane_bit, zero));
  }
  // The same for the first `count` lanes only: NEON has no masked load, so lane by lane.
  static uint64_t nonzero_bits_first(const float* p, size_t count) {
    uint64_t bits = 0;
    for (size_t i = 0; i < count; ++i) bits |= uint64_t(p[i] != 0.0f) << i;
    return bits;
  }
};

}  // namespace
}  // namespace mnist_engine::kernels
