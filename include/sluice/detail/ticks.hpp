// sluice/detail/ticks.hpp — the cheap clock behind the channels' time-blocked counters.
//
// A blocked push or pop must add its wait to the channel's time blocked. Most waits end within
// the spin, a few hundred nanoseconds, and two clock reads per wait would slow a small-capacity
// channel noticeably (steady_clock::now() costs about twice a read of the time-stamp counter).
// So a wait is timed as: its spin pauses x the calibrated cost of a pause (pause_ticks), plus,
// if it went on to yield or park, the ticks() from there to its end. The spin part leaves out
// the re-tries between pauses (a few ns each against 20-40 ns a pause), so it errs a little low,
// and a thread preempted inside its spin loses that time from the count (timing the spin by
// the clock past its first microsecond slowed the channel rows 10-68%, even where the clock
// was never read: benchmarks/results/spin-clock-2026-12-01.txt).
//
// Guarantees: ticks() is monotonic on one thread and comparable across threads where the
// TSC is invariant (x86-64 with constant_tsc and nonstop_tsc, i.e. every x86-64 server of
// the last decade, virtual ones included when the kernel's clocksource is tsc). Where it
// is not (other architectures, or a build with SLUICE_STEADY_TICKS), ticks() is
// steady_clock nanoseconds and ns_per_tick() is 1. The choice and the calibration against
// steady_clock are made on first use (detail/platform.hpp, runtime/platform.cpp).
// Non-guarantees: a single tick reading is not a wall time; only differences converted
// with ns_per_tick() mean anything, and to ~0.1% accuracy.
#pragma once

#include <chrono>
#include <cstdint>

#include "sluice/detail/platform.hpp"

namespace sluice::detail {

// A wait that a spin satisfied, timed as its pauses x their calibrated cost.
inline std::uint64_t pause_ticks(std::uint64_t pauses) noexcept { return pauses * ticks_per_64_pauses() / 64; }

inline std::uint64_t ticks() noexcept {
#if defined(__x86_64__)
  // The compiler's builtin, not __rdtsc(): <x86intrin.h> is large, and every translation
  // unit that includes a channel would parse it.
  if (ticks_use_tsc()) return __builtin_ia32_rdtsc();
#endif
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

inline std::uint64_t ticks_to_ns(std::uint64_t t) noexcept {
  return static_cast<std::uint64_t>(static_cast<double>(t) * ns_per_tick());
}

}  // namespace sluice::detail
