// sluice/testing.hpp — stress-test your own graph: seeded faults at every
// channel boundary, a random cancel() or request_stop(), invariants checked after every
// run, and replay by seed.
//
//   #include <gtest/gtest.h>
//   #include <sluice/testing.hpp>
//
//   void build_my_graph(sluice::graph& g);           // the graph your program runs
//
//   TEST(my_graph, survives_faults) {
//     using namespace std::chrono_literals;
//     sluice::testing::stress_options o{.runs = 200, .seed = 0, .fail_probability = 0.01,
//                                       .delay_probability = 0.05, .max_delay = 2ms,
//                                       .cancel_probability = 0.1, .stop_probability = 0.1,
//                                       .deadline = 10s};
//     auto r = sluice::testing::stress([](sluice::graph& g) { build_my_graph(g); }, o);
//     EXPECT_TRUE(r.ok()) << r;   // each violation with its seed and the replay line
//   }
//
// What one run does: builds a fresh graph with the build function (the graph's
// teardown_deadline is `deadline`), then injects, on the k-th push or pop of every stage
// replica, with the probabilities given: a delay of up to max_delay, or an
// injected_fault thrown out of that push or pop (the operation never started: the
// item stays with the caller, the channel is untouched). At most once per run it calls
// cancel() or request_stop() after the N-th channel operation of the whole graph (from
// then on, and once a failure tears the run down, it injects nothing: a failure would
// hide a stage ignoring the stop, and delays adding up over the drain would be blamed on
// a stage that keeps to it). A run that has not ended `deadline` after its last
// injected failure, cancel or stop (or its start; delays, each at most max_delay, do not
// count), or that is still running `deadline` after its start while nothing asked it to
// end (its stages restarting after every failure), gets a request_stop() (a graph whose
// sources run until stopped is fine; nothing is injected after it); one that
// still has not ended `deadline` later is a violation naming the stage that holds it up,
// and is cancelled (one that ends while stress looks for that stage is a violation with
// no stage named: it was late all the same).
//
// Checked after every run, each failure a `violation` naming the stage:
//   - it ended within `deadline` of its last fault, of the stop or of the cancel (the
//     stages still running then are named: the one that ignores its stop token, not the
//     ones waiting for it);
//   - what run() threw: stage_error whose cause is the injected_fault, or cancelled after
//     a cancel (stress's, or one the graph's own code made); the user's own exception is a violation carrying its message (also a
//     sluice::cancelled or stage_error a stage throws while nothing is torn down),
//     anything else too;
//   - every injected_fault thrown was seen leaving its stage (a stage that catches it and
//     goes on to another push or pop is named; one that ends after it is not);
//   - the accounting identity on every channel but an external one (a JetStream edge's
//     stream may keep messages, as report::balanced() allows): pushed == popped +
//     discarded, nothing left buffered; no stage named stuck by the graph. (This is the channels' ledger,
//     not the application's: a stage that drops, duplicates or reorders items keeps it
//     balanced. Check delivery end to end in the build function's sink, as `sluice
//     stress` does for its random graphs with run_one.)
//   - every stage's cleanup ran exactly once: each replica's function object (and
//     handles) destroyed, on_close once per stage;
//   - no thread left behind: the threads that exist after the run are those that existed
//     before it (a new one is named by the stage whose thread created it).
// A stage that does not end even after the cancel: the run is abandoned (its graph and
// threads are left alive, never destroyed), the report says so and names the stage,
// and stress() returns without starting more runs.
//
// Requires: the build function adds stages to the graph it is given (and may capture
//   state; it is called once per run, from the calling thread). It must not call run(),
//   start() or set graph options (stress() owns those), nor stress(), replay() or
//   run_one() (std::logic_error, reported as the build function's exception); a stage
//   must not call them either (it would wait for the run it is part of, and be named as
//   not returning). Stage functions must let injected_fault out of the push/pop that
//   threw it (or end their stage). A push or pop made while its thread unwinds (from a
//   destructor or scope guard: std::uncaught_exceptions() > 0) gets delays but no failure,
//   as a throw there would end the process; so does one made inside a channel callback
//   that must not throw (on_writable, on_discard), where the channel would swallow it. A stage that calls exit() or abort() ends the
//   process, test and all: no report can follow.
// Guarantees:
//   - Determinism: run i's seed is derived from (seed, i); the decision for the k-th
//     channel operation of a stage replica follows from (run seed, stage name, replica, k)
//     alone, and the cancel/stop moment from the run seed. replay(build, seed, o) runs
//     that one run again with the same decisions. Where a graph's sequence of channel
//     operations per stage is itself deterministic (e.g. one replica per stage, capacity
//     1 channels, no failure racing the others), the fault counts are identical.
//   - Zero cost when unused: only channels of a graph built under stress() carry the hook
//     (detail/fault_hook.hpp); any other channel pays one load and one predicted branch.
// Non-guarantees: the thread interleaving is not replayed, so a fault that only bites
//   in one interleaving may need several replays; with batching (pop_some), how many
//   operations a stage performs may vary between runs.
// Lifetime: stress() and replay() return after every graph they built is destroyed,
//   except an abandoned one (see above).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

#include "sluice/graph.hpp"

namespace sluice::testing {

// Thrown by an injected fault out of a push or pop of the stage named stage().
class injected_fault : public std::runtime_error {
 public:
  injected_fault(std::string stage, std::string op, std::uint64_t op_index, std::uint64_t serial);
  [[nodiscard]] const std::string& stage() const noexcept { return stage_; }
  // "push" or "pop", and which of the stage replica's channel operations (1 = first).
  [[nodiscard]] const std::string& op() const noexcept { return op_; }
  [[nodiscard]] std::uint64_t op_index() const noexcept { return op_index_; }
  // Unique within a run (how stress() tells which faults were swallowed).
  [[nodiscard]] std::uint64_t serial() const noexcept { return serial_; }

 private:
  std::string stage_;
  std::string op_;
  std::uint64_t op_index_;
  std::uint64_t serial_;
};

// An aggregate; fields in this order.
struct stress_options {
  std::size_t runs = 200;
  std::uint64_t seed = 0;                // 0: from the clock (the report says which)
  double fail_probability = 0.01;        // per channel op: injected_fault thrown in the calling stage
  double delay_probability = 0.05;       // per channel op: a stall of up to max_delay
  std::chrono::steady_clock::duration max_delay = std::chrono::milliseconds(2);
  // The moment of a run's cancel or stop: a random one of the graph's first 400 channel
  // ops (all stages together). A run that ends sooner is neither cancelled nor stopped,
  // and the report's cancels / stops count only those that fired.
  double cancel_probability = 0.1;       // per run: cancel() at a random moment
  double stop_probability = 0.1;         // per run: request_stop() at a random moment
  std::chrono::steady_clock::duration deadline = std::chrono::seconds(10);  // end this long after the last fault
};

struct violation {
  std::uint64_t seed = 0;  // the run's seed: replay(build, seed, options) repeats it
  std::size_t run = 0;     // 0-based run number within stress()
  std::string stage;       // the stage at fault ("" when none can be named)
  std::string what;
};

struct stress_report {
  std::size_t runs = 0;              // runs completed
  std::uint64_t faults = 0;          // injected, all kinds: failures + delays + cancels + stops
  std::vector<violation> violations;
  std::chrono::nanoseconds elapsed{0};
  // Beyond the contract's fields: the seed used (the clock's when options.seed was 0), the fault
  // counts per kind, and whether a run had to be abandoned (a stage never returned).
  std::uint64_t seed = 0;
  std::uint64_t failures = 0, delays = 0, cancels = 0, stops = 0;
  bool abandoned = false;
  // The build function or start() threw (a violation): stress stopped after that run, as
  // every later one would fail the same way.
  bool unbuildable = false;

  [[nodiscard]] bool ok() const noexcept { return violations.empty(); }
};

// Prints a summary line, then each violation with its run, seed, stage, what, and the
// replay line: sluice::testing::replay(build, 0x..., options).
std::ostream& operator<<(std::ostream& os, const stress_report& r);
std::ostream& operator<<(std::ostream& os, const violation& v);

using graph_builder = std::function<void(sluice::graph&)>;

// o.runs runs (at least 1: 0 is std::invalid_argument) of the graph `build` makes, each
// with its own seed (see above).
// stress, replay and run_one throw std::invalid_argument naming the field when a
// probability is outside [0, 1] (or NaN), fail + delay or cancel + stop is over 1 (each
// pair is one draw), max_delay is negative or not below deadline, or deadline is not
// positive. Calls from several threads take turns, a run at a time: each run's thread
// check compares the whole process's threads with those before it, leaving out the
// threads inside stress(), replay() or run_one() (waiting for their turn).
stress_report stress(const graph_builder& build, const stress_options& o = {});
// The one run whose seed a violation printed, with the same faults.
stress_report replay(const graph_builder& build, std::uint64_t seed, const stress_options& o = {});

// Beyond the contract, for tools that check more than stress() does (`sluice stress`
// checks exactly-once delivery of its random graphs with this): one run, exactly as
// stress() makes and checks it, with what the caller needs for checks of its own.
// `go` gives the graph's other options (on_discard, on_done, ...); its teardown_deadline
// and on_stuck are stress's (o.deadline, and the engine's recorder).
struct run_result {
  std::vector<violation> violations;  // as stress() reports them (run = 0)
  sluice::report report;              // graph::last_report() (empty if never started)
  std::exception_ptr error;           // what run() threw, or null
  bool cancelled = false;             // the engine called cancel() (its fault, or to end a hang)
  bool stopped = false;               // the engine called request_stop() (its fault, or its closing stop)
  bool abandoned = false;             // a stage never returned (the graph is left alive)
  std::uint64_t failures = 0, delays = 0;
  std::vector<std::string> stuck;     // stages the graph named stuck past the teardown deadline
};
run_result run_one(const graph_builder& build, std::uint64_t seed, const stress_options& o, graph_options go = {});

}  // namespace sluice::testing
