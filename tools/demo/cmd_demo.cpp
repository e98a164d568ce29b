// tools/cmd_demo.cpp — `sluice demo`: the backpressure lesson, measured.
//
// A fast source of generated log lines feeds a sink held to a slow rate (a token
// bucket, like a network socket), through a cheap middle stage:
//
//   generate --> scrub --> send (paced to --rate)
//
// The same three stages run twice. First joined by a naive unbounded queue (a
// std::deque behind a mutex that never says "I'm full"): the source races ahead and
// memory climbs with everything it has produced and the sink has not sent yet. Then as
// a sluice graph whose channels have byte budgets: a full channel blocks the source, so
// memory stays flat at about the budgets while the time is the same (the sink sets it).
//
// Memory is the resident set (RSS, /proc/self/statm) above a baseline taken just before
// each run; between runs the freed heap is handed back to the OS (malloc_trim), so the
// second run does not inherit the first one's pages.
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
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "progress.hpp"
#include "sluice/channel.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"
#include "sluice/stage.hpp"
#include "sys.hpp"

namespace sluice::tool {

// A block of log text moving through the demo's stages.
struct demo_chunk {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
};

}  // namespace sluice::tool

// A channel of demo chunks is budgeted in bytes.
template <>
struct sluice::channel_traits<sluice::tool::demo_chunk> {
  static constexpr bool weighted = true;
  static std::size_t weigh(const sluice::tool::demo_chunk& c) { return std::max<std::size_t>(1, c.size); }
};

namespace sluice::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

constexpr double kMiB = 1024.0 * 1024.0;

struct demo_config {
  std::uint64_t bytes = 512ULL << 20;
  std::uint64_t rate = 100ULL << 20;
  std::uint64_t memory_guard = 2ULL << 30;
  std::uint64_t budget = 1ULL << 20;  // per channel
  std::uint64_t chunk = 64ULL << 10;
  nanoseconds sample_every = std::chrono::milliseconds(20);
  std::string report;
  std::string only = "both";
  bool json = false;
};

std::uint64_t ns_between(clock::time_point a, clock::time_point b) {
  return static_cast<std::uint64_t>(std::max<std::int64_t>(0, std::chrono::duration_cast<nanoseconds>(b - a).count()));
}

// ---- the work -------------------------------------------------------------------

// ~1 MiB of varied log lines; chunks are cut from it round-robin (a fast source).
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
    bytes_.fetch_add(c.size, std::memory_order_relaxed);
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

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<demo_chunk> q_;
  bool closed_ = false;
  bool cancelled_ = false;
  std::atomic<std::uint64_t> bytes_{0};
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

struct sample {
  double t = 0;        // seconds since the run started
  double rss = 0;      // bytes above the baseline
  double sent = 0;     // bytes the sink has sent
  std::vector<double> queued;  // per channel, bytes
  std::vector<std::array<std::uint64_t, 3>> stage_ns;  // per stage: busy, backpressured, starved
};

struct run_result {
  std::string label;
  std::string kind;  // "unbounded" | "bounded"
  bool completed = false;
  bool guard_hit = false;
  double elapsed_s = 0;
  std::uint64_t generated = 0;
  std::uint64_t sent = 0;
  double peak_rss = 0;
  double budget = 0;  // 0: none
  std::vector<std::string> stage_names;
  std::vector<std::string> channel_names;
  std::vector<sample> samples;
  std::optional<std::string> bottleneck;
  std::uint64_t checksum = 0;
  std::string note;
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

std::string fmt(const char* f, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}

// Samples memory, progress and stage clocks every cfg.sample_every until stopped;
// keeps the peak RSS (the generator also feeds it between samples).
class sampler {
 public:
  sampler(const demo_config& cfg, run_result& r, run_probe probe, progress& prog, std::uint64_t baseline,
          std::atomic<std::uint64_t>& peak_rss)
      : cfg_(cfg), r_(r), probe_(std::move(probe)), prog_(prog), baseline_(baseline), peak_(peak_rss) {
    start_ = clock::now();
    thread_ = std::thread([this] { loop(); });
  }
  sampler(const sampler&) = delete;
  sampler& operator=(const sampler&) = delete;
  ~sampler() { stop(); }

  void stop() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] clock::time_point start() const { return start_; }

  // One final sample after the stages are joined (exact counters).
  void take_final() { take(true); }

 private:
  void loop() {
    auto next = clock::now();
    for (;;) {
      take(false);
      next += cfg_.sample_every;
      std::unique_lock lk(mu_);
      if (cv_.wait_until(lk, next, [&] { return stop_; })) return;
    }
  }

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
    r_.samples.push_back(s);
    if (!final) show(s, chans, now);
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
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::mutex samples_mu_;
  std::thread thread_;
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
  bool check_guard;

  template <class Push>
  void generate(Push&& push) {
    stage_clock& me = clocks[0];
    std::size_t offset = 0;
    std::uint64_t done = 0;
    std::uint64_t n_chunks = 0;
    while (done < cfg.bytes) {
      const auto t0 = clock::now();
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(cfg.chunk, cfg.bytes - done));
      demo_chunk c{std::unique_ptr<char[]>(new char[n]), n};
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
      bucket.acquire(c->size);  // the "socket" accepts rate bytes per second
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

struct run_env {
  const demo_config& cfg;
  const std::string& pattern;
  progress& prog;
};

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
  std::vector<stage_clock> clocks = make_clocks();
  unbounded_queue q1, q2;
  demo_stages st{env.cfg, env.pattern, clocks, generated, sent, checksum, peak, baseline, guard, true};
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
    std::thread a([&] {
      st.generate([&](demo_chunk c) { return q1.push(std::move(c)); });
      if (guard.load(std::memory_order_relaxed)) {
        // The guard stops the run: drop what is queued (it is what would keep growing).
        q1.cancel();
        q2.cancel();
      }
      q1.close();
    });
    std::thread b([&] {
      st.scrub_stage([&] { return q1.pop(); }, [&](demo_chunk c) { return q2.push(std::move(c)); });
      q2.close();
    });
    std::thread c([&] { st.send([&] { return q2.pop(); }); });
    a.join();
    b.join();
    c.join();
    r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
    smp.stop();
    smp.take_final();
  }
  r.generated = generated.load();
  r.sent = sent.load();
  r.checksum = checksum.load();
  r.guard_hit = guard.load();
  r.completed = !r.guard_hit && r.sent == env.cfg.bytes;
  r.peak_rss = static_cast<double>(peak.load()) - static_cast<double>(baseline);
  r.bottleneck = metrics::find_bottleneck(snapshot_of(r, clocks));
  if (r.guard_hit) {
    const double t = r.elapsed_s > 0 ? r.elapsed_s : 1e-9;
    const double growth = (static_cast<double>(r.generated) - static_cast<double>(r.sent)) / t;
    const double would = static_cast<double>(env.cfg.bytes) -
                         static_cast<double>(env.cfg.rate) * static_cast<double>(env.cfg.bytes) /
                             std::max(1.0, static_cast<double>(r.generated) / t);
    r.note = "stopped by the memory guard (" + format_size(static_cast<double>(env.cfg.memory_guard)) + ") after " +
             format_size(static_cast<double>(r.generated)) + " generated and " + format_size(static_cast<double>(r.sent)) +
             " sent: memory was growing by " + format_size(growth) + "/s and would have kept growing, to about " +
             format_size(std::max(would, static_cast<double>(env.cfg.memory_guard))) + " for this input";
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
  std::vector<stage_clock> unused = make_clocks();  // the graph keeps its own clocks
  demo_stages st{env.cfg, env.pattern, unused, generated, sent, checksum, peak, baseline, guard, false};

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
    bucket.acquire(c.size);  // the "socket" accepts rate bytes per second
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
    rep = g.run();
    r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
    smp.stop();
    smp.take_final();
  }
  for (const auto& s : rep.metrics.stages) r.stage_names.push_back(s.name);
  for (const auto& c : rep.metrics.channels) r.channel_names.push_back(c.name);
  r.generated = generated.load();
  r.sent = total;
  r.checksum = sum;
  r.completed = r.sent == env.cfg.bytes && rep.balanced();
  r.peak_rss = static_cast<double>(peak.load()) - static_cast<double>(baseline);
  r.bottleneck = rep.metrics.bottleneck;
  return r;
}

// ---- output -------------------------------------------------------------------

double throughput(const run_result& r) { return r.elapsed_s > 0 ? static_cast<double>(r.sent) / r.elapsed_s : 0; }

// RSS above baseline at time t (the last sample at or before t).
double rss_at(const run_result& r, double t) {
  double v = 0;
  for (const auto& s : r.samples) {
    if (s.t > t) break;
    v = s.rss;
  }
  return std::max(0.0, v);
}

void print_table(const demo_config& cfg, const std::vector<run_result>& runs, double rss_after_trim) {
  std::printf("\nsluice demo: %s of generated log lines, generate -> scrub -> send, sink held to %s/s\n\n",
              format_size(static_cast<double>(cfg.bytes)).c_str(), format_size(static_cast<double>(cfg.rate)).c_str());
  std::printf("  %-22s", "");
  for (const auto& r : runs) std::printf("%-24s", r.label.c_str());
  std::printf("\n");
  auto row = [&](const char* name, const std::function<std::string(const run_result&)>& f) {
    std::printf("  %-22s", name);
    for (const auto& r : runs) std::printf("%-24s", f(r).c_str());
    std::printf("\n");
  };
  row("peak memory", [](const run_result& r) { return "+" + format_size(std::max(0.0, r.peak_rss)); });
  row("channel budgets", [&](const run_result& r) {
    return r.budget > 0 ? format_size(r.budget) + " (2 x " + format_size(static_cast<double>(cfg.budget)) + ")"
                        : std::string("none");
  });
  row("time", [](const run_result& r) { return fmt("%.2f s", r.elapsed_s); });
  row("sent", [](const run_result& r) { return format_size(static_cast<double>(r.sent)); });
  row("throughput", [](const run_result& r) { return format_size(throughput(r)) + "/s"; });
  row("outcome", [](const run_result& r) {
    return r.guard_hit ? std::string("memory guard hit") : r.completed ? std::string("completed") : std::string("incomplete");
  });
  row("bottleneck", [](const run_result& r) { return r.bottleneck.value_or("-"); });

  double t_max = 0;
  for (const auto& r : runs) t_max = std::max(t_max, r.elapsed_s);
  if (t_max > 0) {
    std::printf("\n  memory over time (RSS above each run's baseline)\n  %-10s", "t");
    for (const auto& r : runs) std::printf("%-24s", r.label.c_str());
    std::printf("\n");
    for (int i = 0; i <= 10; ++i) {
      const double t = t_max * i / 10.0;
      std::printf("  %-10s", fmt("%.2f s", t).c_str());
      for (const auto& r : runs) {
        if (t > r.elapsed_s + 1e-9) {
          std::printf("%-24s", "(finished)");
        } else {
          const double v = rss_at(r, t);
          double peak = 1;
          for (const auto& q : runs) peak = std::max(peak, q.peak_rss);
          const int w = static_cast<int>(12.0 * v / peak + 0.5);
          std::printf("%-24s", (fmt("%8.1f MiB ", v / kMiB) + std::string(static_cast<std::size_t>(w), '|')).c_str());
        }
      }
      std::printf("\n");
    }
  }
  for (const auto& r : runs) {
    if (!r.note.empty()) std::printf("\n  %s: %s\n", r.label.c_str(), r.note.c_str());
  }
  if (runs.size() == 2 && runs[0].peak_rss > 0 && runs[1].peak_rss > 0) {
    std::printf("\n  Same sink, same time: the unbounded queue held %.0fx the memory, because nothing told\n"
                "  the source that the sink was slow. The bounded channels blocked it instead.\n",
                runs[0].peak_rss / std::max(1.0, runs[1].peak_rss));
  }
  for (const auto& r : runs) {
    if (r.budget <= 0) continue;
    std::printf("\n  The bounded run's memory is its channel budgets plus what each stage holds between\n"
                "  taking a batch from its input and handing it on (at most about one channel's worth).\n");
  }
  std::printf("\n  How memory is measured: resident set size (/proc/self/statm) above a baseline taken\n"
              "  just before each run, sampled every %s (the unbounded run's source also checks it\n"
              "  every 512 KiB, for the guard); between runs the freed heap went back to the OS with\n"
              "  malloc_trim(0)%s.\n",
              format_duration(cfg.sample_every).c_str(),
              rss_after_trim >= 0 ? (" (RSS after the trim: " + format_size(rss_after_trim) + ")").c_str() : "");
}

void print_json(const demo_config& cfg, const std::vector<run_result>& runs) {
  std::string o = "{\"bytes\":" + std::to_string(cfg.bytes) + ",\"rate_bytes_per_s\":" + std::to_string(cfg.rate) +
                  ",\"memory_guard_bytes\":" + std::to_string(cfg.memory_guard) +
                  ",\"channel_budget_bytes\":" + std::to_string(cfg.budget) + ",\"chunk_bytes\":" + std::to_string(cfg.chunk) +
                  ",\"runs\":[";
  bool first = true;
  for (const auto& r : runs) {
    if (!first) o += ',';
    first = false;
    o += "{\"name\":" + json_escape(r.kind) + ",\"label\":" + json_escape(r.label) +
         ",\"completed\":" + (r.completed ? "true" : "false") + ",\"guard_hit\":" + (r.guard_hit ? "true" : "false") +
         ",\"elapsed_s\":" + fmt("%.6f", r.elapsed_s) + ",\"generated_bytes\":" + std::to_string(r.generated) +
         ",\"sent_bytes\":" + std::to_string(r.sent) + ",\"throughput_bytes_per_s\":" + fmt("%.0f", throughput(r)) +
         ",\"peak_rss_delta_bytes\":" + fmt("%.0f", r.peak_rss) + ",\"budget_bytes\":" +
         (r.budget > 0 ? fmt("%.0f", r.budget) : std::string("null")) +
         ",\"bottleneck\":" + (r.bottleneck ? json_escape(*r.bottleneck) : std::string("null")) +
         ",\"checksum\":" + std::to_string(r.checksum) + ",\"memory_samples\":[";
    const std::size_t step = std::max<std::size_t>(1, r.samples.size() / 100);
    for (std::size_t i = 0; i < r.samples.size(); i += step) {
      if (i != 0) o += ',';
      o += '[';
      o += fmt("%.4f", r.samples[i].t);
      o += ',';
      o += fmt("%.0f", r.samples[i].rss);
      o += ']';
    }
    o += "]}";
  }
  o += "]}\n";
  std::fputs(o.c_str(), stdout);
}

// Self-contained HTML: inline SVG, no external assets.
bool write_report(const std::string& path, const demo_config& cfg, const std::vector<run_result>& runs) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return false;
  static const char* kColors[] = {"#d62728", "#1f77b4"};
  double t_max = 0.001, m_max = 1;
  for (const auto& r : runs) {
    t_max = std::max(t_max, r.elapsed_s);
    m_max = std::max(m_max, r.peak_rss);
    for (const auto& s : r.samples) m_max = std::max(m_max, s.rss);
    m_max = std::max(m_max, r.budget);
  }
  m_max *= 1.1;
  const double W = 760, H = 320, L = 70, R = 20, T = 20, B = 40;
  auto X = [&](double t) { return L + (W - L - R) * t / t_max; };
  auto Y = [&](double m) { return T + (H - T - B) * (1.0 - std::max(0.0, m) / m_max); };

  f << "<!doctype html><html><head><meta charset=\"utf-8\"><title>sluice demo</title><style>"
       "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
       "td,th{padding:4px 12px;border-bottom:1px solid #ddd;text-align:left}svg{background:#fafafa}"
       ".axis{stroke:#888;stroke-width:1}.grid{stroke:#e4e4e4}text{font:11px system-ui,sans-serif;fill:#444}"
       "</style></head><body>\n";
  f << "<h1>sluice demo: backpressure, measured</h1>\n<p>" << html_escape(format_size(static_cast<double>(cfg.bytes)))
    << " of generated log lines through <code>generate &rarr; scrub &rarr; send</code>, the sink held to "
    << html_escape(format_size(static_cast<double>(cfg.rate))) << "/s. Memory is RSS above each run's baseline.</p>\n";
  f << "<table><tr><th></th>";
  for (const auto& r : runs) f << "<th>" << html_escape(r.label) << "</th>";
  f << "</tr>";
  auto row = [&](const char* name, const std::function<std::string(const run_result&)>& g) {
    f << "<tr><td>" << name << "</td>";
    for (const auto& r : runs) f << "<td>" << html_escape(g(r)) << "</td>";
    f << "</tr>";
  };
  row("peak memory", [](const run_result& r) { return "+" + format_size(std::max(0.0, r.peak_rss)); });
  row("channel budgets", [](const run_result& r) { return r.budget > 0 ? format_size(r.budget) : std::string("none"); });
  row("time", [](const run_result& r) { return fmt("%.2f s", r.elapsed_s); });
  row("throughput", [](const run_result& r) { return format_size(throughput(r)) + "/s"; });
  row("outcome", [](const run_result& r) {
    return r.guard_hit ? std::string("memory guard hit") : r.completed ? std::string("completed") : std::string("incomplete");
  });
  row("bottleneck", [](const run_result& r) { return r.bottleneck.value_or("-"); });
  f << "</table>\n";
  for (const auto& r : runs)
    if (!r.note.empty()) f << "<p>" << html_escape(r.label + ": " + r.note) << "</p>\n";

  // Memory curves.
  f << "<h2>Memory over time</h2>\n<svg width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << " " << H
    << "\" xmlns=\"http://www.w3.org/2000/svg\">\n";
  for (int i = 0; i <= 5; ++i) {
    const double m = m_max * i / 5.0;
    f << "<line class=\"grid\" x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << Y(m) << "\" y2=\"" << Y(m) << "\"/>"
      << "<text x=\"" << L - 6 << "\" y=\"" << Y(m) + 4 << "\" text-anchor=\"end\">" << fmt("%.0f MiB", m / kMiB)
      << "</text>\n";
    const double t = t_max * i / 5.0;
    f << "<text x=\"" << X(t) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << fmt("%.1f s", t) << "</text>\n";
  }
  f << "<line class=\"axis\" x1=\"" << L << "\" x2=\"" << L << "\" y1=\"" << T << "\" y2=\"" << H - B << "\"/>"
    << "<line class=\"axis\" x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << H - B << "\" y2=\"" << H - B << "\"/>\n";
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const auto& r = runs[k];
    const char* color = kColors[k % 2];
    f << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (const auto& s : r.samples) f << fmt("%.1f", X(s.t)) << "," << fmt("%.1f", Y(s.rss)) << " ";
    f << "\"/>\n";
    if (r.budget > 0) {
      f << "<line stroke=\"" << color << "\" stroke-dasharray=\"4 4\" x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\""
        << Y(r.budget) << "\" y2=\"" << Y(r.budget) << "\"/>";
    }
    f << "<rect x=\"" << L + 10 << "\" y=\"" << T + 6 + 18 * static_cast<double>(k) << "\" width=\"12\" height=\"12\" fill=\""
      << color << "\"/><text x=\"" << L + 28 << "\" y=\"" << T + 16 + 18 * static_cast<double>(k) << "\">"
      << html_escape(r.label + "  (peak +" + format_size(std::max(0.0, r.peak_rss)) + ")") << "</text>\n";
  }
  f << "</svg>\n";

  // Per-stage timelines: for each interval, the share of time busy / backpressured / starved.
  f << "<h2>Stages over time</h2>\n<p><span style=\"color:#2ca02c\">&#9632; busy</span> &nbsp; "
       "<span style=\"color:#ff7f0e\">&#9632; backpressured (blocked on a full output)</span> &nbsp; "
       "<span style=\"color:#aaa\">&#9632; starved (waiting on an empty input)</span></p>\n";
  for (const auto& r : runs) {
    const std::size_t n_stages = r.stage_names.size();
    const double row_h = 26;
    const double h = 24 + row_h * static_cast<double>(n_stages);
    f << "<h3>" << html_escape(r.label) << "</h3>\n<svg width=\"" << W << "\" height=\"" << h << "\" viewBox=\"0 0 " << W
      << " " << h << "\" xmlns=\"http://www.w3.org/2000/svg\">\n";
    // Bucket the samples into at most 150 intervals.
    const std::size_t buckets = std::min<std::size_t>(150, r.samples.size() > 1 ? r.samples.size() - 1 : 0);
    for (std::size_t si = 0; si < n_stages; ++si) {
      const double y0 = 4 + row_h * static_cast<double>(si);
      f << "<text x=\"" << L - 6 << "\" y=\"" << y0 + 15 << "\" text-anchor=\"end\">" << html_escape(r.stage_names[si])
        << "</text>\n";
      for (std::size_t b = 0; b < buckets; ++b) {
        const std::size_t i0 = b * (r.samples.size() - 1) / buckets;
        const std::size_t i1 = (b + 1) * (r.samples.size() - 1) / buckets;
        const auto& s0 = r.samples[i0];
        const auto& s1 = r.samples[i1];
        if (si >= s0.stage_ns.size() || si >= s1.stage_ns.size()) continue;
        double d[3];
        double tot = 0;
        for (int k = 0; k < 3; ++k) {
          d[k] = static_cast<double>(s1.stage_ns[si][static_cast<std::size_t>(k)] - s0.stage_ns[si][static_cast<std::size_t>(k)]);
          tot += d[k];
        }
        if (tot <= 0) continue;
        const double x0 = X(s0.t), x1 = X(s1.t);
        double y = y0 + 20;
        static const char* kStateColors[] = {"#2ca02c", "#ff7f0e", "#bbbbbb"};
        for (int k = 0; k < 3; ++k) {
          const double hh = 20 * d[k] / tot;
          if (hh <= 0.05) continue;
          y -= hh;
          f << "<rect x=\"" << fmt("%.1f", x0) << "\" y=\"" << fmt("%.2f", y) << "\" width=\""
            << fmt("%.2f", std::max(0.5, x1 - x0)) << "\" height=\"" << fmt("%.2f", hh) << "\" fill=\"" << kStateColors[k]
            << "\"/>";
        }
      }
      f << "\n";
    }
    f << "<text x=\"" << L << "\" y=\"" << h - 4 << "\">0 s</text><text x=\"" << W - R << "\" y=\"" << h - 4
      << "\" text-anchor=\"end\">" << fmt("%.1f s", t_max) << "</text></svg>\n";
  }
  f << "<p>Generated by <code>sluice demo</code>. Memory: resident set size (/proc/self/statm) above a baseline taken "
       "before each run; the freed heap went back to the OS (malloc_trim) between runs.</p></body></html>\n";
  return static_cast<bool>(f);
}

}  // namespace

int cmd_demo(int argc, char** argv) {
  demo_config cfg;
  arg_parser p("sluice demo",
               "The backpressure lesson, measured: a fast source of generated log lines feeds a sink\n"
               "held to a slow rate, first through an unbounded queue (memory climbs), then through\n"
               "a sluice graph with byte budgets (memory stays flat). Same time, the numbers side by side.");
  p.size("--bytes", &cfg.bytes, "bytes of log lines the source generates");
  p.rate("--rate", &cfg.rate, "the sink's rate, a token bucket like a network socket");
  p.size("--memory-guard", &cfg.memory_guard, "stop the unbounded run when its memory grows this much");
  p.size("--budget", &cfg.budget, "byte budget of each of the bounded run's two channels");
  p.size("--chunk", &cfg.chunk, "bytes per item moving between stages");
  p.duration("--sample", &cfg.sample_every, "how often memory and stages are sampled");
  p.text("--report", &cfg.report, "FILE.html", "write a self-contained HTML report (memory curves, stage timelines)");
  p.custom("--only", "WHICH", "run only one half: unbounded | bounded | both", cfg.only,
           [&](std::string_view v) {
             if (v != "unbounded" && v != "bounded" && v != "both") return false;
             cfg.only = std::string(v);
             return true;
           },
           "unbounded, bounded or both");
  p.flag("--json", &cfg.json, "print the results as JSON on stdout instead of the table");
  if (!p.parse(argc, argv)) return 0;
  if (cfg.bytes == 0) p.bad("--bytes", "0", "a size above zero");
  if (cfg.chunk == 0 || cfg.chunk > (256ULL << 20)) p.bad("--chunk", std::to_string(cfg.chunk), "a size between 1 B and 256 MiB");
  if (cfg.budget == 0) p.bad("--budget", "0", "a size above zero");
  if (cfg.memory_guard == 0) p.bad("--memory-guard", "0", "a size above zero");
  if (cfg.sample_every < std::chrono::microseconds(100)) {
    p.bad("--sample", format_duration(cfg.sample_every), "at least 100us");
  }

  const std::string pattern = make_log_pattern();
  progress prog("demo");
  run_env env{cfg, pattern, prog};
  std::vector<run_result> runs;
  double rss_after_trim = -1;
  if (cfg.only != "bounded") {
    prog.finish("run 1: " + format_size(static_cast<double>(cfg.bytes)) + " through an unbounded queue");
    runs.push_back(run_unbounded(env));
    prog.finish("unbounded queue: peak memory +" + format_size(std::max(0.0, runs.back().peak_rss)) + ", " +
                fmt("%.2f s", runs.back().elapsed_s) + (runs.back().guard_hit ? " (memory guard hit)" : ""));
    return_free_memory();
    rss_after_trim = static_cast<double>(rss_bytes());
  }
  if (cfg.only != "unbounded") {
    prog.finish("run 2: the same through sluice channels with " + format_size(static_cast<double>(cfg.budget)) +
                " byte budgets");
    runs.push_back(run_bounded(env));
    prog.finish("sluice (bounded): peak memory +" + format_size(std::max(0.0, runs.back().peak_rss)) + ", " +
                fmt("%.2f s", runs.back().elapsed_s));
  }
  if (cfg.json) {
    print_json(cfg, runs);
  } else {
    print_table(cfg, runs, rss_after_trim);
  }
  if (!cfg.report.empty()) {
    if (!write_report(cfg.report, cfg, runs)) {
      std::fprintf(stderr, "sluice demo: cannot write %s\n", cfg.report.c_str());
      return 1;
    }
    if (!cfg.json) std::printf("\n  report written to %s\n", cfg.report.c_str());
  }
  bool ok = true;
  for (const auto& r : runs) ok = ok && (r.completed || r.guard_hit);
  return ok ? 0 : 1;
}

}  // namespace sluice::tool
