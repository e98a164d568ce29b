// benchmarks/bench_main.hpp — the `main` every benchmark suite shares: sluice's defaults
// for Google Benchmark, the suite's own flags taken out of argv, then registration, the
// run and the shutdown.
//
//   int main(int argc, char** argv) {
//     return sluice_bench::benchmark_main(argc, argv, {
//         .own_flag = [](std::string_view a) { return a == "--my_flag" ? (g_flag = true) : false; },
//         .register_all = [] { register_all(); return 0; }});
//   }
//
// Defaults (unless .defaults is false): --benchmark_min_time=0.3, 5 repetitions run in
// random order across all rows (a burst of load from elsewhere on the machine hits every
// implementation alike instead of one row; run.sh takes medians), aggregates only. They
// come first, so the same flags given on the command line win.
#pragma once

#include <benchmark/benchmark.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice_bench {

struct main_options {
  bool defaults = true;                               // prepend sluice's defaults
  std::function<bool(std::string_view)> own_flag = {};  // true: the suite's flag, consumed
  std::function<int()> register_all = {};             // registers; non-zero: exit with it
  std::function<void()> after = {};                   // after the run (summaries, clean-up)
  int bad_arguments_status = 1;                       // exit status for an unknown flag
};

inline int benchmark_main(int argc, char** argv, const main_options& o) {
  std::string defaults[] = {"--benchmark_min_time=0.3", "--benchmark_repetitions=5",
                            "--benchmark_enable_random_interleaving=true",
                            "--benchmark_report_aggregates_only=true"};
  std::vector<char*> args;
  args.push_back(argv[0]);
  if (o.defaults) {
    for (auto& d : defaults) args.push_back(d.data());
  }
  for (int i = 1; i < argc; ++i) {
    if (o.own_flag && o.own_flag(argv[i])) continue;
    args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return o.bad_arguments_status;
  if (o.register_all) {
    if (const int rc = o.register_all(); rc != 0) return rc;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (o.after) o.after();
  return 0;
}

}  // namespace sluice_bench
