// libFuzzer harness: any bytes, fed to the loader, and whatever loads, fed inputs to predict.
//
// The first byte is a control byte, not file content:
//   bit 0     reseal: rewrite the header's file_size and the trailing CRC32C before loading, so
//             mutations get past the checksum and reach the structural rules behind it (without
//             this, nearly every mutation would stop at rule 6);
//   bits 1-2  which kernel runs (0: the default, 1: avx2, 2: scalar, 3: avx512), when the CPU has it;
//   bit 3     verify the reference outputs (else load with verify=false and predict anyway).
// Every outcome but a FormatError or a successful load is a bug: a crash, a sanitizer report, an
// uncaught exception (libFuzzer reports those as deaths).
#include <cstdint>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "mnist_engine/crc32c.h"
#include "mnist_engine/engine.h"

namespace {

void reseal(std::vector<uint8_t>& file) {
  if (file.size() < 52) return;
  const uint64_t size = file.size();
  for (int i = 0; i < 8; ++i) file[16 + i] = uint8_t(size >> (8 * i));
  const uint32_t crc = mnist_engine::crc32c(file.data(), file.size() - 4);
  for (int i = 0; i < 4; ++i) file[file.size() - 4 + i] = uint8_t(crc >> (8 * i));
}

std::string kernel_for(uint8_t control) {
  static const char* const names[] = {"", "avx2", "scalar", "avx512"};
  const std::string name = names[(control >> 1) & 3];
  for (const auto& available : mnist_engine::available_kernel_names())
    if (available == name) return name;
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  std::vector<uint8_t> file(data + 1, data + size);
  if (control & 1) reseal(file);
  std::shared_ptr<const mnist_engine::Engine> engine;
  try {
    engine = mnist_engine::Engine::from_bytes(file.data(), file.size(), control & 8, kernel_for(control));
  } catch (const mnist_engine::FormatError&) {
    return 0;
  }
  // Loaded: predict a few rows built from the file's own bytes, through both input paths and
  // across a tile boundary (65 rows), so kernels see the widths and values the fuzzer chose.
  const size_t width = engine->input_width();
  for (const size_t rows : {size_t(1), size_t(65)}) {
    std::vector<uint8_t> pixels(rows * width);
    std::vector<float> floats(rows * width);
    for (size_t i = 0; i < pixels.size(); ++i) {
      pixels[i] = file[i % file.size()];
      floats[i] = float(int8_t(pixels[i])) / 16.0f;
    }
    std::vector<float> out(rows * engine->output_width());
    engine->predict(pixels.data(), rows, out.data(), 1);
    engine->predict(floats.data(), rows, out.data(), 1);
  }
  return 0;
}
