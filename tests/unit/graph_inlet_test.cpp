// Feeding a graph from outside and knowing when it ends (issue 12): g.input<T>() and
// its inlet, wait_for(), done(), on_done, and items dropped by a stage's exception as
// dead letters carrying that exception.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sluice/graph.hpp"
#include "support/graph_support.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;
using sluice_test::eventually;
using sluice_test::kTimeoutScale;
using sluice_test::watchdog;

struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const sluice::metrics::stage_snapshot* find_stage(const sluice::metrics::snapshot& s, const std::string& name) {
  for (const auto& st : s.stages) {
    if (st.name == name) return &st;
  }
  return nullptr;
}

// ---- many threads, one inlet object ---------------------------------------------------

TEST(graph_inlet, eight_threads_pushing_into_one_inlet_object_deliver_each_item_exactly_once) {
  watchdog dog(60s, "eight_pushers");
  constexpr int kThreads = 8;
#if defined(SLUICE_SANITIZER_BUILD)
  constexpr std::uint64_t kEach = 2'000;
#else
  constexpr std::uint64_t kEach = 20'000;
#endif
  std::vector<std::uint32_t> seen(kThreads * kEach, 0);
  sluice::graph g;
  auto [in, s] = g.input<std::uint64_t>("in", {.capacity = 64});
  auto doubled = g.map("twice", s, [](std::uint64_t v) { return v * 2; }, {.replicas = 2, .ordered = false});
  g.sink("sink", doubled, [&](std::uint64_t v) { ++seen[v / 2]; });
  g.start();
  std::atomic<bool> go{false};
  std::atomic<std::uint64_t> refused{0};
  std::vector<std::thread> pushers;
  for (int t = 0; t < kThreads; ++t) {
    pushers.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (std::uint64_t i = 0; i < kEach; ++i) {
        const std::uint64_t v = static_cast<std::uint64_t>(t) * kEach + i;
        // The same object from every thread; mix the calls.
        bool ok = false;
        switch (i % 3) {
          case 0: ok = in.push(v); break;
          case 1: ok = in.push_for(v, 10s) == sluice::status::ok; break;
          default: {
            const std::uint64_t copy = v;
            ok = in.push(copy);
            break;
          }
        }
        if (!ok) refused.fetch_add(1);
      }
    });
  }
  go.store(true);
  for (auto& p : pushers) p.join();
  in.close();
  const std::optional<sluice::report> r = g.wait_for(30s * kTimeoutScale);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(refused.load(), 0u);
  for (std::size_t v = 0; v < seen.size(); ++v) ASSERT_EQ(seen[v], 1u) << "item " << v;
  EXPECT_TRUE(r->balanced());
  const auto* st = find_stage(r->metrics, "in");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->items_out, kThreads * kEach);
  EXPECT_EQ(st->state, "done");
  EXPECT_TRUE(g.done());
}

// ---- a failing stage -----------------------------------------------------------------------

TEST(graph_inlet, after_a_stage_fails_every_push_fails_promptly_and_nothing_accepted_is_lost) {
  watchdog dog(60s, "inlet_failure");
  constexpr int kThreads = 4;
  constexpr std::uint64_t kFailAt = 3'000;
  std::mutex mu;
  std::multiset<std::uint64_t> reached;       // guarded by mu
  std::multiset<std::uint64_t> dead;          // guarded by mu
  std::vector<std::string> dead_errors;       // guarded by mu: what() of dead letters with an error
  std::atomic<int> done_calls{0};
  std::exception_ptr done_error;
  std::atomic<std::int64_t> thrown_at{0};
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
                     const auto* v = d.get<std::uint64_t>();
                     ASSERT_NE(v, nullptr);
                     std::lock_guard lk(mu);
                     dead.insert(*v);
                     if (d.error()) {
                       try {
                         std::rethrow_exception(d.error());
                       } catch (const std::exception& e) {
                         dead_errors.push_back(std::string(d.stage()) + ": " + e.what());
                       }
                     }
                   },
                   .on_done = [&](const sluice::report&, std::exception_ptr e) {
                     done_error = e;
                     done_calls.fetch_add(1);
                   }});
  auto [in, s] = g.input<std::uint64_t>("in", {.capacity = 32});
  auto checked = g.map("check", s, [&](std::uint64_t v) {
    if (v == kFailAt) {
      thrown_at.store(clk::now().time_since_epoch().count());
      throw boom("bad item");
    }
    return v;
  });
  g.sink("sink", checked, [&](std::uint64_t v) {
    std::lock_guard lk(mu);
    reached.insert(v);
  });
  g.start();
  std::vector<std::vector<std::uint64_t>> accepted(kThreads);
  std::vector<std::int64_t> first_refusal(kThreads, 0);
  std::vector<std::thread> pushers;
  for (int t = 0; t < kThreads; ++t) {
    pushers.emplace_back([&, t] {
      // Values t, t + kThreads, ...: kFailAt is pushed by one of them.
      for (std::uint64_t v = static_cast<std::uint64_t>(t);; v += kThreads) {
        if (in.push(v)) {
          accepted[static_cast<std::size_t>(t)].push_back(v);
          continue;
        }
        first_refusal[static_cast<std::size_t>(t)] = clk::now().time_since_epoch().count();
        // Every later push fails at once too, whichever call.
        EXPECT_EQ(in.try_push(v), sluice::status::closed);
        EXPECT_EQ(in.push_for(v, 10s), sluice::status::closed);
        return;
      }
    });
  }
  for (auto& p : pushers) p.join();
  const auto deadline = clk::now() + 10s * kTimeoutScale;
  std::optional<sluice::report> r;
  bool threw = false;
  while (!threw && clk::now() < deadline) {
    try {
      r = g.wait_for(20ms);
      if (r) break;
    } catch (const sluice::stage_error& e) {
      threw = true;
      EXPECT_EQ(e.stage(), "check");
    }
  }
  ASSERT_TRUE(threw) << "wait_for did not report the failure";
  EXPECT_TRUE(g.done());
  EXPECT_EQ(done_calls.load(), 1);
  ASSERT_TRUE(done_error);
  EXPECT_THROW(std::rethrow_exception(done_error), sluice::stage_error);

  ASSERT_NE(thrown_at.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    const auto late = std::chrono::nanoseconds(first_refusal[static_cast<std::size_t>(t)] - thrown_at.load());
    EXPECT_LT(late, 100ms * kTimeoutScale) << "pusher " << t << " kept being accepted after the failure";
  }
  // Every accepted item reached the sink or is a dead letter, exactly once.
  std::lock_guard lk(mu);
  std::size_t n_accepted = 0;
  for (const auto& a : accepted) {
    n_accepted += a.size();
    for (std::uint64_t v : a) {
      EXPECT_EQ(reached.count(v) + dead.count(v), 1u) << "item " << v;
    }
  }
  EXPECT_EQ(reached.size() + dead.size(), n_accepted);
  ASSERT_EQ(dead_errors.size(), 1u);
  EXPECT_EQ(dead_errors.front(), "check: bad item");
  EXPECT_TRUE(g.last_report().balanced());
}

// ---- request_stop with items in flight ----------------------------------------------------

TEST(graph_inlet, request_stop_closes_the_inlet_and_every_accepted_item_reaches_the_sink) {
  watchdog dog(60s, "inlet_stop");
  std::atomic<std::uint64_t> reached{0};
  std::atomic<std::uint64_t> sum{0};
  sluice_test::gate slow;
  sluice::graph g;
  auto [in, s] = g.input<std::uint64_t>("in", {.capacity = 16});
  auto m = g.map("m", s, [](std::uint64_t v) { return v + 1; }, {.capacity = 4});
  g.sink("sink", m, [&](std::uint64_t v) {
    slow.wait();  // held until the pushers are backpressured and the stop was requested
    reached.fetch_add(1);
    sum.fetch_add(v);
  });
  g.start();
  std::atomic<std::uint64_t> accepted{0}, accepted_sum{0};
  std::vector<std::thread> pushers;
  for (int t = 0; t < 3; ++t) {
    pushers.emplace_back([&] {
      for (std::uint64_t v = 1;; ++v) {
        if (!in.push(v)) return;
        accepted.fetch_add(1);
        accepted_sum.fetch_add(v + 1);
      }
    });
  }
  // Items in flight all the way down: the sink holds one, the map waits to push into its
  // full output, and the pushers wait on the full input. (Only then is accepted > 16
  // certain: on a slow machine the map may not have popped anything yet when the input
  // first fills.)
  ASSERT_TRUE(eventually([&] {
    const sluice::metrics::snapshot snap = g.snapshot();
    const auto* st = find_stage(snap, "in");
    const auto* map = find_stage(snap, "m");
    return st != nullptr && !st->blocked_on.empty() && map != nullptr && map->blocked_op == "push";
  }));
  g.request_stop();
  for (auto& p : pushers) p.join();  // every push fails once the inlet is closed
  EXPECT_EQ(in.try_push(1), sluice::status::closed);
  slow.open();
  const sluice::report r = g.wait();
  EXPECT_EQ(reached.load(), accepted.load());
  EXPECT_EQ(sum.load(), accepted_sum.load());
  EXPECT_GT(accepted.load(), 16u);
  EXPECT_TRUE(r.balanced());
  // In the snapshot: a stage whose pushers were backpressured, never the bottleneck.
  const auto* st = find_stage(r.metrics, "in");
  ASSERT_NE(st, nullptr);
  EXPECT_GT(st->backpressured_ns, 0u);
  EXPECT_EQ(st->busy_ns, 0u);
  EXPECT_NE(r.metrics.bottleneck, std::optional<std::string>("in"));
}

// ---- close, copies, lifetime ------------------------------------------------------------

TEST(graph_inlet, close_on_any_copy_or_dropping_the_last_copy_ends_the_input) {
  watchdog dog(30s, "inlet_close");
  {
    sluice::graph g;
    auto [in, s] = g.input<int>("in");
    std::vector<int> got;
    g.sink("sink", s, [&](int v) { got.push_back(v); });
    g.start();
    sluice::inlet<int> copy = in;
    EXPECT_TRUE(in.push(1));
    EXPECT_TRUE(copy.push(2));
    copy.close();
    EXPECT_FALSE(in.push(3));
    EXPECT_TRUE(in.is_closed());
    ASSERT_TRUE(g.wait_for(10s * kTimeoutScale).has_value());
    EXPECT_EQ(got, (std::vector<int>{1, 2}));
  }
  {
    sluice::graph g;
    std::vector<int> got;
    std::optional<sluice::inlet<int>> keep;
    {
      auto [in, s] = g.input<int>("in");
      g.sink("sink", s, [&](int v) { got.push_back(v); });
      keep = in;
      EXPECT_TRUE(in.push(7));  // before start: buffered
    }
    g.start();
    EXPECT_FALSE(g.wait_for(50ms).has_value());  // one copy is left: still open
    EXPECT_FALSE(g.done());
    keep.reset();                                // the last copy: the input ends
    ASSERT_TRUE(g.wait_for(10s * kTimeoutScale).has_value());
    EXPECT_EQ(got, (std::vector<int>{7}));
  }
  sluice::inlet<int> empty;
  EXPECT_THROW((void)empty.push(1), std::logic_error);
  EXPECT_TRUE(empty.is_closed());
}

TEST(graph_inlet, cancel_before_start_makes_pushes_fail_at_once) {
  watchdog dog(30s, "inlet_cancel_before_start");
  std::atomic<int> done_calls{0};
  sluice::graph g({.on_done = [&](const sluice::report&, std::exception_ptr e) {
    EXPECT_TRUE(e);
    done_calls.fetch_add(1);
  }});
  auto [in, s] = g.input<int>("in", {.capacity = 1});
  g.sink("sink", s, [](int) {});
  EXPECT_TRUE(in.push(1));
  g.cancel();
  EXPECT_FALSE(in.push(2));  // would block on the full input otherwise
  EXPECT_EQ(in.try_push(2), sluice::status::closed);
  EXPECT_THROW(g.run(), sluice::cancelled);
  EXPECT_EQ(done_calls.load(), 1);
  EXPECT_TRUE(g.done());
}

// An input added after cancel() or request_stop() is as the inlets there were then: its
// pushes fail (cancel), or it is closed and what came before drains (request_stop). Both
// took pushes, the cancelled graph's only to make them dead letters.
TEST(graph_inlet, an_input_added_after_cancel_or_request_stop_is_failed_or_closed_like_the_others) {
  watchdog dog(30s, "inlet_added_late");
  {
    sluice::graph g;
    g.cancel();
    auto [in, s] = g.input<int>("late");
    EXPECT_EQ(in.try_push(1), sluice::status::closed);
    EXPECT_FALSE(in.push(1));
    g.sink("sink", s, [](int) {});
    EXPECT_THROW(g.run(), sluice::cancelled);
  }
  {
    sluice::graph g;
    auto [early, s1] = g.input<int>("early");
    g.request_stop();
    auto [late, s2] = g.input<int>("late");
    EXPECT_EQ(late.try_push(1), sluice::status::closed);
    int seen = 0;
    g.sink("sink1", s1, [&](int) { ++seen; });
    g.sink("sink2", s2, [&](int) { ++seen; });
    const sluice::report r = g.run();  // ends: both inlets are closed
    EXPECT_EQ(seen, 0);
    EXPECT_TRUE(r.balanced());
  }
}

// A snapshot() from another thread while the graph is being built, and request_stop() or
// cancel() while inputs are added (each "from any thread at any time"), race nothing: an
// edge gets its storage under the graph's lock (run under ThreadSanitizer in CI).
TEST(graph_inlet, snapshots_stops_and_cancels_from_another_thread_while_the_graph_is_built) {
  watchdog dog(60s, "build_while_observed");
  for (const int how : {0, 1, 2}) {
    SCOPED_TRACE(how == 0 ? "snapshot" : how == 1 ? "request_stop" : "cancel");
    sluice::graph g;
    std::atomic<bool> built{false};
    std::thread other([&] {
      do {  // at least once, however soon the build is done
        if (how == 0) (void)g.snapshot();
        if (how == 1) g.request_stop();
        if (how == 2) g.cancel();
        std::this_thread::yield();
      } while (!built.load());
    });
    std::vector<sluice::inlet<int>> inlets;
    std::vector<sluice::stream<int>> heads;
    for (int k = 0; k < 8; ++k) {
      std::string name = "in";
      name += std::to_string(k);
      auto [in, s] = g.input<int>(name, {.capacity = 4});
      inlets.push_back(in);
      for (int m = 0; m < 4; ++m) {
        name += '.';
        s = g.map(name, s, [](int v) { return v; }, {.capacity = 4, .fuse = m % 2 == 1});
      }
      heads.push_back(s);
    }
    auto all = g.merge(heads);
    g.sink("sink", all, [](int) {});
    built = true;
    other.join();
    for (auto& in : inlets) in.close();
    if (how == 2) {
      EXPECT_THROW(g.run(), sluice::cancelled);
    } else {
      EXPECT_TRUE(g.run().balanced());
    }
  }
}

// An on_discard hook that cancels or stops the graph, called before the run: by the
// cancel that makes an inlet's buffered items dead letters (a hook that called cancel()
// there used to wait for ever on the graph's lock, which that cancel held).
TEST(graph_inlet, an_on_discard_hook_may_cancel_or_stop_before_the_run) {
  watchdog dog(30s, "inlet_hook_cancel_before_start");
  std::atomic<int> hooked{0};
  sluice::graph* self = nullptr;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    const int* v = d.get<int>();
    EXPECT_TRUE(v != nullptr && *v == 1);
    ++hooked;
    self->request_stop();
    self->cancel();
  }});
  self = &g;
  auto [in, s] = g.input<int>("in", {.capacity = 4});
  std::atomic<int> got{0};
  g.sink("sink", s, [&](int) { ++got; });
  EXPECT_TRUE(in.push(1));
  g.cancel();
  EXPECT_EQ(hooked.load(), 1);
  EXPECT_FALSE(in.push(2));
  EXPECT_THROW(g.run(), sluice::cancelled);
  EXPECT_EQ(got.load(), 0);
  EXPECT_TRUE(g.done());
}

// An item whose destructor calls back into its graph: request_stop(), cancel() and
// snapshot() take the graph's lock. cancel() before start destroyed the inlet's buffered
// items while it held that lock, and such a destructor waited on it for ever.
struct calls_its_graph {
  static inline sluice::graph* graph = nullptr;
  static inline std::atomic<int> destroyed{0};
  int v = 0;
  bool live = true;
  explicit calls_its_graph(int x) : v(x) {}
  calls_its_graph(calls_its_graph&& o) noexcept : v(o.v), live(std::exchange(o.live, false)) {}
  calls_its_graph& operator=(calls_its_graph&& o) noexcept {
    v = o.v;
    live = std::exchange(o.live, false);
    return *this;
  }
  ~calls_its_graph() {
    if (!live || graph == nullptr) return;
    ++destroyed;
    graph->request_stop();
    (void)graph->snapshot();
    graph->cancel();
  }
};

TEST(graph_inlet, cancel_before_start_with_items_whose_destructors_call_the_graph_returns) {
  watchdog dog(30s, "cancel before start, item destructors calling the graph");
  calls_its_graph::destroyed = 0;
  sluice::graph g;
  calls_its_graph::graph = &g;
  auto [in, s] = g.input<calls_its_graph>("in", {.capacity = 16});
  g.sink("sink", s, [](calls_its_graph) {});
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(in.push(calls_its_graph(i)));
  g.cancel();
  EXPECT_EQ(calls_its_graph::destroyed.load(), 10);
  calls_its_graph::graph = nullptr;
  EXPECT_FALSE(in.push(calls_its_graph(99)));
  EXPECT_THROW(g.run(), sluice::cancelled);
  const sluice::report r = g.last_report();
  std::uint64_t discarded = 0;
  for (const auto& c : r.metrics.channels) discarded += c.stats.discarded + c.dead_letters;
  EXPECT_EQ(discarded, 10u);
}

// An item whose move (into the input's slot) waits until the test releases it: a push
// held between claiming its slot and publishing the item.
struct held_move {
  static inline std::atomic<bool> hold{false};     // the next move waits
  static inline std::atomic<bool> entered{false};  // a move is waiting
  static inline std::atomic<bool> release{false};
  int v = 0;
  held_move() = default;
  explicit held_move(int x) : v(x) {}
  held_move(held_move&& o) noexcept : v(o.v) {
    if (hold.exchange(false)) {
      entered.store(true);
      // Bounded: a test that never releases fails through its watchdog, not here.
      (void)eventually([] { return release.load(); }, 60s);
    }
  }
  held_move& operator=(held_move&&) noexcept = default;
};

// A push through an inlet that is in progress while the graph is cancelled and destroyed
// lands after the cancel, so it discards its own item and reports it to the graph. The
// destructor must wait for it: the report reaches on_discard before the graph is gone
// (it used to run on freed memory), and the push that succeeded is a dead letter.
// A push that claimed its slot before a teardown lands after it, and discards its own
// item. The run's end waits for it: the report that wait() and on_done get counts the
// dead letter (it came after both: an unbalanced report, a dead letter after on_done),
// and so does the graph's destructor.
TEST(graph_inlet, the_runs_end_waits_for_a_push_in_progress_and_reports_its_item) {
  watchdog dog(60s, "inlet_push_in_progress_at_the_end");
  held_move::hold = false;
  held_move::entered = false;
  held_move::release = false;
  std::atomic<bool> done{false};
  std::atomic<int> dead{0};
  std::atomic<int> dead_at_done{-1};
  std::atomic<bool> balanced_at_done{false};
  std::atomic<int> pushed{-1};
  auto g = std::make_unique<sluice::graph>(sluice::graph_options{
      .on_discard = [&](const sluice::dead_letter&) { dead.fetch_add(1); },
      .on_done = [&](const sluice::report& r, std::exception_ptr) {
        dead_at_done = dead.load();
        balanced_at_done = r.balanced();
        done = true;
      }});
  auto [in, s] = g->input<held_move>("in", {.capacity = 8});
  g->sink("sink", s, [](held_move) {});
  g->start();
  held_move::hold = true;
  std::thread pusher([in = in, &pushed] { pushed = static_cast<int>(in.try_push(held_move(1))); });
  ASSERT_TRUE(eventually([] { return held_move::entered.load(); }, 30s));  // slot claimed, item not yet in
  g->cancel();
  std::atomic<bool> waited{false};
  std::thread waiter([&] {
    EXPECT_THROW((void)g->wait(), sluice::cancelled);
    waited = true;
  });
  // The run cannot end while the push is inside (a bounded look, not a sync).
  EXPECT_FALSE(eventually([&] { return done.load() || waited.load(); }, 200ms));
  held_move::release = true;
  pusher.join();
  waiter.join();
  EXPECT_EQ(pushed.load(), static_cast<int>(sluice::status::ok));  // claimed before the cancel
  EXPECT_EQ(dead.load(), 1);           // so it is a dead letter,
  EXPECT_EQ(dead_at_done.load(), 1);   // reported before on_done,
  EXPECT_TRUE(balanced_at_done.load());  // and counted in its report
  EXPECT_TRUE(g->last_report().balanced());
  g.reset();
  EXPECT_EQ(dead.load(), 1);
  // After the graph: pushes fail without touching anything.
  EXPECT_EQ(in.try_push(held_move(2)), sluice::status::closed);
  EXPECT_FALSE(in.push(held_move(3)));
}

// Many threads pushing through an inlet while its graph, with a dead-letter hook, is
// cancelled and destroyed at random moments: every push that succeeded is processed or a
// dead letter reported before the destructor returned (ASan saw use-after-free here).
TEST(graph_inlet, pushes_racing_the_graphs_destruction_are_each_processed_or_reported) {
  watchdog dog(120s, "inlet_destroy_race");
  for (int round = 0; round < 100; ++round) {
    std::atomic<bool> go{false};
    std::atomic<bool> quit{false};
    std::atomic<bool> destroyed{false};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> processed{0};
    std::atomic<std::uint64_t> dead{0};
    std::atomic<std::uint64_t> late{0};
    std::vector<std::thread> pushers;
    {
      auto g = std::make_unique<sluice::graph>(sluice::graph_options{.on_discard = [&](const sluice::dead_letter&) {
        dead.fetch_add(1);
        if (destroyed.load()) late.fetch_add(1);
      }});
      auto [in, s] = g->input<long>("in", {.capacity = 4});
      g->sink("sink", s, [&](long) { processed.fetch_add(1); });
      g->start();
      for (int t = 0; t < 3; ++t) {
        pushers.emplace_back([&, in = in] {
          while (!go.load()) std::this_thread::yield();
          for (long i = 0; !quit.load(); ++i) {
            if (in.try_push(i) == sluice::status::ok) {
              accepted.fetch_add(1);
            } else {
              std::this_thread::yield();  // full or closed: let the graph's threads run (2 cores)
            }
          }
        });
      }
      go = true;
      // Destroy after a round-dependent number of accepted items (0 to 490): varies the
      // moment of the destruction against the pushes.
      const std::uint64_t after = static_cast<std::uint64_t>(round % 50) * 10;
      EXPECT_TRUE(eventually([&] { return accepted.load() >= after; }, 30s)) << "round " << round;
      g.reset();  // cancels, waits, destroys, while the pushers go on
      destroyed = true;
    }
    quit = true;
    for (auto& t : pushers) t.join();
    ASSERT_EQ(accepted.load(), processed.load() + dead.load()) << "round " << round;
    ASSERT_EQ(late.load(), 0U) << "round " << round;
  }
}

TEST(graph_inlet, an_idle_input_is_not_a_stall) {
  watchdog dog(30s, "inlet_idle");
  std::atomic<int> stalls{0};
  // The threshold leaves the stages time to reach their park: a waiting stage first spins
  // and yields, and on a loaded 2-core machine (ctest -j) its yields can take time slices
  // of milliseconds; until it parks, the watchdog sees it as running (the chain's end).
  // A stage that waits that long is a defect of its own (open, issue 10/11's waker work).
  sluice::graph g({.stall_threshold = 300ms, .on_stall = [&](const auto&) { stalls.fetch_add(1); }});
  auto [in, s] = g.input<int>("in");
  auto m = g.map("m", s, [](int v) { return v; });
  g.sink("sink", m, [](int) {});
  g.start();
  EXPECT_FALSE(g.wait_for(1s).has_value());  // idle: everyone waits for the inlet
  in.close();
  const auto r = g.wait_for(10s * kTimeoutScale);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(stalls.load(), 0);
  EXPECT_EQ(r->stalls, 0u);
}

// A stage that re-queues into its own graph's input (each item twice, so the flow grows
// until everything is full): in -> m -> k, and k pushes into in. The stall's wait-for
// chain went in -> m -> k and ended there, as if k were busy (its snapshot too: busy,
// blocked on nothing, named the bottleneck), hiding the cycle. Now k's push into the
// input is k's wait: the chain goes on through it, and k is blocked (push) on "in -> m".
TEST(graph_inlet, a_stage_pushing_into_its_own_graphs_input_is_in_the_stall_chain) {
  watchdog dog(60s, "inlet cycle");
  std::mutex mu;
  std::vector<sluice::metrics::wait_link> chain;
  sluice::graph g({.stall_threshold = 100ms, .on_stall = [&](const std::vector<sluice::metrics::wait_link>& c) {
                     std::lock_guard lk(mu);
                     chain = c;
                   }});
  auto [in, s] = g.input<int>("in", {.capacity = 2});
  auto m = g.map("m", s, [](int v) { return v; }, {.capacity = 2});
  g.sink("k", m, [in = in](int v) {
    (void)in.push(v);
    (void)in.push(v);
  });
  g.start();
  ASSERT_TRUE(in.push(1));
  auto shown = [&] {
    std::string t;
    for (const auto& l : chain) t += "[" + l.stage + " " + l.op + " '" + l.channel + "' held by " + l.holder + "] ";
    return t;
  };
  EXPECT_TRUE(eventually(
      [&] {
        std::lock_guard lk(mu);
        return chain.size() == 3;
      },
      30s));
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(chain.size(), 3u) << shown();
    EXPECT_EQ(chain[1].stage, "m") << shown();
    EXPECT_EQ(chain[1].holder, "k") << shown();
    EXPECT_EQ(chain[2].stage, "k") << shown();
    EXPECT_EQ(chain[2].op, "push") << shown();
    EXPECT_EQ(chain[2].channel, "in -> m") << shown();
    EXPECT_EQ(chain[2].holder, "m") << shown();
  }
  const sluice::metrics::snapshot snap = g.snapshot();
  for (const auto& st : snap.stages) {
    if (st.name != "k") continue;
    EXPECT_EQ(st.blocked_on, "in -> m");
    EXPECT_EQ(st.blocked_op, "push");
  }
  g.cancel();
  try {
    (void)g.wait_for(30s * kTimeoutScale);
  } catch (const std::exception&) {  // what a cancelled run ends with is not the point here
  }
  EXPECT_TRUE(g.done()) << "the cancelled cycle did not end";
}

TEST(graph_inlet, options_that_do_not_apply_to_an_input_are_refused_naming_them) {
  // An input runs no code on no thread of its own: an on_close, replicas or an error
  // policy given to it used to be dropped without a word (a cleanup that never ran).
  sluice::graph g;
  auto refused = [&](const std::string& name, const sluice::stage_options& o, const std::string& option) {
    try {
      (void)g.input<int>(name, o);
      ADD_FAILURE() << option << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("'" + name + "'"), std::string::npos) << what;
      EXPECT_NE(what.find(option), std::string::npos) << what;
    }
  };
  bool closed = false;
  refused("a", {.on_close = [&] { closed = true; }}, "on_close");
  refused("b", {.replicas = 4}, "replicas");
  refused("c", {.on_error = sluice::error_policy::skip}, "on_error");
  refused("d", {.on_error = sluice::restart{}}, "on_error");
  EXPECT_FALSE(closed);
  // A refused input leaves no stage behind: the names are free and the graph runs.
  auto [in, s] = g.input<int>("a", {.capacity = 4, .ordered = false});
  int got = 0;
  g.sink("sink", s, [&](int v) { got += v; });
  g.start();
  ASSERT_TRUE(in.push(5));
  in.close();
  ASSERT_TRUE(g.wait_for(10s * kTimeoutScale).has_value());
  EXPECT_EQ(got, 5);
}

// ---- wait_for, done, on_done ---------------------------------------------------------

TEST(graph_wait_for, nullopt_while_running_then_the_report_and_on_done_once) {
  watchdog dog(30s, "wait_for");
  sluice_test::gate release;
  std::atomic<int> done_calls{0};
  std::atomic<bool> joined_when_done{false};
  sluice::graph g({.on_done = [&](const sluice::report& r, std::exception_ptr e) {
    EXPECT_FALSE(e);
    EXPECT_TRUE(r.balanced());
    joined_when_done = !r.metrics.stages.empty() && r.metrics.stages.back().state == "done";
    done_calls.fetch_add(1);
  }});
  EXPECT_THROW((void)g.wait_for(1ms), std::logic_error);  // before start
  auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
    release.wait();
    (void)out.push(1);
  });
  long sum = 0;
  g.sink("sink", src, [&](int v) { sum += v; });
  g.start();
  EXPECT_FALSE(g.wait_for(20ms).has_value());
  EXPECT_FALSE(g.done());
  EXPECT_EQ(done_calls.load(), 0);
  release.open();
  ASSERT_TRUE(eventually([&] { return g.done(); }));  // without anyone in wait()
  EXPECT_EQ(done_calls.load(), 1);
  EXPECT_TRUE(joined_when_done.load());
  const auto r = g.wait_for(0s);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(sum, 1);
  EXPECT_THROW((void)g.wait_for(1s), std::logic_error);  // the outcome was taken
  EXPECT_THROW((void)g.wait(), std::logic_error);
  EXPECT_EQ(done_calls.load(), 1);
}

// Negative durations of any size mean "do not wait" (hours(-3,000,000) overflowed in the
// conversion to nanoseconds: undefined, and in practice a wait until the run ended).
// A started run that ends once `go` is set.
struct gated_run {
  std::atomic<bool> go{false};
  sluice::graph g;
  gated_run() {
    auto src = g.source<int>("src", [this](sluice::sender<int>& out) {
      (void)eventually([&] { return go.load(); }, 30s);
      out.push(1);
    });
    g.sink("sink", src, [](int) {});
    g.start();
  }
};

TEST(graph_wait_for, a_negative_or_nan_duration_does_not_wait) {
  watchdog dog(60s, "wait_for_negative");
  gated_run run;
  auto& g = run.g;
  auto& go = run.go;
  EXPECT_FALSE(g.wait_for(std::chrono::hours(-3'000'000)).has_value());
  EXPECT_FALSE(g.wait_for(std::chrono::hours::min()).has_value());
  EXPECT_FALSE(g.wait_for(std::chrono::nanoseconds::min()).has_value());
  EXPECT_FALSE(g.wait_for(std::chrono::duration<double>(-1e300)).has_value());
  EXPECT_FALSE(g.wait_for(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())).has_value());
  EXPECT_FALSE(g.wait_for(std::chrono::seconds(0)).has_value());
  go = true;
  EXPECT_TRUE(g.wait_for(std::chrono::hours::max()).has_value());
}

// A float duration a few seconds short of 292 years is "forever" too. Its conversion to
// nanoseconds is done in float, where it rounds up past 2^63: a saturation checked in
// double let it through, the conversion was undefined, and the wait came back at once.
TEST(graph_wait_for, a_float_duration_near_the_clocks_limit_waits_for_the_end) {
  watchdog dog(60s, "wait_for_float");
  gated_run run;
  auto& g = run.g;
  auto& go = run.go;
  // Lets the run end a moment after the wait has begun (no correctness rests on when).
  std::thread opener([&] {
    std::this_thread::sleep_for(50ms);
    go = true;
  });
  const auto r = g.wait_for(std::chrono::duration<float>(9.2233715e9f));
  opener.join();
  EXPECT_TRUE(r.has_value()) << "a 292-year wait returned before the run ended";
}

TEST(graph_wait_for, rethrows_the_failure_like_wait) {
  watchdog dog(30s, "wait_for_throws");
  sluice::graph g;
  auto src = g.source<int>("src", [](sluice::sender<int>&) { throw boom("nope"); });
  g.sink("sink", src, [](int) {});
  g.start();
  try {
    (void)g.wait_for(10s * kTimeoutScale);
    FAIL() << "wait_for should rethrow";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "src");
  }
  EXPECT_TRUE(g.done());
}

// ---- dead letters of a stage's exception ---------------------------------------------------

TEST(graph_dead_letters, skipped_items_are_dead_letters_with_their_error_and_stage) {
  watchdog dog(30s, "skip_dead_letters");
  std::mutex mu;
  std::vector<std::pair<std::string, int>> failed;  // stage, item
  std::vector<std::string> channels;
  std::atomic<int> other{0};
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    if (!d.error()) {
      other.fetch_add(1);
      return;
    }
    std::lock_guard lk(mu);
    failed.emplace_back(std::string(d.stage()), *d.get<int>());
    channels.emplace_back(d.channel());
    try {
      std::rethrow_exception(d.error());
    } catch (const boom& e) {
      EXPECT_EQ(std::string(e.what()), "odd " + std::to_string(*d.get<int>()));
    }
  }});
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 0; i < 10; ++i) (void)out.push(i);
  });
  auto f = g.filter("evens", src, [](const int& v) {
    if (v % 2 != 0) throw boom("odd " + std::to_string(v));
    return true;
  }, {.on_error = sluice::error_policy::skip});
  std::vector<int> got;
  g.sink("sink", f, [&](int v) { got.push_back(v); });
  const sluice::report r = g.run();
  EXPECT_EQ(got, (std::vector<int>{0, 2, 4, 6, 8}));
  std::sort(failed.begin(), failed.end());
  ASSERT_EQ(failed.size(), 5u);
  for (std::size_t i = 0; i < failed.size(); ++i) {
    EXPECT_EQ(failed[i].first, "evens");
    EXPECT_EQ(failed[i].second, static_cast<int>(2 * i + 1));
    EXPECT_EQ(channels[i], "src -> evens");
  }
  EXPECT_EQ(other.load(), 0);
  const auto* evens = find_stage(r.metrics, "evens");
  ASSERT_NE(evens, nullptr);
  EXPECT_EQ(evens->errors, 5u);
}

// A whole-stream consumer (consume) makes the item in hand a dead letter through
// detail::held_item_failed, as jetstream::publish does. Under skip the stage goes on after
// a refused item; when it then ends by rethrowing the exception it gave for its last item
// (publish's failed send), that error is counted once, not once as the item's and again
// as the stage's end.
TEST(graph_dead_letters, a_held_item_failed_under_skip_and_rethrown_is_one_error_not_two) {
  watchdog dog(30s, "held_item_rethrown");
  std::mutex mu;
  std::vector<int> letters;  // guarded by mu: dead letters with an error (the rest of the
                             // input, left when the stage failed, has none)
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    std::lock_guard lk(mu);
    if (d.error()) letters.push_back(*d.get<int>());
  }});
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 0; i < 10; ++i) (void)out.push(i);
  });
  std::vector<int> kept;
  g.consume(
      "writer", src,
      [&](sluice::receiver<int>& in) {
        while (auto v = in.pop()) {
          if (*v == 3) {  // refused: a dead letter, counted, and the stage goes on
            const bool go_on = sluice::detail::held_item_failed(
                typeid(int), &*v, std::make_exception_ptr(boom("refused 3")));
            EXPECT_TRUE(go_on) << "skip should go on after a held item's failure";
            continue;
          }
          if (*v == 6) {  // the edge is gone: a dead letter, then the stage fails
            try {
              throw boom("gone at 6");
            } catch (...) {
              (void)sluice::detail::held_item_failed(typeid(int), &*v, std::current_exception());
              throw;
            }
          }
          kept.push_back(*v);
        }
      },
      {.on_error = sluice::error_policy::skip});
  g.start();
  try {
    ASSERT_TRUE(g.wait_for(20s * kTimeoutScale).has_value()) << "the graph did not end";
    ADD_FAILURE() << "the stage's rethrow did not fail the graph";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "writer");
  }
  EXPECT_EQ(kept, (std::vector<int>{0, 1, 2, 4, 5}));
  {
    std::lock_guard lk(mu);
    std::sort(letters.begin(), letters.end());
    EXPECT_EQ(letters, (std::vector<int>{3, 6}));
  }
  const sluice::report r = g.last_report();  // kept: find_stage points into it
  const auto* writer = find_stage(r.metrics, "writer");
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->errors, 2u);  // 3 and 6; it was 3 when the rethrow was counted again
}

TEST(graph_dead_letters, other_dead_letters_have_no_error_and_name_the_stage_they_were_bound_for) {
  watchdog dog(30s, "plain_dead_letters");
  std::mutex mu;
  std::vector<std::string> stages;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    EXPECT_FALSE(d.error());
    std::lock_guard lk(mu);
    stages.emplace_back(d.stage());
  }});
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 0; i < 100; ++i) {
      if (!out.push(i)) return;
    }
  });
  g.sink("first", src, [](int) { return false; });  // finishes early: the rest are dead letters
  (void)g.run();
  std::lock_guard lk(mu);
  for (const auto& s : stages) EXPECT_EQ(s, "first");
}

}  // namespace
