// Teardown (DESIGN.md §3): a failure in every position of a chain (source, middle,
// sink, one replica of several) while the neighbours are parked on full and on empty
// channels. run() throws the right stage_error promptly, no thread leaks, no stage
// function is called once the failure happened, every item is accounted exactly once
// (consumed, thrown on, or a dead letter) and every channel balances. Also: teardown
// interrupts restart backoffs, full reorder windows, ordered flat_map emitters and
// routing stages.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "sluice/graph.hpp"
#include "support/graph_support.hpp"
#include "support/tracked.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using sluice_test::eventually;
using sluice_test::watchdog;

using sluice_test::cat;
using sluice_test::gate;
using sluice_test::thread_count;

struct boom : std::runtime_error {
  boom() : std::runtime_error("injected failure") {}
};

// True when every named stage is parked in `op` for good: "push" on an output that is
// full, "pop" on an input that is empty. Taken from two snapshots in a row, so that a
// waiter that was just woken (and still counted as parked) is not mistaken for one that
// sleeps: such a stage has left its wait, or parked again, by the second look.
bool parked_once(const sluice::graph& g, const std::vector<std::string>& names, const std::string& op) {
  const auto s = g.snapshot();
  for (const auto& n : names) {
    const auto it = std::find_if(s.stages.begin(), s.stages.end(), [&](const auto& st) { return st.name == n; });
    if (it == s.stages.end() || it->blocked_op != op) return false;
    const auto ch = std::find_if(s.channels.begin(), s.channels.end(),
                                 [&](const auto& c) { return c.name == it->blocked_on; });
    if (ch == s.channels.end()) return false;
    if (op == "push" && ch->stats.size < ch->stats.capacity) return false;
    if (op == "pop" && ch->stats.size != 0) return false;
  }
  return true;
}
bool parked(const sluice::graph& g, const std::vector<std::string>& names, const std::string& op) {
  return parked_once(g, names, op) && parked_once(g, names, op);
}

enum class where { source, middle, sink, replica };

const char* where_name(where w) {
  switch (w) {
    case where::source: return "source";
    case where::middle: return "middle";
    case where::sink: return "sink";
    case where::replica: return "replica";
  }
  return "?";
}

// What every stage records, to check exactly-once accounting afterwards.
struct ledger {
  std::mutex mu;
  std::vector<std::uint64_t> pushed;     // accepted by the source's output
  std::vector<std::uint64_t> consumed;   // reached the sink's function
  std::vector<std::uint64_t> dead;       // handed to on_discard
  std::vector<std::uint64_t> thrown_on;  // the item the failing stage threw on
  std::atomic<int> failed_letters{0};    // dead letters carrying the stage's exception
  std::atomic<bool> thrown{false};
  std::atomic<int> late_calls{0};        // stage function calls after the throw
  std::atomic<bool> setup_ok{true};      // the neighbours were parked when it threw
  std::chrono::steady_clock::time_point thrown_at{};

  void note(std::vector<std::uint64_t>& v, std::uint64_t x) {
    std::lock_guard lk(mu);
    v.push_back(x);
  }
  void enter() {
    if (thrown.load()) late_calls.fetch_add(1);
  }
  [[noreturn]] void fail(bool conditions_met, std::uint64_t* item) {
    if (!conditions_met) setup_ok = false;
    if (item) note(thrown_on, *item);
    {
      std::lock_guard lk(mu);
      thrown_at = std::chrono::steady_clock::now();
    }
    thrown = true;
    throw boom();
  }
};

// The chain src -> m1 -> m2 -> m3 -> sink, failing at `w`, with item type Item.
template <class Item>
void chain_failure(where w) {
  SCOPED_TRACE(where_name(w));
  watchdog dog(60s, where_name(w));
  const std::size_t before = thread_count();
  const auto lives = Item::counters().snapshot();
  ledger L;
  std::string expect_stage;
  std::chrono::steady_clock::duration took{};
  {
    sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
      Item* it = d.get<Item>();
      ASSERT_NE(it, nullptr);
      if (d.error()) {
        // The item the failing stage threw on (which took it by value: moved from, so
        // its value is in thrown_on). It names the stage and the exception.
        EXPECT_EQ(std::string(d.stage()), expect_stage);
        EXPECT_THROW(std::rethrow_exception(d.error()), boom);
        L.failed_letters.fetch_add(1);
        return;
      }
      L.note(L.dead, it->value());
    }});
    const std::vector<std::string> chain = {"src", "m1", "m2", "m3", "sink"};
    auto all_but = [&](const std::string& a, std::size_t from, std::size_t to) {
      std::vector<std::string> v;
      for (std::size_t i = from; i < to; ++i) {
        if (chain[i] != a) v.push_back(chain[i]);
      }
      return v;
    };
    // The failing stage waits until the stages before it are parked on full channels
    // and the stages after it on empty ones, then throws.
    auto ready = [&](std::size_t pos) {
      const auto up = all_but("", 0, pos);
      const auto down = all_but("", pos + 1, chain.size());
      return eventually([&] {
        return parked_once(g, up, "push") && parked_once(g, down, "pop") && parked_once(g, up, "push") &&
               parked_once(g, down, "pop");
      });
    };

    auto src = g.source<Item>("src", [&](sluice::sender<Item>& out) {
      L.enter();
      for (std::uint64_t i = 0;; ++i) {
        if (w == where::source && i == 5) L.fail(ready(0), nullptr);
        if (!out.push(Item(i))) return;
        L.note(L.pushed, i);
      }
    }, {.capacity = 4});

    std::atomic<int> m2_calls{0};
    std::atomic<int> m2_blocked{0};
    gate hold;
    auto mid = [&](std::size_t pos) {
      return [&, pos](Item t, std::stop_token st) -> Item {
        L.enter();
        if (w == where::middle && pos == 2 && !L.thrown.load()) {
          std::uint64_t v = t.value();
          L.fail(ready(2), &v);
        }
        if (w == where::replica && pos == 2) {
          if (m2_calls.fetch_add(1) == 0) {
            // This replica fails once the other two are busy and the chain is parked.
            const bool ok = eventually([&] { return m2_blocked.load() == 2; }) && ready(2);
            std::uint64_t v = t.value();
            L.fail(ok, &v);
          }
          m2_blocked.fetch_add(1);
          hold.wait(st);  // never opened: woken by the teardown's stop request
        }
        return t;
      };
    };
    sluice::stage_options mo{.capacity = 4};
    auto m1 = g.map("m1", src, mid(1), mo);
    sluice::stage_options m2o{.capacity = 4};
    if (w == where::replica) m2o.replicas = 3;
    auto m2 = g.map("m2", m1, mid(2), m2o);
    auto m3 = g.map("m3", m2, mid(3), mo);
    g.sink("sink", m3, [&](Item t) {
      L.enter();
      if (w == where::sink) {
        std::uint64_t v = t.value();
        L.fail(ready(4), &v);
      }
      L.note(L.consumed, t.value());
    });

    expect_stage = w == where::source ? "src" : w == where::sink ? "sink" : "m2";
    try {
      g.run();
      ADD_FAILURE() << "run() returned normally";
    } catch (const sluice::stage_error& e) {
      took = std::chrono::steady_clock::now() - L.thrown_at;
      EXPECT_EQ(e.stage(), expect_stage);
      EXPECT_THROW(std::rethrow_exception(e.cause()), boom);
      EXPECT_EQ(e.suppressed(), 0u);
    }
    const sluice::report r = g.last_report();
    EXPECT_TRUE(r.balanced());
    EXPECT_TRUE(r.stuck.empty());
    for (const auto& c : r.metrics.channels) {
      EXPECT_EQ(c.stats.pushed, c.stats.popped + c.stats.discarded) << c.name;
    }
  }
  EXPECT_TRUE(L.setup_ok.load()) << "the neighbours never all parked";
  EXPECT_LT(took, 10s) << "teardown was not prompt";
  EXPECT_EQ(L.late_calls.load(), 0) << "a stage function was called after the failure";
  EXPECT_TRUE(eventually([&] { return thread_count() == before; })) << thread_count() << " vs " << before;
  EXPECT_EQ(Item::counters().live_since(lives), 0) << "an item leaked or was destroyed twice";

  // Exactly once: every pushed item was consumed, thrown on, or a dead letter.
  std::vector<std::uint64_t> fate = L.consumed;
  fate.insert(fate.end(), L.dead.begin(), L.dead.end());
  fate.insert(fate.end(), L.thrown_on.begin(), L.thrown_on.end());
  std::sort(fate.begin(), fate.end());
  std::sort(L.pushed.begin(), L.pushed.end());
  EXPECT_EQ(fate, L.pushed);
  EXPECT_FALSE(L.pushed.empty());
  // The item a stage threw on is a dead letter with the exception (a source has none).
  EXPECT_EQ(static_cast<std::size_t>(L.failed_letters.load()), L.thrown_on.size());
}

class teardown_in_position : public ::testing::TestWithParam<where> {};

TEST_P(teardown_in_position, lock_free_channels) { chain_failure<sluice_test::tracked>(GetParam()); }
// throwing_tracked's move may throw, so its channels take the mutex-guarded path.
TEST_P(teardown_in_position, locked_channels) { chain_failure<sluice_test::throwing_tracked>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(teardown, teardown_in_position,
                         ::testing::Values(where::source, where::middle, where::sink, where::replica),
                         [](const auto& p) { return std::string(where_name(p.param)); });

// ---- teardown reaches every kind of wait ----------------------------------------------------

// Starts g, waits for `ready`, makes `fail` true (some stage then throws), expects run()
// to throw stage_error from `failing` promptly and every thread to be gone.
template <class Ready>
void expect_prompt_teardown(sluice::graph& g, std::atomic<bool>& fail, Ready ready, const std::string& failing) {
  const std::size_t before = thread_count();
  g.start();
  ASSERT_TRUE(eventually(ready));
  const auto t0 = std::chrono::steady_clock::now();
  fail = true;
  try {
    (void)g.wait();
    ADD_FAILURE() << "wait() returned normally";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), failing);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_TRUE(g.last_report().balanced());
  EXPECT_TRUE(g.last_report().stuck.empty());
  EXPECT_TRUE(eventually([&] { return thread_count() <= before; }));
}

// A source that fails when told, and until then idles on its stop token.
auto failing_source(std::atomic<bool>& fail) {
  return [&fail](sluice::sender<int>&, std::stop_token) {
    while (!fail.load()) std::this_thread::sleep_for(100us);  // polling a test flag
    throw boom();
  };
}

TEST(teardown, interrupts_a_restart_backoff) {
  watchdog dog(30s);
  std::atomic<bool> fail{false};
  std::atomic<int> attempts{0};
  sluice::graph g;
  auto flaky = g.source<int>("flaky", [&](sluice::sender<int>&) {
    attempts.fetch_add(1);
    throw std::runtime_error("flaky");
  }, {.on_error = sluice::restart{.max = 10, .within = std::chrono::hours(1), .backoff = std::chrono::hours(1)}});
  g.sink("sink", flaky, [](int) {});
  auto bad = g.source<int>("bad", failing_source(fail));
  g.sink("sink2", bad, [](int) {});
  expect_prompt_teardown(g, fail, [&] { return attempts.load() == 1; }, "bad");
  EXPECT_EQ(attempts.load(), 1);  // no restart after the teardown began
}

TEST(teardown, interrupts_a_full_reorder_window) {
  watchdog dog(30s);
  std::atomic<bool> fail{false};
  gate never;
  sluice::graph g;
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 0; out.push(i); ++i) {
    }
  }, {.capacity = 2});
  // Item 0 is slow forever: the other replicas fill the window and wait for it.
  auto m = g.map("ordered", src, [&](int v, std::stop_token st) {
    if (v == 0) never.wait(st);
    return v;
  }, {.capacity = 2, .replicas = 3, .ordered = true});
  g.sink("sink", m, [](int) {});
  auto bad = g.source<int>("bad", failing_source(fail));
  g.sink("sink2", bad, [](int) {});
  expect_prompt_teardown(g, fail, [&] { return parked(g, {"src"}, "push"); }, "bad");
}

TEST(teardown, interrupts_ordered_flat_map_replicas_and_their_emitter) {
  watchdog dog(30s);
  std::atomic<bool> fail{false};
  gate never;
  sluice::graph g;
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 0; out.push(i); ++i) {
    }
  }, {.capacity = 2});
  auto ex = g.flat_map<int>("expand", src, [](int v, sluice::sender<int>& out) {
    for (int k = 0; k < 100; ++k) {
      if (!out.push(v)) return;
    }
  }, {.capacity = 2, .replicas = 3, .ordered = true});
  g.sink("stuck", ex, [&](int, std::stop_token st) { never.wait(st); });
  auto bad = g.source<int>("bad", failing_source(fail));
  g.sink("sink2", bad, [](int) {});
  expect_prompt_teardown(g, fail, [&] { return parked(g, {"src", "expand"}, "push"); }, "bad");
}

TEST(teardown, interrupts_routing_stages) {
  watchdog dog(30s);
  std::atomic<bool> fail{false};
  gate never;
  sluice::graph g;
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 0; out.push(i); ++i) {
    }
  }, {.capacity = 2});
  auto b = g.broadcast(src, 2);
  auto rr = g.round_robin(b[0], 2);
  auto parts = g.partition(b[1], 2, [](const int& v) { return v; });
  auto all = g.merge(std::vector{rr[0], rr[1], parts[0], parts[1]});
  g.sink("stuck", all, [&](int, std::stop_token st) { never.wait(st); });
  auto bad = g.source<int>("bad", failing_source(fail));
  g.sink("sink2", bad, [](int) {});
  expect_prompt_teardown(g, fail, [&] { return parked(g, {"src", "src.broadcast"}, "push"); }, "bad");
}

TEST(teardown, a_sixteen_stage_chain_tears_down_from_the_middle_many_times) {
  watchdog dog(120s);
#ifdef SLUICE_SANITIZER_BUILD
  const int runs = 10;
#else
  const int runs = 50;
#endif
  const std::size_t before = thread_count();
  for (int run = 0; run < runs; ++run) {
    sluice::graph g;
    std::atomic<bool> fail{false};
    auto s = g.source<int>("s0", [](sluice::sender<int>& out) {
      for (int i = 0; out.push(i); ++i) {
      }
    }, {.capacity = 2});
    std::vector<std::string> before_failer, after_failer;
    for (int k = 1; k < 16; ++k) {
      const std::string name = cat("s", std::to_string(k));
      if (k < 8) before_failer.push_back(name);
      if (k > 8) after_failer.push_back(name);
      if (k == 15) {
        g.sink(name, s, [](int) {});
        break;
      }
      s = g.map(name, s, [&fail, k](int v) {
        if (k == 8) {
          while (!fail.load()) std::this_thread::sleep_for(50us);  // polling a test flag
          throw boom();
        }
        return v;
      }, {.capacity = 2});
    }
    before_failer.push_back("s0");
    expect_prompt_teardown(g, fail, [&] {
      return parked(g, before_failer, "push") && parked(g, after_failer, "pop");
    }, "s8");
  }
  EXPECT_TRUE(eventually([&] { return thread_count() == before; }));
}

}  // namespace

// A stage that ends while the graph is torn down (as gzip's splitter returns when its
// input is cancelled, or a source that happens to finish then) must not hand its
// consumer a normal end of stream before the teardown reaches that channel: a writer
// would take the cut-short stream for a complete one (write_file would commit it).
// Deterministic: the teardown runs on_discard for the item buffered in the first
// channel and is held there until the writer has seen how its input ended; only then
// would it cancel the writer's channel itself.
TEST(teardown, a_stage_ending_during_the_teardown_cancels_its_output_instead_of_closing_it) {
  watchdog dog(30s);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  enum class end { unknown, closed, cancelled, other } ending = end::unknown;
  bool held_in_discard = false;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter&) {
    std::unique_lock lk(mu);
    release = true;
    cv.notify_all();
    held_in_discard = cv.wait_for(lk, 5s, [&] { return ending != end::unknown; });
  }});
  // Built first, so the teardown cancels its channel first; the item waits there.
  auto held = g.source<int>("held", [](sluice::sender<int>& tx, std::stop_token st) {
    tx.push(1);
    sluice_test::gate never;
    never.wait(st);
  });
  g.consume("idle", held, [](sluice::receiver<int>&, std::stop_token st) {
    sluice_test::gate never;
    never.wait(st);
  });
  // Both functions must be running before the cancel: a stage whose function has not
  // started when the run is cancelled never runs it (then nobody would ever set `ending`;
  // seen once under ASan, where threads start slowly).
  std::atomic<int> running{0};
  auto quits = g.source<int>("quits", [&](sluice::sender<int>&) {
    std::unique_lock lk(mu);
    running.fetch_add(1);
    cv.wait_for(lk, 10s, [&] { return release; });
  });
  g.consume("writer", quits, [&](sluice::receiver<int>& rx) {
    running.fetch_add(1);
    while (rx.pop()) {
    }
    std::lock_guard lk(mu);
    ending = rx.cancelled() ? end::cancelled : rx.done() ? end::closed : end::other;
    cv.notify_all();
  });
  g.start();
  ASSERT_TRUE(eventually([&] {
    if (running.load() != 2) return false;
    for (const auto& c : g.snapshot().channels) {
      if (c.stats.size == 1) return true;
    }
    return false;
  }));
  g.cancel();
  EXPECT_THROW(g.wait(), sluice::cancelled);
  EXPECT_TRUE(held_in_discard);
  EXPECT_EQ(ending, end::cancelled);
}

// A stage that copies its receiver and keeps the copy past its end. Its input is
// disconnected when the stage ends, as if the copy were gone: the source blocked on the
// full channel fails its push and ends, and the run ends (it never did: the kept copy held
// the channel connected). The buffered items are dead letters counted in the report, and
// releasing the copy once the graph is gone reaches nothing of the graph (it called the
// destroyed graph's on_discard and crashed; the report did not balance).
TEST(teardown, a_receiver_a_stage_keeps_past_its_end_neither_holds_the_run_nor_outlives_it) {
  watchdog dog(30s, "kept_receiver");
  std::optional<sluice::receiver<int>> kept;
  std::atomic<int> dead{0}, accepted{0};
  {
    sluice::graph g({.on_discard = [&dead](const sluice::dead_letter&) { dead.fetch_add(1); }});
    auto s = g.source<int>("src", [&accepted](sluice::sender<int>& out) {
      for (int i = 0; i < 1000; ++i) {
        if (!out.push(i)) return;  // the consumer is gone
        ++accepted;
      }
    }, {.capacity = 8});
    g.consume("keep", s, [&kept](sluice::receiver<int>& rx) {
      ASSERT_TRUE(rx.pop().has_value());
      kept = rx;
    });
    const sluice::report r = g.run();
    EXPECT_TRUE(r.balanced());
    EXPECT_LT(accepted.load(), 1000);
    ASSERT_EQ(r.metrics.channels.size(), 1U);
    EXPECT_EQ(r.metrics.channels[0].stats.discarded, static_cast<std::uint64_t>(accepted.load() - 1));
    EXPECT_EQ(dead.load(), accepted.load() - 1);
    ASSERT_TRUE(kept.has_value());
    EXPECT_FALSE(kept->pop().has_value());
  }
  kept.reset();  // the graph is gone
  EXPECT_EQ(dead.load(), accepted.load() - 1);
}

// The same with an outside thread popping the kept copy meanwhile: each item is popped by
// it or a dead letter, once, and the run still ends.
TEST(teardown, a_kept_receiver_popped_from_outside_does_not_hold_the_run) {
  watchdog dog(30s, "kept_receiver_popped");
  std::optional<sluice::receiver<int>> kept;
  std::atomic<bool> handed{false};
  std::atomic<int> dead{0}, accepted{0}, outside{0};
  sluice::graph g({.on_discard = [&dead](const sluice::dead_letter&) { dead.fetch_add(1); }});
  auto s = g.source<int>("src", [&accepted](sluice::sender<int>& out) {
    for (int i = 0; i < 100000; ++i) {
      if (!out.push(i)) return;
      ++accepted;
    }
  }, {.capacity = 8});
  g.consume("keep", s, [&](sluice::receiver<int>& rx) {
    kept = rx;
    handed = true;
  });
  g.start();
  std::thread popper([&] {
    if (!eventually([&] { return handed.load(); })) return;
    while (kept->pop()) ++outside;
  });
  const auto r = g.wait_for(std::chrono::seconds(20));
  popper.join();
  ASSERT_TRUE(r.has_value()) << "the run did not end";
  EXPECT_TRUE(r->balanced());
  EXPECT_EQ(outside.load() + dead.load(), accepted.load());
}

// The last reference to a graph dropped on one of its own stage threads: the destructor
// cannot wait for the thread it runs on. The process aborts saying so (it was
// std::terminate's bare "terminate called without an active exception").
TEST(teardown_death, a_graph_destroyed_by_its_own_stage_aborts_saying_why) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto g = std::make_shared<sluice::graph>();
        auto held = std::make_shared<std::shared_ptr<sluice::graph>>(g);
        auto main_let_go = std::make_shared<std::promise<void>>();
        std::shared_future<void> let_go = main_let_go->get_future().share();
        auto s = g->source<int>("src", [held, let_go](sluice::sender<int>&) {
          if (let_go.wait_for(30s) == std::future_status::ready) held->reset();  // the last one
        });
        g->sink("sink", s, [](int) {});
        g->start();
        g.reset();
        main_let_go->set_value();
        std::this_thread::sleep_for(30s);  // not synchronisation: the abort ends the process first
        std::exit(0);                      // no abort: EXPECT_DEATH fails
      },
      "destroyed from one of its own stages");
}
