// tools/bench/gbench_json.hpp — `sluice bench --format gbench`: results in Google
// Benchmark's JSON schema, so its tools/compare.py and other tooling read them.
//
//   std::vector<bench::gbench_entry> rows = {{.name = "chain:4/cap:64/sluice", .iterations = n,
//                                             .real_time_ns = ns_per_item, ...}};
//   std::fputs(bench::gbench_json(rows, {{"sluice_topology", "chain:4"}}).c_str(), stdout);
//
// Schema (what benchmark::JSONReporter writes, version 1.6+): a "context" object with
// date, host_name, executable, num_cpus, mhz_per_cpu, cpu_scaling_enabled, caches,
// load_avg, library_build_type; and "benchmarks": one object per row with name,
// family_index, per_family_instance_index, run_name, run_type "iteration",
// repetitions, repetition_index, threads, iterations, real_time, cpu_time, time_unit,
// items_per_second, then user counters as plain numeric members (p50_us, ...).
// One row is one run: iterations = items delivered, real_time and cpu_time per item.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/sys.hpp"

namespace sluice::tool::bench {

struct gbench_entry {
  std::string name;
  std::uint64_t iterations = 0;
  double real_time_ns = 0;  // per iteration (item)
  double cpu_time_ns = 0;   // per iteration (item), the whole process
  double items_per_second = 0;
  std::vector<std::pair<std::string, double>> counters;  // user counters
  std::string error;  // non-empty: written as error_occurred / error_message, as Google Benchmark marks a failed run
};

namespace detail {

inline std::string gbench_num(double v) {
  if (!std::isfinite(v)) return "0";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

inline int cpu_mhz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return static_cast<int>(std::atof(line.c_str() + colon + 1));
    }
  }
  return 0;
}

inline std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("sluice");
}

}  // namespace detail

// The whole document. `extra` joins the context as string members (what was measured).
inline std::string gbench_json(const std::vector<gbench_entry>& rows,
                               const std::vector<std::pair<std::string, std::string>>& extra) {
  char date[64] = "";
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S%z", &tm);
  std::string d = date;  // +0000 -> +00:00, as Google Benchmark writes it
  if (d.size() > 2 && (d[d.size() - 5] == '+' || d[d.size() - 5] == '-')) d.insert(d.size() - 2, ":");
  char host[256] = "";
  ::gethostname(host, sizeof host - 1);
  double load[3] = {0, 0, 0};
  const int nload = ::getloadavg(load, 3);
#ifdef NDEBUG
  const char* build_type = "release";
#else
  const char* build_type = "debug";
#endif
  std::string o = "{\n  \"context\": {\n";
  o += "    \"date\": " + json_escape(d) + ",\n";
  o += "    \"host_name\": " + json_escape(host) + ",\n";
  o += "    \"executable\": " + json_escape(detail::self_exe()) + ",\n";
  o += "    \"num_cpus\": " + std::to_string(std::thread::hardware_concurrency()) + ",\n";
  o += "    \"mhz_per_cpu\": " + std::to_string(detail::cpu_mhz()) + ",\n";
  o += "    \"cpu_scaling_enabled\": false,\n";
  o += "    \"caches\": [],\n";
  o += "    \"load_avg\": [";
  for (int i = 0; i < nload; ++i) o += (i ? "," : "") + detail::gbench_num(load[i]);
  o += "],\n";
  o += "    \"library_build_type\": " + json_escape(build_type);
  for (const auto& [k, v] : extra) o += ",\n    " + json_escape(k) + ": " + json_escape(v);
  o += "\n  },\n  \"benchmarks\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const gbench_entry& r = rows[i];
    o += i ? ",\n" : "\n";
    o += "    {\n";
    o += "      \"name\": " + json_escape(r.name) + ",\n";
    o += "      \"family_index\": " + std::to_string(i) + ",\n";
    o += "      \"per_family_instance_index\": 0,\n";
    o += "      \"run_name\": " + json_escape(r.name) + ",\n";
    o += "      \"run_type\": \"iteration\",\n";
    o += "      \"repetitions\": 1,\n";
    o += "      \"repetition_index\": 0,\n";
    o += "      \"threads\": 1,\n";
    if (!r.error.empty()) {
      o += "      \"error_occurred\": true,\n";
      o += "      \"error_message\": " + json_escape(r.error) + ",\n";
    }
    o += "      \"iterations\": " + std::to_string(r.iterations) + ",\n";
    o += "      \"real_time\": " + detail::gbench_num(r.real_time_ns) + ",\n";
    o += "      \"cpu_time\": " + detail::gbench_num(r.cpu_time_ns) + ",\n";
    o += "      \"time_unit\": \"ns\",\n";
    o += "      \"items_per_second\": " + detail::gbench_num(r.items_per_second);
    for (const auto& [k, v] : r.counters) o += ",\n      " + json_escape(k) + ": " + detail::gbench_num(v);
    o += "\n    }";
  }
  o += rows.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return o;
}

}  // namespace sluice::tool::bench
