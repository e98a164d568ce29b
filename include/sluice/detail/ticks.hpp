// sluice/detail/ticks.hpp — the cheap clock behind the channels' time-blocked counters.
//
// A blocked push or pop reads the clock twice (start and end of its wait). On the
// channel's hot path that was measurable: steady_clock::now() costs ~22 ns on the 2-core
// VM this was written on, and a bulk consumer that waits briefly for every batch paid it
// on every call. The time-stamp counter costs ~10 ns there.
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
