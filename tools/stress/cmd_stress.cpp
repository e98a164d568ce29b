// tools/stress/cmd_stress.cpp — `sluice stress`: random graphs, random slow and stuck stages,
// under sluice::testing's stress engine (sluice/testing.hpp: one injector, one oracle,
// the same as users run on their own graphs); seeded and reproducible.
//
// Each run draws a graph from its own seed (derived from --seed and the run number):
//
//   source -> pre stages -> [ broadcast | round_robin | partition -> branches -> merge ] -> post stages -> sink
//
// with random capacities, replicas (ordered or not), filters, slow stages, a stage that
// is stuck for a while (sometimes past the deadline), one stage under error policy skip
// or restart, and sometimes a sink that finishes early. Items carry their source index
// and a padding of random size, so that memory is worth measuring. The run itself is
// sluice::testing::run_one with the run's seed: delays and injected_fault at the graph's
// pushes and pops, at most one cancel() or request_stop().
//
// Checks per run:
//   engine    everything sluice::testing checks (sluice/testing.hpp): ended within the
//             deadline of its last fault (a stage holding it up is named), what run()
//             threw, no injected fault swallowed, pushed == popped + discarded on every
//             channel, cleanup once per replica and stage, no thread left behind. The
//             injected stuck stage, when stuck past the deadline, must be what it names.
//   data      exactly once: delivered + what every dead letter would have delivered ==
//             what the produced items should deliver (computed from the graph's filters
//             and fan-outs). A normal return without a stop delivers everything (early
//             finish: the count the sink asked for).
//   memory    peak RSS growth stays under 2 x (sum of channel capacities x item size) plus
//             a fixed allowance for thread stacks and the allocator.
// A violation prints the run's seed and graph; --replay SEED runs that one again.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/args.hpp"
#include "commands.hpp"
#include "common/progress.hpp"
#include "sluice/graph.hpp"
#include "sluice/testing.hpp"
#include "common/sys.hpp"
#include "sluice/detail/ticker.hpp"

namespace sluice::tool {
namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

#if defined(SLUICE_SANITIZER_BUILD)
constexpr int kSlow = 4;  // sanitizer builds: more slack for time and memory
#else
constexpr int kSlow = 1;
#endif

// The engine's deadline (and the graphs' teardown deadline). A graceful stop drains what is
// buffered through slow stages, and on a 2-core machine shared with a parallel ctest a
// wake-up can wait for a time slice: 200 ms was seen exceeded by sound runs under load.
constexpr std::chrono::milliseconds kTeardownDeadline = 500ms * kSlow;

// What the engine injects (sluice::testing::stress_options).
testing::stress_options engine_options() {
  testing::stress_options o;
  o.fail_probability = 0.002;
  o.delay_probability = 0.01;
  o.max_delay = 500us;
  o.cancel_probability = 0.2;
  o.stop_probability = 0.2;
  o.deadline = kTeardownDeadline;
  return o;
}

// ---- the item -----------------------------------------------------------------

struct stress_item {
  std::uint64_t v = 0;
  std::string pad;
};

// ---- the random graph ---------------------------------------------------------

enum class fan_kind { none, broadcast, round_robin, partition };
enum class fault_policy { stop, skip, restart };
enum class control_kind { none, cancel, request_stop, early_finish };

struct stage_spec {
  std::string name;
  bool filter = false;
  std::uint64_t modulus = 0;  // filter keeps v % modulus != 0
  std::size_t capacity = 16;
  std::size_t replicas = 1;
  bool ordered = true;
  // slow: sleep slow_sleep every slow_every items (this replica's count)
  std::uint64_t slow_every = 0;
  std::chrono::microseconds slow_sleep{0};
};

struct stuck_spec {
  int stage = -1;  // index into graph_spec::stages, -1: none
  std::uint64_t at = 0;
  std::chrono::milliseconds for_{0};
};

// One stage under a policy other than stop (what the engine's faults there then do).
struct fault_spec {
  int stage = -1;  // -1: none
  std::uint64_t at = 0;  // unused (drawn to keep the seed's graphs as they were)
  fault_policy policy = fault_policy::stop;
};

struct control_spec {
  control_kind kind = control_kind::none;
  std::chrono::microseconds after{0};  // cancel / request_stop delay from start
  std::uint64_t early_after = 0;       // sink returns false on this call (1-based)
};

struct graph_spec {
  std::uint64_t seed = 0;
  std::uint64_t items = 0;
  std::size_t pad = 0;
  std::size_t source_capacity = 16;
  std::vector<stage_spec> stages;  // all worker stages; the lists below index into it
  std::vector<int> pre;
  fan_kind fan = fan_kind::none;
  std::vector<std::vector<int>> branches;
  std::vector<int> post;
  std::uint64_t sink_slow_every = 0;
  std::chrono::microseconds sink_slow_sleep{0};
  stuck_spec stuck;
  fault_spec fault;
  control_spec control;
};

const char* fan_name(fan_kind f) {
  switch (f) {
    case fan_kind::none: return "none";
    case fan_kind::broadcast: return "broadcast";
    case fan_kind::round_robin: return "round_robin";
    case fan_kind::partition: return "partition";
  }
  return "?";
}

// Which fan-out shapes a session may draw (--fan); all by default.
struct shape_filter {
  bool allowed[4] = {true, true, true, true};  // indexed by fan_kind
  [[nodiscard]] bool all() const { return allowed[0] && allowed[1] && allowed[2] && allowed[3]; }
  [[nodiscard]] std::string text() const {
    std::string t;
    for (int i = 0; i < 4; ++i) {
      if (!allowed[i]) continue;
      if (!t.empty()) t += ',';
      t += i == 0 ? "none" : i == 1 ? "broadcast" : i == 2 ? "round_robin" : "partition";
    }
    return t;
  }
};

graph_spec make_spec(std::uint64_t seed, const shape_filter& shapes) {
  std::mt19937_64 rng(seed);
  auto uni = [&](std::uint64_t lo, std::uint64_t hi) { return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  auto capacity = [&]() -> std::size_t {
    static constexpr std::size_t kCaps[] = {1, 2, 4, 8, 16, 64, 128};
    return kCaps[uni(0, 6)];
  };

  graph_spec g;
  g.seed = seed;
  g.items = uni(1, 4000);
  g.pad = chance(0.5) ? uni(0, 4096) : uni(0, 64);
  g.source_capacity = capacity();
  auto add_stage = [&](const std::string& name, bool allow_filter) {
    stage_spec s;
    s.name = name;
    s.filter = allow_filter && chance(0.25);
    s.modulus = s.filter ? uni(2, 5) : 0;
    s.capacity = capacity();
    s.replicas = chance(0.3) ? uni(2, 4) : 1;
    s.ordered = chance(0.5);
    if (chance(0.15)) {
      s.slow_every = uni(20, 200);
      s.slow_sleep = std::chrono::microseconds(uni(100, 2000));
    }
    g.stages.push_back(s);
    return static_cast<int>(g.stages.size() - 1);
  };
  const std::uint64_t n_pre = uni(0, 3);
  for (std::uint64_t i = 0; i < n_pre; ++i) g.pre.push_back(add_stage("pre-" + std::to_string(i + 1), true));
  fan_kind fan = chance(0.5) ? static_cast<fan_kind>(uni(1, 3)) : fan_kind::none;
  if (!shapes.allowed[static_cast<int>(fan)]) {
    // Redraw from the allowed shapes with a side generator, so that the main stream (and
    // with it the rest of the graph) stays what the seed gives.
    std::mt19937_64 side(seed ^ 0x5bd1e995ULL);
    std::vector<fan_kind> ok;
    for (int i = 0; i < 4; ++i)
      if (shapes.allowed[i]) ok.push_back(static_cast<fan_kind>(i));
    fan = ok[std::uniform_int_distribution<std::size_t>(0, ok.size() - 1)(side)];
  }
  if (fan != fan_kind::none) {
    g.fan = fan;
    const std::uint64_t n = uni(2, 3);
    for (std::uint64_t b = 0; b < n; ++b) {
      std::vector<int> branch;
      const std::uint64_t len = uni(1, 2);
      for (std::uint64_t i = 0; i < len; ++i) {
        // round_robin sends an item to whichever branch is next: no filters there, so
        // what an item delivers does not depend on its branch.
        branch.push_back(add_stage("b" + std::to_string(b + 1) + "-" + std::to_string(i + 1),
                                   g.fan != fan_kind::round_robin));
      }
      g.branches.push_back(branch);
    }
  }
  const std::uint64_t n_post = uni(0, 2);
  for (std::uint64_t i = 0; i < n_post; ++i) g.post.push_back(add_stage("post-" + std::to_string(i + 1), true));
  if (chance(0.1)) {
    g.sink_slow_every = uni(20, 200);
    g.sink_slow_sleep = std::chrono::microseconds(uni(100, 1000));
  }

  const auto n_stages = static_cast<std::uint64_t>(g.stages.size());
  if (n_stages > 0 && chance(0.2)) {
    g.stuck.stage = static_cast<int>(uni(0, n_stages - 1));
    g.stuck.at = uni(0, g.items - 1);
    // Usually a short hang; sometimes past the teardown deadline (which names the stage),
    // but shorter than the three deadlines after which the engine abandons a run.
    g.stuck.for_ = chance(0.25) ? std::chrono::milliseconds(3 * kTeardownDeadline.count() / 2)
                                : std::chrono::milliseconds(uni(5, 50));
  }
  if (n_stages > 0 && chance(0.5)) {
    g.fault.stage = static_cast<int>(uni(0, n_stages - 1));
    g.fault.at = uni(0, g.items - 1);
    const std::uint64_t p = uni(0, 3);
    g.fault.policy = p <= 1 ? fault_policy::stop : p == 2 ? fault_policy::skip : fault_policy::restart;
  }
  const std::uint64_t c = uni(0, 9);
  if (c <= 7) {
    g.control.kind = control_kind::none;  // cancel() and request_stop() are the engine's now
  } else {
    g.control.kind = control_kind::early_finish;
    g.control.early_after = uni(1, std::max<std::uint64_t>(1, g.items / 2));
  }
  g.control.after = std::chrono::microseconds(uni(0, 20000));
  if (g.stuck.stage >= 0 && g.stuck.for_ > kTeardownDeadline) {
    // A stage stuck past the deadline: get stuck early, so that the engine has to name it.
    g.stuck.at = uni(0, std::min<std::uint64_t>(g.items - 1, 8));
  }
  return g;
}

std::string describe(const graph_spec& g) {
  auto stage_text = [&](int i) {
    const stage_spec& s = g.stages[static_cast<std::size_t>(i)];
    std::string t = s.name + ":" + (s.filter ? "filter(%" + std::to_string(s.modulus) + ")" : std::string("map")) +
                    "(cap=" + std::to_string(s.capacity);
    if (s.replicas > 1) t += ",x" + std::to_string(s.replicas) + (s.ordered ? " ordered" : " unordered");
    if (s.slow_every) t += ",slow " + std::to_string(s.slow_sleep.count()) + "us/" + std::to_string(s.slow_every);
    return t + ")";
  };
  std::string t = "items=" + std::to_string(g.items) + " pad=" + std::to_string(g.pad) + "B  source(cap=" +
                  std::to_string(g.source_capacity) + ")";
  for (int i : g.pre) t += " -> " + stage_text(i);
  if (g.fan != fan_kind::none) {
    t += std::string(" -> ") + fan_name(g.fan) + "[";
    for (std::size_t b = 0; b < g.branches.size(); ++b) {
      if (b) t += " | ";
      for (std::size_t k = 0; k < g.branches[b].size(); ++k) t += (k ? " -> " : "") + stage_text(g.branches[b][k]);
    }
    t += "] -> merge";
  }
  for (int i : g.post) t += " -> " + stage_text(i);
  t += " -> sink";
  if (g.sink_slow_every) t += "(slow " + std::to_string(g.sink_slow_sleep.count()) + "us/" + std::to_string(g.sink_slow_every) + ")";
  if (g.stuck.stage >= 0) {
    t += "\n    stuck: " + g.stages[static_cast<std::size_t>(g.stuck.stage)].name + " at v=" + std::to_string(g.stuck.at) +
         " for " + std::to_string(g.stuck.for_.count()) + "ms";
  }
  if (g.fault.stage >= 0) {
    static const char* kPol[] = {"stop", "skip", "restart"};
    t += "\n    policy: " + g.stages[static_cast<std::size_t>(g.fault.stage)].name + " under " +
         kPol[static_cast<int>(g.fault.policy)];
  }
  switch (g.control.kind) {
    case control_kind::none: break;
    case control_kind::cancel: t += "\n    control: cancel() after " + std::to_string(g.control.after.count()) + "us"; break;
    case control_kind::request_stop:
      t += "\n    control: request_stop() after " + std::to_string(g.control.after.count()) + "us";
      break;
    case control_kind::early_finish:
      t += "\n    control: sink returns false on item " + std::to_string(g.control.early_after);
      break;
  }
  return t;
}

// ---- what a value should deliver ------------------------------------------------

bool passes(const stage_spec& s, std::uint64_t v) { return !s.filter || v % s.modulus != 0; }

// Where an item is: at the input of one of these (deliveries counted from there on).
struct position {
  enum kind { stage, fan, merge, sink } what;
  int stage_index = -1;  // for `stage`
};

std::uint64_t deliveries_from(const graph_spec& g, position p, std::uint64_t v);

// Deliveries of v entering the list `seq` at index `k`, then `then`.
std::uint64_t through_list(const graph_spec& g, const std::vector<int>& seq, std::size_t k, std::uint64_t v,
                           const std::function<std::uint64_t()>& then) {
  for (std::size_t i = k; i < seq.size(); ++i) {
    if (!passes(g.stages[static_cast<std::size_t>(seq[i])], v)) return 0;
  }
  return then();
}

std::uint64_t after_merge(const graph_spec& g, std::uint64_t v) {
  return through_list(g, g.post, 0, v, [] { return std::uint64_t{1}; });
}

std::uint64_t after_fan(const graph_spec& g, std::uint64_t v) {
  switch (g.fan) {
    case fan_kind::none: return after_merge(g, v);
    case fan_kind::broadcast: {
      std::uint64_t n = 0;
      for (const auto& b : g.branches) n += through_list(g, b, 0, v, [&] { return after_merge(g, v); });
      return n;
    }
    case fan_kind::round_robin: return through_list(g, g.branches[0], 0, v, [&] { return after_merge(g, v); });
    case fan_kind::partition: {
      const std::size_t b = std::hash<std::uint64_t>{}(v) % g.branches.size();
      return through_list(g, g.branches[b], 0, v, [&] { return after_merge(g, v); });
    }
  }
  return 0;
}

// Finds where stage `i` is: the list it is in and its index there, and what follows the list.
std::uint64_t deliveries_from(const graph_spec& g, position p, std::uint64_t v) {
  switch (p.what) {
    case position::sink: return 1;
    case position::merge: return after_merge(g, v);
    case position::fan: return after_fan(g, v);
    case position::stage: break;
  }
  const int i = p.stage_index;
  for (std::size_t k = 0; k < g.pre.size(); ++k) {
    if (g.pre[k] == i) return through_list(g, g.pre, k, v, [&] { return after_fan(g, v); });
  }
  for (const auto& b : g.branches) {
    for (std::size_t k = 0; k < b.size(); ++k) {
      if (b[k] == i) return through_list(g, b, k, v, [&] { return after_merge(g, v); });
    }
  }
  for (std::size_t k = 0; k < g.post.size(); ++k) {
    if (g.post[k] == i) return through_list(g, g.post, k, v, [] { return std::uint64_t{1}; });
  }
  return 0;
}

std::uint64_t deliveries_of(const graph_spec& g, std::uint64_t v) {
  return through_list(g, g.pre, 0, v, [&] { return after_fan(g, v); });
}

// ---- one run --------------------------------------------------------------------

struct run_outcome {
  std::vector<std::string> violations;
  double seconds = 0;
  std::string outcome;      // "ok" | "stage_error" | "cancelled" | ...
  bool stuck_named = false;  // the report named a stuck stage
  bool early = false;        // the sink finished early
};

// Samples RSS every 2 ms while alive; keeps the peak.
class rss_watch {
 public:
  rss_watch() : peak_(rss_bytes()), ticker_(sluice::detail::tick_every(2ms, [this] { sample(); }, "stress-rss")) {}
  rss_watch(const rss_watch&) = delete;
  rss_watch& operator=(const rss_watch&) = delete;
  // Stops sampling; the peak, with one last sample.
  std::uint64_t stop() {
    ticker_.stop();  // joins: the ticker's writes to peak_ happen before what follows
    sample();
    return peak_;
  }

 private:
  void sample() { peak_ = std::max(peak_, rss_bytes()); }
  std::uint64_t peak_;     // the ticker's until stop()
  sluice::detail::ticker ticker_;  // last: started after peak_ is set
};

// Shared state the stage functions report into (they outlive restarts and replicas).
struct run_state {
  std::atomic<bool> stuck_fired{false};
  std::atomic<std::uint64_t> produced{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> sink_calls{0};
  std::mutex dead_mu;
  std::vector<std::pair<std::string, std::uint64_t>> dead;  // channel, v
  std::vector<std::pair<std::string, std::uint64_t>> failed;  // dead letters with an error: stage, v
};

// Builds the spec's graph on g (called by the engine, once per run).
void build_graph(graph& g, const graph_spec& spec_in, const std::shared_ptr<run_state>& st) {
  // The stage functions share one copy of the spec: a run the engine abandons (a stage
  // that never returned) keeps reading it after run_one() has moved on to the next spec.
  const auto held = std::make_shared<const graph_spec>(spec_in);
  const graph_spec& spec = *held;
  const std::string pad(spec.pad, 'p');
  auto src = g.source<stress_item>(
      "source",
      [st, held, &spec = *held, pad](sender<stress_item>& tx, std::stop_token stop) {
        for (std::uint64_t v = 0; v < spec.items; ++v) {
          if (stop.stop_requested()) return;
          if (!tx.push(stress_item{v, pad})) return;
          st->produced.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after the join
        }
      },
      stage_options{.capacity = spec.source_capacity});

  // The stage function: slow and stuck behaviour keyed by the item's value.
  auto behaviour = [st, held](int index) {
    const stage_spec& s = held->stages[static_cast<std::size_t>(index)];
    struct fn_state {
      std::uint64_t seen = 0;
    };
    return [st, held, &spec = *held, index, s, local = fn_state{}](const stress_item& it) mutable {
      if (s.slow_every && ++local.seen % s.slow_every == 0) std::this_thread::sleep_for(s.slow_sleep);
      if (spec.stuck.stage == index && it.v == spec.stuck.at && !st->stuck_fired.exchange(true)) {
        std::this_thread::sleep_for(spec.stuck.for_);  // ignores the stop token on purpose
      }
      return passes(s, it.v);
    };
  };
  auto add = [&](int index, stream<stress_item> in) -> stream<stress_item> {
    const stage_spec& s = spec.stages[static_cast<std::size_t>(index)];
    stage_options o;
    o.capacity = s.capacity;
    o.replicas = s.replicas;
    o.ordered = s.ordered;
    if (spec.fault.stage == index) {
      if (spec.fault.policy == fault_policy::skip) o.on_error = error_policy::skip;
      if (spec.fault.policy == fault_policy::restart) o.on_error = restart{.max = 2, .within = 10s, .backoff = 1ms};
    }
    auto fn = behaviour(index);
    if (s.filter) return g.filter(s.name, in, [fn](const stress_item& it) mutable { return fn(it); }, o);
    return g.map(s.name, in, [fn](stress_item it) mutable {
      (void)fn(it);
      return it;
    }, o);
  };

  stream<stress_item> cur = src;
  for (int i : spec.pre) cur = add(i, cur);
  if (spec.fan != fan_kind::none) {
    const std::size_t n = spec.branches.size();
    std::vector<stream<stress_item>> outs;
    if (spec.fan == fan_kind::broadcast) {
      outs = g.broadcast(cur, n);
    } else if (spec.fan == fan_kind::round_robin) {
      outs = g.round_robin(cur, n);
    } else {
      outs = g.partition(cur, n, [](const stress_item& it) { return it.v; });
    }
    for (std::size_t b = 0; b < n; ++b) {
      for (int i : spec.branches[b]) outs[b] = add(i, outs[b]);
    }
    cur = g.merge(std::move(outs));
  }
  for (int i : spec.post) cur = add(i, cur);
  g.sink("sink", cur, [st, held, &spec = *held, seen = std::uint64_t{0}](stress_item) mutable {
    if (spec.sink_slow_every && ++seen % spec.sink_slow_every == 0) std::this_thread::sleep_for(spec.sink_slow_sleep);
    st->delivered.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after the join
    const std::uint64_t call = st->sink_calls.fetch_add(1, std::memory_order_relaxed) + 1;
    return !(spec.control.kind == control_kind::early_finish && call == spec.control.early_after);
  });
}

run_outcome run_one(const graph_spec& spec, const testing::stress_options& engine) {
  run_outcome out;
  auto violation = [&](std::string what) { out.violations.push_back(std::move(what)); };

  return_free_memory();
  const std::uint64_t rss_before = rss_bytes();
  auto st = std::make_shared<run_state>();

  graph_options go;
  go.on_discard = [st](const dead_letter& d) {
    std::lock_guard lk(st->dead_mu);
    const stress_item* it = d.get<stress_item>();
    st->dead.emplace_back(std::string(d.channel()), it ? it->v : ~std::uint64_t{0});
    if (d.error()) st->failed.emplace_back(std::string(d.stage()), it ? it->v : ~std::uint64_t{0});
  };
  const std::string injected_stuck = spec.stuck.stage >= 0 && spec.stuck.for_ > kTeardownDeadline
                                         ? spec.stages[static_cast<std::size_t>(spec.stuck.stage)].name
                                         : std::string();
  std::optional<rss_watch> mem;
  mem.emplace();  // its thread exists before the engine's baseline and after its count
  const auto t0 = clock::now();
  testing::run_result res = testing::run_one([&](graph& g) { build_graph(g, spec, st); }, spec.seed, engine, go);
  out.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  const std::uint64_t rss_peak = mem->stop();
  mem.reset();

  std::string outcome = "ok";
  if (res.error) {
    try {
      std::rethrow_exception(res.error);
    } catch (const stage_error&) {
      outcome = "stage_error";
    } catch (const cancelled&) {
      outcome = "cancelled";
    } catch (const std::exception& e) {
      outcome = std::string("unexpected exception: ") + e.what();
    }
  }
  out.outcome = outcome;
  out.stuck_named = !res.stuck.empty();
  out.early = spec.control.kind == control_kind::early_finish && st->sink_calls.load() == spec.control.early_after;

  // ---- the engine's checks (the injected stuck stage may be named: that is its job) ----
  bool stuck_named = false;
  for (const auto& v : res.violations) {
    if (!injected_stuck.empty() && v.stage == injected_stuck) {
      stuck_named = true;
      continue;
    }
    violation((v.stage.empty() ? std::string() : "stage '" + v.stage + "': ") + v.what);
  }
  (void)stuck_named;
  if (res.abandoned) return out;  // its graph is still running: nothing more to read

  // ---- exactly once: delivered + dead letters' deliveries == expected ----
  if (!st->failed.empty()) {
    violation(std::to_string(st->failed.size()) + " dead letters carry an error but no stage function threw");
  }
  const std::uint64_t produced = st->produced.load();
  std::uint64_t expected = 0;
  for (std::uint64_t v = 0; v < produced; ++v) expected += deliveries_of(spec, v);
  std::uint64_t dead_value = 0;
  std::size_t unknown_dead = 0;
  for (const auto& [channel, v] : st->dead) {
    const metrics::channel_snapshot* ch = nullptr;
    for (const auto& c : res.report.metrics.channels)
      if (c.name == channel) ch = &c;
    if (ch == nullptr || v == ~std::uint64_t{0}) {
      ++unknown_dead;
      continue;
    }
    // What the item would have delivered from the channel's consumer on.
    int consumer = -1;
    for (std::size_t i = 0; i < spec.stages.size(); ++i)
      if (spec.stages[i].name == ch->to) consumer = static_cast<int>(i);
    if (ch->to == "sink") {
      dead_value += 1;
    } else if (consumer >= 0) {
      dead_value += deliveries_from(spec, {position::stage, consumer}, v);
    } else {
      // An internal stage: the fan-out (fed by the last pre stage or the source) or
      // the merge (fed by a branch's last stage).
      bool from_branch_end = false;
      for (const auto& b : spec.branches)
        if (!b.empty() && spec.stages[static_cast<std::size_t>(b.back())].name == ch->from) from_branch_end = true;
      dead_value += from_branch_end ? after_merge(spec, v) : after_fan(spec, v);
    }
  }
  if (unknown_dead) violation(std::to_string(unknown_dead) + " dead letters from unknown channels or of another type");
  const std::uint64_t delivered = st->delivered.load();
  const std::uint64_t accounted = delivered + dead_value;
  if (accounted != expected) {
    violation("exactly-once: " + std::to_string(produced) + " produced should deliver " + std::to_string(expected) +
              ", but delivered " + std::to_string(delivered) + " + dead letters worth " + std::to_string(dead_value) +
              " = " + std::to_string(accounted));
  }
  if (outcome == "ok" && !res.stopped) {
    if (spec.control.kind == control_kind::early_finish && expected >= spec.control.early_after) {
      if (delivered != spec.control.early_after) {
        violation("the sink finished early after " + std::to_string(spec.control.early_after) + " items but " +
                  std::to_string(delivered) + " were delivered");
      }
    } else if (delivered != expected) {
      violation("normal return delivered " + std::to_string(delivered) + " of " + std::to_string(expected));
    }
    if (produced != spec.items && spec.control.kind != control_kind::early_finish) {
      violation("normal return but the source produced " + std::to_string(produced) + " of " + std::to_string(spec.items));
    }
  }

  // Memory: 2 x (sum of capacities x item size) + allowance. Channels of routing stages
  // take their input's capacity.
  std::uint64_t slots = spec.source_capacity;
  for (const auto& s : spec.stages) slots += s.capacity * (s.replicas > 1 ? 2 : 1);
  if (spec.fan != fan_kind::none) {
    const std::size_t in_cap = spec.pre.empty() ? spec.source_capacity : spec.stages[static_cast<std::size_t>(spec.pre.back())].capacity;
    slots += in_cap * (spec.branches.size() + 1);
  }
  const std::uint64_t item_bytes = sizeof(stress_item) + spec.pad + 64;
  const std::uint64_t budget = 2 * slots * item_bytes;
  const std::uint64_t allowance = (32ULL << 20) * static_cast<std::uint64_t>(kSlow);
  const std::uint64_t grew = rss_peak > rss_before ? rss_peak - rss_before : 0;
  if (grew > budget + allowance) {
    violation("memory grew " + format_size(static_cast<double>(grew)) + ", over 2 x channel budgets (" +
              format_size(static_cast<double>(budget)) + ") + " + format_size(static_cast<double>(allowance)));
  }
  return out;
}

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool parse_seed(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  std::string t(s);
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(t.c_str(), &end, 0);
  if (errno != 0 || end == t.c_str() || *end != '\0' || t[0] == '-') return false;
  out = v;
  return true;
}

// Kills the process with the seed and graph if one run hangs: never hang silently.
// A ticker looks at the armed deadline four times a second.
class hang_guard {
 public:
  explicit hang_guard(std::chrono::seconds limit)
      : limit_(limit), ticker_(sluice::detail::tick_every(250ms, [this] { check(); }, "stress-hang")) {}
  hang_guard(const hang_guard&) = delete;
  hang_guard& operator=(const hang_guard&) = delete;
  void arm(std::string what) {
    std::lock_guard lk(mu_);
    what_ = std::move(what);
    deadline_ = clock::now() + limit_;
    armed_ = true;
  }
  void disarm() {
    std::lock_guard lk(mu_);
    armed_ = false;
  }

 private:
  void check() {
    std::lock_guard lk(mu_);
    if (!armed_ || clock::now() < deadline_) return;
    std::fprintf(stderr, "sluice stress: VIOLATION: a run did not finish within %llds (hang)\n%s\n",
                 static_cast<long long>(limit_.count()), what_.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }
  std::chrono::seconds limit_;
  std::mutex mu_;
  bool armed_ = false;           // guarded by mu_
  std::string what_;             // guarded by mu_
  clock::time_point deadline_{};  // guarded by mu_
  sluice::detail::ticker ticker_;        // last: started after every other member is built
};

}  // namespace

int cmd_stress(int argc, char** argv) {
  std::uint64_t seed = 0;
  bool seed_given = false;
  std::uint64_t runs = 100;
  std::chrono::nanoseconds duration{0};
  std::optional<std::uint64_t> replay;
  bool verbose = false;
  shape_filter shapes;
  arg_parser p("sluice stress",
               "Random graphs with slow and stuck stages under sluice::testing's fault injection (delays\n"
               "and injected faults at every push and pop, a random cancel / request_stop), each checked\n"
               "by its oracle (teardown time, outcome, accounting, cleanup, leaked threads) and for\n"
               "exactly-once delivery and memory. Seeded: a violation prints the run's seed; --replay\n"
               "SEED reruns it.");
  p.custom("--seed", "SEED", "seed of the whole session, decimal or 0x hex (default: from the clock)", "",
           [&](std::string_view v) {
             seed_given = true;
             return parse_seed(v, seed);
           },
           "a number (decimal or 0x hex)");
  p.count("--runs", &runs, "how many random graphs to run");
  p.duration("--duration", &duration, "stop starting new runs after this long (0: no limit)");
  p.custom("--replay", "SEED", "run only the graph with this run seed (printed on a violation)", "",
           [&](std::string_view v) {
             std::uint64_t s = 0;
             if (!parse_seed(v, s)) return false;
             replay = s;
             return true;
           },
           "a run seed as printed (decimal or 0x hex)");
  p.custom("--fan", "LIST", "fan-out shapes to draw: any of none,broadcast,round_robin,partition", "all",
           [&](std::string_view v) {
             shape_filter f;
             for (bool& a : f.allowed) a = false;
             while (!v.empty()) {
               const std::size_t comma = v.find(',');
               const std::string_view w = v.substr(0, comma);
               if (w == "none") {
                 f.allowed[0] = true;
               } else if (w == "broadcast") {
                 f.allowed[1] = true;
               } else if (w == "round_robin") {
                 f.allowed[2] = true;
               } else if (w == "partition") {
                 f.allowed[3] = true;
               } else {
                 return false;
               }
               if (comma == std::string_view::npos) break;
               v.remove_prefix(comma + 1);
             }
             shapes = f;
             return f.allowed[0] || f.allowed[1] || f.allowed[2] || f.allowed[3];
           },
           "a comma list of none, broadcast, round_robin, partition");
  p.flag("--verbose", &verbose, "print every run's graph and result");
  if (!p.parse(argc, argv)) return 0;
  if (runs == 0 && !replay) p.bad("--runs", "0", "at least 1");
  if (!seed_given) seed = static_cast<std::uint64_t>(clock::now().time_since_epoch().count());
  const testing::stress_options engine = engine_options();

  std::vector<std::uint64_t> run_seeds;
  if (replay) {
    run_seeds.push_back(*replay);
  } else {
    std::printf("sluice stress: seed %s, %llu runs%s\n", hex(seed).c_str(), static_cast<unsigned long long>(runs),
                duration.count() ? (", at most " + format_duration(duration)).c_str() : "");
    for (std::uint64_t i = 0; i < runs; ++i) run_seeds.push_back(mix(mix(seed) + i));
  }
  std::fflush(stdout);

  progress prog("stress");
  hang_guard guard(std::chrono::seconds(120 * kSlow));
  const auto t0 = clock::now();
  std::uint64_t done = 0, failed = 0;
  std::uint64_t n_ok = 0, n_error = 0, n_cancelled = 0, n_stuck = 0, n_early = 0;
  const std::string fan_arg = shapes.all() ? "" : " --fan " + shapes.text();
  for (std::size_t i = 0; i < run_seeds.size(); ++i) {
    if (duration.count() > 0 && clock::now() - t0 >= duration) break;
    const graph_spec spec = make_spec(run_seeds[i], shapes);
    const std::string text = describe(spec);
    guard.arm("  run " + std::to_string(i + 1) + " seed " + hex(spec.seed) + "\n    " + text +
              "\n  replay: sluice stress --replay " + hex(spec.seed) + fan_arg);
    const run_outcome r = run_one(spec, engine);
    guard.disarm();
    ++done;
    n_ok += r.outcome == "ok";
    n_error += r.outcome == "stage_error";
    n_cancelled += r.outcome == "cancelled";
    n_stuck += r.stuck_named;
    n_early += r.early;
    if (!r.violations.empty()) {
      ++failed;
      prog.clear();
      std::printf("VIOLATION in run %zu (seed %s):\n    %s\n", i + 1, hex(spec.seed).c_str(), text.c_str());
      for (const auto& v : r.violations) std::printf("  - %s\n", v.c_str());
      std::printf("  replay: sluice stress --replay %s%s\n", hex(spec.seed).c_str(), fan_arg.c_str());
      std::fflush(stdout);
    } else if (verbose || replay) {
      prog.clear();
      std::printf("run %zu (seed %s) ok in %.3f s:\n    %s\n", i + 1, hex(spec.seed).c_str(), r.seconds, text.c_str());
      std::fflush(stdout);
    }
    char line[160];
    std::snprintf(line, sizeof line, "run %llu/%zu  violations %llu  (%.1f s)", static_cast<unsigned long long>(done),
                  run_seeds.size(), static_cast<unsigned long long>(failed),
                  std::chrono::duration<double>(clock::now() - t0).count());
    prog.update(line);
  }
  prog.clear();
  std::printf("outcomes: %llu returned normally (%llu sinks finished early), %llu stage_error, %llu cancelled; "
              "%llu reports named a stuck stage\n",
              static_cast<unsigned long long>(n_ok), static_cast<unsigned long long>(n_early),
              static_cast<unsigned long long>(n_error), static_cast<unsigned long long>(n_cancelled),
              static_cast<unsigned long long>(n_stuck));
  std::printf("sluice stress: %llu runs, %llu with violations, %.1f s%s\n", static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(failed), std::chrono::duration<double>(clock::now() - t0).count(),
              failed ? "" : ": every run held");
  return failed == 0 ? 0 : 1;
}

}  // namespace sluice::tool
