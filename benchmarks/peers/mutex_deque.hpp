// peers/mutex_deque.hpp — the textbook baseline: a std::deque behind one mutex and two
// condition variables (not_full for producers, not_empty for consumers).
//
//   sluice_bench::mutex_deque<std::uint64_t> q(1024);
//   std::thread t([&] { q.push(7); });
//   std::uint64_t v = q.pop();   // 7
//   t.join();
//
// Requires: capacity >= 1. Any number of threads may push and pop concurrently.
// Guarantees: at most `capacity` items are buffered; push blocks while full, pop while
//   empty; FIFO. Everything a producer did before push(x) is visible to the consumer
//   after pop() returns x (the mutex gives the happens-before edge).
// Non-guarantees: no spinning, no close; fairness is whatever the condvar gives.
// Lifetime: must outlive every thread blocked in it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>

#include "peers/peer.hpp"

namespace sluice_bench {

template <class T>
class mutex_deque {
 public:
  explicit mutex_deque(std::size_t capacity) : capacity_(capacity) {}
  mutex_deque(const mutex_deque&) = delete;
  mutex_deque& operator=(const mutex_deque&) = delete;

  void push(T v) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_; });
    items_.push_back(std::move(v));
    lock.unlock();  // notify outside the lock so the woken consumer does not block on mu_
    not_empty_.notify_one();
  }
  T pop() {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !items_.empty(); });
    T v = std::move(items_.front());
    items_.pop_front();
    lock.unlock();
    not_full_.notify_one();
    return v;
  }

 private:
  std::mutex mu_;
  std::condition_variable not_full_;   // producers wait here while size == capacity
  std::condition_variable not_empty_;  // consumers wait here while empty
  std::deque<T> items_;                // guarded by mu_
  const std::size_t capacity_;
};

// Adapter: handles are plain pointers to the shared queue.
class mutex_deque_peer {
 public:
  static constexpr const char* kName = "mutex_cv";
  static constexpr bool kMultiProducer = true;
  explicit mutex_deque_peer(std::size_t capacity) : q_(capacity) {}

  struct producer {
    mutex_deque<item>* q;
    void push(item v) { q->push(v); }
  };
  struct consumer {
    mutex_deque<item>* q;
    item pop() { return q->pop(); }
  };
  producer make_producer() { return {&q_}; }
  consumer make_consumer() { return {&q_}; }

 private:
  mutex_deque<item> q_;
};

}  // namespace sluice_bench
