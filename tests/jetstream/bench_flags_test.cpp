// sluice_bench_jetstream's flags: a bad value is a usage error that names the flag (exit 2),
// checked before the program starts a nats-server, never an abort or a silently ignored
// flag. Runs the built benchmark (SLUICE_JS_BENCH_PATH), each run killed after 20 s (a
// flag that is ignored starts the full run, which takes minutes: the kill fails the test).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../support/run_tool.hpp"

namespace {

// The built benchmark with `args`, stdout and stderr together in out.
sluice_test::tool_result run_bench(const std::vector<std::string>& args) {
#ifdef SLUICE_JS_BENCH_PATH
  std::string cmd = "timeout -s KILL 20 " + sluice_test::shell_quote(SLUICE_JS_BENCH_PATH);
  for (const auto& a : args) cmd += " " + sluice_test::shell_quote(a);
  return sluice_test::run_shell(cmd + " 2>&1");
#else
  (void)args;
  return {};
#endif
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
    const sluice_test::tool_result r = run_bench(c.args);
    std::string shown;
    for (const auto& a : c.args) shown += " " + a;
    EXPECT_EQ(r.status, 2) << shown << "\n" << r.out;
    EXPECT_NE(r.out.find(c.says), std::string::npos) << shown << "\n" << r.out;
    EXPECT_NE(r.out.find("usage: sluice_bench_jetstream"), std::string::npos) << shown;
    EXPECT_EQ(r.out.find("nats-server -js on"), std::string::npos) << shown << ": started a run";
  }
}

}  // namespace
