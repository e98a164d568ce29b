// peers/moodycamel_peers.hpp — Cameron Desrochers' queues (Debian libreaderwriterqueue-dev,
// libconcurrentqueue-dev), in their blocking forms.
//
//   sluice_bench::rwcb_peer spsc(1024);        // SPSC only
//   sluice_bench::bcq_peer mpmc(1024);         // MPMC, bound emulated (see below)
//   auto tx = mpmc.make_producer();  tx.push(1);
//   auto rx = mpmc.make_consumer();  item v = rx.pop();
//
// Requires / Guarantees / Lifetime: as peers/peer.hpp.
//
// rwcb_peer: moodycamel::BlockingReaderWriterCircularBuffer, a bounded SPSC ring with
//   exact capacity; wait_enqueue/wait_dequeue spin, then park on a semaphore. Only for
//   one producer and one consumer (kMultiProducer = false): SPSC, the chain, ping-pong.
//
// bcq_peer: moodycamel::BlockingConcurrentQueue is *unbounded*. To measure it as a bounded
//   channel we add a moodycamel::LightweightSemaphore `free_` counting free slots,
//   initialised to `capacity`:
//     push: free_.wait() (take a slot; blocks while `capacity` items are in flight), then
//           enqueue with the producer's ProducerToken;
//     pop:  wait_dequeue with the consumer's ConsumerToken, then free_.signal() (give the
//           slot back).
//   So at most `capacity` items are ever enqueued-and-not-yet-dequeued: the same bound as
//   the others, paid for with a second semaphore operation per item on each side, which is
//   what any user who needs the bound would pay. The tokens are moodycamel's fast path
//   (one sub-queue per producer), which favours the peer.
#pragma once

#include <cstddef>
#include <memory>

// GCC's optimiser reports "potential null pointer dereference" inside concurrentqueue.h
// (a middle-end warning that the system-header exemption does not cover); the warning is
// about moodycamel's code, not ours, so it is silenced for these headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/lightweightsemaphore.h>
#include <readerwriterqueue/readerwritercircularbuffer.h>
#pragma GCC diagnostic pop

#include "peers/peer.hpp"

namespace sluice_bench {

class rwcb_peer {
 public:
  static constexpr const char* kName = "rwcb";
  static constexpr bool kMultiProducer = false;
  explicit rwcb_peer(std::size_t capacity) : q_(capacity) {}

  struct producer {
    moodycamel::BlockingReaderWriterCircularBuffer<item>* q;
    void push(item v) { q->wait_enqueue(v); }
  };
  struct consumer {
    moodycamel::BlockingReaderWriterCircularBuffer<item>* q;
    item pop() {
      item v = 0;
      q->wait_dequeue(v);
      return v;
    }
  };
  producer make_producer() { return {&q_}; }
  consumer make_consumer() { return {&q_}; }

 private:
  moodycamel::BlockingReaderWriterCircularBuffer<item> q_;
};

class bcq_peer {
  using queue = moodycamel::BlockingConcurrentQueue<item>;

 public:
  static constexpr const char* kName = "bcq_sem";
  static constexpr bool kMultiProducer = true;
  explicit bcq_peer(std::size_t capacity)
      : q_(capacity), free_(static_cast<moodycamel::LightweightSemaphore::ssize_t>(capacity)) {}

  class producer {
   public:
    producer(queue& q, moodycamel::LightweightSemaphore& free) : q_(&q), free_(&free), tok_(q) {}
    void push(item v) {
      while (!free_->wait()) {
      }
      q_->enqueue(tok_, v);
    }

   private:
    queue* q_;
    moodycamel::LightweightSemaphore* free_;
    moodycamel::ProducerToken tok_;
  };
  class consumer {
   public:
    consumer(queue& q, moodycamel::LightweightSemaphore& free) : q_(&q), free_(&free), tok_(q) {}
    item pop() {
      item v = 0;
      q_->wait_dequeue(tok_, v);
      free_->signal();
      return v;
    }

   private:
    queue* q_;
    moodycamel::LightweightSemaphore* free_;
    moodycamel::ConsumerToken tok_;
  };
  producer make_producer() { return producer(q_, free_); }
  consumer make_consumer() { return consumer(q_, free_); }

 private:
  queue q_;
  moodycamel::LightweightSemaphore free_;  // free slots: capacity - items in flight
};

}  // namespace sluice_bench
