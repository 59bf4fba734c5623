// The activations of format version 2, element-wise over float rows, written so that the compiler
// vectorises every loop: branch-free (selects, not jumps), no libm calls, bit manipulation through
// memcpy. Each f32-activation-<isa>.cpp includes this header under its own ISA flags, so one source
// gives the scalar, AVX2 and AVX-512 versions (XNNPACK's vunary kernels are separate per ISA; ours
// differ only in what the compiler may use). docs/FORMAT.md defines each function; Keras computes
// the same ones, and tests/test_activations.py holds every version to Keras and to numpy.
//
// NaN: every function maps NaN to NaN (the selects below are written so a NaN input reaches the
// output), except where Keras itself does not (relu_general, see FORMAT.md).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h"
#include "mnist_engine/vocabulary.h"

namespace mnist_engine::kernels {
namespace {  // internal linkage: each ISA's file gets its own copy (see kernels.h)

inline uint32_t bits_of(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
inline float abs_of(float x) { return float_of(bits_of(x) & 0x7fffffffu); }
inline float with_sign_of(float magnitude, float sign) {
  return float_of((bits_of(magnitude) & 0x7fffffffu) | (bits_of(sign) & 0x80000000u));
}
// max(x, 0) and friends that keep a NaN x (a plain `x > 0 ? x : 0` would turn it into 0).
inline float relu_keep_nan(float x) { return x < 0.0f ? 0.0f : x; }
inline float min_keep_nan(float x, float hi) { return x > hi ? hi : x; }

// e^x. x = n ln2 + r with |r| <= ln2/2 (n rounded to nearest by the 1.5 * 2^23 trick, no float to
// int conversion), e^r by its Taylor polynomial to r^7 (relative error below 6e-9), then scaled by
// 2^(n-1) * 2 so that n = 128 (x just under the overflow bound) still builds a finite power.
// Below -86.5 the result would be subnormal; it is returned as 0 (an error under 2e-38).
inline float exp_of(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860682030941723e-06f;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  float c = x > 88.72283f ? 88.72283f : x;
  c = c < -86.5f ? -86.5f : c;
  const float shifted = c * kLog2e + kMagic;
  const float n = shifted - kMagic;
  const float r = (c - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // The low bits of `shifted` hold n (two's complement): 2^(n-1) as a float's exponent field.
  const uint32_t exponent = (bits_of(shifted) - bits_of(kMagic) + 126u) << 23;
  const float e = p * float_of(exponent) * 2.0f;
  return x > 88.72283f ? __builtin_inff() : (x < -86.5f ? 0.0f : e);
}

// e^x - 1, exact near 0 (where e^x - 1 would cancel): Taylor to x^9 for |x| < 0.5.
inline float expm1_of(float x) {
  float p = 1.0f / 362880.0f;
  p = p * x + 1.0f / 40320.0f;
  p = p * x + 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  const float small = x + x * x * p;
  return abs_of(x) < 0.5f ? small : exp_of(x) - 1.0f;
}

// log(x) for x >= 1 (all that softplus and log_softmax need): x = m 2^e with m in [sqrt(1/2),
// sqrt(2)), log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| < 0.172, by its series to s^11.
inline float log_from_one(float x) {
  const uint32_t u = bits_of(x);
  const float m0 = float_of((u & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  const bool high = m0 > 1.41421356f;
  const float m = high ? m0 * 0.5f : m0;
  const float e = float(int32_t((u >> 23) & 0xffu) - 127 + (high ? 1 : 0));
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float p = 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  const float log_m = 2.0f * s * p;
  const float result = e * 0.693145751953125f + (log_m + e * 1.42860682030941723e-06f);
  // NaN and +Inf come through the bit manipulation as finite garbage: put them back.
  return x == x && x < __builtin_inff() ? result : x;
}

// log(1 + u) for 0 <= u <= 1, with the rounding of 1 + u compensated.
inline float log1p_small(float u) {
  const float w = 1.0f + u;
  return log_from_one(w) - ((w - 1.0f) - u) / w;
}

inline float sigmoid_of(float x) { return 1.0f / (1.0f + exp_of(-x)); }

// tanh(|x|) = -t / (t + 2), t = e^(-2|x|) - 1 in (-1, 0]: no overflow for any x, exact near 0.
inline float tanh_of(float x) {
  const float t = expm1_of(-2.0f * abs_of(x));
  return with_sign_of(-t / (t + 2.0f), x);
}

inline float softplus_of(float x) { return relu_keep_nan(x) + log1p_small(exp_of(-abs_of(x))); }

// erf from two fitted polynomials (tools/fit_erf.py, max error 1.4e-7): x P(x^2) below 1,
// 1 - e^(-x^2) Q(x - 2.5) from 1 to 4, and 1 past 4 (erfc(4) = 1.5e-8 is below float32's step at 1).
inline float erf_of(float x) {
  float a = abs_of(x);
  a = a > 4.0f ? 4.0f : a;
  const float a2 = a * a;
  float p = 7.898210164e-05f;
  p = p * a2 + -8.024354116e-04f;
  p = p * a2 + 5.190053576e-03f;
  p = p * a2 + -2.685480854e-02f;
  p = p * a2 + 1.128361243e-01f;
  p = p * a2 + -3.761262884e-01f;
  p = p * a2 + 1.128379167e+00f;
  const float t = a - 2.5f;
  float q = -3.833665126e-07f;
  q = q * t + 1.658907596e-06f;
  q = q * t + -4.010595118e-06f;
  q = q * t + 1.442544313e-05f;
  q = q * t + -5.894006182e-05f;
  q = q * t + 2.128326312e-04f;
  q = q * t + -7.337153960e-04f;
  q = q * t + 2.466092450e-03f;
  q = q * t + -8.001473875e-03f;
  q = q * t + 2.493817353e-02f;
  q = q * t + -7.434736060e-02f;
  q = q * t + 2.108063588e-01f;
  const float value = a < 1.0f ? a * p : 1.0f - exp_of(-a2) * q;
  return with_sign_of(value, x);
}

template <typename F>
inline void map(float* y, size_t n, F f) {
  for (size_t i = 0; i < n; ++i) y[i] = f(y[i]);
}

// Softmax and log_softmax over one row. A NaN anywhere makes the whole row NaN.
inline void softmax_row(float* y, size_t n, bool log) {
  float m = -__builtin_inff();
  bool nan = false;
  for (size_t i = 0; i < n; ++i) {
    m = y[i] > m ? y[i] : m;
    nan |= y[i] != y[i];
  }
  if (nan) m = __builtin_nanf("");
  float sum = 0.0f;
  if (log) {
    for (size_t i = 0; i < n; ++i) sum += exp_of(y[i] - m);
    // (v - m) - log(sum), as Keras computes it: v - (m + log(sum)) would round m + log(sum) at m's
    // magnitude and lose the small results (the row's largest values) to cancellation.
    const float log_sum = log_from_one(sum);
    for (size_t i = 0; i < n; ++i) y[i] = (y[i] - m) - log_sum;
    return;
  }
  for (size_t i = 0; i < n; ++i) sum += (y[i] = exp_of(y[i] - m));
  const float inverse = 1.0f / sum;
  for (size_t i = 0; i < n; ++i) y[i] *= inverse;
}

// One row of `n` values through a version-2 activation (code >= kVersion1Activations; the engine
// keeps the version-1 ones on their original code, so version-1 files compute exactly what they
// did). `p`: the activation's parameters, FORMAT.md order (prelu: one per column).
inline void activate_row(Activation a, const float* p, float* y, size_t n) {
  constexpr float kSqrtHalf = 0.70710678118654752f, kSqrt2OverPi = 0.79788456080286536f;
  constexpr float kSeluAlpha = 1.67326324235437728f, kSeluScale = 1.05070098735548049f;
  switch (a) {
    case Activation::Gelu:
      return map(y, n, [&](float v) { return 0.5f * v * (1.0f + erf_of(v * kSqrtHalf)); });
    case Activation::GeluTanh:
      return map(y, n, [&](float v) { return 0.5f * v * (1.0f + tanh_of(kSqrt2OverPi * (v + 0.044715f * v * v * v))); });
    case Activation::Silu: return map(y, n, [](float v) { return v / (1.0f + exp_of(-v)); });
    case Activation::Elu: {
      const float alpha = p[0];
      return map(y, n, [=](float v) { return v > 0.0f ? v : alpha * expm1_of(v); });
    }
    case Activation::Selu:
      return map(y, n, [&](float v) { return kSeluScale * (v > 0.0f ? v : kSeluAlpha * expm1_of(v)); });
    case Activation::Softplus: return map(y, n, softplus_of);
    case Activation::Softsign: return map(y, n, [](float v) { return v / (1.0f + abs_of(v)); });
    case Activation::LeakyRelu: {
      const float slope = p[0];
      return map(y, n, [=](float v) { return v < 0.0f ? slope * v : v; });
    }
    case Activation::Relu6: return map(y, n, [](float v) { return min_keep_nan(relu_keep_nan(v), 6.0f); });
    case Activation::HardSigmoid:
      return map(y, n, [](float v) { return min_keep_nan(relu_keep_nan(v + 3.0f), 6.0f) / 6.0f; });
    case Activation::HardSilu:
      return map(y, n, [](float v) { return v * (min_keep_nan(relu_keep_nan(v + 3.0f), 6.0f) / 6.0f); });
    case Activation::Exponential: return map(y, n, exp_of);
    case Activation::Mish: return map(y, n, [](float v) { return v * tanh_of(softplus_of(v)); });
    case Activation::LogSoftmax: return softmax_row(y, n, true);
    case Activation::ReluGeneral: {
      // Keras's steps (FORMAT.md): the branches on the parameters are Keras's own, taken once per row.
      const float slope = p[0], threshold = p[1], max_value = p[2];
      const bool clip = max_value < __builtin_inff();
      if (threshold != 0.0f)
        map(y, n, [=](float v) {
          const float a = v > threshold ? v : 0.0f;
          const float clipped = clip ? min_keep_nan(relu_keep_nan(a), max_value) : a;
          return slope != 0.0f ? clipped - slope * relu_keep_nan(threshold - v) : clipped;
        });
      else
        map(y, n, [=](float v) {
          const float a = relu_keep_nan(v);
          const float clipped = clip ? min_keep_nan(a, max_value) : a;
          return slope != 0.0f ? clipped - slope * relu_keep_nan(-v) : clipped;
        });
      return;
    }
    case Activation::Prelu:
      for (size_t i = 0; i < n; ++i) y[i] = y[i] < 0.0f ? p[i] * y[i] : y[i];
      return;
    default: return;  // version 1's activations are applied by the engine
  }
}

}  // namespace
}  // namespace mnist_engine::kernels
