// Checks every kernel this CPU runs against the scalar reference, without Python: for each model
// file given, both kernels load it (verifying its reference outputs) and predict the same sparse
// float rows and uint8 rows, 70 of each (a full tile and a tail). Exits 1 if any output differs
// by more than 1e-5. Used where the Python tests cannot run, e.g. AArch64 under qemu
// (tools/arm_check.sh).
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
  for (int i = 1; i < argc; ++i) {
    std::ifstream file(argv[i], std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)), {});
    const auto reference = Engine::from_bytes(bytes.data(), bytes.size(), true, "scalar");
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
    for (const auto& name : mnist_engine::available_kernel_names()) {
      const auto engine = Engine::from_bytes(bytes.data(), bytes.size(), true, name);
      engine->predict(floats.data(), rows, got.data(), 2);
      double diff = max_abs_diff(got, want_f);
      engine->predict(pixels.data(), rows, got.data(), 2);
      diff = std::max(diff, max_abs_diff(got, want_u));
      std::printf("%-8s %5zu -> %-5zu max |kernel - scalar| = %.3g  %s\n", name.c_str(), width, out, diff,
                  argv[i]);
      if (!(diff <= worst)) worst = diff;
    }
  }
  std::printf("worst difference: %.3g (limit 1e-5)\n", worst);
  return worst <= 1e-5 ? 0 : 1;
}
