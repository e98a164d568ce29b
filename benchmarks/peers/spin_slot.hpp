// peers/spin_slot.hpp — a reference, not a peer: the floor under the ping-pong row.
//
// One atomic word per channel holds the item + 1 (0: empty). push spins until the word
// is empty and stores; pop spins until it is full and swaps in 0. Nothing parks, nothing
// closes, nothing is counted: it is the least work any capacity-1 hand-off between two
// threads can do (the item's line goes to the consumer, the "empty again" news comes
// back), so a blocking channel's round trip can approach it but not beat it.
// channel_bench.cpp runs it only in pingpong_cap1, as the row "ref_spin_slot";
// benchmarks/run.sh shows ref_* rows but leaves them out of "best peer" and the targets.
//
// Requires: capacity 1, one producer and one consumer handle (kMultiProducer false);
//   items below 2^64 - 1. Guarantees: as peers/peer.hpp, except that it never parks.
// Lifetime: as peers/peer.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

#include "peers/peer.hpp"
#include "sluice/detail/cache_padded.hpp"

namespace sluice_bench {

class spin_slot_ref {
 public:
  static constexpr const char* kName = "ref_spin_slot";
  static constexpr bool kMultiProducer = false;
  explicit spin_slot_ref(std::size_t /*capacity: always 1*/)
      : word_(std::make_unique<sluice::detail::cache_padded<std::atomic<item>>>(0)) {}

  class producer {
   public:
    explicit producer(std::atomic<item>* w) : w_(w) {}
    void push(item v) {
      // acquire: the consumer's read of the previous item happened before we overwrite.
      while (w_->load(std::memory_order_acquire) != 0) sluice::detail::spin_pause();
      w_->store(v + 1, std::memory_order_release);  // publishes v
    }

   private:
    std::atomic<item>* w_;
  };
  class consumer {
   public:
    explicit consumer(std::atomic<item>* w) : w_(w) {}
    item pop() {
      item v;
      while ((v = w_->load(std::memory_order_acquire)) == 0) sluice::detail::spin_pause();
      w_->store(0, std::memory_order_release);  // only we empty it: a store suffices
      return v - 1;
    }

   private:
    std::atomic<item>* w_;
  };
  producer make_producer() { return producer(&**word_); }
  consumer make_consumer() { return consumer(&**word_); }

 private:
  std::unique_ptr<sluice::detail::cache_padded<std::atomic<item>>> word_;
};

}  // namespace sluice_bench
