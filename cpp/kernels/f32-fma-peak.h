// A throughput probe, not a kernel: 12 independent FMA chains, enough to cover the FMA latency on
// every x86 core we target, so the loop runs at the machine's peak FMA rate. tools/bench.py
// reports each runner as a share of this measured peak. Include from kernel files only.
#pragma once

#include <cstdint>

namespace mnist_engine::kernels {
namespace {

// Returns a value depending on every chain so the loop cannot be optimised away; each iteration
// performs 12 * Isa::kLanes fused multiply-adds.
template <class Isa>
float fma_peak_loop(uint64_t iterations) {
  using V = typename Isa::V;
  const float one = 1.0f, tiny = 1e-30f, scale = 0.999999f;
  V c[12];
  for (int i = 0; i < 12; ++i) c[i] = Isa::broadcast(&one);
  const V m = Isa::broadcast(&scale), t = Isa::broadcast(&tiny);
  for (uint64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) c[i] = Isa::fmadd(c[i], m, t);
  }
  V sum = c[0];
  for (int i = 1; i < 12; ++i) sum = Isa::fmadd(sum, m, c[i]);
  float out[Isa::kLanes];
  Isa::store(out, sum);
  return out[0];
}

}  // namespace
}  // namespace mnist_engine::kernels
