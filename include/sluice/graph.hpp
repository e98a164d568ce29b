// sluice/graph.hpp — stage graphs: stages on their own threads, joined by bounded
// channels, under a supervisor that tears everything down when a stage fails.
//
//   sluice::graph g;
//   auto nums  = g.source<int>("count", [](sluice::sender<int>& out, std::stop_token stop) {
//     for (int i = 0; i < 1000 && !stop.stop_requested(); ++i) {
//       if (!out.push(i)) return;                 // downstream is gone: stop
//     }
//   });
//   auto sq    = g.map("square", nums, [](int v) { return long(v) * v; }, {.capacity = 256});
//   auto odd   = g.filter("odd", sq, [](const long& v) { return v % 2 == 1; });
//   auto wide  = g.map("slow", odd, [](long v) { return v + 1; }, {.replicas = 4, .ordered = true});
//   long sum = 0;
//   g.sink("sum", wide, [&](long v) { sum += v; });
//   sluice::report r = g.run();                    // blocks; rethrows the first stage failure
//
// Requires: build the graph (source/map/.../merge) from one thread, before start().
//   Stage functions may take a std::stop_token as their last parameter. A stage
//   function with replicas > 1 or a restart policy must be copy-constructible (each
//   replica, each restart gets a fresh copy). on_discard/on_stuck/on_stall must not throw.
// Guarantees:
//   - Each stage runs on its own thread(s) (replicas = N: N threads on one input;
//     ordered = true keeps input order through a bounded reorder window). Each stage's
//     output is a bounded channel with that stage's capacity (weight units when
//     channel_traits<T>::weighted). Everything a stage did before pushing an item is
//     visible to the stage that pops it.
//   - stage_options::fuse (map, filter, flat_map, sink): the stage runs as a function
//     call on its upstream stage's thread (each replica's, if that one is replicated), with
//     no channel between them. It keeps its name, metrics (its busy time is its own calls,
//     its starved time its host's time outside them; its input edge shows capacity 0),
//     error policy, cleanup (run when the upstream ends) and place in a stage_error. fuse
//     on a source, input, stage() or consume(), with replicas > 1, after an input, after
//     a stage with other outputs (broadcast, round_robin, partition), or as the 1001st
//     stage of one fused chain (each item's call nests once per fused stage on its host
//     thread's stack) is a std::logic_error naming the stage.
//   - A stage's function returning closes its output and disconnects its input; a
//     consumer that finishes early (a `stage`/`consume` that returns before its input
//     ends, a sink returning false) stops upstream without an error.
//   - The first stage exception fails the graph: every channel is cancelled with that
//     cause, every stage's stop token is requested, blocked threads wake, no stage
//     function is called afterwards, cleanup (destructors, on_close) runs, every thread
//     is joined, then run()/wait() throw stage_error. cancel() -> sluice::cancelled.
//     request_stop() stops the sources (their stop tokens; a source whose function
//     takes no stop token has its output closed) and the rest drains; run() returns.
//   - When run()/wait() (or a wait_for() that does not return nullopt) returns or throws,
//     every thread the graph started is joined. A graph has one supervisor thread besides
//     its stages: it watches for stalls and the teardown deadline, joins the stage
//     threads and calls graph_options::on_done once the run has ended.
//   - A stage stuck past the teardown deadline is named in report.stuck and to on_stuck;
//     without on_stuck, one line on stderr says which stages and where they are.
//   - Accounting: after the run, every channel has pushed == popped + discarded; every
//     item that did not reach its consumer is counted and given to on_discard.
//   - Misuse is a std::logic_error before any thread starts: a stream consumed twice
//     or from another graph, a stream nobody consumes, a stage added after start, a
//     second run, a duplicate stage name (names are compared as the metrics export them:
//     two that differ only in bytes that are not UTF-8 are duplicates). A capacity or
//     replica count of 0 is std::invalid_argument.
// Non-guarantees: order across unordered replicas or across merge inputs; which of two
//   simultaneous failures is first. Items popped in a batch by a sink that then
//   returns false are dead letters (counted, handed to on_discard), not re-queued. A sink
//   that runs on several threads (replicas, or fused onto a replicated stage or a merge)
//   and returns false stops the others once the runtime has seen the false (when the
//   function has returned): calls they began before then still run, usually at most one
//   each, more when the scheduler holds the returning thread between the two.
// Lifetime: a graph runs once. Streams refer to their graph and must not outlive it.
//   Destroying a started graph that was not waited for cancels it and waits. A graph
//   destroyed on one of its own threads (a stage or hook holding its last reference)
//   cannot wait for itself: the process aborts with a message saying so. "Any thread,
//   any time" (cancel, request_stop, snapshot, done, wait_for) means while the graph
//   exists: a thread still inside one of those calls must have returned before the
//   owner destroys the graph (join it first), as for any object.
//   Handles that a stage copies and keeps past its end (a receiver stored elsewhere)
//   are cancelled when the run ends: their items are dead letters in the report. A kept
//   receiver does not keep the stage's input open: when the stage ends its input is
//   disconnected, as if the receiver were gone (pushes into it fail).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/graph_build.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/graph_inlet.hpp"
#include "sluice/metrics.hpp"
#include "sluice/stage.hpp"
#include "sluice/supervisor.hpp"

namespace sluice {

class graph;
namespace detail {
struct graph_access;  // sluice::testing (runtime/testing) reaches the core through it
}  // namespace detail

// The typed output of a stage: a handle to be consumed exactly once (by a stage, a
// sink, or broadcast/round_robin/partition/merge). Cheap to copy; copies name the
// same stream.
template <class T>
class stream {
 public:
  using value_type = T;
  stream() = default;

 private:
  friend class graph;
  stream(detail::graph_core* g, std::size_t channel) noexcept : graph_(g), channel_(channel) {}
  detail::graph_core* graph_ = nullptr;
  std::size_t channel_ = 0;
};

class graph {
 public:
  graph() : graph(graph_options{}) {}
  explicit graph(graph_options o) : core_(std::make_unique<detail::graph_core>(std::move(o))) {}
  // A moved-from graph: every member throws std::logic_error but done() (true) and the
  // destructor.
  graph(graph&&) noexcept = default;
  graph& operator=(graph&&) noexcept = delete;
  graph(const graph&) = delete;
  graph& operator=(const graph&) = delete;
  ~graph() = default;  // the core cancels and waits if a started run was not waited for

  // ---- stages ---------------------------------------------------------------------

  // f(sender<T>&[, std::stop_token]): pushes items until it returns.
  template <class T, class F>
  stream<T> source(std::string name, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, sender<T>&>,
                  "sluice::graph::source<T>: the function must be callable as f(sluice::sender<T>&) "
                  "or f(sluice::sender<T>&, std::stop_token)");
    return {&core(), detail::add_source<T>(core(), std::move(name), std::move(f), o)};
  }

  // U f(T[, std::stop_token]).
  template <class T, class F>
  auto map(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, T&&>,
                  "sluice::graph::map: the function must be callable as f(T) (or f(T, std::stop_token)) "
                  "with the input stream's item type T");
    using U = std::decay_t<detail::stage_result_t<F, T&&>>;
    static_assert(!std::is_void_v<U>, "sluice::graph::map: the function returns void; use sink() for that");
    return stream<U>(&core(), detail::add_items<detail::item_kind::map, T, U>(core(), in.graph_, in.channel_,
                                                                                  std::move(name), std::move(f), o));
  }

  // bool pred(const T&[, std::stop_token]): keeps the items for which it is true.
  template <class T, class F>
  stream<T> filter(std::string name, stream<T> in, F pred, stage_options o = {}) {
    static_assert(detail::callable_v<F, const T&>,
                  "sluice::graph::filter: the predicate must be callable as pred(const T&) "
                  "(or pred(const T&, std::stop_token))");
    static_assert(std::is_convertible_v<detail::stage_result_t<F, const T&>, bool>,
                  "sluice::graph::filter: the predicate must return something convertible to bool");
    return {&core(), detail::add_items<detail::item_kind::filter, T, T>(core(), in.graph_, in.channel_,
                                                                            std::move(name), std::move(pred), o)};
  }

  // f(T, sender<U>&[, std::stop_token]): any number of outputs per input.
  template <class U, class T, class F>
  stream<U> flat_map(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, T&&, sender<U>&>,
                  "sluice::graph::flat_map<U>: the function must be callable as f(T, sluice::sender<U>&) "
                  "(or f(T, sluice::sender<U>&, std::stop_token))");
    return {&core(), detail::add_flat_map<U, T>(core(), in.graph_, in.channel_, std::move(name), std::move(f), o)};
  }

  // f(receiver<T>&, sender<U>&[, std::stop_token]): the whole input stream at once.
  // Returning before the input ends is an early finish (upstream stops). Replicas
  // share the input; `ordered` does not apply.
  template <class U, class T, class F>
  stream<U> stage(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, receiver<T>&, sender<U>&>,
                  "sluice::graph::stage<U>: the function must be callable as "
                  "f(sluice::receiver<T>&, sluice::sender<U>&) (or with a trailing std::stop_token)");
    return {&core(), detail::add_whole<U, T>(core(), in.graph_, in.channel_, std::move(name), std::move(f), o)};
  }

  // f(T[, std::stop_token]) returning void, or bool: false = finished early (not an error).
  template <class T, class F>
  void sink(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, T&&>,
                  "sluice::graph::sink: the function must be callable as f(T) (or f(T, std::stop_token))");
    using R = detail::stage_result_t<F, T&&>;
    static_assert(std::is_void_v<R> || std::is_convertible_v<R, bool>,
                  "sluice::graph::sink: the function must return void, or bool (false: finished early)");
    (void)detail::add_items<detail::item_kind::sink, T, int>(core(), in.graph_, in.channel_, std::move(name),
                                                             std::move(f), o);
  }

  // f(receiver<T>&[, std::stop_token]): a sink over the whole input (for writers that
  // must see how the input ended: rx.done() after a close, rx.cancelled() after an abort).
  template <class T, class F>
  void consume(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, receiver<T>&>,
                  "sluice::graph::consume: the function must be callable as f(sluice::receiver<T>&) "
                  "(or f(sluice::receiver<T>&, std::stop_token))");
    (void)detail::add_whole<void, T>(core(), in.graph_, in.channel_, std::move(name), std::move(f), o);
  }

  // An input fed from outside the graph (a server's handler threads): the inlet takes
  // items from any number of threads at once (see sluice::inlet), the stream is its
  // output, a channel of capacity o.capacity. on_close, replicas other than 1 and an
  // on_error other than stop do not apply to it and are std::invalid_argument. In the
  // snapshot it is a stage with no thread: its pushers' time blocked on a full input
  // is its backpressured time; it is never the bottleneck. request_stop() closes it
  // (what it accepted drains); a failure or cancel() makes every push fail at once.
  template <class T>
  std::pair<inlet<T>, stream<T>> input(std::string name, stage_options o = {}) {
    auto [out, tx] = detail::add_input<T>(core(), std::move(name), o);
    return {inlet<T>(std::move(tx), core().identity(), out), stream<T>(&core(), out)};
  }

  // ---- routing (internal stages; their channels take the input's capacity) ---------

  // Every item to each of n branches (T must be copyable). A branch that finishes
  // early is dropped; the others go on.
  template <class T>
  std::vector<stream<T>> broadcast(stream<T> in, std::size_t n) {
    static_assert(std::is_copy_constructible_v<T>, "sluice::graph::broadcast: the item type must be copyable");
    return route<detail::route_kind::broadcast>(in, n, "broadcast", detail::no_key{});
  }
  // Items to n branches in turn (each item to one branch).
  template <class T>
  std::vector<stream<T>> round_robin(stream<T> in, std::size_t n) {
    return route<detail::route_kind::round_robin>(in, n, "round_robin", detail::no_key{});
  }
  // Item v to branch std::hash(key(v)) % n.
  template <class T, class Key>
  std::vector<stream<T>> partition(stream<T> in, std::size_t n, Key key) {
    static_assert(std::is_invocable_v<Key&, const T&>, "sluice::graph::partition: key must be callable as key(const T&)");
    return route<detail::route_kind::partition>(in, n, "partition", std::move(key));
  }
  // All inputs into one stream (one forwarding thread per input; no order across inputs).
  template <class T>
  stream<T> merge(std::vector<stream<T>> ins) {
    std::vector<const detail::graph_core*> owners;
    std::vector<std::size_t> chs;
    for (const auto& s : ins) {
      owners.push_back(s.graph_);
      chs.push_back(s.channel_);
    }
    return {&core(), detail::add_merge<T>(core(), owners, chs)};
  }

  // ---- running ------------------------------------------------------------------

  // start() + wait().
  report run() {
    start();
    return wait();
  }
  // Starts every stage's threads. logic_error (before any thread starts) for a
  // malformed graph or a second start. After cancel() it starts nothing (wait() throws).
  // std::system_error when the threads cannot all be created (EAGAIN: out of threads):
  // then no stage function has run, the threads made so far are joined, every channel
  // is cancelled, and wait() throws the same error.
  void start() { core().start(); }
  // Blocks until every thread has exited and is joined. Returns the report, or throws
  // stage_error (first failure) or cancelled. logic_error when not started or waited.
  report wait() { return core().wait(); }
  // wait(), returning or throwing the same way, or nullopt when the run is still going
  // after d (then call it again, or wait()). logic_error before start() or once the
  // outcome was taken.
  template <class Rep, class Period>
  std::optional<report> wait_for(std::chrono::duration<Rep, Period> d) {
    // Saturated both ways before the conversion, which would overflow (a negative d of
    // hours::min() is as much "do not wait" as zero; NaN is not > 0 either; a float
    // duration within seconds of 292 years once converted to a negative wait).
    return core().wait_for(detail::saturated_wait(d));
  }
  // The run has ended: every stage thread is joined and on_done has returned (wait()
  // then returns without blocking). Any thread, any time.
  // (A moved-from graph runs nothing: true.)
  [[nodiscard]] bool done() const noexcept { return !core_ || core_->done(); }
  // Graceful stop: the sources stop; in-flight items drain to the sinks; run() returns
  // normally. Any thread, any time (before start too: the sources then stop at once).
  void request_stop() { core().request_stop(); }
  // Abort now: run()/wait() throw sluice::cancelled. Any thread, any time (before
  // start: nothing runs).
  void cancel() { core().cancel(); }
  // Per-stage and per-channel counters; from any thread, at any time.
  [[nodiscard]] metrics::snapshot snapshot() const { return core().snapshot(); }
  // The report of the finished run, also after run()/wait() threw (empty before).
  [[nodiscard]] report last_report() const { return core().last_report(); }

 private:
  template <detail::route_kind K, class T, class Key>
  std::vector<stream<T>> route(stream<T> in, std::size_t n, const char* what, Key key) {
    std::vector<stream<T>> outs;
    for (std::size_t ch : detail::add_route<K, T>(core(), in.graph_, in.channel_, n, what, std::move(key))) {
      outs.push_back(stream<T>(&core(), ch));
    }
    return outs;
  }

  // Every member but done() and the destructor: a moved-from graph is an error, not null.
  detail::graph_core& core() const {
    if (!core_) throw std::logic_error("sluice::graph: used after it was moved from");
    return *core_;
  }

  friend struct detail::graph_access;
  std::unique_ptr<detail::graph_core> core_;
};

// From inside a running stage function (on its thread): shows a channel that lives outside
// this process, such as a jetstream:<stream> edge, in the graph's snapshots, so that the
// bottleneck and the shares see across the cut. `pushes`: this stage feeds the channel
// (it is the channel's `from`); otherwise it takes from it (`to`). snapshot() calls `read`
// on any thread until the graph is destroyed: it must be cheap and thread safe (return a
// cached value), and must not call the graph (it runs under the graph's lock: snapshot(),
// cancel() or request_stop() from it deadlock). A second call from the same replica of the same stage with the same
// name and direction replaces the first (a restarted stage); the blocked times then count
// on from the first's last reading (they are counters), so a restarted stage's gauge may
// start from 0. The calls of other replicas and stages add gauges of their own: the
// snapshot shows one channel per name, from and to, with the sum of their blocked times
// (a graph that feeds a stream and takes from it shows two channels of that name).
// Returns false, doing nothing, when not called on a stage thread. (A fused stage's call
// registers the channel for the stage that owns the thread.) The accounting identity does
// not apply to such a channel (metrics::channel_snapshot::external).
namespace this_stage {
bool add_external_channel(std::string name, bool pushes, std::function<metrics::external_channel_reading()> read);
// From inside a running stage function: whether the graph was asked to stop (request_stop(),
// a cancel, a failure's teardown). A stage that is not a source sees request_stop() only
// as its input ending early, as the sources upstream stopped; one that checks its input's
// integrity at its end (gunzip: a gzip trailer) asks this first, so a graceful stop is
// not reported as a truncated input. False when not called on a stage thread.
[[nodiscard]] bool graph_stopping() noexcept;
}  // namespace this_stage

namespace detail {
struct graph_access {
  static graph_core& core(graph& g) noexcept { return *g.core_; }
};
}  // namespace detail

}  // namespace sluice
