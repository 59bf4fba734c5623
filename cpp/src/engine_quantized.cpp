// The reduced-precision engine (bf16, int8): quantizing and packing verified float32 weights at
// load, and running a tile of rows through the layers in the kernel's precision.
#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "engine_internal.h"

namespace mnist_engine {

using internal::kernel_of;
using internal::round_up;

namespace {

void put(uint8_t* dst, int32_t value, size_t bytes) {
  const auto v = static_cast<uint16_t>(value);  // the low bytes: int8 and int16 as two's complement
  dst[0] = static_cast<uint8_t>(v);
  if (bytes == 2) dst[1] = static_cast<uint8_t>(v >> 8);
}

}  // namespace

Engine::LayerValues Engine::quantize_values(const FileLayer& src, Precision precision) {
  const size_t in = src.input_width, out = src.output_width;
  LayerValues v;
  v.bias.resize(out);
  decode_f32(src.bias, out, v.bias.data());
  std::vector<float> w(in * out);
  decode_f32(src.kernel, in * out, w.data());
  v.values.resize(in * out);
  if (precision != Precision::Int8) {
    for (size_t i = 0; i < in * out; ++i) v.values[i] = kernels::to_bf16(w[i]);
    return v;
  }
  // Per-column symmetric int8, walked row by row (the kernel is row-major: contiguous, vectorised).
  std::vector<float> amax(out, 0.0f), inverse(out);
  for (size_t i = 0; i < in; ++i)
    for (size_t j = 0; j < out; ++j) amax[j] = std::max(amax[j], std::fabs(w[i * out + j]));
  v.col_scale.resize(out);
  for (size_t j = 0; j < out; ++j) {
    inverse[j] = amax[j] > 0.0f ? 127.0f / amax[j] : 0.0f;
    v.col_scale[j] = amax[j] > 0.0f ? amax[j] / 127.0f : 1.0f;
  }
  // Adding and subtracting 1.5 * 2^23 rounds |x| < 2^22 to an integer in the current rounding mode:
  // ten times faster than round_nearest_even, and the same when the mode is nearest-even (always,
  // unless the caller changed it; then the mode-free version runs, so results never depend on it).
  const bool nearest = std::fegetround() == FE_TONEAREST;
  for (size_t i = 0; i < in; ++i)
    for (size_t j = 0; j < out; ++j) {
      const float scaled = w[i * out + j] * inverse[j];
      const float r = nearest ? (scaled + 12582912.0f) - 12582912.0f : kernels::round_nearest_even(scaled);
      v.values[i * out + j] = static_cast<int32_t>(std::min(127.0f, std::max(-127.0f, r)));
    }
  // A column whose largest |w| is below 127 / FLT_MAX has an infinite float inverse, and 0 * inf is
  // NaN (which std::max made -127: a zero weight with the wrong sign): scaled in double instead,
  // where 127 / amax is finite for every float.
  for (size_t j = 0; j < out; ++j)
    if (inverse[j] - inverse[j] != 0.0f)
      for (size_t i = 0; i < in; ++i) {
        const float scaled = static_cast<float>(double(w[i * out + j]) * (127.0 / double(amax[j])));
        v.values[i * out + j] = static_cast<int32_t>(kernels::round_nearest_even(scaled));
      }
  v.col_sum.assign(out, 0);
  for (size_t i = 0; i < in; ++i)
    for (size_t j = 0; j < out; ++j) v.col_sum[j] += v.values[i * out + j];
  return v;
}

Engine::QuantLayer Engine::pack_layer(const FileLayer& src, const LayerValues& v, const void* kernel,
                                      Precision precision) {
  const KernelInfo& k = kernel_of(kernel);
  const size_t in = src.input_width, out = src.output_width, nr = k.panel_width;
  const size_t inputs_per_unit = precision == Precision::Int8 ? 4 : 2;  // 4 uint8 or 2 bf16
  const size_t per_block = kernels::kUnitBytes / k.weight_bytes;        // inputs per 4-byte column block

  QuantLayer q;
  q.info = {src.input_width, src.output_width, src.activation, src.op};
  q.units = round_up((in + inputs_per_unit - 1) / inputs_per_unit, k.unit_align);
  q.panels = round_up(out, nr) / nr;
  const size_t tail = out - (q.panels - 1) * nr;
  q.tail_stride = tail == nr ? nr : round_up(tail, k.tail_granule);
  q.bias = AlignedFloats(q.panels * nr);
  q.col_scale = AlignedFloats(q.panels * nr);
  q.col_sum = AlignedArray<int32_t>(q.panels * nr);
  std::copy(v.bias.begin(), v.bias.end(), q.bias.data());
  std::copy(v.col_scale.begin(), v.col_scale.end(), q.col_scale.data());
  std::copy(v.col_sum.begin(), v.col_sum.end(), q.col_sum.data());
  const std::vector<int32_t>& values = v.values;

  // Panel by panel, unit by unit, block by block (kernels.h, QuantDenseArgs); padding stays 0.
  const size_t full_panel = q.units * nr * k.subgroups * kernels::kUnitBytes;
  q.weights = AlignedArray<uint8_t>((q.panels - 1) * full_panel + q.units * q.tail_stride * k.subgroups *
                                                                       kernels::kUnitBytes);
  std::fill_n(q.weights.data(), q.weights.size(), uint8_t(0));
  for (size_t p = 0; p < q.panels; ++p) {
    const size_t stride = p + 1 == q.panels ? q.tail_stride : nr;
    const size_t width = std::min(nr, out - p * nr);
    uint8_t* panel = q.weights.data() + p * full_panel;
    for (size_t u = 0; u < q.units; ++u)
      for (size_t b = 0; b < k.subgroups; ++b)
        for (size_t i = 0; i < per_block; ++i) {
          const size_t row = u * inputs_per_unit + b * per_block + i;
          if (row >= in) continue;
          uint8_t* dst = panel + ((u * k.subgroups + b) * stride) * kernels::kUnitBytes + i * k.weight_bytes;
          for (size_t c = 0; c < width; ++c)
            put(dst + c * kernels::kUnitBytes, values[row * out + p * nr + c], k.weight_bytes);
        }
  }
  return q;
}

void Engine::measure_reference_deviation(const ReferenceSet& ref) {
  std::vector<float> y(size_t(ref.count) * output_width());
  predict(ref.inputs.data(), ref.count, y.data(), 1);
  float worst = 0.0f;
  for (size_t i = 0; i < y.size(); ++i) {
    const float d = std::fabs(y[i] - ref.expected[i]);
    worst = d > worst || d != d ? d : worst;  // a NaN output is reported, not hidden
  }
  reference_deviation_ = worst;
}

template <typename T>
void Engine::run_tile_quantized(const T* x, size_t rows, float* y, Scratch& s) const {
  const QuantPlan& plan = plan_for_rows(rows);
  const KernelInfo& k = kernel_of(plan.kernel);
  // The first dense layer's row preparation is the pass over the input rows that measures them.
  float* range = range_to_measure(x, rows, s, plan.layers[0].info.op == Op::Dense);
  const size_t stride = max_padded_width_;
  float* buffers[2] = {s.ping, s.pong};
  const float* in = nullptr;
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    if (params_[l].fused) continue;  // a pool its conv layer ran (Engine::set_pool_fusion): `in` is its output
    const QuantLayer& layer = plan.layers[l];
    const size_t width = layer.info.input_width, act_stride = layer.units * kernels::kUnitBytes;
    float* out = in == buffers[0] ? buffers[1] : buffers[0];
    if (layer.info.op != Op::Dense) {  // element-wise layers run in float, as on the exact path
      const float* src = in;
      size_t src_stride = stride;
      if (l == 0) {
        src_stride = width;
        if constexpr (std::is_same_v<T, uint8_t>) {
          kernels::pixels_to_float_scalar(x, rows * width, input_scale_, s.input);
          src = s.input;
        } else {
          src = x;
        }
      }
      run_elementwise(l, src, src_stride, rows, out, stride, s);
      activate(l, out, rows, stride);
      in = out;
      continue;
    }
    uint8_t* act = s.act;
    if constexpr (std::is_same_v<T, uint8_t>) {
      if (l == 0) {
        // Raw pixels are already the uint8 operand of the int8 kernels: x = input_scale * pixel.
        for (size_t r = 0; r < rows; ++r) {
          const uint8_t* pixels = x + r * width;
          uint8_t* row = act + r * act_stride;
          if (precision_ == Precision::Int8) {
            std::memcpy(row, pixels, width);
            std::memset(row + width, 0, act_stride - width);
            s.row_scale[r] = static_cast<float>(input_scale_);
            s.row_zero[r] = 0;
          } else {
            for (size_t i = 0; i < width; ++i) std::memcpy(row + 2 * i, &pixel_bf16_[pixels[i]], 2);
            std::memset(row + 2 * width, 0, act_stride - 2 * width);
          }
        }
      }
    }
    if (l > 0 || !std::is_same_v<T, uint8_t>) {
      const float* src = l == 0 ? reinterpret_cast<const float*>(x) : in;
      k.prepare_rows(src, l == 0 ? width : stride, rows, width, act, act_stride, s.row_scale, s.row_zero,
                     l == 0 ? range : nullptr);
    }
    const size_t blocks = (layer.units + kernels::kUnitBlock - 1) / kernels::kUnitBlock;
    if (k.unit_index)
      for (size_t r = 0; r < rows; ++r) {
        uint16_t* index = s.unit_index + r * layer.units;
        uint32_t* ends = s.block_ends + r * blocks;
        if (skip_zeros_) {
          k.unit_index(act + r * act_stride, layer.units, index, ends);
          continue;
        }
        for (size_t u = 0; u < layer.units; ++u) index[u] = static_cast<uint16_t>(u);
        for (size_t b = 0; b < blocks; ++b)
          ends[b] = static_cast<uint32_t>(std::min((b + 1) * kernels::kUnitBlock, layer.units));
      }
    k.quant_run({act, act_stride, rows, layer.units, s.block_ends, s.unit_index, s.row_scale,
                 s.row_zero, layer.weights.data(), layer.tail_stride, layer.col_scale.data(),
                 layer.col_sum.data(), layer.bias.data(), layer.panels, layer.info.output_width, out, stride,
                 layer.info.activation == Activation::Relu});
    activate(l, out, rows, stride);
    in = out;
  }
  const size_t width = output_width();
  for (size_t r = 0; r < rows; ++r) std::copy_n(in + r * stride, width, y + r * width);
}

template void Engine::run_tile_quantized(const float*, size_t, float*, Scratch&) const;
template void Engine::run_tile_quantized(const uint8_t*, size_t, float*, Scratch&) const;

}  // namespace mnist_engine
