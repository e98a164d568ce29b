// channel_bench.cpp — sluice::bounded against blocking peers, side by side in one run.
//
//   build/release/benchmarks/sluice_bench_channel                      # everything (~2-3 min)
//   build/release/benchmarks/sluice_bench_channel --benchmark_filter=spsc_cap16/
//   benchmarks/run.sh build/release channel                            # table + ratios
//
// Peers (benchmarks/peers/): tbb::concurrent_bounded_queue, moodycamel's
// BlockingReaderWriterCircularBuffer (SPSC only) and BlockingConcurrentQueue (bound emulated
// with a free-slot semaphore), boost::fibers::buffered_channel from std::threads, and a
// mutex + two condvars around a std::deque. Items are std::uint64_t.
//
// Scenarios (each benchmark is named "<scenario>/<implementation>"):
//   spsc_cap16, spsc_cap1024   1 producer -> 1 consumer, kItems items per iteration
//   mpmc2x2_cap1024            2 producers -> 2 consumers, kItems items in total
//   mpmc4x4_cap1024, mpmc8x8_cap1024
//                              the same with 8 and 16 threads: more threads than cores on a
//                              2-core machine (parking matters), a scaling row on a big one
//   chain4_cap1024             source -> 3 channels (2 relay threads) -> sink: 4 threads
//   pingpong_cap1              A pushes into a->b and waits on b->a; B echoes: round trips;
//                              its row ref_spin_slot is the floor (peers/spin_slot.hpp)
// "sluice:bulk64" rows use push_all / pop_some with batches of kBatch items (sluice only);
// the other rows move one item per call.
//
// Method: every iteration builds fresh channels and starts fresh threads while the timer
// is paused; the threads wait on a latch; the timer resumes, the latch opens, and the
// iteration ends when every thread has been joined (real time, UseRealTime). Consumers
// sum what they pop and the sum is checked, so an item lost or duplicated fails the row.
// Defaults (overridable on the command line): --benchmark_min_time=0.3,
// --benchmark_repetitions=5 in random interleaved order, aggregates only (run.sh reads
// the median).
// SLUICE_BENCH_PIN=1 pins the k-th thread of an iteration to CPU k mod nproc.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <latch>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "peers/boost_fiber_peer.hpp"
#include "peers/moodycamel_peers.hpp"
#include "peers/mutex_deque.hpp"
#include "peers/peer.hpp"
#include "peers/sluice_peer.hpp"
#include "peers/lamport_spsc.hpp"
#include "peers/spin_slot.hpp"
#include "peers/tbb_peer.hpp"

namespace {

using sluice_bench::item;

constexpr std::size_t kItems = std::size_t{1} << 20;      // per throughput iteration
constexpr std::size_t kRoundTrips = std::size_t{1} << 14;  // per ping-pong iteration, timed
constexpr std::size_t kWarmupTrips = std::size_t{1} << 13;  // before them, untimed
constexpr std::size_t kBatch = 64;                         // bulk rows

bool pin_threads() {
  const char* v = std::getenv("SLUICE_BENCH_PIN");
  return v != nullptr && v[0] == '1';
}

void pin_to_cpu(unsigned k) {
  const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(k % n, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// The threads of one iteration: spawn() starts a thread that waits on a latch;
// release_and_join() opens the latch and joins them all. The destructor joins too,
// so no thread outlives the iteration.
class thread_group {
 public:
  thread_group() = default;
  thread_group(const thread_group&) = delete;
  thread_group& operator=(const thread_group&) = delete;
  ~thread_group() { release_and_join(); }

  template <class F>
  void spawn(F f) {
    const auto k = static_cast<unsigned>(threads_.size());
    threads_.emplace_back([this, k, f = std::move(f)]() mutable {
      if (pin_) pin_to_cpu(k);
      go_.wait();
      f();
    });
  }
  void release_and_join() {
    if (!released_) {
      released_ = true;
      go_.count_down();
    }
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  std::latch go_{1};
  bool released_ = false;
  bool pin_ = pin_threads();
  std::vector<std::thread> threads_;
};

// Once every handle is made: an adapter that holds ends of its own drops them, so the
// channel counts exactly the handles the threads own (peers/sluice_peer.hpp).
template <class P>
void seal(P& ch) {
  if constexpr (requires { ch.seal(); }) ch.seal();
}

// Sum of 0 .. n-1: what the consumers of one iteration must see in total.
constexpr std::uint64_t sum_below(std::uint64_t n) { return n * (n - 1) / 2; }

void finish(benchmark::State& state, std::size_t items_per_iteration, std::uint64_t bad) {
  if (bad != 0) {
    state.SkipWithError("checksum mismatch: an item was lost or duplicated");
    return;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(items_per_iteration));
}

// ---- producers / consumers, per item and bulk ----------------------------------------

template <class Producer>
void produce(Producer& p, item first, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) p.push(first + i);
}

template <class Consumer>
std::uint64_t consume(Consumer& c, std::size_t count) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < count; ++i) sum += c.pop();
  return sum;
}

void produce_bulk(sluice_bench::sluice_peer::producer& p, item first, std::size_t count) {
  item buf[kBatch];
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(kBatch, count - done);
    for (std::size_t j = 0; j < n; ++j) buf[j] = first + done + j;
    p.push_batch(std::span<const item>(buf, n));
    done += n;
  }
}

std::uint64_t consume_bulk(sluice_bench::sluice_peer::consumer& c, std::size_t count) {
  item buf[kBatch];
  std::uint64_t sum = 0;
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = c.pop_batch(buf, std::min(kBatch, count - done));
    for (std::size_t j = 0; j < n; ++j) sum += buf[j];
    done += n;
  }
  return sum;
}

// ---- scenarios -----------------------------------------------------------------------

// np producers -> one channel -> nc consumers; kItems in total. SPSC is np = nc = 1.
// Producer p pushes [p * kItems/np, (p+1) * kItems/np); consumer c pops exactly kItems/nc,
// so every thread ends without a close.
template <class P, bool Bulk = false>
void bm_mpmc(benchmark::State& state, std::size_t capacity, std::size_t np, std::size_t nc) {
  std::uint64_t bad = 0;
  for (auto _ : state) {
    state.PauseTiming();
    P ch(capacity);
    std::vector<std::uint64_t> sums(nc, 0);
    {
      thread_group g;
      for (std::size_t p = 0; p < np; ++p) {
        g.spawn([h = ch.make_producer(), first = p * (kItems / np), n = kItems / np]() mutable {
          if constexpr (Bulk) {
            produce_bulk(h, first, n);
          } else {
            produce(h, first, n);
          }
        });
      }
      for (std::size_t c = 0; c < nc; ++c) {
        g.spawn([h = ch.make_consumer(), out = &sums[c], n = kItems / nc]() mutable {
          if constexpr (Bulk) {
            *out = consume_bulk(h, n);
          } else {
            *out = consume(h, n);
          }
        });
      }
      seal(ch);
      state.ResumeTiming();
      g.release_and_join();
    }
    std::uint64_t total = 0;
    for (auto s : sums) total += s;
    if (total != sum_below(kItems)) ++bad;
  }
  finish(state, kItems, bad);
}

// source -> ch[0] -> relay -> ch[1] -> ... -> ch[stages-2] -> sink: `stages` threads.
template <class P, bool Bulk = false>
void bm_chain(benchmark::State& state, std::size_t capacity, std::size_t stages) {
  std::uint64_t bad = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<std::unique_ptr<P>> chans;
    for (std::size_t i = 0; i + 1 < stages; ++i) chans.push_back(std::make_unique<P>(capacity));
    std::uint64_t sum = 0;
    {
      thread_group g;
      g.spawn([h = chans.front()->make_producer()]() mutable {
        if constexpr (Bulk) {
          produce_bulk(h, 0, kItems);
        } else {
          produce(h, 0, kItems);
        }
      });
      for (std::size_t i = 0; i + 2 < stages; ++i) {
        g.spawn([in = chans[i]->make_consumer(), out = chans[i + 1]->make_producer()]() mutable {
          if constexpr (Bulk) {
            item buf[kBatch];
            for (std::size_t done = 0; done < kItems;) {
              const std::size_t n = in.pop_batch(buf, std::min(kBatch, kItems - done));
              out.push_batch(std::span<const item>(buf, n));
              done += n;
            }
          } else {
            for (std::size_t k = 0; k < kItems; ++k) out.push(in.pop());
          }
        });
      }
      g.spawn([h = chans.back()->make_consumer(), &sum]() mutable {
        if constexpr (Bulk) {
          sum = consume_bulk(h, kItems);
        } else {
          sum = consume(h, kItems);
        }
      });
      for (auto& c : chans) seal(*c);
      state.ResumeTiming();
      g.release_and_join();
    }
    if (sum != sum_below(kItems)) ++bad;
  }
  finish(state, kItems, bad);
}

// Two capacity-1 channels; A sends r and waits for it to come back; B echoes.
// Reports ns_per_roundtrip (and items_per_second = round trips per second) over the
// kRoundTrips that follow kWarmupTrips untimed ones, for every implementation alike: on
// a fresh pair of threads the first few thousand round trips measure the scheduler, not
// the channel (both threads start on one CPU until the balancer moves one; ~10 us per
// round trip for ~3,000 of them on the 2-core VM, whatever the queue).
template <class P>
void bm_pingpong(benchmark::State& state) {
  std::uint64_t bad = 0;
  double total_ns = 0;
  constexpr std::size_t kTrips = kWarmupTrips + kRoundTrips;
  for (auto _ : state) {
    state.PauseTiming();
    P ab(1);
    P ba(1);
    std::uint64_t sum = 0;
    std::chrono::steady_clock::time_point t0, t1;
    {
      thread_group g;
      g.spawn([tx = ab.make_producer(), rx = ba.make_consumer(), &sum, &t0, &t1]() mutable {
        std::uint64_t s = 0;
        for (std::size_t r = 0; r < kTrips; ++r) {
          if (r == kWarmupTrips) t0 = std::chrono::steady_clock::now();
          tx.push(r);
          s += rx.pop();
        }
        t1 = std::chrono::steady_clock::now();
        sum = s;
      });
      g.spawn([rx = ab.make_consumer(), tx = ba.make_producer()]() mutable {
        for (std::size_t r = 0; r < kTrips; ++r) tx.push(rx.pop());
      });
      seal(ab);
      seal(ba);
      state.ResumeTiming();
      g.release_and_join();
    }
    total_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
    if (sum != sum_below(kTrips)) ++bad;
  }
  finish(state, kRoundTrips, bad);
  if (bad == 0 && state.iterations() > 0) {
    state.counters["ns_per_roundtrip"] =
        total_ns / static_cast<double>(state.iterations() * kRoundTrips);
  }
}

// ---- registration --------------------------------------------------------------------

template <class F>
void add(const std::string& name, F f) {
  benchmark::RegisterBenchmark(name.c_str(), std::move(f))->UseRealTime()->Unit(benchmark::kMillisecond);
}

template <class P>
void add_peer_rows(const std::string& scenario, std::size_t capacity, std::size_t np, std::size_t nc) {
  if (np * nc > 1 && !P::kMultiProducer) return;
  add(scenario + "/" + P::kName, [=](benchmark::State& s) { bm_mpmc<P>(s, capacity, np, nc); });
}

template <class... Peers>
void register_all() {
  using sluice_bench::sluice_peer;
  struct tp {
    std::string name;
    std::size_t capacity, np, nc;
  };
  for (const tp& t : {tp{"spsc_cap16", 16, 1, 1}, tp{"spsc_cap1024", 1024, 1, 1},
                      tp{"mpmc2x2_cap1024", 1024, 2, 2}, tp{"mpmc4x4_cap1024", 1024, 4, 4},
                      tp{"mpmc8x8_cap1024", 1024, 8, 8}}) {
    add(t.name + "/sluice", [=](benchmark::State& s) { bm_mpmc<sluice_peer>(s, t.capacity, t.np, t.nc); });
    add(t.name + "/sluice:bulk64",
        [=](benchmark::State& s) { bm_mpmc<sluice_peer, true>(s, t.capacity, t.np, t.nc); });
    (add_peer_rows<Peers>(t.name, t.capacity, t.np, t.nc), ...);
    // The plain SPSC ring (peers/lamport_spsc.hpp), shown, never a peer.
    add_peer_rows<sluice_bench::lamport_spsc_ref>(t.name, t.capacity, t.np, t.nc);
  }

  add("chain4_cap1024/sluice", [](benchmark::State& s) { bm_chain<sluice_peer>(s, 1024, 4); });
  add("chain4_cap1024/sluice:bulk64", [](benchmark::State& s) { bm_chain<sluice_peer, true>(s, 1024, 4); });
  (add(std::string("chain4_cap1024/") + Peers::kName, [](benchmark::State& s) { bm_chain<Peers>(s, 1024, 4); }),
   ...);
  add("chain4_cap1024/ref_lamport",
      [](benchmark::State& s) { bm_chain<sluice_bench::lamport_spsc_ref>(s, 1024, 4); });

  add("pingpong_cap1/sluice", [](benchmark::State& s) { bm_pingpong<sluice_peer>(s); });
  (add(std::string("pingpong_cap1/") + Peers::kName, [](benchmark::State& s) { bm_pingpong<Peers>(s); }), ...);
  // The floor: a spin-only one-slot hand-off (peers/spin_slot.hpp), shown, never a peer.
  add("pingpong_cap1/ref_spin_slot", [](benchmark::State& s) { bm_pingpong<sluice_bench::spin_slot_ref>(s); });

  // Targets from the channel issue, read by benchmarks/run.sh. "best" is the best blocking
  // peer of the row; the numbers are speedups (throughput sluice/peer; for ns rows
  // peer/sluice, so "best>=3" on ping-pong means at most 1/3 of the best peer's round trip).
  benchmark::AddCustomContext("target.spsc_cap1024", "best>=2 tbb>=10");
  benchmark::AddCustomContext("target.spsc_cap16", "best>=4");
  benchmark::AddCustomContext("target.mpmc2x2_cap1024", "best>=1.5 tbb>=10");
  benchmark::AddCustomContext("target.chain4_cap1024", "best>=2");
  benchmark::AddCustomContext("target.pingpong_cap1", "best>=3");
  benchmark::AddCustomContext("items_per_iteration", std::to_string(kItems));
  benchmark::AddCustomContext("roundtrips_per_iteration", std::to_string(kRoundTrips));
  benchmark::AddCustomContext("warmup_roundtrips_per_iteration", std::to_string(kWarmupTrips));
  benchmark::AddCustomContext("pinned", pin_threads() ? "yes" : "no");
}

}  // namespace

int main(int argc, char** argv) {
  // Defaults first, so the same flags given on the command line win.
  // Repetitions run in random order across all rows, so a burst of load from elsewhere on
  // the machine hits every implementation alike instead of one row; run.sh takes medians.
  std::string defaults[] = {"--benchmark_min_time=0.3", "--benchmark_repetitions=5",
                            "--benchmark_enable_random_interleaving=true",
                            "--benchmark_report_aggregates_only=true"};
  std::vector<char*> args;
  args.push_back(argv[0]);
  for (auto& d : defaults) args.push_back(d.data());
  for (int i = 1; i < argc; ++i) {
    // Ours, not Google Benchmark's: the sluice rows without time-blocked counters.
    if (std::string_view(argv[i]) == "--sluice_timing=off") {
      sluice_bench::g_sluice_timing = false;
      continue;
    }
    args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  register_all<sluice_bench::tbb_peer, sluice_bench::rwcb_peer, sluice_bench::bcq_peer,
               sluice_bench::boost_fiber_peer, sluice_bench::mutex_deque_peer>();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
