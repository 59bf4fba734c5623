#include <immintrin.h>

#include "dense-sparse-rows.h"
#include "f32-fma-peak.h"

namespace mnist_engine::kernels {
namespace {

// The AVX2 algorithm at twice the width: one index load and one broadcast now feed 128 columns.
struct Avx512F {
  using V = __m512;
  static constexpr size_t kLanes = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // As in AVX2, max returns its second operand when either is NaN: NaN propagates.
  static V relu(V v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // Masked-off lanes are not read (no fault past the buffer) and come back as zero.
  using Mask = __mmask16;
  static Mask tail_mask(size_t count) { return static_cast<Mask>((1u << count) - 1); }
  static V load_masked(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
};
static_assert(8 * Avx512F::kLanes == kAvx512PanelWidth);

}  // namespace

void f32_dense_1x128_sparse_avx512f(const DenseArgs& a) { dense_sparse_rows<Avx512F>(a); }

float fma_peak_avx512f(uint64_t iterations) { return fma_peak_loop<Avx512F>(iterations); }

}  // namespace mnist_engine::kernels
