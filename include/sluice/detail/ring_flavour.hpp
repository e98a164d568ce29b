// sluice/detail/ring_flavour.hpp — the lock-free storage of a channel: unweighted items
// whose move cannot throw, in a ring (detail/ring_buffer.hpp), with the three overflow
// policies and the lone-side path.
//
// Lone-side path: when a side has one handle (one sender, or one receiver) and the
// policy is block, its pushes (pops) move tail_ (head_) with a plain store instead of a
// CAS. The only other writers then are close/disconnect/cancel (the closed mark) and
// cancel's discards: they set their state bit first and quiesce() the side (an
// asymmetric Dekker pair (S) on channel_side::inflight) before they touch the ring:
//
//   lone side:  inflight = 1; light_fence();  (S)  if (state & bits) refuse;
//               move the index; inflight = 0 (release)
//   closer:     state |= bit; heavy_fence();  (S)  while (inflight) wait;  then touch the ring
//
// Either the lone side sees the bit (and refuses), or the closer sees inflight and
// waits for the plain store to land. Every edge of a linear pipeline built from plain
// handles is such a channel. Under drop_oldest pushers pop too, so that policy always
// takes the CAS path; so does drop_newest, for symmetry.
//
// Requires: the core's state bits are set only through close()/seal() below or by a
//   caller that then calls them, so that the quiesce protocol holds. A handle is used by
//   one thread at a time.
// Guarantees: as channel.hpp; each item is moved in once, out once and destroyed once;
//   every dropped or discarded item is counted and offered to on_discard. stats() reads
//   its counters in an order that keeps every difference non-negative.
// Non-guarantees: FIFO across producers; "full"/"empty" are momentary.
// Lifetime: a member of its channel<T>; the destructor destroys what the ring still holds
//   (the channel drains it through discard_all() first, to count it).
#pragma once

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/channel_core.hpp"
#include "sluice/detail/ring_buffer.hpp"
#include "sluice/detail/waker.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

// For ring_flavour::nothrow_room: is Out a back_inserter into a std::vector<T>, and the
// vector behind one (the standard names the iterator's protected member `container`,
// reachable through a derived class).
template <class Out, class T>
struct is_vector_back_inserter : std::false_type {};
template <class T, class A>
struct is_vector_back_inserter<std::back_insert_iterator<std::vector<T, A>>, T> : std::true_type {};
template <class C>
struct back_inserter_target : std::back_insert_iterator<C> {
  static const C& of(const std::back_insert_iterator<C>& it) noexcept { return *(it.*&back_inserter_target::container); }
};

template <class T>
class ring_flavour {
 public:
  // Bulk operations claim many slots per CAS (push_contiguous, pop_into).
  static constexpr bool kBulk = true;
  static constexpr bool kEvictsMoreThanItAdds = false;  // drop_oldest evicts one item for one
  static constexpr std::size_t kRoomAhead = 128;

  explicit ring_flavour(std::size_t capacity)
      : ring_(capacity), room_gap_(capacity < 64 ? 0 : std::min(kRoomAhead, capacity / 8)) {}

  // ---- push ---------------------------------------------------------------------
  // Moves from v only on ok. A drop_newest channel returns ok and discards v.
  status try_push(channel_core<T>& c, T& v) noexcept {
    if (c.policy == overflow::block && c.handles.sender_alone()) {
      // A lone sender claims its slot with a plain store, not a CAS. What else writes
      // tail_ is the closed mark, set by close()/seal() from any thread after they set
      // their state bit and quiesce() this side: pair (S) above.
      auto& f = c.push_side->inflight;
      f.store(1, std::memory_order_relaxed);
      light_fence(c.asym_fences);  // (S) pairs with the heavy_fence() before the closer waits
      if (c.state.load(std::memory_order_relaxed) & (kClosed | kDisconnected | kCancelled)) {
        f.store(0, std::memory_order_release);
        return status::closed;
      }
      const auto r = ring_.try_push_single(v);
      f.store(0, std::memory_order_release);  // release: quiesce() then sees our tail store
      if (r == push_result::ok) return status::ok;
      return r == push_result::full ? status::full : status::closed;
    }
    for (;;) {
      const auto r = ring_.try_push(v);
      if (r == push_result::ok) return status::ok;
      if (r == push_result::closed) return status::closed;
      if (c.policy == overflow::block) return status::full;
      if (c.policy == overflow::drop_newest) {
        dropped_new_.fetch_add(1, std::memory_order_release);  // release: see stats()
        c.hand_to_hook(std::move(v));
        return status::ok;
      }
      (void)discard_one(c);  // drop_oldest: make room, then try again
    }
  }
  // While a blocked push spins: is a re-try worth it yet? A full ring whose consumer
  // frees one slot at a time would otherwise have the producer refill each slot the
  // moment it is freed: the two sides take turns on the same slot lines, which cross
  // between their cores once per item instead of once per line. So the spin waits until
  // the slot an eighth of the ring (at most kRoomAhead) past tail is free: the consumer
  // then streams whole lines and the producer fills them behind it. Rings under 64
  // slots do not wait (their eighth is within a line or two). True at once when the
  // channel is sealed. Only the spin asks: a yielding or parked push re-tries on every
  // wake-up (detail/backoff.hpp), so one freed slot still lets it in.
  [[nodiscard]] bool push_worth_retrying(const channel_core<T>& c) const noexcept {
    if (c.state.load(std::memory_order_relaxed) != 0) return true;
    return room_gap_ == 0 || ring_.room_ahead(room_gap_);
  }
  // The channel's progress, for a blocked wait's spin (detail/backoff.hpp): positions
  // claimed by pops plus those claimed by pushes; any claim on either side changes it.
  [[nodiscard]] std::uint64_t progress() const noexcept { return ring_.head_position() + ring_.tail_position(); }
  // push_all's fast path (block policy, a contiguous range of T): claims runs of up to
  // 64 slots per CAS and fills them from p[0..total), moved when Move. `pending` counts
  // the items in and not yet announced to consumers; one(v) pushes v the blocking way
  // (announcing pending first). Returns how many went in: the first n of p.
  template <bool Move, class One>
  std::size_t push_contiguous(channel_core<T>& c, T* p, std::size_t total, std::size_t& pending, One&& one) {
    std::size_t n = 0;
    while (n < total) {
      if (c.state.load(std::memory_order_relaxed) & (kCancelled | kDisconnected)) break;
      bool closed = false;
      const std::size_t k = ring_.template try_push_bulk<Move>(p + n, std::min<std::size_t>(total - n, 64), closed);
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
  // After n items went in: if the channel was cancelled or disconnected while our push
  // was in flight, discard what we left behind. The caller issued light_fence() (F)
  // first: it pairs with the heavy_fence() in cancel()/disconnect().
  void after_push(channel_core<T>& c) noexcept {
    if (c.state.load(std::memory_order_relaxed) & (kCancelled | kDisconnected)) {
      quiesce(c, *c.pop_side);  // a lone receiver's pop in flight ends before we discard
      discard_all(c);
    }
  }

  // ---- pop ----------------------------------------------------------------------
  // ok: out holds an item. full: empty now. closed: done (drained, or cancelled).
  status try_pop(channel_core<T>& c, std::optional<T>& out) noexcept {
    std::uint32_t st;
    if (c.policy == overflow::block && c.handles.receiver_alone()) {
      // A lone receiver moves head_ with a plain store. Other threads pop only to
      // discard (cancel(), or a push that finds the channel cancelled or disconnected),
      // and they quiesce() this side first: the same pair (S) as for a lone sender.
      auto& f = c.pop_side->inflight;
      f.store(1, std::memory_order_relaxed);
      light_fence(c.asym_fences);  // (S) pairs with the heavy_fence() before the closer waits
      st = c.state.load(std::memory_order_acquire);
      // Disconnected too: the graph disconnects a finished stage's input while a receiver
      // the stage kept may still pop, and a plain-store pop beside disconnect()'s discards
      // took an item they took too (one item popped and a dead letter: ASan timing).
      if (st & (kCancelled | kDisconnected)) {
        f.store(0, std::memory_order_release);
        return status::closed;
      }
      const bool got = ring_.try_pop_single(out);
      f.store(0, std::memory_order_release);
      if (got) return status::ok;
    } else {
      st = c.state.load(std::memory_order_acquire);
      if (st & kCancelled) return status::closed;
      if (ring_.try_pop(out)) return status::ok;
    }
    // Empty. While the channel is open that is all (and we stay off tail_, the
    // producers' hot line). close() sets kClosed, then the mark, then wakes every
    // waiter, and a waiter re-checks after registering, so reading state first loses
    // no close.
    if (st == 0 && c.state.load(std::memory_order_acquire) == 0) return status::full;
    // Done only if closed *and* every claimed position was popped: a push that
    // claimed its slot before the mark is still delivered.
    if (ring_.closed() && ring_.head_position() == ring_.tail_position()) return status::closed;
    if (c.state.load(std::memory_order_acquire) & kCancelled) return status::closed;
    return status::full;
  }
  // pop_some's fast path: hands items to out (each before the next), claiming runs of
  // up to 32 per CAS on the ring, never more than out can take without throwing
  // (nothrow_room below): a claimed slot cannot be given back, and pop_some promises that
  // when out throws, the items not taken stay queued. n counts the items handed over;
  // the one whose write threw counts as popped, as in the one-by-one loop.
  template <class Out>
  void pop_into(channel_core<T>& c, Out& out, std::size_t& n, std::size_t max) {
    constexpr std::size_t kBatch = 32;
    std::optional<T> got[kBatch];
    while (n < max) {
      if (c.state.load(std::memory_order_relaxed) & kCancelled) break;
      const std::size_t want = std::min({kBatch, max - n, std::max<std::size_t>(1, nothrow_room(out))});
      const std::size_t k = ring_.try_pop_bulk(got, want);
      if (k == 0) break;
      for (std::size_t i = 0; i < k; ++i) {
        // Only the last of a run may throw here (want <= room), so none is left behind.
        // Counted before its write: it left the ring either way (channel_state's
        // pop_some_from wakes a producer per item counted).
        ++n;
        *out = std::move(*got[i]);
        ++out;
        got[i].reset();
      }
    }
  }
  // How many items out takes before a write through it may throw: unbounded when the
  // write is noexcept (a pointer, a vector's iterator, an array of optionals); for a
  // back_inserter into a std::vector<T>, its spare capacity (no reallocation: the graph's
  // own batches reserve theirs); else 0, and pop_into claims one item at a time.
  template <class Out>
  static std::size_t nothrow_room(Out& out) noexcept {
    if constexpr (noexcept(*out = std::declval<T&&>()) && noexcept(++out)) {
      return SIZE_MAX;
    } else if constexpr (is_vector_back_inserter<Out, T>::value) {
      const auto& v = back_inserter_target<typename Out::container_type>::of(out);
      return v.capacity() - v.size();
    } else if constexpr (requires { { out.spare_capacity() } noexcept; }) {
      return out.spare_capacity();  // the graph's batch_inserter (graph_task.hpp)
    } else {
      return 0;
    }
  }
  // A pop frees one slot: one waiting pusher per item popped is enough.
  [[nodiscard]] bool pop_wakes_all() const noexcept { return false; }

  // ---- closing ------------------------------------------------------------------
  // Sets kClosed. The state bit first (a lone sender reads it and refuses), then the
  // mark, once a lone sender's push that missed the bit has stored its tail (quiesce).
  // A receiver that sees kClosed before the mark keeps waiting; the caller's wake-up
  // follows.
  void close(channel_core<T>& c) noexcept {
    c.state.fetch_or(kClosed, std::memory_order_seq_cst);
    quiesce(c, *c.push_side);
    ring_.close();
  }
  // After kDisconnected or kCancelled was set and heavy_fence() issued: waits out both
  // lone sides' operations in flight (pair (S)), and marks the ring closed in between.
  void seal(channel_core<T>& c) noexcept {
    wait_idle(*c.push_side);  // before the mark: see close()
    ring_.close();
    wait_idle(*c.pop_side);   // a lone receiver's pop in flight ends before we discard
  }
  // Pops and discards everything buffered. Only after the side(s) that might be popping
  // with a plain store are quiesced (or when no handle is left).
  void discard_all(channel_core<T>& c) noexcept {
    while (discard_one(c)) {
    }
  }
  // Once sealed: returns when every slot claimed before the seal has been popped (a push
  // that claimed its slot before the closed mark lands afterwards and discards its own
  // item) and no discard is inside on_discard. The graph's destructor calls it on the
  // inputs that inlets, which may outlive the graph, push into: their late discards report
  // to the graph. Reads in this order: tail (frozen by the mark); head (acquire), equal to
  // tail once every claimed slot was popped, and then (D) makes each discarding pop's
  // hooks_begun_ increment visible; hooks_done_ before hooks_begun_, so that equal means
  // none is still in its hook. Short: it waits only for pushes already past their claim.
  void wait_discards() noexcept {
    for (int i = 0;; ++i) {
      if (!ring_.closed()) return;  // not sealed: not the caller's case
      const std::uint64_t tail = ring_.tail_position();
      const std::uint64_t head = ring_.head_position();
      const std::uint64_t done = hooks_done_.load(std::memory_order_acquire);
      const std::uint64_t begun = hooks_begun_.load(std::memory_order_acquire);
      if (head == tail && done == begun) return;
      if (i < 64) {
        spin_pause();
      } else {
        sched_yield();  // the pusher may be off-CPU (more threads than cores)
      }
    }
  }

  // ---- observation --------------------------------------------------------------
  // `st`: the state word, read by the caller (which answered for kCancelled).
  [[nodiscard]] bool done(std::uint32_t /*st*/) const noexcept {
    return ring_.closed() && ring_.size_guess() == 0;
  }
  [[nodiscard]] std::size_t occupancy() const noexcept { return ring_.size_guess(); }
  void fill_stats(channel_stats& st) const noexcept {
    // popped is head less the discarding pops (drop_oldest, cancel, disconnect), which move
    // head too and count themselves in discarded_ only after. Read in this order:
    // hooks_done_ (a), discarded_ (b), head (c), hooks_begun_ (d), tail. A discard whose
    // pop moved head before (c) had begun by then (fence (D) in discard_one) and is counted
    // in (b) or was still in flight at (a), so at most b + (d - a) of the pops in (c) are
    // discards: head - b - (d - a) never counts one as popped, and is exact with no
    // discard in flight. (Read as head - b, a reader preempted between (b) and (c) saw 5749
    // items popped from a drop_oldest channel nobody popped, and the count then fell back
    // to 0: a counter reset to Prometheus.) Each reading is at most the true count, which
    // only grows; popped_floor_, the largest reading yet, keeps the readings monotone.
    // Head is read after discarded_ and tail after head, so no difference is negative.
    const std::uint64_t dropped_new = dropped_new_.load(std::memory_order_acquire);
    const std::uint64_t done = hooks_done_.load(std::memory_order_acquire);    // (a)
    const std::uint64_t rd = discarded_.load(std::memory_order_acquire);       // (b)
    const std::uint64_t head = ring_.head_position();                          // (c)
    const std::uint64_t begun = hooks_begun_.load(std::memory_order_acquire);  // (d)
    const std::uint64_t tail = ring_.tail_position();
    const std::uint64_t not_popped = rd + (begun - done);
    std::uint64_t popped = head > not_popped ? head - not_popped : 0;
    std::uint64_t floor = popped_floor_.load(std::memory_order_relaxed);
    while (floor < popped && !popped_floor_.compare_exchange_weak(floor, popped, std::memory_order_relaxed)) {
    }
    st.pushed = tail + dropped_new;
    st.popped = std::max(floor, popped);
    st.discarded = rd + dropped_new;
    // The size from a head read after the tail: tail - head counted every push made
    // between the two reads (a reader preempted there saw 96 items in a channel of 16).
    // At any one moment tail - head <= capacity, and this head is no older than that
    // tail, so the size is at most the capacity; it is the same head at quiescence.
    const std::uint64_t head_now = ring_.head_position();
    st.size = tail > head_now ? static_cast<std::size_t>(tail - head_now) : 0;
    st.items = st.size;
  }

 private:
  using push_result = typename ring_buffer<T>::push_result;

  // After setting a state bit: waits until a lone side's push or pop that started before
  // the bit was visible has finished (pair (S)). Short: those operations never block
  // while inflight is set.
  static void quiesce(const channel_core<T>& c, const channel_side& side) noexcept {
    heavy_fence(c.asym_fences);  // (S): they see our bit, or we see their inflight
    wait_idle(side);
  }
  // quiesce() without its fence, for a caller that issued heavy_fence() after its bit.
  static void wait_idle(const channel_side& side) noexcept {
    for (int i = 0; side.inflight.load(std::memory_order_acquire) != 0; ++i) {
      if (i < 64) {
        spin_pause();
      } else {
        sched_yield();  // its thread may be off-CPU (more threads than cores)
      }
    }
  }

  // Pops one item to discard it (counted, handed to on_discard), inside hooks_begun_ /
  // hooks_done_ for wait_discards(). false: nothing was published at head.
  bool discard_one(channel_core<T>& c) noexcept {
    hooks_begun_.fetch_add(1, std::memory_order_relaxed);
    // (D) release fence before the pop's relaxed CAS on head_: a wait_discards() (or
    // fill_stats()) whose
    // acquire load of head_ reads that CAS (or a later one) sees the increment above.
    std::atomic_thread_fence(std::memory_order_release);
    std::optional<T> v;
    const bool got = ring_.try_pop(v);
    if (got) {
      discarded_.fetch_add(1, std::memory_order_release);  // release: see stats()
      c.hand_to_hook(std::move(*v));
      v.reset();
    }
    hooks_done_.fetch_add(1, std::memory_order_release);  // release: the hook happened-before
    return got;
  }

  ring_buffer<T> ring_;
  // push_worth_retrying's slot gap: an eighth of the ring, at most kRoomAhead; 0 (do not
  // wait) under 64 slots.
  const std::size_t room_gap_;
  // Items popped to be discarded (drop_oldest, cancel, disconnect, destruction) and
  // pushes dropped by drop_newest; on their own line, away from the hot indices.
  alignas(kCacheLine) std::atomic<std::uint64_t> discarded_{0};
  std::atomic<std::uint64_t> dropped_new_{0};
  std::atomic<std::uint64_t> hooks_begun_{0};  // discard_one() calls begun / ended
  std::atomic<std::uint64_t> hooks_done_{0};
  mutable std::atomic<std::uint64_t> popped_floor_{0};  // the largest popped stats() reported
};

}  // namespace sluice::detail
