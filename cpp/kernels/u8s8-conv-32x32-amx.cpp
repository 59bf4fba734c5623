// int8 convolution on AMX: tdpbusd, 16 pixels x 16 filters x 64 uint8*int8 products per
// instruction (conv-amx.h). The epilogue is the dense int8 one, so results are bit-identical to
// u8s8_conv_scalar; a pooled pixel takes the largest of its four int32 sums, then the epilogue:
// the epilogue is monotone (a positive scale, then ReLU), so that is the pool of the outputs.
#include <immintrin.h>

#define MNIST_ENGINE_AMX_DOT(c, a, b) _tile_dpbusd(c, a, b)
#include "conv-amx.h"
#include "quant-x86.h"

namespace mnist_engine::kernels {
namespace {

struct AmxInt8Conv {
  static void epilogue(const QuantConvArgs& a, __m512i acc, size_t col, float* y) {
    u8s8_epilogue_512(acc, a.zero, a.scale, a.col_sum + col, a.col_scale + col, a.bias + col, a.relu, y);
  }
  static void finish(const QuantConvArgs& a, const uint32_t* sums, size_t col, float* y) {
    epilogue(a, _mm512_load_si512(sums), col, y);
  }
  static void finish_pooled(const QuantConvArgs& a, const uint32_t* s00, const uint32_t* s01, const uint32_t* s10,
                            const uint32_t* s11, size_t col, float* y) {
    const __m512i top = _mm512_max_epi32(_mm512_load_si512(s00), _mm512_load_si512(s01));
    const __m512i bottom = _mm512_max_epi32(_mm512_load_si512(s10), _mm512_load_si512(s11));
    epilogue(a, _mm512_max_epi32(top, bottom), col, y);
  }
};

}  // namespace

void u8s8_conv_32x32_amx(const QuantConvArgs& a) { conv_amx<AmxInt8Conv>(a); }

}  // namespace mnist_engine::kernels
