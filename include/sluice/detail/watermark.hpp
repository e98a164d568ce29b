// sluice/detail/watermark.hpp — a channel's low watermark: the on_writable callbacks
// and the threads in wait_writable() (Node's 'drain' event).
//
// Protocol (callback registrar R, popping thread P, condition C: occupancy <= level or
// the channel is closed):
//   R: if (C) run f;  else { lock; callbacks += f; armed = true (seq_cst); unlock;
//                            heavy_fence(); if (C) fire(); }
//   P: pop; light_fence() (F); if (armed && occupancy <= level) fire();
// A Dekker pair on armed / the ring's indices: either P sees armed, or R's re-check
// sees the pop. fire() swaps the list out under the lock, so each callback runs once,
// whichever thread gets there first.
//
// Requires: after_pop() is called after the pop's light_fence(); wake_all() after the
//   channel's state bit is set (closed, disconnected, cancelled).
// Guarantees: each callback runs exactly once: at once on the registering thread when
//   the condition holds, otherwise on the thread whose pop brings occupancy to the level
//   or that closes or cancels the channel. A callback's exception is swallowed (callbacks
//   must not throw; a consumer's pop must not break because one did).
// Non-guarantees: the order in which callbacks registered together run.
// Lifetime: a member of its channel; callbacks still registered when it is destroyed
//   are destroyed without running (the channel closes before, so there are none).
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/waker.hpp"

namespace sluice::detail {

class watermark {
 public:
  explicit watermark(std::size_t level) noexcept : level_(level) {}

  [[nodiscard]] std::size_t level() const noexcept { return level_; }
  // Where wait_writable() callers park.
  [[nodiscard]] waker& waiters() noexcept { return waiters_; }
  [[nodiscard]] const waker& waiters() const noexcept { return waiters_; }

  // on_writable(f). writable_now() reads the condition C.
  template <class WritableNow>
  void add(std::function<void()> f, bool asym_fences, WritableNow&& writable_now) {
    if (writable_now()) {
      f();
      return;
    }
    {
      std::lock_guard lock(mu_);
      callbacks_.push_back(std::move(f));
      // seq_cst store + fence: Dekker pair with after_pop's fence and load of armed_.
      armed_.store(true, std::memory_order_seq_cst);
    }
    heavy_fence(asym_fences);  // pairs with light_fence() (F) before after_pop()
    if (writable_now()) fire();  // the crossing may have happened meanwhile
  }

  // After a pop that left `occupancy()` behind, its (F) issued.
  template <class Occupancy>
  void after_pop(Occupancy&& occupancy) noexcept {
    if (waiters_.has_waiters() && occupancy() <= level_) waiters_.notify(-1);
    // relaxed: ordered by (F); see the protocol above.
    if (armed_.load(std::memory_order_relaxed) && occupancy() <= level_) fire();
  }

  // The channel is closed, disconnected or cancelled: everyone waiting here goes.
  void wake_all() noexcept {
    waiters_.notify_all();
    fire();
  }

 private:
  void fire() noexcept {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard lock(mu_);
      run.swap(callbacks_);
      armed_.store(false, std::memory_order_relaxed);  // relaxed: the lock orders it
    }
    const nothrow_scope scope;
    for (auto& f : run) {
      try {
        f();
      } catch (...) {
        // on_writable callbacks run on a popping thread; like on_discard they must not
        // throw, and an exception from one must not break the consumer's pop.
      }
    }
  }

  const std::size_t level_;
  std::atomic<bool> armed_{false};  // callbacks_ is not empty (a hint, read per pop)
  std::mutex mu_;
  std::vector<std::function<void()>> callbacks_;  // guarded by mu_
  waker waiters_;
};

}  // namespace sluice::detail
