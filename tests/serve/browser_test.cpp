// The pages in a real browser: headless Chromium loads the live page of a running graph
// and a `sluice bench --report` file; the rendered DOM (--dump-dom) must name every stage
// and mark the bottleneck, and a screenshot must not be blank (the PNG is decoded).
// Skipped when chromium is not on PATH (./dev installs it). SLUICE_KEEP_SCREENSHOTS=DIR
// keeps the PNGs for a person to look at.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if SLUICE_TEST_HAVE_ZLIB
#include <zlib.h>
#endif

#include "bench/report_html.hpp"
#include "serve/serve_test_util.hpp"
#include "sluice/metrics.hpp"

namespace {

using namespace std::chrono_literals;
using serve_test::live_graph;
using serve_test::on_path;
using serve_test::run_process;

namespace fs = std::filesystem;

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string t = (fs::temp_directory_path() / "sluice-browser-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path = t;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<std::string> chromium_args(const temp_dir& dir) {
  return {"chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
          "--hide-scrollbars", "--user-data-dir=" + (dir.path / "profile").string()};
}

// The drawn part of a dumped page (the graph's element), for failure messages.
std::string drawn(const std::string& dom) {
  const std::size_t at = dom.find("id=\"graph\"");
  return dom.substr(at == std::string::npos ? 0 : at, 4000);
}

std::string dump_dom(const std::string& url, const temp_dir& dir) {
  auto args = chromium_args(dir);
  args.insert(args.end(), {"--virtual-time-budget=3000", "--dump-dom", url});
  const auto r = run_process(args, 60s);
  EXPECT_FALSE(r.timed_out) << "chromium --dump-dom took over 60 s";
  return r.out;
}

struct png_check {
  bool decoded = false;
  std::string why;
  std::uint32_t width = 0, height = 0;
  double non_background = 0;  // share of pixels unlike the most common colour
  std::size_t colours = 0;    // distinct colours (capped)
};

std::string read_file(const std::string& path) {
  std::string out;
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes).
png_check inspect_png(const std::string& file) {
  png_check c;
  const std::string data = read_file(file);
  const auto* d = reinterpret_cast<const unsigned char*>(data.data());
  if (data.size() < 8 || std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) != 0) {
    c.why = "not a PNG (" + std::to_string(data.size()) + " bytes)";
    return c;
  }
  std::string idat;
  int colour_type = -1, depth = 0, interlace = 0;
  for (std::size_t at = 8; at + 12 <= data.size();) {
    const std::uint32_t len = be32(d + at);
    const std::string type(data, at + 4, 4);
    if (at + 12 + len > data.size()) break;
    if (type == "IHDR") {
      c.width = be32(d + at + 8);
      c.height = be32(d + at + 12);
      depth = d[at + 16];
      colour_type = d[at + 17];
      interlace = d[at + 20];
    } else if (type == "IDAT") {
      idat.append(data, at + 8, len);
    }
    at += 12 + len;
  }
#if SLUICE_TEST_HAVE_ZLIB
  const int bpp = colour_type == 6 ? 4 : colour_type == 2 ? 3 : 0;
  if (bpp == 0 || depth != 8 || interlace != 0 || c.width == 0 || c.height == 0) {
    c.why = "unexpected PNG format (colour type " + std::to_string(colour_type) + ", depth " + std::to_string(depth) + ")";
    return c;
  }
  const std::size_t stride = static_cast<std::size_t>(c.width) * bpp;
  std::vector<unsigned char> raw((stride + 1) * c.height);
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK ||
      raw_len != raw.size()) {
    c.why = "IDAT does not inflate to the image size";
    return c;
  }
  std::vector<unsigned char> img(stride * c.height), prev(stride, 0);
  for (std::uint32_t y = 0; y < c.height; ++y) {
    const unsigned char filter = raw[y * (stride + 1)];
    const unsigned char* src = &raw[y * (stride + 1) + 1];
    unsigned char* out = &img[y * stride];
    for (std::size_t x = 0; x < stride; ++x) {
      const int left = x >= static_cast<std::size_t>(bpp) ? out[x - bpp] : 0;
      const int up = prev[x];
      const int ul = x >= static_cast<std::size_t>(bpp) ? prev[x - bpp] : 0;
      int v = src[x];
      switch (filter) {
        case 0: break;
        case 1: v += left; break;
        case 2: v += up; break;
        case 3: v += (left + up) / 2; break;
        case 4: {
          const int p = left + up - ul, pa = std::abs(p - left), pb = std::abs(p - up), pc = std::abs(p - ul);
          v += (pa <= pb && pa <= pc) ? left : (pb <= pc ? up : ul);
          break;
        }
        default: c.why = "bad filter"; return c;
      }
      out[x] = static_cast<unsigned char>(v);
    }
    std::memcpy(prev.data(), out, stride);
  }
  std::map<std::uint32_t, std::size_t> counts;
  for (std::size_t i = 0; i < img.size(); i += static_cast<std::size_t>(bpp)) {
    const std::uint32_t rgb = (std::uint32_t{img[i]} << 16) | (std::uint32_t{img[i + 1]} << 8) | img[i + 2];
    if (counts.size() < 4096 || counts.count(rgb)) ++counts[rgb];
  }
  std::size_t most = 0;
  for (const auto& [rgb, n] : counts) most = std::max(most, n);
  const double total = static_cast<double>(c.width) * c.height;
  c.non_background = 1.0 - static_cast<double>(most) / total;
  c.colours = counts.size();
  c.decoded = true;
#else
  c.why = "built without zlib: only the file size was checked";
  c.decoded = data.size() > 20000;
  c.non_background = 1;
  c.colours = 1000;
#endif
  return c;
}

void screenshot_not_blank(const std::string& url, const temp_dir& dir, const std::string& keep_as) {
  const fs::path png = dir.path / "shot.png";
  auto args = chromium_args(dir);
  args.insert(args.end(), {"--virtual-time-budget=3000", "--window-size=1200,800", "--screenshot=" + png.string(), url});
  const auto r = run_process(args, 60s);
  ASSERT_FALSE(r.timed_out) << "chromium --screenshot took over 60 s";
  ASSERT_TRUE(fs::exists(png)) << "no screenshot written";
  const png_check c = inspect_png(png.string());
  ASSERT_TRUE(c.decoded) << c.why;
  EXPECT_EQ(c.width, 1200U);
  EXPECT_EQ(c.height, 800U);
  // A drawn graph: boxes, bars and text cover well over 3% of the window in many colours.
  EXPECT_GT(c.non_background, 0.03) << "the screenshot is (nearly) one colour";
  EXPECT_GT(c.colours, 20U);
  if (const char* keep = std::getenv("SLUICE_KEEP_SCREENSHOTS")) {
    std::error_code ec;
    fs::copy_file(png, fs::path(keep) / keep_as, fs::copy_options::overwrite_existing, ec);
  }
}

#define SKIP_WITHOUT_CHROMIUM()                                                       \
  do {                                                                                \
    if (!on_path("chromium")) GTEST_SKIP() << "chromium is not on PATH (./dev installs it)"; \
  } while (0)

TEST(Browser, LivePageDrawsEveryStageAndTheBottleneck) {
  SKIP_WITHOUT_CHROMIUM();
  // The sink's 5 ms per item dwarfs what the other stages spend per item, even on a
  // loaded machine: with 2 ms, "square" was named for the whole 30 s once, in a ctest -j2
  // run (a stage's time waiting for a core outside a channel wait counts as busy).
  live_graph lg(0, 5ms);
  lg.g.start();
  // Wait until the runtime names the bottleneck (the slow sink), so the page has one to mark.
  // One snapshot per look: a second one taken right after the first covers a few
  // microseconds and may name nothing yet.
  const auto until = std::chrono::steady_clock::now() + 30s;
  std::string named = "none";
  std::string shares;  // the last look's time shares, for a failure
  while (named != "slow-sink" && std::chrono::steady_clock::now() < until) {
    const auto snap = lg.g.snapshot();
    named = snap.bottleneck.value_or("none");
    shares.clear();
    for (const auto& st : snap.stages) {
      const auto t = sluice::metrics::shares_of(st);
      shares += st.name + ": busy " + std::to_string(t.busy) + " backpressured " + std::to_string(t.backpressured) +
                " starved " + std::to_string(t.starved) + " (busy_ns " + std::to_string(st.busy_ns) + ")\n";
    }
    if (named != "slow-sink") std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(named, "slow-sink") << shares;
  auto srv = sluice::metrics::serve(lg.g, "127.0.0.1:0");
  temp_dir dir;
  const std::string dom = dump_dom(srv.url(), dir);
  for (const char* name : {"numbers", "square", "slow-sink"}) {
    EXPECT_NE(dom.find(std::string("data-stage=\"") + name + "\""), std::string::npos) << name << "\n" << drawn(dom);
  }
  // Marked the bottleneck, and perhaps also "stall": the page's polls are a second apart
  // on its virtual clock, which may be milliseconds of real time, less than the sink's
  // 5 ms per item, so that no item moved between two of them (seen under TSan in CI). The
  // stall view has its own test below.
  EXPECT_TRUE(dom.find("class=\"stage bottleneck\" data-stage=\"slow-sink\"") != std::string::npos ||
              dom.find("class=\"stage bottleneck stall\" data-stage=\"slow-sink\"") != std::string::npos)
      << drawn(dom);
  EXPECT_NE(dom.find(">bottleneck</text>"), std::string::npos);
  EXPECT_NE(dom.find("class=\"channel\""), std::string::npos);
  EXPECT_NE(dom.find(" / 16<"), std::string::npos) << "a channel labelled occupancy / capacity";
  // The drawing is not shrunk below 0.6 of its size to fit the window (a 12-stage chain
  // was drawn at 0.29, unreadable): its minimum width is set, and wider graphs scroll.
  const auto svg_at = dom.find("<svg ");
  ASSERT_NE(svg_at, std::string::npos) << drawn(dom);
  const std::string svg_tag = dom.substr(svg_at, dom.find('>', svg_at) - svg_at);
  int width = 0, min_width = 0;
  const auto w_at = svg_tag.find(" width=\"");
  const auto m_at = svg_tag.find("min-width: ");
  ASSERT_NE(w_at, std::string::npos) << svg_tag;
  ASSERT_NE(m_at, std::string::npos) << svg_tag;
  width = std::atoi(svg_tag.c_str() + w_at + 8);
  min_width = std::atoi(svg_tag.c_str() + m_at + 11);
  EXPECT_GT(width, 0) << svg_tag;
  EXPECT_NEAR(min_width, width * 0.6, 1.0) << svg_tag;
  EXPECT_NE(dom.find("class=\"sgv-scroll\""), std::string::npos);
  screenshot_not_blank(srv.url(), dir, "live.png");
  srv.stop();
  lg.g.request_stop();
  auto rep = lg.g.wait_for(30s);
  ASSERT_TRUE(rep.has_value());
  EXPECT_EQ(lg.sunk.load(), lg.produced.load());
}

// A stall: the sink waits on something outside the graph (counted as busy), both upstream
// stages are blocked pushing into full channels, and nothing moves. The page sees no item
// move across its polls (a second apart on its clock, virtual time here: 5 s of it) and,
// past the graph's stall_threshold, marks the wait-for chain. Returns the page's DOM;
// `shot` names a screenshot to take of it ("" for none).
std::string stalled_page(std::chrono::steady_clock::duration threshold, const std::string& shot) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  sluice::graph g({.stall_threshold = threshold});
  auto src = g.source<int>(
      "numbers",
      [](sluice::sender<int>& out, std::stop_token stop) {
        for (int i = 0; !stop.stop_requested(); ++i) {
          if (!out.push(i)) return;
        }
      },
      {.capacity = 4});
  auto parsed = g.map("parse", src, [](int v) { return v + 1; }, {.capacity = 4});
  g.sink("store", parsed, [&](int) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, 60s, [&] { return release; });
  });
  // However the test ends, the sink is let go (a failed assertion would otherwise leave
  // it waiting out its 60 s in the graph's teardown).
  auto let_go = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      release = true;
    }
    cv.notify_all();
  };
  struct on_exit {
    std::function<void()> f;
    ~on_exit() { f(); }
  } guard{let_go};
  g.start();
  auto srv = sluice::metrics::serve(g, "127.0.0.1:0");
  // Wait for the settled stall before the browser looks: the sink inside its function
  // with an item, both channels full, both upstream stages registered to wait on a push.
  // Nothing can change that until the sink is let go. A stage counted as waiting a moment
  // earlier may have been about to find room (its consumer had just popped) and run on,
  // so counting waiters alone was not enough (CI saw 2 waiters, then 1).
  auto settled = [&] {
    const auto s = g.snapshot();
    int pushing = 0;
    bool sink_holds_one = false;
    for (const auto& st : s.stages) {
      pushing += st.blocked_op == "push";
      if (st.name == "store") sink_holds_one = st.items_in >= 1;
    }
    bool full = s.channels.size() == 2;
    for (const auto& c : s.channels) full = full && c.stats.size == c.stats.capacity;
    return pushing == 2 && full && sink_holds_one;
  };
  const auto until = std::chrono::steady_clock::now() + 30s;
  bool stalled = settled();
  while (!stalled && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(10ms);
    stalled = settled();
  }
  EXPECT_TRUE(stalled) << "both upstream stages blocked on a push into a full channel within 30 s";
  if (!stalled) return {};
  temp_dir dir;
  auto args = chromium_args(dir);
  args.insert(args.end(), {"--virtual-time-budget=5000", "--dump-dom", srv.url()});
  const auto r = run_process(args, 60s);
  EXPECT_FALSE(r.timed_out);
  if (!shot.empty()) screenshot_not_blank(srv.url(), dir, shot);
  let_go();
  srv.stop();
  g.request_stop();
  EXPECT_TRUE(g.wait_for(30s).has_value());
  return r.out;
}

TEST(Browser, LivePageMarksAStallsWaitForChain) {
  SKIP_WITHOUT_CHROMIUM();
  const std::string dom = stalled_page(2s, "stall.png");
  // The summary's span (the script's own text holds the words too).
  EXPECT_NE(dom.find("<span class=\"stall\">STALL, no item moved for "), std::string::npos) << drawn(dom);
  EXPECT_NE(dom.find("numbers waits (push) on parse; parse waits (push) on store"), std::string::npos)
      << drawn(dom);
  EXPECT_NE(dom.find("class=\"stage stall\" data-stage=\"numbers\""), std::string::npos);
  EXPECT_NE(dom.find("class=\"wait-for\""), std::string::npos);
}

// The page calls a stall what the graph calls one: nothing moved for its stall_threshold
// (10 s by default), not for a 2 s rule of the page's own (it said STALL where the
// graph's report said stalls=0).
TEST(Browser, LivePageWaitsForTheGraphsStallThreshold) {
  SKIP_WITHOUT_CHROMIUM();
  for (const auto threshold : {std::chrono::steady_clock::duration(30s), std::chrono::steady_clock::duration::zero()}) {
    const std::string dom = stalled_page(threshold, "");
    EXPECT_NE(dom.find("3 stages \u00b7 2 channels"), std::string::npos) << drawn(dom);  // drawn
    EXPECT_EQ(dom.find("<span class=\"stall\">"), std::string::npos) << "threshold " << threshold.count() << ": " << drawn(dom);
    EXPECT_EQ(dom.find("class=\"wait-for\""), std::string::npos);
  }
}

// Hostile stage names: names of every object's properties (the layout kept its maps in
// plain {} objects, so "__proto__" stopped the drawing and the page said "not
// reachable"), and a long name of characters outside the BMP (cut by UTF-16 units it kept
// half a surrogate pair, and Chromium died of SIGILL drawing it).
TEST(Browser, LivePageDrawsStagesWithAnyName) {
  SKIP_WITHOUT_CHROMIUM();
  std::string rockets;
  for (int i = 0; i < 24; ++i) rockets += "\xF0\x9F\x9A\x80";  // U+1F680, two UTF-16 units each
  sluice::graph g;
  auto src = g.source<int>(
      "__proto__",
      [](sluice::sender<int>& out, std::stop_token stop) {
        for (int i = 0; !stop.stop_requested(); ++i) {
          if (!out.push(i)) return;
        }
      },
      {.capacity = 8});
  auto a = g.map("constructor", src, [](int v) { return v + 1; }, {.capacity = 8});
  auto b = g.map("hasOwnProperty", a, [](int v) { return v + 1; }, {.capacity = 8});
  auto c = g.map(rockets, b, [](int v) { return v + 1; }, {.capacity = 8});
  g.sink("toString", c, [](int) { std::this_thread::sleep_for(100us); });
  g.start();
  auto srv = sluice::metrics::serve(g, "127.0.0.1:0");
  temp_dir dir;
  auto args = chromium_args(dir);
  args.insert(args.end(), {"--virtual-time-budget=3000", "--dump-dom", srv.url()});
  const auto r = run_process(args, 60s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << "chromium died drawing the page";
  const std::string& dom = r.out;
  for (const std::string name : {"__proto__", "constructor", "hasOwnProperty", "toString"}) {
    EXPECT_NE(dom.find("data-stage=\"" + name + "\""), std::string::npos) << name << "\n" << drawn(dom);
  }
  // The long name is cut after 21 whole characters.
  std::string cut;
  for (int i = 0; i < 21; ++i) cut += "\xF0\x9F\x9A\x80";
  EXPECT_NE(dom.find(">" + cut + "\xE2\x80\xA6<"), std::string::npos) << drawn(dom);
  // The status line (the script's own text mentions every message it can show).
  const std::size_t at = dom.find("id=\"conn\"");
  ASSERT_NE(at, std::string::npos) << dom.substr(0, 2000);
  const std::string conn = dom.substr(at, dom.find("</div>", at) - at);
  EXPECT_NE(conn.find("refreshes every second"), std::string::npos) << conn;
  srv.stop();
  g.request_stop();
  ASSERT_TRUE(g.wait_for(30s).has_value());
}

// A run that ended with a stage failed: the summary says "failed after", and which
// stage failed (it said "finished after ... bottleneck: ...").
TEST(Browser, LivePageSaysARunFailedAndWhichStage) {
  SKIP_WITHOUT_CHROMIUM();
  sluice::graph g;
  auto src = g.source<int>("numbers", [](sluice::sender<int>& out) {
    for (int i = 0; i < 100; ++i) out.push(i);
    throw std::runtime_error("disk on fire");
  });
  g.sink("store", g.map("parse", src, [](int v) { return v + 1; }), [](int) {});
  g.start();
  EXPECT_THROW((void)g.wait_for(30s), sluice::stage_error);
  auto srv = sluice::metrics::serve(g, "127.0.0.1:0");
  temp_dir dir;
  const std::string dom = dump_dom(srv.url(), dir);
  EXPECT_NE(dom.find("<span>failed after "), std::string::npos) << drawn(dom);
  EXPECT_EQ(dom.find("<span>finished after "), std::string::npos) << drawn(dom);
  EXPECT_NE(dom.find("<span class=\"stall\">failed: numbers</span>"), std::string::npos) << drawn(dom);
  srv.stop();
}

// A snapshot a bench run could end with: source -> parse -> enrich (x4) -> store, enrich
// the bottleneck.
sluice::metrics::snapshot bench_like_snapshot() {
  using sluice::metrics::channel_snapshot;
  using sluice::metrics::stage_snapshot;
  sluice::metrics::snapshot s;
  s.elapsed = std::chrono::seconds(3);
  auto st = [](const char* name, std::size_t replicas, double busy, double bp, double starved) {
    stage_snapshot x;
    x.name = name;
    x.replicas = replicas;
    x.items_in = x.items_out = 1'200'000;
    x.busy_ns = static_cast<std::uint64_t>(busy * 3e9 * static_cast<double>(replicas));
    x.backpressured_ns = static_cast<std::uint64_t>(bp * 3e9 * static_cast<double>(replicas));
    x.starved_ns = static_cast<std::uint64_t>(starved * 3e9 * static_cast<double>(replicas));
    x.state = "done";
    return x;
  };
  s.stages = {st("source", 1, 0.1, 0.88, 0.02), st("parse", 1, 0.3, 0.65, 0.05), st("enrich <x&y>", 4, 0.92, 0.03, 0.05),
              st("store", 1, 0.15, 0.0, 0.85)};
  auto ch = [](const char* from, const char* to, std::size_t size) {
    channel_snapshot c;
    c.name = std::string(from) + " -> " + to;
    c.from = from;
    c.to = to;
    c.stats.capacity = 1024;
    c.stats.size = size;
    c.stats.items = size;
    c.stats.pushed = 1'200'000;
    c.stats.popped = 1'200'000 - size;
    return c;
  };
  s.channels = {ch("source", "parse", 1000), ch("parse", "enrich <x&y>", 1024), ch("enrich <x&y>", "store", 3)};
  // An open-loop run's pacing clock: an external channel into the source, drawn as no
  // arrow and counted apart ("4 channels" for 3 arrows, before).
  auto clock = ch("", "source", 0);
  clock.name = "clock";
  clock.external = true;
  s.channels.push_back(clock);
  s.bottleneck = sluice::metrics::find_bottleneck(s);
  return s;
}

sluice::tool::report_data sample_report() {
  sluice::tool::report_data d;
  d.title = "sluice bench chain:4 </script><b>";
  const auto snap = bench_like_snapshot();
  d.snapshot_json = sluice::metrics::to_json(snap);
  d.shown_run = "sluice, closed loop (the sweep's full-load run)";
  for (int i = 1; i <= 30; ++i) d.throughput.push_back({0.1 * i, 1.1e6 + 1e5 * ((i * 7) % 5)});
  for (const char* engine : {"sluice", "tbb"}) {
    const double k = std::string(engine) == "tbb" ? 1.4 : 1.0;
    for (double load : {0.1, 0.5, 0.9}) {
      d.latency.push_back({.offered_per_s = load * 1.2e6, .achieved_per_s = load * 1.2e6, .p50_us = k * (2 + 10 * load),
                           .p99_us = k * (8 + 80 * load * load), .p999_us = k * (20 + 900 * load * load * load),
                           .engine = engine});
    }
  }
  return d;
}

TEST(Report, RendersWithoutABrowser) {
  const auto d = sample_report();
  ASSERT_EQ(bench_like_snapshot().bottleneck.value_or("none"), "enrich <x&y>");
  const std::string html = sluice::tool::render_report_html(d);
  EXPECT_EQ(html, sluice::tool::render_report_html(d)) << "deterministic";
  EXPECT_EQ(html.find("</script><b>"), std::string::npos) << "the title must be escaped";
  EXPECT_NE(html.find("sluice bench chain:4 &lt;/script&gt;&lt;b&gt;"), std::string::npos);
  EXPECT_EQ(html.find("enrich <x&y>"), std::string::npos) << "the stage name must be escaped in the JSON";
  EXPECT_NE(html.find("class=\"chart throughput\""), std::string::npos);
  // Which run the picture and the throughput are of (a sweep's were unlabelled).
  EXPECT_NE(html.find("<h2>Throughput over time (sluice, closed loop (the sweep&#39;s full-load run))</h2>"),
            std::string::npos);
  EXPECT_NE(html.find("data-percentile=\"p99.9\""), std::string::npos);
  EXPECT_NE(html.find("data-engine=\"tbb\""), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg")) << "no network";
  EXPECT_EQ(html.find("https://"), std::string::npos);
  sluice::tool::report_data closed = d;
  closed.latency.clear();
  EXPECT_NE(sluice::tool::render_report_html(closed).find("Closed-loop run"), std::string::npos);
}

TEST(Report, WriteIsAllOrNothingAndNamesThePath) {
  temp_dir dir;
  const std::string path = (dir.path / "r.html").string();
  sluice::tool::write_report_html(path, sample_report());
  const std::string got = read_file(path);
  EXPECT_EQ(got, sluice::tool::render_report_html(sample_report()));
  const std::string bad = (dir.path / "no-such-dir" / "r.html").string();
  try {
    sluice::tool::write_report_html(bad, sample_report());
    FAIL() << "wrote into a missing directory";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1U) << "no temporary file left behind";
}

TEST(Browser, ReportDrawsTheGraphAndTheCharts) {
  SKIP_WITHOUT_CHROMIUM();
  temp_dir dir;
  const std::string path = (dir.path / "report.html").string();
  sluice::tool::write_report_html(path, sample_report());
  const std::string url = "file://" + path;
  const std::string dom = dump_dom(url, dir);
  for (const char* name : {"data-stage=\"source\"", "data-stage=\"parse\"", "data-stage=\"enrich &lt;x&amp;y&gt;\"",
                           "data-stage=\"store\""}) {
    EXPECT_NE(dom.find(name), std::string::npos) << name << "\n" << drawn(dom);
  }
  EXPECT_NE(dom.find("class=\"stage bottleneck\" data-stage=\"enrich &lt;x&amp;y&gt;\""), std::string::npos)
      << drawn(dom);
  EXPECT_NE(dom.find(">bottleneck</text>"), std::string::npos);
  EXPECT_NE(dom.find("1024 / 1024"), std::string::npos) << "the full channel's label";
  EXPECT_NE(dom.find("class=\"chart throughput\""), std::string::npos);
  EXPECT_NE(dom.find("class=\"chart latency\""), std::string::npos);
  EXPECT_NE(dom.find("class=\"sgv-summary\""), std::string::npos) << "the graph was not drawn";
  EXPECT_NE(dom.find("4 stages \u00b7 3 channels + 1 external \u00b7"), std::string::npos) << drawn(dom);
  screenshot_not_blank(url, dir, "report.png");
  if (const char* keep = std::getenv("SLUICE_KEEP_SCREENSHOTS")) {
    std::error_code ec;
    fs::copy_file(path, fs::path(keep) / "report.html", fs::copy_options::overwrite_existing, ec);
  }
}

}  // namespace
