// tools/demo/cmd_demo.cpp — `sluice demo`: the backpressure lesson, measured.
//
// A fast source of generated log lines feeds a sink held to a slow rate (a token
// bucket, like a network socket), through a cheap middle stage:
//
//   generate --> scrub --> send (paced to --rate)
//
// The same three stages run twice. First joined by a naive unbounded queue (a
// std::deque behind a mutex that never says "I'm full"): the source races ahead and
// memory climbs with everything it has produced and the sink has not sent yet. Then as
// a sluice graph whose channels have byte budgets: a full channel blocks the source, so
// memory stays flat at about the budgets while the time is the same (the sink sets it).
//
// Memory is the resident set (RSS, /proc/self/statm) above a baseline taken just before
// each run; between runs the freed heap is handed back to the OS (malloc_trim), so the
// second run does not inherit the first one's pages.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "common/args.hpp"
#include "common/progress.hpp"
#include "common/signals.hpp"
#include "common/sys.hpp"
#include "common/write_file.hpp"
#include "demo/demo.hpp"

namespace sluice::tool {

int cmd_demo(int argc, char** argv) {
  using namespace demo;
  demo_config cfg;
  arg_parser p("sluice demo",
               "The backpressure lesson, measured: a fast source of generated log lines feeds a sink\n"
               "held to a slow rate, first through an unbounded queue (memory climbs), then through\n"
               "a sluice graph with byte budgets (memory stays flat). Same time, the numbers side by side.");
  p.size("--bytes", &cfg.bytes, "bytes of log lines the source generates");
  p.rate("--rate", &cfg.rate, "the sink's rate, a token bucket like a network socket");
  p.size("--memory-guard", &cfg.memory_guard, "stop the unbounded run when its memory grows this much");
  p.size("--budget", &cfg.budget, "byte budget of each of the bounded run's two channels");
  p.size("--chunk", &cfg.chunk, "bytes per item moving between stages", {1, 256ULL << 20, "a size between 1 B and 256 MiB"});
  p.duration("--sample", &cfg.sample_every, "how often memory and stages are sampled");
  p.text("--report", &cfg.report, "FILE.html", "write a self-contained HTML report (memory curves, stage timelines); an existing FILE must be an earlier report");
  p.custom("--only", "WHICH", "run only one half: unbounded | bounded | both", cfg.only,
           [&](std::string_view v) {
             if (v != "unbounded" && v != "bounded" && v != "both") return false;
             cfg.only = std::string(v);
             return true;
           },
           "unbounded, bounded or both");
  p.flag("--json", &cfg.json, "print the results as JSON on stdout instead of the table");
  if (!p.parse(argc, argv)) return 0;
  if (cfg.bytes == 0) p.reject("--bytes", "a size above zero");
  if (cfg.budget == 0) p.reject("--budget", "a size above zero");
  if (cfg.memory_guard == 0) p.reject("--memory-guard", "a size above zero");
  // Above the machine's memory, the guard could never stop the unbounded run: the system
  // would (the OOM killer, or a failed allocation) first.
  if (const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE); pages > 0 && page > 0) {
    const auto ram = static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
    if (cfg.memory_guard > ram) {
      p.reject("--memory-guard", "at most this machine's memory (" + format_size(static_cast<double>(ram)) + ")");
    }
    // The bounded run's two channels may each fill to the budget, and no guard stops it:
    // --budget 1TiB grew until the system stopped it.
    if (cfg.budget > ram / 2) {
      p.reject("--budget", "at most half this machine's memory (" + format_size(static_cast<double>(ram / 2)) +
                               "): the bounded run's two channels may each hold that much");
    }
  }
  // Each half's own option given to a run of the other half alone was ignored without a word.
  if (cfg.only == "bounded" && p.given("--memory-guard")) {
    throw usage_error("sluice demo: --memory-guard stops the unbounded run, and --only bounded runs none");
  }
  if (cfg.only == "unbounded" && p.given("--budget")) {
    throw usage_error("sluice demo: --budget sizes the bounded run's channels, and --only unbounded runs none");
  }
  check_report_name("sluice demo", cfg.report, cfg.json ? "JSON" : nullptr);
  if (cfg.sample_every < std::chrono::microseconds(100)) {
    p.reject("--sample", "at least 100us");
  }

  if (!cfg.report.empty()) {
    // A report that cannot be written fails now, not after both runs (the error line is
    // main's "sluice demo: error: ...", as bench's; it printed its own, without "error:").
    check_writable(cfg.report);
    refuse_replacing_other_content("sluice demo", "--report", cfg.report);
  }

  const std::string pattern = make_log_pattern();
  progress prog("demo");
  // ^C (SIGINT, SIGTERM, SIGHUP) stops the run in progress, skips the next, and prints the
  // table (and writes the report) for what ran; a second one exits at once. Blocked before
  // any thread starts (the runs' stages, the sampler): they inherit the mask.
  // Once the runs are over, a ^C says what it interrupts: the table or the report being
  // written (a --report FIFO with no reader waits for one), not a run.
  run_stop stop;
  std::atomic<bool> runs_over{false};
  const interrupt_watch interrupted("sluice demo", [&stop, &runs_over](int sig) {
    progress::notice(std::string("\nsluice demo: interrupted by ") + ::strsignal(sig) +
                                    (runs_over.load() ? "; the runs are over, writing their results"
                                                      : "; stopping the run") +
                                    " (again to exit now)\n");
    stop.stop();
  });
  run_env env{cfg, pattern, prog, stop};
  std::vector<run_result> runs;
  double rss_after_trim = -1;
  if (cfg.only != "bounded") {
    prog.finish("run 1: " + format_size(static_cast<double>(cfg.bytes)) + " through an unbounded queue");
    runs.push_back(run_unbounded(env));
    prog.finish("unbounded queue: peak memory +" + format_size(std::max(0.0, runs.back().peak_rss)) + ", " +
                fmt("%.2f s", runs.back().elapsed_s) + (runs.back().out_of_memory ? " (out of memory)"
                                                : runs.back().guard_hit ? " (memory guard hit)"
                                                                        : ""));
    return_free_memory();
    rss_after_trim = static_cast<double>(rss_bytes());
  }
  if (cfg.only != "unbounded" && !stop.stopped()) {
    // Alone (--only bounded), it is the only run and has no "same" to refer to.
    prog.finish(runs.empty() ? "run 1: " + format_size(static_cast<double>(cfg.bytes)) + " through sluice channels with " +
                                   format_size(static_cast<double>(cfg.budget)) + " byte budgets"
                             : "run 2: the same through sluice channels with " +
                                   format_size(static_cast<double>(cfg.budget)) + " byte budgets");
    runs.push_back(run_bounded(env));
    prog.finish("sluice (bounded): peak memory +" + format_size(std::max(0.0, runs.back().peak_rss)) + ", " +
                fmt("%.2f s", runs.back().elapsed_s));
  }
  // A reader of stdout that is gone (`| true`) must not kill the demo with SIGPIPE at its
  // table: the report is written after it. Ignored from here on, the failed write is
  // reported by main's check of stdout (status 1, or this one's when interrupted).
  ::signal(SIGPIPE, SIG_IGN);
  runs_over.store(true);
  if (cfg.json) {
    print_json(cfg, runs);
  } else {
    print_table(cfg, runs, rss_after_trim);
  }
  if (!cfg.report.empty()) {
    std::fflush(stdout);  // the table shows while the report is written (a FIFO may wait)
    try {
      write_report(cfg.report, cfg, runs);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sluice demo: %s\n", e.what());
      return 1;
    }
    if (!cfg.json) std::printf("\n  report written to %s\n", detail::one_line(cfg.report).c_str());
  }
  if (const int sig = interrupted.signal(); sig != 0) {
    std::fflush(stdout);
    std::fprintf(stderr, "sluice demo: interrupted by %s\n", ::strsignal(sig));
    return 128 + sig;
  }
  bool ok = true;
  for (const auto& r : runs) ok = ok && (r.completed || r.guard_hit);
  return ok ? 0 : 1;
}

}  // namespace sluice::tool
