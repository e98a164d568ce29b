// tools/demo/run.cpp — `sluice demo`'s two runs: generate -> scrub -> send through an
// unbounded queue, then through a sluice graph with byte budgets, each sampled (memory,
// channel fill, stage clocks) by a ticker while it runs.
#include <malloc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cinttypes>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/args.hpp"
#include "common/progress.hpp"
#include "common/sys.hpp"
#include "demo/demo.hpp"
#include "demo/guard_note.hpp"
#include "demo/memory_rows.hpp"
#include "sluice/channel.hpp"
#include "sluice/detail/ticker.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"
#include "sluice/stage.hpp"

namespace sluice::tool::demo {

// A block of log text moving through the demo's stages.
struct demo_chunk {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
};

}  // namespace sluice::tool::demo

// A channel of demo chunks is budgeted in bytes: what a chunk costs in memory, its bytes
// and what holding it takes besides (its heap block's header and rounding, and its slot
// in the channel's queue: kChunkOverhead, a generous estimate). Counted by its bytes
// alone, 1-byte chunks (--chunk 1) filled a 1 MiB budget with a million of them, and the
// bounded run peaked at +108 MiB against the 2 MiB its note claims.
namespace sluice::tool::demo {
inline constexpr std::size_t kChunkOverhead = 96;
}  // namespace sluice::tool::demo
template <>
struct sluice::channel_traits<sluice::tool::demo::demo_chunk> {
  static constexpr bool weighted = true;
  static std::size_t weigh(const sluice::tool::demo::demo_chunk& c) {
    return c.size + sluice::tool::demo::kChunkOverhead;
  }
};

namespace sluice::tool::demo {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

std::uint64_t ns_between(clock::time_point a, clock::time_point b) {
  return static_cast<std::uint64_t>(std::max<std::int64_t>(0, std::chrono::duration_cast<nanoseconds>(b - a).count()));
}

// ---- the work -------------------------------------------------------------------

// ~1 MiB of varied log lines; chunks are cut from it round-robin (a fast source).
}  // namespace

std::string make_log_pattern() {
  std::mt19937_64 rng(20240601);
  static const char* kLevels[] = {"INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"};
  static const char* kMethods[] = {"GET", "GET", "POST", "PUT", "DELETE"};
  static const char* kPaths[] = {"/v1/items", "/v1/orders", "/v1/users", "/healthz", "/v2/search"};
  std::string out;
  out.reserve((1U << 20) + 256);
  char line[256];
  std::uint64_t ms = 0;
  while (out.size() < (1U << 20)) {
    ms += rng() % 7;
    const int n = std::snprintf(
        line, sizeof line,
        "2024-06-01T12:%02u:%02u.%03uZ %s api-%u %s %s/%u status=%u bytes=%u user=u%07u latency_ms=%u\n",
        static_cast<unsigned>((ms / 60000) % 60), static_cast<unsigned>((ms / 1000) % 60),
        static_cast<unsigned>(ms % 1000), kLevels[rng() % 6], static_cast<unsigned>(rng() % 16),
        kMethods[rng() % 5], kPaths[rng() % 5], static_cast<unsigned>(rng() % 100000),
        rng() % 10 == 0 ? 500U : 200U, static_cast<unsigned>(rng() % 20000),
        static_cast<unsigned>(rng() % 10000000), static_cast<unsigned>(rng() % 250));
    out.append(line, static_cast<std::size_t>(n));
  }
  return out;
}

namespace {

// Masks user ids ("user=u1234567" -> "user=u*******"): a cheap pass over the bytes.
void scrub(demo_chunk& c) {
  static constexpr char kNeedle[] = "user=u";
  char* p = c.data.get();
  char* const end = p + c.size;
  while (p < end) {
    void* hit = ::memmem(p, static_cast<std::size_t>(end - p), kNeedle, sizeof kNeedle - 1);
    if (hit == nullptr) break;
    p = static_cast<char*>(hit) + (sizeof kNeedle - 1);
    while (p < end && *p >= '0' && *p <= '9') *p++ = '*';
  }
}

// ---- the naive queue ------------------------------------------------------------

// What a first version looks like: a deque behind a mutex. push never waits, so
// nothing tells the producer to slow down: the queue holds whatever the consumer has
// not taken yet.
class unbounded_queue {
 public:
  bool push(demo_chunk c) {
    std::lock_guard lk(mu_);
    if (cancelled_) return false;
    // relaxed: a statistic for the progress display.
    const std::uint64_t now = bytes_.fetch_add(c.size, std::memory_order_relaxed) + c.size;
    peak_ = std::max(peak_, now);
    q_.push_back(std::move(c));
    cv_.notify_one();
    return true;
  }
  std::optional<demo_chunk> pop() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return !q_.empty() || closed_ || cancelled_; });
    if (cancelled_ || q_.empty()) return std::nullopt;
    demo_chunk c = std::move(q_.front());
    q_.pop_front();
    bytes_.fetch_sub(c.size, std::memory_order_relaxed);  // relaxed: statistic
    return c;
  }
  void close() {
    std::lock_guard lk(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  void cancel() {
    std::deque<demo_chunk> drop;
    {
      std::lock_guard lk(mu_);
      cancelled_ = true;
      drop.swap(q_);
      bytes_.store(0, std::memory_order_relaxed);  // relaxed: statistic
      cv_.notify_all();
    }
  }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  // The most bytes it held at once.
  [[nodiscard]] std::uint64_t peak() {
    std::lock_guard lk(mu_);
    return peak_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<demo_chunk> q_;
  bool closed_ = false;
  bool cancelled_ = false;
  std::atomic<std::uint64_t> bytes_{0};
  std::uint64_t peak_ = 0;  // guarded by mu_
};

// ---- observation ------------------------------------------------------------------

struct stage_clock {
  std::string name;
  std::atomic<std::uint64_t> busy_ns{0};
  std::atomic<std::uint64_t> backpressured_ns{0};
  std::atomic<std::uint64_t> starved_ns{0};
  std::atomic<std::uint64_t> items{0};
  // relaxed everywhere: monotonic statistics, read approximately while running and
  // exactly after the stage threads are joined (the join is the edge).
  void add(std::atomic<std::uint64_t>& f, std::uint64_t v) { f.fetch_add(v, std::memory_order_relaxed); }
};

struct channel_view {
  std::string name;
  std::uint64_t size = 0;      // bytes buffered
  std::uint64_t capacity = 0;  // 0: no limit
};

// What every run exposes to the sampler: the channels' fill, each stage's cumulative
// busy / backpressured / starved nanoseconds, and the bytes sent.
struct run_probe {
  std::function<void(std::vector<channel_view>&, std::vector<std::array<std::uint64_t, 3>>&)> observe;
  std::atomic<std::uint64_t>* sent = nullptr;
};

std::string bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int full = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(static_cast<std::size_t>(full), '#') + std::string(static_cast<std::size_t>(width - full), '.') + "]";
}

// Samples memory, progress and stage clocks every cfg.sample_every until stopped (the
// first sample at once, on the constructing thread, the rest on a ticker); keeps the
// peak RSS (the generator also feeds it between samples).
class sampler {
 public:
  sampler(const demo_config& cfg, run_result& r, run_probe probe, progress& prog, std::uint64_t baseline,
          std::atomic<std::uint64_t>& peak_rss)
      : cfg_(cfg), r_(r), probe_(std::move(probe)), prog_(prog), baseline_(baseline), peak_(peak_rss) {
    start_ = clock::now();
    take(false);
    ticker_ = sluice::detail::tick_every(cfg_.sample_every, [this] { take(false); }, "demo-sampler");
  }
  sampler(const sampler&) = delete;
  sampler& operator=(const sampler&) = delete;
  ~sampler() { stop(); }

  void stop() { ticker_.stop(); }
  [[nodiscard]] clock::time_point start() const { return start_; }

  // One final sample after the stages are joined (exact counters).
  void take_final() { take(true); }

 private:
  void take(bool final) {
    const auto now = clock::now();
    sample s;
    s.t = std::chrono::duration<double>(now - start_).count();
    const std::uint64_t rss = rss_bytes();
    s.rss = static_cast<double>(rss) - static_cast<double>(baseline_);
    // relaxed: the peak is a max over plain observations; read after the join.
    std::uint64_t prev = peak_.load(std::memory_order_relaxed);
    while (rss > prev && !peak_.compare_exchange_weak(prev, rss, std::memory_order_relaxed)) {
    }
    s.sent = static_cast<double>(probe_.sent->load(std::memory_order_relaxed));  // relaxed: statistic
    std::vector<channel_view> chans;
    probe_.observe(chans, s.stage_ns);
    for (const auto& c : chans) s.queued.push_back(static_cast<double>(c.size));
    std::lock_guard lk(samples_mu_);
    if (!final) show(s, chans, now);
    keeper_.add(std::move(s), final);
  }

  void show(const sample& s, const std::vector<channel_view>& chans, clock::time_point now) {
    // Rate over the last ~second of samples.
    double rate = 0;
    for (auto it = r_.samples.rbegin(); it != r_.samples.rend(); ++it) {
      if (s.t - it->t >= 1.0 || std::next(it) == r_.samples.rend()) {
        if (s.t > it->t) rate = (s.sent - it->sent) / (s.t - it->t);
        break;
      }
    }
    (void)now;
    std::string text = r_.label + "  sent " + format_size(s.sent) + " / " + format_size(static_cast<double>(cfg_.bytes)) +
                       "  " + format_size(rate) + "/s  memory +" + format_size(std::max(0.0, s.rss)) + "  (" +
                       fmt("%.1f s", s.t) + ")";
    for (const auto& c : chans) {
      text += "\n  " + c.name + "  ";
      if (c.capacity == 0) {
        const double frac = static_cast<double>(c.size) / static_cast<double>(std::max<std::uint64_t>(1, cfg_.memory_guard));
        text += bar(frac, 30) + " " + format_size(static_cast<double>(c.size)) + " queued (no limit; guard " +
                format_size(static_cast<double>(cfg_.memory_guard)) + ")";
      } else {
        const double frac = static_cast<double>(c.size) / static_cast<double>(c.capacity);
        text += bar(frac, 30) + " " + fmt("%3.0f%%", 100.0 * frac) + " of " + format_size(static_cast<double>(c.capacity));
      }
    }
    prog_.update(text);
  }

  const demo_config& cfg_;
  run_result& r_;
  run_probe probe_;
  progress& prog_;
  std::uint64_t baseline_;
  std::atomic<std::uint64_t>& peak_;
  clock::time_point start_;
  std::mutex samples_mu_;
  sample_keeper<sample> keeper_{r_.samples};  // r_.samples, bounded
  sluice::detail::ticker ticker_;  // started last, in the constructor's body
};

// The three stage bodies, shared by both runs. Queue adapters:
//   push(demo_chunk) -> bool (false: the run is over), pop() -> optional<demo_chunk>.
struct demo_stages {
  const demo_config& cfg;
  const std::string& pattern;
  std::vector<stage_clock>& clocks;  // generate, scrub, send
  std::atomic<std::uint64_t>& generated;
  std::atomic<std::uint64_t>& sent;
  std::atomic<std::uint64_t>& checksum;
  std::atomic<std::uint64_t>& peak_rss;
  std::uint64_t baseline;
  std::atomic<bool>& guard_hit;
  std::atomic<bool>& out_of_memory;  // set with guard_hit when a chunk could not be had
  bool check_guard;
  const std::atomic<bool>* stop;  // ^C: the sink's paced wait ends (run_stop::flag)

  template <class Push>
  void generate(Push&& push) {
    stage_clock& me = clocks[0];
    std::size_t offset = 0;
    std::uint64_t done = 0;
    std::uint64_t n_chunks = 0;
    while (done < cfg.bytes) {
      const auto t0 = clock::now();
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(cfg.chunk, cfg.bytes - done));
      char* bytes = new (std::nothrow) char[n];
      if (bytes == nullptr) {
        // Out of memory (a ulimit, or a guard above what the machine can give): the run
        // stops here as it does at its guard, instead of dying of std::bad_alloc, and says
        // so (it said the guard was hit, with a note on a guard never reached).
        guard_hit.store(true, std::memory_order_relaxed);  // relaxed: read after the join
        out_of_memory.store(true, std::memory_order_relaxed);
        break;
      }
      demo_chunk c{std::unique_ptr<char[]>(bytes), n};
      std::size_t filled = 0;
      while (filled < n) {
        const std::size_t take = std::min(n - filled, pattern.size() - offset);
        std::memcpy(c.data.get() + filled, pattern.data() + offset, take);
        filled += take;
        offset = (offset + take) % pattern.size();
      }
      if (check_guard && (++n_chunks % 8) == 0) {
        const std::uint64_t rss = rss_bytes();
        // relaxed: a max over observations, read after the join.
        std::uint64_t prev = peak_rss.load(std::memory_order_relaxed);
        while (rss > prev && !peak_rss.compare_exchange_weak(prev, rss, std::memory_order_relaxed)) {
        }
        if (rss > baseline && rss - baseline >= cfg.memory_guard) {
          guard_hit.store(true, std::memory_order_relaxed);  // relaxed: read after the join
          break;
        }
      }
      const auto t1 = clock::now();
      me.add(me.busy_ns, ns_between(t0, t1));
      if (!push(std::move(c))) break;
      const auto t2 = clock::now();
      me.add(me.backpressured_ns, ns_between(t1, t2));
      me.add(me.items, 1);
      done += n;
      generated.store(done, std::memory_order_relaxed);  // relaxed: statistic
    }
  }

  template <class Pop, class Push>
  void scrub_stage(Pop&& pop, Push&& push) {
    stage_clock& me = clocks[1];
    for (;;) {
      const auto t0 = clock::now();
      std::optional<demo_chunk> c = pop();
      const auto t1 = clock::now();
      me.add(me.starved_ns, ns_between(t0, t1));
      if (!c) return;
      scrub(*c);
      const auto t2 = clock::now();
      me.add(me.busy_ns, ns_between(t1, t2));
      if (!push(std::move(*c))) return;
      me.add(me.backpressured_ns, ns_between(t2, clock::now()));
      me.add(me.items, 1);
    }
  }

  template <class Pop>
  void send(Pop&& pop) {
    stage_clock& me = clocks[2];
    // Burst: one chunk or 20 ms of sending, whichever is more (a socket's buffer), so
    // that oversleeping one short pause is made up by the next.
    token_bucket bucket(cfg.rate, std::max<std::uint64_t>(cfg.chunk, cfg.rate / 50));
    std::uint64_t sum = 0;
    std::uint64_t total = 0;
    for (;;) {
      const auto t0 = clock::now();
      std::optional<demo_chunk> c = pop();
      const auto t1 = clock::now();
      me.add(me.starved_ns, ns_between(t0, t1));
      if (!c) break;
      if (!bucket.acquire(c->size, stop)) break;  // the "socket" accepts rate bytes per second
      for (std::size_t i = 0; i < c->size; i += 64) sum += static_cast<unsigned char>(c->data[i]);
      total += c->size;
      sent.store(total, std::memory_order_relaxed);  // relaxed: statistic
      me.add(me.busy_ns, ns_between(t1, clock::now()));
      me.add(me.items, 1);
    }
    checksum.store(sum, std::memory_order_relaxed);  // relaxed: read after the join
  }
};

metrics::snapshot snapshot_of(const run_result& r, const std::vector<stage_clock>& clocks) {
  metrics::snapshot s;
  s.elapsed = std::chrono::duration_cast<nanoseconds>(std::chrono::duration<double>(r.elapsed_s));
  for (const auto& c : clocks) {
    metrics::stage_snapshot st;
    st.name = c.name;
    st.items_out = c.items.load(std::memory_order_relaxed);
    st.busy_ns = c.busy_ns.load(std::memory_order_relaxed);
    st.backpressured_ns = c.backpressured_ns.load(std::memory_order_relaxed);
    st.starved_ns = c.starved_ns.load(std::memory_order_relaxed);
    st.state = "done";
    s.stages.push_back(st);
  }
  for (std::size_t i = 0; i + 1 < clocks.size(); ++i) {
    metrics::channel_snapshot ch;
    ch.from = clocks[i].name;
    ch.to = clocks[i + 1].name;
    ch.name = ch.from + " -> " + ch.to;
    s.channels.push_back(ch);
  }
  return s;
}

std::vector<stage_clock> make_clocks() {
  std::vector<stage_clock> v(3);
  v[0].name = "generate";
  v[1].name = "scrub";
  v[2].name = "send";
  return v;
}

}  // namespace

run_result run_unbounded(const run_env& env) {
  run_result r;
  r.label = "unbounded queue";
  r.kind = "unbounded";
  r.stage_names = {"generate", "scrub", "send"};
  r.channel_names = {"generate -> scrub", "scrub -> send"};
  return_free_memory();
  const std::uint64_t baseline = rss_bytes();
  std::atomic<std::uint64_t> peak{baseline}, generated{0}, sent{0}, checksum{0};
  std::atomic<bool> guard{false};
  std::atomic<bool> oom{false};
  std::vector<stage_clock> clocks = make_clocks();
  unbounded_queue q1, q2;
  demo_stages st{env.cfg, env.pattern, clocks, generated, sent, checksum, peak, baseline, guard, oom, true, &env.stop.flag()};
  run_probe probe{[&](std::vector<channel_view>& ch, std::vector<std::array<std::uint64_t, 3>>& times) {
                    ch = {{"generate -> scrub", q1.bytes(), 0}, {"scrub -> send   ", q2.bytes(), 0}};
                    for (auto& c : clocks) {
                      // relaxed: statistics.
                      times.push_back({c.busy_ns.load(std::memory_order_relaxed),
                                       c.backpressured_ns.load(std::memory_order_relaxed),
                                       c.starved_ns.load(std::memory_order_relaxed)});
                    }
                  },
                  &sent};
  const auto t0 = clock::now();
  {
    sampler smp(env.cfg, r, probe, env.prog, baseline, peak);
    // ^C: both queues refuse pushes and end pops, so the three threads return.
    env.stop.arm([&] {
      q1.cancel();
      q2.cancel();
    });
    std::thread threads[3];
    try {
      threads[0] = start_thread("generates the demo's input", [&] {
        st.generate([&](demo_chunk c) { return q1.push(std::move(c)); });
        if (guard.load(std::memory_order_relaxed)) {
          // The guard stops the run: drop what is queued (it is what would keep growing).
          q1.cancel();
          q2.cancel();
        }
        q1.close();
      });
      threads[1] = start_thread("runs the demo's scrub stage", [&] {
        st.scrub_stage([&] { return q1.pop(); }, [&](demo_chunk c) { return q2.push(std::move(c)); });
        q2.close();
      });
      threads[2] = start_thread("runs the demo's sink", [&] { st.send([&] { return q2.pop(); }); });
    } catch (const std::system_error&) {
      // A thread limit: the ones started end once both queues refuse (a started
      // std::thread left unjoined would end the process).
      q1.cancel();
      q2.cancel();
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
      env.stop.disarm();
      throw;
    }
    for (auto& t : threads) t.join();
    env.stop.disarm();
    r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
    smp.stop();
    smp.take_final();
  }
  r.generated = generated.load();
  r.sent = sent.load();
  r.checksum = checksum.load();
  r.guard_hit = guard.load();
  r.out_of_memory = oom.load();
  r.completed = !r.guard_hit && r.sent == env.cfg.bytes;
  r.interrupted = !r.completed && !r.guard_hit && env.stop.stopped();
  r.peak_rss = static_cast<double>(peak.load()) - static_cast<double>(baseline);
  // The runtime's rule (a busy stage its neighbours wait on) needs backpressure to see a
  // slow consumer, and an unbounded queue never blocks its producer: it named the source,
  // whose consumer waited for it at first, while the sink's input piled up. Here the
  // bottleneck is the stage whose input queue held the most, once that is more than a
  // few chunks; the rule otherwise.
  const std::uint64_t piled1 = q1.peak(), piled2 = q2.peak();
  if (std::max(piled1, piled2) > 4 * static_cast<std::uint64_t>(env.cfg.chunk)) {
    r.bottleneck = piled2 >= piled1 ? clocks[2].name : clocks[1].name;
  } else {
    r.bottleneck = metrics::find_bottleneck(snapshot_of(r, clocks));
  }
  if (r.out_of_memory) {
    r.note = oom_note(env.cfg.chunk, env.cfg.memory_guard, r.generated, r.sent);
  } else if (r.guard_hit) {
    r.note = guard_note(env.cfg.bytes, env.cfg.rate, env.cfg.memory_guard, r.generated, r.sent, r.elapsed_s);
  }
  return r;
}

// The same three stages as a sluice graph: each stage's output channel has a byte
// budget (demo_chunk is weighted), so a full channel blocks its producer.
run_result run_bounded(const run_env& env) {
  run_result r;
  r.label = "sluice (bounded)";
  r.kind = "bounded";
  r.budget = 2.0 * static_cast<double>(env.cfg.budget);
  return_free_memory();
  const std::uint64_t baseline = rss_bytes();
  std::atomic<std::uint64_t> peak{baseline}, generated{0}, sent{0}, checksum{0};
  std::atomic<bool> guard{false};
  std::atomic<bool> oom{false};
  std::vector<stage_clock> unused = make_clocks();  // the graph keeps its own clocks
  demo_stages st{env.cfg, env.pattern, unused, generated, sent, checksum, peak, baseline, guard, oom, false, &env.stop.flag()};

  graph g;
  stage_options budget;
  budget.capacity = static_cast<std::size_t>(env.cfg.budget);  // bytes: demo_chunk is weighted
  auto gen = g.source<demo_chunk>(
      "generate", [&](sender<demo_chunk>& out) { st.generate([&](demo_chunk c) { return out.push(std::move(c)); }); },
      budget);
  auto clean = g.map("scrub", gen, [](demo_chunk c) {
    scrub(c);
    return c;
  }, budget);
  token_bucket bucket(env.cfg.rate, std::max<std::uint64_t>(env.cfg.chunk, env.cfg.rate / 50));
  std::uint64_t sum = 0, total = 0;
  g.sink("send", clean, [&](demo_chunk c) {
    // The "socket" accepts rate bytes per second. ^C ends the wait; the graph is being
    // cancelled then, and the chunk is not sent.
    if (!bucket.acquire(c.size, &env.stop.flag())) return;
    for (std::size_t i = 0; i < c.size; i += 64) sum += static_cast<unsigned char>(c.data[i]);
    total += c.size;
    sent.store(total, std::memory_order_relaxed);  // relaxed: statistic
  });

  run_probe probe{[&](std::vector<channel_view>& ch, std::vector<std::array<std::uint64_t, 3>>& times) {
                    const metrics::snapshot snap = g.snapshot();
                    for (const auto& c : snap.channels) ch.push_back({c.name, c.stats.size, c.stats.capacity});
                    for (const auto& s : snap.stages) times.push_back({s.busy_ns, s.backpressured_ns, s.starved_ns});
                  },
                  &sent};
  const auto t0 = clock::now();
  report rep;
  {
    sampler smp(env.cfg, r, probe, env.prog, baseline, peak);
    env.stop.arm([&g] { g.cancel(); });  // ^C cancels the graph (before or during its run)
    try {
      rep = g.run();
    } catch (const sluice::cancelled&) {
      rep = g.last_report();  // ^C: what it did before the cancel
    }
    env.stop.disarm();
    r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
    smp.stop();
    smp.take_final();
  }
  for (const auto& s : rep.metrics.stages) r.stage_names.push_back(s.name);
  for (const auto& c : rep.metrics.channels) r.channel_names.push_back(c.name);
  r.generated = generated.load();
  r.sent = total;
  r.checksum = sum;
  r.out_of_memory = oom.load();
  if (r.out_of_memory) r.note = oom_note(env.cfg.chunk, 0, r.generated, r.sent);
  r.completed = r.sent == env.cfg.bytes && rep.balanced();
  r.interrupted = !r.completed && env.stop.stopped();
  r.peak_rss = static_cast<double>(peak.load()) - static_cast<double>(baseline);
  r.bottleneck = rep.metrics.bottleneck;
  return r;
}

}  // namespace sluice::tool::demo
