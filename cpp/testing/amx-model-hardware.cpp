// The block product on the real AMX instructions, for comparing the software model with the
// hardware on a CPU that has AMX (amx-model-test.cpp). Compiled with -mamx-tile -mamx-int8
// -mamx-bf16 and called only after the test has checked CPUID, XCR0 and the Linux permission.
#include <immintrin.h>

#define MNIST_ENGINE_AMX_BLOCK_PRODUCT hardware_product
#include "amx-block-product.h"
