// `sluice bench` open loop (--rate, --sweep), its latency histogram and its Google
// Benchmark output. Runs the built tool (SLUICE_TOOL_PATH) as tool_test.cpp does.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../../tools/bench/histogram.hpp"
#include "support/mini_json.hpp"
#include "support/run_tool.hpp"
#include "support/spawn_tool.hpp"

namespace {

#if defined(SLUICE_SANITIZER_BUILD)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// oneTBB is not built with the sanitizer: ThreadSanitizer cannot see its scheduler's
// synchronisation between pipeline filters and would report races that are not. Under
// sanitizers these tests run the sluice engine only.
const char* engine_both() { return kSanitized ? "sluice" : "both"; }

using result = sluice_test::tool_result;
using sluice_test::tool_path;

// Runs the tool with `args` under a hard time limit, without progress lines.
result run_tool(const std::vector<std::string>& args, int limit_s = 120) {
  return sluice_test::run_tool(args, limit_s, {.progress = "off"});
}

std::string joined(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += a + " ";
  return s;
}

class BenchRate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (tool_path().empty()) GTEST_SKIP() << "built without the sluice tool (SLUICE_BUILD_TOOLS=OFF)";
  }
};

// ---- the histogram ------------------------------------------------------------------

TEST(BenchHistogram, PercentilesWithinOnePercentOfTheExactOnes) {
  std::mt19937_64 rng(13);
  // Latency-like: log-uniform from 100 ns to 100 ms.
  std::uniform_real_distribution<double> exponent(2.0, 8.0);
  std::vector<std::uint64_t> v;
  sluice::tool::bench::log_histogram h;
  for (int i = 0; i < 100'000; ++i) {
    const auto x = static_cast<std::uint64_t>(std::pow(10.0, exponent(rng)));
    v.push_back(x);
    h.record(static_cast<std::int64_t>(x));
  }
  std::sort(v.begin(), v.end());
  EXPECT_EQ(h.count(), v.size());
  EXPECT_EQ(h.max(), v.back());
  EXPECT_EQ(h.min(), v.front());
  for (const double q : {0.0, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    const std::size_t rank = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))));
    const std::uint64_t exact = v[rank - 1];
    const std::uint64_t got = h.quantile(q);
    EXPECT_GE(got, exact) << "q " << q;
    EXPECT_LE(static_cast<double>(got), static_cast<double>(exact) * 1.008 + 1) << "q " << q;
  }
}

TEST(BenchHistogram, SmallValuesExactAndBucketsContiguous) {
  using sluice::tool::bench::log_histogram;
  sluice::tool::bench::log_histogram h;
  EXPECT_EQ(h.quantile(0.5), 0U);
  for (int i = 1; i <= 100; ++i) h.record(i);
  EXPECT_EQ(h.quantile(0.5), 50U);
  EXPECT_EQ(h.quantile(0.99), 99U);
  EXPECT_EQ(h.quantile(1.0), 100U);
  h.record(-5);  // a clock that went backwards counts as 0
  EXPECT_EQ(h.min(), 0U);
  // Every value falls in the bucket whose range holds it, and the buckets tile 0..2^64-1.
  for (std::size_t i = 1; i < log_histogram::kBuckets; ++i) {
    ASSERT_EQ(log_histogram::index(log_histogram::upper(i - 1) + 1), i) << i;
    ASSERT_EQ(log_histogram::index(log_histogram::upper(i)), i) << i;
  }
  EXPECT_EQ(log_histogram::upper(log_histogram::kBuckets - 1), UINT64_MAX);
}

// ---- --rate -------------------------------------------------------------------------

// The check from issue 13: a one-stage graph whose stage sleeps 1 ms per item, offered
// 100 items/s (10% of what it can do): its p50 must lie within 5% of 1 ms plus the
// hand-off time, the p50 of the same graph with a pass-through stage at the same rate
// (measured just before and just after it).
// A correctness check of the harness (intended-time stamping, precise sleeps), not a
// performance assertion: on a loaded 2-core machine a run can be disturbed, so up to 5
// attempts, the best one counts. Not under sanitizers (they change what is measured).
TEST_F(BenchRate, OpenLoopP50OfAOneMillisecondSleepIsOneMillisecondPlusTheHandOff) {
  if (kSanitized) GTEST_SKIP() << "a timing check; sanitizers change the hand-off cost between the two runs";
  auto p50 = [](const std::string& work) {
    const std::vector<std::string> args = {"bench", "--topology", "chain:1", "--work", work, "--rate", "100",
                                           "--duration", "1500ms", "--capacity", "16", "--json"};
    const result r = run_tool(args, 60);
    EXPECT_EQ(r.status, 0) << joined(args) << "\n" << r.err;
    const mini_json::value v = mini_json::parse(r.out);
    const auto& res = v["results"][0];
    EXPECT_GE(res["items_delivered"].uint(), 140U) << r.out;
    return static_cast<double>(res["latency_ns"]["p50"].uint());
  };
  double best_error = 1e18;
  std::string log;
  for (int attempt = 0; attempt < 5 && best_error > 0.05; ++attempt) {
    // The hand-off p50 itself drifts between runs on a shared VM (seen: 37 to 247 us in
    // one minute), by more than 5% of 1 ms: it is measured before and after the sleep run,
    // and the sleep's p50 must lie within 5% of 1 ms plus a hand-off in that range.
    const double before = p50("0");
    const double slept = p50("sleep:1ms");
    const double after = p50("0");
    const double lo = 1e6 + std::min(before, after);
    const double hi = 1e6 + std::max(before, after);
    const double error = (slept < lo ? lo - slept : slept > hi ? slept - hi : 0.0) / 1e6;  // relative to the 1 ms
    char line[240];
    std::snprintf(line, sizeof line,
                  "attempt %d: hand-off p50 %.1f then %.1f us, sleep p50 %.1f us, expected %.1f to %.1f us (off by %.1f%%)\n",
                  attempt + 1, before / 1e3, after / 1e3, slept / 1e3, lo / 1e3, hi / 1e3, 100 * error);
    log += line;
    best_error = std::min(best_error, error);
  }
  std::fputs(log.c_str(), stdout);
  // A machine with more runnable threads than cores (other builds, the tests ctest runs
  // beside this one) delays wake-ups by time slices of milliseconds, and the check then
  // measures the scheduler, not the harness (seen: load 15 on 2 cores, pass-through p50 1
  // to 15 ms). Then, and only when every attempt missed, the result is a skip that says so.
  double load[1] = {0};
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (best_error > 0.05 && ::getloadavg(load, 1) == 1 && load[0] > static_cast<double>(cpus)) {
    GTEST_SKIP() << "machine overloaded (load average " << load[0] << " on " << cpus << " CPUs):\n" << log;
  }
  EXPECT_LE(best_error, 0.05) << log;
}

TEST_F(BenchRate, RateReportsOfferedAchievedAndPercentiles) {
  const std::vector<std::string> args = {"bench", "--topology", "chain:2", "--rate", "2000", "--duration", "1s",
                                         "--capacity", "64", "--engine", engine_both(), "--json"};
  const result r = run_tool(args);
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  EXPECT_EQ(v["mode"].str(), "open_loop");
  EXPECT_DOUBLE_EQ(v["offered_per_s"].num(), 2000);
  ASSERT_EQ(v["results"].size(), kSanitized ? 1U : 2U);
  // No --items: the run had no item limit, and the header says none (it said 1000000).
  EXPECT_TRUE(v["items"].is_null()) << r.out.substr(0, 200);
  for (const auto& res : v["results"].arr()) {
    SCOPED_TRACE(res["engine"].str());
    EXPECT_EQ(res["mode"].str(), "open_loop");
    EXPECT_DOUBLE_EQ(res["offered_per_s"].num(), 2000);
    // 1 s at 2000/s: about 2000 items, each delivered once.
    EXPECT_NEAR(static_cast<double>(res["items_sent"].uint()), 2000, 200) << r.out;
    EXPECT_EQ(res["items_delivered"].uint(), res["items_sent"].uint());
    // A rate far below what the graph takes is achieved, within 10% (a stall of 100 ms at
    // the end of the run would be needed to miss it).
    EXPECT_NEAR(res["achieved_per_s"].num(), 2000, 200) << r.out;
    // saturated says whether achieved fell below 95% of offered. Not asserted false: under a
    // sanitizer on a loaded 2-core machine one stall near the end of the run stretches the
    // delivery window past that (seen in a ThreadSanitizer run: achieved within 10%,
    // saturated true), and that is the machine's timing, not the tool's.
    EXPECT_EQ(res["saturated"].boolean(), res["achieved_per_s"].num() < 0.95 * 2000) << res["achieved_per_s"].num();
    const auto& us = res["latency_us"];
    EXPECT_GT(us["p50"].num(), 0);
    EXPECT_LE(us["p50"].num(), us["p99"].num());
    EXPECT_LE(us["p99"].num(), us["p999"].num());
    EXPECT_LE(us["p999"].num(), us["max"].num());
    EXPECT_NEAR(us["p50"].num() * 1e3, static_cast<double>(res["latency_ns"]["p50"].uint()), 1);
    EXPECT_EQ(res["latency_ns"]["count"].uint(), res["items_delivered"].uint());
    // The throughput series (sampled every ~100 ms) covers the run: each rate times its
    // interval, summed, is every delivery (the last partial interval was left out).
    EXPECT_GE(res["throughput"].size(), 5U);
    double counted = 0, t_before = 0;
    for (const auto& pt : res["throughput"].arr()) {
      counted += pt[1].num() * (pt[0].num() - t_before);
      t_before = pt[0].num();
    }
    EXPECT_NEAR(counted, static_cast<double>(res["items_delivered"].uint()), 1.0) << r.out;
  }
  // The table says the same in words.
  const result t = run_tool({"bench", "--topology", "chain:2", "--rate", "2k/s", "--duration", "300ms"});
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("offered/s"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("p99.9 us"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("2.00 k"), std::string::npos) << t.out;
  // Not asserted unsaturated: a stall of 15 ms at the end of this 300 ms run (a loaded
  // machine, a sanitizer) stretches the delivery span past 95% of the rate, as above; it
  // failed so once in a full ctest -j2. What is asserted: a run called saturated says why,
  // with a share under 95%, in the words the JSON's rule uses.
  const auto at = t.out.find("saturated: achieved ");
  if (t.out.find("saturated") != std::string::npos) {
    ASSERT_NE(at, std::string::npos) << t.out;
    const double share = std::stod(t.out.substr(at + std::string("saturated: achieved ").size()));
    const bool behind = t.out.find("were never sent") != std::string::npos;
    EXPECT_TRUE(share < 95.0 || behind) << t.out;
  }
}

// A rate no graph sustains: the run still ends on time, reports what it achieved and
// the (growing) latency honestly, and says "saturated".
TEST_F(BenchRate, AnAbsurdRateIsFlaggedSaturated) {
  const std::vector<std::string> args = {"bench", "--topology", "chain:2", "--rate", "1G", "--duration", "300ms",
                                         "--capacity", "16", "--engine", engine_both(), "--json"};
  const result r = run_tool(args, 60);
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  for (const auto& res : v["results"].arr()) {
    SCOPED_TRACE(res["engine"].str());
    EXPECT_TRUE(res["saturated"].boolean());
    EXPECT_LT(res["achieved_per_s"].num(), 0.95e9);
    EXPECT_GT(res["items_delivered"].uint(), 0U);
    EXPECT_EQ(res["items_delivered"].uint(), res["items_sent"].uint());
    EXPECT_LT(res["elapsed_s"].num(), 10.0);
    // Items are stamped when due, not when sent: late items carry their wait. The
    // source falls behind at once, so the later half of the items waited for most of
    // the run; the p99 is far above the time a pass-through chain needs per item.
    EXPECT_GT(res["latency_us"]["p99"].num(), 50'000.0);
  }
  const std::string html = ::testing::TempDir() + "sluice_saturated_" + std::to_string(::getpid()) + ".html";
  const result t =
      run_tool({"bench", "--topology", "chain:2", "--rate", "1G", "--duration", "200ms", "--report", html}, 60);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("saturated"), std::string::npos) << t.out;
  // The report says so too: its row is flagged with the items never sent, its points are
  // hollow, and a note says the percentiles are lower bounds (it showed them as plain
  // measurements).
  const std::string page = sluice_test::read_whole_file(html);
  std::remove(html.c_str());
  EXPECT_NE(page.find("<tr class=\"saturated\">"), std::string::npos) << page.substr(0, 2000);
  EXPECT_NE(page.find("due never sent"), std::string::npos);
  EXPECT_NE(page.find("they are lower bounds"), std::string::npos);
  EXPECT_NE(page.find("r=\"3.5\" class=\"saturated\""), std::string::npos);
}

// A rate so low that the second item is due after the run: one item, not a closed loop
// (the next item's offset, 1e19 ns, overflowed int64 and was "due" at once, so millions
// of items went out).
TEST_F(BenchRate, ATinyRateSendsOnlyTheItemsDueInTheRun) {
  const result r = run_tool({"bench", "--topology", "chain:1", "--rate", "0.0000000001", "--duration", "300ms", "--json"}, 60);
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  for (const auto& res : v["results"].arr()) {
    EXPECT_EQ(res["items_sent"].uint(), 1U);
    EXPECT_EQ(res["items_delivered"].uint(), 1U);
    // One item in the 300 ms window: at most 1/0.3 s. It was 1 over the run's few ms
    // (61/s and more), and the run looked faster than the rate it was offered.
    EXPECT_LE(res["achieved_per_s"].num(), 1 / 0.3 + 1e-9);
    // One item offered is no rate to judge: it was called "saturated" (a 1 ms window at
    // 1000/s showed "achieved 37% of the offered rate; latency grows with the run").
    EXPECT_FALSE(res["saturated"].boolean());
  }
  const result t = run_tool({"bench", "--topology", "chain:1", "--rate", "1000", "--duration", "1ms"}, 60);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out.find("saturated"), std::string::npos) << t.out;
  // A fractional rate is shown as given (it was rounded: 0.5 showed as "0 items/s offered").
  const result h = run_tool({"bench", "--topology", "chain:1", "--rate", "0.5", "--duration", "200ms"}, 60);
  ASSERT_EQ(h.status, 0) << h.err;
  EXPECT_NE(h.out.find("0.5 items/s offered"), std::string::npos) << h.out;
}

// A source that falls behind stops at the end of the window with items still due: they
// are counted (items_due, items_unsent), the run is saturated, and the table says the
// percentiles leave those latest items out. They were dropped without a word, and the
// latency shown depended on --capacity.
TEST_F(BenchRate, ItemsDueButNeverSentAreCountedAndTheRunIsSaturated) {
  const result r = run_tool({"bench", "--topology", "chain:1", "--work", "sleep:1ms", "--rate", "5000", "--duration",
                             "300ms", "--capacity", "16", "--json"},
                            60);
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  for (const auto& res : v["results"].arr()) {
    EXPECT_EQ(res["items_due"].uint(), 1500U);  // 0.3 s at 5000/s
    EXPECT_EQ(res["items_sent"].uint() + res["items_unsent"].uint(), 1500U);
    EXPECT_GT(res["items_unsent"].uint(), 0U);  // a 1 ms stage takes at most ~1000/s
    EXPECT_TRUE(res["saturated"].boolean());
    EXPECT_GE(res["drain_s"].num(), 0.0);
  }
  const result t = run_tool({"bench", "--topology", "chain:1", "--work", "sleep:1ms", "--rate", "5000", "--duration",
                             "300ms", "--capacity", "16"},
                            60);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("were never sent"), std::string::npos) << t.out;
}

// A run that took every item it was offered is never shown faster than the offered
// rate, and a few items are no span to judge saturation by (two items and one late
// delivery flagged an idle chain as "saturated").
TEST_F(BenchRate, AFewItemsTakenInFullAreNeitherFasterThanOfferedNorSaturated) {
  for (const char* duration : {"50ms", "60ms", "300ms"}) {
    const result r = run_tool({"bench", "--topology", "chain:4", "--rate", "20", "--duration", duration, "--json"}, 60);
    ASSERT_EQ(r.status, 0) << r.err;
    const mini_json::value v = mini_json::parse(r.out);
    for (const auto& res : v["results"].arr()) {
      ASSERT_EQ(res["items_unsent"].uint(), 0U) << duration;
      EXPECT_LE(res["achieved_per_s"].num(), 20.0) << duration;
      EXPECT_FALSE(res["saturated"].boolean()) << duration;
    }
  }
}

// The source waits inside its stage function for each item to fall due; the runtime
// counted that as busy, and every run that kept up named the source its bottleneck.
TEST_F(BenchRate, AnOpenLoopSourceWaitingForItemsToFallDueIsNotBusyNorTheBottleneck) {
  const result r = run_tool({"bench", "--topology", "chain:2", "--rate", "200", "--duration", "300ms", "--json"}, 60);
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  for (const auto& res : v["results"].arr()) {
    if (res["engine"].str() != "sluice") continue;
    const auto& source = res["metrics"]["stages"][std::size_t{0}];
    ASSERT_EQ(source["name"].str(), "source");
    EXPECT_LT(source["busy_share"].num(), 0.4) << r.out;
    EXPECT_GT(source["starved_share"].num(), 0.5) << r.out;
    EXPECT_TRUE(res["bottleneck"].is_null()) << r.out;
  }
}

// GET `path` from 127.0.0.1:`port` over HTTP/1.0; the body, or "" on any failure.
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};  // every read and write bounded
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string got;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const std::size_t body = got.find("\r\n\r\n");
  return got.rfind("HTTP/1.1 200", 0) == 0 && body != std::string::npos ? got.substr(body + 4) : "";
}

// The live view of an open-loop run says what its report says: the source waits on its
// clock (starved), and nothing is the bottleneck of a graph at a fraction of its load.
// The report alone was corrected: the live view (snapshot.json, /metrics, the page) of a
// run at 200 items/s named the source the bottleneck, busy 100% of the time.
TEST_F(BenchRate, TheLiveViewOfAnOpenLoopRunShowsTheSourceWaitingOnItsClock) {
  using namespace std::chrono_literals;
  sluice_test::spawned_tool t({tool_path(), "bench", "--topology", "chain:2", "--rate", "200", "--duration", "20s",
                               "--engine", "sluice", "--serve", "127.0.0.1:0"});
  const std::string at = "live view at http://127.0.0.1:";
  ASSERT_TRUE(t.until([&] { return t.err.find(at) != std::string::npos || t.err.find("without cpp-httplib") != std::string::npos; },
                      60s))
      << t.err;
  if (t.err.find("without cpp-httplib") != std::string::npos) GTEST_SKIP() << t.err;
  const int port = std::atoi(t.err.c_str() + t.err.find(at) + at.size());
  ASSERT_GT(port, 0) << t.err;
  // A snapshot once the source has sent 100 items (half a second of the rate).
  mini_json::value snap;
  std::string shown;  // its text, for the messages
  const mini_json::value* source = nullptr;
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < end && t.running()) {
    const std::string body = http_get(port, "/snapshot.json");
    if (!body.empty()) {
      snap = mini_json::parse(body);
      shown = body;
      source = nullptr;
      for (const auto& st : snap["stages"].arr()) {
        if (st["name"].str() == "source") source = &st;
      }
      if (source != nullptr && (*source)["items_out"].uint() >= 100) break;
    }
    t.until([] { return false; }, 100ms);  // reads the child's output meanwhile
  }
  t.signal(SIGINT);  // the run has shown what it needed to: end it (status 130)
  ASSERT_TRUE(t.wait(60s)) << t.err;
  ASSERT_NE(source, nullptr) << "no snapshot with 100 items sent; stderr:\n" << t.err;
  ASSERT_GE((*source)["items_out"].uint(), 100U);
  EXPECT_LT((*source)["busy_share"].num(), 0.4) << shown;
  EXPECT_GT((*source)["starved_share"].num(), 0.5) << shown;
  EXPECT_TRUE(snap["bottleneck"].is_null()) << shown;
  // The clock shown as the source's input from outside the graph.
  bool clock = false;
  for (const auto& c : snap["channels"].arr()) {
    if (c["name"].str() == "clock") {
      clock = true;
      EXPECT_EQ(c["to"].str(), "source");
      EXPECT_EQ(c["from"].str(), "");
      EXPECT_GT(c["blocked_pop_ns"].uint(), 0U);
    }
  }
  EXPECT_TRUE(clock) << shown;
}

// A rate just under 1000 rounds to "1000" in whole units; it is shown as 1.00 k, as
// 1000.1 is.
TEST_F(BenchRate, ARateThatRoundsToAThousandIsShownInThousands) {
  const result r = run_tool({"bench", "--topology", "chain:1", "--rate", "999.6", "--duration", "50ms"}, 60);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("1.00 k"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(" 1000 "), std::string::npos) << r.out;
}

// --items ends an open-loop run at that count when it comes first: the header said the
// rate was offered for the whole duration.
TEST_F(BenchRate, TheHeaderSaysAnItemCountMayEndTheRunFirst) {
  const result r = run_tool({"bench", "--topology", "chain:1", "--rate", "1000", "--duration", "10s", "--items", "20"}, 60);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("offered for 10.00 s or 20 items, whichever ends first"), std::string::npos) << r.out;
  const result sweep = run_tool({"bench", "--topology", "chain:1", "--sweep", "--probe-duration", "100ms", "--duration",
                                 "10s", "--items", "20", "--sweep-at", "50"},
                                60);
  ASSERT_EQ(sweep.status, 0) << sweep.err;
  EXPECT_NE(sweep.out.find("open loop for 10.00 s or 20 items, whichever ends first, at each rate;"), std::string::npos)
      << sweep.out;
  const result plain = run_tool({"bench", "--topology", "chain:1", "--rate", "1000", "--duration", "50ms"}, 60);
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_EQ(plain.out.find("whichever"), std::string::npos) << plain.out;
}

TEST_F(BenchRate, BadValuesAreOneLineErrorsWithStatusTwo) {
  const std::vector<std::vector<std::string>> bad = {
      {"bench", "--rate", "0"},
      {"bench", "--rate", "-1"},
      {"bench", "--rate", "abc"},
      {"bench", "--rate", ""},
      {"bench", "--rate", "10x"},
      {"bench", "--rate", "2T"},
      {"bench", "--rate"},
      {"bench", "--duration", "0"},
      {"bench", "--duration", "soon"},
      {"bench", "--sweep", "--rate", "100"},
      {"bench", "--sweep-at", "abc"},
      {"bench", "--sweep-at", "10,0"},
      // A repeat measured its point twice, and --format gbench named two benchmarks alike
      // (".../load:100%_of_sluice/sluice" twice), which comparison tools pair by name.
      {"bench", "--sweep-at", "100,100", "--sweep"},
      {"bench", "--sweep-at", "50,50.000001", "--sweep"},  // both named "50%"
      {"bench", "--shared-at", "10,10%", "--sweep", "--engine", "both"},
      {"bench", "--shared-at", "-10"},
      {"bench", "--probe-duration", "0"},
      // A probe that short measured the start-up: 95 items/s for a graph that moves 3 M/s,
      // taken as the maximum whose shares the sweep offered (found by a probe).
      {"bench", "--probe-duration", "100us", "--sweep"},
      {"bench", "--probe-duration", "99ms", "--sweep"},
      {"bench", "--format", "xml"},
      {"bench", "--sweep-at", "50"},  // sweep options without --sweep were ignored
      {"bench", "--shared-at", "50"},
      {"bench", "--probe-duration", "1s"},
      {"bench", "--shared-at", "50", "--sweep", "--engine", "sluice"},
  };
  for (const auto& args : bad) {
    const std::string what = joined(args);
    const result r = run_tool(args, 60);
    EXPECT_EQ(r.status, 2) << what << "\nstderr: " << r.err;
    ASSERT_FALSE(r.err.empty()) << what;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << what << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.rfind("sluice bench: ", 0), 0U) << what << "\nstderr: " << r.err;
    EXPECT_NE(r.err.find(args[1]), std::string::npos) << what << "\nstderr: " << r.err;
    EXPECT_TRUE(r.out.empty()) << what << "\nstdout: " << r.out;
  }
}

// ---- --format gbench ------------------------------------------------------------------

void check_gbench(const std::string& doc, std::size_t rows, bool open_loop) {
  const mini_json::value v = mini_json::parse(doc);
  const auto& ctx = v["context"];
  for (const char* key : {"date", "host_name", "executable", "library_build_type"}) {
    EXPECT_TRUE(ctx[key].is_string()) << key;
  }
  EXPECT_GE(ctx["num_cpus"].uint(), 1U);
  EXPECT_TRUE(ctx["mhz_per_cpu"].is_number());
  EXPECT_EQ(ctx["caches"].size(), 0U);
  ASSERT_EQ(v["benchmarks"].size(), rows);
  for (const auto& b : v["benchmarks"].arr()) {
    SCOPED_TRACE(b["name"].str());
    EXPECT_EQ(b["run_name"].str(), b["name"].str());
    EXPECT_EQ(b["run_type"].str(), "iteration");
    EXPECT_EQ(b["repetitions"].uint(), 1U);
    EXPECT_EQ(b["repetition_index"].uint(), 0U);
    EXPECT_EQ(b["threads"].uint(), 1U);
    EXPECT_GT(b["iterations"].uint(), 0U);
    EXPECT_EQ(b["time_unit"].str(), "ns");
    const double items_per_s = b["items_per_second"].num();
    ASSERT_GT(items_per_s, 0);
    EXPECT_NEAR(b["real_time"].num(), 1e9 / items_per_s, 1e9 / items_per_s * 1e-6);
    EXPECT_GT(b["cpu_time"].num(), 0);
    EXPECT_LE(b["p50_us"].num(), b["p99_us"].num());
    EXPECT_LE(b["p99_us"].num(), b["p999_us"].num());
    EXPECT_LE(b["p999_us"].num(), b["max_us"].num());
    EXPECT_EQ(b.has("offered_per_s"), open_loop);
    EXPECT_EQ(b.has("saturated"), open_loop);
  }
}

TEST_F(BenchRate, GbenchFormatHasGoogleBenchmarksKeys) {
  const std::string items = kSanitized ? "500" : "5000";
  const result closed = run_tool({"bench", "--topology", "chain:2", "--items", items, "--engine", engine_both(),
                                  "--format", "gbench"});
  ASSERT_EQ(closed.status, 0) << closed.err;
  {
    SCOPED_TRACE("closed loop");
    check_gbench(closed.out, kSanitized ? 1 : 2, false);
    const mini_json::value v = mini_json::parse(closed.out);
    EXPECT_EQ(v["benchmarks"][0]["name"].str(), "chain:2/cap:1024/closed/sluice");
    EXPECT_EQ(v["benchmarks"][0]["iterations"].uint(), std::stoull(items));
  }
  const result open = run_tool({"bench", "--topology", "farm:2", "--rate", "1000", "--duration", "300ms", "--format",
                                "gbench"});
  ASSERT_EQ(open.status, 0) << open.err;
  {
    SCOPED_TRACE("open loop");
    check_gbench(open.out, 1, true);
    EXPECT_EQ(mini_json::parse(open.out)["benchmarks"][0]["name"].str(), "farm:2/cap:1024/rate:1000/sluice");
  }
  // Options that change what is measured are in the name (runs differing only in them
  // had one name).
  const result varied = run_tool({"bench", "--topology", "chain:2", "--items", "200", "--replicas", "2", "--ordered",
                                  "--item-size", "128", "--format", "gbench"});
  ASSERT_EQ(varied.status, 0) << varied.err;
  EXPECT_EQ(mini_json::parse(varied.out)["benchmarks"][0]["name"].str(),
            "chain:2/cap:1024/item:128/replicas:2/ordered/closed/sluice");
  const result fused = run_tool({"bench", "--topology", "chain:2", "--items", "200", "--fuse", "--format", "gbench"});
  ASSERT_EQ(fused.status, 0) << fused.err;
  EXPECT_EQ(mini_json::parse(fused.out)["benchmarks"][0]["name"].str(), "chain:2/cap:1024/fuse:maps/closed/sluice");
  // And Python's json module, which compare.py uses, reads it, with the keys it looks up.
  if (std::system("python3 -c 'import json' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3 here";
  const std::string path = ::testing::TempDir() + "sluice_gbench_" + std::to_string(::getpid()) + ".json";
  {
    std::ofstream f(path);
    f << closed.out;
  }
  const std::string py =
      "import json,sys\n"
      "d=json.load(open(sys.argv[1]))\n"
      "assert 'context' in d and 'benchmarks' in d\n"
      "for b in d['benchmarks']:\n"
      "  for k in ('name','run_name','run_type','repetitions','iterations','real_time','cpu_time','time_unit'):\n"
      "    assert k in b, k\n"
      "  assert b['run_type']=='iteration' and b['time_unit']=='ns'\n";
  const int rc = std::system(("python3 -c " + sluice_test::shell_quote(py) + " " + sluice_test::shell_quote(path)).c_str());
  std::remove(path.c_str());
  EXPECT_EQ(rc, 0);
}

// ---- --sweep ------------------------------------------------------------------------

// A probe cut short by --items, its items all fitting in the channels, is delivered in
// one burst at its end: that burst's rate (13 M/s for a graph that moved 91 k/s) was
// the maximum, and every point of the sweep offered many times what the graph takes.
TEST_F(BenchRate, ASweepProbeCutShortByItemsTakesNoBurstRateForTheMaximum) {
  const result r = run_tool({"bench", "--topology", "farm:3", "--sweep", "--items", "1000", "--duration", "100ms",
                             "--probe-duration", "300ms", "--sweep-at", "50", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const mini_json::value v = mini_json::parse(r.out);
  const double max = v["closed_loop_max_per_s"]["sluice"].num();
  int closed = 0;
  for (const auto& res : v["results"].arr()) {
    if (res["mode"].str() != "closed_loop") continue;
    ++closed;
    EXPECT_EQ(res["items_delivered"].uint(), 1000U);
    // At most what it delivered over the time it ran.
    EXPECT_LE(max, res["items_per_s"].num() * (1 + 1e-9)) << r.out;
    EXPECT_GT(max, 0);
  }
  EXPECT_EQ(closed, 1);
  const result t = run_tool({"bench", "--topology", "farm:3", "--sweep", "--items", "1000", "--duration", "100ms",
                             "--probe-duration", "300ms", "--sweep-at", "50"});
  ASSERT_EQ(t.status, 0) << t.err;
  // The header names the probe's own length, not --probe-duration's (the 1000 items end it first).
  EXPECT_EQ(t.out.find("closed-loop maximum (300.0 ms run)"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("closed-loop maximum ("), std::string::npos) << t.out;
}

TEST_F(BenchRate, SweepWithBothEnginesPrintsBoth) {
  std::vector<std::string> base = {"bench", "--topology", "chain:2", "--capacity", "64", "--sweep",
                                   "--engine", engine_both(), "--duration", "100ms", "--probe-duration",
                                   "200ms", "--sweep-at", "10,50"};
  // --shared-at compares both engines (refused with one): under sanitizers sluice runs alone.
  if (!kSanitized) base.insert(base.end(), {"--shared-at", "10,90"});
  const std::string html = ::testing::TempDir() + "sluice_sweep_" + std::to_string(::getpid()) + ".html";
  std::vector<std::string> args = base;
  args.insert(args.end(), {"--json", "--report", html});
  const result r = run_tool(args);
  ASSERT_EQ(r.status, 0) << r.err;
  // The report: the graph (from the sluice closed-loop run) and the latency curves.
  const std::string page = sluice_test::read_whole_file(html);
  std::remove(html.c_str());
  for (const char* s : {"stage-1", "stage-2", "<svg", "p99.9"}) EXPECT_NE(page.find(s), std::string::npos) << s;
  const mini_json::value v = mini_json::parse(r.out);
  EXPECT_EQ(v["mode"].str(), "sweep");
  const std::vector<std::string> engines = kSanitized ? std::vector<std::string>{"sluice"}
                                                      : std::vector<std::string>{"sluice", "tbb"};
  ASSERT_EQ(v["closed_loop_max_per_s"].size(), engines.size());
  for (const auto& e : engines) {
    SCOPED_TRACE(e);
    const double max = v["closed_loop_max_per_s"][e].num();
    EXPECT_GT(max, 0);
    int closed = 0;
    int own = 0;
    for (const auto& res : v["results"].arr()) {
      if (res["engine"].str() != e) continue;
      EXPECT_EQ(res["items_delivered"].uint(), res["items_sent"].uint());
      if (res["mode"].str() == "closed_loop") {
        ++closed;
        // The lower of its steady delivery rate and items over the whole run (one copy each).
        EXPECT_DOUBLE_EQ(std::min(res["achieved_per_s"].num(), res["items_per_s"].num()), max);
        continue;
      }
      if (res["load_of"].str() != e) continue;
      const double fr = res["load_fraction"].num();
      // tbb's own 10% row is also its row at 10% of tbb's maximum (shared); its 90% row
      // is there for --shared-at only.
      if (std::fabs(fr - 0.1) < 1e-9 || std::fabs(fr - 0.5) < 1e-9) ++own;
      EXPECT_NEAR(res["offered_per_s"].num(), max * res["load_fraction"].num(), max * 1e-6);
    }
    EXPECT_EQ(closed, 1);
    EXPECT_EQ(own, 2);  // 10% and 50%
  }
  // An open-loop run that follows the other engine's had an unmeasured warm-up run of its
  // own engine first (kept out of the results, which the counts above check); the others
  // had none. The results are in the order they ran.
  std::string before;
  int warmed = 0;
  for (const auto& res : v["results"].arr()) {
    const std::string e = res["engine"].str();
    const bool switched = res["mode"].str() == "open_loop" && !before.empty() && before != e;
    EXPECT_DOUBLE_EQ(res["warm_up_s"].num(), switched ? 0.2 : 0.0) << e << " after " << before;
    warmed += switched ? 1 : 0;
    before = e;
  }
  // The order: sluice's and tbb's closed-loop runs; sluice at 10 and 50% of its own; tbb at
  // 10 and 50% of its own; sluice at 10 and 90% of tbb's; tbb at 90% of its own. Four
  // open-loop runs follow the other engine's.
  EXPECT_EQ(warmed, kSanitized ? 0 : 4);
  if (!kSanitized) {
    // Both engines at 10% and 90% of tbb's maximum: the same offered rate each.
    const double tbb_max = v["closed_loop_max_per_s"]["tbb"].num();
    for (const double fr : {0.1, 0.9}) {
      int engines_at = 0;
      for (const auto& res : v["results"].arr()) {
        if (res["mode"].str() == "open_loop" && res["load_of"].str() == "tbb" &&
            std::fabs(res["load_fraction"].num() - fr) < 1e-9) {
          ++engines_at;
          EXPECT_NEAR(res["offered_per_s"].num(), tbb_max * fr, tbb_max * 1e-6);
        }
      }
      EXPECT_EQ(engines_at, 2) << fr;
    }
  }
  const result t = run_tool(base);
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_NE(t.out.find("closed-loop maximum"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("10% of sluice"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("50% of sluice"), std::string::npos) << t.out;
  if (!kSanitized) {
    EXPECT_NE(t.out.find("10% of tbb"), std::string::npos) << t.out;
    EXPECT_NE(t.out.find("same offered load, both engines"), std::string::npos) << t.out;
    EXPECT_NE(t.out.find("90%"), std::string::npos) << t.out;
  }
}

}  // namespace
