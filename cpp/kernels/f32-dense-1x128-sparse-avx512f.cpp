#include "dense-sparse-rows.h"
#include "f32-vector-avx512f.h"
#include "f32-fma-peak.h"

namespace mnist_engine::kernels {
// The AVX2 algorithm at twice the width: one index load and one broadcast now feed 128 columns.
static_assert(8 * Avx512F::kLanes == kAvx512PanelWidth);

void f32_dense_1x128_sparse_avx512f(const DenseArgs& a) { dense_sparse_rows<Avx512F>(a); }

float fma_peak_avx512f(uint64_t iterations) { return fma_peak_loop<Avx512F>(iterations); }

}  // namespace mnist_engine::kernels
