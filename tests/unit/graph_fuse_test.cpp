// stage_options::fuse: a map / filter / flat_map / sink run as a function call on its
// upstream stage's thread. Deterministic tests (each bounded by a watchdog): items and
// order, the thread each function runs on, the snapshot, error policies, cleanup,
// cancel / request_stop / early finish, the build-time checks; then a seeded randomized
// test with exactly-once accounting.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"
#include "support/graph_support.hpp"
#include "support/seed.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using sluice_test::eventually;
using sluice_test::watchdog;

const sluice::metrics::stage_snapshot* find_stage(const sluice::metrics::snapshot& s, const std::string& name) {
  for (const auto& st : s.stages) {
    if (st.name == name) return &st;
  }
  return nullptr;
}

// Records the threads a stage function ran on.
struct thread_log {
  std::mutex mu;
  std::set<std::thread::id> ids;
  void note() {
    std::lock_guard lk(mu);
    ids.insert(std::this_thread::get_id());
  }
  std::set<std::thread::id> get() {
    std::lock_guard lk(mu);
    return ids;
  }
};

TEST(GraphFuse, ChainOfFusedStagesRunsOnTheSourcesThreadInOrder) {
  watchdog wd(60s);
  sluice::graph g;
  thread_log src, m, f, s;
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    src.note();
    for (int i = 0; i < 1000; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto doubled = g.map("double", nums, [&](int v) { m.note(); return v * 2; }, {.fuse = true});
  auto kept = g.filter("keep", doubled, [&](const int& v) { f.note(); return v % 3 == 0; }, {.fuse = true});
  std::vector<int> got;
  g.sink("collect", kept, [&](int v) { s.note(); got.push_back(v); }, {.fuse = true});
  const sluice::report r = g.run();

  std::vector<int> want;
  for (int i = 0; i < 1000; ++i) {
    if ((i * 2) % 3 == 0) want.push_back(i * 2);
  }
  EXPECT_EQ(got, want);
  ASSERT_EQ(src.get().size(), 1u);
  EXPECT_EQ(m.get(), src.get());
  EXPECT_EQ(f.get(), src.get());
  EXPECT_EQ(s.get(), src.get());

  const auto* sm = find_stage(r.metrics, "double");
  const auto* sf = find_stage(r.metrics, "keep");
  const auto* ss = find_stage(r.metrics, "collect");
  ASSERT_TRUE(sm && sf && ss);
  EXPECT_EQ(sm->items_in, 1000u);
  EXPECT_EQ(sm->items_out, 1000u);
  EXPECT_EQ(sf->items_in, 1000u);
  EXPECT_EQ(sf->items_out, want.size());
  EXPECT_EQ(ss->items_in, want.size());
  EXPECT_EQ(sm->state, "done");
  EXPECT_EQ(ss->state, "done");
  EXPECT_TRUE(r.balanced());
  // A fused edge is reported with capacity 0 (no buffer).
  bool saw_fused_edge = false;
  for (const auto& c : r.metrics.channels) {
    if (c.name == "src -> double") {
      saw_fused_edge = true;
      EXPECT_EQ(c.stats.capacity, 0u);
      EXPECT_EQ(c.stats.pushed, 1000u);
    }
  }
  EXPECT_TRUE(saw_fused_edge);
}

TEST(GraphFuse, FusedStageAfterAChannelKeepsBackpressureToTheSource) {
  watchdog wd(60s);
  sluice::graph g;
  thread_log src, m, s;
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    src.note();
    for (int i = 0; i < 5000; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto plus = g.map("plus", nums, [&](int v) { m.note(); return v + 1; }, {.capacity = 4, .fuse = true});
  long sum = 0;
  g.sink("sum", plus, [&](int v) { s.note(); sum += v; });  // its own thread, behind a 4-slot channel
  const sluice::report r = g.run();
  EXPECT_EQ(sum, 5000L * 5001L / 2);
  EXPECT_EQ(m.get(), src.get());
  EXPECT_NE(s.get(), src.get());
  EXPECT_TRUE(r.balanced());
}

// Resident memory of this process (/proc/self/statm), in bytes.
long resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0;
  long pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * ::sysconf(_SC_PAGESIZE);
}

// A fused edge buffers nothing, so its capacity costs no memory. The upstream's channel
// used to be made with its whole ring when the upstream stage was added (a ring writes
// every slot when it is built), and freed only when the fused consumer was added: a
// capacity of 2^26 took 1 GiB of resident memory while the graph was being built.
TEST(GraphFuse, AFusedEdgeNeverTakesTheMemoryOfItsCapacity) {
  watchdog wd(60s);
  constexpr std::size_t kCapacity = std::size_t{1} << 26;  // as a ring of int: 1 GiB
  constexpr long kLimit = 256L << 20;
  const long before = resident_bytes();
  sluice::graph g;
  auto nums = g.source<int>("src", [](sluice::sender<int>& out) {
    for (int i = 1; i <= 1000; ++i) {
      if (!out.push(i)) return;
    }
  }, {.capacity = kCapacity});
  const long with_source = resident_bytes();
  long sum = 0;
  g.sink("sum", nums, [&](int v) { sum += v; }, {.fuse = true});
  const long with_sink = resident_bytes();
  EXPECT_LT(with_source - before, kLimit) << "the source's edge took its capacity's memory before its consumer was known";
  EXPECT_LT(with_sink - before, kLimit);
  const sluice::report r = g.run();
  EXPECT_EQ(sum, 1000L * 1001L / 2);
  EXPECT_TRUE(r.balanced());
  ASSERT_EQ(g.snapshot().channels.size(), 1u);
  EXPECT_EQ(g.snapshot().channels[0].stats.capacity, 0u);  // a fused edge
}

TEST(GraphFuse, FusedFlatMap) {
  watchdog wd(60s);
  sluice::graph g;
  thread_log src, fm;
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    src.note();
    for (int i = 0; i < 100; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto many = g.flat_map<int>("many", nums, [&](int v, sluice::sender<int>& out) {
    fm.note();
    for (int k = 0; k < v % 4; ++k) out.push(v);
  }, {.fuse = true});
  std::vector<int> got;
  g.sink("collect", many, [&](int v) { got.push_back(v); });
  const sluice::report r = g.run();
  std::vector<int> want;
  for (int i = 0; i < 100; ++i) {
    for (int k = 0; k < i % 4; ++k) want.push_back(i);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(fm.get(), src.get());
  const auto* st = find_stage(r.metrics, "many");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->items_in, 100u);
  EXPECT_EQ(st->items_out, want.size());
  EXPECT_TRUE(r.balanced());
}

TEST(GraphFuse, FusedAfterAReplicatedMapRunsOnEachReplicasThread) {
  watchdog wd(60s);
  sluice::graph g;
  thread_log rep, fused;
  std::mutex pairs_mu;
  std::map<int, std::thread::id> mapped_on;
  std::atomic<bool> mismatch{false};
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 4000; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto wide = g.map("wide", nums, [&](int v) {
    rep.note();
    std::lock_guard lk(pairs_mu);
    mapped_on[v] = std::this_thread::get_id();
    return v;
  }, {.replicas = 4, .ordered = false});
  auto tagged = g.map("tag", wide, [&](int v) {
    fused.note();
    std::lock_guard lk(pairs_mu);
    if (mapped_on[v] != std::this_thread::get_id()) mismatch = true;
    return v;
  }, {.fuse = true});
  std::set<int> got;
  g.sink("collect", tagged, [&](int v) { got.insert(v); });
  const sluice::report r = g.run();
  EXPECT_EQ(got.size(), 4000u);
  EXPECT_FALSE(mismatch.load()) << "a fused item ran on another thread than the replica that mapped it";
  for (const auto& id : fused.get()) EXPECT_TRUE(rep.get().count(id)) << "fused stage on a non-replica thread";
  EXPECT_TRUE(r.balanced());
}

TEST(GraphFuse, OrderedReplicatedMapThenFusedKeepsOrder) {
  watchdog wd(60s);
  sluice::graph g;
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 3000; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto wide = g.map("wide", nums, [](int v) { return v; }, {.replicas = 3, .ordered = true});
  auto inc = g.map("inc", wide, [](int v) { return v + 1; }, {.fuse = true});
  std::vector<int> got;
  g.sink("collect", inc, [&](int v) { got.push_back(v); });
  (void)g.run();
  ASSERT_EQ(got.size(), 3000u);
  for (int i = 0; i < 3000; ++i) ASSERT_EQ(got[static_cast<std::size_t>(i)], i + 1);
}

// ---- error policies -------------------------------------------------------------------

TEST(GraphFuse, StopNamesTheFusedStageAndItsItemIsADeadLetter) {
  watchdog wd(60s);
  std::atomic<int> letters_from_fused{0};
  std::atomic<int> letters{0};
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    ++letters;
    if (d.stage() == "boom" && d.error()) ++letters_from_fused;
  }});
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 100; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto m = g.map("boom", nums, [](int v) {
    if (v == 42) throw std::runtime_error("forty-two");
    return v;
  }, {.fuse = true});
  std::atomic<int> sunk{0};
  g.sink("sink", m, [&](int) { ++sunk; });
  try {
    (void)g.run();
    FAIL() << "run() did not throw";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "boom");
    EXPECT_NE(std::string(e.what()).find("forty-two"), std::string::npos);
  }
  EXPECT_EQ(letters_from_fused.load(), 1);
  const sluice::report r = g.last_report();
  const auto* st = find_stage(r.metrics, "boom");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->errors, 1u);
  EXPECT_EQ(st->state, "failed");
  // Exactly once: every item the source pushed was delivered or is a dead letter.
  EXPECT_TRUE(r.balanced());
  const auto* src = find_stage(r.metrics, "src");
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->items_out, static_cast<std::uint64_t>(sunk.load() + letters.load()));
}

// A fused stage stuck past the teardown deadline is named as itself (DESIGN §2: it keeps
// its own name), not as the stage whose thread runs it. It was reported as its host
// ("still waiting for stage 'plain' (in its stage function)").
TEST(GraphFuse, AStuckFusedStageIsNamedAsItselfNotAsItsHost) {
  watchdog wd(60s);
  for (const bool behind_a_map : {true, false}) {
    SCOPED_TRACE(behind_a_map ? "src -> plain -> f1 (fused) -> fblock (fused)" : "src -> fblock (fused)");
    sluice_test::gate latch;  // ignores stop tokens: a call sluice cannot interrupt
    std::mutex mu;
    std::vector<std::string> hooked;
    sluice::graph g({.teardown_deadline = 100ms, .on_stuck = [&](const std::string& name) {
                       {
                         std::lock_guard lk(mu);
                         hooked.push_back(name);
                       }
                       latch.open();
                     }});
    std::atomic<bool> entered{false};
    auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
      for (int i = 0; i < 1000; ++i) {
        if (!out.push(i)) return;
      }
    });
    sluice::stream<int> last = src;
    if (behind_a_map) {
      auto plain = g.map("plain", src, [](int v) { return v; });
      last = g.map("f1", plain, [](int v) { return v; }, {.fuse = true});
    }
    g.sink("fblock", last, [&](int) {
      entered = true;
      latch.wait();
    }, {.fuse = true});
    g.start();
    ASSERT_TRUE(eventually([&] { return entered.load(); }));
    g.cancel();
    EXPECT_THROW((void)g.wait(), sluice::cancelled);
    const sluice::report r = g.last_report();
    EXPECT_EQ(r.stuck, std::vector<std::string>{"fblock"});
    const auto* st = find_stage(r.metrics, "fblock");
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->state, "stuck");
    std::lock_guard lk(mu);
    EXPECT_EQ(hooked, std::vector<std::string>{"fblock"});
  }
}

// A stall's wait-for chain goes on through a fused stage as through a thread of its own
// (DESIGN §3: it names who holds the graph up). It stopped at the host, whose thread is
// inside the fused call, and named the host as the cause ("src push 'src -> m' held by m")
// when the fused stage was blocked in its function or on its own output (found by a probe).
TEST(GraphFuse, AStallsWaitForChainGoesThroughAFusedStage) {
  watchdog wd(60s);
  for (const bool fused_blocks : {true, false}) {
    SCOPED_TRACE(fused_blocks ? "the fused stage blocks in its function" : "the sink after it blocks");
    sluice_test::gate latch;
    std::mutex mu;
    std::vector<sluice::metrics::wait_link> chain;
    sluice::graph g({.stall_threshold = 50ms, .on_stall = [&](const std::vector<sluice::metrics::wait_link>& c) {
                       std::lock_guard lk(mu);
                       chain = c;
                     }});
    std::atomic<bool> entered{false};
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; out.push(i); ++i) {
      }
    }, {.capacity = 2});
    auto m = g.map("m", src, [](int v) { return v; }, {.capacity = 2});
    auto fz = g.map("fz", m, [&](int v) {
      if (fused_blocks && v == 0) {
        entered = true;
        latch.wait();
      }
      return v;
    }, {.capacity = 2, .fuse = true});
    g.sink("k", fz, [&](int v) {
      if (!fused_blocks && v == 0) {
        entered = true;
        latch.wait();
      }
    });
    g.start();
    const std::string culprit = fused_blocks ? "fz" : "k";
    const std::size_t links = fused_blocks ? 2 : 3;
    // A loaded machine may show a short false stall while the chain forms.
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lk(mu);
      return entered.load() && chain.size() == links && chain.back().holder == culprit;
    }));
    {
      std::lock_guard lk(mu);
      std::string shown;
      for (const auto& l : chain) shown += "[" + l.stage + " " + l.op + " '" + l.channel + "' held by " + l.holder + "] ";
      ASSERT_EQ(chain.size(), links) << shown;
      EXPECT_EQ(chain[0].stage, "src") << shown;
      EXPECT_EQ(chain[1].stage, "m") << shown;
      EXPECT_EQ(chain[1].op, "push") << shown;
      EXPECT_EQ(chain[1].channel, "m -> fz") << shown;
      EXPECT_EQ(chain[1].holder, "fz") << shown;
      if (!fused_blocks) {
        EXPECT_EQ(chain[2].stage, "fz") << shown;
        EXPECT_EQ(chain[2].channel, "fz -> k") << shown;
        EXPECT_EQ(chain[2].holder, "k") << shown;
      }
    }
    latch.open();
    g.cancel();
    EXPECT_THROW((void)g.wait(), sluice::cancelled);
  }
}

// A snapshot taken while a fused call runs counts the call's time so far as the fused
// stage's, not its host's. Before, the open call showed up as the host's busy time, and
// the snapshot's never-decreasing floor kept the host "busy" for it after the call ended.
TEST(GraphFuse, ASnapshotDuringALongFusedCallCountsItAsTheFusedStagesTime) {
  watchdog wd(60s);
  sluice::graph g;
  sluice_test::gate latch;
  std::atomic<bool> entered{false};
  auto src = g.source<int>("src", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 100; ++i) {  // more than the channels hold: src waits on the call too
      if (!out.push(i)) return;
    }
  }, {.capacity = 4});
  auto host = g.map("host", src, [](int v) { return v; }, {.capacity = 4});
  auto slow = g.map("slow", host, [&](int v) {
    if (v == 0) {
      entered = true;
      latch.wait();
    }
    return v;
  }, {.capacity = 4, .fuse = true});
  g.sink("sink", slow, [](int) {});
  g.start();
  ASSERT_TRUE(eventually([&] { return entered.load(); }));
  // Poll until the open call has lasted 200 ms by the snapshot's own clock (a measured
  // span, not a synchronisation: the call is held by the latch).
  constexpr std::uint64_t kOpen = 200'000'000;  // ns; the host's own busy time must stay under half of it
  std::uint64_t mid_slow = 0;
  std::uint64_t mid_host = 0;
  const bool grew = eventually([&] {
    const auto s = g.snapshot();
    const auto* f = find_stage(s, "slow");
    const auto* h = find_stage(s, "host");
    if (f == nullptr || h == nullptr) return false;
    mid_slow = f->busy_ns;
    mid_host = h->busy_ns;
    return mid_slow >= kOpen;
  }, 10s);
  latch.open();
  const sluice::report r = g.wait();
  ASSERT_TRUE(grew) << "the fused stage's busy time stayed at " << mid_slow << " ns during its call";
  EXPECT_LT(mid_host, mid_slow / 2) << "mid-call, the host was counted busy for the fused call";
  const auto* h = find_stage(r.metrics, "host");
  const auto* f = find_stage(r.metrics, "slow");
  ASSERT_NE(h, nullptr);
  ASSERT_NE(f, nullptr);
  EXPECT_GE(f->busy_ns, mid_slow);
  EXPECT_LT(h->busy_ns, kOpen / 2) << "the host's busy time kept the fused call's";
  // To the host, the fused call is its output holding it up, as a full channel would.
  EXPECT_GE(h->backpressured_ns, mid_slow);
  ASSERT_TRUE(r.metrics.bottleneck.has_value());
  EXPECT_EQ(*r.metrics.bottleneck, "slow");
}

TEST(GraphFuse, SkipCountsAndGoesOn) {
  watchdog wd(60s);
  std::atomic<int> letters{0};
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    if (d.stage() == "picky" && d.error()) ++letters;
  }});
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 100; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto kept = g.filter("picky", nums, [](const int& v) {
    if (v % 10 == 0) throw std::runtime_error("tens");
    return true;
  }, {.on_error = sluice::error_policy::skip, .fuse = true});
  int sunk = 0;
  g.sink("sink", kept, [&](int) { ++sunk; }, {.fuse = true});
  const sluice::report r = g.run();
  EXPECT_EQ(sunk, 90);
  EXPECT_EQ(letters.load(), 10);
  const auto* st = find_stage(r.metrics, "picky");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->errors, 10u);
  EXPECT_EQ(st->state, "done");
}

// A function object that counts its live, non-moved-from copies' destructions.
struct counted {
  std::atomic<int>* destroyed;
  std::atomic<int>* made;
  bool live = true;
  counted(std::atomic<int>* d, std::atomic<int>* m) : destroyed(d), made(m) { ++*made; }
  counted(const counted& o) : destroyed(o.destroyed), made(o.made), live(o.live) {
    if (live) ++*made;
  }
  counted(counted&& o) noexcept : destroyed(o.destroyed), made(o.made), live(o.live) { o.live = false; }
  counted& operator=(const counted&) = delete;
  ~counted() {
    if (live) ++*destroyed;
  }
};

TEST(GraphFuse, RestartMakesAFreshCopy) {
  watchdog wd(60s);
  std::atomic<int> destroyed{0}, made{0};
  struct fn : counted {
    using counted::counted;
    int seen = 0;
    int operator()(int v) {
      if (++seen == 5) throw std::runtime_error("fifth item of this copy");
      return v;
    }
  };
  sluice::graph g;
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 12; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto m = g.map("flaky", nums, fn(&destroyed, &made),
                 {.on_error = sluice::restart{.max = 5, .within = std::chrono::seconds(60), .backoff = 0ms},
                  .fuse = true});
  int sunk = 0;
  g.sink("sink", m, [&](int) { ++sunk; });
  int made_before_run = 0;
  const sluice::report r = [&] {
    made_before_run = made.load();
    return g.run();
  }();
  // Copies 1..3 see items 1-5, 6-10, 11-12: two throws, two restarts.
  EXPECT_EQ(sunk, 10);
  const auto* st = find_stage(r.metrics, "flaky");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->restarts, 2u);
  EXPECT_EQ(st->errors, 2u);
  EXPECT_EQ(made.load(), made_before_run + 2);  // two fresh copies
  EXPECT_EQ(destroyed.load(), made.load());     // every copy destroyed once by the end
}

TEST(GraphFuse, CleanupRunsOnceAfterTheLastItem) {
  watchdog wd(60s);
  std::atomic<int> destroyed{0}, made{0}, closes{0};
  std::atomic<int> items{0};
  std::atomic<int> items_at_close{-1};
  std::atomic<int> live_at_close{-1};
  struct fn : counted {
    using counted::counted;
    std::atomic<int>* items;
    void operator()(int) { ++*items; }
  };
  fn f(&destroyed, &made);
  f.items = &items;
  {
    sluice::graph g;
    auto nums = g.source<int>("src", [&](sluice::sender<int>& out) {
      for (int i = 0; i < 50; ++i) {
        if (!out.push(i)) return;
      }
    });
    g.sink("sink", nums, f, {.on_close = [&] {
                               ++closes;
                               items_at_close = items.load();
                               live_at_close = made.load() - destroyed.load();
                             },
                             .fuse = true});
    (void)g.run();
    EXPECT_EQ(closes.load(), 1);
    EXPECT_EQ(items_at_close.load(), 50);
    // The graph's copies are gone before on_close (only `f` in this test is left).
    EXPECT_EQ(live_at_close.load(), 1);
  }
  EXPECT_EQ(made.load() - destroyed.load(), 1);  // only `f`
}

// A source may push from threads of its own (a reader it starts and joins). The fused
// stage takes those pushes too, on the one copy of its function that the source's
// thread uses, one call at a time (see the next test). Before, a move-only
// function refused them (push returned false, as if the sink were gone) and the run
// ended "ok" with the items never sent.
template <bool MoveOnly>
void helper_threads_push_into_a_fused_stage() {
  watchdog wd(60s);
  constexpr int kHelpers = 3;
  constexpr int kEach = 2000;
  constexpr int kOwn = 10;
  std::atomic<long> refused{0}, sum{0}, count{0};
  long want = 0;
  for (int h = 0; h < kHelpers; ++h) {
    for (int i = 0; i < kEach; ++i) want += h * kEach + i;
  }
  for (int i = 0; i < kOwn; ++i) want += 1000000 + i;
  sluice::graph g;
  auto nums = g.source<long>("src", [&](sluice::sender<long>& out) {
    std::vector<std::thread> helpers;
    for (int h = 0; h < kHelpers; ++h) {
      helpers.emplace_back([&out, &refused, h] {
        for (int i = 0; i < kEach; ++i) {
          if (!out.push(long{h} * kEach + i)) ++refused;
        }
      });
    }
    for (int i = 0; i < kOwn; ++i) {  // the source's own thread, at the same time
      if (!out.push(1000000L + i)) ++refused;
    }
    for (auto& t : helpers) t.join();
  }, {.capacity = 4});
  // Each copy counts in a plain member: two threads may never run one copy at once.
  auto doubled = g.map("double", nums, [n = 0L](long v) mutable {
    ++n;
    return v * 2;
  }, {.capacity = 4, .fuse = true});
  if constexpr (MoveOnly) {
    // One copy, a plain counter: under ThreadSanitizer a call without the lock is a race.
    auto mine = std::make_unique<long>(0);
    g.sink("sink", doubled, [&, mine = std::move(mine)](long v) {
      ++*mine;
      sum += v / 2;
      ++count;
    }, {.fuse = true});
  } else {
    g.sink("sink", doubled, [&](long v) {
      sum += v / 2;
      ++count;
    }, {.fuse = true});
  }
  const sluice::report r = g.run();
  EXPECT_EQ(refused.load(), 0);
  EXPECT_EQ(count.load(), kHelpers * kEach + kOwn);
  EXPECT_EQ(sum.load(), want);
  EXPECT_TRUE(r.balanced());
  const auto snap = g.snapshot();
  const auto* sink = find_stage(snap, "sink");
  ASSERT_NE(sink, nullptr);
  EXPECT_EQ(sink->items_in, static_cast<std::uint64_t>(kHelpers * kEach + kOwn));
}

TEST(GraphFuse, PushesFromASourcesOwnThreadsReachAMoveOnlyFusedSink) {
  helper_threads_push_into_a_fused_stage<true>();
}
TEST(GraphFuse, PushesFromASourcesOwnThreadsReachACopyableFusedSink) {
  helper_threads_push_into_a_fused_stage<false>();
}

// A source that waits for outside events (as a JetStream subscribe waits for messages)
// learns that nobody reads any more from its sender's is_closed(). With a fused map after
// it, the sink's end closed the map's output but not the source's direct edge, so the
// source waited for ever unless another item came. The sink's end now disconnects the
// fused chain feeding it.
TEST(GraphFuse, ASinkThatFinishesClosesTheSendersOfTheFusedChainFeedingIt) {
  watchdog wd(60s);
  std::atomic<bool> saw_closed{false};
  sluice::graph g;
  auto src = g.source<int>("events", [&](sluice::sender<int>& out) {
    for (int i = 0; i < 10; ++i) {
      if (!out.push(i)) return;
    }
    // No more events: wait until nobody reads (bounded, so a defect fails instead of hangs).
    saw_closed = eventually([&] { return out.is_closed(); }, 20s);
  });
  auto twice = g.map("twice", src, [](int v) { return 2 * v; }, {.fuse = true});
  auto kept = g.filter("all", twice, [](int) { return true; }, {.fuse = true});
  std::atomic<int> taken{0};
  g.sink("first5", kept, [&](int) { return ++taken < 5; });
  const sluice::report r = g.run();
  EXPECT_TRUE(saw_closed.load()) << "the source's sender never read closed after the sink finished";
  EXPECT_EQ(taken.load(), 5);
  EXPECT_TRUE(r.balanced());
}

// A fused stage on a host of one thread is one replica, whoever pushes: pushes from a
// source's helper thread ran on a second copy of the function, at the same time as the
// host's calls. A sink that counts to N in its own member ("take N, then finish") was
// called N plus what the second copy had counted (301,239 calls for 200,000), and a
// function's references were raced (a crash, under ASan a use after free).
TEST(GraphFuse, PushesFromAHelperThreadShareTheHostsOneCopyOneCallAtATime) {
  watchdog wd(60s);
  constexpr long kLimit = 20000;
  std::atomic<long> calls{0}, overlaps{0};
  std::atomic<bool> inside{false};
  sluice::graph g;
  auto nums = g.source<long>("src", [](sluice::sender<long>& out) {
    std::thread helper([tx = out]() mutable {
      for (long i = 0; i < 10 * kLimit; ++i) {
        if (!tx.push(i)) return;
      }
    });
    for (long i = 0; i < 10 * kLimit; ++i) {
      if (!out.push(i)) break;
    }
    helper.join();
  });
  auto kept = g.filter("keep", nums, [n = 0L, &overlaps, &inside](long) mutable {
    if (inside.exchange(true)) ++overlaps;
    ++n;  // a plain member: a second thread in the same copy is a race (ThreadSanitizer)
    inside = false;
    return true;
  }, {.fuse = true});
  g.sink("take", kept, [n = 0L, &calls](long) mutable {
    ++calls;
    return ++n < kLimit;
  }, {.fuse = true});
  const sluice::report r = g.run();
  EXPECT_EQ(calls.load(), kLimit) << "the sink's one copy counted to its limit; any more went to another copy";
  EXPECT_EQ(overlaps.load(), 0) << "two calls of one fused stage at once";
  EXPECT_TRUE(r.balanced());
}

// ---- cancel, request_stop, early finish -----------------------------------------------

TEST(GraphFuse, CancelWhileTheSourceIsBlockedBehindTheFusedStage) {
  watchdog wd(60s);
  std::atomic<int> destroyed{0}, made{0};
  struct fn : counted {
    using counted::counted;
    int operator()(int v) { return v; }
  };
  sluice::graph g;
  sluice_test::gate release;
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out, std::stop_token) {
    for (int i = 0;; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto m = g.map("m", nums, fn(&destroyed, &made), {.capacity = 2, .fuse = true});
  g.sink("slow", m, [&](int, std::stop_token st) { (void)release.wait(st); });
  g.start();
  // The sink holds one item, the 2-slot channel is full: the source thread is parked
  // in the fused map's push.
  ASSERT_TRUE(eventually([&] {
    for (const auto& c : g.snapshot().channels) {
      if (c.name == "m -> slow" && c.stats.waiting_push > 0) return true;
    }
    return false;
  }));
  const auto t0 = std::chrono::steady_clock::now();
  g.cancel();
  EXPECT_THROW((void)g.wait(), sluice::cancelled);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(g.last_report().balanced());
  EXPECT_EQ(made.load(), destroyed.load());  // no copy leaked
}

TEST(GraphFuse, RequestStopDrains) {
  watchdog wd(60s);
  sluice::graph g;
  std::atomic<long> pushed{0};
  auto nums = g.source<int>("src", [&](sluice::sender<int>& out, std::stop_token st) {
    for (int i = 0; !st.stop_requested(); ++i) {
      if (!out.push(i)) return;
      ++pushed;
    }
  });
  auto m = g.map("m", nums, [](int v) { return v; }, {.fuse = true});
  std::atomic<long> sunk{0};
  g.sink("sink", m, [&](int) { ++sunk; });
  g.start();
  ASSERT_TRUE(eventually([&] { return sunk.load() > 100; }));
  g.request_stop();
  const sluice::report r = g.wait();
  EXPECT_EQ(sunk.load(), pushed.load());
  EXPECT_TRUE(r.balanced());
}

// 0, 1, 2, ... until a push is refused; then sets `refused`.
sluice::stream<int> endless_source(sluice::graph& g, std::atomic<bool>& refused) {
  return g.source<int>("src", [&refused](sluice::sender<int>& out) {
    for (int i = 0;; ++i) {
      if (!out.push(i)) {
        refused = true;
        return;
      }
    }
  });
}

TEST(GraphFuse, FusedSinkReturningFalseEndsTheRunEarly) {
  watchdog wd(60s);
  sluice::graph g;
  std::atomic<bool> source_saw_refusal{false};
  auto nums = endless_source(g, source_saw_refusal);
  auto m = g.map("m", nums, [](int v) { return v; }, {.fuse = true});
  int taken = 0;
  g.sink("first10", m, [&](int) { return ++taken < 10; }, {.fuse = true});
  const sluice::report r = g.run();  // not an error
  EXPECT_EQ(taken, 10);
  EXPECT_TRUE(source_saw_refusal.load());
  EXPECT_TRUE(r.balanced());
}

// A sink on three threads (fused onto a map's 3 replicas, or with 3 replicas of its own)
// returns false once, on its 50th call, behind an endless source: the run must end and
// the source must be refused. (How many calls the other threads make before the runtime
// sees the false depends on the scheduler, so it is not asserted.)
TEST(GraphFuse, SinkOnSeveralThreadsReturningFalseStopsAnEndlessSource) {
  watchdog wd(60s);
  for (const bool fused : {true, false}) {
    SCOPED_TRACE(fused ? "fused onto 3 replicas" : "3 sink replicas");
    sluice::graph g;
    std::atomic<bool> source_saw_refusal{false};
    auto nums = endless_source(g, source_saw_refusal);
    auto wide = g.map("wide", nums, [](int v) { return v; }, {.capacity = 4, .replicas = 3, .ordered = false});
    std::atomic<std::uint64_t> calls{0}, falses{0};
    auto take50 = [&](int) {
      const bool more = calls.fetch_add(1) + 1 != 50;
      if (!more) falses.fetch_add(1);
      return more;
    };
    if (fused) {
      g.sink("take50", wide, take50, {.fuse = true});
    } else {
      g.sink("take50", wide, take50, {.capacity = 4, .replicas = 3});
    }
    const sluice::report r = g.run();  // not an error
    EXPECT_EQ(falses.load(), 1u);
    EXPECT_GE(calls.load(), 50u);
    EXPECT_TRUE(source_saw_refusal.load());
    EXPECT_TRUE(r.balanced());
  }
}

// ---- build-time checks ----------------------------------------------------------------

template <class F>
void expect_logic_error_naming(F f, const std::string& name) {
  try {
    f();
    ADD_FAILURE() << "no logic_error for " << name;
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("'" + name + "'"), std::string::npos) << e.what();
  }
}

TEST(GraphFuse, BuildTimeChecks) {
  sluice::graph g;
  expect_logic_error_naming([&] { (void)g.source<int>("s", [](sluice::sender<int>&) {}, {.fuse = true}); }, "s");
  auto a = g.source<int>("a", [](sluice::sender<int>&) {});
  expect_logic_error_naming(
      [&] { (void)g.stage<int>("st", a, [](sluice::receiver<int>&, sluice::sender<int>&) {}, {.fuse = true}); }, "st");
  expect_logic_error_naming([&] { g.consume("co", a, [](sluice::receiver<int>&) {}, {.fuse = true}); }, "co");
  expect_logic_error_naming([&] { (void)g.map("rep", a, [](int v) { return v; }, {.replicas = 2, .fuse = true}); },
                            "rep");
  auto [in, s] = g.input<int>("in");
  expect_logic_error_naming([&] { (void)g.map("after_input", s, [](int v) { return v; }, {.fuse = true}); },
                            "after_input");
  expect_logic_error_naming([&] { (void)g.input<int>("in2", {.fuse = true}); }, "in2");
  auto b = g.source<int>("b", [](sluice::sender<int>&) {});
  auto branches = g.broadcast(b, 2);
  expect_logic_error_naming([&] { g.sink("after_bcast", branches[0], [](int) {}, {.fuse = true}); }, "after_bcast");
  auto c = g.source<int>("c", [](sluice::sender<int>&) {});
  auto parts = g.partition(c, 2, [](const int& v) { return v; });
  expect_logic_error_naming([&] { (void)g.filter("after_part", parts[1], [](const int&) { return true; }, {.fuse = true}); },
                            "after_part");
  // A stream already consumed cannot be fused onto either (the usual check).
  g.sink("sa", a, [](int) {});
  EXPECT_THROW(g.sink("sa2", a, [](int) {}, {.fuse = true}), std::logic_error);
}

// A fused chain nests each item's call, and its end, once per stage on the host thread's
// stack: 30,000 fused stages crashed with a stack overflow. 1000 run (also when one fails
// and the chain is torn down); the 1001st is refused at build time, naming it.
TEST(GraphFuse, AFusedChainOfAThousandRunsAndTheNextOneIsRefused) {
  watchdog wd(120s);
  for (const bool fail : {false, true}) {
    SCOPED_TRACE(fail ? "the last stage throws" : "a clean end");
    sluice::graph g;
    auto s = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; i < 100; ++i) {
        if (!out.push(i)) return;
      }
    });
    for (int k = 1; k < 1000; ++k) {
      std::string name = std::to_string(k);  // ("m" + to_string(k) trips GCC 12's -Wrestrict)
      name.insert(0, 1, 'm');
      s = g.map(name, s, [](int v) { return v + 1; }, {.fuse = true});
    }
    s = g.map("m1000", s, [fail](int v) {
      if (fail && v == 1050) throw std::runtime_error("m1000 broke");
      return v;
    }, {.fuse = true});
    expect_logic_error_naming([&] { g.sink("m1001", s, [](int) {}, {.fuse = true}); }, "m1001");
    long sum = 0;
    g.sink("sum", s, [&](int v) { sum += v; });
    if (!fail) {
      const sluice::report r = g.run();
      EXPECT_EQ(sum, 100L * 999 + 4950);
      EXPECT_TRUE(r.balanced());
    } else {
      EXPECT_THROW((void)g.run(), sluice::stage_error);
      EXPECT_TRUE(g.last_report().balanced());
    }
  }
}

// ---- randomized, exactly once ---------------------------------------------------------

TEST(GraphFuse, RandomChainsAccountForEveryItemExactlyOnce) {
  const std::uint64_t seed = sluice_test::base_seed();
  SCOPED_TRACE("SLUICE_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int runs = 30;
  for (int run = 0; run < runs; ++run) {
    watchdog wd(60s, "run " + std::to_string(run));
    std::atomic<long> letters{0};
    sluice::graph g({.on_discard = [&](const sluice::dead_letter&) { ++letters; }});
    const int n = static_cast<int>(rng() % 2000);
    const int stages = 1 + static_cast<int>(rng() % 4);
    const int host_replicas = 1 + static_cast<int>(rng() % 3);
    auto s = g.source<long>("src", [n](sluice::sender<long>& out) {
      for (long i = 0; i < n; ++i) {
        if (!out.push(i)) return;
      }
    });
    s = g.map("host", s, [](long v) { return v; }, {.capacity = 1 + rng() % 64, .replicas = static_cast<std::size_t>(host_replicas), .ordered = false});
    const sluice::error_policy policies[] = {sluice::error_policy::skip, sluice::error_policy::stop,
                                             sluice::restart{.max = 1000, .within = 60s, .backoff = 0ms}};
    std::atomic<long> sunk{0};
    for (int k = 0; k < stages; ++k) {
      const long fail_mod = 50 + static_cast<long>(rng() % 500);
      const long fail_at = static_cast<long>(rng() % static_cast<std::uint64_t>(fail_mod));
      const auto pol = policies[rng() % 3];
      const bool fused = rng() % 4 != 0;
      sluice::stage_options o{.capacity = 1 + rng() % 32, .on_error = pol, .fuse = fused};
      // The names built by append: "f" + std::to_string(k) set off GCC 12's false
      // -Wrestrict on an inlined string insert (GCC bug 105329) with -O3.
      const std::string id = std::to_string(k);
      if (rng() % 2 == 0) {
        s = g.map(std::string("m").append(id), s, [fail_mod, fail_at](long v) {
          if (v % fail_mod == fail_at) throw std::runtime_error("random failure");
          return v;
        }, o);
      } else {
        s = g.filter(std::string("f").append(id), s, [fail_mod, fail_at](const long& v) {
          if (v % fail_mod == fail_at) throw std::runtime_error("random failure");
          return true;
        }, o);
      }
    }
    g.sink("sink", s, [&](long) { ++sunk; }, {.fuse = rng() % 2 == 0});
    sluice::report r;
    try {
      r = g.run();
    } catch (const sluice::stage_error&) {
      r = g.last_report();
    }
    ASSERT_TRUE(r.balanced()) << "run " << run;
    const auto* src = find_stage(r.metrics, "src");
    ASSERT_NE(src, nullptr);
    // Every item the source got in was delivered or is a dead letter, exactly once.
    ASSERT_EQ(static_cast<long>(src->items_out), sunk.load() + letters.load()) << "run " << run;
  }
}

}  // namespace
