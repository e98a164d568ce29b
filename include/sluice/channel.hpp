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
// An empty (default-constructed or moved-from) handle may only be assigned or destroyed.
// Guarantees:
//   - Bounded: at most `capacity` items (or weight units) are buffered; a push into a
//     full `overflow::block` channel waits. A weighted item goes in when the channel is
//     empty or occupancy + weight <= capacity (so one oversized item still passes).
//   - Memory ordering: everything a producer did before push(x) is visible to the
//     consumer after pop() returns x.
//   - When the last sender is gone the channel is closed: receivers get what is
//     buffered, then end. When the last receiver is gone it is disconnected: pushes
//     fail at once and buffered items are discarded. cancel() aborts: every waiter
//     wakes, pops return nullopt, pushes return closed, buffered items are discarded.
//   - Accounting: pushed == popped + discarded + size whenever nothing is in flight.
//     Every discarded item is counted and handed to on_discard, if set.
//   - Every item is destroyed exactly once, including those left in a channel that is
//     destroyed or cancelled.
//   - No allocation per item for nothrow-movable unweighted items (a lock-free ring);
//     no system call on push or pop when nobody is asleep; waiting spins briefly, then
//     parks on a futex.
// Non-guarantees: fairness between blocked threads; FIFO across different producers
//   (each producer's items stay in its order). stats() is a momentary snapshot.
//   Weighted channels and item types whose move constructor may throw use a mutex-
//   guarded queue (their items are large, or the lock is what keeps a throwing move safe).
// Lifetime: the channel lives while any handle does.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
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
template <class Rep, class Period>
time_point deadline_after(std::chrono::duration<Rep, Period> d) {
  const auto now = std::chrono::steady_clock::now();
  if (d <= d.zero()) return now;
  // Saturate instead of overflowing for "forever"-like durations.
  if (std::chrono::duration<double>(d).count() > 1e9) return time_point::max();
  return now + std::chrono::ceil<duration>(d);
}
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
  void reset() noexcept {
    if (auto* ch = std::exchange(ch_, nullptr); ch && ch->release_sender()) delete ch;
  }
  explicit operator bool() const noexcept { return ch_ != nullptr; }

  // Blocks while full. false: closed, disconnected or cancelled (v is dropped).
  bool push(T v) { return ch_->push(v, nullptr) == status::ok; }
  // Never blocks. v is moved from only when the result is ok.
  [[nodiscard]] status try_push(T&& v) { return ch_->try_push(v); }
  [[nodiscard]] status try_push(const T& v) {
    T copy(v);
    return ch_->try_push(copy);
  }
  // Blocks until pushed, closed or the deadline; v is moved from only on ok.
  template <class Rep, class Period>
  [[nodiscard]] status push_for(T&& v, std::chrono::duration<Rep, Period> d) {
    return push_until(std::move(v), detail::deadline_after(d));
  }
  template <class Rep, class Period>
  [[nodiscard]] status push_for(const T& v, std::chrono::duration<Rep, Period> d) {
    return push_until(v, detail::deadline_after(d));
  }
  [[nodiscard]] status push_until(T&& v, time_point t) { return ch_->push(v, &t); }
  [[nodiscard]] status push_until(const T& v, time_point t) {
    T copy(v);
    return ch_->push(copy, &t);
  }
  // Pushes every element of r in order (moved from an rvalue range that owns them, such
  // as a container; copied from an lvalue range or a view, e.g. `v | std::views::take(3)`,
  // whose elements belong to someone else), blocking like push(); stops at the first
  // failure. Returns how many went in.
  template <class Range>
  std::size_t push_all(Range&& r) {
    constexpr bool kMove =
        !std::is_lvalue_reference_v<Range> && !std::ranges::view<std::remove_cvref_t<Range>>;
    return ch_->template push_all<kMove>(r);
  }

  // No more items from anyone: receivers drain what is buffered, then end.
  void close() noexcept { ch_->close(); }
  // Blocks until occupancy <= low watermark, or the channel is closed.
  void wait_writable() { ch_->wait_writable(); }
  // f runs once: now, on this thread, if occupancy is at or below the low watermark or
  // the channel is closed; otherwise on the thread whose pop brings occupancy there, or
  // that closes or cancels the channel. f must not throw.
  void on_writable(std::function<void()> f) { ch_->on_writable(std::move(f)); }

  void cancel(std::exception_ptr why = nullptr) noexcept { ch_->cancel(std::move(why)); }
  [[nodiscard]] std::exception_ptr cancel_cause() const { return ch_->cancel_cause(); }
  [[nodiscard]] bool cancelled() const noexcept { return ch_->is_cancelled(); }
  // Closed, disconnected or cancelled: no push can succeed any more.
  [[nodiscard]] bool is_closed() const noexcept { return ch_->is_closed(); }
  [[nodiscard]] channel_stats stats() const { return ch_->stats(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return ch_->capacity(); }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> bounded(channel_options<U>);
  explicit sender(detail::channel<T>* ch) noexcept : ch_(ch) {}
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

  // Drops this handle now: the last receiver disconnects the channel.
  void reset() noexcept {
    if (auto* ch = std::exchange(ch_, nullptr); ch && ch->release_receiver()) delete ch;
  }
  explicit operator bool() const noexcept { return ch_ != nullptr; }

  // Blocks while empty; nullopt once closed and drained, or cancelled.
  std::optional<T> pop() {
    std::optional<T> v;
    ch_->pop(v, nullptr);
    return v;
  }
  // Never blocks; nullopt when empty now (see done()).
  [[nodiscard]] std::optional<T> try_pop() {
    std::optional<T> v;
    ch_->try_pop(v);
    return v;
  }
  template <class Rep, class Period>
  [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> d) {
    return pop_until(detail::deadline_after(d));
  }
  [[nodiscard]] std::optional<T> pop_until(time_point t) {
    std::optional<T> v;
    ch_->pop(v, &t);
    return v;
  }
  // Blocks until at least one item is there or the channel is done, then writes
  // min(max, buffered) items to out. Returns how many; 0 once done. If writing to out
  // throws, the items not yet taken stay queued; the one being written counts as popped.
  template <class Out>
  std::size_t pop_some(Out out, std::size_t max) {
    return ch_->pop_some(out, max);
  }
  // Closed (or cancelled) and drained: no pop will return an item again.
  [[nodiscard]] bool done() const noexcept { return ch_->done(); }

  void cancel(std::exception_ptr why = nullptr) noexcept { ch_->cancel(std::move(why)); }
  [[nodiscard]] std::exception_ptr cancel_cause() const { return ch_->cancel_cause(); }
  // cancel() was called (by either side): an end of input that is an abort, not a close.
  [[nodiscard]] bool cancelled() const noexcept { return ch_->is_cancelled(); }
  [[nodiscard]] channel_stats stats() const { return ch_->stats(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return ch_->capacity(); }

  struct sentinel {};
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using reference = T&;
    using iterator_category = std::input_iterator_tag;

    iterator() = default;
    T& operator*() const noexcept { return *cur_; }
    T* operator->() const noexcept { return &*cur_; }
    iterator& operator++() {
      cur_ = rx_->pop();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, sentinel) noexcept { return !it.cur_.has_value(); }

   private:
    friend class receiver;
    explicit iterator(receiver* rx) : rx_(rx), cur_(rx->pop()) {}
    receiver* rx_ = nullptr;
    mutable std::optional<T> cur_;
  };
  iterator begin() { return iterator(this); }
  sentinel end() noexcept { return {}; }

 private:
  template <class U>
  friend std::pair<sender<U>, receiver<U>> bounded(channel_options<U>);
  explicit receiver(detail::channel<T>* ch) noexcept : ch_(ch) {}
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
