// sluice/detail/counter.hpp — a channel's lifetime: who is still holding it.
//
// Three counts, as crossbeam's counter.rs keeps them: senders, receivers, and handles
// of either kind. The last sender out closes the channel, the last receiver out
// disconnects it, and the last handle of both frees it.
//
// Requires: add_*() is called while the caller holds a handle of that side (a new
//   handle is copied from an existing one, which keeps the channel alive), so a count
//   never rises from zero. Each handle is released exactly once.
// Guarantees:
//   - release_sender() / release_receiver() run `last_out` on the thread that drops the
//     last handle of that side, exactly once, before they return.
//   - They return true on exactly one call over the channel's life: the release of the
//     last handle of both sides. That caller deletes the channel, and everything every
//     other handle did happens-before the deletion (acq_rel on the decrements).
//   - sender_alone() / receiver_alone(): true when the side counts one handle that may
//     operate. A handle is used by one thread at a time and only its holder can copy it,
//     so a holder that reads true knows no other thread of its side is inside an
//     operation, and it stays true until that holder copies its handle.
//   - A muted sender (mute_sender()) keeps the channel open like any sender but is not
//     counted by sender_alone(): its holder promises never to push or copy through it
//     and releases it with release_sender(last_out, /*muted=*/true). The graph's own
//     handle on each edge (close, cancel, stats) is one, so that a stage that is the
//     edge's only sender takes the lone-side path (ring_flavour.hpp).
// Non-guarantees: the counts are not a snapshot of anything else in the channel.
// Lifetime: a member of the channel; it owns nothing.
#pragma once

#include <atomic>
#include <cstddef>

namespace sluice::detail {

class counter {
 public:
  void add_sender() noexcept {
    // relaxed: a new handle is made from an existing one, which keeps us alive.
    senders_.fetch_add(1, std::memory_order_relaxed);
    pushers_.fetch_add(1, std::memory_order_relaxed);
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void add_receiver() noexcept {
    receivers_.fetch_add(1, std::memory_order_relaxed);  // relaxed: as in add_sender
    refs_.fetch_add(1, std::memory_order_relaxed);
  }

  // A sender that will never push again stops counting for sender_alone(). Called once
  // per handle, by its holder, before the handle is released with muted = true.
  void mute_sender() noexcept {
    // release: a lone holder that then reads one (acquire) sees what this handle did.
    pushers_.fetch_sub(1, std::memory_order_release);
  }
  // Returns true when the caller must delete the channel.
  template <class LastOut>
  [[nodiscard]] bool release_sender(LastOut&& last_out, bool muted = false) noexcept {
    // release: as in mute_sender; before senders_, so a pusher count never exceeds it.
    if (!muted) pushers_.fetch_sub(1, std::memory_order_release);
    // acq_rel: the last sender's close() sees every other sender's pushes.
    if (senders_.fetch_sub(1, std::memory_order_acq_rel) == 1) last_out();
    return release_ref();
  }
  template <class LastOut>
  [[nodiscard]] bool release_receiver(LastOut&& last_out) noexcept {
    // acq_rel: the last receiver's disconnect() sees every other receiver's pops.
    if (receivers_.fetch_sub(1, std::memory_order_acq_rel) == 1) last_out();
    return release_ref();
  }

  // A reference that is no handle: a call that may run callbacks able to drop the very
  // handle it was made on (cancel()'s on_discard) holds one until it returns. hold() is
  // called while the caller holds a handle; drop_hold() returns true when the caller must
  // delete the channel, as release_*() do.
  void hold() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }  // relaxed: as in add_sender
  [[nodiscard]] bool drop_hold() noexcept { return release_ref(); }

  // acquire: pairs with the acq_rel decrement of a handle released meanwhile, so its
  // operations happened before ours.
  [[nodiscard]] bool sender_alone() const noexcept { return pushers_.load(std::memory_order_acquire) == 1; }
  [[nodiscard]] bool receiver_alone() const noexcept {
    return receivers_.load(std::memory_order_acquire) == 1;
  }

 private:
  bool release_ref() noexcept {
    // acq_rel: the deleting thread sees every other handle's last writes.
    return refs_.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }

  std::atomic<std::size_t> senders_{1};
  std::atomic<std::size_t> pushers_{1};  // senders not muted: those that may push
  std::atomic<std::size_t> receivers_{1};
  std::atomic<std::size_t> refs_{2};
};

}  // namespace sluice::detail
