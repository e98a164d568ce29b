// Randomized stage graphs (DESIGN.md §2, §3): random shapes (chains, diamonds of
// broadcast + merge, fan-out/fan-in through round_robin and partition, replicas ordered
// and not), random capacities, random slow stages, and per run one random ending: a
// stage that throws at a random item, a cancel(), a request_stop(), or none.
//
// Every run must end with the right outcome (stage_error naming the injected stage,
// cancelled, or a normal return), within its deadline, with every channel balanced,
// no item leaked or destroyed twice, no stuck stage and no thread left behind. Runs
// that end normally must deliver exactly: each item carries a weight that branches
// of a broadcast divide, so every source item's weights sum to the same total at the
// sink however the graph routed and copied it.
//
// Seeded: prints the seed; SLUICE_SEED=N replays one. Sized down under sanitizers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"
#include "support/seed.hpp"
#include "support/tracked.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using sluice_test::eventually;
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

// Divisible by every product of the broadcast fan-outs a graph can have (2s and 3s,
// nested at most three deep).
constexpr std::uint64_t kWeight = (1ull << 20) * 531441ull;  // 2^20 * 3^12

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

std::string cat(std::string a, const std::string& b) {
  a += b;
  return a;
}

struct item {
  tracked life;  // lifetime accounting: no leak, no double destruction
  std::uint64_t id = 0;
  std::uint64_t weight = 0;
};

struct injected : std::runtime_error {
  injected() : std::runtime_error("injected failure") {}
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

// Per-run shared state, outliving the graph.
struct run_state {
  ending end = ending::none;
  std::string fail_stage;           // the stage that throws (ending::failure)
  std::uint64_t fail_at = 0;        // ... on its fail_at-th call
  std::atomic<bool> thrown{false};
  std::chrono::steady_clock::time_point thrown_at{};
  std::mutex mu;
  std::map<std::string, std::uint64_t> calls;  // guarded by mu
  std::map<std::uint64_t, std::uint64_t> at_sink;  // id -> summed weight; guarded by mu
  std::map<std::uint64_t, std::uint64_t> lost;     // thrown on, under restart/skip; guarded by mu
  std::map<std::string, sluice::error_policy::kind> policy;  // per stage, as built
  std::atomic<std::uint64_t> produced{0};
  std::atomic<std::uint64_t> delivered{0};

  // Counts a call of `stage` (on an item whose share of the weight is `share`; a
  // source passes none); throws if it is the injected failure.
  void call(const std::string& stage, const item* it = nullptr, std::uint64_t share = 0) {
    if (end != ending::failure || stage != fail_stage) return;
    std::uint64_t n;
    {
      std::lock_guard lk(mu);
      n = ++calls[stage];
    }
    if (n == fail_at) {
      {
        std::lock_guard lk(mu);
        thrown_at = std::chrono::steady_clock::now();
        if (it != nullptr) lost[it->id] += share;
      }
      thrown = true;
      throw injected();
    }
  }
};

struct slowness {
  std::uint32_t one_in = 0;  // 0: never slow
  std::uint32_t micros = 0;
};

class builder {
 public:
  builder(sluice::graph& g, run_state& st, std::mt19937_64& rng) : g_(g), st_(st), rng_(rng) {}

  std::vector<std::string> stages;  // user stages that may carry the injected failure

  sluice::stage_options options(bool allow_replicas) {
    sluice::stage_options o;
    o.capacity = 1 + rng_() % 16;
    if (allow_replicas && rng_() % 3 == 0) {
      o.replicas = 2 + rng_() % 2;
      o.ordered = rng_() % 2 == 0;
    }
    return o;
  }
  slowness slow() {
    slowness s;
    if (rng_() % 3 == 0) {
      s.one_in = 1 + static_cast<std::uint32_t>(rng_() % 20);
      s.micros = static_cast<std::uint32_t>(rng_() % 300);
    }
    return s;
  }
  std::string name(const char* kind) { return cat(kind, std::to_string(next_++)); }
  // A random error policy for stage n (what an injected throw there then does).
  sluice::error_policy policy(const std::string& n) {
    const auto r = rng_() % 5;
    sluice::error_policy p = r < 3 ? sluice::error_policy::stop : r < 4 ? sluice::error_policy::skip
                                   : sluice::error_policy(sluice::restart{.max = 100, .within = std::chrono::seconds(60),
                                                                          .backoff = std::chrono::microseconds(100)});
    st_.policy[n] = p.what();
    return p;
  }

  // A map stage: identity, or dividing the weight by `divide`.
  sluice::stream<item> map(sluice::stream<item> in, std::uint64_t divide = 1) {
    const std::string n = name(divide == 1 ? "m" : "div");
    stages.push_back(n);
    const slowness s = slow();
    run_state* st = &st_;
    sluice::stage_options o = options(true);
    o.on_error = policy(n);
    return g_.map(n, in, [st, n, s, divide](item it) {
      st->call(n, &it, it.weight / divide);
      if (s.one_in != 0 && it.id % s.one_in == 0) std::this_thread::sleep_for(std::chrono::microseconds(s.micros));
      it.weight /= divide;
      return it;
    }, std::move(o));
  }

  sluice::stream<item> shape(sluice::stream<item> s, int depth) {
    const int choice = depth >= 3 ? 0 : static_cast<int>(rng_() % 4);
    if (choice == 0) {
      const int len = 1 + static_cast<int>(rng_() % 3);
      for (int i = 0; i < len; ++i) s = map(s);
      return s;
    }
    const std::size_t k = 2 + rng_() % 2;
    std::vector<sluice::stream<item>> branches;
    if (choice == 1) {
      branches = g_.broadcast(s, k);
      for (auto& b : branches) b = map(b, k);  // each copy carries 1/k of the weight
    } else if (choice == 2) {
      branches = g_.round_robin(s, k);
    } else {
      branches = g_.partition(s, k, [](const item& it) { return it.id; });
    }
    for (auto& b : branches) b = shape(b, depth + 1);
    return g_.merge(branches);
  }

 private:
  sluice::graph& g_;
  run_state& st_;
  std::mt19937_64& rng_;
  int next_ = 0;
};

void one_run(std::uint64_t seed, int run) {
  std::mt19937_64 rng(seed);
  run_state st;
  const auto before_threads = thread_count();
  const auto lives = tracked::counters().snapshot();
  const int nsources = 1 + static_cast<int>(rng() % 2);
  const std::uint64_t items = 1 + rng() % kMaxItems;
  const int pick = static_cast<int>(rng() % 10);
  st.end = pick < 6 ? ending::failure : pick < 7 ? ending::cancel : pick < 8 ? ending::stop : ending::none;
  SCOPED_TRACE(cat(cat("run ", std::to_string(run)), cat(" seed ", std::to_string(seed))) + " ending " +
               ending_name(st.end));
  std::atomic<bool> wrong_type{false};
  std::optional<sluice::report> report;
  std::string error_stage;
  bool was_cancelled = false;
  std::chrono::steady_clock::time_point returned_at{};
  {
    sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
      if (d.get<item>() == nullptr) wrong_type = true;
    }});
    builder b(g, st, rng);
    std::vector<sluice::stream<item>> heads;
    for (int s = 0; s < nsources; ++s) {
      const std::string n = b.name("src");
      b.stages.push_back(n);
      st.policy[n] = sluice::error_policy::kind::stop;  // a restarted source would repeat items
      run_state* stp = &st;
      const bool endless = st.end == ending::stop;
      heads.push_back(g.source<item>(n, [stp, n, s, items, endless](sluice::sender<item>& out, std::stop_token tok) {
        for (std::uint64_t i = 0; endless ? !tok.stop_requested() : i < items; ++i) {
          stp->call(n);
          item it;
          it.id = static_cast<std::uint64_t>(s) * 1'000'000'000ull + i;
          it.weight = kWeight;
          if (!out.push(std::move(it))) return;
          stp->produced.fetch_add(1);
        }
      }, b.options(false)));
    }
    auto all = heads.size() == 1 ? heads[0] : g.merge(heads);
    all = b.shape(all, 0);
    const std::string sink_name = b.name("sink");
    b.stages.push_back(sink_name);
    run_state* stp = &st;
    sluice::stage_options so = b.options(true);
    so.on_error = b.policy(sink_name);
    g.sink(sink_name, all, [stp, sink_name](item it) {
      stp->call(sink_name, &it, it.weight);
      {
        std::lock_guard lk(stp->mu);
        stp->at_sink[it.id] += it.weight;
      }
      stp->delivered.fetch_add(1);
    }, so);

    if (st.end == ending::failure) {
      st.fail_stage = b.stages[rng() % b.stages.size()];
      st.fail_at = 1 + rng() % (items + 1);
    }
    const std::uint64_t trigger = 1 + rng() % (items + 1);

    sluice_test::watchdog dog(60s, "one stress run");
    g.start();
    std::atomic<bool> finished{false};
    std::thread controller;
    if (st.end == ending::cancel || st.end == ending::stop) {
      controller = std::thread([&] {
        // Wait (bounded) for some progress, then cancel or stop.
        (void)eventually([&] { return finished.load() || st.delivered.load() >= trigger; }, 2s);
        if (st.end == ending::cancel) {
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
      EXPECT_THROW(std::rethrow_exception(e.cause()), injected) << e.what();
    } catch (const sluice::cancelled&) {
      was_cancelled = true;
    }
    returned_at = std::chrono::steady_clock::now();
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
  switch (st.end) {
    case ending::failure:
      if (st.thrown.load() && st.policy[st.fail_stage] != sluice::error_policy::kind::stop) {
        // restart / skip: the item is dropped, the run goes on.
        EXPECT_TRUE(report.has_value()) << "restart/skip failed the graph: " << error_stage;
      } else if (st.thrown.load()) {
        EXPECT_EQ(error_stage, st.fail_stage);
        EXPECT_LT(returned_at - st.thrown_at, 10s) << "teardown not prompt";
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
  // A normal end delivered exactly: every produced item's weights add up to kWeight
  // (counting the share thrown on under restart/skip as lost).
  if (report.has_value()) {
    std::lock_guard lk(st.mu);
    std::map<std::uint64_t, std::uint64_t> total = st.at_sink;
    for (const auto& [id, w] : st.lost) total[id] += w;
    EXPECT_EQ(total.size(), st.produced.load());
    for (const auto& [id, w] : total) {
      ASSERT_EQ(w, kWeight) << "item " << id;
    }
  }
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

}  // namespace
