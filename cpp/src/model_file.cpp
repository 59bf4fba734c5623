// Loader for format versions 1 to 4. The checks run in the order of docs/FORMAT.md's table, and the
// rule names below are the ones that table gives; tests/test_format.py breaks each one.
#include "mnist_engine/model_file.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <set>
#include <sstream>
#include <tuple>

#include "mnist_engine/crc32c.h"

namespace mnist_engine {

const char* activation_name(Activation a) {
  const auto code = uint32_t(a);
  return code < kActivationCount ? kActivations[code].name : "unknown";
}

const char* op_name(Op op) {
  const auto code = uint32_t(op);
  return code < kOpCount ? kOpNames[code] : "unknown";
}

const char* rule_name(Rule r) { return kRules[size_t(r) - 1].name; }

namespace {

std::string describe(Rule rule, uint64_t offset, const std::string& detail) {
  std::ostringstream s;
  s << rule_name(rule) << " at offset " << offset << ": " << detail;
  return s.str();
}

}  // namespace

void decode_f32(const uint8_t* src, size_t count, float* dst) {
  if (count == 0) return;  // dst may be an empty vector's null data(), which memcpy must not get
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

FormatError::FormatError(Rule rule, uint64_t offset, const std::string& detail)
    : std::runtime_error(describe(rule, offset, detail)), rule_(rule_name(rule)), offset_(offset) {}

namespace {

constexpr uint8_t kMagic[8] = {0x89, 'M', 'N', 'W', '\r', '\n', 0x1A, '\n'};
constexpr uint32_t kByteOrderMark = 0x0A0B0C0Du;
constexpr size_t kHeaderSize = 48;
constexpr size_t layer_entry_size(uint32_t version) { return version == 1 ? 16 : version == 2 ? 20 : 72; }
constexpr uint32_t kMaxWindow = 64;  // window and stride sides (the CNNs people train use 1..7)
constexpr size_t kChecksumSize = 4;
constexpr uint32_t kDtypeF32 = 1;

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
    throw FormatError(Rule::LayoutSize, offset, cat("expected sizes that fit 64 bits, got ", a, " x ", b));
  return r;
}
uint64_t checked_add(uint64_t a, uint64_t b, uint64_t offset) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r))
    throw FormatError(Rule::LayoutSize, offset, cat("expected sizes that fit 64 bits, got ", a, " + ", b));
  return r;
}

void check_range(Rule rule, uint64_t offset, const char* what, uint64_t value,
                 uint64_t lo, uint64_t hi) {
  if (value < lo || value > hi)
    throw FormatError(rule, offset, cat("expected ", what, " in ", lo, "..", hi, ", got ", value));
}

// Rejects NaN and infinities among `count` f32 values at base + offset. One branch-free pass
// first (an all-ones exponent is NaN or infinity), then a search for the culprit only when there
// is one: a loop that can exit early does not vectorise.
void check_finite_f32(const uint8_t* base, uint64_t offset, uint64_t count, Rule rule,
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

void read_finite_f32(const uint8_t* base, uint64_t offset, uint64_t count, Rule rule,
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
  uint32_t version;
  uint64_t file_size;
  uint32_t layer_count, input_width, ref_count, meta_count;
  double input_scale;
};

// What a file that is not ours probably is, for the bad-magic message: the model files people
// hand to `load` by mistake are the framework files the exporters read.
std::string foreign_file_hint(const uint8_t* d, size_t size) {
  const auto starts = [&](const char* magic, size_t n) { return size >= n && std::memcmp(d, magic, n) == 0; };
  const char* export_it = "; export it first: mnist-engine export MODEL OUT.mnw";
  if (starts("PK\x03\x04", 4))
    return cat("a zip archive: a Keras .keras model? (not an mnist_engine weights file", export_it, ")");
  if (starts("\x89HDF\r\n\x1a\n", 8))
    return cat("an HDF5 file: a Keras .h5 model? (not an mnist_engine weights file", export_it, ")");
  return "(not an mnist_engine weights file)";
}

Header read_header(const uint8_t* d, size_t size) {
  if (size < kHeaderSize + kChecksumSize)
    throw FormatError(Rule::TooShort, 0, cat("expected at least ", kHeaderSize + kChecksumSize,
                                          " bytes (header and checksum), got ", size));
  if (std::memcmp(d, kMagic, sizeof kMagic) != 0) {
    std::ostringstream got;
    for (size_t i = 0; i < 8; ++i) got << (i ? " " : "") << std::hex << std::setw(2) << std::setfill('0') << int(d[i]);
    throw FormatError(Rule::BadMagic, 0, cat("expected the magic 89 4d 4e 57 0d 0a 1a 0a, got ", got.str(), " ",
                                          foreign_file_hint(d, size)));
  }
  const uint32_t version = le_u32(d + 8);
  if (version < 1 || version > kFormatVersion)
    throw FormatError(Rule::UnsupportedVersion, 8,
                      cat("expected format version 1..", kFormatVersion, ", got version ", version,
                          version > kFormatVersion ? " (written by a newer mnist_engine: upgrade to read it)" : ""));
  if (const uint32_t bom = le_u32(d + 12); bom != kByteOrderMark)
    throw FormatError(Rule::ByteOrder, 12, cat("expected the little-endian mark 0x0a0b0c0d, got 0x",
                                            std::hex, bom));
  Header h{};
  h.version = version;
  h.file_size = le_u64(d + 16);
  if (h.file_size != size)
    throw FormatError(Rule::FileSize, 16,
                      cat("expected ", h.file_size, " bytes as the header declares, got ", size,
                          size < h.file_size ? " (truncated)" : " (trailing bytes)"));
  const uint32_t stored = le_u32(d + size - kChecksumSize);
  if (const uint32_t actual = crc32c(d, size - kChecksumSize); actual != stored)
    throw FormatError(Rule::Checksum, size - kChecksumSize,
                      cat("expected CRC32C 0x", std::hex, actual, " of the preceding bytes, the file "
                          "stores 0x", stored, " (the file is damaged)"));
  h.layer_count = le_u32(d + 24);
  h.input_width = le_u32(d + 28);
  h.input_scale = le_f64(d + 32);
  h.ref_count = le_u32(d + 40);
  h.meta_count = le_u32(d + 44);
  check_range(Rule::LayerCount, 24, "layer_count", h.layer_count, 1, kMaxLayers);
  check_range(Rule::InputWidth, 28, "input_width", h.input_width, 1, kMaxWidth);
  if (!std::isfinite(h.input_scale) || !(h.input_scale > 0.0))
    throw FormatError(Rule::InputScale, 32,
                      cat("expected a finite input_scale > 0, got ", h.input_scale));
  check_range(Rule::RefCount, 40, "ref_count", h.ref_count, 1, kMaxReferences);
  check_range(Rule::MetaCount, 44, "meta_count", h.meta_count, 0, kMaxMetadata);
  return h;
}

}  // namespace

// Everything below the header, rule by rule in the order of docs/FORMAT.md. Each rule is checked
// over the whole file before the next one starts (all layers for rule 12, then all for rule 13,
// ...), so which error a file with several faults gets does not depend on where they sit.
namespace {

struct TableEntry {
  uint64_t at;
  uint32_t input_width, output_width, activation, dtype, op;
  Geometry geometry;  // version 3
};

// How many f32 values a layer stores: its operation's tensors, then its activation's parameters.
uint64_t op_values(const TableEntry& e) {
  const uint64_t in = e.input_width, out = e.output_width;
  const Geometry& g = e.geometry;
  switch (Op(e.op)) {
    case Op::Dense: return in * out + out;
    case Op::ScaleShift: return 2 * out;
    case Op::LayerNorm: return 2 * out + 1;
    case Op::Conv2d: return uint64_t(g.window_h) * g.window_w * g.in.channels * g.filters + g.filters;
    case Op::MaxPool:
    case Op::AvgPool:
    case Op::GlobalAvgPool:
    case Op::GlobalMaxPool: return 0;
  }
  return 0;
}

// A layer's multiply-adds per input row: a dense layer's weights, a conv's once per output pixel
// (the other ops are a few operations per value). Called after the value cap, so a conv's kernel
// is under 2^28 values and the product under 2^44.
// Rule 21's work of one layer per input row: its multiply-adds (dense, conv), or the values its
// windows read (a pool: each output reads its whole window; a global pool reads the image once).
// A pool has no weights, so without this a half-megabyte file of 64 pools of 64 x 64 windows over a
// 256 x 256 image passed every rule and took minutes to verify. Element-wise ops read each value
// once: at most 64 layers of 2^16, never near the cap.
uint64_t row_work(const TableEntry& e) {
  const Op op = Op(e.op);
  const Geometry& g = e.geometry;
  if (op == Op::Dense) return uint64_t(e.input_width) * e.output_width;
  if (op == Op::GlobalAvgPool || op == Op::GlobalMaxPool) return uint64_t(g.in.height) * g.in.width * g.in.channels;
  if (!is_windowed(op)) return 0;
  const ImageShape out = output_shape(op, g);
  const uint64_t per_output = uint64_t(g.window_h) * g.window_w * (op == Op::Conv2d ? g.in.channels : 1);
  return uint64_t(out.height) * out.width * out.channels * per_output;
}

// Rule 18 for one layer: "" when its geometry fields are consistent with its op, else what is wrong.
std::string geometry_problem(const TableEntry& e) {
  const Geometry& g = e.geometry;
  const Op op = Op(e.op);
  const uint32_t fields[] = {g.in.height, g.in.width, g.in.channels, g.window_h, g.window_w, g.stride_h,
                             g.stride_w, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right, g.filters, g.flags};
  if (!is_spatial(op)) {
    for (uint32_t f : fields)
      if (f != 0) return cat("a ", kOpNames[e.op], " layer has no geometry: every geometry field must be 0");
    return "";
  }
  if (g.in.height == 0 || g.in.width == 0 || g.in.channels == 0 ||
      uint64_t(g.in.height) * g.in.width * g.in.channels != e.input_width)
    return cat("an input image of height x width x channels = input_width ", e.input_width, ", got ", g.in.height,
               " x ", g.in.width, " x ", g.in.channels);
  if (!is_windowed(op)) {
    for (size_t k = 3; k < sizeof fields / sizeof fields[0]; ++k)
      if (fields[k] != 0) return cat("a ", kOpNames[e.op], " layer pools the whole image: its window, strides, "
                                     "pads, filters and flags must be 0");
    return "";
  }
  if (g.window_h < 1 || g.window_h > kMaxWindow || g.window_w < 1 || g.window_w > kMaxWindow)
    return cat("a window of 1..", kMaxWindow, " on each side, got ", g.window_h, " x ", g.window_w);
  if (g.stride_h < 1 || g.stride_h > kMaxWindow || g.stride_w < 1 || g.stride_w > kMaxWindow)
    return cat("strides of 1..", kMaxWindow, ", got ", g.stride_h, " x ", g.stride_w);
  if (g.pad_top >= g.window_h || g.pad_bottom >= g.window_h || g.pad_left >= g.window_w ||
      g.pad_right >= g.window_w)
    return cat("each pad smaller than the window (a window of padding alone has nothing to see), got pads ",
               g.pad_top, ", ", g.pad_bottom, ", ", g.pad_left, ", ", g.pad_right, " for a ", g.window_h, " x ",
               g.window_w, " window");
  if (output_shape(op, g).height == 0 || output_shape(op, g).width == 0)
    return cat("a ", g.window_h, " x ", g.window_w, " window that fits the padded ", g.in.height, " x ",
               g.in.width, " input");
  if (op == Op::Conv2d && (g.filters < 1 || g.filters > kMaxWidth))
    return cat("1..", kMaxWidth, " filters, got ", g.filters);
  if (op != Op::Conv2d && g.filters != 0) return cat("filters 0 for a pool (it keeps the channels), got ", g.filters);
  const uint32_t allowed = op == Op::AvgPool ? Geometry::kCountPadding : 0;
  if (g.flags & ~allowed) return cat("flags ", allowed ? "0 or 1 (count the padding)" : "0", ", got ", g.flags);
  return "";
}
uint64_t activation_values(const TableEntry& e) {
  const ActivationInfo& a = kActivations[e.activation];
  return a.scalar_count + (a.per_unit ? e.output_width : 0);
}

struct MetaEntry {
  uint64_t at;            // the entry's first byte (its key length)
  uint32_t key_length;
  uint64_t value_length_at;
  uint32_t value_length;
  uint64_t value_at;
};

std::vector<TableEntry> read_layer_table(const uint8_t* d, const Header& h, uint64_t payload_end) {
  // The table itself must fit before rules 12-21 read it (the first part of rule 22).
  const uint64_t table_end = kHeaderSize + uint64_t(h.layer_count) * layer_entry_size(h.version);
  if (table_end > payload_end)
    throw FormatError(Rule::LayoutSize, kHeaderSize,
                      cat("expected ", h.layer_count, " layer descriptors (", table_end - kHeaderSize,
                          " bytes), but only ", payload_end - kHeaderSize, " bytes precede the checksum"));
  std::vector<TableEntry> table(h.layer_count);
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    const uint64_t at = kHeaderSize + uint64_t(i) * layer_entry_size(h.version);
    table[i] = {at, le_u32(d + at), le_u32(d + at + 4), le_u32(d + at + 8), le_u32(d + at + 12),
                h.version == 1 ? uint32_t(Op::Dense) : le_u32(d + at + 16), {}};
    if (h.version >= 3) {
      Geometry& g = table[i].geometry;
      uint32_t* fields[] = {&g.in.height, &g.in.width, &g.in.channels, &g.window_h, &g.window_w, &g.stride_h,
                            &g.stride_w, &g.pad_top, &g.pad_bottom, &g.pad_left, &g.pad_right, &g.filters, &g.flags};
      for (size_t k = 0; k < sizeof fields / sizeof fields[0]; ++k) *fields[k] = le_u32(d + at + 20 + 4 * k);
    }
  }
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    const TableEntry& e = table[i];
    check_range(Rule::LayerWidth, e.at, cat("layer ", i, " input_width").c_str(), e.input_width, 1, kMaxWidth);
    check_range(Rule::LayerWidth, e.at + 4, cat("layer ", i, " output_width").c_str(), e.output_width, 1,
                kMaxWidth);
  }
  const uint32_t codes = h.version == 1 ? kVersion1Activations : kActivationCount;
  for (uint32_t i = 0; i < h.layer_count; ++i)
    if (table[i].activation >= codes) {
      std::string names;
      for (uint32_t c = 0; c < codes; ++c) names += cat(c ? ", " : "", kActivations[c].name);
      throw FormatError(Rule::ActivationCode, table[i].at + 8,
                        cat("expected an activation code 0..", codes - 1, " (", names, ") for layer ", i,
                            " of a version-", h.version, " file, got ", table[i].activation));
    }
  for (uint32_t i = 0; i < h.layer_count; ++i)
    if (table[i].dtype != kDtypeF32)
      throw FormatError(Rule::Dtype, table[i].at + 12,
                        cat("expected dtype code 1 (f32) for layer ", i, ", got ", table[i].dtype));
  const uint32_t ops = h.version >= 3 ? kOpCount : kVersion2Ops;
  for (uint32_t i = 0; i < h.layer_count; ++i)
    if (table[i].op >= ops) {
      std::string names;
      for (uint32_t c = 0; c < ops; ++c) names += cat(c ? ", " : "", kOpNames[c]);
      throw FormatError(Rule::LayerOp, table[i].at + 16,
                        cat("expected an op code 0..", ops - 1, " (", names, ") for layer ", i, " of a version-",
                            h.version, " file, got ", table[i].op));
    }
  for (uint32_t i = 0; i < h.layer_count; ++i)
    if ((table[i].op == uint32_t(Op::ScaleShift) || table[i].op == uint32_t(Op::LayerNorm)) &&
        table[i].output_width != table[i].input_width)
      throw FormatError(Rule::OpWidth, table[i].at + 4,
                        cat("expected layer ", i, " (", kOpNames[table[i].op], ", element-wise) to give as many "
                            "outputs as it takes inputs, ", table[i].input_width, ", got ", table[i].output_width));
  uint32_t previous_width = h.input_width;
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    if (table[i].input_width != previous_width)
      throw FormatError(Rule::LayerChain, table[i].at,
                        cat("expected layer ", i, " to take ", previous_width, " inputs (",
                            i == 0 ? "the model's input width" : "the previous layer's outputs", "), got ",
                            table[i].input_width));
    previous_width = table[i].output_width;
  }
  for (uint32_t i = 0; i < h.layer_count; ++i)
    if (const std::string problem = geometry_problem(table[i]); !problem.empty())
      throw FormatError(Rule::LayerGeometry, table[i].at + 20, cat("expected for layer ", i, " ", problem));
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    const Op op = Op(table[i].op);
    if (!is_spatial(op)) continue;
    const ImageShape out = output_shape(op, table[i].geometry);
    const uint64_t size = uint64_t(out.height) * out.width * out.channels;
    if (size != table[i].output_width)
      throw FormatError(Rule::LayerOutput, table[i].at + 4,
                        cat("expected layer ", i, " (", kOpNames[table[i].op], ") to give its ", out.height, " x ",
                            out.width, " x ", out.channels, " = ", size, " outputs as output_width, got ",
                            table[i].output_width));
  }
  for (uint32_t i = 1; i < h.layer_count; ++i) {
    const Op op = Op(table[i].op), before = Op(table[i - 1].op);
    if (!is_spatial(op) || !is_spatial(before)) continue;
    const ImageShape want = output_shape(before, table[i - 1].geometry), got = table[i].geometry.in;
    if (got.height != want.height || got.width != want.width || got.channels != want.channels)
      throw FormatError(Rule::ShapeChain, table[i].at + 20,
                        cat("expected layer ", i, " to take the previous layer's ", want.height, " x ", want.width,
                            " x ", want.channels, " image, got ", got.height, " x ", got.width, " x ", got.channels));
  }
  // With widths <= 2^16 and at most 64 layers the sum stays below 2^39: no overflow possible.
  uint64_t parameters = 0;
  for (const TableEntry& e : table) parameters += op_values(e) + activation_values(e);
  if (parameters > kMaxParameters)
    throw FormatError(Rule::ModelSize, kHeaderSize,
                      cat("expected at most ", kMaxParameters, " weights, biases and parameters (1 GiB of f32), "
                          "the layer table declares ", parameters));
  // The compute a row may cost, capped as the memory is: a conv layer reuses its kernel at every
  // output pixel and a pool its window, so a small file could otherwise ask for 2^44 operations per
  // image, and its verification alone would hang the loader.
  uint64_t work = 0;
  for (const TableEntry& e : table) work += row_work(e);
  if (work > kMaxMultiplyAdds)
    throw FormatError(Rule::ModelSize, kHeaderSize,
                      cat("expected at most ", kMaxMultiplyAdds, " multiply-adds per input row (the most a file of ",
                          kMaxParameters, " dense weights can ask for; a pool counts each value its windows "
                          "read), the layer table declares ", work));
  return table;
}

std::vector<MetaEntry> walk_metadata(const uint8_t* d, uint32_t count, uint64_t at, uint64_t end) {
  std::vector<MetaEntry> entries;
  for (uint32_t i = 0; i < count; ++i) {
    MetaEntry e{};
    e.at = at;
    if (end - at < 2)
      throw FormatError(Rule::MetadataTruncated, at,
                        cat("expected the key length of metadata entry ", i, ", but the metadata section ends"));
    e.key_length = le_u16(d + at);
    if (end - at - 2 < uint64_t(e.key_length) + 4)
      throw FormatError(Rule::MetadataTruncated, at + 2,
                        cat("expected ", e.key_length + 4, " more bytes for metadata entry ", i,
                            ", the section has ", end - at - 2, " left"));
    e.value_length_at = at + 2 + e.key_length;
    e.value_length = le_u32(d + e.value_length_at);
    e.value_at = e.value_length_at + 4;
    if (end - e.value_at < e.value_length)
      throw FormatError(Rule::MetadataTruncated, e.value_length_at,
                        cat("expected ", e.value_length, " bytes for the value of metadata entry ", i,
                            ", the section has ", end - e.value_at, " left"));
    entries.push_back(e);
    at = e.value_at + e.value_length;
  }
  return entries;
}

std::string key_of(const uint8_t* d, const MetaEntry& e) {
  return std::string(reinterpret_cast<const char*>(d + e.at + 2), e.key_length);
}

// `end`: where the last entry ends, the offset a missing required key is reported at.
void check_metadata(const uint8_t* d, const std::vector<MetaEntry>& entries, uint64_t end) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const MetaEntry& e = entries[i];
    if (e.key_length < 1 || e.key_length > kMaxKeyLength)
      throw FormatError(Rule::MetadataKey, e.at, cat("expected a key length of 1..", kMaxKeyLength,
                                                     " for metadata entry ", i, ", got ", e.key_length));
    for (uint32_t k = 0; k < e.key_length; ++k)
      if (!is_key_char(d[e.at + 2 + k]))
        throw FormatError(Rule::MetadataKey, e.at + 2 + k,
                          cat("expected key characters a-z 0-9 _ . in metadata entry ", i, ", got byte ",
                              int(d[e.at + 2 + k])));
  }
  std::set<std::string> keys;
  for (const MetaEntry& e : entries)
    if (!keys.insert(key_of(d, e)).second)
      throw FormatError(Rule::MetadataDuplicate, e.at,
                        cat("expected unique keys, '", key_of(d, e), "' appears twice"));
  for (const MetaEntry& e : entries) {
    if (e.value_length > kMaxValueLength)
      throw FormatError(Rule::MetadataValue, e.value_length_at,
                        cat("expected a value of at most ", kMaxValueLength, " bytes for key '", key_of(d, e),
                            "', got ", e.value_length));
    if (!is_valid_utf8(d + e.value_at, e.value_length))
      throw FormatError(Rule::MetadataValue, e.value_at, cat("expected UTF-8 for the value of key '", key_of(d, e), "'"));
  }
  for (const char* required : kRequiredMetadata)
    if (!keys.count(required))
      throw FormatError(Rule::MetadataRequired, end,
                        cat("expected the metadata key '", required, "', it is missing"));
}

// `classes`: "int" or "str", then one label per line, one per output (two for a one-output model:
// the labels below and above its threshold).
ClassLabels parse_classes(const std::string& value, uint64_t at, uint32_t output_width) {
  const auto fail = [&](const std::string& what) {
    throw FormatError(Rule::MetadataClasses, at, what);
  };
  std::vector<std::string> lines;
  size_t start = 0;
  for (;;) {
    const size_t nl = value.find('\n', start);
    lines.push_back(value.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  ClassLabels c;
  if (lines[0] == "int") c.kind = ClassLabels::Int;
  else if (lines[0] == "str") c.kind = ClassLabels::Str;
  else if (lines[0] == "float") c.kind = ClassLabels::Float;
  else fail(cat("expected the classes value to start with the line 'int', 'str' or 'float', got '", lines[0], "'"));
  const size_t want = output_width == 1 ? 2 : output_width;
  if (lines.size() - 1 != want)
    fail(cat("expected ", want, " class labels (", output_width == 1 ? "two for a one-output model" :
             "one per output", "), got ", lines.size() - 1));
  std::set<std::string> seen;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& label = lines[i];
    if (label.empty()) fail(cat("expected non-empty class labels, label ", i - 1, " is empty"));
    if (!seen.insert(label).second) fail(cat("expected unique class labels, '", label, "' appears twice"));
    if (c.kind == ClassLabels::Str) {
      c.strs.push_back(label);
      continue;
    }
    if (c.kind == ClassLabels::Float) {
      // A finite decimal number, read whole (from_chars: no locale, no leading '+' or spaces).
      double v = 0.0;
      const auto [end, error] = std::from_chars(label.data(), label.data() + label.size(), v);
      if (error != std::errc() || end != label.data() + label.size() || !std::isfinite(v))
        fail(cat("expected finite decimal float labels, got '", label, "'"));
      for (double other : c.floats)
        if (other == v) fail(cat("expected unique class labels, '", label, "' equals an earlier one"));
      c.floats.push_back(v);
      continue;
    }
    // An optional minus and 1..18 digits: always fits int64, and reads back as the same text.
    const size_t digits = label.size() - (label[0] == '-');
    bool ok = digits >= 1 && digits <= 18 && (digits == 1 || label[label.size() - digits] != '0');
    for (size_t k = label.size() - digits; ok && k < label.size(); ++k) ok = label[k] >= '0' && label[k] <= '9';
    if (!ok || label == "-0") fail(cat("expected integer labels of at most 18 digits, got '", label, "'"));
    c.ints.push_back(std::stoll(label));
  }
  return c;
}

// `reject_class`: the index of the output that means "none of these" (a digit reader's "not a
// digit"), in decimal without leading zeros. One of two or more outputs: a one-output model's
// single output is a decision, not a class.
int64_t parse_reject_class(const std::string& value, uint64_t at, uint32_t output_width) {
  if (output_width < 2)
    throw FormatError(Rule::MetadataRejectClass, at,
                      cat("expected reject_class only on a model with two or more outputs, got it on a model with ",
                          output_width, " output"));
  bool ok = !value.empty() && value.size() <= 5 && (value.size() == 1 || value[0] != '0');
  for (const char ch : value) ok = ok && ch >= '0' && ch <= '9';
  if (!ok || std::stoll(value) >= output_width)
    throw FormatError(Rule::MetadataRejectClass, at,
                      cat("expected reject_class to be an output index 0..", output_width - 1,
                          " in decimal without leading zeros, got '", value, "'"));
  return std::stoll(value);
}

// `output_kind`: one name of the vocabulary's table, exactly.
OutputKind parse_output_kind(const std::string& value, uint64_t at) {
  std::string names;
  for (uint32_t k = 0; k < kOutputKindCount; ++k) {
    if (value == kOutputKindNames[k]) return OutputKind(k);
    names += cat(k ? ", " : "", kOutputKindNames[k]);
  }
  throw FormatError(Rule::MetadataOutputKind, at, cat("expected output_kind to be one of ", names, ", got '",
                                                      value.substr(0, 64), "'"));
}

// Finite decimal numbers, one space apart (from_chars: the locale's decimal point does not matter);
// false when the text is anything else.
bool parse_numbers(const std::string& text, std::vector<float>& out) {
  out.clear();
  for (size_t start = 0; start <= text.size();) {
    const size_t space = std::min(text.find(' ', start), text.size());
    double v = 0;
    const auto [end, error] = std::from_chars(text.data() + start, text.data() + space, v);
    if (space == start || error != std::errc() || end != text.data() + space || !std::isfinite(v) ||
        !std::isfinite(float(v)))
      return false;
    out.push_back(float(v));
    start = space + 1;
  }
  return true;
}

// Rule 35: `input_mean` and `input_std` (version 4), together, each one number or one per channel
// of the input image, every std > 0. Stored as the float32 values a Normalize transform holds.
void parse_normalization(ModelFile& m, const std::vector<MetaEntry>& entries, uint32_t version,
                         const TableEntry& first) {
  const uint32_t channels = is_spatial(Op(first.op)) ? first.geometry.in.channels : 1;
  const MetaEntry* at[2] = {nullptr, nullptr};
  const char* keys[2] = {"input_mean", "input_std"};
  for (size_t i = 0; i < entries.size(); ++i)
    for (int k = 0; k < 2; ++k)
      if (m.metadata[i].first == keys[k]) at[k] = &entries[i];
  if (!at[0] && !at[1]) return;
  const uint64_t offset = (at[0] ? at[0] : at[1])->value_at;
  const auto fail = [&](const std::string& what) { throw FormatError(Rule::MetadataInputNormalization, offset, what); };
  if (version < kNormalizationVersion)
    fail(cat("expected input_mean and input_std only in a version-", kNormalizationVersion,
             " file (an older reader would feed uint8 pixels unnormalized), got a version-", version, " file"));
  if (!at[0] || !at[1]) fail(cat("expected input_mean and input_std together, got only ", at[0] ? keys[0] : keys[1]));
  std::vector<float>* values[2] = {&m.input_mean, &m.input_std};
  for (size_t i = 0; i < entries.size(); ++i)
    for (int k = 0; k < 2; ++k) {
      if (m.metadata[i].first != keys[k]) continue;
      const std::string& text = m.metadata[i].second;
      if (!parse_numbers(text, *values[k]) || (values[k]->size() != 1 && values[k]->size() != channels))
        fail(cat("expected ", keys[k], " to be 1", channels > 1 ? cat(" or ", channels) : std::string(),
                 " finite decimal number(s), one space apart (one per channel of the input), got '",
                 text.substr(0, 64), "'"));
    }
  if (m.input_mean.size() != m.input_std.size())
    fail(cat("expected as many input_std values as input_mean values, got ", m.input_std.size(), " and ",
             m.input_mean.size()));
  for (const float s : m.input_std)
    if (!(s > 0.0f)) fail(cat("expected every input_std > 0, got ", s));
}

// `reference_input_range`: "uint8 MIN MAX" (integers 0..255) or "float MIN MAX" (finite), MIN <= MAX,
// one space apart. Numbers are read with from_chars: the locale's decimal point does not matter.
ReferenceRange parse_reference_range(const std::string& value, uint64_t at) {
  const auto fail = [&] {
    throw FormatError(Rule::MetadataInputRange, at,
                      cat("expected reference_input_range to be 'uint8 MIN MAX' (integers 0..255) or 'float MIN "
                          "MAX' (finite), with MIN <= MAX, got '", value, "'"));
  };
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t space = value.find(' ', start);
    parts.push_back(value.substr(start, space == std::string::npos ? std::string::npos : space - start));
    if (space == std::string::npos) break;
    start = space + 1;
  }
  if (parts.size() != 3 || (parts[0] != "uint8" && parts[0] != "float")) fail();
  ReferenceRange r;
  r.present = true;
  r.pixels = parts[0] == "uint8";
  double bounds[2];
  for (int i = 0; i < 2; ++i) {
    const std::string& text = parts[1 + i];
    if (text.empty()) fail();
    if (r.pixels) {
      unsigned v = 0;
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (error != std::errc() || end != text.data() + text.size() || v > 255 || (text.size() > 1 && text[0] == '0'))
        fail();
      bounds[i] = v;
    } else {
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), bounds[i]);
      if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(bounds[i])) fail();
    }
  }
  if (!(bounds[0] <= bounds[1])) fail();
  r.lo = bounds[0];
  r.hi = bounds[1];
  return r;
}

}  // namespace

ModelFile parse_model_file(const uint8_t* d, size_t size) {
  const Header h = read_header(d, size);  // rules 1-11
  const uint64_t payload_end = size - kChecksumSize;
  const std::vector<TableEntry> table = read_layer_table(d, h, payload_end);  // rules 12-21
  const uint64_t table_end = kHeaderSize + uint64_t(h.layer_count) * layer_entry_size(h.version);
  const uint32_t output_width = table.back().output_width;

  // Rule 22: every remaining size follows from the header and the table; prove the file holds
  // them all before copying (and allocating) anything.
  uint64_t weights_bytes = 0;
  for (const TableEntry& e : table)
    weights_bytes = checked_add(weights_bytes, checked_mul(op_values(e) + activation_values(e), 4, e.at), e.at);
  const uint64_t ref_values = checked_mul(
      h.ref_count, checked_add(h.input_width, output_width, kHeaderSize), kHeaderSize);
  const uint64_t reference_bytes = checked_add(8, checked_mul(ref_values, 4, kHeaderSize), kHeaderSize);
  const uint64_t fixed_end = checked_add(checked_add(table_end, weights_bytes, kHeaderSize),
                                         reference_bytes, kHeaderSize);
  if (fixed_end > payload_end)
    throw FormatError(Rule::LayoutSize, table_end,
                      cat("expected at least ", weights_bytes, " bytes of weights and ",
                          reference_bytes, " bytes of reference data after offset ", table_end,
                          ", but the file has ", payload_end - table_end,
                          " bytes before its checksum"));
  const uint64_t metadata_end = payload_end - reference_bytes;

  // Rule 23: weights, biases and parameters.
  ModelFile m;
  m.version = h.version;
  m.input_width = h.input_width;
  m.input_scale = h.input_scale;
  m.layers.resize(h.layer_count);
  std::vector<uint64_t> parameters_at(h.layer_count);
  uint64_t at = table_end;
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    FileLayer& layer = m.layers[i];
    layer.input_width = table[i].input_width;
    layer.output_width = table[i].output_width;
    layer.op = Op(table[i].op);
    layer.activation = Activation(table[i].activation);
    layer.geometry = table[i].geometry;
    // The operation's two tensors (none for a pool): dense kernel and bias, conv kernel and bias
    // (one per filter), or the element-wise op's two per-feature vectors.
    const bool dense = layer.op == Op::Dense, conv = layer.op == Op::Conv2d;
    const uint64_t bias_count = conv ? layer.geometry.filters : is_spatial(layer.op) ? 0 : layer.output_width;
    const uint64_t first_count = op_values(table[i]) - bias_count - (layer.op == Op::LayerNorm ? 1 : 0);
    const char* first = dense || conv ? "kernel" : layer.op == Op::ScaleShift ? "scale" : "gamma";
    const char* second = dense || conv ? "bias" : layer.op == Op::ScaleShift ? "shift" : "beta";
    if (first_count + bias_count > 0) {
      check_finite_f32(d, at, first_count, Rule::NonFiniteWeight, cat("layer ", i, " ", first));
      layer.kernel = d + at;
      at += 4 * first_count;
      check_finite_f32(d, at, bias_count, Rule::NonFiniteWeight, cat("layer ", i, " ", second));
      layer.bias = d + at;
      at += 4 * bias_count;
    }
    if (layer.op == Op::LayerNorm) {
      check_finite_f32(d, at, 1, Rule::NonFiniteWeight, cat("layer ", i, " epsilon"));
      layer.epsilon = le_f32(d + at);
      at += 4;
    }
    parameters_at[i] = at;
    const uint64_t count = activation_values(table[i]);
    layer.parameters.resize(count);
    decode_f32(d + at, count, layer.parameters.data());
    for (uint64_t k = 0; k < count; ++k) {
      const float v = layer.parameters[k];
      // relu_general's max_value (its third parameter) may be +Inf: no upper bound.
      const bool unbounded_max = layer.activation == Activation::ReluGeneral && k == 2 && v == INFINITY;
      if (!std::isfinite(v) && !unbounded_max)
        throw FormatError(Rule::NonFiniteWeight, at + 4 * k,
                          cat("expected a finite f32 in layer ", i, " ", activation_name(layer.activation),
                              " parameter ", k, ", got ", v));
    }
    at += 4 * count;
  }

  // Rule 24: parameters outside their domain.
  for (uint32_t i = 0; i < h.layer_count; ++i) {
    const FileLayer& layer = m.layers[i];
    if (layer.op == Op::LayerNorm && !(layer.epsilon > 0.0f))
      throw FormatError(Rule::LayerParameter, parameters_at[i] - 4,
                        cat("expected layer ", i, " (layer_norm) epsilon > 0, got ", layer.epsilon));
    if (layer.activation == Activation::ReluGeneral && !(layer.parameters[2] >= 0.0f))
      throw FormatError(Rule::LayerParameter, parameters_at[i] + 8,
                        cat("expected layer ", i, " relu_general max_value >= 0 (+inf for none), got ",
                            layer.parameters[2]));
  }

  // Rules 25-35: metadata. Its entries are variable-length, so the structure is walked first
  // (every read bounds-checked against the reference section), then each rule runs over it.
  const std::vector<MetaEntry> entries = walk_metadata(d, h.meta_count, at, metadata_end);
  if (!entries.empty()) at = entries.back().value_at + entries.back().value_length;
  check_metadata(d, entries, at);
  for (const MetaEntry& e : entries) {
    m.metadata.emplace_back(key_of(d, e),
                            std::string(reinterpret_cast<const char*>(d + e.value_at), e.value_length));
    if (m.metadata.back().first == "classes")
      m.classes = parse_classes(m.metadata.back().second, e.value_at, output_width);
  }
  for (size_t i = 0; i < entries.size(); ++i)  // rule 31 after rule 30 over every entry
    if (m.metadata[i].first == "reference_input_range")
      m.reference_range = parse_reference_range(m.metadata[i].second, entries[i].value_at);
  for (size_t i = 0; i < entries.size(); ++i)  // then rule 32
    if (m.metadata[i].first == "reject_class")
      m.reject_class = parse_reject_class(m.metadata[i].second, entries[i].value_at, output_width);
  for (size_t i = 0; i < entries.size(); ++i)  // then rule 33
    if (m.metadata[i].first == "output_kind") {
      m.output_kind = parse_output_kind(m.metadata[i].second, entries[i].value_at);
      m.output_kind_stated = true;
    }
  for (size_t i = 0; i < entries.size(); ++i)  // then rule 34
    if (m.metadata[i].first == "input_kind") {
      const std::string& value = m.metadata[i].second;
      if (value != "pixels" && value != "features")
        throw FormatError(Rule::MetadataInputKind, entries[i].value_at,
                          cat("expected input_kind to be pixels or features, got '", value.substr(0, 64), "'"));
      m.pixel_input = value == "pixels";
    }
  parse_normalization(m, entries, h.version, table.front());  // then rule 35
  if (at != metadata_end)
    throw FormatError(Rule::TrailingBytes, at, cat("expected the reference section at offset ", at,
                                                   ", but ", metadata_end - at,
                                                   " bytes that no section describes come first"));

  // Rules 37-38: the reference section.
  ReferenceSet& ref = m.reference;
  ref.count = h.ref_count;
  ref.atol = le_f32(d + at);
  ref.rtol = le_f32(d + at + 4);
  for (const auto& [name, value, offset] :
       {std::tuple<const char*, float, uint64_t>{"atol", ref.atol, at},
        std::tuple<const char*, float, uint64_t>{"rtol", ref.rtol, at + 4}})
    if (!std::isfinite(value) || value < 0.0f || value > kMaxTolerance)
      throw FormatError(Rule::Tolerance, offset,
                        cat("expected ", name, " in 0..", kMaxTolerance, ", got ", value));
  at += 8;
  const uint64_t input_count = uint64_t(ref.count) * h.input_width;
  read_finite_f32(d, at, input_count, Rule::NonFiniteReference, "reference inputs", ref.inputs);
  at += 4 * input_count;
  ref.expected_offset = at;
  read_finite_f32(d, at, uint64_t(ref.count) * output_width, Rule::NonFiniteReference,
                  "reference outputs", ref.expected);
  return m;
}

}  // namespace mnist_engine
