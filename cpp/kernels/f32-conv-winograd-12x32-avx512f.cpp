#include "conv-winograd.h"
#include "f32-vector-avx512f.h"

namespace mnist_engine::kernels {

void f32_conv_winograd_12x32_avx512f(const ConvArgs& a) { conv_winograd<Avx512F, 12, 2>(a); }

}  // namespace mnist_engine::kernels
