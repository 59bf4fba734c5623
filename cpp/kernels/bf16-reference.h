// The bf16 scalar references' shared arithmetic (bf16-dense-scalar.cpp, bf16-conv-scalar.cpp).
// Include it from scalar kernel files only.
#pragma once

#include <cfenv>
#include <cmath>

#include "kernels.h"

namespace mnist_engine::kernels {
namespace {
// vdpbf16ps rounds to nearest even whatever MXCSR says; std::fma follows the current mode, so the
// reference sets nearest-even for its loop and puts the caller's mode back.
class NearestEven {
 public:
  NearestEven() : mode_(std::fegetround()) {
    if (mode_ != FE_TONEAREST) std::fesetround(FE_TONEAREST);
  }
  ~NearestEven() {
    if (mode_ != FE_TONEAREST) std::fesetround(mode_);
  }
  NearestEven(const NearestEven&) = delete;
  NearestEven& operator=(const NearestEven&) = delete;

 private:
  int mode_;
};

// acc plus the products of `units` 4-byte units of bf16 pairs, x[u] * w[u]: products of two bf16
// values are exact in float32, so each step is one rounding of a sum, in the order vdpbf16ps
// documents (the odd element of each pair first), with its DAZ and FTZ (the bf16 operands never
// are denormal: to_bf16 flushes them). Under NearestEven.
inline float bf16_unit_products(float acc, const uint8_t* x, const uint8_t* w, size_t units) {
  for (size_t u = 0; u < units; ++u) {
    uint16_t xs[2], ws[2];
    __builtin_memcpy(xs, x + kUnitBytes * u, 4);
    __builtin_memcpy(ws, w + kUnitBytes * u, 4);
    acc = flush_denormal(std::fma(from_bf16(xs[1]), from_bf16(ws[1]), acc));
    acc = flush_denormal(std::fma(from_bf16(xs[0]), from_bf16(ws[0]), acc));
  }
  return acc;
}
}  // namespace
}  // namespace mnist_engine::kernels
