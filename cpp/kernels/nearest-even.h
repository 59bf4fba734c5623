// The bf16 scalar references' rounding guard (bf16-dense-scalar.cpp, bf16-conv-scalar.cpp).
// Include it from scalar kernel files only.
#pragma once

#include <cfenv>

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
}  // namespace
}  // namespace mnist_engine::kernels
