// User code that the graph runs calling back into the same graph: graph.hpp says
// snapshot(), cancel() and request_stop() work "from any thread, at any time". Each case
// here deadlocked the graph on itself, silently, because the graph ran the user's code
// while it held its own lock (a probe of reentrant callbacks):
//   - a source's std::stop_callback, run by request_stop();
//   - an on_writable callback, run by the close of a source's output in request_stop();
//   - a stage function object's destructor (its cleanup), run by a start() after cancel().
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>

#include "sluice/graph.hpp"
#include "support/graph_support.hpp"
#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;

enum class call { snapshot, cancel, request_stop };
const call kCalls[] = {call::snapshot, call::cancel, call::request_stop};
const char* name_of(call c) {
  return c == call::snapshot ? "snapshot" : c == call::cancel ? "cancel" : "request_stop";
}
void make_call(sluice::graph& g, call c, std::atomic<int>& made) {
  switch (c) {
    case call::snapshot:
      if (!g.snapshot().stages.empty()) made.fetch_add(1);
      return;
    case call::cancel:
      g.cancel();
      made.fetch_add(1);
      return;
    case call::request_stop:
      g.request_stop();
      made.fetch_add(1);
      return;
  }
}

// wait_for, which ends the run or says it did not end; a cancel makes it throw cancelled.
bool ended_within(sluice::graph& g, std::chrono::seconds limit) {
  try {
    return g.wait_for(limit).has_value();
  } catch (const sluice::cancelled&) {
    return true;
  }
}

// A source that waits for outside events wakes on request_stop() through a stop_callback
// (the usual way), and the callback calls the graph.
TEST(graph_reentry, a_sources_stop_callback_may_call_its_graph) {
  for (const call c : kCalls) {
    SCOPED_TRACE(name_of(c));
    sluice_test::watchdog dog(60s, std::string("a stop callback calling ") + name_of(c));
    sluice::graph g;
    std::atomic<int> made{0};
    sluice_test::gate waiting;
    sluice_test::gate woken;
    auto s = g.source<int>("events", [&](sluice::sender<int>&, std::stop_token st) {
      std::stop_callback cb(st, [&] {
        make_call(g, c, made);
        woken.open();
      });
      waiting.open();
      woken.wait();
    });
    g.sink("sink", s, [](int) {});
    g.start();
    waiting.wait();
    g.request_stop();  // runs the callback on this thread: it deadlocked here
    EXPECT_TRUE(ended_within(g, 30s)) << "the run did not end";
    EXPECT_EQ(made.load(), 1);
  }
}

// A source without a stop token honours backpressure with try_push + on_writable (the
// 'drain' event); request_stop() closes its output, which runs the callback on the
// stopping thread, and the callback calls the graph.
TEST(graph_reentry, an_on_writable_callback_run_by_request_stop_may_call_its_graph) {
  for (const call c : kCalls) {
    SCOPED_TRACE(name_of(c));
    sluice_test::watchdog dog(60s, std::string("an on_writable callback calling ") + name_of(c));
    sluice::graph g;
    std::atomic<int> made{0};
    sluice_test::gate armed;
    sluice_test::gate writable;
    sluice_test::gate sink_go;
    auto s = g.source<int>(
        "events",
        [&](sluice::sender<int>& out) {
          for (int i = 0;; ++i) {
            const sluice::status st = out.try_push(i);
            if (st == sluice::status::closed) return;
            if (st == sluice::status::full) {
              out.on_writable([&] {
                make_call(g, c, made);
                writable.open();
              });
              armed.open();
              writable.wait();
              return;
            }
          }
        },
        {.capacity = 4});
    g.sink("sink", s, [&](int) { sink_go.wait(); });  // holds the channel full meanwhile
    g.start();
    armed.wait();
    g.request_stop();  // closes the source's output: the callback runs here; it deadlocked
    sink_go.open();
    EXPECT_TRUE(ended_within(g, 30s)) << "the run did not end";
    EXPECT_EQ(made.load(), 1);
  }
}

// A stage whose cleanup (its function object's destructor) calls the graph, in a graph
// cancelled before start: run() destroys the function objects and throws cancelled.
struct cleanup_calls {
  sluice::graph* g = nullptr;
  call c = call::snapshot;
  std::atomic<int>* made = nullptr;
  bool live = true;  // the object that would have run, not a moved-from one
  cleanup_calls(sluice::graph* g_, call c_, std::atomic<int>* m) : g(g_), c(c_), made(m) {}
  cleanup_calls(const cleanup_calls&) = default;
  cleanup_calls(cleanup_calls&& o) noexcept : g(o.g), c(o.c), made(o.made), live(o.live) { o.live = false; }
  cleanup_calls& operator=(const cleanup_calls&) = delete;
  ~cleanup_calls() {
    if (live) make_call(*g, c, *made);
  }
  void operator()(int) const {}
};

TEST(graph_reentry, a_stage_cleanup_run_by_a_start_after_cancel_may_call_its_graph) {
  for (const call c : kCalls) {
    SCOPED_TRACE(name_of(c));
    sluice_test::watchdog dog(60s, std::string("a cleanup calling ") + name_of(c));
    std::atomic<int> made{0};
    {
      sluice::graph g;
      auto s = g.source<int>("src", [](sluice::sender<int>& out) {
        for (int i = 0; i < 10; ++i) (void)out.push(i);
      });
      g.sink("store", s, cleanup_calls(&g, c, &made));
      g.cancel();
      EXPECT_THROW(g.run(), sluice::cancelled);  // it deadlocked inside start()
    }
    EXPECT_GE(made.load(), 1);
  }
}

}  // namespace
