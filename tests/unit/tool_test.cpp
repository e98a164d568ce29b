// End-to-end tests of the `sluice` tool: they run the built binary (its path comes from
// the build, SLUICE_TOOL_PATH) and check what a user relies on: exit codes, one-line
// errors, demo's memory numbers, bench's JSON, stress passing.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <fcntl.h>
#include <sys/wait.h>
#include <signal.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "support/loopback_http.hpp"
#include "sluice/detail/ring_buffer.hpp"
#include "support/child_signals.hpp"
#include "support/mini_json.hpp"
#include "support/run_tool.hpp"
#include "support/spawn_tool.hpp"

namespace {

#if defined(SLUICE_SANITIZER_BUILD)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

using namespace std::chrono_literals;
using result = sluice_test::tool_result;
using sluice_test::run_tool;
using sluice_test::tool_path;

class Tool : public ::testing::Test {
 protected:
  void SetUp() override {
    if (tool_path().empty()) GTEST_SKIP() << "built without the sluice tool (SLUICE_BUILD_TOOLS=OFF)";
  }
};

// ---- command line -------------------------------------------------------------

TEST_F(Tool, BadArgumentsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> bad = {
      {"frobnicate"},
      {"demo", "--bytes", "lots"},
      {"demo", "--bytes"},
      {"demo", "--rate", "0"},
      {"demo", "--no-such-flag"},
      {"demo", "--only", "neither"},
      {"demo", "--sample", "10"},
      {"demo", "--report", "-"},                    // wrote a file named '-'
      {"demo", "--memory-guard", "1000000TiB"},     // above the machine: died of bad_alloc
      {"demo", "--only", "bounded", "--memory-guard", "1GiB"},  // ignored: the bounded run has no guard
      {"demo", "--only", "unbounded", "--budget", "1MiB"},      // ignored: the unbounded run has no channels
      {"bench", "--topology", "ring:3"},
      {"bench", "--topology", "chain:0"},
      {"bench", "--items", "-5"},
      {"bench", "--work", "sleep:fast"},
      {"bench", "--topology", "chain:3", "--work", "1us,2us"},
      {"bench", "--work", "9223372036854775807"},  // bare ns past 9.2e18: the work's deadline overflowed
      {"bench", "--topology", "diamond", "--engine", "tbb"},
      {"bench", "--engine", "nope"},
      {"bench", "--report", "-"},                          // wrote a file named '-'
      {"bench", "--json", "--format", "table"},            // printed JSON, silently
      {"bench", "--format", "gbench", "--json"},
      {"stress", "--runs", "many"},
      {"stress", "--seed", "-1"},
      {"stress", "--seed", " -5"},  // strtoull took the sign after the space: 0xff...fb
      {"stress", "--seed", "0x"},
      {"stress", "--seed", "12abc"},
      {"stress", "--replay", "0xZZ"},
      {"stress", "extra"},
      {"stress", "--fan", "none,"},  // accepted, while ",none" was refused
      {"stress", "--fan", ",none"},
      // An option given twice kept the last value without a word.
      {"demo", "--bytes", "1MiB", "--bytes", "2MiB"},
      {"bench", "--items", "1k", "--items=2k"},
      {"bench", "--json", "--json"},
      {"bench", "--topology", "chain:2", "--cut", "1", "--via", "nats://127.0.0.1:1", "--cut", "2"},
      {"stress", "--runs", "2", "--runs", "3"},
      // --tokens bounds oneTBB: with no oneTBB run it changed nothing.
      {"bench", "--engine", "sluice", "--tokens", "8"},
      {"bench", "--topology", "diamond", "--tokens", "8"},
      // Accepted and ignored: farm:N's replicas are its N; --fuse changes sluice's runs only.
      {"bench", "--topology", "farm:2", "--replicas", "3"},
      {"bench", "--fuse", "--engine", "tbb"},
      {"bench", "--ordered"},                                  // no replicas: accepted, changed nothing
      {"bench", "--topology", "chain:3", "--ordered", "--replicas", "1"},
      // A replay runs the one graph of its seed.
      {"stress", "--replay", "0x1234", "--runs", "5"},
      {"stress", "--replay", "0x1234", "--seed", "5"},
      {"stress", "--replay", "0x1234", "--duration", "1s"},
      // A report written to the stdout that carries the JSON spoilt the JSON.
      {"bench", "--json", "--report", "/dev/stdout"},
      {"bench", "--format", "gbench", "--report", "/proc/self/fd/1"},
      {"demo", "--json", "--report", "/dev/stdout"},
      {"gzip", "--help=x"},  // was "unknown option --help"
      {"bench", "--role", "producer"},
      {"bench", "--cut", "1", "--via", "nats://127.0.0.1:1", "--stream", "a.b"},
  };
  for (const auto& args : bad) {
    std::string what;
    for (const auto& a : args) what += a + " ";
    const result r = run_tool(args, 60);
    EXPECT_EQ(r.status, 2) << what << "\nstderr: " << r.err;
    // One clear line on stderr, naming the tool.
    ASSERT_FALSE(r.err.empty()) << what;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << what << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.rfind("sluice", 0), 0U) << what << "\nstderr: " << r.err;
    // One prefix: "sluice bench: ...", never "sluice: sluice bench: ...".
    EXPECT_EQ(r.err.find("sluice: sluice"), std::string::npos) << what << "\nstderr: " << r.err;
    EXPECT_TRUE(r.out.empty()) << what << "\nstdout: " << r.out;
  }
}

// Messages that name what is wrong, before anything runs or connects: a cut run's bad
// stream name was exit 1 after connecting (or only "cannot connect" with no server);
// --role alone named --cut and --via, never given; "--help=x" was an unknown --help.
TEST_F(Tool, UsageErrorsNameTheOptionGiven) {
  struct want {
    std::vector<std::string> args;
    std::string says;
  };
  const want cases[] = {
      {{"gzip", "--help=x"}, "--help takes no value"},
      {{"bench", "--role", "producer"}, "--role applies to --cut K; give --cut too"},
      {{"bench", "--json", "--role", "consumer"}, "--role applies to --cut K"},
      {{"bench", "--cut", "1", "--via", "nats://127.0.0.1:1", "--stream", "a.b"}, "--stream: stream name 'a.b' holds '.'"},
      {{"bench", "--cut", "1", "--via", "nats://127.0.0.1:1", "--stream", "a b"}, "--stream: stream name 'a b' has a space"},
  };
  for (const auto& c : cases) {
    const result r = run_tool(c.args, 60);
    EXPECT_EQ(r.status, 2) << c.args.back() << "\n" << r.err;
    // A tool built without JetStream has no cut runs.
    if (r.err.find("unknown option --cut") != std::string::npos || r.err.find("unknown option --role") != std::string::npos) continue;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
  }
  // --fan's default, as the help names it, is a value it takes.
  const result all = run_tool({"stress", "--runs", "1", "--seed", "3", "--fan", "all"}, kSanitized ? 280 : 240);
  EXPECT_EQ(all.status, 0) << all.out << "\n" << all.err;
  EXPECT_NE(all.out.find("1 runs, 0 with violations"), std::string::npos) << all.out;
}

TEST_F(Tool, NoArgumentsPrintsUsageAndExitsTwo) {
  const result r = run_tool({}, 60);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("usage: sluice"), std::string::npos);
}

// --serve: the URL on stderr; a bind beyond loopback is said to be one (the view shows the
// graph's names and figures to whoever reaches it).
TEST_F(Tool, BenchServePrintsTheUrlAndWarnsBeyondLoopback) {
  const result local = run_tool({"bench", "--topology", "chain:1", "--items", "20k", "--serve", "127.0.0.1:0"}, 120);
  if (local.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << local.err;
  EXPECT_EQ(local.status, 0) << local.err;
  EXPECT_NE(local.err.find("live view at http://127.0.0.1:"), std::string::npos) << local.err;
  EXPECT_EQ(local.err.find("warning"), std::string::npos) << local.err;
  const result wide = run_tool({"bench", "--topology", "chain:1", "--items", "20k", "--serve", "0.0.0.0:0"}, 120);
  EXPECT_EQ(wide.status, 0) << wide.err;
  // The warning names the port bound (the one in the URL), not the 0 asked for.
  const std::string at = "live view at http://0.0.0.0:";
  const std::size_t u = wide.err.find(at);
  ASSERT_NE(u, std::string::npos) << wide.err;
  const std::string port = wide.err.substr(u + at.size(), wide.err.find('/', u + at.size()) - (u + at.size()));
  EXPECT_GT(std::atoi(port.c_str()), 0) << wide.err;
  EXPECT_NE(wide.err.find("warning: the live view listens on 0.0.0.0:" + port + ", beyond this machine"), std::string::npos)
      << wide.err;
}

// A bench of several runs (--sweep) serves every run at the port the first one picked:
// an open page goes on from run to run. Each run bound a new free port, and the page lost
// its server after the first.
TEST_F(Tool, BenchServeKeepsOnePortAcrossASweep) {
  const result r = run_tool({"bench", "--topology", "chain:1", "--sweep", "--sweep-at", "20,50", "--probe-duration", "200ms",
                             "--duration", "200ms", "--serve", "127.0.0.1:0"},
                            120);
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  EXPECT_EQ(r.status, 0) << r.err;
  const std::size_t first = r.err.find("live view at http://127.0.0.1:");
  ASSERT_NE(first, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("live view at", first + 1), std::string::npos) << "a run moved to another port:\n" << r.err;
  EXPECT_NE(r.out.find("20%"), std::string::npos) << r.out;  // the sweep's later runs ran
  EXPECT_NE(r.out.find("50%"), std::string::npos) << r.out;
}

// A malformed --serve address is a bad command line, found before anything runs: it was
// exit 1 from the first sluice run, and with --engine tbb (no sluice run) not noticed.
TEST_F(Tool, BenchServeRefusesABadAddressBeforeItRuns) {
  const result probe = run_tool({"bench", "--topology", "chain:1", "--items", "1", "--serve", "127.0.0.1:0"}, 120);
  if (probe.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << probe.err;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"bench", "--items", "1000", "--serve", "garbage"},
        std::vector<std::string>{"bench", "--items", "1000", "--serve", "127.0.0.1:99999"},
        std::vector<std::string>{"bench", "--items", "1000", "--serve", "999.1.1.1:80"},  // was exit 1, "does not resolve"
        std::vector<std::string>{"bench", "--items", "1000", "--engine", "tbb", "--serve", "garbage"},
        std::vector<std::string>{"bench", "--items", "1000", "--engine", "tbb", "--serve", "127.0.0.1:0"}}) {
    const result r = run_tool(args, 60);
    EXPECT_EQ(r.status, 2) << args.back() << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.rfind("sluice bench: --serve", 0), 0U) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

// Every error is one line, whatever bytes the user's argument holds: --serve's host with a
// newline printed a three-line error, and an escape sequence reached the terminal raw
// (found by a probe). Control bytes are shown as \xNN.
TEST_F(Tool, AnErrorNamingAnArgumentWithControlBytesIsOneLine) {
  const result probe = run_tool({"bench", "--topology", "chain:1", "--items", "1", "--serve", "127.0.0.1:0"}, 120);
  if (probe.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << probe.err;
  for (const std::string host : {"a\nb:0", "\x1b[31mred:0"}) {
    const result r = run_tool({"bench", "--topology", "chain:1", "--items", "1000", "--serve", host}, 60);
    EXPECT_NE(r.status, 0) << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(host[0] == 'a' ? "a\\x0ab" : "\\x1b[31mred"), std::string::npos) << r.err;
  }
}

TEST_F(Tool, HelpForEverySubcommand) {
  // bench's help lists the options of a cut run too (they used to show only in the error
  // after a wrong one).
  const result bench = run_tool({"bench", "--help"}, 60);
  for (const char* opt : {"--cut K --via", "--role producer|consumer", "--edge-capacity"}) {
    EXPECT_NE(bench.out.find(opt), std::string::npos) << opt << " in\n" << bench.out;
  }
  // --help wins over the rest of the line, a cut run's options too ("--via=URL --help"
  // was "unknown option --via").
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"bench", "--via=nats://127.0.0.1:1", "--help"},
           {"bench", "--cut", "1", "--via", "nats://127.0.0.1:1", "--help"},
           {"bench", "--items", "lots", "-h"},
           {"demo", "--bytes", "lots", "--help"},
           {"stress", "--runs", "1", "--runs", "2", "--help"},
           {"gzip", "--no-such-flag", "--help"}}) {
    const result r = run_tool(args, 60);
    EXPECT_EQ(r.status, 0) << args[1] << "\n" << r.err;
    EXPECT_NE(r.out.find("usage: sluice " + args[0]), std::string::npos) << args[1] << "\n" << r.out;
  }
  const result top = run_tool({"--help"}, 60);
  EXPECT_EQ(top.status, 0);
  for (const char* sub : {"demo", "bench", "stress"}) {
    EXPECT_NE(top.out.find(sub), std::string::npos) << sub;
    const result r = run_tool({sub, "--help"}, 60);
    EXPECT_EQ(r.status, 0) << sub;
    EXPECT_NE(r.out.find(std::string("usage: sluice ") + sub), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--help"), std::string::npos) << r.out;
    // "sluice help CMD" is CMD's help (it was the general help).
    const result h = run_tool({"help", sub}, 60);
    EXPECT_EQ(h.status, 0) << sub;
    EXPECT_EQ(h.out, r.out) << sub;
  }
  const result unknown = run_tool({"help", "bogus"}, 60);
  EXPECT_EQ(unknown.status, 2);
  EXPECT_NE(unknown.err.find("unknown command 'bogus'"), std::string::npos) << unknown.err;
}

// ---- demo ---------------------------------------------------------------------

TEST_F(Tool, DemoBoundedStaysUnderItsBudgetUnboundedDoesNot) {
  // Small sizes: the sink's rate is well below what the source makes, even under a
  // sanitizer, so the unbounded queue fills; the bounded channels do not grow.
  // ThreadSanitizer slows the scrub pass to a few MiB/s (fewer bytes) and its shadow
  // memory inflates resident memory (a larger allowance).
#if defined(SLUICE_TSAN_BUILD)
  const std::string bytes = "8MiB", rate = "16MiB/s";
  const double allowance = 24.0 * 1024 * 1024;
#elif defined(SLUICE_SANITIZER_BUILD)
  const std::string bytes = "32MiB", rate = "64MiB/s";
  const double allowance = 12.0 * 1024 * 1024;
#else
  // 100 MiB/s, not faster: under a loaded CI machine (ctest -j) the CPU-bound stages must
  // still outpace the sink for the sink to be the bottleneck this test expects.
  const std::string bytes = "48MiB", rate = "100MiB/s";
  const double allowance = 8.0 * 1024 * 1024;
#endif
  const std::string html = ::testing::TempDir() + "sluice_demo_" + std::to_string(::getpid()) + ".html";
  const result r = run_tool({"demo", "--bytes", bytes, "--rate", rate, "--budget", "256KiB", "--json", "--report", html});
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  ASSERT_EQ(v["runs"].size(), 2U);
  const auto& unbounded = v["runs"][0];
  const auto& bounded = v["runs"][1];
  EXPECT_EQ(unbounded["name"].str(), "unbounded");
  EXPECT_EQ(bounded["name"].str(), "bounded");
  for (const auto* run : {&unbounded, &bounded}) {
    EXPECT_TRUE((*run)["completed"].boolean());
    EXPECT_FALSE((*run)["guard_hit"].boolean());
    EXPECT_EQ((*run)["sent_bytes"].uint(), v["bytes"].uint());
  }
  // Same bytes, same order: the sink saw the same data both times.
  EXPECT_EQ(unbounded["checksum"].uint(), bounded["checksum"].uint());

  // The bounded run: its channel budgets (2 x 256 KiB), plus what each stage may hold
  // popped in a batch (at most one channel's worth each), plus a fixed allowance for
  // thread stacks and allocator metadata.
  const double budget = bounded["budget_bytes"].num();
  EXPECT_EQ(budget, 2.0 * 256 * 1024);
  const double bound = 2 * budget + allowance;
  EXPECT_LT(bounded["peak_rss_delta_bytes"].num(), bound) << r.out;
  EXPECT_GT(unbounded["peak_rss_delta_bytes"].num(), bound) << r.out;
  // The sink's pace limits the run (under a sanitizer the scrub pass may be slower still):
  // the bounded run names the sink, and never another stage. This VM has a slow mode in
  // which generate and scrub fall near 100 MiB/s (the bounded run took 0.5-1.15 s instead
  // of 0.48, on the builds before and after 2026-12-01's changes alike), and then no stage
  // stands out in a third of the runs; so up to two more bounded runs, with the sink at a
  // quarter of that pace, are asked for the name.
  if (!kSanitized) {
    std::string named = bounded["bottleneck"].is_null() ? "" : bounded["bottleneck"].str();
    for (int again = 0; again < 2 && named.empty(); ++again) {
      const result more = run_tool({"demo", "--bytes", "24MiB", "--rate", "25MiB/s", "--budget", "256KiB", "--only",
                                    "bounded", "--json"});
      ASSERT_EQ(more.status, 0) << more.err;
      const mini_json::value m = mini_json::parse(more.out);
      ASSERT_EQ(m["runs"].size(), 1U);
      named = m["runs"][0]["bottleneck"].is_null() ? "" : m["runs"][0]["bottleneck"].str();
    }
    EXPECT_EQ(named, "send") << r.out;
    // The unbounded run names the sink too, whose input piled up: the runtime's rule sees
    // no backpressure there and named the source. The sink at a quarter of the slow mode's
    // pace, so that its queue grows whatever the machine does.
    const result unb = run_tool({"demo", "--bytes", "24MiB", "--rate", "25MiB/s", "--only", "unbounded", "--json"});
    ASSERT_EQ(unb.status, 0) << unb.err;
    const mini_json::value u = mini_json::parse(unb.out);
    ASSERT_EQ(u["runs"].size(), 1U);
    ASSERT_FALSE(u["runs"][0]["bottleneck"].is_null()) << unb.out;
    EXPECT_EQ(u["runs"][0]["bottleneck"].str(), "send") << unb.out;
  }

  // The report is one self-contained page with the curves.
  const std::string page = sluice_test::read_whole_file(html);
  std::remove(html.c_str());
  EXPECT_NE(page.find("<svg"), std::string::npos);
  EXPECT_NE(page.find("<polyline"), std::string::npos);
  EXPECT_EQ(page.find("<script src"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_EQ(page.find("<img"), std::string::npos);
}

TEST_F(Tool, DemoMemoryGuardStopsTheUnboundedRun) {
  const result r = run_tool({"demo", "--bytes", "4GiB", "--rate", "20MiB/s", "--memory-guard", "48MiB", "--only",
                             "unbounded", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  ASSERT_EQ(v["runs"].size(), 1U);
  const auto& run = v["runs"][0];
  EXPECT_TRUE(run["guard_hit"].boolean());
  EXPECT_FALSE(run["completed"].boolean());
  EXPECT_GE(run["peak_rss_delta_bytes"].num(), 48.0 * 1024 * 1024);
  EXPECT_LT(run["generated_bytes"].uint(), v["bytes"].uint());
  // Alone, the run is run 1, and the bounded one says what it runs (it said "run 2: the
  // same through ...").
  EXPECT_NE(r.err.find("run 1: 4.0 GiB through an unbounded queue"), std::string::npos) << r.err;
  const result b = run_tool({"demo", "--bytes", "4MiB", "--only", "bounded", "--json"});
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(b.err.find("run 1: 4.0 MiB through sluice channels with"), std::string::npos) << b.err;
  EXPECT_EQ(b.err.find("run 2"), std::string::npos) << b.err;
  // The table says why it stopped.
  const result t = run_tool({"demo", "--bytes", "4GiB", "--rate", "20MiB/s", "--memory-guard", "48MiB", "--only",
                             "unbounded"});
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("would have kept growing"), std::string::npos) << t.out;
}

// Runs `sluice demo ARGS`, sends SIGINT once its stderr shows `marker` (a progress line:
// stderr is a pipe, so progress is plain lines, one a second), and collects its output.
// Every wait is bounded: a demo that does not end a minute after the signal is killed and
// the test fails.
sluice_test::tool_result interrupt_demo(std::vector<std::string> args, const std::string& marker) {
  args.insert(args.begin(), {tool_path(), "demo"});
  sluice_test::spawned_tool t(std::move(args));
  const bool signalled = t.until([&] { return t.err.find(marker) != std::string::npos; }, 120s);
  if (signalled) t.signal(SIGINT);
  if (!t.wait(60s)) {
    ADD_FAILURE() << "the demo did not end " << (signalled ? "after ^C" : "(no ^C sent: no '" + marker + "')") << ":\n"
                  << t.out << t.err;
  }
  EXPECT_TRUE(signalled) << t.err;
  EXPECT_TRUE(t.exited()) << "killed by signal " << (WIFSIGNALED(t.status()) ? WTERMSIG(t.status()) : 0) << "\n"
                          << t.err;
  return {.status = t.exited() ? t.exit_code() : -1, .out = t.out, .err = t.err};
}

// ^C during the demo's first run stops it, skips the second, and still prints the table
// and writes the report, the stopped run marked "interrupted"; exit 128+N. The demo died
// of the signal with nothing printed and no report.
TEST_F(Tool, AnInterruptedDemoShowsWhatRanAndMakesNoOtherRun) {
  const std::string html = ::testing::TempDir() + "sluice_demo_int_" + std::to_string(::getpid()) + ".html";
  std::remove(html.c_str());
  const result r = interrupt_demo({"--bytes", "4GiB", "--rate", "20MiB/s", "--memory-guard", "1GiB", "--report", html},
                                  "[demo] unbounded queue  sent");
  EXPECT_EQ(r.status, 128 + SIGINT) << r.out << r.err;
  EXPECT_NE(r.err.find("sluice demo: interrupted by Interrupt; stopping the run"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("  outcome               interrupted"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Interrupted: the run marked so stopped early"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("sluice (bounded)"), std::string::npos) << "a run started after ^C:\n" << r.out;
  EXPECT_EQ(r.out.find("Same sink, same time"), std::string::npos) << r.out;
  const std::string page = sluice_test::read_whole_file(html);
  EXPECT_NE(page.find("<td>interrupted</td>"), std::string::npos) << page.substr(0, 2000);
  std::remove(html.c_str());
}

// ^C while the sink waits on its pace ends the wait: at 1 B/s one 64 KiB chunk is an
// 18-hour sleep, which the first ^C could not end.
TEST_F(Tool, AnInterruptedDemoEndsASinkWaitingOnItsPace) {
  const result r = interrupt_demo({"--bytes", "64MiB", "--rate", "1", "--only", "bounded", "--json"},
                                  "[demo] sluice (bounded)  sent");
  EXPECT_EQ(r.status, 128 + SIGINT) << r.out << r.err;
  EXPECT_EQ(r.err.find("interrupted again"), std::string::npos) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  ASSERT_EQ(v["runs"].size(), 1U) << r.out;
  EXPECT_TRUE(v["runs"][0]["interrupted"].boolean()) << r.out;
  EXPECT_FALSE(v["runs"][0]["completed"].boolean()) << r.out;
  EXPECT_LT(v["runs"][0]["sent_bytes"].uint(), v["bytes"].uint()) << r.out;
}

// ---- bench --------------------------------------------------------------------

void check_bench_json(const mini_json::value& v, const std::string& what) {
  SCOPED_TRACE(what);
  const unsigned long long expected = v["expected_deliveries"].uint();
  ASSERT_GE(v["results"].size(), 1U);
  for (const auto& r : v["results"].arr()) {
    SCOPED_TRACE(r["engine"].str());
    EXPECT_EQ(r["items_delivered"].uint(), expected);
    const double elapsed = r["elapsed_s"].num();
    ASSERT_GT(elapsed, 0);
    const double rate = r["items_per_s"].num();
    EXPECT_NEAR(rate, static_cast<double>(expected) / elapsed, rate * 1e-4);
    EXPECT_NEAR(r["bytes_per_s"].num(), rate * static_cast<double>(v["item_size"].uint()), rate * 1e-3 + 1);
    const auto& lat = r["latency_ns"];
    EXPECT_EQ(lat["count"].uint(), expected);
    EXPECT_LE(lat["p50"].uint(), lat["p99"].uint());
    EXPECT_LE(lat["p99"].uint(), lat["p999"].uint());
    EXPECT_LE(lat["p999"].uint(), lat["max"].uint());
    EXPECT_LE(lat["mean"].num(), static_cast<double>(lat["max"].uint()));
    // No item can take longer than the whole run.
    EXPECT_LE(static_cast<double>(lat["max"].uint()), elapsed * 1e9 * 1.01);
    EXPECT_TRUE(r["balanced"].boolean());
    if (r["engine"].str() != "sluice") continue;
    const auto& m = r["metrics"];
    ASSERT_TRUE(m.is_object());
    bool has_source = false, has_sink = false;
    for (const auto& st : m["stages"].arr()) {
      const double sum = st["busy_share"].num() + st["backpressured_share"].num() + st["starved_share"].num();
      EXPECT_NEAR(sum, 1.0, 1e-4) << st["name"].str();
      if (st["name"].str() == "source") {
        has_source = true;
        EXPECT_EQ(st["items_out"].uint(), v["items"].uint());
      }
      if (st["name"].str() == "sink") {
        has_sink = true;
        EXPECT_EQ(st["items_in"].uint(), expected);
      }
    }
    EXPECT_TRUE(has_source);
    EXPECT_TRUE(has_sink);
    for (const auto& c : m["channels"].arr()) {
      EXPECT_EQ(c["pushed"].uint(), c["popped"].uint() + c["discarded"].uint()) << c["name"].str();
    }
    // The bottleneck field agrees with the metrics it came from.
    EXPECT_EQ(r["bottleneck"].is_null(), m["bottleneck"].is_null());
    if (!r["bottleneck"].is_null()) {
      EXPECT_EQ(r["bottleneck"].str(), m["bottleneck"].str());
    }
  }
}

TEST_F(Tool, BenchJsonParsesAndIsSelfConsistent) {
  const std::string items = kSanitized ? "3000" : "30000";
  struct c {
    std::vector<std::string> args;
    std::size_t results;
  };
  const std::vector<c> cases = {
      {{"--topology", "chain:3", "--engine", "both", "--item-size", "100"}, 2},
      {{"--topology", "farm:3", "--engine", "both", "--work", "1us"}, 2},
      {{"--topology", "farm:2", "--ordered", "--engine", "tbb"}, 1},
      {{"--topology", "fanout:3", "--capacity", "64"}, 1},
      {{"--topology", "diamond", "--replicas", "2", "--work", "sleep:1us,0,0,0"}, 1},
  };
  for (const auto& k : cases) {
    // oneTBB is not built with the sanitizer: ThreadSanitizer cannot see its scheduler's
    // synchronisation between pipeline filters and would report races that are not.
    const bool uses_tbb = std::find(k.args.begin(), k.args.end(), "tbb") != k.args.end() ||
                          std::find(k.args.begin(), k.args.end(), "both") != k.args.end();
    if (kSanitized && uses_tbb) continue;
    std::vector<std::string> args = {"bench", "--items", items, "--json"};
    args.insert(args.end(), k.args.begin(), k.args.end());
    std::string what;
    for (const auto& a : args) what += a + " ";
    const result r = run_tool(args);
    ASSERT_EQ(r.status, 0) << what << "\n" << r.err;
    mini_json::value v;
    ASSERT_NO_THROW(v = mini_json::parse(r.out)) << what << "\n" << r.out;
    EXPECT_EQ(v["results"].size(), k.results) << what;
    check_bench_json(v, what);
  }
}

// A closed-loop run that ends by --duration: each engine sends what it can in the time,
// and the run's count is said per engine. The table's "N items" and the JSON's top-level
// expected_deliveries gave sluice's count for tbb too.
TEST_F(Tool, BenchByDurationWithBothEnginesSaysEachEnginesOwnCount) {
  if (kSanitized) GTEST_SKIP() << "oneTBB is not built with the sanitizer";
  const std::vector<std::string> args = {"bench", "--topology", "chain:2", "--duration", "200ms", "--engine", "both"};
  std::vector<std::string> json_args = args;
  json_args.push_back("--json");
  const result j = run_tool(json_args);
  ASSERT_EQ(j.status, 0) << j.err;
  const mini_json::value v = mini_json::parse(j.out);
  ASSERT_EQ(v["results"].size(), 2U) << j.out;
  const unsigned long long a = v["results"][0]["items_sent"].uint();
  const unsigned long long b = v["results"][1]["items_sent"].uint();
  for (const auto& r : v["results"].arr()) {
    EXPECT_EQ(r["items_delivered"].uint(), r["expected_deliveries"].uint()) << j.out;
  }
  // One figure for both only where it is true of both.
  if (a == b) {
    EXPECT_EQ(v["expected_deliveries"].uint(), a) << j.out;
  } else {
    EXPECT_TRUE(v["expected_deliveries"].is_null()) << j.out;
  }
  const result t = run_tool(args);
  ASSERT_EQ(t.status, 0) << t.err;
  // The table names each engine's count (two engines sending the very same number of
  // items in 200 ms would print one count, true of both).
  const bool per_engine = t.out.find("  items: sluice ") != std::string::npos && t.out.find(" tbb ") != std::string::npos;
  const bool one = t.out.find(" items\n") != std::string::npos;
  EXPECT_TRUE(per_engine != one) << t.out;
}

TEST_F(Tool, BenchFanoutDeliversEveryCopy) {
  const result r = run_tool({"bench", "--topology", "fanout:4", "--items", "1000", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  EXPECT_EQ(v["expected_deliveries"].uint(), 4000U);
  EXPECT_EQ(v["results"][0]["items_delivered"].uint(), 4000U);
  ASSERT_TRUE(v.has("interrupted_by"));  // the signal's name after ^C
  EXPECT_TRUE(v["interrupted_by"].is_null());
}

// One stage with 20x the work of the others: the table marks it, and never another stage.
// On cores crowded by other processes a woken stage waits for a CPU, and that wait is
// counted as blocked on its channel: under ThreadSanitizer with ctest -j4 stage-2 was
// 37.9% busy and 61.3% backpressured (stage-3, descheduled, drained its input late), so
// no stage reached the 40% busy share and the table said none. It is asked up to 3 times.
TEST_F(Tool, BenchTableNamesTheBottleneck) {
  bool named = false;
  for (int i = 0; i < 3 && !named; ++i) {
    const result r = run_tool({"bench", "--topology", "chain:3", "--items", kSanitized ? "300" : "2000", "--work",
                               "5us,100us,5us", "--capacity", "16"});
    ASSERT_EQ(r.status, 0) << r.err;
    const std::size_t at = r.out.find("bottleneck: ");
    ASSERT_NE(at, std::string::npos) << r.out;
    const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
    named = line == "bottleneck: stage-2";
    if (!named) {
      EXPECT_EQ(line, "bottleneck: none (no stage stands out)") << r.out;
    }
  }
  EXPECT_TRUE(named) << "3 runs, none named stage-2";
}

// A --capacity whose channels each fit in the memory free now but together do not: refused
// up front, one line with the sum, exit 2. It used to build ring after ring (each touched
// when made) until the last did not fit: 21.9 GB resident for 100 s, or the kernel's
// out-of-memory killer where the rings were each under the machine's memory.
TEST_F(Tool, BenchCapacityWhoseChannelsTogetherExceedFreeMemoryIsRefusedUpFront) {
  const std::uint64_t free_now = sluice::detail::available_memory();
  if (free_now == 0) GTEST_SKIP() << "this system does not say how much memory is free";
  // Each of chain:4's five rings is a third of what is free; 56-byte slots or more.
  const std::string capacity = std::to_string(free_now / 56 / 3);
  const result r = run_tool({"bench", "--items", "1000", "--capacity", capacity}, 60);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "stderr: " << r.err;
  EXPECT_NE(r.err.find("sluice bench: --capacity " + capacity + " is too large: the graph's 5 channels need"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("is free now"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
  // Every channel counts, the internal stages' too: fanout:N has 2N+2 (broadcast's N and
  // merge's 1 besides the source's and the branches'), diamond 8. They were counted as
  // N+1 and 5, and fanout:64 started on twice the memory the check had counted.
  for (const auto& [topology, channels] : {std::pair<std::string, int>{"fanout:64", 130}, {"diamond", 8}}) {
    const result t = run_tool({"bench", "--topology", topology, "--items", "1000", "--capacity", capacity}, 60);
    EXPECT_EQ(t.status, 2) << topology << ": " << t.err;
    EXPECT_NE(t.err.find("is too large: the graph's " + std::to_string(channels) + " channels need"), std::string::npos)
        << topology << ": " << t.err;
  }
}

// The same for oneTBB's live tokens, each of which can hold an item and its payload:
// --engine tbb skipped the check, and a command the sluice engine refused ran until
// bad_alloc (a probe: 21 s, 3.9 GB under a 4 GB limit; ~13 GB without one).
TEST_F(Tool, BenchTbbItemsInFlightPastFreeMemoryAreRefusedUpFront) {
  const std::uint64_t free_now = sluice::detail::available_memory();
  if (free_now == 0) GTEST_SKIP() << "this system does not say how much memory is free";
  // chain:1 has 2 channels: 2 x capacity tokens of 64 KiB items are twice what is free.
  const std::string capacity = std::to_string(free_now / 65536);
  const std::string tokens = std::to_string(free_now / 65536 * 2);
  for (const auto& [flag, value] : {std::pair<std::string, std::string>{"--capacity", capacity}, {"--tokens", tokens}}) {
    const result r = run_tool({"bench", "--engine", "tbb", "--topology", "chain:1", "--items", "1000", "--item-size",
                               "64KiB", flag, value},
                              60);
    EXPECT_EQ(r.status, 2) << flag << ": " << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "stderr: " << r.err;
    EXPECT_NE(r.err.find("sluice bench: --item-size 64KiB with " + flag + " " + value + " is too large: oneTBB's"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("is free now"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
  }
}

// A topology's count spelled otherwise (chain:01, chain:1.0, chain:0.001k) is named as
// chain:1 in every output: each spelling was a benchmark name of its own.
TEST_F(Tool, BenchNamesATopologyOneWayHoweverItsCountIsSpelled) {
  for (const std::string spelled : {"chain:01", "chain:1.0", "chain:0.001k"}) {
    const result r = run_tool({"bench", "--topology", spelled, "--items", "100", "--format", "json"}, 60);
    EXPECT_EQ(r.status, 0) << spelled << ": " << r.err;
    EXPECT_NE(r.out.find("\"topology\":\"chain:1\""), std::string::npos) << spelled << ": " << r.out.substr(0, 200);
  }
}

// The same under the process's own limit (ulimit -v): the rings were built one by one,
// each filled, until one past the limit failed (19 s for 5 rings of 1.2 GiB under 4 GB).
TEST_F(Tool, BenchCapacityPastTheAddressSpaceLimitIsRefusedUpFront) {
  if (kSanitized) GTEST_SKIP() << "a sanitizer's shadow memory needs more address space than any limit here";
  // 1 GiB of address space; chain:4's five rings of 64 MiB items or more each need 2 GiB+.
  const result r = sluice_test::run_shell("ulimit -v 1048576 && timeout -s KILL 60 " +
                                          sluice_test::shell_quote(sluice_test::tool_path()) +
                                          " bench --items 1000 --capacity 8M 2>&1");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("sluice bench: --capacity 8M is too large: the graph's 5 channels need"), std::string::npos)
      << r.out;
}

// The demo's unbounded run out of memory (ulimit -v) well below its memory guard stops
// there, and says so: it said "memory guard hit", with a note on a guard never reached.
TEST_F(Tool, ADemoOutOfMemoryBelowItsGuardSaysOutOfMemory) {
  if (kSanitized) GTEST_SKIP() << "a sanitizer's shadow memory needs more address space than any limit here";
  const result r = sluice_test::run_shell("ulimit -v 200000 && timeout -s KILL 120 " +
                                          sluice_test::shell_quote(sluice_test::tool_path()) +
                                          " demo --bytes 4G --rate 50M --memory-guard 4G --only unbounded 2>&1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("out of memory"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("before the memory guard (4.0 GiB) was reached"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("memory guard hit"), std::string::npos) << r.out;
}

// The bounded run with 1-byte chunks stays near its channel budgets: a chunk is weighed
// with what holding it costs, not its bytes alone. Budgets of 2 x 1 MiB held a million
// chunks each, and the run peaked at +104.5 MiB while the demo said memory is its budgets.
TEST_F(Tool, ADemoOfOneByteChunksStaysNearItsBudgets) {
  if (kSanitized) GTEST_SKIP() << "a sanitizer's own allocations are not the demo's";
  const result r = run_tool({"demo", "--only", "bounded", "--chunk", "1", "--budget", "1MiB", "--rate", "4MiB/s",
                             "--bytes", "4MiB", "--json"},
                            120);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string key = "\"peak_rss_delta_bytes\":";
  const std::size_t at = r.out.find(key);
  ASSERT_NE(at, std::string::npos) << r.out;
  const double peak = std::strtod(r.out.c_str() + at + key.size(), nullptr);
  EXPECT_LT(peak, 4.0 * 2 * 1024 * 1024) << "peak +" << peak / (1 << 20) << " MiB against budgets of 2 MiB";
}

// A --capacity whose channels cannot exist: one line naming it, exit 2, nothing run.
// Before: 2^62 crashed with SIGSEGV (the ring's slot count wrapped), and 2^40 printed
// "error: std::bad_alloc" with exit 1.
TEST_F(Tool, BenchCapacityTooLargeIsOneLineNamingIt) {
  struct c {
    const char* capacity;
    const char* says;
  };
  for (const c& k : {c{"4611686018427387904", "more than this machine can address"},
                     c{"1099511627776", "cannot be had"}}) {
    const result r = run_tool({"bench", "--items", "1000", "--capacity", k.capacity}, 60);
    EXPECT_EQ(r.status, 2) << k.capacity << "\nstderr: " << r.err;
    ASSERT_FALSE(r.err.empty()) << k.capacity;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "stderr: " << r.err;
    EXPECT_EQ(r.err.rfind("sluice", 0), 0U) << "stderr: " << r.err;
    EXPECT_NE(r.err.find(std::string("--capacity ") + k.capacity), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(k.says), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << "stdout: " << r.out;
  }
}

// A result that could not be written is an error: stdout on a full device (/dev/full), for
// each command that prints its result there.
TEST_F(Tool, OutputThatCannotBeWrittenIsAnErrorNotExitZero) {
  if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no /dev/full here";
  const std::vector<std::vector<std::string>> commands = {
      {"bench", "--topology", "chain:1", "--items", "1000", "--format", "json"},
      {"bench", "--topology", "chain:1", "--items", "1000"},
      {"stress", "--runs", "1", "--seed", "7"},
      {"--help"},
  };
  for (const auto& args : commands) {
    std::string cmd = "timeout -s KILL 120 " + sluice_test::shell_quote(tool_path());
    std::string shown;
    for (const auto& a : args) {
      cmd += " " + sluice_test::shell_quote(a);
      shown += " " + a;
    }
    cmd += " 2>&1 >/dev/full";  // stderr to us, stdout to the full device
    const result r = sluice_test::run_shell(cmd);
    EXPECT_EQ(r.status, 1) << "sluice" << shown << "\noutput: " << r.out;
    EXPECT_NE(r.out.find("cannot write to standard output: No space left on device"), std::string::npos)
        << "sluice" << shown << "\noutput: " << r.out;
  }
}

// `sluice demo ARGS` with a stdout whose reader has gone (the read end of its pipe closed
// before it starts) and stderr to a file: its status (128+N if killed by N) and stderr.
result with_stdout_gone(const char* cmd, std::vector<std::string> args) {
  const std::string err_path = ::testing::TempDir() + "sluice_" + cmd + "_err_" + std::to_string(::getpid());
  args.insert(args.begin(), {tool_path(), cmd});
  sluice_test::spawn_options o;
  o.stdout_gone = true;
  o.stderr_file = err_path;
  sluice_test::spawned_tool t(std::move(args), std::move(o));
  if (!t.wait(120s)) ADD_FAILURE() << "sluice " << cmd << " did not end";
  result r;
  r.status = t.exit_code();
  r.err = sluice_test::read_whole_file(err_path);
  std::remove(err_path.c_str());
  return r;
}

// A reader of stdout that is gone (`sluice demo --report r.html | true`) does not kill the
// demo with SIGPIPE at its table: the report is written, and it ends with "cannot write
// to standard output" and status 1, as bench does. It died of SIGPIPE (141), without a word.
TEST_F(Tool, ADemoWhoseStdoutReaderIsGoneWritesItsReportAndSaysSo) {
  const std::string html = ::testing::TempDir() + "sluice_demo_gone_" + std::to_string(::getpid()) + ".html";
  std::remove(html.c_str());
  const result r = with_stdout_gone("demo", {"--bytes", "4MiB", "--report", html});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("sluice demo: error: cannot write to standard output"), std::string::npos) << r.err;
  EXPECT_NE(sluice_test::read_whole_file(html).find("<svg"), std::string::npos);
  std::remove(html.c_str());
}

// `sluice stress | true`: the session ends, since its results have nowhere to go, with
// "cannot write to standard output" and status 1. It died of SIGPIPE (141), without a
// word. A million runs would take hours: the wait's two minutes see that it stopped.
TEST_F(Tool, AStressSessionWhoseStdoutReaderIsGoneEndsAndSaysSo) {
  const result r = with_stdout_gone("stress", {"--runs", "1000000"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("sluice stress: error: cannot write to standard output"), std::string::npos) << r.err;
}

// A rate so small that its chart's axis is subnormal: the report is written. Its tick
// step underflowed to 0, and drawing it never ended, growing until memory ran out.
TEST_F(Tool, AReportOfASubnormalRateIsWritten) {
  const std::string html = ::testing::TempDir() + "sluice_tiny_rate_" + std::to_string(::getpid()) + ".html";
  std::remove(html.c_str());
  const std::string tiny = "0." + std::string(322, '0') + "5";  // about 5e-323 items/s
  const result r = run_tool({"bench", "--rate", tiny, "--duration", "10ms", "--report", html}, 120);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(sluice_test::read_whole_file(html).find("</html>"), std::string::npos);
  std::remove(html.c_str());
}

// --report onto what is not a regular file: a FIFO (or a device) is written in place, never
// replaced by a regular file (before, `--report /dev/null` as root replaced /dev/null); a
// directory is refused; a new report gets 0666 less the umask (it was always 0644).
TEST_F(Tool, ReportsAreWrittenInPlaceOnAFifoAndFollowTheUmask) {
  char tmpl[] = "/tmp/sluice_report_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string fifo = dir + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  // Our own ends first: the read end (so the tool finds a reader) and a write end (so our
  // reads see no end of file before the tool wrote). The report fits in the pipe's buffer.
  const int rd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(rd, 0);
  const int wr = ::open(fifo.c_str(), O_WRONLY);
  ASSERT_GE(wr, 0);
  for (const char* cmd : {"bench", "demo"}) {
    SCOPED_TRACE(cmd);
    const std::vector<std::string> args =
        std::string(cmd) == "bench" ? std::vector<std::string>{"bench", "--topology", "chain:1", "--items", "1000", "--report", fifo}
                                    : std::vector<std::string>{"demo", "--bytes", "1MiB", "--report", fifo};
    const result r = run_tool(args, 120);
    EXPECT_EQ(r.status, 0) << r.err;
    std::string got;
    char buf[65536];
    ssize_t n = 0;
    while ((n = ::read(rd, buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
    EXPECT_NE(got.find("</html>"), std::string::npos) << got.size() << " bytes read from the FIFO";
    struct stat st{};
    ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  }
  ::close(wr);
  ::close(rd);
  // A path that leads to one of the tool's own descriptors (here a link to /proc/self/fd/1,
  // as /dev/stdout is) is written to that descriptor: stdout redirected to a file gets the
  // table and then the report, and the link stays a link (it was replaced by a regular file:
  // as root, `--report /dev/stdout > file` would have replaced the system's /dev/stdout).
  // With --format json that is refused (the page would spoil the JSON): BadArguments.
  {
    const std::string link = dir + "/so";
    const std::string out = dir + "/stdout";
    ASSERT_EQ(::symlink("/proc/self/fd/1", link.c_str()), 0);
    const result r = sluice_test::run_shell("timeout -s KILL 120 " + sluice_test::shell_quote(tool_path()) +
                                            " bench --topology chain:1 --items 1000 --report " +
                                            sluice_test::shell_quote(link) + " >" + sluice_test::shell_quote(out) +
                                            " 2>/dev/null");
    EXPECT_EQ(r.status, 0);
    struct stat ls{};
    ASSERT_EQ(::lstat(link.c_str(), &ls), 0);
    EXPECT_TRUE(S_ISLNK(ls.st_mode)) << "the link was replaced";
    const std::string got = sluice_test::read_whole_file(out);
    EXPECT_EQ(got.find("sluice bench"), 0U) << got.substr(0, 100);
    EXPECT_NE(got.find("</html>"), std::string::npos);
    // With stdout closed, the same path is an error, not a report lost to /dev/null.
    const result closed = sluice_test::run_shell("timeout -s KILL 120 " + sluice_test::shell_quote(tool_path()) +
                                                 " bench --topology chain:1 --items 1000 --report " +
                                                 sluice_test::shell_quote(link) + " 2>&1 >&-");
    EXPECT_EQ(closed.status, 1);
    EXPECT_NE(closed.out.find("it names a standard stream that is closed"), std::string::npos) << closed.out;
    std::remove(link.c_str());
    std::remove(out.c_str());
  }
  // A directory is refused by name.
  const result d = run_tool({"bench", "--topology", "chain:1", "--items", "1000", "--report", dir}, 120);
  EXPECT_EQ(d.status, 1);
  EXPECT_NE(d.err.find("cannot write report " + dir + ": it is a directory"), std::string::npos) << d.err;
  // The umask applies.
  const std::string priv = dir + "/priv.html";
  const result u = sluice_test::run_shell("umask 077; timeout -s KILL 120 " + sluice_test::shell_quote(tool_path()) +
                                          " bench --topology chain:1 --items 1000 --report " + sluice_test::shell_quote(priv) +
                                          " >/dev/null 2>&1");
  EXPECT_EQ(u.status, 0);
  struct stat ps{};
  ASSERT_EQ(::stat(priv.c_str(), &ps), 0);
  EXPECT_EQ(ps.st_mode & 0777, 0600U);
  // Rewritten, a report the user made private stays private; a name of 250 bytes (the
  // temporary name beside it used to pass NAME_MAX) is written.
  ASSERT_EQ(::chmod(priv.c_str(), 0640), 0);
  const std::string long_name = dir + "/" + std::string(250, 'r');
  for (const std::string& path : {priv, long_name}) {
    const result w = run_tool({"bench", "--topology", "chain:1", "--items", "1000", "--report", path}, 120);
    EXPECT_EQ(w.status, 0) << w.err;
  }
  ASSERT_EQ(::stat(priv.c_str(), &ps), 0);
  EXPECT_EQ(ps.st_mode & 0777, 0640U);
  EXPECT_NE(sluice_test::read_whole_file(long_name).find("</html>"), std::string::npos);
  std::remove(long_name.c_str());
  std::remove(priv.c_str());
  std::remove(fifo.c_str());
  ::rmdir(dir.c_str());
}

// ^C once the runs are over, while the report goes to a FIFO whose reader does not read
// yet: the message says the results are being written (it said the run in progress
// "stops sending and drains", or "stopping the run", when none ran). The table shows
// before the report is written; the report is still whole and the exit is 128+N.
TEST_F(Tool, AnInterruptWhileTheReportIsWrittenSaysSo) {
  char tmpl[] = "/tmp/sluice_report_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string fifo = dir + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  struct cmd_case {
    std::vector<std::string> args;
    std::string table_end;  // the table's last words, shown before the report is written
    std::string says;
  };
  const cmd_case cases[] = {
      {{tool_path(), "bench", "--topology", "chain:1", "--items", "1000", "--report", fifo}, "bottleneck:",
       "sluice bench: interrupted by Interrupt; the runs are over, writing their results (again to exit now)"},
      {{tool_path(), "demo", "--bytes", "1MiB", "--report", fifo}, "malloc_trim(0)",
       "sluice demo: interrupted by Interrupt; the runs are over, writing their results (again to exit now)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args[1]);
    // A reader that holds the FIFO open, its pipe made small (one page) so that the
    // report does not fit and its write waits for us.
    const int rd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    ASSERT_GE(rd, 0);
    ASSERT_GT(::fcntl(rd, F_SETPIPE_SZ, 4096), 0);
    sluice_test::spawned_tool t(c.args);
    const bool shown = t.until([&] { return t.out.find(c.table_end) != std::string::npos; }, 120s);
    EXPECT_TRUE(shown) << t.out << t.err;
    if (shown) t.signal(SIGINT);
    EXPECT_TRUE(t.until([&] { return t.err.find("interrupted by") != std::string::npos; }, 60s)) << t.err;
    EXPECT_NE(t.err.find(c.says), std::string::npos) << t.err;
    EXPECT_EQ(t.err.find("drains"), std::string::npos) << t.err;
    EXPECT_EQ(t.err.find("stopping the run"), std::string::npos) << t.err;
    // Now read it: the report arrives whole and the tool ends.
    std::string got;
    const auto until = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      pollfd p{.fd = rd, .events = POLLIN, .revents = 0};
      ASSERT_GE(::poll(&p, 1, 100), 0);
      char buf[65536];
      const ssize_t n = ::read(rd, buf, sizeof buf);
      if (n > 0) got.append(buf, static_cast<std::size_t>(n));
      if (n == 0 && got.find("</html>") != std::string::npos) break;  // the writer closed it
      ASSERT_LT(std::chrono::steady_clock::now(), until) << got.size() << " bytes of the report read";
    }
    ::close(rd);
    ASSERT_TRUE(t.wait(60s)) << t.err;
    EXPECT_EQ(t.exit_code(), 128 + SIGINT) << t.err;
    EXPECT_NE(got.find("</html>"), std::string::npos);
  }
  std::remove(fifo.c_str());
  ::rmdir(dir.c_str());
}

// A --report that cannot be written (its directory missing, not a directory, or not
// writable: /proc, even for root) is a one-line error before the run, not after it: nothing
// on stdout, exit 1 as for any report that cannot be written, and no file left. A path that
// names the tool's own stdout still gets the report.
TEST_F(Tool, AReportThatCannotBeWrittenIsRefusedBeforeTheRun) {
  char tmpl[] = "/tmp/sluice_report_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string file = dir + "/file";
  ASSERT_EQ(sluice_test::run_shell("printf x > " + sluice_test::shell_quote(file)).status, 0);
  // The last: a name over NAME_MAX, which failed only at the rename after the run.
  for (const std::string& path : {dir + "/missing/r.html", file + "/r.html", std::string("/proc/sluice_r.html"),
                                  dir + "/" + std::string(256, 'n') + ".html"}) {
    for (const char* cmd : {"bench", "demo"}) {
      SCOPED_TRACE(std::string(cmd) + " --report " + path);
      // Runs long enough (seconds) that "before the run" is not a matter of luck.
      const std::vector<std::string> args =
          std::string(cmd) == "bench"
              ? std::vector<std::string>{"bench", "--topology", "chain:1", "--items", "1000", "--report", path}
              : std::vector<std::string>{"demo", "--bytes", "64MiB", "--rate", "32MiB/s", "--report", path};
      const result r = run_tool(args, 120);
      EXPECT_EQ(r.status, 1) << r.err;
      EXPECT_TRUE(r.out.empty()) << "the run happened first:\n" << r.out;
      ASSERT_FALSE(r.err.empty());
      EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
      // The same line from both tools (demo's lacked the "error: ").
      EXPECT_EQ(r.err.rfind("sluice " + std::string(cmd) + ": error: cannot write report " + path + ": ", 0), 0U)
          << r.err;
      EXPECT_EQ(::access(path.c_str(), F_OK), -1);
    }
  }
  const result so = run_tool({"bench", "--topology", "chain:1", "--items", "1000", "--report", "/dev/stdout"}, 120);
  EXPECT_EQ(so.status, 0) << so.err;
  EXPECT_NE(so.out.find("</html>"), std::string::npos);
  std::remove(file.c_str());
  EXPECT_EQ(::rmdir(dir.c_str()), 0) << "something was left in " << dir;
}

// A --report naming a file that holds something else (a data file, given by mistake) is
// refused before the run, and the file is kept: it was replaced by the report, exit 0.
// An earlier report, or an empty file, is replaced as before.
TEST_F(Tool, AReportDoesNotReplaceAFileThatIsNotAReport) {
  char tmpl[] = "/tmp/sluice_report_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string data = dir + "/results.csv";
  ASSERT_EQ(sluice_test::run_shell("printf 'a,b\\n1,2\\n' > " + sluice_test::shell_quote(data)).status, 0);
  for (const char* cmd : {"bench", "demo"}) {
    SCOPED_TRACE(cmd);
    const std::vector<std::string> args =
        std::string(cmd) == "bench"
            ? std::vector<std::string>{"bench", "--topology", "chain:1", "--items", "1000", "--report", data}
            : std::vector<std::string>{"demo", "--bytes", "8MiB", "--report", data};
    const result r = run_tool(args, 120);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_TRUE(r.out.empty()) << "the run happened first:\n" << r.out;
    EXPECT_NE(r.err.find("--report " + data + " exists and is not a sluice report"), std::string::npos) << r.err;
    EXPECT_EQ(sluice_test::run_shell("cat " + sluice_test::shell_quote(data)).out, "a,b\n1,2\n");
  }
  // A page of the user's own that names sluice (it passed as a report, and was replaced).
  const std::string notes = dir + "/notes.html";
  const std::string mine = "<!DOCTYPE html><html><head><title>My notes on the sluice library</title></head></html>\n";
  ASSERT_EQ(sluice_test::run_shell("printf '%s' " + sluice_test::shell_quote(mine) + " > " + sluice_test::shell_quote(notes)).status, 0);
  for (const char* cmd : {"bench", "demo"}) {
    SCOPED_TRACE(cmd);
    const result r = run_tool(std::string(cmd) == "bench"
                                  ? std::vector<std::string>{"bench", "--topology", "chain:1", "--items", "1000", "--report", notes}
                                  : std::vector<std::string>{"demo", "--bytes", "8MiB", "--report", notes},
                              120);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find("--report " + notes + " exists and is not a sluice report"), std::string::npos) << r.err;
    EXPECT_EQ(sluice_test::read_whole_file(notes), mine);
  }
  std::remove(notes.c_str());
  // A report from an earlier run is replaced by the next.
  const std::string page = dir + "/r.html";
  for (int i = 0; i < 2; ++i) {
    const result r = run_tool({"bench", "--topology", "chain:1", "--items", "1000", "--report", page}, 120);
    EXPECT_EQ(r.status, 0) << "run " << i << ": " << r.err;
  }
  const result d = run_tool({"demo", "--bytes", "8MiB", "--report", page}, 120);  // a bench report: ours too
  EXPECT_EQ(d.status, 0) << d.err;
  std::remove(data.c_str());
  std::remove(page.c_str());
  EXPECT_EQ(::rmdir(dir.c_str()), 0) << "something was left in " << dir;
}

// A --report naming the very file stdout is redirected to (`--report r > r`, or `>>`) gets
// the table and then the report, as /dev/stdout does: the report was renamed over the
// file, and the table printed into it was lost without a word (exit 0).
TEST_F(Tool, AReportOntoTheFileStdoutGoesToFollowsTheTable) {
  char tmpl[] = "/tmp/sluice_report_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string file = dir + "/t.out";
  for (const char* redirect : {" > ", " >> "}) {
    for (const char* cmd : {"bench", "demo"}) {
      SCOPED_TRACE(std::string(cmd) + redirect);
      std::remove(file.c_str());
      const std::string args = std::string(cmd) == "bench" ? " bench --topology chain:1 --items 1000"
                                                           : " demo --bytes 4MiB --only bounded";
      const result r = sluice_test::run_shell("SLUICE_PROGRESS=off timeout -s KILL 120 " +
                                              sluice_test::shell_quote(tool_path()) + args + " --report " +
                                              sluice_test::shell_quote(file) + redirect +
                                              sluice_test::shell_quote(file) + " 2>/dev/null");
      EXPECT_EQ(r.status, 0);
      const std::string got = sluice_test::read_whole_file(file);
      const std::size_t table = got.find(std::string(cmd) == "bench" ? "items/s" : "outcome");
      const std::size_t page = std::min(got.find("<!DOCTYPE html>"), got.find("<!doctype html>"));
      EXPECT_NE(table, std::string::npos) << "the table is lost:\n" << got.substr(0, 300);
      EXPECT_NE(page, std::string::npos) << got.substr(0, 300);
      EXPECT_LT(table, page);
      EXPECT_NE(got.find("</html>"), std::string::npos);
    }
  }
  std::remove(file.c_str());
  EXPECT_EQ(::rmdir(dir.c_str()), 0) << "something was left in " << dir;
}

// A --report name with control bytes is shown escaped on one line, in its errors and in
// "report written to" (an escape sequence in it reached the terminal: it could clear the
// screen or set the window title); and a --report whose value was forgotten does not take
// the next option as a file name (a report named "--json" was written).
TEST_F(Tool, AReportNameIsShownEscapedAndAnOptionIsNotTakenForIt) {
  const result bad = run_tool({"bench", "--topology", "chain:1", "--items", "1000", "--report", "/nonexistent/a\nb\x1b[31m"}, 120);
  EXPECT_EQ(bad.status, 1) << bad.err;
  EXPECT_EQ(bad.err.find('\n'), bad.err.size() - 1) << bad.err;
  EXPECT_EQ(bad.err.find('\x1b'), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("cannot write report /nonexistent/a\\x0ab\\x1b[31m: "), std::string::npos) << bad.err;
  char tmpl[] = "/tmp/sluice_report_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string page = std::string(tmpl) + "/q\x1b]0;TITLE\a.html";
  const result ok = run_tool({"demo", "--bytes", "4MiB", "--only", "bounded", "--report", page}, 120);
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_EQ(ok.out.find('\x1b'), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("report written to " + std::string(tmpl) + "/q\\x1b]0;TITLE\\x07.html\n"), std::string::npos)
      << ok.out;
  std::remove(page.c_str());
  EXPECT_EQ(::rmdir(tmpl), 0);
  for (const char* cmd : {"bench", "demo"}) {
    const result r = run_tool({cmd, "--report", "--json"});
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find("--report needs a value (FILE.html), not the option --json (a value that starts so is given as "
                         "--report=--json)"),
              std::string::npos)
        << r.err;
  }
}

// A value rejected after parsing (out of range) is quoted as typed, not as the number it
// parsed to: "--level 1k" said "bad value '1000'".
// Each command line is refused with status 2 and one line of stderr containing `says`.
struct refusal {
  std::vector<std::string> args;
  const char* says;
};
void expect_refused(const std::vector<refusal>& cases) {
  for (const refusal& k : cases) {
    std::string what;
    for (const auto& a : k.args) what += a + " ";
    const result r = run_tool(k.args, 60);
    EXPECT_EQ(r.status, 2) << what << "\nstderr: " << r.err;
    EXPECT_NE(r.err.find(k.says), std::string::npos) << what << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << what << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find("9.2e18"), std::string::npos) << what << "\nstderr: " << r.err;
  }
}

TEST_F(Tool, AnOutOfRangeValueIsQuotedAsTyped) {
  expect_refused({
      {{"gzip", "--level", "1k", "/dev/null", "-"}, "bad value '1k' for --level"},
      {{"gzip", "--level=0.01k", "/dev/null", "-"}, "bad value '0.01k' for --level"},
      {{"gzip", "--block", "2GiB", "/dev/null", "-"}, "bad value '2GiB' for --block"},
      {{"gzip", "--jobs", "2k", "/dev/null", "-"}, "bad value '2k' for --jobs"},
      {{"demo", "--chunk", "1TiB"}, "bad value '1TiB' for --chunk"},
      {{"demo", "--bytes", "0KiB"}, "bad value '0KiB' for --bytes"},
      {{"demo", "--sample", "10us"}, "bad value '10us' for --sample"},
      {{"bench", "--replicas", "1k"}, "bad value '1k' for --replicas"},
      {{"bench", "--item-size", "1GiB"}, "bad value '1GiB' for --item-size"},
      {{"bench", "--items", "1000", "--capacity", "1100G"}, "--capacity 1100G is too large"},
      // What would not fit once the channels fill: refused up front (it ran until out of
      // memory, or the OOM killer), as a fraction of a byte is (1.5 ran with 2 B items).
      {{"bench", "--items", "100", "--item-size", "64MiB", "--capacity", "100000", "--topology", "chain:1"},
       "--item-size 64MiB with --capacity 100000 is too large"},
      {{"bench", "--item-size", "1.5"}, "bad value '1.5' for --item-size"},
      {{"bench", "--item-size", "0.4"}, "bad value '0.4' for --item-size"},
      {{"demo", "--budget", "1000TiB"}, "bad value '1000TiB' for --budget: expected at most half this machine's memory"},
      {{"gzip", "--block", "1GiB", "--jobs", "1024", "/dev/null", "-"},
       "bad value '1GiB' for --block: expected a size whose 1024 blocks in flight"},
  });
}

// An option with a narrow range says that range for any bad value, a number past any
// count too: "--level 99999999999999999999" said "a whole number up to 9.2e18".
TEST_F(Tool, ANarrowOptionSaysItsRangeForAHugeOrNonNumericValue) {
  expect_refused({
      {{"gzip", "--level", "99999999999999999999", "/dev/null", "-"}, "expected a level from 0 to 9"},
      {{"gzip", "--level", "fast", "/dev/null", "-"}, "expected a level from 0 to 9"},
      {{"gzip", "--jobs", "99999999999999999999", "/dev/null", "-"}, "expected 0 to 1024"},
      {{"bench", "--replicas", "99999999999999999999"}, "expected 1 to 256"},
      // Sizes too: --block past 2^64 said "expected a size like 512MiB, 64KiB or 4096".
      {{"gzip", "--block", "18446744073709551615", "/dev/null", "-"}, "expected 1 byte to 1 GiB"},
      {{"gzip", "--block", "0", "/dev/null", "-"}, "expected 1 byte to 1 GiB"},
      {{"demo", "--chunk", "99999999999999999999"}, "expected a size between 1 B and 256 MiB"},
  });
}

// A whole number past 2^63 is told it is too large, for --items as for --capacity
// (--items said "expected a whole number like 1000 or 10k" of 99999999999999999999999).
TEST_F(Tool, ACountPastTwoToThe63SaysItIsTooLargeForEveryCountOption) {
  for (const char* opt : {"--items", "--capacity"}) {
    const result r = run_tool({"bench", opt, "99999999999999999999999"}, 60);
    EXPECT_EQ(r.status, 2) << opt << "\nstderr: " << r.err;
    EXPECT_NE(r.err.find(std::string("for ") + opt + ": expected a whole number up to 9.2e18 (this one is too large)"),
              std::string::npos)
        << r.err;
    const result junk = run_tool({"bench", opt, "lots"}, 60);
    EXPECT_NE(junk.err.find("expected a whole number like 1000 or 10k"), std::string::npos) << junk.err;
  }
  const result size = run_tool({"bench", "--item-size", "99999999999999999999"}, 60);
  EXPECT_EQ(size.status, 2) << size.err;
  EXPECT_NE(size.err.find("expected a size up to 9.2e18 bytes (this one is too large)"), std::string::npos) << size.err;
}

// A well-formed duration out of range says the range, not the form: "--duration
// 99999999999s" said "expected a duration like 10ms, 2s or 500us".
TEST_F(Tool, ADurationOutOfRangeSaysTheRange) {
  expect_refused({
      {{"stress", "--duration", "99999999999s"}, "expected a duration of at most 9.2e9s (about 290 years)"},
      {{"demo", "--sample", "3000000h"}, "bad value '3000000h' for --sample: expected a duration of at most"},
      {{"stress", "--duration", "0.1ns"}, "expected 0, or a duration of at least 1ns"},
      {{"stress", "--duration", "10 parsecs"}, "expected a duration like 10ms, 2s or 500us"},
  });
}

// --via without --cut said "unknown option --via", though --help shows it.
TEST_F(Tool, ViaWithoutCutSaysItNeedsCut) {
  expect_refused({{{"bench", "--via", "nats://127.0.0.1:4222"}, "sluice bench: --via applies to --cut K; give --cut too"},
                  {{"bench", "--via=nats://127.0.0.1:4222"}, "sluice bench: --via applies to --cut K; give --cut too"}});
}

// ---- stress -------------------------------------------------------------------

// Every shape; the next test runs the shapes without broadcast on their own.
TEST_F(Tool, StressRunsPass) {
  const std::string runs = "50";
  const result r = run_tool({"stress", "--runs", runs, "--seed", "1"}, kSanitized ? 280 : 240);
  EXPECT_EQ(r.status, 0) << r.out << "\n" << r.err;
  EXPECT_NE(r.out.find("every run held"), std::string::npos) << r.out;
}

// A stage drawn stuck for 1.5 deadlines near the start of a run holds the run up; once
// it lets go, the rest drains, and the engine's second look may find the run still
// draining. That is the injected hang's doing, not a violation: the stage still draining
// then (pre-1 here) was named "still running (does it ignore its stop token?)" in about
// one replay in five, and `sluice stress --seed 1` failed so now and then (its run 39).
TEST_F(Tool, AStageStuckPastTheDeadlineIsNotBlamedOnTheStagesDrainingAfterIt) {
  for (int i = 0; i < 8; ++i) {
    const result r = run_tool({"stress", "--replay", "0x895b9907b270298f", "--verbose"}, kSanitized ? 280 : 120);
    EXPECT_EQ(r.status, 0) << r.out << "\n" << r.err;
    // 1.5 deadlines (750 ms; longer in a sanitized build, whose deadline is longer).
    EXPECT_NE(r.out.find("stuck: post-1 at v=7 for "), std::string::npos) << "not the graph described:\n" << r.out;
    if (r.status != 0) break;
  }
}

// A --duration shorter than one run still makes one run: it said "every run held" after
// none.
TEST_F(Tool, StressWithATinyDurationStillMakesOneRun) {
  const result r = run_tool({"stress", "--runs", "5", "--duration", "1ns", "--seed", "3"}, kSanitized ? 280 : 240);
  EXPECT_EQ(r.status, 0) << r.out << "\n" << r.err;
  EXPECT_NE(r.out.find("sluice stress: 1 runs, 0 with violations"), std::string::npos) << r.out;
}

// ^C during a session ends it after the run in progress with the summary of the runs
// made, and exit status 130. It died silently, losing how many runs had held.
TEST_F(Tool, AnInterruptedStressSessionPrintsItsSummary) {
  sluice_test::spawn_options o;
  o.stderr_null = true;
  sluice_test::spawned_tool t({tool_path(), "stress", "--runs", "1000000", "--seed", "5"}, std::move(o));
  const std::string& text = t.out;
  ASSERT_TRUE(t.until([&] { return text.find("sluice stress: seed") != std::string::npos; }, 60s)) << text;
  t.signal(SIGINT);
  (void)t.until([&] { return text.find("interrupted by") != std::string::npos; }, kSanitized ? 280s : 120s);
  ASSERT_TRUE(t.wait(60s)) << "the session did not end after ^C:\n" << text;
  ASSERT_TRUE(t.exited()) << "killed by signal " << (WIFSIGNALED(t.status()) ? WTERMSIG(t.status()) : 0) << "\n"
                          << text;
  EXPECT_EQ(t.exit_code(), 128 + SIGINT) << text;
  EXPECT_NE(text.find("outcomes: "), std::string::npos) << text;
  EXPECT_NE(text.find("; interrupted by Interrupt"), std::string::npos) << text;
}

// ^C during a long bench stops the run in progress (its source stops sending, what it sent
// drains), starts no other, prints what ran as a run of that length and exits 128+N. It
// died at once, losing the run. The items an interrupted source never owed (due after the
// interrupt) are not counted as unsent: they made every interrupted run read as saturated.
// Runs `sluice bench ARGS --serve 127.0.0.1:0`, sends SIGINT once its live view is up (the
// signals are taken by then) and returns what it printed and its exit status; skips the
// test when the tool was built without the live view.
struct interrupted_run {
  int status = 0;
  std::string out, err;
};
// Whether the graph behind the live view at `url` (http://127.0.0.1:PORT/) has pushed an
// item yet: some stage's sluice_stage_items_out_total is above 0 on /metrics. False while
// the page cannot be had.
bool live_view_moved_an_item(const std::string& url) {
  const std::size_t colon = url.rfind(':');
  const int port = colon == std::string::npos ? 0 : std::atoi(url.c_str() + colon + 1);
  if (port <= 0) return false;
  const std::string got =
      sluice_test::ask(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const std::string family = "\nsluice_stage_items_out_total{";
  for (std::size_t at = got.find(family); at != std::string::npos; at = got.find(family, at + 1)) {
    const std::size_t value = got.find("} ", at);
    if (value != std::string::npos && std::strtoull(got.c_str() + value + 2, nullptr, 10) > 0) return true;
  }
  return false;
}

// Runs `sluice bench ARGS --serve 127.0.0.1:0`, sends `sig` once its live view is up and
// `ready` (by default: an item has moved), and collects its output and status. stdout_gone: the read end of its stdout is closed at
// once, as when the reader of a pipe has gone. at_start: `sig` is instead pending when the
// bench starts (blocked and sent before the exec), so that it is taken before, or just
// after, the first run begins: the order in which no run has an item to show.
interrupted_run interrupt_bench(std::vector<std::string> args, int sig = SIGINT, bool stdout_gone = false,
                                bool at_start = false,
                                const std::function<bool(const std::string&)>& ready = live_view_moved_an_item) {
  args.insert(args.begin(), {tool_path(), "bench"});
  args.insert(args.end(), {"--serve", "127.0.0.1:0"});
  sluice_test::spawn_options o;
  o.stdout_gone = stdout_gone;
  if (at_start) {
    o.in_child = [sig] {
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      ::sigprocmask(SIG_BLOCK, &one, nullptr);  // inherited by the exec, the signal kept pending
      ::kill(::getpid(), sig);                  // to the process: any of its threads may take it
    };
  }
  sluice_test::spawned_tool t(std::move(args), std::move(o));
  // The whole line, its URL with it.
  const auto announced = [&t] {
    const std::size_t at = t.err.find("live view at");
    return at != std::string::npos && t.err.find('\n', at) != std::string::npos;
  };
  const bool without_httplib = [&] {
    if (at_start) return false;
    (void)t.until([&] { return announced() || t.err.find("built without cpp-httplib") != std::string::npos; }, 60s);
    return t.err.find("built without cpp-httplib") != std::string::npos;
  }();
  const bool started = at_start || announced();
  if (started && !at_start) {
    // Once the run has sent an item: a signal before that cuts a run with nothing to
    // show (ABenchInterruptedBeforeItsFirstItem... is that order), which a slow start-up,
    // as under sanitizers, made of these tests now and then.
    const std::size_t at = t.err.find("live view at ") + std::string("live view at ").size();
    const std::string url = t.err.substr(at, t.err.find('\n', at) - at);
    (void)t.until([&] { return ready(url); }, 60s);
    t.signal(sig);
  }
  const bool ended = t.wait(60s);
  interrupted_run r{.status = t.status(), .out = t.out, .err = t.err};
  if (without_httplib) return r;
  if (!ended) ADD_FAILURE() << "the bench did not end after ^C:\n" << r.out << r.err;
  EXPECT_TRUE(started) << r.err;
  EXPECT_TRUE(WIFEXITED(r.status)) << "killed by signal " << (WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0) << "\n"
                                   << r.err;
  return r;
}

// The screen a terminal shows after `bytes`, for the escapes the progress block uses
// (cursor up one row, erase the row); text goes on the cursor's row.
std::vector<std::string> screen_after(const std::string& bytes) {
  std::vector<std::string> rows(1);
  std::size_t row = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes.compare(i, 4, "\x1b[1A") == 0) {
      row = row > 0 ? row - 1 : 0;
      i += 3;
    } else if (bytes.compare(i, 4, "\x1b[2K") == 0) {
      rows[row].clear();
      i += 3;
    } else if (bytes[i] == '\n') {
      if (++row == rows.size()) rows.emplace_back();
    } else {
      rows[row] += bytes[i];
    }
  }
  return rows;
}

// On a terminal, the ^C notice stays on the screen, above the live progress block. It was
// written beside the block, whose next redraw (cursor up over its rows, erase each) wiped
// it: the user saw no answer to the ^C, nor "again to exit now".
TEST_F(Tool, AnInterruptNoticeStaysOnTheScreenAboveTheLiveProgress) {
  sluice_test::spawned_tool t({"/usr/bin/env", "SLUICE_PROGRESS=live", tool_path(), "bench", "--topology", "chain:1",
                               "--work", "sleep:1ms", "--items", "1M"});
  const bool drawn = t.until(
      [&] {
        const std::size_t at = t.err.find("\x1b[2K");
        return at != std::string::npos && t.err.find('\n', at) != std::string::npos;
      },
      60s);
  ASSERT_TRUE(drawn) << t.err;
  t.signal(SIGINT);
  ASSERT_TRUE(t.wait(60s)) << t.err;
  EXPECT_EQ(t.exit_code(), 128 + SIGINT) << t.err;
  std::string shown;
  for (const std::string& row : screen_after(t.err)) shown += row + "\n";
  EXPECT_NE(shown.find("sluice bench: interrupted by Interrupt; the run in progress stops sending and drains "
                       "without starting more work"),
            std::string::npos)
      << "the screen:\n" << shown;
}

TEST_F(Tool, AnInterruptedBenchPrintsTheRunCutShort) {
  const interrupted_run r = interrupt_bench({"--topology", "chain:2", "--rate", "2k", "--duration", "120s", "--engine", "both"});
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  const std::string& text = r.out;
  const std::string& errors = r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGINT) << text << errors;
  EXPECT_NE(errors.find("sluice bench: interrupted by Interrupt"), std::string::npos) << errors;
  EXPECT_NE(text.find("(interrupted by Interrupt: the last run stopped sending early"), std::string::npos) << text;
  // (A run cut before its first item prints no row: slow start-ups, as under sanitizers.)
  // Items due after the interrupt were never owed: at most a source's backlog of the
  // moment may be unsent (a loaded machine), not the rest of the 120 s window.
  // (The note of those never sent, not the one before it that may say "saturated".)
  const std::size_t never = text.find("were never sent");
  const std::size_t note = never != std::string::npos ? text.rfind("(sluice: ", never) : std::string::npos;
  if (note != std::string::npos) {
    unsigned long long unsent = 0, due = 0;
    ASSERT_EQ(std::sscanf(text.c_str() + note, "(sluice: %llu of the %llu items due", &unsent, &due), 2) << text;
    // Half of what fell due, or a backlog of 100 ms at 2 k/s: a run cut 4 ms in, on a
    // machine loaded by a full ctest, had 4 of its 8 items unsent. The whole window would
    // be 240,000 due, nearly all unsent.
    EXPECT_TRUE(unsent * 2 < due || unsent <= 200) << text;
    EXPECT_LT(due, 240'000U) << text;
  }
  EXPECT_EQ(text.find("\n  tbb "), std::string::npos) << "a run started after the interrupt:\n" << text;
}

// The source's items_out_total on the live view at `url` (0 if it cannot be read).
std::uint64_t source_items_out(const std::string& url) {
  const std::size_t colon = url.rfind(':');
  const int port = colon == std::string::npos ? 0 : std::atoi(url.c_str() + colon + 1);
  if (port <= 0) return 0;
  const std::string got =
      sluice_test::ask(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const std::string key = "\nsluice_stage_items_out_total{stage=\"source\"} ";
  const std::size_t at = got.find(key);
  return at == std::string::npos ? 0 : std::strtoull(got.c_str() + at + key.size(), nullptr, 10);
}

// ^C after the last run's source had sent all it would (here its 200 items, while they
// drain: at 50 ms each that takes seconds): the run did not stop sending early, which the
// bench said of it; what it cut is the work of the items still in its channels, which no
// longer starts after a ^C, and the bench says that.
TEST_F(Tool, ABenchInterruptedAfterItsLastRunSentEverythingSaysItCutTheWorkNotTheSending) {
  const std::string html = ::testing::TempDir() + "sluice_drained_" + std::to_string(::getpid()) + ".html";
  std::remove(html.c_str());
  const interrupted_run r = interrupt_bench(
      {"--topology", "chain:1", "--work", "sleep:50ms", "--rate", "1k", "--items", "200", "--duration", "60s", "--engine", "both",
       "--report", html},
      SIGINT, false, false, [](const std::string& url) { return source_items_out(url) >= 200; });
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_TRUE(WIFEXITED(r.status)) << r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGINT) << r.out << r.err;
  EXPECT_NE(r.out.find("(interrupted by Interrupt: the last run was cut short: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" items whose work it cut are not counted as delivered, and no run started after it)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("stopped sending early"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  sluice "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\n  tbb "), std::string::npos) << "a run started after the interrupt:\n" << r.out;
  const std::string page = sluice_test::read_whole_file(html);
  EXPECT_NE(page.find("Interrupted by Interrupt: the last run was cut short: "), std::string::npos)
      << page.substr(0, 2000);
  std::remove(html.c_str());
}

// Long per-item work ends at the first ^C: the run drains what it sent in moments, and
// the bench exits 128+N. With --work sleep:30s the first ^C waited 30 s for each item
// sent (here three: 90 s, past the helper's minute), and `timeout`, which sends one
// signal, never ended it.
TEST_F(Tool, TheFirstInterruptEndsLongWorkAtOnce) {
  const auto t0 = std::chrono::steady_clock::now();
  const interrupted_run r =
      interrupt_bench({"--topology", "chain:1", "--work", "sleep:30s", "--items", "3", "--capacity", "4"});
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_TRUE(WIFEXITED(r.status)) << r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGINT) << r.out << r.err;
  EXPECT_EQ(r.err.find("interrupted again"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("(interrupted by Interrupt"), std::string::npos) << r.out;
  // Not a timing assertion on the tool: 30 s is one item's work, which a cut run skips.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << r.out;
  // The items released by the cut are not deliveries: none had its 30 s of work. They
  // were counted delivered, timed, and the run said it "ran to its end".
  EXPECT_NE(r.out.find("items whose work it cut are not counted as delivered"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("ran to its end"), std::string::npos) << r.out;
  // None was timed: its latency columns say so (they showed 0 ns).
  const std::size_t row = r.out.find("\n  sluice ");
  ASSERT_NE(row, std::string::npos) << r.out;
  const std::string line = r.out.substr(row + 1, r.out.find('\n', row + 1) - row - 1);
  EXPECT_EQ(line.find(" 0 ns"), std::string::npos) << line;
  EXPECT_NE(line.find(" - "), std::string::npos) << line;
}

// After the first ^C no item's work starts: a backlog drains in moments. Each item here
// takes 99 ms (under the 100 ms slice that ends one item's work at a ^C), and the ^C
// comes once the source has sent 1,000 (its first channel holds 1,024): the first ^C
// waited about 100 s for them, past the helper's minute (a `timeout` that sends one
// signal ran that long too).
TEST_F(Tool, TheFirstInterruptSkipsTheWorkOfTheBacklog) {
  const auto t0 = std::chrono::steady_clock::now();
  const interrupted_run r = interrupt_bench(
      {"--topology", "chain:1", "--work", "sleep:99ms", "--items", "100k", "--capacity", "1024", "--json"}, SIGINT, false,
      false, [](const std::string& url) { return source_items_out(url) >= 1000; });
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_TRUE(WIFEXITED(r.status)) << r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGINT) << r.out << r.err;
  EXPECT_EQ(r.err.find("interrupted again"), std::string::npos) << r.err;
  // Not a timing assertion on the tool: 30 s is 300 items' work, a few percent of the backlog.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << r.out;
  const mini_json::value v = mini_json::parse(r.out);
  ASSERT_EQ(v["results"].size(), 1U) << r.out;
  const auto& res = v["results"][std::size_t{0}];
  EXPECT_TRUE(res["cut_short"].boolean()) << r.out;
  EXPECT_GE(res["items_unfinished"].uint(), 100U) << r.out;  // the backlog, not timed
  EXPECT_EQ(res["items_unfinished"].uint() + res["items_delivered"].uint(), res["items_sent"].uint()) << r.out;
  EXPECT_EQ(res["latency_ns"]["count"].uint(), res["items_delivered"].uint()) << r.out;
}

// The same in JSON: the unfinished items are counted apart from the delivered ones, which
// are the only ones timed, and the run is marked cut short.
TEST_F(Tool, AnInterruptedBenchCountsTheItemsItCutAsUnfinishedNotDelivered) {
  const interrupted_run r =
      interrupt_bench({"--topology", "chain:1", "--work", "sleep:30s", "--items", "3", "--capacity", "4", "--json"});
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_TRUE(WIFEXITED(r.status)) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  ASSERT_EQ(v["results"].size(), 1U) << r.out;
  const auto& res = v["results"][std::size_t{0}];
  EXPECT_TRUE(res["cut_short"].boolean()) << r.out;
  EXPECT_EQ(res["items_delivered"].uint(), 0U) << r.out;
  EXPECT_GE(res["items_unfinished"].uint(), 1U) << r.out;
  EXPECT_EQ(res["items_unfinished"].uint() + res["items_delivered"].uint(), res["items_sent"].uint()) << r.out;
  // No item was timed: no latency (it said p50 = p99 = max = 0 ns).
  EXPECT_EQ(res["latency_ns"]["count"].uint(), 0U) << r.out;
  for (const char* q : {"p50", "p99", "p999", "max", "mean"}) EXPECT_TRUE(res["latency_ns"][q].is_null()) << q << r.out;
  for (const char* q : {"p50", "p99", "p999", "max"}) EXPECT_TRUE(res["latency_us"][q].is_null()) << q << r.out;
}

// --format gbench after ^C: the run cut short is marked failed (error_occurred, as Google
// Benchmark marks one), and the context names the signal. It looked like a whole run of
// its configuration, which compare.py would have compared without a word.
TEST_F(Tool, AnInterruptedGbenchRunIsMarkedFailed) {
  const interrupted_run r = interrupt_bench({"--topology", "chain:2", "--rate", "2k", "--duration", "120s", "--format", "gbench"});
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGINT) << r.out << r.err;
  mini_json::value v;
  ASSERT_NO_THROW(v = mini_json::parse(r.out)) << r.out;
  EXPECT_EQ(v["context"]["sluice_interrupted_by"].str(), "SIGINT") << r.out;
  const auto& runs = v["benchmarks"].arr();
  if (runs.empty()) return;  // cut before its first item (a slow start-up): nothing to mark
  ASSERT_EQ(runs.size(), 1U) << r.out;
  ASSERT_TRUE(runs[0].has("error_occurred")) << r.out;
  EXPECT_TRUE(runs[0]["error_occurred"].boolean()) << r.out;
  EXPECT_NE(runs[0]["error_message"].str().find("interrupted by SIGINT"), std::string::npos) << r.out;
}

// SIGTERM to a bench whose stdout reader has gone: the results cannot be printed, and the
// bench says so, still writes its --report and exits 143 for the signal. It died of SIGPIPE
// (141) at its last flush, and a table of over 4 KiB would have killed it before the report.
TEST_F(Tool, AnInterruptedBenchWithItsStdoutGoneWritesItsReportAndExitsForTheSignal) {
  const std::string html = ::testing::TempDir() + "sluice_gone_" + std::to_string(::getpid()) + ".html";
  std::remove(html.c_str());
  const interrupted_run r = interrupt_bench(
      {"--topology", "chain:2", "--rate", "2k", "--duration", "120s", "--engine", "sluice", "--report", html}, SIGTERM,
      true);
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_TRUE(WIFEXITED(r.status)) << r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGTERM) << r.err;
  EXPECT_NE(r.err.find("sluice bench: error: cannot write to standard output"), std::string::npos) << r.err;
  struct stat st {};
  EXPECT_EQ(::stat(html.c_str(), &st), 0) << "no --report written: " << html << "\n" << r.err;
  EXPECT_GT(st.st_size, 0);
  std::remove(html.c_str());
}

// A signal taken before the first run sent an item (a slow start-up, as under sanitizers):
// there is no row to show, and the --report is still written, saying why it is empty. It
// was not written at all, which read as a failed write.
TEST_F(Tool, ABenchInterruptedBeforeItsFirstItemStillWritesItsReportAndSaysWhy) {
  const std::string html = ::testing::TempDir() + "sluice_first_" + std::to_string(::getpid()) + ".html";
  std::remove(html.c_str());
  const interrupted_run r = interrupt_bench(
      {"--topology", "chain:2", "--rate", "2k", "--duration", "120s", "--engine", "sluice", "--report", html}, SIGTERM,
      false, true);
  if (r.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << r.err;
  ASSERT_TRUE(WIFEXITED(r.status)) << r.err;
  EXPECT_EQ(WEXITSTATUS(r.status), 128 + SIGTERM) << r.out << r.err;
  EXPECT_NE(r.err.find("sluice bench: interrupted by Terminated"), std::string::npos) << r.err;
  const std::string page = sluice_test::read_whole_file(html);
  ASSERT_FALSE(page.empty()) << "no --report written: " << html << "\n" << r.err;
  EXPECT_NE(page.find("Interrupted by Terminated"), std::string::npos) << page.substr(0, 2000);
  // Which of the two orders this run took, the table and the page agree on it.
  const bool nothing = r.out.find("before any run sent an item: nothing to show") != std::string::npos;
  EXPECT_EQ(nothing, page.find("no run sent an item before it") != std::string::npos) << r.out;
  EXPECT_EQ(nothing, r.out.find("the last run stopped sending early") == std::string::npos) << r.out;
  std::remove(html.c_str());
}

// ^C during a sweep's closed-loop run: there is no maximum to take shares of, so what
// ran is shown as closed-loop rows (it was an empty table of maxima); the JSON names the
// signal as a script matches it.
TEST_F(Tool, ASweepInterruptedInItsClosedLoopRunShowsThatRun) {
  const interrupted_run t = interrupt_bench({"--topology", "chain:2", "--sweep", "--probe-duration", "120s", "--engine", "sluice"});
  if (t.err.find("built without cpp-httplib") != std::string::npos) GTEST_SKIP() << t.err;
  EXPECT_EQ(WEXITSTATUS(t.status), 128 + SIGINT) << t.out << t.err;
  EXPECT_EQ(t.out.find("closed-loop maximum"), std::string::npos) << t.out;
  EXPECT_EQ(t.out.find("open loop"), std::string::npos) << "a run started after the interrupt:\n" << t.out;
  EXPECT_NE(t.out.find("(interrupted by Interrupt"), std::string::npos) << t.out;

  const interrupted_run j = interrupt_bench({"--topology", "chain:2", "--sweep", "--probe-duration", "120s", "--engine", "sluice", "--json"});
  EXPECT_EQ(WEXITSTATUS(j.status), 128 + SIGINT) << j.out << j.err;
  EXPECT_NE(j.out.find("\"interrupted_by\":\"SIGINT\""), std::string::npos) << j.out;
}

TEST_F(Tool, StressRunsPassWithoutBroadcast) {
  const std::string runs = "50";
  const result r =
      run_tool({"stress", "--runs", runs, "--seed", "2", "--fan", "none,round_robin,partition"}, kSanitized ? 280 : 240);
  EXPECT_EQ(r.status, 0) << r.out << "\n" << r.err;
  EXPECT_NE(r.out.find("every run held"), std::string::npos) << r.out;
}

// Replays the stress run `seed` with `flags` and expects it to hold (exit 0, no
// violation); returns its output for the caller's own checks.
std::string replay_holds(const std::string& seed, const std::vector<std::string>& flags) {
  std::vector<std::string> args{"stress", "--replay", seed};
  for (const std::string& f : flags) args.push_back(f);
  const result r = run_tool(args);
  EXPECT_EQ(r.status, 0) << seed << "\n" << r.out << "\n" << r.err;
  EXPECT_NE(r.out.find("1 runs, 0 with violations"), std::string::npos) << seed << "\n" << r.out;
  return r.out;
}

// Seed 0x22 with --fuse: the stuck filter post-2 (stuck past the deadline) is fused,
// with post-1, onto pre-1's four threads, so the engine names pre-1, the threads'
// owner. That is the injected hang, not a defect: the oracle excuses every stage on the
// stuck stage's threads (an oracle that excused post-2 by name alone failed this run).
// The four unordered replicas of pre-1 share the items as the threads interleave, so in
// about 1 replay of 40 an injected failure on one of them ends the run before v=8 reaches
// post-2 (seen 1 of 40 on both the build that added this test and the next): every replay
// must hold, and within 5 at least one must get stuck and be named.
TEST_F(Tool, StressExcusesEveryStageOnAStuckFusedStagesThread) {
  bool named = false;
  for (int i = 0; i < 5 && !named; ++i) {
    const std::string out = replay_holds("0x22", {"--fuse", "--verbose"});
    ASSERT_NE(out.find("post-2:filter(%2)(cap=128,slow 478us/51,fused)"), std::string::npos) << out;
    ASSERT_NE(out.find("stuck: post-2 at v=8 for"), std::string::npos) << out;
    named = out.find("1 reports named a stuck stage") != std::string::npos;
  }
  EXPECT_TRUE(named) << "5 replays of 0x22 --fuse, none got stuck and was named";
}

// Two runs found by a --fuse sweep: a stage stuck past the deadline holds its upstream
// stages up (full channels), and upstream, pre-2 (and post-1) run fused on pre-1's (and
// pre-3's) threads. Those threads wait in the fused stage's push, which the snapshot
// shows on the fused stage's row: the engine named pre-1 and pre-3 as hanging until it
// read their fused stages' rows too (failed 3 of 3 replays each before, passed 3 of 3 after).
TEST_F(Tool, StressSeesAThreadParkedInAFusedStagesPush) {
  for (const char* seed : {"0x49300a5bc10bcc22", "0xa956f645ac4b7f84"}) {
    const std::string out = replay_holds(seed, {"--fuse", "--verbose"});
    EXPECT_NE(out.find("fused"), std::string::npos) << out;
  }
}

// The sink is fused onto a map with 3 replicas, so three threads call it; when the call
// that returns false ends the run, the others go on until the runtime has seen it. The
// first oracle allowed no call after it (failed 1 to 2 replays of 4, at 187 calls), the
// second one call per other thread (failed in CI at 189); the other threads are not
// bounded by a count (the returning thread can be preempted before the runtime sees its
// false), so now only a sink on one thread is.
TEST_F(Tool, StressAllowsTheOtherThreadsCallsWhenAFusedSinkOnReplicasFinishesEarly) {
  for (int i = 0; i < 10; ++i) {
    const std::string out = replay_holds("0x6cbf5574ccc763d8", {"--fuse"});
    EXPECT_NE(out.find("sink(fused)"), std::string::npos) << out;
    EXPECT_NE(out.find("x3 unordered"), std::string::npos) << out;
    EXPECT_NE(out.find("(1 sinks finished early)"), std::string::npos) << out;
  }
}

// post-2 is fused onto a merge of three branches and stuck past the deadline on one of
// the merge's threads; the merge's other threads park on empty inputs and b2-1's ordered
// replicas wait for their turn. The engine named every stage upstream (failed 7 of 9
// replays); now it names the merge, which the oracle excuses (the stuck stage's thread).
TEST_F(Tool, StressNamesTheMergeWhenAStageFusedOntoItHangsOnOneOfItsThreads) {
  for (int i = 0; i < 3; ++i) (void)replay_holds("0x1153d095ca62a8e4", {"--fuse"});
}

TEST_F(Tool, StressReplayRunsOneGraph) {
  const std::string out = replay_holds("0x2a", {"--fan", "none"});
  EXPECT_NE(out.find("run 1 (seed 0x000000000000002a)"), std::string::npos) << out;
}

}  // namespace
