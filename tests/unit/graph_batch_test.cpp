// How many items a per-item stage takes per pop (graph_task.hpp, kSlowItemNs): a batch
// while its function is cheap, one item while it is slow. A map that took 20 ms an item
// popped 64 and pushed nothing until all were done: its consumer waited 1.3 s for the
// first result, and the stall watchdog (which sees only items moving on channels)
// reported the steadily working graph as stalled.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "sluice/graph.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;

TEST(GraphBatch, ASlowStageIsNotReportedStalledAndItsResultsFlowOneByOne) {
  sluice_test::watchdog dog(120s, "slow stage batches");
  for (const bool sink_is_slow : {false, true}) {
    SCOPED_TRACE(sink_is_slow ? "slow sink" : "slow map");
    std::atomic<int> stalls{0};
    sluice::graph g({.stall_threshold = 400ms, .on_stall = [&](const std::vector<sluice::metrics::wait_link>&) {
                       ++stalls;
                     }});
    auto src = g.source<int>("src", [](sluice::sender<int>& out) {
      for (int i = 0; i < 40; ++i) {
        if (!out.push(i)) return;
      }
    });
    // 25 ms an item: 40 items take a second, and a batch of 64 would hold them all.
    auto work = [] { std::this_thread::sleep_for(25ms); };  // the work, not synchronisation
    int max_in_before_first_out = 0;  // items the sink had not got while the map held them
    std::atomic<int> handled{0};
    std::atomic<int> sunk{0};
    sluice::stream<int> mid = g.map("api_call", src, [&](int v) {
      if (!sink_is_slow) work();
      ++handled;
      return v;
    });
    g.sink("sink", mid, [&](int) {
      max_in_before_first_out = std::max(max_in_before_first_out, handled.load() - sunk.load());
      if (sink_is_slow) work();
      ++sunk;
    });
    const sluice::report r = g.run();
    EXPECT_EQ(sunk.load(), 40);
    EXPECT_EQ(stalls.load(), 0) << "a graph that moved an item every 25 ms was reported stalled";
    EXPECT_EQ(r.stalls, 0U);
    if (!sink_is_slow) {
      // Each result goes on as it is made: the sink is never more than a couple behind.
      EXPECT_LE(max_in_before_first_out, 3) << "results were held back in a batch";
    }
  }
}

}  // namespace
