// The table of dense kernels and the run-time choice among them (simdjson/ruy style): the best
// kernel the CPU supports, unless MNIST_ENGINE_KERNEL or the caller names one.
#pragma once

#include <string>
#include <vector>

#include "kernels.h"

namespace mnist_engine {

struct KernelInfo {
  const char* name;
  uint32_t panel_width;
  uint32_t tail_granule;     // a layer's last, partial panel is packed round_up(width, this) wide
  bool wants_nonzero_index;  // fill DenseArgs::nnz and nz_index before calling `run`
  bool (*cpu_supports)();
  kernels::DenseFn run;
  kernels::NonzeroIndexFn nonzero_index;
  kernels::PixelsToFloatFn pixels_to_float;
  kernels::FmaPeakFn fma_peak;
  uint32_t fma_lanes;  // multiply-adds per lane group of fma_peak: flops = 2 * 12 * lanes per iteration
};

// Every kernel compiled into this build, best first.
const std::vector<KernelInfo>& kernel_table();

// Names of the kernels this CPU can run, best first.
std::vector<std::string> available_kernel_names();

// `requested` empty means: MNIST_ENGINE_KERNEL if set, else the best available. A name that is
// unknown, or known but unsupported by this CPU, throws std::invalid_argument: forcing a kernel
// must never fall back silently.
const KernelInfo& select_kernel(const std::string& requested);

// GFLOP/s of `threads` threads running k's FMA probe for about `seconds` (src/peak.cpp).
double measure_fma_peak_gflops(const KernelInfo& k, int threads, double seconds);

}  // namespace mnist_engine
