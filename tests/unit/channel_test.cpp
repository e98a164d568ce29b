// Deterministic tests of sluice's bounded channel (DESIGN.md §1, one test or more per
// bullet). Blocked states are made with threads and observed by polling
// stats().waiting_push / waiting_pop with a bounded wait; every threaded test runs
// under a watchdog, so a lost wake-up fails the run instead of hanging it.
//
// Most tests are typed over three flavours, because the channel has three code paths:
//   ring      nothrow-movable, unweighted items: the lock-free ring (detail/ring_flavour.hpp)
//   locked    items whose move may throw: the mutex-guarded queue (detail/locked_flavour.hpp)
//   weighted  a weigh function (here 1 per item): the locked flavour with weights
// What only one flavour has is tested next to it: channel_ring_test.cpp (slots, the
// lone-side path), channel_locked_test.cpp (weights, throwing moves); the pieces every
// channel is made of (counter, backoff, wait clock, watermark) in channel_parts_test.cpp.
// The fixture checks after every test that each item made during it was destroyed
// exactly once.
#include "sluice/channel.hpp"
#include "sluice/graph.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "channel_test_util.hpp"
#include "support/tracked.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using namespace channel_test;
using sluice::status;
using sluice_test::eventually;
using sluice_test::throwing_tracked;
using sluice_test::tracked;
using sluice_test::tracked_move_error;
using sluice_test::watchdog;

// ---- flavours -------------------------------------------------------------------

struct ring_flavour {
  using item = tracked;
  static constexpr const char* kName = "ring";
  static sluice::channel_options<item> options(std::size_t cap) {
    sluice::channel_options<item> o;
    o.capacity = cap;
    return o;
  }
};
struct locked_flavour {
  using item = throwing_tracked;
  static constexpr const char* kName = "locked";
  static sluice::channel_options<item> options(std::size_t cap) {
    sluice::channel_options<item> o;
    o.capacity = cap;
    return o;
  }
};
struct weighted_flavour {
  using item = tracked;
  static constexpr const char* kName = "weighted";
  static sluice::channel_options<item> options(std::size_t cap) {
    sluice::channel_options<item> o;
    o.capacity = cap;
    o.weigh = [](const item&) -> std::size_t { return 1; };
    return o;
  }
};

struct flavour_names {
  template <class F>
  static std::string GetName(int) {
    return F::kName;
  }
};

template <class Flavour>
class Channel : public ::testing::Test {
 protected:
  using item = typename Flavour::item;

  void SetUp() override {
    dog_.emplace(kTestLimit);  // every typed test; destroyed after the body's threads join
    before_ = item::counters().snapshot();
    bad_before_ = item::counters().bad_destroys();
  }
  void TearDown() override {
    EXPECT_EQ(item::counters().live_since(before_), 0) << "an item leaked or was destroyed twice";
    EXPECT_EQ(item::counters().bad_destroys(), bad_before_) << "an item was destroyed twice";
    dog_.reset();
  }

  static auto make(std::size_t cap) { return sluice::bounded<item>(Flavour::options(cap)); }
  static auto make(sluice::channel_options<item> o) { return sluice::bounded<item>(std::move(o)); }
  static sluice::channel_options<item> options(std::size_t cap) { return Flavour::options(cap); }

  // Fills the channel with values from..to-1 using try_push (each must be ok).
  static void fill(sluice::sender<item>& tx, std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t i = from; i < to; ++i) ASSERT_EQ(tx.try_push(item(i)), status::ok) << i;
  }
  static std::vector<std::uint64_t> drain(sluice::receiver<item>& rx) {
    std::vector<std::uint64_t> out;
    while (auto v = rx.try_pop()) out.push_back(v->value());
    return out;
  }

 private:
  std::optional<watchdog> dog_;
  sluice_test::lifetime_snapshot before_;
  std::int64_t bad_before_ = 0;
};

using flavours = ::testing::Types<ring_flavour, locked_flavour, weighted_flavour>;
TYPED_TEST_SUITE(Channel, flavours, flavour_names);

// ---- smoke, capacity, len ---------------------------------------------------------

TYPED_TEST(Channel, smoke) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(4);
  EXPECT_TRUE(tx.push(T(7)));
  const std::optional<T> v = rx.pop();
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->value(), 7u);
  EXPECT_FALSE(rx.try_pop().has_value());
}

TYPED_TEST(Channel, capacity) {
  using T = typename TypeParam::item;
  for (const std::size_t cap : {1u, 2u, 3u, 7u, 8u}) {
    SCOPED_TRACE(cap);
    auto [tx, rx] = this->make(cap);
    EXPECT_EQ(tx.capacity(), cap);
    EXPECT_EQ(rx.capacity(), cap);
    EXPECT_EQ(tx.stats().capacity, cap);
    // Several laps round the buffer (non-power-of-two sizes wrap with %), FIFO each time.
    for (std::uint64_t lap = 0; lap < 5; ++lap) {
      this->fill(tx, lap * 100, lap * 100 + cap);
      T extra(999);
      EXPECT_EQ(tx.try_push(std::move(extra)), status::full);
      EXPECT_EQ(this->drain(rx), iota_values(lap * 100, lap * 100 + cap));
    }
  }
}

TYPED_TEST(Channel, len_empty_full) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(3);
  EXPECT_EQ(rx.stats().size, 0u);
  EXPECT_FALSE(rx.try_pop().has_value());
  EXPECT_FALSE(rx.done());  // empty is not done: the channel is open
  for (std::size_t i = 1; i <= 3; ++i) {
    ASSERT_EQ(tx.try_push(T(i)), status::ok);
    EXPECT_EQ(tx.stats().size, i);
  }
  EXPECT_EQ(tx.try_push(T(4)), status::full);
  for (std::size_t i = 3; i >= 1; --i) {
    ASSERT_TRUE(rx.try_pop().has_value());
    EXPECT_EQ(rx.stats().size, i - 1);
  }
  EXPECT_FALSE(rx.try_pop().has_value());
  const sluice::channel_stats s = rx.stats();
  EXPECT_EQ(s.pushed, 3u);
  EXPECT_EQ(s.popped, 3u);
  EXPECT_EQ(s.discarded, 0u);
}

// ---- try and timed operations -----------------------------------------------------

TYPED_TEST(Channel, try_ops_leave_the_value_untouched_unless_ok) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  T a(1);
  ASSERT_EQ(tx.try_push(std::move(a)), status::ok);
  T b(2);
  EXPECT_EQ(tx.try_push(std::move(b)), status::full);
  EXPECT_FALSE(b.moved_from());
  EXPECT_EQ(b.value(), 2u);
  const T c(3);
  EXPECT_EQ(tx.try_push(c), status::full);  // const T& overload
  EXPECT_EQ(rx.try_pop()->value(), 1u);
  EXPECT_EQ(tx.try_push(c), status::ok);
  EXPECT_FALSE(c.moved_from());  // a const& push copies
  EXPECT_EQ(rx.try_pop()->value(), 3u);
  EXPECT_FALSE(rx.try_pop().has_value());
}

TYPED_TEST(Channel, timed_ops_time_out) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  constexpr auto kWait = 20ms;

  // pop_for / pop_until on an empty channel: nullopt, not before the deadline.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(rx.pop_for(kWait).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, kWait);
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(rx.pop_until(t0 + kWait).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, kWait);
  EXPECT_FALSE(rx.done());

  ASSERT_EQ(tx.try_push(T(1)), status::ok);  // now full

  T v(2);
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(tx.push_for(std::move(v), kWait), status::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, kWait);
  EXPECT_FALSE(v.moved_from());
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(tx.push_until(std::move(v), t0 + kWait), status::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, kWait);
  EXPECT_FALSE(v.moved_from());
  const T cv(3);
  EXPECT_EQ(tx.push_for(cv, 1ms), status::timeout);
  EXPECT_EQ(tx.push_until(cv, std::chrono::steady_clock::now() + 1ms), status::timeout);
  // Any duration that converts is accepted; zero and negative ones do not wait.
  EXPECT_EQ(tx.push_for(std::move(v), std::chrono::duration<double>(0.001)), status::timeout);
  EXPECT_EQ(tx.push_for(std::move(v), 0s), status::timeout);
  EXPECT_EQ(tx.push_for(std::move(v), -5s), status::timeout);
  EXPECT_EQ(tx.push_until(std::move(v), std::chrono::steady_clock::now() - 1s), status::timeout);
  EXPECT_FALSE(v.moved_from());

  // With room / an item they succeed.
  EXPECT_EQ(rx.pop_for(0s)->value(), 1u);
  EXPECT_EQ(tx.push_for(std::move(v), 1h), status::ok);
  EXPECT_EQ(rx.pop_for(1h)->value(), 2u);
  EXPECT_EQ(tx.push_for(cv, 1h), status::ok);
  EXPECT_EQ(rx.pop_until(std::chrono::steady_clock::now() + 1h)->value(), 3u);
  expect_conserved(tx);
}

TYPED_TEST(Channel, timed_ops_are_woken_before_their_deadline) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  ASSERT_EQ(tx.try_push(T(1)), status::ok);
  status pushed = status::full;
  {
    std::jthread pusher([&, tx2 = tx]() mutable { pushed = tx2.push_for(T(2), 1h); });
    ASSERT_TRUE(parked_pushers(tx, 1));
    EXPECT_EQ(rx.pop()->value(), 1u);
  }
  EXPECT_EQ(pushed, status::ok);
  std::optional<T> got;
  {
    std::jthread popper([&, rx2 = rx]() mutable {
      (void)rx2.pop();  // takes item 2
      got = rx2.pop_for(1h);
    });
    ASSERT_TRUE(parked_poppers(rx, 1));
    ASSERT_EQ(tx.try_push(T(3)), status::ok);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->value(), 3u);
}

// ---- close --------------------------------------------------------------------------

TYPED_TEST(Channel, push_after_close) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(4);
  tx.close();
  EXPECT_TRUE(tx.is_closed());
  EXPECT_FALSE(tx.cancelled());
  EXPECT_FALSE(tx.push(T(1)));
  T v(2);
  EXPECT_EQ(tx.try_push(std::move(v)), status::closed);
  EXPECT_EQ(tx.push_for(std::move(v), 1h), status::closed);  // at once, not at the deadline
  EXPECT_EQ(tx.push_until(std::move(v), std::chrono::steady_clock::now() + 1h), status::closed);
  EXPECT_FALSE(v.moved_from());
  std::vector<T> batch;
  batch.emplace_back(3);
  EXPECT_EQ(tx.push_all(std::move(batch)), 0u);
  EXPECT_FALSE(rx.pop().has_value());
  EXPECT_TRUE(rx.done());
  EXPECT_EQ(tx.stats().pushed, 0u);
}

// DESIGN §1: a push that fails leaves its item with the caller; an rvalue is moved from
// only when it went in. push(T&&) used to take its item by value, so a failed push had
// already moved it into its parameter and dropped it.
TYPED_TEST(Channel, a_failed_push_leaves_the_item_with_the_caller) {
  using T = typename TypeParam::item;
  {
    auto [tx, rx] = this->make(4);
    tx.close();
    T v(1);
    EXPECT_FALSE(tx.push(std::move(v)));  // closed
    EXPECT_FALSE(v.moved_from());
    EXPECT_EQ(v.value(), 1u);
    const T c(2);
    EXPECT_FALSE(tx.push(c));
    EXPECT_EQ(tx.push_for(c, 1h), status::closed);
    EXPECT_FALSE(c.moved_from());
  }
  {
    auto [tx, rx] = this->make(4);
    rx.reset();  // disconnected
    T v(3);
    EXPECT_FALSE(tx.push(std::move(v)));
    EXPECT_FALSE(v.moved_from());
    EXPECT_EQ(v.value(), 3u);
  }
  {
    auto [tx, rx] = this->make(1);
    this->fill(tx, 0, 1);
    T v(4);
    EXPECT_EQ(tx.push_for(std::move(v), 1ms), status::timeout);
    EXPECT_EQ(tx.push_until(std::move(v), std::chrono::steady_clock::now() + 1ms), status::timeout);
    EXPECT_FALSE(v.moved_from());
    EXPECT_EQ(v.value(), 4u);
    // A push that blocked, then failed because the channel was cancelled meanwhile: the
    // item is still the pusher's, whole, to hand elsewhere.
    bool pushed = true;
    bool kept = false;
    {
      std::jthread pusher([&, s = tx]() mutable {
        T mine(5);
        pushed = s.push(std::move(mine));
        kept = !mine.moved_from() && mine.value() == 5u;
      });
      ASSERT_TRUE(parked_pushers(tx, 1));
      rx.cancel();
    }
    EXPECT_FALSE(pushed);
    EXPECT_TRUE(kept) << "a failed blocking push moved from its item";
    expect_conserved(tx);
  }
  {
    // And a push that succeeds still moves from its rvalue (no copy).
    auto [tx, rx] = this->make(2);
    T v(6);
    EXPECT_TRUE(tx.push(std::move(v)));
    EXPECT_TRUE(v.moved_from());
    EXPECT_EQ(rx.pop()->value(), 6u);
  }
}

TYPED_TEST(Channel, pop_after_close_drains_then_ends) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(4);
  this->fill(tx, 0, 3);
  tx.close();
  EXPECT_FALSE(rx.done());  // closed but not drained
  EXPECT_EQ(rx.pop()->value(), 0u);
  EXPECT_EQ(rx.try_pop()->value(), 1u);
  EXPECT_EQ(rx.pop_for(1h)->value(), 2u);
  EXPECT_TRUE(rx.done());
  EXPECT_FALSE(rx.pop().has_value());
  EXPECT_FALSE(rx.try_pop().has_value());
  EXPECT_FALSE(rx.pop_for(1h).has_value());  // at once
  std::vector<T> out;
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 8), 0u);
  EXPECT_FALSE(rx.cancelled());
  expect_conserved(rx);
}

TYPED_TEST(Channel, close_wakes_sender) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  ASSERT_EQ(tx.try_push(T(1)), status::ok);
  bool pushed = true;
  status timed = status::ok;
  std::size_t bulk = 99;
  {
    std::jthread a([&, s = tx]() mutable { pushed = s.push(T(2)); });
    std::jthread b([&, s = tx]() mutable { timed = s.push_for(T(3), 1h); });
    std::jthread c([&, s = tx]() mutable {
      std::vector<T> batch;
      batch.emplace_back(4);
      batch.emplace_back(5);
      bulk = s.push_all(std::move(batch));
    });
    ASSERT_TRUE(parked_pushers(tx, 3));
    tx.close();
  }
  EXPECT_FALSE(pushed);
  EXPECT_EQ(timed, status::closed);
  EXPECT_EQ(bulk, 0u);
  EXPECT_EQ(rx.pop()->value(), 1u);  // what was buffered is still delivered
  EXPECT_FALSE(rx.pop().has_value());
  expect_conserved(rx);
}

TYPED_TEST(Channel, close_wakes_receiver) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(2);
  std::optional<T> a = T(1), b = T(1);
  std::size_t some = 99;
  std::size_t looped = 99;
  {
    std::jthread ta([&, r = rx]() mutable { a = r.pop(); });
    std::jthread tb([&, r = rx]() mutable { b = r.pop_for(1h); });
    std::jthread tc([&, r = rx]() mutable {
      std::vector<T> out;
      some = r.pop_some(std::back_inserter(out), 4);
    });
    std::jthread td([&, r = rx]() mutable {
      looped = 0;
      for (T& v : r) {
        (void)v;
        ++looped;
      }
    });
    ASSERT_TRUE(parked_poppers(rx, 4));
    tx.close();
  }
  EXPECT_FALSE(a.has_value());
  EXPECT_FALSE(b.has_value());
  EXPECT_EQ(some, 0u);
  EXPECT_EQ(looped, 0u);
  EXPECT_TRUE(rx.done());
}

TYPED_TEST(Channel, last_sender_gone_closes) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(4);
  sluice::sender<T> copy = tx;
  ASSERT_EQ(copy.try_push(T(1)), status::ok);
  tx.reset();
  EXPECT_FALSE(copy.is_closed());  // one sender is left
  EXPECT_FALSE(rx.done());
  std::optional<T> first, second = T(0);
  {
    std::jthread popper([&, r = rx]() mutable {
      first = r.pop();
      second = r.pop();  // parks until the last sender goes
    });
    ASSERT_TRUE(parked_poppers(rx, 1));
    copy.reset();
  }
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->value(), 1u);
  EXPECT_FALSE(second.has_value());
  EXPECT_TRUE(rx.done());
  EXPECT_FALSE(rx.cancelled());
}

TYPED_TEST(Channel, moved_from_handles_do_not_count) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(4);
  sluice::sender<T> a = std::move(tx);
  EXPECT_FALSE(static_cast<bool>(tx));
  EXPECT_TRUE(static_cast<bool>(a));
  sluice::sender<T> b = a;  // two senders: a, b
  sluice::sender<T> c;
  c = std::move(b);  // still two: a, c
  EXPECT_FALSE(static_cast<bool>(b));
  a.reset();
  EXPECT_FALSE(c.is_closed());
  EXPECT_FALSE(rx.done());
  ASSERT_EQ(c.try_push(T(1)), status::ok);
  c = sluice::sender<T>();  // assigning an empty handle drops the last sender
  EXPECT_EQ(rx.pop()->value(), 1u);
  EXPECT_TRUE(rx.done());

  auto [tx2, rx2] = this->make(4);
  sluice::receiver<T> r = std::move(rx2);
  EXPECT_FALSE(static_cast<bool>(rx2));
  sluice::receiver<T> r2 = r;
  r = std::move(r2);  // drops one of the two receivers, keeps one
  EXPECT_FALSE(tx2.is_closed());
  EXPECT_TRUE(tx2.push(T(2)));
  r.reset();  // the last receiver
  EXPECT_TRUE(tx2.is_closed());
  EXPECT_FALSE(tx2.push(T(3)));
}

// ---- disconnect -----------------------------------------------------------------------

TYPED_TEST(Channel, last_receiver_gone_disconnects) {
  using T = typename TypeParam::item;
  discard_log log;
  auto o = this->options(4);
  o.on_discard = log.template hook<T>();
  auto [tx, rx] = this->make(std::move(o));
  this->fill(tx, 0, 3);
  sluice::receiver<T> other = rx;
  rx.reset();
  EXPECT_FALSE(tx.is_closed());  // one receiver is left
  other.reset();
  EXPECT_TRUE(tx.is_closed());
  EXPECT_FALSE(tx.cancelled());
  // Buffered items were discarded, counted, and handed to the hook in order.
  EXPECT_EQ(log.values(), iota_values(0, 3));
  sluice::channel_stats s = tx.stats();
  EXPECT_EQ(s.pushed, 3u);
  EXPECT_EQ(s.popped, 0u);
  EXPECT_EQ(s.discarded, 3u);
  EXPECT_EQ(s.size, 0u);
  // Pushes fail at once, leaving the value with the caller.
  EXPECT_FALSE(tx.push(T(10)));
  T v(11);
  EXPECT_EQ(tx.try_push(std::move(v)), status::closed);
  EXPECT_EQ(tx.push_for(std::move(v), 1h), status::closed);
  EXPECT_FALSE(v.moved_from());
  EXPECT_EQ(tx.stats().pushed, 3u);
  EXPECT_EQ(log.values().size(), 3u);  // a refused push is not a discard
}

TYPED_TEST(Channel, disconnect_wakes_blocked_sender) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  ASSERT_EQ(tx.try_push(T(1)), status::ok);
  bool pushed = true;
  {
    std::jthread pusher([&, s = tx]() mutable { pushed = s.push(T(2)); });
    ASSERT_TRUE(parked_pushers(tx, 1));
    rx.reset();
  }
  EXPECT_FALSE(pushed);
  const sluice::channel_stats s = tx.stats();
  EXPECT_EQ(s.pushed, 1u);
  EXPECT_EQ(s.discarded, 1u);
  EXPECT_EQ(s.size, 0u);
}

// ---- cancel ---------------------------------------------------------------------------

TYPED_TEST(Channel, cancel_wakes_every_blocked_pusher_and_counts_discards) {
  using T = typename TypeParam::item;
  discard_log log;
  auto o = this->options(2);
  o.low_watermark = 0;
  o.on_discard = log.template hook<T>();
  auto [tx, rx] = this->make(std::move(o));
  this->fill(tx, 0, 2);
  bool pushed = true;
  status timed = status::ok;
  std::size_t bulk = 99;
  bool writable = false;
  {
    std::jthread a([&, s = tx]() mutable { pushed = s.push(T(10)); });
    std::jthread b([&, s = tx]() mutable { timed = s.push_until(T(11), std::chrono::steady_clock::now() + 1h); });
    std::jthread c([&, s = tx]() mutable {
      std::vector<T> batch;
      batch.emplace_back(12);
      bulk = s.push_all(std::move(batch));
    });
    std::jthread d([&, s = tx]() mutable {
      s.wait_writable();
      writable = true;
    });
    ASSERT_TRUE(parked_pushers(tx, 4));
    rx.cancel();  // from the receiving side
  }
  EXPECT_FALSE(pushed);
  EXPECT_EQ(timed, status::closed);
  EXPECT_EQ(bulk, 0u);
  EXPECT_TRUE(writable);
  EXPECT_EQ(log.values(), iota_values(0, 2));
  const sluice::channel_stats s = tx.stats();
  EXPECT_EQ(s.pushed, 2u);
  EXPECT_EQ(s.discarded, 2u);
  EXPECT_EQ(s.size, 0u);
  expect_conserved(tx);
  EXPECT_TRUE(tx.cancelled());
  EXPECT_TRUE(rx.cancelled());
  EXPECT_TRUE(tx.is_closed());
  EXPECT_FALSE(tx.push(T(20)));
  T v(21);
  EXPECT_EQ(tx.try_push(std::move(v)), status::closed);
  EXPECT_FALSE(v.moved_from());
  EXPECT_TRUE(rx.done());
  EXPECT_FALSE(rx.pop().has_value());
}

// cancel() on a handle whose callbacks drop every handle, the one cancel() was called on
// too: that handle was all that kept the channel alive, so the channel was freed under
// cancel(), which went on discarding into freed memory (ASan: heap-use-after-free in
// discard_one; the optimised build spun for ever in the ring's pop). Each mode: cancel
// from the sender or the receiver, the handles dropped by on_discard or by an on_writable
// callback (which cancel() fires before it discards).
TYPED_TEST(Channel, a_cancel_whose_callbacks_drop_every_handle_still_discards_everything) {
  using T = typename TypeParam::item;
  for (int mode = 0; mode < 4; ++mode) {
    SCOPED_TRACE(mode);
    const bool from_sender = (mode & 1) != 0;
    const bool by_on_writable = (mode & 2) != 0;
    discard_log log;
    std::optional<sluice::sender<T>> tx;
    std::optional<sluice::receiver<T>> rx;
    auto drop_all = [&] {
      tx.reset();
      rx.reset();
    };
    auto o = this->options(4);
    o.low_watermark = 0;
    o.on_discard = [&, hook = log.template hook<T>()](T&& v) {
      hook(std::move(v));
      if (!by_on_writable) drop_all();
    };
    auto [s, r] = this->make(std::move(o));
    this->fill(s, 0, 4);
    bool fired = false;
    if (by_on_writable) {
      s.on_writable([&] {
        fired = true;
        drop_all();
      });
    }
    tx.emplace(std::move(s));
    rx.emplace(std::move(r));
    if (from_sender) {
      tx->cancel();
    } else {
      rx->cancel();
    }
    EXPECT_FALSE(tx.has_value());
    EXPECT_FALSE(rx.has_value());
    EXPECT_EQ(fired, by_on_writable);
    EXPECT_EQ(log.values(), iota_values(0, 4));  // every item discarded once, in order
  }
}

TYPED_TEST(Channel, cancel_wakes_every_blocked_popper) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(2);
  std::optional<T> a = T(1), b = T(1);
  std::size_t some = 99;
  {
    std::jthread ta([&, r = rx]() mutable { a = r.pop(); });
    std::jthread tb([&, r = rx]() mutable { b = r.pop_until(std::chrono::steady_clock::now() + 1h); });
    std::jthread tc([&, r = rx]() mutable {
      std::vector<T> out;
      some = r.pop_some(std::back_inserter(out), 4);
    });
    ASSERT_TRUE(parked_poppers(rx, 3));
    tx.cancel();  // from the sending side
  }
  EXPECT_FALSE(a.has_value());
  EXPECT_FALSE(b.has_value());
  EXPECT_EQ(some, 0u);
  EXPECT_TRUE(rx.done());
  EXPECT_TRUE(rx.cancelled());
}

TYPED_TEST(Channel, cancel_discards_buffered_items_at_once) {
  using T = typename TypeParam::item;
  const auto before = T::counters().snapshot();
  auto [tx, rx] = this->make(8);
  this->fill(tx, 0, 5);
  (void)rx.try_pop();
  EXPECT_EQ(T::counters().live_since(before), 4);
  tx.cancel();
  // Destroyed now, while both handles are alive; not when the channel goes.
  EXPECT_EQ(T::counters().live_since(before), 0);
  EXPECT_FALSE(rx.try_pop().has_value());
  EXPECT_FALSE(rx.pop().has_value());  // pops return nullopt after cancel
  std::vector<T> out;
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 4), 0u);
  const sluice::channel_stats s = rx.stats();
  EXPECT_EQ(s.pushed, 5u);
  EXPECT_EQ(s.popped, 1u);
  EXPECT_EQ(s.discarded, 4u);
  EXPECT_EQ(s.size, 0u);
}

TYPED_TEST(Channel, cancel_cause_is_recorded_and_first_wins) {
  auto [tx, rx] = this->make(2);
  EXPECT_EQ(tx.cancel_cause(), nullptr);
  rx.cancel(std::make_exception_ptr(std::runtime_error("boom")));
  tx.cancel(std::make_exception_ptr(std::logic_error("later")));
  for (const std::exception_ptr& why : {tx.cancel_cause(), rx.cancel_cause()}) {
    ASSERT_NE(why, nullptr);
    try {
      std::rethrow_exception(why);
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "boom");
    } catch (...) {
      ADD_FAILURE() << "the first cause should be kept";
    }
  }
  auto [tx2, rx2] = this->make(2);
  tx2.cancel();
  EXPECT_TRUE(rx2.cancelled());
  EXPECT_EQ(rx2.cancel_cause(), nullptr);
}

// ---- construction ---------------------------------------------------------------------

TYPED_TEST(Channel, bad_options_throw_invalid_argument) {
  using T = typename TypeParam::item;
  EXPECT_THROW((void)sluice::bounded<T>(0), std::invalid_argument);
  EXPECT_THROW((void)this->make(0), std::invalid_argument);
  auto o = this->options(4);
  o.low_watermark = 5;
  EXPECT_THROW((void)this->make(std::move(o)), std::invalid_argument);
  auto ok = this->options(4);
  ok.low_watermark = 4;  // equal to the capacity is allowed
  EXPECT_NO_THROW((void)this->make(std::move(ok)));
  auto one = this->make(1);  // the smallest channel holds one item
  EXPECT_EQ(one.first.try_push(T(1)), status::ok);
}

// A ring allocates its capacity's slots up front, so a capacity whose slots cannot exist
// is refused, naming it; the locked and weighted flavours allocate per item and take any
// capacity. (bounded<T>(1 << 62) used to overflow the slot count and write past the heap.)
TYPED_TEST(Channel, a_huge_capacity_is_refused_by_the_ring_and_fine_elsewhere) {
  for (const std::size_t cap : {std::size_t{1} << 62, std::size_t{1} << 61, SIZE_MAX, SIZE_MAX / 2 + 1}) {
    SCOPED_TRACE(cap);
    if constexpr (std::is_same_v<TypeParam, ring_flavour>) {
      try {
        (void)this->make(cap);
        ADD_FAILURE() << "no exception";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(std::to_string(cap)), std::string::npos) << e.what();
      }
    } else {
      auto [tx, rx] = this->make(cap);
      EXPECT_EQ(tx.capacity(), cap);
      this->fill(tx, 0, 100);
      EXPECT_EQ(this->drain(rx), iota_values(0, 100));
      expect_conserved(tx);
    }
  }
}

// ---- low watermark: on_writable, wait_writable ---------------------------------------

TYPED_TEST(Channel, on_writable_runs_at_once_when_at_or_below_the_watermark) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(8);  // low watermark 4
  int runs = 0;
  std::thread::id where;
  tx.on_writable([&] {
    ++runs;
    where = std::this_thread::get_id();
  });
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(where, std::this_thread::get_id());
  this->fill(tx, 0, 4);  // exactly at the watermark
  tx.on_writable([&] { ++runs; });
  EXPECT_EQ(runs, 2);
  ASSERT_EQ(tx.try_push(T(4)), status::ok);  // above it now
  tx.on_writable([&] { ++runs; });
  EXPECT_EQ(runs, 2);
  (void)rx.try_pop();  // back to 4: fires here
  EXPECT_EQ(runs, 3);
}

TYPED_TEST(Channel, on_writable_fires_once_per_crossing_on_the_popping_thread) {
  auto o = this->options(8);
  o.low_watermark = 2;
  auto [tx, rx] = this->make(std::move(o));
  this->fill(tx, 0, 8);
  std::atomic<int> runs{0};
  std::thread::id where;
  tx.on_writable([&] {
    where = std::this_thread::get_id();
    runs.fetch_add(1, std::memory_order_relaxed);
  });
  EXPECT_EQ(runs.load(), 0);
  std::thread::id popper_id;
  std::vector<int> runs_after_pop;
  {
    std::jthread popper([&, r = rx]() mutable {
      popper_id = std::this_thread::get_id();
      for (int i = 0; i < 8; ++i) {
        (void)r.try_pop();
        runs_after_pop.push_back(runs.load(std::memory_order_relaxed));
      }
    });
  }
  // occupancy after pop i: 7 6 5 4 3 2 1 0 -> fires on the pop that reaches 2.
  EXPECT_EQ(runs_after_pop, (std::vector<int>{0, 0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(where, popper_id);
  // Once only: another crossing without a new registration runs nothing.
  this->fill(tx, 10, 18);
  EXPECT_EQ(this->drain(rx).size(), 8u);
  EXPECT_EQ(runs.load(), 1);
  // A new registration fires again, once.
  this->fill(tx, 20, 28);
  tx.on_writable([&] { runs.fetch_add(1, std::memory_order_relaxed); });
  tx.on_writable([&] { runs.fetch_add(10, std::memory_order_relaxed); });
  EXPECT_EQ(this->drain(rx).size(), 8u);
  EXPECT_EQ(runs.load(), 12);
}

TYPED_TEST(Channel, on_writable_fires_on_close_and_cancel) {
  {
    auto [tx, rx] = this->make(2);
    this->fill(tx, 0, 2);
    int runs = 0;
    std::thread::id where;
    tx.on_writable([&] {
      ++runs;
      where = std::this_thread::get_id();
    });
    EXPECT_EQ(runs, 0);
    std::thread::id closer_id;
    std::jthread closer([&, s = tx]() mutable {
      closer_id = std::this_thread::get_id();
      s.close();
    });
    closer.join();
    EXPECT_EQ(runs, 1);
    EXPECT_EQ(where, closer_id);  // ran on the closing thread
    tx.on_writable([&] { ++runs; });  // closed: at once
    EXPECT_EQ(runs, 2);
  }
  {
    auto [tx, rx] = this->make(2);
    this->fill(tx, 0, 2);
    int runs = 0;
    tx.on_writable([&] { ++runs; });
    rx.cancel();
    EXPECT_EQ(runs, 1);
  }
}

TYPED_TEST(Channel, wait_writable) {
  auto [tx, rx] = this->make(8);  // low watermark 4
  tx.wait_writable();            // empty: returns at once
  this->fill(tx, 0, 4);
  tx.wait_writable();  // at the watermark: returns at once
  this->fill(tx, 4, 8);
  std::atomic<bool> writable{false};
  {
    std::jthread waiter([&, s = tx]() mutable {
      s.wait_writable();
      writable.store(true);
    });
    ASSERT_TRUE(parked_pushers(tx, 1));  // a wait_writable caller counts as a waiting producer
    for (int i = 0; i < 3; ++i) (void)rx.try_pop();  // 5 left: still above
    EXPECT_FALSE(writable.load());
    (void)rx.try_pop();  // 4: the waiter goes
    EXPECT_TRUE(eventually([&] { return writable.load(); }));
  }
  this->fill(tx, 10, 14);
  writable = false;
  {
    std::jthread waiter([&, s = tx]() mutable {
      s.wait_writable();
      writable.store(true);
    });
    ASSERT_TRUE(parked_pushers(tx, 1));
    tx.close();  // closing wakes it too
  }
  EXPECT_TRUE(writable.load());
}

// ---- overflow policies -----------------------------------------------------------------

TYPED_TEST(Channel, drop_oldest_discards_the_oldest_into_on_discard) {
  using T = typename TypeParam::item;
  discard_log log;
  auto o = this->options(3);
  o.overflow = sluice::overflow::drop_oldest;
  o.on_discard = log.template hook<T>();
  auto [tx, rx] = this->make(std::move(o));
  for (std::uint64_t i = 0; i < 4; ++i) EXPECT_TRUE(tx.push(T(i)));  // never blocks
  EXPECT_EQ(tx.try_push(T(4)), status::ok);
  EXPECT_EQ(tx.push_for(T(5), 1h), status::ok);
  EXPECT_EQ(log.values(), iota_values(0, 3));
  sluice::channel_stats s = tx.stats();
  EXPECT_EQ(s.pushed, 6u);
  EXPECT_EQ(s.discarded, 3u);
  EXPECT_EQ(s.size, 3u);
  EXPECT_EQ(this->drain(rx), iota_values(3, 6));
  expect_conserved(rx);
}

TYPED_TEST(Channel, drop_newest_discards_the_pushed_item_into_on_discard) {
  using T = typename TypeParam::item;
  discard_log log;
  auto o = this->options(3);
  o.overflow = sluice::overflow::drop_newest;
  o.on_discard = log.template hook<T>();
  auto [tx, rx] = this->make(std::move(o));
  for (std::uint64_t i = 0; i < 4; ++i) EXPECT_TRUE(tx.push(T(i)));
  EXPECT_EQ(tx.try_push(T(4)), status::ok);  // accepted, then dropped
  std::vector<T> batch;
  batch.emplace_back(5);
  batch.emplace_back(6);
  EXPECT_EQ(tx.push_all(std::move(batch)), 2u);
  EXPECT_EQ(log.values(), iota_values(3, 7));
  const sluice::channel_stats s = tx.stats();
  EXPECT_EQ(s.pushed, 7u);
  EXPECT_EQ(s.discarded, 4u);
  EXPECT_EQ(s.size, 3u);
  EXPECT_EQ(this->drain(rx), iota_values(0, 3));
  expect_conserved(rx);
}

TYPED_TEST(Channel, drop_policy_without_hook_still_counts) {
  using T = typename TypeParam::item;
  auto o = this->options(2);
  o.overflow = sluice::overflow::drop_oldest;
  auto [tx, rx] = this->make(std::move(o));
  for (std::uint64_t i = 0; i < 10; ++i) EXPECT_EQ(tx.try_push(T(i)), status::ok);
  EXPECT_EQ(tx.stats().discarded, 8u);
  EXPECT_EQ(this->drain(rx), iota_values(8, 10));
}

// ---- bulk -------------------------------------------------------------------------------

TYPED_TEST(Channel, push_all_moves_from_rvalues_and_copies_lvalues) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(16);
  std::vector<T> batch;
  for (std::uint64_t i = 0; i < 5; ++i) batch.emplace_back(i);
  EXPECT_EQ(tx.push_all(batch), 5u);  // lvalue: copied
  for (const T& v : batch) EXPECT_FALSE(v.moved_from());
  std::vector<T> batch2;
  for (std::uint64_t i = 5; i < 10; ++i) batch2.emplace_back(i);
  EXPECT_EQ(tx.push_all(std::move(batch2)), 5u);  // rvalue: moved
  for (const T& v : batch2) EXPECT_TRUE(v.moved_from());  // NOLINT(bugprone-use-after-move)
  // Elements made as the range goes (T's constructor from a number is explicit, so the
  // numbers themselves are refused, as push() refuses them: item_types_test.cpp).
  const std::vector<std::uint64_t> raw = {10, 11};
  EXPECT_EQ(tx.push_all(raw | std::views::transform([](std::uint64_t v) { return T(v); })), 2u);
  EXPECT_EQ(this->drain(rx), iota_values(0, 12));
}

TYPED_TEST(Channel, push_all_copies_the_elements_of_a_view) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(8);
  std::vector<T> src;
  for (std::uint64_t i = 0; i < 4; ++i) src.emplace_back(i);
  // A view is an rvalue, but its elements belong to src: they must not be moved from.
  EXPECT_EQ(tx.push_all(src | std::views::take(3)), 3u);
  EXPECT_EQ(tx.push_all(std::views::all(src) | std::views::drop(3)), 1u);
  for (const T& v : src) EXPECT_FALSE(v.moved_from());
  EXPECT_EQ(this->drain(rx), iota_values(0, 4));
}

// The next element of a range that is not contiguous is the caller's code, and may wait
// (for a socket, for the consumer's answer to the last one): each element pushed is seen
// at once by a parked consumer, as a push() is. They were handed on only when the range
// ended, a push failed or blocked: a range whose next element waited for the consumer's
// answer to the last held that one back until its wait gave up (found by a probe).
TYPED_TEST(Channel, push_all_over_a_range_that_waits_hands_each_element_on_at_once) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(16);
  std::atomic<std::uint64_t> answered{0};
  std::jthread consumer([&answered, r = rx]() mutable {
    while (auto v = r.pop()) answered.store(v->value() + 1);
  });
  ASSERT_TRUE(parked_poppers(rx, 1));
  std::uint64_t unanswered = 0;
  auto feed = std::views::iota(std::uint64_t{0}, std::uint64_t{4}) | std::views::transform([&](std::uint64_t i) {
                if (i > 0 && !eventually([&] { return answered.load() == i; }, 5s)) ++unanswered;
                return T(i);
              });
  EXPECT_EQ(tx.push_all(feed), 4u);
  EXPECT_EQ(unanswered, 0u) << "an element pushed was not handed on while the range waited for its answer";
  tx.close();
  consumer.join();
  EXPECT_EQ(answered.load(), 4u);
}

TYPED_TEST(Channel, push_all_blocks_like_push) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(2);
  std::size_t n = 0;
  std::vector<std::uint64_t> got;
  {
    std::jthread producer([&, s = tx]() mutable {
      std::vector<T> batch;
      for (std::uint64_t i = 0; i < 50; ++i) batch.emplace_back(i);
      n = s.push_all(std::move(batch));
    });
    for (int i = 0; i < 50; ++i) got.push_back(rx.pop()->value());
  }
  EXPECT_EQ(n, 50u);
  EXPECT_EQ(got, iota_values(0, 50));
}

TYPED_TEST(Channel, push_all_stops_at_the_first_failure) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(2);
  std::size_t n = 99;
  {
    std::jthread producer([&, s = tx]() mutable {
      std::vector<T> batch;
      for (std::uint64_t i = 0; i < 5; ++i) batch.emplace_back(i);
      n = s.push_all(std::move(batch));
    });
    ASSERT_TRUE(parked_pushers(tx, 1));  // two went in; the third waits
    tx.close();
  }
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(this->drain(rx), iota_values(0, 2));
  EXPECT_TRUE(rx.done());
}

TYPED_TEST(Channel, push_all_leaves_the_elements_it_did_not_push_in_the_range) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(3);
  std::vector<T> batch;
  for (std::uint64_t i = 0; i < 6; ++i) batch.emplace_back(i);
  std::size_t n = 99;
  {
    std::jthread producer([&, s = tx]() mutable { n = s.push_all(std::move(batch)); });
    ASSERT_TRUE(parked_pushers(tx, 1));  // three went in; the fourth waits
    rx.cancel();
  }
  ASSERT_EQ(n, 3u);
  ASSERT_EQ(batch.size(), 6u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_TRUE(batch[i].moved_from()) << i;
  for (std::size_t i = 3; i < 6; ++i) {
    EXPECT_FALSE(batch[i].moved_from()) << i;
    EXPECT_EQ(batch[i].value(), i);
  }
  const sluice::channel_stats st = tx.stats();
  EXPECT_EQ(st.pushed, 3u);
  EXPECT_EQ(st.discarded, 3u);
  expect_conserved(tx);
}

TYPED_TEST(Channel, pop_some_takes_what_is_there_up_to_max) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(8);
  this->fill(tx, 0, 5);
  std::vector<T> out;
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 3), 3u);
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 10), 2u);
  // max 0 is refused: its 0 would read as the end, and a loop on it stopped with items
  // still queued. Nothing is taken.
  this->fill(tx, 100, 101);
  EXPECT_THROW(rx.pop_some(std::back_inserter(out), 0), std::invalid_argument);
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 1), 1u);
  ASSERT_EQ(out.back().value(), 100u);
  out.pop_back();
  ASSERT_EQ(out.size(), 5u);
  for (std::uint64_t i = 0; i < 5; ++i) EXPECT_EQ(out[i].value(), i);
  // Into a plain array through a pointer.
  this->fill(tx, 5, 8);
  T arr[4];
  EXPECT_EQ(rx.pop_some(arr, 4), 3u);
  EXPECT_EQ(arr[0].value(), 5u);
  EXPECT_EQ(arr[2].value(), 7u);
  tx.close();
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 4), 0u);  // done: 0
  expect_conserved(rx);
}

// The detail-level pop_some that never blocks (the ordered flat_map emitter times only the
// pops that wait): it takes what is buffered up to max, returns 0 at once when the channel
// is empty, and 0 once it is done.
TYPED_TEST(Channel, try_pop_some_takes_what_is_there_and_never_waits) {
  using T = typename TypeParam::item;
  using sluice::detail::channel_access;
  auto [tx, rx] = this->make(8);
  std::vector<T> out;
  EXPECT_EQ(channel_access::try_pop_some(rx, std::back_inserter(out), 4), 0u);  // empty: no wait
  this->fill(tx, 0, 5);
  EXPECT_EQ(channel_access::try_pop_some(rx, std::back_inserter(out), 3), 3u);
  EXPECT_EQ(channel_access::try_pop_some(rx, std::back_inserter(out), 0), 0u);  // max 0
  EXPECT_EQ(channel_access::try_pop_some(rx, std::back_inserter(out), 10), 2u);
  EXPECT_EQ(channel_access::try_pop_some(rx, std::back_inserter(out), 10), 0u);  // empty again
  ASSERT_EQ(out.size(), 5u);
  for (std::uint64_t i = 0; i < 5; ++i) EXPECT_EQ(out[i].value(), i);
  tx.close();
  EXPECT_EQ(channel_access::try_pop_some(rx, std::back_inserter(out), 4), 0u);  // done: 0
  EXPECT_TRUE(rx.done());
  expect_conserved(rx);
}

// pop_some's contract when writing to out throws: the items before it were handed over,
// the one being written counts as popped, and the rest stay queued in order, neither
// lost nor discarded. The lock-free ring claimed runs of up to 32 items at once and handed
// the unwritten ones to on_discard (counted as popped; without a hook, destroyed).
TYPED_TEST(Channel, pop_some_leaves_the_items_after_a_throwing_write_queued) {
  using T = typename TypeParam::item;
  auto o = this->options(100);
  std::size_t hooked = 0;
  o.on_discard = [&hooked](T&&) { ++hooked; };
  auto [tx, rx] = this->make(std::move(o));
  this->fill(tx, 0, 10);
  // An output iterator whose third write throws (a container that refuses, say).
  struct refusing_out {
    std::vector<std::uint64_t>* got;
    int* writes;
    refusing_out& operator*() { return *this; }
    refusing_out& operator=(T&& v) {
      if (++*writes == 3) throw std::runtime_error("out refuses");
      got->push_back(v.value());
      return *this;
    }
    refusing_out& operator++() { return *this; }
    refusing_out operator++(int) { return *this; }
  };
  std::vector<std::uint64_t> got;
  int writes = 0;
  EXPECT_THROW((void)rx.pop_some(refusing_out{&got, &writes}, 10), std::runtime_error);
  EXPECT_EQ(got, (std::vector<std::uint64_t>{0, 1}));
  EXPECT_EQ(hooked, 0u);
  const sluice::channel_stats st = rx.stats();
  EXPECT_EQ(st.popped, 3u);  // 0, 1 and the one whose write threw
  EXPECT_EQ(st.discarded, 0u);
  EXPECT_EQ(st.items, 7u);
  EXPECT_EQ(this->drain(rx), (std::vector<std::uint64_t>{3, 4, 5, 6, 7, 8, 9}));
  // A back_inserter into a vector with no spare room is the same case when it grows
  // (no throw here, but the fast path must not claim more than one past its capacity).
  this->fill(tx, 10, 50);
  std::vector<T> out;
  EXPECT_EQ(rx.pop_some(std::back_inserter(out), 100), 40u);
  ASSERT_EQ(out.size(), 40u);
  for (std::uint64_t i = 0; i < 40; ++i) EXPECT_EQ(out[i].value(), 10 + i);
  expect_conserved(rx);
}

// The item whose write threw left the channel, so its pop made room, and a producer
// parked on the full channel must be woken for it: counted only after the write, the
// first item's throw woke nobody, and the producer slept on beside an empty channel
// (with a plain pop() on the other side, both threads for ever). Found by a hostile probe.
TYPED_TEST(Channel, a_pop_some_whose_first_write_throws_wakes_the_producer_it_made_room_for) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  this->fill(tx, 0, 1);
  std::atomic<pid_t> tid{0};
  bool pushed = false;
  std::jthread producer([s = tx, &tid, &pushed]() mutable {
    tid = current_tid();
    pushed = s.push(T(1));
  });
  ASSERT_TRUE(parked_pushers(rx, 1));
  // Asleep in the kernel: a producer still spinning would see the room by itself.
  ASSERT_TRUE(eventually([&] { return thread_state(tid.load()) == 'S'; }, 10s));
  struct refusing_out {
    refusing_out& operator*() { return *this; }
    refusing_out& operator=(T&&) { throw std::runtime_error("out refuses"); }
    refusing_out& operator++() { return *this; }
    refusing_out operator++(int) { return *this; }
  };
  EXPECT_THROW((void)rx.pop_some(refusing_out{}, 8), std::runtime_error);
  std::optional<T> v = rx.pop_for(10s);
  if (!v) rx.cancel();  // the producer was never woken: let it end so the test reports
  producer.join();
  ASSERT_TRUE(v.has_value()) << "the producer parked on the full channel was not woken by the pop that made room";
  EXPECT_EQ(v->value(), 1u);
  EXPECT_TRUE(pushed);
  const sluice::channel_stats st = rx.stats();
  EXPECT_EQ(st.popped, 2u);
  EXPECT_EQ(st.waiting_push, 0u);
  expect_conserved(rx);
}

TYPED_TEST(Channel, pop_some_blocks_until_one_item) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(8);
  std::vector<T> out;
  std::size_t n = 0;
  {
    std::jthread consumer([&, r = rx]() mutable { n = r.pop_some(std::back_inserter(out), 8); });
    ASSERT_TRUE(parked_poppers(rx, 1));
    ASSERT_EQ(tx.try_push(T(42)), status::ok);
  }
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(out[0].value(), 42u);
}

// ---- iteration ----------------------------------------------------------------------------

TYPED_TEST(Channel, range_for_pulls_with_backpressure) {
  using T = typename TypeParam::item;
  constexpr std::size_t kCap = 4;
  constexpr std::uint64_t kItems = 2000;
  auto [tx, rx] = this->make(kCap);
  std::atomic<std::uint64_t> produced{0};
  std::jthread producer([&produced, s = std::move(tx)]() mutable {
    for (std::uint64_t i = 0; i < kItems; ++i) {
      ASSERT_TRUE(s.push(T(i)));
      produced.fetch_add(1, std::memory_order_relaxed);
    }
  });  // the producer's handle is the last sender: the loop below ends after it
  std::uint64_t consumed = 0;
  for (T& v : rx) {
    ASSERT_EQ(v.value(), consumed);
    ++consumed;
    // The producer can be at most `capacity` items ahead of the loop body.
    ASSERT_LE(produced.load(std::memory_order_relaxed), consumed + kCap);
  }
  EXPECT_EQ(consumed, kItems);
  EXPECT_TRUE(rx.done());
}

TYPED_TEST(Channel, breaking_out_of_a_range_for_keeps_the_rest) {
  auto [tx, rx] = this->make(8);
  this->fill(tx, 0, 6);
  std::vector<std::uint64_t> seen;
  for (auto& v : rx) {
    seen.push_back(v.value());
    if (seen.size() == 3) break;
  }
  EXPECT_EQ(seen, iota_values(0, 3));
  EXPECT_EQ(this->drain(rx), iota_values(3, 6));
}

// A range-for pops each item straight into the iterator: an item type whose move
// assignment throws (its move constructor does not) lost the item popped for it, counted
// as popped and never seen (found by a probe: 3 of 4 seen).
TEST(ChannelIterator, an_item_whose_move_assignment_throws_is_never_lost) {
  struct picky {
    std::uint64_t id;
    explicit picky(std::uint64_t i) : id(i) {}
    picky(picky&& o) noexcept : id(o.id) {}
    picky& operator=(picky&& o) {  // NOLINT(performance-noexcept-move-constructor): the point
      if (o.id == 2) throw std::runtime_error("no assignment of 2");
      id = o.id;
      return *this;
    }
  };
  auto [tx, rx] = sluice::bounded<picky>(8);
  for (std::uint64_t i = 1; i <= 4; ++i) ASSERT_EQ(tx.try_push(picky(i)), status::ok);
  tx.close();
  std::vector<std::uint64_t> seen;
  try {
    for (auto& v : rx) seen.push_back(v.id);
  } catch (const std::runtime_error& e) {
    ADD_FAILURE() << "the range-for assigned an item: " << e.what();
    for (auto& v : rx) seen.push_back(v.id);
  }
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(tx.stats().popped, 4u);
}

// ---- stats ----------------------------------------------------------------------------

TYPED_TEST(Channel, stats_count_and_time_blocking) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  ASSERT_TRUE(tx.push(T(0)));
  (void)rx.pop();
  EXPECT_EQ(tx.stats().blocked_push_ns, 0u);  // nothing had to wait
  EXPECT_EQ(tx.stats().blocked_pop_ns, 0u);
  ASSERT_EQ(tx.try_push(T(1)), status::ok);
  {
    std::jthread pusher([s = tx]() mutable { EXPECT_TRUE(s.push(T(2))); });
    ASSERT_TRUE(parked_pushers(tx, 1));
    EXPECT_EQ(rx.pop()->value(), 1u);
  }
  EXPECT_GT(tx.stats().blocked_push_ns, 0u);
  EXPECT_EQ(rx.pop()->value(), 2u);
  {
    std::jthread popper([r = rx]() mutable { EXPECT_EQ(r.pop()->value(), 3u); });
    ASSERT_TRUE(parked_poppers(rx, 1));
    ASSERT_EQ(tx.try_push(T(3)), status::ok);
  }
  sluice::channel_stats s = rx.stats();
  EXPECT_GT(s.blocked_pop_ns, 0u);
  EXPECT_EQ(s.waiting_push, 0u);
  EXPECT_EQ(s.waiting_pop, 0u);
  EXPECT_EQ(s.pushed, 4u);
  EXPECT_EQ(s.popped, 4u);
  expect_conserved(rx);
}

// A snapshot taken while a pop is parked already counts the time it has waited so far,
// so the counter grows during the wait and never jumps back (a stage's busy time, which
// the graph derives from it, stays monotonic too).
TYPED_TEST(Channel, time_blocked_counts_a_wait_in_progress) {
  using T = typename TypeParam::item;
  auto [tx, rx] = this->make(1);
  std::jthread popper([r = rx]() mutable { EXPECT_EQ(r.pop()->value(), 7u); });
  ASSERT_TRUE(parked_poppers(rx, 1));
  const std::uint64_t first = rx.stats().blocked_pop_ns;
  // Let 2 ms pass on the clock (a wait for time to elapse, not for another thread).
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2)) {
  }
  const std::uint64_t second = rx.stats().blocked_pop_ns;
  EXPECT_GE(second, first + 1'500'000u);  // the popper is still parked: it keeps counting
  ASSERT_EQ(tx.try_push(T(7)), status::ok);
  popper.join();
  EXPECT_GE(rx.stats().blocked_pop_ns, second);
}

// Time blocked is read from the cheap clock (detail/ticks.hpp) and converted to ns: it
// must agree with steady_clock. A timed pop on an empty channel waits exactly until
// its deadline, so its blocked time lies between the timeout and the call's duration.
// The spin's part is counted as its pauses x their cost (detail/ticks.hpp), so a thread
// preempted inside it loses that time from the count: under a loaded ctest -j4 one wait
// of 30 ms was counted as 28.1. The upper bound holds for every wait; the lower one for
// at least one of three (a conversion error would miss it in all three).
TYPED_TEST(Channel, time_blocked_agrees_with_the_steady_clock) {
  constexpr auto kTimeout = std::chrono::milliseconds(30);
  int close_enough = 0;
  std::chrono::nanoseconds lowest = kTimeout;
  for (int i = 0; i < 3; ++i) {
    auto [tx, rx] = this->make(4);
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(rx.pop_for(kTimeout).has_value());
    const auto took = std::chrono::steady_clock::now() - t0;
    const auto blocked = std::chrono::nanoseconds(rx.stats().blocked_pop_ns);
    EXPECT_LE(blocked, took + took / 100);  // 1%: the conversion's error is far below
    // The wait starts after the first failed try, a few microseconds after t0 at most.
    if (blocked >= kTimeout - std::chrono::microseconds(500)) ++close_enough;
    lowest = std::min(lowest, blocked);
  }
  EXPECT_GE(close_enough, 1) << "three 30 ms waits, each counted as under 29.5 ms; the lowest "
                             << lowest.count() << " ns";
}

// ---- lifetimes ---------------------------------------------------------------------------
// (The fixture also checks every test's items; these make the interesting cases explicit.)

TYPED_TEST(Channel, items_left_in_a_destroyed_channel_are_destroyed_and_discarded) {
  using T = typename TypeParam::item;
  const auto before = T::counters().snapshot();
  discard_log log;
  {
    auto o = this->options(8);
    o.on_discard = log.template hook<T>();
    auto [tx, rx] = this->make(std::move(o));
    this->fill(tx, 0, 8);
    EXPECT_EQ(T::counters().live_since(before), 8);
  }
  EXPECT_EQ(T::counters().live_since(before), 0);
  EXPECT_EQ(log.values(), iota_values(0, 8));
  {
    auto [tx, rx] = this->make(8);
    this->fill(tx, 0, 8);
    tx.reset();  // closed with items: still destroyed when the receiver goes
  }
  EXPECT_EQ(T::counters().live_since(before), 0);
}

TYPED_TEST(Channel, disconnect_destroys_buffered_items_at_once) {
  using T = typename TypeParam::item;
  const auto before = T::counters().snapshot();
  auto [tx, rx] = this->make(8);
  this->fill(tx, 0, 8);
  rx.reset();
  EXPECT_EQ(T::counters().live_since(before), 0);  // the sender still holds the channel
  EXPECT_EQ(tx.stats().discarded, 8u);
}

// ---- spsc / mpmc ---------------------------------------------------------------------------

TYPED_TEST(Channel, spsc_keeps_order) {
  using T = typename TypeParam::item;
  constexpr std::uint64_t kItems = 20'000;
  auto [tx, rx] = this->make(7);
  std::jthread producer([s = std::move(tx)]() mutable {
    for (std::uint64_t i = 0; i < kItems; ++i) ASSERT_TRUE(s.push(T(i)));
  });
  std::uint64_t next = 0;
  while (auto v = rx.pop()) {
    ASSERT_EQ(v->value(), next);
    ++next;
  }
  EXPECT_EQ(next, kItems);
}

TYPED_TEST(Channel, mpmc_delivers_each_item_once_in_per_producer_order) {
  using T = typename TypeParam::item;
  constexpr std::uint64_t kProducers = 4, kConsumers = 3, kPer = 3000;
  auto [tx, rx] = this->make(5);
  std::vector<std::vector<std::uint64_t>> got(kConsumers);
  {
    std::vector<std::jthread> threads;
    for (std::uint64_t p = 0; p < kProducers; ++p) {
      threads.emplace_back([p, s = tx]() mutable {
        for (std::uint64_t i = 0; i < kPer; ++i) ASSERT_TRUE(s.push(T(p << 32 | i)));
      });
    }
    for (std::uint64_t c = 0; c < kConsumers; ++c) {
      threads.emplace_back([&out = got[c], r = rx]() mutable {
        for (T& v : r) out.push_back(v.value());
      });
    }
    tx.reset();
    rx.reset();
  }
  std::vector<int> seen(kProducers * kPer, 0);
  for (const auto& out : got) {
    std::vector<std::int64_t> last(kProducers, -1);
    for (const std::uint64_t v : out) {
      const std::uint64_t p = v >> 32, i = v & 0xffffffffu;
      ASSERT_LT(p, kProducers);
      ASSERT_LT(i, kPer);
      EXPECT_GT(static_cast<std::int64_t>(i), last[p]) << "producer order broken";
      last[p] = static_cast<std::int64_t>(i);
      ++seen[p * kPer + i];
    }
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
}

// ---- the option and stats types (DESIGN §1: names, field order, field types) ---------------

static_assert(std::is_same_v<decltype(sluice::channel_stats{}.size), std::size_t>);
static_assert(std::is_same_v<decltype(sluice::channel_stats{}.capacity), std::size_t>);
static_assert(std::is_same_v<decltype(sluice::channel_stats{}.pushed), std::uint64_t>);
static_assert(std::is_same_v<decltype(sluice::channel_stats{}.popped), std::uint64_t>);
static_assert(std::is_same_v<decltype(sluice::channel_stats{}.discarded), std::uint64_t>);
static_assert(std::is_same_v<decltype(sluice::channel_stats{}.blocked_push_ns), std::uint64_t>);
static_assert(std::is_same_v<decltype(sluice::channel_stats{}.blocked_pop_ns), std::uint64_t>);
static_assert(std::is_same_v<decltype(sluice::bounded<int>(1)),
                             std::pair<sluice::sender<int>, sluice::receiver<int>>>);

TEST(ChannelOptions, designated_initializers_in_contract_order) {
  int discarded = 0;
  auto [tx, rx] = sluice::bounded<std::string>({.capacity = 64,
                                                .low_watermark = 16,
                                                .weigh = [](const std::string& v) { return v.size(); },
                                                .overflow = sluice::overflow::drop_newest,
                                                .on_discard = [&](std::string&&) { ++discarded; }});
  EXPECT_EQ(tx.capacity(), 64u);
  EXPECT_TRUE(tx.push(std::string(60, 'a')));
  EXPECT_TRUE(tx.push(std::string(10, 'b')));  // does not fit: dropped
  EXPECT_EQ(discarded, 1);
  auto [tx2, rx2] = sluice::bounded<long>({.capacity = 8});
  EXPECT_EQ(tx2.capacity(), 8u);
}

TEST(ChannelOptions, forever_like_timeouts_do_not_overflow) {
  sluice_test::watchdog dog(kTestLimit);
  auto [tx, rx] = sluice::bounded<int>(1);
  ASSERT_TRUE(tx.push(1));
  {
    std::jthread pusher([s = tx]() mutable { EXPECT_EQ(s.push_for(2, std::chrono::hours::max()), status::ok); });
    ASSERT_TRUE(parked_pushers(tx, 1));
    EXPECT_EQ(rx.pop(), 1);
  }
  EXPECT_EQ(rx.pop_for(std::chrono::nanoseconds::max()), 2);
  {
    std::jthread popper([r = rx]() mutable { EXPECT_EQ(r.pop_until(sluice::time_point::max()), 3); });
    ASSERT_TRUE(parked_poppers(rx, 1));
    ASSERT_EQ(tx.push_until(3, sluice::time_point::max()), status::ok);
  }
}

// A long wait in a period that does not divide into nanoseconds (1/11 s): the conversion
// multiplied the count by 10^9 before dividing, and 29 years overflowed (UB; the wait
// returned at once, found by a probe). Now it waits until an item comes.
TEST(ChannelOptions, a_long_wait_in_an_odd_period_is_not_cut_short) {
  sluice_test::watchdog dog(kTestLimit);
  using eleventh = std::chrono::duration<long long, std::ratio<1, 11>>;
  auto [tx, rx] = sluice::bounded<int>(1);
  {
    std::jthread pusher([&, s = tx]() mutable {
      if (parked_poppers(rx, 1)) (void)s.push(7);
    });
    EXPECT_EQ(rx.pop_for(eleventh(10'000'000'000LL)), 7);  // about 29 years
  }
  ASSERT_TRUE(tx.push(8));  // full
  std::jthread popper([&, r = rx]() mutable {
    if (parked_pushers(tx, 1)) {
      EXPECT_EQ(r.pop(), 8);
    }
  });
  EXPECT_EQ(tx.push_for(9, eleventh(10'000'000'000LL)), status::ok);
}

// A NaN duration is no wait, as zero is (graph::wait_for treats it the same way). It fell
// through to chrono::ceil, undefined behaviour (UBSan: "nan is outside the range").
TEST(ChannelOptions, a_nan_timeout_is_no_wait) {
  sluice_test::watchdog dog(kTestLimit);
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  auto [tx, rx] = sluice::bounded<int>(1);
  EXPECT_EQ(rx.pop_for(nan), std::nullopt);
  ASSERT_TRUE(tx.push(1));
  int two = 2;
  EXPECT_EQ(tx.push_for(std::move(two), nan), status::timeout);
  EXPECT_EQ(two, 2);  // a failed push keeps its item
  EXPECT_EQ(rx.pop_for(nan), 1);
}

// ---- empty handles -----------------------------------------------------------------------

// Every call but assignment, reset, operator bool and destruction on an empty handle is a
// std::logic_error naming the call. Before, each one dereferenced null (SIGSEGV).
void expect_empty_handle_error(const char* call, const std::function<void()>& f) {
  const std::string what = thrown_what<std::logic_error>(f);
  EXPECT_EQ(what.rfind(std::string(call) + " on an empty handle", 0), 0U) << call << ": " << what;
}

TEST(ChannelEmptyHandle, every_sender_call_is_a_logic_error_naming_it) {
  sluice::sender<int> tx;  // default-constructed
  EXPECT_FALSE(static_cast<bool>(tx));
  const int one = 1;
  expect_empty_handle_error("sluice::sender::push", [&] { (void)tx.push(1); });
  expect_empty_handle_error("sluice::sender::push", [&] { (void)tx.push(one); });
  expect_empty_handle_error("sluice::sender::try_push", [&] { (void)tx.try_push(1); });
  expect_empty_handle_error("sluice::sender::try_push", [&] { (void)tx.try_push(one); });
  expect_empty_handle_error("sluice::sender::push_for", [&] { (void)tx.push_for(1, 1ms); });
  expect_empty_handle_error("sluice::sender::push_for", [&] { (void)tx.push_for(one, 1ms); });
  expect_empty_handle_error("sluice::sender::push_until",
                            [&] { (void)tx.push_until(1, std::chrono::steady_clock::now()); });
  expect_empty_handle_error("sluice::sender::push_until",
                            [&] { (void)tx.push_until(one, std::chrono::steady_clock::now()); });
  expect_empty_handle_error("sluice::sender::push_all", [&] { (void)tx.push_all(std::vector<int>{1, 2}); });
  expect_empty_handle_error("sluice::sender::close", [&] { tx.close(); });
  expect_empty_handle_error("sluice::sender::wait_writable", [&] { tx.wait_writable(); });
  expect_empty_handle_error("sluice::sender::on_writable", [&] { tx.on_writable([] {}); });
  expect_empty_handle_error("sluice::sender::cancel", [&] { tx.cancel(); });
  expect_empty_handle_error("sluice::sender::cancel_cause", [&] { (void)tx.cancel_cause(); });
  expect_empty_handle_error("sluice::sender::cancelled", [&] { (void)tx.cancelled(); });
  expect_empty_handle_error("sluice::sender::is_closed", [&] { (void)tx.is_closed(); });
  expect_empty_handle_error("sluice::sender::stats", [&] { (void)tx.stats(); });
  expect_empty_handle_error("sluice::sender::capacity", [&] { (void)tx.capacity(); });
  tx.reset();  // allowed: a no-op
  // Moved-from and reset handles are empty too; the channel behind them is unaffected.
  auto [a, rx] = sluice::bounded<int>(4);
  sluice::sender<int> b = std::move(a);
  expect_empty_handle_error("sluice::sender::push", [&] { (void)a.push(1); });
  EXPECT_TRUE(b.push(2));
  b.reset();
  expect_empty_handle_error("sluice::sender::try_push", [&] { (void)b.try_push(3); });
  EXPECT_EQ(*rx.pop(), 2);
  EXPECT_TRUE(rx.done());  // the last real sender went with b.reset()
  a = sluice::sender<int>();  // assigning to an empty handle is fine
}

TEST(ChannelEmptyHandle, every_receiver_call_is_a_logic_error_naming_it) {
  sluice::receiver<int> rx;
  EXPECT_FALSE(static_cast<bool>(rx));
  std::vector<int> out;
  expect_empty_handle_error("sluice::receiver::pop", [&] { (void)rx.pop(); });
  expect_empty_handle_error("sluice::receiver::try_pop", [&] { (void)rx.try_pop(); });
  expect_empty_handle_error("sluice::receiver::pop_for", [&] { (void)rx.pop_for(1ms); });
  expect_empty_handle_error("sluice::receiver::pop_until",
                            [&] { (void)rx.pop_until(std::chrono::steady_clock::now()); });
  expect_empty_handle_error("sluice::receiver::pop_some",
                            [&] { (void)rx.pop_some(std::back_inserter(out), 4); });
  expect_empty_handle_error("sluice::receiver::done", [&] { (void)rx.done(); });
  expect_empty_handle_error("sluice::receiver::cancel", [&] { rx.cancel(); });
  expect_empty_handle_error("sluice::receiver::cancel_cause", [&] { (void)rx.cancel_cause(); });
  expect_empty_handle_error("sluice::receiver::cancelled", [&] { (void)rx.cancelled(); });
  expect_empty_handle_error("sluice::receiver::stats", [&] { (void)rx.stats(); });
  expect_empty_handle_error("sluice::receiver::capacity", [&] { (void)rx.capacity(); });
  // A range-for names begin(), which takes the first item, not pop (which it never called).
  expect_empty_handle_error("sluice::receiver::begin", [&] {
    for (int v : rx) out.push_back(v);
  });
  rx.reset();
  auto [tx, r1] = sluice::bounded<int>(4);
  sluice::receiver<int> r2 = std::move(r1);
  expect_empty_handle_error("sluice::receiver::pop", [&] { (void)r1.pop(); });
  EXPECT_TRUE(tx.push(7));
  EXPECT_EQ(*r2.pop(), 7);
  EXPECT_TRUE(out.empty());
}

}  // namespace
