// tools/cmd_bench.cpp — `sluice bench`: throughput and latency of synthetic graphs.
//
// Topologies (every worker stage does --work per item; the source stamps each item
// with the time it was made, the sink records now - stamp as end-to-end latency):
//   chain:N    source -> stage-1 -> ... -> stage-N -> sink
//   farm:N     source -> work (N replicas) -> sink
//   fanout:N   source -> broadcast to branch-1..branch-N -> merge -> sink (N copies per item)
//   diamond    source -> split -> round_robin to left, right -> merge -> join -> sink
// --engine tbb runs chain and farm on oneTBB parallel_pipeline (serial_in_order
// filters for the chain's stages, a parallel filter for the farm), in the same process.
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_pipeline.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "args.hpp"
#include "commands.hpp"
#include "progress.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"
#include "sys.hpp"

namespace sluice::tool {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

// ---- configuration ------------------------------------------------------------

enum class topology_kind { chain, farm, fanout, diamond };

struct work_spec {
  bool sleep = false;
  nanoseconds d{0};
  [[nodiscard]] std::string text() const {
    if (d.count() == 0) return "0";
    return (sleep ? "sleep:" : "") + format_duration(d);
  }
};

struct bench_config {
  std::string serve;  // --serve ADDR: the live view (metrics::serve) of each sluice run
  topology_kind topo = topology_kind::chain;
  std::size_t n = 4;
  std::string topo_text = "chain:4";
  std::uint64_t items = 1'000'000;
  std::uint64_t item_size = 64;
  std::vector<work_spec> work = {work_spec{}};
  std::string work_text = "0";
  std::uint64_t capacity = 1024;
  std::uint64_t replicas = 1;
  bool ordered = false;
  std::string engine = "sluice";
  std::uint64_t tokens = 0;  // tbb: 0 = capacity x channels
  bool json = false;
};

std::optional<work_spec> parse_work(std::string_view s) {
  work_spec w;
  if (s.rfind("sleep:", 0) == 0) {
    w.sleep = true;
    s.remove_prefix(6);
  } else if (s.rfind("spin:", 0) == 0) {
    s.remove_prefix(5);
  }
  std::optional<nanoseconds> d = parse_duration(s);
  if (!d) {
    // A bare number is nanoseconds of spin.
    const auto n = parse_count(s);
    if (!n || w.sleep) return std::nullopt;
    d = nanoseconds(static_cast<std::int64_t>(*n));
  }
  w.d = *d;
  return w;
}

bool parse_work_list(std::string_view s, std::vector<work_spec>& out) {
  std::vector<work_spec> v;
  while (true) {
    const std::size_t comma = s.find(',');
    const auto w = parse_work(s.substr(0, comma));
    if (!w) return false;
    v.push_back(*w);
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

// ---- the item and the work ------------------------------------------------------

struct bench_item {
  std::uint64_t seq = 0;
  std::int64_t born_ns = 0;  // steady_clock at the source
  std::string payload;
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<nanoseconds>(clock::now().time_since_epoch()).count();
}

void do_work(const work_spec& w) {
  if (w.d.count() <= 0) return;
  if (w.sleep) {
    std::this_thread::sleep_for(w.d);
  } else {
    spin_for(w.d);
  }
}

// Log-linear histogram of nanoseconds: exact below 64, then 64 sub-buckets per power
// of two (relative error under 1.6%). One writer (the sink); read after the run.
class latency_histogram {
 public:
  latency_histogram() : counts_(64 + 58 * 64, 0) {}
  void record(std::int64_t ns) {
    const std::uint64_t v = ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
    ++counts_[index(v)];
    ++n_;
    sum_ += static_cast<double>(v);
    max_ = std::max(max_, v);
  }
  [[nodiscard]] std::uint64_t count() const { return n_; }
  [[nodiscard]] std::uint64_t max() const { return max_; }
  [[nodiscard]] double mean() const { return n_ ? sum_ / static_cast<double>(n_) : 0; }
  // The smallest recorded bucket value v such that at least q of the samples are <= v.
  [[nodiscard]] std::uint64_t quantile(double q) const {
    if (n_ == 0) return 0;
    const auto target = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= std::max<std::uint64_t>(1, target)) return std::min(upper(i), max_);
    }
    return max_;
  }

 private:
  static std::size_t index(std::uint64_t v) {
    if (v < 64) return static_cast<std::size_t>(v);
    const int e = std::bit_width(v) - 1;  // >= 6
    const std::uint64_t sub = (v >> (e - 6)) & 63;
    return 64 + static_cast<std::size_t>(e - 6) * 64 + static_cast<std::size_t>(sub);
  }
  // The largest value that falls in bucket i.
  static std::uint64_t upper(std::size_t i) {
    if (i < 64) return i;
    const std::size_t e = (i - 64) / 64 + 6;
    const std::uint64_t sub = (i - 64) % 64;
    const std::uint64_t base = (std::uint64_t{1} << e) | (sub << (e - 6));
    return base + (std::uint64_t{1} << (e - 6)) - 1;
  }
  std::vector<std::uint64_t> counts_;
  std::uint64_t n_ = 0;
  double sum_ = 0;
  std::uint64_t max_ = 0;
};

struct bench_result {
  std::string engine;
  std::uint64_t delivered = 0;
  double elapsed_s = 0;
  latency_histogram hist;
  std::optional<metrics::snapshot> snap;  // sluice only
  bool balanced = true;
  std::string detail;  // tbb: tokens and threads
  [[nodiscard]] double items_per_s() const { return elapsed_s > 0 ? static_cast<double>(delivered) / elapsed_s : 0; }
};

// Polls `delivered` every 100 ms for the progress display until stopped.
class bench_progress {
 public:
  bench_progress(progress& p, std::string label, std::uint64_t expected, const std::atomic<std::uint64_t>& delivered)
      : p_(p), label_(std::move(label)), expected_(expected), delivered_(delivered), t0_(clock::now()) {
    thread_ = std::thread([this] { loop(); });
  }
  bench_progress(const bench_progress&) = delete;
  bench_progress& operator=(const bench_progress&) = delete;
  ~bench_progress() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    p_.clear();
  }

 private:
  void loop() {
    std::unique_lock lk(mu_);
    while (!cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stop_; })) {
      // relaxed: a statistic.
      const double d = static_cast<double>(delivered_.load(std::memory_order_relaxed));
      const double t = std::chrono::duration<double>(clock::now() - t0_).count();
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s  %.0f / %.0f items delivered  %.3g items/s  (%.1f s)", label_.c_str(), d,
                    static_cast<double>(expected_), t > 0 ? d / t : 0.0, t);
      p_.update(buf);
    }
  }
  progress& p_;
  std::string label_;
  std::uint64_t expected_;
  const std::atomic<std::uint64_t>& delivered_;
  clock::time_point t0_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

const work_spec& work_for(const bench_config& c, std::size_t worker) {
  return c.work.size() == 1 ? c.work[0] : c.work[worker];
}

// ---- sluice ---------------------------------------------------------------------

bench_result run_sluice(const bench_config& c, progress& prog) {
  bench_result r;
  r.engine = "sluice";
  graph g;
  std::atomic<std::uint64_t> delivered{0};
  const std::vector<std::string> names = worker_names(c);
  stage_options base;
  base.capacity = static_cast<std::size_t>(c.capacity);

  const std::string payload(static_cast<std::size_t>(c.item_size), 'x');
  auto src = g.source<bench_item>(
      "source",
      [&c, &payload](sender<bench_item>& out, std::stop_token stop) {
        for (std::uint64_t i = 0; i < c.items; ++i) {
          if (stop.stop_requested()) return;
          if (!out.push(bench_item{i, now_ns(), payload})) return;
        }
      },
      base);
  auto worker = [&](std::size_t idx, stream<bench_item> in, std::size_t replicas) {
    stage_options o = base;
    o.replicas = replicas;
    o.ordered = c.ordered;
    const work_spec w = work_for(c, idx);
    return g.map(names[idx], in, [w](bench_item v) {
      do_work(w);
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
  latency_histogram& hist = r.hist;
  g.sink("sink", last, [&hist, &delivered](bench_item v) {
    hist.record(now_ns() - v.born_ns);
    // relaxed: a statistic for the progress display; read exactly after the join.
    delivered.fetch_add(1, std::memory_order_relaxed);
  });

  const auto t0 = clock::now();
  report rep;
  {
    bench_progress bp(prog, "sluice " + c.topo_text, c.items * copies(c), delivered);
#if SLUICE_HAVE_SERVE
    // Bound before the run starts (a bad address fails before any stage runs); the
    // server only reads snapshots, and stops before the graph is destroyed.
    std::optional<metrics::server> live;
    if (!c.serve.empty()) {
      live.emplace(metrics::serve(g, c.serve));
      std::fprintf(stderr, "sluice bench: live view at %s\n", live->url().c_str());
    }
#endif
    rep = g.run();
  }
  r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
  r.delivered = delivered.load();
  r.snap = rep.metrics;
  r.balanced = rep.balanced();
  return r;
}

// ---- oneTBB ---------------------------------------------------------------------

bench_result run_tbb(const bench_config& c, progress& prog) {
  bench_result r;
  r.engine = "tbb";
  std::atomic<std::uint64_t> delivered{0};
  const std::string payload(static_cast<std::size_t>(c.item_size), 'x');
  std::uint64_t next = 0;
  const std::size_t channels = c.topo == topology_kind::farm ? 2 : c.n + 1;
  // capacity x channels, saturating: a huge --capacity must not wrap to a few tokens.
  const std::size_t cap = static_cast<std::size_t>(c.capacity);
  const std::size_t tokens =
      c.tokens != 0 ? static_cast<std::size_t>(c.tokens)
                    : std::max<std::size_t>(1, cap > SIZE_MAX / channels ? SIZE_MAX : cap * channels);

  tbb::filter<void, bench_item> chain = tbb::make_filter<void, bench_item>(
      tbb::filter_mode::serial_in_order, [&](tbb::flow_control& fc) -> bench_item {
        if (next >= c.items) {
          fc.stop();
          return {};
        }
        return bench_item{next++, now_ns(), payload};
      });
  if (c.topo == topology_kind::chain) {
    for (std::size_t i = 0; i < c.n; ++i) {
      const work_spec w = work_for(c, i);
      chain = chain & tbb::make_filter<bench_item, bench_item>(
                          c.replicas > 1 ? tbb::filter_mode::parallel : tbb::filter_mode::serial_in_order,
                          [w](bench_item v) {
                            do_work(w);
                            return v;
                          });
    }
  } else {
    const work_spec w = work_for(c, 0);
    chain = chain & tbb::make_filter<bench_item, bench_item>(tbb::filter_mode::parallel, [w](bench_item v) {
      do_work(w);
      return v;
    });
  }
  latency_histogram& hist = r.hist;
  auto sink = tbb::make_filter<bench_item, void>(
      c.ordered ? tbb::filter_mode::serial_in_order : tbb::filter_mode::serial_out_of_order,
      [&hist, &delivered](bench_item v) {
        hist.record(now_ns() - v.born_ns);
        delivered.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistic
      });
  // TBB's own scheduler decides the threads (its default: one per core).
  const int threads = tbb::info::default_concurrency();
  const auto t0 = clock::now();
  {
    bench_progress bp(prog, "tbb " + c.topo_text, c.items, delivered);
    tbb::parallel_pipeline(tokens, chain & sink);
  }
  r.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
  r.delivered = delivered.load();
  r.detail = "parallel_pipeline, " + std::to_string(tokens) + " tokens, " + std::to_string(threads) + " worker threads";
  return r;
}

// ---- output -------------------------------------------------------------------

std::string si(double v) {
  char buf[32];
  if (v >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f G", v / 1e9);
  } else if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2f M", v / 1e6);
  } else if (v >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.2f k", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f ", v);
  }
  return buf;
}

std::string lat(std::uint64_t ns) { return format_duration(nanoseconds(static_cast<std::int64_t>(ns))); }

void print_table(const bench_config& c, const std::vector<bench_result>& rs) {
  std::string work;
  for (std::size_t i = 0; i < c.work.size(); ++i) work += (i ? "," : "") + c.work[i].text();
  std::printf("sluice bench: %s, %llu items of %llu B, work %s per stage, capacity %llu, replicas %llu%s\n\n",
              c.topo_text.c_str(), static_cast<unsigned long long>(c.items),
              static_cast<unsigned long long>(c.item_size), work.c_str(), static_cast<unsigned long long>(c.capacity),
              static_cast<unsigned long long>(c.topo == topology_kind::farm ? c.n : c.replicas),
              c.ordered ? ", ordered" : "");
  std::printf("  %-8s %12s %12s %10s %10s %10s %10s %9s\n", "engine", "items/s", "bytes/s", "p50", "p99", "p99.9",
              "max", "time");
  for (const auto& r : rs) {
    std::printf("  %-8s %12s %12s %10s %10s %10s %10s %9s\n", r.engine.c_str(), (si(r.items_per_s()) + "/s").c_str(),
                (format_size(r.items_per_s() * static_cast<double>(c.item_size)) + "/s").c_str(),
                lat(r.hist.quantile(0.50)).c_str(), lat(r.hist.quantile(0.99)).c_str(),
                lat(r.hist.quantile(0.999)).c_str(), lat(r.hist.max()).c_str(),
                format_duration(nanoseconds(static_cast<std::int64_t>(r.elapsed_s * 1e9))).c_str());
  }
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

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void print_json(const bench_config& c, const std::vector<bench_result>& rs) {
  std::string o = "{\"topology\":" + json_escape(c.topo_text) + ",\"items\":" + std::to_string(c.items) +
                  ",\"item_size\":" + std::to_string(c.item_size) + ",\"capacity\":" + std::to_string(c.capacity) +
                  ",\"replicas\":" + std::to_string(c.topo == topology_kind::farm ? c.n : c.replicas) +
                  ",\"ordered\":" + (c.ordered ? "true" : "false") + ",\"work\":[";
  for (std::size_t i = 0; i < c.work.size(); ++i) {
    if (i) o += ',';
    o += "{\"kind\":" + json_escape(c.work[i].sleep ? "sleep" : "spin") + ",\"ns\":" + std::to_string(c.work[i].d.count()) + "}";
  }
  o += "],\"expected_deliveries\":" + std::to_string(c.items * copies(c)) + ",\"results\":[";
  for (std::size_t k = 0; k < rs.size(); ++k) {
    const auto& r = rs[k];
    if (k) o += ',';
    o += "{\"engine\":" + json_escape(r.engine) + ",\"items_delivered\":" + std::to_string(r.delivered) +
         ",\"elapsed_s\":" + num(r.elapsed_s) + ",\"items_per_s\":" + num(r.items_per_s()) +
         ",\"bytes_per_s\":" + num(r.items_per_s() * static_cast<double>(c.item_size)) + ",\"latency_ns\":{\"count\":" +
         std::to_string(r.hist.count()) + ",\"p50\":" + std::to_string(r.hist.quantile(0.5)) +
         ",\"p99\":" + std::to_string(r.hist.quantile(0.99)) + ",\"p999\":" + std::to_string(r.hist.quantile(0.999)) +
         ",\"max\":" + std::to_string(r.hist.max()) + ",\"mean\":" + num(r.hist.mean()) + "}";
    o += ",\"balanced\":";
    o += r.balanced ? "true" : "false";
    o += ",\"detail\":" + json_escape(r.detail);
    if (r.snap) {
      o += ",\"bottleneck\":" + (r.snap->bottleneck ? json_escape(*r.snap->bottleneck) : std::string("null"));
      o += ",\"metrics\":" + metrics::to_json(*r.snap);
    } else {
      o += ",\"bottleneck\":null,\"metrics\":null";
    }
    o += '}';
  }
  o += "]}\n";
  std::fputs(o.c_str(), stdout);
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  bench_config c;
  arg_parser p("sluice bench",
               "Throughput and end-to-end latency of a synthetic stage graph. Each worker stage does\n"
               "--work per item; the source stamps items, the sink measures latency.");
  p.custom("--topology", "SHAPE", "chain:N | farm:N | fanout:N | diamond", c.topo_text,
           [&](std::string_view v) { return parse_topology(v, c); }, "chain:N, farm:N, fanout:N (N in 1..64) or diamond");
  p.count("--items", &c.items, "items the source produces");
  p.size("--item-size", &c.item_size, "payload bytes per item");
  p.custom("--work", "WORK", "per item and stage: ns of busy spin (200ns, 2us) or sleep:10us; a comma list gives one per stage",
           c.work_text, [&](std::string_view v) { return parse_work_list(v, c.work); },
           "a duration like 200ns, spin:2us or sleep:10us (comma-separated per stage)");
  p.count("--capacity", &c.capacity, "items per channel");
  p.count("--replicas", &c.replicas, "threads per worker stage (chain, fanout, diamond)");
  p.flag("--ordered", &c.ordered, "replicated stages keep input order");
  p.custom("--engine", "ENGINE", "sluice | tbb | both (tbb: chain and farm only)", c.engine,
           [&](std::string_view v) {
             if (v != "sluice" && v != "tbb" && v != "both") return false;
             c.engine = std::string(v);
             return true;
           },
           "sluice, tbb or both");
  p.count("--tokens", &c.tokens, "tbb: max live tokens (0: capacity x channels)");
  p.flag("--json", &c.json, "print JSON on stdout instead of a table");
  p.text("--serve", &c.serve, "ADDR", "the live view while sluice runs, at HOST:PORT (port 0: any free one; the URL goes to stderr)");
  p.epilog(
      "examples:\n"
      "  sluice bench --topology chain:4 --items 1M --engine both\n"
      "  sluice bench --topology farm:4 --work 2us --json\n"
      "  sluice bench --topology chain:5 --work 100ns,100ns,1us,100ns,100ns");
  if (!p.parse(argc, argv)) return 0;
#if !SLUICE_HAVE_SERVE
  if (!c.serve.empty()) throw usage_error("sluice bench: --serve: this sluice was built without cpp-httplib (libcpp-httplib-dev)");
#endif
  if (c.items == 0) p.bad("--items", "0", "at least 1");
  if (c.capacity == 0) p.bad("--capacity", "0", "at least 1");
  if (c.replicas == 0 || c.replicas > 256) p.bad("--replicas", std::to_string(c.replicas), "1 to 256");
  if (c.item_size > (64ULL << 20)) p.bad("--item-size", std::to_string(c.item_size), "at most 64MiB");
  const std::size_t workers = worker_names(c).size();
  if (c.work.size() != 1 && c.work.size() != workers) {
    throw usage_error("sluice bench: --work lists " + std::to_string(c.work.size()) + " values but " + c.topo_text +
                      " has " + std::to_string(workers) + " worker stages");
  }
  const bool tbb_ok = c.topo == topology_kind::chain || c.topo == topology_kind::farm;
  if (c.engine == "tbb" && !tbb_ok) {
    throw usage_error("sluice bench: --engine tbb runs chain:N and farm:N only, not " + c.topo_text);
  }

  progress prog("bench");
  std::vector<bench_result> results;
  if (c.engine != "tbb") {
    try {
      results.push_back(run_sluice(c, prog));
    } catch (const std::exception& e) {
      // A --capacity whose channels cannot exist: sluice::bounded throws
      // std::invalid_argument (not addressable) or a std::bad_alloc (more than this
      // machine's memory), each naming the capacity. That is a bad value on the command
      // line: one line, exit 2, before anything ran.
      const std::string_view what = e.what();
      const std::string prefix = "sluice::bounded: capacity " + std::to_string(c.capacity) + " ";
      const bool capacity_error = (dynamic_cast<const std::invalid_argument*>(&e) != nullptr ||
                                   dynamic_cast<const std::bad_alloc*>(&e) != nullptr) &&
                                  what.starts_with(prefix);
      if (!capacity_error) throw;
      throw usage_error("sluice bench: --capacity " + std::to_string(c.capacity) + " is too large: a channel " +
                        std::string(what.substr(prefix.size())));
    }
  }
  if (c.engine != "sluice" && tbb_ok) results.push_back(run_tbb(c, prog));
  if (c.json) {
    print_json(c, results);
  } else {
    print_table(c, results);
    if (c.engine == "both" && !tbb_ok) std::printf("\n  (tbb: skipped, parallel_pipeline runs chain and farm only)\n");
  }
  for (const auto& r : results) {
    if (r.delivered != c.items * copies(c) || !r.balanced) return 1;
  }
  return 0;
}

}  // namespace sluice::tool
