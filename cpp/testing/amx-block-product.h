// One 16 x 16 block product with the tile intrinsics, C (16 x 16 dwords) += A . B: TDPBF16PS when
// `bf16`, else TDPBUSD. The same source is compiled twice: against the instructions
// (amx-model-hardware.cpp) and against the software model (amx-model-test.cpp, which includes
// amx-model.h first), so the two can be compared bit for bit. The includer names the function:
// #define MNIST_ENGINE_AMX_BLOCK_PRODUCT name.
#pragma once

#include <cstdint>

namespace mnist_engine::amx_model {
namespace {
struct alignas(64) BlockConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64};
  uint8_t rows[16] = {16, 16, 16};
};
alignas(64) constexpr BlockConfig kBlockConfig{};
}  // namespace

void MNIST_ENGINE_AMX_BLOCK_PRODUCT(const uint8_t* a, const uint8_t* b, uint8_t* c, bool bf16) {
  _tile_loadconfig(&kBlockConfig);
  _tile_loadd(0, c, 64);
  _tile_loadd(1, a, 64);
  _tile_loadd(2, b, 64);
  if (bf16)
    _tile_dpbf16ps(0, 1, 2);
  else
    _tile_dpbusd(0, 1, 2);
  _tile_stored(0, c, 64);
  _tile_release();
}

}  // namespace mnist_engine::amx_model
