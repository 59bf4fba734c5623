#include "mnist_engine/crc32c.h"

#include <array>

namespace mnist_engine {
namespace {

// Slicing-by-8 tables: eight bytes per step keeps a 3 MB model's check well under a millisecond.
constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected Castagnoli

std::array<std::array<uint32_t, 256>, 8> make_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? kPolynomial : 0u);
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i)
    for (size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  return t;
}

const std::array<std::array<uint32_t, 256>, 8>& tables() {
  static const auto t = make_tables();
  return t;
}

}  // namespace

uint32_t crc32c(const uint8_t* data, size_t size, uint32_t crc) {
#if defined(MNIST_ENGINE_X86_KERNELS)
  static const bool has_sse42 = __builtin_cpu_supports("sse4.2");
  if (has_sse42) return crc32c_sse42(data, size, crc);
#endif
  return crc32c_portable(data, size, crc);
}

uint32_t crc32c_portable(const uint8_t* data, size_t size, uint32_t crc) {
  const auto& t = tables();
  crc = ~crc;
  while (size >= 8) {
    // Byte-wise assembly keeps this independent of host endianness and alignment.
    const uint32_t lo = crc ^ (uint32_t(data[0]) | uint32_t(data[1]) << 8 |
                               uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24);
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][data[4]] ^ t[2][data[5]] ^ t[1][data[6]] ^ t[0][data[7]];
    data += 8;
    size -= 8;
  }
  while (size--) crc = (crc >> 8) ^ t[0][(crc ^ *data++) & 0xFFu];
  return ~crc;
}

}  // namespace mnist_engine
