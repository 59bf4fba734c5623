// A software model of the AMX instructions the kernels use, written from the pseudo-code of the
// Intel SDM (vol. 2, LDTILECFG, TILELOADD, TILESTORED, TILEZERO, TILERELEASE, TDPBUSD, TDPBF16PS),
// so that the unmodified AMX kernel sources run, and are tested, on any CPU with AVX-512F (their
// epilogues are AVX-512): a build with MNIST_ENGINE_AMX_MODEL=ON force-includes this header into
// them instead of giving them -mamx-* flags. The real instructions fault (#GP, #UD) where the model
// throws AmxFault.
//
// Tile state is per thread, as the hardware's is (XSAVE keeps it per thread); the model keeps it per
// translation unit too, which is all a kernel needs: it configures, computes and releases within one
// call. cpp/testing/amx-model-test.cpp checks the model against plain matrix products and, on a
// CPU with AMX, against the instructions themselves.
#pragma once

#include <immintrin.h>  // first: the tile intrinsics it declares are replaced below

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>

namespace mnist_engine::amx_model {
namespace {

// No std::string: the model is compiled into kernel files with ISA flags, where an inline library
// function becomes a weak symbol that the linker might keep for the baseline build.
struct AmxFault : std::exception {
  char message[160];
  const char* what() const noexcept override { return message; }
};

// Palette 1, the only one: 8 tiles ("max_names") of at most 16 rows x 64 bytes.
constexpr int kMaxNames = 8, kMaxRows = 16, kBytesPerRow = 64;

struct TileState {
  bool configured = false;
  uint8_t palette = 0, start_row = 0;
  uint16_t colsb[kMaxNames] = {};
  uint8_t rows[kMaxNames] = {};
  uint8_t data[kMaxNames][kMaxRows][kBytesPerRow] = {};
};
thread_local TileState tiles;

[[noreturn]] __attribute__((format(printf, 2, 3))) void fault(const char* kind, const char* format, ...) {
  AmxFault f;
  const int n = std::snprintf(f.message, sizeof f.message, "%s: ", kind);
  va_list args;
  va_start(args, format);
  std::vsnprintf(f.message + n, sizeof f.message - n, format, args);
  va_end(args);
  throw f;
}

inline void check_tile(int t, const char* what) {
  if (t < 0 || t >= kMaxNames) fault("#UD", "%s: no register tmm%d", what, t);
  if (!tiles.configured) fault("#UD", "%s: tiles are not configured (LDTILECFG first)", what);
}

// write_row_and_zero / zero_upper_rows: a tile's bytes past its configured shape read as zero.
inline void zero_outside_shape(int t) {
  for (int r = 0; r < kMaxRows; ++r)
    for (int c = 0; c < kBytesPerRow; ++c)
      if (r >= tiles.rows[t] || c >= tiles.colsb[t]) tiles.data[t][r][c] = 0;
}

// LDTILECFG: the 64-byte configuration; palette 0 returns to the init state. #GP for a palette
// past 1, nonzero reserved bytes, a shape past the palette's limits, or a tile past max_names
// that is not all zero.
inline void ldtilecfg(const void* config) {
  uint8_t cfg[64];
  std::memcpy(cfg, config, 64);
  const uint8_t palette = cfg[0];
  if (palette > 1) fault("#GP", "LDTILECFG: palette %d (this CPU has palette 1)", palette);
  if (palette == 0) {
    tiles = TileState{};
    return;
  }
  for (int i = 2; i < 16; ++i)
    if (cfg[i] != 0) fault("#GP", "LDTILECFG: reserved byte %d is not zero", i);
  TileState next;
  next.palette = palette;
  next.start_row = cfg[1];
  for (int t = 0; t < 16; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, cfg + 16 + 2 * t, 2);
    const uint8_t rows = cfg[48 + t];
    if (t >= kMaxNames) {
      if (colsb != 0 || rows != 0) fault("#GP", "LDTILECFG: tile %d past max_names is set", t);
      continue;
    }
    if (colsb > kBytesPerRow) fault("#GP", "LDTILECFG: tile %d colsb %d", t, colsb);
    if (rows > kMaxRows) fault("#GP", "LDTILECFG: tile %d rows %d", t, rows);
    next.colsb[t] = colsb;
    next.rows[t] = rows;
  }
  next.configured = true;  // and every tile zero
  tiles = next;
}

inline void tilerelease() { tiles = TileState{}; }

inline void tilezero(int t) {
  check_tile(t, "TILEZERO");
  std::memset(tiles.data[t], 0, sizeof(tiles.data[t]));
}

// TILELOADD: rows start_row .. rows-1 from base + row * stride, colsb bytes each; the rest zero.
inline void tileloadd(int t, const void* base, long stride) {
  check_tile(t, "TILELOADD");
  for (int r = tiles.start_row; r < tiles.rows[t]; ++r)
    std::memcpy(tiles.data[t][r], static_cast<const uint8_t*>(base) + r * stride, tiles.colsb[t]);
  zero_outside_shape(t);
  tiles.start_row = 0;
}

inline void tilestored(int t, void* base, long stride) {
  check_tile(t, "TILESTORED");
  for (int r = tiles.start_row; r < tiles.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, tiles.data[t][r], tiles.colsb[t]);
  tiles.start_row = 0;
}

// The shape rules of TDPBUSD and TDPBF16PS (#UD): three different registers, C (m x n dwords) +=
// A (m x k dwords) . B (k x n dwords).
inline void check_product(int c, int a, int b, const char* what) {
  check_tile(c, what);
  check_tile(a, what);
  check_tile(b, what);
  if (c == a || c == b || a == b) fault("#UD", "%s: tile registers are not distinct", what);
  if (tiles.colsb[c] % 4 || tiles.colsb[a] % 4 || tiles.colsb[b] % 4)
    fault("#UD", "%s: colsb is not a multiple of 4", what);
  if (tiles.rows[c] != tiles.rows[a]) fault("#UD", "%s: C and A have different rows", what);
  if (tiles.colsb[a] / 4 != tiles.rows[b]) fault("#UD", "%s: A's columns are not B's rows", what);
  if (tiles.colsb[c] != tiles.colsb[b]) fault("#UD", "%s: C and B have different columns", what);
}

template <typename T>
T element(int t, int row, int index) {
  T v;
  std::memcpy(&v, &tiles.data[t][row][index * sizeof(T)], sizeof(T));
  return v;
}
template <typename T>
void set_element(int t, int row, int index, T v) {
  std::memcpy(&tiles.data[t][row][index * sizeof(T)], &v, sizeof(T));
}

// TDPBUSD: each dword of C gains the four products of A's unsigned bytes and B's signed bytes,
// in int32 arithmetic that wraps (DPBD).
inline void tdpbusd(int c, int a, int b) {
  check_product(c, a, b, "TDPBUSD");
  for (int m = 0; m < tiles.rows[c]; ++m)
    for (int k = 0; k < tiles.colsb[a] / 4; ++k)
      for (int n = 0; n < tiles.colsb[c] / 4; ++n) {
        uint32_t sum = element<uint32_t>(c, m, n);
        for (int i = 0; i < 4; ++i)
          sum += static_cast<uint32_t>(int32_t(element<uint8_t>(a, m, 4 * k + i)) *
                                       int32_t(element<int8_t>(b, k, 4 * n + i)));
        set_element(c, m, n, sum);
      }
  zero_outside_shape(c);
}

// Denormals: DAZ reads them as zero of their sign, FTZ writes zero of the result's sign.
inline float flush(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0 && (u & 0x007fffffu) != 0) u &= 0x80000000u;
  std::memcpy(&v, &u, 4);
  return v;
}
inline float make_fp32(uint16_t bf16) {
  const uint32_t u = uint32_t(bf16) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return flush(f);
}

// TDPBF16PS: per row, the even and the odd products of each pair are accumulated apart (FP32 FMA,
// DAZ, FTZ, round to nearest even) over all of k, then even + odd is added to C. The library is
// built without -ffast-math, and MXCSR's rounding is nearest-even unless a caller changed it;
// DAZ/FTZ are applied by hand at every step.
inline void tdpbf16ps(int c, int a, int b) {
  check_product(c, a, b, "TDPBF16PS");
  const int n_cols = tiles.colsb[c] / 4;
  for (int m = 0; m < tiles.rows[c]; ++m) {
    float even[kBytesPerRow / 4] = {}, odd[kBytesPerRow / 4] = {};
    for (int k = 0; k < tiles.colsb[a] / 4; ++k)
      for (int n = 0; n < n_cols; ++n) {
        even[n] = flush(__builtin_fmaf(make_fp32(element<uint16_t>(a, m, 2 * k)),
                                       make_fp32(element<uint16_t>(b, k, 2 * n)), even[n]));
        odd[n] = flush(__builtin_fmaf(make_fp32(element<uint16_t>(a, m, 2 * k + 1)),
                                      make_fp32(element<uint16_t>(b, k, 2 * n + 1)), odd[n]));
      }
    for (int n = 0; n < n_cols; ++n)
      set_element(c, m, n, flush(flush(element<float>(c, m, n)) + flush(even[n] + odd[n])));
  }
  zero_outside_shape(c);
}

}  // namespace
}  // namespace mnist_engine::amx_model

// The kernels' intrinsics, now the model's. Register numbers are literals in the kernels, as GCC's
// intrinsics require.
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#undef _tile_dpbf16ps
#define _tile_loadconfig(config) ::mnist_engine::amx_model::ldtilecfg(config)
#define _tile_release() ::mnist_engine::amx_model::tilerelease()
#define _tile_loadd(t, base, stride) ::mnist_engine::amx_model::tileloadd(t, base, stride)
#define _tile_stored(t, base, stride) ::mnist_engine::amx_model::tilestored(t, base, stride)
#define _tile_zero(t) ::mnist_engine::amx_model::tilezero(t)
#define _tile_dpbusd(c, a, b) ::mnist_engine::amx_model::tdpbusd(c, a, b)
#define _tile_dpbf16ps(c, a, b) ::mnist_engine::amx_model::tdpbf16ps(c, a, b)
