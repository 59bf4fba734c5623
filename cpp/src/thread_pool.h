// The engine's threads: one process-wide pool that runs one loop at a time, built so that a
// machine shared with other work slows it down gracefully instead of stalling it.
//
// An OpenMP team (what the engine used before) joins every member at the end of each parallel
// loop, and a static schedule gives each member a fixed share. When the OS parks one member to run
// some other process, the whole call waits for it, a scheduler time slice or more: on 2 cores
// with one busy neighbour, batch-1 CNN calls went from 30 us to 4 ms at p99 (issue 33). Here, as in
// XNNPACK's pthreadpool:
// - the calling thread always works;
// - items are claimed one at a time from a shared counter, so a parked worker holds up only an
//   item it has already claimed, and one that never woke claims nothing;
// - the caller waits for items, never for workers to check in;
// - workers spin briefly for the next loop (a model's layers follow each other within
//   microseconds), then sleep;
// - a second caller while the pool is busy runs its loop alone: the cores are taken already.
//
// Results never depend on which thread ran an item: callers give each item its own outputs.
#pragma once

#include <cstddef>
#include <type_traits>

namespace mnist_engine {

// A loop body: item (0 .. items-1) and slot, the participant running it: 0 for the caller,
// 1 .. threads-1 for workers, so that a caller can give each participant its own scratch. Must not
// throw.
using LoopBody = void (*)(void* context, size_t item, int slot);

// Runs body(context, item, slot) for every item on the caller and up to threads - 1 workers, and
// returns when every item is done. threads <= 1, or items <= 1, runs on the caller alone.
void parallel_for(size_t items, int threads, LoopBody body, void* context);

// The same for a callable f(item, slot).
template <class F>
void parallel_for(size_t items, int threads, F&& f) {
  using Body = std::remove_reference_t<F>;
  parallel_for(items, threads, [](void* c, size_t item, int slot) { (*static_cast<Body*>(c))(item, slot); },
               const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace mnist_engine
