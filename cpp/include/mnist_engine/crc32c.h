// CRC32C (Castagnoli), the checksum of the weights file. Written here rather than taken from a
// library because it is part of the format's core and is a few lines.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mnist_engine {

// Uses the SSE4.2 instruction when the CPU has it, else the portable table version.
uint32_t crc32c(const uint8_t* data, size_t size, uint32_t crc = 0);
uint32_t crc32c_portable(const uint8_t* data, size_t size, uint32_t crc = 0);
#if defined(MNIST_ENGINE_X86_KERNELS)
uint32_t crc32c_sse42(const uint8_t* data, size_t size, uint32_t crc);
#endif

}  // namespace mnist_engine
