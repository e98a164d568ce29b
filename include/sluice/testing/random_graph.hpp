// sluice/testing/random_graph.hpp — random stage graphs drawn from a seed, and the
// exactly-once oracle that checks them: what `sluice stress` and
// tests/stress/graph_stress_test.cpp both run.
//
//   const auto spec = sluice::testing::draw_random_graph(seed, {.nested = true, .max_sources = 2});
//   auto book = std::make_shared<sluice::testing::ledger>(spec);
//   sluice::graph g({.on_discard = [book](const sluice::dead_letter& d) { book->discard<my_item>(d); }});
//   sluice::testing::build_random_graph<my_item>(g, spec, book);
//   g.run();
//   for (const auto& v : book->check(/*complete=*/true)) ADD_FAILURE() << v;
//
// The shape: sources -> [merge] -> segment -> sink, where a segment is a chain of stages,
// then optionally a fan-out (broadcast, round_robin or partition) into branches, each a
// segment of its own (nested only with .nested, at most three deep), joined by a merge,
// then more stages. Stages draw capacities, replicas (ordered or not), filters, slow
// items; one stage may be stuck for a while, one may run under error policy skip or
// restart (and, with fault.throws, throw from its function on its at-th call), and the
// sink may finish early.
//
// The oracle is a conserved weight: every source item carries kWeight, the first stage
// of each broadcast branch divides it by the fan-out (kWeight divides by every product of
// fan-outs a graph can draw), and every place an item can end adds its weight to the
// item's account: the sink, a filter that drops it, a dead letter (which channel it was
// in says whether its share was divided yet). check() then asks that each produced item's
// account is exactly kWeight — however the graph copied, routed, dropped or tore it down.
//
// Requires: Item is default constructible and has public members `std::uint64_t v`,
//   `std::uint64_t weight` and `std::string pad`; it is copyable (broadcast copies it).
//   A ledger is fed only by the graph build_random_graph built on it and by discard()
//   from that graph's on_discard.
// Guarantees: draw_random_graph is a function of (seed, options) alone, the same in every
//   build; with default options it draws what `sluice stress` always drew from a seed.
//   The stage functions share the spec and ledger by shared_ptr, so a graph that is
//   abandoned (never joined) keeps them alive.
// Non-guarantees: check() is meaningful only once every stage thread has ended.
// Lifetime: see Guarantees; a spec and a ledger are plain values otherwise.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"

namespace sluice::testing {

enum class fan_kind { none, broadcast, round_robin, partition };
enum class fault_policy { stop, skip, restart };
enum class control_kind { none, early_finish };

struct stage_spec {
  std::string name;
  bool filter = false;
  std::uint64_t modulus = 0;  // a filter keeps v % modulus != 0
  std::size_t capacity = 16;
  std::size_t replicas = 1;
  bool ordered = true;
  std::uint64_t slow_every = 0;  // sleep slow_sleep every slow_every items (per replica)
  std::chrono::microseconds slow_sleep{0};
  std::uint64_t divide = 1;  // the first stage of a broadcast branch: the weight's share
  bool fuse = false;         // stage_options::fuse: runs on its upstream's thread(s)
};

// A chain of stages, then optionally a fan-out into branches and their merge, then more.
struct segment {
  std::vector<int> pre;  // indices into random_graph::stages
  fan_kind fan = fan_kind::none;
  std::vector<segment> branches;
  std::vector<int> post;
};

struct stuck_spec {
  int stage = -1;  // index into stages, -1: none
  std::uint64_t at = 0;
  std::chrono::milliseconds for_{0};
};

// The one stage under a policy other than stop; with `throws`, its function also throws
// injected_failure on its at-th call (otherwise the failures are someone else's, e.g.
// the stress engine's).
struct fault_spec {
  std::string stage;  // a stage name ("source-1", a worker, "sink"), "" none
  std::uint64_t at = 0;
  fault_policy policy = fault_policy::stop;
  bool throws = false;
  std::uint32_t restart_max = 2;  // under fault_policy::restart
};

struct control_spec {
  control_kind kind = control_kind::none;
  std::chrono::microseconds after{0};  // drawn, unused (kept so that seeds keep their graphs)
  std::uint64_t early_after = 0;       // the sink returns false on this call (1-based)
};

struct random_graph {
  std::uint64_t seed = 0;
  std::uint64_t items = 0;  // per source
  bool endless = false;     // sources run until stopped (items ignored)
  std::size_t pad = 0;
  std::size_t sources = 1;
  std::size_t source_capacity = 16;
  std::vector<stage_spec> stages;  // every worker stage; segments index into it
  segment root;
  std::uint64_t sink_slow_every = 0;
  std::chrono::microseconds sink_slow_sleep{0};
  std::size_t sink_capacity = 0;  // 0: the sink's input is its producer's channel only
  std::size_t sink_replicas = 1;
  bool sink_fuse = false;  // the sink runs on its upstream's thread(s)
  stuck_spec stuck;
  fault_spec fault;
  control_spec control;

  // The source named i (0-based): "source" when there is one, else "source-<i+1>".
  [[nodiscard]] std::string source_name(std::size_t i) const {
    return sources == 1 ? std::string("source") : "source-" + std::to_string(i + 1);
  }
};

struct random_graph_options {
  std::uint64_t max_items = 4000;
  bool fans[4] = {true, true, true, true};  // which fan_kind may be drawn (indexed by it)
  // Fans inside branches, sources merged, a sink with options; shorter naps, no stuck
  // stage.
  bool nested = false;
  std::size_t max_sources = 1;
  // A stage stuck past this names itself in the teardown report (sometimes drawn).
  std::chrono::milliseconds teardown_deadline{500};
  bool throwing_fault = false;  // the fault stage throws from its function
  // Some single-replica stages (never the first of a fan-out's branch, whose upstream
  // has several outputs) and the sink are fused (stage_options::fuse). Drawn from a
  // stream of its own: the rest of the graph is what the same seed draws without it.
  bool fuse = false;
};

// Divisible by every product of the broadcast fan-outs a graph can draw (2s and 3s,
// nested at most three deep).
inline constexpr std::uint64_t kWeight = (1ull << 20) * 531441ull;  // 2^20 * 3^12
// Item v of source s is s * kSourceStride + i.
inline constexpr std::uint64_t kSourceStride = 1'000'000'000ull;

struct injected_failure : std::runtime_error {
  injected_failure() : std::runtime_error("injected failure") {}
};

random_graph draw_random_graph(std::uint64_t seed, const random_graph_options& o = {});
// One line per part: the shape, then the stuck stage, the policy, the control.
std::string describe(const random_graph& g);
[[nodiscard]] const char* fan_name(fan_kind f);
// How many threads call the sink function: its replicas, or, when it is fused, the
// threads of the stage it runs on (a merge has one per input). With one, no call
// follows the one that returns false; with more, the others go on until the runtime has
// seen that false, however many calls the scheduler lets them make meanwhile.
[[nodiscard]] std::size_t sink_threads(const random_graph& g);

// The oracle: where every item's weight went (thread safe: stage threads and on_discard
// feed it).
class ledger {
 public:
  explicit ledger(const random_graph& g);

  void produced(std::size_t source) noexcept;
  void delivered(std::uint64_t v, std::uint64_t weight);
  void filtered(std::uint64_t v, std::uint64_t weight);
  // A dead letter (call from graph_options::on_discard). An item of another type, or from
  // a channel it cannot place, is counted as unknown (a violation).
  template <class Item>
  void discard(const sluice::dead_letter& d) {
    const Item* it = d.get<Item>();
    discard_raw(d.channel(), it != nullptr, it ? it->v : 0, it ? it->weight : 0, d.error() != nullptr);
  }
  // The stage function that fails on purpose marks it (so that an error dead letter is
  // expected).
  void threw() noexcept;

  [[nodiscard]] std::uint64_t produced_total() const;
  [[nodiscard]] std::uint64_t sink_calls() const;
  [[nodiscard]] std::uint64_t sink_call() noexcept;  // counts one call, returns its number (1-based)
  [[nodiscard]] bool has_thrown() const;
  [[nodiscard]] std::uint64_t dead_letters() const;
  // The sink returned false (its early_after-th call was made).
  [[nodiscard]] bool finished_early() const;

  // Violations of exactly-once: each produced item's weight is kWeight in all, no item
  // that was not produced has any, no dead letter is unknown or carries an error that no
  // stage function threw. `complete`: the run returned normally without a stop, so
  // every produced item must have reached the sink or a filter (no dead letters) and
  // every source must have produced all its items (unless the sink finished early).
  [[nodiscard]] std::vector<std::string> check(bool complete) const;

 private:
  void discard_raw(std::string_view channel, bool known, std::uint64_t v, std::uint64_t weight, bool error);

  std::map<std::string, std::uint64_t> divide_;  // stage -> its divisor (only those > 1)
  std::size_t sources_;
  std::uint64_t items_;
  bool endless_;
  std::uint64_t early_after_;  // 0: the sink never finishes early
  std::size_t sink_threads_;   // 1: no call may follow the one that returned false
  mutable std::mutex mu_;
  std::vector<std::uint64_t> produced_;                // per source; guarded by mu_
  std::map<std::uint64_t, std::uint64_t> account_;     // v -> weight; guarded by mu_
  std::uint64_t sink_calls_ = 0;                       // guarded by mu_
  std::uint64_t dead_ = 0, unknown_ = 0, errors_ = 0;  // guarded by mu_
  bool threw_ = false;                                 // guarded by mu_
};

namespace random_graph_detail {

inline bool passes(const stage_spec& s, std::uint64_t v) { return !s.filter || v % s.modulus != 0; }

inline sluice::error_policy policy_of(const fault_spec& f) {
  switch (f.policy) {
    case fault_policy::stop: return sluice::error_policy::stop;
    case fault_policy::skip: return sluice::error_policy::skip;
    case fault_policy::restart:
      return sluice::restart{.max = f.restart_max, .within = std::chrono::seconds(10), .backoff = std::chrono::milliseconds(1)};
  }
  return sluice::error_policy::stop;
}

// Per-stage behaviour shared by every kind of stage: the fault's counter.
struct fault_counter {
  std::mutex mu;
  std::uint64_t calls = 0;
};

}  // namespace random_graph_detail

// Builds the spec's graph on g: sources, stages, fans and the sink, each stage function
// feeding `book`. Call once per graph.
template <class Item>
void build_random_graph(sluice::graph& g, const random_graph& spec_in, const std::shared_ptr<ledger>& book) {
  namespace rd = random_graph_detail;
  // The stage functions share one copy of the spec: a run that is abandoned keeps
  // reading it after the caller has moved on.
  const auto held = std::make_shared<const random_graph>(spec_in);
  const random_graph& spec = *held;
  auto fault = std::make_shared<rd::fault_counter>();
  auto stuck_fired = std::make_shared<std::atomic<bool>>(false);
  // Throws injected_failure if `name` is the throwing fault stage and this is its at-th call.
  auto fail_point = [held, fault, book](const std::string& name) {
    return [held, fault, book, name] {
      const random_graph& s = *held;
      if (!s.fault.throws || s.fault.stage != name) return;
      std::uint64_t n = 0;
      {
        std::lock_guard lk(fault->mu);
        n = ++fault->calls;
      }
      if (n == s.fault.at) {
        book->threw();
        throw injected_failure();
      }
    };
  };
  auto options_for = [&](const std::string& name, std::size_t capacity, std::size_t replicas, bool ordered) {
    sluice::stage_options o;
    o.capacity = capacity;
    o.replicas = replicas;
    o.ordered = ordered;
    if (spec.fault.stage == name) o.on_error = rd::policy_of(spec.fault);
    return o;
  };

  std::vector<sluice::stream<Item>> heads;
  const std::string pad(spec.pad, 'p');
  for (std::size_t s = 0; s < spec.sources; ++s) {
    const std::string name = spec.source_name(s);
    heads.push_back(g.source<Item>(
        name,
        [held, book, s, pad, fail = fail_point(name)](sluice::sender<Item>& tx, std::stop_token stop) {
          const random_graph& sp = *held;
          for (std::uint64_t i = 0; sp.endless || i < sp.items; ++i) {
            if (stop.stop_requested()) return;
            fail();
            Item it;
            it.v = s * kSourceStride + i;
            it.weight = kWeight;
            it.pad = pad;
            if (!tx.push(std::move(it))) return;
            book->produced(s);
          }
        },
        options_for(name, spec.source_capacity, 1, true)));
  }
  sluice::stream<Item> cur = heads.size() == 1 ? heads[0] : g.merge(std::move(heads));

  auto add = [&](int index, sluice::stream<Item> in) -> sluice::stream<Item> {
    const stage_spec& st = spec.stages[static_cast<std::size_t>(index)];
    struct local {
      std::uint64_t seen = 0;
    };
    // Slow and stuck behaviour keyed by the item's value; whether the item passes (a
    // filter that drops it books its weight).
    auto fn = [held, book, stuck_fired, index, st, fail = fail_point(st.name), l = local{}](const Item& it) mutable {
      fail();
      const random_graph& sp = *held;
      if (st.slow_every && ++l.seen % st.slow_every == 0) std::this_thread::sleep_for(st.slow_sleep);
      if (sp.stuck.stage == index && it.v == sp.stuck.at && !stuck_fired->exchange(true)) {
        std::this_thread::sleep_for(sp.stuck.for_);  // ignores the stop token on purpose
      }
      if (random_graph_detail::passes(st, it.v)) return true;
      book->filtered(it.v, it.weight);
      return false;
    };
    sluice::stage_options o = options_for(st.name, st.capacity, st.replicas, st.ordered);
    o.fuse = st.fuse;
    // A filter never divides (draw_random_graph makes every dividing stage a map).
    if (st.filter) return g.filter(st.name, in, [fn](const Item& it) mutable { return fn(it); }, std::move(o));
    return g.map(st.name, in, [fn, divide = st.divide](Item it) mutable {
      (void)fn(it);
      it.weight /= divide;
      return it;
    }, std::move(o));
  };
  // A segment from `in` on.
  auto run_segment = [&](auto& self, const segment& seg, sluice::stream<Item> in) -> sluice::stream<Item> {
    for (int i : seg.pre) in = add(i, in);
    if (seg.fan != fan_kind::none) {
      const std::size_t n = seg.branches.size();
      std::vector<sluice::stream<Item>> outs;
      if (seg.fan == fan_kind::broadcast) {
        outs = g.broadcast(in, n);
      } else if (seg.fan == fan_kind::round_robin) {
        outs = g.round_robin(in, n);
      } else {
        outs = g.partition(in, n, [](const Item& it) { return it.v; });
      }
      for (std::size_t b = 0; b < n; ++b) outs[b] = self(self, seg.branches[b], outs[b]);
      in = g.merge(std::move(outs));
    }
    for (int i : seg.post) in = add(i, in);
    return in;
  };
  cur = run_segment(run_segment, spec.root, cur);

  sluice::stage_options so = options_for("sink", spec.sink_capacity == 0 ? 16 : spec.sink_capacity,
                                         spec.sink_replicas, true);
  auto sink_fn = [held, book, fail = fail_point("sink"), seen = std::uint64_t{0}](Item it) mutable {
    fail();
    const random_graph& sp = *held;
    if (sp.sink_slow_every && ++seen % sp.sink_slow_every == 0) std::this_thread::sleep_for(sp.sink_slow_sleep);
    book->delivered(it.v, it.weight);
    const std::uint64_t call = book->sink_call();
    return !(sp.control.kind == control_kind::early_finish && call == sp.control.early_after);
  };
  so.fuse = spec.sink_fuse;
  if (spec.sink_capacity == 0 && spec.sink_replicas == 1 && spec.fault.stage != "sink" && !spec.sink_fuse) {
    g.sink("sink", cur, std::move(sink_fn));
  } else {
    g.sink("sink", cur, std::move(sink_fn), std::move(so));
  }
}

}  // namespace sluice::testing
