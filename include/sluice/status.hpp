// sluice/status.hpp — channel outcomes as values, and the channel's option types.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>

namespace sluice {

// The outcome of a channel operation. A failed push leaves the caller's value intact.
//   ok       done
//   full     (try_push) no room now; (try_pop never returns a status: nullopt + done())
//   closed   closed, disconnected or cancelled: this operation can never succeed again
//   timeout  a push_for/push_until deadline passed
enum class status { ok, full, closed, timeout };

// What a full channel does with a push.
//   block        the producer waits (backpressure; the default)
//   drop_oldest  the oldest buffered item is discarded to make room
//   drop_newest  the pushed item is discarded
// Dropped items count in channel_stats::discarded and go to on_discard.
enum class overflow { block, drop_oldest, drop_newest };

using duration = std::chrono::steady_clock::duration;
using time_point = std::chrono::steady_clock::time_point;

// A momentary snapshot of one channel. Exact when no operation is in flight
// (for example after a graph run); otherwise each field is a recent value.
// Invariant (at quiescence): pushed == popped + discarded + items, where the counters
// count items; for an unweighted channel items == size, so the
// documented pushed == popped + discarded + size holds as written.
struct channel_stats {
  std::size_t size = 0;             // buffered now: items, or weight units if weighted (see items)
  std::size_t capacity = 0;         // items, or weight units if weighted
  std::uint64_t pushed = 0;         // accepted by a push (including those later dropped)
  std::uint64_t popped = 0;         // handed to a receiver
  std::uint64_t discarded = 0;      // dropped by overflow, cancel, disconnect or destruction
  std::uint64_t blocked_push_ns = 0;  // total time producers waited on a full channel
  std::uint64_t blocked_pop_ns = 0;   // total time consumers waited on an empty channel
  std::uint32_t waiting_push = 0;     // producers parked on a full channel, or in wait_writable(), right now
  std::uint32_t waiting_pop = 0;      // consumers parked on an empty channel right now
  std::size_t items = 0;              // buffered now, in items (== size unless weighted);
                                      // pushed == popped + discarded + items at quiescence
};

// low_watermark's default: capacity / 2.
inline constexpr std::size_t kDefaultLowWatermark = std::numeric_limits<std::size_t>::max();

template <class T>
struct channel_options {
  // Items, or weight units with weigh; at least 1. An unweighted channel of a
  // nothrow-movable T allocates this many slots up front (channel.hpp, Memory).
  std::size_t capacity = 1024;
  std::size_t low_watermark = kDefaultLowWatermark;  // on_writable threshold (capacity/2)
  // Item weight (bytes, say); empty: 1 per item. A weight of 0 counts as 1, so a
  // weighted channel holds at most `capacity` items as well as `capacity` units.
  // An item heavier than the whole capacity goes in only when the channel is empty.
  std::function<std::size_t(const T&)> weigh = {};
  sluice::overflow overflow = sluice::overflow::block;
  std::function<void(T&&)> on_discard = {};          // receives every discarded item; must not throw
  // Measure the time producers and consumers spend blocked (channel_stats::blocked_*_ns,
  // which a graph's bottleneck report needs). false saves two clock reads per wait that
  // parks; the counters then stay 0.
  bool timing = true;
};

}  // namespace sluice
