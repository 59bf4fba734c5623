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
// Version 3 adds the spatial operations on (height, width, channels) images, NHWC.
enum class Op : uint32_t {
  Dense = 0, ScaleShift = 1, LayerNorm = 2,                                  // version 2
  Conv2d = 3, MaxPool = 4, AvgPool = 5, GlobalAvgPool = 6, GlobalMaxPool = 7,  // version 3
};
inline constexpr const char* kOpNames[] = {"dense", "scale_shift", "layer_norm", "conv2d", "max_pool",
                                           "avg_pool", "global_avg_pool", "global_max_pool"};
inline constexpr uint32_t kOpCount = sizeof kOpNames / sizeof kOpNames[0];
inline constexpr uint32_t kVersion2Ops = uint32_t(Op::LayerNorm) + 1;  // codes below this are version 2's
inline constexpr bool is_spatial(Op op) { return uint32_t(op) >= uint32_t(Op::Conv2d); }
inline constexpr bool is_windowed(Op op) { return op == Op::Conv2d || op == Op::MaxPool || op == Op::AvgPool; }

// What a model's outputs are (docs/FORMAT.md, the `output_kind` metadata entry): the file's names
// are this table's. Whatever shows or thresholds a probability (predict_proba, `mnist-engine
// predict`, the server's page) converts them once, by Engine::to_probabilities; predict() returns
// the outputs themselves.
enum class OutputKind : uint32_t {
  Probabilities = 0,  // softmax rows, or one sigmoid per output
  LogProbabilities,   // log_softmax rows: exp gives the probabilities
  Logits,             // raw scores: softmax (one output: sigmoid) gives the probabilities
  Values,             // not class scores (a regressor, a generator): no probabilities at all
};
inline constexpr const char* kOutputKindNames[] = {"probabilities", "log_probabilities", "logits", "values"};
inline constexpr uint32_t kOutputKindCount = sizeof kOutputKindNames / sizeof kOutputKindNames[0];
static_assert(kOutputKindCount == uint32_t(OutputKind::Values) + 1, "one name per output kind");

// An image's shape, NHWC without the batch.
struct ImageShape {
  uint32_t height = 0, width = 0, channels = 0;
};
// A spatial layer's geometry (format version 3): its input image, the window sliding over it and
// the zeros around it, and what comes out.
struct Geometry {
  ImageShape in;
  uint32_t window_h = 0, window_w = 0, stride_h = 0, stride_w = 0;
  uint32_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  uint32_t filters = 0;  // conv2d: output channels
  uint32_t flags = 0;    // avg_pool: kCountPadding
  static constexpr uint32_t kCountPadding = 1;  // average over the whole window, padding included
};

// Positions of a window sliding over `size` pixels padded by `before` and `after` (floor, as Keras
// and ONNX's ceil_mode=0); 0 when it does not fit.
inline constexpr uint64_t window_positions(uint64_t size, uint64_t window, uint64_t stride, uint64_t before,
                                           uint64_t after) {
  return size + before + after < window || stride == 0 ? 0 : (size + before + after - window) / stride + 1;
}
// What a spatial layer gives for its geometry (a global pool: 1 x 1 x channels).
inline constexpr ImageShape output_shape(Op op, const Geometry& g) {
  if (op == Op::GlobalAvgPool || op == Op::GlobalMaxPool) return {1, 1, g.in.channels};
  return {uint32_t(window_positions(g.in.height, g.window_h, g.stride_h, g.pad_top, g.pad_bottom)),
          uint32_t(window_positions(g.in.width, g.window_w, g.stride_w, g.pad_left, g.pad_right)),
          op == Op::Conv2d ? g.filters : g.in.channels};
}

}  // namespace mnist_engine
