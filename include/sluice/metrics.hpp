// sluice/metrics.hpp — what a running graph looks like, and how to publish it.
//
//   sluice::metrics::snapshot s = g.snapshot();          // any thread, any time
//   std::string page = sluice::metrics::to_prometheus(s); // text exposition 0.0.4
//   if (s.bottleneck) std::printf("slowest stage: %s\n", s.bottleneck->c_str());
//
// Guarantees: a snapshot is a copy; reading it never blocks a stage. Each counter is
// a recent value (exact once the graph has finished).
// Non-guarantees: counters of different stages are not read at one instant.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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
  std::uint64_t backpressured_ns = 0;   // blocked on a full output
  std::uint64_t starved_ns = 0;         // blocked on an empty input
  std::string state;                    // "idle" | "running" | "done" | "failed" | "stuck"
  // Where the stage is blocked right now, if it is: a channel name, and "push" or "pop".
  std::string blocked_on;
  std::string blocked_op;
};

struct channel_snapshot {
  std::string name;          // "<producer stage> -> <consumer stage>"
  std::string from;          // producer stage
  std::string to;            // consumer stage
  bool weighted = false;     // size/capacity in bytes rather than items
  channel_stats stats;
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
};

// The stage that limits throughput: busy most of the time while its input is full
// (its producers are backpressured) and its output starves (its consumers wait).
// nullopt when no stage stands out (nothing ran, or everything waits on a source).
std::optional<std::string> find_bottleneck(const snapshot& s);

// JSON object: {"elapsed_ns":..,"bottleneck":..,"stages":[..],"channels":[..]}.
std::string to_json(const snapshot& s);
// Prometheus text exposition format 0.0.4; metric names prefixed sluice_, labelled
// by stage="..." or channel="...".
std::string to_prometheus(const snapshot& s);

}  // namespace sluice::metrics
