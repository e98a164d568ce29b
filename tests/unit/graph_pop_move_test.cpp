// An item whose move constructor throws while a stage pops it from its input channel.
// The item has left the channel then (counted popped); it used to be destroyed with no
// trace, and under restart the items popped before it in the same batch were cleared
// too: the run ended "ok", report.balanced() said true, and items were missing.
// DESIGN.md 3: "Nothing is lost silently". Each item the source pushed must be delivered
// or a dead letter, exactly once, under every error policy and stage kind.
#include <gtest/gtest.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "sluice/graph.hpp"

namespace {

using namespace std::chrono_literals;

// The consuming stage's name; its threads are "k" or "k#i".
bool on_consumer_thread() {
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name[0] == 'k' && (name[1] == '\0' || name[1] == '#');
}

std::atomic<int> g_armed{0};  // the consumer-thread move count that throws, once; 0: none

// An item that throws once, on its k-th move on the consumer's thread (1: out of the
// channel's storage, 2: into the stage's batch, 3: into the stage function), for value 20.
struct item {
  int v = 0;
  int consumer_moves = 0;
  explicit item(int x) : v(x) {}
  item(const item&) = default;
  item& operator=(const item&) = default;
  item(item&& o) : v(o.v), consumer_moves(o.consumer_moves) {
    if (!on_consumer_thread()) return;
    ++consumer_moves;
    int k = g_armed.load();
    if (v == 20 && k != 0 && consumer_moves == k && g_armed.compare_exchange_strong(k, 0)) {
      throw std::runtime_error("move of item 20 failed");
    }
  }
  item& operator=(item&& o) {
    v = o.v;
    consumer_moves = o.consumer_moves;
    return *this;
  }
  ~item() = default;
};

enum class kind { sink, map_ordered, map_unordered, flat_map, flat_map_ordered };
const char* name_of(kind k) {
  switch (k) {
    case kind::sink: return "sink";
    case kind::map_ordered: return "map ordered x2";
    case kind::map_unordered: return "map x2";
    case kind::flat_map: return "flat_map";
    case kind::flat_map_ordered: return "flat_map ordered x2";
  }
  return "?";
}

struct outcome {
  std::set<int> pushed, delivered, dead;
  std::vector<int> twice;  // delivered or dead more than once
  bool failed = false;
  bool balanced = false;
};

outcome run_once(kind k, sluice::error_policy policy, int throw_at) {
  constexpr int kItems = 200;
  outcome o;
  std::mutex mu;
  auto note = [&](std::set<int>& s, int v) {
    std::lock_guard lock(mu);
    if (!s.insert(v).second || (&s == &o.delivered ? o.dead.count(v) : o.delivered.count(v))) o.twice.push_back(v);
  };
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    if (const auto* it = d.get<item>()) note(o.dead, it->v);
    if (const auto* i = d.get<int>()) note(o.dead, *i);
  }});
  auto src = g.source<int>("s", [&](sluice::sender<int>& tx) {
    for (int i = 0; i < kItems; ++i) {
      if (!tx.push(i)) return;
      std::lock_guard lock(mu);
      o.pushed.insert(i);
    }
  });
  auto items = g.map("m", src, [](int v) { return item(v); }, {.capacity = 8});
  g_armed.store(throw_at);
  sluice::stage_options opts{.on_error = policy};
  auto sink = [&](item it) { note(o.delivered, it.v); };
  switch (k) {
    case kind::sink:
      g.sink("k", items, sink, opts);
      break;
    case kind::map_ordered:
    case kind::map_unordered: {
      opts.replicas = 2;
      opts.ordered = k == kind::map_ordered;
      auto out = g.map("k", items, [](item it) { return it.v; }, opts);
      g.sink("out", out, [&](int v) { note(o.delivered, v); });
      break;
    }
    case kind::flat_map:
    case kind::flat_map_ordered: {
      if (k == kind::flat_map_ordered) {
        opts.replicas = 2;
        opts.ordered = true;
      }
      auto out = g.flat_map<int>("k", items, [](item it, sluice::sender<int>& tx) { (void)tx.push(it.v); }, opts);
      g.sink("out", out, [&](int v) { note(o.delivered, v); });
      break;
    }
  }
  try {
    o.balanced = g.run().balanced();
  } catch (const sluice::stage_error&) {
    o.failed = true;
  }
  return o;
}

TEST(GraphPopMove, an_item_whose_move_throws_in_a_pop_is_delivered_or_a_dead_letter_never_lost) {
  const std::pair<sluice::error_policy, const char*> policies[] = {
      {sluice::restart{.max = 10, .backoff = 0ms}, "restart"},
      {sluice::error_policy::skip, "skip"},
      {sluice::error_policy::stop, "stop"}};
  for (const kind k : {kind::sink, kind::map_ordered, kind::map_unordered, kind::flat_map, kind::flat_map_ordered}) {
    for (const auto& [policy, pname] : policies) {
      for (int throw_at = 1; throw_at <= 3; ++throw_at) {
        SCOPED_TRACE(std::string(name_of(k)) + ", " + pname + ", move " + std::to_string(throw_at));
        const outcome o = run_once(k, policy, throw_at);
        EXPECT_EQ(g_armed.load(), 0) << "the armed move never happened";
        EXPECT_TRUE(o.twice.empty()) << "an item delivered or dead twice, e.g. " << o.twice.front();
        for (const int v : o.pushed) {
          EXPECT_TRUE(o.delivered.count(v) + o.dead.count(v) == 1) << "item " << v << " lost";
        }
        // Move 1 throws inside the channel, which keeps the item (the failed pop took
        // nothing): no item of the stage failed, so skip does not cover it and the stage
        // fails, as it would on any pop that throws; restart pops it again.
        if (std::strcmp(pname, "stop") == 0 || (std::strcmp(pname, "skip") == 0 && throw_at == 1)) {
          EXPECT_TRUE(o.failed);
        } else {
          EXPECT_FALSE(o.failed);
          EXPECT_TRUE(o.balanced);
          EXPECT_EQ(o.pushed.size(), 200U);
        }
      }
    }
  }
}

}  // namespace
