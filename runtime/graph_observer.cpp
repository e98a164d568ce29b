// Observation of a running graph: snapshots (per-stage busy / backpressured / starved
// time, channel counters, external channels), where each stage is blocked, the graph's
// watchdog thread (stall detection with its wait-for chain, the teardown deadline and
// the stuck report), and this_stage:: for stage functions.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "graph_state.hpp"
#include "text.hpp"
#include "sluice/detail/process_info.hpp"
#include "sluice/graph.hpp"
#include "sluice/detail/ticks.hpp"
#include "sluice/metrics.hpp"

namespace sluice::detail {
namespace {

using clock = std::chrono::steady_clock;

const char* state_name(int s) noexcept {
  switch (static_cast<stage_state>(s)) {
    case stage_state::idle: return "idle";
    case stage_state::running: return "running";
    case stage_state::done: return "done";
    case stage_state::failed: return "failed";
    case stage_state::stuck: return "stuck";
  }
  return "idle";
}

}  // namespace

// ---- observation -------------------------------------------------------------------

std::vector<std::optional<std::pair<bool, std::size_t>>> graph_state::blocked_ops(
    const std::vector<channel_stats>& cs) const {
  // Per stage: the first channel it is parked on, and whether it pushes (true) or pops.
  std::vector<std::optional<std::pair<bool, std::size_t>>> ops(nodes_.size());
  // A stage's own thread parked in a push into an inlet of this graph (inlet_push_note).
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    const auto& n = *nodes_[k];
    if (n.inlet_pushers.load(std::memory_order_relaxed) == 0) continue;
    const std::size_t ch = n.inlet_channel.load(std::memory_order_relaxed);
    if (ch < channels_.size() && cs[ch].waiting_push > 0) ops[k] = {true, ch};
  }
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    const auto& c = *channels_[i];
    if (cs[i].waiting_push > 0 && c.producer != kNoNode && !ops[c.producer]) ops[c.producer] = {true, i};
  }
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    const auto& c = *channels_[i];
    if (cs[i].waiting_pop > 0 && c.consumer != kNoNode && !ops[c.consumer]) ops[c.consumer] = {false, i};
  }
  return ops;
}

metrics::snapshot graph_state::snapshot() const {
  std::lock_guard lk(mu_);
  metrics::snapshot s;
  const auto now = clock::now();
  const std::int64_t now_n = now_ns();
  if (started_) s.elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>((finished_ ? t_end_ : now) - t_start_);
  s.stall_threshold = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.stall_threshold);

  const std::vector<channel_stats> cs = channel_stats_now();
  const auto ops = blocked_ops(cs);

  // Fused stages (stage_options::fuse) run on their host's thread: each one's calls are
  // timed whole (its function, its pushes, the fused stages after it). Per stage, the
  // time its fused consumers took on its thread; subtracted from its own busy time.
  std::vector<std::uint64_t> fused_total(nodes_.size(), 0);
  std::vector<std::uint64_t> fused_below(nodes_.size(), 0);
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    const auto& n = *nodes_[k];
    if (!n.fused || n.inputs.empty()) continue;
    fused_total[k] = ticks_to_ns(n.fused->total_ticks());
    const std::size_t up = channels_[n.inputs.front()]->producer;
    if (up != kNoNode) fused_below[up] += fused_total[k];
  }

  // A stage's threads' lifetimes so far, summed (ended ones, and running ones until now).
  auto alive_ns = [now_n](const stage_node& x) -> std::int64_t {
    return x.exited_ns.load(std::memory_order_relaxed) + x.running.load(std::memory_order_relaxed) * now_n -
           x.running_since.load(std::memory_order_relaxed);
  };
  s.stages.reserve(nodes_.size());
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    const auto& n = *nodes_[k];
    metrics::stage_snapshot st;
    st.name = n.name;
    st.replicas = n.replicas;
    for (std::size_t ch : n.inputs) {
      st.items_in += cs[ch].popped;
      st.starved_ns += cs[ch].blocked_pop_ns;
    }
    for (std::size_t ch : n.outputs) {
      st.items_out += cs[ch].pushed;
      st.backpressured_ns += cs[ch].blocked_push_ns;
    }
    if (n.turn_wait) st.starved_ns += ticks_to_ns(n.turn_wait->blocked_ticks_now(true));
    if (n.window_wait) st.backpressured_ns += ticks_to_ns(n.window_wait->blocked_ticks_now(true));
    if (n.private_push_ns) st.backpressured_ns += n.private_push_ns();
    st.errors = n.errors.load(std::memory_order_relaxed);
    st.restarts = n.restarts.load(std::memory_order_relaxed);
    const std::int64_t alive = alive_ns(n);
    const std::int64_t waited = static_cast<std::int64_t>(st.backpressured_ns + st.starved_ns);
    if (n.fused) {
      // Its own calls, less its time blocked on its output and the fused stages after it.
      const std::uint64_t less = fused_below[k] + st.backpressured_ns;
      st.busy_ns = fused_total[k] > less ? fused_total[k] - less : 0;
      // Its host's threads' time outside its calls: waiting for its next item, as an
      // unfused stage waits on its input. (Without it a fused stage's shares were taken
      // over its own calls only, the last one of a fused chain was 100% busy however
      // little it did, and it was named the bottleneck before the slow stage upstream.)
      // Less the host replicas' time waiting on their order window: behind ordered
      // replicas only the window's emitter runs the fused stage, one call at a time, and
      // the others wait for it there (that wait is on this stage, not its starving).
      // Counted as starved, a stage that held everything up had a busy share of about
      // 1/replicas, and no bottleneck was named (a probe: 0.35 with 3 replicas).
      if (n.host < nodes_.size()) {
        const stage_node& h = *nodes_[n.host];
        std::int64_t outside = alive_ns(h) - static_cast<std::int64_t>(fused_total[k]);
        if (h.window_wait) outside -= static_cast<std::int64_t>(ticks_to_ns(h.window_wait->blocked_ticks_now(true)));
        if (outside > 0) st.starved_ns += static_cast<std::uint64_t>(outside);
      }
    } else {
      const std::int64_t below = static_cast<std::int64_t>(fused_below[k]);
      st.busy_ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, alive - waited - below));
    }
    // The fused stages after it run inside its pushes: to this stage, that time is its
    // output holding it up, as a full channel would. (Left out of all three, a host whose
    // time went to its fused stages had shares taken over the microseconds left: busy
    // 100%, and it was named the bottleneck as often as the slow fused stage.)
    st.backpressured_ns += fused_below[k];
    st.state = state_name(n.state.load(std::memory_order_relaxed));
    // Running, but a replica sleeps its restart backoff (it was named the bottleneck of a
    // stall with no word of it).
    if (st.state == "running" && n.backing_off.load(std::memory_order_relaxed) > 0) st.state = "restarting";
    if (n.is_input && started_) {
      // No thread: open while its inlet takes items, done once it is closed (or cancelled).
      const bool closed = !n.outputs.empty() && channels_[n.outputs.front()]->control->closed();
      st.state = closed ? "done" : "running";
    }
    if (ops[k]) {
      st.blocked_on = channels_[ops[k]->second]->name;
      st.blocked_op = ops[k]->first ? "push" : "pop";
    }
    if (n.fused && n.host < nodes_.size()) st.runs_on = nodes_[n.host]->name;
    s.stages.push_back(std::move(st));
  }
  s.channels.reserve(channels_.size());
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    const auto& c = *channels_[i];
    metrics::channel_snapshot cshot;
    cshot.name = c.name;
    cshot.from = c.producer != kNoNode ? nodes_[c.producer]->name : std::string();
    cshot.to = c.consumer != kNoNode ? nodes_[c.consumer]->name : std::string();
    cshot.weighted = c.weighted;
    cshot.stats = cs[i];
    cshot.dead_letters = c.held_dead.load(std::memory_order_relaxed);
    s.channels.push_back(std::move(cshot));
  }
  const std::size_t first_external = s.channels.size();
  for (const auto& x : externals_) {  // channels outside the process (this_stage::add_external_channel)
    const metrics::external_channel_reading r = x.read();
    // Counters: on from the gauges this one replaced, and never below what was shown.
    x.shown_push_ns = std::max(x.shown_push_ns, x.base_push_ns + r.blocked_push_ns);
    x.shown_pop_ns = std::max(x.shown_pop_ns, x.base_pop_ns + r.blocked_pop_ns);
    // One channel per (name, from, to): the gauges of its replicas and fused stages add
    // up their blocked times; each reads the same stream's size.
    metrics::channel_snapshot* same = nullptr;
    for (std::size_t i = first_external; i < s.channels.size(); ++i) {
      auto& c = s.channels[i];
      if (c.name == x.name && c.from == x.from && c.to == x.to) same = &c;
    }
    if (same == nullptr) {
      metrics::channel_snapshot cshot;
      cshot.name = x.name;
      cshot.from = x.from;
      cshot.to = x.to;
      cshot.external = true;
      s.channels.push_back(std::move(cshot));
      same = &s.channels.back();
    }
    same->stats.size = same->stats.items = std::max(same->stats.size, r.size);
    same->stats.capacity = std::max(same->stats.capacity, r.capacity);
    same->stats.blocked_push_ns += x.shown_push_ns;
    same->stats.blocked_pop_ns += x.shown_pop_ns;
    for (auto& st : s.stages) {
      if (!x.from.empty() && st.name == x.from) {
        st.backpressured_ns += x.shown_push_ns;
        st.busy_ns -= std::min(st.busy_ns, x.shown_push_ns);
      }
      if (!x.to.empty() && st.name == x.to) {
        st.starved_ns += x.shown_pop_ns;
        st.busy_ns -= std::min(st.busy_ns, x.shown_pop_ns);
      }
    }
  }
  // The times are counters: a snapshot never reports less than one before it. Applied
  // last, after the external channels' readings (which may jump, e.g. a JetStream edge's
  // cached gauge) moved time from busy to blocked.
  if (reported_.size() != nodes_.size()) reported_.assign(nodes_.size(), {0, 0, 0});
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    auto& st = s.stages[k];
    auto& floor = reported_[k];
    st.busy_ns = floor[0] = std::max(floor[0], st.busy_ns);
    st.backpressured_ns = floor[1] = std::max(floor[1], st.backpressured_ns);
    st.starved_ns = floor[2] = std::max(floor[2], st.starved_ns);
  }
  s.bottleneck = metrics::find_bottleneck(s);
  return s;
}

void graph_state::add_external_channel(std::string name, const stage_node& n, bool pushes, external_owner who,
                                      std::function<metrics::external_channel_reading()> read) {
  // Its name as exported (metrics write every byte that is not UTF-8 as U+FFFD), so that two
  // names alike once exported are one channel, as snapshot() promises: "ext\xff" and
  // "ext\xfe" were two series of one name in /metrics, which Prometheus rejects (a probe).
  std::string shown = utf8_clean(name);
  std::lock_guard lk(mu_);
  external_channel x{std::move(shown), pushes ? n.name : std::string(), pushes ? std::string() : n.name,
                     std::move(read), who};
  // The same replica of the same stage again (a restarted stage): it replaces the first,
  // and its blocked time counts on from the first's (before, the exported *_total counter
  // went back to the new gauge's 0). Another stage's, or another replica's, is a gauge of
  // its own, still counting: snapshot() sums those of one channel (name, from and to).
  // Before, the last replaced them all: one side of a graph that publishes to a stream
  // and subscribes to it vanished, and so did every replica's time but the last's.
  for (auto& e : externals_) {
    if (e.name == x.name && e.from == x.from && e.to == x.to && e.who == x.who) {
      const metrics::external_channel_reading last = e.read();
      x.base_push_ns = std::max(e.shown_push_ns, e.base_push_ns + last.blocked_push_ns);
      x.base_pop_ns = std::max(e.shown_pop_ns, e.base_pop_ns + last.blocked_pop_ns);
      x.shown_push_ns = x.base_push_ns;
      x.shown_pop_ns = x.base_pop_ns;
      e = std::move(x);
      return;
    }
  }
  externals_.push_back(std::move(x));
}

namespace {
// The stage running on this thread (set by run_replica for the stage function's calls).
thread_local graph_state* tls_graph = nullptr;
thread_local stage_node* tls_stage = nullptr;
// That stage's scope on this thread (its counted exception). Only trivially destructible
// thread_locals here: see current_stage_scope::counted_.
thread_local const current_stage_scope* tls_scope = nullptr;
}  // namespace

bool held_item_failed(const std::type_info& type, void* item, std::exception_ptr why) noexcept {
  if (tls_graph == nullptr || tls_stage == nullptr || tls_stage->inputs.empty()) return false;
  tls_graph->discard_failed(tls_stage->inputs.front(), *tls_stage, type, item, why);
  if (tls_stage->policy.what() != error_policy::kind::skip) return false;
  tls_stage->errors.fetch_add(1, std::memory_order_relaxed);  // as item_task's count_error()
  if (tls_scope != nullptr) tls_scope->counted_ = std::move(why);
  return true;
}

void held_item_undelivered(const std::type_info& type, void* item, std::exception_ptr why) noexcept {
  if (tls_graph == nullptr || tls_stage == nullptr || tls_stage->inputs.empty()) return;
  tls_graph->discard_failed(tls_stage->inputs.front(), *tls_stage, type, item, std::move(why), false);
}

current_stage_scope::current_stage_scope(graph_state& g, stage_node& n) noexcept {
  tls_graph = &g;
  tls_stage = &n;
  tls_scope = this;
}
current_stage_scope::~current_stage_scope() {
  tls_graph = nullptr;
  tls_stage = nullptr;
  tls_scope = nullptr;
}
stage_node* current_stage_scope::of(const graph_state* g) noexcept { return tls_graph == g ? tls_stage : nullptr; }

inlet_push_note::inlet_push_note(const void* graph, std::size_t channel) noexcept {
  // Only a thread running a stage of that very graph (the inlet's graph is alive then).
  if (graph == nullptr || tls_graph != graph || tls_stage == nullptr) return;
  tls_stage->inlet_channel.store(channel, std::memory_order_relaxed);
  tls_stage->inlet_pushers.fetch_add(1, std::memory_order_relaxed);
  node_ = tls_stage;
}
inlet_push_note::~inlet_push_note() {
  if (node_ != nullptr) static_cast<stage_node*>(node_)->inlet_pushers.fetch_sub(1, std::memory_order_relaxed);
}
bool current_stage_scope::take_counted(const std::exception_ptr& e) const noexcept {
  const bool same = counted_ != nullptr && counted_ == e;
  counted_ = nullptr;
  return same;
}

// ---- stall watchdog ------------------------------------------------------------------

std::vector<channel_stats> graph_state::channel_stats_now() const {
  std::vector<channel_stats> cs;
  cs.reserve(channels_.size());
  for (const auto& c : channels_) cs.push_back(c->control->stats());
  return cs;
}

std::vector<metrics::wait_link> graph_state::wait_for_chain() const {
  const std::vector<channel_stats> cs = channel_stats_now();
  const auto ops = blocked_ops(cs);
  std::vector<metrics::wait_link> best;
  for (std::size_t start = 0; start < nodes_.size(); ++start) {
    if (!ops[start]) continue;
    std::vector<metrics::wait_link> chain;
    std::vector<bool> seen(nodes_.size(), false);
    std::size_t cur = start;
    while (cur != kNoNode && !seen[cur]) {
      if (!ops[cur]) {
        // Not parked itself, but maybe a thread of it is inside a fused stage's call
        // (stage_options::fuse), which waits on its own channel or in its own function:
        // the chain goes on through the fused edges, as between threads ("m push 'm -> f'
        // held by f"). It stopped here and named the host as the one holding things up.
        const std::size_t callee = fused_callee(cur);
        if (callee == kNoNode) break;
        std::vector<metrics::wait_link> links;  // from the callee up to cur
        std::size_t x = callee;
        while (x != cur && x != kNoNode && !nodes_[x]->inputs.empty() && links.size() < nodes_.size()) {
          const auto& c = *channels_[nodes_[x]->inputs.front()];
          if (c.producer != kNoNode) links.push_back({nodes_[c.producer]->name, "push", c.name, nodes_[x]->name});
          x = c.producer;
        }
        if (x != cur) break;  // not a fused path down from cur: the chain ends here, as before
        seen[cur] = true;
        for (auto it = links.rbegin(); it != links.rend(); ++it) chain.push_back(*it);
        cur = callee;
        continue;
      }
      seen[cur] = true;
      const auto [push, ch] = *ops[cur];
      const auto& c = *channels_[ch];
      const std::size_t holder = push ? c.consumer : c.producer;
      chain.push_back({nodes_[cur]->name, push ? "push" : "pop", c.name,
                       holder != kNoNode ? nodes_[holder]->name : std::string()});
      cur = holder;
    }
    // A chain that ends at an inlet nobody is pushing into is an idle graph waiting for
    // outside input, not a stall; one that ends at a stage sleeping its restart backoff
    // waits for a timer of the user's choosing (it was reported as a stall, and that
    // stage named as the one holding everything up while it ran nothing).
    if (cur != kNoNode && nodes_[cur]->is_input && !ops[cur]) continue;
    if (cur != kNoNode && !ops[cur] && nodes_[cur]->backing_off.load(std::memory_order_relaxed) > 0) continue;
    if (chain.size() > best.size()) best = std::move(chain);
  }
  return best;
}

// ---- the watchdog thread ---------------------------------------------------------

void graph_state::supervisor_loop() noexcept {
  const auto threshold = opts_.stall_threshold;
  const bool watch = threshold > clock::duration::zero();
  const auto tick = watch ? std::clamp<clock::duration>(threshold / 4, std::chrono::milliseconds(1),
                                                        std::chrono::milliseconds(100))
                          : clock::duration::zero();
  auto moves = [&] {
    std::uint64_t m = 0;
    for (const auto& c : channels_) {
      const channel_stats st = c->control->stats();
      m += st.pushed + st.popped + st.discarded;
    }
    return m;
  };
  std::uint64_t last = watch ? moves() : 0;
  auto last_change = clock::now();
  bool stall_reported = false;
  bool stuck_checked = false;
  // Per node, for report_unstopped_sources: 2 named, 1 seen running (not parked) at the
  // last look; and when to look next once request_stop() applied (nullopt: the first look,
  // due at sources_deadline(); max: none due).
  std::vector<int> sources_seen(nodes_.size(), 0);
  std::optional<clock::time_point> sources_look;
  // A teardown deadline after `from` (saturating: a huge deadline means "never").
  auto deadline_after = [&](clock::time_point from) {
    if (opts_.teardown_deadline >= clock::time_point::max() - from) return clock::time_point::max();
    return from + opts_.teardown_deadline;
  };
  // When the stages still running are named stuck (requires life_mu_; max: never).
  auto stuck_deadline = [&] { return deadline_after(teardown_at_); };
  // When the sources still running after request_stop() are (requires life_mu_).
  auto sources_deadline = [&] { return deadline_after(stop_at_); };
  std::unique_lock lk(life_mu_);
  while (alive_ != 0) {
    if (const int asks = hook_asks_.exchange(0, std::memory_order_acq_rel); asks != 0) {
      lk.unlock();
      act_on_asks(asks);  // cancel()/request_stop() made inside on_discard
      lk.lock();
      continue;
    }
    auto wake = clock::time_point::max();
    if (teardown_began_ && !stuck_checked) wake = stuck_deadline();
    if (stop_applied_ && !teardown_began_) wake = std::min(wake, sources_look.value_or(sources_deadline()));
    if (watch && !teardown_began_) wake = std::min(wake, clock::now() + tick);
    if (wake == clock::time_point::max()) {
      life_cv_.wait(lk);
    } else {
      life_cv_.wait_until(lk, wake);
    }
    if (alive_ == 0) break;
    const auto now = clock::now();
    if (teardown_began_) {
      // The deadline counts from the teardown, whatever woke us (a stall tick may have).
      if (!stuck_checked && now >= stuck_deadline()) {
        stuck_checked = true;
        lk.unlock();
        report_stuck();
        lk.lock();
      }
      continue;
    }
    if (stop_applied_ && now >= sources_look.value_or(sources_deadline())) {
      lk.unlock();
      // Looked at again a quarter deadline later (at most 100 ms) while a source is still
      // running: a source that ignores its token behind a slower sink is parked much of the
      // time, and one look alone missed it (under ASan) and let the run go on for ever.
      const bool look_again = report_unstopped_sources(sources_seen);
      sources_look = look_again ? clock::now() + std::clamp<clock::duration>(opts_.teardown_deadline / 4,
                                                                             std::chrono::milliseconds(1),
                                                                             std::chrono::milliseconds(100))
                                : clock::time_point::max();
      lk.lock();
      continue;
    }
    if (!watch) continue;
    lk.unlock();
    // The stall watchdog: no item moved on any channel for the threshold while some
    // stage waits on a channel (for something other than an inlet fed from outside).
    const std::uint64_t m = moves();
    if (m != last) {
      last = m;
      last_change = now;
      stall_reported = false;
    } else if (!stall_reported && !tearing_down() && now - last_change >= threshold) {
      try {
        std::vector<metrics::wait_link> chain = wait_for_chain();
        if (!chain.empty()) {
          stall_reported = true;
          {
            std::lock_guard rk(report_mu_);
            stall_ = chain;
            ++stalls_;
          }
          if (opts_.on_stall) opts_.on_stall(chain);
        }
      } catch (...) {
        // on_stall must not throw (and the chain is best effort); the watchdog goes on.
      }
    }
    lk.lock();
  }
  lk.unlock();
  finish_run();
}

std::size_t graph_state::fused_callee(std::size_t node) const {
  const auto& n = *nodes_[node];
  for (std::size_t r = 0; r < n.threads; ++r) {
    const void* at = n.inside[r].load(std::memory_order_relaxed);
    if (at == nullptr) continue;
    for (std::size_t j = 0; j < nodes_.size(); ++j) {
      if (nodes_[j].get() == at && j != node && !nodes_[j]->inputs.empty()) return j;
    }
  }
  return kNoNode;
}

std::vector<std::size_t> graph_state::fused_calls() const {
  std::vector<std::size_t> calls(nodes_.size(), 0);
  for (const auto& n : nodes_) {
    for (std::size_t r = 0; r < n->threads; ++r) {
      const void* at = n->inside[r].load(std::memory_order_relaxed);
      if (at == nullptr) continue;
      for (std::size_t j = 0; j < nodes_.size(); ++j) {
        if (nodes_[j].get() == at) {
          ++calls[j];
          break;
        }
      }
    }
  }
  return calls;
}

std::vector<std::size_t> graph_state::stuck_now() const {
  std::vector<std::size_t> stuck_ids;
  {
    // A thread inside a fused stage's call is stuck in that stage, not in its own: name
    // the fused stage (DESIGN §2: it keeps its own name), and its host only for the host's
    // threads that are in its own code (or its cleanup).
    const std::vector<std::size_t> calls = fused_calls();
    std::vector<std::size_t> host_in_fused(nodes_.size(), 0);
    std::vector<bool> is_stuck(nodes_.size(), false);
    for (std::size_t j = 0; j < nodes_.size(); ++j) {
      if (calls[j] == 0) continue;
      is_stuck[j] = true;
      host_in_fused[nodes_[j]->host] += calls[j];
    }
    // A fused stage's cleanup runs inside its upstream's end (close_stage, after the
    // upstream's own on_close), so a thread in it counts in both stages' `exiting`: it is
    // the fused stage's, not the upstream's (which was named stuck, and given to
    // on_stuck, for a cleanup it had finished).
    std::vector<int> exiting_below(nodes_.size(), 0);
    for (std::size_t j = 0; j < nodes_.size(); ++j) {
      const auto& f = *nodes_[j];
      if (!f.fused || f.inputs.empty()) continue;
      const std::size_t up = channels_[f.inputs.front()]->producer;
      if (up < nodes_.size()) exiting_below[up] += f.exiting.load(std::memory_order_relaxed);
    }
    for (std::size_t k = 0; k < nodes_.size(); ++k) {
      auto& n = *nodes_[k];
      // acquire: pairs with finish_replica's acq_rel decrement; a stage read as gone has
      // finished its cleanup (exiting, read after it, covers one still in on_close).
      const std::size_t live = n.live.load(std::memory_order_acquire);
      const int exiting = n.exiting.load(std::memory_order_relaxed) - exiting_below[k];
      if (live == 0 && exiting <= 0) continue;
      if (host_in_fused[k] < live || exiting > 0) is_stuck[k] = true;
    }
    for (std::size_t k = 0; k < nodes_.size(); ++k) {
      if (is_stuck[k]) stuck_ids.push_back(k);
    }
  }
  return stuck_ids;
}

void graph_state::report_stuck() noexcept {
  std::vector<std::size_t> stuck_ids;
  try {
    stuck_ids = stuck_now();
  } catch (...) {
    // Out of memory: the stuck stages go unnamed in the report; the run is still joined.
  }
  name_stuck(stuck_ids, false);
}

bool graph_state::report_unstopped_sources(std::vector<int>& seen) noexcept {
  std::vector<std::size_t> ids;
  bool again = false;
  try {
    // What stuck_now() finds on the sources' threads: a source, or a stage fused onto one
    // (a source that keeps to its stop token, inside a fused stage's slow call or cleanup,
    // was named itself, "in its stage function" or "in its cleanup", and the busy stage
    // not at all).
    auto on_a_source = [&](std::size_t k) {
      const stage_node& n = *nodes_[k];
      const stage_node& owner = n.fused ? *nodes_[n.host] : n;
      return owner.is_source && !owner.is_input;
    };
    // Parked in a push, every thread of it: held up downstream, not deaf to its token (it
    // sees the token once the push is in). A downstream stage that never takes the item is
    // a stall (on_stall), or is named itself after a teardown; a source behind a stuck
    // stage was named here too, and `sluice stress` counted that as a violation.
    const std::vector<channel_stats> cs = channel_stats_now();
    auto parked_in_push = [&](std::size_t k) {
      const stage_node& n = *nodes_[k];
      std::size_t parked = 0;
      for (std::size_t ch : n.outputs) parked += cs[ch].waiting_push;
      const std::size_t threads = n.fused ? 1 : n.live.load(std::memory_order_acquire);
      return parked != 0 && parked >= threads;
    };
    // Named when seen running, not parked, at two looks in a row: a source that keeps to
    // its token, let out of a long push just before a look, is seen at most once on its way
    // out (`sluice stress` counts a stage the graph names as a violation).
    const std::vector<std::size_t> running = stuck_now();
    std::vector<bool> is_running(nodes_.size(), false);
    for (std::size_t k : running) is_running[k] = true;
    for (std::size_t k = 0; k < nodes_.size(); ++k) {
      if (seen[k] == 2) continue;
      if (!is_running[k] || !on_a_source(k)) {
        seen[k] = 0;
        continue;
      }
      again = true;
      if (parked_in_push(k)) {
        seen[k] = 0;
      } else if (++seen[k] == 2) {
        ids.push_back(k);
      }
    }
  } catch (...) {
    // Out of memory: the run goes on, unreported.
  }
  if (!ids.empty()) name_stuck(ids, true);
  return again;
}

void graph_state::name_stuck(const std::vector<std::size_t>& stuck_ids, bool after_stop) noexcept {
  std::vector<std::string> stuck;
  try {
    for (std::size_t k : stuck_ids) {
      stuck.push_back(nodes_[k]->name);
      if (after_stop) {
        // Only a stage still running: one that ended since it was seen keeps done/failed.
        int running = static_cast<int>(stage_state::running);
        nodes_[k]->state.compare_exchange_strong(running, static_cast<int>(stage_state::stuck), std::memory_order_relaxed);
      } else {
        nodes_[k]->state.store(static_cast<int>(stage_state::stuck), std::memory_order_relaxed);
      }
    }
    std::lock_guard rk(report_mu_);
    for (const auto& s : stuck) {
      if (std::find(stuck_.begin(), stuck_.end(), s) == stuck_.end()) stuck_.push_back(s);
    }
  } catch (...) {
    // Out of memory: the stuck stages go unnamed in the report; the run is still joined.
  }
  if (opts_.on_stuck) {
    for (const auto& s : stuck) {
      try {
        opts_.on_stuck(s);
      } catch (...) {
        // on_stuck must not throw; the run must still be joined.
      }
    }
  } else if (!stuck_ids.empty()) {
    // The run never hangs silently: without a hook, one line on stderr.
    try {
      const std::string line = describe_stuck(stuck_ids, after_stop);
      std::fputs(line.c_str(), stderr);
      std::fflush(stderr);
    } catch (...) {
      // Out of memory building the line: the report still names the stages.
    }
  }
}

std::string graph_state::describe_stuck(const std::vector<std::size_t>& stuck, bool after_stop) const {
  const std::vector<channel_stats> cs = channel_stats_now();
  const auto ops = blocked_ops(cs);
  std::string line = "sluice: teardown deadline (" + duration_text(opts_.teardown_deadline) + ") passed";
  if (after_stop) line += " since request_stop() asked the sources to stop";
  line += "; still waiting for ";
  for (std::size_t i = 0; i < stuck.size(); ++i) {
    const stage_node& n = *nodes_[stuck[i]];
    if (i != 0) line += ", ";
    // Names as one_line() writes them: a newline in one split the promised one line.
    line += "stage '" + one_line(n.name) + "' (";
    if (ops[stuck[i]]) {
      line += std::string("blocked in ") + (ops[stuck[i]]->first ? "push" : "pop") + " on channel '" +
              one_line(channels_[ops[stuck[i]]->second]->name) + "'";
    } else if (n.in_discard.load(std::memory_order_relaxed) > 0) {
      // Its channels' undelivered items, each a call of the hook (serialised by the graph).
      line += "handing undelivered items to on_discard";
    } else if (n.fused && n.exiting.load(std::memory_order_relaxed) == 0) {
      line += "in its stage function, fused on the thread of '" + one_line(nodes_[n.host]->name) + "'";
    } else if (n.in_function.load(std::memory_order_relaxed) > 0) {
      line += "in its stage function";
    } else {
      line += "in its cleanup: destructor or on_close";
    }
    line += ")";
  }
  line += "; the run ends when ";
  line += stuck.size() == 1 ? "it returns\n" : "they return\n";
  return line;
}

}  // namespace sluice::detail

namespace sluice::this_stage {
bool add_external_channel(std::string name, bool pushes, std::function<metrics::external_channel_reading()> read) {
  if (detail::tls_graph == nullptr) return false;
  // Who registers: the fused stage whose call runs now, or the thread's own stage; and
  // which of its replicas (each has its own gauge, as each JetStream publisher does).
  const detail::stage_thread& t = detail::tls_stage_thread;
  const void* inside = t.inside != nullptr ? t.inside->load(std::memory_order_relaxed) : nullptr;
  const detail::graph_state::external_owner who{inside != nullptr ? inside : t.node, t.replica};
  detail::tls_graph->add_external_channel(std::move(name), *detail::tls_stage, pushes, who, std::move(read));
  return true;
}
bool graph_stopping() noexcept { return detail::tls_graph != nullptr && detail::tls_graph->stopping(); }
}  // namespace sluice::this_stage
