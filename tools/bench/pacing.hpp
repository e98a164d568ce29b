// tools/bench/pacing.hpp — clocks and waits for `sluice bench`'s open-loop arrivals and
// its sleeping stages.
//
//   const std::int64_t t = bench::now_ns() + 1'000'000;
//   bench::wait_until_ns(t);   // returns at t, a few microseconds late at most, idle
//                              // for all but the last ~50 us
//
// All times are steady_clock nanoseconds since its epoch, which on Linux is
// CLOCK_MONOTONIC, so they can be handed to clock_nanosleep(TIMER_ABSTIME) as they are.
// A thread that sleeps here first lowers its own timer slack to 1 ns (prctl, per
// thread): the kernel's default 50 us slack would add up to 50 us to every sleep and
// that is the size of what the bench measures.
#pragma once

#include <sched.h>
#include <sys/prctl.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "sluice/detail/process_info.hpp"

namespace sluice::tool::bench {

using sluice::detail::now_ns;

// Once per thread: timers of this thread expire within 1 ns of their deadline (as far
// as the kernel can), instead of within the default 50 us.
inline void precise_timers() {
  thread_local bool done = false;
  if (done) return;
  done = true;
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
}

// Sleeps until steady time `t` (returns at once if it has passed). Nothing but the
// kernel's wake-up latency comes on top (timer slack 1 ns, see precise_timers).
inline void sleep_until_ns(std::int64_t t) {
  precise_timers();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(t / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(t % 1'000'000'000);
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// Waits until steady time `t` as an arrival process must: on time, cheaply. Far from t
// it sleeps until kSpinWindow before it (the kernel wakes a sleeper tens of
// microseconds late on a loaded machine), then yields the CPU until t. On 2 cores the
// yield matters: the stages need the core more than the source does.
inline void wait_until_ns(std::int64_t t) {
  constexpr std::int64_t kSpinWindow = 50'000;  // ns
  std::int64_t left = t - now_ns();
  if (left > kSpinWindow) {
    sleep_until_ns(t - kSpinWindow);
    left = t - now_ns();
  }
  while (left > 0) {
    ::sched_yield();
    left = t - now_ns();
  }
}

// A stage's known cost: asleep until kSpinTail before `t`, then busy until t. Unlike
// wait_until_ns it never yields in the tail: a thread the kernel just woke from a
// timer runs at once, while one that yields on a loaded machine waits a whole time
// slice (milliseconds) for the CPU back. The tail costs at most kSpinTail of CPU.
inline void sleep_precisely_until_ns(std::int64_t t) {
  constexpr std::int64_t kSpinTail = 30'000;  // ns
  if (t - now_ns() > kSpinTail) sleep_until_ns(t - kSpinTail);
  while (now_ns() < t) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
}

}  // namespace sluice::tool::bench
