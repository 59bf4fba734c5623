#include "dispatch.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

namespace mnist_engine {
namespace {

bool always() { return true; }

#if defined(MNIST_ENGINE_X86_KERNELS)
// __builtin_cpu_supports also checks that the OS saves the wider registers (XGETBV), not only the
// CPUID bits.
bool has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512f() { return __builtin_cpu_supports("avx512f"); }
#endif

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// MNIST_ENGINE_DISABLE_KERNELS=avx512,avx2 makes this process treat those kernels as unsupported
// by the CPU, like oneDNN's ONEDNN_MAX_CPU_ISA: a user can reproduce an older machine's choice,
// and the tests reach the unsupported-kernel path on any CPU. Read at each call (loads and
// listings only, never per predict). Unknown names and "scalar" are errors, not ignored.
std::vector<std::string> disabled_kernels() {
  std::vector<std::string> names;
  const char* env = std::getenv("MNIST_ENGINE_DISABLE_KERNELS");
  if (!env) return names;
  const std::string list = env;
  for (size_t start = 0; start <= list.size();) {
    const size_t comma = std::min(list.find(',', start), list.size());
    std::string name = list.substr(start, comma - start);
    start = comma + 1;
    if (name.empty()) continue;
    bool known = false;
    for (const auto& k : kernel_table()) known |= name == k.name;
    if (!known || name == "scalar")
      throw std::invalid_argument("MNIST_ENGINE_DISABLE_KERNELS names '" + name + "': expected kernels of this "
                                  "build other than the scalar reference");
    names.push_back(name);
  }
  return names;
}

bool usable(const KernelInfo& k, const std::vector<std::string>& disabled) {
  for (const auto& name : disabled)
    if (name == k.name) return false;
  return k.cpu_supports();
}

}  // namespace

const std::vector<KernelInfo>& kernel_table() {
  static const std::vector<KernelInfo> table = {
#if defined(MNIST_ENGINE_X86_KERNELS)
      {"avx512", kernels::kAvx512PanelWidth, 1, true, has_avx512f, kernels::f32_dense_1x128_sparse_avx512f,
       kernels::nonzero_index_avx512f, kernels::pixels_to_float_avx512f, kernels::fma_peak_avx512f, 16},
      {"avx2", kernels::kAvx2PanelWidth, 1, true, has_avx2_fma, kernels::f32_dense_1x64_sparse_avx2_fma,
       kernels::nonzero_index_avx2, kernels::pixels_to_float_avx2, kernels::fma_peak_avx2, 8},
#endif
#if defined(MNIST_ENGINE_ARM_KERNELS)
      {"neon", kernels::kNeonPanelWidth, 4, true, always, kernels::f32_dense_1x32_sparse_neon,
       kernels::nonzero_index_scalar, kernels::pixels_to_float_scalar, kernels::fma_peak_neon, 4},
#endif
      {"scalar", kernels::kScalarPanelWidth, 1, false, always, kernels::f32_dense_scalar,
       kernels::nonzero_index_scalar, kernels::pixels_to_float_scalar, kernels::fma_peak_scalar, 1},
  };
  return table;
}

std::vector<std::string> available_kernel_names() {
  const auto disabled = disabled_kernels();
  std::vector<std::string> names;
  for (const auto& k : kernel_table())
    if (usable(k, disabled)) names.emplace_back(k.name);
  return names;
}

const KernelInfo& select_kernel(const std::string& requested) {
  std::string name = requested;
  std::string source = "requested kernel";
  if (name.empty()) {
    if (const char* env = std::getenv("MNIST_ENGINE_KERNEL"); env && *env) {
      name = env;
      source = "MNIST_ENGINE_KERNEL";
    }
  }
  const auto& table = kernel_table();
  const auto disabled = disabled_kernels();
  if (name.empty()) {
    for (const auto& k : table)
      if (usable(k, disabled)) return k;
  }
  std::vector<std::string> known;
  for (const auto& k : table) {
    known.emplace_back(k.name);
    if (name != k.name) continue;
    if (!usable(k, disabled))
      throw std::invalid_argument(source + " '" + name + "' is not supported by this CPU; available: " +
                                  join(available_kernel_names()));
    return k;
  }
  throw std::invalid_argument(source + " '" + name + "' is not a kernel of this build; expected one of: " +
                              join(known));
}

}  // namespace mnist_engine
