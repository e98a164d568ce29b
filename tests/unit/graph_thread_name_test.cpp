// Stage threads carry their stage's name (top -H, gdb, perf): replicas "name#i", cut
// to the 15 bytes Linux keeps.
#include <gtest/gtest.h>
#include <pthread.h>

#include <mutex>
#include <set>
#include <string>

#include "sluice/graph.hpp"

namespace {

std::string this_thread_name() {
  char buf[32] = {};
  pthread_getname_np(pthread_self(), buf, sizeof buf);
  return buf;
}

TEST(GraphThreadNames, each_stage_thread_is_named_after_its_stage) {
  sluice::graph g;
  std::mutex mu;
  std::set<std::string> seen;
  auto note = [&] {
    std::lock_guard lk(mu);
    seen.insert(this_thread_name());
  };
  auto src = g.source<int>("numbers", [&](sluice::sender<int>& out) {
    note();
    for (int i = 0; i < 64; ++i) {
      if (!out.push(i)) return;
    }
  });
  auto wide = g.map("square", src, [&](int v) {
    note();
    return v * v;
  }, {.replicas = 2});
  g.sink("a-very-long-stage-name", wide, [&](int) { note(); });
  g.run();
  EXPECT_TRUE(seen.count("numbers")) << "source thread";
  EXPECT_TRUE(seen.count("square#0") || seen.count("square#1")) << "replica threads";
  for (const auto& s : seen) {
    if (s.rfind("square", 0) == 0) {
      EXPECT_TRUE(s == "square#0" || s == "square#1") << s;
    }
  }
  EXPECT_TRUE(seen.count(std::string("a-very-long-stage-name").substr(0, 15))) << "cut to 15 bytes";
}

}  // namespace
