// The supervisor: what a stage thread does around its loop (error policies, restarts,
// cleanup, closing its outputs) and how the graph is torn down (first failure wins,
// cancel every channel, request every stop token, wake wait()).
#include "sluice/supervisor.hpp"

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#endif

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <typeinfo>

#include "graph_state.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/process_info.hpp"

namespace sluice::detail {
namespace {

// A replica in its restart backoff, for the snapshot's "restarting" and the stall
// watchdog (a chain that ends at it waits for a timer, not a stall).
struct backoff_mark {
  explicit backoff_mark(stage_node& n) noexcept : n_(n) { n_.backing_off.fetch_add(1, std::memory_order_relaxed); }
  ~backoff_mark() { n_.backing_off.fetch_sub(1, std::memory_order_relaxed); }
  backoff_mark(const backoff_mark&) = delete;
  backoff_mark& operator=(const backoff_mark&) = delete;

 private:
  stage_node& n_;
};

// Sleeps for d (a restart's backoff), or until stop is requested (teardown), or until the
// graph is asked to stop (request_stop): the stage restarts at once, so that what is queued
// for it drains now rather than after the whole backoff. That holds for a failure after
// the request too: one while draining was slept whole, so a graceful stop waited out
// every backoff of the drain, and one of duration::max() never ended (fused, the same
// stage restarted at once). A stage that keeps failing while draining still meets its
// restart limit, which then fails the graph with its error.
void sleep_or_stop(std::chrono::steady_clock::duration d, const std::stop_token& stop,
                   const std::stop_token& graph_stopping) {
  if (d <= d.zero() || graph_stopping.stop_requested()) return;
  std::mutex m;
  std::condition_variable_any cv;
  bool woken = false;
  auto wake = [&]() noexcept {
    std::lock_guard lk(m);
    woken = true;
    cv.notify_all();
  };
  // A request made since the check above runs the callback at once (std::stop_callback's
  // rule), so woken is already true.
  const std::stop_callback on_stopping(graph_stopping, wake);
  std::unique_lock lk(m);
  // now() + d overflows for a huge d (duration::max() restarted at once): a wait past
  // ~100 years is a wait for the stop requests alone.
  constexpr auto kForever = std::chrono::hours(24 * 365 * 100);
  if (d >= kForever) {
    cv.wait(lk, stop, [&] { return woken; });
  } else {
    cv.wait_for(lk, stop, d, [&] { return woken; });
  }
}

// The type of the exception being handled, demangled ("int", "my::error"), for a cause
// that is not a std::exception: its type is all there is to say. Empty where the ABI
// will not say.
std::string current_exception_type() {
#if __has_include(<cxxabi.h>)
  if (const std::type_info* t = abi::__cxa_current_exception_type(); t != nullptr) {
    int rc = -1;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(t->name(), nullptr, nullptr, &rc), std::free);
    return rc == 0 && name ? name.get() : t->name();
  }
#endif
  return {};
}

}  // namespace

std::string describe_exception(const std::exception_ptr& cause) {
  if (!cause) return "no exception was kept";  // not what any stage throws
  try {
    std::rethrow_exception(cause);
  } catch (const std::exception& e) {
    const char* w = e.what();  // null breaks what()'s contract; said, not dereferenced
    return w != nullptr ? w : "an exception whose what() is null";
  } catch (const char* s) {  // throw "text" (or a char*): its text, which is all the thrower said
    return s != nullptr ? "\"" + std::string(s) + "\" (a thrown C string)" : "a thrown null C string";
  } catch (const std::string& s) {
    return "\"" + s + "\" (a thrown std::string)";
  } catch (...) {
    // Not caught as a std::exception: not derived from it, or derived ambiguously or
    // privately (then the type name says which).
    const std::string type = current_exception_type();
    return (type.empty() ? std::string("an exception of unknown type") : "an exception of type '" + type + "'") +
           ", not caught as a std::exception";
  }
}

std::string describe_failure(const std::string& stage, const std::exception_ptr& cause) {
  return "sluice: stage '" + stage + "' failed: " + describe_exception(cause);
}

// ---- replica_env ----------------------------------------------------------------

bool replica_env::stopping() const noexcept {
  // relaxed: both are one-way flags; a stale false costs at most one more item, and
  // the channel cancel that follows a teardown wakes any blocked operation anyway.
  return graph_->tearing_down() || node_->finished.load(std::memory_order_relaxed);
}
void replica_env::finish_stage() noexcept { node_->finished.store(true, std::memory_order_relaxed); }
bool replica_env::skips() const noexcept { return node_->policy.what() == error_policy::kind::skip; }
bool replica_env::restarts() const noexcept { return node_->policy.what() == error_policy::kind::restart; }
void replica_env::count_error() noexcept { node_->errors.fetch_add(1, std::memory_order_relaxed); }
void replica_env::discard_failed(std::size_t channel, const std::type_info& type, void* item,
                                 std::exception_ptr why) noexcept {
  graph_->discard_failed(channel, *node_, type, item, std::move(why));
}
replica_env::after_error replica_env::fused_error(std::exception_ptr why, bool item) noexcept {
  return graph_->fused_error(*node_, std::move(why), item);
}
const std::string& replica_env::stage_name() const noexcept { return node_->name; }
void replica_env::fused_fail(std::exception_ptr why) noexcept {
  node_->errors.fetch_add(1, std::memory_order_relaxed);
  node_->any_failed.store(true, std::memory_order_relaxed);
  graph_->fail(*node_, std::move(why));
}

// ---- a fused stage's error policy (on its host's thread) ------------------------------

replica_env::after_error graph_state::fused_error(stage_node& n, std::exception_ptr e, bool item) noexcept {
  using after = replica_env::after_error;
  if (item && n.policy.what() == error_policy::kind::skip) {
    n.errors.fetch_add(1, std::memory_order_relaxed);  // as item_task's count_error()
    return after::go_on;
  }
  // stop and restart: as run_replica does for an exception that left the stage's loop.
  if (fault_ != nullptr) fault_->on_stage_exception(n.name, e, tearing_down());
  n.errors.fetch_add(1, std::memory_order_relaxed);
  if (n.policy.what() == error_policy::kind::restart && !tearing_down()) {
    bool again = false;
    try {
      again = allow_restart(n);
    } catch (...) {
      again = false;
    }
    if (again) {
      try {
        const backoff_mark mark(n);
        sleep_or_stop(n.policy.limits().backoff, n.stop.get_token(), stopping_.get_token());
      } catch (...) {
      }
      if (tearing_down()) return after::stop;
      // Counted once it is made, not before the backoff: a teardown that cut the backoff
      // short left a restart counted that never ran.
      n.restarts.fetch_add(1, std::memory_order_relaxed);
      return after::renew;
    }
  }
  n.any_failed.store(true, std::memory_order_relaxed);
  fail(n, e);
  return after::stop;
}

// ---- a stage thread ----------------------------------------------------------------

void graph_state::run_replica(stage_node& n, std::size_t index, std::unique_ptr<replica_task> task) noexcept {
  const std::int64_t t0 = now_ns();
  // relaxed: time accounting read by snapshot() as a recent value.
  n.running.fetch_add(1, std::memory_order_relaxed);
  n.running_since.fetch_add(t0, std::memory_order_relaxed);
  int idle = static_cast<int>(stage_state::idle);
  n.state.compare_exchange_strong(idle, static_cast<int>(stage_state::running), std::memory_order_relaxed);

  replica_env env(*this, n, n.stop.get_token());
  const current_stage_scope current(*this, n);  // for this_stage:: calls from the stage function
  // Fused stages pick this thread's copy by it, and mark in n.inside[index] when their call runs.
  tls_stage_thread = stage_thread{&n, index, &n.inside[index]};
  if (fault_ != nullptr) fault_->on_thread_begin(n.name, index);
  // A thread that starts after a teardown (cancel() during start) calls nothing.
  while (!tearing_down()) {
    // relaxed: a hint for the stuck line (in the function, or in cleanup).
    n.in_function.fetch_add(1, std::memory_order_relaxed);
    try {
      task->run(env);
      n.in_function.fetch_sub(1, std::memory_order_relaxed);
      break;
    } catch (...) {
      n.in_function.fetch_sub(1, std::memory_order_relaxed);
      std::exception_ptr e = std::current_exception();
      if (fault_ != nullptr) fault_->on_stage_exception(n.name, e, tearing_down());
      if (!current.take_counted(e)) n.errors.fetch_add(1, std::memory_order_relaxed);
      if (n.policy.what() == error_policy::kind::restart && !tearing_down()) {
        bool again = false;
        try {
          again = allow_restart(n);
        } catch (...) {
          again = false;
        }
        if (again) {
          try {
            const backoff_mark mark(n);
            sleep_or_stop(n.policy.limits().backoff, env.stop_token(), stopping_.get_token());
          } catch (...) {
          }
          if (tearing_down()) break;
          try {
            task->renew();  // destroys the failed copy (its cleanup), makes a fresh one
            // Counted once made (a teardown that cut the backoff counted one never run).
            n.restarts.fetch_add(1, std::memory_order_relaxed);
            continue;
          } catch (...) {
            e = std::current_exception();
          }
        }
      }
      n.any_failed.store(true, std::memory_order_relaxed);
      fail(n, e);
      break;
    }
  }
  task.reset();  // releases this replica's handles (the last receiver disconnects) and function
  if (fault_ != nullptr) fault_->on_replica_released(n.name);
  finish_replica(n, t0);
  tls_stage_thread = stage_thread{};
  if (fault_ != nullptr) fault_->on_thread_end();
}

void graph_state::finish_replica(stage_node& n, std::int64_t t0) noexcept {
  const std::int64_t t1 = now_ns();
  n.exited_ns.fetch_add(t1 - t0, std::memory_order_relaxed);
  n.running.fetch_sub(1, std::memory_order_relaxed);
  n.running_since.fetch_sub(t0, std::memory_order_relaxed);
  // relaxed, before the release in the decrement below: wait() reads live (acquire), then
  // exiting, so a stage whose last replica is still in on_close is named stuck too.
  n.exiting.fetch_add(1, std::memory_order_relaxed);
  // acq_rel: the last replica sees everything the others did (as a reference count).
  if (n.live.fetch_sub(1, std::memory_order_acq_rel) == 1) close_stage(n);
  n.exiting.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard lk(life_mu_);
  if (--alive_ == 0) life_cv_.notify_all();
}

void graph_state::end_outputs(const stage_node& n) noexcept {
  if (tearing_.load(std::memory_order_acquire)) {
    const std::exception_ptr why = teardown_cause();
    for (std::size_t ch : n.outputs) channels_[ch]->control->cancel(why);
  } else {
    for (std::size_t ch : n.outputs) channels_[ch]->control->close();
  }
}

void graph_state::finish_fused_after(const stage_node& n) noexcept {
  for (std::size_t ch : n.outputs) {
    const std::size_t c = channels_[ch]->consumer;
    if (c != kNoNode && nodes_[c]->fused) finish_fused(*nodes_[c]);
  }
}

// A fused stage ends as finish_replica ends a stage's last thread: its function copies
// go first (their destructors are the cleanup), then close_stage.
void graph_state::finish_fused(stage_node& f) noexcept {
  f.exiting.fetch_add(1, std::memory_order_relaxed);
  f.fused->release();
  close_stage(f);
  f.exiting.fetch_sub(1, std::memory_order_relaxed);
}

// The end of a stage, once nothing of it runs any more (its last thread, or for a fused
// stage its host's): on_close, then its outputs, then the fused stages after it, then
// its state.
void graph_state::close_stage(stage_node& n) noexcept {
  if (n.on_close) {
    try {
      n.on_close();
    } catch (...) {
      std::exception_ptr e = std::current_exception();
      // stress sees it as the user's own exception even when an earlier failure wins the
      // run and this one is only counted as suppressed (it was hidden then).
      if (fault_ != nullptr) fault_->on_stage_exception(n.name, e, false);
      n.errors.fetch_add(1, std::memory_order_relaxed);
      n.any_failed.store(true, std::memory_order_relaxed);
      fail(n, std::move(e));
    }
  }
  // Cleanup first, then end of stream: a consumer that sees the end also sees the
  // cleanup's effects (close() publishes them like a push).
  if (fault_ != nullptr) fault_->on_stage_closed(n.name, static_cast<bool>(n.on_close));
  // Once the graph is being torn down, an ending stage cancels its outputs instead of
  // closing them: a stage that returned because its input was cancelled (or that simply
  // finished during the teardown) must not hand downstream a normal end of stream before
  // the teardown reaches that channel, or a sink such as write_file would commit a
  // cut-short output as complete. teardown() sets tearing_ before it cancels any
  // channel, so a stage that ended because it saw a cancel reads true here.
  end_outputs(n);
  // Its inputs are disconnected, as the last receiver's release does: a receiver the
  // stage's function copied and kept (stored elsewhere) held its input connected, and the
  // producer upstream blocked on it for ever, the run never ending. (A fused stage's
  // input is its host's direct call, which ends with the host.)
  if (!n.fused) {
    for (std::size_t ch : n.inputs) {
      channels_[ch]->control->disconnect();
      // A fused stage feeding this one ran for it alone: nobody reads its output now, so
      // its own input (its host's direct call) is disconnected too, up the fused chain.
      // The host then sees is_closed() without pushing again: a subscribe waiting for
      // messages that never came fetched on for ever after a fused map's sink finished.
      std::size_t p = channels_[ch]->producer;
      while (p < nodes_.size() && nodes_[p]->fused && !nodes_[p]->inputs.empty()) {
        const std::size_t in = nodes_[p]->inputs.front();
        channels_[in]->control->disconnect();
        p = channels_[in]->producer;
      }
    }
  }
  // Fused stages after this one ran on its threads, which are all done: end them here.
  finish_fused_after(n);
  const int ended = static_cast<int>(n.any_failed.load(std::memory_order_relaxed) ? stage_state::failed : stage_state::done);
  int was = static_cast<int>(stage_state::running);
  if (!n.state.compare_exchange_strong(was, ended, std::memory_order_relaxed) &&
      was == static_cast<int>(stage_state::stuck) && !tearing_down()) {
    // Named stuck a teardown deadline after request_stop() (report_unstopped_sources), and
    // it ended after all in a run that ends normally: it ends as any stage does. (Named
    // after a teardown, it stays stuck: that is what made the run end late.)
    n.state.compare_exchange_strong(was, ended, std::memory_order_relaxed);
  }
}

bool graph_state::allow_restart(stage_node& n) {
  const auto& lim = n.policy.limits();
  std::lock_guard lk(n.restart_mu);
  // Read under the lock: replicas failing at once hand the window times in order.
  const auto now = std::chrono::steady_clock::now();
  return n.restarts_in_window.allow(now, lim.max, lim.within);  // false: fail with this error
}

// ---- failure, cancel, stop ---------------------------------------------------------

void graph_state::fail(stage_node& n, std::exception_ptr e) noexcept {
  std::string name;
  try {
    name = n.name;
  } catch (...) {
  }
  if (record_.claim_failure(std::move(name), e)) teardown(e);
}

void graph_state::teardown(const std::exception_ptr& cause) noexcept {
  // seq_cst exchange: exactly one teardown; the flag is set before any channel is
  // cancelled, so a stage that sees a cancelled channel also sees tearing_down().
  if (tearing_.exchange(true, std::memory_order_seq_cst)) return;
  {
    std::lock_guard lk(life_mu_);
    teardown_began_ = true;
    teardown_at_ = std::chrono::steady_clock::now();
    teardown_cause_ = cause;
  }
  // nodes_/channels_ are immutable once started, so no lock is needed to walk them.
  for (auto& c : channels_) c->control->cancel(cause);  // wakes every push/pop waiter
  for (auto& n : nodes_) n->stop.request_stop();         // wakes stop-token waits
  life_cv_.notify_all();
}

std::exception_ptr graph_state::teardown_cause() {
  std::lock_guard lk(life_mu_);
  // Null only in the instant between the flag and the lock in teardown().
  return teardown_cause_ ? teardown_cause_ : std::make_exception_ptr(sluice::cancelled());
}

void graph_state::ask_supervisor(int what) noexcept {
  hook_asks_.fetch_or(what, std::memory_order_release);
  // Taking life_mu_ orders the flag before the supervisor's check-then-wait: it either
  // sees the flag or is waiting, and is woken.
  { std::lock_guard lk(life_mu_); }
  life_cv_.notify_all();
}

void graph_state::act_on_asks(int asks) noexcept {
  if ((asks & kAskCancel) != 0) teardown(std::make_exception_ptr(sluice::cancelled()));
  if ((asks & kAskStop) != 0) {
    try {
      request_stop();
    } catch (...) {
      // request_stop() throws only if a mutex cannot be locked; the run goes on.
    }
  }
}

void graph_state::cancel() {
  if (in_discard_hook()) {
    // The supervisor tears down (before the run, start() sees the record and runs nothing).
    if (record_.claim_cancel()) ask_supervisor(kAskCancel);
    return;
  }
  const bool first = record_.claim_cancel();
  bool started = false;
  std::vector<channel_control*> inlets;
  {
    std::lock_guard lk(mu_);
    if (finished_) return;
    started = started_;
    if (!started && first) {
      // Before start: start() sees the record and runs nothing. Inlets fail at once.
      for (auto& n : nodes_) {
        if (!n->is_input) continue;
        for (std::size_t ch : n->outputs) inlets.push_back(channels_[ch]->control.get());
      }
    }
  }
  if (!first) return;
  if (started) {
    teardown(std::make_exception_ptr(sluice::cancelled()));
    return;
  }
  // After the lock: a cancel destroys the inlet's buffered items, and an item's destructor
  // may call request_stop(), cancel() or snapshot() on this graph, which take mu_ (it
  // deadlocked on itself). The channels live as long as the graph; cancel is idempotent.
  for (channel_control* c : inlets) c->cancel(std::make_exception_ptr(sluice::cancelled()));
}

void graph_state::request_stop() {
  if (in_discard_hook()) {
    ask_supervisor(kAskStop);
    return;
  }
  // What to do is decided under mu_, done after it: a source's stop callback and an
  // on_writable callback (run by the close of a channel) may call snapshot(), cancel() or
  // request_stop() on this graph, which take mu_ (it deadlocked on itself, silently, and
  // so did wait_for() in other threads; a probe). The channels live as long as the graph,
  // nodes_ is fixed once started, and closing and stopping are idempotent.
  // Before start the inlets are collected under mu_ (stages may still be added), as
  // cancel() does; from start on nodes_ is fixed.
  bool started = false;
  std::vector<channel_control*> inlets;
  {
    std::lock_guard lk(mu_);
    stop_requested_ = true;
    started = started_;
    if (started && (ran_nothing_ || finished_)) return;
    if (!started) {
      for (auto& n : nodes_) {
        if (!n->is_input) continue;
        for (std::size_t ch : n->outputs) inlets.push_back(channels_[ch]->control.get());
      }
    }
  }
  if (!started) {
    // Inlets close now (what they accepted still drains once the graph runs); the
    // sources are stopped by start(). The channels live as long as the graph.
    for (channel_control* c : inlets) c->close();
    return;
  }
  apply_stop_request();
}

void graph_state::apply_stop_request() {
  stopping_.request_stop();  // cuts restart backoffs short (sleep_or_stop)
  for (auto& n : nodes_) {
    if (n->is_input) {
      // An inlet: closed; what it accepted drains.
      for (std::size_t ch : n->outputs) channels_[ch]->control->close();
      continue;
    }
    if (!n->is_source) continue;
    n->stop.request_stop();
    // A source that cannot see its stop token is stopped by closing its output: its
    // next push fails, what it pushed before still drains.
    if (!n->takes_stop) {
      for (std::size_t ch : n->outputs) channels_[ch]->control->close();
    }
  }
  {
    // The supervisor names the sources still running a teardown deadline from now.
    std::lock_guard lk(life_mu_);
    if (stop_applied_) return;
    stop_applied_ = true;
    stop_at_ = std::chrono::steady_clock::now();
  }
  life_cv_.notify_all();
}

}  // namespace sluice::detail
