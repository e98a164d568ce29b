// sluice/detail/channel_state.hpp — channel<T>, the shared state behind sender<T> and
// receiver<T>: one storage flavour composed with the pieces every channel has.
//
//   storage   ring_flavour (detail/ring_flavour.hpp): the lock-free ring, for unweighted
//             items whose move cannot throw; otherwise locked_flavour
//             (detail/locked_flavour.hpp): a mutex-guarded deque, weights, throwing moves.
//             Chosen once, at construction; with_flavour() is the one place that
//             dispatches on it, so each operation is compiled once per flavour. A
//             graph may turn a channel into the third flavour, direct_flavour
//             (detail/direct_flavour.hpp: no storage, a push runs a fused stage on the
//             pushing thread), before any handle is used; it is checked last, so the
//             ring's operations test nothing more. A graph's edge is made with its
//             ring later (ring_later): the locked queue, which allocates only as it
//             fills, until the graph knows the edge's consumer and calls make_storage()
//             (the ring) or make_direct(), so a fused edge never holds a ring of its
//             capacity.
//   lifetime  detail/counter.hpp: the last sender closes, the last receiver disconnects,
//             the last handle frees.
//   waiting   detail/backoff.hpp (spin, yield, park) on two wakers (detail/waker.hpp):
//             consumers waiting for an item, producers waiting for room; time blocked
//             in detail/wait_clock.hpp.
//   watermark detail/watermark.hpp: on_writable callbacks and wait_writable() callers.
//
// Every successful operation ends with after_push()/after_pop():
//   light_fence() (F); if (waker.has_waiters()) waker.notify(n);
// so a push or pop with nobody asleep makes no system call. (F) orders the operation's
// publish before the waiter-count load; it pairs with heavy_fence() in
// waker::prepare_wait, and (in after_push) with the one in cancel()/disconnect().
//
// Requires: one thread per handle object at a time (handles are copied to share).
// Guarantees: see channel.hpp. Each item is destroyed exactly once; every item that
//   does not reach a receiver is counted in discarded and offered to on_discard.
// Non-guarantees: see channel.hpp (fairness, FIFO across producers).
// Lifetime: deleted by the release of the last handle (counter::release_*).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "sluice/detail/backoff.hpp"
#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/channel_core.hpp"
#include "sluice/detail/direct_flavour.hpp"
#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/locked_flavour.hpp"
#include "sluice/detail/ring_flavour.hpp"
#include "sluice/detail/ticks.hpp"
#include "sluice/detail/waker.hpp"
#include "sluice/detail/watermark.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

template <class T>
class channel {
  // The lock-free ring needs a nothrow move (a slot is claimed before the item moves in).
  static constexpr bool kRingCapable = std::is_nothrow_move_constructible_v<T>;

 public:
  explicit channel(channel_options<T> o) : channel(std::move(o), false) {}
  // A graph's edge: the ring, if it takes one, is made by make_storage().
  struct ring_later_t {};
  channel(channel_options<T> o, ring_later_t) : channel(std::move(o), true) {}
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

 private:
  channel(channel_options<T> o, bool ring_later)
      : core_(o.capacity, o.overflow, std::move(o.on_discard), o.timing),
        wm_(o.low_watermark == kDefaultLowWatermark ? o.capacity / 2 : o.low_watermark) {
    if (o.capacity == 0) {
      throw std::invalid_argument("sluice::bounded: capacity must be at least 1 (got 0)");
    }
    if (wm_.level() > o.capacity) {
      throw std::invalid_argument("sluice::bounded: low_watermark (" + std::to_string(wm_.level()) +
                                  ") exceeds capacity (" + std::to_string(o.capacity) + ")");
    }
    // if constexpr: ring_flavour<T> must not be instantiated for a T whose move may
    // throw (ring_buffer static_asserts); such a T always takes the locked flavour.
    if constexpr (kRingCapable) {
      if (!o.weigh) {
        if (!ring_later) {
          ring_.emplace(o.capacity);
          return;
        }
        ring_buffer<T>::check_possible(o.capacity);  // a capacity no ring can have: now
        ring_later_ = true;
      }
    }
    locked_.emplace(std::move(o.weigh));
  }

 public:
  ~channel() {
    // No handle is left, so nobody else touches us: discard what is still buffered.
    with_flavour(*this, [&](auto& f) { f.discard_all(core_); });
  }

  // ---- lifetime -------------------------------------------------------------------
  void add_sender() noexcept { core_.handles.add_sender(); }
  void add_receiver() noexcept { core_.handles.add_receiver(); }
  // Return true when the caller must delete the channel.
  [[nodiscard]] bool release_sender(bool muted = false) noexcept {
    return core_.handles.release_sender([&]() noexcept { close(); }, muted);
  }
  void mute_sender() noexcept { core_.handles.mute_sender(); }
  void hold() noexcept { core_.handles.hold(); }
  [[nodiscard]] bool drop_hold() noexcept { return core_.handles.drop_hold(); }
  [[nodiscard]] bool sender_alone() const noexcept { return core_.handles.sender_alone(); }
  [[nodiscard]] bool receiver_alone() const noexcept { return core_.handles.receiver_alone(); }
  [[nodiscard]] bool release_receiver() noexcept {
    return core_.handles.release_receiver([&]() noexcept { disconnect(); });
  }
  // Testing seam (detail/fault_hook.hpp): set before the handles reach other threads.
  void set_fault_hook(fault_hook* h) noexcept { core_.fault = h; }
  // A fused edge (stage_options::fuse): from now on a push runs `t` on the pushing thread
  // and nothing is buffered (detail/direct_flavour.hpp). Requires: no push or pop yet,
  // and the handles not yet on other threads (the graph calls it while building).
  void make_direct(std::shared_ptr<direct_target<T>> t) {
    direct_.emplace(std::move(t));
    ring_.reset();
    locked_.reset();
    ring_later_ = false;
  }
  // A channel made ring_later gets its ring now, if nothing has been pushed to it and it
  // is still open (otherwise it stays the locked queue, which serves it as well). Throws
  // what the ring's allocation throws (a bad_alloc naming the capacity), and leaves the
  // channel as it was. Requires: nothing else uses the channel meanwhile (the graph calls
  // it while building, under its lock, which its snapshot() takes too).
  void make_storage() {
    if constexpr (kRingCapable) {
      if (!ring_later_ || core_.state.load(std::memory_order_acquire) != 0 || locked_->occupancy() != 0) return;
      ring_.emplace(core_.cap);
      locked_.reset();
      ring_later_ = false;
    }
  }

  // ---- push -----------------------------------------------------------------------
  // Moves from v only on ok. A drop_newest channel returns ok and discards v.
  status try_push(T& v) {
    core_.inject(fault_hook::op::push);
    return with_flavour(*this, [&](auto& f) {
      const status s = f.try_push(core_, v);
      if (s == status::ok) after_push(f, 1);
      return s;
    });
  }
  status push(T& v, const time_point* deadline) {
    core_.inject(fault_hook::op::push);
    return with_flavour(*this, [&](auto& f) {
      const status s = block_push(f, v, deadline);
      if (s == status::ok) after_push(f, 1);
      return s;
    });
  }
  // Pushes each element of r (moved if Move, copied otherwise); blocks like push; stops
  // at the first failure. Wakes consumers once per run of pushes, not per item.
  // went_in, if given, follows how many are in, also when a copy or move throws.
  template <bool Move, class Range>
  std::size_t push_all(Range& r, std::size_t* went_in = nullptr) {
    core_.inject(fault_hook::op::push);
    return with_flavour(*this, [&](auto& f) { return push_all_into<Move>(f, r, went_in); });
  }

  // ---- pop ------------------------------------------------------------------------
  // ok: out holds an item. full: empty now. closed: done (drained, or cancelled).
  status try_pop(std::optional<T>& out) {
    core_.inject(fault_hook::op::pop);
    return with_flavour(*this, [&](auto& f) {
      const status s = f.try_pop(core_, out);
      if (s == status::ok) after_pop(f, 1);
      return s;
    });
  }
  status pop(std::optional<T>& out, const time_point* deadline) {
    core_.inject(fault_hook::op::pop);
    return with_flavour(*this, [&](auto& f) {
      const status s = block_pop(f, out, deadline);
      if (s == status::ok) after_pop(f, 1);
      return s;
    });
  }
  template <class Out>
  std::size_t pop_some(Out& out, std::size_t max) {
    if (max == 0) return 0;
    core_.inject(fault_hook::op::pop);
    return with_flavour(*this, [&](auto& f) { return pop_some_from(f, out, max, true); });
  }
  // pop_some that never blocks: 0 when nothing is buffered now (or done).
  template <class Out>
  std::size_t try_pop_some(Out& out, std::size_t max) {
    if (max == 0) return 0;
    core_.inject(fault_hook::op::pop);
    return with_flavour(*this, [&](auto& f) { return pop_some_from(f, out, max, false); });
  }
  [[nodiscard]] bool done() const noexcept {
    const std::uint32_t st = core_.state.load(std::memory_order_acquire);
    if (st & kCancelled) return true;
    return with_flavour(*this, [&](const auto& f) { return f.done(st); });
  }

  // ---- closing --------------------------------------------------------------------
  // No more items from anyone; receivers drain what is buffered, then end.
  void close() noexcept {
    with_flavour(*this, [&](auto& f) { f.close(core_); });
    wake_everyone();
  }
  // The last receiver is gone: pushes fail from now on; buffered items are discarded.
  void disconnect() noexcept {
    core_.state.fetch_or(kDisconnected, std::memory_order_seq_cst);
    stop_flavour();
  }
  // Abort: every waiter wakes, buffered items are discarded and counted, `why` is kept.
  void cancel(std::exception_ptr why) noexcept {
    {
      std::lock_guard lock(why_mu_);
      if (!(core_.state.load(std::memory_order_relaxed) & kCancelled)) why_ = std::move(why);
      core_.state.fetch_or(kCancelled, std::memory_order_seq_cst);
    }
    stop_flavour();
  }
  [[nodiscard]] std::exception_ptr cancel_cause() const {
    std::lock_guard lock(why_mu_);
    return why_;
  }
  [[nodiscard]] bool is_cancelled() const noexcept {
    return (core_.state.load(std::memory_order_acquire) & kCancelled) != 0;
  }
  // Closed, disconnected or cancelled: a push can never succeed again.
  [[nodiscard]] bool is_closed() const noexcept { return core_.state.load(std::memory_order_acquire) != 0; }

  // ---- low watermark ("drain") ----------------------------------------------------
  void wait_writable() {
    (void)wait_on(wm_.waiters(), *core_.push_side, [&] { return writable_now() ? status::ok : status::full; },
                  nullptr);
  }
  void on_writable(std::function<void()> f) {
    wm_.add(std::move(f), core_.asym_fences, [&] { return writable_now(); });
  }

  // Once sealed (closed, disconnected or cancelled): waits until no push that claimed its
  // slot before the seal is still to land, and no discarded item's on_discard is still
  // running (ring_flavour::wait_discards). The other flavours discard under their lock or
  // on the pushing thread before the push returns: nothing to wait for.
  void wait_discards() noexcept {
    with_flavour(*this, [&](auto& f) {
      if constexpr (requires { f.wait_discards(); }) f.wait_discards();
    });
  }

  // ---- observation ----------------------------------------------------------------
  [[nodiscard]] std::size_t occupancy() const noexcept {
    return with_flavour(*this, [](const auto& f) { return f.occupancy(); });
  }
  [[nodiscard]] std::size_t capacity() const noexcept { return core_.cap; }
  [[nodiscard]] channel_stats stats() const {
    channel_stats st;
    st.capacity = core_.cap;
    st.blocked_push_ns = ticks_to_ns(core_.push_side->clock.blocked_ticks_now(core_.timing));
    st.blocked_pop_ns = ticks_to_ns(core_.pop_side->clock.blocked_ticks_now(core_.timing));
    st.waiting_push = not_full_.waiters() + wm_.waiters().waiters();
    st.waiting_pop = not_empty_.waiters();
    with_flavour(*this, [&](const auto& f) { f.fill_stats(st); });
    return st;
  }

 private:
  // The one dispatch on the storage flavour: calls f with the flavour `self` has (self:
  // *this, const or not). Everything else is written once per flavour and inlined.
  template <class Self, class F>
  static decltype(auto) with_flavour(Self& self, F&& f) {
    if constexpr (kRingCapable) {
      if (self.ring_) return f(*self.ring_);
    }
    if (self.locked_) [[likely]] return f(*self.locked_);
    return f(*self.direct_);  // a fused edge: tested last, so the ring pays nothing for it
  }

  // Blocks on `w` until op() is not full (detail/backoff.hpp), timing the wait on `side`;
  // peer() reads the channel's progress (the spin stops when crowded and it stalls).
  template <class Op, class Ready = always_ready, class Peer = no_peer>
  status wait_on(waker& w, channel_side& side, Op&& op, const time_point* deadline, Ready&& ready = {}, Peer&& peer = {}) {
    auto alone = [&] { return &side == &*core_.push_side ? core_.handles.sender_alone() : core_.handles.receiver_alone(); };
    return block(w, op, ready, deadline, side.spin, side.clock, core_.timing, core_.asym_fences, alone, peer);
  }
  // One try of a push; `weight` carries a weighted item's weight from try to try (the
  // locked flavour weighs once per push, not once per re-try; 0: not weighed yet).
  template <class Flavour>
  status push_once(Flavour& f, T& v, std::size_t& weight) {
    if constexpr (requires { f.try_push(core_, v, weight); }) {
      return f.try_push(core_, v, weight);
    } else {
      return f.try_push(core_, v);
    }
  }
  template <class Flavour>
  status block_push(Flavour& f, T& v, const time_point* deadline, std::size_t& weight) {
    return wait_on(not_full_, *core_.push_side, [&] { return push_once(f, v, weight); }, deadline,
                   [&] { return f.push_worth_retrying(core_); }, [&] { return f.progress(); });
  }
  template <class Flavour>
  status block_push(Flavour& f, T& v, const time_point* deadline) {
    std::size_t weight = 0;
    return block_push(f, v, deadline, weight);
  }
  template <class Flavour>
  status block_pop(Flavour& f, std::optional<T>& out, const time_point* deadline) {
    return wait_on(not_empty_, *core_.pop_side, [&] { return f.try_pop(core_, out); }, deadline, always_ready{},
                   [&] { return f.progress(); });
  }

  template <bool Move, class Flavour, class Range>
  std::size_t push_all_into(Flavour& f, Range& r, std::size_t* went_in) {
    std::size_t n = 0;
    std::size_t pending = 0;
    // Wakes consumers for the last run of pushes on every exit, including a copy or
    // move of an element that throws (the items before it are in and must be seen).
    struct flush_guard {
      channel* self;
      Flavour* f;
      std::size_t* pending;
      ~flush_guard() {
        if (*pending != 0) self->after_push(*f, *pending);
      }
    } guard{this, &f, &pending};
    auto one = [&](T& v) {
      std::size_t weight = 0;
      status s = push_once(f, v, weight);
      if (s == status::ok) {
        ++pending;
        return true;
      }
      if (pending != 0) {
        after_push(f, pending);
        pending = 0;
      }
      if (s == status::closed) return false;
      if (block_push(f, v, nullptr, weight) != status::ok) return false;
      after_push(f, 1);
      return true;
    };
    // Fast path: a contiguous range of T into the ring, many slots per CAS.
    if constexpr (Flavour::kBulk && std::ranges::contiguous_range<Range> &&
                  std::is_same_v<std::remove_cv_t<std::ranges::range_value_t<Range>>, T> &&
                  (Move ? !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<Range>>>
                        : std::is_nothrow_copy_constructible_v<T>)) {
      if (core_.policy == overflow::block) {
        T* p = const_cast<T*>(std::ranges::data(r));  // only read from unless Move
        return f.template push_contiguous<Move>(core_, p, std::ranges::size(r), pending, one);
      }
    }
    for (auto&& e : r) {
      bool ok;
      if constexpr (Move && std::is_same_v<std::remove_cvref_t<decltype(e)>, T> &&
                    !std::is_const_v<std::remove_reference_t<decltype(e)>>) {
        ok = one(e);
      } else {
        T tmp = e;  // an implicit conversion only, as push() (detail::push_all_range)
        ok = one(tmp);
      }
      if (!ok) break;
      ++n;
      if (went_in != nullptr) *went_in = n;
      // Seen at once, as a push() is: the range's next element is the caller's code, which
      // may wait (for a socket; for the consumer's answer to this very item). Cheap when
      // nobody sleeps: a compiler barrier and two relaxed loads.
      if (pending != 0) {
        after_push(f, pending);
        pending = 0;
      }
    }
    return n;
  }

  template <class Flavour, class Out>
  std::size_t pop_some_from(Flavour& f, Out& out, std::size_t max, bool wait) {
    std::optional<T> v;
    if ((wait ? block_pop(f, v, nullptr) : f.try_pop(core_, v)) != status::ok) return 0;
    std::size_t n = 0;
    // Hand each item over before taking the next: if `out` throws, the rest stay queued.
    struct notify_guard {
      channel* self;
      Flavour* f;
      std::size_t* count;
      ~notify_guard() {
        if (*count != 0) self->after_pop(*f, *count);
      }
    } guard{this, &f, &n};
    // n counts an item once it has left the channel, before its write: one whose write
    // throws still freed its slot, and the guard must wake a producer for it (counted
    // after the write, a throw on the first item woke nobody, and a producer parked on
    // the full channel slept on beside an empty one).
    ++n;
    *out = std::move(*v);
    ++out;
    v.reset();
    if constexpr (Flavour::kBulk && sizeof(T) <= 64) {
      f.pop_into(core_, out, n, max);  // fast path: runs of items per CAS on the ring
      return n;
    }
    while (n < max && f.try_pop(core_, v) == status::ok) {
      ++n;
      *out = std::move(*v);
      ++out;
      v.reset();
    }
    return n;
  }

  // After n items went in: wake consumers if any sleep (and the flavour's clean-up of
  // a push that raced with a cancel or a disconnect).
  template <class Flavour>
  void after_push(Flavour& f, std::size_t n) noexcept {
    light_fence(core_.asym_fences);  // (F): see the top of this file
    f.after_push(core_);
    // A drop_oldest push of a weighted item may evict more weight than it adds: occupancy
    // fell as after a pop, and wait_writable()/on_writable() waiters must see it (they
    // slept on, with occupancy below the watermark, until some later pop). Only the
    // locked flavour can; the ring's pushes pay nothing for it.
    if constexpr (Flavour::kEvictsMoreThanItAdds) {
      if (core_.policy == overflow::drop_oldest) wm_.after_pop([&] { return f.occupancy(); });
    }
    if (not_empty_.has_waiters()) {
      // A push that claimed its slot before close() and lands after it: close()'s wake-up
      // found receivers that went back to sleep on it (closed, but an item still coming).
      // Each of them must wake now to see the end, not only the one that takes the item.
      // (A sleeper that saw the closed mark after its heavy fence is seen here as kClosed.)
      const bool closed = (core_.state.load(std::memory_order_relaxed) & kClosed) != 0;
      not_empty_.notify(closed ? -1 : static_cast<int>(n > 1024 ? 1024 : n));
    }
  }
  template <class Flavour>
  void after_pop(Flavour& f, std::size_t n) noexcept {
    light_fence(core_.asym_fences);  // (F), as in after_push
    if (not_full_.has_waiters()) not_full_.notify(f.pop_wakes_all() ? -1 : static_cast<int>(n > 1024 ? 1024 : n));
    wm_.after_pop([&] { return f.occupancy(); });
  }

  // disconnect() and cancel() after their state bit: one fence for every pair, after_push's
  // light_fence (a push in flight sees the bit, or we see its items) and (S) on both
  // sides' inflight, which seal() reads after it; then wake, then discard. Every blocked
  // thread wakes before the discards: each hands an item to on_discard (a dead letter,
  // which may be slow), and a waiter needs only the state bit to return.
  void stop_flavour() noexcept {
    heavy_fence(core_.asym_fences);
    with_flavour(*this, [&](auto& f) { f.seal(core_); });
    wake_everyone();
    with_flavour(*this, [&](auto& f) { f.discard_all(core_); });
  }

  bool writable_now() const noexcept {
    return occupancy() <= wm_.level() || core_.state.load(std::memory_order_acquire) != 0;
  }
  void wake_everyone() noexcept {
    not_empty_.notify_all();
    not_full_.notify_all();
    wm_.wake_all();
  }

  channel_core<T> core_;
  std::optional<ring_flavour<T>> ring_;      // unweighted, nothrow-move T
  std::optional<locked_flavour<T>> locked_;  // otherwise
  std::optional<direct_flavour<T>> direct_;  // a fused edge (make_direct): neither of the above
  bool ring_later_ = false;  // locked_ stands in until make_storage() makes the ring

  waker not_empty_;  // consumers waiting for an item
  waker not_full_;   // producers waiting for room
  watermark wm_;     // on_writable callbacks, wait_writable() callers

  mutable std::mutex why_mu_;
  std::exception_ptr why_;  // guarded by why_mu_
};

}  // namespace sluice::detail
