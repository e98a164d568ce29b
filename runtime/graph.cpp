// The untyped graph: building and checking the shape, starting and joining threads,
// the teardown deadline, snapshots, dead letters and the stall watchdog.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <system_error>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sluice/detail/graph_core.hpp"

#include <pthread.h>
#include "sluice/metrics.hpp"

namespace {

// The thread's name as top -H, gdb and perf show it: the stage's name (replicas
// "name#i"), cut to the 15 bytes Linux keeps.
void name_this_thread(const std::string& name) noexcept {
  char buf[16] = {};
  name.copy(buf, sizeof buf - 1);
  pthread_setname_np(pthread_self(), buf);
}

}  // namespace

namespace sluice::detail {
namespace {

using clock = std::chrono::steady_clock;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
}

// Test seam (testing::fail_thread_creation_after): threads start() may still create.
std::atomic<long> g_thread_budget{-1};

void maybe_fail_thread_creation() {
  // relaxed: set by a test before start(), on the same thread.
  long b = g_thread_budget.load(std::memory_order_relaxed);
  while (b >= 0) {
    if (b == 0) {
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "pthread_create (injected by a test)");
    }
    if (g_thread_budget.compare_exchange_weak(b, b - 1, std::memory_order_relaxed)) return;
  }
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
                                    std::shared_ptr<void> receiver, const std::type_info& /*type*/, bool weighted) {
  auto c = std::make_unique<channel_entry>();
  c->producer = producer;
  c->control = std::move(control);
  c->pending = std::move(receiver);
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

void graph_core::set_fault_hook(fault_hook* h) {
  std::lock_guard lk(mu_);
  if (!nodes_.empty() || started_) {
    throw std::logic_error("sluice::graph: a fault hook is set before the first stage is added");
  }
  fault_ = h;
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
  std::exception_ptr factory_error;
  bool nothing = false;
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
      nothing = true;
    } else {
      try {
        for (auto& n : nodes_) {
          for (std::size_t i = 0; i < n->threads; ++i) tasks.push_back({n.get(), i, n->factory(i)});
        }
      } catch (...) {
        ran_nothing_ = true;
        start_error_ = factory_error = std::current_exception();
        nothing = true;
      }
    }
    if (nothing) {
      tasks.clear();
      for (auto& n : nodes_) n->factory = nullptr;
    } else {
      for (auto& n : nodes_) {
        n->factory = nullptr;  // the builders' handles must not keep channels open
        n->live.store(n->threads, std::memory_order_relaxed);  // published by thread creation
      }
      if (stop_requested_) apply_stop_request();
    }
  }
  if (nothing) {
    // Nothing runs: pushes from outside (inlets) fail at once; buffered items are dead letters.
    const std::exception_ptr why = factory_error ? factory_error : std::make_exception_ptr(sluice::cancelled());
    for (auto& c : channels_) c->control->cancel(why);
    finish_run();
    if (factory_error) std::rethrow_exception(factory_error);
    return;
  }
  {
    std::lock_guard lk(life_mu_);
    alive_ = tasks.size();
  }
  const std::size_t needed = tasks.size() + 1;  // + the supervisor
  threads_.reserve(tasks.size());
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    try {
      maybe_fail_thread_creation();
      stage_node* n = tasks[k].node;
      const std::size_t i = tasks[k].index;
      threads_.emplace_back([this, n, i, t = std::move(tasks[k].task)]() mutable {
        name_this_thread(n->threads > 1 ? n->name + "#" + std::to_string(i) : n->name);
        // Every thread waits until all exist: a graph that cannot have all its threads
        // runs none of its stages (the task, and its handles, go with this lambda).
        if (!await_start_gate()) return;
        run_replica(*n, i, std::move(t));
      });
    } catch (...) {
      const std::exception_ptr e = abort_start(std::current_exception(), k, needed, tasks[k].node->name);
      tasks.clear();  // the tasks that got no thread: their handles and functions go now
      std::rethrow_exception(e);
    }
  }
  try {
    maybe_fail_thread_creation();
    supervisor_ = std::thread([this] {
      name_this_thread("sluice-graph");
      supervisor_loop();
    });
  } catch (...) {
    std::rethrow_exception(abort_start(std::current_exception(), tasks.size(), needed, {}));
  }
  open_start_gate(true);
}

bool graph_core::await_start_gate() {
  std::unique_lock lk(gate_mu_);
  gate_cv_.wait(lk, [&] { return gate_ != 0; });
  return gate_ == 1;
}

void graph_core::open_start_gate(bool go) {
  {
    std::lock_guard lk(gate_mu_);
    gate_ = go ? 1 : 2;
  }
  gate_cv_.notify_all();
}

std::exception_ptr graph_core::abort_start(std::exception_ptr why, std::size_t started, std::size_t needed,
                                           const std::string& stage) noexcept {
  open_start_gate(false);
  for (auto& t : threads_) {
    if (t.joinable()) t.join();  // each exits at the gate, dropping its task
  }
  threads_.clear();
  std::exception_ptr error;
  try {
    std::error_code code = std::make_error_code(std::errc::resource_unavailable_try_again);
    std::string cause;
    try {
      std::rethrow_exception(why);
    } catch (const std::system_error& e) {
      code = e.code();
    } catch (const std::exception& e) {
      cause = std::string(" (") + e.what() + ")";
    } catch (...) {
    }
    const std::string who = stage.empty() ? "the graph's supervisor thread could not be created"
                                          : "stage '" + stage + "' could not get one";
    error = std::make_exception_ptr(std::system_error(
        code, "sluice::graph: cannot start the graph's threads: " + std::to_string(started) + " of " +
                  std::to_string(needed) + " started, then " + who + cause + "; no stage ran"));
  } catch (...) {
    error = std::current_exception();  // bad_alloc while building the message
  }
  for (auto& n : nodes_) n->live.store(0, std::memory_order_relaxed);
  {
    std::lock_guard lk(life_mu_);
    alive_ = 0;
  }
  // Nothing runs: pushes from outside (inlets) fail at once, buffered items are dead letters.
  for (auto& c : channels_) c->control->cancel(error);
  {
    std::lock_guard lk(mu_);
    ran_nothing_ = true;
    start_error_ = error;
  }
  finish_run();
  return error;
}

void graph_core::supervisor_loop() noexcept {
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
  // When the stages still running are named stuck (requires life_mu_; max: never).
  auto stuck_deadline = [&] {
    // Saturating: a huge deadline means "never".
    if (opts_.teardown_deadline >= clock::time_point::max() - teardown_at_) return clock::time_point::max();
    return teardown_at_ + opts_.teardown_deadline;
  };
  std::unique_lock lk(life_mu_);
  while (alive_ != 0) {
    auto wake = clock::time_point::max();
    if (teardown_began_ && !stuck_checked) wake = stuck_deadline();
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

void graph_core::report_stuck() noexcept {
  std::vector<std::string> stuck;
  std::vector<std::size_t> stuck_ids;
  try {
    for (std::size_t k = 0; k < nodes_.size(); ++k) {
      auto& n = *nodes_[k];
      // acquire: pairs with finish_replica's acq_rel decrement; a stage read as gone has
      // finished its cleanup (exiting, read after it, covers one still in on_close).
      if (n.live.load(std::memory_order_acquire) == 0 && n.exiting.load(std::memory_order_relaxed) == 0) continue;
      stuck.push_back(n.name);
      stuck_ids.push_back(k);
      n.state.store(static_cast<int>(stage_state::stuck), std::memory_order_relaxed);
    }
    {
      std::lock_guard rk(report_mu_);
      stuck_ = stuck;
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
    // The run never hangs silently (DESIGN.md §3): without a hook, one line on stderr.
    try {
      const std::string line = describe_stuck(stuck_ids);
      std::fputs(line.c_str(), stderr);
      std::fflush(stderr);
    } catch (...) {
      // Out of memory building the line: the report still names the stages.
    }
  }
}

void graph_core::finish_run() noexcept {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  std::exception_ptr start_error;
  {
    std::lock_guard mk(mu_);
    t_end_ = clock::now();
    finished_ = true;
    start_error = start_error_;
  }
  report r;
  std::exception_ptr outcome;
  try {
    r.metrics = snapshot();
    r.elapsed = r.metrics.elapsed;
    std::lock_guard rk(report_mu_);
    r.stuck = stuck_;
    r.stall = stall_;
    r.stalls = stalls_;
    last_ = r;
  } catch (...) {
    // Out of memory: the report stays partial; the outcome below still stands.
  }
  try {
    if (start_error) {
      outcome = start_error;
    } else if (record_.what() == failure_record::outcome::failed) {
      outcome = std::make_exception_ptr(stage_error(record_.stage(), record_.cause(), record_.suppressed()));
    } else if (record_.what() == failure_record::outcome::cancelled) {
      outcome = std::make_exception_ptr(sluice::cancelled(record_.suppressed()));
    }
  } catch (...) {
    outcome = std::current_exception();  // bad_alloc making the error: that is what wait() throws
  }
  if (opts_.on_done) {
    try {
      opts_.on_done(r, outcome);
    } catch (...) {
      // on_done must not throw; the run has ended regardless.
    }
  }
  {
    std::lock_guard lk(life_mu_);
    outcome_ = outcome;
    ended_ = true;
    done_.store(true, std::memory_order_release);
  }
  life_cv_.notify_all();
}

report graph_core::wait() {
  {
    std::lock_guard lk(mu_);
    if (!started_) throw std::logic_error("sluice::graph: wait() before start()");
    if (waited_) throw std::logic_error("sluice::graph: a graph runs once (wait() called again)");
    waited_ = true;
  }
  {
    std::unique_lock lk(life_mu_);
    life_cv_.wait(lk, [&] { return ended_; });
  }
  return collect();
}

std::optional<report> graph_core::wait_for(clock::duration d) {
  {
    std::lock_guard lk(mu_);
    if (!started_) throw std::logic_error("sluice::graph: wait_for() before start()");
    if (waited_) throw std::logic_error("sluice::graph: a graph runs once (its outcome was already taken)");
  }
  {
    std::unique_lock lk(life_mu_);
    const auto now = clock::now();
    const auto deadline = d <= clock::duration::zero()         ? now
                          : d >= clock::time_point::max() - now ? clock::time_point::max()
                                                                : now + d;
    if (!life_cv_.wait_until(lk, deadline, [&] { return ended_; })) return std::nullopt;
  }
  {
    std::lock_guard lk(mu_);
    if (waited_) throw std::logic_error("sluice::graph: a graph runs once (its outcome was already taken)");
    waited_ = true;
  }
  return collect();
}

report graph_core::collect() {
  if (supervisor_.joinable()) supervisor_.join();
  std::exception_ptr outcome;
  {
    std::lock_guard lk(life_mu_);
    outcome = outcome_;
  }
  if (outcome) std::rethrow_exception(outcome);
  return last_report();
}

std::string graph_core::describe_stuck(const std::vector<std::size_t>& stuck) const {
  std::vector<channel_stats> cs;
  cs.reserve(channels_.size());
  for (const auto& c : channels_) cs.push_back(c->control->stats());
  const auto ops = blocked_ops(cs);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(opts_.teardown_deadline).count();
  std::string line = "sluice: teardown deadline (" + std::to_string(ms) + " ms) passed; still waiting for ";
  for (std::size_t i = 0; i < stuck.size(); ++i) {
    const stage_node& n = *nodes_[stuck[i]];
    if (i != 0) line += ", ";
    line += "stage '" + n.name + "' (";
    if (ops[stuck[i]]) {
      line += std::string("blocked in ") + (ops[stuck[i]]->first ? "push" : "pop") + " on channel '" +
              channels_[ops[stuck[i]]->second]->name + "'";
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

report graph_core::last_report() const {
  std::lock_guard lk(report_mu_);
  return last_;
}

// ---- dead letters -----------------------------------------------------------------

void graph_core::discard(std::size_t channel, const std::type_info& type, void* item) noexcept {
  if (!opts_.on_discard || dying_.load(std::memory_order_relaxed)) return;
  // channels_ and nodes_ are immutable once started (and only the building thread or a
  // caller holding mu_ touches them before), so names can be read without mu_.
  std::lock_guard lk(dead_mu_);
  try {
    const channel_entry& c = *channels_[channel];
    const std::string_view consumer = c.consumer != kNoNode ? std::string_view(nodes_[c.consumer]->name) : "";
    opts_.on_discard(dead_letter(c.name, type, item, consumer));
  } catch (...) {
    // on_discard must not throw; it runs inside cancels and destructors.
  }
}

void graph_core::discard_failed(std::size_t channel, const stage_node& n, const std::type_info& type, void* item,
                                std::exception_ptr why) noexcept {
  if (fault_ != nullptr) fault_->on_stage_exception(n.name, why);
  if (!opts_.on_discard || dying_.load(std::memory_order_relaxed)) return;
  std::lock_guard lk(dead_mu_);
  try {
    opts_.on_discard(dead_letter(channels_[channel]->name, type, item, n.name, std::move(why)));
  } catch (...) {
    // on_discard must not throw.
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
    if (n.is_input && started_) {
      // No thread: open while its inlet takes items, done once it is closed (or cancelled).
      const bool closed = !n.outputs.empty() && channels_[n.outputs.front()]->control->closed();
      st.state = closed ? "done" : "running";
    }
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
  for (const auto& x : externals_) {  // channels outside the process (this_stage::add_external_channel)
    const metrics::external_channel_reading r = x.read();
    metrics::channel_snapshot cshot;
    cshot.name = x.name;
    cshot.from = x.from;
    cshot.to = x.to;
    cshot.external = true;
    cshot.stats.size = cshot.stats.items = r.size;
    cshot.stats.capacity = r.capacity;
    cshot.stats.blocked_push_ns = r.blocked_push_ns;
    cshot.stats.blocked_pop_ns = r.blocked_pop_ns;
    for (auto& st : s.stages) {
      if (!x.from.empty() && st.name == x.from) {
        st.backpressured_ns += r.blocked_push_ns;
        st.busy_ns -= std::min(st.busy_ns, r.blocked_push_ns);
      }
      if (!x.to.empty() && st.name == x.to) {
        st.starved_ns += r.blocked_pop_ns;
        st.busy_ns -= std::min(st.busy_ns, r.blocked_pop_ns);
      }
    }
    s.channels.push_back(std::move(cshot));
  }
  s.bottleneck = metrics::find_bottleneck(s);
  return s;
}

void graph_core::add_external_channel(std::string name, const stage_node& n, bool pushes,
                                      std::function<metrics::external_channel_reading()> read) {
  std::lock_guard lk(mu_);
  external_channel x{std::move(name), pushes ? n.name : std::string(), pushes ? std::string() : n.name, std::move(read)};
  for (auto& e : externals_) {
    if (e.name == x.name) {
      e = std::move(x);
      return;
    }
  }
  externals_.push_back(std::move(x));
}

namespace {
// The stage running on this thread (set by run_replica for the stage function's calls).
thread_local graph_core* tls_graph = nullptr;
thread_local stage_node* tls_stage = nullptr;
}  // namespace

current_stage_scope::current_stage_scope(graph_core& g, stage_node& n) noexcept {
  tls_graph = &g;
  tls_stage = &n;
}
current_stage_scope::~current_stage_scope() {
  tls_graph = nullptr;
  tls_stage = nullptr;
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
    // A chain that ends at an inlet nobody is pushing into is an idle graph waiting for
    // outside input, not a stall.
    if (cur != kNoNode && nodes_[cur]->is_input && !ops[cur]) continue;
    if (chain.size() > best.size()) best = std::move(chain);
  }
  return best;
}

namespace testing {
void fail_thread_creation_after(long n) noexcept { g_thread_budget.store(n < 0 ? -1 : n, std::memory_order_relaxed); }
}  // namespace testing

}  // namespace sluice::detail

namespace sluice::this_stage {
bool add_external_channel(std::string name, bool pushes, std::function<metrics::external_channel_reading()> read) {
  if (detail::tls_graph == nullptr) return false;
  detail::tls_graph->add_external_channel(std::move(name), *detail::tls_stage, pushes, std::move(read));
  return true;
}
}  // namespace sluice::this_stage
