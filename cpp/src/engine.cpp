#include "mnist_engine/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>

#include "dispatch.h"
#include "engine_internal.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

#include "thread_pool.h"

namespace mnist_engine {
namespace {

// Rows per tile. All layers run on one tile before the next starts, so a tile's activations
// (64 rows x 512 floats = 128 KiB per buffer for the default model) stay in L2 instead of
// round-tripping through memory, and a batch needs no whole-batch intermediates.
constexpr size_t kTileRows = 64;
constexpr size_t kSpatialTileBytes = size_t(1) << 18;  // per layer output: a quarter of a small L2
constexpr size_t kAlignment = 64;

using internal::kernel_of;
using internal::round_up;

// %g with 6 significant digits: how the range messages print numbers.
std::string format_number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

void softmax_rows(float* y, size_t rows, size_t stride, size_t width) {
  for (size_t r = 0; r < rows; ++r) {
    float* v = y + r * stride;
    // Subtracting the row max keeps exp() from overflowing; it cancels in the quotient.
    const float m = *std::max_element(v, v + width);
    float sum = 0.0f;
    for (size_t j = 0; j < width; ++j) sum += (v[j] = std::exp(v[j] - m));
    const float inv = 1.0f / sum;
    for (size_t j = 0; j < width; ++j) v[j] *= inv;
  }
}

template <typename F>
void map_rows(float* y, size_t rows, size_t stride, size_t width, F f) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < width; ++j) y[r * stride + j] = f(y[r * stride + j]);
}

float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

const KernelInfo& fp32_reference() {
  for (const KernelInfo& k : kernel_table())
    if (k.reference && k.precision == Precision::Fp32) return k;
  throw std::logic_error("the kernel table has no fp32 reference");
}

// Whether a conv layer of `filters` filters, `depth` values per filter and `bytes` per value may be
// packed in panels of `panel` filters. Kernels that work on whole panels pad the last one, so a
// layer of 1 filter over 1024 channels would take panel times its weights (a 16 MiB layer, half a
// GiB on AVX-512). Such a layer goes to a kernel without panels (the fp32 scalar reference, which
// for so few filters loses little) when the padding would cost more than twice the layer's own
// weights and more than 1 MiB: loading any file then costs at most 3 times its size, plus 1 MiB
// per layer.
bool conv_padding_pays(size_t filters, size_t depth, size_t panel, size_t bytes) {
  const size_t weights = filters * depth * bytes, padding = (round_up(filters, panel) - filters) * depth * bytes;
  return padding <= std::max<size_t>(2 * weights, size_t(1) << 20);
}

// What a file without an `output_kind` entry outputs, read off its last activation: the files
// written before the entry existed end in softmax or sigmoid (probabilities) or log_softmax, and
// a classifier ending in anything else gives scores, which softmax turns into probabilities.
OutputKind kind_after(Activation last) {
  switch (last) {
    case Activation::Softmax:
    case Activation::Sigmoid:
    case Activation::HardSigmoid: return OutputKind::Probabilities;
    case Activation::LogSoftmax: return OutputKind::LogProbabilities;
    default: return OutputKind::Logits;
  }
}

}  // namespace

void Engine::to_probabilities(float* y, size_t rows) const {
  const size_t width = output_width();
  switch (output_kind_) {
    case OutputKind::Probabilities: return;
    case OutputKind::LogProbabilities: return map_rows(y, rows, width, width, [](float v) { return std::exp(v); });
    case OutputKind::Logits:
      return width == 1 ? map_rows(y, rows, width, width, sigmoid) : softmax_rows(y, rows, width, width);
    case OutputKind::Values: break;
  }
  throw std::invalid_argument("this model's outputs are values (output_kind 'values': a regressor or a generator), "
                              "not class scores: it has no probabilities; use predict()");
}

namespace {

// Version 1's activations, computed as they always were, so version-1 files give the same bits.
void apply_version1_activation(Activation a, float* y, size_t rows, size_t stride, size_t width) {
  switch (a) {
    case Activation::Linear:
    case Activation::Relu: return;
    case Activation::Sigmoid: return map_rows(y, rows, stride, width, sigmoid);
    case Activation::Tanh: return map_rows(y, rows, stride, width, [](float v) { return std::tanh(v); });
    case Activation::Softmax: return softmax_rows(y, rows, stride, width);
    default: return;  // version 2's: the kernel's vectorised activate (Engine::activate)
  }
}

}  // namespace

void Engine::activate(size_t l, float* y, size_t rows, size_t stride) const {
  const LayerInfo& info = shape_[l];
  const LayerParams& p = params_[l];
  if (uint32_t(info.activation) < kVersion1Activations) {
    // Relu is fused into the dense and conv kernels; after an element-wise op it runs here.
    if (info.activation == Activation::Relu && p.op != Op::Dense && p.op != Op::Conv2d)
      map_rows(y, rows, stride, info.output_width, [](float v) { return v < 0.0f ? 0.0f : v; });
    return apply_version1_activation(info.activation, y, rows, stride, info.output_width);
  }
  const KernelInfo& k = kernel_of(kernel_);
  for (size_t r = 0; r < rows; ++r)
    k.activate(uint32_t(info.activation), p.activation.data(), y + r * stride, info.output_width);
}

namespace {

// How one image's conv layer is shared among Scratch::conv_team threads: one part, or one per
// thread, each a run of its panels of filters when they divide evenly (equal work, and each
// thread reads the whole image but writes only its own columns), else a run of its output rows.
// Each output's sums are the same wherever it runs, so splitting changes no bit. A thread's share
// must outweigh the fork and join and the maps moving between the cores' caches: with the fp32
// kernel the keras-io convnet's first layer (0.2 M multiply-adds) is slower split, its second
// (2.2 M) faster; KernelInfo::conv_split_macs is each kernel's threshold per thread.
int conv_team_size(int conv_team, const Geometry& g, size_t rows, size_t macs_per_thread) {
  const ImageShape out = output_shape(Op::Conv2d, g);
  const size_t macs = size_t(out.height) * out.width * g.filters * g.window_h * g.window_w * g.in.channels;
  return static_cast<int>(std::min<size_t>({size_t(conv_team), rows, macs / macs_per_thread}));
}

// The side of the pool fused into a conv kernel's call: 1 (none) or 2 (2 x 2, stride 2).
template <class Args>
size_t fused_pool(const Args& a) {
  return a.pool ? a.pool : 1;
}

// Panels first..last of a conv call (kernels::ConvArgs or QuantConvArgs) whose panels are `panel`
// filters wide, each `packed` elements of a.packed (the direct and the Winograd packings differ).
template <class Args>
Args panel_part(const Args& a, size_t first, size_t last, size_t panel, size_t packed) {
  Args part = a;
  part.packed += first * packed;
  if constexpr (std::is_same_v<Args, kernels::QuantConvArgs>) {
    part.col_sum += first * panel;
    part.col_scale += first * panel;
  }
  part.bias += first * panel;
  part.y += first * panel;
  part.panels = last - first;
  return part;
}

// The geometry of a conv call (kernels::ConvArgs or QuantConvArgs), field by field: six adjacent
// size_t fields filled positionally would compile with window_w and stride_w swapped. `window_h`
// is the packing's window rows (a reduced-precision packing may merge them).
template <class Args>
void set_window(Args& a, size_t padded_w, size_t channels, size_t window_h, const Geometry& g, const ImageShape& out) {
  a.padded_w = padded_w;
  a.channels = channels;
  a.window_h = window_h;
  a.window_w = g.window_w;
  a.stride_h = g.stride_h;
  a.stride_w = g.stride_w;
  a.out_h = out.height;
  a.out_w = out.width;
}

// Runs a conv kernel on its arguments (kernels::ConvArgs or QuantConvArgs; `row` elements of a.x
// per padded image row, panels `panel` filters wide and `packed` elements of a.packed: the packed
// size over the panels, whichever packing it is), shared as above; a kernel writes whole panels,
// so when a.y is a panel-wide scratch the real filters are copied to y. `rows_together`: output
// rows a split must keep together where no pool is fused (2 for Winograd, whose 2 x 2 tiles must
// be the whole image's tiles for the bits to be the same).
template <class Args>
void run_conv_kernel(int conv_team, const Geometry& g, const Args& a, size_t row, size_t panel, size_t packed,
                     size_t rows_together, void (*kernel)(const Args&), size_t split_macs, float* y) {
  const ImageShape out = output_shape(Op::Conv2d, g);
  const size_t pool = fused_pool(a), height = out.height / pool, width = out.width / pool;
  // The split's unit: a pooled row (its `pool` conv rows), else rows_together output rows.
  const size_t unit = pool > 1 ? pool : rows_together, stored_per_unit = pool > 1 ? 1 : rows_together;
  const size_t units = (height + stored_per_unit - 1) / stored_per_unit;
  const int team = std::max(conv_team_size(conv_team, g, units, split_macs), 1);
  // Items for the pool to hand out: blocks of output rows, within whole panels of filters where
  // the panels divide among the team (disjoint output columns, equal work). Several items per
  // thread, so that a thread the OS parks holds up only a small part (thread_pool.h); a thread
  // claims neighbouring items, which share a panel's weights.
  const size_t panel_parts = a.panels % size_t(team) == 0 ? a.panels : 1;
  const size_t row_parts = std::min(units, std::max<size_t>(1, size_t(team) * 4 / panel_parts));
  const auto part = [&](size_t i, int) {
    const size_t p = i / row_parts, r = i % row_parts;
    Args piece = panel_parts > 1 ? panel_part(a, p, p + 1, panel, packed) : a;
    const size_t first = units * r / row_parts, last = units * (r + 1) / row_parts;
    piece.x += first * unit * g.stride_h * row;
    piece.y += first * stored_per_unit * width * a.y_stride;
    piece.out_h = pool > 1 ? (last - first) * pool : std::min<size_t>(last * unit, out.height) - first * unit;
    kernel(piece);
  };
  if (team <= 1) {
    kernel(a);
  } else {
    note_team_started();
    parallel_for(panel_parts * row_parts, team, part);
  }
  if (a.y != y)
    for (size_t r = 0; r < height * width; ++r) std::copy_n(a.y + r * a.y_stride, g.filters, y + r * g.filters);
}

}  // namespace

// A convolution, one image: the conv kernel of spatial_kernel_ (kernels::ConvArgs) reads the image
// with its padding around it, so a padded layer's image is first copied into a zeroed frame.
// ReLU is fused into the kernel's stores. The kernel writes whole panels: when the filters are
// not a multiple of the panel, it writes to scratch and the real filters are copied out.
void Engine::run_conv(size_t l, const float* x, float* y, Scratch& s) const {
  const LayerParams& p = params_[l];
  if (p.qconv.weights.size()) return run_conv_quantized(l, x, y, s);
  const Geometry& g = p.geometry;
  const KernelInfo& k = kernel_of(p.conv_kernel);
  const ImageShape out = output_shape(Op::Conv2d, g);
  const size_t C = g.in.channels, row = size_t(g.in.width) * C;
  const float* image = x;
  size_t padded_w = g.in.width;
  if (g.pad_top || g.pad_bottom || g.pad_left || g.pad_right) {
    padded_w = size_t(g.in.width) + g.pad_left + g.pad_right;
    const size_t padded_h = size_t(g.in.height) + g.pad_top + g.pad_bottom;
    std::fill_n(s.padded, padded_h * padded_w * C, 0.0f);
    for (size_t iy = 0; iy < g.in.height; ++iy)
      std::copy_n(x + iy * row, row, s.padded + ((iy + g.pad_top) * padded_w + g.pad_left) * C);
    image = s.padded;
  }
  const size_t width = p.conv.panels * k.conv_panel;
  float* dst = width == g.filters ? y : s.conv_out;
  kernels::ConvArgs a{};  // by name: see set_window
  a.x = image;
  set_window(a, padded_w, C, g.window_h, g, out);
  a.packed = p.conv.weights.data();
  a.bias = p.conv.bias.data();
  a.panels = p.conv.panels;
  a.y = dst;
  a.y_stride = width;
  a.relu = shape_[l].activation == Activation::Relu;
  a.skip_zeros = skip_zeros_;
  a.pool = p.pool;
  run_conv_kernel(s.conv_team, g, a, padded_w * C, k.conv_panel, p.conv.weights.size() / p.conv.panels,
                  p.winograd ? 2 : 1, p.winograd ? k.conv_winograd : k.conv, k.conv_split_macs, y);
}

// The reduced-precision form: the image is converted as one row by the kernel's own row
// preparation (int8: its range gives the scale and zero point, as a dense layer's row is
// quantized; bf16: rounded to nearest even; the same bytes on every ISA) into a frame whose
// padding, and the slack the kernel may read past it, hold zero (int8: the zero point). int8
// kernels sum every output in int32 and scale it back, bf16 ones in float32.
void Engine::run_conv_quantized(size_t l, const float* x, float* y, Scratch& s) const {
  const LayerParams& p = params_[l];
  const Geometry& g = p.geometry;
  const KernelInfo& k = kernel_of(p.qconv_kernel);
  const ImageShape out = output_shape(Op::Conv2d, g);
  const size_t n = size_t(g.in.height) * g.in.width * g.in.channels;  // values
  const size_t C = g.in.channels * (precision_ == Precision::Int8 ? 1 : 2);  // bytes per pixel
  const size_t row = size_t(g.in.width) * C, bytes = size_t(g.in.height) * row;
  const size_t padded_w = size_t(g.in.width) + g.pad_left + g.pad_right;
  const size_t padded_h = size_t(g.in.height) + g.pad_top + g.pad_bottom, frame = padded_h * padded_w * C;
  const bool padded = frame != bytes;
  const size_t slack = kernels::quant_conv_slack(C, g.stride_w, p.qconv.units);
  uint8_t* image = padded ? s.frame + frame + slack : s.frame;
  float scale = 1.0f;
  int32_t zero = 0;
  k.prepare_rows(x, n, 1, n, image, bytes, &scale, &zero, nullptr);
  const uint8_t zero_byte = static_cast<uint8_t>(zero);  // bf16: 0, the bits of +0
  if (padded) {
    std::fill_n(s.frame, frame, zero_byte);
    for (size_t iy = 0; iy < g.in.height; ++iy)
      std::copy_n(image + iy * row, row, s.frame + ((iy + g.pad_top) * padded_w + g.pad_left) * C);
  }
  std::fill_n(s.frame + frame, slack, zero_byte);
  const size_t width = p.qconv.panels * k.quant_conv_panel;
  float* dst = width == g.filters ? y : s.conv_out;
  kernels::QuantConvArgs a{};  // by name: see set_window
  a.x = s.frame;
  set_window(a, padded_w, C, p.qconv.window_rows, g, out);
  a.units = p.qconv.units;
  a.packed = reinterpret_cast<const int8_t*>(p.qconv.weights.data());
  a.col_sum = p.qconv.col_sum.data();
  a.col_scale = p.qconv.col_scale.data();
  a.bias = p.qconv.bias.data();
  a.scale = scale;
  a.zero = zero;
  a.panels = p.qconv.panels;
  a.y = dst;
  a.y_stride = width;
  a.relu = shape_[l].activation == Activation::Relu;
  a.skip_zeros = skip_zeros_;
  a.pool = p.pool;
  run_conv_kernel(s.conv_team, g, a, padded_w * C, k.quant_conv_panel, p.qconv.weights.size() / p.qconv.panels, 1,
                  k.quant_conv, k.conv_split_macs, y);
}

// Every layer that is not dense, in float for every precision, row by row, from x into y (never in
// place: x may be the caller's): scale_shift and layer_norm, and the spatial layers, each row one
// NHWC image.
void Engine::run_elementwise(size_t l, const float* x, size_t x_stride, size_t rows, float* y,
                             size_t y_stride, Scratch& s) const {
  const LayerParams& p = params_[l];
  const size_t n = shape_[l].output_width;
  const float* a = p.first.data();
  const float* b = p.second.data();
  for (size_t r = 0; r < rows; ++r) {
    const float* in = x + r * x_stride;
    float* out = y + r * y_stride;
    if (p.op == Op::Conv2d) {
      run_conv(l, in, out, s);
      continue;
    }
    if (is_spatial(p.op)) {
      kernel_of(spatial_kernel_).pool(p.op, in, p.geometry, output_shape(p.op, p.geometry), out);
      continue;
    }
    if (p.op == Op::ScaleShift) {
      for (size_t j = 0; j < n; ++j) out[j] = in[j] * a[j] + b[j];
      continue;
    }
    // Mean and variance in double, two passes: a row of large, nearly equal values keeps its
    // variance (a one-pass sum of squares would cancel it away).
    double sum = 0.0;
    for (size_t j = 0; j < n; ++j) sum += in[j];
    const double mean = sum / double(n);
    double squares = 0.0;
    for (size_t j = 0; j < n; ++j) squares += (in[j] - mean) * (in[j] - mean);
    const float inv = static_cast<float>(1.0 / std::sqrt(squares / double(n) + double(p.epsilon)));
    const float m = static_cast<float>(mean);
    // Keras's form: x * (inv * gamma) + (beta - mean * inv * gamma).
    for (size_t j = 0; j < n; ++j) {
      const float scale = inv * a[j];
      out[j] = in[j] * scale + (b[j] - m * scale);
    }
  }
}

namespace {

std::atomic<int> g_default_threads{0};

// The thread pool's workers (thread_pool.h) do not survive fork(): the child has the pool's state
// but none of its threads. A child forked after this process ran a team therefore predicts on its
// calling thread only (and get_num_threads() says 1), which is also what process pools want
// anyway: no oversubscription. A child of a parent that never ran a team has no pool to inherit
// and keeps every thread.
std::atomic<bool> g_team_started{false};
std::atomic<bool> g_forked_child{false};
#if defined(__unix__) || defined(__APPLE__)
const bool kForkGuardInstalled = [] {
  pthread_atfork(nullptr, nullptr, [] {
    if (g_team_started.load()) g_forked_child.store(true);
  });
  return true;
}();
#endif

}  // namespace

void* aligned_allocate(size_t bytes) {
  return ::operator new[](std::max<size_t>(bytes, 1), std::align_val_t(kAlignment));
}

void aligned_free(void* p) { ::operator delete[](p, std::align_val_t(kAlignment)); }

const char* precision_name(Precision p) { return kPrecisionNames[static_cast<int>(p)]; }

Precision parse_precision(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kPrecisionNames[i]) return static_cast<Precision>(i);
  throw std::invalid_argument("precision '" + name + "' is not one of: fp32, bf16, int8");
}

namespace {

// The CPUs this process may run on: its affinity mask (taskset, a container's cpuset), as
// OpenMP counted them.
int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(CPU_COUNT(&set), 1);
#endif
  return std::max<int>(std::thread::hardware_concurrency(), 1);
}

// OMP_NUM_THREADS's first value, read as OpenMP reads it: the engine ran on OpenMP before its own
// pool, and users who set the variable keep control. 0 when unset or not a positive number.
int threads_from_environment() {
  const char* value = std::getenv("OMP_NUM_THREADS");
  if (value == nullptr) return 0;
  char* end = nullptr;
  const long n = std::strtol(value, &end, 10);
  return end != value && (*end == '\0' || *end == ',') && n > 0 && n <= 65536 ? int(n) : 0;
}

}  // namespace

int max_threads() {
  static const int limit = 4 * available_cpus();
  return limit;
}

int check_threads(long long requested, const char* what) {
  if (requested < 1 || requested > max_threads())
    throw std::invalid_argument(std::string("expected ") + what + " in 1.." + std::to_string(max_threads()) +
                                " (4x this machine's " + std::to_string(max_threads() / 4) +
                                " CPUs), got " + std::to_string(requested));
  return static_cast<int>(requested);
}

int effective_threads(int requested) {
  if (g_forked_child.load(std::memory_order_relaxed)) return 1;
  if (requested > 0) return std::min(requested, max_threads());
  if (const int t = g_default_threads.load(std::memory_order_relaxed); t > 0) return t;
  static const int from_environment = threads_from_environment();
  return from_environment > 0 ? std::min(from_environment, max_threads()) : available_cpus();
}

void note_team_started() { g_team_started.store(true); }

int default_threads() { return effective_threads(0); }

void set_default_threads(long long threads) {
  g_default_threads.store(threads == 0 ? 0 : check_threads(threads, "threads (0 = the default)"));
}

std::shared_ptr<const Engine> Engine::from_bytes(const uint8_t* data, size_t size, bool verify,
                                                 const std::string& kernel, bool skip_zeros, Precision precision,
                                                 int threads) {
  if (threads != 0) check_threads(threads, "threads=0 (the default) or threads");
  // The kernel first: a bad name or precision is reported before the file is read.
  const KernelInfo& k = select_kernel(precision == Precision::Fp32 ? kernel : "", Precision::Fp32);
  const KernelInfo& chosen = precision == Precision::Fp32 ? k : select_kernel(kernel, precision);
  ModelFile file = parse_model_file(data, size);

  std::shared_ptr<Engine> e(new Engine());
  e->kernel_ = &k;
  e->kernel_name_ = k.name;
  e->skip_zeros_ = skip_zeros;
  e->verified_ = verify;
  e->threads_ = threads;
  e->kernel_request_ = kernel;
  e->file_bytes_.assign(data, data + size);  // parsed and valid: what a pickle carries
  e->input_width_ = file.input_width;
  e->input_scale_ = file.input_scale;
  const ReferenceRange& r = file.reference_range;
  e->range_stated_ = r.present;
  if (r.present && r.pixels) {
    e->input_range_ = {static_cast<float>(r.lo * file.input_scale), static_cast<float>(r.hi * file.input_scale)};
    e->input_range_source_ = "reference images: uint8 pixels " + format_number(r.lo) + ".." + format_number(r.hi) +
                             " x input_scale " + format_number(file.input_scale);
  } else if (r.present) {
    e->input_range_ = {static_cast<float>(r.lo), static_cast<float>(r.hi)};
    e->input_range_source_ = "reference images: floats " + format_number(r.lo) + ".." + format_number(r.hi);
    e->range_from_floats_ = true;
  } else {
    e->input_range_ = {0.0f, static_cast<float>(255 * file.input_scale)};
    e->input_range_source_ = "uint8 pixels 0..255 x input_scale " + format_number(file.input_scale);
  }
  e->metadata_ = std::move(file.metadata);
  e->classes_ = std::move(file.classes);
  e->reject_class_ = file.reject_class;
  e->pixel_input_ = file.pixel_input;
  e->input_mean_ = file.input_mean;
  e->input_std_ = file.input_std;
  if (!file.input_mean.empty()) {
    const size_t channels = file.input_mean.size();
    e->pixel_values_.resize(256 * channels);
    for (size_t c = 0; c < channels; ++c)
      for (int p = 0; p < 256; ++p) {
        // ToTensor's p / 255 (the float nearest p * input_scale, as pixels_to_float gives), then
        // Normalize's subtraction and division, each rounded to float32: PyTorch's values exactly.
        const float scaled = static_cast<float>(p * file.input_scale);
        const float centred = scaled - file.input_mean[c];
        e->pixel_values_[c * 256 + p] = centred / file.input_std[c];
      }
    if (!e->range_from_floats_) {  // pixels the model was checked on reach it normalized
      const int lo = r.present ? int(r.lo) : 0, hi = r.present ? int(r.hi) : 255;
      float a = INFINITY, b = -INFINITY;
      for (size_t c = 0; c < channels; ++c)
        for (const int p : {lo, hi}) {
          a = std::min(a, e->pixel_values_[c * 256 + p]);
          b = std::max(b, e->pixel_values_[c * 256 + p]);
        }
      e->input_range_ = {a, b};
      e->input_range_source_ += ", normalized by input_mean and input_std";
    }
  }
  e->output_kind_stated_ = file.output_kind_stated;
  e->output_kind_ = file.output_kind_stated ? file.output_kind : kind_after(file.layers.back().activation);

  const size_t nr = k.panel_width;
  e->first_layer_elementwise_ = file.layers[0].op != Op::Dense;
  for (const FileLayer& src : file.layers) {
    PackedLayer dst;
    dst.info = {src.input_width, src.output_width, src.activation, src.op};
    e->shape_.push_back(dst.info);
    LayerParams params;
    params.op = src.op;
    params.epsilon = src.epsilon;
    params.activation = src.parameters;
    dst.panels = round_up(src.output_width, nr) / nr;
    e->max_padded_width_ = std::max(e->max_padded_width_, dst.panels * nr);
    e->max_input_width_ = std::max<size_t>(e->max_input_width_, src.input_width);
    if (src.op != Op::Dense) {
      // An element-wise op's two vectors; a conv's kernel is packed below; a pool has nothing.
      const Geometry& g = src.geometry;
      params.geometry = g;
      if (!is_spatial(src.op)) {
        params.first = AlignedFloats(src.output_width);
        params.second = AlignedFloats(src.output_width);
        decode_f32(src.kernel, src.output_width, params.first.data());
        decode_f32(src.bias, src.output_width, params.second.data());
      }
      // Spatial layers run in fp32 (on this engine's kernel, or the best fp32 one), but for the conv
      // layers of an int8 or bf16 engine with a convolution of its precision, packed again below.
      if (is_spatial(src.op)) e->spatial_kernel_ = precision == Precision::Fp32 ? &k : &select_kernel("", Precision::Fp32);
      if (src.op == Op::Conv2d) {
        const size_t depth = size_t(g.window_h) * g.window_w * g.in.channels;
        const KernelInfo& wide = kernel_of(e->spatial_kernel_);
        const KernelInfo& ck = conv_padding_pays(g.filters, depth, wide.conv_panel, 4)
                                   ? wide : fp32_reference();
        params.conv_kernel = &ck;
        params.winograd = ck.conv_winograd &&
                          kernels::conv_winograd_fits(g.window_h, g.window_w, g.stride_h, g.stride_w, g.in.channels);
        if (params.winograd)
          pack_conv_winograd(src.kernel, src.bias, g.in.channels, g.filters, ck.conv_panel, params.conv);
        else
          pack_conv(src.kernel, src.bias, depth, g.filters, ck.conv_panel, params.conv);
        const ImageShape o = output_shape(Op::Conv2d, g);
        const size_t padded = (size_t(g.in.height) + g.pad_top + g.pad_bottom) *
                              (size_t(g.in.width) + g.pad_left + g.pad_right) * g.in.channels;
        e->max_conv_padded_ = std::max(e->max_conv_padded_, padded);
        e->max_conv_out_ = std::max(e->max_conv_out_, size_t(o.height) * o.width * params.conv.panels * ck.conv_panel);
      }
      dst.tail_stride = 0;
      e->params_.push_back(std::move(params));
      e->layers_.push_back(std::move(dst));
      continue;
    }
    e->params_.push_back(std::move(params));
    pack_dense(src.kernel, src.bias, src.input_width, src.output_width, &k, dst);
    e->layers_.push_back(std::move(dst));
  }
  for (size_t l = 0; l < file.layers.size(); ++l)
    if (file.layers[l].op == Op::Conv2d) e->set_pool_fusion(l, kernel_of(e->params_[l].conv_kernel).conv_pools && pool_fuses(file, l));
  if (verify) {
    try {
      e->verify(file.reference);
    } catch (const FormatError&) {
      // Winograd rounds differently from the direct sum, a little more where a window's terms
      // cancel (raw pixels into unnormalized weights); the file's own check says whether that
      // matters. If it fails with Winograd, the direct kernel must pass it alone.
      if (!e->repack_winograd_as_direct(file)) throw;
      e->verify(file.reference);
    }
  }
  if (precision == Precision::Fp32) return e;

  // The exact engine has vouched for the weights; the reduced-precision one is built from them.
  e->precision_ = precision;
  e->kernel_ = &chosen;
  e->kernel_name_ = chosen.name;
  e->max_padded_width_ = 0;
  std::vector<LayerValues> values;
  for (const FileLayer& src : file.layers)
    values.push_back(src.op == Op::Dense ? quantize_values(src, precision) : LayerValues{});
  e->plan_ = e->plan_quantized(file, values, &chosen);
  // A forced kernel runs every tile and every conv layer: forcing is how its small tiles and
  // narrow layers get tested and timed.
  const bool forced = !kernel.empty() || !forced_kernel_name(precision).empty();
  const KernelInfo* partner = forced ? nullptr : small_batch_partner(chosen);
  if (partner) {
    e->small_plan_ = e->plan_quantized(file, values, partner);
    e->min_rows_ = chosen.min_rows;
  }
  // Conv layers run in the engine's precision where a kernel here has a convolution of it
  // (reduced_conv_kernel), each layer on its own choice; the others stay in fp32.
  const size_t value_bytes = precision == Precision::Int8 ? 1 : 2;
  for (size_t l = 0; l < file.layers.size(); ++l) {
    const FileLayer& src = file.layers[l];
    if (src.op != Op::Conv2d) continue;
    const Geometry& g = src.geometry;
    const bool pool_follows = pool_fuses(file, l);
    const KernelInfo* qc = reduced_conv_kernel(chosen, g, forced, pool_follows);
    const size_t depth = size_t(g.window_h) * g.window_w * g.in.channels;
    if (!qc || !conv_padding_pays(g.filters, depth, qc->quant_conv_panel, value_bytes)) continue;  // fp32
    e->params_[l].qconv_kernel = qc;
    e->set_pool_fusion(l, qc->quant_conv_pools && pool_follows);
    e->params_[l].qconv = pack_conv_quantized(src, precision, qc->quant_conv_panel, qc->quant_conv_units);
    const size_t pixel = g.in.channels * value_bytes, image = size_t(g.in.height) * g.in.width * pixel;
    const size_t frame = (size_t(g.in.height) + g.pad_top + g.pad_bottom) *
                         (size_t(g.in.width) + g.pad_left + g.pad_right) * pixel;
    e->max_conv_frame_ = std::max(e->max_conv_frame_, frame + kernels::quant_conv_slack(pixel, g.stride_w,
                                                                                         e->params_[l].qconv.units) +
                                                          image);
    const ImageShape o = output_shape(Op::Conv2d, g);
    e->max_conv_out_ = std::max(e->max_conv_out_, size_t(o.height) * o.width * e->params_[l].qconv.panels *
                                                      qc->quant_conv_panel);
  }
  e->max_act_bytes_ = e->max_units_ * kernels::kUnitBytes;
  for (int p = 0; p < 256; ++p) e->pixel_bf16_[p] = kernels::to_bf16(static_cast<float>(p * e->input_scale_));
  std::vector<PackedLayer>().swap(e->layers_);
  if (verify) e->measure_reference_deviation(file.reference);
  return e;
}

void Engine::verify(const ReferenceSet& ref) {
  const size_t out = output_width();
  std::vector<float> y(size_t(ref.count) * out);
  predict(ref.inputs.data(), ref.count, y.data(), 1);
  float worst = -INFINITY;
  for (size_t i = 0; i < y.size(); ++i) {
    const float allowed = ref.atol + ref.rtol * std::fabs(ref.expected[i]);
    const float excess = std::fabs(y[i] - ref.expected[i]) - allowed;
    // !(excess <= 0) also catches a NaN output.
    if (!(excess <= 0.0f)) {
      std::ostringstream s;
      s.precision(9);
      s << "reference row " << i / out << ", output " << i % out << ": expected "
        << ref.expected[i] << " +/- " << allowed << ", the engine (kernel " << kernel_name_
        << ") computed " << y[i];
      throw FormatError(Rule::Verification, ref.expected_offset + 4 * i, s.str());
    }
    worst = std::max(worst, excess);
  }
  verification_margin_ = worst;
}

template <typename T>
float* Engine::range_to_measure(const T* x, size_t rows, Scratch& s, bool measured_by_kernel) const {
  if constexpr (std::is_same_v<T, uint8_t>) {
    return nullptr;  // pixels are in range by construction
  } else {
    if (!s.measure) return nullptr;
    if (measured_by_kernel) return s.range;
    for (size_t r = 0; r < rows; ++r) kernels::widen_range(x + r * input_width_, 0, input_width_, s.range);
    return nullptr;
  }
}
template float* Engine::range_to_measure(const float*, size_t, Scratch&, bool) const;
template float* Engine::range_to_measure(const uint8_t*, size_t, Scratch&, bool) const;

template <typename T>
void Engine::run_tile(const T* x, size_t rows, float* y, Scratch& s) const {
  if (precision_ != Precision::Fp32) return run_tile_quantized(x, rows, y, s);
  const float* in;
  size_t in_stride = input_width_;
  const KernelInfo& kernel = kernel_of(kernel_);
  // The first layer's nonzero index is the pass over the input rows that measures their range.
  float* range = range_to_measure(x, rows, s, layers_[0].info.op == Op::Dense && kernel.wants_nonzero_index &&
                                                  skip_zeros_);
  if constexpr (std::is_same_v<T, uint8_t>) {
    kernel.pixels_to_float(x, rows * input_width_, input_scale_, s.input);
    in = s.input;
  } else {
    in = x;
  }
  const size_t stride = max_padded_width_;
  float* buffers[2] = {s.ping, s.pong};
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (params_[l].fused) continue;  // a pool its conv layer ran (Engine::set_pool_fusion): `in` is its output
    const PackedLayer& layer = layers_[l];
    float* out = in == buffers[0] ? buffers[1] : buffers[0];
    if (layer.info.op != Op::Dense) {
      run_elementwise(l, in, in_stride, rows, out, stride, s);
      activate(l, out, rows, stride);
      in = out;
      in_stride = stride;
      continue;
    }
    const size_t width = layer.info.input_width;
    const size_t blocks = (width + kernels::kIndexBlock - 1) / kernels::kIndexBlock;
    if (kernel.wants_nonzero_index)
      for (size_t r = 0; r < rows; ++r) {
        uint16_t* index = s.nz_index + r * width;
        uint32_t* ends = s.block_ends + r * blocks;
        if (skip_zeros_) {
          kernel.nonzero_index(in + r * in_stride, width, index, ends, l == 0 ? range : nullptr);
          continue;
        }
        for (size_t k = 0; k < width; ++k) index[k] = static_cast<uint16_t>(k);
        for (size_t b = 0; b < blocks; ++b) ends[b] = static_cast<uint32_t>(std::min((b + 1) * kernels::kIndexBlock, width));
      }
    kernel.run({in, in_stride, rows, width, s.block_ends, s.nz_index, layer.weights.data(),
                layer.tail_stride, layer.bias.data(), layer.panels, layer.info.output_width, out, stride,
                layer.info.activation == Activation::Relu});
    activate(l, out, rows, stride);
    in = out;
    in_stride = stride;
  }
  const size_t width = output_width();
  for (size_t r = 0; r < rows; ++r) std::copy_n(in + r * in_stride, width, y + r * width);
}

template <typename T>
void Engine::run(const T* x, size_t rows, float* y, int threads, InputRange* seen) const {
  if (rows == 0) return;
  constexpr bool kPixels = std::is_same_v<T, uint8_t>;
  const size_t wanted = static_cast<size_t>(effective_threads(threads ? threads : threads_));
  // A dense model's tile is 64 rows: its weights are reused across them. A CNN's tile is as many
  // images as keep a layer's output maps in L2 (the keras-io convnet's first map is 85 KiB per
  // image), and a small batch is spread over the threads.
  const size_t tile = spatial_kernel_ ? std::clamp<size_t>(std::min((rows + wanted - 1) / wanted,
                                                                    kSpatialTileBytes / (4 * max_padded_width_)),
                                                           1, kTileRows)
                                      : kTileRows;
  const size_t tiles = (rows + tile - 1) / tile;
  const size_t in = input_width_, out = output_width();
  // A team costs microseconds to wake; one tile (a single image included) runs on the caller.
  const int team = static_cast<int>(std::min(wanted, tiles));
  const auto tile_rows = [&](size_t t) { return std::min(tile, rows - t * tile); };
  if (team == 1) {
    Scratch s(*this, std::min(rows, tile), kPixels);
    s.measure = seen != nullptr;
    // A CNN's single image: its conv layers split their output rows over the threads instead.
    s.conv_team = spatial_kernel_ ? static_cast<int>(wanted) : 1;
    for (size_t t = 0; t < tiles; ++t)
      run_tile(x + t * tile * in, tile_rows(t), y + t * tile * out, s);
    if (seen) *seen = {s.range[0], s.range[1]};
    return;
  }
  // Scratch is allocated before the parallel loop so an allocation failure throws here, where it
  // can reach Python, rather than on a pool thread, where it would terminate the process.
  std::vector<Scratch> scratch;
  scratch.reserve(team);
  for (int i = 0; i < team; ++i) {
    scratch.emplace_back(*this, tile, kPixels);
    scratch.back().measure = seen != nullptr;
  }
  note_team_started();
  parallel_for(tiles, team, [&](size_t t, int slot) {
    run_tile(x + t * tile * in, tile_rows(t), y + t * tile * out, scratch[slot]);
  });
  if (seen) {
    *seen = {};
    for (const Scratch& s : scratch) *seen = {std::min(seen->lo, s.range[0]), std::max(seen->hi, s.range[1])};
  }
}

void Engine::pack_dense(const uint8_t* kernel, const uint8_t* bias, size_t in, size_t out, const void* kernel_info,
                        PackedLayer& dst) {
  const KernelInfo& k = kernel_of(kernel_info);
  const size_t nr = k.panel_width;
  dst.panels = round_up(out, nr) / nr;
  // Full panels are nr wide; a partial last one only as wide as its columns (rounded up to the
  // kernel's granule), so the packed model is the file's size plus a few floats per row.
  const size_t tail = out - (dst.panels - 1) * nr;
  dst.tail_stride = tail == nr ? nr : round_up(tail, k.tail_granule);
  dst.weights = AlignedFloats((dst.panels - 1) * in * nr + in * dst.tail_stride);
  dst.bias = AlignedFloats(dst.panels * nr);
  for (size_t p = 0; p < dst.panels; ++p) {
    const size_t first = p * nr, width = std::min(nr, out - first);
    const size_t stride = p + 1 == dst.panels ? dst.tail_stride : nr;
    for (size_t kk = 0; kk < in; ++kk)
      decode_f32(kernel + 4 * (kk * out + first), width, dst.weights.data() + p * in * nr + kk * stride);
  }
  decode_f32(bias, out, dst.bias.data());
}

// A conv kernel (depth x filters, row-major f32 bytes) in panels of `panel` filters, each panel
// depth rows of `panel` floats, zero past the last filter (kernels::ConvArgs).
void Engine::pack_conv(const uint8_t* kernel, const uint8_t* bias, size_t depth, size_t filters, size_t panel,
                       PackedLayer& dst) {
  dst.panels = round_up(filters, panel) / panel;
  dst.tail_stride = panel;
  dst.weights = AlignedFloats(dst.panels * depth * panel);
  dst.bias = AlignedFloats(dst.panels * panel);
  for (size_t p = 0; p < dst.panels; ++p) {
    const size_t first = p * panel, width = std::min(panel, filters - first);
    for (size_t kk = 0; kk < depth; ++kk)
      decode_f32(kernel + 4 * (kk * filters + first), width, dst.weights.data() + (p * depth + kk) * panel);
  }
  decode_f32(bias, filters, dst.bias.data());
}

// Repacks every Winograd conv layer for its kernel's direct convolution; false when there was none.
bool Engine::repack_winograd_as_direct(const ModelFile& file) {
  bool any = false;
  for (size_t l = 0; l < params_.size(); ++l) {
    LayerParams& p = params_[l];
    if (!p.winograd) continue;
    const Geometry& g = p.geometry;
    pack_conv(file.layers[l].kernel, file.layers[l].bias, size_t(g.window_h) * g.window_w * g.in.channels, g.filters,
              kernel_of(p.conv_kernel).conv_panel, p.conv);
    p.winograd = false;
    any = true;
  }
  return any;
}

// A 3 x 3 conv kernel (9 * channels x filters, row-major f32 bytes) transformed for Winograd
// F(2x2, 3x3), U = G g Gt per filter and channel (conv-winograd.h), in panels of `panel` filters:
// weights[((p * 16 + q) * channels + c) * panel + f] (kernels::conv_winograd_fits). The transform
// runs in double and rounds once, so U is the exact transform rounded to float32.
void Engine::pack_conv_winograd(const uint8_t* kernel, const uint8_t* bias, size_t channels, size_t filters,
                                size_t panel, PackedLayer& dst) {
  constexpr size_t kPositions = 16;
  dst.panels = round_up(filters, panel) / panel;
  dst.tail_stride = panel;
  dst.weights = AlignedFloats(dst.panels * kPositions * channels * panel);
  dst.bias = AlignedFloats(dst.panels * panel);
  std::vector<float> w(9 * channels * filters);
  decode_f32(kernel, w.size(), w.data());
  // G's rows applied to three values: the transform along one axis.
  const auto g_rows = [](double a, double b, double c, double out[4]) {
    out[0] = a;
    out[1] = (a + b + c) / 2;
    out[2] = (a - b + c) / 2;
    out[3] = c;
  };
  for (size_t f = 0; f < filters; ++f)
    for (size_t c = 0; c < channels; ++c) {
      const auto at = [&](size_t ky, size_t kx) { return double(w[((ky * 3 + kx) * channels + c) * filters + f]); };
      double columns[3][4];  // G g, column by column: columns[kx][row]
      for (size_t kx = 0; kx < 3; ++kx) g_rows(at(0, kx), at(1, kx), at(2, kx), columns[kx]);
      for (size_t r = 0; r < 4; ++r) {
        double u[4];  // row r of (G g) Gt
        g_rows(columns[0][r], columns[1][r], columns[2][r], u);
        for (size_t s = 0; s < 4; ++s)
          dst.weights.data()[(((f / panel) * kPositions + 4 * r + s) * channels + c) * panel + f % panel] = float(u[s]);
      }
    }
  decode_f32(bias, filters, dst.bias.data());
}

// A conv kernel in int8 per filter or in bf16 (quantize_values, as a dense layer of window rows x
// filters), packed unit by unit in panels of `panel` filters (kernels::QuantConvArgs): a packed
// row per window row, units padded to `unit_align`, or for a tile kernel (unit_align > 1) the
// whole window as one packed row where that takes fewer tile columns. Offsets below are in bytes
// of the input image (1 per value in int8, 2 in bf16).
Engine::QuantLayer Engine::pack_conv_quantized(const FileLayer& src, Precision precision, size_t panel,
                                               size_t unit_align) {
  const Geometry& g = src.geometry;
  const size_t bytes = precision == Precision::Int8 ? 1 : 2;  // per value
  const size_t values = size_t(g.window_w) * g.in.channels, depth = g.window_h * values, F = g.filters;
  const size_t segment = values * bytes, image_row = (size_t(g.in.width) + g.pad_left + g.pad_right) * g.in.channels * bytes;
  const size_t span = (g.window_h - 1) * image_row + segment;  // window origin to its last byte
  const auto units_of = [&](size_t bytes) {
    return round_up((bytes + kernels::kUnitBytes - 1) / kernels::kUnitBytes, unit_align);
  };
  const bool one_row = unit_align > 1 && units_of(span) < g.window_h * units_of(segment);
  FileLayer rows = src;  // the kernel as a dense layer: depth inputs, F outputs
  rows.input_width = static_cast<uint32_t>(depth);
  rows.output_width = static_cast<uint32_t>(F);
  const LayerValues v = quantize_values(rows, precision);
  QuantLayer q{};
  q.panels = round_up(F, panel) / panel;
  q.window_rows = one_row ? 1 : g.window_h;
  q.units = units_of(one_row ? span : segment);
  const size_t width = q.panels * panel, unit_row = panel * kernels::kUnitBytes;
  const size_t packed_row = q.units * kernels::kUnitBytes;  // bytes of the window per packed row
  q.weights = AlignedArray<uint8_t>(q.panels * q.window_rows * q.units * unit_row);  // zero-filled
  for (size_t p = 0; p < q.panels; ++p)
    for (size_t ky = 0; ky < g.window_h; ++ky)
      for (size_t t = 0; t < segment; ++t) {  // byte t of the window row: byte t % bytes of value t / bytes
        const size_t at = one_row ? ky * image_row + t : ky * packed_row + t;  // in the panel's bytes
        for (size_t f = 0; f < panel && p * panel + f < F; ++f) {
          const uint32_t value = static_cast<uint32_t>(v.values[(ky * values + t / bytes) * F + p * panel + f]);
          q.weights.data()[(p * q.window_rows * q.units + at / kernels::kUnitBytes) * unit_row +
                           f * kernels::kUnitBytes + at % kernels::kUnitBytes] =
              static_cast<uint8_t>(value >> (8 * (t % bytes)));  // little-endian bf16; int8's low byte
        }
      }
  q.bias = AlignedFloats(width);
  q.col_scale = AlignedFloats(width);  // int8 only: empty in v for bf16, zero here
  q.col_sum = AlignedArray<int32_t>(width);
  std::copy(v.bias.begin(), v.bias.end(), q.bias.data());
  std::copy(v.col_scale.begin(), v.col_scale.end(), q.col_scale.data());
  std::copy(v.col_sum.begin(), v.col_sum.end(), q.col_sum.data());
  return q;
}

Engine::QuantPlan Engine::plan_quantized(const ModelFile& file, const std::vector<LayerValues>& values,
                                         const void* kernel) {
  const KernelInfo& k = kernel_of(kernel);
  QuantPlan plan{kernel, k.name, {}};
  for (size_t l = 0; l < file.layers.size(); ++l) {
    const FileLayer& src = file.layers[l];
    QuantLayer q = src.op == Op::Dense ? pack_layer(src, values[l], kernel, precision_) : QuantLayer{};
    q.info = {src.input_width, src.output_width, src.activation, src.op};
    q.panels = round_up(src.output_width, k.panel_width) / k.panel_width;
    max_padded_width_ = std::max(max_padded_width_, q.panels * k.panel_width);
    max_units_ = std::max(max_units_, q.units);
    plan.layers.push_back(std::move(q));
  }
  return plan;
}

// Whether the layer after conv layer l can run inside a pooling conv kernel: a 2 x 2 max pool,
// stride 2, no padding (the keras-io convnet's and most MNIST CNNs'), with nothing between: the
// conv's activation is ReLU or none, the pool's none. Its conv map then never exists: the kernel
// keeps the four sums of a pooled pixel and runs the epilogue once, on the largest.
bool Engine::pool_fuses(const ModelFile& file, size_t l) {
  if (l + 1 >= file.layers.size()) return false;
  const FileLayer& conv = file.layers[l];
  const FileLayer& next = file.layers[l + 1];
  const Geometry& g = next.geometry;
  const bool two_by_two = next.op == Op::MaxPool && g.window_h == 2 && g.window_w == 2 && g.stride_h == 2 &&
                          g.stride_w == 2 && !(g.pad_top || g.pad_bottom || g.pad_left || g.pad_right);
  const bool nothing_between = (conv.activation == Activation::Relu || conv.activation == Activation::Linear) &&
                               next.activation == Activation::Linear;
  return two_by_two && nothing_between;
}

// Conv layer l runs the pool after it (its kernel pools, and pool_fuses) or leaves it to its own layer.
void Engine::set_pool_fusion(size_t l, bool fused) {
  params_[l].pool = fused ? 2 : 0;
  if (l + 1 < params_.size()) params_[l + 1].fused = fused;
}

// One name when one kernel runs every conv layer, else each kernel once, in layer order.
std::string Engine::conv_kernel_name() const {
  std::vector<const void*> kernels;
  for (const LayerParams& p : params_) {
    const void* k = p.qconv_kernel ? p.qconv_kernel : p.conv_kernel;
    if (p.op == Op::Conv2d && std::find(kernels.begin(), kernels.end(), k) == kernels.end()) kernels.push_back(k);
  }
  std::string names;
  for (const void* k : kernels) names += (names.empty() ? "" : ", ") + std::string(kernel_of(k).name);
  return names;
}

const std::string& Engine::kernel_for_rows(size_t rows) const {
  return precision_ == Precision::Fp32 ? kernel_name_ : plan_for_rows(rows).name;
}

void Engine::predict(const float* x, size_t rows, float* y, int threads, InputRange* seen) const {
  run(x, rows, y, threads, seen);
}
void Engine::predict(const uint8_t* x, size_t rows, float* y, int threads) const {
  if (!pixel_input_)
    throw std::invalid_argument("expected float32 features: this model takes tabular features (input_kind "
                                "'features'), not uint8 pixels, so there is no scale to give uint8 values");
  if (pixel_values_.empty()) return run(x, rows, y, threads, nullptr);
  // Normalized input: each pixel becomes its channel's value (one table lookup, exact), a block of
  // rows at a time so that a large batch costs a bounded buffer; the float path runs each block.
  const size_t channels = input_mean_.size(), width = input_width_;
  const size_t block = std::max<size_t>(1, std::min<size_t>(rows, (size_t(1) << 22) / width));
  std::vector<float> values(block * width);
  for (size_t first = 0; first < rows; first += block) {
    const size_t n = std::min(block, rows - first);
    const uint8_t* px = x + first * width;
    for (size_t i = 0; i < n * width; ++i) values[i] = pixel_values_[(i % channels) * 256 + px[i]];
    run(values.data(), n, y + first * output_width(), threads, nullptr);
  }
}

std::string Engine::pixel_input_problem() const {
  if (!pixel_input_ || !range_from_floats_ || !input_mean_.empty() || !(input_range_.lo < 0.0f)) return "";
  return "uint8 pixels reach this model as 0.." + format_number(255 * input_scale_) +
         " (x input_scale), but it was checked on " + input_range_source_ +
         ": standardized input, as a DataLoader's Normalize(mean, std) gives, which its file does not state. "
         "Re-export it with input_mean and input_std (--input-mean, --input-std), or pass floats normalized "
         "as in training.";
}

std::string Engine::input_range_problem(InputRange seen) const {
  // A model of features checked on rows the exporter made up knows nothing of its data's range.
  if (!pixel_input_ && !range_stated_) return "";
  const InputRange r = input_range_;
  const double top = std::max(std::fabs(double(r.lo)), std::fabs(double(r.hi)));
  const double span = r.hi > r.lo ? double(r.hi) - r.lo : std::max(top, 1.0);
  const double seen_top = std::max(std::fabs(double(seen.lo)), std::fabs(double(seen.hi)));
  const bool outside = seen.hi > r.hi + 4 * span || seen.lo < r.lo - 4 * span;
  const bool inside = seen_top > 0.0 && seen_top < top / 100;
  if (!outside && !inside) return "";  // every call asks: no text unless it is needed
  const std::string arrived = "float inputs in " + format_number(seen.lo) + ".." + format_number(seen.hi);
  const std::string checked = format_number(r.lo) + ".." + format_number(r.hi) +
                              ", the range this model was checked on (" + input_range_source_ + ")";
  if (outside) {
    std::string fix = "scale them as the model's training data was";
    if (!range_from_floats_ && input_scale_ != 1.0 && seen.lo >= 0.0f && seen.hi <= 255.0f)
      fix = "raw 0..255 pixels? Pass them as uint8 (the engine scales them) or multiply by input_scale " +
            format_number(input_scale_) + " first";
    return arrived + " are far outside " + checked + ": " + fix + ".";
  }
  std::string fix = "scale them as the model's training data was";
  if (!range_from_floats_ && input_scale_ == 1.0 && seen_top <= 1.0)
    fix = "this model takes raw 0..255 values (input_scale 1): pass uint8 pixels, or multiply by 255";
  return arrived + " use under 1% of " + checked + ": " + fix + ".";
}

}  // namespace mnist_engine
