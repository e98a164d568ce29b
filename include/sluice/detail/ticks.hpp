// sluice/detail/ticks.hpp — the cheap clock behind the channels' time-blocked counters.
//
// A blocked push or pop must add its wait to the channel's time blocked. Most waits end
// within the spin, a few hundred nanoseconds, and two clock reads per wait cost 10-20% of
// a small-capacity channel's throughput (steady_clock::now() is ~22 ns on the 2-core VM
// this was written on, the time-stamp counter ~10 ns). So a wait is timed as: its spin
// pauses x the calibrated cost of a pause (pause_ticks), plus, if it went on to yield or
// park, the ticks() from there to its end. The spin part leaves out the re-tries between
// pauses (a few ns each against 20-40 ns a pause), so it errs a little low.
//
// Guarantees: ticks() is monotonic on one thread and comparable across threads where the
// TSC is invariant (x86-64 with constant_tsc and nonstop_tsc, i.e. every x86-64 server of
// the last decade, virtual ones included when the kernel's clocksource is tsc). Where it
// is not (other architectures, or SLUICE_TICKS=steady), ticks() is steady_clock
// nanoseconds and ns_per_tick() is 1. ns_per_tick() is calibrated once per process
// against steady_clock (runtime/ticks.cpp) and is stable after the first call.
// Non-guarantees: a single tick reading is not a wall time; only differences converted
// with ns_per_tick() mean anything, and to ~0.1% accuracy.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace sluice::detail {

// True when ticks() reads the TSC (decided once, at load time, in runtime/ticks.cpp).
bool ticks_use_tsc() noexcept;
// Whether channels measure their time blocked (channel_stats::blocked_push_ns/_pop_ns).
// On unless the environment says SLUICE_CHANNEL_TIMING=off at load time; off, the two
// clock reads per blocked operation are skipped and those counters stay 0.
extern const bool g_channel_timing;
inline bool channel_timing() noexcept { return g_channel_timing; }

// What 64 spin_pause() calls take, in ticks: measured once at load time (best of a few
// runs of 64, ~10 us in all). A wait that a spin satisfies is timed as pauses x this
// instead of by two clock reads, which cost more than a short wait itself.
extern const std::uint64_t g_ticks_per_64_pauses;
inline std::uint64_t pause_ticks(std::uint64_t pauses) noexcept { return pauses * g_ticks_per_64_pauses / 64; }
// Nanoseconds per tick; 1.0 when ticks() is steady_clock.
double ns_per_tick() noexcept;

inline std::uint64_t ticks() noexcept {
#if defined(__x86_64__)
  if (ticks_use_tsc()) return __rdtsc();
#endif
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

inline std::uint64_t ticks_to_ns(std::uint64_t t) noexcept {
  return static_cast<std::uint64_t>(static_cast<double>(t) * ns_per_tick());
}

}  // namespace sluice::detail
