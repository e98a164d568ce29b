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
// Guarantees (DESIGN.md §2, §3):
//   - Each stage runs on its own thread(s) (replicas = N: N threads on one input;
//     ordered = true keeps input order through a bounded reorder window). Each stage's
//     output is a bounded channel with that stage's capacity (weight units when
//     channel_traits<T>::weighted). Everything a stage did before pushing an item is
//     visible to the stage that pops it.
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
//     second run, a duplicate stage name. A capacity or replica count of 0 is
//     std::invalid_argument.
// Non-guarantees: order across unordered replicas or across merge inputs; which of two
//   simultaneous failures is first. Items popped in a batch by a sink that then
//   returns false are dead letters (counted, handed to on_discard), not re-queued.
// Lifetime: a graph runs once. Streams refer to their graph and must not outlive it.
//   Destroying a started graph that was not waited for cancels it and waits.
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
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/graph_inlet.hpp"
#include "sluice/detail/graph_stages.hpp"
#include "sluice/detail/graph_types.hpp"
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
    check_stage<F>(name, o);
    auto n = new_node(std::move(name), o);
    n->is_source = true;
    n->takes_stop = detail::takes_stop_v<F, sender<T>&>;
    const std::size_t id = core_->add_node(std::move(n));
    auto [out, tx] = make_output<T>(id, o.capacity);
    auto fn = std::make_shared<detail::fn_source<F>>(std::move(f));
    core_->node(id).factory = [fn, tx = std::move(tx)](std::size_t) -> std::unique_ptr<detail::replica_task> {
      return std::make_unique<detail::source_task<T, F>>(tx, fn);
    };
    return {core_.get(), out};
  }

  // U f(T[, std::stop_token]).
  template <class T, class F>
  auto map(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, T&&>,
                  "sluice::graph::map: the function must be callable as f(T) (or f(T, std::stop_token)) "
                  "with the input stream's item type T");
    using U = std::decay_t<detail::stage_result_t<F, T&&>>;
    static_assert(!std::is_void_v<U>, "sluice::graph::map: the function returns void; use sink() for that");
    return items<detail::item_kind::map, T, U>(std::move(name), in, std::move(f), std::move(o));
  }

  // bool pred(const T&[, std::stop_token]): keeps the items for which it is true.
  template <class T, class F>
  stream<T> filter(std::string name, stream<T> in, F pred, stage_options o = {}) {
    static_assert(detail::callable_v<F, const T&>,
                  "sluice::graph::filter: the predicate must be callable as pred(const T&) "
                  "(or pred(const T&, std::stop_token))");
    static_assert(std::is_convertible_v<detail::stage_result_t<F, const T&>, bool>,
                  "sluice::graph::filter: the predicate must return something convertible to bool");
    return items<detail::item_kind::filter, T, T>(std::move(name), in, std::move(pred), std::move(o));
  }

  // f(T, sender<U>&[, std::stop_token]): any number of outputs per input.
  template <class U, class T, class F>
  stream<U> flat_map(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, T&&, sender<U>&>,
                  "sluice::graph::flat_map<U>: the function must be callable as f(T, sluice::sender<U>&) "
                  "(or f(T, sluice::sender<U>&, std::stop_token))");
    check_stage<F>(name, o);
    check_input(in);
    const bool ordered = o.ordered && o.replicas > 1;
    auto n = new_node(std::move(name), o);
    if (ordered) n->threads = o.replicas + 1;  // + the emitter
    const std::size_t id = core_->add_node(std::move(n));
    receiver<T> rx = take_input(in, id);
    auto [out, tx] = make_output<U>(id, o.capacity);
    auto fn = std::make_shared<detail::fn_source<F>>(std::move(f));
    detail::graph_core* g = core_.get();
    const std::size_t in_ch = in.channel_;
    if (ordered) {
      auto order = std::make_shared<detail::expand_order<U>>(*g, out, 2 * o.replicas,
                                                             std::min<std::size_t>(o.capacity, detail::kBatch));
      const std::size_t replicas = o.replicas;
      core_->node(id).factory = [g, rx = std::move(rx), in_ch, tx = std::move(tx), fn, order,
                                 replicas](std::size_t i) -> std::unique_ptr<detail::replica_task> {
        return std::make_unique<detail::ordered_expand_task<T, U, F>>(*g, rx, in_ch, tx, fn, order, i == replicas);
      };
    } else {
      const std::size_t threads = o.replicas;
      core_->node(id).factory = [g, rx = std::move(rx), in_ch, tx = std::move(tx), fn,
                                 threads](std::size_t) -> std::unique_ptr<detail::replica_task> {
        return std::make_unique<detail::expand_task<T, U, F>>(*g, rx, in_ch, tx, fn, threads);
      };
    }
    return {g, out};
  }

  // f(receiver<T>&, sender<U>&[, std::stop_token]): the whole input stream at once.
  // Returning before the input ends is an early finish (upstream stops). Replicas
  // share the input; `ordered` does not apply.
  template <class U, class T, class F>
  stream<U> stage(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, receiver<T>&, sender<U>&>,
                  "sluice::graph::stage<U>: the function must be callable as "
                  "f(sluice::receiver<T>&, sluice::sender<U>&) (or with a trailing std::stop_token)");
    check_stage<F>(name, o);
    check_input(in);
    const std::size_t id = core_->add_node(new_node(std::move(name), o));
    receiver<T> rx = take_input(in, id);
    auto [out, tx] = make_output<U>(id, o.capacity);
    auto fn = std::make_shared<detail::fn_source<F>>(std::move(f));
    core_->node(id).factory = [rx = std::move(rx), tx = std::move(tx),
                               fn](std::size_t) -> std::unique_ptr<detail::replica_task> {
      return std::make_unique<detail::through_task<T, U, F>>(rx, tx, fn);
    };
    return {core_.get(), out};
  }

  // f(T[, std::stop_token]) returning void, or bool: false = finished early (not an error).
  template <class T, class F>
  void sink(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, T&&>,
                  "sluice::graph::sink: the function must be callable as f(T) (or f(T, std::stop_token))");
    using R = detail::stage_result_t<F, T&&>;
    static_assert(std::is_void_v<R> || std::is_convertible_v<R, bool>,
                  "sluice::graph::sink: the function must return void, or bool (false: finished early)");
    (void)items<detail::item_kind::sink, T, int>(std::move(name), in, std::move(f), std::move(o));
  }

  // f(receiver<T>&[, std::stop_token]): a sink over the whole input (for writers that
  // must see how the input ended: rx.done() after a close, rx.cancelled() after an abort).
  template <class T, class F>
  void consume(std::string name, stream<T> in, F f, stage_options o = {}) {
    static_assert(detail::callable_v<F, receiver<T>&>,
                  "sluice::graph::consume: the function must be callable as f(sluice::receiver<T>&) "
                  "(or f(sluice::receiver<T>&, std::stop_token))");
    check_stage<F>(name, o);
    check_input(in);
    const std::size_t id = core_->add_node(new_node(std::move(name), o));
    receiver<T> rx = take_input(in, id);
    auto fn = std::make_shared<detail::fn_source<F>>(std::move(f));
    core_->node(id).factory = [rx = std::move(rx), fn](std::size_t) -> std::unique_ptr<detail::replica_task> {
      return std::make_unique<detail::consume_task<T, F>>(rx, fn);
    };
  }

  // An input fed from outside the graph (a server's handler threads): the inlet takes
  // items from any number of threads at once (see sluice::inlet), the stream is its
  // output, a channel of capacity o.capacity (the other options do not apply). In the
  // snapshot it is a stage with no thread: its pushers' time blocked on a full input
  // is its backpressured time; it is never the bottleneck. request_stop() closes it
  // (what it accepted drains); a failure or cancel() makes every push fail at once.
  template <class T>
  std::pair<inlet<T>, stream<T>> input(std::string name, stage_options o = {}) {
    check_stage<int>(name, o);
    auto n = new_node(std::move(name), o);
    n->is_input = true;
    n->threads = 0;
    n->replicas = 1;
    n->on_close = nullptr;
    const std::size_t id = core_->add_node(std::move(n));
    auto [out, tx] = make_output<T>(id, o.capacity);
    return {inlet<T>(std::move(tx)), stream<T>(core_.get(), out)};
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
    if (ins.empty()) throw std::invalid_argument("sluice::graph::merge: no streams to merge");
    std::string name = "merge(";
    for (std::size_t i = 0; i < ins.size(); ++i) {
      check_input(ins[i]);
      for (std::size_t j = 0; j < i; ++j) {
        if (ins[j].channel_ == ins[i].channel_) {
          throw std::logic_error("sluice::graph::merge: the same stream is merged twice");
        }
      }
      if (i != 0) name += ',';
      name += core_->producer_name(ins[i].channel_);
    }
    name = core_->unique_name(name + ")");
    const std::size_t capacity = capacity_of(ins.front());
    stage_options o;
    o.capacity = capacity;
    o.replicas = ins.size();
    check_stage<int>(name, o);
    const std::size_t id = core_->add_node(new_node(name, o));
    std::vector<receiver<T>> rxs;
    std::vector<std::size_t> in_chs;
    for (auto& s : ins) {
      rxs.push_back(take_input(s, id));
      in_chs.push_back(s.channel_);
    }
    auto [out, tx] = make_output<T>(id, capacity);
    detail::graph_core* g = core_.get();
    core_->node(id).factory = [g, rxs = std::move(rxs), in_chs, tx = std::move(tx),
                               out = out](std::size_t i) -> std::unique_ptr<detail::replica_task> {
      return std::make_unique<detail::forward_task<T>>(*g, rxs[i], in_chs[i], tx, out);
    };
    return {g, out};
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
  void start() { core_->start(); }
  // Blocks until every thread has exited and is joined. Returns the report, or throws
  // stage_error (first failure) or cancelled. logic_error when not started or waited.
  report wait() { return core_->wait(); }
  // wait(), returning or throwing the same way, or nullopt when the run is still going
  // after d (then call it again, or wait()). logic_error before start() or once the
  // outcome was taken.
  template <class Rep, class Period>
  std::optional<report> wait_for(std::chrono::duration<Rep, Period> d) {
    using dur = std::chrono::steady_clock::duration;
    if (std::chrono::duration<double>(d) >= std::chrono::duration<double>(dur::max())) return core_->wait_for(dur::max());
    return core_->wait_for(std::chrono::ceil<dur>(d));
  }
  // The run has ended: every stage thread is joined and on_done has returned (wait()
  // then returns without blocking). Any thread, any time.
  [[nodiscard]] bool done() const noexcept { return core_->done(); }
  // Graceful stop: the sources stop; in-flight items drain to the sinks; run() returns
  // normally. Any thread, any time (before start too: the sources then stop at once).
  void request_stop() { core_->request_stop(); }
  // Abort now: run()/wait() throw sluice::cancelled. Any thread, any time (before
  // start: nothing runs).
  void cancel() { core_->cancel(); }
  // Per-stage and per-channel counters; from any thread, at any time.
  [[nodiscard]] metrics::snapshot snapshot() const { return core_->snapshot(); }
  // The report of the finished run, also after run()/wait() threw (empty before).
  [[nodiscard]] report last_report() const { return core_->last_report(); }

 private:
  template <class F>
  void check_stage(const std::string& name, const stage_options& o) const {
    core_->check_can_add(name);
    if (o.capacity == 0) {
      throw std::invalid_argument("sluice::graph: stage '" + name + "': capacity must be at least 1");
    }
    if (o.replicas == 0) {
      throw std::invalid_argument("sluice::graph: stage '" + name + "': replicas must be at least 1");
    }
    if constexpr (!std::is_copy_constructible_v<F>) {
      if (o.replicas > 1 || o.on_error.what() == error_policy::kind::restart) {
        throw std::logic_error("sluice::graph: stage '" + name +
                               "': replicas > 1 and restart need a copy-constructible stage function");
      }
    }
  }
  template <class T>
  void check_input(const stream<T>& in) const {
    core_->check_input(in.graph_, in.channel_);
  }
  std::unique_ptr<detail::stage_node> new_node(std::string name, const stage_options& o) const {
    auto n = std::make_unique<detail::stage_node>();
    n->name = std::move(name);
    n->threads = o.replicas;
    n->replicas = o.replicas;
    n->policy = o.on_error;
    n->on_close = o.on_close;
    return n;
  }
  template <class T>
  receiver<T> take_input(const stream<T>& in, std::size_t consumer) {
    auto p = std::static_pointer_cast<receiver<T>>(core_->take_input(in.channel_, consumer));
    return std::move(*p);
  }
  template <class T>
  std::size_t capacity_of(const stream<T>& in) const {
    return core_->channel_capacity(in.channel_);
  }
  // Makes the output channel of node `producer`; returns its id and the stage's sender.
  template <class T>
  std::pair<std::size_t, sender<T>> make_output(std::size_t producer, std::size_t capacity) {
    channel_options<T> co;
    co.capacity = capacity;
    if constexpr (channel_traits<T>::weighted) {
      co.weigh = [](const T& v) -> std::size_t { return channel_traits<T>::weigh(v); };
    }
    const std::size_t id = core_->next_channel_id();
    if (core_->has_discard_hook()) {
      co.on_discard = [g = core_.get(), id](T&& v) { g->discard(id, typeid(T), &v); };
    }
    auto [tx, rx] = bounded<T>(std::move(co));
    if (detail::fault_hook* h = core_->faults(); h != nullptr) [[unlikely]] {
      detail::channel_access::set_fault_hook(tx, h);  // under sluice::testing::stress only
    }
    core_->add_channel(producer, std::make_unique<detail::typed_channel_control<T>>(tx),
                       std::make_shared<receiver<T>>(std::move(rx)), typeid(T), channel_traits<T>::weighted);
    return {id, std::move(tx)};
  }

  template <detail::item_kind K, class T, class U, class F>
  stream<U> items(std::string name, stream<T> in, F f, stage_options o) {
    check_stage<F>(name, o);
    check_input(in);
    const bool ordered = o.ordered && o.replicas > 1 && K != detail::item_kind::sink;
    const std::size_t id = core_->add_node(new_node(std::move(name), o));
    receiver<T> rx = take_input(in, id);
    detail::graph_core* g = core_.get();
    auto fn = std::make_shared<detail::fn_source<F>>(std::move(f));
    const std::size_t in_ch = in.channel_;
    const std::size_t threads = o.replicas;
    if constexpr (K == detail::item_kind::sink) {
      core_->node(id).factory = [g, rx = std::move(rx), in_ch, fn,
                                 threads](std::size_t) -> std::unique_ptr<detail::replica_task> {
        return std::make_unique<detail::item_task<K, T, U, F>>(*g, rx, in_ch, 0, 0, fn, nullptr, threads);
      };
      return {};
    } else {
      auto [out, tx] = make_output<U>(id, o.capacity);
      std::shared_ptr<detail::reorder_buffer<U>> order;
      if (ordered) order = std::make_shared<detail::reorder_buffer<U>>(*g, out, 2 * o.replicas);
      core_->node(id).factory = [g, rx = std::move(rx), in_ch, tx = std::move(tx), out = out, fn, order,
                                 threads](std::size_t) -> std::unique_ptr<detail::replica_task> {
        return std::make_unique<detail::item_task<K, T, U, F>>(*g, rx, in_ch, tx, out, fn, order, threads);
      };
      return {g, out};
    }
  }

  template <detail::route_kind K, class T, class Key>
  std::vector<stream<T>> route(stream<T> in, std::size_t n, const char* what, Key key) {
    check_input(in);
    if (n == 0) throw std::invalid_argument(std::string("sluice::graph::") + what + ": n must be at least 1");
    const std::string name = core_->unique_name(core_->producer_name(in.channel_) + "." + what);
    const std::size_t capacity = capacity_of(in);
    stage_options o;
    o.capacity = capacity;
    check_stage<int>(name, o);
    const std::size_t id = core_->add_node(new_node(name, o));
    receiver<T> rx = take_input(in, id);
    std::vector<sender<T>> txs;
    std::vector<std::size_t> chs;
    std::vector<stream<T>> outs;
    for (std::size_t i = 0; i < n; ++i) {
      auto [out, tx] = make_output<T>(id, capacity);
      txs.push_back(std::move(tx));
      chs.push_back(out);
      outs.push_back(stream<T>(core_.get(), out));
    }
    detail::graph_core* g = core_.get();
    const std::size_t in_ch = in.channel_;
    core_->node(id).factory = [g, rx = std::move(rx), in_ch, txs = std::move(txs), chs,
                               key = std::move(key)](std::size_t) -> std::unique_ptr<detail::replica_task> {
      return std::make_unique<detail::route_task<K, T, Key>>(*g, rx, in_ch, txs, chs, key);
    };
    return outs;
  }

  friend struct detail::graph_access;
  std::unique_ptr<detail::graph_core> core_;
};

// From inside a running stage function (on its thread): shows a channel that lives outside
// this process, such as a jetstream:<stream> edge, in the graph's snapshots, so that the
// bottleneck and the shares see across the cut. `pushes`: this stage feeds the channel
// (it is the channel's `from`); otherwise it takes from it (`to`). snapshot() calls `read`
// on any thread until the graph is destroyed: it must be cheap and thread safe (return a
// cached value). A second call with the same name replaces the first (a restarted stage).
// Returns false, doing nothing, when not called on a stage thread. (A fused stage's call
// registers the channel for the stage that owns the thread.) The accounting identity does
// not apply to such a channel (metrics::channel_snapshot::external).
namespace this_stage {
bool add_external_channel(std::string name, bool pushes, std::function<metrics::external_channel_reading()> read);
}  // namespace this_stage

namespace detail {
struct graph_access {
  static graph_core& core(graph& g) noexcept { return *g.core_; }
};
}  // namespace detail

}  // namespace sluice
