#include "dense-sparse-rows.h"
#include "f32-vector-neon.h"
#include "f32-fma-peak.h"

namespace mnist_engine::kernels {
// The AVX2 algorithm with 4-lane vectors: 8 accumulators cover 32 columns.
static_assert(8 * Neon::kLanes == kNeonPanelWidth);

void f32_dense_1x32_sparse_neon(const DenseArgs& a) { dense_sparse_rows<Neon>(a); }

float fma_peak_neon(uint64_t iterations) { return fma_peak_loop<Neon>(iterations); }

}  // namespace mnist_engine::kernels
