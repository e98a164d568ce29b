// tools/bench/cmd_bench.cpp — `sluice bench`: throughput and latency of synthetic graphs.
//
// Topologies (every worker stage does --work per item; the source stamps each item,
// the sink records now - stamp as end-to-end latency):
//   chain:N    source -> stage-1 -> ... -> stage-N -> sink
//   farm:N     source -> work (N replicas) -> sink
//   fanout:N   source -> broadcast to branch-1..branch-N -> merge -> sink (N copies per item)
//   diamond    source -> split -> round_robin to left, right -> merge -> join -> sink
// --engine tbb runs chain and farm on oneTBB parallel_pipeline (serial_in_order
// filters for the chain's stages, a parallel filter for the farm), in the same process.
//
// Three ways to offer load:
//   closed loop (default)  the source pushes as fast as the graph takes items; an item
//                          is stamped when it is made.
//   --rate R               open loop: item i is due at t0 + i/R; the source waits until
//                          then and stamps the item with that intended time, so a push
//                          that blocks, or a source that runs late, is in the latency (no
//                          coordinated omission, as wrk2 / HdrHistogram). The oneTBB
//                          pipeline's input filter does the same (see `arrivals`).
//   --sweep                per engine a short closed-loop run for its maximum, then
//                          open-loop runs at --sweep-at percentages of that maximum;
//                          with --engine both also both engines at --shared-at
//                          percentages of oneTBB's maximum (same offered rate).
// An open-loop run that follows the other engine's is preceded by an unmeasured 200 ms
// run of its own engine at its rate (kWarmUpNs).
//
// --fuse (chain:N only) builds the chain's N worker maps with stage_options::fuse: they
// run as function calls on the source's thread, and the sink keeps its own thread behind
// one bounded channel. So the sluice graph does the N maps on one thread with one
// hand-off per item, which is what oneTBB's serial filters amount to when one worker
// carries a token through them; the sink stays unfused so that backpressure still reaches
// the source through a channel and the latency includes one real hand-off.
// --fuse-sink fuses the sink as well: the whole chain on the source's thread, no hand-off
// at all (as a oneTBB worker that carries a token from the input filter to the sink).
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench/gbench_json.hpp"
#include "bench/histogram.hpp"
#include "bench/pacing.hpp"
#include "bench/report_html.hpp"
#include "bench/ring_memory.hpp"
#include "bench/work.hpp"
#if SLUICE_HAVE_JETSTREAM
#include "bench/cut.hpp"  // --cut K --via URL: two processes joined by a JetStream edge
#endif
#include "commands.hpp"
#include "common/args.hpp"
#include "common/progress.hpp"
#include "common/signals.hpp"
#include "common/sys.hpp"
#include "common/write_file.hpp"
#include "sluice/detail/ring_buffer.hpp"
#include "sluice/detail/ticker.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"

namespace sluice::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;
using bench::now_ns;
using bench::parse_work_list;
using bench::work_spec;

// The signal (SIGINT, SIGTERM, SIGHUP) that interrupted the bench, or 0. Set once by the
// watcher in cmd_bench; the sources of both engines read it (arrivals::next) and stop
// sending, so the run in progress drains what it sent and ends like a shorter run.
// relaxed: a one-way flag; a source that reads it a moment late sends an item more.
std::atomic<int> g_interrupted{0};
bool interrupted() { return g_interrupted.load(std::memory_order_relaxed) != 0; }
// Set once every run is over, before the results are written: a ^C then says so (the
// table or a --report FIFO that waits for its reader), not that a run drains.
std::atomic<bool> g_runs_over{false};

// ---- configuration ------------------------------------------------------------

enum class topology_kind { chain, farm, fanout, diamond };
enum class out_format { table, json, gbench };

constexpr nanoseconds kDefaultOpenDuration = std::chrono::seconds(2);
// The shortest --probe-duration: a closed-loop run that finds a maximum, not the start-up.
constexpr nanoseconds kMinProbe = std::chrono::milliseconds(100);

struct bench_config {
  std::string serve;  // --serve ADDR: the live view (metrics::serve) of each sluice run
  topology_kind topo = topology_kind::chain;
  std::size_t n = 4;
  std::string topo_text = "chain:4";
  std::uint64_t items = 1'000'000;
  bool items_given = false;
  std::uint64_t item_size = 64;
  std::vector<work_spec> work = {work_spec{}};
  std::string work_text = "0";
  std::uint64_t capacity = 1024;
  std::string capacity_text = "1024";  // --capacity as typed ("1M"), for errors
  std::uint64_t replicas = 1;
  bool ordered = false;
  bool fuse = false;  // chain: the worker maps run on the source's thread (stage_options::fuse)
  bool fuse_sink = false;  // and the sink too
  std::string engine = "sluice";
  std::uint64_t tokens = 0;  // tbb: 0 = capacity x channels
  double rate = 0;           // --rate, items/s; 0: closed loop
  nanoseconds duration{0};   // --duration; 0: unset (see run_limits)
  bool sweep = false;
  std::vector<double> sweep_at = {0.10, 0.25, 0.50, 0.75, 0.90, 1.00};
  std::vector<double> shared_at = {0.10, 0.50, 0.90};
  nanoseconds probe = std::chrono::seconds(1);  // --probe-duration
  out_format format = out_format::table;
  std::string report;  // --report FILE.html
};

// A share as the output names it ("50%", "12.5%"): a sweep point's row and benchmark name.
std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g%%", fraction * 100);
  return buf;
}

// "10,50,90" (percent, each in (0, 1000], each named differently) -> {0.1, 0.5, 0.9}.
// A repeat is refused: it would measure the point twice, and --format gbench would write
// two benchmarks of one name, which comparison tools pair by name.
bool parse_percent_list(std::string_view s, std::vector<double>& out) {
  std::vector<double> v;
  std::vector<std::string> names;
  while (true) {
    const std::size_t comma = s.find(',');
    std::string_view one = s.substr(0, comma);
    if (one.ends_with("%")) one.remove_suffix(1);
    std::size_t used = 0;
    const auto p = tool::detail::parse_number_prefix(one, used);
    if (!p || used != one.size() || !(*p > 0) || *p > 1000) return false;
    std::string name = percent(*p / 100);
    if (std::find(names.begin(), names.end(), name) != names.end()) return false;
    names.push_back(std::move(name));
    v.push_back(*p / 100);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  out = std::move(v);
  return true;
}

bool parse_topology(std::string_view s, bench_config& c) {
  c.topo_text = std::string(s);
  if (s == "diamond") {
    c.topo = topology_kind::diamond;
    c.n = 4;  // split, left, right, join
    return true;
  }
  const std::size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view kind = s.substr(0, colon);
  const auto n = parse_count(s.substr(colon + 1));
  if (!n || *n == 0 || *n > 64) return false;
  c.n = static_cast<std::size_t>(*n);
  if (kind == "chain") {
    c.topo = topology_kind::chain;
  } else if (kind == "farm") {
    c.topo = topology_kind::farm;
  } else if (kind == "fanout") {
    c.topo = topology_kind::fanout;
  } else {
    return false;
  }
  // One name per shape: chain:01, chain:1.0 and chain:0.001k ran chain:1 under names of
  // their own (the table, the JSON, the gbench names that compare.py pairs by).
  c.topo_text = std::string(kind) + ":" + std::to_string(c.n);
  return true;
}

// Worker stages of the topology, in order (work list index = position here).
std::vector<std::string> worker_names(const bench_config& c) {
  std::vector<std::string> v;
  switch (c.topo) {
    case topology_kind::chain:
      for (std::size_t i = 1; i <= c.n; ++i) v.push_back("stage-" + std::to_string(i));
      break;
    case topology_kind::farm: v.push_back("work"); break;
    case topology_kind::fanout:
      for (std::size_t i = 1; i <= c.n; ++i) v.push_back("branch-" + std::to_string(i));
      break;
    case topology_kind::diamond: v = {"split", "left", "right", "join"}; break;
  }
  return v;
}

// Copies of each item the sink receives.
std::uint64_t copies(const bench_config& c) { return c.topo == topology_kind::fanout ? c.n : 1; }

bool tbb_runs(const bench_config& c) { return c.topo == topology_kind::chain || c.topo == topology_kind::farm; }

// The channels run_sluice builds when no stage is fused, each of --capacity slots: the
// source's and each worker's output, and broadcast's, round_robin's and merge's (fanout:N
// has 2N+2, diamond 8). oneTBB's token count takes the same number.
std::uint64_t sluice_channels(const bench_config& c) {
  switch (c.topo) {
    case topology_kind::farm: return 2;
    case topology_kind::fanout: return 2 * c.n + 2;  // + broadcast's N, merge's 1
    case topology_kind::diamond: return 8;           // + round_robin's 2, merge's 1
    case topology_kind::chain: break;
  }
  return c.n + 1;
}

// ---- the item, the work, the arrivals ---------------------------------------------

struct bench_item {
  std::uint64_t seq = 0;
  std::int64_t born_ns = 0;  // steady time: made (closed loop) or due (open loop)
  std::string payload;
  bool unfinished = false;  // a ^C cut a stage's work on it short: not a delivery
};

// An item's work (bench::do_work), cut at a ^C: after one no work starts, and the run
// drains what it sent in moments (with --work sleep:20s the first ^C waited 20 s for each
// item sent, and a `timeout` that sends one signal never ended the bench; with --work
// sleep:50ms and --capacity 1024, it waited 52 s for the backlog). Such an item is
// unfinished (false here, bench_item::unfinished): the sink counts it apart, neither
// delivered nor timed (the run reported the items released by a ^C as delivered, at a
// rate the work could not have allowed).
bool do_work(const work_spec& w) { return bench::do_work(w, [] { return interrupted(); }); }

// A worker stage's step, both engines: the work, unless an earlier stage's was cut.
void work_on(bench_item& v, const work_spec& w) {
  if (!v.unfinished && !do_work(w)) v.unfinished = true;
}

// When a run ends: after max_items, or when duration_ns has passed since the first
// item (0: no time limit).
struct feed {
  double rate = 0;  // items/s; 0: closed loop
  std::uint64_t max_items = UINT64_MAX;
  std::int64_t duration_ns = 0;
};

// The source side of a run, the same for both engines; one thread calls next() (the
// sluice source stage, or parallel_pipeline's serial input filter).
// Open loop: item i is due at t0 + i/rate. next() waits until then (bench::wait_until_ns:
// asleep until ~50 us before, then yielding) and stamps the item with its due time,
// not the time it leaves: if this thread runs late, or the push after next() blocks
// on a full channel, that delay is in the item's latency, and a late source sends the
// items it owes at once instead of skipping them (wrk2's correction of coordinated
// omission). The source also stops when the wall clock passes the duration, so a rate
// the graph cannot take stops sending on time with fewer items sent; due() says how many
// were due in the window, so the report can say how many were never sent (the latest,
// slowest ones, which the percentiles then leave out). What was sent is still delivered:
// the run ends once the backlog drains (drain_s in the JSON).
// Closed loop: the item is stamped with the time it is made.
class arrivals {
 public:
  explicit arrivals(const feed& f) : f_(f) {}

  std::optional<std::int64_t> next() {
    if (sent_ >= f_.max_items) return std::nullopt;
    if (interrupted()) return cut_short();
    const std::int64_t now = now_ns();
    if (sent_ == 0) {
      t0_ = now;
      end_ = f_.duration_ns > 0 ? now + f_.duration_ns : INT64_MAX;
    }
    if (now >= end_) return std::nullopt;
    if (f_.rate <= 0) {
      ++sent_;
      return now;
    }
    const double offset = offset_ns(static_cast<double>(sent_));
    if (!within(offset, end_ - t0_)) return std::nullopt;
    const auto due = t0_ + static_cast<std::int64_t>(std::llround(offset));
    if (due > now) {
      // In slices, so that an interrupt ends the wait of a slow rate (an item a minute),
      // and a live view sees a long wait as it goes.
      constexpr std::int64_t kSlice = 100'000'000;  // ns
      std::int64_t from = now;
      auto count_wait = [&] {
        const std::int64_t t = now_ns();
        // relaxed: a statistic; read exactly once the source's thread was joined.
        paced_ns_->fetch_add(static_cast<std::uint64_t>(t - from), std::memory_order_relaxed);
        from = t;
      };
      while (due - now_ns() > kSlice && !interrupted()) {
        bench::sleep_until_ns(now_ns() + kSlice);
        count_wait();
      }
      if (interrupted()) return cut_short();
      bench::wait_until_ns(due);
      count_wait();  // past due if the wait woke late
    }
    ++sent_;
    return due;
  }
  [[nodiscard]] std::uint64_t sent() const { return sent_; }
  [[nodiscard]] std::int64_t t0_ns() const { return t0_; }
  // Open loop: the time next() spent waiting for items to fall due, so far. The runtime
  // counts it as the source stage's busy time (it is inside the stage function): see
  // show_clock_as_input(). Shared: a snapshot reads it from another thread.
  [[nodiscard]] std::shared_ptr<const std::atomic<std::uint64_t>> paced_ns() const { return paced_ns_; }
  // Open loop with a duration: the items due in the window (item i is due at i / rate:
  // ceil(window * rate) of them, at most max_items). Otherwise sent().
  [[nodiscard]] std::uint64_t due() const {
    const std::int64_t window = window_ns();
    if (f_.rate <= 0 || window <= 0) return sent_;
    // Counted by next()'s own test of an item's offset, so that rounding (0.3 s * 5000/s
    // is 1500.0000000000002) cannot make one more item "due" than next() would send.
    const auto in_window = [&](double i) { return within(offset_ns(i), window); };
    double n = std::floor(static_cast<double>(window) * 1e-9 * f_.rate);
    if (!(n < static_cast<double>(f_.max_items))) return std::max(sent_, f_.max_items);
    while (n > 0 && !in_window(n - 1)) n -= 1;
    while (in_window(n) && n < static_cast<double>(f_.max_items)) n += 1;
    return std::max(sent_, static_cast<std::uint64_t>(n));
  }
  // The time the source offered load for: the duration, or less when an interrupt cut
  // the run short (then what fell due after it was never owed).
  [[nodiscard]] std::int64_t window_ns() const { return cut_ns_ >= 0 ? cut_ns_ : f_.duration_ns; }
  // Whether an interrupt stopped the source before it had sent all it would have.
  [[nodiscard]] bool was_cut() const { return cut_ns_ >= 0; }

 private:
  // An interrupt (g_interrupted) ends the window now: nothing more is sent or due.
  std::optional<std::int64_t> cut_short() {
    if (cut_ns_ < 0) {
      const std::int64_t ran = sent_ == 0 ? 0 : now_ns() - t0_;
      cut_ns_ = f_.duration_ns > 0 ? std::min(ran, f_.duration_ns) : ran;
    }
    return std::nullopt;
  }

  // Item i is due offset_ns(i) after the first; it is sent if that is inside the window
  // (limit: ns from the first item to the end). Compared in double before the conversion:
  // for a tiny rate the offset is past any int64 (llround's result would be unspecified,
  // and was in the past: every item went out at once).
  [[nodiscard]] double offset_ns(double i) const { return i * 1e9 / f_.rate; }
  static bool within(double offset, std::int64_t limit) {
    return offset < static_cast<double>(limit) && std::llround(offset) < limit;
  }

  feed f_;
  std::uint64_t sent_ = 0;
  std::shared_ptr<std::atomic<std::uint64_t>> paced_ns_ = std::make_shared<std::atomic<std::uint64_t>>(0);
  std::int64_t t0_ = 0;
  std::int64_t end_ = INT64_MAX;
  std::int64_t cut_ns_ = -1;  // the window an interrupt left (cut_short), or -1
};

double process_cpu_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct bench_result {
  std::string engine;
  bool open_loop = false;
  double offered = 0;  // items/s (open loop)
  double window_s = 0;  // open loop: the --duration it offered load for
  std::string load_of;  // sweep: whose closed-loop maximum the offered rate is a share of
  double load_fraction = 0;
  double warm_up_s = 0;  // the unmeasured run of this engine just before this one (kWarmUpNs), 0: none
  bool cut = false;  // ^C stopped its source early, or cut items' work short (unfinished)
  std::uint64_t unfinished = 0;  // deliveries whose work a ^C cut short: not counted
  std::uint64_t copies = 1;
  std::uint64_t sent = 0;
  std::uint64_t due = 0;  // open loop: items due in the window (sent or not)
  std::uint64_t delivered = 0;
  double elapsed_s = 0;  // around the whole run (threads started to joined)
  std::int64_t t0_ns = 0;  // first item
  std::int64_t first_ns = 0;  // first delivery
  std::int64_t last_ns = 0;  // last delivery
  double cpu_s = 0;  // process CPU time during the run
  bench::log_histogram hist;
  std::optional<metrics::snapshot> snap;  // sluice only
  bool balanced = true;
  std::string detail;  // tbb: tokens and threads
  std::vector<std::pair<double, double>> series;  // (s since start, deliveries/s), every ~100 ms
  [[nodiscard]] double items_per_s() const { return elapsed_s > 0 ? static_cast<double>(delivered) / elapsed_s : 0; }
  // Source items delivered per second, at the sink: (items - 1) / (last delivery - first
  // delivery). A graph that keeps up delivers at the offered rate whatever its latency
  // (a constant delay shifts both ends); one that cannot delivers at its own pace.
  // Fewer than two items have no span: an open-loop run then counts them over the window
  // it offered load for (one item offered in a second is 1/s, not 1 over the ms it took).
  // An open-loop run whose source sent every item due, each delivered, kept up: its
  // rate is never shown above the offered one (a late first item shortens the span).
  [[nodiscard]] double achieved() const {
    const double items = static_cast<double>(delivered) / static_cast<double>(copies);
    const double span = static_cast<double>(last_ns - first_ns) * 1e-9;
    const bool kept_up = open_loop && sent >= due && delivered == sent * copies;
    if (items < 2 || span <= 0) {
      if (kept_up) return offered;  // one item has no rate of its own; it was taken
      if (open_loop && window_s > 0) return items / std::max(window_s, elapsed_s);
      return items_per_s() / static_cast<double>(copies);
    }
    const double rate = (items - 1) / span;
    return kept_up ? std::min(rate, offered) : rate;
  }
  // Items due in the window that the source never sent (it fell behind).
  [[nodiscard]] std::uint64_t unsent() const { return due > sent ? due - sent : 0; }
  // Saturated: the source sent under 95% of the items due, or (with ten items or more,
  // enough for a span that one late delivery does not decide) the deliveries ran below
  // 95% of the offered rate. Two items were once enough, and jitter flagged idle chains.
  [[nodiscard]] bool saturated() const {
    if (!open_loop || due < 2) return false;
    if (static_cast<double>(sent) < 0.95 * static_cast<double>(due)) return true;
    return sent >= 10 && achieved() < 0.95 * offered;
  }
  // Open loop: how long the run went on after the window, delivering what was sent.
  [[nodiscard]] double drain_s() const { return open_loop ? std::max(0.0, elapsed_s - window_s) : 0.0; }
  [[nodiscard]] bool complete() const { return delivered == sent * copies && balanced; }
};

// The sink's step, both engines (one thread at a time; r is read after the run joined
// it): an item whose work a ^C cut is counted apart; any other is a delivery, timed from
// its stamp.
void take_delivery(bench_result& r, std::atomic<std::uint64_t>& delivered, const bench_item& v) {
  if (v.unfinished) {
    ++r.unfinished;
    return;
  }
  const std::int64_t now = now_ns();
  r.hist.record(now - v.born_ns);
  if (r.first_ns == 0) r.first_ns = now;
  r.last_ns = now;
  // relaxed: a statistic for the progress display; read exactly after the join.
  delivered.fetch_add(1, std::memory_order_relaxed);
}

// 20000 -> "20.00 k" (with a trailing space for the unit's place).
std::string si(double v) {
  char buf[32];
  if (v >= 999.995e6) {
    std::snprintf(buf, sizeof buf, "%.2f G", v / 1e9);
  } else if (v >= 999.995e3) {  // each unit from where the one below would print 1000
    std::snprintf(buf, sizeof buf, "%.2f M", v / 1e6);
  } else if (v >= 999.5) {
    std::snprintf(buf, sizeof buf, "%.2f k", v / 1e3);
  } else if (v == std::floor(v) || v >= 100) {
    std::snprintf(buf, sizeof buf, "%.0f ", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g ", v);  // a fractional rate: 0.5, not 0; 1.5, not 2
  }
  return buf;
}

// Polls `delivered` every 100 ms for the progress display and the throughput series
// until stopped.
class bench_progress {
 public:
  bench_progress(progress& p, std::string label, std::uint64_t expected, const std::atomic<std::uint64_t>& delivered,
                 std::vector<std::pair<double, double>>& series)
      : p_(p), label_(std::move(label)), expected_(expected), delivered_(delivered), series_(series),
        t0_(clock::now()), ticker_(sluice::detail::tick_every(std::chrono::milliseconds(100), [this] { tick(); }, "bench-progress")) {}
  bench_progress(const bench_progress&) = delete;
  bench_progress& operator=(const bench_progress&) = delete;
  ~bench_progress() { finish(); }
  // The run has ended: the ticks stop, and the time since the last one is the series'
  // last interval (a run of 1.25 s drew its first 1.2 s; one under 100 ms, nothing). The
  // series then covers every delivery: its rates times its intervals sum to them all.
  void finish() {
    if (finished_) return;
    finished_ = true;
    ticker_.stop();
    p_.clear();
    // relaxed: the ticker thread was joined; a statistic.
    const double d = static_cast<double>(delivered_.load(std::memory_order_relaxed));
    const double t = std::chrono::duration<double>(clock::now() - t0_).count();
    if (series_.empty() || t - last_t_ >= kShortestLastInterval) {
      if (t > last_t_) series_.emplace_back(t, (d - last_d_) / (t - last_t_));
    } else if (t > prev_t_) {
      series_.back() = {t, (d - prev_d_) / (t - prev_t_)};  // a sliver joins the interval before it
    }
  }

 private:
  // A last interval shorter than this joins the one before: alone, its rate is mostly noise.
  static constexpr double kShortestLastInterval = 0.005;  // s
  void tick() {
    // relaxed: a statistic.
    const double d = static_cast<double>(delivered_.load(std::memory_order_relaxed));
    const double t = std::chrono::duration<double>(clock::now() - t0_).count();
    if (t > last_t_) {
      series_.emplace_back(t, (d - last_d_) / (t - last_t_));
      prev_t_ = last_t_;
      prev_d_ = last_d_;
    }
    last_t_ = t;
    last_d_ = d;
    char buf[200];
    if (expected_ != 0) {
      std::snprintf(buf, sizeof buf, "%s  %.0f / %.0f items delivered  %sitems/s  (%.1f s)", label_.c_str(), d,
                    static_cast<double>(expected_), si(t > 0 ? d / t : 0.0).c_str(), t);
    } else {
      std::snprintf(buf, sizeof buf, "%s  %.0f items delivered  %sitems/s  (%.1f s)", label_.c_str(), d,
                    si(t > 0 ? d / t : 0.0).c_str(), t);
    }
    p_.update(buf);
  }
  progress& p_;
  std::string label_;
  std::uint64_t expected_;  // 0: unknown (a timed run)
  const std::atomic<std::uint64_t>& delivered_;
  std::vector<std::pair<double, double>>& series_;  // written by the ticker, read after its stop
  clock::time_point t0_;
  double last_t_ = 0;  // the ticker's own
  double last_d_ = 0;
  double prev_t_ = 0;  // where the series' last interval began
  double prev_d_ = 0;
  bool finished_ = false;
  sluice::detail::ticker ticker_;  // last: started after every other member is built
};

const work_spec& work_for(const bench_config& c, std::size_t worker) {
  return c.work.size() == 1 ? c.work[0] : c.work[worker];
}


std::string run_label(const std::string& engine, const bench_config& c, const feed& f) {
  std::string l = engine + " " + c.topo_text;
  if (f.rate > 0) l += " at " + si(f.rate) + "items/s";
  return l;
}

std::uint64_t expected_deliveries(const bench_config& c, const feed& f) {
  return f.duration_ns > 0 || f.max_items == UINT64_MAX ? 0 : f.max_items * copies(c);
}

// ---- sluice ---------------------------------------------------------------------

// An open-loop source spends most of its time waiting for the next item to fall due,
// inside its stage function, where the runtime counts it as busy; the bottleneck rule
// then named the source of every run that kept up. That wait is the source waiting for
// its input, the clock: called on the source's thread, this shows the clock as a channel
// from outside the graph into the source (this_stage::add_external_channel), so every
// snapshot counts the wait as starved, the live view's as well as the report's (the
// report alone was corrected before: a live view of a run at 2% load named the source).
void show_clock_as_input(std::shared_ptr<const std::atomic<std::uint64_t>> paced_ns) {
  this_stage::add_external_channel("clock", /*pushes=*/false, [paced = std::move(paced_ns)] {
    metrics::external_channel_reading r;
    r.blocked_pop_ns = paced->load(std::memory_order_relaxed);
    return r;
  });
}

// `served_at`: where the live view of the run before was served ("" before the first).
bench_result run_sluice(const bench_config& c, const feed& f, progress& prog, [[maybe_unused]] std::string& served_at) {
  bench_result r;
  r.engine = "sluice";
  r.open_loop = f.rate > 0;
  r.offered = f.rate;
  r.window_s = static_cast<double>(f.duration_ns) * 1e-9;
  r.copies = copies(c);
  graph g;
  std::atomic<std::uint64_t> delivered{0};
  const std::vector<std::string> names = worker_names(c);
  stage_options base;
  base.capacity = static_cast<std::size_t>(c.capacity);

  const std::string payload(static_cast<std::size_t>(c.item_size), 'x');
  arrivals arr(f);
  auto src = g.source<bench_item>(
      "source",
      [&arr, &payload, open = f.rate > 0](sender<bench_item>& out, std::stop_token stop) {
        if (open) show_clock_as_input(arr.paced_ns());
        std::uint64_t seq = 0;
        while (const auto stamp = arr.next()) {
          if (stop.stop_requested()) return;
          if (!out.push(bench_item{seq++, *stamp, payload})) return;
        }
      },
      base);
  auto worker = [&](std::size_t idx, stream<bench_item> in, std::size_t replicas) {
    stage_options o = base;
    o.replicas = replicas;
    o.ordered = c.ordered;
    o.fuse = c.fuse;
    const work_spec w = work_for(c, idx);
    return g.map(names[idx], in, [w](bench_item v) {
      work_on(v, w);
      return v;
    }, o);
  };
  stream<bench_item> last;
  switch (c.topo) {
    case topology_kind::chain: {
      last = src;
      for (std::size_t i = 0; i < c.n; ++i) last = worker(i, last, static_cast<std::size_t>(c.replicas));
      break;
    }
    case topology_kind::farm: last = worker(0, src, c.n); break;
    case topology_kind::fanout: {
      auto branches = g.broadcast(src, c.n);
      std::vector<stream<bench_item>> outs;
      for (std::size_t i = 0; i < c.n; ++i) outs.push_back(worker(i, branches[i], static_cast<std::size_t>(c.replicas)));
      last = g.merge(std::move(outs));
      break;
    }
    case topology_kind::diamond: {
      auto split = worker(0, src, static_cast<std::size_t>(c.replicas));
      auto halves = g.round_robin(split, 2);
      auto left = worker(1, halves[0], static_cast<std::size_t>(c.replicas));
      auto right = worker(2, halves[1], static_cast<std::size_t>(c.replicas));
      last = worker(3, g.merge(std::vector<stream<bench_item>>{left, right}), static_cast<std::size_t>(c.replicas));
      break;
    }
  }
  g.sink("sink", last, [&r, &delivered](bench_item v) { take_delivery(r, delivered, v); }, [&] {
    stage_options so;
    so.fuse = c.fuse_sink;
    return so;
  }());

  const double cpu0 = process_cpu_s();
  const auto t0 = clock::now();
  report rep;
  {
    bench_progress bp(prog, run_label("sluice", c, f), expected_deliveries(c, f), delivered, r.series);
#if SLUICE_HAVE_SERVE
    // Bound before the run starts (a bad address fails before any stage runs); the
    // server only reads snapshots, and stops before the graph is destroyed.
    // Every run after the first serves at the address the first one bound (port 0 is
    // picked once), so that an open page goes on from run to run; if that port was taken
    // meanwhile, at a new one, said again.
    std::optional<metrics::server> live;
    if (!c.serve.empty()) {
      bool moved = served_at.empty();
      if (!served_at.empty()) {
        try {
          live.emplace(metrics::serve(g, served_at));
        } catch (const std::runtime_error&) {
          moved = true;
        }
      }
      if (!live) live.emplace(metrics::serve(g, c.serve));
      if (moved) {
        std::fprintf(stderr, "sluice bench: live view at %s\n", live->url().c_str());
        if (!live->loopback_only()) {
          // The address bound (port 0 was a free port's pick), not the one asked for.
          std::fprintf(stderr, "sluice bench: warning: the live view listens on %s, beyond this machine; anyone who "
                               "can reach it sees the graph's names and figures\n",
                       live->address().c_str());
        }
      }
      served_at = live->address();
    }
#endif
    rep = g.run();
    bp.finish();  // before the live view stops (which may take a moment)
  }
  r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
  r.cpu_s = process_cpu_s() - cpu0;
  r.delivered = delivered.load();
  r.sent = arr.sent();
  r.due = arr.due();
  r.window_s = static_cast<double>(arr.window_ns()) * 1e-9;
  r.cut = arr.was_cut() || r.unfinished != 0;
  r.t0_ns = arr.t0_ns();
  r.snap = rep.metrics;
  r.balanced = rep.balanced();
  return r;
}

// ---- oneTBB ---------------------------------------------------------------------

// The same graph as parallel_pipeline: a serial_in_order input filter that runs the
// same `arrivals` (it is called by one worker thread at a time; while it waits for an
// item's due time that thread waits, as the sluice source thread does), the stages
// as filters, a serial sink. Live tokens: capacity x channels of the sluice graph
// (or --tokens), the same bound on items in flight.
bench_result run_tbb(const bench_config& c, const feed& f, progress& prog) {
  bench_result r;
  r.engine = "tbb";
  r.open_loop = f.rate > 0;
  r.offered = f.rate;
  r.window_s = static_cast<double>(f.duration_ns) * 1e-9;
  r.copies = 1;
  std::atomic<std::uint64_t> delivered{0};
  const std::string payload(static_cast<std::size_t>(c.item_size), 'x');
  arrivals arr(f);
  std::uint64_t next = 0;
  const std::size_t channels = static_cast<std::size_t>(sluice_channels(c));
  // capacity x channels, saturating: a huge --capacity must not wrap to a few tokens.
  const std::size_t cap = static_cast<std::size_t>(c.capacity);
  const std::size_t tokens =
      c.tokens != 0 ? static_cast<std::size_t>(c.tokens)
                    : std::max<std::size_t>(1, cap > SIZE_MAX / channels ? SIZE_MAX : cap * channels);

  tbb::filter<void, bench_item> chain = tbb::make_filter<void, bench_item>(
      tbb::filter_mode::serial_in_order, [&](tbb::flow_control& fc) -> bench_item {
        const auto stamp = arr.next();
        if (!stamp) {
          fc.stop();
          return {};
        }
        return bench_item{next++, *stamp, payload};
      });
  if (c.topo == topology_kind::chain) {
    for (std::size_t i = 0; i < c.n; ++i) {
      const work_spec w = work_for(c, i);
      chain = chain & tbb::make_filter<bench_item, bench_item>(
                          c.replicas > 1 ? tbb::filter_mode::parallel : tbb::filter_mode::serial_in_order,
                          [w](bench_item v) {
                            work_on(v, w);
                            return v;
                          });
    }
  } else {
    const work_spec w = work_for(c, 0);
    chain = chain & tbb::make_filter<bench_item, bench_item>(tbb::filter_mode::parallel, [w](bench_item v) {
      work_on(v, w);
      return v;
    });
  }
  auto sink = tbb::make_filter<bench_item, void>(  // a serial filter: one thread at a time
      c.ordered ? tbb::filter_mode::serial_in_order : tbb::filter_mode::serial_out_of_order,
      [&r, &delivered](bench_item v) { take_delivery(r, delivered, v); });
  // TBB's own scheduler decides the threads (its default: one per core).
  const int threads = tbb::info::default_concurrency();
  const double cpu0 = process_cpu_s();
  const auto t0 = clock::now();
  {
    bench_progress bp(prog, run_label("tbb", c, f), expected_deliveries(c, f), delivered, r.series);
    tbb::parallel_pipeline(tokens, chain & sink);
    bp.finish();
  }
  r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
  r.cpu_s = process_cpu_s() - cpu0;
  r.delivered = delivered.load();
  r.sent = arr.sent();
  r.due = arr.due();
  r.window_s = static_cast<double>(arr.window_ns()) * 1e-9;
  r.cut = arr.was_cut() || r.unfinished != 0;
  r.t0_ns = arr.t0_ns();
  r.detail = "parallel_pipeline, " + std::to_string(tokens) + " tokens, " + std::to_string(threads) + " worker threads";
  return r;
}

// The state a bench keeps from run to run.
struct bench_session {
  progress prog{"bench"};
  std::string served_at;  // where the live view was served, "" before the first run
  std::string last_engine;  // the engine of the run before, "" before the first
};

// An open-loop run that follows the other engine's run is preceded by an unmeasured run
// of its own engine, kWarmUpNs (200 ms) long, at the same rate. On the 16-core device (2026-12-04, `--sweep --engine
// both`) the first sluice row after a oneTBB run had p99s of 45 us to 2.8 ms where the
// same row alone had 10-20 us; a 300 ms pause between engines took that off sluice's
// rows and put it on oneTBB's first row after a sluice run instead (p99 11-13 ms). Neither
// engine's first row after a switch was fair; a warm-up run of the engine about to be
// measured is the same for both (benchmarks/README.md, "Latency on 16 cores").
constexpr std::int64_t kWarmUpNs = 200'000'000;

// One run of `engine`, or none when ^C cut it before its first item (nothing to show);
// a --capacity whose channels cannot exist is a usage error.
std::optional<bench_result> run_engine(const std::string& engine, const bench_config& c, const feed& f,
                                       bench_session& s) {
  const bool warm_up = f.rate > 0 && !s.last_engine.empty() && s.last_engine != engine;
  s.last_engine = engine;
  const auto once = [&](const feed& ff) {
    return engine == "tbb" ? run_tbb(c, ff, s.prog) : run_sluice(c, ff, s.prog, s.served_at);
  };
  try {
    if (warm_up) (void)once(feed{f.rate, f.max_items, kWarmUpNs});
    if (interrupted()) return std::nullopt;
    bench_result r = once(f);
    if (interrupted() && r.sent == 0) return std::nullopt;
    r.warm_up_s = warm_up ? static_cast<double>(kWarmUpNs) / 1e9 : 0;
    return r;
  } catch (const std::exception& e) {
    // A --capacity whose channels cannot exist: sluice's graph builder throws
    // std::invalid_argument (not addressable) or a std::bad_alloc (more than this
    // machine's memory), "sluice::graph: stage 'S': capacity N needs ...". That is a bad
    // value on the command line: one line, exit 2, before anything ran.
    const std::string_view what = e.what();
    const std::string key = "': capacity " + std::to_string(c.capacity) + " ";
    const std::size_t at = what.find(key);
    const bool capacity_error = (dynamic_cast<const std::invalid_argument*>(&e) != nullptr ||
                                 dynamic_cast<const std::bad_alloc*>(&e) != nullptr) &&
                                what.starts_with("sluice::graph: stage '") && at != std::string_view::npos;
    if (!capacity_error) throw;
    throw usage_error("sluice bench: --capacity " + c.capacity_text + " is too large: a channel " +
                      std::string(what.substr(at + key.size())));
  }
}

// ---- output -------------------------------------------------------------------

std::string us(std::uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(ns) / 1e3);
  return buf;
}

std::string lat(std::uint64_t ns) { return format_duration(nanoseconds(static_cast<std::int64_t>(ns))); }

// A run that timed no item (cut before its first delivery) has no latency: "-" in the
// tables, null in the JSON, no counter or point in gbench and the report (it showed
// p50 = p99 = max = 0 ns, as if the items had taken no time).
constexpr double kMax = 2.0;  // q of quantile_of: the maximum
std::uint64_t quantile_of(const bench::log_histogram& h, double q) { return q >= kMax ? h.max() : h.quantile(q); }
std::string lat(const bench::log_histogram& h, double q) { return h.count() == 0 ? "-" : lat(quantile_of(h, q)); }
std::string us(const bench::log_histogram& h, double q) { return h.count() == 0 ? "-" : us(quantile_of(h, q)); }

// The latencies every writer shows, in this order: the tables' column, the key in the
// JSON and in the gbench counters (key + "_us"), and the q of quantile_of.
struct shown_latency {
  const char* column;
  const char* key;
  double q;
};
constexpr std::array<shown_latency, 4> kShownLatencies{
    {{"p50", "p50", 0.50}, {"p99", "p99", 0.99}, {"p99.9", "p999", 0.999}, {"max", "max", kMax}}};

std::string load_text(const bench_result& r) {
  if (!r.open_loop) return "closed loop";
  if (r.load_of.empty()) return "--rate";
  return percent(r.load_fraction) + " of " + r.load_of;
}

std::string work_summary(const bench_config& c) {
  std::string work;
  for (std::size_t i = 0; i < c.work.size(); ++i) {
    if (i) work += ',';
    work += c.work[i].text();
  }
  return work;
}

void print_header(const bench_config& c, const std::string& what) {
  std::printf("sluice bench%s: %s, %llu B items, work %s per stage, capacity %llu, replicas %llu%s\n", what.c_str(),
              c.topo_text.c_str(), static_cast<unsigned long long>(c.item_size), work_summary(c).c_str(),
              static_cast<unsigned long long>(c.capacity),
              static_cast<unsigned long long>(c.topo == topology_kind::farm ? c.n : c.replicas),
              c.ordered ? ", ordered" : "");
  if (c.fuse) {
    std::printf("  (--fuse: sluice runs the %zu maps%s on the source's thread%s)\n", c.n, c.fuse_sink ? " and the sink" : "",
                c.fuse_sink ? "" : "; the sink has its own");
  }
}

void print_stage_shares(const std::vector<bench_result>& rs) {
  for (const auto& r : rs) {
    if (!r.detail.empty()) std::printf("  (%s: %s)\n", r.engine.c_str(), r.detail.c_str());
    if (!r.snap) continue;
    std::printf("\n  %s stages            replicas      items    busy  backpressured  starved\n", r.engine.c_str());
    for (const auto& st : r.snap->stages) {
      const auto sh = metrics::shares_of(st);
      std::printf("  %-26s %8zu %10llu %6.1f%% %13.1f%% %7.1f%%%s\n", st.name.c_str(), st.replicas,
                  static_cast<unsigned long long>(st.items_in ? st.items_in : st.items_out), 100 * sh.busy,
                  100 * sh.backpressured, 100 * sh.starved,
                  r.snap->bottleneck && *r.snap->bottleneck == st.name ? "   <- bottleneck" : "");
    }
    std::printf("  bottleneck: %s\n", r.snap->bottleneck ? r.snap->bottleneck->c_str() : "none (no stage stands out)");
    if (!r.balanced) std::printf("  WARNING: channel accounting does not balance\n");
  }
}

// Whether every result sent the same number of items: runs that end by --items do, runs
// that end by --duration (or by ^C) each send what they could.
bool same_items(const std::vector<bench_result>& rs) {
  return std::all_of(rs.begin(), rs.end(), [&](const bench_result& r) { return r.sent == rs.front().sent; });
}

void print_table(const bench_config& c, const std::vector<bench_result>& rs) {
  print_header(c, "");
  // Each engine's own count where they differ: with --duration --engine both, the line
  // gave sluice's count for both (1,060,643 items, where tbb had sent 493 k).
  if (same_items(rs)) {
    std::printf("  %llu items\n\n", static_cast<unsigned long long>(rs.empty() ? 0 : rs[0].sent));
  } else {
    std::printf("  items:");
    for (const auto& r : rs) std::printf(" %s %llu", r.engine.c_str(), static_cast<unsigned long long>(r.sent));
    std::printf("\n\n");
  }
  std::printf("  %-8s %12s %12s", "engine", "items/s", "bytes/s");
  for (const auto& l : kShownLatencies) std::printf(" %10s", l.column);
  std::printf(" %9s\n", "time");
  for (const auto& r : rs) {
    std::printf("  %-8s %12s %12s", r.engine.c_str(), (si(r.items_per_s()) + "/s").c_str(),
                (format_size(r.items_per_s() * static_cast<double>(c.item_size)) + "/s").c_str());
    for (const auto& l : kShownLatencies) std::printf(" %10s", lat(r.hist, l.q).c_str());
    std::printf(" %9s\n", format_duration(nanoseconds(static_cast<std::int64_t>(r.elapsed_s * 1e9))).c_str());
  }
  print_stage_shares(rs);
}

// Open-loop rows: offered, achieved, latency from the due time in microseconds.
void print_open_rows(const std::vector<const bench_result*>& rs, bool with_load) {
  std::printf("  %-8s %s%12s %12s", "engine", with_load ? "load             " : "", "offered/s", "achieved/s");
  for (const auto& l : kShownLatencies) std::printf(" %10s", (std::string(l.column) + " us").c_str());
  std::printf("\n");
  for (const bench_result* r : rs) {
    std::printf("  %-8s ", r->engine.c_str());
    if (with_load) std::printf("%-16s ", load_text(*r).c_str());
    std::printf("%12s %12s", si(r->offered).c_str(), si(r->achieved()).c_str());
    for (const auto& l : kShownLatencies) std::printf(" %10s", us(r->hist, l.q).c_str());
    std::printf("%s\n", r->saturated() ? "  saturated" : "");
  }
}

// How long an open-loop run offers its rate: with --items, it ends at that count if that
// comes before the duration.
std::string open_span(const bench_config& c, std::int64_t duration_ns) {
  return format_duration(nanoseconds(duration_ns)) +
         (c.items_given ? " or " + std::to_string(c.items) + " items, whichever ends first" : "");
}

void print_open_table(const bench_config& c, const std::vector<bench_result>& rs, std::int64_t duration_ns) {
  print_header(c, " --rate");
  std::printf("  open loop: %sitems/s offered for %s, latency from each item's due time\n\n", si(c.rate).c_str(),
              open_span(c, duration_ns).c_str());
  std::vector<const bench_result*> v;
  for (const auto& r : rs) v.push_back(&r);
  print_open_rows(v, false);
  for (const auto& r : rs) {
    if (r.saturated()) {
      std::printf("  (%s: saturated: achieved %.1f%% of the offered rate; latency grows with the run)\n",
                  r.engine.c_str(), 100 * r.achieved() / r.offered);
      if (r.unsent() > 0) {
        std::printf("  (%s: %llu of the %llu items due were never sent, the source being behind: the percentiles\n"
                    "   leave out those latest, slowest items, so they are lower bounds; the run took %.2f s more\n"
                    "   to deliver what was sent)\n",
                    r.engine.c_str(), static_cast<unsigned long long>(r.unsent()),
                    static_cast<unsigned long long>(r.due), r.drain_s());
      }
    }
  }
  print_stage_shares(rs);
}

const bench_result* find_point(const std::vector<bench_result>& rs, const std::string& engine, const std::string& of,
                               double fraction) {
  for (const auto& r : rs) {
    if (r.open_loop && r.engine == engine && r.load_of == of && std::fabs(r.load_fraction - fraction) < 1e-9) return &r;
  }
  return nullptr;
}

void print_sweep_table(const bench_config& c, const std::vector<bench_result>& rs,
                       const std::map<std::string, double>& maxima, std::int64_t duration_ns) {
  print_header(c, " --sweep");
  // The probe's own length: --items can end it before --probe-duration.
  double probe_s = 0;
  for (const auto& r : rs) {
    if (!r.open_loop) probe_s = std::max(probe_s, r.elapsed_s);
  }
  std::printf("  closed-loop maximum (%s run):",
              format_duration(probe_s > 0 ? std::chrono::nanoseconds(static_cast<std::int64_t>(probe_s * 1e9)) : c.probe).c_str());
  for (const auto& [e, m] : maxima) std::printf("  %s %sitems/s", e.c_str(), si(m).c_str());
  std::printf("\n  open loop for %s, at each rate; latency from each item's due time\n", open_span(c, duration_ns).c_str());
  for (const auto& [e, m] : maxima) {
    std::vector<const bench_result*> v;
    for (const auto& r : rs) {
      if (r.open_loop && r.engine == e && r.load_of == e) v.push_back(&r);
    }
    std::printf("\n");
    print_open_rows(v, true);
  }
  if (maxima.size() == 2 && maxima.count("tbb") != 0) {
    std::printf("\n  same offered load, both engines (shares of tbb's maximum); p50 / p99 / p99.9 in us\n");
    std::printf("  %-8s %12s  %-36s %s\n", "load", "offered/s", "sluice", "tbb");
    for (const double fr : c.shared_at) {
      const bench_result* s = find_point(rs, "sluice", "tbb", fr);
      const bench_result* t = find_point(rs, "tbb", "tbb", fr);
      if (s == nullptr || t == nullptr) continue;
      auto cell = [](const bench_result* r) {
        return us(r->hist, 0.50) + " / " + us(r->hist, 0.99) + " / " + us(r->hist, 0.999) +
               (r->saturated() ? " sat" : "");
      };
      std::printf("  %-8s %12s  %-36s %s\n", percent(fr).c_str(), si(t->offered).c_str(), cell(s).c_str(),
                  cell(t).c_str());
    }
  }
  bool any = false;
  for (const auto& r : rs) any = any || r.saturated();
  if (any) std::printf("\n  saturated: achieved below 95%% of the offered rate; its latency grows with the run\n");
  for (const auto& r : rs) {
    if (!r.detail.empty()) {
      std::printf("  (%s: %s)\n", r.engine.c_str(), r.detail.c_str());
      break;
    }
  }
}

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string result_json(const bench_config& c, const bench_result& r) {
  std::string o = "{\"engine\":" + json_escape(r.engine) + ",\"mode\":" +
                  json_escape(r.open_loop ? "open_loop" : "closed_loop");
  o += ",\"offered_per_s\":" + (r.open_loop ? num(r.offered) : std::string("null"));
  o += ",\"achieved_per_s\":" + num(r.achieved());
  o += ",\"saturated\":";
  o += r.saturated() ? "true" : "false";
  o += ",\"load_of\":" + (r.load_of.empty() ? std::string("null") : json_escape(r.load_of));
  o += ",\"load_fraction\":" + (r.load_of.empty() ? std::string("null") : num(r.load_fraction));
  o += ",\"warm_up_s\":" + num(r.warm_up_s);
  o += std::string(",\"cut_short\":") + (r.cut ? "true" : "false");
  o += ",\"items_unfinished\":" + std::to_string(r.unfinished);
  o += ",\"items_sent\":" + std::to_string(r.sent) + ",\"expected_deliveries\":" + std::to_string(r.sent * r.copies);
  o += ",\"items_due\":" + (r.open_loop ? std::to_string(r.due) : std::string("null"));
  o += ",\"items_unsent\":" + (r.open_loop ? std::to_string(r.unsent()) : std::string("null"));
  o += ",\"drain_s\":" + (r.open_loop ? num(r.drain_s()) : std::string("null"));
  o += ",\"items_delivered\":" + std::to_string(r.delivered) + ",\"elapsed_s\":" + num(r.elapsed_s) +
       ",\"cpu_s\":" + num(r.cpu_s) + ",\"items_per_s\":" + num(r.items_per_s()) +
       ",\"bytes_per_s\":" + num(r.items_per_s() * static_cast<double>(c.item_size)) + ",\"latency_ns\":{\"count\":" +
       std::to_string(r.hist.count());
  const bool timed = r.hist.count() != 0;
  const auto ns_at = [&](double q) { return timed ? std::to_string(quantile_of(r.hist, q)) : std::string("null"); };
  const auto us_at = [&](double q) {
    return timed ? num(static_cast<double>(quantile_of(r.hist, q)) / 1e3) : std::string("null");
  };
  for (const auto& l : kShownLatencies) o += ",\"" + std::string(l.key) + "\":" + ns_at(l.q);
  o += ",\"mean\":" + (timed ? num(r.hist.mean()) : std::string("null")) + "}";
  o += ",\"latency_us\":{";
  for (const auto& l : kShownLatencies) {
    o += (&l == kShownLatencies.data() ? "\"" : ",\"") + std::string(l.key) + "\":" + us_at(l.q);
  }
  o += "}";
  o += ",\"balanced\":";
  o += r.balanced ? "true" : "false";
  o += ",\"detail\":" + json_escape(r.detail);
  o += ",\"throughput\":[";
  for (std::size_t i = 0; i < r.series.size(); ++i) {
    o += (i ? ",[" : "[") + num(r.series[i].first) + "," + num(r.series[i].second) + "]";
  }
  o += "]";
  if (r.snap) {
    o += ",\"bottleneck\":" + (r.snap->bottleneck ? json_escape(*r.snap->bottleneck) : std::string("null"));
    o += ",\"metrics\":" + metrics::to_json(*r.snap);
  } else {
    o += ",\"bottleneck\":null,\"metrics\":null";
  }
  return o + '}';
}

// "items": the run's item limit; null when it had none (a --rate or --duration run
// without --items ends by its clock).
void print_json(const bench_config& c, const std::vector<bench_result>& rs, const std::map<std::string, double>& maxima,
                std::int64_t duration_ns, std::uint64_t max_items) {
  const char* mode = c.sweep ? "sweep" : c.rate > 0 ? "open_loop" : "closed_loop";
  std::string o = "{\"mode\":" + json_escape(mode) + ",\"topology\":" + json_escape(c.topo_text) +
                  ",\"items\":" + (max_items == UINT64_MAX ? std::string("null") : std::to_string(max_items)) +
                  ",\"item_size\":" + std::to_string(c.item_size) +
                  ",\"capacity\":" + std::to_string(c.capacity) +
                  ",\"replicas\":" + std::to_string(c.topo == topology_kind::farm ? c.n : c.replicas) +
                  ",\"ordered\":" + (c.ordered ? "true" : "false") + ",\"fuse\":" + json_escape(c.fuse_sink ? "maps+sink" : c.fuse ? "maps" : "none") +
                  ",\"work\":[";
  for (std::size_t i = 0; i < c.work.size(); ++i) {
    if (i) o += ',';
    o += "{\"kind\":" + json_escape(c.work[i].sleep ? "sleep" : "spin") + ",\"ns\":" + std::to_string(c.work[i].d.count()) + "}";
  }
  o += "]";
  o += ",\"duration_s\":" + (duration_ns > 0 ? num(static_cast<double>(duration_ns) * 1e-9) : std::string("null"));
  if (c.rate > 0) o += ",\"offered_per_s\":" + num(c.rate);
  if (c.sweep) {
    o += ",\"closed_loop_max_per_s\":{";
    bool first = true;
    for (const auto& [e, m] : maxima) {
      o += (first ? "" : ",") + json_escape(e) + ":" + num(m);
      first = false;
    }
    o += "}";
  }
  // Closed loop: every result delivers what it sent x copies; one figure for all when they
  // sent the same (the runs ended by count), else null (each result has its own: with
  // --duration --engine both this was sluice's, said of tbb too).
  if (!c.sweep && c.rate <= 0) {
    o += ",\"expected_deliveries\":" + (same_items(rs) ? std::to_string(rs.empty() ? 0 : rs[0].sent * copies(c)) : std::string("null"));
  }
  // ^C: the signal's name (each result's cut_short says whether its source stopped early).
  const int sig = g_interrupted.load(std::memory_order_relaxed);
  o += ",\"interrupted_by\":" + (sig != 0 ? json_escape(signal_name(sig)) : std::string("null"));
  o += ",\"results\":[";
  for (std::size_t k = 0; k < rs.size(); ++k) o += (k ? "," : "") + result_json(c, rs[k]);
  o += "]}\n";
  std::fputs(o.c_str(), stdout);
}

void print_gbench(const bench_config& c, const std::vector<bench_result>& rs) {
  std::vector<bench::gbench_entry> rows;
  for (const auto& r : rs) {
    bench::gbench_entry e;
    std::string name = c.topo_text + "/cap:" + std::to_string(c.capacity);
    // Every option that changes what is measured is in the name: two runs that differ only
    // in it were two entries of one name, which compare.py cannot tell apart.
    if (c.item_size != 64) name += "/item:" + std::to_string(c.item_size);
    if (work_summary(c) != "0") name += "/work:" + work_summary(c);
    if (c.replicas > 1) name += "/replicas:" + std::to_string(c.replicas);
    if (c.ordered) name += "/ordered";
    if (c.fuse) name += c.fuse_sink ? "/fuse:maps+sink" : "/fuse:maps";
    if (!r.open_loop) {
      name += "/closed";
    } else if (r.load_of.empty()) {
      name += "/rate:" + num(r.offered);
    } else {
      name += "/load:" + percent(r.load_fraction) + "_of_" + r.load_of;
    }
    e.name = name + "/" + r.engine;
    e.iterations = r.delivered;
    e.items_per_second = r.open_loop ? r.achieved() * static_cast<double>(r.copies) : r.items_per_s();
    e.real_time_ns = e.items_per_second > 0 ? 1e9 / e.items_per_second : 0;
    e.cpu_time_ns = r.delivered ? r.cpu_s * 1e9 / static_cast<double>(r.delivered) : 0;
    if (r.hist.count() != 0) {
      for (const auto& l : kShownLatencies) {
        e.counters.emplace_back(std::string(l.key) + "_us", static_cast<double>(quantile_of(r.hist, l.q)) / 1e3);
      }
    }
    if (r.open_loop) {
      e.counters.emplace_back("offered_per_s", r.offered);
      e.counters.emplace_back("achieved_per_s", r.achieved());
      e.counters.emplace_back("saturated", r.saturated() ? 1 : 0);
    }
    // A run ^C cut short is no measurement of its configuration: compare.py and other
    // readers of this format see it marked failed, not as a shorter run of the same name.
    const int sig = g_interrupted.load(std::memory_order_relaxed);
    if (r.cut && sig != 0) {
      e.error = "interrupted by " + signal_name(sig) +
                (r.unfinished != 0 ? ": items' work was cut short" : ": the source stopped sending early");
    }
    rows.push_back(std::move(e));
  }
  std::vector<std::pair<std::string, std::string>> context = {
      {"sluice_topology", c.topo_text}, {"sluice_capacity", std::to_string(c.capacity)},
      {"sluice_work", work_summary(c)}, {"sluice_item_size", std::to_string(c.item_size)}};
  if (const int sig = g_interrupted.load(std::memory_order_relaxed); sig != 0) {
    context.emplace_back("sluice_interrupted_by", signal_name(sig));
  }
  const std::string doc = bench::gbench_json(rows, context);
  std::fputs(doc.c_str(), stdout);
}

// --report: the graph picture and throughput of one sluice run (the closed-loop one of a
// sweep: its shares show the bottleneck at full load; else the last), latency points
// of every open-loop run.
// After ^C, what the results are: none, or the last one's source stopped early, or
// (^C while it drained, during the next engine's unmeasured warm-up, or between runs)
// every run shown ran to its end.
std::string interrupted_clause(const std::vector<bench_result>& rs) {
  if (rs.empty()) return "no run sent an item before it, so there is nothing to show";
  if (!rs.back().cut) return "every run shown ran to its end, and no other run was measured";
  if (rs.back().unfinished != 0) {
    return "the last run was cut short: " + std::to_string(rs.back().unfinished) +
           " items whose work it cut are not counted as delivered, and no run started after it";
  }
  return "the last run stopped sending early, and no run started after it";
}

report_data make_report(const bench_config& c, const std::vector<bench_result>& rs) {
  report_data d;
  d.title = "sluice bench " + c.topo_text + ", capacity " + std::to_string(c.capacity) + ", work " +
            work_summary(c) + (c.sweep ? ", sweep" : c.rate > 0 ? ", open loop at " + si(c.rate) + "items/s" : "");
  const bench_result* pick = nullptr;
  for (const auto& r : rs) {
    if (!r.snap) continue;
    if (pick == nullptr || (c.sweep ? !r.open_loop && pick->open_loop : true)) pick = &r;
    if (c.sweep && !r.open_loop) break;
  }
  if (pick == nullptr && !rs.empty()) pick = &rs.back();
  if (const int sig = g_interrupted.load(std::memory_order_relaxed); sig != 0) {
    d.note = std::string("Interrupted by ") + ::strsignal(sig) + ": " + interrupted_clause(rs) + ".";
  }
  if (pick != nullptr) {
    if (pick->snap) d.snapshot_json = metrics::to_json(*pick->snap);
    d.throughput = pick->series;
    // Which run they show: a sweep's are its closed-loop probe at full load, not any row
    // of its latency table (the report did not say).
    d.shown_run = pick->engine + (pick->open_loop ? " at " + si(pick->offered) + "items/s offered"
                                                  : std::string(", closed loop") + (c.sweep ? " (the sweep's full-load run)" : ""));
  }
  for (const auto& r : rs) {
    if (!r.open_loop || r.hist.count() == 0) continue;
    latency_point lp;
    lp.offered_per_s = r.offered;
    lp.achieved_per_s = r.achieved();
    lp.p50_us = static_cast<double>(r.hist.quantile(0.5)) / 1e3;
    lp.p99_us = static_cast<double>(r.hist.quantile(0.99)) / 1e3;
    lp.p999_us = static_cast<double>(r.hist.quantile(0.999)) / 1e3;
    lp.engine = r.engine;
    lp.saturated = r.saturated();
    lp.unsent = r.unsent();
    lp.due = r.due;
    d.latency.push_back(std::move(lp));
  }
  return d;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  // --help anywhere shows the help (arg_parser::parse), a cut run's options given too
  // ("--via=URL --help" was "unknown option --via"): the cut and --via checks wait for it.
  bool via = false, help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") break;
    help = help || a == "--help" || a == "-h";
    via = via || a == "--via" || a.starts_with("--via=");
  }
#if SLUICE_HAVE_JETSTREAM
  if (!help && bench::wants_cut(argc, argv)) return bench::cmd_bench_cut(argc, argv);
#endif
  // --via belongs to a cut run: alone, it was "unknown option --via", though --help shows it.
  if (via && !help) throw usage_error("sluice bench: --via applies to --cut K; give --cut too");
  bench_config c;
  bool json_flag = false;
  arg_parser p("sluice bench",
               "Throughput and end-to-end latency of a synthetic stage graph. Each worker stage does\n"
               "--work per item; the source stamps items, the sink measures latency. Closed loop by\n"
               "default; --rate offers load open-loop, --sweep measures latency against offered load.");
  p.custom("--topology", "SHAPE", "chain:N | farm:N | fanout:N | diamond", c.topo_text,
           [&](std::string_view v) { return parse_topology(v, c); }, "chain:N, farm:N, fanout:N (N in 1..64) or diamond");
  p.custom("--items", "N", "items the source sends (closed loop: the run's end; with --duration, --rate or --sweep: a cap, none by default)",
           "1000000",
           [&](std::string_view v) {
             const auto n = parse_count(v);
             if (!n) p.bad("--items", v, p.count_expected(v));  // as --capacity says it
             c.items = *n;
             c.items_given = true;
             return true;
           },
           "a whole number like 1000 or 10k");
  p.size("--item-size", &c.item_size, "payload bytes per item");
  p.custom("--work", "WORK", "per item and stage: ns of busy spin (200ns, 2us) or sleep:10us; a comma list gives one per stage",
           c.work_text, [&](std::string_view v) { return parse_work_list(v, c.work); },
           "a duration like 200ns, spin:2us or sleep:10us (comma-separated per stage)");
  p.count("--capacity", &c.capacity, "items per channel");
  p.count("--replicas", &c.replicas, "threads per worker stage (chain, fanout, diamond)", {1, 256, "1 to 256"});
  p.flag("--ordered", &c.ordered, "replicated stages keep input order");
  p.flag("--fuse", &c.fuse, "chain: run the worker maps on the source's thread (stage_options::fuse; the sink keeps its own)");
  p.flag("--fuse-sink", &c.fuse_sink, "chain, with --fuse: fuse the sink too (the whole chain on one thread)");
  p.custom("--engine", "ENGINE", "sluice | tbb | both (tbb: chain and farm only)", c.engine,
           [&](std::string_view v) {
             if (v != "sluice" && v != "tbb" && v != "both") return false;
             c.engine = std::string(v);
             return true;
           },
           "sluice, tbb or both");
  p.count("--tokens", &c.tokens, "tbb: max live tokens (0: capacity x channels)");
  p.custom("--rate", "R", "open loop: offer R items/s (1000, 50k, 2.5M); latency from each item's due time", "off",
           [&](std::string_view v) {
             const auto r = parse_count_rate(v);
             if (!r) return false;
             c.rate = *r;
             return true;
           },
           "items per second above 0, like 1000, 50k, 2.5M or 0.5 (plain decimals, no exponent; at most 1000G)");
  p.custom("--duration", "TIME", "how long a run offers load (--rate, each --sweep rate); a closed-loop run given it stops sending then and ends once what it sent has drained, with no --items cap unless --items is given too",
           "2s open loop",
           [&](std::string_view v) {
             const auto d = parse_duration(v);
             if (!d || d->count() <= 0) return false;
             c.duration = *d;
             return true;
           },
           "a duration above 0 and under 292 years, like 500ms or 2s (plain decimals, no exponent)");
  p.flag("--sweep", &c.sweep, "each engine's closed-loop maximum, then open-loop latency at --sweep-at shares of it");
  p.custom("--sweep-at", "PCTS", "--sweep: offered loads in percent of each engine's own maximum", "10,25,50,75,90,100",
           [&](std::string_view v) { return parse_percent_list(v, c.sweep_at); },
           "percentages like 10,50,90 (each above 0, at most 1000, none repeated)");
  p.custom("--shared-at", "PCTS", "--sweep --engine both: both engines also at these percent of tbb's maximum", "10,50,90",
           [&](std::string_view v) { return parse_percent_list(v, c.shared_at); },
           "percentages like 10,50,90 (each above 0, at most 1000, none repeated)");
  p.custom("--probe-duration", "TIME", "--sweep: length of the closed-loop run that finds each engine's maximum", "1s",
           [&](std::string_view v) {
             // Shorter, the run measures the graph's start-up, not its maximum: 100 us found
             // 95 items/s for a graph that moves 3 M/s, and every "share" of it was ~0% load.
             const auto d = parse_duration(v);
             if (!d || *d < kMinProbe) return false;
             c.probe = *d;
             return true;
           },
           "a duration of at least 100ms (a shorter run measures the graph's start-up, not its maximum) and "
           "under 292 years, like 500ms or 1s (plain decimals, no exponent)");
  p.custom("--format", "FORMAT", "table | json | gbench (Google Benchmark's JSON, for compare.py)", "table",
           [&](std::string_view v) {
             if (v == "table") {
               c.format = out_format::table;
             } else if (v == "json") {
               c.format = out_format::json;
             } else if (v == "gbench") {
               c.format = out_format::gbench;
             } else {
               return false;
             }
             return true;
           },
           "table, json or gbench");
  p.flag("--json", &json_flag, "same as --format json");
  p.text("--report", &c.report, "FILE.html",
         "write a self-contained HTML report: the graph with its shares, throughput over time, latency curves (an existing FILE must be an earlier report)");
  p.text("--serve", &c.serve, "ADDR", "the live view while sluice runs, at HOST:PORT (port 0: any free one; the URL goes to stderr)");
  p.epilog(
      "examples:\n"
      "  sluice bench --topology chain:4 --items 1M --engine both\n"
      "  sluice bench --topology farm:4 --work 2us --json\n"
      "  sluice bench --topology chain:5 --work 100ns,100ns,1us,100ns,100ns\n"
      "  sluice bench --topology chain:1 --work sleep:1ms --rate 100 --duration 3s\n"
      "  sluice bench --topology chain:4 --capacity 64 --sweep --engine both --report sweep.html\n"
      "  sluice bench --topology chain:4 --format gbench > sluice.json   # compare.py reads it\n"
      "\n"
      "across processes (a JetStream edge, DESIGN.md section 7; a run of its own, with these options only):\n"
      "  --cut K --via nats://HOST:PORT   run the source and workers 1..K, and the rest, in two processes\n"
      "                                   joined by a JetStream edge (a nats-server with -js), and report both\n"
      "  --role producer|consumer         run one side only (one per machine); --stream NAME names the edge\n"
      "  --topology chain:N --items N --item-size B --work W --capacity C\n"
      "  --edge-capacity M                the edge stream's max_msgs (default 4096)\n"
      "  sluice bench --topology chain:4 --cut 2 --via nats://127.0.0.1:4222");
  if (!p.parse(argc, argv)) return 0;
#if !SLUICE_HAVE_SERVE
  if (!c.serve.empty()) throw usage_error("sluice bench: --serve: this sluice was built without cpp-httplib (libcpp-httplib-dev)");
#else
  // A malformed address is a bad command line (exit 2), found before anything runs.
  if (p.given("--serve")) {
    try {
      metrics::check_address(c.serve);
    } catch (const std::invalid_argument& e) {
      std::string why = e.what();
      if (const auto at = why.find("address '"); at != std::string::npos) why.erase(0, at);
      throw usage_error("sluice bench: --serve: " + why);
    }
    if (c.engine == "tbb") throw usage_error("sluice bench: --serve shows sluice runs; --engine tbb has none");
  }
#endif
  if (json_flag) {
    if (p.given("--format") && c.format != out_format::json) {
      throw usage_error("sluice bench: --json and --format " + *p.given("--format") + " ask for two formats; give one");
    }
    c.format = out_format::json;
  }
  check_report_name("sluice bench", c.report,
                    c.format == out_format::json ? "JSON" : c.format == out_format::gbench ? "Google Benchmark JSON" : nullptr);
  if (c.items == 0) p.reject("--items", "at least 1");
  if (c.capacity == 0) p.reject("--capacity", "at least 1");
  c.capacity_text = detail::one_line(p.given("--capacity").value_or(std::to_string(c.capacity)));
  if (c.item_size > (64ULL << 20)) p.reject("--item-size", "at most 64MiB");
  const std::size_t workers = worker_names(c).size();
  if (c.work.size() != 1 && c.work.size() != workers) {
    throw usage_error("sluice bench: --work lists " + std::to_string(c.work.size()) + " values but " + c.topo_text +
                      " has " + std::to_string(workers) + " worker stages");
  }
  const bool tbb_ok = tbb_runs(c);
  if (c.engine == "tbb" && !tbb_ok) {
    throw usage_error("sluice bench: --engine tbb runs chain:N and farm:N only, not " + c.topo_text);
  }
  // --tokens bounds oneTBB's pipeline: accepted with no oneTBB run, it changed nothing.
  if (p.given("--tokens") && (c.engine == "sluice" || !tbb_ok)) {
    throw usage_error("sluice bench: --tokens sets oneTBB's live tokens, and this run has no oneTBB engine (" +
                      (c.engine == "sluice" ? std::string("--engine sluice") : "oneTBB runs chain:N and farm:N only") +
                      ")");
  }
  if (c.fuse_sink && !c.fuse) throw usage_error("sluice bench: --fuse-sink goes with --fuse");
  if (c.fuse && c.engine == "tbb") throw usage_error("sluice bench: --fuse changes sluice's runs; --engine tbb has none");
  if (c.topo == topology_kind::farm && p.given("--replicas")) {
    throw usage_error("sluice bench: --replicas does not apply to farm:N (its N is the worker's replicas)");
  }
  // --ordered keeps the input order across a stage's replicas: with none it changed nothing.
  if (c.ordered && c.topo != topology_kind::farm && c.replicas == 1) {
    throw usage_error("sluice bench: --ordered keeps the order across replicas; give --replicas N (N > 1) or farm:N");
  }
  if (c.fuse && (c.topo != topology_kind::chain || c.replicas != 1)) {
    throw usage_error("sluice bench: --fuse applies to chain:N with --replicas 1 (a fused stage runs on its upstream's thread)");
  }
  if (c.sweep && c.rate > 0) {
    throw usage_error("sluice bench: --rate and --sweep do not go together (--sweep chooses its rates)");
  }
  // The heap bytes of one item's --item-size payload (a std::string keeps 15 bytes in
  // place) and the flag as given, for the two memory checks below.
  const std::uint64_t heap_payload = c.item_size > 15 ? c.item_size + 1 : 0;
  const std::string item_size_text = detail::one_line(p.given("--item-size").value_or(std::to_string(c.item_size)));
  // The sluice graph's rings together must fit in the memory free now. Each is allocated
  // and touched as its stage is added, and the library refuses only the first one that
  // does not fit (detail::check_ring_memory): --capacity 100M on chain:4 held 21.9 GB for
  // 100 s before that error. Every channel counts (sluice_channels: counting only the
  // workers' let fanout:64 start on 40 GiB of rings where the check had counted 20).
  if (c.engine != "tbb") {
    const std::uint64_t rings = c.fuse ? (c.fuse_sink ? 0 : 1) : sluice_channels(c);  // fused stages have none
    const std::size_t slot = sluice::detail::ring_buffer<bench_item>::slot_bytes();
    const long double one = static_cast<long double>(c.capacity) * slot;
    const long double need = static_cast<long double>(rings) * one;
    const std::uint64_t free_now = sluice::detail::available_memory();  // 0: unknown
    // One ring that does not fit by itself is left to the graph's own error, which says
    // why (not addressable, more than the machine has, more than is free): run_engine.
    const bool one_fits = one <= static_cast<long double>(free_now);
    if (rings > 1 && one_fits) bench::refuse_rings_past_free_memory(c.capacity_text, c.capacity, rings, slot, "the graph's", free_now);
    // The items' payloads: every channel can fill (a slow stage downstream), each slot
    // then holding an --item-size payload of its own on the heap. 100 items of 64 MiB on
    // chain:1 grew to 3 GiB and out of memory (bad_alloc, or the OOM killer) mid-run.
    const long double payloads = static_cast<long double>(rings) * c.capacity * heap_payload;
    if (one_fits && heap_payload != 0 && need + payloads > static_cast<long double>(free_now)) {
      throw usage_error("sluice bench: --item-size " + item_size_text +
                        " with --capacity " + c.capacity_text + " is too large: the graph's " + std::to_string(rings) +
                        " channels can hold " + format_size(static_cast<double>(payloads)) +
                        " of items when full (a slow stage downstream fills them); " +
                        format_size(static_cast<double>(free_now)) +
                        " is free now: give a smaller --capacity or --item-size");
    }
  }
  // The same for oneTBB's items in flight: its live tokens (--tokens, or capacity x
  // channels, as run_tbb makes them) can each hold an item with its payload. --engine tbb
  // skipped the check above: a command the sluice engine refused ran 21 s to 3.9 GB and
  // bad_alloc under a 4 GB limit (a probe; ~13 GB without one).
  if (c.engine != "sluice" && tbb_ok) {
    const long double tokens = c.tokens != 0 ? static_cast<long double>(c.tokens)
                                             : static_cast<long double>(c.capacity) * static_cast<long double>(sluice_channels(c));
    const long double in_flight = tokens * static_cast<long double>(sizeof(bench_item) + heap_payload);
    const std::uint64_t free_now = sluice::detail::available_memory();  // 0: unknown
    if (heap_payload != 0 && free_now != 0 && in_flight > static_cast<long double>(free_now)) {
      throw usage_error("sluice bench: --item-size " + item_size_text +
                        " with " + (c.tokens != 0 ? "--tokens " + std::to_string(c.tokens) : "--capacity " + c.capacity_text) +
                        " is too large: oneTBB's " + std::to_string(static_cast<unsigned long long>(std::min(tokens, 1.8e19L))) +
                        " live tokens can hold " +
                        format_size(static_cast<double>(in_flight)) + " of items in flight; " +
                        format_size(static_cast<double>(free_now)) + " is free now: give a smaller " +
                        (c.tokens != 0 ? "--tokens" : "--capacity") + " or --item-size");
    }
  }
  // Options of a sweep given to a run that is not one were ignored without a word.
  for (const char* o : {"--sweep-at", "--shared-at", "--probe-duration"}) {
    if (!c.sweep && p.given(o)) throw usage_error(std::string("sluice bench: ") + o + " applies to --sweep; give --sweep too");
  }
  if (p.given("--shared-at") && c.engine != "both") {
    throw usage_error("sluice bench: --shared-at compares both engines; give --engine both");
  }

  // A report that cannot be written fails now, not after the whole run (throws the error
  // write_report_html would).
  if (!c.report.empty()) {
    check_writable(c.report);  // first: a path that cannot be written at all says why
    refuse_replacing_other_content("sluice bench", "--report", c.report);
  }

  std::vector<std::string> engines;
  if (c.engine != "tbb") engines.emplace_back("sluice");
  if (c.engine != "sluice" && tbb_ok) engines.emplace_back("tbb");

  const bool open = c.sweep || c.rate > 0;
  // An open-loop run lasts --duration (default 2 s), --items only caps it when given; a
  // closed-loop run ends after --items, or after --duration when that is given.
  const std::int64_t duration_ns = c.duration.count() > 0 ? c.duration.count() : open ? kDefaultOpenDuration.count() : 0;
  const std::uint64_t max_items = c.items_given || (!open && c.duration.count() == 0) ? c.items : UINT64_MAX;

  // ^C (SIGINT, SIGTERM, SIGHUP): the run in progress stops sending and drains (no item's
  // work starts after it), no other run starts, and what ran is printed (and written to
  // --report) before the exit with 128+N; a second one exits at once. Blocked before any
  // thread starts (the stages, the live view's): they inherit the mask.
  const interrupt_watch watch("sluice bench", [](int sig) {
    g_interrupted.store(sig, std::memory_order_relaxed);
    progress::notice(std::string("\nsluice bench: interrupted by ") + ::strsignal(sig) +
                                    (g_runs_over.load() ? "; the runs are over, writing their results "
                                                        : "; the run in progress stops sending and drains without starting more work, "
                                                          "no other run starts ") +
                                    "(again to exit now)\n");
  });

  bench_session session;
  std::vector<bench_result> results;
  std::map<std::string, double> maxima;
  if (!c.sweep) {
    const feed f{c.rate, max_items, duration_ns};
    for (const auto& e : engines) {
      if (interrupted()) break;
      std::optional<bench_result> r = run_engine(e, c, f, session);
      if (!r) break;
      results.push_back(std::move(*r));
    }
  } else {
    // 1. Each engine's closed-loop maximum, from a short run.
    for (const auto& e : engines) {
      if (interrupted()) break;
      std::optional<bench_result> r = run_engine(e, c, feed{0, max_items, c.probe.count()}, session);
      if (!r) break;
      // The lower of the steady delivery rate and items over the whole run: a probe cut
      // short by --items whose items all fit in the channels is delivered in one burst at
      // the end, and its burst rate (13 M/s for a graph that moved 91 k/s) was taken as
      // the maximum, so every point of the sweep offered many times what the graph takes.
      const double most = std::min(r->achieved(), r->items_per_s() / static_cast<double>(r->copies));
      results.push_back(std::move(*r));
      if (interrupted()) break;  // a maximum cut short is no maximum to take shares of
      maxima[e] = most;
      if (!(most > 0)) throw std::runtime_error("sluice bench: " + e + " delivered nothing in its closed-loop run");
    }
    // 2. Open loop at shares of each engine's own maximum.
    auto point = [&](const std::string& e, const std::string& of, double fraction) {
      if (interrupted()) return;
      std::optional<bench_result> r = run_engine(e, c, feed{maxima[of] * fraction, max_items, duration_ns}, session);
      if (!r) return;
      r->load_of = of;
      r->load_fraction = fraction;
      results.push_back(std::move(*r));
    };
    for (const auto& e : engines) {
      for (const double fr : c.sweep_at) point(e, e, fr);
    }
    // 3. Both engines at the same offered rates: shares of oneTBB's maximum (tbb's own
    //    rows serve where the shares coincide).
    if (engines.size() == 2) {
      for (const double fr : c.shared_at) {
        point("sluice", "tbb", fr);
        if (find_point(results, "tbb", "tbb", fr) == nullptr) point("tbb", "tbb", fr);
      }
    }
  }

  // A reader of stdout that is gone (`| head -1`, a closed pipe) must not kill the bench
  // with SIGPIPE half-way through its results: --report is written after them, and an
  // interrupted run exits 128+N for its signal, not 141. Ignored from here on, the failed
  // write is reported by main's check of stdout, which keeps this status.
  ::signal(SIGPIPE, SIG_IGN);
  g_runs_over.store(true);
  switch (c.format) {
    case out_format::json: print_json(c, results, maxima, duration_ns, max_items); break;
    case out_format::gbench: print_gbench(c, results); break;
    case out_format::table:
      if (c.sweep && std::none_of(results.begin(), results.end(), [](const bench_result& r) { return r.open_loop; })) {
        print_table(c, results);  // ^C during the closed-loop runs: only those ran, the last cut short
      } else if (c.sweep) {
        print_sweep_table(c, results, maxima, duration_ns);
      } else if (c.rate > 0) {
        print_open_table(c, results, duration_ns);
      } else {
        print_table(c, results);
      }
      if (c.engine == "both" && !tbb_ok) std::printf("\n  (tbb: skipped, parallel_pipeline runs chain and farm only)\n");
      break;
  }
  const int sig = g_interrupted.load(std::memory_order_relaxed);
  if (sig != 0 && c.format == out_format::table) {
    if (results.empty()) {
      std::printf("\n  (interrupted by %s before any run sent an item: nothing to show)\n", ::strsignal(sig));
    } else {
      std::printf("\n  (interrupted by %s: %s)\n", ::strsignal(sig), interrupted_clause(results).c_str());
    }
  }
  // Written even when ^C came before any run sent an item: the page says so (a --report
  // that is missing looks like a failed write).
  if (!c.report.empty()) {
    std::fflush(stdout);  // the table shows while the report is written (a FIFO may wait)
    write_report_html(c.report, make_report(c, results));
  }
  // (again: a ^C while the results were written is an interrupt too)
  if (const int s = g_interrupted.load(std::memory_order_relaxed); s != 0) {
    std::fflush(stdout);
    return 128 + s;
  }
  for (const auto& r : results) {
    if (!r.complete()) return 1;
  }
  return 0;
}

}  // namespace sluice::tool
