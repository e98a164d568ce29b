// sluice/channel.hpp — bounded blocking MPMC channels with backpressure.
//
//   auto [tx, rx] = sluice::bounded<int>(1024);
//   std::thread producer([tx = std::move(tx)]() mutable {
//     for (int i = 0; i < 100; ++i) tx.push(i);   // blocks while the channel is full
//   });                                          // last sender gone: channel closes
//   long sum = 0;
//   for (int& v : rx) sum += v;                   // ends when closed and drained
//   producer.join();
//
// Requires: a handle object is used by one thread at a time; copy it to share a side.
// An empty (default-constructed or moved-from) handle may only be assigned, reset,
// tested (`if (tx)`) or destroyed: any other call on it throws std::logic_error naming
// the call ("sluice::sender::push on an empty handle ..."); it never dereferences null.
// Guarantees:
//   - Bounded: at most `capacity` items (or weight units) are buffered; a push into a
//     full `overflow::block` channel waits. A weighted item goes in when the channel is
//     empty or occupancy + weight <= capacity (so one oversized item still passes),
//     computed without overflow. A weigh() that returns 0 counts as 1, so a weighted
//     channel never holds more than `capacity` items either. An item is weighed once
//     per push call, however often a blocked push re-tries.
//   - A failed push leaves its item with the caller: push/try_push/push_for/push_until
//     move from an rvalue only when the item went in (push_all: see there).
//   - Memory ordering: everything a producer did before push(x) is visible to the
//     consumer after pop() returns x.
//   - When the last sender is gone the channel is closed: receivers get what is
//     buffered, then end. When the last receiver is gone it is disconnected: pushes
//     fail at once and buffered items are discarded. cancel() aborts: every waiter
//     wakes, pops return nullopt, pushes return closed, buffered items are discarded.
//   - Accounting: pushed == popped + discarded + items whenever nothing is in flight
//     (channel_stats::items is the occupancy in items; == size unless weighted).
//     Every discarded item is counted and handed to on_discard, if set.
//   - Every item is destroyed exactly once, including those left in a channel that is
//     destroyed or cancelled.
//   - Memory: the lock-free ring (nothrow-movable, unweighted items) allocates its
//     `capacity` slots up front (about sizeof(T) + 8 bytes each) and never per item; a
//     capacity whose slots cannot be addressed is std::invalid_argument, one whose slots
//     exceed the machine's physical memory (or that operator new refuses) is a
//     std::bad_alloc whose what() names the capacity. The locked and weighted flavours
//     allocate per buffered item, never by capacity, so any capacity >= 1 is valid there.
//   - No allocation per item for nothrow-movable unweighted items (a lock-free ring);
//     no system call on push or pop when nobody is asleep; waiting spins briefly, then
//     parks on a futex.
// Non-guarantees: fairness between blocked threads; FIFO across different producers
//   (each producer's items stay in its order). stats() is a momentary snapshot. A pop
//   that races cancel() may return an item from behind ones the cancel discarded (each
//   item is still delivered or discarded exactly once, in order). A timed op's exact end:
//   it parks until 100 us before its deadline and yields through the rest (a futex
//   timeout alone ended 50-110 us late), so it ends within a few microseconds of the
//   deadline when a core is free, at the cost of up to 100 us of yielding per timeout.
//   Weighted channels and item types whose move constructor may throw use a mutex-
//   guarded queue (their items are large, or the lock is what keeps a throwing move safe).
//   There an item's ~T() (of a moved-from item) and weigh() run under that lock; in the
//   ring, a moved-from item's ~T() runs inside the pop, before its slot is free. So neither
//   may push to, pop from, close or cancel the same channel (a deadlock: a cancel() waits
//   for that very pop to end, a push for that very slot). Nor may T's move constructor,
//   which runs inside the push or pop (nor cancel the graph the channel belongs to). stats() takes no lock in any
//   flavour, so either may read it, or take a graph's snapshot().
// Lifetime: the channel lives while any handle does, and until a cancel() called on one
//   returns: the on_discard and on_writable callbacks it runs may drop any handle, the one
//   it was called on too. A callback run by another call (a push that drops an item, a
//   pop that fires on_writable) must not drop the handle that call was made on.
#pragma once

#include <chrono>
#include <cmath>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>

#include "sluice/detail/channel_state.hpp"
#include "sluice/status.hpp"

namespace sluice {

template <class T>
class sender;
template <class T>
class receiver;

namespace detail {
// Throws std::logic_error("<call> on an empty handle ..."); out of line and cold
// (runtime/channel.cpp), so the check in every handle call is one predicted branch.
[[noreturn]] void throw_empty_handle(const char* call);
// Throws std::invalid_argument for receiver::pop_some's max of 0 (runtime/channel.cpp).
[[noreturn]] void throw_pop_some_of_none();

// A wait of d as the steady clock's duration: zero for zero, negative or NaN (NaN would
// be UB below); duration::max(), "forever", from 1e9 s (~31 years) up, so that neither
// the conversion (done in d's own representation: a float near 2^63 ns rounds past it)
// nor an addition to now() can overflow.
// The conversion is done in long double: in d's own integer representation, a period
// that does not divide into nanoseconds (1/11 s) multiplied the count by 10^9 first, and
// 29 years overflowed (UB; the wait returned at once).
template <class Rep, class Period>
duration saturated_wait(std::chrono::duration<Rep, Period> d) {
  if (!(d > d.zero())) return duration::zero();
  if (std::chrono::duration<double>(d).count() > 1e9) return duration::max();
  const long double ticks = std::chrono::duration<long double, duration::period>(d).count();
  return duration(static_cast<duration::rep>(std::ceil(ticks)));
}
template <class Rep, class Period>
time_point deadline_after(std::chrono::duration<Rep, Period> d) {
  const auto now = std::chrono::steady_clock::now();
  const duration w = saturated_wait(d);
  return w == duration::max() ? time_point::max() : now + w;
}
// Keeps a channel alive through one call made on a handle: cancel() runs on_discard and
// on_writable callbacks, which may drop any handle, the one cancel() was called on too
// (which was then all that kept the channel: it was freed under cancel(), which went on
// discarding into freed memory). Deletes the channel if it held the last reference.
template <class T>
class channel_hold {
 public:
  explicit channel_hold(channel<T>& c) noexcept : c_(c) { c_.hold(); }
  channel_hold(const channel_hold&) = delete;
  channel_hold& operator=(const channel_hold&) = delete;
  ~channel_hold() {
    if (c_.drop_hold()) delete &c_;
  }

 private:
  channel<T>& c_;
};

// push_all(r): whether r's elements go in as items are moved (an rvalue range that owns
// them) or copied, and what it accepts: a range whose elements convert to T implicitly,
// as push() needs (an explicit constructor made std::vector<int>{3, 5} two vectors of
// sizes 3 and 5, and int* a unique_ptr owning a stack address), or, moved, T itself.
template <class Range>
inline constexpr bool kPushAllMoves =
    !std::is_lvalue_reference_v<Range> && !std::ranges::view<std::remove_cvref_t<Range>>;
template <class Range, class T>
concept push_all_range =
    std::ranges::input_range<Range> &&
    (std::is_convertible_v<std::ranges::range_reference_t<Range>, T> ||
     (kPushAllMoves<Range> && std::is_same_v<std::remove_cvref_t<std::ranges::range_reference_t<Range>>, T> &&
      !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<Range>>>));
}  // namespace detail

// The sending side. push() blocks while full and returns false once the channel is
// closed, disconnected or cancelled.
template <class T>
class sender {
 public:
  sender() noexcept = default;
  sender(const sender& o) noexcept : ch_(o.ch_) {
    if (ch_) ch_->add_sender();
  }
  sender(sender&& o) noexcept : ch_(std::exchange(o.ch_, nullptr)) {}
  sender& operator=(sender o) noexcept {
    std::swap(ch_, o.ch_);
    return *this;
  }
  ~sender() { reset(); }

  // Drops this handle now (as destruction would): the last sender closes the channel.
  // A no-op on an empty handle.
  void reset() noexcept {
    if (auto* ch = std::exchange(ch_, nullptr); ch && ch->release_sender()) delete ch;
  }
  explicit operator bool() const noexcept { return ch_ != nullptr; }

  // Blocks while full. false: closed, disconnected or cancelled; the item stays with the
  // caller (an rvalue is moved from only when it went in, so it can go elsewhere).
  bool push(T&& v) { return ch("sluice::sender::push").push(v, nullptr) == status::ok; }
  bool push(const T& v) {
    auto& c = ch("sluice::sender::push");
    T copy(v);
    return c.push(copy, nullptr) == status::ok;
  }
  // Never blocks. v is moved from only when the result is ok.
  [[nodiscard]] status try_push(T&& v) { return ch("sluice::sender::try_push").try_push(v); }
  [[nodiscard]] status try_push(const T& v) {
    auto& c = ch("sluice::sender::try_push");
    T copy(v);
    return c.try_push(copy);
  }
  // Blocks until pushed, closed or the deadline; v is moved from only on ok.
  template <class Rep, class Period>
  [[nodiscard]] status push_for(T&& v, std::chrono::duration<Rep, Period> d) {
    auto& c = ch("sluice::sender::push_for");
    const time_point t = detail::deadline_after(d);
    return c.push(v, &t);
  }
  template <class Rep, class Period>
  [[nodiscard]] status push_for(const T& v, std::chrono::duration<Rep, Period> d) {
    auto& c = ch("sluice::sender::push_for");
    T copy(v);
    const time_point t = detail::deadline_after(d);
    return c.push(copy, &t);
  }
  [[nodiscard]] status push_until(T&& v, time_point t) { return ch("sluice::sender::push_until").push(v, &t); }
  [[nodiscard]] status push_until(const T& v, time_point t) {
    auto& c = ch("sluice::sender::push_until");
    T copy(v);
    return c.push(copy, &t);
  }
  // Pushes every element of r in order (moved from an rvalue range that owns them, such
  // as a container; copied from an lvalue range or a view, e.g. `v | std::views::take(3)`,
  // whose elements belong to someone else), blocking like push(); stops at the first
  // failure. Returns how many went in: the first n elements. The element that failed and
  // those after it are left in r as they were (never moved from), so a caller can retry
  // them or hand them elsewhere. A receiver sees each element once it went in, as with
  // push(), even while the range's next one is still being made (a contiguous range of T,
  // whose elements are all there, is handed on a run of slots at a time). If making an
  // element throws (the range's iterator, or a copy or move of T), the exception goes to
  // the caller with no count: the elements before it went in, and a caller that must know
  // how many pushes them one at a time.
  template <class Range>
    requires detail::push_all_range<Range, T>
  std::size_t push_all(Range&& r) {
    return ch("sluice::sender::push_all").template push_all<detail::kPushAllMoves<Range>>(r);
  }

  // No more items from anyone: receivers drain what is buffered, then end.
  void close() { ch("sluice::sender::close").close(); }
  // Blocks until occupancy <= low watermark, or the channel is closed.
  void wait_writable() { ch("sluice::sender::wait_writable").wait_writable(); }
  // f runs once: now, on this thread, if occupancy is at or below the low watermark or
  // the channel is closed; otherwise on the thread whose pop (or drop_oldest push that
  // evicts heavier items) brings occupancy there, or that closes or cancels the channel.
  // f must not throw.
  void on_writable(std::function<void()> f) { ch("sluice::sender::on_writable").on_writable(std::move(f)); }

  void cancel(std::exception_ptr why = nullptr) {
    auto& c = ch("sluice::sender::cancel");
    detail::channel_hold<T> hold(c);  // a callback it runs may drop this very handle
    c.cancel(std::move(why));
  }
  [[nodiscard]] std::exception_ptr cancel_cause() const { return ch("sluice::sender::cancel_cause").cancel_cause(); }
  [[nodiscard]] bool cancelled() const { return ch("sluice::sender::cancelled").is_cancelled(); }
  // Closed, disconnected or cancelled: no push can succeed any more.
  [[nodiscard]] bool is_closed() const { return ch("sluice::sender::is_closed").is_closed(); }
  [[nodiscard]] channel_stats stats() const { return ch("sluice::sender::stats").stats(); }
  [[nodiscard]] std::size_t capacity() const { return ch("sluice::sender::capacity").capacity(); }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> bounded(channel_options<U>);
  friend struct detail::channel_access;  // installs a graph's fault hook (sluice/testing.hpp)
  explicit sender(detail::channel<T>* ch) noexcept : ch_(ch) {}
  // The channel, or logic_error naming `call` for an empty handle (a cold branch).
  detail::channel<T>& ch(const char* call) const {
    if (ch_ == nullptr) [[unlikely]] {
      detail::throw_empty_handle(call);
    }
    return *ch_;
  }
  detail::channel<T>* ch_ = nullptr;
};

// The receiving side. Iterating pulls with backpressure: `for (T& v : rx)`.
template <class T>
class receiver {
 public:
  receiver() noexcept = default;
  receiver(const receiver& o) noexcept : ch_(o.ch_) {
    if (ch_) ch_->add_receiver();
  }
  receiver(receiver&& o) noexcept : ch_(std::exchange(o.ch_, nullptr)) {}
  receiver& operator=(receiver o) noexcept {
    std::swap(ch_, o.ch_);
    return *this;
  }
  ~receiver() { reset(); }

  // Drops this handle now: the last receiver disconnects the channel. A no-op on an
  // empty handle.
  void reset() noexcept {
    if (auto* ch = std::exchange(ch_, nullptr); ch && ch->release_receiver()) delete ch;
  }
  explicit operator bool() const noexcept { return ch_ != nullptr; }

  // Blocks while empty; nullopt once closed and drained, or cancelled.
  std::optional<T> pop() { return pop_as("sluice::receiver::pop"); }
  // Never blocks; nullopt when empty now (see done()).
  [[nodiscard]] std::optional<T> try_pop() {
    std::optional<T> v;
    ch("sluice::receiver::try_pop").try_pop(v);
    return v;
  }
  template <class Rep, class Period>
  [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> d) {
    std::optional<T> v;
    auto& c = ch("sluice::receiver::pop_for");
    const time_point t = detail::deadline_after(d);
    c.pop(v, &t);
    return v;
  }
  [[nodiscard]] std::optional<T> pop_until(time_point t) {
    std::optional<T> v;
    ch("sluice::receiver::pop_until").pop(v, &t);
    return v;
  }
  // Blocks until at least one item is there or the channel is done, then writes
  // min(max, buffered) items to out. Returns how many; 0 once done. If writing to out
  // throws, the items not yet taken stay queued; the one being written counts as popped.
  // A max of 0 is std::invalid_argument: its 0 would read as the end (a loop on it
  // stopped with items still queued).
  template <class Out>
  std::size_t pop_some(Out out, std::size_t max) {
    auto& c = ch("sluice::receiver::pop_some");
    if (max == 0) [[unlikely]] {
      detail::throw_pop_some_of_none();
    }
    return c.pop_some(out, max);
  }
  // Closed (or cancelled) and drained: no pop will return an item again.
  [[nodiscard]] bool done() const { return ch("sluice::receiver::done").done(); }

  void cancel(std::exception_ptr why = nullptr) {
    auto& c = ch("sluice::receiver::cancel");
    detail::channel_hold<T> hold(c);  // as sender::cancel
    c.cancel(std::move(why));
  }
  [[nodiscard]] std::exception_ptr cancel_cause() const { return ch("sluice::receiver::cancel_cause").cancel_cause(); }
  // cancel() was called (by either side): an end of input that is an abort, not a close.
  [[nodiscard]] bool cancelled() const { return ch("sluice::receiver::cancelled").is_cancelled(); }
  [[nodiscard]] channel_stats stats() const { return ch("sluice::receiver::stats").stats(); }
  [[nodiscard]] std::size_t capacity() const { return ch("sluice::receiver::capacity").capacity(); }

  struct sentinel {};
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using reference = T&;
    using iterator_category = std::input_iterator_tag;

    iterator() = default;
    T& operator*() const noexcept { return *cur_; }
    T* operator->() const noexcept { return std::addressof(*cur_); }
    iterator& operator++() {
      // Popped straight into cur_ (constructed there, never assigned): a T whose move
      // assignment throws would lose the item popped for it.
      cur_.reset();
      rx_->ch("sluice::receiver::iterator::operator++").pop(cur_, nullptr);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, sentinel) noexcept { return !it.cur_.has_value(); }

   private:
    friend class receiver;
    explicit iterator(receiver* rx) : rx_(rx), cur_(rx->pop_as("sluice::receiver::begin")) {}
    receiver* rx_ = nullptr;
    mutable std::optional<T> cur_;
  };
  iterator begin() { return iterator(this); }
  sentinel end() noexcept { return {}; }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> bounded(channel_options<U>);
  friend struct detail::channel_access;
  explicit receiver(detail::channel<T>* ch) noexcept : ch_(ch) {}
  // pop(), with `call` named if the handle is empty (the iterator's calls name themselves).
  std::optional<T> pop_as(const char* call) {
    std::optional<T> v;
    ch(call).pop(v, nullptr);
    return v;
  }
  // The channel, or logic_error naming `call` for an empty handle (a cold branch).
  detail::channel<T>& ch(const char* call) const {
    if (ch_ == nullptr) [[unlikely]] {
      detail::throw_empty_handle(call);
    }
    return *ch_;
  }
  detail::channel<T>* ch_ = nullptr;
};

// Makes a channel. Throws std::invalid_argument for a capacity of 0 or a low
// watermark above the capacity.
template <class T>
std::pair<sender<T>, receiver<T>> bounded(channel_options<T> options) {
  auto* ch = new detail::channel<T>(std::move(options));
  return {sender<T>(ch), receiver<T>(ch)};
}
template <class T>
std::pair<sender<T>, receiver<T>> bounded(std::size_t capacity) {
  channel_options<T> o;
  o.capacity = capacity;
  return bounded<T>(std::move(o));
}

}  // namespace sluice
