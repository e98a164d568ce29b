// peers/peer.hpp — the adapter shape every channel implementation in channel_bench.cpp has.
//
//   template <class P>                         // P: sluice_peer, tbb_peer, ...
//   void one_item() {
//     P ch(1024);                              // capacity in items
//     auto tx = ch.make_producer();            // one handle per producing thread
//     auto rx = ch.make_consumer();            // one handle per consuming thread
//     tx.push(42);                             // blocks while full
//     std::uint64_t v = rx.pop();              // blocks while empty
//   }
//
// Requires: make_producer()/make_consumer() are called before the threads start (on the
//   benchmark's main thread); each handle is then moved into and used by one thread only;
//   the adapter outlives every handle it made. A peer with kMultiProducer == false is used
//   with exactly one producer and one consumer handle.
// Guarantees: push() blocks while `capacity` items are buffered (the bound is honest; where
//   the underlying queue cannot hold exactly `capacity`, the adapter says what it holds);
//   pop() blocks while empty; both block (spin and/or park), they never return "full".
// Non-guarantees: no close/cancel; the benchmarks move exact item counts so no thread is
//   ever left waiting.
// Lifetime: an adapter owns its queue; handles refer to it.
// kName is the row id in benchmark names ("<scenario>/<kName>"), so it stays regex-friendly.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice_bench {

using item = std::uint64_t;  // 8-byte items in every scenario

template <class P>
concept peer = requires(P p, item v) {
  { P::kName } -> std::convertible_to<std::string_view>;
  { P::kMultiProducer } -> std::convertible_to<bool>;
  requires std::constructible_from<P, std::size_t>;
  { p.make_producer().push(v) };
  { p.make_consumer().pop() } -> std::same_as<item>;
};

}  // namespace sluice_bench
