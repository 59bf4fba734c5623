// bf16 convolution on AMX: tdpbf16ps, 16 pixels x 16 filters x 32 bf16 products per instruction,
// float32 sums (conv-amx.h); the bias is added after the sum, as bf16-dense-32x32-amx.cpp does. A
// pooled pixel takes the largest of its four sums in the pooling kernels' order and NaN rule
// (max_keep_nan), then the bias and ReLU: adding the bias is monotone, so that is the pool of the
// outputs.
#include <immintrin.h>

#define MNIST_ENGINE_AMX_DOT(c, a, b) _tile_dpbf16ps(c, a, b)
#include "conv-amx.h"
#include "f32-vector-avx512f.h"

namespace mnist_engine::kernels {
namespace {

struct AmxBf16Conv {
  static void epilogue(const QuantConvArgs& a, __m512 sum, size_t col, float* y) {
    __m512 v = _mm512_add_ps(sum, _mm512_loadu_ps(a.bias + col));
    if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN (second operand) propagates
    _mm512_storeu_ps(y, v);
  }
  static __m512 sums(const uint32_t* p) { return _mm512_castsi512_ps(_mm512_load_si512(p)); }
  static void finish(const QuantConvArgs& a, const uint32_t* s, size_t col, float* y) { epilogue(a, sums(s), col, y); }
  static void finish_pooled(const QuantConvArgs& a, const uint32_t* s00, const uint32_t* s01, const uint32_t* s10,
                            const uint32_t* s11, size_t col, float* y) {
    const auto max_keep_nan = Avx512F::max_keep_nan;  // f32-pool.h's order and NaN rule, lane by lane
    epilogue(a, max_keep_nan(max_keep_nan(max_keep_nan(sums(s00), sums(s01)), sums(s10)), sums(s11)), col, y);
  }
};

}  // namespace

void bf16_conv_32x32_amx(const QuantConvArgs& a) { conv_amx<AmxBf16Conv>(a); }

}  // namespace mnist_engine::kernels
