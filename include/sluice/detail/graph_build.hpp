// sluice/detail/graph_build.hpp — the typed half of graph.hpp's builders: each call
// checks the options, adds a node to the graph_core, takes its input's receiver, makes
// its output channels and sets the factory that makes one stage task per thread at
// start(). A stream is passed as its graph (`owner`) and its channel id.
//
// Requires: called only by sluice::graph's builders, on the building thread, before
//   start().
// Guarantees: a call that throws leaves the graph unchanged: every check comes first,
//   and what fails after add_node (a channel or function that cannot be made) undoes the
//   node through node_guard. The stage's function is moved once into a shared prototype
//   (fn_source); each replica and each restart copies it (fn_slot).
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/graph_fuse.hpp"
#include "sluice/detail/graph_order.hpp"
#include "sluice/detail/graph_routing.hpp"
#include "sluice/detail/graph_stages.hpp"
#include "sluice/detail/graph_task.hpp"
#include "sluice/stage.hpp"

namespace sluice::detail {

// The most threads one stage may ask for (replicas) and the most branches one route may
// have: a count above it is a mistake (SIZE_MAX from an unsigned underflow, say), refused
// with a clear error instead of building that many tasks or channels until memory runs out.
// Linux gives a process about 32,000 threads by default; 65,536 leaves room for machines
// configured for more.
inline constexpr std::size_t kMaxReplicas = 65536;
inline constexpr std::size_t kMaxBranches = 65536;

// logic_error / invalid_argument for a name, capacity, replica count or policy the
// stage cannot have.
template <class F>
void check_stage(const graph_core& g, const std::string& name, const stage_options& o) {
  g.check_can_add(name);
  if (o.capacity == 0) {
    throw std::invalid_argument("sluice::graph: stage '" + name + "': capacity must be at least 1");
  }
  if (o.replicas == 0) {
    throw std::invalid_argument("sluice::graph: stage '" + name + "': replicas must be at least 1");
  }
  if (o.replicas > kMaxReplicas) {
    throw std::invalid_argument("sluice::graph: stage '" + name + "': replicas must be at most " +
                                std::to_string(kMaxReplicas) + " (got " + std::to_string(o.replicas) + ")");
  }
  if (o.on_error.what() == error_policy::kind::restart &&
      (o.on_error.limits().within <= std::chrono::steady_clock::duration::zero() ||
       o.on_error.limits().backoff < std::chrono::steady_clock::duration::zero())) {
    // A window of 0 never holds two restarts: the intensity limit would be off.
    throw std::invalid_argument("sluice::graph: stage '" + name +
                                "': restart needs a window (within) above 0 and a backoff of 0 or more");
  }
  if constexpr (!std::is_copy_constructible_v<F>) {
    if (o.replicas > 1 || o.on_error.what() == error_policy::kind::restart) {
      throw std::logic_error("sluice::graph: stage '" + name +
                             "': replicas > 1 and restart need a copy-constructible stage function");
    }
  }
}

inline node_spec make_spec(std::string name, const stage_options& o) {
  node_spec n;
  n.name = std::move(name);
  n.threads = o.replicas;
  n.replicas = o.replicas;
  n.policy = o.on_error;
  n.on_close = o.on_close;
  return n;
}

// Undoes the node being built unless commit() is reached: a builder that throws after
// add_node (out of memory, a capacity no channel can have, a function whose copy throws)
// leaves no half-made stage behind to hold its input, its name or fail start().
class node_guard {
 public:
  node_guard(graph_core& g, std::size_t node) noexcept : g_(g), node_(node) {}
  node_guard(const node_guard&) = delete;
  node_guard& operator=(const node_guard&) = delete;
  ~node_guard() {
    if (!done_) g_.abandon_node(node_);
  }
  void commit() noexcept {
    done_ = true;
    g_.commit_node(node_);
  }

 private:
  graph_core& g_;
  std::size_t node_;
  bool done_ = false;
};

// A consumer that is not fused gives the edge its ring now (make_output made it without).
enum class edge_use { buffered, fused };
template <class T>
receiver<T> take_input(graph_core& g, std::size_t channel, std::size_t consumer, edge_use use = edge_use::buffered) {
  auto p = std::static_pointer_cast<receiver<T>>(g.take_input(channel, consumer));
  if (use == edge_use::buffered) {
    try {
      g.edit_channel([&] { channel_access::make_storage(*p); });
    } catch (...) {
      g.rethrow_naming(g.producer_of(channel));  // its capacity: say which stage asked
    }
  }
  return *p;  // a copy: the graph keeps the receiver until commit_node (node_guard)
}

// Makes the output channel of node `producer`; returns its id and the stage's sender. Its
// ring is made when its consumer is added, unless that one is fused (take_input), or now
// (ring_now: an input's, which other threads may use while the graph is being built).
template <class T>
std::pair<std::size_t, sender<T>> make_output(graph_core& g, std::size_t producer, std::size_t capacity,
                                              bool ring_now = false) {
  // Checked here, where every stage's output is made: the errors from deep inside the
  // batching (std::vector<bool>'s proxies) did not say why (found by a probe).
  static_assert(!std::is_same_v<std::remove_cv_t<T>, bool>,
                "sluice::graph: bool items are not supported in a graph (its stages batch items in "
                "std::vector<T>, which packs bool into bits); wrap it (struct flag { bool on; }) or use char. "
                "A plain sluice::bounded<bool> channel works.");
  channel_options<T> co;
  co.capacity = capacity;
  if constexpr (channel_traits<T>::weighted) {
    co.weigh = [](const T& v) -> std::size_t { return channel_traits<T>::weigh(v); };
  }
  const std::size_t id = g.next_channel_id();
  if (g.has_discard_hook()) {
    co.on_discard = [gp = &g, id](T&& v) { gp->discard(id, typeid(T), std::addressof(v)); };
  }
  auto [tx, rx] = [&] {
    try {
      if (ring_now) return bounded<T>(std::move(co));
      return channel_access::bounded_ring_later<std::pair<sender<T>, receiver<T>>>(std::move(co));
    } catch (...) {
      g.rethrow_naming(producer);  // a capacity that cannot be had: say which stage asked
    }
  }();
  if (fault_hook* h = g.faults(); h != nullptr) [[unlikely]] {
    channel_access::set_fault_hook(tx, h);  // under sluice::testing::stress only
  }
  g.add_channel(producer, std::make_unique<typed_channel_control<T>>(tx),
                std::make_shared<receiver<T>>(std::move(rx)), channel_traits<T>::weighted);
  return {id, std::move(tx)};
}

// source: returns the output channel.
template <class T, class F>
std::size_t add_source(graph_core& g, std::string name, F f, const stage_options& o) {
  check_stage<F>(g, name, o);
  reject_fuse(o, name, "a source has no upstream");
  node_spec spec = make_spec(std::move(name), o);
  spec.is_source = true;
  spec.takes_stop = takes_stop_v<F, sender<T>&>;
  const std::size_t id = g.add_node(std::move(spec));
  node_guard added(g, id);
  auto [out, tx] = make_output<T>(g, id, o.capacity);
  auto fn = std::make_shared<fn_source<F>>(std::move(f));
  g.set_factory(id, [fn, tx = std::move(tx)](std::size_t) -> std::unique_ptr<replica_task> {
    return std::make_unique<source_task<T, F>>(tx, fn);
  });
  added.commit();
  return out;
}

// input: a node without a thread; returns the output channel and the inlet's sender.
template <class T>
std::pair<std::size_t, sender<T>> add_input(graph_core& g, std::string name, const stage_options& o) {
  check_stage<int>(g, name, o);
  reject_fuse(o, name, "an input has no upstream");
  // An input has no thread and no function: options about running one would be ignored,
  // so they are refused (a cleanup that never ran was silent).
  const char* moot = o.on_close     ? "on_close (an input runs no code: clean up after close() or wait())"
                     : o.replicas != 1 ? "replicas (an input has no thread; any number of threads may push to its inlet)"
                     : o.on_error.what() != error_policy::kind::stop
                         ? "on_error (an input runs no function that could fail)"
                         : nullptr;
  if (moot != nullptr) {
    throw std::invalid_argument("sluice::graph: input '" + name + "': " + moot + " does not apply to an input");
  }
  node_spec spec = make_spec(std::move(name), o);
  spec.is_input = true;
  spec.threads = 0;
  spec.replicas = 1;
  spec.on_close = nullptr;
  const std::size_t id = g.add_node(std::move(spec));
  node_guard added(g, id);
  auto made = make_output<T>(g, id, o.capacity, true);
  g.settle_input(id);
  added.commit();
  return made;
}

// stage<U> (with an output) or consume (U = void): the whole input stream at once.
// Returns the output channel (0 for consume).
template <class U, class T, class F>
std::size_t add_whole(graph_core& g, const graph_core* owner, std::size_t in_ch, std::string name, F f,
                      const stage_options& o) {
  check_stage<F>(g, name, o);
  reject_fuse(o, name, std::is_void_v<U> ? "consume() takes the whole input stream" : "stage() takes the whole input stream");
  g.check_input(owner, in_ch);
  const std::size_t id = g.add_node(make_spec(std::move(name), o));
  node_guard added(g, id);
  receiver<T> rx = take_input<T>(g, in_ch, id);
  auto fn = std::make_shared<fn_source<F>>(std::move(f));
  if constexpr (std::is_void_v<U>) {
    g.set_factory(id, [rx = std::move(rx), fn](std::size_t) -> std::unique_ptr<replica_task> {
      return std::make_unique<consume_task<T, F>>(rx, fn);
    });
    added.commit();
    return 0;
  } else {
    auto [out, tx] = make_output<U>(g, id, o.capacity);
    g.set_factory(id, [rx = std::move(rx), tx = std::move(tx), fn](std::size_t) -> std::unique_ptr<replica_task> {
      return std::make_unique<stage_task<T, U, F>>(rx, tx, fn);
    });
    added.commit();
    return out;
  }
}

// A fused map / filter / flat_map / sink (stage_options::fuse): no thread; the input
// channel becomes a direct one whose pushes run the stage on the upstream's thread(s).
// Returns the output channel (0 for a sink).
template <fuse_kind K, class T, class U, class F>
std::size_t add_fused(graph_core& g, const graph_core* owner, std::size_t in_ch, std::string name, F f,
                      const stage_options& o) {
  check_stage<F>(g, name, o);
  g.check_input(owner, in_ch);
  if (o.replicas != 1) {
    throw std::logic_error("sluice::graph: stage '" + name +
                           "' cannot be fused with replicas > 1 (it runs on its upstream's threads)");
  }
  const std::size_t host = g.fuse_host(in_ch, name);
  const std::size_t threads = g.node_threads(host);
  if constexpr (!std::is_copy_constructible_v<F>) {
    if (threads > 1) {
      throw std::logic_error("sluice::graph: stage '" + name +
                             "' is fused after a replicated stage: it needs a copy-constructible function");
    }
  }
  node_spec spec = make_spec(std::move(name), o);
  spec.threads = 0;
  spec.replicas = 1;
  spec.host = host;
  const std::size_t id = g.add_node(std::move(spec));
  node_guard added(g, id);
  receiver<T> rx = take_input<T>(g, in_ch, id, edge_use::fused);
  auto fn = std::make_shared<fn_source<F>>(std::move(f));
  std::size_t out = 0;
  std::shared_ptr<fused_stage<K, T, U, F>> st;
  if constexpr (K == fuse_kind::sink) {
    st = std::make_shared<fused_stage<K, T, U, F>>(g, g.fused_env(id), in_ch, 0, g.node_key(id), g.node_key(host),
                                                   threads, fn, 0, receiver<T>());
  } else {
    auto [o_ch, tx] = make_output<U>(g, id, o.capacity);
    out = o_ch;
    st = std::make_shared<fused_stage<K, T, U, F>>(g, g.fused_env(id), in_ch, out, g.node_key(id), g.node_key(host),
                                                   threads, fn, std::move(tx), receiver<T>());
  }
  g.edit_channel([&] { channel_access::make_direct(rx, std::shared_ptr<direct_target<T>>(st)); });
  st->hold_input(std::move(rx));
  g.set_fused(id, st);
  added.commit();
  return out;
}

// map / filter / sink: returns the output channel (0 for a sink).
template <item_kind K, class T, class U, class F>
std::size_t add_items(graph_core& g, const graph_core* owner, std::size_t in_ch, std::string name, F f,
                      const stage_options& o) {
  if (o.fuse) {
    constexpr fuse_kind kf = K == item_kind::map ? fuse_kind::map : K == item_kind::filter ? fuse_kind::filter : fuse_kind::sink;
    return add_fused<kf, T, U>(g, owner, in_ch, std::move(name), std::move(f), o);
  }
  check_stage<F>(g, name, o);
  g.check_input(owner, in_ch);
  const bool ordered = o.ordered && o.replicas > 1 && K != item_kind::sink;
  node_spec spec = make_spec(std::move(name), o);
  if (ordered) {
    spec.turn_wait = std::make_shared<wait_clock>();
    spec.window_wait = std::make_shared<wait_clock>();
  }
  std::shared_ptr<wait_clock> turns = spec.turn_wait;
  std::shared_ptr<wait_clock> window = spec.window_wait;
  const std::size_t id = g.add_node(std::move(spec));
  node_guard added(g, id);
  receiver<T> rx = take_input<T>(g, in_ch, id);
  auto fn = std::make_shared<fn_source<F>>(std::move(f));
  const std::size_t threads = o.replicas;
  if constexpr (K == item_kind::sink) {
    g.set_factory(id, [gp = &g, rx = std::move(rx), in_ch, fn, threads](std::size_t) -> std::unique_ptr<replica_task> {
      return std::make_unique<item_task<K, T, U, F>>(*gp, rx, in_ch, 0, 0, fn, nullptr, threads);
    });
    added.commit();
    return 0;
  } else {
    auto [out, tx] = make_output<U>(g, id, o.capacity);
    std::shared_ptr<reorder_window<U>> order;
    if (ordered) {
      order = std::make_shared<reorder_window<U>>(g, out, 2 * o.replicas, std::move(turns), std::move(window));
    }
    g.set_factory(id, [gp = &g, rx = std::move(rx), in_ch, tx = std::move(tx), out = out, fn, order,
                       threads](std::size_t) -> std::unique_ptr<replica_task> {
      return std::make_unique<item_task<K, T, U, F>>(*gp, rx, in_ch, tx, out, fn, order, threads);
    });
    added.commit();
    return out;
  }
}

// flat_map: returns the output channel.
template <class U, class T, class F>
std::size_t add_flat_map(graph_core& g, const graph_core* owner, std::size_t in_ch, std::string name, F f,
                         const stage_options& o) {
  if (o.fuse) return add_fused<fuse_kind::flat_map, T, U>(g, owner, in_ch, std::move(name), std::move(f), o);
  check_stage<F>(g, name, o);
  g.check_input(owner, in_ch);
  const bool ordered = o.ordered && o.replicas > 1;
  node_spec spec = make_spec(std::move(name), o);
  // Set once below, before any thread starts; read by snapshots.
  auto order = std::make_shared<std::shared_ptr<flat_map_order<U>>>();
  if (ordered) {
    spec.threads = o.replicas + 1;  // + the emitter
    spec.turn_wait = std::make_shared<wait_clock>();
    spec.window_wait = std::make_shared<wait_clock>();
    spec.private_push_ns = [order]() -> std::uint64_t { return *order ? (*order)->private_push_ns() : 0; };
  }
  std::shared_ptr<wait_clock> turns = spec.turn_wait;
  std::shared_ptr<wait_clock> window = spec.window_wait;
  const std::size_t id = g.add_node(std::move(spec));
  node_guard added(g, id);
  receiver<T> rx = take_input<T>(g, in_ch, id);
  auto [out, tx] = make_output<U>(g, id, o.capacity);
  auto fn = std::make_shared<fn_source<F>>(std::move(f));
  if (ordered) {
    *order = std::make_shared<flat_map_order<U>>(g, out, 2 * o.replicas, std::min<std::size_t>(o.capacity, 16 * kBatch),
                                                 std::move(turns), std::move(window));
    const std::size_t replicas = o.replicas;
    g.set_factory(id, [gp = &g, rx = std::move(rx), in_ch, tx = std::move(tx), fn, order = *order,
                       replicas](std::size_t i) -> std::unique_ptr<replica_task> {
      return std::make_unique<ordered_flat_map_task<T, U, F>>(*gp, rx, in_ch, tx, fn, order, i == replicas);
    });
  } else {
    const std::size_t threads = o.replicas;
    g.set_factory(id, [gp = &g, rx = std::move(rx), in_ch, tx = std::move(tx), fn,
                       threads](std::size_t) -> std::unique_ptr<replica_task> {
      return std::make_unique<flat_map_task<T, U, F>>(*gp, rx, in_ch, tx, fn, threads);
    });
  }
  added.commit();
  return out;
}

// broadcast / round_robin / partition: returns the n output channels.
template <route_kind K, class T, class Key>
std::vector<std::size_t> add_route(graph_core& g, const graph_core* owner, std::size_t in_ch, std::size_t n,
                                   const char* what, Key key) {
  g.check_input(owner, in_ch);
  if (n == 0) throw std::invalid_argument(std::string("sluice::graph::") + what + ": n must be at least 1");
  if (n > kMaxBranches) {
    throw std::invalid_argument(std::string("sluice::graph::") + what + ": n must be at most " +
                                std::to_string(kMaxBranches) + " (got " + std::to_string(n) + ")");
  }
  const std::string name = g.unique_name(g.producer_name(in_ch) + "." + what);
  const std::size_t capacity = g.channel_capacity(in_ch);
  stage_options o;
  o.capacity = capacity;
  check_stage<int>(g, name, o);
  const std::size_t id = g.add_node(make_spec(name, o));
  node_guard added(g, id);
  receiver<T> rx = take_input<T>(g, in_ch, id);
  std::vector<sender<T>> txs;
  std::vector<std::size_t> chs;
  for (std::size_t i = 0; i < n; ++i) {
    auto [out, tx] = make_output<T>(g, id, capacity);
    txs.push_back(std::move(tx));
    chs.push_back(out);
  }
  g.set_factory(id, [gp = &g, rx = std::move(rx), in_ch, txs = std::move(txs), chs,
                     key = std::move(key)](std::size_t) -> std::unique_ptr<replica_task> {
    return std::make_unique<route_task<K, T, Key>>(*gp, rx, in_ch, txs, chs, key);
  });
  added.commit();
  return chs;
}

// merge of the channels `ins` (streams of `owners`): returns the output channel.
template <class T>
std::size_t add_merge(graph_core& g, const std::vector<const graph_core*>& owners, const std::vector<std::size_t>& ins) {
  if (ins.empty()) throw std::invalid_argument("sluice::graph::merge: no streams to merge");
  // A merge runs a thread per input (its replicas): said here, in its own terms, not as
  // check_stage's "replicas must be at most", a count the caller never gave.
  if (ins.size() > kMaxReplicas) {
    throw std::invalid_argument("sluice::graph::merge: at most " + std::to_string(kMaxReplicas) +
                                " streams can be merged (got " + std::to_string(ins.size()) + ")");
  }
  // Named after its inputs' producers, "merge(a,b,c)", as far as kMergeNameChars go, then
  // "merge(a,b +398 more)": the name is in every input channel's name and labels, so a
  // full list made a merge of 400 inputs' /metrics 16 MB (a probe; it grew as N^2).
  constexpr std::size_t kMergeNameChars = 64;
  std::string name = "merge(";
  std::size_t listed = 0;
  for (std::size_t i = 0; i < ins.size(); ++i) {
    g.check_input(owners[i], ins[i]);
    for (std::size_t j = 0; j < i; ++j) {
      if (ins[j] == ins[i]) throw std::logic_error("sluice::graph::merge: the same stream is merged twice");
    }
    const std::string& producer = g.producer_name(ins[i]);
    if (listed == i && (i == 0 || name.size() + 1 + producer.size() <= kMergeNameChars)) {
      if (i != 0) name += ',';
      name += producer;
      ++listed;
    }
  }
  if (listed < ins.size()) name += " +" + std::to_string(ins.size() - listed) + " more";
  name = g.unique_name(name + ")");
  const std::size_t capacity = g.channel_capacity(ins.front());
  stage_options o;
  o.capacity = capacity;
  o.replicas = ins.size();
  check_stage<int>(g, name, o);
  const std::size_t id = g.add_node(make_spec(name, o));
  node_guard added(g, id);
  std::vector<receiver<T>> rxs;
  for (std::size_t ch : ins) rxs.push_back(take_input<T>(g, ch, id));
  auto [out, tx] = make_output<T>(g, id, capacity);
  g.set_factory(id, [gp = &g, rxs = std::move(rxs), tx = std::move(tx),
                     out = out](std::size_t i) -> std::unique_ptr<replica_task> {
    return std::make_unique<merge_task<T>>(*gp, rxs[i], tx, out);
  });
  added.commit();
  return out;
}

}  // namespace sluice::detail
