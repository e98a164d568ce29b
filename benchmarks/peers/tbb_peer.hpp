// peers/tbb_peer.hpp — oneTBB's tbb::concurrent_bounded_queue with set_capacity(capacity):
// the engine DESIGN.md measures sluice against.
//
//   sluice_bench::tbb_peer ch(1024);
//   ch.make_producer().push(1);  item v = ch.make_consumer().pop();
//
// Requires / Guarantees / Lifetime: as peers/peer.hpp. push() and pop() are TBB's blocking
//   forms (they spin briefly, then sleep on TBB's concurrent_monitor).
#pragma once

#include <cstddef>

#include <tbb/concurrent_queue.h>

#include "peers/peer.hpp"

namespace sluice_bench {

class tbb_peer {
 public:
  static constexpr const char* kName = "tbb";
  static constexpr bool kMultiProducer = true;
  explicit tbb_peer(std::size_t capacity) { q_.set_capacity(static_cast<std::ptrdiff_t>(capacity)); }

  struct producer {
    tbb::concurrent_bounded_queue<item>* q;
    void push(item v) { q->push(v); }
  };
  struct consumer {
    tbb::concurrent_bounded_queue<item>* q;
    item pop() {
      item v;
      q->pop(v);
      return v;
    }
  };
  producer make_producer() { return {&q_}; }
  consumer make_consumer() { return {&q_}; }

 private:
  tbb::concurrent_bounded_queue<item> q_;
};

}  // namespace sluice_bench
