// bf16 on AMX: tdpbf16ps, 16 rows x 16 columns x 32 bf16 products per instruction, float32 sums
// (dense-amx.h); the bias is added after the sum.
#include <immintrin.h>

#define MNIST_ENGINE_AMX_DOT(c, a, b) _tile_dpbf16ps(c, a, b)
#include "dense-amx.h"

namespace mnist_engine::kernels {
namespace {

struct AmxBf16 {
  static void finish(const uint32_t* sums, const QuantDenseArgs& a, size_t, size_t col, float* y) {
    __m512 v = _mm512_add_ps(_mm512_castsi512_ps(_mm512_loadu_si512(sums)), _mm512_loadu_ps(a.bias + col));
    if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
    _mm512_storeu_ps(y, v);
  }
};

}  // namespace

void bf16_dense_32x32_amx(const QuantDenseArgs& a) { dense_amx<AmxBf16>(a); }

}  // namespace mnist_engine::kernels
