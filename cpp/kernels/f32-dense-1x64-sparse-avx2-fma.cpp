#include <immintrin.h>

#include "dense-sparse-rows.h"
#include "f32-fma-peak.h"

namespace mnist_engine::kernels {
namespace {

struct Avx2Fma {
  using V = __m256;
  static constexpr size_t kLanes = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  // max_ps returns its second operand when either is NaN: with the value second, a NaN input
  // propagates as it does in Keras instead of becoming 0.
  static V relu(V v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  // vmaskmovps: masked-off lanes are not read, so a tail row may end at the buffer's end.
  using Mask = __m256i;
  static Mask tail_mask(size_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load_masked(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
};
static_assert(8 * Avx2Fma::kLanes == kAvx2PanelWidth);

}  // namespace

void f32_dense_1x64_sparse_avx2_fma(const DenseArgs& a) { dense_sparse_rows<Avx2Fma>(a); }

float fma_peak_avx2(uint64_t iterations) { return fma_peak_loop<Avx2Fma>(iterations); }

}  // namespace mnist_engine::kernels
