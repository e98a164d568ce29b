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
#include <filesystem>
#include <string>
#include <vector>

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
    const run_result r = run_bench({"--cut", "2", "--via", server.url(), "--topology", "chain:3", "--items", "500",
                                    "--item-size", "32"},
                                   60s);
    ASSERT_EQ(r.status, 0) << r.out;
    for (const char* row : {"producer  source", "producer  w1", "producer  w2", "producer  publish:sluice-bench-",
                            "consumer  subscribe:sluice-bench-", "consumer  w3", "consumer  sink",
                            "producer: 500 items in", "consumer: 500 items in", "bottleneck: "}) {
      EXPECT_NE(r.out.find(row), std::string::npos) << "missing '" << row << "' in:\n" << r.out;
    }
    EXPECT_EQ(r.out.find("error"), std::string::npos) << r.out;
  }
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

// No server behind --via: one line naming the URL, exit 1 (a runtime error, as every
// command reports one), well within the connect timeout; no hang, no child left behind.
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
  for (const char* via : {"http://127.0.0.1:4222", "127.0.0.1:4222", ""}) {
    SCOPED_TRACE(via);
    const run_result r = run_bench({"--cut", "1", "--via", via, "--items", "10"}, 30s);
    EXPECT_EQ(r.status, 2) << r.out;
    EXPECT_EQ(lines_of(r.out), 1u) << r.out;
    EXPECT_NE(r.out.find("--via"), std::string::npos) << r.out;
  }
}

}  // namespace
