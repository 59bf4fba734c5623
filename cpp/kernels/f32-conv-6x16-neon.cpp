#include "conv-direct.h"
#include "f32-vector-neon.h"

namespace mnist_engine::kernels {

void f32_conv_6x16_neon(const ConvArgs& a) { conv_direct<Neon, 6, 4, 1>(a); }

}  // namespace mnist_engine::kernels
