// sluice::testing::draw_random_graph, describe and the ledger (sluice/testing/random_graph.hpp).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include "sluice/testing/random_graph.hpp"

#include <algorithm>
#include <random>
#include <string_view>

namespace sluice::testing {

const char* fan_name(fan_kind f) {
  switch (f) {
    case fan_kind::none: return "none";
    case fan_kind::broadcast: return "broadcast";
    case fan_kind::round_robin: return "round_robin";
    case fan_kind::partition: return "partition";
  }
  return "?";
}

namespace {

// The draws, in the order `sluice stress` has always made them (a seed keeps its graph).
class drawer {
 public:
  drawer(std::uint64_t seed, const random_graph_options& o) : rng_(seed), seed_(seed), o_(o) {}

  std::uint64_t uni(std::uint64_t lo, std::uint64_t hi) { return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::size_t capacity() {
    static constexpr std::size_t kCaps[] = {1, 2, 4, 8, 16, 64, 128};
    return kCaps[uni(0, 6)];
  }

  int add_stage(random_graph& g, const std::string& name, bool allow_filter) {
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
  }

  // A fan kind: drawn, then (when not allowed) redrawn from the allowed ones with a side
  // generator, so that the main stream (and with it the rest of the graph) stays.
  fan_kind fan(fan_kind drawn, std::uint64_t salt) {
    if (o_.fans[static_cast<int>(drawn)]) return drawn;
    std::mt19937_64 side((seed_ ^ 0x5bd1e995ULL) + salt);
    std::vector<fan_kind> ok;
    for (int i = 0; i < 4; ++i)
      if (o_.fans[i]) ok.push_back(static_cast<fan_kind>(i));
    if (ok.empty()) return fan_kind::none;
    return ok[std::uniform_int_distribution<std::size_t>(0, ok.size() - 1)(side)];
  }

  // The first stage of every broadcast branch divides the weight: a map, never a filter.
  static void divide_branches(random_graph& g, segment& seg) {
    if (seg.fan != fan_kind::broadcast) return;
    for (segment& b : seg.branches) {
      stage_spec& first = g.stages[static_cast<std::size_t>(b.pre.front())];
      first.filter = false;
      first.modulus = 0;
      first.divide = seg.branches.size();
    }
  }

  // A nested segment (random_graph_options::nested), `depth` fans deep; `prefix` names its
  // stages. A broadcast branch always starts with a stage (its divider).
  segment nested(random_graph& g, int depth, const std::string& prefix, bool need_stage) {
    segment seg;
    const std::uint64_t n_pre = std::max<std::uint64_t>(need_stage ? 1 : 0, uni(0, 2));
    for (std::uint64_t i = 0; i < n_pre; ++i) seg.pre.push_back(add_stage(g, prefix + "s" + std::to_string(i + 1), true));
    if (depth < 3 && chance(0.6)) {
      seg.fan = fan(static_cast<fan_kind>(uni(1, 3)), static_cast<std::uint64_t>(g.stages.size()));
    }
    if (seg.fan != fan_kind::none) {
      const std::uint64_t n = uni(2, 3);
      for (std::uint64_t b = 0; b < n; ++b) {
        seg.branches.push_back(nested(g, depth + 1, prefix + "b" + std::to_string(b + 1) + "-",
                                      seg.fan == fan_kind::broadcast));
      }
      divide_branches(g, seg);
    }
    if (chance(0.3)) seg.post.push_back(add_stage(g, prefix + "p1", true));
    return seg;
  }

 private:
  std::mt19937_64 rng_;
  std::uint64_t seed_;
  const random_graph_options& o_;
};

// Marks the stages of `seg` that may run fused (one replica, an upstream with one
// output) with probability 1/2 each. `after_fan`: seg is a branch of a fan-out, so its
// first stage, whether in pre or (pre empty, no fan of its own) in post, has the fan
// itself as upstream (several outputs) and keeps its thread. The stuck stage (which
// sleeps ignoring its stop token) may be fused or a host like any other: its thread then
// runs other stages too, and a stuck report names that thread's owner (the stress
// oracle excuses every stage on the stuck stage's thread).
void fuse_segment(random_graph& g, const segment& seg, bool after_fan, std::mt19937_64& rng) {
  bool upstream_shared = after_fan;
  auto mark = [&](int i) {
    stage_spec& s = g.stages[static_cast<std::size_t>(i)];
    if (!upstream_shared && s.replicas == 1 && rng() % 2 == 0) s.fuse = true;
    upstream_shared = false;
  };
  for (int i : seg.pre) mark(i);
  for (const segment& b : seg.branches) fuse_segment(g, b, true, rng);
  if (seg.fan != fan_kind::none) upstream_shared = false;  // the branches' merge: one output
  for (int i : seg.post) mark(i);
}

void draw_fusion(random_graph& g, std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);  // not the drawer's stream
  fuse_segment(g, g.root, false, rng);
  if (g.sink_replicas == 1 && rng() % 3 == 0) g.sink_fuse = true;
}

}  // namespace

random_graph draw_random_graph(std::uint64_t seed, const random_graph_options& o) {
  drawer d(seed, o);
  random_graph g;
  g.seed = seed;
  const auto deadline = o.teardown_deadline;
  g.items = d.uni(1, std::max<std::uint64_t>(1, o.max_items));
  g.pad = d.chance(0.5) ? d.uni(0, 4096) : d.uni(0, 64);
  g.source_capacity = d.capacity();
  if (o.nested) {
    g.sources = static_cast<std::size_t>(d.uni(1, std::max<std::size_t>(1, o.max_sources)));
    g.root = d.nested(g, 0, "", false);
    g.sink_capacity = 1 + d.uni(0, 15);
    g.sink_replicas = d.chance(1.0 / 3) ? d.uni(2, 3) : 1;
  } else {
    const std::uint64_t n_pre = d.uni(0, 3);
    for (std::uint64_t i = 0; i < n_pre; ++i) g.root.pre.push_back(d.add_stage(g, "pre-" + std::to_string(i + 1), true));
    const fan_kind fan = d.fan(d.chance(0.5) ? static_cast<fan_kind>(d.uni(1, 3)) : fan_kind::none, 0);
    if (fan != fan_kind::none) {
      g.root.fan = fan;
      const std::uint64_t n = d.uni(2, 3);
      for (std::uint64_t b = 0; b < n; ++b) {
        segment branch;
        const std::uint64_t len = d.uni(1, 2);
        for (std::uint64_t i = 0; i < len; ++i) {
          branch.pre.push_back(d.add_stage(g, "b" + std::to_string(b + 1) + "-" + std::to_string(i + 1),
                                           fan != fan_kind::round_robin));
        }
        g.root.branches.push_back(branch);
      }
      drawer::divide_branches(g, g.root);
    }
    const std::uint64_t n_post = d.uni(0, 2);
    for (std::uint64_t i = 0; i < n_post; ++i) g.root.post.push_back(d.add_stage(g, "post-" + std::to_string(i + 1), true));
  }
  if (d.chance(0.1)) {
    g.sink_slow_every = d.uni(20, 200);
    g.sink_slow_sleep = std::chrono::microseconds(d.uni(100, 1000));
  }

  const auto n_stages = static_cast<std::uint64_t>(g.stages.size());
  if (n_stages > 0 && d.chance(0.2)) {
    g.stuck.stage = static_cast<int>(d.uni(0, n_stages - 1));
    g.stuck.at = d.uni(0, g.items - 1);
    // Usually a short hang; sometimes past the teardown deadline (which names the stage),
    // but shorter than the three deadlines after which the stress engine abandons a run.
    // Nested graphs (the stress test, no engine) hang briefly only.
    const bool long_hang = d.chance(0.25);
    g.stuck.for_ = long_hang && !o.nested ? std::chrono::milliseconds(3 * deadline.count() / 2)
                                          : std::chrono::milliseconds(d.uni(5, 50));
  }
  if (n_stages > 0 && d.chance(0.5)) {
    const auto s = static_cast<std::size_t>(d.uni(0, n_stages - 1));
    g.fault.stage = g.stages[s].name;
    g.fault.at = d.uni(0, g.items - 1);
    const std::uint64_t p = d.uni(0, 3);
    g.fault.policy = p <= 1 ? fault_policy::stop : p == 2 ? fault_policy::skip : fault_policy::restart;
  }
  const std::uint64_t c = d.uni(0, 9);
  if (c >= 8) {
    g.control.kind = control_kind::early_finish;
    g.control.early_after = d.uni(1, std::max<std::uint64_t>(1, g.items / 2));
  }
  g.control.after = std::chrono::microseconds(d.uni(0, 20000));
  if (g.stuck.stage >= 0 && g.stuck.for_ > deadline) {
    // A stage stuck past the deadline: get stuck early, so that the engine has to name it.
    g.stuck.at = d.uni(0, std::min<std::uint64_t>(g.items - 1, 8));
  }
  if (o.nested) {
    // Many stages deep: shorter naps, so that a run stays short.
    for (stage_spec& st : g.stages) st.slow_sleep = std::min(st.slow_sleep, std::chrono::microseconds(300));
    g.sink_slow_sleep = std::min(g.sink_slow_sleep, std::chrono::microseconds(300));
    g.stuck = {};
  }
  if (o.throwing_fault) {
    // A stage that throws from its function: any stage, sources and sink included; a
    // source only under stop (a restarted source would repeat its items).
    const std::uint64_t k = d.uni(0, n_stages + g.sources);  // n_stages + sources + sink choices
    if (k < n_stages) {
      g.fault.stage = g.stages[static_cast<std::size_t>(k)].name;
    } else if (k < n_stages + g.sources) {
      g.fault.stage = g.source_name(static_cast<std::size_t>(k - n_stages));
    } else {
      g.fault.stage = "sink";
    }
    g.fault.at = 1 + d.uni(0, g.items);
    const std::uint64_t p = d.uni(0, 4);
    g.fault.policy = p < 3 ? fault_policy::stop : p < 4 ? fault_policy::skip : fault_policy::restart;
    if (k >= n_stages && k < n_stages + g.sources) g.fault.policy = fault_policy::stop;
    g.fault.throws = true;
    g.fault.restart_max = 100;
  }
  if (o.fuse) draw_fusion(g, seed);
  return g;
}

std::size_t sink_threads(const random_graph& g) {
  // The threads that push into a segment's output, given those that push into its input:
  // an unfused stage's replicas, a fused stage's host's threads, a merge's inputs.
  auto out_threads = [&](auto& self, const segment& seg, std::size_t t) -> std::size_t {
    auto through = [&](int i) {
      const stage_spec& s = g.stages[static_cast<std::size_t>(i)];
      if (!s.fuse) t = s.replicas;
    };
    for (int i : seg.pre) through(i);
    if (seg.fan != fan_kind::none) {
      for (const segment& b : seg.branches) (void)self(self, b, t);
      t = seg.branches.size();  // the merge: one thread per branch
    }
    for (int i : seg.post) through(i);
    return t;
  };
  // One source is one thread; several are merged (one thread per source).
  const std::size_t host = out_threads(out_threads, g.root, g.sources);
  return g.sink_fuse ? host : g.sink_replicas;
}

namespace {

std::string stage_text(const random_graph& g, int i) {
  const stage_spec& s = g.stages[static_cast<std::size_t>(i)];
  std::string t = s.name + ":" + (s.filter ? "filter(%" + std::to_string(s.modulus) + ")" : std::string("map")) +
                  "(cap=" + std::to_string(s.capacity);
  if (s.replicas > 1) t += ",x" + std::to_string(s.replicas) + (s.ordered ? " ordered" : " unordered");
  if (s.slow_every) t += ",slow " + std::to_string(s.slow_sleep.count()) + "us/" + std::to_string(s.slow_every);
  if (s.divide > 1) t += ",share 1/" + std::to_string(s.divide);
  if (s.fuse) t += ",fused";
  return t + ")";
}

// The segment's stages and fans, each step after the first with " -> " before it
// (`first`: whether the segment's first step needs none).
std::string segment_text(const random_graph& g, const segment& seg, bool first) {
  std::string t;
  auto step = [&](const std::string& x) {
    t += (first ? "" : " -> ") + x;
    first = false;
  };
  for (int i : seg.pre) step(stage_text(g, i));
  if (seg.fan != fan_kind::none) {
    std::string f = std::string(fan_name(seg.fan)) + "[";
    for (std::size_t b = 0; b < seg.branches.size(); ++b) {
      if (b) f += " | ";
      f += segment_text(g, seg.branches[b], true);
    }
    step(f + "] -> merge");
  }
  for (int i : seg.post) step(stage_text(g, i));
  return t;
}

}  // namespace

std::string describe(const random_graph& g) {
  std::string t = "items=" + (g.endless ? std::string("endless") : std::to_string(g.items)) +
                  " pad=" + std::to_string(g.pad) + "B  ";
  if (g.sources == 1) {
    t += "source(cap=" + std::to_string(g.source_capacity) + ")";
  } else {
    t += std::to_string(g.sources) + " sources(cap=" + std::to_string(g.source_capacity) + ") -> merge";
  }
  t += segment_text(g, g.root, false);
  t += " -> sink";
  if (g.sink_capacity != 0 || g.sink_replicas > 1) {
    t += "(cap=" + std::to_string(g.sink_capacity) + (g.sink_replicas > 1 ? ",x" + std::to_string(g.sink_replicas) : "") + ")";
  }
  if (g.sink_fuse) t += "(fused)";
  if (g.sink_slow_every) t += "(slow " + std::to_string(g.sink_slow_sleep.count()) + "us/" + std::to_string(g.sink_slow_every) + ")";
  if (g.stuck.stage >= 0) {
    t += "\n    stuck: " + g.stages[static_cast<std::size_t>(g.stuck.stage)].name + " at v=" + std::to_string(g.stuck.at) +
         " for " + std::to_string(g.stuck.for_.count()) + "ms";
  }
  if (!g.fault.stage.empty()) {
    static const char* kPol[] = {"stop", "skip", "restart"};
    t += "\n    policy: " + g.fault.stage + " under " + kPol[static_cast<int>(g.fault.policy)];
    if (g.fault.throws) t += ", throws on its call " + std::to_string(g.fault.at);
  }
  if (g.control.kind == control_kind::early_finish) {
    t += "\n    control: sink returns false on item " + std::to_string(g.control.early_after);
  }
  return t;
}

// ---- the ledger -----------------------------------------------------------------

ledger::ledger(const random_graph& g)
    : sources_(g.sources),
      items_(g.items),
      endless_(g.endless),
      early_after_(g.control.kind == control_kind::early_finish ? g.control.early_after : 0),
      sink_threads_(sink_threads(g)),
      produced_(g.sources, 0) {
  for (const stage_spec& s : g.stages)
    if (s.divide > 1) divide_[s.name] = s.divide;
}

void ledger::produced(std::size_t source) noexcept {
  std::lock_guard lk(mu_);
  ++produced_[source];
}

void ledger::delivered(std::uint64_t v, std::uint64_t weight) {
  std::lock_guard lk(mu_);
  account_[v] += weight;
}

void ledger::filtered(std::uint64_t v, std::uint64_t weight) {
  std::lock_guard lk(mu_);
  account_[v] += weight;
}

void ledger::threw() noexcept {
  std::lock_guard lk(mu_);
  threw_ = true;
}

std::uint64_t ledger::sink_call() noexcept {
  std::lock_guard lk(mu_);
  return ++sink_calls_;
}

std::uint64_t ledger::produced_total() const {
  std::lock_guard lk(mu_);
  std::uint64_t n = 0;
  for (const std::uint64_t p : produced_) n += p;
  return n;
}

std::uint64_t ledger::sink_calls() const {
  std::lock_guard lk(mu_);
  return sink_calls_;
}

bool ledger::has_thrown() const {
  std::lock_guard lk(mu_);
  return threw_;
}

std::uint64_t ledger::dead_letters() const {
  std::lock_guard lk(mu_);
  return dead_;
}

bool ledger::finished_early() const {
  std::lock_guard lk(mu_);
  return early_after_ != 0 && sink_calls_ >= early_after_;
}

void ledger::discard_raw(std::string_view channel, bool known, std::uint64_t v, std::uint64_t weight, bool error) {
  // The channel is "<producer> -> <consumer>": an item bound for a dividing stage has not
  // been divided yet, so it carries that stage's whole input share.
  const std::size_t arrow = channel.rfind(" -> ");
  const std::string consumer(arrow == std::string_view::npos ? std::string_view() : channel.substr(arrow + 4));
  std::lock_guard lk(mu_);
  ++dead_;
  if (error) ++errors_;
  if (!known || arrow == std::string_view::npos) {
    ++unknown_;
    return;
  }
  const auto d = divide_.find(consumer);
  account_[v] += d == divide_.end() ? weight : weight / d->second;
}

std::vector<std::string> ledger::check(bool complete) const {
  std::lock_guard lk(mu_);
  std::vector<std::string> out;
  if (unknown_ != 0) out.push_back(std::to_string(unknown_) + " dead letters of another type or from an unnamed channel");
  if (errors_ != 0 && !threw_) {
    out.push_back(std::to_string(errors_) + " dead letters carry an error but no stage function threw");
  }
  std::uint64_t wrong = 0, shown = 0;
  std::string examples;
  auto bad = [&](std::uint64_t v, std::uint64_t w) {
    ++wrong;
    if (shown++ < 3) examples += " v=" + std::to_string(v) + ":" + std::to_string(w) + "/" + std::to_string(kWeight);
  };
  for (std::size_t s = 0; s < sources_; ++s) {
    for (std::uint64_t i = 0; i < produced_[s]; ++i) {
      const std::uint64_t v = s * kSourceStride + i;
      const auto it = account_.find(v);
      const std::uint64_t w = it == account_.end() ? 0 : it->second;
      if (w != kWeight) bad(v, w);
    }
  }
  for (const auto& [v, w] : account_) {
    const std::size_t s = static_cast<std::size_t>(v / kSourceStride);
    const std::uint64_t i = v % kSourceStride;
    if (s < sources_ && i < produced_[s]) continue;
    // The item a source's refused push gave back as a dead letter: never produced, whole.
    if (s < sources_ && i == produced_[s] && w == kWeight) continue;
    bad(v, w);
  }
  if (wrong != 0) {
    out.push_back("exactly-once: " + std::to_string(wrong) + " items' weight is not accounted exactly once (" +
                  examples + " )");
  }
  // One thread runs the sink: it checks before every call, so after the call that returned
  // false there is none. On several threads, the others stop once the runtime has seen
  // that false, which is after the function returned: until then (a thread preempted
  // between the two, say by the ledger's own mutex handing over) they go on calling, as
  // many times as the scheduler lets them. No count is sound there; that such a graph
  // stops at all is the unit tests' job (an endless source: the run must return).
  if (early_after_ != 0 && sink_threads_ == 1 && sink_calls_ > early_after_) {
    out.push_back("the sink returned false on item " + std::to_string(early_after_) + " but was called " +
                  std::to_string(sink_calls_) + " times (one thread runs it: no call may follow)");
  }
  const bool finished_early = early_after_ != 0 && sink_calls_ >= early_after_;
  if (complete && !finished_early) {
    if (dead_ != errors_) {
      out.push_back("a normal return left " + std::to_string(dead_ - errors_) + " items undelivered (dead letters)");
    }
    for (std::size_t s = 0; s < sources_ && !endless_; ++s) {
      if (produced_[s] != items_) {
        out.push_back("a normal return but source " + std::to_string(s + 1) + " produced " +
                      std::to_string(produced_[s]) + " of " + std::to_string(items_));
      }
    }
  }
  return out;
}

}  // namespace sluice::testing
