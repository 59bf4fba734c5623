// The weights file, format versions 1, 2 and 3: parsing and validation. docs/FORMAT.md is the contract;
// the rule table below is its validation table, in its order, and the loader walks it in that
// order (tests/test_format.py checks the document against this table).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mnist_engine/vocabulary.h"

namespace mnist_engine {

const char* activation_name(Activation a);
const char* op_name(Op op);

// The rules of docs/FORMAT.md's validation table, numbered as there. A file is checked rule by
// rule in this order, each rule over the whole file before the next, so the first error a broken
// file gets is the one the spec predicts.
enum class Rule : uint8_t {
  TooShort = 1, BadMagic, UnsupportedVersion, ByteOrder, FileSize, Checksum,
  LayerCount, InputWidth, InputScale, RefCount, MetaCount,
  LayerWidth, ActivationCode, Dtype, LayerOp, OpWidth, LayerChain, LayerGeometry, LayerOutput, ShapeChain,
  ModelSize, LayoutSize, NonFiniteWeight,
  LayerParameter, MetadataTruncated, MetadataKey, MetadataDuplicate, MetadataValue, MetadataRequired, MetadataClasses,
  MetadataInputRange, MetadataRejectClass, MetadataOutputKind, MetadataInputKind,
  MetadataInputNormalization, TrailingBytes, Tolerance, NonFiniteReference, Verification,
};
struct RuleInfo {
  Rule rule;
  const char* name;
};
inline constexpr RuleInfo kRules[] = {
    {Rule::TooShort, "too-short"},
    {Rule::BadMagic, "bad-magic"},
    {Rule::UnsupportedVersion, "unsupported-version"},
    {Rule::ByteOrder, "byte-order"},
    {Rule::FileSize, "file-size"},
    {Rule::Checksum, "checksum"},
    {Rule::LayerCount, "layer-count"},
    {Rule::InputWidth, "input-width"},
    {Rule::InputScale, "input-scale"},
    {Rule::RefCount, "ref-count"},
    {Rule::MetaCount, "meta-count"},
    {Rule::LayerWidth, "layer-width"},
    {Rule::ActivationCode, "activation"},
    {Rule::Dtype, "dtype"},
    {Rule::LayerOp, "layer-op"},
    {Rule::OpWidth, "op-width"},
    {Rule::LayerChain, "layer-chain"},
    {Rule::LayerGeometry, "layer-geometry"},
    {Rule::LayerOutput, "layer-output"},
    {Rule::ShapeChain, "shape-chain"},
    {Rule::ModelSize, "model-size"},
    {Rule::LayoutSize, "layout-size"},
    {Rule::NonFiniteWeight, "non-finite-weight"},
    {Rule::LayerParameter, "layer-parameter"},
    {Rule::MetadataTruncated, "metadata-truncated"},
    {Rule::MetadataKey, "metadata-key"},
    {Rule::MetadataDuplicate, "metadata-duplicate"},
    {Rule::MetadataValue, "metadata-value"},
    {Rule::MetadataRequired, "metadata-required"},
    {Rule::MetadataClasses, "metadata-classes"},
    {Rule::MetadataInputRange, "metadata-input-range"},
    {Rule::MetadataRejectClass, "metadata-reject-class"},
    {Rule::MetadataOutputKind, "metadata-output-kind"},
    {Rule::MetadataInputKind, "metadata-input-kind"},
    {Rule::MetadataInputNormalization, "metadata-input-normalization"},
    {Rule::TrailingBytes, "trailing-bytes"},
    {Rule::Tolerance, "tolerance"},
    {Rule::NonFiniteReference, "non-finite-reference"},
    {Rule::Verification, "verification"},
};
inline constexpr size_t kRuleCount = sizeof kRules / sizeof kRules[0];
static_assert(size_t(Rule::Verification) == kRuleCount, "the table lists every rule once, in order");

const char* rule_name(Rule r);

// A broken rule of docs/FORMAT.md: `rule` is its name, `offset` the byte at which it was found.
class FormatError : public std::runtime_error {
 public:
  FormatError(Rule rule, uint64_t offset, const std::string& detail);
  const std::string& rule() const { return rule_; }
  uint64_t offset() const { return offset_; }

 private:
  std::string rule_;
  uint64_t offset_;
};

// One layer of the file. Its values stay in the caller's buffer (validated, little-endian f32): the
// engine packs them straight from there, so a load allocates the model once, not twice.
struct FileLayer {
  uint32_t input_width = 0;
  uint32_t output_width = 0;
  Op op = Op::Dense;
  Activation activation = Activation::Linear;
  // Dense: kernel (input_width x output_width, row-major, Keras layout) and bias (output_width).
  // ScaleShift: scale and shift; LayerNorm: gamma and beta (output_width each). Conv2d: kernel
  // (window_h x window_w x in channels x filters, Keras layout) and bias (filters). Pools: none.
  Geometry geometry;  // spatial ops (version 3)
  const uint8_t* kernel = nullptr;
  const uint8_t* bias = nullptr;
  float epsilon = 0.0f;            // LayerNorm
  std::vector<float> parameters;   // the activation's: its scalars, then output_width per-unit values
};

// Decodes `count` little-endian f32 values (no alignment needed) into dst.
void decode_f32(const uint8_t* src, size_t count, float* dst);

struct ReferenceSet {
  float atol = 0.0f;
  float rtol = 0.0f;
  uint32_t count = 0;
  std::vector<float> inputs;    // count x input_width, model input domain
  std::vector<float> expected;  // count x output_width
  uint64_t expected_offset = 0;  // file offset of expected[0], for error messages
};

// The optional `classes` metadata entry, decoded: what classify() returns for each output.
struct ClassLabels {
  enum Kind { None, Int, Str, Float } kind = None;
  std::vector<int64_t> ints;
  std::vector<std::string> strs;
  std::vector<double> floats;
};

// The optional `reference_input_range` entry, decoded: the reference images as the exporter received
// them, raw uint8 pixels (scaled by input_scale into the model's domain) or floats already in it.
struct ReferenceRange {
  bool present = false;
  bool pixels = false;
  double lo = 0.0, hi = 0.0;
};

struct ModelFile {
  uint32_t version = 0;
  uint32_t input_width = 0;
  double input_scale = 0.0;
  std::vector<FileLayer> layers;
  std::vector<std::pair<std::string, std::string>> metadata;  // in file order
  ClassLabels classes;
  ReferenceRange reference_range;
  int64_t reject_class = -1;  // the optional `reject_class` entry: the output meaning "none of these"; -1 if absent
  bool output_kind_stated = false;  // the optional `output_kind` entry, decoded
  OutputKind output_kind = OutputKind::Probabilities;
  bool pixel_input = true;  // the optional `input_kind` entry: false for `features` (no uint8 path)
  // The optional `input_mean` / `input_std` entries (version 4): what a uint8 pixel p of channel c
  // becomes, (p * input_scale - mean[c]) / std[c] in float32 (a DataLoader's Normalize). Empty: none.
  std::vector<float> input_mean, input_std;
  ReferenceSet reference;
};

// Validates `size` bytes at `data` against every rule of FORMAT.md (except the verification run,
// which needs an engine) and returns the decoded model, whose layers point into `data`. Throws
// FormatError; never half-returns.
ModelFile parse_model_file(const uint8_t* data, size_t size);

// Format constants, exported to Python as mnist_engine._core.FORMAT (the writer reads them there).
inline constexpr uint32_t kFormatVersion = 4;  // the newest this loader reads (and 1, 2, 3)
inline constexpr uint32_t kNormalizationVersion = 4;  // input_mean / input_std need it
inline constexpr uint32_t kMaxLayers = 64;
inline constexpr uint32_t kMaxWidth = 65536;
inline constexpr uint32_t kMaxReferences = 256;
inline constexpr uint32_t kMaxMetadata = 64;
inline constexpr uint32_t kMaxKeyLength = 64;
inline constexpr uint32_t kMaxValueLength = 65536;
inline constexpr float kMaxTolerance = 1e-3f;
// At most 2^28 weights and biases (1 GiB of f32) per file: the memory a load may commit, whatever
// the file claims. The engine adds no padding beyond a few vector lanes per weight row.
inline constexpr uint64_t kMaxParameters = uint64_t(1) << 28;
// And at most 2^28 multiply-adds per input row: what the largest dense file asks for. A conv layer
// reuses its kernel at every output pixel, so its values alone do not bound its work.
inline constexpr uint64_t kMaxMultiplyAdds = uint64_t(1) << 28;
inline constexpr const char* kRequiredMetadata[] = {"producer", "producer_version", "source"};

}  // namespace mnist_engine
