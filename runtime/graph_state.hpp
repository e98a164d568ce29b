// runtime/graph_state.hpp — the state behind detail::graph_core (private to libsluice):
// the stages and channels of one graph, its threads, the supervisor's record and the
// locks that guard them. Built by runtime/graph.cpp (building, start, wait, dead
// letters), runtime/supervisor.cpp (stage threads, failure, cancel, stop) and
// runtime/graph_observer.cpp (snapshots, the watchdog thread, the wait-for chain).
//
// Requires: nodes_ and channels_ are changed only while building (one thread, under
//   mu_); from start() on they are immutable, so stage threads, the watchdog and
//   snapshot() walk them without a lock.
// Guarantees: each field says which mutex guards it; relaxed atomics are counters and
//   hints, exact after the threads are joined (join is the edge).
// Lifetime: a graph_state outlives its threads (wait() joins them; the destructor
//   cancels and waits if the owner never did).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/graph_core.hpp"
#include "sluice/detail/restart_window.hpp"
#include "sluice/metrics.hpp"
#include "sluice/supervisor.hpp"

namespace sluice::detail {

inline constexpr std::size_t kNoNode = static_cast<std::size_t>(-1);

// The supervisor's record of how a run ends: the first failure (or the cancel) wins,
// every later failure is only counted.
//
// Requires: claim_*() from any thread. stage()/cause() only after a happens-before
//   edge with the winner (the graph reads them after joining every stage thread, or
//   after taking the mutex the winner's teardown released).
// Guarantees: exactly one claim_*() call returns true per record.
class failure_record {
 public:
  enum class outcome : std::uint32_t { none = 0, failed = 1, cancelled = 2 };

  // A stage threw. True when this is the first failure (the caller then tears down).
  bool claim_failure(std::string stage, std::exception_ptr cause) noexcept {
    if (!claim(outcome::failed)) {
      // relaxed: a pure counter, read after the threads are joined.
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    stage_ = std::move(stage);  // nothrow: std::string move
    cause_ = std::move(cause);
    return true;
  }
  // cancel() was called. True when nothing had failed or been cancelled yet.
  bool claim_cancel() noexcept { return claim(outcome::cancelled); }

  [[nodiscard]] outcome what() const noexcept {
    // acquire: pairs with the acq_rel claim; the caller still needs the happens-before
    // edge described above before it reads stage()/cause().
    return static_cast<outcome>(state_.load(std::memory_order_acquire));
  }
  [[nodiscard]] bool decided() const noexcept { return what() != outcome::none; }
  [[nodiscard]] const std::string& stage() const noexcept { return stage_; }
  [[nodiscard]] const std::exception_ptr& cause() const noexcept { return cause_; }
  [[nodiscard]] std::size_t suppressed() const noexcept {
    return suppressed_.load(std::memory_order_relaxed);
  }

 private:
  bool claim(outcome o) noexcept {
    std::uint32_t expected = 0;
    // acq_rel: the winner is decided exactly once (STYLE: "a fetch_or flag stores the
    // exception once"); a loser's failure is counted, never stored.
    return state_.compare_exchange_strong(expected, static_cast<std::uint32_t>(o),
                                          std::memory_order_acq_rel);
  }

  std::atomic<std::uint32_t> state_{0};  // outcome
  std::atomic<std::size_t> suppressed_{0};
  std::string stage_;           // written once by the winner of claim_failure
  std::exception_ptr cause_;    // idem
};

struct channel_entry {
  std::string name;                 // "<producer> -> <consumer>", set when consumed
  std::size_t producer = kNoNode;
  std::size_t consumer = kNoNode;
  bool weighted = false;
  std::unique_ptr<channel_control> control;
  std::shared_ptr<void> pending;    // the receiver, until a consumer takes it
  // Dead letters of this channel that a stage held, outside the channel (count_held).
  std::atomic<std::uint64_t> held_dead{0};
};

enum class stage_state : int { idle, running, done, failed, stuck };

// A stage: what the builder said (node_spec: name, threads, policy, ...), the channels it
// reads and feeds, and its runtime counters.
struct stage_node : node_spec {
  // Not noexcept: the members below allocate (std::stop_source, restart_window), and a
  // bad_alloc while adding a stage must reach the caller, not std::terminate.
  explicit stage_node(node_spec s) : node_spec(std::move(s)) {}

  // Set while building.
  std::vector<std::size_t> inputs;   // channel ids
  std::vector<std::size_t> outputs;  // channel ids
  replica_factory factory;           // released at start()
  std::stop_source stop;

  // Runtime. relaxed atomics throughout: counters and hints, read by snapshot() as
  // "recent values"; exact after the threads are joined (join is the edge).
  std::atomic<std::size_t> live{0};          // replicas not yet exited
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> restarts{0};
  std::atomic<int> state{static_cast<int>(stage_state::idle)};
  std::atomic<bool> finished{false};         // finished early (sink returned false)
  std::atomic<bool> any_failed{false};
  std::atomic<std::int64_t> exited_ns{0};    // thread time of exited replicas
  std::atomic<std::int64_t> running{0};      // replicas running now
  std::atomic<std::int64_t> running_since{0};  // sum of their start times (ns)
  std::atomic<int> exiting{0};               // replicas in finish_replica (on_close, closing outputs)
  std::atomic<int> backing_off{0};           // replicas in a restart backoff (state "restarting")
  std::atomic<std::int64_t> in_function{0};  // replicas inside task->run() (the stage function's loop)
  std::atomic<std::int64_t> in_discard{0};   // its threads handing dead letters to on_discard (or waiting to)
  // Its threads inside a push into an inlet of this graph, and that input's channel
  // (detail::inlet_push_note): a wait there is this stage's, for the stall chain.
  std::atomic<int> inlet_pushers{0};
  std::atomic<std::size_t> inlet_channel{0};
  // Per thread (threads of them): the fused stage it is inside now, or null (stage_thread).
  std::unique_ptr<std::atomic<const void*>[]> inside;
  std::mutex restart_mu;
  restart_window restarts_in_window;  // guarded by restart_mu
};

// The stage whose thread this is (this_stage:: in graph.hpp), for the scope's life.
struct current_stage_scope {
  current_stage_scope(graph_state& g, stage_node& n) noexcept;
  ~current_stage_scope();
  current_stage_scope(const current_stage_scope&) = delete;
  current_stage_scope& operator=(const current_stage_scope&) = delete;
  // Was `e`, which ended the stage function, already counted in the stage's errors as a
  // held item's (held_item_failed under skip)? A whole-stream consumer that makes the item
  // in hand a dead letter and then rethrows that exception to end the stage (jetstream's
  // failed publish) has one error, not two. Forgets the counted exception either way.
  [[nodiscard]] bool take_counted(const std::exception_ptr& e) const noexcept;
  // The stage of graph `g` this thread runs, or null (another graph's, or no stage's).
  [[nodiscard]] static stage_node* of(const graph_state* g) noexcept;

 private:
  friend bool held_item_failed(const std::type_info&, void*, std::exception_ptr) noexcept;
  // The last exception held_item_failed counted under skip (take_counted). Here, not in a
  // thread_local: a thread_local with a destructor makes glibc register that destructor at
  // the thread's first use, and a thread that cannot get those few bytes is aborted
  // ("failed to register TLS destructor"), which a stage out of memory did.
  mutable std::exception_ptr counted_;
};

class graph_state {
 public:
  explicit graph_state(graph_options o);
  graph_state(const graph_state&) = delete;
  graph_state& operator=(const graph_state&) = delete;
  ~graph_state();

  // ---- building (graph_core's calls) ----
  void check_can_add(const std::string& name) const;
  void check_input(std::size_t channel) const;
  [[nodiscard]] std::string unique_name(const std::string& base) const;
  std::size_t add_node(node_spec n);
  void abandon_node(std::size_t node) noexcept;
  void commit_node(std::size_t node) noexcept;
  void set_factory(std::size_t node, replica_factory f);
  void set_fused(std::size_t node, std::shared_ptr<fused_control> f);
  // Per node: how many threads of its host are inside this fused stage's call now.
  [[nodiscard]] std::vector<std::size_t> fused_calls() const;
  // The fused stage (innermost) one of node's threads is inside now, or kNoNode.
  [[nodiscard]] std::size_t fused_callee(std::size_t node) const;
  [[nodiscard]] std::size_t next_channel_id() const;
  std::size_t add_channel(std::size_t producer, std::unique_ptr<channel_control> control,
                          std::shared_ptr<void> receiver, bool weighted);
  [[nodiscard]] std::size_t channel_capacity(std::size_t channel) const;
  [[nodiscard]] std::string producer_name(std::size_t channel) const;
  [[nodiscard]] std::size_t producer_of(std::size_t channel) const;
  [[nodiscard]] std::string node_name(std::size_t node) const;
  [[nodiscard]] std::size_t fuse_host(std::size_t channel, const std::string& name) const;
  [[nodiscard]] std::size_t node_threads(std::size_t node) const;
  [[nodiscard]] const void* node_key(std::size_t node) const;
  [[nodiscard]] replica_env fused_env(std::size_t node);
  std::shared_ptr<void> take_input(std::size_t channel, std::size_t consumer);
  void edit_channel(const std::function<void()>& f);
  void settle_input(std::size_t node);
  [[nodiscard]] bool has_discard_hook() const noexcept { return static_cast<bool>(opts_.on_discard); }
  void set_fault_hook(fault_hook* h);
  [[nodiscard]] fault_hook* faults() const noexcept { return fault_; }

  // ---- running ----
  void start();
  report wait();
  // Throws logic_error when called on one of this graph's threads or hooks (graph.cpp).
  void check_may_wait(const char* what) const;
  std::optional<report> wait_for(std::chrono::steady_clock::duration d);
  [[nodiscard]] bool done() const noexcept { return done_.load(std::memory_order_acquire); }
  void request_stop();
  void cancel();
  [[nodiscard]] metrics::snapshot snapshot() const;                     // graph_observer.cpp
  [[nodiscard]] report last_report() const;
  // A gauge of a channel outside the process, shown by snapshot() (this_stage::
  // add_external_channel). Replaces an earlier one of the same name, direction, stage and
  // replica (a restarted stage), whose blocked time the new one counts on from.
  // Who registers an external channel: the stage (its node key; a fused stage's own) and
  // which replica.
  struct external_owner {
    const void* stage = nullptr;
    std::size_t replica = 0;
    friend bool operator==(const external_owner&, const external_owner&) = default;
  };
  void add_external_channel(std::string name, const stage_node& n, bool pushes, external_owner who,
                            std::function<metrics::external_channel_reading()> read);  // graph_observer.cpp

  // ---- from stage threads ----
  // A fused stage's error policy (replica_env::fused_error).
  replica_env::after_error fused_error(stage_node& n, std::exception_ptr e, bool item) noexcept;
  // A stage threw (after its policy gave up): the first failure tears the graph down.
  void fail(stage_node& n, std::exception_ptr e) noexcept;
  // request_stop() applied, or a teardown begun (this_stage::graph_stopping()).
  [[nodiscard]] bool stopping() const noexcept { return stopping_.stop_requested() || tearing_down(); }
  [[nodiscard]] bool tearing_down() const noexcept {
    // relaxed: a hint that stops new stage-function calls; the channel cancels and
    // stop requests that follow carry the real synchronisation.
    return tearing_.load(std::memory_order_relaxed);
  }
  void discard(std::size_t channel, const std::type_info& type, void* item) noexcept;
  void count_held(std::size_t channel, std::uint64_t n) noexcept {
    channels_[channel]->held_dead.fetch_add(n, std::memory_order_relaxed);
  }
  // What the teardown cancels channels with (the first failure, or sluice::cancelled).
  [[nodiscard]] std::exception_ptr teardown_cause();
  // An item of `channel` that stage n took and could not process: a dead letter with its
  // error. `stage_threw`: why is an exception a stage function threw (under stress the
  // fault hook is told); false for one the runtime made (an item left unsettled).
  void discard_failed(std::size_t channel, const stage_node& n, const std::type_info& type, void* item,
                      std::exception_ptr why, bool stage_threw = true) noexcept;

 private:
  // supervisor.cpp: a stage thread's life, and teardown.
  void run_replica(stage_node& n, std::size_t index, std::unique_ptr<replica_task> task) noexcept;
  void seal_leftover_channels() noexcept;
  void finish_replica(stage_node& n, std::int64_t t0) noexcept;
  // After stage n's last thread closed its outputs: ends the fused stages fed by them
  // (release, on_close, their outputs, and on down a chain), on this thread.
  void finish_fused_after(const stage_node& n) noexcept;
  void finish_fused(stage_node& f) noexcept;
  // on_close, end_outputs, the fused stages after it, and the final state: shared by a
  // stage's last thread (finish_replica) and a fused stage's end (finish_fused).
  void close_stage(stage_node& n) noexcept;
  // Closes (or, during a teardown, cancels) n's outputs.
  void end_outputs(const stage_node& n) noexcept;
  bool allow_restart(stage_node& n);
  void teardown(const std::exception_ptr& cause) noexcept;
  // Once started (nodes_ fixed), without mu_: closing a channel and stopping a source run
  // user callbacks (on_writable, stop callbacks), which may call back into the graph.
  void apply_stop_request();

  // cancel()/request_stop() from inside on_discard: the hook runs under dead_mu_, often
  // inside a channel's cancel, so acting there would wait on itself. The call is handed
  // to the supervisor thread (or to start(), before the run) through hook_asks_.
  static constexpr int kAskCancel = 1;
  static constexpr int kAskStop = 2;
  [[nodiscard]] bool in_discard_hook() const noexcept;  // graph.cpp
  void ask_supervisor(int what) noexcept;                // supervisor.cpp
  void act_on_asks(int asks) noexcept;                   // supervisor.cpp

  // graph_observer.cpp: the graph's supervisor thread (the stall watchdog, the teardown
  // deadline: stuck stages), which then joins every stage thread and ends the run.
  void supervisor_loop() noexcept;
  void report_stuck() noexcept;
  // The stages still running now, by node index: a thread inside a fused stage's call or
  // cleanup counts for that stage, not its host.
  [[nodiscard]] std::vector<std::size_t> stuck_now() const;
  // A teardown deadline after request_stop() reached them: the sources still running
  // (one that ignores its stop token kept the run going for ever, and nothing said so).
  // Names a source (or stage fused onto one) seen running, not parked in a push, at two
  // looks in a row; `seen` keeps that per node across looks. Returns whether one is still
  // running, to be looked at again.
  bool report_unstopped_sources(std::vector<int>& seen) noexcept;
  // Names `stuck` in the report and to on_stuck (or one line on stderr); after_stop: they
  // are sources still running after request_stop(), not stages after a teardown.
  void name_stuck(const std::vector<std::size_t>& stuck, bool after_stop) noexcept;
  [[nodiscard]] std::vector<metrics::wait_link> wait_for_chain() const;
  // Every channel's stats now, in channels_' order (what blocked_ops reads).
  [[nodiscard]] std::vector<channel_stats> channel_stats_now() const;
  // Per stage: the channel it is parked on (true: in a push), from channel stats.
  [[nodiscard]] std::vector<std::optional<std::pair<bool, std::size_t>>> blocked_ops(
      const std::vector<channel_stats>& cs) const;
  // "sluice: teardown deadline (5s) passed; still waiting for stage 'x' (in its stage
  // function), ..." for the stuck line on stderr (after_stop: see name_stuck).
  [[nodiscard]] std::string describe_stuck(const std::vector<std::size_t>& stuck, bool after_stop) const;

  // graph.cpp: starting and ending the run.
  // Joins the stage threads, builds the report, settles the outcome, calls on_done, and
  // marks the run ended (wakes wait()/wait_for()).
  void finish_run() noexcept;
  // After the run ended: joins the supervisor; returns the report or rethrows.
  report collect();
  // Start gate: stage threads wait here until every thread exists. true: run the stage;
  // false: the graph could not start all its threads, run nothing.
  bool await_start_gate();
  void open_start_gate(bool go);
  // Thread exhaustion during start(): releases the threads made so far (their stages never
  // run), joins them, cancels every channel; returns the error start() throws.
  std::exception_ptr abort_start(std::exception_ptr why, std::size_t started, std::size_t needed,
                                 const std::string& stage) noexcept;

  const graph_options opts_;
  struct external_channel {
    std::string name, from, to;
    std::function<metrics::external_channel_reading()> read;
    external_owner who;
    // Blocked time of the gauges this one replaced (a restarted stage's earlier ones, each
    // counting from 0): its own readings count on from there.
    std::uint64_t base_push_ns = 0, base_pop_ns = 0;
    // The most reported so far: the times are counters, and a snapshot never reports less.
    mutable std::uint64_t shown_push_ns = 0, shown_pop_ns = 0;
  };
  std::vector<external_channel> externals_;  // guarded by mu_
  fault_hook* fault_ = nullptr;  // null unless under sluice::testing::stress; set before building

  mutable std::mutex mu_;  // the lists below while building; flags
  std::vector<std::unique_ptr<stage_node>> nodes_;       // immutable after start
  std::vector<std::unique_ptr<channel_entry>> channels_; // immutable after start
  // Each stage's name as exported (detail::utf8_clean) -> its node: names are compared
  // as exported, once per add rather than against every stage.
  std::unordered_map<std::string, std::size_t> shown_names_;  // guarded by mu_
  bool started_ = false;          // guarded by mu_
  bool waited_ = false;           // guarded by mu_
  bool finished_ = false;         // guarded by mu_: every stage thread is joined
  bool stop_requested_ = false;   // guarded by mu_
  // Requested with the sources' stop tokens (apply_stop_request): a stage sleeping a
  // restart's backoff then restarts at once, so request_stop() does not wait it out.
  std::stop_source stopping_;
  bool ran_nothing_ = false;      // guarded by mu_: cancelled before start
  std::exception_ptr start_error_;  // guarded by mu_: making the replicas threw
  std::chrono::steady_clock::time_point t_start_{};  // guarded by mu_
  std::chrono::steady_clock::time_point t_end_{};    // guarded by mu_
  std::vector<std::thread> threads_;                 // start/wait thread only
  // Per stage, the busy / backpressured / starved ns the last snapshot reported: a
  // snapshot never reports less (guarded by mu_). Busy is derived (time alive minus time
  // blocked) and a wait that a spin satisfied is added only when it ends, so a snapshot
  // taken mid-spin sees up to ~10 us of it as busy; holding the counters monotonic keeps
  // exporters (Prometheus reads a falling counter as a restart) and rates sane.
  mutable std::vector<std::array<std::uint64_t, 3>> reported_;

  failure_record record_;
  std::atomic<bool> tearing_{false};
  std::atomic<bool> dying_{false};  // destructor: dead letters are no longer reported

  std::mutex life_mu_;
  std::condition_variable life_cv_;
  std::size_t alive_ = 0;                              // guarded by life_mu_
  bool teardown_began_ = false;                        // guarded by life_mu_
  std::chrono::steady_clock::time_point teardown_at_{};  // guarded by life_mu_
  std::exception_ptr teardown_cause_;                  // guarded by life_mu_
  // request_stop() reached the sources (apply_stop_request), and when: those still running
  // a teardown deadline later are named stuck (report_unstopped_sources).
  bool stop_applied_ = false;                         // guarded by life_mu_
  std::chrono::steady_clock::time_point stop_at_{};   // guarded by life_mu_

  std::mutex dead_mu_;  // serialises on_discard
  std::atomic<int> hook_asks_{0};  // kAsk* bits set from inside on_discard (see ask_supervisor)

  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  int gate_ = 0;  // guarded by gate_mu_: 0 closed, 1 run, 2 abort (start failed)

  bool ended_ = false;                                 // guarded by life_mu_: finish_run() is through
  std::exception_ptr outcome_;                         // guarded by life_mu_: what wait() throws
  std::atomic<bool> done_{false};                      // ended_, readable without the lock
  std::thread supervisor_;                             // start() makes it, wait()/wait_for() join it
  mutable std::mutex report_mu_;
  std::vector<metrics::wait_link> stall_;              // guarded by report_mu_
  std::size_t stalls_ = 0;                             // guarded by report_mu_
  std::vector<std::string> stuck_;                     // guarded by report_mu_
  report last_;                                        // guarded by report_mu_
};

}  // namespace sluice::detail
