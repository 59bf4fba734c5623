// Checks the software model of AMX (amx-model.h) before the kernels are tested on it:
//  - TDPBUSD against a plain integer matrix product (bit for bit, wrapping included);
//  - TDPBF16PS against a float64 product of the same bf16 values (within float32's rounding of
//    the sums), with denormal inputs read as zero, and its documented order (even and odd
//    products summed apart) on values where the order shows;
//  - the faults: LDTILECFG's #GP rules and the products' #UD rules;
//  - on a CPU with AMX, against the instructions themselves, bit for bit.
// Exits 1 if any check fails. Built by MNIST_ENGINE_AMX_MODEL=ON (tools/amx_model_check.sh).
#include "amx-model.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "dispatch.h"

// The same block product, compiled here against the model and in amx-model-hardware.cpp against
// the instructions.
#define MNIST_ENGINE_AMX_BLOCK_PRODUCT model_product
#include "amx-block-product.h"

namespace mnist_engine::amx_model {
void hardware_product(const uint8_t* a, const uint8_t* b, uint8_t* c, bool bf16);
}

namespace {

using namespace mnist_engine::amx_model;

int failures = 0;
void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  failures += !ok;
}

struct alignas(64) Config {
  uint8_t bytes[64] = {};
};
Config full_config() {
  Config c;
  c.bytes[0] = 1;
  for (int t = 0; t < 8; ++t) {
    c.bytes[16 + 2 * t] = 64;
    c.bytes[48 + t] = 16;
  }
  return c;
}

uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);  // test values are exact in bf16
}
double bf16_value(uint16_t h) { return make_fp32(h); }  // denormals as zero

void test_tdpbusd(std::mt19937& rng) {
  std::vector<uint8_t> a(1024), b(1024), c(1024);
  for (auto& v : a) v = static_cast<uint8_t>(rng());
  for (auto& v : b) v = static_cast<uint8_t>(rng());
  std::vector<int32_t> start(256);
  for (auto& v : start) v = static_cast<int32_t>(rng());  // near the int32 limits: wrapping shows
  std::memcpy(c.data(), start.data(), 1024);
  model_product(a.data(), b.data(), c.data(), false);
  bool same = true;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      uint32_t want = static_cast<uint32_t>(start[m * 16 + n]);
      for (int k = 0; k < 64; ++k)
        want += static_cast<uint32_t>(int32_t(a[m * 64 + k]) * int32_t(int8_t(b[(k / 4) * 64 + 4 * n + k % 4])));
      uint32_t got;
      std::memcpy(&got, &c[(m * 16 + n) * 4], 4);
      same &= got == want;
    }
  check(same, "TDPBUSD equals the integer product C + A(u8) . B(s8), wrapping in int32");
}

void test_tdpbf16ps(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<uint16_t> a(512), b(512);
  for (auto& v : a) v = bf16_bits(std::nearbyint(normal(rng) * 64) / 64);
  for (auto& v : b) v = bf16_bits(std::nearbyint(normal(rng) * 64) / 64);
  a[3] = 0x0001;  // a denormal input (DAZ: read as zero)
  b[70] = 0x8040;
  std::vector<float> c(256, 0.5f);
  model_product(reinterpret_cast<uint8_t*>(a.data()), reinterpret_cast<uint8_t*>(b.data()),
                reinterpret_cast<uint8_t*>(c.data()), true);
  double worst = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      double want = 0.5, magnitude = 0.5;
      for (int k = 0; k < 32; ++k) {
        const double p = bf16_value(a[m * 32 + k]) * bf16_value(b[(k / 2) * 32 + 2 * n + k % 2]);
        want += p;
        magnitude += std::fabs(p);
      }
      worst = std::max(worst, std::fabs(c[m * 16 + n] - want) / magnitude);
    }
  // 33 float32 roundings at most, each within 2^-24 of the magnitude summed so far.
  char figure[32];
  std::snprintf(figure, sizeof figure, "%.3g", worst);
  check(worst <= 33 * std::ldexp(1.0, -24),
        std::string("TDPBF16PS within float32 rounding of the float64 product (") + figure + " of the magnitude)");

  // The order: row 0 of A is (2^24, 1) in every pair and B's column 0 is (1, 1), (-1, 0)...: even
  // products sum to 2^24 - 2^24 = 0 apart from the odd ones (1 each), so C = 16 exactly; a plain
  // sequential sum would lose the ones against 2^24 and give less.
  std::vector<uint16_t> a2(512, 0), b2(512, 0);
  for (int k = 0; k < 16; ++k) {
    a2[2 * k] = bf16_bits(16777216.0f);
    a2[2 * k + 1] = bf16_bits(1.0f);
    b2[k * 32] = bf16_bits(k % 2 ? -1.0f : 1.0f);
    b2[k * 32 + 1] = bf16_bits(1.0f);
  }
  std::vector<float> c2(256, 0.0f);
  model_product(reinterpret_cast<uint8_t*>(a2.data()), reinterpret_cast<uint8_t*>(b2.data()),
                reinterpret_cast<uint8_t*>(c2.data()), true);
  check(c2[0] == 16.0f, "TDPBF16PS sums even and odd products apart, then adds them (got " +
                            std::to_string(c2[0]) + ", want 16)");
}

template <typename F>
void expect_fault(const char* kind, F f, const std::string& what) {
  try {
    f();
  } catch (const AmxFault& e) {
    check(std::string(e.what()).rfind(kind, 0) == 0, what + " -> " + e.what());
    return;
  }
  check(false, what + " -> no fault");
}

void test_faults() {
  tilerelease();
  expect_fault("#UD", [] { tilezero(0); }, "TILEZERO before LDTILECFG");
  const auto with = [](int byte, int value) {
    Config c = full_config();
    c.bytes[byte] = static_cast<uint8_t>(value);
    return c;
  };
  for (const auto& [byte, value, what] : std::vector<std::tuple<int, int, std::string>>{
           {0, 2, "palette 2"}, {5, 1, "a reserved byte"}, {16, 65, "colsb 65"}, {48, 17, "rows 17"},
           {48 + 8, 1, "rows of tile 8 (past max_names)"}, {16 + 2 * 8, 4, "colsb of tile 8"}}) {
    const Config c = with(byte, value);
    expect_fault("#GP", [&] { ldtilecfg(&c); }, "LDTILECFG with " + what);
  }
  const Config full = full_config();
  ldtilecfg(&full);
  expect_fault("#UD", [] { tdpbusd(0, 0, 1); }, "TDPBUSD with C == A");
  Config narrow = full_config();
  narrow.bytes[48 + 2] = 8;  // B (tmm2) holds 8 rows while A has 16 dwords per row
  ldtilecfg(&narrow);
  expect_fault("#UD", [] { tdpbusd(0, 1, 2); }, "TDPBUSD with A's columns != B's rows");
  narrow = full_config();
  narrow.bytes[48 + 1] = 8;
  ldtilecfg(&narrow);
  expect_fault("#UD", [] { tdpbf16ps(0, 1, 2); }, "TDPBF16PS with C's rows != A's rows");
  tilerelease();
}

// The model against the instructions, where the CPU has them.
void test_against_hardware(std::mt19937& rng) {
  if (!mnist_engine::cpu_runs_amx()) {
    std::printf("skip the model against the hardware: this CPU (or OS, or process) runs no AMX\n");
    return;
  }
  std::normal_distribution<float> normal;
  bool int8_same = true, bf16_same = true;
  int bf16_differences = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<uint8_t> a(1024), b(1024), c0(1024);
    for (auto& v : a) v = static_cast<uint8_t>(rng());
    for (auto& v : b) v = static_cast<uint8_t>(rng());
    for (auto& v : c0) v = static_cast<uint8_t>(rng());
    std::vector<uint8_t> model = c0, hardware = c0;
    model_product(a.data(), b.data(), model.data(), false);
    hardware_product(a.data(), b.data(), hardware.data(), false);
    int8_same &= model == hardware;

    // bf16: normal values of mixed scales, some denormals, and a start in C.
    std::vector<uint16_t> ah(512), bh(512);
    std::vector<float> cf(256);
    for (auto& v : ah) v = bf16_bits(std::ldexp(std::nearbyint(normal(rng) * 128) / 128, int(rng() % 40) - 20));
    for (auto& v : bh) v = bf16_bits(std::ldexp(std::nearbyint(normal(rng) * 128) / 128, int(rng() % 40) - 20));
    for (int i = 0; i < 8; ++i) ah[rng() % 512] = static_cast<uint16_t>(rng() % 0x7f);  // denormals
    for (auto& v : cf) v = normal(rng);
    std::vector<float> mf = cf, hf = cf;
    model_product(reinterpret_cast<uint8_t*>(ah.data()), reinterpret_cast<uint8_t*>(bh.data()),
                  reinterpret_cast<uint8_t*>(mf.data()), true);
    hardware_product(reinterpret_cast<uint8_t*>(ah.data()), reinterpret_cast<uint8_t*>(bh.data()),
                     reinterpret_cast<uint8_t*>(hf.data()), true);
    for (int i = 0; i < 256; ++i) bf16_differences += std::memcmp(&mf[i], &hf[i], 4) != 0;
    bf16_same &= std::memcmp(mf.data(), hf.data(), 1024) == 0;
  }
  check(int8_same, "TDPBUSD: the model equals the instruction on 200 random blocks");
  check(bf16_same, "TDPBF16PS: the model equals the instruction on 200 random blocks (" +
                       std::to_string(bf16_differences) + " of 51200 sums differ)");
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  test_tdpbusd(rng);
  test_tdpbf16ps(rng);
  test_faults();
  test_against_hardware(rng);
  std::printf("%s\n", failures ? "AMX model: FAILED" : "AMX model: every check passed");
  return failures ? 1 : 0;
}
