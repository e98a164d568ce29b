// tools/demo/demo.hpp — `sluice demo`'s parts: the two runs (tools/demo/run.cpp) and what
// shows their results (tools/demo/render.cpp: the table, JSON, the HTML report), joined
// by the types below; tools/demo/cmd_demo.cpp is the command line.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/progress.hpp"

namespace sluice::tool::demo {

inline constexpr double kMiB = 1024.0 * 1024.0;

struct demo_config {
  std::uint64_t bytes = 512ULL << 20;
  std::uint64_t rate = 100ULL << 20;
  std::uint64_t memory_guard = 2ULL << 30;
  std::uint64_t budget = 1ULL << 20;  // per channel
  std::uint64_t chunk = 64ULL << 10;
  std::chrono::nanoseconds sample_every = std::chrono::milliseconds(20);
  std::string report;
  std::string only = "both";
  bool json = false;
};

struct sample {
  double t = 0;        // seconds since the run started
  double rss = 0;      // bytes above the baseline
  double sent = 0;     // bytes the sink has sent
  std::vector<double> queued;  // per channel, bytes
  std::vector<std::array<std::uint64_t, 3>> stage_ns;  // per stage: busy, backpressured, starved
};

struct run_result {
  std::string label;
  std::string kind;  // "unbounded" | "bounded"
  bool completed = false;
  bool guard_hit = false;
  bool out_of_memory = false;  // the source could not get its next chunk (and stopped there)
  bool interrupted = false;  // ^C stopped it before it sent everything
  double elapsed_s = 0;
  std::uint64_t generated = 0;
  std::uint64_t sent = 0;
  double peak_rss = 0;
  double budget = 0;  // 0: none
  std::vector<std::string> stage_names;
  std::vector<std::string> channel_names;
  std::vector<sample> samples;
  std::optional<std::string> bottleneck;
  std::uint64_t checksum = 0;
  std::string note;
};

// How ^C reaches the run in progress: the command's signal watcher calls stop(), which
// marks the demo stopped and calls the cancel the running run armed (it cancels its
// queues or its graph); a run armed after stop() is cancelled as it arms. Thread safe.
class run_stop {
 public:
  void stop() {
    std::lock_guard lk(mu_);
    stopped_.store(true, std::memory_order_release);  // release: pairs with flag() readers
    if (cancel_) cancel_();
  }
  void arm(std::function<void()> cancel) {
    std::lock_guard lk(mu_);
    cancel_ = std::move(cancel);
    if (stopped_.load(std::memory_order_relaxed)) cancel_();  // relaxed: under the mutex
  }
  void disarm() {
    std::lock_guard lk(mu_);
    cancel_ = nullptr;
  }
  [[nodiscard]] bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }
  // For waits that poll it (token_bucket::acquire).
  [[nodiscard]] const std::atomic<bool>& flag() const noexcept { return stopped_; }

 private:
  std::mutex mu_;
  std::function<void()> cancel_;
  std::atomic<bool> stopped_{false};
};

// What both runs share: the settings, the generated log text, the progress display,
// and the ^C that ends them.
struct run_env {
  const demo_config& cfg;
  const std::string& pattern;
  progress& prog;
  run_stop& stop;
};

inline std::string fmt(const char* f, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}

// The two runs (run.cpp): the same three stages through a naive unbounded queue, then
// through a sluice graph whose channels have byte budgets.
run_result run_unbounded(const run_env& env);
run_result run_bounded(const run_env& env);
// The generated log text both runs send (run.cpp).
std::string make_log_pattern();

// What shows the results (render.cpp). rss_after_trim: resident bytes after the first
// run's memory went back to the OS (-1: not measured).
void print_table(const demo_config& cfg, const std::vector<run_result>& runs, double rss_after_trim);
void print_json(const demo_config& cfg, const std::vector<run_result>& runs);
// The HTML report, written whole or not at all (common/write_file.hpp); throws
// std::runtime_error naming the path and the reason.
void write_report(const std::string& path, const demo_config& cfg, const std::vector<run_result>& runs);

}  // namespace sluice::tool::demo
