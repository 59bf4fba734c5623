#include "conv-winograd.h"
#include "f32-vector-avx2-fma.h"

namespace mnist_engine::kernels {

void f32_conv_winograd_6x16_avx2_fma(const ConvArgs& a) { conv_winograd<Avx2Fma, 6, 2>(a); }

}  // namespace mnist_engine::kernels
