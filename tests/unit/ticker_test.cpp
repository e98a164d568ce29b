// detail::ticker (sluice/detail/ticker.hpp): the one periodic thread. Ticks repeat until
// stopped, stop() is prompt and final, false or a throw ends the ticking, the thread
// carries its name, a moved-from or overwritten ticker leaves no thread behind.
#include "sluice/detail/ticker.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>

#include "support/graph_support.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::detail::ticker;
using sluice_test::eventually;

// Counts ticks and lets the test wait for the n-th (bounded).
struct tick_counter {
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;  // guarded by mu

  void tick() {
    {
      std::lock_guard lk(mu);
      ++n;
    }
    cv.notify_all();
  }
  bool wait_for_at_least(int k) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, sluice_test::kPromptly * sluice_test::kTimeoutScale, [&] { return n >= k; });
  }
  int count() {
    std::lock_guard lk(mu);
    return n;
  }
};

bool thread_named(const std::string& name) {
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream f(e.path() / "comm");
    std::string comm;
    std::getline(f, comm);
    if (comm == name) return true;
  }
  return false;
}

TEST(ticker, ticks_repeatedly_until_stopped_and_never_after) {
  tick_counter c;
  ticker t(1ms, [&] {
    c.tick();
    return true;
  });
  EXPECT_TRUE(t.running());
  ASSERT_TRUE(c.wait_for_at_least(3));
  t.stop();
  EXPECT_FALSE(t.running());
  const int after = c.count();
  EXPECT_GE(after, 3);
  EXPECT_EQ(t.ticks(), static_cast<std::uint64_t>(after));
  t.stop();  // idempotent
  EXPECT_EQ(c.count(), after);
}

TEST(ticker, stop_is_prompt_long_before_the_interval) {
  std::atomic<int> calls{0};
  sluice_test::watchdog dog(10s, "stop() of a ticker with a one-hour interval");
  const auto t0 = std::chrono::steady_clock::now();
  ticker t(std::chrono::hours(1), [&] {
    calls.fetch_add(1);
    return true;
  });
  t.stop();  // a sleep loop would sit out the hour; the condition variable wakes now
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s * sluice_test::kTimeoutScale);
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(t.ticks(), 0U);
  EXPECT_FALSE(t.running());
}

TEST(ticker, the_first_tick_is_one_interval_after_the_start) {
  std::atomic<std::int64_t> first_ns{-1};
  const auto t0 = std::chrono::steady_clock::now();
  ticker t(50ms, [&] {
    if (first_ns.load() < 0) first_ns = (std::chrono::steady_clock::now() - t0).count();
    return false;
  });
  ASSERT_TRUE(eventually([&] { return !t.running(); }));
  EXPECT_GE(std::chrono::nanoseconds(first_ns.load()), 50ms);
}

TEST(ticker, returning_false_ends_the_ticking) {
  tick_counter c;
  ticker t(1ms, [&] {
    c.tick();
    return c.count() < 2;
  });
  ASSERT_TRUE(c.wait_for_at_least(2));
  ASSERT_TRUE(eventually([&] { return !t.running(); }));
  EXPECT_EQ(c.count(), 2);
  EXPECT_EQ(t.ticks(), 2U);
}

TEST(ticker, a_throwing_tick_ends_the_ticking_uncounted) {
  tick_counter c;
  ticker t(1ms, [&]() -> bool {
    c.tick();
    throw std::runtime_error("tick failed");
  });
  ASSERT_TRUE(c.wait_for_at_least(1));
  ASSERT_TRUE(eventually([&] { return !t.running(); }));
  EXPECT_EQ(t.ticks(), 0U);
  EXPECT_EQ(c.count(), 1);
}

TEST(ticker, the_thread_carries_its_name) {
  ticker t(std::chrono::hours(1), [] { return true; }, "tick-name-test");
  EXPECT_TRUE(eventually([] { return thread_named("tick-name-test"); }));
  ticker longer(std::chrono::hours(1), [] { return true; }, "a-name-longer-than-fifteen");
  EXPECT_TRUE(eventually([] { return thread_named("a-name-longer-t"); }));  // the OS keeps 15
  t.stop();
  longer.stop();
  EXPECT_FALSE(thread_named("tick-name-test"));
}

TEST(ticker, move_and_overwrite_leave_no_thread_behind) {
  // The watchdog's thread comes first, as in the graph tests: a sanitizer starts a thread
  // of its own at the process's first thread creation, and it must be in `before`.
  sluice_test::watchdog dog(std::chrono::seconds(20));
  const std::size_t before = sluice_test::thread_count();
  {
    tick_counter c;
    ticker a = sluice::detail::tick_every(1ms, [&] { c.tick(); });
    ticker b = std::move(a);
    EXPECT_FALSE(a.running());  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_TRUE(b.running());
    ASSERT_TRUE(c.wait_for_at_least(2));
    b = ticker(std::chrono::hours(1), [] { return true; });  // stops and joins the first
    const int after = c.count();
    EXPECT_EQ(c.count(), after);
    ticker empty;
    EXPECT_FALSE(empty.running());
    empty.stop();
  }
  EXPECT_TRUE(eventually([&] { return sluice_test::thread_count() == before; }));
}

}  // namespace
