// tools/stress/cmd_stress.cpp — `sluice stress`: random graphs, random slow and stuck stages,
// under sluice::testing's stress engine (sluice/testing.hpp: one injector, one oracle,
// the same as users run on their own graphs); seeded and reproducible.
//
// Each run draws a graph from its own seed (derived from --seed and the run number) with
// sluice::testing::draw_random_graph:
//
//   source -> pre stages -> [ broadcast | round_robin | partition -> branches -> merge ] -> post stages -> sink
//
// with random capacities, replicas (ordered or not), filters, slow stages, a stage that
// is stuck for a while (sometimes past the deadline), one stage under error policy skip
// or restart, and sometimes a sink that finishes early. Items carry their source index
// and a padding of random size, so that memory is worth measuring. The run itself is
// sluice::testing::run_one with the run's seed: delays and injected_fault at the graph's
// pushes and pops, at most one cancel() or request_stop().
//
// Checks per run:
//   engine    everything sluice::testing checks (sluice/testing.hpp): ended within the
//             deadline of its last fault (a stage holding it up is named), what run()
//             threw, no injected fault swallowed, pushed == popped + discarded on every
//             channel, cleanup once per replica and stage, no thread left behind. The
//             injected stuck stage, when stuck past the deadline, may be named, and so
//             may every stage its thread runs (fused ones, and their host): a report
//             about a stage off that thread is a violation.
//   data      exactly once, by sluice::testing::ledger (sluice/testing/random_graph.hpp,
//             the same oracle as tests/stress/graph_stress_test.cpp): every produced
//             item's weight is found once in all, at the sink, in a filter or in dead
//             letters. A normal return without a stop delivers everything (early
//             finish: the count the sink asked for).
//   memory    peak RSS growth stays under 2 x (sum of channel capacities x item size) plus
//             a fixed allowance for thread stacks and the allocator.
// A violation prints the run's seed and graph; --replay SEED runs that one again.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "common/args.hpp"
#include "commands.hpp"
#include "common/progress.hpp"
#include "common/signals.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"
#include "sluice/testing.hpp"
#include "sluice/testing/random_graph.hpp"
#include "common/sys.hpp"
#include "stress/tally.hpp"
#include "sluice/detail/ticker.hpp"

namespace sluice::tool {
namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

#if defined(SLUICE_SANITIZER_BUILD)
constexpr int kSlow = 4;  // sanitizer builds: more slack for time and memory
#else
constexpr int kSlow = 1;
#endif

// The engine's deadline (and the graphs' teardown deadline). A graceful stop drains what is
// buffered through slow stages, and on a 2-core machine shared with a parallel ctest a
// wake-up can wait for a time slice: 200 ms was seen exceeded by sound runs under load.
constexpr std::chrono::milliseconds kTeardownDeadline = 500ms * kSlow;

// What the engine injects (sluice::testing::stress_options).
testing::stress_options engine_options() {
  testing::stress_options o;
  o.fail_probability = 0.002;
  o.delay_probability = 0.01;
  o.max_delay = 500us;
  o.cancel_probability = 0.2;
  o.stop_probability = 0.2;
  o.deadline = kTeardownDeadline;
  return o;
}

// ---- the item ------------------------------------------------------------------

// v: its source index; weight: its share (the ledger's); pad: random size, so that memory
// is worth measuring.
struct stress_item {
  std::uint64_t v = 0;
  std::uint64_t weight = 0;
  std::string pad;
};

using testing::fan_kind;
using testing::random_graph;

// Which fan-out shapes a session may draw (--fan); all by default.
struct shape_filter {
  bool allowed[4] = {true, true, true, true};  // indexed by fan_kind
  [[nodiscard]] bool all() const { return allowed[0] && allowed[1] && allowed[2] && allowed[3]; }
  [[nodiscard]] std::string text() const {
    std::string t;
    for (int i = 0; i < 4; ++i) {
      if (!allowed[i]) continue;
      if (!t.empty()) t += ',';
      t += testing::fan_name(static_cast<fan_kind>(i));
    }
    return t;
  }
};

random_graph make_spec(std::uint64_t seed, const shape_filter& shapes, bool fuse) {
  testing::random_graph_options o;
  for (int i = 0; i < 4; ++i) o.fans[i] = shapes.allowed[i];
  o.fuse = fuse;
  o.teardown_deadline = kTeardownDeadline;
  return testing::draw_random_graph(seed, o);
}

// ---- one run: build, run, check ------------------------------------------------------

struct run_outcome {
  std::vector<std::string> violations;
  double seconds = 0;
  std::string outcome;       // "ok" | "stage_error" | "cancelled" | ...
  bool stuck_named = false;  // the report named a stuck stage
  bool early = false;        // the sink finished early
};

// Samples RSS every 2 ms while alive; keeps the peak.
class rss_watch {
 public:
  rss_watch() : peak_(rss_bytes()), ticker_(sluice::detail::tick_every(2ms, [this] { sample(); }, "stress-rss")) {}
  rss_watch(const rss_watch&) = delete;
  rss_watch& operator=(const rss_watch&) = delete;
  // Stops sampling; the peak, with one last sample.
  std::uint64_t stop() {
    ticker_.stop();  // joins: the ticker's writes to peak_ happen before what follows
    sample();
    return peak_;
  }

 private:
  void sample() { peak_ = std::max(peak_, rss_bytes()); }
  std::uint64_t peak_;     // the ticker's until stop()
  sluice::detail::ticker ticker_;  // last: started after peak_ is set
};

// What a run left to check: the engine's result, the ledger, memory.
struct run_record {
  testing::run_result res;
  // The stages on the injected stuck stage's thread (it, its host, the host's fused
  // stages), read from the built graph: what a stuck report may name.
  std::set<std::string> stuck_thread;
  std::shared_ptr<testing::ledger> book;
  std::uint64_t rss_before = 0;
  std::uint64_t rss_peak = 0;
  double seconds = 0;
};

// The stages that run on `stage`'s thread(s): the thread's owner (stage itself, or the
// stage it is fused onto) and every stage fused onto that owner.
std::set<std::string> thread_of(const metrics::snapshot& snap, const std::string& stage) {
  std::string owner = stage;
  for (const auto& st : snap.stages) {
    if (st.name == stage && !st.runs_on.empty()) owner = st.runs_on;
  }
  std::set<std::string> out{owner};
  for (const auto& st : snap.stages) {
    if (st.runs_on == owner) out.insert(st.name);
  }
  return out;
}

// Runs the spec's graph once under the engine, watching memory.
run_record run_graph(const random_graph& spec, const testing::stress_options& engine) {
  run_record rec;
  return_free_memory();
  rec.rss_before = rss_bytes();
  rec.book = std::make_shared<testing::ledger>(spec);
  graph_options go;
  go.on_discard = [book = rec.book](const dead_letter& d) { book->discard<stress_item>(d); };
  std::optional<rss_watch> mem;
  mem.emplace();  // its thread exists before the engine's baseline and after its count
  const auto t0 = clock::now();
  const std::string stuck =
      spec.stuck.stage >= 0 ? spec.stages[static_cast<std::size_t>(spec.stuck.stage)].name : std::string();
  rec.res = testing::run_one(
      [&](graph& g) {
        testing::build_random_graph<stress_item>(g, spec, rec.book);
        if (!stuck.empty()) rec.stuck_thread = thread_of(g.snapshot(), stuck);
      },
      spec.seed, engine, go);
  rec.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  rec.rss_peak = mem->stop();
  mem.reset();
  return rec;
}

std::string outcome_of(const std::exception_ptr& error) {
  if (!error) return "ok";
  try {
    std::rethrow_exception(error);
  } catch (const stage_error&) {
    return "stage_error";
  } catch (const cancelled&) {
    return "cancelled";
  } catch (const std::exception& e) {
    return std::string("unexpected exception: ") + e.what();
  }
  return "unexpected exception";
}

// Memory: 2 x (sum of capacities x item size) + allowance. Channels of routing stages
// take their input's capacity.
void check_memory(const random_graph& spec, const run_record& rec, std::vector<std::string>& violations) {
  std::uint64_t slots = spec.source_capacity;
  for (const auto& s : spec.stages) slots += s.capacity * (s.replicas > 1 ? 2 : 1);
  if (spec.root.fan != fan_kind::none) {
    const std::size_t in_cap =
        spec.root.pre.empty() ? spec.source_capacity : spec.stages[static_cast<std::size_t>(spec.root.pre.back())].capacity;
    slots += in_cap * (spec.root.branches.size() + 1);
  }
  const std::uint64_t item_bytes = sizeof(stress_item) + spec.pad + 64;
  const std::uint64_t budget = 2 * slots * item_bytes;
  const std::uint64_t allowance = (32ULL << 20) * static_cast<std::uint64_t>(kSlow);
  const std::uint64_t grew = rec.rss_peak > rec.rss_before ? rec.rss_peak - rec.rss_before : 0;
  if (grew > budget + allowance) {
    violations.push_back("memory grew " + format_size(static_cast<double>(grew)) + ", over 2 x channel budgets (" +
                         format_size(static_cast<double>(budget)) + ") + " + format_size(static_cast<double>(allowance)));
  }
}

// The engine's checks, exactly-once (the ledger) and memory.
run_outcome check_run(const random_graph& spec, const run_record& rec) {
  run_outcome out;
  out.seconds = rec.seconds;
  out.outcome = outcome_of(rec.res.error);
  out.stuck_named = !rec.res.stuck.empty();
  out.early = rec.book->finished_early();
  // The engine's checks. A stage stuck past the deadline may be named, and so may any
  // stage on its thread: the engine names the owner of a thread that does not return.
  // And the run may end late whichever stage is named: a hang of 1.5 deadlines from near
  // the start leaves half a deadline or less, after it, before the engine's second look,
  // for the rest of the items to drain through channels whose every operation passes its
  // fault hook (about 1 ms an item for a 7-channel graph on 2 loaded cores). The stage then
  // still draining its input was named ("pre-1 is still running") in about one replay in
  // five of seed 0x895b9907b270298f (run 39 of `sluice stress --seed 1`). A stage that does not return even after the cancel stays a
  // violation unless it is on the stuck thread.
  const bool stuck_long = spec.stuck.stage >= 0 && spec.stuck.for_ > kTeardownDeadline;
  for (const auto& v : rec.res.violations) {
    if (stuck_long && rec.stuck_thread.count(v.stage) != 0) continue;
    if (stuck_long && v.what.starts_with("the run did not end within ")) continue;
    out.violations.push_back((v.stage.empty() ? std::string() : "stage '" + v.stage + "': ") + v.what);
  }
  if (rec.res.abandoned) return out;  // its graph is still running: nothing more to read
  for (auto& v : rec.book->check(out.outcome == "ok" && !rec.res.stopped)) out.violations.push_back(std::move(v));
  check_memory(spec, rec, out.violations);
  return out;
}

run_outcome run_one(const random_graph& spec, const testing::stress_options& engine) {
  return check_run(spec, run_graph(spec, engine));
}

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool parse_seed(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  std::string t(s);
  char* end = nullptr;
  errno = 0;
  // Decimal, or hexadecimal after 0x (as the tool prints seeds); not octal (strtoull's base
  // 0 read "010" as 8), and nothing before the digits (strtoull skips spaces and takes a
  // sign: " -5" became 0xfffffffffffffffb).
  const bool hexadecimal = t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X');
  const char* digits = t.c_str() + (hexadecimal ? 2 : 0);
  if (!std::isxdigit(static_cast<unsigned char>(*digits)) || (!hexadecimal && !std::isdigit(static_cast<unsigned char>(*digits)))) {
    return false;
  }
  const unsigned long long v = std::strtoull(digits, &end, hexadecimal ? 16 : 10);
  if (errno != 0 || end == digits || *end != '\0') return false;
  out = v;
  return true;
}

// Kills the process with the seed and graph if one run hangs: never hang silently.
// A ticker looks at the armed deadline four times a second.
class hang_guard {
 public:
  explicit hang_guard(std::chrono::seconds limit)
      : limit_(limit), ticker_(sluice::detail::tick_every(250ms, [this] { check(); }, "stress-hang")) {}
  hang_guard(const hang_guard&) = delete;
  hang_guard& operator=(const hang_guard&) = delete;
  void arm(std::string what) {
    std::lock_guard lk(mu_);
    what_ = std::move(what);
    deadline_ = clock::now() + limit_;
    armed_ = true;
  }
  void disarm() {
    std::lock_guard lk(mu_);
    armed_ = false;
  }

 private:
  void check() {
    std::lock_guard lk(mu_);
    if (!armed_ || clock::now() < deadline_) return;
    std::fprintf(stderr, "sluice stress: VIOLATION: a run did not finish within %llds (hang)\n%s\n",
                 static_cast<long long>(limit_.count()), what_.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }
  std::chrono::seconds limit_;
  std::mutex mu_;
  bool armed_ = false;           // guarded by mu_
  std::string what_;             // guarded by mu_
  clock::time_point deadline_{};  // guarded by mu_
  sluice::detail::ticker ticker_;        // last: started after every other member is built
};

}  // namespace

int cmd_stress(int argc, char** argv) {
  std::uint64_t seed = 0;
  bool seed_given = false;
  std::uint64_t runs = 100;
  std::chrono::nanoseconds duration{0};
  std::optional<std::uint64_t> replay;
  bool verbose = false;
  bool fuse = false;
  shape_filter shapes;
  arg_parser p("sluice stress",
               "Random graphs with slow and stuck stages under sluice::testing's fault injection (delays\n"
               "and injected faults at every push and pop, a random cancel / request_stop), each checked\n"
               "by its oracle (teardown time, outcome, accounting, cleanup, leaked threads) and for\n"
               "exactly-once delivery and memory. Seeded: a violation prints the run's seed; --replay\n"
               "SEED reruns it.");
  p.custom("--seed", "SEED", "seed of the whole session, decimal or 0x hex (default: from the clock)", "",
           [&](std::string_view v) {
             seed_given = true;
             return parse_seed(v, seed);
           },
           "a number (decimal or 0x hex)");
  p.count("--runs", &runs, "how many random graphs to run");
  p.duration("--duration", &duration, "stop starting new runs after this long (0: no limit)");
  p.custom("--replay", "SEED", "run only the graph with this run seed (printed on a violation)", "",
           [&](std::string_view v) {
             std::uint64_t s = 0;
             if (!parse_seed(v, s)) return false;
             replay = s;
             return true;
           },
           "a run seed as printed (decimal or 0x hex)");
  p.custom("--fan", "LIST", "fan-out shapes to draw: any of none,broadcast,round_robin,partition, or all", "all",
           [&](std::string_view v) {
             if (v == "all") {  // the default, as the help names it
               shapes = shape_filter{};
               return true;
             }
             shape_filter f;
             for (bool& a : f.allowed) a = false;
             for (;;) {  // every entry named: "none," and ",none" are both refused
               const std::size_t comma = v.find(',');
               const std::string_view w = v.substr(0, comma);
               if (w == "none") {
                 f.allowed[0] = true;
               } else if (w == "broadcast") {
                 f.allowed[1] = true;
               } else if (w == "round_robin") {
                 f.allowed[2] = true;
               } else if (w == "partition") {
                 f.allowed[3] = true;
               } else {
                 return false;
               }
               if (comma == std::string_view::npos) break;
               v.remove_prefix(comma + 1);
             }
             shapes = f;
             return f.allowed[0] || f.allowed[1] || f.allowed[2] || f.allowed[3];
           },
           "all, or a comma list of none, broadcast, round_robin, partition");
  p.flag("--fuse", &fuse, "also fuse some single-replica stages and the sink (stage_options::fuse)");
  p.flag("--verbose", &verbose, "print every run's graph and result");
  if (!p.parse(argc, argv)) return 0;
  if (runs == 0 && !replay) p.reject("--runs", "at least 1");
  // A replay runs the one graph of its seed: these were ignored without a word.
  for (const char* o : {"--runs", "--seed", "--duration"}) {
    if (replay && p.given(o)) {
      throw usage_error(std::string("sluice stress: ") + o + " does not apply to --replay (it runs the one graph of that seed)");
    }
  }
  if (!seed_given) seed = static_cast<std::uint64_t>(clock::now().time_since_epoch().count());
  const testing::stress_options engine = engine_options();

  // Run i's seed, made when it starts (a list of every run's seed up front took memory in
  // proportion to --runs: 8 bytes a run, gigabytes for "many runs for an hour").
  const std::uint64_t total_runs = replay ? 1 : runs;
  auto run_seed = [&](std::uint64_t i) { return replay ? *replay : mix(mix(seed) + i); };
  // ^C (SIGINT, SIGTERM, SIGHUP) ends the session after the run in progress, with the
  // summary of the runs made; a second one exits at once. Blocked before any thread
  // starts (the hang guard's, the runs' stages): they inherit the mask.
  const interrupt_watch interrupted("sluice stress", [](int sig) {
    progress::notice(std::string("\nsluice stress: interrupted by ") + ::strsignal(sig) +
                                    "; ending after the run in progress (again to exit now)\n");
  });
  // A reader of stdout that is gone (`sluice stress | true`), or a full disk, ends the
  // session: its results have nowhere to go. With SIGPIPE ignored, the failed write is
  // seen below and said once, with its cause, status 1, as bench and demo say it (it died
  // of SIGPIPE, 141, without a word). The cause is kept from the failed flush: main's
  // check of stdout after it found the error but no longer why.
  ::signal(SIGPIPE, SIG_IGN);
  int out_err = 0;
  auto flush_out = [&out_err] {
    errno = 0;
    if (std::fflush(stdout) == 0 && std::ferror(stdout) == 0) return true;
    if (out_err == 0) out_err = errno != 0 ? errno : EIO;
    return false;
  };
  // Says so once and ends the session. What stdout still holds goes to /dev/null, so that
  // main's check of stdout finds it clean and does not say it again.
  auto stdout_gone = [](int err) {
    std::fprintf(stderr, "sluice stress: error: cannot write to standard output: %s\n", std::strerror(err));
    const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null_fd >= 0) {
      (void)::dup2(null_fd, STDOUT_FILENO);
      ::close(null_fd);
    }
    std::clearerr(stdout);
    return 1;
  };
  if (!replay) {
    std::printf("sluice stress: seed %s, %llu runs%s\n", hex(seed).c_str(), static_cast<unsigned long long>(runs),
                duration.count() ? (", at most " + format_duration(duration)).c_str() : "");
  }
  if (!flush_out()) return stdout_gone(out_err);

  progress prog("stress");
  hang_guard guard(std::chrono::seconds(120 * kSlow));
  const auto t0 = clock::now();
  std::uint64_t done = 0, failed = 0;
  outcome_tally tally;
  const std::string fan_arg = (shapes.all() ? "" : " --fan " + shapes.text()) + (fuse ? " --fuse" : "");
  for (std::uint64_t i = 0; i < total_runs; ++i) {
    if (out_err != 0) return stdout_gone(out_err);
    // At least one run: a session that ran nothing must not say that every run held.
    if (i > 0 && duration.count() > 0 && clock::now() - t0 >= duration) break;
    if (interrupted.signal() != 0) break;
    const random_graph spec = make_spec(run_seed(i), shapes, fuse);
    const std::string text = testing::describe(spec);
    guard.arm("  run " + std::to_string(i + 1) + " seed " + hex(spec.seed) + "\n    " + text +
              "\n  replay: sluice stress --replay " + hex(spec.seed) + fan_arg);
    const run_outcome r = run_one(spec, engine);
    guard.disarm();
    ++done;
    tally.add(r.outcome, r.stuck_named, r.early);
    if (!r.violations.empty() && r.violations.front().find("cannot start the graph's threads") != std::string::npos) {
      // The system refused a thread (ulimit -u, memory): nothing sluice did, and a replay
      // would not show it. Said once, and the session stops.
      prog.clear();
      std::fprintf(stderr,
                   "sluice stress: run %zu: %s\nsluice stress: the system would not give the graph its threads "
                   "(ulimit -u, memory): not a violation; stopping after %llu runs\n",
                   i + 1, r.violations.front().c_str(), static_cast<unsigned long long>(done - 1));
      return 1;
    }
    if (!r.violations.empty()) {
      ++failed;
      prog.clear();
      std::printf("VIOLATION in run %zu (seed %s):\n    %s\n", i + 1, hex(spec.seed).c_str(), text.c_str());
      for (const auto& v : r.violations) std::printf("  - %s\n", v.c_str());
      std::printf("  replay: sluice stress --replay %s%s\n", hex(spec.seed).c_str(), fan_arg.c_str());
      (void)flush_out();
    } else if (verbose || replay) {
      prog.clear();
      std::printf("run %llu (seed %s) ok in %.3f s:\n    %s\n", static_cast<unsigned long long>(i + 1),
                  hex(spec.seed).c_str(), r.seconds, text.c_str());
      (void)flush_out();
    }
    char line[160];
    std::snprintf(line, sizeof line, "run %llu/%llu  violations %llu  (%.1f s)", static_cast<unsigned long long>(done),
                  static_cast<unsigned long long>(total_runs), static_cast<unsigned long long>(failed),
                  std::chrono::duration<double>(clock::now() - t0).count());
    prog.update(line);
  }
  prog.clear();
  std::printf("%s\n", tally.line().c_str());
  const int sig = interrupted.signal();
  std::printf("sluice stress: %llu runs, %llu with violations, %.1f s%s\n", static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(failed), std::chrono::duration<double>(clock::now() - t0).count(),
              sig != 0 ? (std::string("; interrupted by ") + ::strsignal(sig)).c_str()
                       : (failed ? "" : ": every run held"));
  if (sig != 0) return 128 + sig;
  return failed == 0 ? 0 : 1;
}

}  // namespace sluice::tool
