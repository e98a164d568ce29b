// sluice/detail/channel_core.hpp — what both storage flavours of a channel share.
//
// A channel<T> (detail/channel_state.hpp) is one of two flavours of storage
// (detail/ring_flavour.hpp, detail/locked_flavour.hpp) around this core: the options
// fixed at construction, the handle counter (detail/counter.hpp), the state word, and
// one channel_side per side (its spin budget, its wait clock, and the flag of the ring's
// lone-side path). Each flavour operation takes the core by reference.
//
// The state word: [ cancelled | disconnected | closed ], bits only ever set, never
// cleared. Any bit set: no push can succeed again. Bits are set with seq_cst RMWs, each
// followed by the flavour's hand-off (a lock, or the ring's quiesce; see there).
//
// Requires: fault is set before the handles reach other threads (set_fault_hook).
// Guarantees: hand_to_hook() never lets on_discard's exception out.
// Non-guarantees: none of this is a public API; channel.hpp is.
// Lifetime: a member of its channel<T>.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>

#include "sluice/detail/backoff.hpp"
#include "sluice/detail/cache_padded.hpp"
#include "sluice/detail/counter.hpp"
#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/platform.hpp"
#include "sluice/detail/wait_clock.hpp"
#include "sluice/status.hpp"

namespace sluice::detail {

inline constexpr std::uint32_t kClosed = 1;        // senders gone or close()
inline constexpr std::uint32_t kDisconnected = 2;  // receivers gone
inline constexpr std::uint32_t kCancelled = 4;     // cancel()

// One side of a channel (its pushers, or its poppers). Written by that side's waiting
// threads, so each side sits on its own line: it must neither evict the state word from
// everyone's cache nor false-share with the other side.
struct channel_side {
  // 1 while the side's lone handle is inside a single-side ring push or pop (see
  // ring_flavour); written only by that thread, read by ring_flavour::quiesce().
  std::atomic<std::uint32_t> inflight{0};
  backoff spin;
  wait_clock clock;
};

template <class T>
struct channel_core {
  channel_core(std::size_t capacity, overflow o, std::function<void(T&&)> discard_hook, bool time_waits)
      : cap(capacity),
        policy(o),
        on_discard(std::move(discard_hook)),
        timing(time_waits),
        asym_fences(decide_fence_mode() == fence_mode::kAsymmetric) {}

  // The testing seam (detail/fault_hook.hpp): the hook may delay or throw here, before
  // the operation starts. Null otherwise: one load from this object's first line (which
  // every push and pop reads anyway) and a branch predicted not taken.
  void inject(fault_hook::op o) const {
    if (fault != nullptr) [[unlikely]] {
      fault->on_channel_op(o);
    }
  }

  void hand_to_hook(T&& v) const noexcept {
    if (!on_discard) return;
    const nothrow_scope scope;
    try {
      on_discard(std::move(v));
    } catch (...) {
      // A discard hook must not throw (documented); we will not let it unwind through
      // a destructor or a cancel, so its exception ends here.
    }
  }

  // Read-only after construction (fault: before the handles are shared).
  const std::size_t cap;
  const overflow policy;
  fault_hook* fault = nullptr;
  const std::function<void(T&&)> on_discard;
  const bool timing;       // channel_options::timing: measure time blocked
  const bool asym_fences;  // the fence protocol (detail/platform.hpp), fixed for the process

  alignas(kCacheLine) counter handles;
  std::atomic<std::uint32_t> state{0};  // [ cancelled | disconnected | closed ]

  cache_padded<channel_side> push_side;
  cache_padded<channel_side> pop_side;
};

}  // namespace sluice::detail
