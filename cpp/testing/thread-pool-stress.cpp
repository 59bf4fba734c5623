// The thread pool (cpp/src/thread_pool.h) under ThreadSanitizer: three callers at once run loops
// of 1..257 items on 1..5 threads. Each item writes a plain int, so two participants running the
// same item are a data race TSan reports, and a count other than 1 is an item lost or run twice.
// Then a caller that runs alone because the pool is busy must make the pool's workers stand down.
// Built and run by tools/sanitize_tests.sh; exits 1 on any wrong count.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "thread_pool.h"

// While a caller runs a loop alone because the pool is busy, the pool's workers claim nothing new:
// the pool's caller finishes its loop, and the two callers have a core each. Every item of the
// pool's loop waits until the lone caller is inside its loop (so counted), so a worker can have
// run at most the one item it held before; without the rule it would run about half of them.
long workers_stand_down() {
  std::atomic<bool> started{false}, lone_inside{false}, pool_done{false};
  std::atomic<long> by_workers{0}, runs{0};
  std::thread lone([&] {
    while (!started.load()) std::this_thread::yield();
    mnist_engine::parallel_for(2, 2, [&](size_t, int) {
      lone_inside.store(true);
      while (!pool_done.load()) std::this_thread::yield();
    });
  });
  mnist_engine::parallel_for(400, 2, [&](size_t, int slot) {
    started.store(true);
    while (!lone_inside.load()) std::this_thread::yield();
    // Items long enough that a worker left claiming would take a share of them.
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    while (std::chrono::steady_clock::now() < until) {
    }
    runs.fetch_add(1);
    if (slot != 0) by_workers.fetch_add(1);
  });
  pool_done.store(true);
  lone.join();
  std::printf("thread pool: %ld of 400 items run by a worker while a caller ran alone (at most 1)\n",
              by_workers.load());
  return (by_workers.load() > 1) + (runs.load() != 400);
}

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
  wrong.fetch_add(workers_stand_down());
  return wrong.load() != 0;
}
