// sluice/detail/graph_core.hpp — the narrow interface between graph.hpp's typed
// builders and stage tasks and the untyped runtime (nodes, channels, threads, the
// supervisor, the watchdog, the teardown deadline), whose state lives in
// runtime/graph_state.hpp. The typed stage loops (detail/graph_stages.hpp,
// graph_order.hpp, graph_routing.hpp) reach the runtime only through replica_env and
// the few graph_core calls marked "from stage threads".
//
// Shape of a run:
//
//   build (one thread)   add_node / add_channel / take_input   (logic_error on misuse)
//   start()              checks the shape, makes one replica_task per thread, starts
//                        the threads and the supervisor thread
//   each thread          runs its task under the stage's error policy; the last
//                        replica of a stage runs on_close and closes its outputs
//   failure / cancel()   teardown(cause): flag, cancel every channel, request stop on
//                        every stage's stop_source, wake wait()
//   wait()               until every thread exited (or teardown deadline -> on_stuck,
//                        then keeps waiting); joins everything; builds the report
//
// Requires: building from one thread, before start(). start/wait from one thread.
//   cancel(), request_stop(), snapshot(), done() from any thread at any time.
// Guarantees: those of sluice/graph.hpp; the calls below say what each adds.
// Lifetime: a graph_core outlives its threads (wait() joins them; the destructor
//   cancels and waits if the owner never did).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "sluice/metrics.hpp"
#include "sluice/stage.hpp"
#include "sluice/status.hpp"
#include "sluice/supervisor.hpp"
#include "sluice/detail/wait_clock.hpp"

namespace sluice::detail {

class fault_hook;
class graph_state;  // runtime/graph_state.hpp
struct stage_node;  // runtime/graph_state.hpp

// The graph's own view of one channel: enough to cancel, close and observe it. It
// holds a sender, which keeps the channel alive without stopping it from disconnecting
// (only receivers count for that); the output is closed explicitly when the producing
// stage's last thread exits.
class channel_control {
 public:
  virtual ~channel_control() = default;
  virtual void cancel(std::exception_ptr why) noexcept = 0;
  virtual void close() noexcept = 0;
  // As if its last receiver were gone (channel_access::disconnect).
  virtual void disconnect() noexcept = 0;
  [[nodiscard]] virtual channel_stats stats() const = 0;
  // Closed, disconnected or cancelled.
  [[nodiscard]] virtual bool closed() const noexcept = 0;
  // Once the channel is sealed (its receivers gone, or cancelled): returns when every push
  // that claimed a slot before has landed and every discarded item's hook has returned
  // (channel<T>::wait_discards).
  virtual void wait_discards() noexcept = 0;
};

// What a replica's loop may ask of the runtime.
class replica_env {
 public:
  replica_env(graph_state& g, stage_node& n, std::stop_token st) noexcept
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
  // error_policy::restart: a failure sleeps the backoff, then a fresh function goes on.
  [[nodiscard]] bool restarts() const noexcept;
  void count_error() noexcept;
  // The stage function threw `why` on this item (popped from `channel`): a dead letter
  // naming this stage and the exception, whatever the error policy does next.
  void discard_failed(std::size_t channel, const std::type_info& type, void* item, std::exception_ptr why) noexcept;
  // Call only inside the catch block of a stage function that threw on `item` (popped from
  // `channel`): the item becomes a dead letter; under skip the error is counted and this
  // returns, under any other policy the exception being handled is rethrown (out of the
  // replica's loop, to the supervisor).
  template <class T>
  void item_failed(std::size_t channel, T& item) {
    discard_failed(channel, typeid(T), std::addressof(item), std::current_exception());
    if (!skips()) throw;
    count_error();
  }

  // A fused stage's function threw `why` (its item already a dead letter): the stage's
  // error policy, applied on the upstream's thread. skip: counted, go on. restart: the
  // backoff is slept, then renew the function (unless the restart limit is reached or the
  // graph is tearing down). stop, or a restart refused: the graph fails naming this stage.
  enum class after_error { go_on, renew, stop };
  // `item`: the stage function threw on an item (skip may go on); otherwise its output
  // push threw, which skip does not cover (as for an unfused stage: out of its loop).
  after_error fused_error(std::exception_ptr why, bool item) noexcept;
  // A fused stage's renew() threw: the graph fails naming this stage.
  void fused_fail(std::exception_ptr why) noexcept;
  // The stage's name (for a fused stage's fault-hook calls).
  [[nodiscard]] const std::string& stage_name() const noexcept;

 private:
  graph_state* graph_;
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
// Makes the task of thread `index` of a stage (0 .. threads-1), once, at start().
using replica_factory = std::function<std::unique_ptr<replica_task>(std::size_t index)>;

// The graph's handle on a fused stage (stage_options::fuse; detail/graph_fuse.hpp): a stage
// with no thread whose items arrive by function call on its upstream stage's thread.
class fused_control {
 public:
  fused_control() = default;
  fused_control(const fused_control&) = delete;
  fused_control& operator=(const fused_control&) = delete;
  virtual ~fused_control() = default;
  // The upstream's last thread has ended: destroys every per-thread copy of the function
  // (the stage's cleanup) and releases the stage's channel handles. Idempotent.
  virtual void release() noexcept = 0;
  // Ticks (detail/ticks.hpp) spent inside the stage's item calls so far, including what
  // those calls pushed on (its output push, fused stages after it) and the elapsed part
  // of the calls in progress.
  [[nodiscard]] virtual std::uint64_t total_ticks() const noexcept = 0;
};

// Which stage thread this is: set by the runtime around a replica's run, read by fused
// stages to pick the per-thread copy of their function. `node` is the stage_node's
// address (graph_core::node_key), null on threads the graph did not start.
struct stage_thread {
  const void* node = nullptr;
  std::size_t replica = 0;
  // The stage this thread runs now, for the stuck report: null while in its own stage,
  // a fused stage's node key while in that stage's call (fused_stage::run sets and
  // restores it). relaxed: a hint read by the supervisor. Null on foreign threads.
  std::atomic<const void*>* inside = nullptr;
};
inline thread_local stage_thread tls_stage_thread{};

// A stage as the builders describe it.
struct node_spec {
  std::string name;
  bool is_source = false;
  bool is_input = false;     // g.input<T>(): no thread; fed through an inlet from outside
  bool takes_stop = false;   // a source whose function takes a std::stop_token
  std::size_t threads = 1;   // threads to start (an ordered flat_map adds its emitter)
  std::size_t replicas = 1;  // as the user asked (reported in the snapshot)
  error_policy policy = error_policy::stop;
  std::function<void()> on_close;
  // stage_options::fuse: no thread; runs on the thread(s) of `host` (the first unfused
  // stage upstream) through a direct channel. threads is 0.
  std::shared_ptr<fused_control> fused;
  std::size_t host = 0;
  // An ordered replicated stage: the time its threads wait for input outside its
  // channels (replicas taking turns to pop, the emitter waiting for the next item).
  // Counted as starved, not busy (an idle ordered stage was named the bottleneck).
  std::shared_ptr<wait_clock> turn_wait;
  // An ordered map/filter: the time its replicas wait for the reorder window to move
  // (its emitter held up by a full output). Counted as backpressured, not busy: with four
  // replicas or more, a trivial stage in front of a slow sink was named the bottleneck.
  std::shared_ptr<wait_clock> window_wait;
  // An ordered flat_map: nanoseconds its replicas have spent blocked pushing into their
  // batches' private channels (not graph channels; detail/graph_order.hpp), the pushes
  // going on included. Backpressured, not busy, as window_wait.
  std::function<std::uint64_t()> private_push_ns;
};

class graph_core {
 public:
  explicit graph_core(graph_options o);
  graph_core(const graph_core&) = delete;
  graph_core& operator=(const graph_core&) = delete;
  ~graph_core();
  // The graph's identity as inlet_push_note compares it (its state's address).
  [[nodiscard]] const void* identity() const noexcept { return state_.get(); }

  // ---- building (logic_error on misuse; the graph is unchanged when one throws) ----
  // Not started, and `name` not taken.
  void check_can_add(const std::string& name) const;
  // `channel` is a stream of this graph that nobody consumes yet.
  void check_input(const graph_core* owner, std::size_t channel) const;
  // A free stage name starting with `base` (for internal stages).
  [[nodiscard]] std::string unique_name(const std::string& base) const;
  std::size_t add_node(node_spec n);
  // A builder that threw after add_node(`node`), the last node, undoes it: its output
  // channels go, its inputs are free again and its name too (node_guard calls it).
  void abandon_node(std::size_t node) noexcept;
  // The builder of `node` finished: its inputs' receivers, kept until now so that
  // abandon_node can give them back, are let go.
  void commit_node(std::size_t node) noexcept;
  // How start() makes the stage's tasks; set once per stage that has threads.
  void set_factory(std::size_t node, replica_factory f);
  // A fused stage's handle (instead of a factory).
  void set_fused(std::size_t node, std::shared_ptr<fused_control> f);
  // Inside a catch handler, for a failure to make `node`'s output channel (a capacity no
  // ring can have, or that the machine's memory cannot hold): rethrows it as the same
  // kind (std::invalid_argument, std::bad_alloc) with the stage's name in front.
  // Other exceptions go on unchanged.
  [[noreturn]] void rethrow_naming(std::size_t node) const;
  // The id the next add_channel() will return.
  [[nodiscard]] std::size_t next_channel_id() const;
  std::size_t add_channel(std::size_t producer, std::unique_ptr<channel_control> control,
                          std::shared_ptr<void> receiver, bool weighted);
  [[nodiscard]] std::size_t channel_capacity(std::size_t channel) const;
  // The name of the stage that produces `channel`.
  [[nodiscard]] std::string producer_name(std::size_t channel) const;
  [[nodiscard]] std::size_t producer_of(std::size_t channel) const;
  // Fusing a stage onto `channel`: logic_error naming `name` unless the channel's producer
  // is a stage with a thread of its own or a fused stage, and has no other output.
  // Returns the host: the unfused stage whose threads will run the fused stage.
  [[nodiscard]] std::size_t fuse_host(std::size_t channel, const std::string& name) const;
  // Threads the stage starts (an ordered flat_map's emitter included).
  [[nodiscard]] std::size_t node_threads(std::size_t node) const;
  // Identifies the node's threads (stage_thread::node).
  [[nodiscard]] const void* node_key(std::size_t node) const;
  // A replica_env for a fused stage (usable from its host's threads once started).
  [[nodiscard]] replica_env fused_env(std::size_t node);
  // Hands (a copy of) the channel's receiver to `consumer` (check_input first); the
  // graph keeps one until commit_node(consumer).
  std::shared_ptr<void> take_input(std::size_t channel, std::size_t consumer);
  // Runs f under the graph's lock: a change of an edge's storage (make_storage,
  // make_direct), which a snapshot() from another thread must not see half made.
  void edit_channel(const std::function<void()>& f);
  // An input added after cancel() or request_stop(): its inlet fails or is closed at once,
  // as the inlets there were then.
  void settle_input(std::size_t node);
  // sluice::testing::stress: channels made from now on call `h` on every push and pop, and
  // the stage threads report to it (detail/fault_hook.hpp). Before any stage is added.
  void set_fault_hook(fault_hook* h);
  [[nodiscard]] fault_hook* faults() const noexcept;

  // ---- running ----
  void start();
  report wait();
  // wait(), or nullopt when the run has not ended within d.
  std::optional<report> wait_for(std::chrono::steady_clock::duration d);
  // The run has ended: every stage thread joined, on_done returned.
  [[nodiscard]] bool done() const noexcept;
  void request_stop();
  void cancel();
  [[nodiscard]] metrics::snapshot snapshot() const;
  [[nodiscard]] report last_report() const;

  // ---- from stage threads (and the builders) ----
  // Teardown began (a failure or cancel()): a hint that stops new stage-function calls.
  [[nodiscard]] bool tearing_down() const noexcept;
  [[nodiscard]] bool has_discard_hook() const noexcept;
  // Hands an item taken out of `channel` by its cancel to the graph's on_discard (if any);
  // the channel counts it itself (channel_stats::discarded).
  void discard(std::size_t channel, const std::type_info& type, void* item) noexcept;
  // Counts n dead letters of `channel` that a stage held outside it (taken by its consumer
  // and never processed, or made by its producer and never pushed): the snapshot's
  // channel_snapshot::dead_letters. Counted with a hook or without one.
  void count_held(std::size_t channel, std::uint64_t n) noexcept;
  // One item a stage held outside `channel` that will never be delivered: counted as
  // count_held(channel, 1) does and handed to on_discard (if any). Every path that gives
  // up a held item goes through here or discard_items(), so none can forget the count.
  void discard_held(std::size_t channel, const std::type_info& type, void* item) noexcept;
  template <class T>
  void discard_held(std::size_t channel, T& item) noexcept {
    discard_held(channel, typeid(T), static_cast<void*>(std::addressof(item)));
  }
  // The fused stages whose call a thread of their host is inside now (stage_thread::inside):
  // where a host that does not return is stuck (sluice::testing names them). A hint.
  [[nodiscard]] std::vector<std::string> fused_calls_in_progress() const;

 private:
  std::unique_ptr<graph_state> state_;
};

// A whole-stream consumer (a function of a receiver, such as jetstream::publish) could not
// process an item it popped: on the stage's thread, the item (of `type`) becomes a dead
// letter of the stage's input with `why` as its error, as for a per-item stage. true under
// error_policy::skip (the error is counted: go on; `why` rethrown to end the stage is not
// counted again); false otherwise (the caller throws), or when not on a stage thread.
bool held_item_failed(const std::type_info& type, void* item, std::exception_ptr why) noexcept;
// Such a consumer's item that it took and still held, unsettled, when it ended (a publish
// stage's message whose acknowledgement had not come): a dead letter of the stage's input
// with `why`, on the stage's thread. Counts no error (the stage's end has its own cause);
// not a stage function's exception to sluice::testing. A no-op off a stage thread.
void held_item_undelivered(const std::type_info& type, void* item, std::exception_ptr why) noexcept;

// Test seam: make thread creation in graph start() (and metrics::serve's listener) fail
// (std::system_error, EAGAIN) after `n` more threads were created; a negative n turns it
// off. For tests of thread exhaustion only; not thread-safe against graphs starting
// concurrently. take_thread_budget() is what a thread's creator calls first.
namespace testing {
void fail_thread_creation_after(long n) noexcept;
void take_thread_budget();
}  // namespace testing

}  // namespace sluice::detail
