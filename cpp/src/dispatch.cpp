#include "dispatch.h"

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

}  // namespace

const std::vector<KernelInfo>& kernel_table() {
  static const std::vector<KernelInfo> table = {
#if defined(MNIST_ENGINE_X86_KERNELS)
      {"avx512", kernels::kAvx512PanelWidth, true, has_avx512f, kernels::f32_dense_1x128_sparse_avx512f,
       kernels::nonzero_index_avx512f, kernels::pixels_to_float_avx512f, kernels::fma_peak_avx512f, 16},
      {"avx2", kernels::kAvx2PanelWidth, true, has_avx2_fma, kernels::f32_dense_1x64_sparse_avx2_fma,
       kernels::nonzero_index_avx2, kernels::pixels_to_float_avx2, kernels::fma_peak_avx2, 8},
#endif
#if defined(MNIST_ENGINE_ARM_KERNELS)
      {"neon", kernels::kNeonPanelWidth, true, always, kernels::f32_dense_1x32_sparse_neon,
       kernels::nonzero_index_scalar, kernels::pixels_to_float_scalar, kernels::fma_peak_neon, 4},
#endif
      {"scalar", kernels::kScalarPanelWidth, false, always, kernels::f32_dense_scalar,
       kernels::nonzero_index_scalar, kernels::pixels_to_float_scalar, kernels::fma_peak_scalar, 1},
  };
  return table;
}

std::vector<std::string> available_kernel_names() {
  std::vector<std::string> names;
  for (const auto& k : kernel_table())
    if (k.cpu_supports()) names.emplace_back(k.name);
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
  if (name.empty()) {
    for (const auto& k : table)
      if (k.cpu_supports()) return k;
  }
  std::vector<std::string> known;
  for (const auto& k : table) {
    known.emplace_back(k.name);
    if (name != k.name) continue;
    if (!k.cpu_supports())
      throw std::invalid_argument(source + " '" + name + "' is not supported by this CPU; available: " +
                                  join(available_kernel_names()));
    return k;
  }
  throw std::invalid_argument(source + " '" + name + "' is not a kernel of this build; expected one of: " +
                              join(known));
}

}  // namespace mnist_engine
