// peers/sluice_peer.hpp — sluice::bounded<std::uint64_t> in the peer adapter shape, plus
// the bulk handles (push_all / pop_some) that only sluice has.
//
//   sluice_bench::sluice_peer ch(1024);
//   auto tx = ch.make_producer();  tx.push(1);  tx.push_batch(std::span(batch));
//   auto rx = ch.make_consumer();  item v = rx.pop();  std::size_t n = rx.pop_batch(buf, 64);
//
// Requires / Guarantees / Lifetime: as peers/peer.hpp. Each handle owns its own copy of the
//   sender or receiver (a handle is used by one thread at a time, DESIGN.md section 1).
//   seal() drops the adapter's pair once the handles are made: the channel then closes
//   when the last producer thread ends, after its items are in, and the consumers still
//   pop their exact counts.
// Non-guarantees: pop() on a closed channel is a benchmark bug; it aborts.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <span>
#include <utility>

#include "peers/peer.hpp"
#include "sluice/channel.hpp"

namespace sluice_bench {

// Whether the channels made here measure their time blocked (channel_options::timing);
// channel_bench's --sluice_timing=off clears it, for benchmarks/metrics_cost.sh.
inline bool g_sluice_timing = true;

class sluice_peer {
 public:
  static constexpr const char* kName = "sluice";
  static constexpr bool kMultiProducer = true;
  explicit sluice_peer(std::size_t capacity)
      : ends_(sluice::bounded<item>({.capacity = capacity, .timing = g_sluice_timing})) {}

  class producer {
   public:
    explicit producer(sluice::sender<item> tx) : tx_(std::move(tx)) {}
    void push(item v) {
      if (!tx_.push(v)) std::abort();
    }
    // Bulk: the whole batch, blocking like push().
    void push_batch(std::span<const item> batch) {
      if (tx_.push_all(batch) != batch.size()) std::abort();
    }

   private:
    sluice::sender<item> tx_;
  };
  class consumer {
   public:
    explicit consumer(sluice::receiver<item> rx) : rx_(std::move(rx)) {}
    item pop() {
      auto v = rx_.pop();
      if (!v) std::abort();
      return *v;
    }
    // Bulk: blocks for at least one item, then takes up to max into out.
    std::size_t pop_batch(item* out, std::size_t max) {
      const std::size_t n = rx_.pop_some(out, max);
      if (n == 0) std::abort();
      return n;
    }

   private:
    sluice::receiver<item> rx_;
  };
  producer make_producer() { return producer(ends_.first); }
  consumer make_consumer() { return consumer(ends_.second); }
  // Called once every handle is made, before the threads run: drops the adapter's own
  // pair, so the channel counts exactly the handles the threads hold, as in a program
  // where each thread owns its end (one sender and one receiver make an SPSC channel).
  void seal() { ends_ = {}; }

 private:
  std::pair<sluice::sender<item>, sluice::receiver<item>> ends_;
};

}  // namespace sluice_bench
