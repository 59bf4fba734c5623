#include "conv-direct.h"
#include "f32-vector-avx512f.h"

namespace mnist_engine::kernels {

void f32_conv_12x32_avx512f(const ConvArgs& a) { conv_direct<Avx512F, 12, 2, 3>(a); }

}  // namespace mnist_engine::kernels
