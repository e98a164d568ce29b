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
