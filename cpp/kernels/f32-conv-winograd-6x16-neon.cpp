#include "conv-winograd.h"
#include "f32-vector-neon.h"

namespace mnist_engine::kernels {

void f32_conv_winograd_6x16_neon(const ConvArgs& a) { conv_winograd<Neon, 6, 4>(a); }

}  // namespace mnist_engine::kernels
