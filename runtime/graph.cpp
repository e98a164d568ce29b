// The untyped graph: detail::graph_core's calls, building and checking the shape,
// starting and joining threads, ending the run, dead letters. (Stage threads and
// teardown: supervisor.cpp; snapshots and the watchdog: graph_observer.cpp.)
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "capacity_error.hpp"
#include "graph_state.hpp"
#include "text.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/metrics.hpp"

namespace {

// The thread's name as top -H, gdb and perf show it: the stage's name (replicas
// "name#i"), cut to the 15 bytes Linux keeps. The name is cut, not the "#i" (replicas
// showed alike), at a character's start (it was cut inside a UTF-8 sequence), and a
// control byte is '?' (a name "ab\ncd" made /proc/<tid>/comm two lines). No allocation.
void name_this_thread(const std::string& name, std::size_t replica = SIZE_MAX) noexcept {
  char suffix[24] = {};
  if (replica != SIZE_MAX) std::snprintf(suffix, sizeof suffix, "#%zu", replica);
  const std::size_t tail = std::strlen(suffix);
  constexpr std::size_t kKept = 15;
  std::size_t take = std::min(name.size(), tail < kKept ? kKept - tail : 0);
  // Back to the start of a character: never end on a lead byte or inside its sequence.
  if (take < name.size()) {
    while (take > 0 && (static_cast<unsigned char>(name[take]) & 0xC0) == 0x80) --take;
  }
  char buf[16] = {};
  for (std::size_t i = 0; i < take; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    buf[i] = c < 0x20 || c == 0x7f ? '?' : name[i];
  }
  for (std::size_t i = 0; i < tail && take + i < kKept; ++i) buf[take + i] = suffix[i];
  pthread_setname_np(pthread_self(), buf);
}

}  // namespace

namespace sluice::detail {
namespace {

using clock = std::chrono::steady_clock;

// Test seam (testing::fail_thread_creation_after): threads start() may still create.
std::atomic<long> g_thread_budget{-1};

// The graph whose on_discard this thread is inside (null: none).
thread_local const void* t_in_discard = nullptr;
// The graph whose stage or supervisor thread this is, or whose on_done this thread runs
// (null: none): a wait() from there would wait for itself.
thread_local const void* t_graph_thread = nullptr;

// Marks this thread as inside `g`'s hook (or thread) for its scope.
class thread_mark {
 public:
  thread_mark(const void*& mark, const void* g) noexcept : mark_(mark), prev_(mark) { mark_ = g; }
  ~thread_mark() { mark_ = prev_; }
  thread_mark(const thread_mark&) = delete;
  thread_mark& operator=(const thread_mark&) = delete;

 private:
  const void*& mark_;
  const void* prev_;
};

// This thread is one of `g`'s own (a stage, its supervisor, a hook it runs): it must not
// wait for `g`, nor destroy it.
bool on_own_thread(const void* g) noexcept { return t_graph_thread == g || t_in_discard == g; }

class discard_hook_scope : public thread_mark {
 public:
  explicit discard_hook_scope(const void* g) noexcept : thread_mark(t_in_discard, g) {}
};

// A stage's thread is in the dead-letter path (its hook call, or the wait for another
// thread's to end) for the mark's life: the stuck line then says so, not "in its cleanup".
class discard_mark {
 public:
  explicit discard_mark(stage_node* n) noexcept : n_(n) {
    if (n_ != nullptr) n_->in_discard.fetch_add(1, std::memory_order_relaxed);  // relaxed: a hint
  }
  discard_mark(const discard_mark&) = delete;
  discard_mark& operator=(const discard_mark&) = delete;
  ~discard_mark() {
    if (n_ != nullptr) n_->in_discard.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  stage_node* n_;
};

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

}  // namespace

namespace {
// A teardown deadline of zero or less named every stage stuck at once, even those a
// microsecond from exiting; a negative stall threshold meant nothing. Both are mistakes.
graph_options checked(graph_options o) {
  auto ns = [](std::chrono::steady_clock::duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) + " ns";
  };
  if (o.teardown_deadline <= o.teardown_deadline.zero()) {
    throw std::invalid_argument("sluice::graph: graph_options::teardown_deadline must be above zero (got " +
                                ns(o.teardown_deadline) + ")");
  }
  if (o.stall_threshold < o.stall_threshold.zero()) {
    throw std::invalid_argument("sluice::graph: graph_options::stall_threshold must be zero (off) or above (got " +
                                ns(o.stall_threshold) + ")");
  }
  return o;
}
}  // namespace

graph_state::graph_state(graph_options o) : opts_(checked(std::move(o))) {}

graph_state::~graph_state() {
  if (on_own_thread(this)) {
    // A stage, hook or the supervisor dropped the last reference to its own graph: the
    // destructor would have to wait for the very thread it runs on, and that thread goes
    // on using the graph after the call returns. Nothing can make that safe; say what
    // happened instead of std::terminate's bare "without an active exception".
    std::fputs("sluice::graph: destroyed from one of its own stages, hooks or its supervisor (it cannot wait for "
               "itself); keep the graph alive until wait() returns on another thread\n",
               stderr);
    std::abort();
  }
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
  // Fused stages whose host never ended (the graph never ran) still hold their copies and
  // their direct input: release them (idempotent after a run).
  for (auto& n : nodes_) {
    if (n->fused) n->fused->release();
  }
  for (auto& c : channels_) c->pending.reset();
  // Every input has lost its receivers by now, so it is sealed: no push through an inlet
  // (which may outlive us) can succeed any more. A push that claimed its slot before the
  // seal still lands and discards its own item, reporting it to us: wait for those reports
  // while we can take them (channel_control::wait_discards).
  for (auto& c : channels_) {
    if (c->producer < nodes_.size() && nodes_[c->producer]->is_input) c->control->wait_discards();
  }
  dying_.store(true, std::memory_order_relaxed);  // single-threaded by now
  channels_.clear();
}

// ---- building --------------------------------------------------------------------

void graph_state::check_can_add(const std::string& name) const {
  std::lock_guard lk(mu_);
  if (started_) throw std::logic_error("sluice::graph: stage '" + name + "' added after start()");
  if (name.empty()) throw std::logic_error("sluice::graph: a stage needs a name");
  // Compared as exported (metrics::to_json / to_prometheus write each byte that is not
  // UTF-8 as U+FFFD): two names that differ only there would be one series.
  const std::string shown = utf8_clean(name);
  const auto it = shown_names_.find(shown);
  if (it == shown_names_.end()) return;
  const std::string& other = nodes_[it->second]->name;
  if (other == name) throw std::logic_error("sluice::graph: two stages are named '" + name + "'");
  throw std::logic_error("sluice::graph: stages '" + shown + "' and '" + utf8_clean(other) +
                         "' differ only in bytes that are not UTF-8, so their metrics would have one name");
}

void graph_state::check_input(std::size_t channel) const {
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

std::string graph_state::unique_name(const std::string& base) const {
  std::lock_guard lk(mu_);
  auto taken = [&](const std::string& s) { return shown_names_.contains(utf8_clean(s)); };
  if (!taken(base)) return base;
  for (std::size_t i = 2;; ++i) {
    std::string s = base + "#" + std::to_string(i);
    if (!taken(s)) return s;
  }
}

std::size_t graph_state::add_node(node_spec spec) {
  auto n = std::make_unique<stage_node>(std::move(spec));
  n->inside = std::make_unique<std::atomic<const void*>[]>(n->threads);  // value-initialised: null
  std::string shown = utf8_clean(n->name);
  std::lock_guard lk(mu_);
  const std::size_t index = nodes_.size();
  const auto [at, fresh] = shown_names_.emplace(std::move(shown), index);  // the first keeps a name
  try {
    nodes_.push_back(std::move(n));
  } catch (...) {
    if (fresh) shown_names_.erase(at);  // out of memory: the graph is as it was
    throw;
  }
  return index;
}

void graph_state::abandon_node(std::size_t node) noexcept {
  std::unique_ptr<stage_node> gone;
  std::vector<std::unique_ptr<channel_entry>> gone_channels;  // destroyed unlocked
  std::lock_guard lk(mu_);
  if (node + 1 != nodes_.size()) return;  // only the last node (builders add one at a time)
  for (const std::size_t in : nodes_[node]->inputs) {
    channel_entry& c = *channels_[in];
    c.consumer = kNoNode;  // the receiver is still pending
    // "<producer> -> <consumer>" back to add_channel's "<producer> -> ?", in place: a
    // shorter string needs no allocation (this runs after an out-of-memory, noexcept).
    c.name.resize(nodes_[c.producer]->name.size() + std::string_view(" -> ").size());
    c.name += '?';
  }
  while (!channels_.empty() && channels_.back()->producer == node) {
    gone_channels.push_back(std::move(channels_.back()));
    channels_.pop_back();
  }
  std::erase_if(shown_names_, [&](const auto& e) { return e.second == node; });  // allocates nothing
  gone = std::move(nodes_.back());
  nodes_.pop_back();
}

void graph_state::commit_node(std::size_t node) noexcept {
  std::lock_guard lk(mu_);
  for (const std::size_t in : nodes_[node]->inputs) channels_[in]->pending.reset();
}

void graph_state::set_factory(std::size_t node, replica_factory f) {
  std::lock_guard lk(mu_);
  nodes_[node]->factory = std::move(f);
}

void graph_state::set_fused(std::size_t node, std::shared_ptr<fused_control> f) {
  std::lock_guard lk(mu_);
  nodes_[node]->fused = std::move(f);
}

std::size_t graph_state::next_channel_id() const {
  std::lock_guard lk(mu_);
  return channels_.size();
}

std::size_t graph_state::add_channel(std::size_t producer, std::unique_ptr<channel_control> control,
                                    std::shared_ptr<void> receiver, bool weighted) {
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

std::shared_ptr<void> graph_state::take_input(std::size_t channel, std::size_t consumer) {
  std::lock_guard lk(mu_);
  auto& c = *channels_[channel];
  nodes_[consumer]->inputs.reserve(nodes_[consumer]->inputs.size() + 1);  // abandon_node finds every input taken
  c.consumer = consumer;
  // Two stages joined more than once (a merge of several branches of one partition or
  // round_robin): the later channels get " #2", " #3", ... in branch order, so that each
  // one has a name of its own in snapshots, metrics series and dead letters. So does a
  // channel whose name another has already, from other stages ("x" -> "y -> z" and
  // "x -> y" -> "z" were both "x -> y -> z", and a stall's chain named the wrong holder).
  const std::string base = nodes_[c.producer]->name + " -> " + nodes_[consumer]->name;
  std::size_t n = 1;
  for (const std::size_t in : nodes_[consumer]->inputs) {
    if (channels_[in]->producer == c.producer) ++n;
  }
  auto named = [&](std::size_t k) { return k == 1 ? base : base + " #" + std::to_string(k); };
  // Compared as exported, as stage names are: "a -> \xff" -> "c" and "a" -> "\xfe -> c"
  // were two channels named "a -> \uFFFD -> c" in the JSON, and the live page's chain
  // drew one's holder for the other (a probe).
  auto taken = [&](const std::string& name) {
    const std::string shown = utf8_clean(name);
    return std::any_of(channels_.begin(), channels_.end(), [&](const auto& other) {
      return other.get() != &c && other->consumer != kNoNode && utf8_clean(other->name) == shown;
    });
  };
  while (taken(named(n))) ++n;
  c.name = named(n);
  nodes_[consumer]->inputs.push_back(channel);
  return c.pending;  // kept until commit_node(consumer)
}

std::size_t graph_state::channel_capacity(std::size_t channel) const {
  std::lock_guard lk(mu_);
  return channels_[channel]->control->stats().capacity;
}

std::string graph_state::producer_name(std::size_t channel) const {
  std::lock_guard lk(mu_);
  return nodes_[channels_[channel]->producer]->name;
}

void graph_state::edit_channel(const std::function<void()>& f) {
  std::lock_guard lk(mu_);
  f();
}

void graph_state::settle_input(std::size_t node) {
  channel_control* c = nullptr;
  bool cancel = false;
  {
    std::lock_guard lk(mu_);
    if (nodes_[node]->outputs.empty()) return;
    c = channels_[nodes_[node]->outputs.front()]->control.get();
    cancel = record_.what() == failure_record::outcome::cancelled;
    if (!cancel && !stop_requested_) return;
  }
  // After the lock, as cancel() does; the channel is new and holds nothing.
  if (cancel) {
    c->cancel(std::make_exception_ptr(sluice::cancelled()));
  } else {
    c->close();
  }
}

std::size_t graph_state::producer_of(std::size_t channel) const {
  std::lock_guard lk(mu_);
  return channels_[channel]->producer;
}

std::string graph_state::node_name(std::size_t node) const {
  std::lock_guard lk(mu_);
  return nodes_[node]->name;
}

std::size_t graph_state::fuse_host(std::size_t channel, const std::string& name) const {
  std::lock_guard lk(mu_);
  const stage_node& p = *nodes_[channels_[channel]->producer];
  const std::string who = "sluice::graph: stage '" + name + "' cannot be fused: ";
  if (p.is_input) {
    throw std::logic_error(who + "its upstream '" + p.name + "' is an input (g.input<T>()), which has no thread to run it");
  }
  if (p.outputs.size() != 1) {
    throw std::logic_error(who + "its upstream '" + p.name + "' has " + std::to_string(p.outputs.size()) +
                           " outputs (a fused stage must be its upstream's only consumer)");
  }
  // Each item's call, and the chain's end, nest once per fused stage on the host thread's
  // stack: 30,000 fused stages overflowed a default 8 MiB stack (a crash, at the first item).
  constexpr std::size_t kMaxFusedChain = 1000;
  std::size_t chain = 1;  // this stage
  for (const stage_node* q = &p; q->fused && !q->inputs.empty(); q = nodes_[channels_[q->inputs.front()]->producer].get()) {
    ++chain;
  }
  if (chain > kMaxFusedChain) {
    throw std::logic_error(who + "a chain of fused stages is at most " + std::to_string(kMaxFusedChain) +
                           " long (each item's call nests once per fused stage on its host thread's stack)");
  }
  return p.fused ? p.host : channels_[channel]->producer;
}

std::size_t graph_state::node_threads(std::size_t node) const {
  std::lock_guard lk(mu_);
  return nodes_[node]->threads;
}

const void* graph_state::node_key(std::size_t node) const {
  std::lock_guard lk(mu_);
  return nodes_[node].get();
}

replica_env graph_state::fused_env(std::size_t node) {
  std::lock_guard lk(mu_);
  stage_node& n = *nodes_[node];
  return replica_env(*this, n, n.stop.get_token());
}

void graph_state::set_fault_hook(fault_hook* h) {
  std::lock_guard lk(mu_);
  if (!nodes_.empty() || started_) {
    throw std::logic_error("sluice::graph: a fault hook is set before the first stage is added");
  }
  fault_ = h;
}

// ---- start / wait ------------------------------------------------------------------

// abort_start's stage for none (the supervisor): a reference, since a string made in a
// catch handler, out of memory, threw out of start() and left the run never finished.
const std::string kNoStage;

void graph_state::start() {
  struct pending_task {
    stage_node* node;
    std::size_t index;
    std::unique_ptr<replica_task> task;
  };
  std::vector<pending_task> tasks;
  std::exception_ptr factory_error;
  bool nothing = false;
  bool stop_now = false;
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
      const stage_node* making = nullptr;
      try {
        for (auto& n : nodes_) {
          making = n.get();
          for (std::size_t i = 0; i < n->threads; ++i) tasks.push_back({n.get(), i, n->factory(i)});
        }
      } catch (...) {
        // The stage's own code threw (its function's copy constructor, for a replica):
        // a failure of that stage, as it would be once running (DESIGN section 3).
        ran_nothing_ = true;
        factory_error = std::current_exception();
        if (making != nullptr) {
          try {
            factory_error = std::make_exception_ptr(stage_error(making->name, factory_error, 0));
          } catch (...) {
            // Out of memory again (as it is when it runs out): the bare error. Thrown out of
            // here, it left the run started and never finished: wait() and ~graph hung.
          }
        }
        start_error_ = factory_error;
        nothing = true;
      }
    }
    if (!nothing) {
      for (auto& n : nodes_) {
        n->live.store(n->threads, std::memory_order_relaxed);  // published by thread creation
        // A fused stage runs while its host does; finish_fused marks it done.
        if (n->fused) n->state.store(static_cast<int>(stage_state::running), std::memory_order_relaxed);
      }
      // request_stop() from an on_discard hook before the run (see ask_supervisor).
      if ((hook_asks_.load(std::memory_order_acquire) & kAskStop) != 0) stop_requested_ = true;
      stop_now = stop_requested_;
    }
  }
  // The factories hold the stage function objects, and the tasks their copies: released
  // after the lock (nodes_ is fixed once started_ is set, and nothing else reads a
  // factory), since a function object's destructor (a stage's cleanup) may call
  // snapshot(), cancel() or request_stop() on this graph, which take mu_: run()
  // deadlocked on itself when the graph was cancelled before start (a probe). The
  // builders' handles in them must not keep channels open.
  if (nothing) tasks.clear();
  for (auto& n : nodes_) n->factory = nullptr;
  // Before any thread starts, as it was under the lock: the sources start stopped. Outside
  // mu_: closing an inlet runs its on_writable callbacks, which may take a snapshot().
  if (stop_now) apply_stop_request();
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
  try {
    threads_.reserve(tasks.size());
  } catch (...) {
    // Out of memory before the first thread: the same end as a thread that cannot be
    // made (it once escaped here, with the run started and never finished: wait() and
    // the destructor hung).
    const std::exception_ptr e =
        abort_start(std::current_exception(), 0, needed, tasks.empty() ? kNoStage : tasks.front().node->name);
    tasks.clear();
    std::rethrow_exception(e);
  }
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    try {
      maybe_fail_thread_creation();
      stage_node* n = tasks[k].node;
      const std::size_t i = tasks[k].index;
      threads_.emplace_back([this, n, i, t = std::move(tasks[k].task)]() mutable {
        name_this_thread(n->name, n->threads > 1 ? i : SIZE_MAX);  // allocates nothing (a copy's bad_alloc was std::terminate)
        t_graph_thread = this;
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
      t_graph_thread = this;
      // After the gate, which opens once supervisor_ holds this thread: a graph with no
      // stage threads ends as soon as the supervisor runs, and a wait_for() on another
      // thread that took that outcome before the assignment found supervisor_ not yet
      // joinable, joined nothing, and the graph's destructor called std::terminate.
      if (!await_start_gate()) return;
      supervisor_loop();
    });
  } catch (...) {
    std::rethrow_exception(abort_start(std::current_exception(), tasks.size(), needed, kNoStage));
  }
  open_start_gate(true);
}

bool graph_state::await_start_gate() {
  std::unique_lock lk(gate_mu_);
  gate_cv_.wait(lk, [&] { return gate_ != 0; });
  return gate_ == 1;
}

void graph_state::open_start_gate(bool go) {
  {
    std::lock_guard lk(gate_mu_);
    gate_ = go ? 1 : 2;
  }
  gate_cv_.notify_all();
}

std::exception_ptr graph_state::abort_start(std::exception_ptr why, std::size_t started, std::size_t needed,
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

void graph_state::finish_run() noexcept {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  seal_leftover_channels();
  // An inlet push that claimed its slot before its input was closed or cancelled lands
  // after, and if the run tore down it discards its own item: wait for those (short:
  // pushes already past their claim), so that the report and on_done count them. They
  // came after both: the report stayed unbalanced and the dead letter followed on_done.
  for (auto& c : channels_) {
    if (c->producer < nodes_.size() && nodes_[c->producer]->is_input) c->control->wait_discards();
  }
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
    const thread_mark in_hook(t_graph_thread, this);
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

// Every stage has ended. A channel still open, or holding items, has a handle that a
// stage function copied and kept past its end (a receiver stored elsewhere): cancel it,
// so its items are dead letters now, counted in the report while the graph is here to
// take them, and nothing reaches this graph's hooks once it is gone (a receiver copy
// released after the graph was destroyed called the destroyed graph's on_discard).
void graph_state::seal_leftover_channels() noexcept {
  for (auto& c : channels_) {
    if (c->producer < nodes_.size() && nodes_[c->producer]->is_input) continue;  // inlets seal themselves
    bool leftover = !c->control->closed();
    if (!leftover) {
      try {
        leftover = c->control->stats().items != 0;
      } catch (...) {
        leftover = true;
      }
    }
    if (!leftover) continue;
    std::exception_ptr why;
    try {
      why = std::make_exception_ptr(sluice::cancelled());
    } catch (...) {
    }
    c->control->cancel(why);
    c->control->wait_discards();
  }
}

void graph_state::check_may_wait(const char* what) const {
  if (on_own_thread(this)) {
    throw std::logic_error(std::string("sluice::graph: ") + what +
                           " called from the graph's own stage, supervisor or hook (on_done, on_discard, on_stall, "
                           "on_stuck); it would wait for itself. Signal a thread of your own that waits instead");
  }
}

report graph_state::wait() {
  check_may_wait("wait()");
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

std::optional<report> graph_state::wait_for(clock::duration d) {
  check_may_wait("wait_for()");
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

report graph_state::collect() {
  if (supervisor_.joinable()) supervisor_.join();
  std::exception_ptr outcome;
  {
    std::lock_guard lk(life_mu_);
    outcome = outcome_;
  }
  if (outcome) std::rethrow_exception(outcome);
  return last_report();
}

report graph_state::last_report() const {
  std::lock_guard lk(report_mu_);
  return last_;
}

// ---- dead letters -----------------------------------------------------------------

bool graph_state::in_discard_hook() const noexcept { return t_in_discard == this; }

void graph_state::discard(std::size_t channel, const std::type_info& type, void* item) noexcept {
  if (!opts_.on_discard || dying_.load(std::memory_order_relaxed)) return;
  const discard_mark busy(current_stage_scope::of(this));  // before the lock: waiting for it counts
  // channels_ and nodes_ are immutable once started (and only the building thread or a
  // caller holding mu_ touches them before), so names can be read without mu_.
  std::lock_guard lk(dead_mu_);
  const discard_hook_scope in_hook(this);
  try {
    const channel_entry& c = *channels_[channel];
    const std::string_view consumer = c.consumer != kNoNode ? std::string_view(nodes_[c.consumer]->name) : "";
    opts_.on_discard(dead_letter(c.name, type, item, consumer));
  } catch (...) {
    // on_discard must not throw; it runs inside cancels and destructors.
  }
}

void graph_state::discard_failed(std::size_t channel, const stage_node& n, const std::type_info& type, void* item,
                                std::exception_ptr why, bool stage_threw) noexcept {
  if (fault_ != nullptr && stage_threw) fault_->on_stage_exception(n.name, why, tearing_down());
  count_held(channel, 1);
  if (!opts_.on_discard || dying_.load(std::memory_order_relaxed)) return;
  const discard_mark busy(current_stage_scope::of(this));
  std::lock_guard lk(dead_mu_);
  const discard_hook_scope in_hook(this);
  try {
    opts_.on_discard(dead_letter(channels_[channel]->name, type, item, n.name, std::move(why)));
  } catch (...) {
    // on_discard must not throw.
  }
}

// ---- graph_core: the narrow interface graph.hpp sees ---------------------------------

graph_core::graph_core(graph_options o) : state_(std::make_unique<graph_state>(std::move(o))) {}
graph_core::~graph_core() = default;

void graph_core::check_can_add(const std::string& name) const { state_->check_can_add(name); }
void graph_core::check_input(const graph_core* owner, std::size_t channel) const {
  if (owner != this) {
    throw std::logic_error("sluice::graph: the stream is empty or belongs to another graph");
  }
  state_->check_input(channel);
}
std::string graph_core::unique_name(const std::string& base) const { return state_->unique_name(base); }
std::size_t graph_core::add_node(node_spec n) { return state_->add_node(std::move(n)); }
void graph_core::abandon_node(std::size_t node) noexcept { state_->abandon_node(node); }
void graph_core::commit_node(std::size_t node) noexcept { state_->commit_node(node); }
void graph_core::set_factory(std::size_t node, replica_factory f) { state_->set_factory(node, std::move(f)); }
void graph_core::set_fused(std::size_t node, std::shared_ptr<fused_control> f) { state_->set_fused(node, std::move(f)); }
std::size_t graph_core::next_channel_id() const { return state_->next_channel_id(); }
void graph_core::rethrow_naming(std::size_t node) const {
  const std::string where = "sluice::graph: stage '" + state_->node_name(node) + "': ";
  // "sluice::bounded: capacity N needs ..." reads "sluice::graph: stage 'm': capacity N needs ...".
  auto rest = [](std::string_view what) {
    constexpr std::string_view kChannel = "sluice::bounded: ";
    if (what.starts_with(kChannel)) what.remove_prefix(kChannel.size());
    return std::string(what);
  };
  try {
    throw;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(where + rest(e.what()));
  } catch (const std::bad_alloc& e) {
    throw capacity_bad_alloc(where + rest(e.what()));
  }
}
std::size_t graph_core::add_channel(std::size_t producer, std::unique_ptr<channel_control> control,
                                    std::shared_ptr<void> receiver, bool weighted) {
  return state_->add_channel(producer, std::move(control), std::move(receiver), weighted);
}
std::size_t graph_core::channel_capacity(std::size_t channel) const { return state_->channel_capacity(channel); }
std::string graph_core::producer_name(std::size_t channel) const { return state_->producer_name(channel); }
std::size_t graph_core::producer_of(std::size_t channel) const { return state_->producer_of(channel); }
std::size_t graph_core::fuse_host(std::size_t channel, const std::string& name) const {
  return state_->fuse_host(channel, name);
}
std::size_t graph_core::node_threads(std::size_t node) const { return state_->node_threads(node); }
const void* graph_core::node_key(std::size_t node) const { return state_->node_key(node); }
replica_env graph_core::fused_env(std::size_t node) { return state_->fused_env(node); }
std::shared_ptr<void> graph_core::take_input(std::size_t channel, std::size_t consumer) {
  return state_->take_input(channel, consumer);
}
void graph_core::edit_channel(const std::function<void()>& f) { state_->edit_channel(f); }
void graph_core::settle_input(std::size_t node) { state_->settle_input(node); }
void graph_core::set_fault_hook(fault_hook* h) { state_->set_fault_hook(h); }
fault_hook* graph_core::faults() const noexcept { return state_->faults(); }

void graph_core::start() { state_->start(); }
report graph_core::wait() { return state_->wait(); }
std::optional<report> graph_core::wait_for(clock::duration d) { return state_->wait_for(d); }
bool graph_core::done() const noexcept { return state_->done(); }
void graph_core::request_stop() { state_->request_stop(); }
void graph_core::cancel() { state_->cancel(); }
metrics::snapshot graph_core::snapshot() const { return state_->snapshot(); }
report graph_core::last_report() const { return state_->last_report(); }

bool graph_core::tearing_down() const noexcept { return state_->tearing_down(); }
bool graph_core::has_discard_hook() const noexcept { return state_->has_discard_hook(); }
void graph_core::discard(std::size_t channel, const std::type_info& type, void* item) noexcept {
  state_->discard(channel, type, item);
}
void graph_core::count_held(std::size_t channel, std::uint64_t n) noexcept { state_->count_held(channel, n); }
std::vector<std::string> graph_core::fused_calls_in_progress() const {
  const std::vector<std::size_t> calls = state_->fused_calls();
  std::vector<std::string> names;
  for (std::size_t j = 0; j < calls.size(); ++j) {
    if (calls[j] != 0) names.push_back(state_->node_name(j));
  }
  return names;
}
void graph_core::discard_held(std::size_t channel, const std::type_info& type, void* item) noexcept {
  state_->count_held(channel, 1);
  state_->discard(channel, type, item);
}

namespace testing {
void fail_thread_creation_after(long n) noexcept { g_thread_budget.store(n < 0 ? -1 : n, std::memory_order_relaxed); }
void take_thread_budget() { maybe_fail_thread_creation(); }
}  // namespace testing

}  // namespace sluice::detail

