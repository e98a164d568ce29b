// sluice/detail/ring_buffer.hpp — the lock-free bounded MPMC ring under every channel.
//
// Only index math and slot hand-off live here; waiting is the waker's job
// (detail/waker.hpp, detail/backoff.hpp) and the channel composes them (detail/ring_flavour.hpp,
// detail/channel_state.hpp).
//
// Algorithm: one sequence word per slot (Vyukov's bounded MPMC queue), with 64-bit
// positions that never wrap in practice (2^62 items at 10^9/s is ~146 years):
//   slot[p % cap].seq == 2p       the slot is free for the push of position p
//   slot[p % cap].seq == 2p + 1   the slot holds the item of position p
// A push claims position p by CAS on tail_, constructs the item, then publishes it
// by storing seq = 2p + 1 (release). A pop claims p by CAS on head_, moves the item
// out, then frees the slot for lap p + cap by storing seq = 2(p + cap) (release).
// The doubling keeps "holds p" and "free for p + 1" apart when cap == 1 (Vyukov's
// plain p / p + 1 stamps coincide there), so a capacity-1 channel stays lock-free.
// A push or pop that loses the race for its index backs off (cas_backoff below).
//
// Requires: T is nothrow-move-constructible (a slot is claimed before the item is
// constructed in it; a throwing move would leave a hole consumers wait on forever).
// The channel routes other types to its locked queue instead.
// Guarantees: try_push/try_pop are lock-free and never block; each item is moved
// in once, moved out once and destroyed once; FIFO per producer.
// Everything a producer did before try_push(x) is visible to the consumer after
// try_pop() returns x (release store of seq, acquire load of seq).
// Non-guarantees: "full" and "empty" are momentary; a push claimed but not yet
// published makes the ring look empty at that slot (consumers then wait for it).
// Lifetime: the destructor destroys items still inside; callers who need to count or
// hand them to a hook drain first with try_pop.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include "sluice/detail/cache_padded.hpp"

namespace sluice::detail {

// The largest capacity the position arithmetic below supports: a slot's stamp is
// 2 * (position + capacity) and a lap difference must stay a positive int64.
inline constexpr std::size_t kMaxRingCapacity = std::size_t{1} << 60;

// Cold paths of the ring's allocation, out of line (runtime/channel.cpp).
// check_ring_size: std::invalid_argument naming the capacity when `capacity` slots of
// `slot_size` bytes cannot be addressed (the byte count overflows, or the capacity is
// above kMaxRingCapacity); a std::bad_alloc naming it when they are more than the
// machine's physical memory (a ring touches every slot when it is built, so such a
// capacity would be killed for memory rather than fail cleanly).
// From kRingMemoryCheckBytes up, also when they are more than the memory free now
// (available_memory: /proc/meminfo's MemAvailable + SwapFree, or less where a cgroup's
// limit, or the process's ulimit -v or -d, leaves less): a ring touches every slot when it is built, so one past what is free
// would bring the kernel's out-of-memory killer, not a clean failure. Each ring is checked
// when it is built (a graph's edge: when its consumer is added, channel<T>'s ring_later),
// after the rings built before it took their memory, so a graph whose
// channels together are more than is free fails on the first that does not fit (a
// --capacity of 100M items on a 5-channel chain was 28 GB on a 24 GiB machine, and was
// killed).
// throw_ring_bad_alloc: the same bad_alloc, for an operator new that refused.
inline constexpr std::uint64_t kRingMemoryCheckBytes = std::uint64_t{64} << 20;
struct machine_memory {
  std::uint64_t physical = 0;   // bytes; 0: unknown
  std::uint64_t available = 0;  // bytes free now; 0: unknown
};
void check_ring_size(std::size_t capacity, std::size_t slot_size);
// check_ring_possible: check_ring_size but for the memory free now (a ring that could be
// had on this machine, if not at this moment).
void check_ring_possible(std::size_t capacity, std::size_t slot_size);
void check_ring_memory(std::size_t capacity, std::size_t slot_size, machine_memory m);  // the memory half
std::uint64_t available_memory();  // 0 when the system will not say
[[noreturn]] void throw_ring_bad_alloc(std::size_t capacity, std::size_t slot_size);

// After a lost race for an index (its CAS failed, or another side moved it first), a
// push or pop waits 1, 2, 4, ... pauses, at most kCasBackoffMaxPauses, before it tries
// again: the winner keeps the index's line for a moment instead of every loser pulling it
// back at once. Lock-freedom is unchanged (a race is only lost to an operation that
// completed), and a side that wins its first race never pauses. On 16 cores this took
// per-item 8x8 from 0.8x to about 3x oneTBB's queue; a cap of 1024 was faster still, but
// a push that keeps losing would then wait four times as long between tries. No loss on
// 2 cores (benchmarks/README.md, "MPMC on 16 cores").
inline constexpr unsigned kCasBackoffMaxPauses = 256;

class cas_backoff {
 public:
  void operator()() noexcept {
    for (unsigned i = 0; i < pauses_; ++i) spin_pause();
    if (pauses_ < kCasBackoffMaxPauses) pauses_ *= 2;
  }

 private:
  unsigned pauses_ = 1;
};

template <class T>
class ring_buffer {
  // (The nothrow-move check is in the constructor, not here: channel<T> names
  // std::optional<ring_buffer<T>> for every T, and only constructs one when it may.)
  static_assert(std::is_nothrow_destructible_v<T>, "channel items must not throw from ~T()");

 public:
  // [ closed:1 | position:63 ] — the closed mark lives in tail_ so that a push racing
  // with close() either claims its position before the mark (and is delivered) or
  // fails its CAS and sees the mark (and reports closed). Nothing slips in after.
  static constexpr std::uint64_t kClosedMark = std::uint64_t{1} << 63;

  enum class push_result { ok, full, closed };

  // Bytes per slot: a ring of capacity c allocates c times this, up front.
  static constexpr std::size_t slot_bytes() noexcept { return sizeof(slot); }

  // Allocates and stamps all `capacity` slots now (no allocation per item later).
  // Throws std::invalid_argument or std::bad_alloc naming the capacity when those slots
  // cannot exist (check_ring_size); requires capacity >= 1.
  explicit ring_buffer(std::size_t capacity)
      : cap_(capacity),
        mask_(capacity - 1),
        pow2_((capacity & (capacity - 1)) == 0),
        slots_(allocate(capacity)) {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "ring_buffer<T> needs a noexcept move constructor; the channel uses its "
                  "locked queue for other types");
    for (std::size_t i = 0; i < cap_; ++i) {
      new (&slots_[i].seq) std::atomic<std::uint64_t>(std::uint64_t{2} * i);
    }
  }
  ring_buffer(const ring_buffer&) = delete;
  ring_buffer& operator=(const ring_buffer&) = delete;
  // What the constructor would throw for `capacity`, but for the memory free now.
  static void check_possible(std::size_t capacity) { check_ring_possible(capacity, sizeof(slot)); }

  ~ring_buffer() {
    while (try_pop_discard()) {
    }
    for (std::size_t i = 0; i < cap_; ++i) slots_[i].seq.~atomic();
    ::operator delete[](slots_, std::align_val_t{alignof(slot)});
  }

  // Moves from v only when the result is ok.
  push_result try_push(T& v) noexcept {
    std::uint64_t tail = tail_->load(std::memory_order_relaxed);
    cas_backoff backoff;
    for (;;) {
      if (tail & kClosedMark) return push_result::closed;
      slot& s = slots_[index(tail)];
      // acquire: pairs with the release in try_pop that freed this slot, so the
      // previous item's destruction happens-before our construction.
      const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::int64_t>(seq - 2 * tail);
      if (diff == 0) {
        // relaxed CAS: the slot's seq, not tail_, carries the data hand-off.
        if (tail_->compare_exchange_weak(tail, tail + 1, std::memory_order_relaxed,
                                         std::memory_order_relaxed)) {
          ::new (static_cast<void*>(s.item())) T(std::move(v));
          // release: publishes the item; pairs with the acquire load in try_pop.
          s.seq.store(2 * tail + 1, std::memory_order_release);
          return push_result::ok;
        }
        backoff();  // lost the race: tail now holds the winner's position
      } else if (diff < 0) {
        // The slot still holds the item of the previous lap: full (or a pop of it is
        // in flight, which is "full" for a moment too).
        return push_result::full;
      } else {
        backoff();
        tail = tail_->load(std::memory_order_relaxed);  // another producer moved on
      }
    }
  }

  // Pops into out (which must be empty). Returns false when nothing is published.
  bool try_pop(std::optional<T>& out) noexcept {
    std::uint64_t head = head_->load(std::memory_order_relaxed);
    cas_backoff backoff;
    for (;;) {
      slot& s = slots_[index(head)];
      // acquire: pairs with the release in try_push; the item is fully built.
      const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::int64_t>(seq - (2 * head + 1));
      if (diff == 0) {
        if (head_->compare_exchange_weak(head, head + 1, std::memory_order_relaxed,
                                         std::memory_order_relaxed)) {
          T* item = s.item();
          out.emplace(std::move(*item));
          item->~T();
          // release: our reads of the slot are done; pairs with the acquire in try_push.
          s.seq.store(2 * (head + cap_), std::memory_order_release);
          return true;
        }
        backoff();  // lost the race: head now holds the winner's position
      } else if (diff < 0) {
        return false;  // empty at head (or the push of head is not yet published)
      } else {
        backoff();
        head = head_->load(std::memory_order_relaxed);
      }
    }
  }

  // The same two operations for a side that is alone: the caller guarantees that no other
  // push (try_push_single) or no other pop (try_pop_single) runs concurrently, and, for
  // the push, no close() either (the channel's lone-side protocol, ring_flavour.hpp).
  // Then the position needs no CAS: a plain store of position + 1 claims it.
  push_result try_push_single(T& v) noexcept {
    const std::uint64_t tail = tail_->load(std::memory_order_relaxed);
    if (tail & kClosedMark) return push_result::closed;
    slot& s = slots_[index(tail)];
    // acquire: as in try_push, the previous item's destruction happens-before our build.
    if (s.seq.load(std::memory_order_acquire) != 2 * tail) return push_result::full;
    tail_->store(tail + 1, std::memory_order_relaxed);  // claimed before published, as in try_push
    ::new (static_cast<void*>(s.item())) T(std::move(v));
    s.seq.store(2 * tail + 1, std::memory_order_release);  // publishes; pairs with the pop's acquire
    return push_result::ok;
  }
  bool try_pop_single(std::optional<T>& out) noexcept {
    const std::uint64_t head = head_->load(std::memory_order_relaxed);
    slot& s = slots_[index(head)];
    // acquire: pairs with the release that published the item.
    if (s.seq.load(std::memory_order_acquire) != 2 * head + 1) return false;
    head_->store(head + 1, std::memory_order_relaxed);
    T* item = s.item();
    out.emplace(std::move(*item));
    item->~T();
    s.seq.store(2 * (head + cap_), std::memory_order_release);  // frees the slot
    return true;
  }

  // Is the slot `gap` positions past tail free for its push (or already past it)? With
  // gap 0: would a push find room. A hint: relaxed, momentary. True once closed.
  [[nodiscard]] bool room_ahead(std::size_t gap) const noexcept {
    const std::uint64_t tail = tail_->load(std::memory_order_relaxed);
    if (tail & kClosedMark) return true;
    const std::uint64_t q = tail + gap;
    return static_cast<std::int64_t>(slots_[index(q)].seq.load(std::memory_order_relaxed) - 2 * q) >= 0;
  }

  // Bulk push: claims the longest run (at most n) of free slots at tail with one CAS and
  // fills them from src[0..k), moving when Move, copying otherwise (the copy must not
  // throw: a claimed slot cannot be given back). Returns k; 0 when full or closed.
  template <bool Move>
  std::size_t try_push_bulk(T* src, std::size_t n, bool& closed_out) noexcept {
    closed_out = false;
    std::uint64_t tail = tail_->load(std::memory_order_relaxed);
    for (;;) {
      if (tail & kClosedMark) {
        closed_out = true;
        return 0;
      }
      std::size_t k = 0;
      // acquire: as in try_push, each free slot's previous item is gone before we build.
      while (k < n && slots_[index(tail + k)].seq.load(std::memory_order_acquire) == 2 * (tail + k)) ++k;
      if (k == 0) {
        const std::uint64_t again = tail_->load(std::memory_order_relaxed);
        if (again == tail) return 0;  // full at tail
        tail = again;
        continue;
      }
      // A slot seen free stays free until someone claims its position, which needs this
      // very CAS on tail_: success means all k are ours.
      if (tail_->compare_exchange_weak(tail, tail + k, std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
        for (std::size_t i = 0; i < k; ++i) {
          slot& s = slots_[index(tail + i)];
          if constexpr (Move) {
            ::new (static_cast<void*>(s.item())) T(std::move(src[i]));
          } else {
            ::new (static_cast<void*>(s.item())) T(std::as_const(src[i]));
          }
          s.seq.store(2 * (tail + i) + 1, std::memory_order_release);  // publishes item i
        }
        return k;
      }
    }
  }

  // Bulk pop: claims the longest run (at most max) of published items at head with one
  // CAS and moves them into dst[0..k). Returns k; 0 when nothing is published at head.
  std::size_t try_pop_bulk(std::optional<T>* dst, std::size_t max) noexcept {
    std::uint64_t head = head_->load(std::memory_order_relaxed);
    for (;;) {
      std::size_t k = 0;
      // acquire: pairs with each item's publishing release in try_push / try_push_bulk.
      while (k < max &&
             slots_[index(head + k)].seq.load(std::memory_order_acquire) == 2 * (head + k) + 1) {
        ++k;
      }
      if (k == 0) {
        const std::uint64_t again = head_->load(std::memory_order_relaxed);
        if (again == head) return 0;
        head = again;
        continue;
      }
      // A published item stays until someone claims its position by CAS on head_.
      if (head_->compare_exchange_weak(head, head + k, std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
        for (std::size_t i = 0; i < k; ++i) {
          slot& s = slots_[index(head + i)];
          dst[i].emplace(std::move(*s.item()));
          s.item()->~T();
          s.seq.store(2 * (head + i + cap_), std::memory_order_release);  // frees the slot
        }
        return k;
      }
    }
  }

  // Sets the closed mark; returns true if this call set it.
  bool close() noexcept {
    // seq_cst RMW: ordered against the CAS of every push (see kClosedMark).
    return (tail_->fetch_or(kClosedMark, std::memory_order_seq_cst) & kClosedMark) == 0;
  }
  [[nodiscard]] bool closed() const noexcept {
    return (tail_->load(std::memory_order_acquire) & kClosedMark) != 0;
  }

  // Positions: items ever claimed by pushes / pops. Momentary snapshots.
  [[nodiscard]] std::uint64_t tail_position() const noexcept {
    return tail_->load(std::memory_order_acquire) & ~kClosedMark;
  }
  [[nodiscard]] std::uint64_t head_position() const noexcept {
    return head_->load(std::memory_order_acquire);
  }
  // size_guess: exact when no push or pop is in flight. Any thread may call it. Head is
  // read first, so while others push and pop it can only overstate (a reader preempted
  // between its two reads counts the pushes made meanwhile): done() then waits, never
  // ends early. The result is clamped to the capacity, which no real size exceeds.
  [[nodiscard]] std::size_t size_guess() const noexcept {
    const std::uint64_t head = head_position();  // A: read head first so size >= 0
    const std::uint64_t tail = tail_position();  // B
    if (tail <= head) return 0;
    return tail - head < cap_ ? static_cast<std::size_t>(tail - head) : cap_;
  }
  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }

 private:
  struct slot {
    std::atomic<std::uint64_t> seq;
    alignas(T) unsigned char storage[sizeof(T)];
    T* item() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };

  static slot* allocate(std::size_t capacity) {
    check_ring_size(capacity, sizeof(slot));  // sizeof(slot) * capacity cannot overflow after it
    try {
      return static_cast<slot*>(::operator new[](sizeof(slot) * capacity, std::align_val_t{alignof(slot)}));
    } catch (const std::bad_alloc&) {
      throw_ring_bad_alloc(capacity, sizeof(slot));
    }
  }
  std::size_t index(std::uint64_t pos) const noexcept {
    return pow2_ ? static_cast<std::size_t>(pos & mask_) : static_cast<std::size_t>(pos % cap_);
  }
  bool try_pop_discard() noexcept {
    std::optional<T> v;
    return try_pop(v);
  }

  cache_padded<std::atomic<std::uint64_t>> tail_{0};  // [ closed:1 | position:63 ]
  cache_padded<std::atomic<std::uint64_t>> head_{0};  // position of the next pop
  // Read-only after construction; on their own line so the hot indices above do not
  // drag them between cores.
  alignas(kCacheLine) const std::size_t cap_;
  const std::uint64_t mask_;
  const bool pow2_;
  slot* const slots_;
};

}  // namespace sluice::detail
