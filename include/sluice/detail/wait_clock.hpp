// sluice/detail/wait_clock.hpp — how long one side of a channel has spent blocked.
//
// Each side of a channel (its pushers, its poppers) has one wait_clock; a graph's
// bottleneck report reads it through channel_stats::blocked_push_ns / blocked_pop_ns.
// Times are in ticks (detail/ticks.hpp) and converted to nanoseconds only when read.
//
// A wait is counted in one of two ways:
//   - one that a spin satisfied (most waits, a few hundred nanoseconds) is added when it
//     ends, as its pauses x their calibrated cost (add_spin), at most ~10 us late;
//   - one that spun out (about to yield or park, microseconds anyway) registers its
//     start (begin_slow) and adds its whole time when it ends (end_slow); meanwhile
//     blocked_ticks_now() counts its elapsed part, so a snapshot taken during a long
//     wait sees the time grow (a stage's busy time, derived from it, never runs backwards).
//
// Requires: every begin_slow(t0) is followed by exactly one end_slow(t0, ...) with the
//   same t0. add_spin(t, alone = true) only from a side with one handle (no other
//   thread of the side can be adding at the same time).
// Guarantees: blocked_ticks_now() never decreases while waits only begin and end;
//   it is thread-safe against every other call.
// Non-guarantees: exactness: a spin's re-tries between pauses are not counted (a few ns
//   each against 20-40 ns a pause), so it errs a little low; start ticks read on other
//   cores may be a few ticks ahead of the reader's.
// Lifetime: a member of its channel side; it owns nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "sluice/detail/ticks.hpp"

namespace sluice::detail {

class wait_clock {
 public:
  // A wait that a spin satisfied, `t` ticks long. A lone side adds with a plain load and
  // store: on an SPSC channel's per-item path a locked add is a measurable share of a
  // ping-pong round trip.
  void add_spin(std::uint64_t t, bool alone) noexcept {
    // relaxed: a statistic; blocked_ticks_now() reads it whenever (under slow_mu_ for
    // the open waits).
    if (alone) {
      blocked_ticks_.store(blocked_ticks_.load(std::memory_order_relaxed) + t, std::memory_order_relaxed);
    } else {
      blocked_ticks_.fetch_add(t, std::memory_order_relaxed);
    }
  }

  // A wait spun out at ticks t0 and goes on (yields, maybe parks).
  void begin_slow(std::uint64_t t0) {
    std::lock_guard lock(slow_mu_);
    ++slow_waiters_;
    slow_since_sum_ += t0;
  }
  // Ends a slow wait begun at t0; `ticks` is the whole wait's time blocked, added only
  // when `count` (channel_options::timing).
  void end_slow(std::uint64_t t0, std::uint64_t ticks, bool count) {
    std::lock_guard lock(slow_mu_);
    --slow_waiters_;
    slow_since_sum_ -= t0;
    // relaxed: ordered for readers by slow_mu_.
    if (count) blocked_ticks_.fetch_add(ticks, std::memory_order_relaxed);
  }

  // Finished waits plus the part of the slow ones in progress that has elapsed by now;
  // 0 when `timing` is off.
  [[nodiscard]] std::uint64_t blocked_ticks_now(bool timing) const {
    if (!timing) return 0;
    std::lock_guard lock(slow_mu_);
    std::uint64_t t = blocked_ticks_.load(std::memory_order_relaxed);
    if (slow_waiters_ != 0) {
      // Modulo 2^64 both products may wrap, but their difference, the elapsed part of
      // the waits in progress, is small and comes out exact. Start ticks read on other
      // cores may be a few ticks ahead of ours: a "negative" difference counts as 0.
      const std::uint64_t open = slow_waiters_ * ticks() - slow_since_sum_;
      if (static_cast<std::int64_t>(open) > 0) t += open;
    }
    return t;
  }

 private:
  std::atomic<std::uint64_t> blocked_ticks_{0};  // finished waits
  mutable std::mutex slow_mu_;
  std::uint32_t slow_waiters_ = 0;    // waits past their spin right now  (guarded by slow_mu_)
  std::uint64_t slow_since_sum_ = 0;  // the sum of their start ticks     (guarded by slow_mu_)
};

// Times a wait outside any channel (an ordered stage's replicas taking turns to pop, its
// emitter waiting for the next item) as one slow wait on `c`; null: not timed.
class timed_wait {
 public:
  explicit timed_wait(wait_clock* c) : c_(c), t0_(c != nullptr ? ticks() : 0) {
    if (c_ != nullptr) c_->begin_slow(t0_);
  }
  timed_wait(const timed_wait&) = delete;
  timed_wait& operator=(const timed_wait&) = delete;
  ~timed_wait() {
    if (c_ != nullptr) c_->end_slow(t0_, ticks() - t0_, true);
  }

 private:
  wait_clock* c_;
  std::uint64_t t0_;
};

// Locks `mu`; a lock that is not free at once is waited for as a timed_wait on `c`
// (another thread holds it in a blocking pop: the caller waits for input).
inline std::unique_lock<std::mutex> lock_timed(std::mutex& mu, wait_clock* c) {
  std::unique_lock lk(mu, std::try_to_lock);
  if (!lk.owns_lock()) {
    const timed_wait w(c);
    lk.lock();
  }
  return lk;
}

}  // namespace sluice::detail
