// sluice/detail/direct_flavour.hpp — the third storage flavour of a channel<T>: none.
// A push hands the item straight to a consumer that runs on the pushing thread (a fused
// stage, stage_options::fuse), so nothing is buffered and no thread hand-off happens.
//
//   push(v):   state open?  no -> closed (v untouched)
//              target.take(v) -> taken (ok) | taken, consumer done (ok, then the
//              channel is disconnected: later pushes fail) | refused (closed, v untouched)
//   close / cancel / disconnect: set the state bit, nothing else (no buffer, no waiter).
//   pop:       never used (the consumer is the target); reports full, or closed once
//              the state word is set.
//
// The graph turns a channel into this flavour while building, before any handle is used
// (channel<T>::make_direct); the consumer's end (cleanup, closing its own output) is run
// by the graph when the pushing stage ends, not by close(): close() and cancel() may come
// from any thread (request_stop, teardown) while the producer is inside take().
//
// Requires: make_direct() before any push or pop. take() is called on the producer's
//   thread and must not throw (the fused stage applies its own error policy).
// Guarantees: a refused push leaves the item with the caller; an accepted one is counted
//   as pushed and popped at once (the consumer owns it: it delivers it or makes it a dead
//   letter), so pushed == popped + discarded holds with discarded = 0. Everything the
//   producer did before push(v) is visible to the consumer: it is the same thread.
// Non-guarantees: try_push and push_until do not bound the time the consumer takes: the
//   fused stage runs inside them, and its own output push may block. stats() reports
//   capacity 0, size 0 and no time blocked.
// Lifetime: a member of its channel<T>; it shares the target with the graph node.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "sluice/detail/channel_core.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

// What take() did with the item.
enum class direct_result : unsigned char {
  taken,       // consumed (delivered, dropped by a filter, or made a dead letter)
  taken_done,  // consumed, and the consumer wants no more (a sink returned false, its
               // output ended): the channel is disconnected
  refused,     // not touched: the consumer is stopping (teardown, early finish)
};

// The consumer behind a direct channel.
template <class T>
class direct_target {
 public:
  direct_target() = default;
  direct_target(const direct_target&) = delete;
  direct_target& operator=(const direct_target&) = delete;
  virtual ~direct_target() = default;
  // Runs the consumer on v, on the calling thread. Must not throw.
  virtual direct_result take(T& v) noexcept = 0;
  // Items taken so far (a recent value from another thread; exact once producers ended).
  [[nodiscard]] virtual std::uint64_t taken() const noexcept = 0;
};

template <class T>
class direct_flavour {
 public:
  static constexpr bool kBulk = false;
  static constexpr bool kEvictsMoreThanItAdds = false;  // nothing is buffered

  explicit direct_flavour(std::shared_ptr<direct_target<T>> t) noexcept : target_(std::move(t)) {}

  // ---- push ---------------------------------------------------------------------
  status try_push(channel_core<T>& c, T& v) {
    // acquire: a push that sees the bit refuses; one that misses it is harmless (the
    // consumer checks the graph's own stop flags; nothing is buffered to be lost).
    if (c.state.load(std::memory_order_acquire) != 0) return status::closed;
    switch (target_->take(v)) {
      case direct_result::taken:
        return status::ok;
      case direct_result::taken_done:
        c.state.fetch_or(kDisconnected, std::memory_order_seq_cst);
        return status::ok;
      case direct_result::refused:
        break;
    }
    return status::closed;
  }
  void after_push(channel_core<T>&) noexcept {}

  // ---- pop (nobody pops a direct channel) ----------------------------------------
  status try_pop(channel_core<T>& c, std::optional<T>&) {
    return c.state.load(std::memory_order_acquire) != 0 ? status::closed : status::full;
  }
  // A blocked push re-tries after every pause of its spin (ring_flavour says when not).
  [[nodiscard]] bool push_worth_retrying(const channel_core<T>&) const noexcept { return true; }
  // Nothing is buffered: no progress to read, so a wait's spin never stops early.
  [[nodiscard]] std::uint64_t progress() const noexcept { return kUnknownPeer; }
  [[nodiscard]] bool pop_wakes_all() const noexcept { return false; }

  // ---- closing ------------------------------------------------------------------
  void close(channel_core<T>& c) noexcept { c.state.fetch_or(kClosed, std::memory_order_seq_cst); }
  void seal(channel_core<T>&) noexcept {}
  void discard_all(channel_core<T>&) noexcept {}

  // ---- observation --------------------------------------------------------------
  [[nodiscard]] bool done(std::uint32_t st) const noexcept { return st != 0; }
  [[nodiscard]] std::size_t occupancy() const noexcept { return 0; }
  void fill_stats(channel_stats& st) const {
    const std::uint64_t n = target_->taken();
    st.capacity = 0;  // no buffer: a fused edge
    st.pushed = n;
    st.popped = n;
    st.discarded = 0;
    st.size = 0;
    st.items = 0;
  }

 private:
  std::shared_ptr<direct_target<T>> target_;
};

}  // namespace sluice::detail
