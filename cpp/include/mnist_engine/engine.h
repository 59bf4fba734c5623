// The inference engine: an immutable chain of layers (dense, conv2d and pools, element-wise ops),
// packed at load for the kernels that dispatch chose. Nothing here knows about instruction sets.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mnist_engine/model_file.h"

namespace mnist_engine {

// 64-byte aligned storage: one cache line, and the widest vector load.
void* aligned_allocate(size_t bytes);
void aligned_free(void* p);

template <typename T>
class AlignedArray {
 public:
  enum Uninitialized { kUninitialized };
  AlignedArray() = default;
  explicit AlignedArray(size_t n) : AlignedArray(n, kUninitialized) {  // zero-filled
    for (size_t i = 0; i < n; ++i) data_[i] = T();
  }
  AlignedArray(size_t n, Uninitialized) : data_(static_cast<T*>(aligned_allocate(n * sizeof(T)))), size_(n) {}
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(T* p) const { aligned_free(p); }
  };
  std::unique_ptr<T[], Free> data_;
  size_t size_ = 0;
};
using AlignedFloats = AlignedArray<float>;

// The arithmetic a loaded model runs in. fp32 is exact (the file's float32 weights, float32 sums);
// bf16 rounds weights and activations to bfloat16 and sums in float32; int8 quantizes weights per
// output column (symmetric) and activations per row (uint8), sums in int32 and rescales to float.
enum class Precision { Fp32, Bf16, Int8 };
inline constexpr const char* kPrecisionNames[] = {"fp32", "bf16", "int8"};
const char* precision_name(Precision p);
// Throws std::invalid_argument naming the precisions for an unknown name.
Precision parse_precision(const std::string& name);

// A span of input values: what a model was checked on (its reference images, in its input domain),
// or what a batch of float inputs held (0 always included).
struct InputRange {
  float lo = 0.0f, hi = 0.0f;
};

struct LayerInfo {
  uint32_t input_width;
  uint32_t output_width;
  Activation activation;
  Op op = Op::Dense;
};

class Engine {
 public:
  // Parses and validates `data` (docs/FORMAT.md), packs the weights for `kernel` ("" = automatic,
  // see dispatch.h) and, when `verify` is set, checks the file's reference outputs. Throws
  // FormatError for a bad file and std::invalid_argument for a bad kernel name. `skip_zeros`
  // false makes the sparse kernels visit every input, zeros included: slower, and bit-identical
  // (a diagnostic, and the proof in tests/test_kernels.py that skipping changes nothing).
  // `precision`: see Precision. The file is always verified on the exact fp32 path (its reference
  // tolerance is a float32 tolerance); a reduced-precision engine is then built from the same,
  // verified weights. `kernel` must compute `precision`; "" picks the best for it. `threads`: the
  // engine's own default for predict (0: the process default, see default_threads).
  static std::shared_ptr<const Engine> from_bytes(const uint8_t* data, size_t size, bool verify,
                                                  const std::string& kernel, bool skip_zeros = true,
                                                  Precision precision = Precision::Fp32, int threads = 0);

  // y (rows x output_width) = the model applied to x (rows x input_width, row-major).
  // uint8 inputs are raw pixels and get the model's input_scale (a model of features refuses them);
  // float inputs are already scaled.
  // Thread-safe; uses up to `threads` threads (thread_pool.h) when the batch is large enough to pay for them
  // (0: the engine's default, else the process's).
  // `seen`, when given, receives the span of the float inputs (0 included, NaN ignored), measured in
  // a pass the kernels make over the input rows anyway: for input_range_problem.
  void predict(const float* x, size_t rows, float* y, int threads, InputRange* seen = nullptr) const;
  void predict(const uint8_t* x, size_t rows, float* y, int threads) const;

  // The inputs the model was checked on, in its input domain: the file's reference_input_range
  // (uint8 pixels times input_scale, or floats as given), else what uint8 pixels map to.
  InputRange input_range() const { return input_range_; }
  // Empty when `seen` (from predict) fits this model; otherwise one sentence naming the range the
  // model was checked on, what arrived and the likely fix. Far outside: a bound more than 4 spans
  // beyond the checked range (pixels 0..255 sent as floats to a model checked on 0..1). Far
  // inside: nonzero values that reach under 1/100 of the checked range's largest magnitude
  // (0..1 floats sent to a model that takes raw 0..255 values). All-zero input is never a problem,
  // nor any input of a model of features whose file states no range (its data's is unknown).
  std::string input_range_problem(InputRange seen) const;
  // True the first time it is called on this engine: its range warning is given once.
  bool first_range_warning() const { return !range_warned_.exchange(true); }

  uint32_t input_width() const { return input_width_; }
  uint32_t output_width() const { return shape_.back().output_width; }
  double input_scale() const { return input_scale_; }
  const std::string& kernel_name() const { return kernel_name_; }
  // The kernel whose convolution runs the conv layers ("" without any): an fp32 kernel, or in an
  // int8 engine the int8 kernel with an int8 convolution (when this build and CPU have one).
  std::string conv_kernel_name() const;
  // The kernel a tile of `rows` rows runs on (tiles hold up to 64 rows of a batch): kernel_name(),
  // or for fewer rows than an automatically chosen tile kernel (AMX) needs, its small-batch partner.
  const std::string& kernel_for_rows(size_t rows) const;
  Precision precision() const { return precision_; }
  // Reduced precision only: the largest |output - the file's expected output| over its reference
  // rows, i.e. what quantization changed where the file says what the exact answer is (0 for fp32).
  float reference_deviation() const { return reference_deviation_; }
  const std::vector<LayerInfo>& layers() const { return shape_; }
  // Whether layer l runs inside the conv layer before it (a pool fused into an int8 tile kernel).
  bool runs_fused(size_t l) const { return params_[l].fused; }
  // Whether conv layer l runs as Winograd F(2x2, 3x3) (kernels::conv_winograd_fits): in fp32 only;
  // a layer with a conv kernel of the engine's reduced precision runs that, direct.
  bool runs_winograd(size_t l) const { return params_[l].winograd && params_[l].qconv.weights.size() == 0; }
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  // The file's `classes` entry (docs/FORMAT.md), or kind None: what classify() reports per output.
  const ClassLabels& classes() const { return classes_; }
  // The file's `reject_class` entry: the output that means "none of these" (not a digit), or -1.
  int64_t reject_class() const { return reject_class_; }
  Activation output_activation() const { return shape_.back().activation; }
  // What the outputs are: the file's `output_kind` entry, or for a file without one what its last
  // activation makes them (softmax, sigmoid: probabilities; log_softmax: log-probabilities; any
  // other: logits). output_kind_stated() says which.
  OutputKind output_kind() const { return output_kind_; }
  bool output_kind_stated() const { return output_kind_stated_; }
  // False for a model of features (the file's input_kind `features`: tabular data, not images),
  // which takes float input only: predict on uint8 throws std::invalid_argument.
  bool pixel_input() const { return pixel_input_; }
  // The file's input_mean / input_std (version 4), one value or one per channel; empty: none.
  const std::vector<float>& input_mean() const { return input_mean_; }
  const std::vector<float>& input_std() const { return input_std_; }
  // Empty when uint8 pixels suit this model; otherwise one sentence: the model was checked on
  // standardized floats (a negative lower bound) and its file states no input_mean / input_std,
  // so pixels would reach it as 0..255 x input_scale, unlike anything it was trained on.
  std::string pixel_input_problem() const;
  // Rewrites `rows` rows of this model's outputs, in place, as probabilities: exp of
  // log-probabilities, softmax of logits (a sigmoid for one output), probabilities unchanged.
  // Throws std::invalid_argument for a model whose outputs are values, not class scores.
  void to_probabilities(float* y, size_t rows) const;
  // The largest difference |y - expected| - (atol + rtol|expected|) seen when verifying, so
  // callers can report how close to the tolerance the file came (negative = inside it).
  float verification_margin() const { return verification_margin_; }

  // What the engine was built from, so that another process can rebuild it (Python pickling):
  // the file's bytes exactly as parsed, and the arguments of from_bytes as given ("" for an
  // automatic kernel, which the other machine then chooses for itself).
  const std::vector<uint8_t>& file_bytes() const { return file_bytes_; }
  const std::string& kernel_request() const { return kernel_request_; }
  bool verified() const { return verified_; }
  bool skip_zeros() const { return skip_zeros_; }
  int threads() const { return threads_; }

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

 private:
  struct PackedLayer {
    LayerInfo info;
    size_t panels;
    size_t tail_stride;     // floats per weight row of the last panel (panel_width when it is full)
    AlignedFloats weights;  // full panels: input_width x panel_width each; the last: input_width x tail_stride
    AlignedFloats bias;     // panels x panel_width
  };
  // A layer in bf16 or int8 (kernels.h, QuantDenseArgs): `units` 4-byte input units per row.
  struct QuantLayer {
    LayerInfo info;
    size_t panels;
    size_t tail_stride;  // columns of the last panel
    size_t units;
    size_t window_rows = 0;  // conv: rows of the window in the packing (kernels::QuantConvArgs::window_h)
    AlignedArray<uint8_t> weights;
    AlignedFloats bias, col_scale;  // panels x panel_width (col_scale: int8 only)
    AlignedArray<int32_t> col_sum;  // int8 only
  };
  // One kernel's packing of every layer (element-wise layers hold only their info).
  struct QuantPlan {
    const void* kernel = nullptr;  // KernelInfo*
    std::string name;
    std::vector<QuantLayer> layers;
  };
  // What a layer needs besides a dense kernel's packed weights, for every precision: an element-wise
  // operation's vectors (scale_shift: scale and shift; layer_norm: gamma and beta, and epsilon),
  // a spatial layer's geometry and packed conv kernels, and the activation's parameters.
  struct LayerParams {
    Op op = Op::Dense;
    Geometry geometry;  // spatial ops
    AlignedFloats first, second;  // scale_shift: scale and shift; layer_norm: gamma and beta
    // conv2d: the kernel packed in panels of filters for spatial_kernel_'s conv (Engine::pack_conv),
    // and in int8 or bf16 for qconv_kernel's (a reduced-precision engine with one:
    // Engine::pack_conv_quantized).
    PackedLayer conv;
    QuantLayer qconv;
    const void* conv_kernel = nullptr;   // KernelInfo*: the fp32 conv that runs it (spatial_kernel_, or
                                         // the scalar reference for a layer of few filters: conv_padding_pays)
    const void* qconv_kernel = nullptr;  // KernelInfo*
    // A conv whose kernel pools: 2 when the next layer, a 2 x 2 max pool, runs inside it
    // (kernels::ConvArgs::pool, QuantConvArgs::pool); that layer is then `fused`, skipped by the
    // layer loops.
    uint32_t pool = 0;
    bool fused = false;
    // conv2d: `conv` holds the filters transformed for conv_kernel's Winograd F(2x2, 3x3)
    // convolution (Engine::pack_conv_winograd) rather than as they are.
    bool winograd = false;
    float epsilon = 0.0f;
    std::vector<float> activation;
  };
  struct Scratch;

  void run_elementwise(size_t l, const float* x, size_t x_stride, size_t rows, float* y, size_t y_stride,
                       Scratch& s) const;
  void run_conv(size_t l, const float* x, float* y, Scratch& s) const;
  void run_conv_quantized(size_t l, const float* x, float* y, Scratch& s) const;
  bool repack_winograd_as_direct(const ModelFile& file);
  static void pack_conv_winograd(const uint8_t* kernel, const uint8_t* bias, size_t channels, size_t filters,
                                 size_t panel, PackedLayer& dst);
  static QuantLayer pack_conv_quantized(const FileLayer& src, Precision precision, size_t panel,
                                        size_t unit_align);
  static bool pool_fuses(const ModelFile& file, size_t l);
  void set_pool_fusion(size_t l, bool fused);
  // Weights (in x out, row-major f32 bytes) packed into column panels for kernel k.
  static void pack_dense(const uint8_t* kernel, const uint8_t* bias, size_t in, size_t out, const void* k,
                         PackedLayer& dst);
  static void pack_conv(const uint8_t* kernel, const uint8_t* bias, size_t depth, size_t filters, size_t panel,
                        PackedLayer& dst);
  void activate(size_t l, float* y, size_t rows, size_t stride) const;

  // A dense layer's weights as the integers the kernels store (int8 values, or bf16 bits) and its
  // per-column numbers: computed once per layer, then packed once per kernel (an AMX engine packs
  // for its small-batch partner too).
  struct LayerValues {
    std::vector<int32_t> values;  // in x out, row-major
    std::vector<float> bias, col_scale;
    std::vector<int32_t> col_sum;
  };
  static LayerValues quantize_values(const FileLayer& src, Precision precision);
  static QuantLayer pack_layer(const FileLayer& src, const LayerValues& values, const void* kernel,
                               Precision precision);
  QuantPlan plan_quantized(const ModelFile& file, const std::vector<LayerValues>& values, const void* kernel);
  const QuantPlan& plan_for_rows(size_t rows) const { return rows < min_rows_ ? small_plan_ : plan_; }
  template <typename T>
  void run_tile_quantized(const T* x, size_t rows, float* y, Scratch& s) const;

  Engine() = default;
  template <typename T>
  void run(const T* x, size_t rows, float* y, int threads, InputRange* seen) const;
  template <typename T>
  void run_tile(const T* x, size_t rows, float* y, Scratch& s) const;
  // The tile's input rows still to be measured for the range check, outside a kernel's pass: every
  // row when the first layer's pass does not measure (`measured_by_kernel` false).
  template <typename T>
  float* range_to_measure(const T* x, size_t rows, Scratch& s, bool measured_by_kernel) const;
  void verify(const ReferenceSet& ref);
  void measure_reference_deviation(const ReferenceSet& ref);

  uint32_t input_width_ = 0;
  double input_scale_ = 1.0;
  InputRange input_range_;
  std::string input_range_source_;  // how the file states it, for messages
  bool range_from_floats_ = false;  // the file's references were floats, not pixels
  mutable std::atomic<bool> range_warned_{false};
  std::vector<LayerInfo> shape_;
  std::vector<PackedLayer> layers_;   // fp32
  QuantPlan plan_;                    // bf16, int8: the chosen kernel's
  QuantPlan small_plan_;              // tiles of fewer than min_rows_ rows (its small-batch partner's)
  size_t min_rows_ = 0;
  std::vector<LayerParams> params_;   // every precision; one per layer
  Precision precision_ = Precision::Fp32;
  uint16_t pixel_bf16_[256] = {};     // bf16: a pixel's scaled value, rounded once
  size_t max_act_bytes_ = 0;          // bf16/int8: the widest layer's activation row, padded
  size_t max_units_ = 0;
  float reference_deviation_ = 0.0f;
  size_t max_padded_width_ = 0;
  size_t max_input_width_ = 0;
  std::string kernel_name_;
  bool skip_zeros_ = true;
  bool verified_ = false;
  int threads_ = 0;
  std::string kernel_request_;
  std::vector<uint8_t> file_bytes_;
  const void* kernel_ = nullptr;  // KernelInfo*; opaque here so this header stays ISA-free
  const void* spatial_kernel_ = nullptr;  // the fp32 KernelInfo* spatial layers run on (every precision)
  size_t max_conv_padded_ = 0, max_conv_out_ = 0;  // per image, floats: a padded input, panel-wide outputs
  size_t max_conv_frame_ = 0;  // int8 conv, bytes: a padded input, its slack (quant_conv_slack), the unpadded one
  bool first_layer_elementwise_ = false;  // uint8 input then needs converting to float first
  std::vector<std::pair<std::string, std::string>> metadata_;
  ClassLabels classes_;
  int64_t reject_class_ = -1;
  OutputKind output_kind_ = OutputKind::Probabilities;
  bool output_kind_stated_ = false;
  bool pixel_input_ = true;
  bool range_stated_ = false;  // the file has a reference_input_range entry
  std::vector<float> input_mean_, input_std_;
  // With input_mean / input_std: each uint8 value of each channel as the model takes it, 256 per
  // channel, computed once as a Normalize transform computes it (float32, in its order).
  std::vector<float> pixel_values_;
  float verification_margin_ = 0.0f;
};

// Thread counts. A call may ask for 1..max_threads() (4x the CPUs: more only adds start-up cost and
// memory); check_threads throws std::invalid_argument naming `what` otherwise. effective_threads is
// the one place that decides how many a call gets: `requested` if positive, else the process
// default (set_default_threads, else OMP_NUM_THREADS, else the CPUs this process may use); always 1
// in a child forked after a team ran (the thread pool's workers do not survive fork).
int max_threads();
int check_threads(long long requested, const char* what);
int effective_threads(int requested);
// Every team start goes through here, so the fork guard knows the pool's workers exist.
void note_team_started();
// The process-wide default thread count for predict: 0 restores the default; otherwise
// checked by check_threads (a long long, so a huge Python int cannot wrap before the check).
int default_threads();
void set_default_threads(long long threads);

}  // namespace mnist_engine
