// What sluice learns about the machine (detail/platform.hpp) and the per-channel timing
// switch (channel_options::timing): decided on first use, the same for everyone after,
// never read from the environment.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "sluice/channel.hpp"
#include "sluice/detail/platform.hpp"
#include "sluice/detail/ticks.hpp"

namespace {

using namespace std::chrono_literals;

TEST(Platform, FenceModeIsDecidedOnceAndAgreedByEveryThread) {
  using sluice::detail::fence_mode;
  const fence_mode first = sluice::detail::decide_fence_mode();
  ASSERT_NE(first, fence_mode::kUnknown);
  EXPECT_EQ(sluice::detail::current_fence_mode(), first);
  fence_mode seen[4]{};
  {
    std::jthread t[4];
    for (int i = 0; i < 4; ++i) t[i] = std::jthread([&seen, i] { seen[i] = sluice::detail::decide_fence_mode(); });
  }
  for (fence_mode m : seen) EXPECT_EQ(m, first);
}

TEST(Platform, ClockFactsAreStable) {
  const bool tsc = sluice::detail::ticks_use_tsc();
  EXPECT_EQ(sluice::detail::ticks_use_tsc(), tsc);
  EXPECT_GT(sluice::detail::ns_per_tick(), 0.0);
  EXPECT_EQ(sluice::detail::ticks_per_64_pauses(), sluice::detail::ticks_per_64_pauses());
  const std::uint64_t a = sluice::detail::ticks();
  const std::uint64_t b = sluice::detail::ticks();
  EXPECT_LE(a, b);
}

// The calibration's reading of ticks and steady_clock together keeps the narrowest of its
// bracketed pairs: a pair with a preemption between its reads (here 5000 ticks wide) would
// put the whole preemption into ns_per_tick() for the life of the process.
TEST(Platform, TheClockCalibrationKeepsTheNarrowestPairOfReadings) {
  // Each try reads ticks, then the clock, then ticks again.
  const std::uint64_t ticks[] = {100, 5100, 6000, 6040, 7000, 7400, 9000, 8000};
  const std::int64_t ns[] = {1'000, 2'000, 3'000, 4'000};
  int ti = 0, ni = 0;
  auto read_ticks = [&] { return ticks[ti++]; };
  auto read_ns = [&] { return ns[ni++]; };
  const sluice::detail::tick_pair p = sluice::detail::tightest_tick_pair(read_ticks, read_ns, 4);
  EXPECT_EQ(ti, 8);
  EXPECT_EQ(p.spread, 40u);
  EXPECT_EQ(p.ticks, 6020u) << "the midpoint of the narrow pair";
  EXPECT_EQ(p.ns, 2'000) << "its clock reading";

  // A pair that runs backwards (ticks read on two cores) is never chosen; when none runs
  // forwards, one more plain reading is the answer.
  const std::uint64_t back[] = {500, 400, 700, 600, 900};
  ti = 0, ni = 0;
  auto read_back = [&] { return back[ti++]; };
  const sluice::detail::tick_pair q = sluice::detail::tightest_tick_pair(read_back, read_ns, 2);
  EXPECT_EQ(q.ticks, 900u);
  EXPECT_EQ(q.ns, 3'000);
}

// A wait that parks is timed by default; channel_options::timing = false leaves the
// counters at 0. pop_for bounds the wait, so no sleep synchronises anything here.
TEST(Platform, ChannelTimingIsAnOptionNotAnEnvironmentVariable) {
  // Before this change an inherited SLUICE_CHANNEL_TIMING=off zeroed every counter; now the
  // environment is never read.
  ::setenv("SLUICE_CHANNEL_TIMING", "off", 1);
  {
    auto [tx, rx] = sluice::bounded<int>(4);
    EXPECT_FALSE(rx.pop_for(30ms).has_value());
    EXPECT_GE(rx.stats().blocked_pop_ns, 20'000'000u) << "a 30 ms wait on an empty channel is timed";
  }
  {
    auto [tx, rx] = sluice::bounded<int>({.capacity = 4, .timing = false});
    EXPECT_FALSE(rx.pop_for(30ms).has_value());
    EXPECT_EQ(rx.stats().blocked_pop_ns, 0u);
    ASSERT_TRUE(tx.push(1));
    EXPECT_EQ(rx.pop(), 1) << "an untimed channel works the same";
  }
  ::unsetenv("SLUICE_CHANNEL_TIMING");
}

}  // namespace
