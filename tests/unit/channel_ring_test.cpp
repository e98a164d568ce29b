// Tests of what only the ring flavour has (detail/ring_flavour.hpp): slots allocated
// up front (capacities whose storage cannot exist) and the lone-side path (one sender or
// one receiver moves its index with a plain store; closing and cancelling quiesce it).
// The contract every flavour keeps is channel_test.cpp's.
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "channel_test_util.hpp"
#include "sluice/channel.hpp"
#include "sluice/detail/ring_buffer.hpp"
#include "sluice/graph.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using namespace channel_test;
using sluice::status;
using sluice_test::eventually;
using sluice_test::watchdog;

// ---- capacities whose storage cannot exist ------------------------------------------------

TEST(ChannelCapacity, a_ring_whose_slots_cannot_be_addressed_is_invalid_argument_naming_the_capacity) {
  // sizeof(slot) * capacity used to wrap: 2^62 int slots "fit" in a tiny allocation.
  const std::string what = thrown_what<std::invalid_argument>([] { (void)sluice::bounded<int>(std::size_t{1} << 62); });
  EXPECT_NE(what.find("capacity 4611686018427387904"), std::string::npos) << what;
  EXPECT_NE(what.find("sluice::bounded"), std::string::npos) << what;
  const std::string w2 = thrown_what<std::invalid_argument>([] { (void)sluice::bounded<std::string>(SIZE_MAX); });
  EXPECT_NE(w2.find(std::to_string(SIZE_MAX)), std::string::npos) << w2;
}

TEST(ChannelCapacity, a_ring_larger_than_memory_is_bad_alloc_naming_the_capacity) {
  // 2^40 int slots are 16 TiB: more than any machine this runs on. Refused before any
  // allocation (under a sanitizer a 16 TiB operator new would abort rather than throw).
  const std::string what = thrown_what<std::bad_alloc>([] { (void)sluice::bounded<int>(std::size_t{1} << 40); });
  EXPECT_NE(what.find("capacity 1099511627776"), std::string::npos) << what;
  EXPECT_NE(what.find("cannot be had"), std::string::npos) << what;
  // The same through options, and for a larger item.
  const std::string w2 = thrown_what<std::bad_alloc>([] {
    sluice::channel_options<std::array<char, 64>> o;
    o.capacity = std::size_t{1} << 36;
    (void)sluice::bounded<std::array<char, 64>>(std::move(o));
  });
  EXPECT_NE(w2.find("capacity 68719476736"), std::string::npos) << w2;
}

// A ring must also fit in the memory free now: it touches every slot when it is built, and
// past what is free the kernel's out-of-memory killer ends the process (a bench --capacity
// of 100M items made five 5.2 GiB channels on a 24 GiB machine, and was killed). Checked
// with given figures: a test cannot take most of the machine's memory to see it refused.
TEST(ChannelCapacity, a_ring_larger_than_the_memory_free_now_is_bad_alloc_saying_what_is_free) {
  using sluice::detail::check_ring_memory;
  using sluice::detail::machine_memory;
  constexpr std::uint64_t GiB = std::uint64_t{1} << 30;
  // 2^28 slots of 24 bytes: 6 GiB. Free 4 GiB of 24: refused, saying both.
  const std::string what = thrown_what<std::bad_alloc>(
      [] { check_ring_memory(std::size_t{1} << 28, 24, machine_memory{24 * GiB, 4 * GiB}); });
  EXPECT_NE(what.find("capacity 268435456 needs 6 GiB"), std::string::npos) << what;
  EXPECT_NE(what.find("cannot be had (4 GiB is free now, of 24 GiB)"), std::string::npos) << what;
  // Free 8 GiB: it fits. Unknown figures (0) refuse nothing.
  EXPECT_NO_THROW(check_ring_memory(std::size_t{1} << 28, 24, machine_memory{24 * GiB, 8 * GiB}));
  EXPECT_NO_THROW(check_ring_memory(std::size_t{1} << 28, 24, machine_memory{0, 0}));
  // More than the machine has at all still says so.
  const std::string w2 = thrown_what<std::bad_alloc>(
      [] { check_ring_memory(std::size_t{1} << 28, 24, machine_memory{4 * GiB, 2 * GiB}); });
  EXPECT_NE(w2.find("(this machine has 4 GiB)"), std::string::npos) << w2;
  // This machine's own figure: Linux says it, and it is no more than memory plus swap
  // could hold.
  const std::uint64_t free_now = sluice::detail::available_memory();
  EXPECT_GT(free_now, 0U);
  EXPECT_LT(free_now, std::uint64_t{1} << 50);
}

TEST(ChannelCapacity, a_stage_capacity_takes_the_same_checks) {
  sluice::graph g;
  sluice::stage_options o;
  o.capacity = std::size_t{1} << 62;
  const std::string what = thrown_what<std::invalid_argument>([&] {
    (void)g.source<int>("huge", [](sluice::sender<int>& out) { (void)out.push(1); }, o);
  });
  EXPECT_NE(what.find("capacity 4611686018427387904"), std::string::npos) << what;
}

TEST(ChannelCapacity, a_large_but_possible_ring_still_works) {
  auto [tx, rx] = sluice::bounded<int>(std::size_t{1} << 20);
  EXPECT_EQ(tx.capacity(), std::size_t{1} << 20);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(tx.try_push(i), status::ok);
  int sum = 0;
  while (auto v = rx.try_pop()) sum += *v;
  EXPECT_EQ(sum, 999 * 1000 / 2);
}

// ---- a full ring's spin waits for room ahead ----------------------------------------------

// ring_buffer::room_ahead(gap): is the slot gap positions past tail free for its push?
// The hint a blocked push's spin waits on (ring_flavour::push_worth_retrying).
TEST(ChannelRoomAhead, the_slot_gap_past_tail_is_free_only_once_the_consumer_passed_it) {
  sluice::detail::ring_buffer<int> r(1024);
  EXPECT_TRUE(r.room_ahead(0));
  EXPECT_TRUE(r.room_ahead(128));
  for (int i = 0; i < 1024; ++i) {
    int v = i;
    ASSERT_EQ(r.try_push(v), sluice::detail::ring_buffer<int>::push_result::ok);
  }
  EXPECT_FALSE(r.room_ahead(0));
  EXPECT_FALSE(r.room_ahead(128));
  std::optional<int> out;
  ASSERT_TRUE(r.try_pop(out));  // one slot free: room at tail, not 128 past it
  EXPECT_TRUE(r.room_ahead(0));
  EXPECT_FALSE(r.room_ahead(128));
  for (int i = 0; i < 127; ++i) {
    out.reset();
    ASSERT_TRUE(r.try_pop(out));
  }
  EXPECT_FALSE(r.room_ahead(128));  // 128 free: positions tail..tail+127
  out.reset();
  ASSERT_TRUE(r.try_pop(out));
  EXPECT_TRUE(r.room_ahead(128));
  EXPECT_FALSE(r.room_ahead(129));
  r.close();
  EXPECT_TRUE(r.room_ahead(1000));  // closed: a re-try will say so
}

// A push blocked on a full ring spins for an eighth of the ring to free up, but must not
// wait for it: when the consumer frees one slot and nothing more, the push still lands,
// whether it was still spinning or had parked. A lone sender and a shared one alike.
TEST(ChannelRoomAhead, a_blocked_push_lands_when_only_one_slot_is_freed) {
  watchdog dog(kTestLimit);
  for (const bool shared : {false, true}) {
    for (const bool parked : {false, true}) {
      for (int round = 0; round < (parked ? 5 : 50); ++round) {
        auto [tx, rx] = sluice::bounded<std::uint64_t>(1024);
        for (std::uint64_t i = 0; i < 1024; ++i) ASSERT_EQ(tx.try_push(i), status::ok);
        std::optional<sluice::sender<std::uint64_t>> copy;
        if (shared) copy.emplace(tx);
        std::jthread pusher([s = std::move(tx)]() mutable { EXPECT_TRUE(s.push(1024)); });
        if (parked) {
          ASSERT_TRUE(parked_pushers(rx, 1));
        }
        ASSERT_EQ(rx.pop(), std::optional<std::uint64_t>(0));  // one slot, and no more
        pusher.join();                                         // the watchdog fails a push that waits on
        EXPECT_EQ(rx.stats().size, 1024U) << "shared " << shared << " parked " << parked;
        for (std::uint64_t i = 1; i <= 1024; ++i) ASSERT_EQ(rx.try_pop(), std::optional<std::uint64_t>(i));
      }
    }
  }
}

// ---- the lone-side path ------------------------------------------------------------------

// One sender pushes with a plain store; a copy of it makes the side shared (CAS), and
// dropping the copy makes it lone again. The items keep one order across the switches,
// through single pushes and bulk pushes alike, and the counters balance.
TEST(ChannelLoneSide, a_sender_keeps_its_order_while_its_side_goes_lone_shared_lone) {
  auto [tx, rx] = sluice::bounded<std::uint64_t>(512);
  std::uint64_t next = 0;
  for (int i = 0; i < 100; ++i) ASSERT_EQ(tx.try_push(next++), status::ok);  // lone
  {
    sluice::sender<std::uint64_t> copy = tx;  // shared: CAS
    for (int i = 0; i < 100; ++i) ASSERT_EQ(copy.try_push(next++), status::ok);
    std::vector<std::uint64_t> bulk;
    for (int i = 0; i < 100; ++i) bulk.push_back(next++);
    ASSERT_EQ(tx.push_all(std::move(bulk)), 100U);
  }
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(tx.push(next++));  // lone again
  std::vector<std::uint64_t> got;
  while (auto v = rx.try_pop()) got.push_back(*v);
  ASSERT_EQ(got.size(), next);
  for (std::uint64_t i = 0; i < next; ++i) ASSERT_EQ(got[i], i);
  expect_conserved(tx);
}

// The same for one receiver: lone pops, then shared pops and pop_some, then lone again.
TEST(ChannelLoneSide, a_receiver_keeps_the_order_while_its_side_goes_lone_shared_lone) {
  auto [tx, rx] = sluice::bounded<std::uint64_t>(512);
  for (std::uint64_t i = 0; i < 400; ++i) ASSERT_EQ(tx.try_push(i), status::ok);
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 100; ++i) got.push_back(*rx.try_pop());  // lone
  {
    sluice::receiver<std::uint64_t> copy = rx;  // shared: CAS
    for (int i = 0; i < 100; ++i) got.push_back(*copy.try_pop());
    ASSERT_EQ(rx.pop_some(std::back_inserter(got), 100), 100U);
  }
  for (int i = 0; i < 100; ++i) got.push_back(*rx.pop());  // lone again
  for (std::uint64_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], i);
  EXPECT_FALSE(rx.try_pop().has_value());
  expect_conserved(rx);
}

// The lone side's plain-store push and pop (try_push_single / try_pop_single), the shared
// side's CAS ones and the bulk ones all hand slots over through the same stamps: whichever
// kind freed a slot, every kind of push takes it on the next lap, and every kind of pop
// tells an item from a freed slot. (The lone-side tests above never lap their ring.)
// Capacities 1, 3 (not a power of two) and 4, many laps, each push and pop of a random
// kind; the items come out in order, and "full" / "empty" come exactly when the count
// says so.
TEST(ChannelLoneSide, every_kind_of_push_and_pop_shares_the_slots_lap_after_lap) {
  using ring = sluice::detail::ring_buffer<std::uint64_t>;
  std::mt19937_64 rng(7);
  for (const std::size_t cap : {1U, 3U, 4U}) {
    ring r(cap);
    std::uint64_t pushed = 0, popped = 0;
    for (int step = 0; step < 20000; ++step) {
      const bool push = rng() % 2 == 0;
      if (push) {
        std::uint64_t v = pushed;
        bool ok = false;
        switch (rng() % 3) {
          case 0: ok = r.try_push_single(v) == ring::push_result::ok; break;
          case 1: ok = r.try_push(v) == ring::push_result::ok; break;
          default: {
            bool closed = false;
            std::uint64_t two[2] = {pushed, pushed + 1};
            const std::size_t k = r.try_push_bulk<true>(two, 2, closed);
            ASSERT_FALSE(closed);
            ASSERT_EQ(k, std::min<std::uint64_t>(2, cap - (pushed - popped))) << "cap " << cap << " step " << step;
            pushed += k;
            continue;
          }
        }
        ASSERT_EQ(ok, pushed - popped < cap) << "cap " << cap << " step " << step;
        EXPECT_EQ(r.room_ahead(0), pushed + ok - popped < cap) << "cap " << cap << " step " << step;
        if (ok) ++pushed;
      } else {
        std::optional<std::uint64_t> out[2];
        std::size_t k = 0;
        switch (rng() % 3) {
          case 0: k = r.try_pop_single(out[0]) ? 1 : 0; break;
          case 1: k = r.try_pop(out[0]) ? 1 : 0; break;
          default: k = r.try_pop_bulk(out, 2); break;
        }
        ASSERT_EQ(k == 0, pushed == popped) << "cap " << cap << " step " << step;
        for (std::size_t i = 0; i < k; ++i) ASSERT_EQ(*out[i], popped++) << "cap " << cap << " step " << step;
      }
    }
    ASSERT_GT(pushed, 1000 * cap);  // many laps
  }
}

// room_ahead(gap) lap after lap of lone pushes and pops: the slots the pops freed are
// room, the ones not yet popped are not.
TEST(ChannelRoomAhead, slots_lone_pops_freed_are_room_lap_after_lap) {
  sluice::detail::ring_buffer<int> r(1024);
  for (int lap = 0; lap < 3; ++lap) {
    for (int i = 0; i < 1024; ++i) {
      int v = i;
      ASSERT_EQ(r.try_push_single(v), sluice::detail::ring_buffer<int>::push_result::ok);
    }
    EXPECT_FALSE(r.room_ahead(0));
    std::optional<int> out;
    for (int i = 0; i < 128; ++i) {
      out.reset();
      ASSERT_TRUE(r.try_pop_single(out));
    }
    EXPECT_TRUE(r.room_ahead(127));
    EXPECT_FALSE(r.room_ahead(128));
    for (int i = 128; i < 1024; ++i) {
      out.reset();
      ASSERT_TRUE(r.try_pop_single(out));
    }
  }
}

// A lone sender blocked on a full ring is woken by a cancel from another side's handle,
// and a lone receiver blocked on an empty one likewise; nothing is left behind uncounted.
TEST(ChannelLoneSide, cancel_wakes_a_blocked_lone_sender_and_a_blocked_lone_receiver) {
  sluice_test::watchdog dog(kTestLimit);
  {
    auto [tx, rx] = sluice::bounded<std::uint64_t>(2);
    ASSERT_EQ(tx.try_push(1), status::ok);
    ASSERT_EQ(tx.try_push(2), status::ok);
    std::jthread pusher([s = std::move(tx)]() mutable { EXPECT_FALSE(s.push(3)); });
    ASSERT_TRUE(parked_pushers(rx, 1));
    rx.cancel();
    pusher.join();
    const sluice::channel_stats st = rx.stats();
    EXPECT_EQ(st.pushed, 2U);
    EXPECT_EQ(st.discarded, 2U);
    EXPECT_EQ(st.size, 0U);
  }
  {
    auto [tx, rx] = sluice::bounded<std::uint64_t>(2);
    std::jthread popper([r = std::move(rx)]() mutable { EXPECT_FALSE(r.pop().has_value()); });
    ASSERT_TRUE(parked_poppers(tx, 1));
    tx.cancel();
    popper.join();
    EXPECT_EQ(tx.try_push(4), status::closed);
  }
}

// cancel() wakes every blocked thread before it discards what the channel holds. The
// discards hand each item to on_discard (a dead letter written somewhere: slow), and a
// push blocked on the full channel slept through all of them (500 items at 1 ms each:
// the pusher woke after 545 ms). Here the first on_discard waits, up to 10 s, for the
// blocked pusher to have returned; before, it never did while the hook ran.
struct may_throw_on_move {  // its move may throw: the channel's locked flavour, not the ring
  int v = 0;
  explicit may_throw_on_move(int x) : v(x) {}
  may_throw_on_move(const may_throw_on_move&) = default;
  may_throw_on_move& operator=(const may_throw_on_move&) = default;
  may_throw_on_move(may_throw_on_move&& o) noexcept(false) : v(o.v) {}
  may_throw_on_move& operator=(may_throw_on_move&& o) noexcept(false) {
    v = o.v;
    return *this;
  }
};

template <class T>
void cancel_wakes_a_blocked_pusher_before_discarding() {
  sluice_test::watchdog dog(kTestLimit);
  std::atomic<bool> returned{false};
  std::atomic<int> discards{0};
  bool seen_from_the_hook = false;
  sluice::channel_options<T> o;
  o.capacity = 4;
  o.on_discard = [&](T&&) {
    if (discards.fetch_add(1) == 0) {
      seen_from_the_hook = sluice_test::eventually([&] { return returned.load(); }, std::chrono::seconds(10));
    }
  };
  auto [tx, rx] = sluice::bounded<T>(std::move(o));
  for (int i = 0; i < 4; ++i) {
    T v(i);
    ASSERT_EQ(tx.try_push(v), status::ok);
  }
  std::atomic<pid_t> tid{0};
  std::jthread pusher([s = std::move(tx), &returned, &tid]() mutable {
    tid = current_tid();
    EXPECT_FALSE(s.push(T(99)));
    returned = true;
  });
  ASSERT_TRUE(parked_pushers(rx, 1));
  // Asleep in the kernel (state S), past its spin: a spinning push would see the cancel at
  // once whatever the order.
  ASSERT_TRUE(sluice_test::eventually([&] { return thread_state(tid.load()) == 'S'; }, std::chrono::seconds(10)));
  rx.cancel();  // the hook runs on this thread, inside cancel()
  pusher.join();
  EXPECT_TRUE(seen_from_the_hook) << "the blocked push returned only after every discard";
  EXPECT_EQ(discards.load(), 4);
  const sluice::channel_stats st = rx.stats();
  EXPECT_EQ(st.discarded, 4U);
  EXPECT_EQ(st.size, 0U);
}

// A push that claimed its ring slot before close() and publishes after it. close() woke
// both parked receivers, which went back to sleep (closed, but an item still coming); the
// late publish then woke only one of them, which took the item and ended, and the other
// slept for ever (a graph fed through an inlet closed mid-push never ended). The item's
// move is held open by a gate here, as a preempted pusher holds it.
struct gated_move {
  static inline std::atomic<bool> inside{false}, open{true};
  int v = 0;
  explicit gated_move(int x) : v(x) {}
  gated_move(gated_move&& o) noexcept : v(o.v) {
    if (v == 42) {
      inside = true;
      while (!open.load()) std::this_thread::yield();
    }
  }
  gated_move& operator=(gated_move&& o) noexcept {
    v = o.v;
    return *this;
  }
};
static_assert(std::is_nothrow_move_constructible_v<gated_move>);  // the ring, not the locked queue

TEST(ChannelClose, a_push_landing_after_close_wakes_every_parked_receiver) {
  sluice_test::watchdog dog(kTestLimit);
  auto [tx, rx] = sluice::bounded<gated_move>({.capacity = 4});
  sluice::sender<gated_move> second = tx;  // two senders: the shared (CAS) push path
  std::atomic<int> ended{0}, got{0};
  std::atomic<pid_t> tids[2] = {0, 0};
  std::vector<std::jthread> receivers;
  for (int i = 0; i < 2; ++i) {
    receivers.emplace_back([r = rx, &ended, &got, &tid = tids[i]]() mutable {
      tid = current_tid();
      while (r.pop()) ++got;
      ++ended;
    });
  }
  ASSERT_TRUE(parked_poppers(tx, 2));
  gated_move::inside = false;
  gated_move::open = false;
  std::jthread pusher([s = std::move(second)]() mutable { EXPECT_TRUE(s.push(gated_move(42))); });
  ASSERT_TRUE(sluice_test::eventually([] { return gated_move::inside.load(); }, std::chrono::seconds(10)));
  tx.close();  // the other sender: the channel is closed, the push of 42 still in flight
  // Both receivers back asleep in the kernel after close()'s wake-up.
  ASSERT_TRUE(sluice_test::eventually([&] { return thread_state(tids[0].load()) == 'S' && thread_state(tids[1].load()) == 'S'; },
                                      std::chrono::seconds(10)));
  gated_move::open = true;
  pusher.join();
  EXPECT_TRUE(sluice_test::eventually([&] { return ended.load() == 2; }, std::chrono::seconds(10)))
      << "receivers ended: " << ended.load() << " of 2";
  EXPECT_EQ(got.load(), 1);
  if (ended.load() != 2) rx.cancel();  // lets a receiver left asleep end, so the test can
}

TEST(ChannelCancel, wakes_a_blocked_pusher_before_its_discards_run_ring) {
  cancel_wakes_a_blocked_pusher_before_discarding<std::uint64_t>();
}
TEST(ChannelCancel, wakes_a_blocked_pusher_before_its_discards_run_locked) {
  static_assert(!std::is_nothrow_move_constructible_v<may_throw_on_move>);
  cancel_wakes_a_blocked_pusher_before_discarding<may_throw_on_move>();
}

}  // namespace

namespace {

// stats().popped counts items handed to receivers. Discarding pops (drop_oldest's, here)
// move the ring's head too and count themselves as discarded only after, so a reader
// preempted between its two loads counted them as popped: 5749 items "popped" from a
// channel nobody popped, the count falling back to 0 later (a counter reset to a
// Prometheus scraper). Here two threads push into a full drop_oldest channel while one
// receiver pops now and then, and every snapshot is checked: popped is at most what the
// receiver took (plus the one pop it may have claimed and not yet counted), and never less
// than in the snapshot before.
TEST(ChannelStats, popped_never_counts_a_discard_and_never_goes_down) {
  const watchdog dog(120s);
  auto [tx, rx] = sluice::bounded<long>({.capacity = 4, .overflow = sluice::overflow::drop_oldest});
  constexpr long kEach = 100'000;
  std::atomic<int> pushing{2};
  std::atomic<std::uint64_t> taken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, tx = tx]() mutable {
      for (long i = 0; i < kEach; ++i) {
        long v = i;
        EXPECT_EQ(tx.try_push(v), status::ok);
      }
      pushing.fetch_sub(1);
    });
  }
  threads.emplace_back([&, rx = rx]() mutable {
    for (long k = 0; pushing.load() != 0; ++k) {
      if (k % 64 == 0 && rx.try_pop()) taken.fetch_add(1);
    }
  });
  std::uint64_t last = 0, snapshots = 0, over = 0, fell = 0;
  while (pushing.load() != 0) {
    const sluice::channel_stats st = rx.stats();
    const std::uint64_t got = taken.load();
    ++snapshots;
    if (st.popped > got + 1) ++over;
    if (st.popped < last) ++fell;
    last = st.popped;
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(over, 0u) << "of " << snapshots << " snapshots, popped counted discards";
  EXPECT_EQ(fell, 0u) << "of " << snapshots << " snapshots, popped went down";
  const sluice::channel_stats st = rx.stats();
  EXPECT_EQ(st.popped, taken.load());
  EXPECT_EQ(st.pushed, 2u * kEach);
  EXPECT_EQ(st.pushed, st.popped + st.discarded + st.size);
}

}  // namespace
