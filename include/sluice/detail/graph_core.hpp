// sluice/detail/graph_core.hpp — the untyped half of a graph: nodes (stages), the
// channels between them, the threads, the supervisor, the watchdog and the teardown
// deadline. Implemented in runtime/graph.cpp and runtime/supervisor.cpp; the typed
// stage loops live in detail/graph_stages.hpp and reach this through replica_env.
//
// Shape of a run:
//
//   build (one thread)   add_node / add_channel / take_input   (logic_error on misuse)
//   start()              checks the shape, makes one replica_task per thread, starts
//                        the threads and the watchdog
//   each thread          run_replica: task->run(env) under the stage's error policy;
//                        the last replica of a stage runs on_close and closes its outputs
//   failure / cancel()   teardown(cause): flag, cancel every channel, request stop on
//                        every stage's stop_source, wake wait()
//   wait()               until every thread exited (or teardown deadline -> on_stuck,
//                        then keeps waiting); joins everything; builds the report
//
// Requires: building from one thread, before start(). start/wait from one thread.
//   cancel(), request_stop(), snapshot() from any thread at any time.
// Guarantees: see graph.hpp (DESIGN.md §2, §3).
// Lifetime: a graph_core outlives its threads (wait() joins them; the destructor
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
#include <utility>
#include <vector>

#include "sluice/detail/fault_hook.hpp"
#include "sluice/detail/graph_types.hpp"
#include "sluice/metrics.hpp"
#include "sluice/stage.hpp"
#include "sluice/status.hpp"
#include "sluice/supervisor.hpp"

namespace sluice::detail {

inline constexpr std::size_t kNoNode = static_cast<std::size_t>(-1);

// The graph's own view of one channel: enough to cancel, close and observe it. It
// holds a sender, which keeps the channel alive without stopping it from disconnecting
// (only receivers count for that); the output is closed explicitly when the producing
// stage's last thread exits.
class channel_control {
 public:
  virtual ~channel_control() = default;
  virtual void cancel(std::exception_ptr why) noexcept = 0;
  virtual void close() noexcept = 0;
  [[nodiscard]] virtual channel_stats stats() const = 0;
  // Closed, disconnected or cancelled.
  [[nodiscard]] virtual bool closed() const noexcept = 0;
};

struct channel_entry {
  std::string name;                 // "<producer> -> <consumer>", set when consumed
  std::size_t producer = kNoNode;
  std::size_t consumer = kNoNode;
  bool weighted = false;
  std::unique_ptr<channel_control> control;
  std::shared_ptr<void> pending;    // the receiver, until a consumer takes it
};

enum class stage_state : int { idle, running, done, failed, stuck };

class graph_core;
struct stage_node;

// The stage whose thread this is (this_stage:: in graph.hpp), for the scope's life.
struct current_stage_scope {
  current_stage_scope(graph_core& g, stage_node& n) noexcept;
  ~current_stage_scope();
  current_stage_scope(const current_stage_scope&) = delete;
  current_stage_scope& operator=(const current_stage_scope&) = delete;
};

// What a replica's loop may ask of the runtime.
class replica_env {
 public:
  replica_env(graph_core& g, stage_node& n, std::size_t /*index*/, std::stop_token st) noexcept
      : graph_(&g), node_(&n), stop_(std::move(st)) {}

  // The stage's stop token: requested on teardown (and for sources on request_stop()).
  [[nodiscard]] const std::stop_token& stop_token() const noexcept { return stop_; }
  // Teardown began, or another replica of this stage finished early: call no stage
  // function any more.
  [[nodiscard]] bool stopping() const noexcept;
  // This replica's stage finished early (a sink returned false): tell the other replicas.
  void finish_stage() noexcept;
  // error_policy::skip: count the failing item and go on.
  [[nodiscard]] bool skips() const noexcept;
  void count_error() noexcept;
  // Hands an undelivered item to the graph's on_discard (if any).
  void discard(std::size_t channel, const std::type_info& type, void* item) noexcept;
  // The stage function threw `why` on this item (popped from `channel`): a dead letter
  // naming this stage and the exception, whatever the error policy does next.
  void discard_failed(std::size_t channel, const std::type_info& type, void* item, std::exception_ptr why) noexcept;
  [[nodiscard]] bool has_discard_hook() const noexcept;

 private:
  graph_core* graph_;
  stage_node* node_;
  std::stop_token stop_;
};

// One thread's share of a stage: its channel handles and its copy of the function.
// run() returns when this replica is done (input ended, output gone, early finish,
// teardown) and throws when the stage function threw (the error policy decides).
// Destroying it releases its handles (the last receiver disconnects the input) and
// destroys its function object (the stage's cleanup).
class replica_task {
 public:
  replica_task() = default;
  replica_task(const replica_task&) = delete;
  replica_task& operator=(const replica_task&) = delete;
  virtual ~replica_task() = default;
  virtual void run(replica_env& env) = 0;
  // Before a restart: destroy the function object and make a fresh copy.
  virtual void renew() = 0;
};
using replica_factory = std::function<std::unique_ptr<replica_task>(std::size_t index)>;

struct stage_node {
  // Set while building.
  std::string name;
  bool is_source = false;
  bool is_input = false;    // g.input<T>(): no thread; fed through an inlet from outside
  bool takes_stop = false;  // a source whose function takes a std::stop_token
  std::size_t threads = 1;   // threads to start (an ordered flat_map adds its emitter)
  std::size_t replicas = 1;  // as the user asked (reported in the snapshot)
  error_policy policy = error_policy::stop;
  std::function<void()> on_close;
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
  std::atomic<std::int64_t> in_function{0};  // replicas inside task->run() (the stage function's loop)
  std::mutex restart_mu;
  std::deque<std::chrono::steady_clock::time_point> restart_times;  // guarded by restart_mu
};

class graph_core {
 public:
  explicit graph_core(graph_options o);
  graph_core(const graph_core&) = delete;
  graph_core& operator=(const graph_core&) = delete;
  ~graph_core();

  // ---- building (logic_error on misuse; the graph is unchanged when one throws) ----
  // Not started, and `name` not taken.
  void check_can_add(const std::string& name) const;
  // `channel` is a stream of this graph that nobody consumes yet.
  void check_input(const graph_core* owner, std::size_t channel) const;
  // A free stage name starting with `base` (for internal stages).
  [[nodiscard]] std::string unique_name(const std::string& base) const;
  std::size_t add_node(std::unique_ptr<stage_node> n);
  [[nodiscard]] stage_node& node(std::size_t id) noexcept { return *nodes_[id]; }
  // The id the next add_channel() will return.
  [[nodiscard]] std::size_t next_channel_id() const;
  std::size_t add_channel(std::size_t producer, std::unique_ptr<channel_control> control,
                          std::shared_ptr<void> receiver, const std::type_info& type, bool weighted);
  [[nodiscard]] std::size_t channel_capacity(std::size_t channel) const;
  // The name of the stage that produces `channel`.
  [[nodiscard]] std::string producer_name(std::size_t channel) const;
  // Hands the channel's receiver to `consumer` (check_input first).
  std::shared_ptr<void> take_input(std::size_t channel, std::size_t consumer);
  [[nodiscard]] bool has_discard_hook() const noexcept { return static_cast<bool>(opts_.on_discard); }
  // sluice::testing::stress: channels made from now on call `h` on every push and pop, and
  // the stage threads report to it (detail/fault_hook.hpp). Before any stage is added.
  void set_fault_hook(fault_hook* h);
  [[nodiscard]] fault_hook* faults() const noexcept { return fault_; }
  [[nodiscard]] bool started() const;

  // ---- running ----
  void start();
  report wait();
  // wait(), or nullopt when the run has not ended within d.
  std::optional<report> wait_for(std::chrono::steady_clock::duration d);
  // The run has ended: every stage thread joined, on_done returned.
  [[nodiscard]] bool done() const noexcept { return done_.load(std::memory_order_acquire); }
  void request_stop();
  void cancel();
  [[nodiscard]] metrics::snapshot snapshot() const;
  [[nodiscard]] report last_report() const;
  // A gauge of a channel outside the process, shown by snapshot() (this_stage::
  // add_external_channel). Replaces an earlier one of the same name (a restarted stage).
  void add_external_channel(std::string name, const stage_node& n, bool pushes,
                            std::function<metrics::external_channel_reading()> read);

  // ---- from stage threads ----
  // A stage threw (after its policy gave up): the first failure tears the graph down.
  void fail(stage_node& n, std::exception_ptr e) noexcept;
  [[nodiscard]] bool tearing_down() const noexcept {
    // relaxed: a hint that stops new stage-function calls; the channel cancels and
    // stop requests that follow carry the real synchronisation.
    return tearing_.load(std::memory_order_relaxed);
  }
  void discard(std::size_t channel, const std::type_info& type, void* item) noexcept;
  void discard_failed(std::size_t channel, const stage_node& n, const std::type_info& type, void* item,
                      std::exception_ptr why) noexcept;

 private:
  void run_replica(stage_node& n, std::size_t index, std::unique_ptr<replica_task> task) noexcept;
  void finish_replica(stage_node& n, std::int64_t t0) noexcept;
  bool allow_restart(stage_node& n);
  void teardown(const std::exception_ptr& cause) noexcept;
  void apply_stop_request();  // requires mu_
  // The graph's supervisor thread: the stall watchdog, the teardown deadline (stuck
  // stages), then it joins every stage thread and ends the run (finish_run).
  void supervisor_loop() noexcept;
  void report_stuck() noexcept;
  // Joins the stage threads, builds the report, settles the outcome, calls on_done, and
  // marks the run ended (wakes wait()/wait_for()).
  void finish_run() noexcept;
  // After the run ended: joins the supervisor; returns the report or rethrows.
  report collect();
  [[nodiscard]] std::vector<metrics::wait_link> wait_for_chain() const;
  // Per stage: the channel it is parked on (true: in a push), from channel stats.
  [[nodiscard]] std::vector<std::optional<std::pair<bool, std::size_t>>> blocked_ops(
      const std::vector<channel_stats>& cs) const;
  // Start gate: stage threads wait here until every thread exists. true: run the stage;
  // false: the graph could not start all its threads, run nothing.
  bool await_start_gate();
  void open_start_gate(bool go);
  // Thread exhaustion during start(): releases the threads made so far (their stages never
  // run), joins them, cancels every channel; returns the error start() throws.
  std::exception_ptr abort_start(std::exception_ptr why, std::size_t started, std::size_t needed,
                                 const std::string& stage) noexcept;
  // "stage 'x' (in its stage function), ..." for the stuck line on stderr.
  [[nodiscard]] std::string describe_stuck(const std::vector<std::size_t>& stuck) const;

  const graph_options opts_;
  struct external_channel {
    std::string name, from, to;
    std::function<metrics::external_channel_reading()> read;
  };
  std::vector<external_channel> externals_;  // guarded by mu_
  fault_hook* fault_ = nullptr;  // null unless under sluice::testing::stress; set before building

  mutable std::mutex mu_;  // the lists below while building; flags
  std::vector<std::unique_ptr<stage_node>> nodes_;       // immutable after start
  std::vector<std::unique_ptr<channel_entry>> channels_; // immutable after start
  bool started_ = false;          // guarded by mu_
  bool waited_ = false;           // guarded by mu_
  bool finished_ = false;         // guarded by mu_: every stage thread is joined
  bool stop_requested_ = false;   // guarded by mu_
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

  std::mutex dead_mu_;  // serialises on_discard

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

// Test seam: make thread creation in graph start() fail (std::system_error, EAGAIN) after
// `n` more threads were created; a negative n turns it off. For tests of thread exhaustion
// only; not thread-safe against graphs starting concurrently.
namespace testing {
void fail_thread_creation_after(long n) noexcept;
}  // namespace testing

}  // namespace sluice::detail
