// `sluice bench --cut K --via URL`: the built tool (SLUICE_TOOL_PATH) runs itself twice, a
// producer and a consumer process joined by a JetStream edge on a nats-server this test
// starts. Each run is bounded (run_tool and child_process::wait kill it past its limit).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include <signal.h>

#include "sluice/jetstream.hpp"

#include "../support/run_tool.hpp"
#include "nats_server.hpp"

namespace {

using namespace std::chrono_literals;

using sluice_test::tool_path;

std::string out_file(const std::string& tag) {
  return (std::filesystem::temp_directory_path() /
          ("sluice-cut-" + tag + "-" + std::to_string(::getpid()) + ".out"))
      .string();
}

using run_result = sluice_test::tool_result;

// Runs `sluice bench ARGS...` with stdout and stderr together in out; killed past `limit`.
run_result run_bench(const std::vector<std::string>& args, std::chrono::seconds limit) {
  // Built front to back: gcc 12's -Wnull-dereference misreads insert(begin(), ...) at -O2 -g.
  std::vector<std::string> all;
  all.reserve(args.size() + 1);
  all.emplace_back("bench");
  all.insert(all.end(), args.begin(), args.end());
  return sluice_test::run_tool(all, static_cast<int>(limit.count()), {.merge_stderr = true});
}

std::size_t lines_of(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += c == '\n';
  return n + (!s.empty() && s.back() != '\n');
}

class CutTool : public ::testing::Test {
 protected:
  void SetUp() override {
    if (tool_path().empty()) GTEST_SKIP() << "built without the sluice tool";
    if (!sluice_test::nats_server::available()) GTEST_SKIP() << "nats-server not found";
  }
};

// Regression: a child side used to crash at exit now and then (heap corruption, double
// free) while the run itself had gone well. Several runs, each must end cleanly with
// both sides' stages and every item counted.
TEST_F(CutTool, TwoProcessRunEndsCleanlyWithBothSides) {
  sluice_test::nats_server server;
  constexpr int kRuns = 5;
  for (int i = 0; i < kRuns; ++i) {
    SCOPED_TRACE("run " + std::to_string(i));
    // The last run spells its options --opt=VALUE (--cut=2 was "unknown option --cut").
    const run_result r =
        i + 1 < kRuns ? run_bench({"--cut", "2", "--via", server.url(), "--topology", "chain:3", "--items", "500",
                                   "--item-size", "32"},
                                  60s)
                      : run_bench({"--cut=2", "--via=" + server.url(), "--topology=chain:3", "--items=500", "--item-size=32"}, 60s);
    ASSERT_EQ(r.status, 0) << r.out;
    for (const char* row : {"producer  source", "producer  w1", "producer  w2", "producer  publish:sluice-bench-",
                            "consumer  subscribe:sluice-bench-", "consumer  w3", "consumer  sink",
                            "producer: 500 items in", "consumer: 500 items in", "bottleneck: "}) {
      EXPECT_NE(r.out.find(row), std::string::npos) << "missing '" << row << "' in:\n" << r.out;
    }
    // Every producer stage's row counts the 500 items, as the summary does (the end marker
    // that follows them was counted too: 501); a consumer's rows may count a redelivered
    // message again (at-least-once), never fewer.
    std::istringstream lines(r.out);
    int rows = 0;
    for (std::string line; std::getline(lines, line);) {
      std::istringstream f(line);
      std::string side, stage;
      unsigned long long items = 0;
      if (!(f >> side >> stage >> items) || (side != "producer" && side != "consumer")) continue;
      ++rows;
      if (side == "producer") {
        EXPECT_EQ(items, 500u) << line;
      } else {
        EXPECT_GE(items, 500u) << line;
      }
    }
    EXPECT_EQ(rows, 7) << r.out;
    EXPECT_EQ(r.out.find("error"), std::string::npos) << r.out;
  }
}

// The largest item --item-size takes crosses a server with the default max_payload.
TEST_F(CutTool, TheLargestItemSizeTakenCrossesADefaultServer) {
  sluice_test::nats_server server;
  const run_result r =
      run_bench({"--cut", "1", "--via", server.url(), "--topology", "chain:2", "--items", "4", "--item-size", "1023KiB"}, 60s);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("consumer: 4 items in"), std::string::npos) << r.out;
}

// --role runs one side each; a second pair of runs on the same stream (within the
// stream's 2-minute de-duplication window) must get its items too, not have them dropped
// as duplicates of the first run's (its consumer then waited for ever).
TEST_F(CutTool, RoleRunsTwiceOnOneStream) {
  sluice_test::nats_server server;
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE("pair " + std::to_string(i));
    const std::vector<std::string> common = {tool_path(), "bench", "--cut", "1", "--via", server.url(), "--topology",
                                             "chain:2", "--items", "200", "--stream", "cut-role-test"};
    auto with_role = [&](const char* role) {
      auto a = common;
      a.insert(a.end(), {"--role", role});
      return a;
    };
    const std::string cout_file = out_file("consumer"), pout_file = out_file("producer");
    sluice_test::child_process consumer(with_role("consumer"), cout_file);
    sluice_test::child_process producer(with_role("producer"), pout_file);
    const int p = producer.wait(30s);
    const int c = consumer.wait(30s);
    const std::string pout = producer.output(), cout = consumer.output();
    std::filesystem::remove(cout_file);
    std::filesystem::remove(pout_file);
    ASSERT_EQ(p, 0) << pout;
    ASSERT_EQ(c, 0) << cout;
    EXPECT_NE(pout.find("producer: 200 items in"), std::string::npos) << pout;
    EXPECT_NE(cout.find("consumer: 200 items in"), std::string::npos) << cout;
  }
}

// Two --role producer runs on one stream, then one consumer: the second run's messages for
// sequences the first run already sent are delivered once each, and are no redeliveries
// (the consumer said "200 redelivered" of them). The first run sends 0..199, the second
// 0..299; the consumer, waiting for 300, gets 0..199 twice, each for the first time.
TEST_F(CutTool, ASecondProducersCopiesAreNotCalledRedeliveries) {
  sluice_test::nats_server server;
  auto args = [&](const char* role, const char* items) {
    return std::vector<std::string>{tool_path(), "bench",   "--cut", "1",   "--via", server.url(), "--topology",
                                    "chain:2",   "--items", items,   "--stream", "cut-two-producers", "--role", role};
  };
  for (const char* items : {"200", "300"}) {
    SCOPED_TRACE(std::string("producer of ") + items);
    const std::string file = out_file(std::string("producer") + items);
    sluice_test::child_process producer(args("producer", items), file);
    const int p = producer.wait(30s);
    const std::string out = producer.output();
    std::filesystem::remove(file);
    ASSERT_EQ(p, 0) << out;
    EXPECT_NE(out.find(std::string("producer: ") + items + " items in"), std::string::npos) << out;
  }
  const std::string file = out_file("consumer");
  sluice_test::child_process consumer(args("consumer", "300"), file);
  const int c = consumer.wait(60s);
  const std::string out = consumer.output();
  std::filesystem::remove(file);
  ASSERT_EQ(c, 0) << out;
  EXPECT_NE(out.find("consumer: 300 items in"), std::string::npos) << out;
  EXPECT_EQ(out.find("redelivered"), std::string::npos) << out;
  EXPECT_NE(out.find(", 200 other messages of items already had or past --items (another producer on the stream, "
                     "or a server restart that lost acks?)"),
            std::string::npos)
      << out;
}

// Polls `pred` every 20 ms for at most `limit` (a wait on another process, not a sleep in
// place of synchronisation).
template <class Pred>
bool within(std::chrono::seconds limit, Pred pred) {
  return sluice_test::poll_until(pred, limit, std::chrono::milliseconds(20));
}

// The stream's message count, or nullopt when it does not exist (yet, or any more).
std::optional<std::uint64_t> stream_msgs(sluice::jetstream::connection& conn, const std::string& stream) {
  try {
    return sluice::jetstream::inspect_edge(conn, {.stream = stream}).msgs;
  } catch (const std::runtime_error&) {
    return std::nullopt;
  }
}

// ^C while both sides run: the orchestrating process stops them, prints what each side did
// before then, removes the stream it made, says so and exits 130. (It used to die at
// once, leaving a file-backed stream with its messages and /tmp/sluice-cut-* behind; then
// it stopped in order but printed nothing of the run.)
TEST_F(CutTool, AnInterruptStopsBothSidesAndRemovesTheStream) {
  sluice_test::nats_server server;
  auto conn = sluice::jetstream::connect(server.url());
  const std::string out = out_file("interrupt");
  sluice_test::child_process run({tool_path(), "bench", "--cut", "2", "--via", server.url(), "--topology", "chain:4",
                                  "--items", "1M", "--work", "0,0,sleep:100us,0"},
                                 out);
  const std::string stream = "sluice-bench-" + std::to_string(run.pid());
  ASSERT_TRUE(within(30s, [&] { return stream_msgs(conn, stream).value_or(0) > 0; })) << run.output();
  run.signal(SIGINT);
  const int status = run.wait(30s);
  const std::string text = run.output();
  std::filesystem::remove(out);
  EXPECT_EQ(status, 130) << text;
  EXPECT_NE(text.find("interrupted by"), std::string::npos) << text;
  EXPECT_NE(text.find("stream " + stream + " removed"), std::string::npos) << text;
  EXPECT_NE(text.find("(interrupted by Interrupt: the figures are of what each side did before it stopped)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\nproducer: "), std::string::npos) << text;
  EXPECT_NE(text.find("\nconsumer: "), std::string::npos) << text;
  EXPECT_EQ(text.find("were acknowledged by another consumer"), std::string::npos) << text;
  EXPECT_FALSE(stream_msgs(conn, stream).has_value()) << "the stream is still there";
}

// The directories named /tmp/sluice-cut-XXXXXX (what a two-process run used for its sides'
// results).
std::set<std::string> cut_temp_dirs() {
  std::set<std::string> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/tmp", ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 17 && name.rfind("sluice-cut-", 0) == 0 && e.is_directory(ec)) found.insert(name);
  }
  return found;
}

// The processes whose parent is `pid` (from /proc/N/stat), and whether one still runs
// (not gone, not a zombie).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat;
    std::getline(f, stat);
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid) found.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return found;
}
bool still_runs(pid_t p) {
  std::ifstream f("/proc/" + std::to_string(p) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return false;
  const std::size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// ^C at once after the sides are started, before either has set up its own handling of it
// (under load a side may take a while to get there): each still stops in order and hands in
// what it did, none killed by the signal with nothing to show. The consumer's figures were
// lost so (its line missing from an interrupted run on a busy CI machine).
TEST_F(CutTool, AnInterruptAsTheSidesStartStillGetsBothSidesFigures) {
  sluice_test::nats_server server;
  const std::string out = out_file("early-interrupt");
  sluice_test::child_process run({tool_path(), "bench", "--cut", "2", "--via", server.url(), "--topology", "chain:4",
                                  "--items", "1M", "--work", "0,0,sleep:100us,0"},
                                 out);
  ASSERT_TRUE(within(30s, [&] { return children_of(run.pid()).size() == 2; })) << run.output();
  run.signal(SIGINT);
  const int status = run.wait(30s);
  const std::string text = run.output();
  std::filesystem::remove(out);
  EXPECT_EQ(status, 130) << text;
  EXPECT_NE(text.find("\nproducer: "), std::string::npos) << text;
  EXPECT_NE(text.find("\nconsumer: "), std::string::npos) << text;
  EXPECT_EQ(text.find("ended on signal"), std::string::npos) << text;
}

// A two-process run killed outright (SIGKILL: nothing of it runs after) leaves nothing on
// disk for its sides' results, and its sides end with it. It left a /tmp/sluice-cut-XXXXXX
// directory each time.
TEST_F(CutTool, AKilledRunLeavesNoTemporaryFilesBehind) {
  sluice_test::nats_server server;
  auto conn = sluice::jetstream::connect(server.url());
  const std::string out = out_file("killed");
  const std::set<std::string> before = cut_temp_dirs();
  sluice_test::child_process run({tool_path(), "bench", "--cut", "2", "--via", server.url(), "--topology", "chain:4",
                                  "--items", "1M", "--work", "0,0,sleep:100us,0"},
                                 out);
  const std::string stream = "sluice-bench-" + std::to_string(run.pid());
  ASSERT_TRUE(within(30s, [&] { return stream_msgs(conn, stream).value_or(0) > 0; })) << run.output();
  const std::set<std::string> during = cut_temp_dirs();
  const std::vector<pid_t> sides = children_of(run.pid());
  EXPECT_EQ(sides.size(), 2U);
  run.signal(SIGKILL);
  (void)run.wait(30s);
  const std::string text = run.output();
  std::filesystem::remove(out);
  for (const std::string& d : during) {
    EXPECT_TRUE(before.count(d) != 0) << "/tmp/" << d << " was made by the run" << text;
  }
  // Its sides die with it (they would otherwise keep running against the stream).
  for (const pid_t side : sides) EXPECT_TRUE(within(30s, [&] { return !still_runs(side); })) << side;
  sluice::jetstream::remove_edge(conn, {.stream = stream});
}

// A signal sent to one side alone (kill, a supervisor) stops the run, and the parent says
// which side and by what. The side stops in order and prints nothing of its own (its
// figures go to the parent), so "its error is above" pointed at nothing.
TEST_F(CutTool, ASignalToOneSideAloneIsNamed) {
  sluice_test::nats_server server;
  auto conn = sluice::jetstream::connect(server.url());
  for (const char* target : {"producer", "consumer"}) {
    SCOPED_TRACE(target);
    const std::string out = out_file(std::string("one-side-") + target);
    sluice_test::child_process run({tool_path(), "bench", "--cut", "2", "--via", server.url(), "--topology",
                                    "chain:4", "--items", "1M", "--work", "0,0,sleep:100us,0"},
                                   out);
    const std::string stream = "sluice-bench-" + std::to_string(run.pid());
    ASSERT_TRUE(within(30s, [&] { return stream_msgs(conn, stream).value_or(0) > 0; })) << run.output();
    pid_t side = 0;
    for (const pid_t p : children_of(run.pid())) {
      std::ifstream f("/proc/" + std::to_string(p) + "/cmdline");
      std::string cmdline;  // NUL-separated, no newline: one getline reads it all
      std::getline(f, cmdline);
      if (cmdline.find(std::string("--role") + '\0' + target) != std::string::npos) side = p;
    }
    ASSERT_NE(side, 0) << "no " << target << " side among the run's children";
    ::kill(side, SIGINT);
    const int status = run.wait(30s);
    const std::string text = run.output();
    std::filesystem::remove(out);
    EXPECT_EQ(status, 1) << text;
    EXPECT_NE(text.find(std::string("the ") + target + " side was stopped by Interrupt sent to it alone"),
              std::string::npos)
        << text;
    EXPECT_EQ(text.find("its error is above"), std::string::npos) << text;
    EXPECT_NE(text.find("stream " + stream + " removed"), std::string::npos) << text;
    EXPECT_FALSE(stream_msgs(conn, stream).has_value()) << "the stream is still there";
  }
}

// CPU time (user + system, in clock ticks) a process has used, from /proc/N/stat.
long cpu_ticks_of(pid_t p) {
  std::ifstream f("/proc/" + std::to_string(p) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return 0;
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

// ^C while a side's worker is inside a long --work: the work is cut, as in an in-process
// run. A side did its whole --work first (an hour, with --work 1h, spinning on after a
// `timeout`'s SIGTERM until SIGKILL).
TEST_F(CutTool, AnInterruptCutsASidesLongWork) {
  sluice_test::nats_server server;
  const std::string out = out_file("long-work");
  sluice_test::child_process run({tool_path(), "bench", "--cut", "1", "--via", server.url(), "--topology", "chain:2",
                                  "--items", "1", "--work", "1h"},
                                 out);
  // The producer's worker spinning on its item: a second of CPU used by a side.
  ASSERT_TRUE(within(60s, [&] {
    for (const pid_t p : children_of(run.pid())) {
      if (cpu_ticks_of(p) >= ::sysconf(_SC_CLK_TCK)) return true;
    }
    return false;
  })) << run.output();
  run.signal(SIGINT);
  const int status = run.wait(60s);
  const std::string text = run.output();
  std::filesystem::remove(out);
  EXPECT_EQ(status, 130) << text;
  EXPECT_NE(text.find("interrupted by"), std::string::npos) << text;
}

// ^C to one side started alone (--role): it stops, says so, names the stream it leaves on
// the server (the other side may still use it), and exits 128+N. It died silently.
TEST_F(CutTool, AnInterruptedRoleRunSaysWhatItStoppedAndKeepsTheStream) {
  sluice_test::nats_server server;
  auto conn = sluice::jetstream::connect(server.url());
  const std::string out = out_file("role-interrupt");
  // A consumer with no producer: it waits on the stream it made.
  sluice_test::child_process run({tool_path(), "bench", "--cut", "1", "--via", server.url(), "--topology", "chain:2",
                                  "--items", "1000", "--stream", "role-int", "--role", "consumer"},
                                 out);
  ASSERT_TRUE(within(30s, [&] { return stream_msgs(conn, "role-int").has_value(); })) << run.output();
  run.signal(SIGTERM);
  const int status = run.wait(30s);
  const std::string text = run.output();
  std::filesystem::remove(out);
  EXPECT_EQ(status, 128 + SIGTERM) << text;
  // What it waited for, said when it started (it waited without a word).
  EXPECT_NE(text.find("the consumer side, on stream role-int at " + server.url() + ": waiting for the producer's items"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("interrupted by"), std::string::npos) << text;
  EXPECT_NE(text.find("the consumer side stopped; stream role-int is kept"), std::string::npos) << text;
  EXPECT_NE(text.find("\nconsumer: 0 items in "), std::string::npos) << "what it did was not printed:\n" << text;
  EXPECT_TRUE(stream_msgs(conn, "role-int").has_value());
}

// A consumer started again after another was killed never sees the items the first one
// acknowledged. It used to wait for ever; it now takes the rest (the killed one's
// unacknowledged items come back after ack_wait), ends once the producer's end marker came
// and the stream is empty, says how many of how many it got, and exits 1.
TEST_F(CutTool, ARestartedConsumerEndsAndSaysHowManyItemsItGot) {
  sluice_test::nats_server server;
  auto conn = sluice::jetstream::connect(server.url());
  const std::string stream = "cut-restart-test";
  const std::vector<std::string> common = {tool_path(), "bench", "--cut", "1", "--via", server.url(), "--topology",
                                           "chain:2", "--items", "3000", "--stream", stream};
  auto with = [&](std::vector<std::string> more) {
    auto a = common;
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  const std::string c1_out = out_file("c1"), c2_out = out_file("c2"), p_out = out_file("p");
  int first_status = 0;
  {
    // A slow first consumer (1 ms a item in its worker), killed once it acknowledged some.
    sluice_test::child_process first(with({"--role", "consumer", "--work", "sleep:1ms"}), c1_out);
    sluice_test::child_process producer(with({"--role", "producer"}), p_out);
    // The producer sends all 3000 and its end marker at once (the edge holds 4096); the
    // first consumer acknowledges about one a millisecond, and each ack removes one.
    first_status = producer.wait(60s);
    ASSERT_EQ(first_status, 0) << producer.output();
    ASSERT_TRUE(within(30s, [&] {
      const auto st = stream_msgs(conn, stream);
      return st.has_value() && *st > 0 && *st < 3001 - 100;
    })) << first.output();
    first.kill9();
  }
  sluice_test::child_process second(with({"--role", "consumer"}), c2_out);
  const int status = second.wait(120s);  // the killed one's items come back after ack_wait (30 s)
  const std::string text = second.output();
  for (const auto& f : {c1_out, c2_out, p_out}) std::filesystem::remove(f);
  EXPECT_EQ(status, 1) << text;
  EXPECT_NE(text.find(" of 3000 items arrived"), std::string::npos) << text;
  EXPECT_EQ(stream_msgs(conn, stream).value_or(99), 0u) << "the second consumer left items in the stream";
}

// The server killed (SIGKILL) in the middle of a two-process run and restarted on its
// file store: the run still ends with every item, each counted once (redeliveries after
// the restart are reported apart: they used to count as items, so the consumer ended
// early, reported success and the stream with the rest was deleted).
TEST_F(CutTool, AServerRestartMidRunLosesAndDoubleCountsNothing) {
  sluice_test::nats_server server;
  const std::string out = out_file("restart");
  sluice_test::child_process run({tool_path(), "bench", "--cut", "2", "--via", server.url(), "--topology", "chain:4",
                                  "--items", "8000", "--work", "0,0,sleep:100us,0"},
                                 out);
  {
    auto conn = sluice::jetstream::connect(server.url());
    const std::string stream = "sluice-bench-" + std::to_string(run.pid());
    // Both sides at work: the producer has published some, and the consumer has fetched
    // (a server gone while the consumer is still subscribing fails that side at once, a
    // different case).
    ASSERT_TRUE(within(30s, [&] {
      try {
        const auto st = sluice::jetstream::inspect_edge(conn, {.stream = stream});
        return st.msgs > 100 && st.ack_pending > 0;
      } catch (const std::runtime_error&) {
        return false;
      }
    })) << run.output();
  }
  server.kill9();
  server.start();
  const int status = run.wait(120s);
  const std::string text = run.output();
  std::filesystem::remove(out);
  EXPECT_EQ(status, 0) << text;
  EXPECT_NE(text.find("consumer: 8000 items in"), std::string::npos) << text;
}

// No server behind --via: one line naming the URL, exit 1 (a runtime error, as every
// command reports one), well within the connect timeout; no hang, no child left behind.
// A stream that already holds messages (a killed run's, or a --role producer's) is
// refused by a run that starts both sides, and left as it was: its messages were counted
// as the run's own items (a probe: "3000 items in 0.09 s", exit 0, before the producer had
// sent any), and the run then removed the stream with its own items unread.
TEST_F(CutTool, AStreamThatAlreadyHoldsMessagesIsRefusedAndKept) {
  sluice_test::nats_server server;
  const std::vector<std::string> common = {"--cut", "1", "--via", server.url(), "--topology", "chain:2",
                                           "--items", "100", "--stream", "leftover"};
  auto left = common;
  left.insert(left.end(), {"--role", "producer"});
  const run_result first = run_bench(left, 60s);
  ASSERT_EQ(first.status, 0) << first.out;
  const run_result r = run_bench(common, 60s);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("stream leftover on " + server.url() + " already holds 101 messages"), std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("consumer:"), std::string::npos) << "a side ran: " << r.out;
  auto conn = sluice::jetstream::connect(server.url());
  EXPECT_EQ(sluice::jetstream::inspect_edge(conn, {.stream = "leftover"}).msgs, 101u);
}

TEST_F(CutTool, UnreachableServerFailsWithOneLine) {
  const std::string url = "nats://127.0.0.1:" + std::to_string(sluice_test::free_port());
  const auto t0 = std::chrono::steady_clock::now();
  const run_result r = run_bench({"--cut", "1", "--via", url, "--items", "10"}, 30s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_EQ(lines_of(r.out), 1u) << r.out;
  EXPECT_NE(r.out.find("sluice bench: error:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(url), std::string::npos) << r.out;
}

// A --via that is not a NATS URL is a bad command line: exit 2, one line, nothing started.
TEST_F(CutTool, NonNatsUrlIsABadCommandLine) {
  // tls:// too: it was taken, and libnats connected in plain text, password and all.
  for (const char* via : {"http://127.0.0.1:4222", "127.0.0.1:4222", "", "tls://u:p@127.0.0.1:4222"}) {
    SCOPED_TRACE(via);
    const run_result r = run_bench({"--cut", "1", "--via", via, "--items", "10"}, 30s);
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_EQ(lines_of(r.out), 1u) << r.out;
    EXPECT_NE(r.out.find("--via"), std::string::npos) << r.out;
  }
}

// Values a cut run took in another sense than given, or found wrong only after connecting
// (exit 1, from each side): refused before any connection, naming the option, exit 2. A
// list of --work values with an empty piece or more pieces than workers was cut short,
// an empty --stream replaced by the default, a --capacity that cannot fit failed with
// out-of-memory errors from both sides, a URL with no host or a port past 65535 was a
// connection error; and a password in a refused URL is not shown.
TEST_F(CutTool, BadValuesAreUsageErrorsBeforeAnyConnection) {
  const std::string via = "nats://127.0.0.1:9";  // nothing listens: a run that got that far fails otherwise
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--work", "1us,"}, "--work '1us,'"},
      {{"--work="}, "--work ''"},
      {{"--work", "1us,2us,3us"}, "--work lists 3 values but chain:2 has 2 worker stages"},
      {{"--stream="}, "--stream '': want a stream name"},
      {{"--capacity", "1G"}, "--capacity 1000000000 is too large"},
      {{"--capacity", "9223372036854775807"}, "is too large"},
      // A 1 MiB item with its sequence, time and Nats-Msg-Id header is over a default
      // server's max_payload: it was taken, and failed after connecting.
      {{"--item-size", "1MiB"}, "--item-size '1MiB': want a size up to 1023KiB"},
  };
  for (const auto& [more, says] : cases) {
    std::vector<std::string> args = {"--cut", "1", "--via", via, "--topology", "chain:2", "--items", "10"};
    args.insert(args.end(), more.begin(), more.end());
    SCOPED_TRACE(more.front());
    const run_result r = run_bench(args, 30s);
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_EQ(lines_of(r.out), 1u) << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << r.out;
  }
  // The consumer's bit per item: 10^15 items want 125 TB of it, refused before connecting
  // (it failed with "out of memory" after).
  {
    const run_result r = run_bench({"--cut", "1", "--via", via, "--topology", "chain:2", "--items", "1000000000000000"}, 30s);
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_NE(r.out.find("--items '1000000000000000': want a count whose bit per item"), std::string::npos) << r.out;
  }
  // Each names why: the specific reason check_url gives, not one generic line.
  const std::vector<std::pair<std::string, std::string>> urls = {
      {"nats://", "'nats://' is not a server"},
      {"nats://127.0.0.1:99999999", "port in 1..65535"},
      {"nats://u:secret@:4222", "port in 1..65535"},
      {"nats://127.0.0.1:9,nats://h:0", "'nats://h:0' is not a server"},
      {"nats://u:a,secret@127.0.0.1:4222", "holds a comma"},
      {"http://u:secret@127.0.0.1:4222", "want a NATS URL"},
  };
  for (const auto& [bad, says] : urls) {
    SCOPED_TRACE(bad);
    const run_result r = run_bench({"--cut", "1", "--via", bad, "--topology", "chain:2", "--items", "10"}, 30s);
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_EQ(lines_of(r.out), 1u) << r.out;
    EXPECT_NE(r.out.find("--via"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("secret"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("sluice::jetstream"), std::string::npos) << r.out;  // one prefix: the tool's
  }
  // Bare nanoseconds, as a run in one process takes them.
  const run_result ns = run_bench({"--cut", "1", "--via", via, "--topology", "chain:2", "--items", "10", "--work", "100"}, 30s);
  EXPECT_NE(ns.status, 2) << ns.out;
}

}  // namespace
