// restart{max, within}'s intensity limit (detail/restart_window.hpp), on made-up clocks:
// exact for a few restarts, bounded memory for "restart for ever", and the limit still
// holds where restarts are grouped.
#include "sluice/detail/restart_window.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace {

using sluice::detail::restart_window;
using namespace std::chrono_literals;
using tp = restart_window::time_point;
using dur = restart_window::duration;

const tp t0 = tp{} + 1000h;

TEST(restart_window, max_restarts_inside_within_and_the_next_is_refused_until_the_first_leaves) {
  restart_window w;
  EXPECT_TRUE(w.allow(t0, 3, 5s));
  EXPECT_TRUE(w.allow(t0 + 1s, 3, 5s));
  EXPECT_TRUE(w.allow(t0 + 2s, 3, 5s));
  EXPECT_FALSE(w.allow(t0 + 3s, 3, 5s));  // a fourth inside 5 s: the graph fails
  EXPECT_EQ(w.count(), 3u);               // the refused one is not counted
  EXPECT_FALSE(w.allow(t0 + 5s, 3, 5s));  // the first is exactly 5 s old: still inside
  EXPECT_TRUE(w.allow(t0 + 5s + 1ns, 3, 5s));
  EXPECT_EQ(w.count(), 3u);
}

TEST(restart_window, a_max_of_zero_refuses_the_first_restart) {
  restart_window w;
  EXPECT_FALSE(w.allow(t0, 0, 5s));
  EXPECT_EQ(w.count(), 0u);
}

// "Restart for ever" (max SIZE_MAX, within duration::max()) on a stage failing every
// microsecond: one timestamp per restart grew by 16 bytes a failure for ever.
TEST(restart_window, restart_for_ever_keeps_a_bounded_number_of_runs) {
  restart_window w;
  const std::size_t kRestarts = 1'000'000;
  std::size_t most = 0;
  for (std::size_t i = 0; i < kRestarts; ++i) {
    ASSERT_TRUE(w.allow(t0 + std::chrono::microseconds(i), SIZE_MAX, dur::max())) << i;
    if (w.runs() > most) most = w.runs();
  }
  EXPECT_EQ(w.count(), kRestarts);  // every restart counted
  EXPECT_LE(most, 2 * restart_window::kExact + 2);
}

TEST(restart_window, a_long_window_with_a_huge_max_keeps_a_bounded_number_of_runs) {
  restart_window w;
  std::size_t most = 0;
  for (std::size_t i = 0; i < 500'000; ++i) {
    ASSERT_TRUE(w.allow(t0 + std::chrono::microseconds(3 * i), SIZE_MAX, 1h));
    if (w.runs() > most) most = w.runs();
  }
  EXPECT_EQ(w.count(), 500'000u);
  EXPECT_LE(most, 2 * restart_window::kExact + 2);
}

// Past kExact runs restarts are grouped; the limit still counts each one.
TEST(restart_window, grouped_restarts_still_fail_at_exactly_max_plus_one) {
  restart_window w;
  const std::size_t kMax = 10'000;
  for (std::size_t i = 0; i < kMax; ++i) ASSERT_TRUE(w.allow(t0 + std::chrono::microseconds(i), kMax, 1s)) << i;
  EXPECT_LT(w.runs(), kMax);  // grouped
  EXPECT_FALSE(w.allow(t0 + std::chrono::microseconds(kMax), kMax, 1s));
}

// A steady rate below the limit never fails however long it runs: a group that kept
// taking restarts for as long as they came close together would never leave the window,
// and its count would grow until the limit failed a healthy stage.
TEST(restart_window, a_steady_rate_under_the_limit_runs_for_ever) {
  restart_window w;
  // 10,000 restarts a second (one every 100 us) for 20 s, against max 11,000 in 1 s.
  for (std::uint64_t i = 0; i < 200'000; ++i) {
    ASSERT_TRUE(w.allow(t0 + std::chrono::microseconds(100 * i), 11'000, 1s)) << "restart " << i;
  }
  // What is counted is what the last second (and at most within/kExact more) held.
  EXPECT_GE(w.count(), 10'000u);
  EXPECT_LE(w.count(), 10'000u + 1s / (100us) / restart_window::kExact + 2);
  EXPECT_LE(w.runs(), 2 * restart_window::kExact + 2);
}

// Once the restarts slow down, the window empties: the groups leave with their newest.
TEST(restart_window, grouped_restarts_leave_the_window_a_window_after_their_newest) {
  restart_window w;
  for (std::size_t i = 0; i < 50'000; ++i) ASSERT_TRUE(w.allow(t0 + std::chrono::microseconds(i), SIZE_MAX, 1s));
  const tp last = t0 + std::chrono::microseconds(49'999);
  // Nothing leaves before a window past the last one counted, plus at most within/kExact
  // for the grouping.
  EXPECT_TRUE(w.allow(last + 1s + 1s / restart_window::kExact + 1ns, SIZE_MAX, 1s));
  EXPECT_EQ(w.count(), 1u);
  EXPECT_EQ(w.runs(), 1u);
}

}  // namespace
