// Tests of the pieces a channel is made of, each on its own: the handle counter
// (detail/counter.hpp), the backoff (detail/backoff.hpp), the wait clock
// (detail/wait_clock.hpp) and the low watermark (detail/watermark.hpp). The channel's
// own contract is channel_test.cpp's.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "channel_test_util.hpp"
#include "sluice/detail/backoff.hpp"
#include "sluice/detail/counter.hpp"
#include "sluice/detail/platform.hpp"
#include "sluice/detail/ticks.hpp"
#include "sluice/detail/wait_clock.hpp"
#include "sluice/detail/watermark.hpp"
#include "sluice/detail/waker.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::status;
using sluice::detail::backoff;
using sluice::detail::counter;
using sluice::detail::wait_clock;
using sluice::detail::wait_result;
using sluice::detail::waker;
using sluice::detail::watermark;

// ---- counter ----------------------------------------------------------------------------

TEST(ChannelCounter, the_last_of_each_side_runs_its_hook_once_and_the_last_of_both_frees) {
  counter c;  // one sender, one receiver
  int closed = 0, disconnected = 0;
  EXPECT_TRUE(c.sender_alone());
  EXPECT_TRUE(c.receiver_alone());
  c.add_sender();
  c.add_receiver();
  EXPECT_FALSE(c.sender_alone());
  EXPECT_FALSE(c.receiver_alone());
  EXPECT_FALSE(c.release_sender([&] { ++closed; }));
  EXPECT_EQ(closed, 0);
  EXPECT_TRUE(c.sender_alone());
  EXPECT_FALSE(c.release_sender([&] { ++closed; }));  // the last sender: closes
  EXPECT_EQ(closed, 1);
  EXPECT_FALSE(c.release_receiver([&] { ++disconnected; }));
  EXPECT_EQ(disconnected, 0);
  EXPECT_TRUE(c.receiver_alone());
  EXPECT_TRUE(c.release_receiver([&] { ++disconnected; }));  // the last handle: frees
  EXPECT_EQ(disconnected, 1);
  EXPECT_EQ(closed, 1);
}

TEST(ChannelCounter, receivers_first_is_the_mirror_image) {
  counter c;
  int closed = 0, disconnected = 0;
  EXPECT_FALSE(c.release_receiver([&] { ++disconnected; }));
  EXPECT_EQ(disconnected, 1);
  EXPECT_TRUE(c.release_sender([&] { ++closed; }));
  EXPECT_EQ(closed, 1);
}

// ---- backoff ----------------------------------------------------------------------------

TEST(ChannelBackoff, a_wait_that_a_spin_satisfies_reports_its_pauses_and_nothing_else) {
  waker w;
  backoff spin;
  wait_clock clock;
  int calls = 0;
  auto op = [&] { return ++calls < 5 ? status::full : status::ok; };
  sluice::detail::always_ready ready;
  const wait_result r = sluice::detail::wait_loop(w, op, ready, nullptr, spin, clock, true, false);
  EXPECT_EQ(r.s, status::ok);
  EXPECT_EQ(r.pauses, 5U);  // one re-try after each pause
  EXPECT_FALSE(r.spun_out);
  EXPECT_FALSE(r.parked);
  EXPECT_EQ(spin.rounds(), sluice::detail::kSpinRounds);  // successes go no further
  EXPECT_EQ(clock.blocked_ticks_now(true), 0U);           // wait_loop does not count; block() does
}

// `ready` gates only the spin's re-tries: a wait whose ready() never says yes still ends
// when op() would succeed, at the first re-try after the spin (the yield), not never.
TEST(ChannelBackoff, ready_gates_only_the_spin_and_the_yield_re_tries_regardless) {
  waker w;
  backoff spin;
  wait_clock clock;
  int calls = 0;
  int asked = 0;
  auto op = [&] { return ++calls == 1 ? status::full : status::ok; };
  auto never = [&] {
    ++asked;
    return false;
  };
  ASSERT_EQ(op(), status::full);  // the caller's first try (block() makes it)
  const wait_result r = sluice::detail::wait_loop(w, op, never, nullptr, spin, clock, true, false);
  EXPECT_EQ(r.s, status::ok);
  EXPECT_TRUE(r.spun_out);   // the spin ran out: ready() held every re-try back
  EXPECT_FALSE(r.parked);    // the first yield's re-try succeeded
  EXPECT_EQ(calls, 2);       // op() ran once in the wait, after the spin
  EXPECT_EQ(static_cast<std::uint64_t>(asked), r.pauses);  // asked after every pause
  // And a ready() that says yes lets the spin re-try at once.
  calls = 0;
  ASSERT_EQ(op(), status::full);
  sluice::detail::always_ready yes;
  const wait_result r2 = sluice::detail::wait_loop(w, op, yes, nullptr, spin, clock, true, false);
  EXPECT_EQ(r2.s, status::ok);
  EXPECT_FALSE(r2.spun_out);
  EXPECT_EQ(r2.pauses, 1U);
}

TEST(ChannelBackoff, a_wait_past_its_deadline_spins_out_and_reports_timeout) {
  sluice_test::watchdog dog(channel_test::kTestLimit);
  waker w;
  backoff spin;
  wait_clock clock;
  const auto deadline = std::chrono::steady_clock::now() + 2ms;
  const status s = sluice::detail::block(w, [] { return status::full; }, sluice::detail::always_ready{}, &deadline,
                                         spin, clock, true, false,
                                         [] { return true; });
  EXPECT_EQ(s, status::timeout);
  EXPECT_GE(std::chrono::steady_clock::now(), deadline);
  EXPECT_GT(clock.blocked_ticks_now(true), 0U);  // the whole wait was counted
  EXPECT_EQ(clock.blocked_ticks_now(false), 0U);
}

// A timed wait looks at its deadline at every spin round's end: one already past ends
// after the first round (1 pause), not the whole spin (pop_for(0) on an empty channel
// spun ~7 us); one within kParkEarly of its deadline never parks, but yields until the
// deadline (a futex timeout ended 50-110 us late: pop_until(now + 100us) returned after
// ~240 us); a far one parks, and still ends only once its deadline has passed.
TEST(ChannelBackoff, a_timed_wait_ends_at_its_deadline_not_after_its_spin_or_a_late_futex) {
  sluice_test::watchdog dog(channel_test::kTestLimit);
  using clk = std::chrono::steady_clock;
  waker w;
  backoff spin;
  wait_clock clock;
  auto full = [] { return status::full; };
  sluice::detail::always_ready ready;
  const auto past = clk::now() - 1ms;
  const wait_result r = sluice::detail::wait_loop(w, full, ready, &past, spin, clock, true, false);
  EXPECT_EQ(r.s, status::timeout);
  EXPECT_EQ(r.pauses, 1U);
  EXPECT_FALSE(r.spun_out);
  const auto near = clk::now() + sluice::detail::kParkEarly / 2;
  const wait_result r2 = sluice::detail::wait_loop(w, full, ready, &near, spin, clock, true, false);
  EXPECT_EQ(r2.s, status::timeout);
  EXPECT_FALSE(r2.parked);
  EXPECT_GE(clk::now(), near);
  // Far enough that a thread off the CPU for a while (a loaded machine, ASan) still has
  // its deadline ahead when its spin ends: at 20 ms the spin once ended within kParkEarly.
  const auto far = clk::now() + 300ms;
  const wait_result r3 = sluice::detail::wait_loop(w, full, ready, &far, spin, clock, true, false);
  EXPECT_EQ(r3.s, status::timeout);
  EXPECT_TRUE(r3.parked);
  EXPECT_GE(clk::now(), far);
  EXPECT_EQ(w.waiters(), 0U);
}

TEST(ChannelBackoff, short_parks_lengthen_the_spin_by_what_they_slept_and_long_ones_shorten_it_within_bounds) {
  using namespace std::chrono_literals;
  backoff spin;
  const int start = sluice::detail::kSpinRounds, shortest = sluice::detail::kMinSpinRounds;
  const int longest = sluice::detail::kMaxSpinRounds;
  // A spin round past the sixth is 64 pauses; what one costs here, as the backoff counts it.
  const std::int64_t round_ns =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(sluice::detail::ticks_to_ns(sluice::detail::ticks_per_64_pauses())));
  auto grown = [&](int from, std::chrono::nanoseconds slept) {
    return static_cast<int>(std::min<std::int64_t>(longest, from + slept.count() / round_ns + 1));
  };
  EXPECT_EQ(spin.rounds(), start);
  // Long parks shorten it a round at a time under the start budget, down to the shortest.
  for (int i = 0; i < 2 * longest; ++i) spin.parked_for(1ms);
  EXPECT_EQ(spin.rounds(), shortest);
  spin.parked_for(sluice::detail::kLongWait + 1us);
  EXPECT_EQ(spin.rounds(), shortest);
  // A park that ended within kLongWait adds as many 64-pause rounds as it slept, and one:
  // a side fed an item every 100 us learns to spin across the gap.
  spin.parked_for(1us);
  EXPECT_EQ(spin.rounds(), grown(shortest, 1us));
  const int before = spin.rounds();
  spin.parked_for(100us);
  EXPECT_EQ(spin.rounds(), grown(before, 100us));
  EXPECT_GT(spin.rounds(), before);
  // Up to the longest, no further.
  for (int i = 0; i < 2 * longest; ++i) spin.parked_for(sluice::detail::kLongWait);
  EXPECT_EQ(spin.rounds(), longest);
  spin.spin_was_enough(spin.rounds());
  EXPECT_EQ(spin.rounds(), longest);  // a success does not shorten it
  // A long park halves the part past the start budget, so an idle side soon stops spinning.
  spin.parked_for(1ms);
  EXPECT_EQ(spin.rounds(), longest - (longest - start) / 2);
  for (int i = 0; i < 8 && spin.rounds() > start; ++i) spin.parked_for(1ms);
  EXPECT_EQ(spin.rounds(), start) << "eight long parks did not bring the spin back to its start budget";
  // Spins that succeed lengthen it up to the start budget, no further.
  for (int i = 0; i < 2 * longest; ++i) spin.parked_for(1ms);
  EXPECT_EQ(spin.rounds(), shortest);
  spin.spin_was_enough(spin.rounds());
  EXPECT_EQ(spin.rounds(), shortest + 1);
  for (int i = 0; i < 2 * longest; ++i) spin.spin_was_enough(spin.rounds());
  EXPECT_EQ(spin.rounds(), start);
}

// Twice as many busy threads as CPUs, and one more, for as long as it lives.
class crowded_cores {
 public:
  crowded_cores() {
    const unsigned cpus = std::max(1U, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < 2 * cpus + 1; ++i) {
      busy_.emplace_back([this] {
        while (!stop_.load(std::memory_order_relaxed)) sluice::detail::spin_pause();
      });
    }
  }
  crowded_cores(const crowded_cores&) = delete;
  crowded_cores& operator=(const crowded_cores&) = delete;
  ~crowded_cores() {
    stop_ = true;
    for (auto& t : busy_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> busy_;
};

TEST(ChannelBackoff, the_long_spin_sees_more_runnable_threads_than_cores) {
  // Rounds past kSpinRounds run only while runnable_exceeds_cpus() is false. With twice
  // as many busy threads as CPUs it must say so (it may say so earlier: other load).
  sluice_test::watchdog dog(channel_test::kTestLimit);
  bool seen = false;
  {
    crowded_cores crowd;
    seen = sluice_test::eventually([] { return sluice::detail::runnable_exceeds_cpus(); });
  }
  EXPECT_TRUE(seen);
}

// Crowded (more threads runnable than cores), a spin whose other side stands still ends
// at the first look that finds it unchanged; one whose other side moves, or whose
// progress cannot be read, runs its whole budget.
TEST(ChannelBackoff, a_crowded_spin_ends_early_when_the_other_side_stands_still) {
  sluice_test::watchdog dog(channel_test::kTestLimit);
  crowded_cores crowd;
  ASSERT_TRUE(sluice_test::eventually([] { return sluice::detail::runnable_exceeds_cpus(); }));
  // ready() never says yes, so op() first runs after the spin (at the first yield) and ends
  // the wait there: the pauses made are the spin's whole length.
  auto wait_with = [](auto peer) {
    waker w;
    backoff spin;
    wait_clock clock;
    auto op = [calls = 0]() mutable { return ++calls == 1 ? status::ok : status::full; };
    auto never = [] { return false; };
    return sluice::detail::wait_loop(w, op, never, nullptr, spin, clock, true, false, peer);
  };
  std::uint64_t whole = 0;  // the start budget's pauses: rounds k < kSpinRounds, 2^min(k,6) each
  for (int k = 0; k < sluice::detail::kSpinRounds; ++k) whole += std::uint64_t{1} << std::min(k, 6);
  int looks = 0;
  const wait_result still = wait_with([&looks] {
    ++looks;
    return std::uint64_t{7};
  });
  EXPECT_TRUE(still.stalled);
  EXPECT_EQ(still.s, status::ok);
  // First look after kStallPauses (rounds 0-4), the next at the end of round 5: unchanged.
  EXPECT_EQ(still.pauses, 2 * sluice::detail::kStallPauses + 1);
  EXPECT_EQ(looks, 2);
  const wait_result moving = wait_with([n = std::uint64_t{0}]() mutable { return n++; });
  EXPECT_FALSE(moving.stalled);
  EXPECT_EQ(moving.pauses, whole);
  const wait_result unknown = wait_with(sluice::detail::no_peer{});
  EXPECT_FALSE(unknown.stalled);
  EXPECT_EQ(unknown.pauses, whole);
}

// ---- wait clock -------------------------------------------------------------------------

TEST(ChannelWaitClock, finished_waits_add_up_and_a_wait_in_progress_counts_while_it_lasts) {
  wait_clock clock;
  clock.add_spin(100, true);
  clock.add_spin(50, false);
  EXPECT_EQ(clock.blocked_ticks_now(true), 150U);
  const std::uint64_t t0 = sluice::detail::ticks();
  clock.begin_slow(t0);
  // The open wait's elapsed part is counted: the total grows while it lasts.
  EXPECT_TRUE(sluice_test::eventually([&] { return clock.blocked_ticks_now(true) > 150U; }));
  const std::uint64_t during = clock.blocked_ticks_now(true);
  clock.end_slow(t0, 1000, true);
  EXPECT_EQ(clock.blocked_ticks_now(true), 1150U);  // the wait's own figure replaces it
  EXPECT_GE(during, 150U);
  const std::uint64_t t1 = sluice::detail::ticks();
  clock.begin_slow(t1);
  clock.end_slow(t1, 1000, false);  // timing off: not added
  EXPECT_EQ(clock.blocked_ticks_now(true), 1150U);
  EXPECT_EQ(clock.blocked_ticks_now(false), 0U);  // and not reported
}

// ---- watermark --------------------------------------------------------------------------

TEST(ChannelWatermark, a_callback_runs_at_once_or_once_when_a_pop_reaches_the_level) {
  watermark wm(2);
  std::size_t occupancy = 1;
  int ran = 0;
  wm.add([&] { ++ran; }, false, [&] { return occupancy <= wm.level(); });
  EXPECT_EQ(ran, 1);  // at or below the level: at once
  occupancy = 5;
  wm.add([&] { ++ran; }, false, [&] { return occupancy <= wm.level(); });
  EXPECT_EQ(ran, 1);  // registered
  occupancy = 3;
  wm.after_pop([&] { return occupancy; });
  EXPECT_EQ(ran, 1);  // still above
  occupancy = 2;
  wm.after_pop([&] { return occupancy; });
  EXPECT_EQ(ran, 2);  // reached: once
  occupancy = 1;
  wm.after_pop([&] { return occupancy; });
  EXPECT_EQ(ran, 2);
  occupancy = 9;
  wm.add([&] { ++ran; }, false, [&] { return occupancy <= wm.level(); });
  wm.wake_all();  // closing runs what is registered
  EXPECT_EQ(ran, 3);
  wm.wake_all();
  EXPECT_EQ(ran, 3);
}

TEST(ChannelWatermark, a_throwing_callback_does_not_stop_the_others) {
  watermark wm(0);
  int ran = 0;
  wm.add([] { throw 1; }, false, [] { return false; });
  wm.add([&] { ++ran; }, false, [] { return false; });
  wm.after_pop([] { return std::size_t{0}; });
  EXPECT_EQ(ran, 1);
}

}  // namespace
