// Checks every kernel this CPU runs against the scalar reference of its precision, without
// Python: for each model file given, both kernels load it (verifying its reference outputs) and
// predict the same sparse float rows and uint8 rows, 70 of each (a full 64-row tile and a tail,
// so tile kernels see both). Used where the Python tests cannot run: AArch64 under qemu
// (tools/arm_check.sh) and the AMX kernels on the software model (tools/amx_model_check.sh).
//
// Limits: int8 kernels are bit-exact (integer sums). fp32 kernels differ from the reference only
// in the order of float32 sums: 1e-5 x max(1, |y|). bf16 kernels also sum in another order, and a
// hidden value that lands on the other side of a bf16 rounding boundary moves the next layer's
// input by one bf16 step (2^-8 relative), so their limit is a share of bf16's resolution:
// 2^-9 x max(1, |y|) (observed: under 2^-12 on these models; a dropped block of 64 inputs or a
// row read from its neighbour is off by far more).
//   kernel_check [--require KERNEL]... [--only KERNEL,...] [--stop-at-first-failure] MODEL.mnw...
// Prints each compiled kernel this CPU cannot run, and exits 1 when a kernel is out of its limit
// or a --require'd kernel (say, int8-amx on the day an AMX machine is at hand) did not run.
// --only checks the named kernels alone (the AMX ones on the model: the others are the Python
// suite's); --stop-at-first-failure ends at the first kernel out of its limit, which is all that
// tools/amx_model_check.sh needs to know of a planted bug.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "dispatch.h"
#include "mnist_engine/engine.h"

namespace {

using mnist_engine::Precision;

// The largest |a - b| / max(1, |b|); a NaN anywhere counts as infinitely far.
double max_relative_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    const double e = std::fabs(double(a[k]) - double(b[k])) / std::max(1.0, std::fabs(double(b[k])));
    if (!(e <= d)) d = e;  // also keeps a NaN difference, which must fail the check
  }
  return d;
}

double limit_of(Precision p) {
  return p == Precision::Int8 ? 0.0 : p == Precision::Bf16 ? std::ldexp(1.0, -9) : 1e-5;
}

const char* reference_of(Precision p) {
  return p == Precision::Fp32 ? "scalar" : p == Precision::Bf16 ? "bf16-scalar" : "int8-scalar";
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

int main(int argc, char** argv) {
  using mnist_engine::Engine;
  std::vector<std::string> required, only, models;
  bool stop_at_first_failure = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--require") == 0 && i + 1 < argc)
      required.emplace_back(argv[++i]);
    else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc)
      only = mnist_engine::split_kernel_names(argv[++i]);
    else if (std::strcmp(argv[i], "--stop-at-first-failure") == 0)
      stop_at_first_failure = true;
    else
      models.emplace_back(argv[i]);
  }
  std::vector<std::string> compiled;
  for (const auto& k : mnist_engine::kernel_table()) compiled.emplace_back(k.name);
  for (const auto& name : only)
    if (!contains(compiled, name)) {
      std::printf("FAILED: --only names '%s', which is not a kernel of this build\n", name.c_str());
      return 1;
    }
  const std::vector<std::string> available = mnist_engine::available_kernel_names();
  bool failed = false;
  for (const auto& k : mnist_engine::kernel_table())
    if (!contains(available, k.name))
      std::printf("skipped %-16s this CPU does not run it (or MNIST_ENGINE_DISABLE_KERNELS names it)\n", k.name);
  for (const auto& name : required)
    if (!contains(available, name)) {
      std::printf("FAILED: --require %s, but that kernel cannot run here\n", name.c_str());
      failed = true;
    }
  if (models.empty()) {
    std::printf("no model files given\n");
    return 1;
  }

  std::mt19937 rng(1);
  std::vector<std::string> checked;
  for (const auto& path : models) {
    std::ifstream file(path, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)), {});
    for (Precision precision : {Precision::Fp32, Precision::Bf16, Precision::Int8}) {
      std::vector<std::string> kernels;
      for (const auto& name : mnist_engine::available_kernel_names(precision))
        if (only.empty() || contains(only, name)) kernels.push_back(name);
      if (kernels.empty()) continue;
      const char* scalar = reference_of(precision);
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
      for (const auto& name : kernels) {
        const auto engine = Engine::from_bytes(bytes.data(), bytes.size(), true, name, true, precision);
        engine->predict(floats.data(), rows, got.data(), 2);
        double diff = max_relative_diff(got, want_f);
        engine->predict(pixels.data(), rows, got.data(), 2);
        diff = std::max(diff, max_relative_diff(got, want_u));
        const double limit = limit_of(precision);
        std::printf("%-16s %5zu -> %-5zu max |kernel - %s| / max(1, |y|) = %.3g (limit %.3g) %s\n", name.c_str(),
                    width, out, scalar, diff, limit, path.c_str());
        if (!contains(checked, name)) checked.push_back(name);
        if (!(diff <= limit)) {
          failed = true;
          if (stop_at_first_failure) {
            std::printf("stopped at the first kernel out of its limit\n");
            return 1;
          }
        }
      }
    }
  }
  std::string ran;
  for (const auto& name : checked) ran += (ran.empty() ? "" : ", ") + name;
  std::printf("kernels checked: %s; %s\n", ran.c_str(), failed ? "FAILED" : "every one within its limit");
  return failed ? 1 : 0;
}
