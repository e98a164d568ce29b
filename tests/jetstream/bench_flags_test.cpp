// sluice_bench_jetstream's flags: a bad value is a usage error that names the flag (exit 2),
// checked before the program starts a nats-server, never an abort or a silently ignored
// flag. Runs the built benchmark (SLUICE_JS_BENCH_PATH), each run killed after 20 s (a
// flag that is ignored starts the full run, which takes minutes: the kill fails the test).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <vector>

#include "../support/run_tool.hpp"

namespace {

struct result {
  int status = -1;
  std::string text;  // stdout and stderr
};

result run_bench(const std::vector<std::string>& args) {
  result r;
#ifdef SLUICE_JS_BENCH_PATH
  std::string cmd = "timeout -s KILL 20 " + sluice_test::shell_quote(SLUICE_JS_BENCH_PATH);
  for (const auto& a : args) cmd += " " + sluice_test::shell_quote(a);
  cmd += " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.text.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
#else
  (void)args;
#endif
  return r;
}

TEST(JetstreamBenchFlags, BadValuesAreUsageErrorsThatNameTheFlag) {
#ifndef SLUICE_JS_BENCH_PATH
  GTEST_SKIP() << "built without the benchmarks";
#endif
  struct bad {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<bad> cases = {
      {{"--items", "abc"}, "--items abc: expected a whole number above 0"},
      {{"--items"}, "--items needs a value"},
      {{"--items", "0"}, "--items 0: expected a whole number above 0"},
      {{"--items", "-3"}, "--items -3: expected a whole number above 0"},
      {{"--items", "12x"}, "--items 12x"},
      {{"--items", "99999999999999999999999"}, "--items 99999999999999999999999"},
      {{"--rounds", "5000"}, "--rounds 5000: expected a whole number from 1 to 1000"},
      {{"--scale-items", ""}, "--scale-items : expected a whole number above 0"},
      {{"--rss-items", "1e6"}, "--rss-items 1e6"},
      {{"--only", "bogus"}, "--only bogus: expected throughput, scale or rss"},
      {{"--frob", "1"}, "unknown flag --frob"},
      {{"--rounds", "2", "--items"}, "--items needs a value"},
  };
  for (const auto& c : cases) {
    const result r = run_bench(c.args);
    std::string shown;
    for (const auto& a : c.args) shown += " " + a;
    EXPECT_EQ(r.status, 2) << shown << "\n" << r.text;
    EXPECT_NE(r.text.find(c.says), std::string::npos) << shown << "\n" << r.text;
    EXPECT_NE(r.text.find("usage: sluice_bench_jetstream"), std::string::npos) << shown;
    EXPECT_EQ(r.text.find("nats-server -js on"), std::string::npos) << shown << ": started a run";
  }
}

}  // namespace
