// int8 on AMX: tdpbusd, 16 rows x 16 columns x 64 uint8*int8 products per instruction
// (dense-amx.h). The epilogue is the AVX-512 one, so results are bit-identical to the scalar
// reference.
#include <immintrin.h>

#define MNIST_ENGINE_AMX_DOT(c, a, b) _tile_dpbusd(c, a, b)
#include "dense-amx.h"
#include "quant-x86.h"

namespace mnist_engine::kernels {
namespace {

struct AmxInt8 {
  static void finish(const uint32_t* sums, const QuantDenseArgs& a, size_t r, size_t col, float* y) {
    u8s8_finish_512(_mm512_loadu_si512(sums), a, r, col, y);
  }
};

}  // namespace

void u8s8_dense_32x32_amx(const QuantDenseArgs& a) { dense_amx<AmxInt8>(a); }

}  // namespace mnist_engine::kernels
