// The weights file, format version 1: parsing and validation. docs/FORMAT.md is the contract;
// every rule there maps to one FormatError rule name here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mnist_engine {

enum class Activation : uint32_t { Linear = 0, Relu = 1, Sigmoid = 2, Tanh = 3, Softmax = 4 };

const char* activation_name(Activation a);

// A broken rule of docs/FORMAT.md: `rule` is its name, `offset` the byte at which it was found.
class FormatError : public std::runtime_error {
 public:
  FormatError(std::string rule, uint64_t offset, const std::string& detail);
  const std::string& rule() const { return rule_; }
  uint64_t offset() const { return offset_; }

 private:
  std::string rule_;
  uint64_t offset_;
};

// The weights stay in the caller's buffer (validated, little-endian f32): the engine packs them
// straight from there, so a load allocates the model once, not twice.
struct DenseLayer {
  uint32_t input_width = 0;
  uint32_t output_width = 0;
  Activation activation = Activation::Linear;
  const uint8_t* kernel = nullptr;  // input_width x output_width, row-major (Keras layout)
  const uint8_t* bias = nullptr;    // output_width
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

struct ModelFile {
  uint32_t version = 0;
  uint32_t input_width = 0;
  double input_scale = 0.0;
  std::vector<DenseLayer> layers;
  std::vector<std::pair<std::string, std::string>> metadata;  // in file order
  ReferenceSet reference;
};

// Validates `size` bytes at `data` against every rule of FORMAT.md (except the verification run,
// which needs an engine) and returns the decoded model, whose layers point into `data`. Throws
// FormatError; never half-returns.
ModelFile parse_model_file(const uint8_t* data, size_t size);

// Format constants shared with the tests through the bindings.
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kMaxLayers = 64;
inline constexpr uint32_t kMaxWidth = 65536;
inline constexpr uint32_t kMaxReferences = 256;
inline constexpr uint32_t kMaxMetadata = 64;

}  // namespace mnist_engine
