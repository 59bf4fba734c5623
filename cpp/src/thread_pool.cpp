#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <pthread.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace mnist_engine {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

using Clock = std::chrono::steady_clock;

// How long a worker polls for the next loop before it sleeps: longer than the gap between a
// model's layers (microseconds), far shorter than a time slice another process could use.
constexpr auto kWorkerSpin = std::chrono::microseconds(200);
// How long a caller polls for items that workers hold before it offers its core to others: a
// worker that holds one and is not running needs a core to finish it.
constexpr auto kCallerSpin = std::chrono::microseconds(50);

// The claim word: the loop's generation (high 32 bits) and the next unclaimed item (low 32).
// kClosed marks a generation whose fields are being written: nothing can be claimed from it.
constexpr uint32_t kClosed = 0xffffffffu;
inline uint64_t claim_word(uint32_t generation, uint32_t item) { return uint64_t(generation) << 32 | item; }
inline uint32_t generation_of(uint64_t word) { return uint32_t(word >> 32); }
inline uint32_t item_of(uint64_t word) { return uint32_t(word); }

class Pool {
 public:
  void run(size_t items, int threads, LoopBody body, void* context);

 private:
  void work(int slot);
  void claim_items(int slot, uint64_t word);
  int grow(int helpers);

  // One loop at a time: a caller that finds the pool busy runs its loop alone.
  std::mutex busy_;
  std::vector<std::thread> workers_;  // guarded by busy_; worker i has slot i + 1

  // The loop. A worker reads these only after seeing its generation open in claim_, and uses them
  // only if it then claims an item of that generation: a caller rewrites them only after closing
  // claim_ to a new generation, which makes every later claim on the old one fail. Atomic (relaxed)
  // so that a worker's read racing a rewrite is well defined; its claim then fails.
  std::atomic<uint64_t> claim_{claim_word(0, kClosed)};
  std::atomic<size_t> items_{0};
  std::atomic<int> helpers_{0};
  std::atomic<LoopBody> body_{nullptr};
  std::atomic<void*> context_{nullptr};
  std::atomic<size_t> done_by_workers_{0};
  // Callers running a loop alone because the pool was busy (two Python threads predicting at
  // once, the server's batcher beside a Dask task). While there are any, workers claim nothing
  // and do not poll: the pool's caller and each lone caller then have a core apiece, rather than
  // more threads than cores taking turns.
  std::atomic<int> lone_callers_{0};

  // Sleeping workers. POSIX's mutex and condition rather than std::condition_variable, whose
  // wait() is a GLIBCXX_3.4.30 symbol since GCC 12: it would raise the wheel's manylinux tag from
  // 2_34 to 2_35 and shut out RHEL 9.
  pthread_mutex_t sleep_mutex_ = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t wake_ = PTHREAD_COND_INITIALIZER;
  std::atomic<int> sleepers_{0};
};

void Pool::run(size_t items, int threads, LoopBody body, void* context) {
  const size_t wanted = std::min(size_t(std::max(threads, 1)) - 1, items > 0 ? items - 1 : 0);
  std::unique_lock<std::mutex> hold(busy_, std::defer_lock);
  const int helpers = wanted == 0 || items >= kClosed || !hold.try_lock() ? 0 : grow(int(wanted));
  if (helpers == 0) {
    const bool lone = wanted > 0 && !hold.owns_lock();
    if (lone) lone_callers_.fetch_add(1);
    for (size_t i = 0; i < items; ++i) body(context, i, 0);
    if (lone) lone_callers_.fetch_sub(1);
    return;
  }
  // Close the last generation, write this loop, open it (seq_cst: see the sleepers below).
  const uint32_t generation = generation_of(claim_.load(std::memory_order_relaxed)) + 1;
  claim_.store(claim_word(generation, kClosed));
  items_.store(items, std::memory_order_relaxed);
  helpers_.store(helpers, std::memory_order_relaxed);
  body_.store(body, std::memory_order_relaxed);
  context_.store(context, std::memory_order_relaxed);
  done_by_workers_.store(0, std::memory_order_relaxed);
  claim_.store(claim_word(generation, 0));
  // A worker counts itself a sleeper before it checks claim_ a last time; this caller stores claim_
  // before it reads the count. So either the worker sees the loop, or the caller sees the sleeper.
  if (sleepers_.load() > 0) {
    pthread_mutex_lock(&sleep_mutex_);
    pthread_cond_broadcast(&wake_);
    pthread_mutex_unlock(&sleep_mutex_);
  }
  // The caller's items: it owns this generation, so a plain increment claims (past the end is
  // harmless: workers check the bound before they claim).
  size_t mine = 0;
  for (;;) {
    const uint32_t item = item_of(claim_.fetch_add(1, std::memory_order_acq_rel));
    if (item >= items) break;
    body(context, item, 0);
    ++mine;
  }
  const size_t theirs = items - mine;
  const auto deadline = Clock::now() + kCallerSpin;
  for (unsigned n = 1; done_by_workers_.load(std::memory_order_acquire) != theirs; ++n) {
    if (n % 64 != 0 || Clock::now() < deadline) cpu_relax();
    else std::this_thread::yield();
  }
}

int Pool::grow(int helpers) {
  try {
    while (int(workers_.size()) < helpers) {
      const int slot = int(workers_.size()) + 1;
      workers_.emplace_back([this, slot] { work(slot); });
    }
  } catch (const std::system_error&) {
    // No more threads to be had (a process or container limit): run with those there are.
  }
  return std::min(helpers, int(workers_.size()));
}

void Pool::work(int slot) {
  uint32_t seen = 0;  // the last generation this worker took part in (or skipped)
  const auto is_new = [&](uint64_t word) { return generation_of(word) != seen && item_of(word) != kClosed; };
  for (;;) {
    uint64_t word = claim_.load(std::memory_order_acquire);
    auto deadline = Clock::now() + kWorkerSpin;
    for (unsigned n = 1; !is_new(word); ++n) {
      if (n % 64 == 0 && (Clock::now() >= deadline || lone_callers_.load(std::memory_order_relaxed) > 0)) {
        pthread_mutex_lock(&sleep_mutex_);
        sleepers_.fetch_add(1);
        while (!is_new(word = claim_.load())) pthread_cond_wait(&wake_, &sleep_mutex_);
        sleepers_.fetch_sub(1);
        pthread_mutex_unlock(&sleep_mutex_);
        break;
      }
      cpu_relax();
      word = claim_.load(std::memory_order_acquire);
    }
    seen = generation_of(word);
    claim_items(slot, word);
  }
}

void Pool::claim_items(int slot, uint64_t word) {
  const uint32_t generation = generation_of(word);
  // Read after seeing the generation open; valid for it as long as a claim on it succeeds.
  if (slot > helpers_.load(std::memory_order_relaxed)) return;
  const size_t items = items_.load(std::memory_order_relaxed);
  for (;;) {
    if (generation_of(word) != generation || item_of(word) >= items) return;
    if (lone_callers_.load(std::memory_order_relaxed) > 0) return;  // the caller finishes alone
    if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel, std::memory_order_acquire))
      continue;  // another participant claimed it, or the loop ended: `word` holds the new value
    body_.load(std::memory_order_relaxed)(context_.load(std::memory_order_relaxed), item_of(word), slot);
    done_by_workers_.fetch_add(1, std::memory_order_release);
    word = claim_.load(std::memory_order_acquire);
  }
}

// Never destroyed: its workers sleep until the process exits, and no exit-time destructor can
// race a late predict call.
Pool& pool() {
  static Pool* const instance = new Pool;
  return *instance;
}

}  // namespace

void parallel_for(size_t items, int threads, LoopBody body, void* context) {
  pool().run(items, threads, body, context);
}

}  // namespace mnist_engine
