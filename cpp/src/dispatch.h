// The table of dense kernels and the run-time choice among them (simdjson/ruy style): the best
// kernel of the wanted precision that the CPU supports, unless MNIST_ENGINE_KERNEL or the caller
// names one.
#pragma once

#include <string>
#include <vector>

#include "kernels.h"
#include "mnist_engine/engine.h"

namespace mnist_engine {

struct KernelInfo {  // written field by field in dispatch.cpp's table (its Entry builder)
  const char* name = "";
  Precision precision = Precision::Fp32;
  uint32_t panel_width = 1;
  uint32_t tail_granule = 1;  // a layer's last, partial panel is packed round_up(width, this) wide
  bool (*cpu_supports)() = nullptr;
  // fp32 kernels
  bool wants_nonzero_index = false;  // fill DenseArgs::block_ends and nz_index before calling `run`
  kernels::DenseFn run = nullptr;
  kernels::NonzeroIndexFn nonzero_index = nullptr;
  kernels::PixelsToFloatFn pixels_to_float = nullptr;
  kernels::FmaPeakFn fma_peak = nullptr;
  uint32_t fma_lanes = 0;  // multiply-adds per lane group of fma_peak: flops = 2 * 12 * lanes per iteration
  kernels::ActivationFn activate = nullptr;  // every precision: the version-2 activations, in float
  kernels::ConvFn conv = nullptr;  // fp32: conv2d layers (every precision runs them on an fp32 kernel)
  uint32_t conv_panel = 0;         // filters per panel of its packing (kernels::ConvArgs)
  bool conv_pools = false;         // it can fuse a following 2 x 2 max pool (ConvArgs::pool)
  // fp32: 3 x 3, stride-1 conv layers (kernels::conv_winograd_fits) as Winograd F(2x2, 3x3), in
  // conv_panel panels; null: they run on `conv`.
  kernels::ConvFn conv_winograd = nullptr;
  kernels::PoolFn pool = nullptr;  // fp32: pooling layers (likewise)
  kernels::QuantConvFn quant_conv = nullptr;  // int8: conv2d layers (else they run in fp32)
  uint32_t quant_conv_panel = 0;              // filters per panel of its packing (kernels::QuantConvArgs)
  uint32_t quant_conv_units = 1;              // units per window row of that packing: a multiple of this
  bool quant_conv_pools = false;              // it can fuse a following 2 x 2 max pool (QuantConvArgs::pool)
  // Its conv layers split one image's output rows over the threads from this many multiply-adds
  // per thread (the split's fork and join, and the maps moving between caches, must pay).
  uint32_t conv_split_macs = 500'000;
  // bf16 and int8 kernels (kernels::QuantDenseArgs)
  kernels::QuantDenseFn quant_run = nullptr;
  kernels::UnitIndexFn unit_index = nullptr;      // null: a dense kernel, no index
  kernels::QuantizeRowsFn prepare_rows = nullptr;  // float rows -> this precision's activations
  uint32_t weight_bytes = 0;  // per weight in the packing: 1 (int8), 2 (bf16, or int8 widened to int16)
  uint32_t subgroups = 1;     // 4-byte column blocks per weight unit
  uint32_t unit_align = 1;    // units per row are padded to a multiple of this
  uint32_t row_align = 1;     // activation buffers hold rows rounded up to this
  bool reference = false;     // the scalar reference: chosen only by name
  // The fewest rows of a tile for which this kernel beats the next one of its precision. An
  // automatically chosen kernel hands smaller tiles to small_batch_partner(); a forced one runs
  // every tile itself.
  uint32_t min_rows = 1;
};

// Every kernel compiled into this build, best first.
const std::vector<KernelInfo>& kernel_table();

// Names of the kernels this CPU can run, best first: all precisions, or one.
std::vector<std::string> available_kernel_names();
std::vector<std::string> available_kernel_names(Precision precision);

// The precisions this CPU runs with a kernel other than the scalar reference (fp32 always).
std::vector<std::string> available_precision_names();

// "a,b,,c" -> {"a", "b", "c"}: the kernel lists of MNIST_ENGINE_KERNEL, MNIST_ENGINE_DISABLE_KERNELS
// and kernel_check --only.
std::vector<std::string> split_kernel_names(const std::string& list);

// The MNIST_ENGINE_KERNEL entry for `precision`, or "" (every entry must name a kernel of this
// build; throws std::invalid_argument otherwise).
std::string forced_kernel_name(Precision precision);

// `requested` empty means: the MNIST_ENGINE_KERNEL entry of this precision if set (a comma-separated
// list, at most one name per precision), else the best available. A name that is unknown, of
// another precision, or unsupported by this CPU throws std::invalid_argument: forcing a kernel
// must never fall back silently. So does a precision with no kernel here but the reference.
const KernelInfo& select_kernel(const std::string& requested, Precision precision = Precision::Fp32);

// The kernel that runs tiles of fewer than k.min_rows rows when `k` was chosen automatically: the
// next kernel of k's precision that this CPU runs, needs no minimum and is not the scalar
// reference (or that reference when nothing else runs). Null when k.min_rows is 1.
const KernelInfo* small_batch_partner(const KernelInfo& k);

// The kernel whose int8 or bf16 convolution an engine on reduced-precision kernel `k` runs conv
// layer `g` with: k itself when it has one (the scalar reference included: forced, it is tested
// that way), else the best usable kernel of k's precision with one other than the reference; null
// when there is none (the layer then runs in fp32). A tile kernel (AMX) runs narrow layers, whose
// window rows fill little of its 64-byte tile columns, only when `pool_follows` (a 2 x 2 max pool
// that it runs inside the conv, which only a tile kernel does) or when it is k and k was `forced`
// (it must then run every layer); else they go to the best direct kernel, or to fp32.
const KernelInfo* reduced_conv_kernel(const KernelInfo& k, const Geometry& g, bool forced, bool pool_follows);

// Whether this CPU and OS run the AMX int8 and bf16 instructions (and this process may use them),
// whatever this build does with them (a model build runs its AMX kernels on a software model).
bool cpu_runs_amx();

// GFLOP/s of `threads` threads running k's FMA probe for about `seconds` (src/peak.cpp).
double measure_fma_peak_gflops(const KernelInfo& k, int threads, double seconds);

}  // namespace mnist_engine
