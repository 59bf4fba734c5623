// CRC32C (Castagnoli), the checksum of the weights file. Written here rather than taken from a
// library because it is part of the format's core and is twenty lines; a table-driven version is
// fast enough for files of a few megabytes (it runs once per load).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mnist_engine {

uint32_t crc32c(const uint8_t* data, size_t size, uint32_t crc = 0);

}  // namespace mnist_engine
