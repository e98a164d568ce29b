// sluice::pipeline(...): the linear shorthand over stage descriptors (DESIGN.md §2).
// The compile-time shape check cannot fail inside a test that has to compile; this
// file checks that well-typed pipelines of every descriptor kind build and run, and
// the adjacent-type check itself through the same traits the static_asserts use.
#include "sluice/pipeline.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using sluice_test::watchdog;

auto numbers(int n) {
  return sluice::from<int>([n](sluice::sender<int>& out) {
    for (int i = 0; i < n; ++i) {
      if (!out.push(i)) return;
    }
  });
}

TEST(pipeline, every_descriptor_kind_in_one_line) {
  watchdog dog(20s);
  std::vector<std::string> got;
  const sluice::report r =
      sluice::pipeline(numbers(20),
                       sluice::transform([](int v) { return v * 3; }, {.name = "triple"}),
                       sluice::keep_if([](const int& v) { return v % 2 == 0; }),
                       sluice::expand<long>([](int v, sluice::sender<long>& out) {
                         out.push(v);
                         out.push(-v);
                       }),
                       sluice::through<std::string>([](sluice::receiver<long>& in, sluice::sender<std::string>& out) {
                         for (long& v : in) out.push(std::to_string(v));
                       }),
                       sluice::into([&](std::string s) { got.push_back(std::move(s)); }))
          .run();
  std::vector<std::string> want;
  for (int i = 0; i < 20; ++i) {
    if ((3 * i) % 2 == 0) {
      want.push_back(std::to_string(3 * i));
      want.push_back(std::to_string(-3 * i));
    }
  }
  EXPECT_EQ(got, want);
  EXPECT_TRUE(r.balanced());
  std::vector<std::string> names;
  for (const auto& s : r.metrics.stages) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"from#1", "triple", "keep_if#3", "expand#4", "through#5", "into#6"}));
}

TEST(pipeline, consume_ends_a_pipeline_and_sees_the_end) {
  watchdog dog(20s);
  long sum = 0;
  bool done = false;
  sluice::pipeline(numbers(100), sluice::consume([&](sluice::receiver<int>& in) {
                     for (int& v : in) sum += v;
                     done = in.done();
                   }, {.name = "writer"}))
      .run();
  EXPECT_EQ(sum, 4950);
  EXPECT_TRUE(done);
}

TEST(pipeline, stage_options_travel_with_the_descriptors) {
  watchdog dog(20s);
  std::vector<int> got;
  const sluice::report r =
      sluice::pipeline(numbers(1000),
                       sluice::transform([](int v) {
                         if (v % 100 == 0) std::this_thread::sleep_for(100us);
                         return v;
                       }, {.capacity = 7, .replicas = 3, .ordered = true, .name = "work"}),
                       sluice::into([&](int v) { got.push_back(v); }))
          .run();
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got[i], i);
  EXPECT_EQ(r.metrics.stages[1].replicas, 3u);
  EXPECT_EQ(r.metrics.channels[1].stats.capacity, 7u);
}

TEST(pipeline, stop_tokens_and_early_finish) {
  watchdog dog(20s);
  int taken = 0;
  std::atomic<bool> saw_end{false};
  sluice::pipeline(sluice::from<int>([&](sluice::sender<int>& out, std::stop_token st) {
                     for (int i = 0; !st.stop_requested(); ++i) {
                       if (!out.push(i)) break;
                     }
                     saw_end = true;
                   }),
                   sluice::transform([](int v, std::stop_token) { return v; }),
                   sluice::into([&](int) { return ++taken < 10; }))
      .run();
  EXPECT_EQ(taken, 10);
  EXPECT_TRUE(saw_end.load());
}

TEST(pipeline, a_failing_stage_is_reported_by_its_name) {
  watchdog dog(20s);
  sluice::pipeline p(numbers(1000), sluice::transform([](int v) -> int {
                       if (v == 42) throw std::runtime_error("no 42");
                       return v;
                     }, {.name = "picky"}),
                     sluice::into([](int) {}));
  try {
    p.run();
    ADD_FAILURE();
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "picky");
  }
  EXPECT_TRUE(p.last_report().balanced());
  EXPECT_THROW(p.run(), std::logic_error);  // a pipeline runs once
}

// add_pipeline: chains added to a graph of the caller's run as its stages, beside each
// other; a second unnamed chain repeats the first one's names, which the graph refuses
// naming the stage.
TEST(pipeline, add_pipeline_puts_chains_into_a_graph_of_ones_own) {
  watchdog dog(20s);
  sluice::graph g;
  std::atomic<long> a{0}, b{0};
  sluice::add_pipeline(g, numbers(100), sluice::transform([](int v) { return v + 1; }),
                       sluice::into([&](int v) { a += v; }));
  sluice::add_pipeline(g, sluice::from<int>([](sluice::sender<int>& out) { out.push(7); }, {.name = "seven"}),
                       sluice::into([&](int v) { b += v; }, {.name = "seven-sink"}));
  const sluice::report r = g.run();
  EXPECT_EQ(a.load(), 5050);  // 1..100
  EXPECT_EQ(b.load(), 7);
  EXPECT_TRUE(r.balanced());
  sluice::graph h;
  sluice::add_pipeline(h, numbers(3), sluice::into([](int) {}));
  try {
    sluice::add_pipeline(h, numbers(3), sluice::into([](int) {}));
    ADD_FAILURE() << "a repeated name was taken";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("two stages are named 'from#1'"), std::string::npos) << e.what();
  }
}

TEST(pipeline, graph_options_first_and_cancel_from_outside) {
  watchdog dog(20s);
  std::atomic<int> dead{0};
  sluice::pipeline p(sluice::graph_options{.on_discard = [&](const sluice::dead_letter&) { dead.fetch_add(1); }},
                     sluice::from<int>([](sluice::sender<int>& out) {
                       for (int i = 0; out.push(i); ++i) {
                       }
                     }, {.capacity = 8}),
                     sluice::into([](int, std::stop_token st) {
                       std::mutex m;
                       std::condition_variable_any cv;
                       std::unique_lock lk(m);
                       cv.wait(lk, st, [] { return false; });
                     }));
  p.start();
  ASSERT_TRUE(sluice_test::eventually([&] { return p.snapshot().stages[0].blocked_op == "push"; }));
  p.cancel();
  EXPECT_THROW(p.wait(), sluice::cancelled);
  EXPECT_GT(dead.load(), 0);
  EXPECT_TRUE(p.last_report().balanced());
}

TEST(pipeline, move_only_items_and_functions) {
  watchdog dog(20s);
  auto base = std::make_unique<int>(1000);
  int sum = 0;
  sluice::pipeline(sluice::from<std::unique_ptr<int>>([](sluice::sender<std::unique_ptr<int>>& out) {
                     for (int i = 0; i < 10; ++i) out.push(std::make_unique<int>(i));
                   }),
                   sluice::transform([b = std::move(base)](std::unique_ptr<int> p) { return *p + *b; }),
                   sluice::into([&](int v) { sum += v; }))
      .run();
  EXPECT_EQ(sum, 10 * 1000 + 45);
}

// A moved-from pipeline is an error on every member, as a moved-from graph is (it
// dereferenced a null graph before); the pipeline it moved into runs.
TEST(pipeline, a_moved_from_pipeline_throws_and_the_moved_to_one_runs) {
  watchdog dog(20s);
  long sum = 0;
  sluice::pipeline p(numbers(100), sluice::into([&](int v) { sum += v; }));
  sluice::pipeline q(std::move(p));
  EXPECT_THROW((void)p.run(), std::logic_error);  // NOLINT(bugprone-use-after-move): the point
  EXPECT_THROW(p.start(), std::logic_error);
  EXPECT_THROW((void)p.wait(), std::logic_error);
  EXPECT_THROW(p.request_stop(), std::logic_error);
  EXPECT_THROW(p.cancel(), std::logic_error);
  EXPECT_THROW((void)p.snapshot(), std::logic_error);
  EXPECT_THROW((void)p.last_report(), std::logic_error);
  EXPECT_THROW((void)p.get_graph(), std::logic_error);
  EXPECT_TRUE(q.run().balanced());
  EXPECT_EQ(sum, 99 * 100 / 2);
}

// The adjacent-stage check uses these traits; a mismatch is a static_assert that says
// "sluice::pipeline: stage N (kind) cannot take the output type of stage N-1".
TEST(pipeline, adjacent_type_check_traits) {
  auto to_string = [](int v) { return std::to_string(v); };
  auto wants_string = [](std::string s) { return s.size(); };
  static_assert(sluice::detail::callable_v<decltype(to_string), int&&>);
  static_assert(sluice::detail::callable_v<decltype(wants_string), std::string&&>);
  static_assert(!sluice::detail::callable_v<decltype(wants_string), int&&>);
  static_assert(std::is_same_v<sluice::detail::stage_result_t<decltype(to_string), int&&>, std::string>);
  auto with_token = [](int v, std::stop_token) { return v; };
  static_assert(sluice::detail::takes_stop_v<decltype(with_token), int&&>);
  static_assert(!sluice::detail::takes_stop_v<decltype(to_string), int&&>);
  SUCCEED();
}

}  // namespace
