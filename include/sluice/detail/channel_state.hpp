// sluice/detail/channel_state.hpp — the shared state behind sender<T>/receiver<T>.
//
// Composition: a lock-free ring (detail/ring_buffer.hpp) or, for weighted channels and
// item types whose move may throw, a mutex-guarded deque; plus three wakers
// (detail/waker.hpp): consumers waiting for an item, producers waiting for room, and
// producers waiting for the low watermark. Lifetime counting is in counts_ (senders,
// receivers, handles), as crossbeam's counter.rs: the last sender closes, the last
// receiver disconnects, the last handle frees.
//
// Every blocking operation is "try, spin, yield, register, re-check, park":
//   s = try_op(); if (s != full) return s;               // fast path, no system call
//   spin with pause, then sched_yield, re-trying          // the other side is usually near
//   key = waker.prepare_wait(); s = try_op();            // re-check after registering
//   if (s != full) cancel_wait(); else commit_wait(key)  // park; loop on wake-up
// and every successful operation ends with after_push()/after_pop():
//   fence(seq_cst); if (waker.has_waiters()) waker.notify(n);
// so a push or pop with nobody asleep makes no system call.
//
// Single-side path: when a side has one handle (one sender, or one receiver) and the
// policy is block, its pushes (pops) move tail_ (head_) with a plain store instead of a
// CAS. The only other writers then are close/disconnect/cancel (the closed mark) and
// cancel's discards: they set their state bit first and quiesce() the side (an
// asymmetric Dekker pair on side_state::inflight) before they touch the ring. Every edge
// of a linear pipeline built from plain handles is such a channel.
//
// Requires: one thread per handle object at a time (handles are copied to share).
// Guarantees: see channel.hpp. Each item is destroyed exactly once; every item that
// does not reach a receiver is counted in discarded and offered to on_discard.
// Lifetime: deleted by the release of the last handle.
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/ring_buffer.hpp"
#include "sluice/detail/ticks.hpp"
#include "sluice/detail/waker.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

// How long a blocked operation spins and yields before it parks. A futex wake of a
// thread on an idle virtual core was measured at ~20 us here, so a short spin that
// finds the other side already moving wins; the yields let a thread that shares our
// core (more stage threads than cores is normal) run instead of us.
// The spin is adaptive per side of each channel: a wait that spinning satisfied, or
// that parked but was woken soon after, lets the next one spin a round longer; a long
// parked wait shortens it, so a side whose partner is descheduled or idle for long
// (oversubscribed cores, a slow stage) stops burning the core others need.
inline constexpr int kSpinRounds = 10;  // round r spins 2^min(r,6) pauses: 319 pauses (~7-13 us)
inline constexpr int kMinSpinRounds = 3;
inline constexpr int kYieldRounds = 4;
// A wait that parked and was woken within kShortWait of parking lengthens the spin; one
// parked longer than kLongWait shortens it.
inline constexpr std::chrono::microseconds kShortWait{50};
inline constexpr std::chrono::microseconds kLongWait{200};

template <class T>
class channel {
  // The lock-free ring needs a nothrow move (a slot is claimed before the item moves in).
  static constexpr bool kRingCapable = std::is_nothrow_move_constructible_v<T>;

 public:
  explicit channel(channel_options<T> o)
      : cap_(o.capacity),
        lw_(o.low_watermark == kDefaultLowWatermark ? o.capacity / 2 : o.low_watermark),
        policy_(o.overflow),
        weigh_(std::move(o.weigh)),
        on_discard_(std::move(o.on_discard)),
        timing_(o.timing),
        asym_fences_(decide_fence_mode() == fence_mode::kAsymmetric) {
    if (cap_ == 0) {
      throw std::invalid_argument("sluice::bounded: capacity must be at least 1 (got 0)");
    }
    if (lw_ > cap_) {
      throw std::invalid_argument("sluice::bounded: low_watermark (" + std::to_string(lw_) +
                                  ") exceeds capacity (" + std::to_string(cap_) + ")");
    }
    // if constexpr: ring_buffer<T>'s constructor must not be instantiated for a T whose
    // move may throw (it static_asserts); such a T always takes the locked queue.
    if constexpr (kRingCapable) {
      if (!weigh_) {
        ring_.emplace(cap_);
        return;
      }
    }
    locked_.emplace();
  }
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  ~channel() {
    // No handle is left, so nobody else touches us: discard what is still buffered.
    discard_all();
  }

  // ---- lifetime (counter) -------------------------------------------------------
  void add_sender() noexcept {
    // relaxed: a new handle is made from an existing one, which keeps us alive.
    senders_.fetch_add(1, std::memory_order_relaxed);
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void add_receiver() noexcept {
    receivers_.fetch_add(1, std::memory_order_relaxed);
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  // Returns true when the caller must delete the channel.
  [[nodiscard]] bool release_sender() noexcept {
    // acq_rel: the last sender's close() sees every other sender's pushes.
    if (senders_.fetch_sub(1, std::memory_order_acq_rel) == 1) close();
    return release_ref();
  }
  [[nodiscard]] bool release_receiver() noexcept {
    if (receivers_.fetch_sub(1, std::memory_order_acq_rel) == 1) disconnect();
    return release_ref();
  }
  // True while this is the only sender; stays true until its owner copies it.
  [[nodiscard]] std::size_t sender_count() const noexcept {
    return senders_.load(std::memory_order_relaxed);
  }
  // Testing seam (detail/fault_hook.hpp): set before the handles reach other threads.
  void set_fault_hook(fault_hook* h) noexcept { fault_ = h; }

  // ---- push -------------------------------------------------------------------
  // Moves from v only on ok. A drop_newest channel returns ok and discards v.
  status try_push(T& v) {
    inject(fault_hook::op::push);
    const status s = try_push_impl(v);
    if (s == status::ok) after_push(1);
    return s;
  }
  status push(T& v, const time_point* deadline) {
    inject(fault_hook::op::push);
    const status s = block(not_full_, [&] { return try_push_impl(v); }, deadline, *push_side_);
    if (s == status::ok) after_push(1);
    return s;
  }
  // Pushes each element of r (moved if r is an rvalue, copied otherwise); blocks like
  // push; stops at the first failure. Wakes consumers once per run of pushes, not per item.
  template <bool Move, class Range>
  std::size_t push_all(Range& r) {
    inject(fault_hook::op::push);
    std::size_t n = 0;
    std::size_t pending = 0;
    // Wakes consumers for the last run of pushes on every exit, including a copy or
    // move of an element that throws (the items before it are in and must be seen).
    struct flush_guard {
      channel* self;
      std::size_t* pending;
      ~flush_guard() {
        if (*pending != 0) self->after_push(*pending);
      }
    } guard{this, &pending};
    auto one = [&](T& v) {
      status s = try_push_impl(v);
      if (s == status::ok) {
        ++pending;
        return true;
      }
      if (pending != 0) {
        after_push(pending);
        pending = 0;
      }
      if (s == status::closed) return false;
      s = block(not_full_, [&] { return try_push_impl(v); }, nullptr, *push_side_);
      if (s != status::ok) return false;
      after_push(1);
      return true;
    };
    // Fast path: a contiguous range of T into the ring, many slots per CAS.
    if constexpr (std::ranges::contiguous_range<Range> &&
                  std::is_same_v<std::remove_cv_t<std::ranges::range_value_t<Range>>, T> &&
                  (Move ? !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<Range>>>
                        : std::is_nothrow_copy_constructible_v<T>)) {
      if (ring_ && policy_ == overflow::block) {
        T* p = const_cast<T*>(std::ranges::data(r));  // only read from unless Move
        const std::size_t total = std::ranges::size(r);
        while (n < total) {
          if (state_.load(std::memory_order_relaxed) & (kCancelled | kDisconnected)) break;
          bool closed = false;
          const std::size_t k =
              ring_->template try_push_bulk<Move>(p + n, std::min<std::size_t>(total - n, 64), closed);
          if (k != 0) {
            n += k;
            pending += k;
            continue;
          }
          if (closed) break;
          // Full: flush, then block on one item (a copy, unless we may move).
          bool pushed;
          if constexpr (Move) {
            pushed = one(p[n]);
          } else {
            T copy(std::as_const(p[n]));
            pushed = one(copy);
          }
          if (!pushed) break;
          ++n;
        }
        return n;
      }
    }
    for (auto&& e : r) {
      bool ok;
      if constexpr (Move && std::is_same_v<std::remove_cvref_t<decltype(e)>, T> &&
                    !std::is_const_v<std::remove_reference_t<decltype(e)>>) {
        ok = one(e);
      } else {
        T tmp(e);
        ok = one(tmp);
      }
      if (!ok) break;
      ++n;
    }
    return n;
  }

  // ---- pop --------------------------------------------------------------------
  // ok: out holds an item. full: empty now. closed: done (drained, or cancelled).
  status try_pop(std::optional<T>& out) {
    inject(fault_hook::op::pop);
    const status s = try_pop_impl(out);
    if (s == status::ok) after_pop(1);
    return s;
  }
  status pop(std::optional<T>& out, const time_point* deadline) {
    inject(fault_hook::op::pop);
    const status s = block(not_empty_, [&] { return try_pop_impl(out); }, deadline, *pop_side_);
    if (s == status::ok) after_pop(1);
    return s;
  }
  template <class Out>
  std::size_t pop_some(Out& out, std::size_t max) {
    if (max == 0) return 0;
    inject(fault_hook::op::pop);
    std::optional<T> v;
    if (block(not_empty_, [&] { return try_pop_impl(v); }, nullptr, *pop_side_) != status::ok) {
      return 0;
    }
    std::size_t n = 0;
    // Hand each item over before taking the next: if `out` throws, the rest stay queued.
    struct notify_guard {
      channel* self;
      std::size_t* count;
      ~notify_guard() {
        if (*count != 0) self->after_pop(*count);
      }
    } guard{this, &n};
    if constexpr (sizeof(T) <= 64) {
      // Fast path: claim runs of up to kBatch items per CAS on the ring.
      if (ring_) {
        *out = std::move(*v);
        ++out;
        v.reset();
        ++n;
        constexpr std::size_t kBatch = 32;
        std::optional<T> got[kBatch];
        while (n < max) {
          if (state_.load(std::memory_order_relaxed) & kCancelled) break;
          const std::size_t k = ring_->try_pop_bulk(got, std::min(kBatch, max - n));
          if (k == 0) break;
          std::size_t i = 0;
          try {
            for (; i < k; ++i) {
              *out = std::move(*got[i]);
              ++out;
              got[i].reset();
              ++n;
            }
          } catch (...) {
            // Items claimed but not handed over go to on_discard (they count as popped).
            for (; i < k; ++i) {
              if (got[i]) hand_to_hook(std::move(*got[i]));
            }
            throw;
          }
        }
        return n;
      }
    }
    for (;;) {
      *out = std::move(*v);
      ++out;
      v.reset();
      ++n;
      if (n == max || try_pop_impl(v) != status::ok) break;
    }
    return n;
  }
  [[nodiscard]] bool done() const noexcept {
    const std::uint32_t st = state_.load(std::memory_order_acquire);
    if (st & kCancelled) return true;
    if (ring_) return ring_->closed() && ring_->size_guess() == 0;
    std::lock_guard lock(locked_->mu);
    return (st & (kClosed | kDisconnected)) != 0 && locked_->items.empty();
  }

  // ---- closing ----------------------------------------------------------------
  // No more items from anyone; receivers drain what is buffered, then end.
  void close() noexcept {
    if (ring_) {
      // The state bit first (a lone sender reads it and refuses), then the mark, once a
      // lone sender's push that missed the bit has stored its tail (quiesce). A receiver
      // that sees kClosed before the mark keeps waiting; wake_everyone() below follows it.
      state_.fetch_or(kClosed, std::memory_order_seq_cst);
      quiesce(*push_side_);
      ring_->close();
    } else {
      std::lock_guard lock(locked_->mu);
      state_.fetch_or(kClosed, std::memory_order_seq_cst);
    }
    wake_everyone();
  }
  // The last receiver is gone: pushes fail from now on; buffered items are discarded.
  void disconnect() noexcept {
    state_.fetch_or(kDisconnected, std::memory_order_seq_cst);
    // One fence for every pair: after_push's light_fence (a push in flight sees us, or we
    // see it) and (S) on both sides' inflight, which we read after it.
    heavy_fence(asym_fences_);
    if (ring_) {
      wait_idle(*push_side_);  // before the mark: see close()
      ring_->close();
      wait_idle(*pop_side_);   // (no receiver is left, but the rule is cheap to keep)
    }
    discard_all();
    wake_everyone();
  }
  // Abort: every waiter wakes, buffered items are discarded and counted, `why` is kept.
  void cancel(std::exception_ptr why) noexcept {
    {
      std::lock_guard lock(why_mu_);
      if (!(state_.load(std::memory_order_relaxed) & kCancelled)) why_ = std::move(why);
      state_.fetch_or(kCancelled, std::memory_order_seq_cst);
    }
    heavy_fence(asym_fences_);  // as in disconnect(): pairs with after_push and with (S) on both sides
    if (ring_) {
      wait_idle(*push_side_);  // before the mark: see close()
      ring_->close();
      wait_idle(*pop_side_);   // a lone receiver's pop in flight ends before we discard
    }
    discard_all();
    wake_everyone();
  }
  [[nodiscard]] std::exception_ptr cancel_cause() const {
    std::lock_guard lock(why_mu_);
    return why_;
  }
  [[nodiscard]] bool is_cancelled() const noexcept {
    return (state_.load(std::memory_order_acquire) & kCancelled) != 0;
  }
  // Closed, disconnected or cancelled: a push can never succeed again.
  [[nodiscard]] bool is_closed() const noexcept {
    return state_.load(std::memory_order_acquire) != 0;
  }

  // ---- low watermark ("drain") ------------------------------------------------
  void wait_writable() {
    (void)block(writable_, [&] { return writable_now() ? status::ok : status::full; }, nullptr,
                *push_side_);
  }
  void on_writable(std::function<void()> f) {
    if (writable_now()) {
      f();
      return;
    }
    {
      std::lock_guard lock(cb_mu_);
      callbacks_.push_back(std::move(f));
      // seq_cst store + fence: Dekker pair with after_pop's fence and load of armed_.
      writable_armed_.store(true, std::memory_order_seq_cst);
    }
    heavy_fence(asym_fences_);  // pairs with light_fence() in after_pop
    if (writable_now()) fire_writable();  // the crossing may have happened meanwhile
  }

  // ---- observation --------------------------------------------------------------
  [[nodiscard]] std::size_t occupancy() const noexcept {
    return ring_ ? ring_->size_guess() : locked_->weight.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }
  [[nodiscard]] channel_stats stats() const {
    channel_stats st;
    st.capacity = cap_;
    st.blocked_push_ns = ticks_to_ns(push_side_->blocked_ticks_now(timing_));
    st.blocked_pop_ns = ticks_to_ns(pop_side_->blocked_ticks_now(timing_));
    st.waiting_push = not_full_.waiters() + writable_.waiters();
    st.waiting_pop = not_empty_.waiters();
    if (ring_) {
      // Read order keeps every difference non-negative: ring_discarded_ grows only
      // after head does, head only after tail does.
      const std::uint64_t dropped_new = dropped_new_.load(std::memory_order_acquire);
      const std::uint64_t rd = ring_discarded_.load(std::memory_order_acquire);
      const std::uint64_t head = ring_->head_position();
      const std::uint64_t tail = ring_->tail_position();
      st.pushed = tail + dropped_new;
      st.popped = head - rd;
      st.discarded = rd + dropped_new;
      st.size = static_cast<std::size_t>(tail - head);
      st.items = st.size;
    } else {
      std::lock_guard lock(locked_->mu);
      st.pushed = locked_->pushed;
      st.popped = locked_->popped;
      st.discarded = locked_->discarded;
      st.size = locked_->weight.load(std::memory_order_relaxed);
      st.items = locked_->items.size();
    }
    return st;
  }

 private:
  static constexpr std::uint32_t kClosed = 1;        // senders gone or close()
  static constexpr std::uint32_t kDisconnected = 2;  // receivers gone
  static constexpr std::uint32_t kCancelled = 4;     // cancel()

  // One side's waiting state: its adaptive spin budget (rounds) and the time it spent
  // blocked, in ticks (detail/ticks.hpp).
  // The time blocked counts waits in progress too, so a snapshot taken during a long wait
  // sees it grow (a stage's busy time, derived from it, then never runs backwards): a
  // wait that spun out (about to yield or park, microseconds anyway) registers its start
  // under slow_mu; one that a spin satisfied is counted when it ends (at most ~10 us late).
  struct side_state {
    // 1 while the side's lone handle is inside a single-side push or pop (see
    // try_push_impl); written only by that thread, read by quiesce().
    std::atomic<std::uint32_t> inflight{0};
    std::atomic<int> spin_rounds{kSpinRounds};
    std::atomic<std::uint64_t> blocked_ticks{0};  // finished waits
    mutable std::mutex slow_mu;
    std::uint32_t slow_waiters = 0;    // waits past their spin right now  (guarded by slow_mu)
    std::uint64_t slow_since_sum = 0;  // the sum of their start ticks     (guarded by slow_mu)

    void begin_slow(std::uint64_t t0) {
      std::lock_guard lock(slow_mu);
      ++slow_waiters;
      slow_since_sum += t0;
    }
    // Ends a slow wait begun at t0; `ticks` is the whole wait's time blocked.
    void end_slow(std::uint64_t t0, std::uint64_t ticks, bool count) {
      std::lock_guard lock(slow_mu);
      --slow_waiters;
      slow_since_sum -= t0;
      // relaxed: ordered for readers by slow_mu.
      if (count) blocked_ticks.fetch_add(ticks, std::memory_order_relaxed);
    }
    // Finished waits plus the part of the slow ones in progress that has elapsed by now.
    std::uint64_t blocked_ticks_now(bool timing) const {
      if (!timing) return 0;
      std::lock_guard lock(slow_mu);
      std::uint64_t t = blocked_ticks.load(std::memory_order_relaxed);
      if (slow_waiters != 0) {
        // Modulo 2^64 both products may wrap, but their difference, the elapsed part of
        // the waits in progress, is small and comes out exact. Start ticks read on other
        // cores may be a few ticks ahead of ours: a "negative" difference counts as 0.
        const std::uint64_t open = slow_waiters * ticks() - slow_since_sum;
        if (static_cast<std::int64_t>(open) > 0) t += open;
      }
      return t;
    }
  };

  struct locked_queue {
    mutable std::mutex mu;
    std::deque<std::pair<T, std::size_t>> items;  // item and its weight  (guarded by mu)
    std::atomic<std::size_t> weight{0};           // written under mu, read anywhere
    std::uint64_t pushed = 0, popped = 0, discarded = 0;  // guarded by mu
  };

  bool release_ref() noexcept {
    // acq_rel: the deleting thread sees every other handle's last writes.
    return refs_.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }

  bool writable_now() const noexcept {
    return occupancy() <= lw_ || state_.load(std::memory_order_acquire) != 0;
  }

  // True when `holders` counts one handle: the caller's own (a handle is used by one
  // thread at a time and only its holder can copy it, so no other thread of this side can
  // be inside an operation). acquire: pairs with the acq_rel decrement of a handle
  // released meanwhile, so its operations happened before ours.
  static bool alone(const std::atomic<std::size_t>& holders) noexcept {
    return holders.load(std::memory_order_acquire) == 1;
  }
  // After setting a state bit: waits until a lone side's push or pop that started before
  // the bit was visible has finished (try_push_impl / try_pop_impl, pair (S)). Short: those
  // operations never block while inflight is set.
  void quiesce(side_state& side) noexcept {
    heavy_fence(asym_fences_);  // (S): they see our bit, or we see their inflight
    wait_idle(side);
  }
  // quiesce() without its fence, for a caller that issued heavy_fence() after its bit.
  static void wait_idle(const side_state& side) noexcept {
    for (int i = 0; side.inflight.load(std::memory_order_acquire) != 0; ++i) {
      if (i < 64) {
        spin_pause();
      } else {
        sched_yield();  // its thread may be off-CPU (more threads than cores)
      }
    }
  }

  // A graph under sluice::testing::stress: its hook may delay or throw here, before the
  // operation starts. Null otherwise: one load from this object's first line (which
  // every push and pop reads anyway) and a branch predicted not taken.
  void inject(fault_hook::op o) {
    if (fault_ != nullptr) [[unlikely]] {
      fault_->on_channel_op(o);
    }
  }

  void hand_to_hook(T&& v) noexcept {
    if (!on_discard_) return;
    try {
      on_discard_(std::move(v));
    } catch (...) {
      // A discard hook must not throw (documented); we will not let it unwind through
      // a destructor or a cancel, so its exception ends here.
    }
  }

  status try_push_impl(T& v) {
    if (ring_) {
      if (policy_ == overflow::block && alone(senders_)) {
        // A lone sender claims its slot with a plain store, not a CAS. What else writes
        // tail_ is the closed mark, set by close()/disconnect()/cancel() from any thread:
        // they set their state bit, then quiesce() this side before marking. Dekker pair
        // (S): we announce inflight and then read state_, they write state_ and then read
        // inflight, so either we see their bit (and refuse) or they wait for our store.
        auto& f = push_side_->inflight;
        f.store(1, std::memory_order_relaxed);
        light_fence(asym_fences_);  // (S) pairs with heavy_fence() in quiesce()
        if (state_.load(std::memory_order_relaxed) & (kClosed | kDisconnected | kCancelled)) {
          f.store(0, std::memory_order_release);
          return status::closed;
        }
        const auto r = ring_->try_push_single(v);
        f.store(0, std::memory_order_release);  // release: quiesce() then sees our tail store
        if (r == ring_buffer<T>::push_result::ok) return status::ok;
        return r == ring_buffer<T>::push_result::full ? status::full : status::closed;
      }
      for (;;) {
        const auto r = ring_->try_push(v);
        if (r == ring_buffer<T>::push_result::ok) return status::ok;
        if (r == ring_buffer<T>::push_result::closed) return status::closed;
        if (policy_ == overflow::block) return status::full;
        if (policy_ == overflow::drop_newest) {
          dropped_new_.fetch_add(1, std::memory_order_release);
          hand_to_hook(std::move(v));
          return status::ok;
        }
        std::optional<T> old;  // drop_oldest: make room, then try again
        if (ring_->try_pop(old)) {
          ring_discarded_.fetch_add(1, std::memory_order_release);
          hand_to_hook(std::move(*old));
        }
      }
    }
    std::vector<T> dropped;  // handed to the hook outside the lock, on every exit
    struct hook_guard {
      channel* self;
      std::vector<T>* items;
      ~hook_guard() {
        for (auto& d : *items) self->hand_to_hook(std::move(d));
      }
    } guard{this, &dropped};
    {
      std::lock_guard lock(locked_->mu);
      if (state_.load(std::memory_order_relaxed) != 0) return status::closed;
      // A weight of 0 counts as 1: every item takes room, so `capacity` bounds the items too.
      const std::size_t w = weigh_ ? std::max<std::size_t>(weigh_(std::as_const(v)), 1) : 1;
      auto& q = *locked_;
      // occupancy + w <= cap_, without overflow: occupancy exceeds cap_ only while the one
      // oversized item that an empty channel accepted is inside, and then nothing fits.
      // So occupancy never exceeds max(cap_, the largest weight) and never wraps.
      auto fits = [&] {
        const std::size_t occ = q.weight.load(std::memory_order_relaxed);
        return q.items.empty() || (occ <= cap_ && w <= cap_ - occ);
      };
      if (!fits()) {
        if (policy_ == overflow::block) return status::full;
        if (policy_ == overflow::drop_newest) {
          ++q.pushed;
          ++q.discarded;
          dropped.push_back(std::move(v));
        } else {
          while (!fits()) {
            auto& front = q.items.front();
            q.weight.store(q.weight.load(std::memory_order_relaxed) - front.second,
                           std::memory_order_relaxed);
            dropped.push_back(std::move(front.first));
            q.items.pop_front();
            ++q.discarded;
          }
        }
      }
      if (dropped.empty() || policy_ == overflow::drop_oldest) {
        q.items.emplace_back(std::move(v), w);  // strong guarantee: a throw leaves q as it was
        q.weight.store(q.weight.load(std::memory_order_relaxed) + w, std::memory_order_relaxed);
        ++q.pushed;
      }
    }
    return status::ok;
  }

  status try_pop_impl(std::optional<T>& out) {
    if (ring_) {
      std::uint32_t st;
      if (policy_ == overflow::block && alone(receivers_)) {
        // A lone receiver moves head_ with a plain store. Other threads pop only to
        // discard (cancel(), or a push that finds the channel cancelled or disconnected),
        // and they quiesce() this side first: the same Dekker pair (S) as for a lone sender.
        // (Under drop_oldest pushers pop too, so that policy always takes the CAS path.)
        auto& f = pop_side_->inflight;
        f.store(1, std::memory_order_relaxed);
        light_fence(asym_fences_);  // (S) pairs with heavy_fence() in quiesce()
        st = state_.load(std::memory_order_acquire);
        if (st & kCancelled) {
          f.store(0, std::memory_order_release);
          return status::closed;
        }
        const bool got = ring_->try_pop_single(out);
        f.store(0, std::memory_order_release);
        if (got) return status::ok;
      } else {
        st = state_.load(std::memory_order_acquire);
        if (st & kCancelled) return status::closed;
        if (ring_->try_pop(out)) return status::ok;
      }
      // Empty. While the channel is open that is all (and we stay off tail_, the
      // producers' hot line). close() marks the ring *before* it sets kClosed, and a
      // waiter re-checks after registering, so reading state_ first loses no close.
      if (st == 0 && state_.load(std::memory_order_acquire) == 0) return status::full;
      // Done only if closed *and* every claimed position was popped: a push that
      // claimed its slot before the mark is still delivered.
      if (ring_->closed() && ring_->head_position() == ring_->tail_position()) return status::closed;
      if (state_.load(std::memory_order_acquire) & kCancelled) return status::closed;
      return status::full;
    }
    std::lock_guard lock(locked_->mu);
    const std::uint32_t st = state_.load(std::memory_order_relaxed);
    if (st & kCancelled) return status::closed;
    auto& q = *locked_;
    if (q.items.empty()) return st != 0 ? status::closed : status::full;
    out.emplace(std::move(q.items.front().first));  // a throwing move leaves the item queued
    q.weight.store(q.weight.load(std::memory_order_relaxed) - q.items.front().second,
                   std::memory_order_relaxed);
    q.items.pop_front();
    ++q.popped;
    return status::ok;
  }

  // After n items went in: wake consumers if any sleep; if the channel was cancelled or
  // disconnected while our push was in flight, discard what we left behind.
  void after_push(std::size_t n) noexcept {
    // (F) orders our publish before the loads below; pairs with heavy_fence() in
    // waker::prepare_wait and with the fence in cancel()/disconnect() (see below).
    light_fence(asym_fences_);
    if (ring_ && (state_.load(std::memory_order_relaxed) & (kCancelled | kDisconnected))) {
      quiesce(*pop_side_);  // a lone receiver's pop in flight ends before we discard
      discard_all();
    }
    if (not_empty_.has_waiters()) not_empty_.notify(static_cast<int>(n > 1024 ? 1024 : n));
  }
  void after_pop(std::size_t n) noexcept {
    light_fence(asym_fences_);  // (F), as in after_push
    // A weighted pop can make room for several waiting items, and a woken pusher whose
    // item still does not fit goes back to sleep: wake them all, or one that fits sleeps on.
    if (not_full_.has_waiters()) not_full_.notify(weigh_ ? -1 : static_cast<int>(n > 1024 ? 1024 : n));
    if (writable_.has_waiters() && occupancy() <= lw_) writable_.notify(-1);
    if (writable_armed_.load(std::memory_order_relaxed) && occupancy() <= lw_) fire_writable();
  }

  void fire_writable() noexcept {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard lock(cb_mu_);
      run.swap(callbacks_);
      writable_armed_.store(false, std::memory_order_relaxed);
    }
    for (auto& f : run) {
      try {
        f();
      } catch (...) {
        // on_writable callbacks run on a popping thread; like on_discard they must not
        // throw, and an exception from one must not break the consumer's pop.
      }
    }
  }

  void wake_everyone() noexcept {
    not_empty_.notify_all();
    not_full_.notify_all();
    writable_.notify_all();
    fire_writable();
  }

  void discard_all() noexcept {
    if (ring_) {
      std::optional<T> v;
      while (ring_->try_pop(v)) {
        ring_discarded_.fetch_add(1, std::memory_order_release);
        hand_to_hook(std::move(*v));
        v.reset();
      }
      return;
    }
    std::deque<std::pair<T, std::size_t>> gone;
    {
      std::lock_guard lock(locked_->mu);
      gone.swap(locked_->items);
      locked_->discarded += gone.size();
      locked_->weight.store(0, std::memory_order_relaxed);
    }
    for (auto& [v, w] : gone) hand_to_hook(std::move(v));
  }

  // try, spin, yield, register, re-check, park. Returns the op's last status, or
  // timeout. Time from the first failed try to the end is added to the side's
  // blocked_ticks (two reads of the cheap clock, detail/ticks.hpp, per wait).
  // Adds a wait that a spin satisfied to the side's time blocked. When this side is
  // alone() no other thread of it can be adding at the same time, so a plain load and
  // store does: on an SPSC channel's per-item path the locked add cost ~5% of a
  // ping-pong round trip.
  void add_spin_time(side_state& side, std::uint64_t t) noexcept {
    // relaxed: a statistic; stats() reads it whenever (under slow_mu for the open waits).
    if (alone(&side == &*push_side_ ? senders_ : receivers_)) {
      side.blocked_ticks.store(side.blocked_ticks.load(std::memory_order_relaxed) + t, std::memory_order_relaxed);
    } else {
      side.blocked_ticks.fetch_add(t, std::memory_order_relaxed);
    }
  }

  template <class Op>
  status block(waker& w, Op&& op, const time_point* deadline, side_state& side) {
    status s = op();
    if (s != status::full) return s;
    std::atomic<int>& spin_rounds = side.spin_rounds;
    // Time blocked (channel_options::timing = false skips it; blocked_*_ns then stay 0):
    // the spin's pauses x their calibrated cost, plus the ticks from the end of the spin
    // to the end of the wait if it had to yield or park (detail/ticks.hpp says why).
    std::uint64_t pauses = 0;
    std::uint64_t slow_t0 = 0;  // ticks when the spin gave up
    std::uint64_t park_t0 = 0;  // ticks when the wait first parked
    bool spun_out = false;      // the spin gave up: the wait yielded, maybe parked
    bool parked = false;
    s = wait_loop(w, op, deadline, side, pauses, spun_out, slow_t0, parked, park_t0);
    if (!spun_out) {
      if (timing_) add_spin_time(side, pause_ticks(pauses));
      return s;
    }
    const std::uint64_t t1 = ticks();
    side.end_slow(slow_t0, pause_ticks(pauses) + (t1 - slow_t0), timing_);
    if (parked) {
      // Parks are rare and cost microseconds: converting here is free by comparison.
      const auto slept = std::chrono::nanoseconds(ticks_to_ns(t1 - park_t0));
      // A park that ended soon would have been cheaper as a longer spin (a wake-up
      // costs tens of microseconds here); a long one means spinning is waste.
      // relaxed: the budget is a tuning hint.
      const int rounds = spin_rounds.load(std::memory_order_relaxed);
      if (slept < kShortWait && rounds < kSpinRounds) {
        spin_rounds.store(rounds + 1, std::memory_order_relaxed);
      } else if (slept > kLongWait && rounds > kMinSpinRounds) {
        spin_rounds.store(rounds - 1, std::memory_order_relaxed);
      }
    }
    return s;
  }
  template <class Op>
  status wait_loop(waker& w, Op& op, const time_point* deadline, side_state& side,
                   std::uint64_t& pauses, bool& spun_out, std::uint64_t& slow_t0, bool& parked,
                   std::uint64_t& park_t0) {
    auto expired = [&] { return deadline && std::chrono::steady_clock::now() >= *deadline; };
    status s;
    std::atomic<int>& spin_rounds = side.spin_rounds;
    // relaxed: the budget is a tuning hint; a stale value only changes how long we spin.
    const int rounds = spin_rounds.load(std::memory_order_relaxed);
    // Round r spins 2^min(r,6) pauses and re-tries after each one: the budget grows
    // exponentially, but the other side's move is noticed within one pause (~20-40 ns).
    // A failed re-try reads lines already in our cache, so it costs the other side
    // nothing; re-trying only every few pauses cost the ping-pong round trip ~40%
    // (benchmarks/README.md).
    for (int round = 0; round < rounds; ++round) {
      for (int i = 0, n = 1 << (round < 6 ? round : 6); i < n; ++i) {
        spin_pause();
        ++pauses;
        if ((s = op()) != status::full) {
          if (rounds < kSpinRounds) spin_rounds.store(rounds + 1, std::memory_order_relaxed);
          return s;
        }
      }
    }
    slow_t0 = ticks();
    spun_out = true;
    side.begin_slow(slow_t0);  // block() ends it
    for (int round = 0; round < kYieldRounds; ++round) {
      if (expired()) return status::timeout;
      sched_yield();
      if ((s = op()) != status::full) return s;
    }
    parked = true;
    park_t0 = ticks();
    for (;;) {
      if (expired()) return status::timeout;
      const std::uint32_t key = w.prepare_wait(asym_fences_);
      if ((s = op()) != status::full) {
        w.cancel_wait();
        return s;
      }
      if (!w.commit_wait(key, deadline)) {
        // Timed out. We may have been the one a notify picked, so try once more
        // before giving up: a wake-up is never swallowed by a waiter that leaves.
        s = op();
        if (s == status::full) return status::timeout;
        if (s == status::ok) return s;
        return s;
      }
      if ((s = op()) != status::full) return s;
    }
  }

  // Read-only after construction.
  const std::size_t cap_;
  const std::size_t lw_;
  const overflow policy_;
  fault_hook* fault_ = nullptr;  // set once, before the handles are shared (set_fault_hook)
  const std::function<std::size_t(const T&)> weigh_;
  const std::function<void(T&&)> on_discard_;
  const bool timing_;       // channel_options::timing: measure time blocked
  const bool asym_fences_;  // the fence protocol (detail/platform.hpp), fixed for the process
  std::optional<ring_buffer<T>> ring_;      // unweighted, nothrow-move T
  std::optional<locked_queue> locked_;      // otherwise

  // Counted lifetime (detail/counter idea from crossbeam): senders, receivers, handles.
  alignas(kCacheLine) std::atomic<std::size_t> senders_{1};
  std::atomic<std::size_t> receivers_{1};
  std::atomic<std::size_t> refs_{2};
  std::atomic<std::uint32_t> state_{0};  // [ cancelled | disconnected | closed ]
  std::atomic<bool> writable_armed_{false};

  // Per side (pushers, poppers), each on its own line: written by that side's waiting
  // threads, so they must neither evict state_ from everyone's cache nor false-share
  // with the other side's counters.
  cache_padded<side_state> push_side_;
  cache_padded<side_state> pop_side_;

  waker not_empty_;  // consumers waiting for an item
  waker not_full_;   // producers waiting for room
  waker writable_;   // wait_writable() callers

  alignas(kCacheLine) std::atomic<std::uint64_t> ring_discarded_{0};
  std::atomic<std::uint64_t> dropped_new_{0};

  mutable std::mutex why_mu_;
  std::exception_ptr why_;  // guarded by why_mu_
  std::mutex cb_mu_;
  std::vector<std::function<void()>> callbacks_;  // guarded by cb_mu_
};

}  // namespace sluice::detail
