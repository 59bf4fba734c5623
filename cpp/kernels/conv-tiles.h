// How the direct convolutions (conv-direct.h, conv-quant.h) cut an output image into tiles of
// neighbouring pixels. Include it from kernel files only.
#pragma once

#include <cstddef>

namespace mnist_engine::kernels {
namespace {  // internal linkage: each kernel file gets its own copy, built with its own flags

// Calls tile(oy, ox, pixels) for each tile of 1..MR neighbouring pixels of every output row. The
// tiles of a row are of nearly equal size (26 pixels: 9, 9, 8 rather than 12, 12, 2): a narrow
// tile has too few accumulators to hide the multiply-add latency.
template <int MR, class Tile>
inline void for_each_tile(size_t out_h, size_t out_w, Tile&& tile) {
  const size_t count = (out_w + MR - 1) / MR, small = out_w / count, larger = out_w % count;
  for (size_t oy = 0; oy < out_h; ++oy)
    for (size_t t = 0, ox = 0; t < count; ++t) {
      const size_t pixels = small + (t < larger);
      tile(oy, ox, pixels);
      ox += pixels;
    }
}

}  // namespace
}  // namespace mnist_engine::kernels
