// sluice/detail/platform.hpp — what sluice learns about the machine, on first use.
//
// Three facts, each decided the first time something asks for it (runtime/platform.cpp),
// never before main() and never from the environment:
//   - whether ticks() may read the time-stamp counter (an invariant TSC), and the
//     calibration that turns ticks into nanoseconds;
//   - what 64 spin_pause() calls cost in ticks (how a spin-satisfied wait is timed);
//   - whether the waker's fences are asymmetric (membarrier registered for this process).
// And one reading taken afresh at each call: whether more threads are runnable than the
// process has CPUs (runnable_exceeds_cpus(), which gates the long spin of backoff.hpp).
// Guarantees: each fact is the same for every thread and every call once given; asking
// is thread-safe. Builds may force the portable choice (CMake SLUICE_STEADY_TICKS,
// SLUICE_SYMMETRIC_FENCES), which only measurements need.
#pragma once

#include <atomic>
#include <cstdint>

namespace sluice::detail {

// True when ticks() reads the TSC.
bool ticks_use_tsc() noexcept;
// Nanoseconds per tick; 1.0 when ticks() is steady_clock. A rough figure in the first
// ~10 ms after the first call, fixed from then on.
double ns_per_tick() noexcept;

// One reading of the tick counter and of steady_clock (ns) taken together, for the
// calibration above: `ticks` is the midpoint of a tick read just before and one just after
// the clock, `spread` their distance. A thread preempted between two reads makes a wide
// pair, and a calibration anchored on it would be off by the whole preemption for the
// life of the process (a 2 ms time slice against the span of 10 ms or more that fixes
// it: up to 20%); so tightest_tick_pair() reads `tries` pairs and keeps the narrowest.
// The readers are parameters so that a test can play a preemption.
struct tick_pair {
  std::uint64_t ticks = 0;
  std::int64_t ns = 0;
  std::uint64_t spread = ~std::uint64_t{0};
};
template <class ReadTicks, class ReadNs>
tick_pair tightest_tick_pair(ReadTicks&& read_ticks, ReadNs&& read_ns, int tries) {
  tick_pair best;
  for (int i = 0; i < tries; ++i) {
    const std::uint64_t before = read_ticks();
    const std::int64_t ns = read_ns();
    const std::uint64_t after = read_ticks();
    const std::uint64_t spread = after - before;
    if (after >= before && spread < best.spread) best = tick_pair{before + spread / 2, ns, spread};
  }
  if (best.spread == ~std::uint64_t{0}) best = tick_pair{read_ticks(), read_ns(), best.spread};  // none ran forwards
  return best;
}
// What 64 spin_pause() calls take, in ticks (best of a few runs, measured on first use).
std::uint64_t ticks_per_64_pauses() noexcept;
// True when more threads are runnable now (/proc/loadavg: all processes, the caller too)
// than this process has CPUs (online, in the main thread's affinity mask read once), when
// it has one CPU, or when the count cannot be read. While false, a thread that spins on
// takes no core another thread waits for. One read (~1-2 us) per thread per ms; kept.
bool runnable_exceeds_cpus() noexcept;

// Sleeps 20 us << min(attempt, 6) (at most 1.28 ms): for a waiter that can only poll,
// rarely and briefly (graph_fuse.hpp's handshake), so that it parks instead of spinning.
// Here, not in a header: <thread> stays out of sluice/graph.hpp.
void nap(unsigned attempt) noexcept;

// The fence protocol of detail/waker.hpp. kUnknown until the first heavy_fence() decides;
// a notifier that reads kUnknown uses the full fence, which pairs with either choice.
enum class fence_mode : std::uint8_t { kUnknown = 0, kAsymmetric = 1, kSymmetric = 2 };
// Read on every notify: one relaxed load. Written once, by decide_fence_mode().
fence_mode current_fence_mode() noexcept;
// Decides (registering membarrier if the kernel has it) and returns the mode; later
// calls return the same answer.
fence_mode decide_fence_mode() noexcept;

}  // namespace sluice::detail
