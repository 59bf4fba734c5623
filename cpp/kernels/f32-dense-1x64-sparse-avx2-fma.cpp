#include "dense-sparse-rows.h"
#include "f32-vector-avx2-fma.h"
#include "f32-fma-peak.h"

namespace mnist_engine::kernels {
static_assert(8 * Avx2Fma::kLanes == kAvx2PanelWidth);

void f32_dense_1x64_sparse_avx2_fma(const DenseArgs& a) { dense_sparse_rows<Avx2Fma>(a); }

float fma_peak_avx2(uint64_t iterations) { return fma_peak_loop<Avx2Fma>(iterations); }

}  // namespace mnist_engine::kernels
