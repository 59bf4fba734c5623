// The thread pool (cpp/src/thread_pool.h) under ThreadSanitizer: three callers at once run loops
// of 1..257 items on 1..5 threads. Each item writes a plain int, so two participants running the
// same item are a data race TSan reports, and a count other than 1 is an item lost or run twice.
// Built and run by tools/sanitize_tests.sh; exits 1 on any wrong count.
#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "thread_pool.h"

int main() {
  std::atomic<long> wrong{0};
  const auto caller = [&](int seed) {
    const size_t sizes[] = {1, 2, 3, 7, 64, 257};
    for (int loop = 0; loop < 3000; ++loop) {
      const size_t items = sizes[(loop + seed) % 6];
      const int threads = 1 + (loop + seed) % 5;
      std::vector<int> runs(items, 0);
      mnist_engine::parallel_for(items, threads, [&](size_t i, int slot) {
        runs[i] += 1;
        if (slot < 0 || slot >= threads) wrong.fetch_add(1);
      });
      for (int r : runs) wrong.fetch_add(r != 1);
    }
  };
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) callers.emplace_back(caller, i);
  for (std::thread& t : callers) t.join();
  std::printf("thread pool: %ld items run other than exactly once\n", wrong.load());
  return wrong.load() != 0;
}
