// sluice::graph: stages, replicas, routing, policies, shape checks, stop/cancel, hooks,
// stuck stages and stall detection (DESIGN.md §2, §3). Teardown from every position is
// in teardown_test.cpp; the linear shorthand in pipeline_test.cpp.
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <future>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/seed.hpp"
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

// The named stage's snapshot (a test failure and an empty one when there is none).
const sluice::metrics::stage_snapshot& stage_of(const sluice::metrics::snapshot& s, const std::string& name) {
  static const sluice::metrics::stage_snapshot none{};
  for (const auto& st : s.stages) {
    if (st.name == name) return st;
  }
  ADD_FAILURE() << "no stage named " << name;
  return none;
}
bool has_stage(const sluice::metrics::snapshot& s, const std::string& name) {
  return std::any_of(s.stages.begin(), s.stages.end(), [&](const auto& st) { return st.name == name; });
}

// A source of 0..n-1 that stops when its output ends.
auto count_to(int n) {
  return [n](sluice::sender<int>& out) {
    for (int i = 0; i < n; ++i) {
      if (!out.push(i)) return;
    }
  };
}

// ---- basics ------------------------------------------------------------------------

TEST(graph, linear_map_filter_sink_delivers_in_order) {
  watchdog dog(20s);
  sluice::graph g;
  auto nums = g.source<int>("count", count_to(10000), {.capacity = 16});
  auto sq = g.map("square", nums, [](int v) { return static_cast<long>(v) * v; }, {.capacity = 8});
  auto even = g.filter("even", sq, [](const long& v) { return v % 2 == 0; });
  std::vector<long> got;
  g.sink("collect", even, [&](long v) { got.push_back(v); });
  const sluice::report r = g.run();

  ASSERT_EQ(got.size(), 5000u);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], static_cast<long>(2 * i) * static_cast<long>(2 * i));
  EXPECT_TRUE(r.balanced());
  ASSERT_EQ(r.metrics.stages.size(), 4u);
  EXPECT_EQ(stage_of(r.metrics, "count").items_out, 10000u);
  EXPECT_EQ(stage_of(r.metrics, "square").items_in, 10000u);
  EXPECT_EQ(stage_of(r.metrics, "even").items_out, 5000u);
  EXPECT_EQ(stage_of(r.metrics, "collect").items_in, 5000u);
  for (const auto& s : r.metrics.stages) EXPECT_EQ(s.state, "done") << s.name;
  ASSERT_EQ(r.metrics.channels.size(), 3u);
  EXPECT_EQ(r.metrics.channels[0].name, "count -> square");
  EXPECT_EQ(r.metrics.channels[0].stats.capacity, 16u);
  EXPECT_EQ(r.metrics.channels[1].stats.capacity, 8u);
  EXPECT_EQ(r.metrics.channels[2].stats.capacity, 1024u);  // the default
  for (const auto& c : r.metrics.channels) EXPECT_EQ(c.stats.discarded, 0u) << c.name;
  EXPECT_GT(r.elapsed.count(), 0);
}

TEST(graph, stage_functions_may_take_a_stop_token_last) {
  watchdog dog(20s);
  sluice::graph g;
  std::atomic<int> saw_token{0};
  auto src = g.source<int>("src", [&](sluice::sender<int>& out, std::stop_token st) {
    for (int i = 0; i < 100 && !st.stop_requested(); ++i) out.push(i);
  });
  auto m = g.map("m", src, [&](int v, std::stop_token st) {
    if (st.stop_possible()) saw_token.fetch_add(1);
    return v + 1;
  });
  auto f = g.filter("f", m, [](const int& v, std::stop_token) { return v > 0; });
  int sum = 0;
  g.sink("sink", f, [&](int v, std::stop_token) { sum += v; });
  g.run();
  EXPECT_EQ(sum, 5050);
  EXPECT_EQ(saw_token.load(), 100);
}

// The graph's own handle on each edge (close, cancel, stats) is muted: a stage that is
// its edge's only sender or receiver takes the channel's lone-side path (plain stores,
// no CAS), as a hand-built pipeline of plain handles does; a replicated stage's copies,
// and an inlet's, keep their side shared.
TEST(graph, a_stage_that_is_its_edges_only_sender_or_receiver_takes_the_lone_side_path) {
  watchdog dog(60s, "lone graph edges");
  using sluice::detail::channel_access;
  sluice::graph g;
  std::atomic<int> source_alone{-1}, relay_in_alone{-1}, relay_out_alone{-1}, fanned_out_alone{-1};
  auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
    source_alone = channel_access::sender_alone(out) ? 1 : 0;
    for (int i = 0; i < 1000; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto relayed = g.stage<int, int>("relay", src, [&](sluice::receiver<int>& in, sluice::sender<int>& out) {
    relay_in_alone = channel_access::receiver_alone(in) ? 1 : 0;
    relay_out_alone = channel_access::sender_alone(out) ? 1 : 0;
    while (auto v = in.pop()) {
      if (!out.push(*v)) return;
    }
  });
  sluice::stage_options two;
  two.replicas = 2;
  // Each replica looks once both have started, and neither goes on before both looked:
  // a replica whose sibling already returned (its handle released) is alone, rightly, so
  // the looks must come while both hold theirs.
  std::mutex mu;
  std::condition_variable both_cv;
  int started = 0;
  int looked = 0;
  std::atomic<int> fanned_looks{0};
  auto fanned = g.stage<int, int>("fan", relayed, [&](sluice::receiver<int>& in, sluice::sender<int>& out) {
    {
      std::unique_lock lk(mu);
      ++started;
      both_cv.notify_all();
      if (both_cv.wait_for(lk, 30s, [&] { return started == 2; })) {
        if (channel_access::sender_alone(out)) fanned_out_alone = 1;
        ++fanned_looks;
      }
      ++looked;
      both_cv.notify_all();
      (void)both_cv.wait_for(lk, 30s, [&] { return looked == 2; });
    }
    while (auto v = in.pop()) {
      if (!out.push(*v)) return;
    }
  }, two);
  std::atomic<long> sum{0};
  std::atomic<int> count{0};
  g.sink("sink", fanned, [&](int v) {
    sum += v;
    ++count;
  });
  const auto rep = g.run();
  EXPECT_EQ(source_alone.load(), 1);
  EXPECT_EQ(relay_in_alone.load(), 1);
  EXPECT_EQ(relay_out_alone.load(), 1);
  EXPECT_EQ(fanned_looks.load(), 2);
  EXPECT_EQ(fanned_out_alone.load(), -1) << "a replica's sender was alone while its sibling held one";
  EXPECT_EQ(count.load(), 1000);
  EXPECT_EQ(sum.load(), 999L * 1000 / 2);
  EXPECT_TRUE(rep.balanced());
}

TEST(graph, flat_map_expands_each_item_in_order) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(200));
  auto ex = g.flat_map<std::string>("expand", src, [](int v, sluice::sender<std::string>& out) {
    for (int k = 0; k < 3; ++k) out.push(std::to_string(v) + ":" + std::to_string(k));
  }, {.capacity = 4});
  std::vector<std::string> got;
  g.sink("sink", ex, [&](std::string s) { got.push_back(std::move(s)); });
  EXPECT_TRUE(g.run().balanced());
  ASSERT_EQ(got.size(), 600u);
  for (int i = 0; i < 200; ++i) {
    for (int k = 0; k < 3; ++k) EXPECT_EQ(got[3 * i + k], std::to_string(i) + ":" + std::to_string(k));
  }
}

TEST(graph, stage_sees_the_whole_stream_and_consume_sees_how_it_ended) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(100));
  // Pairwise sums: a stage that needs two items per output.
  auto pairs = g.stage<int>("pairs", src, [](sluice::receiver<int>& in, sluice::sender<int>& out) {
    while (auto a = in.pop()) {
      auto b = in.pop();
      out.push(*a + (b ? *b : 0));
    }
  });
  bool done = false, cancelled = true;
  long total = 0;
  g.consume("writer", pairs, [&](sluice::receiver<int>& in) {
    for (int& v : in) total += v;
    done = in.done();
    cancelled = in.cancelled();
  });
  g.run();
  EXPECT_EQ(total, 4950);
  EXPECT_TRUE(done);
  EXPECT_FALSE(cancelled);
}

TEST(graph, runs_each_stage_on_its_own_threads_and_joins_them_all) {
  watchdog dog(20s);
  const std::size_t before = thread_count();
  std::mutex mu;
  std::set<std::thread::id> ids;
  auto note = [&] {
    std::lock_guard lk(mu);
    ids.insert(std::this_thread::get_id());
  };
  {
    sluice::graph g;
    auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
      note();
      for (int i = 0; i < 1000; ++i) out.push(i);
    });
    auto m = g.map("m", src, [&](int v) {
      note();
      return v;
    }, {.replicas = 3});
    g.sink("sink", m, [&](int) { note(); });
    g.run();
    // Every graph thread is joined when run() returns.
    EXPECT_TRUE(eventually([&] { return thread_count() == before; })) << thread_count() << " vs " << before;
  }
  EXPECT_GE(ids.size(), 3u);  // source, sink and at least one replica
  EXPECT_LE(ids.size(), 5u);
  EXPECT_FALSE(ids.count(std::this_thread::get_id()));
}

// ---- early finish ---------------------------------------------------------------------

TEST(graph, sink_returning_false_finishes_early_and_stops_upstream) {
  watchdog dog(20s);
  std::atomic<bool> source_saw_end{false};
  std::atomic<std::uint64_t> dead{0};
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    EXPECT_NE(d.get<int>(), nullptr);
    dead.fetch_add(1);
  }});
  auto src = g.source<int>("endless", [&](sluice::sender<int>& out) {
    for (int i = 0;; ++i) {
      if (!out.push(i)) break;  // nobody will read: stop
    }
    source_saw_end = true;
  }, {.capacity = 8});
  auto m = g.map("inc", src, [](int v) { return v + 1; }, {.capacity = 8});
  std::vector<int> got;
  g.sink("take10", m, [&](int v) {
    got.push_back(v);
    return got.size() < 10;  // "take n, found it"
  });
  const sluice::report r = g.run();  // not an error
  EXPECT_TRUE(source_saw_end.load());
  ASSERT_EQ(got.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got[i], i + 1);
  EXPECT_TRUE(r.balanced());
  std::uint64_t discarded = 0;
  for (const auto& c : r.metrics.channels) discarded += c.stats.discarded;
  EXPECT_GE(dead.load(), discarded);  // every discarded item reached the hook
}

TEST(graph, stage_returning_before_its_input_ends_stops_upstream) {
  watchdog dog(20s);
  sluice::graph g;
  std::atomic<int> pushed{0};
  auto src = g.source<int>("endless", [&](sluice::sender<int>& out) {
    for (int i = 0; out.push(i); ++i) pushed.fetch_add(1);
  }, {.capacity = 4});
  auto head = g.stage<int>("head3", src, [](sluice::receiver<int>& in, sluice::sender<int>& out) {
    for (int k = 0; k < 3; ++k) {
      if (auto v = in.pop()) out.push(*v);
    }
  });
  std::vector<int> got;
  g.sink("sink", head, [&](int v) { got.push_back(v); });
  EXPECT_TRUE(g.run().balanced());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
  EXPECT_GE(pushed.load(), 3);
}

// ---- replicas ---------------------------------------------------------------------------

TEST(graph, ordered_replicas_keep_input_order_under_random_delays) {
  watchdog dog(60s);
  const std::uint64_t seed = sluice_test::test_seed();
#ifdef SLUICE_TSAN_BUILD
  const int n = 400;
#else
  const int n = 2000;
#endif
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n), {.capacity = 16});
  auto slow = g.map("slow", src, [seed](int v) {
    std::mt19937_64 rng(sluice_test::mix(seed, static_cast<std::uint64_t>(v)));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));  // simulated work
    return v * 2;
  }, {.capacity = 4, .replicas = 4, .ordered = true});
  auto kept = g.filter("kept", slow, [seed](const int& v) {
    std::mt19937_64 rng(sluice_test::mix(seed, static_cast<std::uint64_t>(v) + 1));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 100));
    return v % 3 != 0;
  }, {.capacity = 4, .replicas = 3, .ordered = true});
  std::vector<int> got;
  g.sink("sink", kept, [&](int v) { got.push_back(v); });
  EXPECT_TRUE(g.run().balanced());
  std::vector<int> want;
  for (int i = 0; i < n; ++i) {
    if ((2 * i) % 3 != 0) want.push_back(2 * i);
  }
  EXPECT_EQ(got, want);
}

TEST(graph, ordered_flat_map_replicas_keep_input_order) {
  watchdog dog(60s);
  const std::uint64_t seed = sluice_test::test_seed();
  const int n = 300;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n), {.capacity = 8});
  auto ex = g.flat_map<int>("expand", src, [seed](int v, sluice::sender<int>& out) {
    std::mt19937_64 rng(sluice_test::mix(seed, static_cast<std::uint64_t>(v)));
    const int k = static_cast<int>(rng() % 5);  // 0..4 outputs, some items expand to none
    for (int j = 0; j < k; ++j) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 100));
      out.push(v * 10 + j);
    }
  }, {.capacity = 2, .replicas = 4, .ordered = true});
  std::vector<int> got;
  g.sink("sink", ex, [&](int v) { got.push_back(v); });
  EXPECT_TRUE(g.run().balanced());
  std::vector<int> want;
  for (int v = 0; v < n; ++v) {
    std::mt19937_64 rng(sluice_test::mix(seed, static_cast<std::uint64_t>(v)));
    const int k = static_cast<int>(rng() % 5);
    for (int j = 0; j < k; ++j) {
      (void)rng();
      want.push_back(v * 10 + j);
    }
  }
  EXPECT_EQ(got, want);
}

TEST(graph, unordered_replicas_deliver_each_item_exactly_once) {
  watchdog dog(60s);
  const int n = 5000;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n), {.capacity = 8});
  std::atomic<int> in_flight{0}, max_in_flight{0};
  auto m = g.map("m", src, [&](int v) {
    const int now = in_flight.fetch_add(1) + 1;
    int prev = max_in_flight.load();
    while (prev < now && !max_in_flight.compare_exchange_weak(prev, now)) {
    }
    if (v % 50 == 0) std::this_thread::sleep_for(200us);
    in_flight.fetch_sub(1);
    return v;
  }, {.capacity = 8, .replicas = 4, .ordered = false});
  auto ex = g.flat_map<int>("dup", m, [](int v, sluice::sender<int>& out) { out.push(v); },
                            {.replicas = 2, .ordered = false});
  std::vector<int> seen(n, 0);
  g.sink("sink", ex, [&](int v) { ++seen[v]; });
  EXPECT_TRUE(g.run().balanced());
  for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << i;
  EXPECT_GE(max_in_flight.load(), 1);
}

TEST(graph, sink_replicas_share_the_input) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(3000));
  std::atomic<long> sum{0};
  g.sink("sink", src, [&](int v) { sum.fetch_add(v); }, {.replicas = 3});
  g.run();
  EXPECT_EQ(sum.load(), 3000L * 2999 / 2);
}

// ---- routing -------------------------------------------------------------------------------

TEST(graph, round_robin_and_merge_deliver_each_item_exactly_once) {
  watchdog dog(30s);
  const int n = 3000;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n), {.capacity = 16});
  auto branches = g.round_robin(src, 3);
  ASSERT_EQ(branches.size(), 3u);
  std::vector<sluice::stream<int>> mapped;
  std::vector<std::atomic<int>> per_branch(3);
  for (int b = 0; b < 3; ++b) {
    mapped.push_back(g.map(cat("work", std::to_string(b)), branches[b], [&per_branch, b](int v) {
      per_branch[b].fetch_add(1);
      return v;
    }));
  }
  auto all = g.merge(mapped);
  std::vector<int> seen(n, 0);
  g.sink("sink", all, [&](int v) { ++seen[v]; });
  const sluice::report r = g.run();
  EXPECT_TRUE(r.balanced());
  for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << i;
  for (int b = 0; b < 3; ++b) EXPECT_EQ(per_branch[b].load(), n / 3) << b;  // strict turns
  // The routing stages are named after their input and show up in the snapshot.
  EXPECT_TRUE(has_stage(r.metrics, "src.round_robin"));
  EXPECT_TRUE(has_stage(r.metrics, "merge(work0,work1,work2)"));
}

// A merge of many inputs lists only as many of their names as fit in 64 characters: its
// name is in each input channel's name and labels, and the full list made a 400-input
// merge's Prometheus text 16 MB (a probe; it grew with the square of the inputs).
TEST(graph, a_merge_of_many_inputs_has_a_name_of_bounded_length) {
  sluice::graph g;
  auto src = g.source<int>("src", count_to(10));
  constexpr int kInputs = 100;
  auto copies = g.broadcast(src, kInputs);
  std::vector<sluice::stream<int>> mapped;
  for (int b = 0; b < kInputs; ++b) {
    mapped.push_back(g.map(cat("ingest-worker-shard-", std::to_string(b)), copies[b], [](int v) { return v; }));
  }
  std::atomic<int> got{0};
  g.sink("sink", g.merge(mapped), [&](int) { got.fetch_add(1); });
  const sluice::report r = g.run();
  EXPECT_EQ(got.load(), 10 * kInputs);
  EXPECT_TRUE(has_stage(r.metrics, "merge(ingest-worker-shard-0,ingest-worker-shard-1 +98 more)"));
  std::size_t longest = 0;
  for (const auto& c : r.metrics.channels) longest = std::max(longest, c.name.size());
  EXPECT_LT(longest, 200u);
  // Linear in the graph: under 2 KB of text per stage and channel.
  const std::size_t text = sluice::metrics::to_prometheus(r.metrics).size();
  EXPECT_LT(text, 2000 * (r.metrics.stages.size() + r.metrics.channels.size())) << text << " bytes";
  // Two merges that list the same names still get names of their own.
  sluice::graph h;
  auto a = h.broadcast(h.source<int>("s", count_to(1)), 2 * kInputs);
  std::vector<sluice::stream<int>> first(a.begin(), a.begin() + kInputs);
  std::vector<sluice::stream<int>> second(a.begin() + kInputs, a.end());
  h.sink("x", h.merge(first), [](int) {});
  h.sink("y", h.merge(second), [](int) {});
  EXPECT_NO_THROW(h.run());
}

// An ordered, replicated flat_map pushes each batch's outputs into a private channel of
// the reorder window. Items left there when the run ends early (the sink has had enough)
// are dead letters of the stage's output channel: they went to on_discard, counted on no
// channel (1,092 counted for 1,100 hook calls), and without a hook nowhere at all.
TEST(graph, an_ordered_flat_maps_undelivered_outputs_are_counted_dead_letters) {
  watchdog dog(60s);
  for (const bool hook : {true, false}) {
    SCOPED_TRACE(hook ? "with on_discard" : "without on_discard");
    std::atomic<std::uint64_t> accepted{0}, hooked{0}, hooked_fm{0};
    sluice::graph_options go;
    if (hook) {
      go.on_discard = [&](const sluice::dead_letter& d) {
        ++hooked;
        if (d.channel() == "fm -> sink") ++hooked_fm;
      };
    }
    sluice::graph g(go);
    auto src = g.source<int>("src", count_to(10000));
    auto fm = g.flat_map<int>("fm", src, [&](int v, sluice::sender<int>& out) {
      accepted += out.push(v) ? 1 : 0;
      accepted += out.push(v) ? 1 : 0;
    }, {.capacity = 4, .replicas = 3, .ordered = true});
    std::uint64_t delivered = 0;
    g.sink("sink", fm, [&](int) { return ++delivered < 20; });
    const sluice::report r = g.run();
    EXPECT_TRUE(r.balanced());
    EXPECT_EQ(delivered, 20U);
    std::uint64_t counted = 0;
    bool found = false;
    for (const auto& c : r.metrics.channels) {
      counted += c.stats.discarded + c.dead_letters;
      if (c.name != "fm -> sink") continue;
      found = true;
      // Every item fm's pushes accepted was delivered, or is a dead letter of its output
      // (left in that channel, held by the sink, or never out of the reorder window).
      EXPECT_EQ(accepted.load(), delivered + c.stats.discarded + c.dead_letters);
      if (hook) {
        EXPECT_EQ(hooked_fm.load(), c.stats.discarded + c.dead_letters);
      }
    }
    EXPECT_TRUE(found);
    if (hook) {
      EXPECT_EQ(hooked.load(), counted) << "each dead letter handed to on_discard is counted on a channel";
    }
  }
}

// Channels between different stages whose names join to the same text: "x" -> "y -> z"
// and "x -> y" -> "z" were both "x -> y -> z", so blocked_on and a stall's wait-for chain
// could name the wrong one.
TEST(graph, channels_whose_stage_names_join_alike_have_names_of_their_own) {
  watchdog dog(30s);
  sluice::graph g;
  g.sink("y -> z", g.source<int>("x", count_to(10)), [](int) {});
  g.sink("z", g.source<int>("x -> y", count_to(10)), [](int) {});
  const sluice::report r = g.run();
  EXPECT_TRUE(r.balanced());
  std::set<std::string> names;
  for (const auto& c : r.metrics.channels) EXPECT_TRUE(names.insert(c.name).second) << "two channels named " << c.name;
  EXPECT_EQ(names.count("x -> y -> z"), 1U);
  EXPECT_EQ(names.count("x -> y -> z #2"), 1U);
}

// A merge that takes several branches of one routing stage has as many channels between
// the same two stages. They were all named "src.round_robin -> merge(...)", so snapshots,
// Prometheus series and dead letters could not tell the branches apart.
TEST(graph, channels_between_the_same_two_stages_have_names_of_their_own) {
  watchdog dog(30s);
  for (const bool by_key : {false, true}) {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(300));
    auto branches = by_key ? g.partition(src, 3, [](int v) { return static_cast<std::size_t>(v); })
                           : g.round_robin(src, 3);
    g.sink("sink", g.merge(branches), [](int) {});
    const sluice::report r = g.run();
    EXPECT_TRUE(r.balanced());
    std::set<std::string> names;
    std::vector<std::string> from_router;
    for (const auto& c : r.metrics.channels) {
      EXPECT_TRUE(names.insert(c.name).second) << "two channels named " << c.name;
      if (c.name.find(" -> merge(") != std::string::npos) from_router.push_back(c.name);
    }
    const std::string router = by_key ? "src.partition" : "src.round_robin";
    const std::string merge = "merge(" + router + "," + router + "," + router + ")";
    EXPECT_EQ(from_router, (std::vector<std::string>{router + " -> " + merge, router + " -> " + merge + " #2",
                                                     router + " -> " + merge + " #3"}));
    // One Prometheus series per channel (they were repeated, label for label).
    std::set<std::string> series;
    std::istringstream text(sluice::metrics::to_prometheus(r.metrics));
    for (std::string line; std::getline(text, line);) {
      if (line.rfind("sluice_channel_size{", 0) == 0) {
        EXPECT_TRUE(series.insert(line.substr(0, line.rfind('}'))).second) << line;
      }
    }
    EXPECT_EQ(series.size(), r.metrics.channels.size());
  }
}

TEST(graph, partition_routes_by_key_exactly_once) {
  watchdog dog(30s);
  const int n = 4000;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n));
  auto parts = g.partition(src, 4, [](const int& v) { return v % 10; });
  std::vector<std::vector<int>> got(4);
  for (int p = 0; p < 4; ++p) {
    g.sink(cat("sink", std::to_string(p)), parts[p], [&got, p](int v) { got[p].push_back(v); });
  }
  EXPECT_TRUE(g.run().balanced());
  std::vector<int> seen(n, 0);
  std::map<int, int> key_branch;
  for (int p = 0; p < 4; ++p) {
    EXPECT_TRUE(std::is_sorted(got[p].begin(), got[p].end()));  // one router: order kept per branch
    for (int v : got[p]) {
      ++seen[v];
      auto [it, fresh] = key_branch.emplace(v % 10, p);
      EXPECT_EQ(it->second, p) << "key " << v % 10 << " went to two branches";
      EXPECT_EQ(static_cast<std::size_t>(p), std::hash<int>{}(v % 10) % 4);
    }
  }
  for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << i;
}

TEST(graph, broadcast_delivers_every_item_once_per_branch) {
  watchdog dog(30s);
  const int n = 2000;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n), {.capacity = 8});
  auto copies = g.broadcast(src, 3);
  std::vector<std::vector<int>> got(3);
  for (int b = 0; b < 3; ++b) {
    g.sink(cat("sink", std::to_string(b)), copies[b], [&got, b](int v) { got[b].push_back(v); });
  }
  EXPECT_TRUE(g.run().balanced());
  std::vector<int> want(n);
  std::iota(want.begin(), want.end(), 0);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(got[b], want) << b;
}

TEST(graph, broadcast_branch_that_finishes_early_does_not_stop_the_others) {
  watchdog dog(30s);
  const int n = 1000;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(n), {.capacity = 4});
  auto copies = g.broadcast(src, 2);
  int first = 0;
  std::vector<int> all;
  g.sink("head", copies[0], [&](int) { return ++first < 5; });
  g.sink("all", copies[1], [&](int v) { all.push_back(v); });
  EXPECT_TRUE(g.run().balanced());
  EXPECT_EQ(first, 5);
  EXPECT_EQ(all.size(), static_cast<std::size_t>(n));
}

TEST(graph, broadcast_hands_an_ended_branchs_copies_to_the_dead_letter_hook) {
  watchdog dog(30s);
  const int n = 1000;
  std::mutex mu;
  std::map<std::string, int> dead;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    std::lock_guard lk(mu);
    ++dead[std::string(d.channel())];
  }});
  auto src = g.source<int>("src", count_to(n), {.capacity = 4});
  auto copies = g.broadcast(src, 2);
  int taken = 0;
  std::size_t all = 0;
  g.sink("head", copies[0], [&](int) { return ++taken < 5; });
  g.sink("all", copies[1], [&](int) { ++all; });
  const sluice::report r = g.run();
  EXPECT_TRUE(r.balanced());
  EXPECT_EQ(all, static_cast<std::size_t>(n));
  // Every copy meant for "head" was taken or is a dead letter of its channel: exactly n.
  EXPECT_EQ(taken + dead["src.broadcast -> head"], n);
  EXPECT_EQ(dead.size(), 1u);
}

TEST(graph, diamond_of_broadcast_and_merge) {
  watchdog dog(30s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(1000));
  auto two = g.broadcast(src, 2);
  auto a = g.map("plus", two[0], [](int v) { return v + 1; });
  auto b = g.map("minus", two[1], [](int v) { return -v; });
  auto both = g.merge(std::vector{a, b});
  long sum = 0;
  std::size_t count = 0;
  g.sink("sum", both, [&](int v) {
    sum += v;
    ++count;
  });
  EXPECT_TRUE(g.run().balanced());
  EXPECT_EQ(count, 2000u);
  EXPECT_EQ(sum, 1000);
}

// ---- malformed graphs -------------------------------------------------------------------------

TEST(graph, a_stream_consumed_twice_is_a_logic_error) {
  sluice::graph g;
  auto src = g.source<int>("src", count_to(1));
  g.sink("a", src, [](int) {});
  EXPECT_THROW(g.sink("b", src, [](int) {}), std::logic_error);
  EXPECT_THROW(g.map("c", src, [](int v) { return v; }), std::logic_error);
  // The failed calls left the graph as it was: it still runs.
  EXPECT_TRUE(g.run().balanced());
}

TEST(graph, a_dangling_stream_fails_before_any_thread_starts) {
  std::atomic<bool> called{false};
  const std::size_t before = thread_count();
  sluice::graph g;
  auto src = g.source<int>("src", [&](sluice::sender<int>&) { called = true; });
  auto m = g.map("m", src, [](int v) { return v; });
  (void)m;  // nobody consumes m
  try {
    g.run();
    ADD_FAILURE() << "run() accepted a dangling stream";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("'m'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(called.load());
  EXPECT_EQ(thread_count(), before);
}

TEST(graph, stage_added_after_start_and_second_run_are_logic_errors) {
  watchdog dog(20s);
  sluice::graph g;
  gate go;
  auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
    go.wait();
    out.push(1);
  });
  auto two = g.broadcast(src, 2);
  g.sink("sink", two[0], [](int) {});
  g.sink("sink2", two[1], [](int) {});
  g.start();
  EXPECT_THROW(g.source<int>("late", count_to(1)), std::logic_error);
  EXPECT_THROW(g.start(), std::logic_error);
  go.open();
  EXPECT_TRUE(g.wait().balanced());
  EXPECT_THROW(g.run(), std::logic_error);
  EXPECT_THROW(g.wait(), std::logic_error);
}

TEST(graph, other_shape_errors) {
  sluice::graph g, other;
  auto src = g.source<int>("src", count_to(1));
  auto foreign = other.source<int>("src", count_to(1));
  EXPECT_THROW(g.sink("x", foreign, [](int) {}), std::logic_error);         // another graph's stream
  EXPECT_THROW(g.sink("x", sluice::stream<int>{}, [](int) {}), std::logic_error);  // empty stream
  EXPECT_THROW(g.source<int>("src", count_to(1)), std::logic_error);       // duplicate name
  EXPECT_THROW(g.source<int>("", count_to(1)), std::logic_error);          // no name
  EXPECT_THROW(g.map("m", src, [](int v) { return v; }, {.capacity = 0}), std::invalid_argument);
  EXPECT_THROW(g.map("m", src, [](int v) { return v; }, {.replicas = 0}), std::invalid_argument);
  // Absurd counts are refused by name before anything is built (they used to build one task
  // or channel per replica or branch until memory ran out).
  try {
    (void)g.map("m", src, [](int v) { return v; }, {.replicas = SIZE_MAX});
    ADD_FAILURE() << "SIZE_MAX replicas accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'m': replicas must be at most 65536"), std::string::npos) << e.what();
  }
  EXPECT_THROW(g.source<int>("s2", count_to(1), {.replicas = 65537}), std::invalid_argument);
  EXPECT_THROW(g.round_robin(src, SIZE_MAX), std::invalid_argument);
  EXPECT_THROW(g.broadcast(src, std::size_t{1} << 40), std::invalid_argument);
  auto p = std::make_unique<int>(1);
  auto move_only = [p = std::move(p)](int v) { return v + *p; };
  EXPECT_THROW(g.map("m", src, std::move(move_only), {.replicas = 2}), std::logic_error);
  EXPECT_THROW(g.merge(std::vector<sluice::stream<int>>{}), std::invalid_argument);
  // Too many inputs are named as such, before anything else is checked (it said
  // "replicas must be at most 65536", a count the caller never gave).
  try {
    (void)g.merge(std::vector<sluice::stream<int>>(65537, src));
    ADD_FAILURE() << "a merge of 65537 streams accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("merge: at most 65536 streams can be merged (got 65537)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(g.merge(std::vector{src, src}), std::logic_error);
  EXPECT_THROW(g.wait(), std::logic_error);  // not started
  g.sink("sink", src, [](int) {});
  other.sink("sink", foreign, [](int) {});
  g.run();
  other.run();
}

// A moved-from graph is an error to use, not a null pointer (done() says it runs nothing).
TEST(graph, a_moved_from_graph_throws_logic_error) {
  sluice::graph g;
  auto src = g.source<int>("src", count_to(3));
  int got = 0;
  g.sink("sink", src, [&](int) { ++got; });
  sluice::graph moved(std::move(g));
  EXPECT_TRUE(g.done());  // NOLINT(bugprone-use-after-move): the documented moved-from state
  EXPECT_THROW(g.cancel(), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW(g.request_stop(), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW((void)g.snapshot(), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW(g.start(), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW((void)g.wait_for(std::chrono::seconds(1)), std::logic_error);  // NOLINT(bugprone-use-after-move)
  EXPECT_THROW(g.source<int>("s", count_to(1)), std::logic_error);  // NOLINT(bugprone-use-after-move)
  try {
    g.run();  // NOLINT(bugprone-use-after-move)
    ADD_FAILURE() << "run() on a moved-from graph";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("moved from"), std::string::npos) << e.what();
  }
  moved.run();
  EXPECT_EQ(got, 3);
}

TEST(graph, move_only_stage_functions_and_items) {
  watchdog dog(20s);
  sluice::graph g;
  auto offset = std::make_unique<int>(100);
  auto src = g.source<std::unique_ptr<int>>("src", [](sluice::sender<std::unique_ptr<int>>& out) {
    for (int i = 0; i < 50; ++i) out.push(std::make_unique<int>(i));
  });
  auto m = g.map("add", src, [off = std::move(offset)](std::unique_ptr<int> p) {
    *p += *off;
    return p;
  });
  int sum = 0;
  g.sink("sink", m, [&](std::unique_ptr<int> p) { sum += *p; });
  g.run();
  EXPECT_EQ(sum, 50 * 100 + 49 * 50 / 2);
}

// ---- stop and cancel ----------------------------------------------------------------------

TEST(graph, cancel_before_start_runs_nothing) {
  std::atomic<bool> called{false};
  sluice::graph g;
  auto src = g.source<int>("src", [&](sluice::sender<int>&) { called = true; });
  g.sink("sink", src, [&](int) { called = true; });
  g.cancel();
  EXPECT_THROW(g.run(), sluice::cancelled);
  EXPECT_FALSE(called.load());
}

TEST(graph, request_stop_before_start_stops_the_sources_at_once) {
  watchdog dog(20s);
  sluice::graph g;
  auto with_token = g.source<int>("a", [](sluice::sender<int>& out, std::stop_token st) {
    while (!st.stop_requested()) out.push(1);
  });
  auto without = g.source<int>("b", [](sluice::sender<int>& out) {
    while (out.push(2)) {
    }
  });
  auto both = g.merge(std::vector{with_token, without});
  g.sink("sink", both, [](int) {});
  g.request_stop();
  EXPECT_TRUE(g.run().balanced());
}

TEST(graph, request_stop_drains_in_flight_items_and_loses_nothing) {
  watchdog dog(30s);
  sluice::graph g;
  std::atomic<int> pushed{0};
  auto src = g.source<int>("src", [&](sluice::sender<int>& out, std::stop_token st) {
    for (int i = 0; !st.stop_requested(); ++i) {
      if (!out.push(i)) return;
      pushed.store(i + 1);
    }
  }, {.capacity = 64});
  auto m = g.map("m", src, [](int v) { return v; }, {.capacity = 64, .replicas = 2});
  std::vector<int> got;
  std::atomic<std::size_t> n{0};
  g.sink("sink", m, [&](int v) {
    if (v % 7 == 0) std::this_thread::sleep_for(10us);  // a slowish sink: channels fill
    got.push_back(v);
    n.store(got.size());
  });
  g.start();
  ASSERT_TRUE(eventually([&] { return n.load() >= 1000; }));
  g.request_stop();
  const sluice::report r = g.wait();  // returns normally
  EXPECT_TRUE(r.balanced());
  ASSERT_EQ(got.size(), static_cast<std::size_t>(pushed.load()));
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], static_cast<int>(i));
  for (const auto& c : r.metrics.channels) EXPECT_EQ(c.stats.discarded, 0u) << c.name;
}

TEST(graph, cancel_wakes_blocked_stages_promptly) {
  watchdog dog(30s);
  const std::size_t before = thread_count();
  std::atomic<std::uint64_t> dead{0};
  {
    sluice::graph g({.on_discard = [&](const sluice::dead_letter&) { dead.fetch_add(1); }});
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; out.push(i); ++i) {
      }
    }, {.capacity = 4});
    auto m = g.map("m", src, [](int v) { return v; }, {.capacity = 4});
    gate never;
    g.sink("stuck", m, [&](int, std::stop_token st) { never.wait(st); });
    auto idle = g.source<int>("idle", [](sluice::sender<int>&, std::stop_token st) {
      gate g2;
      g2.wait(st);
    });
    g.sink("starved", idle, [](int) {});
    g.start();
    // Everyone is blocked: src and m on full channels, starved on an empty one.
    ASSERT_TRUE(eventually([&] {
      const auto s = g.snapshot();
      return stage_of(s, "src").blocked_op == "push" && stage_of(s, "m").blocked_op == "push" &&
             stage_of(s, "starved").blocked_op == "pop";
    }));
    const auto t0 = std::chrono::steady_clock::now();
    std::thread canceller([&] { g.cancel(); });
    EXPECT_THROW(g.wait(), sluice::cancelled);
    const auto took = std::chrono::steady_clock::now() - t0;
    canceller.join();
    EXPECT_LT(took, 10s);
    const sluice::report r = g.last_report();
    EXPECT_TRUE(r.balanced());
    std::uint64_t discarded = 0;
    for (const auto& c : r.metrics.channels) discarded += c.stats.discarded;
    EXPECT_GT(discarded, 0u);
    EXPECT_GE(dead.load(), discarded);
  }
  EXPECT_TRUE(eventually([&] { return thread_count() == before; }));
}

// ---- failures and policies --------------------------------------------------------------------

struct boom : std::runtime_error {
  explicit boom(const std::string& s) : std::runtime_error(s) {}
};

TEST(graph, first_failure_is_rethrown_as_stage_error_with_its_cause) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(1000));
  auto m = g.map("parse", src, [](int v) {
    if (v == 10) throw boom("bad record 10");
    return v;
  });
  g.sink("sink", m, [](int) {});
  try {
    g.run();
    ADD_FAILURE() << "no exception";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "parse");
    EXPECT_EQ(e.suppressed(), 0u);
    EXPECT_NE(std::string(e.what()).find("parse"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("bad record 10"), std::string::npos);
    EXPECT_THROW(std::rethrow_exception(e.cause()), boom);
  }
  const sluice::report r = g.last_report();
  EXPECT_TRUE(r.balanced());
  EXPECT_EQ(stage_of(r.metrics, "parse").state, "failed");
  EXPECT_EQ(stage_of(r.metrics, "parse").errors, 1u);
}

// A stage that throws something other than a std::exception: the error still says what,
// as far as the throw tells: a thrown string's text, else the thrown type. (It said
// "unknown exception" for all of them.) The cause is kept as thrown.
namespace odd_throw {
struct not_a_std_exception {
  int code;
};
}  // namespace odd_throw
TEST(graph, a_stage_that_throws_no_std_exception_is_named_with_what_it_threw) {
  watchdog dog(20s);
  auto failure_of = [](auto thrower) {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(10));
    auto m = g.map("odd", src, [thrower](int v) {
      if (v == 3) thrower();
      return v;
    });
    g.sink("sink", m, [](int) {});
    try {
      g.run();
    } catch (const sluice::stage_error& e) {
      EXPECT_EQ(e.stage(), "odd");
      EXPECT_TRUE(e.cause() != nullptr);
      return std::string(e.what());
    }
    return std::string("no stage_error");
  };
  EXPECT_EQ(failure_of([] { throw 42; }), "sluice: stage 'odd' failed: an exception of type 'int', not caught as a std::exception");
  const std::string odd = failure_of([] { throw odd_throw::not_a_std_exception{7}; });  // in this file's anonymous namespace
  EXPECT_NE(odd.find("failed: an exception of type '"), std::string::npos) << odd;
  EXPECT_NE(odd.find("odd_throw::not_a_std_exception', not caught as a std::exception"), std::string::npos) << odd;
  EXPECT_EQ(failure_of([] { throw "disk on fire"; }),
            "sluice: stage 'odd' failed: \"disk on fire\" (a thrown C string)");
  EXPECT_EQ(failure_of([] { throw std::string("queue on fire"); }),
            "sluice: stage 'odd' failed: \"queue on fire\" (a thrown std::string)");
  EXPECT_EQ(failure_of([] { throw boom("as before"); }), "sluice: stage 'odd' failed: as before");
}

TEST(graph, later_failures_are_counted_as_suppressed) {
  watchdog dog(20s);
  sluice::graph g;
  gate never;
  std::atomic<bool> entered{false};
  auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
    out.push(1);
    ASSERT_TRUE(eventually([&] { return entered.load(); }));
    throw boom("first");
  });
  g.sink("sink", src, [&](int, std::stop_token st) {
    entered = true;
    never.wait(st);  // woken by the teardown
    throw boom("second, caused by the teardown");
  });
  try {
    g.run();
    ADD_FAILURE();
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "src");
    EXPECT_EQ(e.suppressed(), 1u);
  }
}

TEST(graph, skip_policy_drops_and_counts_failing_items) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(100));
  auto m = g.map("m", src, [](int v) {
    if (v % 10 == 3) throw boom("skip me");
    return v;
  }, {.replicas = 2, .on_error = sluice::error_policy::skip});
  std::vector<int> got;
  g.sink("sink", m, [&](int v) { got.push_back(v); });
  const sluice::report r = g.run();
  EXPECT_EQ(got.size(), 90u);
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));  // still ordered
  EXPECT_EQ(stage_of(r.metrics, "m").errors, 10u);
  EXPECT_TRUE(r.balanced());
}

TEST(graph, skip_on_a_source_acts_as_stop) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    out.push(1);
    throw boom("source broke");
  }, {.on_error = sluice::error_policy::skip});
  g.sink("sink", src, [](int) {});
  EXPECT_THROW(g.run(), sluice::stage_error);
}

TEST(graph, restart_policy_uses_a_fresh_copy_and_keeps_the_channels) {
  watchdog dog(20s);
  struct counter {
    std::atomic<int> made{0}, destroyed{0};
  } c;
  struct fn {
    counter* c;
    int seen = 0;  // per-copy state: a fresh copy starts at 0
    explicit fn(counter* cc) : c(cc) { c->made.fetch_add(1); }
    fn(const fn& o) : c(o.c), seen(o.seen) { c->made.fetch_add(1); }
    ~fn() { c->destroyed.fetch_add(1); }
    int operator()(int v) {
      if (++seen == 5 && v < 50) throw boom("every fifth item of a fresh copy, early on");
      return v;
    }
  };
  std::vector<int> got;
  std::uint64_t restarts = 0;
  {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(100), {.capacity = 4});
    auto m = g.map("flaky", src, fn(&c),
                   {.on_error = sluice::restart{.max = 100, .within = std::chrono::seconds(60),
                                                .backoff = std::chrono::milliseconds(1)}});
    g.sink("sink", m, [&](int v) { got.push_back(v); });
    const sluice::report r = g.run();
    const auto* st = &stage_of(r.metrics, "flaky");
    restarts = st->restarts;
    EXPECT_EQ(st->restarts, st->errors);
    EXPECT_TRUE(r.balanced());
  }
  // A fresh copy throws on its fifth item while v < 50: at 4, 9, ..., 49.
  EXPECT_EQ(restarts, 10u);
  // Only the failing items are lost; the rest went on, in order.
  EXPECT_EQ(got.size() + restarts, 100u);
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  EXPECT_EQ(c.made.load(), c.destroyed.load());  // every copy's cleanup ran
}

// A backoff of duration::max() waits until the run stops; it used to overflow now() + d
// and restart at once. cancel() ends the wait.
TEST(graph, a_restart_backoff_of_duration_max_waits_for_the_stop) {
  watchdog dog(30s);
  std::atomic<int> calls{0};
  sluice::graph g;
  auto src = g.source<int>("src", [&](sluice::sender<int>&) {
    ++calls;
    throw boom("first call");
  }, {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60),
                                  .backoff = std::chrono::steady_clock::duration::max()}});
  g.sink("sink", src, [](int) {});
  g.start();
  ASSERT_TRUE(eventually([&] { return calls.load() >= 1; }));
  ASSERT_TRUE(eventually([&] {
    for (const auto& s : g.snapshot().stages) {
      if (s.name == "src") return s.errors >= 1;
    }
    return false;
  }));
  g.cancel();
  EXPECT_THROW(g.wait(), sluice::cancelled);
  EXPECT_EQ(calls.load(), 1);
}

// Under restart, what a map made from a batch before the item that threw goes on before
// the backoff: the results of items 0-2 waited out the whole backoff (here duration::max(),
// until the cancel), and the cancel made them dead letters.
TEST(graph, a_restart_delivers_what_the_batch_made_before_the_failure_first) {
  watchdog dog(30s);
  std::mutex mu;
  std::vector<int> got;
  sluice::graph g;
  auto src = g.source<int>("src", [](sluice::sender<int>& out) {
    std::vector<int> four{0, 1, 2, 3};  // one push: one batch for the map, most likely
    (void)out.push_all(std::move(four));
  });
  auto m = g.map("m", src, [](int v) {
    if (v == 3) throw boom("item 3");
    return v;
  }, {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60),
                                  .backoff = std::chrono::steady_clock::duration::max()}});
  g.sink("sink", m, [&](int v) {
    std::lock_guard lk(mu);
    got.push_back(v);
  });
  g.start();
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return got.size() == 3;
  }, std::chrono::seconds(10)));
  g.cancel();
  EXPECT_THROW(g.wait(), sluice::cancelled);
  std::lock_guard lk(mu);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
}

// An item type that is move-constructible and not assignable (a const member) goes
// through every kind of stage; flat_map's ordered path assigned it and did not compile,
// whatever the options.
TEST(graph, an_item_type_that_cannot_be_assigned_goes_through_every_stage_kind) {
  watchdog dog(60s);
  struct fixed {
    const int v;
  };
  long sum = 0;
  sluice::graph g;
  auto src = g.source<fixed>("src", [](sluice::sender<fixed>& out) {
    for (int i = 0; i < 100; ++i) {
      if (!out.push(fixed{i})) return;
    }
  });
  auto m = g.map("m", src, [](fixed x) { return fixed{x.v + 1}; });
  auto f = g.filter("f", m, [](const fixed& x) { return x.v % 2 == 0; });
  auto fm = g.flat_map<fixed>("fm", f, [](fixed x, sluice::sender<fixed>& out) { out.push(fixed{x.v}); },
                              {.replicas = 3, .ordered = true});
  auto fused = g.flat_map<fixed>("fused", fm, [](fixed x, sluice::sender<fixed>& out) { out.push(fixed{x.v}); },
                                 {.fuse = true});
  g.sink("sink", fused, [&](fixed x) { sum += x.v; });
  g.run();
  EXPECT_EQ(sum, 2550);  // 2 + 4 + ... + 100
}

// request_stop() cuts a restart's backoff short: the stage restarts at once and what is
// queued for it drains (a server's graceful shutdown used to wait out the whole backoff).
TEST(graph, request_stop_restarts_a_stage_in_its_backoff_at_once_and_drains) {
  watchdog dog(60s);
  std::atomic<bool> thrown{false};
  std::vector<int> got;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(10), {.capacity = 16});
  auto m = g.map("flaky", src, [&](int v) {
    if (v == 3 && !thrown.exchange(true)) throw boom("once");
    return v;
  }, {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60), .backoff = std::chrono::hours(1)}});
  g.sink("sink", m, [&](int v) { got.push_back(v); });
  g.start();
  // The failure is counted before the backoff, the restart once it is made.
  ASSERT_TRUE(eventually([&] { return stage_of(g.snapshot(), "flaky").errors >= 1; }));
  g.request_stop();
  const auto r = g.wait_for(20s);
  if (!r) {
    g.cancel();
    EXPECT_THROW(g.wait(), sluice::cancelled);
    FAIL() << "request_stop() waited out the restart's one-hour backoff";
  }
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 4, 5, 6, 7, 8, 9}));  // 3 failed; the rest drained
  EXPECT_EQ(stage_of(r->metrics, "flaky").restarts, 1u);
}

// A failure after request_stop() restarts at once too: what is queued drains now. It
// waited out the whole backoff (an hour here; duration::max() never ended, silently),
// unless the stage was fused, where it restarted at once.
TEST(graph, a_stage_that_fails_while_draining_after_request_stop_restarts_at_once) {
  for (const bool fuse : {false, true}) {
    SCOPED_TRACE(fuse ? "fused" : "own thread");
    watchdog dog(60s);
    std::promise<void> stop_asked, at_three;
    std::shared_future<void> asked = stop_asked.get_future().share();
    std::future<void> reached = at_three.get_future();
    std::atomic<bool> thrown{false};
    std::vector<int> got;
    sluice::graph g;
    auto src = g.source<int>("src", count_to(10), {.capacity = 16});
    auto m = g.map("flaky", src, [&](int v) {
      if (v == 3 && !thrown.exchange(true)) {
        at_three.set_value();
        (void)asked.wait_for(30s);  // fails once the stop was asked
        throw boom("while draining");
      }
      return v;
    }, {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60), .backoff = std::chrono::hours(1)},
        .fuse = fuse});
    g.sink("sink", m, [&](int v) { got.push_back(v); });
    g.start();
    ASSERT_EQ(reached.wait_for(30s), std::future_status::ready);
    g.request_stop();
    stop_asked.set_value();
    const auto r = g.wait_for(20s);
    if (!r) {
      g.cancel();
      EXPECT_THROW(g.wait(), sluice::cancelled);
      ADD_FAILURE() << "a failure after request_stop() waited out its one-hour backoff";
      continue;
    }
    EXPECT_TRUE(thrown.load());
    EXPECT_EQ(stage_of(r->metrics, "flaky").restarts, 1u);
    EXPECT_EQ(std::count(got.begin(), got.end(), 3), 0);
    EXPECT_EQ(got.size() + 1, stage_of(r->metrics, "src").items_out);  // the rest drained
    EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  }
}

// A graph with no stages ends as it starts. A thread that took its outcome meanwhile (a
// wait_for() loop, or the thread on_done signals) found the supervisor thread not yet
// assigned and joined nothing; the graph's destructor then called std::terminate.
TEST(graph, an_empty_graph_whose_outcome_another_thread_takes_as_it_starts_ends_cleanly) {
  watchdog dog(60s);
  for (int round = 0; round < 2000; ++round) {  // a race: it took a few hundred rounds
    auto g = std::make_unique<sluice::graph>();
    std::optional<sluice::report> got;
    std::atomic<bool> waiting{false};
    std::thread waiter([&] {
      waiting.store(true);
      for (;;) {
        try {
          if (auto r = g->wait_for(0s)) {
            got = std::move(r);
            return;
          }
        } catch (const std::logic_error&) {  // not started yet
        }
      }
    });
    while (!waiting.load()) std::this_thread::yield();
    g->start();
    waiter.join();
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(got->metrics.stages.empty());
    g.reset();  // std::terminate here when the supervisor was never joined
  }
}

// A restart is counted once it is made: a cancel during the backoff left restarts = 1 for a
// fresh copy that never ran.
TEST(graph, a_restart_cut_by_a_cancel_in_its_backoff_is_not_counted) {
  watchdog dog(60s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(10), {.capacity = 16});
  auto m = g.map("flaky", src, [](int v) -> int { throw boom("always " + std::to_string(v)); },
                 {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60), .backoff = std::chrono::hours(1)}});
  g.sink("sink", m, [](int) {});
  g.start();
  ASSERT_TRUE(eventually([&] { return stage_of(g.snapshot(), "flaky").errors >= 1; }));
  g.cancel();
  EXPECT_THROW(g.wait(), sluice::cancelled);
  EXPECT_EQ(stage_of(g.last_report().metrics, "flaky").errors, 1u);
  EXPECT_EQ(stage_of(g.last_report().metrics, "flaky").restarts, 0u);
}

// A stage sleeping its restart backoff is "restarting" in snapshots, and a chain of waits
// that ends at it is no stall: it waits for a timer of the user's choosing. It was
// reported as a stall, the backing-off stage named as the one holding everything up.
// The control: the same shape with a stage that blocks in its function reports its stall
// (with a threshold ten times as long, started after the first was already waiting).
TEST(graph, a_stage_in_its_restart_backoff_is_restarting_and_no_stall) {
  watchdog dog(60s);
  std::atomic<int> a_stalls{0};
  sluice::graph a({.stall_threshold = 10ms, .on_stall = [&](const auto&) { a_stalls.fetch_add(1); }});
  auto a_src = a.source<int>("src", count_to(100), {.capacity = 1});
  auto a_m = a.map("flaky", a_src, [](int v) -> int { throw boom("always " + std::to_string(v)); },
                   {.capacity = 1, .on_error = sluice::restart{.max = 5, .within = 60s, .backoff = std::chrono::hours(1)}});
  a.sink("sink", a_m, [](int) {});
  a.start();
  ASSERT_TRUE(eventually([&] { return stage_of(a.snapshot(), "flaky").state == "restarting"; }))
      << stage_of(a.snapshot(), "flaky").state;

  std::atomic<int> b_stalls{0};
  sluice_test::gate release;
  sluice::graph b({.stall_threshold = 100ms, .on_stall = [&](const auto&) { b_stalls.fetch_add(1); }});
  auto b_src = b.source<int>("src", count_to(100), {.capacity = 1});
  auto b_m = b.map("stuck", b_src, [&](int v) {
    release.wait();
    return v;
  }, {.capacity = 1});
  b.sink("sink", b_m, [](int) {});
  b.start();
  ASSERT_TRUE(eventually([&] { return b_stalls.load() >= 1; }, 30s)) << "the control reported no stall";
  EXPECT_EQ(a_stalls.load(), 0) << "a restart backoff was reported as a stall";
  EXPECT_EQ(stage_of(a.snapshot(), "flaky").state, "restarting");
  release.open();
  b.request_stop();
  (void)b.wait();
  a.cancel();
  EXPECT_THROW(a.wait(), sluice::cancelled);
  EXPECT_EQ(a.last_report().stalls, 0u);
  EXPECT_EQ(stage_of(a.last_report().metrics, "flaky").restarts, 0u);
}

// A stage function whose copy constructor throws when the replicas' copies are made at
// start(): a stage_error naming the stage, as any failure of the stage's own code (it used
// to be the raw exception, with no stage named).
TEST(graph, a_stage_function_whose_copy_throws_at_start_is_a_stage_error_naming_it) {
  watchdog dog(30s);
  struct picky {
    std::shared_ptr<std::atomic<int>> copies_left;  // copies it may still make once armed
    picky() : copies_left(std::make_shared<std::atomic<int>>(-1)) {}
    picky(const picky& o) : copies_left(o.copies_left) {
      if (*copies_left >= 0 && (*copies_left)-- == 0) throw std::runtime_error("no more copies");
    }
    picky& operator=(const picky&) = default;
    int operator()(int v) const { return v; }
  };
  picky f;
  sluice::graph g;
  auto src = g.source<int>("src", count_to(10));
  auto m = g.map("m", src, f, {.replicas = 3});
  g.sink("sink", m, [](int) {});
  *f.copies_left = 1;  // start() copies once per replica: the second copy throws
  try {
    g.run();
    ADD_FAILURE() << "run() returned";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "m");
    EXPECT_NE(std::string(e.what()).find("no more copies"), std::string::npos) << e.what();
  }
}

// A restart window of 0 (or less) would never see two restarts in it, so the intensity
// limit would never hold: refused when the stage is added.
// Two restart policies are equal only when their limits are (== compared the kinds only).
TEST(graph, error_policies_compare_their_restart_limits) {
  using sluice::error_policy;
  using sluice::restart;
  EXPECT_EQ(error_policy::stop, error_policy::stop);
  EXPECT_NE(error_policy::stop, error_policy::skip);
  EXPECT_EQ(error_policy(restart{}), error_policy(restart{}));
  EXPECT_NE(error_policy(restart{.max = 1}), error_policy(restart{.max = 100}));
  EXPECT_NE(error_policy(restart{.within = 1s}), error_policy(restart{.within = 1h}));
  EXPECT_NE(error_policy(restart{.backoff = 0s}), error_policy(restart{.backoff = 5s}));
  EXPECT_NE(error_policy(restart{}), error_policy::stop);
}

TEST(graph, a_restart_window_of_zero_is_an_invalid_argument) {
  for (const auto within : {std::chrono::steady_clock::duration::zero(), -std::chrono::steady_clock::duration(std::chrono::seconds(1))}) {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(1));
    EXPECT_THROW(g.map("m", src, [](int v) { return v; },
                       {.on_error = sluice::restart{.max = 2, .within = within, .backoff = {}}}),
                 std::invalid_argument);
  }
}

TEST(graph, restart_in_ordered_replicas_resumes_the_batch_and_keeps_order) {
  watchdog dog(30s);
  // Capacity 1: every batch holds one item, so the item that throws is always the last
  // of its batch; the restarted replica must still deliver that batch's number.
  for (int rep = 0; rep < 5; ++rep) {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(200), {.capacity = 1});
    auto m = g.map("m", src, [](int v) {
      if (v % 17 == 5) throw boom("flaky");
      return v;
    }, {.capacity = 2, .replicas = 3, .ordered = true,
        .on_error = sluice::restart{.max = 100, .within = std::chrono::seconds(60), .backoff = {}}});
    std::vector<int> got;
    g.sink("sink", m, [&](int v) { got.push_back(v); });
    const sluice::report r = g.run();
    std::vector<int> want;
    for (int v = 0; v < 200; ++v) {
      if (v % 17 != 5) want.push_back(v);
    }
    EXPECT_EQ(got, want);
    EXPECT_EQ(stage_of(r.metrics, "m").restarts, 12u);
    EXPECT_TRUE(r.balanced());
  }
}

// An ordered flat_map's replica takes a batch of input items (up to 64) and writes their
// outputs into one private channel. An item that throws in the middle of a batch: under
// restart the fresh function goes on with the rest of that batch in the same channel, and
// under skip the replica goes on at once; either way output order is input order and
// only the failing items are missing.
TEST(graph, ordered_flat_map_resumes_a_batch_after_an_item_in_it_throws) {
  watchdog dog(60s);
  for (const bool restart : {true, false}) {
    for (int rep = 0; rep < 5; ++rep) {
      sluice::graph g;
      auto src = g.source<int>("src", count_to(600), {.capacity = 64});
      const sluice::error_policy policy =
          restart ? sluice::error_policy{sluice::restart{.max = 1000, .within = std::chrono::seconds(60), .backoff = {}}}
                  : sluice::error_policy{sluice::error_policy::skip};
      auto fm = g.flat_map<int>("fm", src, [](int v, sluice::sender<int>& out) {
        out.push(2 * v);
        if (v % 13 == 4) throw boom("flaky");  // after one of its two outputs
        out.push(2 * v + 1);
      }, {.capacity = 64, .replicas = 3, .ordered = true, .on_error = policy});
      std::vector<int> got;
      g.sink("sink", fm, [&](int v) { got.push_back(v); });
      const sluice::report r = g.run();
      std::vector<int> want;
      std::uint64_t failing = 0;
      for (int v = 0; v < 600; ++v) {
        want.push_back(2 * v);
        if (v % 13 != 4) want.push_back(2 * v + 1);
        if (v % 13 == 4) ++failing;
      }
      EXPECT_EQ(got, want) << (restart ? "restart" : "skip");
      EXPECT_EQ(stage_of(r.metrics, "fm").restarts, restart ? failing : 0u);
      EXPECT_EQ(stage_of(r.metrics, "fm").errors, failing);
      EXPECT_TRUE(r.balanced());
    }
  }
}

TEST(graph, restart_intensity_limit_fails_the_graph_with_the_last_error) {
  watchdog dog(20s);
  sluice::graph g;
  std::atomic<int> calls{0};
  auto src = g.source<int>("src", count_to(1000));
  auto m = g.map("always", src, [&](int v) -> int {
    throw boom(cat(cat("attempt ", std::to_string(calls.fetch_add(1))), cat(" item ", std::to_string(v))));
  }, {.on_error = sluice::restart{.max = 3, .within = std::chrono::seconds(60), .backoff = {}}});
  g.sink("sink", m, [](int) {});
  try {
    g.run();
    ADD_FAILURE();
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "always");
    try {
      std::rethrow_exception(e.cause());
    } catch (const boom& b) {
      EXPECT_EQ(std::string(b.what()), "attempt 3 item 3");  // the last error
    }
  }
  EXPECT_EQ(calls.load(), 4);
  EXPECT_EQ(stage_of(g.last_report().metrics, "always").restarts, 3u);
}

TEST(graph, restarted_source_is_called_again) {
  watchdog dog(20s);
  sluice::graph g;
  std::atomic<int> runs{0};
  auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
    const int r = runs.fetch_add(1);
    for (int i = 0; i < 10; ++i) out.push(r * 10 + i);
    if (r < 2) throw boom("connection reset");
  }, {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60), .backoff = {}}});
  std::vector<int> got;
  g.sink("sink", src, [&](int v) { got.push_back(v); });
  g.run();
  EXPECT_EQ(runs.load(), 3);
  EXPECT_EQ(got.size(), 30u);
}

TEST(graph, on_close_runs_once_per_stage_however_it_ends) {
  watchdog dog(20s);
  std::atomic<int> closed_ok{0}, closed_failed{0};
  {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(100), {.on_close = [&] { closed_ok.fetch_add(1); }});
    auto m = g.map("m", src, [](int v) { return v; }, {.replicas = 3, .on_close = [&] { closed_ok.fetch_add(1); }});
    g.sink("sink", m, [](int) {}, {.on_close = [&] { closed_ok.fetch_add(1); }});
    g.run();
  }
  EXPECT_EQ(closed_ok.load(), 3);
  {
    sluice::graph g;
    auto src = g.source<int>("src", count_to(100), {.on_close = [&] { closed_failed.fetch_add(1); }});
    auto m = g.map("m", src, [](int v) -> int { throw boom(cat("x", std::to_string(v))); },
                   {.on_close = [&] { closed_failed.fetch_add(1); }});
    g.sink("sink", m, [](int) {}, {.on_close = [&] { closed_failed.fetch_add(1); }});
    EXPECT_THROW(g.run(), sluice::stage_error);
  }
  EXPECT_EQ(closed_failed.load(), 3);
}

TEST(graph, on_close_that_throws_fails_the_graph) {
  watchdog dog(20s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(10));
  g.sink("sink", src, [](int) {}, {.on_close = [] { throw boom("flush failed"); }});
  try {
    g.run();
    ADD_FAILURE();
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "sink");
  }
}

// ---- accounting and hooks ---------------------------------------------------------------------

TEST(graph, dead_letters_work_for_move_only_items_and_match_the_counts) {
  watchdog dog(20s);
  std::vector<int> dead;
  std::mutex mu;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    auto* p = d.get<std::unique_ptr<int>>();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(d.get<int>(), nullptr);
    EXPECT_EQ(d.channel(), "src -> take");
    std::lock_guard lk(mu);
    dead.push_back(**p);
    p->reset();  // the hook may take the item
  }});
  std::atomic<int> pushed{0};
  auto src = g.source<std::unique_ptr<int>>("src", [&](sluice::sender<std::unique_ptr<int>>& out) {
    for (int i = 0; out.push(std::make_unique<int>(i)); ++i) pushed.store(i + 1);
  }, {.capacity = 16});
  std::vector<int> got;
  g.sink("take", src, [&](std::unique_ptr<int> p) {
    got.push_back(*p);
    return got.size() < 5;
  });
  const sluice::report r = g.run();
  EXPECT_TRUE(r.balanced());
  // Every pushed item was either consumed or became a dead letter, exactly once.
  std::vector<int> all = got;
  all.insert(all.end(), dead.begin(), dead.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<std::size_t>(pushed.load()));
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int>(i));
}

// Items a stage took in a batch and never processed are counted as dead letters of their
// channel (channel_snapshot::dead_letters), with an on_discard hook or without one. They
// used to be counted nowhere without a hook: a sink that returned false on its first item
// of a 64-item batch left 63 items neither delivered, discarded nor counted.
const sluice::metrics::channel_snapshot& channel_named(const sluice::metrics::snapshot& s, const std::string& name) {
  for (const auto& c : s.channels) {
    if (c.name == name) return c;
  }
  throw std::runtime_error("no channel " + name);
}

TEST(graph, items_a_stage_took_and_dropped_are_counted_as_dead_letters_hook_or_not) {
  watchdog dog(30s);
  for (const bool with_hook : {false, true}) {
    SCOPED_TRACE(with_hook ? "with on_discard" : "without on_discard");
    std::atomic<std::uint64_t> hooked{0};
    sluice::graph_options o;
    if (with_hook) o.on_discard = [&](const sluice::dead_letter&) { ++hooked; };
    // A sink that has enough after its first item, fed faster than it takes.
    {
      sluice::graph g(o);
      auto src = g.source<int>("src", count_to(100), {.capacity = 64});
      int calls = 0;
      g.sink("first", src, [&](int) {
        ++calls;
        return false;
      });
      const sluice::report r = g.run();
      EXPECT_TRUE(r.balanced());
      const auto snap = g.snapshot();
      const auto& c = channel_named(snap, "src -> first");
      EXPECT_EQ(calls, 1);
      EXPECT_EQ(c.stats.popped, static_cast<std::uint64_t>(calls) + c.dead_letters);
      EXPECT_EQ(c.stats.pushed, c.stats.popped + c.stats.discarded + c.stats.items);
      if (with_hook) {
        EXPECT_EQ(hooked.load(), c.dead_letters + c.stats.discarded);
      }
    }
    // A map that throws on its first item: that item and the rest of its batch.
    hooked = 0;
    {
      sluice::graph g(o);
      auto src = g.source<int>("src", count_to(64), {.capacity = 64});
      auto m = g.map("m", src, [](int v) -> int { throw boom("no " + std::to_string(v)); });
      std::atomic<int> got{0};
      g.sink("sink", m, [&](int) { ++got; });
      EXPECT_THROW(g.run(), sluice::stage_error);
      const auto snap = g.snapshot();
      const auto& in = channel_named(snap, "src -> m");
      EXPECT_EQ(got.load(), 0);
      EXPECT_GT(in.stats.popped, 0u);
      EXPECT_EQ(in.dead_letters, in.stats.popped);  // every item m took, counted once
      if (with_hook) {
        std::uint64_t all = 0;
        for (const auto& c : snap.channels) all += c.dead_letters + c.stats.discarded;
        EXPECT_EQ(hooked.load(), all);
      }
    }
  }
}

// A partition whose branch has ended: the items routed to it are dead letters of that
// branch, counted whether or not there is an on_discard hook (they were handed to the
// hook uncounted, and without one they vanished while the report said balanced).
TEST(graph, items_a_partition_routes_to_an_ended_branch_are_counted_as_dead_letters) {
  watchdog dog(30s);
  const int n = 10000;
  for (const bool with_hook : {false, true}) {
    SCOPED_TRACE(with_hook ? "with on_discard" : "without on_discard");
    std::atomic<std::uint64_t> hooked{0};
    sluice::graph_options o;
    if (with_hook) o.on_discard = [&](const sluice::dead_letter&) { ++hooked; };
    sluice::graph g(o);
    auto src = g.source<int>("src", count_to(n));
    auto parts = g.partition(src, 2, [](const int& v) { return v; });
    std::atomic<int> taken{0};
    g.sink("k0", parts[0], [&](int) {  // takes one item, then has enough
      ++taken;
      return false;
    });
    g.sink("k1", parts[1], [&](int) { ++taken; });
    const sluice::report r = g.run();
    EXPECT_TRUE(r.balanced());
    std::uint64_t lost = 0;
    for (const auto& c : r.metrics.channels) lost += c.dead_letters + c.stats.discarded;
    EXPECT_GT(lost, 0u);
    EXPECT_EQ(static_cast<std::uint64_t>(taken.load()) + lost, static_cast<std::uint64_t>(n))
        << "items neither delivered nor counted";
    if (with_hook) {
      EXPECT_EQ(hooked.load(), lost);
    }
  }
}

// wait()/wait_for() from the graph's own hooks or stage threads would wait for
// themselves (on_done runs before the run is marked ended): a logic_error, not a hang.
TEST(graph, waiting_from_the_graphs_own_hooks_or_stages_is_a_logic_error) {
  watchdog dog(30s);
  std::atomic<int> refused{0};
  sluice::graph* self = nullptr;
  auto try_wait = [&](bool timed) {
    try {
      if (timed) {
        (void)self->wait_for(1s);
      } else {
        (void)self->wait();
      }
    } catch (const std::logic_error& e) {
      if (std::string(e.what()).find("would wait for itself") != std::string::npos) ++refused;
    }
  };
  sluice::graph g({.on_discard = [&](const sluice::dead_letter&) { try_wait(false); },
                   .on_done = [&](const sluice::report&, std::exception_ptr) {
                     try_wait(false);
                     try_wait(true);
                   }});
  self = &g;
  auto src = g.source<int>("src", count_to(100), {.capacity = 64});
  g.sink("picky", src, [&](int v) {
    if (v == 0) try_wait(true);
    return v != 1;  // the rest of its batch: dead letters
  });
  const sluice::report r = g.run();  // the outcome is still ours to take
  EXPECT_TRUE(r.balanced());
  EXPECT_GE(refused.load(), 4);  // the stage, on_done twice, and at least one dead letter
}

// graph_options::on_discard may cancel or stop the graph: the first dead letter of a
// run that should not lose any ends it. This used to deadlock: the hook runs under the
// graph's dead-letter lock, and the teardown it started discarded more items.
TEST(graph, an_on_discard_hook_may_cancel_or_stop_the_graph) {
  watchdog dog(30s);
  for (const bool stop : {false, true}) {
    SCOPED_TRACE(stop ? "request_stop()" : "cancel()");
    std::atomic<std::uint64_t> hooked{0};
    sluice::graph* self = nullptr;
    sluice::graph g({.on_discard = [&](const sluice::dead_letter&) {
      if (hooked++ == 0) {
        if (stop) {
          self->request_stop();
        } else {
          self->cancel();
        }
      }
    }});
    self = &g;
    // A source that never ends on its own, and a sink that turns down every 5th item.
    auto src = g.source<int>("src", [](sluice::sender<int>& out, std::stop_token st) {
      for (int i = 0; !st.stop_requested(); ++i) {
        if (!out.push(i)) return;
      }
    }, {.capacity = 16});
    g.sink("picky", src, [](int v) { return v % 5 != 4; });
    if (stop) {
      const sluice::report r = g.run();
      EXPECT_TRUE(r.balanced());
    } else {
      EXPECT_THROW(g.run(), sluice::cancelled);
    }
    const auto snap = g.snapshot();
    const auto& c = channel_named(snap, "src -> picky");
    EXPECT_GE(hooked.load(), 1u);
    EXPECT_EQ(hooked.load(), c.dead_letters + c.stats.discarded);
  }
}

struct blob {
  std::string bytes;
};

}  // namespace

template <>
struct sluice::channel_traits<blob> {
  static constexpr bool weighted = true;
  static std::size_t weigh(const blob& b) { return b.bytes.size(); }
};

namespace {

TEST(graph, weighted_item_types_get_byte_budgeted_channels) {
  watchdog dog(20s);
  sluice::graph g;
  std::atomic<std::size_t> max_size{0};
  auto src = g.source<blob>("src", [](sluice::sender<blob>& out) {
    for (int i = 0; i < 200; ++i) out.push(blob{std::string(100, 'x')});
  }, {.capacity = 1000});  // bytes: ten blobs
  auto m = g.map("m", src, [](blob b) { return b; }, {.capacity = 500});
  std::size_t total = 0;
  g.sink("sink", m, [&](blob b) {
    total += b.bytes.size();
    std::this_thread::sleep_for(10us);
  });
  g.start();
  std::thread watcher([&] {
    for (int i = 0; i < 200; ++i) {
      for (const auto& c : g.snapshot().channels) {
        std::size_t cur = max_size.load();
        while (c.stats.size > cur && !max_size.compare_exchange_weak(cur, c.stats.size)) {
        }
      }
      std::this_thread::sleep_for(100us);
    }
  });
  const sluice::report r = g.wait();
  watcher.join();
  EXPECT_EQ(total, 20000u);
  ASSERT_EQ(r.metrics.channels.size(), 2u);
  EXPECT_TRUE(r.metrics.channels[0].weighted);
  EXPECT_EQ(r.metrics.channels[0].stats.capacity, 1000u);
  EXPECT_EQ(r.metrics.channels[1].stats.capacity, 500u);
  EXPECT_LE(max_size.load(), 1000u);
}

// Replicas of a weighted item type (large items, slow each) take one item per pop: two
// blobs queued for two replicas are worked on at once, one each, as parallel_gzip's
// blocks must be. (With a batch of several, the first replica to wake took both and the
// second sat idle.)
TEST(graph, replicas_of_weighted_items_take_one_item_per_pop) {
  watchdog dog(30s);
  {
    auto [tx, rx] = sluice::bounded<blob>(1);
    EXPECT_EQ(sluice::detail::batch_for(rx, 2), 1u);
    EXPECT_EQ(sluice::detail::batch_for(rx, 1), 1u);  // capacity 1 anyway
    auto [itx, irx] = sluice::bounded<int>(1024);
    EXPECT_GT(sluice::detail::batch_for(irx, 2), 1u);  // small items: batched
  }
  for (const bool ordered : {true, false}) {
    sluice::graph g;
    std::mutex mu;
    std::condition_variable cv;
    int inside = 0;
    int alone = 0;  // calls that waited in vain for the other item
    auto src = g.source<blob>("src", [](sluice::sender<blob>& out) {
      out.push(blob{std::string(100, 'a')});
      out.push(blob{std::string(100, 'b')});
    }, {.capacity = 1000});
    auto m = g.map("work", src, [&](blob b) {
      std::unique_lock lk(mu);
      ++inside;
      cv.notify_all();
      // Both items are in the function at the same time only if each replica took one.
      if (!cv.wait_for(lk, 10s, [&] { return inside == 2; })) ++alone;
      return b;
    }, {.capacity = 1000, .replicas = 2, .ordered = ordered});
    std::size_t n = 0;
    g.sink("sink", m, [&](blob) { ++n; });
    g.run();
    EXPECT_EQ(n, 2u);
    EXPECT_EQ(alone, 0) << (ordered ? "ordered" : "unordered") << ": one replica took both items";
  }
}

TEST(graph, snapshot_from_another_thread_while_running) {
  watchdog dog(30s);
  sluice::graph g;
  auto src = g.source<int>("src", count_to(5000), {.capacity = 32});
  auto m = g.map("m", src, [](int v) { return v; }, {.capacity = 32, .replicas = 2});
  g.sink("sink", m, [](int) { std::this_thread::sleep_for(1us); });
  std::atomic<bool> done{false};
  // Every counter of every stage only grows from one snapshot to the next (Prometheus
  // reads a counter that goes down as a restart).
  std::map<std::string, std::array<std::uint64_t, 5>> last;
  std::vector<std::string> regressions;
  std::thread reader([&] {
    while (!done.load()) {
      const auto s = g.snapshot();
      for (const auto& st : s.stages) {
        const std::array<std::uint64_t, 5> now{st.items_in, st.items_out, st.busy_ns, st.backpressured_ns,
                                               st.starved_ns};
        auto& before = last[st.name];
        for (std::size_t i = 0; i < now.size(); ++i) {
          if (now[i] < before[i]) regressions.push_back(st.name + " counter " + std::to_string(i));
        }
        before = now;
      }
      std::this_thread::yield();
    }
  });
  const sluice::report r = g.run();
  done = true;
  reader.join();
  EXPECT_TRUE(regressions.empty()) << regressions.size() << " regressions, first: " << regressions.front();
  EXPECT_EQ(stage_of(r.metrics, "sink").items_in, 5000u);
  EXPECT_EQ(stage_of(r.metrics, "m").replicas, 2u);
  // Time accounting: the slow sink keeps the others waiting.
  EXPECT_GT(stage_of(r.metrics, "src").backpressured_ns, 0u);
  EXPECT_GT(stage_of(r.metrics, "sink").busy_ns, 0u);
}

// A stage starved for a long while: a live snapshot counts the wait in progress as
// starved time, not busy time, and the counters move on from there after it ends.
TEST(graph, live_snapshot_counts_a_long_wait_as_waiting) {
  watchdog dog(30s);
  sluice::graph g;
  gate more;
  auto src = g.source<int>("src", [&](sluice::sender<int>& out, std::stop_token st) {
    if (!out.push(1)) return;
    more.wait(st);
  });
  std::atomic<int> got{0};
  g.sink("sink", src, [&](int) { got.fetch_add(1); });
  sluice::report r;
  std::thread runner([&] { r = g.run(); });
  ASSERT_TRUE(eventually([&] {
    const auto s = g.snapshot();
    return got.load() == 1 && has_stage(s, "sink") && stage_of(s, "sink").blocked_op == "pop";
  }));
  const auto s1 = g.snapshot();
  // Let 3 ms pass on the clock while the sink stays parked (time passing, not a sync).
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 3ms) {
  }
  const auto s2 = g.snapshot();
  more.open();
  runner.join();
  const auto& a = stage_of(s1, "sink");
  const auto& b = stage_of(s2, "sink");
  EXPECT_GE(b.starved_ns, a.starved_ns + 2'500'000u);
  EXPECT_LT(b.busy_ns, a.busy_ns + 1'000'000u);  // not counted as busy
  const auto& end = stage_of(r.metrics, "sink");
  EXPECT_GE(end.busy_ns, b.busy_ns);
  EXPECT_GE(end.starved_ns, b.starved_ns);
}

TEST(graph, items_are_destroyed_exactly_once_on_failure) {
  watchdog dog(20s);
  using sluice_test::tracked;
  const auto before = tracked::counters().snapshot();
  {
    sluice::graph g({.on_discard = [](const sluice::dead_letter& d) { EXPECT_NE(d.get<tracked>(), nullptr); }});
    auto src = g.source<tracked>("src", [](sluice::sender<tracked>& out) {
      for (std::uint64_t i = 0; out.push(tracked(i)); ++i) {
      }
    }, {.capacity = 8});
    auto m = g.map("m", src, [](tracked t) {
      if (t.value() == 500) throw boom("500");
      return t;
    }, {.capacity = 8, .replicas = 2});
    g.sink("sink", m, [](tracked) {});
    EXPECT_THROW(g.run(), sluice::stage_error);
    EXPECT_TRUE(g.last_report().balanced());
  }
  EXPECT_EQ(tracked::counters().live_since(before), 0);
  EXPECT_EQ(tracked::counters().bad_destroys(), 0);
}

// ---- stuck stages and stalls -------------------------------------------------------------------

TEST(graph, a_stage_stuck_past_the_teardown_deadline_is_named_and_still_joined) {
  watchdog dog(30s);
  const std::size_t before = thread_count();
  gate latch;  // ignores stop tokens: a blocking call sluice cannot interrupt
  std::vector<std::string> stuck;
  {
    sluice::graph g({.teardown_deadline = std::chrono::milliseconds(100),
                     .on_stuck = [&](const std::string& name) {
                       stuck.push_back(name);
                       latch.open();  // now it can be joined
                     }});
    std::atomic<bool> entered{false};
    auto a = g.source<int>("a", [&](sluice::sender<int>& out) {
      out.push(1);
      ASSERT_TRUE(eventually([&] { return entered.load(); }));
      throw boom("a fails");
    });
    g.sink("stubborn", a, [&](int) {
      entered = true;
      latch.wait();
    });
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(g.run(), sluice::stage_error);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
    const sluice::report r = g.last_report();
    EXPECT_EQ(r.stuck, std::vector<std::string>{"stubborn"});
    EXPECT_EQ(stage_of(r.metrics, "stubborn").state, "stuck");
    EXPECT_TRUE(r.balanced());
  }
  EXPECT_EQ(stuck, std::vector<std::string>{"stubborn"});
  EXPECT_TRUE(eventually([&] { return thread_count() == before; }));
}

// A deadline of zero or less named every stage stuck at once (even ones a microsecond from
// exiting), and a negative stall threshold meant nothing: both are invalid_argument now.
TEST(graph, a_teardown_deadline_not_above_zero_or_a_negative_stall_threshold_is_invalid) {
  for (const auto d : {std::chrono::steady_clock::duration::zero(), -std::chrono::steady_clock::duration(1ms)}) {
    try {
      sluice::graph g({.teardown_deadline = d});
      FAIL() << "accepted a teardown deadline of " << d.count();
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("teardown_deadline"), std::string::npos) << e.what();
    }
  }
  try {
    sluice::graph g({.stall_threshold = -std::chrono::steady_clock::duration(1s)});
    FAIL() << "accepted a negative stall threshold";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("stall_threshold"), std::string::npos) << e.what();
  }
  sluice::graph off({.stall_threshold = std::chrono::steady_clock::duration::zero()});  // zero: off, fine
  auto src = off.source<int>("src", count_to(10));
  off.sink("sink", src, [](int) {});
  EXPECT_TRUE(off.run().balanced());
  // The snapshot carries the threshold (the live page's STALL uses the graph's own).
  EXPECT_EQ(off.snapshot().stall_threshold, std::chrono::nanoseconds::zero());
  EXPECT_EQ(sluice::graph().snapshot().stall_threshold, std::chrono::seconds(10));
  EXPECT_EQ(sluice::graph({.stall_threshold = 1500ms}).snapshot().stall_threshold, std::chrono::milliseconds(1500));
}

TEST(graph, a_stall_is_reported_with_its_wait_for_chain) {
  watchdog dog(30s);
  gate latch;
  std::mutex mu;
  std::vector<sluice::metrics::wait_link> chain;
  std::atomic<int> stalls{0};
  sluice::graph g({.stall_threshold = std::chrono::milliseconds(50),
                   .on_stall = [&](const std::vector<sluice::metrics::wait_link>& c) {
                     {
                       std::lock_guard lk(mu);
                       chain = c;
                     }
                     stalls.fetch_add(1);
                   }});
  auto src = g.source<int>("src", count_to(1000), {.capacity = 2});
  auto a = g.map("a", src, [](int v) { return v; }, {.capacity = 2});
  std::atomic<bool> entered{false};
  auto b = g.map("b", a, [&](int v) {
    if (v == 0) {
      entered = true;
      latch.wait();  // blocked outside sluice, mid-chain
    }
    return v;
  }, {.capacity = 2});
  auto c = g.map("c", b, [](int v) { return v; }, {.capacity = 2});
  std::size_t n = 0;
  g.sink("sink", c, [&](int) { ++n; });
  g.start();
  // A loaded machine may show a short false stall while the chain forms (a stage that
  // is runnable but not running for 50 ms); the real one is reported once it settles.
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(mu);
    return entered.load() && chain.size() == 2 && chain.back().holder == "b";
  }));
  {
    std::lock_guard lk(mu);
    // The longest chain runs from the source down to the stage that holds it up.
    EXPECT_EQ(chain[0].stage, "src");
    EXPECT_EQ(chain[0].op, "push");
    EXPECT_EQ(chain[0].channel, "src -> a");
    EXPECT_EQ(chain[0].holder, "a");
    EXPECT_EQ(chain[1].stage, "a");
    EXPECT_EQ(chain[1].op, "push");
    EXPECT_EQ(chain[1].channel, "a -> b");
    EXPECT_EQ(chain[1].holder, "b");
  }
  const auto s = g.snapshot();
  EXPECT_EQ(stage_of(s, "c").blocked_op, "pop");
  EXPECT_EQ(stage_of(s, "c").blocked_on, "b -> c");
  EXPECT_EQ(stage_of(s, "sink").blocked_op, "pop");
  EXPECT_EQ(stage_of(s, "b").blocked_op, "");
  latch.open();
  const sluice::report r = g.wait();
  EXPECT_EQ(n, 1000u);
  EXPECT_GE(r.stalls, 1u);
  EXPECT_FALSE(r.stall.empty());
}

TEST(graph, destroying_a_started_graph_cancels_and_joins) {
  watchdog dog(20s);
  const std::size_t before = thread_count();
  {
    sluice::graph g;
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; out.push(i); ++i) {
      }
    });
    g.sink("sink", src, [](int, std::stop_token st) {
      gate never;
      never.wait(st);
    });
    g.start();
  }
  EXPECT_TRUE(eventually([&] { return thread_count() == before; }));
}

}  // namespace

namespace {

// Stage names are any bytes, but the exporters write a byte that is not UTF-8 as U+FFFD:
// two names that differ only there would be one Prometheus series (a scrape error) and
// one name in the JSON. The second is refused, as an exact duplicate is.
TEST(graph, stage_names_that_export_alike_are_duplicates) {
  sluice::graph g;
  auto s = g.source<int>("bad\xff", [](sluice::sender<int>& out) { out.push(1); });
  try {
    g.map("bad\xfe", s, [](int v) { return v; });
    ADD_FAILURE() << "a second stage exported as 'bad\xEF\xBF\xBD' was accepted";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("not UTF-8"), std::string::npos) << e.what();
  }
  // Valid UTF-8 names that differ stay distinct, and the graph still runs.
  auto m = g.map("bad\xC3\xA9", s, [](int v) { return v; });
  int got = 0;
  g.sink("sink", m, [&](int v) { got += v; });
  g.run();
  EXPECT_EQ(got, 1);
}

// A stage's busy time is a counter (Prometheus' sluice_stage_busy_seconds_total): an
// external channel's reading that jumps (a JetStream edge's cached gauge) moves time from
// busy to blocked, and a later snapshot must still not report less busy time than an
// earlier one.
TEST(graph, a_jumping_external_channel_reading_never_makes_busy_time_go_down) {
  watchdog dog(60s, "external busy floor");
  sluice::graph g;
  std::atomic<std::uint64_t> blocked_push{0};
  std::atomic<bool> registered{false};
  gate done;
  auto s = g.source<int>("src", [](sluice::sender<int>& out) { out.push(1); });
  g.sink("pub", s, [&](int, std::stop_token st) {
    sluice::this_stage::add_external_channel("jetstream:x", true, [&] {
      return sluice::metrics::external_channel_reading{0, 10, blocked_push.load(), 0};
    });
    registered = true;
    done.wait(st);  // busy (in the stage's own code) until the test is done
  });
  g.start();
  ASSERT_TRUE(eventually([&] { return registered.load(); }));
  // Some busy time to lose: polled, not slept for.
  ASSERT_TRUE(eventually([&] { return stage_of(g.snapshot(), "pub").busy_ns >= 20'000'000; }, 20s));
  const auto before = stage_of(g.snapshot(), "pub");
  blocked_push = before.busy_ns + 1'000'000'000ULL;  // more than all its busy time so far
  const auto after = stage_of(g.snapshot(), "pub");
  EXPECT_GE(after.busy_ns, before.busy_ns);
  EXPECT_GE(after.backpressured_ns, blocked_push.load());
  const auto later = stage_of(g.snapshot(), "pub");
  EXPECT_GE(later.busy_ns, after.busy_ns);
  done.open();
  g.wait();
}

// Names that differ only in bytes that are not UTF-8 are one name once exported (each such
// byte becomes U+FFFD): channel names are kept apart, and external channels merged, as
// exported. "a -> \xff" -> "c" and "a" -> "\xfe -> c" were two channels of one name in
// the JSON; "ext\xff" and "ext\xfe" from one stage two series of one name in /metrics,
// which Prometheus rejects (a probe).
TEST(graph, names_alike_once_exported_are_kept_apart_or_merged_as_exported) {
  watchdog dog(60s, "exported names");
  sluice::graph g;
  auto s1 = g.source<int>("a -> \xff", [](sluice::sender<int>& out) { (void)out.push(1); });
  auto s2 = g.source<int>("a", [](sluice::sender<int>& out) {
    sluice::this_stage::add_external_channel("ext\xff", true, [] { return sluice::metrics::external_channel_reading{1, 10, 0, 0}; });
    sluice::this_stage::add_external_channel("ext\xfe", true, [] { return sluice::metrics::external_channel_reading{2, 10, 0, 0}; });
    (void)out.push(2);
  });
  g.sink("c", s1, [](int) {});
  g.sink("\xfe -> c", s2, [](int) {});
  const sluice::report r = g.run();
  // As exported: here every byte past ASCII is one that is not UTF-8.
  const auto exported = [](std::string s) {
    for (char& ch : s) {
      if (static_cast<unsigned char>(ch) >= 0x80) ch = '?';
    }
    return s;
  };
  std::set<std::string> shown;
  std::size_t external = 0;
  for (const auto& c : r.metrics.channels) {
    if (c.external) {
      ++external;
      continue;
    }
    EXPECT_TRUE(shown.insert(exported(c.name)).second) << "two channels alike once exported: " << exported(c.name);
  }
  EXPECT_EQ(shown.size(), 2u);
  EXPECT_EQ(external, 1u) << sluice::metrics::to_json(r.metrics);
}

// An external channel re-registered by its restarted stage counts on from the first
// gauge's last reading (its blocked times are exported as *_total counters; before, they
// went back to the new gauge's 0), and another stage's channel of the same name (a graph
// that publishes to a stream and subscribes to it) is a channel of its own (before, the
// second replaced the first, and the publisher's time vanished).
TEST(graph, external_channels_are_per_stage_and_count_on_across_a_restart) {
  watchdog dog(60s, "external restart");
  sluice::graph g;
  std::atomic<int> runs{0};
  std::atomic<std::uint64_t> second{0};
  std::atomic<bool> sub_registered{false};
  gate done;
  using reading = sluice::metrics::external_channel_reading;
  auto pub = g.source<int>("pub", [&](sluice::sender<int>& out, std::stop_token st) {
    if (runs.fetch_add(1) == 0) {
      sluice::this_stage::add_external_channel("jetstream:s", true, [] { return reading{0, 10, 700'000'000, 0}; });
      throw boom("once");
    }
    sluice::this_stage::add_external_channel("jetstream:s", true, [&] { return reading{0, 10, second.load(), 0}; });
    out.push(1);
    done.wait(st);
  }, {.on_error = sluice::restart{.max = 3, .within = std::chrono::seconds(60), .backoff = {}}});
  g.sink("sub", pub, [&](int, std::stop_token st) {
    sluice::this_stage::add_external_channel("jetstream:s", false, [] { return reading{0, 10, 0, 5'000'000'000}; });
    sub_registered = true;
    done.wait(st);
  });
  g.start();
  ASSERT_TRUE(eventually([&] { return runs.load() == 2 && sub_registered.load(); }, 20s));
  auto externals = [&] {
    std::vector<sluice::metrics::channel_snapshot> xs;
    for (const auto& c : g.snapshot().channels) {
      if (c.external) xs.push_back(c);
    }
    return xs;
  };
  const auto xs = externals();
  ASSERT_EQ(xs.size(), 2u) << "one channel for each stage that registered jetstream:s";
  const auto& out = xs[0].from == "pub" ? xs[0] : xs[1];
  const auto& in = xs[0].from == "pub" ? xs[1] : xs[0];
  EXPECT_EQ(out.name, "jetstream:s");
  EXPECT_EQ(out.from, "pub");
  EXPECT_EQ(out.to, "");
  EXPECT_EQ(out.stats.blocked_push_ns, 700'000'000u) << "the restarted gauge starts from the first one's time";
  EXPECT_EQ(in.to, "sub");
  EXPECT_EQ(in.from, "");
  EXPECT_EQ(in.stats.blocked_pop_ns, 5'000'000'000u);
  second = 100'000'000;
  const auto later = externals();
  ASSERT_EQ(later.size(), 2u);
  const auto& out2 = later[0].from == "pub" ? later[0] : later[1];
  EXPECT_EQ(out2.stats.blocked_push_ns, 800'000'000u);
  EXPECT_GE(stage_of(g.snapshot(), "pub").backpressured_ns, 800'000'000u);
  EXPECT_GE(stage_of(g.snapshot(), "sub").starved_ns, 5'000'000'000u);
  // A gauge that goes back (a reading of 0 again) never makes the counter go back.
  second = 0;
  const auto again = externals();
  const auto& out3 = again[0].from == "pub" ? again[0] : again[1];
  EXPECT_EQ(out3.stats.blocked_push_ns, 800'000'000u);
  done.open();
  g.wait();
}

// Each replica of a stage, and each stage fused onto one thread, registers a gauge of its
// own (as each replica of a JetStream publish stage does); the snapshot shows one channel
// per name, from and to, with the sum of their blocked times. Before, the last replaced
// the others, whose time vanished while they still counted.
TEST(graph, external_channels_of_replicas_and_fused_stages_add_up) {
  watchdog dog(60s, "external replicas");
  using reading = sluice::metrics::external_channel_reading;
  auto external = [](const sluice::metrics::snapshot& snap, const std::string& name) {
    std::vector<sluice::metrics::channel_snapshot> xs;
    for (const auto& c : snap.channels) {
      if (c.external && c.name == name) xs.push_back(c);
    }
    return xs;
  };
  {
    sluice::graph g;
    std::latch both(2);
    std::atomic<int> next{0};
    gate done;
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; i < 4; ++i) out.push(i);
    }, {.capacity = 1});
    auto m = g.map("pub", src, [&, registered = false](int v) mutable {
      if (!registered) {
        registered = true;
        const std::uint64_t ns = next.fetch_add(1) == 0 ? 300'000'000 : 400'000'000;
        sluice::this_stage::add_external_channel("jetstream:r", true, [ns] { return reading{2, 10, ns, 0}; });
        both.arrive_and_wait();  // each replica holds its item until both registered
      }
      return v;
    }, {.capacity = 1, .replicas = 2, .ordered = false});
    g.sink("sink", m, [&](int, std::stop_token st) { done.wait(st); });
    g.start();
    ASSERT_TRUE(eventually([&] { return next.load() == 2; }, 20s));
    const auto xs = external(g.snapshot(), "jetstream:r");
    ASSERT_EQ(xs.size(), 1u) << "one channel for the stage's replicas";
    EXPECT_EQ(xs[0].from, "pub");
    EXPECT_EQ(xs[0].stats.blocked_push_ns, 700'000'000u) << "each replica's gauge counts";
    EXPECT_EQ(xs[0].stats.size, 2u);
    EXPECT_GE(stage_of(g.snapshot(), "pub").backpressured_ns, 700'000'000u);
    done.open();
    g.wait();
  }
  {
    sluice::graph g;
    std::atomic<int> registered{0};
    gate done;
    auto src = g.source<int>("src", [](sluice::sender<int>& out) { out.push(1); });
    auto f1 = g.map("f1", src, [&, once = false](int v) mutable {
      if (!once) {
        once = true;
        sluice::this_stage::add_external_channel("y", true, [] { return reading{0, 1, 500'000'000, 0}; });
        ++registered;
      }
      return v;
    }, {.fuse = true});
    auto f2 = g.map("f2", f1, [&, once = false](int v) mutable {
      if (!once) {
        once = true;
        sluice::this_stage::add_external_channel("y", true, [] { return reading{0, 1, 700'000'000, 0}; });
        ++registered;
      }
      return v;
    }, {.fuse = true});
    g.sink("sink", f2, [&](int, std::stop_token st) { done.wait(st); });
    g.start();
    ASSERT_TRUE(eventually([&] { return registered.load() == 2; }, 20s));
    const auto xs = external(g.snapshot(), "y");
    ASSERT_EQ(xs.size(), 1u);
    EXPECT_EQ(xs[0].from, "src");  // a fused stage's channel is its host's
    EXPECT_EQ(xs[0].stats.blocked_push_ns, 1'200'000'000u);
    done.open();
    g.wait();
  }
}

}  // namespace

namespace {

// A builder that throws after it began adding its stage (here: an output channel that no
// memory can hold) leaves nothing behind: not the stage, not its name, not a hold on its
// input. The graph used to keep a half-made stage that took the input ("already consumed
// by 'm'"), the name ("two stages are named 'in'"), and failed run() with
// bad_function_call.
TEST(GraphBuild, a_stage_that_cannot_be_made_leaves_no_trace_and_the_graph_still_runs) {
  watchdog dog(20s);
  const std::size_t huge = std::size_t{1} << 40;  // 16 TiB of int slots: bad_alloc, refused before allocating
  sluice::graph g;
  EXPECT_THROW((void)g.source<int>("src", [](sluice::sender<int>&) {}, {.capacity = huge}), std::bad_alloc);
  EXPECT_THROW((void)g.input<int>("in", {.capacity = huge}), std::bad_alloc);
  auto [in, s] = g.input<int>("in", {.capacity = 8});
  EXPECT_THROW((void)g.map("m", s, [](int v) { return v; }, {.capacity = huge}), std::bad_alloc);
  EXPECT_THROW((void)g.map("m", s, [](int v) { return v; }, {.capacity = huge, .replicas = 2, .ordered = true}),
               std::bad_alloc);
  EXPECT_THROW((void)g.flat_map<int>("m", s, [](int v, sluice::sender<int>& o) { (void)o.push(v); }, {.capacity = huge}),
               std::bad_alloc);
  auto m = g.map("m", s, [](int v) { return v * 2; }, {.capacity = 8});
  EXPECT_THROW((void)g.map("f", m, [](int v) { return v; }, {.capacity = huge, .fuse = true}), std::bad_alloc);
  long sum = 0;
  g.sink("f", m, [&](int v) { sum += v; });
  g.start();
  for (int i = 1; i <= 100; ++i) ASSERT_TRUE(in.push(i));
  in.close();
  g.wait();
  EXPECT_EQ(sum, 2 * 5050);
  std::vector<std::string> names;
  for (const auto& st : g.snapshot().stages) names.push_back(st.name);
  EXPECT_EQ(names, (std::vector<std::string>{"in", "m", "f"}));
  std::vector<std::string> channels;
  for (const auto& c : g.snapshot().channels) channels.push_back(c.name);
  EXPECT_EQ(channels, (std::vector<std::string>{"in -> m", "m -> f"}));
}

// A capacity from a server's config that no ring can have, or that this machine's memory
// cannot hold, is refused by the builder with the stage's name in the message, keeping the
// exception's kind (the channel alone cannot say which stage asked for it).
TEST(GraphBuild, a_capacity_that_cannot_be_had_names_the_stage) {
  watchdog dog(20s);
  auto message = [](auto&& build) -> std::string {
    try {
      build();
    } catch (const std::exception& e) {
      return e.what();
    }
    return "(nothing thrown)";
  };
  sluice::graph g;
  auto [in, s] = g.input<int>("in", {.capacity = 8});
  const std::size_t huge = std::size_t{1} << 40;  // 16 TiB of int slots: more than this machine has
  try {
    (void)g.map("parse", s, [](int v) { return v; }, {.capacity = huge});
    ADD_FAILURE() << "no exception";
  } catch (const std::bad_alloc& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("sluice::graph: stage 'parse': capacity 1099511627776 needs 16 TiB", 0), 0u) << what;
  }
  const std::string unaddressable = message([&] { (void)g.input<int>("orders", {.capacity = SIZE_MAX}); });
  EXPECT_EQ(unaddressable.rfind("sluice::graph: stage 'orders': capacity 18446744073709551615 needs", 0), 0u)
      << unaddressable;
  EXPECT_NE(unaddressable.find("more than this machine can address"), std::string::npos) << unaddressable;
  EXPECT_THROW((void)g.input<int>("orders", {.capacity = SIZE_MAX}), std::invalid_argument);
  const std::string fused = message([&] { (void)g.map("enrich", s, [](int v) { return v; }, {.capacity = huge, .fuse = true}); });
  EXPECT_NE(fused.find("stage 'enrich'"), std::string::npos) << fused;
  // Nothing of the refused stages stays: the names are free and the stream is still unconsumed.
  auto m = g.map("parse", s, [](int v) { return v + 1; });
  long sum = 0;
  g.sink("enrich", m, [&](int v) { sum += v; });
  g.start();
  for (int i = 1; i <= 10; ++i) ASSERT_TRUE(in.push(i));
  in.close();
  g.wait();
  EXPECT_EQ(sum, 55 + 10);
}

}  // namespace
