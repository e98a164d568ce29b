// io_bench.cpp — byte streams: `sluice gzip` against Node, gzip and pigz, and io::lines
// against Node's readline, on one generated log-like file, in one run.
//
//   build/release/benchmarks/sluice_bench_io                     # 1 GiB + 4 GiB (~4 min)
//   build/release/benchmarks/sluice_bench_io --io_size=256MiB --io_big=0
//   benchmarks/run.sh build/release io                           # + tables and targets
//
// The input is written by the benchmark itself (seeded, the same bytes every run; kept
// in --io_dir, default <build>/bench/io-data, and reused when its size and seed match):
// lines like "1714560000.019 ERROR [worker-09] DELETE /api/v1/items/33097 status=200
// latency_ms=20.6 user=bob req=d34bdeeb6234eb6b", about 115 bytes each.
//
// Scenarios ("<scenario>/<implementation>", items = input bytes, or lines):
//   gzip/sluice          sluice gzip --jobs 2 (default level 6), file to file (the tool
//                        gives its reader a 1 MiB budget, see tools/gzip/cmd_gzip.cpp)
//   gzip/sluice:jobs1    sluice gzip --jobs 1
//   gzip/node            node: stream.pipeline(fs.createReadStream, zlib.createGzip(), fs.createWriteStream)
//   gzip/gzip            gzip -6 -c IN > OUT
//   gzip/pigz            pigz -p 2 -6 -c IN > OUT
//   gzip_big/sluice      sluice gzip --jobs 2 on the --io_big file (memory must not grow)
//   lines/sluice         pipeline(io::read_file (1 MiB budget), io::lines(), into(count)), in
//                        this process; lines/sluice:read64k with the default 64 KiB budget
//   lines/node           node: for await (const line of readline.createInterface(...)) n++
//   engine_L<n>/<lib>    one thread compressing 128 KiB blocks of the file's first 64 MiB
//                        with libdeflate or zlib (why parallel_gzip picks what it picks)
// Every command runs once (each moves a GiB); wall time from fork to wait4, peak RSS from
// wait4's rusage (ru_maxrss of that process alone). sluice's output is checked with
// gzip -t. The summary printed at the end (and by run.sh) has MB/s, peak RSS and the
// ratios the issue sets as targets.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <libdeflate.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench_main.hpp"
#include "sluice/io/all.hpp"
#include "sluice/pipeline.hpp"

namespace {

namespace fs = std::filesystem;
namespace io = sluice::io;

constexpr std::uint64_t kSeed = 20240501;

struct settings {
  std::uint64_t size = std::uint64_t{1} << 30;
  std::uint64_t big = std::uint64_t{4} << 30;
  fs::path dir;
  fs::path tool;
};
settings g_settings;

struct result {
  double mb_per_s = 0;
  double seconds = 0;
  double rss_mib = 0;
  double out_mib = 0;
  double items_per_s = 0;
  bool ok = true;
};
std::map<std::string, result> g_results;  // "scenario/impl" -> numbers

// ---- the input ----------------------------------------------------------------------

struct xorshift {
  std::uint64_t s;
  explicit xorshift(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

void generate(const fs::path& p, std::uint64_t size) {
  const fs::path stamp = p.string() + ".seed";
  if (fs::exists(p) && fs::file_size(p) == size && fs::exists(stamp)) {
    std::FILE* f = std::fopen(stamp.c_str(), "r");
    unsigned long long s = 0;
    const bool same = f != nullptr && std::fscanf(f, "%llu", &s) == 1 && s == kSeed;
    if (f != nullptr) std::fclose(f);
    if (same) return;
  }
  std::fprintf(stderr, "[io] writing %.0f MiB of log lines to %s ...\n", static_cast<double>(size) / 1048576.0,
               p.c_str());
  static const char* const kLevels[] = {"INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"};
  static const char* const kPaths[] = {"/api/v1/items", "/api/v1/users", "/health", "/api/v2/orders",
                                       "/static/app.js", "/login"};
  static const char* const kUsers[] = {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"};
  static const char* const kMethods[] = {"GET", "GET", "POST", "PUT", "DELETE"};
  xorshift r(kSeed);
  std::uint64_t t = 1714560000000;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (f == nullptr) {
    std::perror(p.c_str());
    std::exit(1);
  }
  std::string buf;
  buf.reserve(std::size_t{4} << 20);
  std::uint64_t written = 0;
  while (written < size) {
    buf.clear();
    while (buf.size() < (std::size_t{4} << 20) - 400) {
      const std::uint64_t x = r.next();
      t += x % 50;
      char line[400];
      const int n = std::snprintf(
          line, sizeof line, "%llu.%03llu %s [worker-%02llu] %s %s/%llu status=%d latency_ms=%llu.%llu user=%s req=%016llx\n",
          static_cast<unsigned long long>(t / 1000), static_cast<unsigned long long>(t % 1000), kLevels[(x >> 8) % 6],
          static_cast<unsigned long long>((x >> 12) % 32), kMethods[(x >> 20) % 5], kPaths[(x >> 24) % 6],
          static_cast<unsigned long long>((x >> 28) % 100000), ((x >> 45) % 10 == 0) ? 500 : 200,
          static_cast<unsigned long long>((x >> 50) % 300), static_cast<unsigned long long>((x >> 59) % 10),
          kUsers[(x >> 40) % 8], static_cast<unsigned long long>(r.next()));
      buf.append(line, static_cast<std::size_t>(n));
    }
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - written));
    if (std::fwrite(buf.data(), 1, take, f) != take) {
      std::perror(p.c_str());
      std::exit(1);
    }
    written += take;
  }
  std::fclose(f);
  f = std::fopen(stamp.c_str(), "w");
  std::fprintf(f, "%llu\n", static_cast<unsigned long long>(kSeed));
  std::fclose(f);
}

// The big input: the 1 GiB file repeated (what matters there is memory, not novelty).
void make_big(const fs::path& small, const fs::path& big, std::uint64_t size) {
  if (fs::exists(big) && fs::file_size(big) == size) return;
  std::fprintf(stderr, "[io] writing %.0f MiB (the input repeated) to %s ...\n",
               static_cast<double>(size) / 1048576.0, big.c_str());
  const int in = ::open(small.c_str(), O_RDONLY);
  const int out = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const auto small_size = fs::file_size(small);
  std::uint64_t done = 0;
  while (done < size) {
    off_t off = 0;
    std::uint64_t left = std::min<std::uint64_t>(small_size, size - done);
    while (left > 0) {
      const ssize_t n = ::copy_file_range(in, &off, out, nullptr, left, 0);
      if (n <= 0) {
        std::perror("copy_file_range");
        std::exit(1);
      }
      left -= static_cast<std::uint64_t>(n);
      done += static_cast<std::uint64_t>(n);
    }
  }
  ::close(in);
  ::close(out);
}

// ---- children ---------------------------------------------------------------------------

struct child {
  double seconds = 0;
  double rss_mib = 0;
  bool ok = false;
  std::string out;  // captured stdout when asked
};

// Runs argv with stdout to `stdout_path` ("" for a pipe we capture); waits; measures.
child run_child(const std::vector<std::string>& argv, const std::string& stdout_path) {
  int pipefd[2] = {-1, -1};
  if (stdout_path.empty() && ::pipe(pipefd) != 0) std::exit(1);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    if (stdout_path.empty()) {
      ::dup2(pipefd[1], 1);
      ::close(pipefd[0]);
    } else {
      const int fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::perror(args[0]);
    std::_Exit(127);
  }
  child c;
  if (stdout_path.empty()) {
    ::close(pipefd[1]);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) c.out.append(buf, static_cast<std::size_t>(n));
    ::close(pipefd[0]);
  }
  int status = 0;
  rusage ru{};
  ::wait4(pid, &status, 0, &ru);
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  c.rss_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB
  c.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return c;
}

fs::path input() { return g_settings.dir / "input.log"; }
fs::path big_input() { return g_settings.dir / "input-big.log"; }

void write_script(const fs::path& p, const char* text) {
  std::FILE* f = std::fopen(p.c_str(), "w");
  std::fputs(text, f);
  std::fclose(f);
}

void report(benchmark::State& state, const std::string& key, const child& c, double items, const fs::path& out) {
  state.SetIterationTime(c.seconds);
  result r;
  r.seconds = c.seconds;
  r.ok = c.ok;
  r.rss_mib = c.rss_mib;
  r.items_per_s = items / c.seconds;
  r.mb_per_s = static_cast<double>(fs::file_size(input())) / c.seconds / 1e6;
  if (!out.empty() && fs::exists(out)) r.out_mib = static_cast<double>(fs::file_size(out)) / 1048576.0;
  g_results[key] = r;
  state.counters["MB_per_s"] = r.mb_per_s;
  state.counters["peak_rss_MiB"] = r.rss_mib;
  if (!c.ok) state.SkipWithError((key + " failed").c_str());
}

// ---- gzip scenarios --------------------------------------------------------------------------

void gzip_with(benchmark::State& state, const std::string& key, std::vector<std::string> argv,
               const std::string& stdout_path, const fs::path& out, const fs::path& in) {
  for (auto _ : state) {
    std::error_code ec;
    fs::remove(out, ec);
    const child c = run_child(argv, stdout_path);
    report(state, key, c, static_cast<double>(fs::file_size(in)), out);
    if (key.find("sluice") != std::string::npos && c.ok) {
      const child t = run_child({"gzip", "-t", out.string()}, "/dev/null");
      if (!t.ok) state.SkipWithError("gzip -t rejected sluice's output");
      g_results[key].ok = t.ok;
    }
    g_results[key].mb_per_s = static_cast<double>(fs::file_size(in)) / c.seconds / 1e6;
    state.counters["MB_per_s"] = g_results[key].mb_per_s;
    fs::remove(out, ec);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(fs::file_size(in)));
}

void bm_sluice(benchmark::State& state, int jobs, bool big) {
  const fs::path in = big ? big_input() : input();
  const fs::path out = g_settings.dir / "out-sluice.gz";
  const std::string key = big ? "gzip_big/sluice" : (jobs == 2 ? "gzip/sluice" : "gzip/sluice:jobs1");
  gzip_with(state, key,
            {g_settings.tool.string(), "gzip", "--force", "--jobs", std::to_string(jobs), in.string(), out.string()},
            "/dev/null", out, in);
}

void bm_node_gzip(benchmark::State& state) {
  const fs::path js = g_settings.dir / "gzip.js";
  write_script(js,
               "const {pipeline} = require('stream');\n"
               "const fs = require('fs'); const zlib = require('zlib');\n"
               "pipeline(fs.createReadStream(process.argv[2]), zlib.createGzip(), fs.createWriteStream(process.argv[3]),\n"
               "  (err) => { if (err) { console.error(err); process.exit(1); } });\n");
  const fs::path out = g_settings.dir / "out-node.gz";
  gzip_with(state, "gzip/node", {"node", js.string(), input().string(), out.string()}, "/dev/null", out, input());
}

void bm_gzip(benchmark::State& state) {
  const fs::path out = g_settings.dir / "out-gzip.gz";
  gzip_with(state, "gzip/gzip", {"gzip", "-6", "-c", input().string()}, out.string(), out, input());
}

void bm_pigz(benchmark::State& state) {
  const fs::path out = g_settings.dir / "out-pigz.gz";
  gzip_with(state, "gzip/pigz", {"pigz", "-p", "2", "-6", "-c", input().string()}, out.string(), out, input());
}

// ---- lines ------------------------------------------------------------------------------

std::uint64_t g_lines = 0;

// read_budget: the read_file -> lines channel's byte budget (64 KiB is the default).
void bm_lines_sluice(benchmark::State& state, std::size_t read_budget, const std::string& key) {
  for (auto _ : state) {
    std::uint64_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    sluice::pipeline(io::read_file(input(), {}, {.capacity = read_budget}), io::lines(),
                     sluice::into([&n](const io::line&) { ++n; }))
        .run();
    child c;
    c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    c.ok = true;
    if (g_lines != 0 && n != g_lines) state.SkipWithError("a different number of lines");
    g_lines = n;
    report(state, key, c, static_cast<double>(n), {});
    state.counters["lines"] = static_cast<double>(n);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(g_lines));
}

void bm_lines_node(benchmark::State& state) {
  const fs::path js = g_settings.dir / "lines.js";
  write_script(js,
               "const fs = require('fs'); const readline = require('readline');\n"
               "(async () => {\n"
               "  const rl = readline.createInterface({input: fs.createReadStream(process.argv[2]), crlfDelay: Infinity});\n"
               "  let n = 0;\n"
               "  for await (const line of rl) n++;\n"
               "  console.log(n);\n"
               "})();\n");
  std::uint64_t n = 0;
  for (auto _ : state) {
    const child c = run_child({"node", js.string(), input().string()}, "");
    n = std::strtoull(c.out.c_str(), nullptr, 10);
    report(state, "lines/node", c, static_cast<double>(n), {});
    if (g_lines != 0 && n != g_lines) state.SkipWithError("node counted a different number of lines");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
}

// ---- engines -----------------------------------------------------------------------------

void bm_engine(benchmark::State& state, int level, bool libdeflate) {
  static std::string sample;
  if (sample.empty()) {
    std::FILE* f = std::fopen(input().c_str(), "rb");
    sample.resize(std::min<std::uintmax_t>(std::uintmax_t{64} << 20, fs::file_size(input())));
    sample.resize(std::fread(sample.data(), 1, sample.size(), f));
    std::fclose(f);
  }
  constexpr std::size_t kBlock = 128 << 10;
  std::size_t out_bytes = 0;
  for (auto _ : state) {
    out_bytes = 0;
    io::gzip_block_compressor c(level, libdeflate ? io::deflate_engine::libdeflate : io::deflate_engine::zlib);
    sluice::buffer out(c.bound(kBlock));
    for (std::size_t off = 0; off < sample.size(); off += kBlock) {
      out.clear();
      c.compress(std::string_view(sample).substr(off, kBlock), out);
      out_bytes += out.size();
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * sample.size()));
  state.counters["ratio"] = static_cast<double>(out_bytes) / static_cast<double>(sample.size());
}

// ---- summary --------------------------------------------------------------------------------

void print_summary() {
  auto get = [](const std::string& k) -> const result* {
    const auto it = g_results.find(k);
    return it == g_results.end() ? nullptr : &it->second;
  };
  std::printf("\n## io summary\n\n");
  double load[3] = {0, 0, 0};
  ::getloadavg(load, 3);
  std::printf("input: %.0f MiB of generated log lines (%s); big input %.0f MiB; %u hardware threads; "
              "load average %.2f %.2f %.2f at the end\n\n",
              static_cast<double>(fs::file_size(input())) / 1048576.0, input().c_str(),
              static_cast<double>(g_settings.big) / 1048576.0, std::thread::hardware_concurrency(), load[0], load[1],
              load[2]);
  const result* node = get("gzip/node");
  const result* pigz = get("gzip/pigz");
  std::printf("| gzip, level 6                 |   MB/s | peak RSS MiB | output MiB | speed vs node | speed vs pigz | RSS vs node |\n");
  std::printf("|-------------------------------|-------:|-------------:|-----------:|--------------:|--------------:|------------:|\n");
  const char* rows[][2] = {{"gzip/sluice", "sluice gzip --jobs 2"},    {"gzip/sluice:jobs1", "sluice gzip --jobs 1"},
                           {"gzip_big/sluice", "sluice gzip --jobs 2 (big)"}, {"gzip/node", "node stream.pipeline"},
                           {"gzip/gzip", "gzip -6"},                    {"gzip/pigz", "pigz -p 2 -6"}};
  for (const auto& row : rows) {
    const result* r = get(row[0]);
    if (r == nullptr) continue;
    auto ratio = [](const result* a, const result* b, bool speed) {
      if (a == nullptr || b == nullptr) return std::string("-");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fx", speed ? a->mb_per_s / b->mb_per_s : a->rss_mib / b->rss_mib);
      return std::string(buf);
    };
    std::printf("| %-29s | %6.1f | %12.1f | %10.1f | %13s | %13s | %11s |%s\n", row[1], r->mb_per_s, r->rss_mib,
                r->out_mib, ratio(r, node, true).c_str(), ratio(r, pigz, true).c_str(), ratio(r, node, false).c_str(),
                r->ok ? "" : " FAILED");
  }
  const result* ls = get("lines/sluice");
  const result* ln = get("lines/node");
  if (ls != nullptr || ln != nullptr) {
    std::printf("\n| lines                        | M lines/s |   MB/s | vs node |\n");
    std::printf("|------------------------------|----------:|-------:|--------:|\n");
    if (ls != nullptr) {
      std::printf("| io::lines, 1 MiB read-ahead | %9.2f | %6.0f | %6.2fx |\n", ls->items_per_s / 1e6, ls->mb_per_s,
                  ln != nullptr ? ls->items_per_s / ln->items_per_s : 0.0);
    }
    if (const result* l64 = get("lines/sluice:read64k"); l64 != nullptr) {
      std::printf("| io::lines, 64 KiB read-ahead | %9.2f | %6.0f | %6.2fx |\n", l64->items_per_s / 1e6, l64->mb_per_s,
                  ln != nullptr ? l64->items_per_s / ln->items_per_s : 0.0);
    }
    if (ln != nullptr) {
      std::printf("| node readline                | %9.2f | %6.0f |   1.00x |\n", ln->items_per_s / 1e6, ln->mb_per_s);
    }
  }
  const result* s2 = get("gzip/sluice");
  const result* sb = get("gzip_big/sluice");
  std::printf("\ntargets (ratios in this run):\n");
  auto check = [](const char* what, double got, double need, bool at_least) {
    const bool met = at_least ? got >= need : got <= need;
    std::printf("  %-52s %6.2f  (%s %.2f)  %s\n", what, got, at_least ? ">=" : "<=", need, met ? "met" : "NOT MET");
  };
  if (s2 != nullptr && node != nullptr) check("sluice gzip --jobs 2 speed / node", s2->mb_per_s / node->mb_per_s, 2.5, true);
  if (s2 != nullptr && pigz != nullptr) check("sluice gzip --jobs 2 speed / pigz -p 2", s2->mb_per_s / pigz->mb_per_s, 1.3, true);
  if (s2 != nullptr && node != nullptr) check("sluice gzip --jobs 2 peak RSS / node", s2->rss_mib / node->rss_mib, 0.25, false);
  if (sb != nullptr && node != nullptr) check("  same, on the big input", sb->rss_mib / node->rss_mib, 0.25, false);
  if (sb != nullptr && s2 != nullptr) {
    check("peak RSS growth, big input minus 1x input (MiB)", sb->rss_mib - s2->rss_mib, 2.0, false);
  }
  if (ls != nullptr && ln != nullptr) check("io::lines lines/s / node readline", ls->items_per_s / ln->items_per_s, 5.0, true);
  std::printf("## end io summary\n");
  std::fflush(stdout);
}

std::uint64_t parse_size(const char* s) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  const std::string unit = end;
  double mul = 1;
  if (unit == "KiB" || unit == "K") mul = 1024.0;
  if (unit == "MiB" || unit == "M") mul = 1048576.0;
  if (unit == "GiB" || unit == "G") mul = 1073741824.0;
  return static_cast<std::uint64_t>(v * mul);
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path self = fs::absolute(argv[0]).parent_path();
  g_settings.dir = self.parent_path() / "bench" / "io-data";
  g_settings.tool = self.parent_path() / "tools" / "sluice";
  sluice_bench::main_options o;
  o.defaults = false;
  o.bad_arguments_status = 2;
  o.own_flag = [](std::string_view a) {
    if (a.rfind("--io_size=", 0) == 0) {
      g_settings.size = parse_size(std::string(a.substr(10)).c_str());
    } else if (a.rfind("--io_big=", 0) == 0) {
      g_settings.big = parse_size(std::string(a.substr(9)).c_str());
    } else if (a.rfind("--io_dir=", 0) == 0) {
      g_settings.dir = a.substr(9);
    } else if (a.rfind("--io_tool=", 0) == 0) {
      g_settings.tool = a.substr(10);
    } else {
      return false;
    }
    return true;
  };
  o.register_all = [] {
    if (!fs::exists(g_settings.tool)) {
      std::fprintf(stderr, "io_bench: no sluice tool at %s (build it, or pass --io_tool=PATH)\n", g_settings.tool.c_str());
      return 2;
    }
    fs::create_directories(g_settings.dir);
    generate(input(), g_settings.size);
    if (g_settings.big != 0) make_big(input(), big_input(), g_settings.big);

    benchmark::AddCustomContext("target.gzip", "node>=2.5 pigz>=1.3");
    benchmark::AddCustomContext("target.lines", "node>=5");
    benchmark::AddCustomContext("input_bytes", std::to_string(g_settings.size));
    auto once = [](benchmark::internal::Benchmark* b) {
      b->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
    };
    once(benchmark::RegisterBenchmark("gzip/sluice", [](benchmark::State& s) { bm_sluice(s, 2, false); }));
    once(benchmark::RegisterBenchmark("gzip/sluice:jobs1", [](benchmark::State& s) { bm_sluice(s, 1, false); }));
    once(benchmark::RegisterBenchmark("gzip/node", bm_node_gzip));
    once(benchmark::RegisterBenchmark("gzip/gzip", bm_gzip));
    once(benchmark::RegisterBenchmark("gzip/pigz", bm_pigz));
    if (g_settings.big != 0) {
      once(benchmark::RegisterBenchmark("gzip_big/sluice", [](benchmark::State& s) { bm_sluice(s, 2, true); }));
    }
    once(benchmark::RegisterBenchmark("lines/sluice", [](benchmark::State& s) {
      bm_lines_sluice(s, std::size_t{1} << 20, "lines/sluice");
    }));
    once(benchmark::RegisterBenchmark("lines/sluice:read64k", [](benchmark::State& s) {
      bm_lines_sluice(s, io::kByteBudget, "lines/sluice:read64k");
    }));
    once(benchmark::RegisterBenchmark("lines/node", bm_lines_node));
    for (const int level : {1, 6, 8, 9}) {
      for (const bool ld : {true, false}) {
        benchmark::RegisterBenchmark(("engine_L" + std::to_string(level) + (ld ? "/libdeflate" : "/zlib")).c_str(),
                                     [level, ld](benchmark::State& s) { bm_engine(s, level, ld); })
            ->Iterations(1)
            ->Unit(benchmark::kMillisecond);
      }
    }
    return 0;
  };
  o.after = [] {
    print_summary();
    std::error_code ec;
    if (g_settings.big != 0) fs::remove(big_input(), ec);  // 4 GiB is too much to keep around
  };
  return sluice_bench::benchmark_main(argc, argv, o);
}
