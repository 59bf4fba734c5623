// Rounding to nearest even for the scalar bf16 references: vdpbf16ps rounds that way whatever
// MXCSR says, while std::fma follows the current mode, so a reference sets nearest-even for its
// loop and puts the caller's mode back. Include it from kernel files only.
#pragma once

#include <cfenv>

namespace mnist_engine::kernels {
namespace {  // internal linkage: see kernels.h

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
