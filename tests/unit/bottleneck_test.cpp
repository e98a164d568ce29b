// End-to-end: in a 5-stage chain where one stage does 10x the work of the others
// (busy spin, not sleep), the report names that stage as the bottleneck, whichever
// position it is in; and a snapshot taken while the graph runs names it too.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;

void spin(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// Work per item large enough that a thread's wake-up latency on a loaded machine is
// small next to it (the slow stage works through a whole batch while its producer is
// being woken).
#if defined(SLUICE_SANITIZER_BUILD)
constexpr std::uint64_t kItems = 400;
#else
constexpr std::uint64_t kItems = 1000;
#endif
constexpr auto kWork = 20us;   // every stage
constexpr auto kSlow = 200us;  // the slow one: 10x

const char* const kNames[] = {"read", "parse", "enrich", "encode", "write"};

// source -> map -> map -> map -> sink; stage `slow` spins 10x longer per item. `fused`:
// every stage after the source runs on the source's thread (stage_options::fuse).
sluice::report run_chain(std::size_t slow, std::optional<std::string>* mid_run = nullptr, bool fused = false) {
  auto cost = [slow](std::size_t pos) { return pos == slow ? std::chrono::nanoseconds(kSlow) : std::chrono::nanoseconds(kWork); };
  sluice::graph g;
  const sluice::stage_options o{.capacity = 16};
  const sluice::stage_options after{.capacity = 16, .fuse = fused};
  auto s0 = g.source<std::uint64_t>(kNames[0], [c = cost(0)](sluice::sender<std::uint64_t>& out) {
    for (std::uint64_t i = 0; i < kItems; ++i) {
      spin(c);
      if (!out.push(i)) return;
    }
  }, o);
  auto s1 = g.map(kNames[1], s0, [c = cost(1)](std::uint64_t v) { spin(c); return v + 1; }, after);
  auto s2 = g.map(kNames[2], s1, [c = cost(2)](std::uint64_t v) { spin(c); return v + 1; }, after);
  auto s3 = g.map(kNames[3], s2, [c = cost(3)](std::uint64_t v) { spin(c); return v + 1; }, after);
  std::uint64_t seen = 0;
  g.sink(kNames[4], s3, [c = cost(4), &seen](std::uint64_t) {
    spin(c);
    ++seen;
  }, {.fuse = fused});
  if (mid_run == nullptr) {
    sluice::report r = g.run();
    EXPECT_EQ(seen, kItems);
    return r;
  }
  g.start();
  // Once about half the items are through, ask a live snapshot.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    const sluice::metrics::snapshot s = g.snapshot();
    std::uint64_t done = 0;
    for (const auto& st : s.stages)
      if (st.name == kNames[4]) done = st.items_in;
    if (done >= kItems / 2 || std::chrono::steady_clock::now() > deadline) {
      *mid_run = sluice::metrics::find_bottleneck(s);
      break;
    }
    std::this_thread::sleep_for(2ms);  // polling a live graph; not synchronisation
  }
  return g.wait();
}

class BottleneckAt : public ::testing::TestWithParam<std::size_t> {};

TEST_P(BottleneckAt, SlowStageIsNamedInTheReport) {
  const std::size_t slow = GetParam();
  // The bottleneck is read from measured time: a burst of load from another process (a
  // parallel ctest, a sanitizer build) can blur one run, so the stage must be named in one
  // of three.
  sluice::report r = run_chain(slow);
  for (int again = 0; again < 2 && r.metrics.bottleneck != std::optional<std::string>(kNames[slow]); ++again) {
    r = run_chain(slow);
  }
  ASSERT_TRUE(r.metrics.bottleneck.has_value()) << "slow stage " << kNames[slow] << ": no bottleneck named\n"
                                                << sluice::metrics::to_json(r.metrics);
  EXPECT_EQ(*r.metrics.bottleneck, kNames[slow]) << sluice::metrics::to_json(r.metrics);
  // The report's bottleneck is the documented rule applied to the report's counters.
  EXPECT_EQ(sluice::metrics::find_bottleneck(r.metrics), r.metrics.bottleneck);
  EXPECT_TRUE(r.balanced());
}

INSTANTIATE_TEST_SUITE_P(EveryPosition, BottleneckAt, ::testing::Values(0, 1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<std::size_t>& i) { return std::string(kNames[i.param]); });

// A chain fused whole runs on one thread; each stage keeps its own shares (a fused stage
// waits for its input while its host does anything else), so the slow one is named. The
// last fused stage was named wherever the slow one was: its shares were taken over its
// own calls only, 100% busy.
class BottleneckInAFusedChainAt : public ::testing::TestWithParam<std::size_t> {};

TEST_P(BottleneckInAFusedChainAt, SlowStageIsNamedInTheReport) {
  const std::size_t slow = GetParam();
  sluice::report r = run_chain(slow, nullptr, true);
  for (int again = 0; again < 2 && r.metrics.bottleneck != std::optional<std::string>(kNames[slow]); ++again) {
    r = run_chain(slow, nullptr, true);
  }
  ASSERT_TRUE(r.metrics.bottleneck.has_value()) << "slow stage " << kNames[slow] << ": no bottleneck named\n"
                                                << sluice::metrics::to_json(r.metrics);
  EXPECT_EQ(*r.metrics.bottleneck, kNames[slow]) << sluice::metrics::to_json(r.metrics);
  EXPECT_TRUE(r.balanced());
}

INSTANTIATE_TEST_SUITE_P(EveryPosition, BottleneckInAFusedChainAt, ::testing::Values(0, 1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<std::size_t>& i) { return std::string(kNames[i.param]); });

// The only slow stage fused onto ordered replicas: only the reorder window's emitter runs
// it, one call at a time, while the other replicas wait on the window. Its busy share was
// taken over all the host replicas' time (about 1/replicas: 0.35 with 3), and no
// bottleneck was named though every other stage waited on it (a probe).
TEST(Bottleneck, ASlowStageFusedOntoOrderedReplicasIsNamed) {
  for (const std::size_t replicas : {std::size_t{3}, std::size_t{4}}) {
    SCOPED_TRACE(replicas);
    sluice::report r;
    for (int attempt = 0; attempt < 3; ++attempt) {  // a loaded machine may blur one run
      sluice::graph g;
      auto src = g.source<long>("src", [](sluice::sender<long>& out) {
        for (long i = 0; i < 400; ++i) {
          if (!out.push(i)) return;
        }
      }, {.capacity = 64});
      auto host = g.map("host", src, [](long v) { return v; }, {.capacity = 64, .replicas = replicas});
      auto slow = g.map("slow", host, [](long v) {
        std::this_thread::sleep_for(std::chrono::microseconds(300));
        return v;
      }, {.capacity = 64, .fuse = true});
      g.sink("snk", slow, [](long) {});
      r = g.run();
      if (r.metrics.bottleneck == std::optional<std::string>("slow")) break;
    }
    ASSERT_TRUE(r.metrics.bottleneck.has_value()) << "no bottleneck named\n" << sluice::metrics::to_json(r.metrics);
    EXPECT_EQ(*r.metrics.bottleneck, "slow") << sluice::metrics::to_json(r.metrics);
    EXPECT_TRUE(r.balanced());
  }
}

TEST(Bottleneck, LiveSnapshotNamesTheSlowStage) {
  std::optional<std::string> mid;
  sluice::report r = run_chain(2, &mid);
  // As above: on a loaded machine (a ThreadSanitizer run beside a build) one live look
  // named no stage; another run is asked for, twice at most.
  for (int again = 0; again < 2 && (mid != std::optional<std::string>(kNames[2]) || r.metrics.bottleneck != mid); ++again) {
    r = run_chain(2, &mid);
  }
  ASSERT_TRUE(mid.has_value());
  EXPECT_EQ(*mid, kNames[2]);
  EXPECT_EQ(r.metrics.bottleneck, kNames[2]);
}

TEST(Bottleneck, SnapshotTimesAddUpToTheRun) {
  // Each single-thread stage accounts busy + backpressured + starved for about the time
  // its thread ran: never more than the run's elapsed time (plus a little slack for
  // the clock reads).
  const sluice::report r = run_chain(1);
  const auto elapsed = static_cast<std::uint64_t>(r.elapsed.count());
  ASSERT_GT(elapsed, 0U);
  for (const auto& st : r.metrics.stages) {
    const std::uint64_t accounted = st.busy_ns + st.backpressured_ns + st.starved_ns;
    EXPECT_GT(accounted, 0U) << st.name;
    EXPECT_LE(accounted, elapsed + elapsed / 10 + 5'000'000) << st.name;
    if (st.name != kNames[0]) {
      EXPECT_EQ(st.items_in, kItems) << st.name;  // everything but the source takes
    }
    if (st.name != kNames[4]) {
      EXPECT_EQ(st.items_out, kItems) << st.name;  // everything but the sink gives
    }
  }
}

}  // namespace

namespace {

// Idle ordered replicas: one waits in the channel's pop, the others wait their turn to
// pop (flat_map: and its emitter waits for the next item). All of that is waiting for
// input. It was counted as busy, and an idle ordered stage was named the bottleneck.
template <class Build>
void expect_idle_stage_is_starved(const char* stage, Build build) {
  sluice_test::watchdog dog(60s, stage);
  sluice::graph g;
  auto [in, s] = g.input<int>("in", {.capacity = 16});
  g.sink("sink", build(g, s), [](int) {});
  g.start();
  sluice::metrics::snapshot snap;
  const auto find = [&]() -> const sluice::metrics::stage_snapshot& {
    for (const auto& st : snap.stages) {
      if (st.name == stage) return st;
    }
    throw std::logic_error("no such stage");
  };
  // Polled until the stage has been alive a while (a condition, not a sleep).
  ASSERT_TRUE(sluice_test::eventually([&] {
    snap = g.snapshot();
    return snap.elapsed >= 300ms;
  }, 10s));
  const auto& st = find();
  const double alive = static_cast<double>(st.busy_ns + st.starved_ns + st.backpressured_ns);
  ASSERT_GT(alive, 0.0);
  EXPECT_LT(static_cast<double>(st.busy_ns) / alive, 0.2) << stage << ": busy " << st.busy_ns << " ns, starved "
                                                          << st.starved_ns << " ns";
  EXPECT_NE(snap.bottleneck.value_or(""), stage);
  in.close();
  EXPECT_NO_THROW((void)g.wait());
}

TEST(Bottleneck, AnIdleOrderedMapIsStarvedNotBusy) {
  expect_idle_stage_is_starved("enrich", [](sluice::graph& g, sluice::stream<int> s) {
    return g.map("enrich", s, [](int v) { return v; }, {.capacity = 16, .replicas = 3, .ordered = true});
  });
}

// Ordered replicas held up by a slow consumer wait for the reorder window to move (its
// emitter blocked on the full output). That wait was counted as busy: from four replicas
// on, the trivial map was named the bottleneck instead of the slow sink.
TEST(Bottleneck, OrderedReplicasWaitingOnTheirWindowAreBackpressuredNotBusy) {
  sluice_test::watchdog dog(120s, "ordered window");
  for (const std::size_t replicas : {std::size_t{4}, std::size_t{8}}) {
    SCOPED_TRACE(replicas);
    sluice::graph g;
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; i < 400; ++i) {
        if (!out.push(i)) return;
      }
    }, {.capacity = 16});
    auto a = g.map("a", src, [](int v) { return v + 1; }, {.capacity = 16, .replicas = replicas, .ordered = true});
    g.sink("slowsink", a, [](int) { std::this_thread::sleep_for(1ms); });  // the work, not synchronisation
    const sluice::report r = g.run();
    EXPECT_EQ(r.metrics.bottleneck.value_or("(none)"), "slowsink");
    for (const auto& st : r.metrics.stages) {
      if (st.name != "a") continue;
      const double alive = static_cast<double>(st.busy_ns + st.starved_ns + st.backpressured_ns);
      ASSERT_GT(alive, 0.0);
      EXPECT_LT(static_cast<double>(st.busy_ns) / alive, 0.2)
          << "busy " << st.busy_ns << " ns, backpressured " << st.backpressured_ns << " ns";
    }
  }
}

// The same for an ordered flat_map: its replicas push each batch's outputs into a
// private channel that the emitter forwards in order, held up by the sink. Their time
// blocked there (and waiting for the window) was counted busy: with 4 replicas the
// trivial flat_map was busy 8.2 s of a 3.3 s run and no bottleneck was named.
TEST(Bottleneck, OrderedFlatMapReplicasHeldUpByTheirOutputAreBackpressuredNotBusy) {
  sluice_test::watchdog dog(120s, "ordered flat_map");
  for (const std::size_t replicas : {std::size_t{1}, std::size_t{4}}) {
    SCOPED_TRACE(replicas);
    sluice::graph g;
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; i < 20; ++i) {
        if (!out.push(i)) return;
      }
    }, {.capacity = 16});
    auto x = g.flat_map<int>("expand", src, [](int v, sluice::sender<int>& out) {
      for (int k = 0; k < 20; ++k) {
        if (!out.push(v)) return;
      }
    }, {.capacity = 16, .replicas = replicas, .ordered = true});
    g.sink("slowsink", x, [](int) { std::this_thread::sleep_for(1ms); });  // the work, not synchronisation
    const sluice::report r = g.run();
    EXPECT_EQ(r.metrics.bottleneck.value_or("(none)"), "slowsink");
    for (const auto& st : r.metrics.stages) {
      if (st.name != "expand") continue;
      const double alive = static_cast<double>(st.busy_ns + st.starved_ns + st.backpressured_ns);
      ASSERT_GT(alive, 0.0);
      EXPECT_LT(static_cast<double>(st.busy_ns) / alive, 0.2)
          << "busy " << st.busy_ns << " ns, backpressured " << st.backpressured_ns << " ns";
    }
  }
}

TEST(Bottleneck, AnIdleOrderedFlatMapIsStarvedNotBusy) {
  expect_idle_stage_is_starved("split", [](sluice::graph& g, sluice::stream<int> s) {
    return g.flat_map<int>("split", s, [](int v, sluice::sender<int>& out) { (void)out.push(v); },
                           {.capacity = 16, .replicas = 2, .ordered = true});
  });
}

}  // namespace
