// sluice/detail/graph_inlet.hpp — sluice::inlet<T>, how code outside a graph feeds it
// (graph::input<T>()). Included by sluice/graph.hpp; users include that.
//
//   sluice::graph g;
//   auto [in, requests] = g.input<request>("http", {.capacity = 4096});
//   g.sink("store", g.map("parse", requests, parse), store);
//   g.start();
//   // any handler thread, on the same `in` object or a copy:
//   if (in.try_push(std::move(req)) != sluice::status::ok) reply(503);
//
// Requires: nothing beyond a live inlet object (an empty one, default-constructed or
//   moved-from, throws std::logic_error). Assigning to an inlet object while other
//   threads use that same object is a data race, as for any object.
// Guarantees:
//   - Every member may be called by any number of threads at once on the same object
//     (they are const: the handle is not changed by a push, as with std::shared_ptr);
//     copies are cheap and share one input.
//   - A push that fails leaves its item with the caller (an rvalue is moved from only on
//     success). A push fails at once once the graph has failed or was cancelled, after
//     request_stop(), after close() on any copy, and after the graph's consumer of the
//     input is gone. An accepted item is processed or a dead letter (on_discard), never
//     silently lost.
//   - close() on any copy, or destroying the last copy, ends the input: what was
//     accepted drains, then the consuming stage sees the end.
// Why concurrent pushes through one handle are safe: a channel side with exactly one
//   sender handle takes a single-producer path (plain stores, detail/channel_state.hpp);
//   with two or more handles every push claims its slot with a CAS, and a sender handle
//   is otherwise only a pointer that push/close read. The inlet keeps a second, unused
//   sender (`keep`) so that its side always has at least two handles, whatever the
//   graph does with its own.
// Lifetime: the inlet may outlive its graph; pushes then fail. A push racing the run's
//   end or the graph's destruction either fails or lands before the input is sealed and
//   is processed or reported as a dead letter: the run's end (before its report and
//   on_done) and the destructor wait for such late reports
//   (channel_control::wait_discards).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <utility>

#include "sluice/channel.hpp"
#include "sluice/status.hpp"

namespace sluice {

class graph;

namespace detail {
// While a stage's own thread pushes into an inlet of its graph (a stage that re-queues
// into its input), the stage is marked as pushing into that input's channel, so a stall's
// wait-for chain and the snapshot's blocked_on follow it: such a push in a cycle was
// "busy", the chain ended at it, and it was named the bottleneck (a probe).
// Out of line (runtime/graph_observer.cpp); nothing for other threads.
class inlet_push_note {
 public:
  inlet_push_note(const void* graph, std::size_t channel) noexcept;
  ~inlet_push_note();
  inlet_push_note(const inlet_push_note&) = delete;
  inlet_push_note& operator=(const inlet_push_note&) = delete;

 private:
  void* node_ = nullptr;
};
}  // namespace detail

template <class T>
class inlet {
 public:
  inlet() noexcept = default;

  // Blocks while the input is full. false: the input has ended (closed, the graph
  // stopped, failed or was cancelled); v is then untouched.
  bool push(T&& v) const { return push_until(std::move(v), time_point::max()) == status::ok; }
  bool push(const T& v) const { return push_until(v, time_point::max()) == status::ok; }
  // Never blocks: ok, full (backpressure: answer 503, retry later) or closed.
  [[nodiscard]] status try_push(T&& v) const { return tx().try_push(std::move(v)); }
  [[nodiscard]] status try_push(const T& v) const { return tx().try_push(v); }
  // Blocks until pushed, the input ended or the time is up (timeout); v is moved from
  // only on ok.
  template <class Rep, class Period>
  [[nodiscard]] status push_for(T&& v, std::chrono::duration<Rep, Period> d) const {
    return push_until(std::move(v), detail::deadline_after(d));
  }
  template <class Rep, class Period>
  [[nodiscard]] status push_for(const T& v, std::chrono::duration<Rep, Period> d) const {
    return push_until(v, detail::deadline_after(d));
  }
  [[nodiscard]] status push_until(T&& v, time_point t) const {
    sender<T>& s = tx();
    const detail::inlet_push_note note(st_->graph, st_->channel);
    return s.push_until(std::move(v), t);
  }
  [[nodiscard]] status push_until(const T& v, time_point t) const {
    sender<T>& s = tx();
    const detail::inlet_push_note note(st_->graph, st_->channel);
    return s.push_until(v, t);
  }

  // Ends the input for every copy: what was accepted drains, later pushes fail.
  void close() const noexcept {
    if (st_) st_->tx.close();
  }
  // The input has ended: no push can succeed any more.
  [[nodiscard]] bool is_closed() const noexcept { return !st_ || st_->tx.is_closed(); }
  explicit operator bool() const noexcept { return static_cast<bool>(st_); }

 private:
  friend class graph;
  struct shared {
    shared(sender<T> s, const void* g, std::size_t ch) : tx(std::move(s)), keep(tx), graph(g), channel(ch) {}
    shared(const shared&) = delete;
    shared& operator=(const shared&) = delete;
    ~shared() { tx.close(); }  // the last copy is gone: the input ends
    sender<T> tx;    // every copy pushes through this one handle
    sender<T> keep;  // never used: keeps the side from being a lone sender (see above)
    const void* graph;    // its graph's identity (compared, never used as a pointer)
    std::size_t channel;  // its channel's id in that graph
  };
  inlet(sender<T> tx, const void* graph, std::size_t channel)
      : st_(std::make_shared<shared>(std::move(tx), graph, channel)) {}
  sender<T>& tx() const {
    if (!st_) throw std::logic_error("sluice::inlet: empty (default-constructed or moved-from) inlet");
    return st_->tx;
  }

  std::shared_ptr<shared> st_;
};

}  // namespace sluice
