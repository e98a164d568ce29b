// Stage graphs (issue 3), peers in the same executable run.
//
// linear4_cap<N>: a 4-stage linear pipeline of trivial work on 8-byte items
//   (source -> v*3+1 -> v^(v>>7) -> sum), 2^20 items per iteration, items/s:
//     sluice        sluice::graph: source, map, map, sink; every channel capacity N
//     tbb_pipeline  oneTBB parallel_pipeline, four serial_in_order filters, N live tokens
//     tbb_queues    three tbb::concurrent_bounded_queue (capacity N), one std::thread per stage
//   Each iteration builds and runs the whole thing (threads started and joined inside the
//   timed region, for all three alike: at ~10-100 ms per iteration that is noise).
//   Target (issue 3): sluice >= 1.5x tbb_queues and >= tbb_pipeline.
//
// inlet2: a server's handler threads feeding a graph. Two threads push 2^19 items each
//   through one sluice::inlet (capacity 1024) into a sink that sums them, items/s. Peer:
//   tbb_queue, the same two threads pushing into a tbb::concurrent_bounded_queue (capacity
//   1024) that one consumer thread drains (the same sum). Threads start and join inside the
//   timed region for both.
//
// flatmap8_ordered / flatmap8_unordered: a source of 2^17 numbers, a stage with two
//   threads that turns each number v into the 8 items v*8 .. v*8+7, and a sink that sums
//   them: 2^20 items out per iteration, items/s (of output). Capacity 1024.
//     sluice        sluice::graph flat_map, .replicas = 2, .ordered = true / false
//     tbb_pipeline  oneTBB parallel_pipeline: serial source, a parallel filter that returns
//                   the 8 items as a vector, a serial_in_order / serial_out_of_order sink;
//                   1024 live tokens and a task_arena of 2 threads (the stage's two)
//   The ordered row is sluice's ordered flat_map (private channel per batch, an emitter
//   thread); the unordered one is the same stage without the order, for scale.
//
// teardown16: a 16-stage chain where every other stage is blocked in a stop-token-aware
//   wait (a blocking call that honours cancellation), the rest are parked on channels
//   (the source on a full one, the others on empty ones). Stage 7 throws; the time from
//   just before its throw to run() returning (every channel cancelled, every thread
//   woken and joined) is measured over 1000 runs: counters ns_per_teardown (median) and
//   ns_per_teardown_p99, also printed as "graph teardown: ...". Target: p99 < 5 ms.
#include <benchmark/benchmark.h>
#include <oneapi/tbb/concurrent_queue.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "bench_main.hpp"
#include "sluice/graph.hpp"

namespace {

constexpr std::uint64_t kItems = 1u << 20;
constexpr int kTeardownRuns = 1000;

inline std::uint64_t work1(std::uint64_t v) { return v * 3 + 1; }
inline std::uint64_t work2(std::uint64_t v) { return v ^ (v >> 7); }

std::uint64_t expected_sum() {
  std::uint64_t s = 0;
  for (std::uint64_t i = 0; i < kItems; ++i) s += work2(work1(i));
  return s;
}

void check(benchmark::State& st, std::uint64_t got) {
  static const std::uint64_t want = expected_sum();
  if (got != want) st.SkipWithError("wrong checksum");
}

// ---- inlet: pushes from outside the graph ----------------------------------------------------

constexpr int kInletThreads = 2;

std::uint64_t inlet_sum() { return kItems * (kItems - 1) / 2; }

void bm_inlet_sluice(benchmark::State& st) {
  for (auto _ : st) {
    sluice::graph g;
    auto [in, s] = g.input<std::uint64_t>("in", {.capacity = 1024});
    std::uint64_t sum = 0;
    g.sink("sum", s, [&sum](std::uint64_t v) { sum += v; });
    g.start();
    std::vector<std::thread> pushers;
    for (int t = 0; t < kInletThreads; ++t) {
      pushers.emplace_back([in = in, t] {
        const std::uint64_t n = kItems / kInletThreads;
        for (std::uint64_t i = 0; i < n; ++i) in.push(static_cast<std::uint64_t>(t) * n + i);
      });
    }
    for (auto& p : pushers) p.join();
    in.close();
    (void)g.wait();
    if (sum != inlet_sum()) st.SkipWithError("wrong checksum");
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

void bm_inlet_tbb_queue(benchmark::State& st) {
  for (auto _ : st) {
    tbb::concurrent_bounded_queue<std::uint64_t> q;
    q.set_capacity(1024);
    std::uint64_t sum = 0;
    std::thread consumer([&] {
      std::uint64_t v = 0;
      for (std::uint64_t i = 0; i < kItems; ++i) {
        q.pop(v);
        sum += v;
      }
    });
    std::vector<std::thread> pushers;
    for (int t = 0; t < kInletThreads; ++t) {
      pushers.emplace_back([&q, t] {
        const std::uint64_t n = kItems / kInletThreads;
        for (std::uint64_t i = 0; i < n; ++i) q.push(static_cast<std::uint64_t>(t) * n + i);
      });
    }
    for (auto& p : pushers) p.join();
    consumer.join();
    if (sum != inlet_sum()) st.SkipWithError("wrong checksum");
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

// ---- linear pipeline ----------------------------------------------------------------------

void bm_sluice(benchmark::State& st, std::size_t cap) {
  for (auto _ : st) {
    sluice::graph g;
    std::uint64_t sum = 0;
    auto src = g.source<std::uint64_t>("source", [](sluice::sender<std::uint64_t>& out) {
      for (std::uint64_t i = 0; i < kItems; ++i) out.push(i);
    }, {.capacity = cap});
    auto a = g.map("work1", src, work1, {.capacity = cap});
    auto b = g.map("work2", a, work2, {.capacity = cap});
    g.sink("sum", b, [&sum](std::uint64_t v) { sum += v; });
    g.run();
    check(st, sum);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

void bm_tbb_pipeline(benchmark::State& st, std::size_t cap) {
  for (auto _ : st) {
    std::uint64_t next = 0;
    std::uint64_t sum = 0;
    tbb::parallel_pipeline(
        cap,
        tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                              [&next](tbb::flow_control& fc) -> std::uint64_t {
                                                if (next == kItems) {
                                                  fc.stop();
                                                  return 0;
                                                }
                                                return next++;
                                              }) &
            tbb::make_filter<std::uint64_t, std::uint64_t>(tbb::filter_mode::serial_in_order, [](std::uint64_t v) { return work1(v); }) &
            tbb::make_filter<std::uint64_t, std::uint64_t>(tbb::filter_mode::serial_in_order, [](std::uint64_t v) { return work2(v); }) &
            tbb::make_filter<std::uint64_t, void>(tbb::filter_mode::serial_in_order,
                                                  [&sum](std::uint64_t v) { sum += v; }));
    check(st, sum);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

void bm_tbb_queues(benchmark::State& st, std::size_t cap) {
  // End of stream travels as a flag next to the value.
  struct msg {
    std::uint64_t v;
    bool end;
  };
  for (auto _ : st) {
    tbb::concurrent_bounded_queue<msg> q1, q2, q3;
    for (auto* q : {&q1, &q2, &q3}) q->set_capacity(static_cast<std::ptrdiff_t>(cap));
    std::uint64_t sum = 0;
    std::thread source([&] {
      for (std::uint64_t i = 0; i < kItems; ++i) q1.push({i, false});
      q1.push({0, true});
    });
    auto stage = [](tbb::concurrent_bounded_queue<msg>& in, tbb::concurrent_bounded_queue<msg>& out, auto f) {
      for (;;) {
        msg m;
        in.pop(m);
        if (m.end) {
          out.push(m);
          return;
        }
        out.push({f(m.v), false});
      }
    };
    std::thread t1([&] { stage(q1, q2, work1); });
    std::thread t2([&] { stage(q2, q3, work2); });
    std::thread sink([&] {
      for (;;) {
        msg m;
        q3.pop(m);
        if (m.end) return;
        sum += m.v;
      }
    });
    source.join();
    t1.join();
    t2.join();
    sink.join();
    check(st, sum);
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

// ---- flat_map: one item in, 8 out -----------------------------------------------------------

constexpr std::uint64_t kFlatIn = kItems / 8;

void bm_flatmap_sluice(benchmark::State& st, bool ordered) {
  for (auto _ : st) {
    sluice::graph g;
    std::uint64_t sum = 0;
    auto src = g.source<std::uint64_t>("source", [](sluice::sender<std::uint64_t>& out) {
      for (std::uint64_t i = 0; i < kFlatIn; ++i) out.push(i);
    }, {.capacity = 1024});
    auto fm = g.flat_map<std::uint64_t>("expand", src, [](std::uint64_t v, sluice::sender<std::uint64_t>& out) {
      for (std::uint64_t j = 0; j < 8; ++j) out.push(v * 8 + j);
    }, {.capacity = 1024, .replicas = 2, .ordered = ordered});
    g.sink("sum", fm, [&sum](std::uint64_t v) { sum += v; });
    g.run();
    if (sum != kItems * (kItems - 1) / 2) st.SkipWithError("wrong checksum");
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

void bm_flatmap_tbb(benchmark::State& st, bool ordered) {
  tbb::task_arena arena(2);
  for (auto _ : st) {
    std::uint64_t next = 0;
    std::uint64_t sum = 0;
    arena.execute([&] {
      tbb::parallel_pipeline(
          1024,
          tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                                [&next](tbb::flow_control& fc) -> std::uint64_t {
                                                  if (next == kFlatIn) {
                                                    fc.stop();
                                                    return 0;
                                                  }
                                                  return next++;
                                                }) &
              tbb::make_filter<std::uint64_t, std::vector<std::uint64_t>>(tbb::filter_mode::parallel,
                                                                          [](std::uint64_t v) {
                                                                            std::vector<std::uint64_t> out;
                                                                            out.reserve(8);
                                                                            for (std::uint64_t j = 0; j < 8; ++j) out.push_back(v * 8 + j);
                                                                            return out;
                                                                          }) &
              tbb::make_filter<std::vector<std::uint64_t>, void>(
                  ordered ? tbb::filter_mode::serial_in_order : tbb::filter_mode::serial_out_of_order,
                  [&sum](const std::vector<std::uint64_t>& vs) {
                    for (std::uint64_t v : vs) sum += v;
                  }));
    });
    if (sum != kItems * (kItems - 1) / 2) st.SkipWithError("wrong checksum");
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * kItems));
}

// ---- teardown latency ---------------------------------------------------------------------

// A wait that only a stop request ends (a blocking call that honours cancellation), or
// open() for the one stage that is told to fail.
class gate {
 public:
  void open() {
    {
      std::lock_guard lk(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool wait(const std::stop_token& st) {
    std::unique_lock lk(mu_);
    return cv_.wait(lk, st, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool open_ = false;
};

bool all_parked(const sluice::graph& g) {
  const auto s = g.snapshot();
  for (std::size_t k = 0; k < s.stages.size(); k += 2) {
    const std::string want = k == 0 ? "push" : "pop";
    if (s.stages[k].blocked_op != want) return false;
  }
  return true;
}

// One run; returns nanoseconds from the throw to wait() returning.
double one_teardown() {
  constexpr int kStages = 16;
  constexpr int kFailer = 7;
  sluice::graph g;
  gate trigger;
  std::atomic<int> waiting{0};
  std::chrono::steady_clock::time_point thrown_at{};
  auto s = g.source<std::uint64_t>("s0", [](sluice::sender<std::uint64_t>& out) {
    for (std::uint64_t i = 0; out.push(i); ++i) {
    }
  }, {.capacity = 64});
  for (int k = 1; k < kStages; ++k) {
    const std::string name = std::string("s").append(std::to_string(k));
    if (k % 2 == 0) {
      s = g.map(name, s, [](std::uint64_t v) { return v; }, {.capacity = 64});
      continue;
    }
    auto blocked = [&, k](sluice::receiver<std::uint64_t>&, std::stop_token st) {
      waiting.fetch_add(1);
      if (k == kFailer) {
        trigger.wait(st);
        thrown_at = std::chrono::steady_clock::now();
        throw std::runtime_error("stage 7 fails");
      }
      gate never;
      never.wait(st);
    };
    if (k == kStages - 1) {
      g.consume(name, s, blocked);
    } else {
      s = g.stage<std::uint64_t>(name, s,
                                 [blocked](sluice::receiver<std::uint64_t>& in, sluice::sender<std::uint64_t>&,
                                           std::stop_token st) mutable { blocked(in, st); },
                                 {.capacity = 64});
    }
  }
  g.start();
  while (waiting.load() < kStages / 2 || !all_parked(g)) std::this_thread::yield();
  trigger.open();
  try {
    (void)g.wait();
  } catch (const sluice::stage_error&) {
  }
  const auto done = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(done - thrown_at).count();
}

void bm_teardown(benchmark::State& st) {
  for (auto _ : st) {
    std::vector<double> ns;
    ns.reserve(kTeardownRuns);
    for (int r = 0; r < kTeardownRuns; ++r) ns.push_back(one_teardown());
    std::sort(ns.begin(), ns.end());
    const double median = ns[ns.size() / 2];
    const double p99 = ns[(ns.size() * 99 + 99) / 100 - 1];
    st.counters["ns_per_teardown"] = median;
    st.counters["ns_per_teardown_p99"] = p99;
    st.counters["ns_per_teardown_max"] = ns.back();
    // On stderr: stdout may be the JSON reporter's stream (the counters above carry it).
    std::fprintf(stderr, "graph teardown: 16 stages, %d runs: median %.1f us, p99 %.1f us, max %.1f us\n",
                 kTeardownRuns, median / 1e3, p99 / 1e3, ns.back() / 1e3);
  }
}

void register_all() {
  for (std::size_t cap : {64u, 1024u}) {
    const std::string scen = std::string("linear4_cap").append(std::to_string(cap));
    benchmark::RegisterBenchmark((scen + "/sluice").c_str(), [cap](benchmark::State& s) { bm_sluice(s, cap); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((scen + "/tbb_pipeline").c_str(),
                                 [cap](benchmark::State& s) { bm_tbb_pipeline(s, cap); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((scen + "/tbb_queues").c_str(), [cap](benchmark::State& s) { bm_tbb_queues(s, cap); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::AddCustomContext("target." + scen, "tbb_queues>=1.5 tbb_pipeline>=1");
  }
  for (const bool ordered : {true, false}) {
    const std::string scen = ordered ? "flatmap8_ordered" : "flatmap8_unordered";
    benchmark::RegisterBenchmark((scen + "/sluice").c_str(), [ordered](benchmark::State& s) { bm_flatmap_sluice(s, ordered); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((scen + "/tbb_pipeline").c_str(),
                                 [ordered](benchmark::State& s) { bm_flatmap_tbb(s, ordered); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("inlet2/sluice", bm_inlet_sluice)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("inlet2/tbb_queue", bm_inlet_tbb_queue)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("teardown16/sluice", bm_teardown)
      ->Iterations(1)
      ->Repetitions(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::AddCustomContext("items_per_iteration", std::to_string(kItems));
  benchmark::AddCustomContext("teardown_runs", std::to_string(kTeardownRuns));
}

}  // namespace

int main(int argc, char** argv) {
  return sluice_bench::benchmark_main(argc, argv, {.register_all = [] {
                                                     register_all();
                                                     return 0;
                                                   }});
}
