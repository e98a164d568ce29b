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

// The names of the threads that called note(), and a source named `name` of 64 items
// that notes its own.
struct names_seen {
  std::mutex mu;
  std::set<std::string> seen;
  void note() {
    std::lock_guard lk(mu);
    seen.insert(this_thread_name());
  }
  sluice::stream<int> source(sluice::graph& g, const std::string& name) {
    return g.source<int>(name, [this](sluice::sender<int>& out) {
      note();
      for (int i = 0; i < 64; ++i) {
        if (!out.push(i)) return;
      }
    });
  }
};

TEST(GraphThreadNames, each_stage_thread_is_named_after_its_stage) {
  sluice::graph g;
  names_seen names;
  auto src = names.source(g, "numbers");
  auto note = [&] { names.note(); };
  auto wide = g.map("square", src, [&](int v) {
    note();
    return v * v;
  }, {.replicas = 2});
  g.sink("a-very-long-stage-name", wide, [&](int) { note(); });
  g.run();
  const std::set<std::string>& seen = names.seen;
  EXPECT_TRUE(seen.count("numbers")) << "source thread";
  EXPECT_TRUE(seen.count("square#0") || seen.count("square#1")) << "replica threads";
  for (const auto& s : seen) {
    if (s.rfind("square", 0) == 0) {
      EXPECT_TRUE(s == "square#0" || s == "square#1") << s;
    }
  }
  EXPECT_TRUE(seen.count(std::string("a-very-long-stage-name").substr(0, 15))) << "cut to 15 bytes";
}

// A long replicated stage keeps its "#i" (the name is cut, so replicas are told apart), a
// name is cut at a character's start, never inside a UTF-8 sequence, and a control byte
// shows as '?' (a newline split /proc/<tid>/comm in two). A probe's findings.
TEST(GraphThreadNames, names_keep_the_replica_and_whole_characters_and_no_control_bytes) {
  sluice::graph g;
  names_seen names;
  auto src = names.source(g, "ab\ncd");
  auto note = [&] { names.note(); };
  // Nine two-byte characters: 18 bytes, cut after the seventh (14 bytes), not at 15.
  const std::string accents = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";
  auto m = g.map(accents, src, [&](int v) {
    note();
    return v;
  });
  auto wide = g.map("a-long-replicated-stage", m, [&](int v) {
    note();
    return v;
  }, {.replicas = 2});
  g.sink("sink", wide, [](int) {});
  g.run();
  const std::set<std::string>& seen = names.seen;
  EXPECT_TRUE(seen.count("ab?cd")) << "control byte";
  EXPECT_TRUE(seen.count(accents.substr(0, 14))) << "cut at a character's start";
  EXPECT_TRUE(seen.count("a-long-replic#0") || seen.count("a-long-replic#1")) << "the replica's number kept";
  for (const auto& s : seen) {
    EXPECT_EQ(s.find('\n'), std::string::npos);
    if (s.rfind("a-long-", 0) == 0) {
      EXPECT_TRUE(s == "a-long-replic#0" || s == "a-long-replic#1") << s;
    }
  }
}

}  // namespace
