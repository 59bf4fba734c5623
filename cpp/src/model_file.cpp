// Loader for format version 1. The checks run in the order of docs/FORMAT.md's table, and the
// rule names below are the ones that table gives; tests/test_format.py breaks each one.
#include "mnist_engine/model_file.h"

#include <cmath>
#include <cstring>
#include <set>
#include <sstream>
#include <tuple>

#include "mnist_engine/crc32c.h"

namespace mnist_engine {

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Linear: return "linear";
    case Activation::Relu: return "relu";
    case Activation::Sigmoid: return "sigmoid";
    case Activation::Tanh: return "tanh";
    case Activation::Softmax: return "softmax";
  }
  return "unknown";
}

namespace {

std::string describe(const std::string& rule, uint64_t offset, const std::string& detail) {
  std::ostringstream s;
  s << rule << " at offset " << offset << ": " << detail;
  return s.str();
}

}  // namespace

void decode_f32(const uint8_t* src, size_t count, float* dst) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  std::memcpy(dst, src, count * 4);  // the file's byte order is the host's
#else
  for (size_t i = 0; i < count; ++i) {
    const uint32_t bits = uint32_t(src[4 * i]) | uint32_t(src[4 * i + 1]) << 8 |
                          uint32_t(src[4 * i + 2]) << 16 | uint32_t(src[4 * i + 3]) << 24;
    std::memcpy(dst + i, &bits, 4);
  }
#endif
}

FormatError::FormatError(std::string rule, uint64_t offset, const std::string& detail)
    : std::runtime_error(describe(rule, offset, detail)), rule_(std::move(rule)), offset_(offset) {}

namespace {

constexpr uint8_t kMagic[8] = {0x89, 'M', 'N', 'W', '\r', '\n', 0x1A, '\n'};
constexpr uint32_t kByteOrderMark = 0x0A0B0C0Du;
constexpr size_t kHeaderSize = 48;
constexpr size_t kLayerEntrySize = 16;
constexpr size_t kChecksumSize = 4;
constexpr uint32_t kDtypeF32 = 1;
constexpr size_t kMaxKeyLength = 64;
constexpr uint32_t kMaxValueLength = 65536;
constexpr float kMaxTolerance = 1e-3f;

template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}

// Little-endian decoding by bytes: the file buffer has no alignment guarantee and the host's byte
// order is not assumed.
uint32_t le_u16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
uint32_t le_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t le_u64(const uint8_t* p) { return uint64_t(le_u32(p)) | uint64_t(le_u32(p + 4)) << 32; }
float le_f32(const uint8_t* p) {
  const uint32_t bits = le_u32(p);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
double le_f64(const uint8_t* p) {
  const uint64_t bits = le_u64(p);
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

// Size arithmetic that cannot wrap: a hostile header must not be able to make a huge product
// look small.
uint64_t checked_mul(uint64_t a, uint64_t b, uint64_t offset) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r))
    throw FormatError("layout-size", offset, cat("expected sizes that fit 64 bits, got ", a, " x ", b));
  return r;
}
uint64_t checked_add(uint64_t a, uint64_t b, uint64_t offset) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r))
    throw FormatError("layout-size", offset, cat("expected sizes that fit 64 bits, got ", a, " + ", b));
  return r;
}

void check_range(const char* rule, uint64_t offset, const char* what, uint64_t value,
                 uint64_t lo, uint64_t hi) {
  if (value < lo || value > hi)
    throw FormatError(rule, offset, cat("expected ", what, " in ", lo, "..", hi, ", got ", value));
}

// Rejects NaN and infinities among `count` f32 values at base + offset. One branch-free pass
// first (an all-ones exponent is NaN or infinity), then a search for the culprit only when there
// is one: a loop that can exit early does not vectorise.
void check_finite_f32(const uint8_t* base, uint64_t offset, uint64_t count, const char* rule,
                      const std::string& what) {
  uint32_t any_special = 0;
  for (uint64_t i = 0; i < count; ++i)
    any_special |= uint32_t((le_u32(base + offset + 4 * i) & 0x7F800000u) == 0x7F800000u);
  if (!any_special) return;
  for (uint64_t i = 0; i < count; ++i) {
    const float v = le_f32(base + offset + 4 * i);
    if (!std::isfinite(v))
      throw FormatError(rule, offset + 4 * i, cat("expected a finite f32 in ", what, " element ", i,
                                                  ", got ", v));
  }
}

void read_finite_f32(const uint8_t* base, uint64_t offset, uint64_t count, const char* rule,
                     const std::string& what, std::vector<float>& out) {
  check_finite_f32(base, offset, count, rule, what);
  out.resize(count);
  decode_f32(base + offset, count, out.data());
}

bool is_valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t extra;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { extra = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { extra = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { extra = 3; cp = c & 0x07; }
    else return false;
    if (i + extra >= n) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    static constexpr uint32_t kMinForLength[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

bool is_key_char(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

struct Header {
  uint64_t file_size;
  uint32_t layer_count, input_width, ref_count, meta_count;
  double input_scale;
};

Header read_header(const uint8_t* d, size_t size) {
  if (size < kHeaderSize + kChecksumSize)
    throw FormatError("too-short", 0, cat("expected at least ", kHeaderSize + kChecksumSize,
                                          " bytes (header and checksum), got ", size));
  if (std::memcmp(d, kMagic, sizeof kMagic) != 0) {
    std::ostringstream got;
    for (size_t i = 0; i < 8; ++i) got << (i ? " " : "") << std::hex << int(d[i]);
    throw FormatError("bad-magic", 0, cat("expected the magic 89 4d 4e 57 0d 0a 1a 0a, got ",
                                          got.str(), " (not an mnist_engine weights file)"));
  }
  if (const uint32_t v = le_u32(d + 8); v != kFormatVersion)
    throw FormatError("unsupported-version", 8,
                      cat("expected format version ", kFormatVersion, ", got version ", v));
  if (const uint32_t bom = le_u32(d + 12); bom != kByteOrderMark)
    throw FormatError("byte-order", 12, cat("expected the little-endian mark 0x0a0b0c0d, got 0x",
                                            std::hex, bom));
  Header h{};
  h.file_size = le_u64(d + 16);
  if (h.file_size != size)
    throw FormatError("file-size", 16,
                      cat("expected ", h.file_size, " bytes as the header declares, got ", size,
                          size < h.file_size ? " (truncated)" : " (trailing bytes)"));
  const uint32_t stored = le_u32(d + size - kChecksumSize);
  if (const uint32_t actual = crc32c(d, size - kChecksumSize); actual != stored)
    throw FormatError("checksum", size - kChecksumSize,
                      cat("expected CRC32C 0x", std::hex, actual, " of the preceding bytes, the file "
                          "stores 0x", stored, " (the file is damaged)"));
  h.layer_count = le_u32(d + 24);
  h.input_width = le_u32(d + 28);
  h.input_scale = le_f64(d + 32);
  h.ref_count = le_u32(d + 40);
  h.meta_count = le_u32(d + 44);
  check_range("layer-count", 24, "layer_count", h.layer_count, 1, kMaxLayers);
  check_range("input-width", 28, "input_width", h.input_width, 1, kMaxWidth);
  if (!std::isfinite(h.input_scale) || !(h.input_scale > 0.0))
    throw FormatError("input-scale", 32,
                      cat("expected a finite input_scale > 0, got ", h.input_scale));
  check_range("ref-count", 40, "ref_count", h.ref_count, 1, kMaxReferences);
  check_range("meta-count", 44, "meta_count", h.meta_count, 0, kMaxMetadata);
  return h;
}

}  // namespace

ModelFile parse_model_file(const uint8_t* d, size_t size) {
  const Header h = read_header(d, size);
  const uint64_t payload_end = size - kChecksumSize;

  // Layer table.
  const uint64_t table_end = kHeaderSize + uint64_t(h.layer_count) * kLayerEntrySize;
  if (table_end > payload_end)
    throw FormatError("layout-size", kHeaderSize,
                      cat("expected ", h.layer_count, " layer descriptors (", table_end - kHeaderSize,
                          " bytes), but only ", payload_end - kHeaderSize, " bytes precede the checksum"));

  ModelFile m;
  m.version = kFormatVersion;
  m.input_width = h.input_width;
  m.input_scale = h.input_scale;
  m.layers.resize(h.layer_count);
  uint32_t previous_width = h.input_width;
  uint64_t weights_bytes = 0;
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    const uint64_t at = kHeaderSize + uint64_t(i) * kLayerEntrySize;
    DenseLayer& layer = m.layers[i];
    layer.input_width = le_u32(d + at);
    layer.output_width = le_u32(d + at + 4);
    const uint32_t activation = le_u32(d + at + 8);
    const uint32_t dtype = le_u32(d + at + 12);
    check_range("layer-width", at, cat("layer ", i, " input_width").c_str(), layer.input_width, 1,
                kMaxWidth);
    check_range("layer-width", at + 4, cat("layer ", i, " output_width").c_str(),
                layer.output_width, 1, kMaxWidth);
    if (activation > uint32_t(Activation::Softmax))
      throw FormatError("activation", at + 8,
                        cat("expected an activation code 0..4 (linear, relu, sigmoid, tanh, "
                            "softmax) for layer ", i, ", got ", activation));
    layer.activation = Activation(activation);
    if (dtype != kDtypeF32)
      throw FormatError("dtype", at + 12, cat("expected dtype code 1 (f32) for layer ", i,
                                              ", got ", dtype));
    if (layer.input_width != previous_width)
      throw FormatError("layer-chain", at,
                        cat("expected layer ", i, " to take ", previous_width, " inputs (",
                            i == 0 ? "the model's input width" : "the previous layer's outputs",
                            "), got ", layer.input_width));
    previous_width = layer.output_width;
    const uint64_t params = checked_add(
        checked_mul(layer.input_width, layer.output_width, at), layer.output_width, at);
    weights_bytes = checked_add(weights_bytes, checked_mul(params, 4, at), at);
  }
  const uint32_t output_width = previous_width;

  // Every remaining size follows from the header and the table; prove the file holds them all
  // before copying (and allocating) anything.
  const uint64_t ref_values = checked_mul(
      h.ref_count, checked_add(h.input_width, output_width, kHeaderSize), kHeaderSize);
  const uint64_t reference_bytes = checked_add(8, checked_mul(ref_values, 4, kHeaderSize), kHeaderSize);
  const uint64_t fixed_end = checked_add(checked_add(table_end, weights_bytes, kHeaderSize),
                                         reference_bytes, kHeaderSize);
  if (fixed_end > payload_end)
    throw FormatError("layout-size", table_end,
                      cat("expected at least ", weights_bytes, " bytes of weights and ",
                          reference_bytes, " bytes of reference data after offset ", table_end,
                          ", but the file has ", payload_end - table_end,
                          " bytes before its checksum"));
  const uint64_t metadata_end = payload_end - reference_bytes;

  // Weights.
  uint64_t at = table_end;
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    DenseLayer& layer = m.layers[i];
    const uint64_t kernel_count = uint64_t(layer.input_width) * layer.output_width;
    check_finite_f32(d, at, kernel_count, "non-finite-weight", cat("layer ", i, " kernel"));
    layer.kernel = d + at;
    at += 4 * kernel_count;
    check_finite_f32(d, at, layer.output_width, "non-finite-weight", cat("layer ", i, " bias"));
    layer.bias = d + at;
    at += 4 * uint64_t(layer.output_width);
  }

  // Metadata: variable length, so every read is bounds-checked against the reference section.
  std::set<std::string> keys;
  for (uint32_t i = 0; i < h.meta_count; ++i) {
    const uint64_t entry = at;
    if (metadata_end - at < 2)
      throw FormatError("metadata-truncated", at, cat("expected the key length of metadata entry ",
                                                      i, ", but the metadata section ends"));
    const uint32_t key_length = le_u16(d + at);
    at += 2;
    if (key_length < 1 || key_length > kMaxKeyLength)
      throw FormatError("metadata-key", entry, cat("expected a key length of 1..", kMaxKeyLength,
                                                   " for metadata entry ", i, ", got ", key_length));
    if (metadata_end - at < key_length + 4u)
      throw FormatError("metadata-truncated", at, cat("expected ", key_length + 4, " more bytes for metadata entry ",
                                                      i, ", the section has ", metadata_end - at, " left"));
    std::string key(reinterpret_cast<const char*>(d + at), key_length);
    for (size_t k = 0; k < key.size(); ++k)
      if (!is_key_char(uint8_t(key[k])))
        throw FormatError("metadata-key", at + k,
                          cat("expected key characters a-z 0-9 _ . in metadata entry ", i,
                              ", got byte ", int(uint8_t(key[k]))));
    at += key_length;
    const uint32_t value_length = le_u32(d + at);
    if (value_length > kMaxValueLength)
      throw FormatError("metadata-value", at, cat("expected a value of at most ", kMaxValueLength,
                                                  " bytes for key '", key, "', got ", value_length));
    at += 4;
    if (metadata_end - at < value_length)
      throw FormatError("metadata-truncated", at, cat("expected ", value_length, " bytes for the value of key '",
                                                      key, "', the section has ", metadata_end - at, " left"));
    if (!is_valid_utf8(d + at, value_length))
      throw FormatError("metadata-value", at, cat("expected UTF-8 for the value of key '", key, "'"));
    if (!keys.insert(key).second)
      throw FormatError("metadata-duplicate", entry, cat("expected unique keys, '", key,
                                                         "' appears twice"));
    m.metadata.emplace_back(std::move(key),
                            std::string(reinterpret_cast<const char*>(d + at), value_length));
    at += value_length;
  }
  for (const char* required : {"producer", "producer_version", "source"})
    if (!keys.count(required))
      throw FormatError("metadata-required", at, cat("expected the metadata key '", required,
                                                     "', it is missing"));
  if (at != metadata_end)
    throw FormatError("trailing-bytes", at, cat("expected the reference section at offset ", at,
                                                ", but ", metadata_end - at,
                                                " bytes that no section describes come first"));

  // Reference.
  ReferenceSet& ref = m.reference;
  ref.count = h.ref_count;
  ref.atol = le_f32(d + at);
  ref.rtol = le_f32(d + at + 4);
  for (const auto& [name, value, offset] :
       {std::tuple<const char*, float, uint64_t>{"atol", ref.atol, at},
        std::tuple<const char*, float, uint64_t>{"rtol", ref.rtol, at + 4}})
    if (!std::isfinite(value) || value < 0.0f || value > kMaxTolerance)
      throw FormatError("tolerance", offset,
                        cat("expected ", name, " in 0..", kMaxTolerance, ", got ", value));
  at += 8;
  const uint64_t input_count = uint64_t(ref.count) * h.input_width;
  read_finite_f32(d, at, input_count, "non-finite-reference", "reference inputs", ref.inputs);
  at += 4 * input_count;
  ref.expected_offset = at;
  read_finite_f32(d, at, uint64_t(ref.count) * output_width, "non-finite-reference",
                  "reference outputs", ref.expected);
  return m;
}

}  // namespace mnist_engine
