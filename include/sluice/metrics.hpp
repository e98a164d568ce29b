// sluice/metrics.hpp — what a running graph looks like, and how to publish it.
//
//   sluice::metrics::snapshot s = g.snapshot();          // any thread, any time
//   std::string page = sluice::metrics::to_prometheus(s); // text exposition 0.0.4
//   if (s.bottleneck) std::printf("slowest stage: %s\n", s.bottleneck->c_str());
//
//   // An embedder publishing every second while the graph runs:
//   auto pub = sluice::metrics::every(std::chrono::seconds(1),
//                                     [&] { server.set_page(sluice::metrics::to_json(g.snapshot())); });
//
// Requires: nothing; these are plain values and pure functions (every() is the one
//   exception: it owns a thread, see periodic below).
// Guarantees: a snapshot is a copy; reading it never blocks a stage. Each counter is
//   a recent value (exact once the graph has finished). to_json and to_prometheus are
//   pure and thread-safe; their output is deterministic for a given snapshot.
// Non-guarantees: counters of different stages are not read at one instant, so shares
//   computed from a running graph's snapshot are approximate.
// Lifetime: snapshots own their strings; a periodic reporter's thread lives exactly as
//   long as the periodic object.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sluice/metrics_serve.hpp"  // metrics::serve, the live view (defined in sluice::serve)
#include "sluice/status.hpp"

namespace sluice::metrics {

struct stage_snapshot {
  std::string name;
  std::size_t replicas = 1;
  std::uint64_t items_in = 0;           // taken from the input channel(s)
  std::uint64_t items_out = 0;          // pushed to the output channel
  std::uint64_t errors = 0;             // exceptions thrown by the stage function (skipped ones too)
  std::uint64_t restarts = 0;
  std::uint64_t busy_ns = 0;            // running its function, not blocked on a channel (summed over replicas)
  std::uint64_t backpressured_ns = 0;   // blocked on a full output (or in fused stages after it)
  std::uint64_t starved_ns = 0;         // blocked on an empty input (fused: its host's time outside its calls)
  std::string state;                    // "idle" | "running" | "restarting" (a replica sleeps its
                                        // restart backoff) | "done" | "failed" | "stuck"
  // Where the stage is blocked right now, if it is: a channel name, and "push" or "pop".
  std::string blocked_on;
  std::string blocked_op;
  // A fused stage (stage_options::fuse) has no thread of its own: the stage whose threads
  // run it (the first unfused stage upstream). Empty for a stage with its own threads.
  std::string runs_on;
};

struct channel_snapshot {
  std::string name;          // "<producer stage> -> <consumer stage>" (" #2", ... for more than one)
  std::string from;          // producer stage
  std::string to;            // consumer stage
  bool weighted = false;     // size/capacity in bytes rather than items
  channel_stats stats;
  // Dead letters of this channel that a stage held outside it: items its consumer took and
  // never processed (it failed, finished early or was torn down with a batch in hand; the
  // item a function threw on), and items its producer made and could not push (the channel
  // had ended). Each one went to on_discard, when there is one. The channel's own
  // discards (items still inside it at a cancel) are stats.discarded.
  std::uint64_t dead_letters = 0;
  // A channel outside this process (a jetstream:<stream> edge; this_stage::
  // add_external_channel): only size, items, capacity and blocked_*_ns are meaningful, and
  // one of from/to is empty (the stage on the other side is elsewhere).
  bool external = false;

  // Nothing lost here: pushed == popped + discarded, and nothing left inside. Meaningless
  // for an external channel (report::balanced() skips those).
  [[nodiscard]] bool balanced() const noexcept {
    return stats.size == 0 && stats.items == 0 && stats.pushed == stats.popped + stats.discarded;
  }
};

// What an external channel's gauge reports (graph.hpp: this_stage::add_external_channel).
struct external_channel_reading {
  std::size_t size = 0, capacity = 0;
  std::uint64_t blocked_push_ns = 0;  // the pushing stage's time blocked on it (counted as backpressured)
  std::uint64_t blocked_pop_ns = 0;   // the popping stage's time blocked on it (counted as starved)
};

// One link of a wait-for chain: `stage` waits (op "push"/"pop") on `channel`, which
// `holder` holds up (the stage on the channel's other side).
struct wait_link {
  std::string stage;
  std::string op;
  std::string channel;
  std::string holder;
};

struct snapshot {
  std::chrono::nanoseconds elapsed{0};          // since the graph started
  std::vector<stage_snapshot> stages;
  std::vector<channel_snapshot> channels;
  std::optional<std::string> bottleneck;        // see find_bottleneck
  // The graph's graph_options::stall_threshold (zero: its stall watchdog is off), so that
  // a reader of the snapshot (the live page) calls a stall what the graph calls one.
  std::chrono::nanoseconds stall_threshold{0};
};

// Where a stage's accounted time went: busy + backpressured + starved, as fractions of
// their sum (summed over replicas). All zero when the stage has accounted no time.
struct time_shares {
  double busy = 0;
  double backpressured = 0;
  double starved = 0;
};
time_shares shares_of(const stage_snapshot& st);

// The stage that limits throughput: busy most of the time while its input is full
// (its producers are backpressured) and its output starves (its consumers wait).
//
// Precisely, with the shares above, for each stage S that has accounted any time:
//   busy(S)  = S's busy share.
//   up(S)    = mean backpressured share of the stages that produce into S (a channel
//              whose `to` is S and whose `from` is a listed stage, each stage once).
//   down(S)  = mean starved share of the stages that consume S's output.
//   wait(S)  = mean of up(S) and down(S) over the sides S has (a source has no up,
//              a sink no down); a stage with neither side is never a candidate.
// S is a candidate when busy(S) >= kBottleneckBusyShare and wait(S) >=
// kBottleneckWaitShare; the bottleneck is the candidate with the largest
// busy(S) * wait(S) (ties: the larger busy share, then the earlier stage). nullopt when
// there is no candidate: nothing ran, the stages mostly wait (for example on a
// source that waits for its own input outside the graph, if it reports that as
// blocked), or the load is balanced so that no neighbour waits much on anyone.
// Note: time a stage function spends sleeping or blocked outside sluice (a socket, a
// disk) is busy time to the runtime; such a stage is named when its neighbours wait
// on it, which is the truthful answer: the graph is waiting for that stage.
// 0.4 rather than a strict majority: on an oversubscribed machine the time a woken
// stage waits for a CPU is counted as waiting on its channel, which eats into the busy
// share of even a saturated stage.
inline constexpr double kBottleneckBusyShare = 0.4;
inline constexpr double kBottleneckWaitShare = 0.3;
std::optional<std::string> find_bottleneck(const snapshot& s);

// JSON object (one line, UTF-8, strings escaped per RFC 8259):
//   {"elapsed_ns":N,"stall_threshold_ns":N,"bottleneck":"name"|null,
//    "stages":[{"name","replicas","items_in","items_out","errors","restarts","busy_ns",
//               "backpressured_ns","starved_ns","busy_share","backpressured_share",
//               "starved_share","state","blocked_on","blocked_op"}...],
//    "channels":[{"name","from","to","weighted","size","capacity","pushed","popped",
//                 "discarded","blocked_push_ns","blocked_pop_ns","waiting_push",
//                 "waiting_pop","external"}...]}
// Counters are integers; shares are numbers in [0, 1].
std::string to_json(const snapshot& s);
// Prometheus text exposition format 0.0.4; metric names prefixed sluice_, labelled
// by stage="..." or channel="..." (plus from="...", to="..."); label values escaped
// (\\, \", \n). Every metric family has one # HELP and one # TYPE line. Times are in
// seconds (sluice_stage_busy_seconds_total ...), counters end in _total. The stage's
// state is sluice_stage_state{stage,state} = 1 for its current state, and
// sluice_stage_bottleneck{stage} is 1 for the bottleneck, 0 for the others.
std::string to_prometheus(const snapshot& s);

// A periodic reporter for embedders: calls fn every `interval` on a thread of its own,
// while the object is alive.
//
// Requires: fn must be safe to call on another thread (typically it takes
//   g.snapshot() and publishes it). interval > 0 (std::invalid_argument otherwise).
//   An interval over 100 years is taken as 100 years: never, in practice.
// Guarantees: the first call is one interval after construction; calls never overlap;
//   stop() (and the destructor) wakes the thread at once, waits for a call in
//   progress to finish and joins, so after it returns fn is never called again. An
//   exception thrown by fn is caught and ends the reporting (the thread exits).
// Non-guarantees: calls are not exactly `interval` apart (a slow fn delays the next).
// Lifetime: must not outlive what fn refers to; destroy it (or stop()) first.
//
//   {
//     sluice::metrics::periodic pub = sluice::metrics::every(std::chrono::milliseconds(500),
//         [&] { std::puts(sluice::metrics::to_json(g.snapshot()).c_str()); });
//     g.run();
//   }  // the reporter stops and joins here
class periodic {
 public:
  periodic() noexcept;
  periodic(std::chrono::steady_clock::duration interval, std::function<void()> fn);
  periodic(periodic&&) noexcept;
  periodic& operator=(periodic&&) noexcept;
  periodic(const periodic&) = delete;
  periodic& operator=(const periodic&) = delete;
  ~periodic();

  // Stops the thread and joins it; idempotent. Must not be called from fn, and neither may
  // the destructor or a move run there (each stops the thread that runs fn).
  void stop() noexcept;
  // Whether a reporter thread is running (false once stopped or after fn threw).
  [[nodiscard]] bool running() const noexcept;
  // How many calls of fn have returned so far (one that threw is not counted).
  [[nodiscard]] std::uint64_t calls() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

[[nodiscard]] periodic every(std::chrono::steady_clock::duration interval, std::function<void()> fn);

}  // namespace sluice::metrics
