// The machine's measured FMA peak, the yardstick tools/bench.py divides every runner by.
#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch.h"
#include "mnist_engine/engine.h"

#include <thread>

namespace mnist_engine {

double measure_fma_peak_gflops(const KernelInfo& k, int threads, double seconds) {
  // Checked before any arithmetic: a NaN or infinite duration would make the iteration count's
  // float-to-integer conversion undefined.
  if (!(seconds >= 0.001 && seconds <= 60.0))
    throw std::invalid_argument("expected seconds in 0.001..60, got " + std::to_string(seconds));
  threads = check_threads(threads, "threads");
  using clock = std::chrono::steady_clock;
  const auto elapsed = [](clock::time_point t0) {
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  // Calibrate on one thread so the timed run lasts about `seconds`.
  uint64_t iterations = 1 << 16;
  for (;;) {
    const auto t0 = clock::now();
    volatile float sink = k.fma_peak(iterations);
    (void)sink;
    const double t = elapsed(t0);
    if (t > 0.02) {
      iterations = static_cast<uint64_t>(double(iterations) * std::clamp(seconds / t, 0.1, 3000.0));
      break;
    }
    iterations *= 4;
  }
  // The same guard as predict: one thread in a child forked after a team ran.
  threads = effective_threads(threads);
  // One loop per thread, all at once: threads of their own rather than the pool's, whose dynamic
  // claiming would let one thread run two loops.
  std::vector<float> sinks(threads);
  std::vector<std::thread> others;
  others.reserve(threads - 1);
  const auto t0 = clock::now();
  for (int i = 1; i < threads; ++i) others.emplace_back([&, i] { sinks[i] = k.fma_peak(iterations); });
  sinks[0] = k.fma_peak(iterations);
  for (std::thread& t : others) t.join();
  const double t = elapsed(t0);
  volatile float sink = sinks[0];
  (void)sink;
  return 2.0 * 12.0 * k.fma_lanes * double(iterations) * threads / t / 1e9;
}

}  // namespace mnist_engine
