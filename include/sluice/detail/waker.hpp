// sluice/detail/waker.hpp — where blocked threads park, and how they are woken.
//
// A waker is an event count (after folly's EventCount and taskflow's notifier):
// it does not hold a condition, it only lets a thread sleep until "something may
// have changed". The condition lives elsewhere (the ring's indices, the channel's
// state word); the waker is the waiting strategy, kept apart from the buffer.
//
// Wait protocol (waiter W, notifier N, condition C):
//
//   W: key = prepare_wait()      // waiters_++, heavy_fence(), then key = epoch_
//      if (C) { cancel_wait(); return; }          // re-check after registering
//      commit_wait(key)          // futex-sleeps only while epoch_ == key
//
//   N: make C true (any store)
//      light_fence()                              // (F) orders the store before the load
//      if (has_waiters()) notify(n)               // epoch_++, futex_wake(n)
//
// Why no wake-up is lost: W's increment of waiters_ and N's store to C are each
// followed by a barrier and then a load of the other's variable (Dekker). So either
// N sees waiters_ > 0 and bumps epoch_ (then W's futex_wait(key) returns at once,
// because epoch_ != key, or is woken by futex_wake), or W's re-check sees C.
//
// The barrier pair is asymmetric (as folly's asymmetricLightBarrier): a push or pop
// runs on the hot path and pays only light_fence(), a compiler barrier, while a thread
// about to park pays heavy_fence(), membarrier(PRIVATE_EXPEDITED), which makes every
// running thread of the process execute a full barrier before it returns. Where the
// kernel lacks membarrier, both sides fall back to a seq_cst fence.
//
// Requires: notify() is preceded by light_fence() after the store that made the
// condition true. commit_wait()/cancel_wait() is called exactly once per prepare_wait().
// Guarantees: has_waiters() is one relaxed load, so a notifier with nobody asleep
// makes no system call. A woken thread must re-check its condition (wake-ups may be
// spurious or meant for another waiter that gave up; see notify()).
// Non-guarantees: fairness. notify(n) wakes *some* n sleepers.
// Lifetime: the waker must outlive every thread inside prepare/commit/notify.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "sluice/detail/cache_padded.hpp"

namespace sluice::detail {

// The fence pair of a Dekker handshake. `asymmetric` is decide_fence_mode() ==
// kAsymmetric, read once by the channel that owns the waker (detail/platform.hpp):
// the notifier's half is then a compiler barrier and the waiter's a membarrier().
inline void light_fence(bool asymmetric) noexcept {
  if (asymmetric) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}
// The waiter's half: a process-wide barrier (membarrier) or a seq_cst fence.
void heavy_fence(bool asymmetric) noexcept;

class waker {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  [[nodiscard]] std::uint32_t prepare_wait(bool asymmetric_fences) noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);  // the "store" half of W's Dekker pair
    heavy_fence(asymmetric_fences);  // pairs with light_fence() in every notifier
    return epoch_->load(std::memory_order_acquire);
  }
  void cancel_wait() noexcept {
    waiters_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: only ever read as a hint
  }
  // Sleeps until notified, or the deadline (nullptr: none). Returns false on timeout.
  bool commit_wait(std::uint32_t key, const time_point* deadline) noexcept;

  // Caller issued the seq_cst fence (F) after making its condition true.
  [[nodiscard]] bool has_waiters() const noexcept {
    return waiters_.load(std::memory_order_relaxed) != 0;  // relaxed: ordered by caller's fence
  }
  // Threads registered to sleep right now (a hint for metrics and stall detection).
  [[nodiscard]] std::uint32_t waiters() const noexcept {
    return waiters_.load(std::memory_order_relaxed);
  }
  // Wakes up to n sleepers (n < 0: all). Call only when has_waiters().
  void notify(int n) noexcept;
  void notify_all() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // off the hot path: the strong fence
    if (has_waiters()) notify(-1);
  }

 private:
  cache_padded<std::atomic<std::uint32_t>> epoch_{0};  // the futex word
  std::atomic<std::uint32_t> waiters_{0};              // threads between prepare and commit/cancel
};

}  // namespace sluice::detail
