// Allocation failure inside the runtime: a server that survives std::bad_alloc must be
// able to go on, and to tear the graph down. This executable replaces the global
// operator new with one that can fail the N-th allocation made by the calling thread
// (stage threads are never failed), and sweeps N over every allocation of an operation.
#if defined(__GNUC__) && !defined(__clang__)
// The replacement pair below is malloc/free on purpose; GCC sees free() reached from
// a `new` expression it inlined and calls it a mismatch.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include <sluice/graph.hpp>

namespace {
thread_local long t_fail_in = -1;  // -1: never; else fail when it reaches 0
thread_local bool t_fail_rest = false;  // once the countdown fails one, operator new fails every later one
thread_local bool t_new_fails = false;  // set by that: operator new fails (calloc does not)
thread_local bool t_out_of_memory = false;  // every allocation of this thread fails
}  // namespace

void* operator new(std::size_t n) {
  if (t_out_of_memory || t_new_fails) throw std::bad_alloc();
  if (t_fail_in >= 0 && t_fail_in-- == 0) {
    t_new_fails = t_fail_rest;
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n != 0 ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

// glibc's own calloc calls fail too on an out-of-memory thread: the record a thread_local
// with a destructor registers at its first use is one, and glibc aborts the process when
// it cannot get it. Otherwise glibc's calloc does the work (its exported __libc_calloc).
// Not under a sanitizer, whose own calloc must see every block its free() is given
// (SLUICE_SANITIZER_BUILD: cmake/sluice_options.cmake, for every target of such a build).
#ifndef SLUICE_SANITIZER_BUILD
extern "C" void* __libc_calloc(std::size_t n, std::size_t size);
extern "C" void* calloc(std::size_t n, std::size_t size) {
  if (t_out_of_memory) return nullptr;
  return __libc_calloc(n, size);
}
#endif

namespace {
using namespace std::chrono_literals;

// Arms the countdown for one scope on this thread.
struct fail_nth {
  explicit fail_nth(long n) { t_fail_in = n; }
  fail_nth(const fail_nth&) = delete;
  fail_nth& operator=(const fail_nth&) = delete;
  ~fail_nth() { t_fail_in = -1; }
  [[nodiscard]] static bool spent() { return t_fail_in < 0; }
};

// The N-th allocation and every one after it fail, for one scope on this thread: memory
// that ran out stays out, so the code that handles the first bad_alloc meets another.
struct fail_from {
  explicit fail_from(long n) {
    t_fail_in = n;
    t_fail_rest = true;
  }
  fail_from(const fail_from&) = delete;
  fail_from& operator=(const fail_from&) = delete;
  ~fail_from() {
    t_fail_in = -1;
    t_fail_rest = false;
    t_new_fails = false;
  }
  [[nodiscard]] static bool spent() { return t_fail_in < 0; }
};

// Adding stages: each allocation in turn fails. The bad_alloc reaches the caller (it
// once met a noexcept constructor and called std::terminate), and the graph can still
// be destroyed, or started and waited for, without a hang.
TEST(alloc_failure, adding_a_stage_throws_bad_alloc_to_the_caller) {
  int failed = 0;
  for (long k = 0; k < 400; ++k) {
    auto g = std::make_unique<sluice::graph>(sluice::graph_options{.on_discard = [](const sluice::dead_letter&) {}});
    bool threw = false;
    try {
      fail_nth arm(k);
      auto [in, s] = g->input<int>("in");
      auto m = g->map("double", s, [](int v) { return 2 * v; });
      g->sink("sink", m, [](int) {});
      if (!fail_nth::spent()) break;  // every allocation of the build has been failed once
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    if (!threw) continue;
    ++failed;
    // Whatever was half-added: start() refuses it (a stream nobody consumes), or runs
    // or fails, and then the run ends.
    try {
      g->start();
    } catch (const std::logic_error&) {
      continue;  // refused before anything started
    } catch (const std::exception&) {
    }
    try {
      const auto r = g->wait_for(30s);
      EXPECT_TRUE(r.has_value()) << "k=" << k << ": the run never ended";
    } catch (const std::exception&) {
      // the run failed (a half-built stage): it ended, which is what is asserted
    }
    EXPECT_TRUE(g->done()) << "k=" << k;
  }
  EXPECT_GT(failed, 3);  // the sweep reached allocations inside the runtime
}

// Starts a graph of make()'s with each allocation of start() in turn armed to fail (Arm:
// fail_nth, one; fail_from, that one and every later one) until start() makes fewer.
// Whenever start() throws, the run has ended: done(), wait() throws its error, and the
// destructor returns. Returns how many starts threw.
template <class Arm, class Make>
int sweep_start(Make make) {
  int failed = 0;
  for (long k = 0; k < 400; ++k) {
    std::unique_ptr<sluice::graph> g = make();
    bool threw = false;
    bool complete = false;
    {
      Arm arm(k);
      try {
        g->start();
      } catch (const std::exception&) {
        threw = true;  // bad_alloc; a thread that could not be made; a stage whose task could not be
      }
      complete = !threw && !Arm::spent();  // start() made fewer than k allocations
    }
    if (!threw) {
      try {
        EXPECT_TRUE(g->wait_for(30s).has_value()) << "k=" << k;
      } catch (const std::exception&) {
      }
      if (complete) break;
      continue;
    }
    ++failed;
    EXPECT_TRUE(g->done()) << "k=" << k << ": start() threw but the run never ended";
    if (!g->done()) {
      (void)g.release();  // its destructor would wait for ever: leak it, fail, go on
      continue;
    }
    try {
      (void)g->wait_for(30s);
      ADD_FAILURE() << "k=" << k << ": wait() after a failed start() returned instead of throwing its error";
    } catch (const std::exception&) {
    }
    g.reset();  // must return (it hung)
  }
  return failed;
}

// start(): each allocation in turn fails. start() throws, and the run has ended: wait()
// reports, the destructor returns. An allocation that failed before the first thread
// once left a started graph that never finished, and its destructor hung.
TEST(alloc_failure, a_start_that_runs_out_of_memory_still_ends_the_run) {
  EXPECT_GT(sweep_start<fail_nth>([] {
              auto g = std::make_unique<sluice::graph>();
              auto s = g->source<int>("src", [](sluice::sender<int>& out) { (void)out.push(1); });
              g->sink("sink", s, [](int) {});
              return g;
            }),
            2);
}

// The same, with memory out for good from the N-th allocation of start() on: handling the
// first bad_alloc meets a second one. Naming the failed stage (its stage_error), or the
// first stage for a reserve that failed, threw out of start() with the run started and
// never finished: wait() and the destructor hung.
TEST(alloc_failure, a_start_that_runs_out_of_memory_for_good_still_ends_the_run) {
  EXPECT_GT(sweep_start<fail_from>([] {
              auto g = std::make_unique<sluice::graph>();
              // Names past the short-string buffer, so that naming them allocates.
              auto s = g->source<int>("a-source-with-a-long-name", [](sluice::sender<int>& out) { (void)out.push(1); });
              auto m = g->map("a-map-with-a-long-name-too", s, [](int v) { return v; }, {.replicas = 2});
              g->sink("a-sink-with-a-long-name-also", m, [](int) {});
              return g;
            }),
            2);
}

// A stage that runs out of memory for good: from its bad_alloc on, every allocation of
// its thread fails, as near a process's memory limit. Its teardown runs on that thread
// and must not allocate where it cannot fail: the locked channel's discard (a deque made
// inside a noexcept function) called std::terminate, and the stage scope's thread_local
// exception_ptr made glibc abort the thread's exit. run() throws the stage's error.
template <bool NothrowMove>
struct oom_item {  // a move that may throw makes the channel the locked kind, else a ring
  long v = 0;
  oom_item() = default;
  explicit oom_item(long x) : v(x) {}
  oom_item(const oom_item&) = default;
  oom_item(oom_item&& o) noexcept(NothrowMove) : v(o.v) {}
  oom_item& operator=(const oom_item&) = default;
  oom_item& operator=(oom_item&&) = default;
  ~oom_item() = default;
};

template <class Item>
void stage_out_of_memory_for_good(const char* kind) {
  std::atomic<long> dead{0};
  sluice::graph g({.on_discard = [&](const sluice::dead_letter&) { dead.fetch_add(1); }});
  auto src = g.source<Item>(
      "src",
      [](sluice::sender<Item>& out) {
        for (long i = 0; i < 100000; ++i) {
          if (!out.push(Item(i))) return;
        }
      },
      {.capacity = 64});
  auto m = g.map(
      "m", src,
      [](Item x) {
        if (x.v == 1000) {
          t_out_of_memory = true;  // for the rest of this thread's life
          throw std::bad_alloc();
        }
        return x;
      },
      {.capacity = 64});
  g.sink("sink", m, [](Item) {});
  try {
    g.run();
    ADD_FAILURE() << kind << ": run() returned";
  } catch (const sluice::stage_error& e) {
    EXPECT_EQ(e.stage(), "m") << kind;
  }
}

TEST(alloc_failure, a_stage_out_of_memory_for_good_is_its_stage_error_not_a_terminate) {
  stage_out_of_memory_for_good<oom_item<false>>("locked channel");
  stage_out_of_memory_for_good<oom_item<true>>("ring channel");
}

}  // namespace
