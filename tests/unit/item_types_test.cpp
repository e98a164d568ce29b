// Item types a user may bring that the library must not trip over (found by a probe of
// odd item types): a type that overloads unary operator& (ATL's CComPtr does), a type with
// a class-specific operator new, and explicit constructors that push_all must not call.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "sluice/channel.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;

// &h gives the address of its inner pointer, as a smart pointer's "address-of for out
// parameters" does.
struct handle {
  int id = 0;
  int* inner = nullptr;
  int** operator&() { return &inner; }
  int* const* operator&() const { return &inner; }
};

// Dead letters handed the hook the address `&v` gave: the inner pointer's, cast to the
// item type, so get<handle>() read the wrong bytes (a probe: 9 of 9 with a wrong id).
TEST(item_types, a_dead_letter_of_a_type_that_overloads_address_of_is_the_item_itself) {
  sluice_test::watchdog dog(20s);
  std::vector<int> dead_ids;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    const handle* h = d.get<handle>();
    ASSERT_NE(h, nullptr);
    dead_ids.push_back(h->id);
  }});
  auto src = g.source<handle>("src", [](sluice::sender<handle>& out) {
    for (int i = 1; i <= 10; ++i) {
      if (!out.push(handle{.id = i})) return;
    }
  }, {.capacity = 16});
  int taken = 0;
  g.sink("first", src, [&](handle h) {
    taken = h.id;
    return false;  // one, then the rest are dead letters
  });
  (void)g.run();
  EXPECT_EQ(taken, 1);
  ASSERT_FALSE(dead_ids.empty());
  for (const int id : dead_ids) {
    EXPECT_GE(id, 2) << "a dead letter read from the wrong address";
    EXPECT_LE(id, 10) << "a dead letter read from the wrong address";
  }
}

TEST(item_types, a_receivers_iterator_arrow_reaches_the_item_of_a_type_that_overloads_address_of) {
  sluice_test::watchdog dog(20s);
  auto [tx, rx] = sluice::bounded<handle>(4);
  ASSERT_TRUE(tx.push(handle{.id = 7}));
  tx.close();
  int seen = 0;
  for (auto it = rx.begin(); it != rx.end(); ++it) seen = it->id;
  EXPECT_EQ(seen, 7);
}

// A class-specific operator new (a pool allocator's): the ring's placement new found the
// class's operator new(size_t) and did not compile; it must construct in the slot itself.
struct pooled {
  int v = 0;
  static void* operator new(std::size_t n) { return ::operator new(n); }
  static void operator delete(void* p) noexcept { ::operator delete(p); }
};

TEST(item_types, a_type_with_its_own_operator_new_goes_through_the_lock_free_ring) {
  sluice_test::watchdog dog(20s);
  auto [tx, rx] = sluice::bounded<pooled>(4);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(tx.push(pooled{.v = i}));
    const auto got = rx.pop();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->v, i);
  }
  std::vector<pooled> many(3, pooled{.v = 9});
  EXPECT_EQ(tx.push_all(std::move(many)), 3u);  // the ring's bulk path
  std::vector<pooled> back;
  EXPECT_EQ(rx.pop_some(std::back_inserter(back), 8), 3u);
}

// push_all takes what push() takes: elements that convert to the item type implicitly
// (or, moved, the item type itself). It called explicit constructors: a vector of ints
// into a channel of vectors pushed vectors of those sizes, and an int* into a channel of
// unique_ptr made one owning a stack address.
template <class T, class Range>
constexpr bool can_push_all = requires(sluice::sender<T>& s, Range&& r) { s.push_all(std::forward<Range>(r)); };

TEST(item_types, push_all_takes_only_what_push_takes) {
  sluice_test::watchdog dog(20s);
  static_assert(!can_push_all<std::vector<int>, std::vector<int>>, "int -> vector<int> is explicit");
  static_assert(!can_push_all<std::unique_ptr<int>, std::vector<int*>>, "int* -> unique_ptr is explicit");
  static_assert(!can_push_all<std::unique_ptr<int>, std::vector<std::unique_ptr<int>>&>, "an lvalue is copied");
  static_assert(can_push_all<std::unique_ptr<int>, std::vector<std::unique_ptr<int>>>, "an rvalue is moved");
  static_assert(can_push_all<std::string, std::vector<const char*>>, "const char* -> string is implicit");
  static_assert(can_push_all<long, const std::vector<int>&>, "int -> long is implicit");
  auto [tx, rx] = sluice::bounded<std::string>(4);
  const char* words[] = {"a", "bc"};
  EXPECT_EQ(tx.push_all(words), 2u);
  EXPECT_EQ(rx.pop(), std::optional<std::string>("a"));
  EXPECT_EQ(rx.pop(), std::optional<std::string>("bc"));
}


// An item whose destructor reads its graph's snapshot (a user's accounting, say), in a
// channel with a lock: a type whose move may throw. A moved-from item is destroyed under
// that lock, and snapshot() read every channel's stats under it too: the stage deadlocked
// on itself (and with another thread's snapshot(), ABBA, the graph's lock against the
// channel's). stats() now takes no lock. A probe's finding.
struct reporting {
  int v = 0;
  const sluice::graph* g = nullptr;
  std::atomic<int>* reads = nullptr;
  reporting(int v_, const sluice::graph* g_, std::atomic<int>* r) : v(v_), g(g_), reads(r) {}
  reporting(const reporting&) = default;
  reporting(reporting&& o) noexcept(false) : v(o.v), g(o.g), reads(o.reads) {}
  reporting& operator=(const reporting&) = default;
  ~reporting() {
    if (g == nullptr) return;
    const sluice::metrics::snapshot s = g->snapshot();
    if (!s.channels.empty()) reads->fetch_add(1, std::memory_order_relaxed);
  }
};

TEST(item_types, an_items_destructor_may_take_its_graphs_snapshot) {
  sluice_test::watchdog dog(60s, "an item's ~T() calling snapshot()");
  std::atomic<int> reads{0};
  std::atomic<bool> stop{false};
  sluice::graph g;
  const sluice::graph* gp = &g;
  auto src = g.source<reporting>("src", [&](sluice::sender<reporting>& out) {
    for (int i = 0; i < 2000; ++i) {
      if (!out.push(reporting(i, gp, &reads))) return;
    }
  }, {.capacity = 4});
  long sum = 0;
  g.sink("sink", src, [&](reporting r) { sum += r.v; });
  std::thread watcher([&] {  // another thread's snapshots meanwhile: the ABBA side
    while (!stop.load(std::memory_order_relaxed)) (void)g.snapshot();
  });
  g.start();
  const bool ended = g.wait_for(50s).has_value();
  stop = true;
  watcher.join();
  ASSERT_TRUE(ended) << "the graph did not end: an item's destructor deadlocked in snapshot()";
  EXPECT_EQ(sum, 1999L * 2000 / 2);
  EXPECT_GT(reads.load(), 0);
}

// The same on a bare channel: a moved-from item's ~T() reads the channel's own stats.
TEST(item_types, an_items_destructor_may_read_its_own_channels_stats) {
  sluice_test::watchdog dog(20s, "an item's ~T() calling stats()");
  struct counted {
    sluice::sender<counted>* tx = nullptr;
    std::uint64_t* seen = nullptr;
    counted() = default;
    counted(sluice::sender<counted>* t, std::uint64_t* s) : tx(t), seen(s) {}
    counted(counted&& o) noexcept(false) : tx(o.tx), seen(o.seen) {}
    counted& operator=(counted&& o) noexcept(false) {
      tx = o.tx;
      seen = o.seen;
      return *this;
    }
    ~counted() {
      if (tx != nullptr) *seen = std::max(*seen, tx->stats().pushed);
    }
  };
  auto [tx, rx] = sluice::bounded<counted>(4);
  std::uint64_t seen = 0;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tx.push(counted(&tx, &seen)));
  for (int i = 0; i < 3; ++i) {
    auto v = rx.try_pop();
    ASSERT_TRUE(v.has_value());
    v->tx = nullptr;  // the popped copy is destroyed after tx is gone; the moved-from one in the pop read it
  }
  EXPECT_EQ(seen, 3u);
}

}  // namespace
