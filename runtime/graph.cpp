// The untyped graph: building and checking the shape, starting and joining threads,
// the teardown deadline, snapshots, dead letters and the stall watchdog.
#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sluice/detail/graph_core.hpp"
#include "sluice/metrics.hpp"

namespace sluice::detail {
namespace {

using clock = std::chrono::steady_clock;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
}

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

graph_core::graph_core(graph_options o) : opts_(std::move(o)) {}

graph_core::~graph_core() {
  bool need_wait = false;
  {
    std::lock_guard lk(mu_);
    need_wait = started_ && !waited_;
  }
  if (need_wait) {
    cancel();
    try {
      (void)wait();
    } catch (...) {
      // The owner never asked for the outcome; a destructor cannot report it.
    }
  }
  // A graph that never ran still holds receivers in its builders and streams: drop
  // them while every channel's name is still there for a dead-letter hook.
  for (auto& n : nodes_) n->factory = nullptr;
  for (auto& c : channels_) c->pending.reset();
  dying_.store(true, std::memory_order_relaxed);  // single-threaded by now
  channels_.clear();
}

// ---- building --------------------------------------------------------------------

void graph_core::check_can_add(const std::string& name) const {
  std::lock_guard lk(mu_);
  if (started_) throw std::logic_error("sluice::graph: stage '" + name + "' added after start()");
  if (name.empty()) throw std::logic_error("sluice::graph: a stage needs a name");
  for (const auto& n : nodes_) {
    if (n->name == name) throw std::logic_error("sluice::graph: two stages are named '" + name + "'");
  }
}

void graph_core::check_input(const graph_core* owner, std::size_t channel) const {
  if (owner != this) {
    throw std::logic_error("sluice::graph: the stream is empty or belongs to another graph");
  }
  std::lock_guard lk(mu_);
  if (started_) throw std::logic_error("sluice::graph: stage added after start()");
  if (channel >= channels_.size()) throw std::logic_error("sluice::graph: unknown stream");
  const auto& c = *channels_[channel];
  if (c.consumer != kNoNode) {
    throw std::logic_error("sluice::graph: the output of stage '" + nodes_[c.producer]->name +
                           "' is already consumed by '" + nodes_[c.consumer]->name +
                           "' (use broadcast() to feed several stages)");
  }
}

std::string graph_core::unique_name(const std::string& base) const {
  std::lock_guard lk(mu_);
  auto taken = [&](const std::string& s) {
    return std::any_of(nodes_.begin(), nodes_.end(), [&](const auto& n) { return n->name == s; });
  };
  if (!taken(base)) return base;
  for (std::size_t i = 2;; ++i) {
    std::string s = base + "#" + std::to_string(i);
    if (!taken(s)) return s;
  }
}

std::size_t graph_core::add_node(std::unique_ptr<stage_node> n) {
  std::lock_guard lk(mu_);
  nodes_.push_back(std::move(n));
  return nodes_.size() - 1;
}

std::size_t graph_core::next_channel_id() const {
  std::lock_guard lk(mu_);
  return channels_.size();
}

std::size_t graph_core::add_channel(std::size_t producer, std::unique_ptr<channel_control> control,
                                    std::shared_ptr<void> receiver, const std::type_info& type, bool weighted) {
  auto c = std::make_unique<channel_entry>();
  c->producer = producer;
  c->control = std::move(control);
  c->pending = std::move(receiver);
  c->type = &type;
  c->weighted = weighted;
  std::lock_guard lk(mu_);
  c->name = nodes_[producer]->name + " -> ?";
  channels_.push_back(std::move(c));
  nodes_[producer]->outputs.push_back(channels_.size() - 1);
  return channels_.size() - 1;
}

std::shared_ptr<void> graph_core::take_input(std::size_t channel, std::size_t consumer) {
  std::lock_guard lk(mu_);
  auto& c = *channels_[channel];
  c.consumer = consumer;
  c.name = nodes_[c.producer]->name + " -> " + nodes_[consumer]->name;
  nodes_[consumer]->inputs.push_back(channel);
  return std::move(c.pending);
}

std::size_t graph_core::channel_capacity(std::size_t channel) const {
  std::lock_guard lk(mu_);
  return channels_[channel]->control->stats().capacity;
}

std::string graph_core::producer_name(std::size_t channel) const {
  std::lock_guard lk(mu_);
  return nodes_[channels_[channel]->producer]->name;
}

bool graph_core::started() const {
  std::lock_guard lk(mu_);
  return started_;
}

// ---- start / wait ------------------------------------------------------------------

void graph_core::start() {
  struct pending_task {
    stage_node* node;
    std::size_t index;
    std::unique_ptr<replica_task> task;
  };
  std::vector<pending_task> tasks;
  {
    std::lock_guard lk(mu_);
    if (started_) throw std::logic_error("sluice::graph: a graph runs once (start() or run() called again)");
    for (const auto& c : channels_) {
      if (c->consumer == kNoNode) {
        throw std::logic_error("sluice::graph: the output of stage '" + nodes_[c->producer]->name +
                               "' is never consumed (a dangling stream)");
      }
    }
    started_ = true;
    t_start_ = clock::now();
    if (record_.what() == failure_record::outcome::cancelled) {
      // cancel() before start: run nothing; wait() throws cancelled.
      ran_nothing_ = true;
      for (auto& n : nodes_) n->factory = nullptr;
      return;
    }
    try {
      for (auto& n : nodes_) {
        for (std::size_t i = 0; i < n->threads; ++i) tasks.push_back({n.get(), i, n->factory(i)});
      }
    } catch (...) {
      ran_nothing_ = true;
      start_error_ = std::current_exception();
      tasks.clear();
      for (auto& n : nodes_) n->factory = nullptr;
      throw;
    }
    for (auto& n : nodes_) {
      n->factory = nullptr;  // the builders' handles must not keep channels open
      n->live.store(n->threads, std::memory_order_relaxed);  // published by thread creation
    }
    if (stop_requested_) apply_stop_request();
  }
  {
    std::lock_guard lk(life_mu_);
    alive_ = tasks.size();
  }
  threads_.reserve(tasks.size());
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    try {
      stage_node* n = tasks[k].node;
      const std::size_t i = tasks[k].index;
      threads_.emplace_back([this, n, i, t = std::move(tasks[k].task)]() mutable { run_replica(*n, i, std::move(t)); });
    } catch (...) {
      // Out of threads: fail the graph as that stage's failure; the replicas that never
      // started are finished here (their handles dropped, their cleanup run).
      const std::exception_ptr e = std::current_exception();
      tasks[k].node->any_failed.store(true, std::memory_order_relaxed);
      fail(*tasks[k].node, e);
      for (std::size_t j = k; j < tasks.size(); ++j) {
        tasks[j].task.reset();
        finish_replica(*tasks[j].node, now_ns());
      }
      break;
    }
  }
  if (opts_.stall_threshold > clock::duration::zero()) {
    try {
      watchdog_ = std::thread([this] { watchdog_loop(); });
    } catch (...) {
      // No watchdog: stalls go unreported; the run itself is unaffected.
    }
  }
}

report graph_core::wait() {
  {
    std::lock_guard lk(mu_);
    if (!started_) throw std::logic_error("sluice::graph: wait() before start()");
    if (waited_) throw std::logic_error("sluice::graph: a graph runs once (wait() called again)");
    waited_ = true;
  }
  std::unique_lock lk(life_mu_);
  life_cv_.wait(lk, [&] { return alive_ == 0 || teardown_began_; });
  if (alive_ != 0) {
    const auto deadline = teardown_at_ + opts_.teardown_deadline;
    if (!life_cv_.wait_until(lk, deadline, [&] { return alive_ == 0; })) {
      lk.unlock();
      std::vector<std::string> stuck;
      for (auto& n : nodes_) {
        // acquire: pairs with finish_replica's acq_rel decrement; a stage read as gone
        // has finished its cleanup.
        if (n->live.load(std::memory_order_acquire) == 0) continue;
        stuck.push_back(n->name);
        n->state.store(static_cast<int>(stage_state::stuck), std::memory_order_relaxed);
      }
      {
        std::lock_guard rk(report_mu_);
        stuck_ = stuck;
      }
      for (const auto& s : stuck) {
        if (!opts_.on_stuck) break;
        try {
          opts_.on_stuck(s);
        } catch (...) {
          // on_stuck must not throw; the run must still be joined.
        }
      }
      lk.lock();
      // The run never hangs silently: the stuck stages are named; now they are joined.
      life_cv_.wait(lk, [&] { return alive_ == 0; });
    }
  }
  lk.unlock();
  join_everything();

  std::exception_ptr start_error;
  {
    std::lock_guard mk(mu_);
    t_end_ = clock::now();
    finished_ = true;
    start_error = start_error_;
  }
  report r;
  r.metrics = snapshot();
  r.elapsed = r.metrics.elapsed;
  {
    std::lock_guard rk(report_mu_);
    r.stuck = stuck_;
    r.stall = stall_;
    r.stalls = stalls_;
    last_ = r;
  }
  if (start_error) std::rethrow_exception(start_error);
  switch (record_.what()) {
    case failure_record::outcome::failed:
      throw stage_error(record_.stage(), record_.cause(), record_.suppressed());
    case failure_record::outcome::cancelled:
      throw sluice::cancelled(record_.suppressed());
    case failure_record::outcome::none:
      break;
  }
  return r;
}

void graph_core::join_everything() noexcept {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  {
    std::lock_guard lk(wd_mu_);
    wd_stop_ = true;
  }
  wd_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

report graph_core::last_report() const {
  std::lock_guard lk(report_mu_);
  return last_;
}

// ---- dead letters -----------------------------------------------------------------

void graph_core::discard(std::size_t channel, const std::type_info& type, void* item) noexcept {
  if (!opts_.on_discard || dying_.load(std::memory_order_relaxed)) return;
  // channels_ is immutable once started (and single-threaded before), so the name
  // can be read without mu_.
  std::lock_guard lk(dead_mu_);
  try {
    opts_.on_discard(dead_letter(channels_[channel]->name, type, item));
  } catch (...) {
    // on_discard must not throw; it runs inside cancels and destructors.
  }
}

// ---- observation -------------------------------------------------------------------

std::vector<std::optional<std::pair<bool, std::size_t>>> graph_core::blocked_ops(
    const std::vector<channel_stats>& cs) const {
  // Per stage: the first channel it is parked on, and whether it pushes (true) or pops.
  std::vector<std::optional<std::pair<bool, std::size_t>>> ops(nodes_.size());
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

metrics::snapshot graph_core::snapshot() const {
  std::lock_guard lk(mu_);
  metrics::snapshot s;
  const auto now = clock::now();
  const std::int64_t now_n = now_ns();
  if (started_) s.elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>((finished_ ? t_end_ : now) - t_start_);

  std::vector<channel_stats> cs;
  cs.reserve(channels_.size());
  for (const auto& c : channels_) cs.push_back(c->control->stats());
  const auto ops = blocked_ops(cs);

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
    st.errors = n.errors.load(std::memory_order_relaxed);
    st.restarts = n.restarts.load(std::memory_order_relaxed);
    const std::int64_t alive = n.exited_ns.load(std::memory_order_relaxed) +
                               n.running.load(std::memory_order_relaxed) * now_n -
                               n.running_since.load(std::memory_order_relaxed);
    const std::int64_t waited = static_cast<std::int64_t>(st.backpressured_ns + st.starved_ns);
    st.busy_ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, alive - waited));
    if (reported_.size() != nodes_.size()) reported_.assign(nodes_.size(), {0, 0, 0});
    auto& floor = reported_[k];
    st.busy_ns = floor[0] = std::max(floor[0], st.busy_ns);
    st.backpressured_ns = floor[1] = std::max(floor[1], st.backpressured_ns);
    st.starved_ns = floor[2] = std::max(floor[2], st.starved_ns);
    st.state = state_name(n.state.load(std::memory_order_relaxed));
    if (ops[k]) {
      st.blocked_on = channels_[ops[k]->second]->name;
      st.blocked_op = ops[k]->first ? "push" : "pop";
    }
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
    s.channels.push_back(std::move(cshot));
  }
  s.bottleneck = metrics::find_bottleneck(s);
  return s;
}

// ---- stall watchdog ------------------------------------------------------------------

std::vector<metrics::wait_link> graph_core::wait_for_chain() const {
  std::vector<channel_stats> cs;
  cs.reserve(channels_.size());
  for (const auto& c : channels_) cs.push_back(c->control->stats());
  const auto ops = blocked_ops(cs);
  std::vector<metrics::wait_link> best;
  for (std::size_t start = 0; start < nodes_.size(); ++start) {
    if (!ops[start]) continue;
    std::vector<metrics::wait_link> chain;
    std::vector<bool> seen(nodes_.size(), false);
    std::size_t cur = start;
    while (cur != kNoNode && ops[cur] && !seen[cur]) {
      seen[cur] = true;
      const auto [push, ch] = *ops[cur];
      const auto& c = *channels_[ch];
      const std::size_t holder = push ? c.consumer : c.producer;
      chain.push_back({nodes_[cur]->name, push ? "push" : "pop", c.name,
                       holder != kNoNode ? nodes_[holder]->name : std::string()});
      cur = holder;
    }
    if (chain.size() > best.size()) best = std::move(chain);
  }
  return best;
}

void graph_core::watchdog_loop() {
  const auto threshold = opts_.stall_threshold;
  const auto tick = std::clamp<clock::duration>(threshold / 4, std::chrono::milliseconds(1),
                                                std::chrono::milliseconds(100));
  auto moves = [&] {
    std::uint64_t m = 0;
    for (const auto& c : channels_) {
      const channel_stats st = c->control->stats();
      m += st.pushed + st.popped + st.discarded;
    }
    return m;
  };
  std::uint64_t last = moves();
  auto last_change = clock::now();
  bool reported = false;
  std::unique_lock lk(wd_mu_);
  while (!wd_stop_) {
    wd_cv_.wait_for(lk, tick, [&] { return wd_stop_; });
    if (wd_stop_) break;
    lk.unlock();
    const std::uint64_t m = moves();
    const auto now = clock::now();
    if (m != last) {
      last = m;
      last_change = now;
      reported = false;
    } else if (!reported && !tearing_down() && now - last_change >= threshold) {
      std::vector<metrics::wait_link> chain = wait_for_chain();
      if (!chain.empty()) {
        reported = true;
        {
          std::lock_guard rk(report_mu_);
          stall_ = chain;
          ++stalls_;
        }
        if (opts_.on_stall) {
          try {
            opts_.on_stall(chain);
          } catch (...) {
            // on_stall must not throw; the watchdog goes on.
          }
        }
      }
    }
    lk.lock();
  }
}

}  // namespace sluice::detail
