// The real AMX instructions on one 16 x 64-byte block, for comparing the software model with the
// hardware on a CPU that has AMX (amx-model-test.cpp). Compiled with -mamx-tile -mamx-int8
// -mamx-bf16 and called only after the test has checked CPUID, XCR0 and the Linux permission.
#include <immintrin.h>

#include <cstdint>

namespace mnist_engine::amx_model {

namespace {
struct alignas(64) Config {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64};
  uint8_t rows[16] = {16, 16, 16};
};
alignas(64) constexpr Config kConfig{};
}  // namespace

// c (16 x 16 dwords) += a . b, by the instruction itself; `bf16` picks TDPBF16PS over TDPBUSD.
void hardware_product(const uint8_t* a, const uint8_t* b, uint8_t* c, bool bf16) {
  _tile_loadconfig(&kConfig);
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
