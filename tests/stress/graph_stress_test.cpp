// Randomized stage graphs (DESIGN.md §2, §3), drawn by sluice::testing::draw_random_graph
// (sluice/testing/random_graph.hpp, the generator `sluice stress` uses) with nesting:
// one or two sources, chains, broadcast / round_robin / partition fans nested up to three
// deep and merged, replicas ordered and not, random capacities, filters, slow and
// briefly stuck stages, sinks that finish early; and per run one random ending: a stage
// (sources and sink included) that throws at a random call under a random error policy,
// a cancel(), a request_stop() of endless sources, or none.
//
// Every run must end with the right outcome (stage_error naming the injected stage,
// cancelled, or a normal return), within its deadline, with every channel balanced,
// no item leaked or destroyed twice, no stuck stage and no thread left behind. Every run,
// whatever its ending, must account for each item exactly once (sluice::testing::ledger,
// the oracle `sluice stress` uses): the item's weight, divided among broadcast copies,
// is found in all at the sink, in filters and in dead letters.
//
// Seeded: prints the seed; SLUICE_SEED=N replays one. Sized down under sanitizers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"
#include "sluice/testing/random_graph.hpp"
#include "support/graph_support.hpp"
#include "support/seed.hpp"
#include "support/tracked.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
namespace st = sluice::testing;
using sluice_test::eventually;
using sluice_test::thread_count;
using sluice_test::tracked;

#if defined(SLUICE_TSAN_BUILD)
constexpr int kRuns = 120;
constexpr int kMaxItems = 300;
#elif defined(SLUICE_SANITIZER_BUILD)
constexpr int kRuns = 150;
constexpr int kMaxItems = 600;
#else
constexpr int kRuns = 250;
constexpr int kMaxItems = 2000;
#endif

// What random_graph's stages carry (v, weight, pad), plus lifetime accounting: no leak,
// no double destruction.
struct item {
  tracked life;
  std::uint64_t v = 0;
  std::uint64_t weight = 0;
  std::string pad;
};

enum class ending { failure, cancel, stop, none };

const char* ending_name(ending e) {
  switch (e) {
    case ending::failure: return "failure";
    case ending::cancel: return "cancel";
    case ending::stop: return "stop";
    case ending::none: return "none";
  }
  return "?";
}

// lone: a chain of single-replica stages with one source, no fans, nothing fused, and
// capacities of 1 to 8, so every edge is a lone-side channel (one sender, one receiver:
// plain stores, detail/ring_flavour.hpp) whose pushes and pops park often and race the
// graph's close, cancel and failure teardown from the supervisor's thread.
void one_run(std::uint64_t seed, int run, bool lone = false) {
  std::mt19937_64 rng(seed);
  const int pick = static_cast<int>(rng() % 10);
  const ending end = pick < 6 ? ending::failure : pick < 7 ? ending::cancel : pick < 8 ? ending::stop : ending::none;
  st::random_graph_options o;
  o.nested = true;
  o.max_sources = 2;
  o.max_items = kMaxItems;
  o.throwing_fault = end == ending::failure;
  o.fuse = sluice_test::mix(seed, 2) % 2 == 0;  // half the runs fuse some stages and maybe the sink
  if (lone) {
    o.max_sources = 1;
    o.fuse = false;
    for (int f = 1; f < 4; ++f) o.fans[f] = false;
  }
  st::random_graph spec = st::draw_random_graph(sluice_test::mix(seed, 1), o);
  if (lone) {
    for (auto& stage : spec.stages) {
      stage.replicas = 1;
      stage.capacity = 1 + rng() % 8;
    }
    spec.source_capacity = 1 + rng() % 8;
    spec.sink_replicas = 1;
  }
  spec.endless = end == ending::stop;
  spec.pad = spec.pad % 65;  // small items: the test is about accounting, not memory
  SCOPED_TRACE(sluice_test::cat("run " + std::to_string(run) + " seed " + std::to_string(seed) + " ending ",
                                ending_name(end)) +
               "\n    " + st::describe(spec));
  const auto before_threads = thread_count();
  const auto lives = tracked::counters().snapshot();
  auto book = std::make_shared<st::ledger>(spec);
  std::atomic<bool> wrong_type{false};
  std::optional<sluice::report> report;
  std::string error_stage;
  bool was_cancelled = false;
  {
    sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
      if (d.get<item>() == nullptr) wrong_type = true;
      book->discard<item>(d);
    }});
    st::build_random_graph<item>(g, spec, book);
    const std::uint64_t trigger = 1 + rng() % (spec.items + 1);

    sluice_test::watchdog dog(60s, "one stress run");
    g.start();
    std::atomic<bool> finished{false};
    std::thread controller;
    if (end == ending::cancel || end == ending::stop) {
      controller = std::thread([&] {
        // Wait (bounded) for some progress, then cancel or stop.
        (void)eventually([&] { return finished.load() || book->sink_calls() >= trigger; }, 2s);
        if (end == ending::cancel) {
          g.cancel();
        } else {
          g.request_stop();
        }
      });
    }
    try {
      report = g.wait();
    } catch (const sluice::stage_error& e) {
      error_stage = e.stage();
      EXPECT_THROW(std::rethrow_exception(e.cause()), st::injected_failure) << e.what();
    } catch (const sluice::cancelled&) {
      was_cancelled = true;
    }
    finished = true;
    if (controller.joinable()) controller.join();
    const sluice::report r = g.last_report();
    EXPECT_TRUE(r.balanced());
    for (const auto& c : r.metrics.channels) {
      EXPECT_EQ(c.stats.pushed, c.stats.popped + c.stats.discarded) << c.name;
      EXPECT_EQ(c.stats.size, 0u) << c.name;
    }
    EXPECT_TRUE(r.stuck.empty());
  }
  EXPECT_FALSE(wrong_type.load());

  // The outcome matches what was injected.
  const bool thrown = book->has_thrown();
  switch (end) {
    case ending::failure:
      if (thrown && spec.fault.policy != st::fault_policy::stop) {
        // restart / skip: the item is dropped (a dead letter), the run goes on.
        EXPECT_TRUE(report.has_value()) << "restart/skip failed the graph: " << error_stage;
      } else if (thrown) {
        EXPECT_EQ(error_stage, spec.fault.stage);
      } else {
        EXPECT_TRUE(report.has_value()) << "failed without a throw: " << error_stage;
      }
      break;
    case ending::cancel:
      EXPECT_TRUE(error_stage.empty());
      EXPECT_TRUE(was_cancelled || report.has_value());
      break;
    case ending::stop:
    case ending::none:
      EXPECT_TRUE(report.has_value()) << "unexpected failure: " << error_stage << (was_cancelled ? " cancelled" : "");
      break;
  }
  // Exactly once, whatever the ending; a normal end without stop or cancel delivered all.
  const bool complete = report.has_value() && end != ending::stop && end != ending::cancel;
  for (const std::string& v : book->check(complete)) ADD_FAILURE() << v;
  EXPECT_TRUE(eventually([&] { return thread_count() <= before_threads; }))
      << thread_count() << " threads vs " << before_threads;
  EXPECT_EQ(tracked::counters().live_since(lives), 0);
}

TEST(graph_stress, random_shapes_failures_cancels_and_stops) {
  const std::uint64_t seed = sluice_test::test_seed();
  // A sanitizer runtime starts a helper thread with the process's first thread; start
  // it now so that it is part of every run's baseline thread count.
  std::thread([] {}).join();
  for (int run = 0; run < kRuns; ++run) {
    one_run(sluice_test::mix(seed, static_cast<std::uint64_t>(run)), run);
    if (::testing::Test::HasFailure()) {
      std::printf("[stress] first failure in run %d; replay with the SLUICE_SEED printed above\n", run);
      break;
    }
  }
  EXPECT_EQ(tracked::counters().bad_destroys(), 0);
}

TEST(graph_stress, lone_edges_race_failures_cancels_and_stops) {
  const std::uint64_t seed = sluice_test::test_seed();
  std::thread([] {}).join();  // the sanitizer's helper thread, as above
  for (int run = 0; run < kRuns / 2; ++run) {
    one_run(sluice_test::mix(seed, 1000003 + static_cast<std::uint64_t>(run)), run, true);
    if (::testing::Test::HasFailure()) {
      std::printf("[stress] first failure in run %d; replay with the SLUICE_SEED printed above\n", run);
      break;
    }
  }
  EXPECT_EQ(tracked::counters().bad_destroys(), 0);
}

}  // namespace
