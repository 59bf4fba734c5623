// The engine's vocabulary: the activations and element-wise operations a layer can have, one table
// each. The file format numbers them (model_file.h, docs/FORMAT.md), the kernels compute them
// (f32-activation.h), Python reads them (mnist_engine._core.ACTIVATIONS, OPS); this header knows
// nothing of files or instruction sets, so both sides can include it.
#pragma once

#include <cstdint>

namespace mnist_engine {

// The activation vocabulary, one table (docs/FORMAT.md, "Activations"): the file's codes are the
// indices, the names are what Python sees (mnist_engine._core.ACTIVATIONS mirrors this table;
// nothing else lists them).
enum class Activation : uint32_t {
  Linear = 0, Relu, Sigmoid, Tanh, Softmax,  // version 1
  Gelu, GeluTanh, Silu, Elu, Selu, Softplus, Softsign, LeakyRelu, Relu6, HardSigmoid, HardSilu, Exponential,
  Mish, LogSoftmax, ReluGeneral, Prelu,
};
struct ActivationInfo {
  Activation code;
  const char* name;
  uint32_t since_version;
  const char* parameters;  // comma-separated names of its scalar f32 parameters ("" for none)
  uint32_t scalar_count;
  bool per_unit;           // one more f32 per output (prelu's slopes)
};
inline constexpr ActivationInfo kActivations[] = {
    {Activation::Linear, "linear", 1, "", 0, false},
    {Activation::Relu, "relu", 1, "", 0, false},
    {Activation::Sigmoid, "sigmoid", 1, "", 0, false},
    {Activation::Tanh, "tanh", 1, "", 0, false},
    {Activation::Softmax, "softmax", 1, "", 0, false},
    {Activation::Gelu, "gelu", 2, "", 0, false},
    {Activation::GeluTanh, "gelu_tanh", 2, "", 0, false},
    {Activation::Silu, "silu", 2, "", 0, false},
    {Activation::Elu, "elu", 2, "alpha", 1, false},
    {Activation::Selu, "selu", 2, "", 0, false},
    {Activation::Softplus, "softplus", 2, "", 0, false},
    {Activation::Softsign, "softsign", 2, "", 0, false},
    {Activation::LeakyRelu, "leaky_relu", 2, "negative_slope", 1, false},
    {Activation::Relu6, "relu6", 2, "", 0, false},
    {Activation::HardSigmoid, "hard_sigmoid", 2, "", 0, false},
    {Activation::HardSilu, "hard_silu", 2, "", 0, false},
    {Activation::Exponential, "exponential", 2, "", 0, false},
    {Activation::Mish, "mish", 2, "", 0, false},
    {Activation::LogSoftmax, "log_softmax", 2, "", 0, false},
    {Activation::ReluGeneral, "relu_general", 2, "negative_slope,threshold,max_value", 3, false},
    {Activation::Prelu, "prelu", 2, "", 0, true},  // alpha: one slope per output
};
inline constexpr uint32_t kActivationCount = sizeof kActivations / sizeof kActivations[0];
static_assert(kActivationCount == uint32_t(Activation::Prelu) + 1, "one entry per activation code");
// Codes below this are version 1's.
inline constexpr uint32_t kVersion1Activations = uint32_t(Activation::Softmax) + 1;

// What a layer does before its activation (format version 2; every version-1 layer is Dense).
enum class Op : uint32_t { Dense = 0, ScaleShift = 1, LayerNorm = 2 };
inline constexpr const char* kOpNames[] = {"dense", "scale_shift", "layer_norm"};
inline constexpr uint32_t kOpCount = sizeof kOpNames / sizeof kOpNames[0];

}  // namespace mnist_engine
