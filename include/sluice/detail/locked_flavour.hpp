// sluice/detail/locked_flavour.hpp — the mutex-guarded storage of a channel: weighted
// items, and item types whose move constructor may throw.
//
// A deque of (item, weight) under one mutex. The lock is what keeps a throwing move
// safe: the item moves in (or out) while the queue is still as it was, so a throw
// leaves the queue untouched and reaches the caller. Weighted channels take this
// flavour because their items are large (bytes), so a lock per item is cheap by
// comparison, and an item's weight must be admitted against the occupancy atomically.
//
// Admission: an item of weight w goes in when the queue is empty or occupancy + w <=
// capacity, computed without overflow. A weight of 0 counts as 1, so `capacity` bounds
// the items too. occupancy exceeds capacity only while the one oversized item that an
// empty channel accepted is inside, and then nothing else fits, so occupancy never
// exceeds max(capacity, the largest weight) and never wraps.
//
// Requires: the core's state bits are set under this flavour's lock by close(); other
//   bits may be set without it (a push that misses them is discarded by the setter's
//   discard_all(), which takes the lock).
// Guarantees: as channel.hpp; a push or pop whose move throws leaves the channel as it
//   was (strong guarantee; a drop_oldest push whose own move throws puts back the items it
//   dropped); every dropped or discarded item is counted and offered to on_discard,
//   outside the lock.
// Requires of T: ~T() and weigh must not push to, pop from or close the channel that
//   holds the item: a moved-from item is destroyed, and an item weighed, under the lock
//   (the ring flavour has no lock; a channel of a type whose move may throw, or a
//   weighted one, does). stats() takes no lock, so they may read it (or a graph's
//   snapshot(), which reads every channel's).
// Non-guarantees: lock-freedom; fairness between threads contending for the lock.
// Lifetime: a member of its channel<T>; items left at destruction are destroyed with
//   the deque (the channel drains them through discard_all() first, to count them).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "sluice/detail/channel_core.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

template <class T>
class locked_flavour {
 public:
  static constexpr bool kBulk = false;
  // A drop_oldest push may evict more weight than its item adds (see channel_state's after_push).
  static constexpr bool kEvictsMoreThanItAdds = true;

  explicit locked_flavour(std::function<std::size_t(const T&)> weigh) : weigh_(std::move(weigh)) {}

  // ---- push ---------------------------------------------------------------------
  // Moves from v only on ok. A drop_newest channel returns ok and discards v.
  status try_push(channel_core<T>& c, T& v) {
    std::size_t weight = 0;
    return try_push(c, v, weight);
  }
  // As above; `weight` is v's weight, or 0 when not yet weighed (then weighed here and
  // kept there): a blocked push re-tries with it and weighs its item once, not on every
  // re-try (weigh() may be costly, and it runs under the lock).
  status try_push(channel_core<T>& c, T& v, std::size_t& weight) {
    std::vector<std::pair<T, std::size_t>> dropped;  // handed to the hook outside the lock, on every exit
    struct hook_guard {
      channel_core<T>* core;
      std::vector<std::pair<T, std::size_t>>* items;
      ~hook_guard() {
        for (auto& d : *items) core->hand_to_hook(std::move(d.first));
      }
    } guard{&c, &dropped};
    std::lock_guard lock(mu_);
    if (c.state.load(std::memory_order_relaxed) != 0) return status::closed;
    if (weight == 0) weight = weigh_ ? std::max<std::size_t>(weigh_(std::as_const(v)), 1) : 1;
    const std::size_t w = weight;
    auto fits = [&] {
      const std::size_t occ = weight_.load(std::memory_order_relaxed);
      return items_.empty() || (occ <= c.cap && w <= c.cap - occ);
    };
    if (!fits()) {
      if (c.policy == overflow::block) return status::full;
      // Each item is moved to `dropped` before anything is counted: a move that throws
      // leaves the counts, the weight and the queue as they were (and the item where it was).
      if (c.policy == overflow::drop_newest) {
        dropped.emplace_back(std::move(v), w);
        pushed_.add(1);
        discarded_.add(1);
      } else {
        try {
          while (!fits()) {
            auto& front = items_.front();
            dropped.push_back(std::move(front));
            weight_.store(weight_.load(std::memory_order_relaxed) - front.second, std::memory_order_relaxed);
            items_.pop_front();
            discarded_.add(1);
          }
        } catch (...) {
          undo_drops(dropped);  // a later eviction threw: the earlier ones go back
          throw;
        }
      }
    }
    if (dropped.empty() || c.policy == overflow::drop_oldest) {
      try {
        items_.emplace_back(std::move(v), w);  // strong guarantee: a throw leaves items_ as it was
      } catch (...) {
        undo_drops(dropped);
        throw;
      }
      weight_.store(weight_.load(std::memory_order_relaxed) + w, std::memory_order_relaxed);
      pushed_.add(1);
    }
    return status::ok;
  }
  // A drop_oldest push whose own move threw after the oldest were dropped for it: they go
  // back to the front, uncounted, newest first. One whose move back throws stays dropped
  // (counted, handed to on_discard), and so do the older ones behind it.
  void undo_drops(std::vector<std::pair<T, std::size_t>>& dropped) noexcept {
    while (!dropped.empty()) {
      try {
        items_.push_front(std::move(dropped.back()));
      } catch (...) {
        return;
      }
      weight_.store(weight_.load(std::memory_order_relaxed) + dropped.back().second, std::memory_order_relaxed);
      dropped.pop_back();
      discarded_.sub(1);
    }
  }
  // Nothing to clean up after a push: a push that missed a cancel or a disconnect
  // happened before the canceller took the lock to discard.
  void after_push(channel_core<T>&) noexcept {}

  // ---- pop ----------------------------------------------------------------------
  // ok: out holds an item. full: empty now. closed: done (drained, or cancelled).
  status try_pop(channel_core<T>& c, std::optional<T>& out) {
    std::lock_guard lock(mu_);
    const std::uint32_t st = c.state.load(std::memory_order_relaxed);
    if (st & kCancelled) return status::closed;
    if (items_.empty()) return st != 0 ? status::closed : status::full;
    out.emplace(std::move(items_.front().first));  // a throwing move leaves the item queued
    weight_.store(weight_.load(std::memory_order_relaxed) - items_.front().second, std::memory_order_relaxed);
    items_.pop_front();
    popped_.add(1);
    return status::ok;
  }
  // A blocked push re-tries after every pause of its spin (ring_flavour says when not).
  [[nodiscard]] bool push_worth_retrying(const channel_core<T>&) const noexcept { return true; }
  // The channel's progress, for a blocked wait's spin: the weight held, which every push
  // and pop changes (the counts are guarded by mu_; a pop and a push that cancel out only
  // end a spin early).
  [[nodiscard]] std::uint64_t progress() const noexcept { return weight_.load(std::memory_order_relaxed); }
  // A weighted pop can make room for several waiting items, and a woken pusher whose
  // item still does not fit goes back to sleep: wake them all, or one that fits sleeps on.
  [[nodiscard]] bool pop_wakes_all() const noexcept { return static_cast<bool>(weigh_); }

  // ---- closing ------------------------------------------------------------------
  // Sets kClosed under the lock: a push either went in before it or sees it.
  void close(channel_core<T>& c) noexcept {
    std::lock_guard lock(mu_);
    c.state.fetch_or(kClosed, std::memory_order_seq_cst);
  }
  // After kDisconnected or kCancelled: nothing to wait for (every operation holds the lock).
  void seal(channel_core<T>&) noexcept {}
  // Takes everything out under the lock and hands it to on_discard after, so a hook may
  // call back into the channel. The deque that holds them meanwhile allocates when it is
  // made (libstdc++), and a thread out of memory (a stage that failed with bad_alloc,
  // tearing its graph down) must not reach std::terminate here: then the items leave one
  // at a time instead, each moved out under the lock. One whose move throws too is
  // destroyed unreported to the hook, still counted as discarded.
  void discard_all(channel_core<T>& c) noexcept {
    std::optional<std::deque<std::pair<T, std::size_t>>> gone;
    try {
      gone.emplace();
    } catch (...) {
      discard_one_by_one(c);
      return;
    }
    {
      std::lock_guard lock(mu_);
      gone->swap(items_);
      discarded_.add(gone->size());
      weight_.store(0, std::memory_order_relaxed);
    }
    for (auto& [v, w] : *gone) c.hand_to_hook(std::move(v));
  }

  // ---- observation --------------------------------------------------------------
  // `st`: the state word, read by the caller.
  [[nodiscard]] bool done(std::uint32_t st) const {
    std::lock_guard lock(mu_);
    return (st & (kClosed | kDisconnected)) != 0 && items_.empty();
  }
  [[nodiscard]] std::size_t occupancy() const noexcept { return weight_.load(std::memory_order_relaxed); }
  // Takes no lock: an item's ~T(), which runs under it, may take its graph's snapshot(),
  // which reads every channel's stats (with the lock here that was a deadlock: the graph
  // held its own lock and waited for this one). Popped and discarded are read before
  // pushed (acquire, each written with release under the lock), so every item counted
  // out was counted in first, and items is never negative.
  void fill_stats(channel_stats& st) const noexcept {
    st.discarded = discarded_.read();
    st.popped = popped_.read();
    st.pushed = pushed_.read();
    const std::uint64_t out = st.popped + st.discarded;
    st.items = st.pushed > out ? static_cast<std::size_t>(st.pushed - out) : 0;
    st.size = weight_.load(std::memory_order_relaxed);
  }

 private:
  // discard_all() without allocating (see there).
  void discard_one_by_one(channel_core<T>& c) noexcept {
    for (;;) {
      std::optional<T> v;
      {
        std::lock_guard lock(mu_);
        if (items_.empty()) return;
        auto& front = items_.front();
        try {
          v.emplace(std::move(front.first));
        } catch (...) {
          // destroyed below with its slot, without the hook
        }
        weight_.store(weight_.load(std::memory_order_relaxed) - front.second, std::memory_order_relaxed);
        items_.pop_front();
        discarded_.add(1);
      }
      if (v) c.hand_to_hook(std::move(*v));
    }
  }

  const std::function<std::size_t(const T&)> weigh_;
  mutable std::mutex mu_;
  std::deque<std::pair<T, std::size_t>> items_;  // item and its weight  (guarded by mu_)
  std::atomic<std::size_t> weight_{0};           // written under mu_, read anywhere
  // Written under mu_, read anywhere (fill_stats).
  class count {
   public:
    void add(std::uint64_t n) noexcept { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_release); }
    void sub(std::uint64_t n) noexcept { v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_release); }
    [[nodiscard]] std::uint64_t read() const noexcept { return v_.load(std::memory_order_acquire); }

   private:
    std::atomic<std::uint64_t> v_{0};
  };
  count pushed_, popped_, discarded_;
};

}  // namespace sluice::detail
