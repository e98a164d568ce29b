// peers/lamport_spsc.hpp — a reference, not a peer: the fastest plain SPSC ring we know.
//
// A Lamport ring in the layout rigtorp's SPSCQueue made common: the producer owns the
// tail and a cached copy of the head, the consumer owns the head and a cached copy of the
// tail, each pair on its own cache line, and the slots in between. A side reads the
// other side's index only when its cached copy says full (producer) or empty (consumer),
// so the shared index lines move once per lap of the ring, not once per item, and the
// slots move in whole lines. Nothing parks, nothing closes, nothing is counted; a waiting
// side spins with a pause and yields its time slice now and then (pure spinning on a
// 2-core machine with more threads than cores would measure the scheduler).
// channel_bench.cpp runs it as the row "ref_lamport" in spsc and chain rows;
// benchmarks/run.sh shows ref_* rows but leaves them out of "best peer" and the targets.
//
// Requires: one producer and one consumer handle (kMultiProducer false).
// Guarantees: as peers/peer.hpp (holds exactly `capacity` items), except that it never parks.
// Lifetime: as peers/peer.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>

#include "peers/peer.hpp"
#include "sluice/detail/cache_padded.hpp"

namespace sluice_bench {

class lamport_spsc_ref {
  struct producer_side {
    std::atomic<std::uint64_t> tail{0};  // next slot to write; written by the producer only
    std::uint64_t head_cache = 0;        // the consumer's head as the producer last saw it
  };
  struct consumer_side {
    std::atomic<std::uint64_t> head{0};  // next slot to read; written by the consumer only
    std::uint64_t tail_cache = 0;        // the producer's tail as the consumer last saw it
  };
  struct state {
    explicit state(std::size_t capacity) : cap(capacity), slots(std::make_unique<item[]>(capacity)) {}
    const std::uint64_t cap;
    sluice::detail::cache_padded<producer_side> prod;
    sluice::detail::cache_padded<consumer_side> cons;
    std::unique_ptr<item[]> slots;  // a separate allocation: never on the index lines
  };

  static void wait(unsigned& spins) {
    if (++spins % 128 == 0) {
      std::this_thread::yield();
    } else {
      sluice::detail::spin_pause();
    }
  }

 public:
  static constexpr const char* kName = "ref_lamport";
  static constexpr bool kMultiProducer = false;
  explicit lamport_spsc_ref(std::size_t capacity) : s_(std::make_unique<state>(capacity)) {}

  class producer {
   public:
    explicit producer(state* s) : s_(s) {}
    void push(item v) {
      producer_side& p = *s_->prod;
      const std::uint64_t t = p.tail.load(std::memory_order_relaxed);  // only we write it
      if (t - p.head_cache == s_->cap) {
        unsigned spins = 0;
        // acquire: the consumer's read of the slot we reuse happened before; pairs with
        // the release store of head in pop().
        while (t - (p.head_cache = s_->cons->head.load(std::memory_order_acquire)) == s_->cap) wait(spins);
      }
      s_->slots[t % s_->cap] = v;
      p.tail.store(t + 1, std::memory_order_release);  // publishes the slot; pairs with pop's acquire
    }

   private:
    state* s_;
  };

  class consumer {
   public:
    explicit consumer(state* s) : s_(s) {}
    item pop() {
      consumer_side& c = *s_->cons;
      const std::uint64_t h = c.head.load(std::memory_order_relaxed);  // only we write it
      if (h == c.tail_cache) {
        unsigned spins = 0;
        // acquire: the slot's contents written before push's release store of tail.
        while (h == (c.tail_cache = s_->prod->tail.load(std::memory_order_acquire))) wait(spins);
      }
      const item v = s_->slots[h % s_->cap];
      c.head.store(h + 1, std::memory_order_release);  // frees the slot; pairs with push's acquire
      return v;
    }

   private:
    state* s_;
  };

  producer make_producer() { return producer(s_.get()); }
  consumer make_consumer() { return consumer(s_.get()); }

 private:
  std::unique_ptr<state> s_;
};

}  // namespace sluice_bench
