// Checks every kernel this CPU runs against the scalar reference of its precision, without
// Python: for each model file given, both kernels load it (verifying its reference outputs) and
// predict the same sparse float rows and uint8 rows, 70 of each (a full tile and a tail). Exits 1
// if an fp32 or bf16 output differs by more than 1e-5, or an int8 output differs at all (integer
// kernels are bit-exact). Used where the Python tests cannot run: AArch64 under qemu
// (tools/arm_check.sh), and x86 kernels this CPU lacks under qemu's emulated CPUs.
//   kernel_check MODEL.mnw...
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "dispatch.h"
#include "mnist_engine/engine.h"

namespace {

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    const double e = std::fabs(double(a[k]) - double(b[k]));
    if (!(e <= d)) d = e;  // also keeps a NaN difference, which must fail the check
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  using mnist_engine::Engine;
  std::mt19937 rng(1);
  double worst = 0;
  bool failed = false;
  for (int i = 1; i < argc; ++i) {
    std::ifstream file(argv[i], std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)), {});
    using mnist_engine::Precision;
    for (Precision precision : {Precision::Fp32, Precision::Bf16, Precision::Int8}) {
      const char* scalar = precision == Precision::Fp32 ? "scalar" : precision == Precision::Bf16 ? "bf16-scalar"
                                                                                                  : "int8-scalar";
      const auto reference = Engine::from_bytes(bytes.data(), bytes.size(), true, scalar, true, precision);
      const size_t rows = 70, width = reference->input_width(), out = reference->output_width();
      std::vector<uint8_t> pixels(rows * width);
      std::vector<float> floats(rows * width);
      for (size_t k = 0; k < pixels.size(); ++k) {
        pixels[k] = rng() % 5 == 0 ? uint8_t(rng() % 256) : 0;  // ~80% zeros, like MNIST
        floats[k] = pixels[k] / 255.0f;
      }
      std::vector<float> want_f(rows * out), want_u(rows * out), got(rows * out);
      reference->predict(floats.data(), rows, want_f.data(), 1);
      reference->predict(pixels.data(), rows, want_u.data(), 1);
      for (const auto& name : mnist_engine::available_kernel_names(precision)) {
        const auto engine = Engine::from_bytes(bytes.data(), bytes.size(), true, name, true, precision);
        engine->predict(floats.data(), rows, got.data(), 2);
        double diff = max_abs_diff(got, want_f);
        engine->predict(pixels.data(), rows, got.data(), 2);
        diff = std::max(diff, max_abs_diff(got, want_u));
        const double limit = precision == Precision::Int8 ? 0.0 : 1e-5;
        std::printf("%-16s %5zu -> %-5zu max |kernel - %s| = %.3g (limit %.0g) %s\n", name.c_str(), width, out,
                    scalar, diff, limit, argv[i]);
        if (!(diff <= limit)) failed = true;
        if (!(diff <= worst)) worst = diff;
      }
    }
  }
  std::printf("worst difference: %.3g; %s\n", worst, failed ? "FAILED" : "every kernel within its limit");
  return failed ? 1 : 0;
}
