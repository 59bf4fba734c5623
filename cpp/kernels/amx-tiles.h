// The AMX tile configuration the kernels share: palette 1, every tile they use (tmm0-7) 16 rows x
// 64 bytes. Include it from AMX kernel files only (dense-amx.h, u8s8-conv-32x32-amx.cpp).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace mnist_engine::kernels {
namespace {

inline constexpr size_t kAmxRows = 32, kAmxPanel = 16, kAmxUnits = 16;

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile the kernel uses (tmm0-7) is 16 rows x 64 bytes.
constexpr TileConfig full_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.colsb[t] = 64;
  }
  return config;
}
// Constant data, never a local filled in before the load: GCC's _tile_loadconfig tells the
// compiler it reads only 8 bytes of its operand, so stores to a local config may be dropped.
alignas(64) constexpr TileConfig kFullTiles = full_tiles();

}  // namespace
}  // namespace mnist_engine::kernels
