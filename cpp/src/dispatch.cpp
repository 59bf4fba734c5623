#include "dispatch.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#if defined(MNIST_ENGINE_X86_KERNELS)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace mnist_engine {
namespace {

bool always() { return true; }

#if defined(MNIST_ENGINE_X86_KERNELS)
// __builtin_cpu_supports also checks that the OS saves the wider registers (XGETBV), not only the
// CPUID bits.
bool has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool has_avx512f() { return __builtin_cpu_supports("avx512f"); }
bool has_avx512_vnni() { return has_avx512f() && __builtin_cpu_supports("avx512vnni"); }

// The newer features are read from CPUID directly: compilers name them differently in
// __builtin_cpu_supports (clang 14 knows neither "avxvnni" nor the AMX strings), and the library
// must build with both gcc and clang.
struct CpuidLeaf7 {
  unsigned eax, ebx, ecx, edx;
};
CpuidLeaf7 cpuid_leaf7(unsigned subleaf) {
  CpuidLeaf7 r{0, 0, 0, 0};
  if (!__get_cpuid_count(7, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) r = {0, 0, 0, 0};
  return r;
}
bool cpuid_leaf7_bit(unsigned subleaf, unsigned CpuidLeaf7::*reg, int bit) {
  static const CpuidLeaf7 sub0 = cpuid_leaf7(0), sub1 = cpuid_leaf7(1);
  return ((subleaf == 0 ? sub0 : sub1).*reg >> bit) & 1u;
}

// AVX-VNNI is a VEX (256-bit) encoding: the YMM state check in has_avx2_fma covers the OS side.
bool has_avx_vnni() { return has_avx2_fma() && cpuid_leaf7_bit(1, &CpuidLeaf7::eax, 4); }
// The ZMM state check in has_avx512f covers the OS side.
bool has_avx512_bf16() { return has_avx512f() && cpuid_leaf7_bit(1, &CpuidLeaf7::eax, 5); }

// The OS must enable the tile state in XCR0 (bits 17 TILECFG and 18 TILEDATA) for AMX to exist.
bool os_saves_tile_state() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1u)) return false;  // OSXSAVE
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  constexpr unsigned kTileBits = (1u << 17) | (1u << 18);
  return (xcr0_lo & kTileBits) == kTileBits;
}

// Linux hands a process the AMX tile data state (8 KiB per thread) only when asked, once: before
// that, the first tile instruction faults. A kernel without the permission is unsupported, so
// selection falls back to the next kernel instead of crashing.
bool amx_permission() {
  static const bool granted = [] {
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return granted;
}
// The permission is asked for last: only on a CPU that has the instructions.
bool has_amx_tile() {
  return has_avx512f() && cpuid_leaf7_bit(0, &CpuidLeaf7::edx, 24) && os_saves_tile_state();
}
bool hardware_amx_int8() { return has_amx_tile() && cpuid_leaf7_bit(0, &CpuidLeaf7::edx, 25) && amx_permission(); }
// bf16-amx converts its rows with vcvtneps2bf16 (AVX512-BF16): a VM may expose AMX-BF16 without it.
bool hardware_amx_bf16() {
  return has_amx_tile() && has_avx512_bf16() && cpuid_leaf7_bit(0, &CpuidLeaf7::edx, 22) && amx_permission();
}
#if defined(MNIST_ENGINE_AMX_MODEL)
// A test build (cpp/testing/amx-model.h): the AMX kernels run on the software model of the tile
// instructions, and need only what their row preparation and epilogues need.
bool has_amx_int8() { return has_avx512f(); }
bool has_amx_bf16() { return has_avx512_bf16(); }
#else
bool has_amx_int8() { return hardware_amx_int8(); }
bool has_amx_bf16() { return hardware_amx_bf16(); }
#endif
#endif

// One table entry, field by field by name (C++17 has no designated initializers): a reader sees
// which number is a panel width and which a row alignment, and a kernel's requirements sit in its
// one entry.
class Entry {
 public:
  Entry(const char* name, Precision precision, bool (*cpu_supports)()) {
    k_.name = name;
    k_.precision = precision;
    k_.cpu_supports = cpu_supports;
  }
  // fp32: its dense kernel and the width of its column panels; the last, partial panel is packed
  // round_up(width, granule) wide.
  Entry& runs(kernels::DenseFn run, uint32_t panel_width, uint32_t tail_granule = 1) {
    k_.run = run;
    return panel(panel_width, tail_granule);
  }
  // bf16/int8: a panel is `vectors` accumulators of `lanes` columns (the kernel file's Isa::kVectors
  // and kLanes), the last one padded to whole vectors, which the kernel reads whole.
  Entry& runs(kernels::QuantDenseFn run, uint32_t lanes, uint32_t vectors) {
    k_.quant_run = run;
    return panel(lanes * vectors, lanes);
  }
  // The nonzero index of each input row; `skips_zeros`: the kernel visits the listed inputs only.
  Entry& nonzero_index(kernels::NonzeroIndexFn index, bool skips_zeros) {
    k_.nonzero_index = index;
    k_.wants_nonzero_index = skips_zeros;
    return *this;
  }
  Entry& pixels_to_float(kernels::PixelsToFloatFn pixels) {
    k_.pixels_to_float = pixels;
    return *this;
  }
  Entry& fma_peak(kernels::FmaPeakFn peak, uint32_t lanes) {
    k_.fma_peak = peak;
    k_.fma_lanes = lanes;
    return *this;
  }
  // fp32: the spatial layers: its convolution, the filters per panel of the conv weights'
  // packing, and its pooling.
  Entry& spatial(kernels::ConvFn conv, uint32_t panel, kernels::PoolFn pool) {
    k_.conv = conv;
    k_.conv_panel = panel;
    k_.conv_pools = panel > 1;  // the direct kernels (conv-direct.h) fuse 2 x 2 max pools, the reference not
    k_.pool = pool;
    return *this;
  }
  // fp32: its Winograd F(2x2, 3x3) convolution (conv-winograd.h), packed in the same panels.
  Entry& winograd(kernels::ConvFn conv) {
    k_.conv_winograd = conv;
    return *this;
  }
  // One image's conv layers split their rows over the threads from `split_macs` multiply-adds
  // per thread (KernelInfo::conv_split_macs).
  Entry& splits_conv_from(uint32_t split_macs) {
    k_.conv_split_macs = split_macs;
    return *this;
  }
  // int8/bf16: its convolution and the filters per panel of the conv weights' packing.
  Entry& convolves(kernels::QuantConvFn conv, uint32_t panel) {
    k_.quant_conv = conv;
    k_.quant_conv_panel = panel;
    return *this;
  }
  // Its int8 or bf16 convolution runs a following 2 x 2 max pool inside (QuantConvArgs::pool).
  Entry& pools_inside_conv() {
    k_.quant_conv_pools = true;
    return *this;
  }
  // A tile convolution: units per window row padded to `units` (it reads whole tile columns), a
  // following 2 x 2 max pool fused into it, and one image's rows split over threads from
  // `split_macs` multiply-adds per thread.
  Entry& tile_convolution(uint32_t units, uint32_t split_macs) {
    k_.quant_conv_units = units;
    k_.quant_conv_pools = true;
    k_.conv_split_macs = split_macs;
    return *this;
  }
  Entry& activations(kernels::ActivationFn activate) {
    k_.activate = activate;
    return *this;
  }
  // bf16/int8: the nonzero-unit index (a sparse kernel), and how float rows become its activations.
  Entry& unit_index(kernels::UnitIndexFn index) {
    k_.unit_index = index;
    return *this;
  }
  Entry& prepares_rows(kernels::QuantizeRowsFn prepare) {
    k_.prepare_rows = prepare;
    return *this;
  }
  // Bytes per packed weight (1 int8, 2 bf16 or int8 widened to int16) and 4-byte column blocks per
  // weight unit (2 for the widened int16 pairs).
  Entry& weights(uint32_t bytes, uint32_t subgroups = 1) {
    k_.weight_bytes = bytes;
    k_.subgroups = subgroups;
    return *this;
  }
  // A tile kernel (AMX): units per row padded to `units`, activation buffers to `rows` rows (the
  // extra rows are computed, never stored), the last panel padded to a whole tile, and at least
  // `min_rows` rows per tile when chosen automatically (smaller tiles go to small_batch_partner).
  Entry& tiles(uint32_t units, uint32_t rows, uint32_t min_rows) {
    k_.unit_align = units;
    k_.row_align = rows;
    k_.min_rows = min_rows;
    return *this;
  }
  operator KernelInfo() const {  // NOLINT: the table lists Entries as KernelInfos
    KernelInfo k = k_;
    k.reference = k.panel_width == 1;  // the scalar references: panel width 1, chosen only by name
    if (k.unit_align > 1) k.tail_granule = k.panel_width;  // a tile kernel reads whole tiles
    return k;
  }

 private:
  Entry& panel(uint32_t width, uint32_t granule) {
    k_.panel_width = width;
    k_.tail_granule = granule;
    return *this;
  }
  KernelInfo k_{};
};

// The AMX kernels' minimum tiles, measured on a Xeon with AMX (docs/PERFORMANCE.md, "AMX and small
// batches"): a tile instruction computes 32 rows whatever the batch, skips no zeros and the tile
// configuration is loaded per layer, so below these the AVX-512 kernels are faster (int8: AMX
// 3.9x slower at 1 row, even at 8, 0.76x at 12; bf16: 5.7x slower at 1 row, 0.88x at 8).
constexpr uint32_t kAmxInt8MinRows = 10, kAmxBf16MinRows = 8;
// One image's AMX conv split over 2 threads: the convnet's second conv (2.2 M multiply-adds, about
// 2 us on tiles) took 11.7 us at batch 1 split against 9.6 on one thread, so the split waits for
// layers several times larger (the fp32 direct kernel's 500 k is 1.2x faster split there).
constexpr uint32_t kAmxConvSplitMacs = 4'000'000;
// The fp32 AVX-512 kernels split one image's conv from 90 k multiply-adds per thread: since the
// thread pool, the keras-io convnet's first conv (0.19 M) is faster split, batch 1 at 2 threads
// 10.2-11.2 us against 11.3-12.2 (5 alternating runs, Zen 5). The AVX2 direct kernel (26-32 ->
// 27-38 us) and the VNNI int8 conv were not, so they keep the default.
constexpr uint32_t kAvx512ConvSplitMacs = 90'000;

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

const KernelInfo* find_kernel(const std::string& name) {
  for (const auto& k : kernel_table())
    if (name == k.name) return &k;
  return nullptr;
}

std::vector<std::string> all_names() {
  std::vector<std::string> names;
  for (const auto& k : kernel_table()) names.emplace_back(k.name);
  return names;
}

// MNIST_ENGINE_DISABLE_KERNELS=avx512,avx2 makes this process treat those kernels as unsupported
// by the CPU, like oneDNN's ONEDNN_MAX_CPU_ISA: a user can reproduce an older machine's choice,
// and the tests reach the unsupported-kernel path on any CPU. Read at each call (loads and
// listings only, never per predict). Unknown names and the scalar references are errors.
std::vector<std::string> disabled_kernels() {
  const char* env = std::getenv("MNIST_ENGINE_DISABLE_KERNELS");
  if (!env) return {};
  const std::vector<std::string> names = split_kernel_names(env);
  for (const auto& name : names) {
    const KernelInfo* k = find_kernel(name);
    if (!k || k->reference)
      throw std::invalid_argument("MNIST_ENGINE_DISABLE_KERNELS names '" + name + "': expected kernels of this "
                                  "build other than the scalar references");
  }
  return names;
}

bool usable(const KernelInfo& k, const std::vector<std::string>& disabled) {
  for (const auto& name : disabled)
    if (name == k.name) return false;
  return k.cpu_supports();
}

}  // namespace

std::vector<std::string> split_kernel_names(const std::string& list) {
  std::vector<std::string> names;
  for (size_t start = 0; start <= list.size();) {
    const size_t comma = std::min(list.find(',', start), list.size());
    if (comma > start) names.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

// The MNIST_ENGINE_KERNEL entry for `precision`, or "" (every entry must name a kernel of this build).
std::string forced_kernel_name(Precision precision) {
  const char* env = std::getenv("MNIST_ENGINE_KERNEL");
  if (!env || !*env) return "";
  std::string chosen;
  for (const auto& name : split_kernel_names(env)) {
    const KernelInfo* k = find_kernel(name);
    if (!k)
      throw std::invalid_argument("MNIST_ENGINE_KERNEL '" + name + "' is not a kernel of this build; expected one of: " +
                                  join(all_names()));
    if (k->precision != precision) continue;
    if (!chosen.empty())
      throw std::invalid_argument("MNIST_ENGINE_KERNEL names two " + std::string(precision_name(precision)) +
                                  " kernels: '" + chosen + "' and '" + name + "'");
    chosen = name;
  }
  return chosen;
}

const std::vector<KernelInfo>& kernel_table() {
  namespace k = kernels;
  using P = Precision;
  static const std::vector<KernelInfo> table = {
#if defined(MNIST_ENGINE_X86_KERNELS)
      Entry("avx512", P::Fp32, has_avx512f).runs(k::f32_dense_1x128_sparse_avx512f, k::kAvx512PanelWidth)
          .nonzero_index(k::nonzero_index_avx512f, true).pixels_to_float(k::pixels_to_float_avx512f)
          .fma_peak(k::fma_peak_avx512f, 16).activations(k::f32_activation_avx512f)
          .spatial(k::f32_conv_12x32_avx512f, 32, k::f32_pool_avx512f)
          .winograd(k::f32_conv_winograd_12x32_avx512f).splits_conv_from(kAvx512ConvSplitMacs),
      Entry("avx2", P::Fp32, has_avx2_fma).runs(k::f32_dense_1x64_sparse_avx2_fma, k::kAvx2PanelWidth)
          .nonzero_index(k::nonzero_index_avx2, true).pixels_to_float(k::pixels_to_float_avx2)
          .fma_peak(k::fma_peak_avx2, 8).activations(k::f32_activation_avx2_fma)
          .spatial(k::f32_conv_6x16_avx2_fma, 16, k::f32_pool_avx2_fma)
          .winograd(k::f32_conv_winograd_6x16_avx2_fma),
#endif
#if defined(MNIST_ENGINE_ARM_KERNELS)
      Entry("neon", P::Fp32, always).runs(k::f32_dense_1x32_sparse_neon, k::kNeonPanelWidth, 4)
          .nonzero_index(k::nonzero_index_scalar, true).pixels_to_float(k::pixels_to_float_scalar)
          .fma_peak(k::fma_peak_neon, 4).activations(k::f32_activation_scalar)
          .spatial(k::f32_conv_6x16_neon, 16, k::f32_pool_scalar)
          .winograd(k::f32_conv_winograd_6x16_neon),
#endif
      Entry("scalar", P::Fp32, always).runs(k::f32_dense_scalar, k::kScalarPanelWidth)
          .nonzero_index(k::nonzero_index_scalar, false).pixels_to_float(k::pixels_to_float_scalar)
          .fma_peak(k::fma_peak_scalar, 1).activations(k::f32_activation_scalar)
          .spatial(k::f32_conv_scalar, 1, k::f32_pool_scalar),
#if defined(MNIST_ENGINE_X86_KERNELS)
      Entry("bf16-amx", P::Bf16, has_amx_bf16).runs(k::bf16_dense_32x32_amx, 16, 1).weights(2)
          .tiles(16, 32, kAmxBf16MinRows).prepares_rows(k::convert_rows_bf16_avx512bf16)
          .activations(k::f32_activation_avx512f).convolves(k::bf16_conv_32x32_amx, 32)
          .tile_convolution(16, kAmxConvSplitMacs),
      Entry("bf16-avx512bf16", P::Bf16, has_avx512_bf16).runs(k::bf16_dense_1x128_sparse_avx512bf16, 16, 8)
          .weights(2).unit_index(k::unit_index_avx512f).prepares_rows(k::convert_rows_bf16_avx512bf16)
          .activations(k::f32_activation_avx512f),
#endif
      // No AVX512-BF16 convolution: a 12x32 vdpbf16ps tile took the convnet 240 ms per 10k against
      // the fp32 kernel's 167 (vdpbf16ps issues at half the FMA rate here), so bf16-avx512bf16
      // engines run conv layers on bf16-amx's tiles where the CPU has AMX, else in fp32.
      Entry("bf16-scalar", P::Bf16, always).runs(k::bf16_dense_scalar, 1, 1).weights(2)
          .prepares_rows(k::convert_rows_bf16_scalar).activations(k::f32_activation_scalar)
          .convolves(k::bf16_conv_scalar, 1),
#if defined(MNIST_ENGINE_X86_KERNELS)
      Entry("int8-amx", P::Int8, has_amx_int8).runs(k::u8s8_dense_32x32_amx, 16, 1).weights(1)
          .tiles(16, 32, kAmxInt8MinRows).prepares_rows(k::quantize_rows_u8_avx512f)
          .activations(k::f32_activation_avx512f).convolves(k::u8s8_conv_32x32_amx, 32)
          .tile_convolution(16, kAmxConvSplitMacs),
      Entry("int8-avx512vnni", P::Int8, has_avx512_vnni).runs(k::u8s8_dense_1x64_sparse_avx512vnni, 16, 4)
          .weights(1).unit_index(k::unit_index_avx512f).prepares_rows(k::quantize_rows_u8_avx512f)
          .activations(k::f32_activation_avx512f).convolves(k::u8s8_conv_12x32_avx512vnni, 32)
          .pools_inside_conv(),
      Entry("int8-avxvnni", P::Int8, has_avx_vnni).runs(k::u8s8_dense_1x64_sparse_avxvnni, 8, 8).weights(1)
          .unit_index(k::unit_index_scalar).prepares_rows(k::quantize_rows_u8_avx2)
          .activations(k::f32_activation_avx2_fma).convolves(k::u8s8_conv_6x16_avxvnni, 16),
      Entry("int8-avx2", P::Int8, has_avx2_fma).runs(k::u8s8_dense_1x64_sparse_avx2, 8, 8).weights(2, 2)
          .unit_index(k::unit_index_scalar).prepares_rows(k::quantize_rows_u8_avx2)
          .activations(k::f32_activation_avx2_fma),
#endif
      Entry("int8-scalar", P::Int8, always).runs(k::u8s8_dense_scalar, 1, 1).weights(1)
          .prepares_rows(k::quantize_rows_u8_scalar).activations(k::f32_activation_scalar)
          .convolves(k::u8s8_conv_scalar, 1),
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

std::vector<std::string> available_kernel_names(Precision precision) {
  const auto disabled = disabled_kernels();
  std::vector<std::string> names;
  for (const auto& k : kernel_table())
    if (k.precision == precision && usable(k, disabled)) names.emplace_back(k.name);
  return names;
}

// Measured on a Xeon with AMX (docs/PERFORMANCE.md, "int8 and bf16 convolution on AMX"): without
// a fused pool, on layers with window rows under 8 bytes (3 x 3 on 1 or 2 channels) the AVX-512
// VNNI direct kernel is 7-12% faster than the AMX one; from 12 bytes (4 channels) AMX is faster,
// at 96 (the keras-io convnet's second layer) 1.7x.
constexpr size_t kAmxConvMinRowBytes = 8;

const KernelInfo* reduced_conv_kernel(const KernelInfo& k, const Geometry& g, bool forced, bool pool_follows) {
  const bool narrow = size_t(g.window_w) * g.in.channels < kAmxConvMinRowBytes;
  const auto suits = [&](const KernelInfo& c) {
    return c.quant_conv_units == 1 || !narrow || (pool_follows && c.quant_conv_pools) || (forced && &c == &k);
  };
  if (k.quant_conv && suits(k)) return &k;
  const auto disabled = disabled_kernels();
  for (const auto& other : kernel_table())
    if (other.precision == k.precision && other.quant_conv && !other.reference && usable(other, disabled) &&
        suits(other))
      return &other;
  return nullptr;
}

std::vector<std::string> available_precision_names() {
  const auto disabled = disabled_kernels();
  std::vector<std::string> names;
  for (Precision p : {Precision::Fp32, Precision::Bf16, Precision::Int8}) {
    bool runs = false;
    for (const auto& k : kernel_table())
      runs |= k.precision == p && (!k.reference || p == Precision::Fp32) && usable(k, disabled);
    if (runs) names.emplace_back(precision_name(p));
  }
  return names;
}

const KernelInfo& select_kernel(const std::string& requested, Precision precision) {
  std::string name = requested;
  std::string source = "requested kernel";
  if (name.empty()) {
    name = forced_kernel_name(precision);
    if (!name.empty()) source = "MNIST_ENGINE_KERNEL";
  }
  const auto disabled = disabled_kernels();
  if (name.empty()) {
    for (const auto& k : kernel_table())
      if (k.precision == precision && (!k.reference || precision == Precision::Fp32) && usable(k, disabled))
        return k;
    throw std::invalid_argument(std::string("precision '") + precision_name(precision) +
                                "' has no kernel for this CPU (" +
                                (precision == Precision::Bf16 ? "it needs AVX512-BF16 or AMX-BF16"
                                                              : "it needs AVX2, AVX-VNNI, AVX512-VNNI or AMX-INT8") +
                                "); this CPU runs: " + join(available_precision_names()));
  }
  const KernelInfo* k = find_kernel(name);
  if (!k)
    throw std::invalid_argument(source + " '" + name + "' is not a kernel of this build; expected one of: " +
                                join(all_names()));
  if (k->precision != precision)
    throw std::invalid_argument(source + " '" + name + "' computes " + precision_name(k->precision) +
                                ", but precision '" + precision_name(precision) + "' was asked for; its kernels here: " +
                                join(available_kernel_names(precision)));
  if (!usable(*k, disabled))
    throw std::invalid_argument(source + " '" + name + "' is not supported by this CPU; available: " +
                                join(available_kernel_names(precision)));
  return *k;
}

bool cpu_runs_amx() {
#if defined(MNIST_ENGINE_X86_KERNELS)
  return hardware_amx_int8() && hardware_amx_bf16();
#else
  return false;
#endif
}

const KernelInfo* small_batch_partner(const KernelInfo& k) {
  if (k.min_rows <= 1) return nullptr;
  const auto disabled = disabled_kernels();
  const KernelInfo* reference = nullptr;
  for (const auto& other : kernel_table()) {
    if (other.precision != k.precision || other.min_rows > 1 || !usable(other, disabled)) continue;
    if (!other.reference) return &other;
    reference = &other;
  }
  return reference;
}

}  // namespace mnist_engine
