// tools/bench/report_html.hpp — `sluice bench --report FILE.html`: one self-contained page
// (no network, no external file) with the graph picture drawn from the final snapshot (the
// same renderer as the live view of metrics::serve, sluice/detail/graph_view.hpp), the
// throughput over time as an SVG line chart, and the latency percentiles (p50, p99,
// p99.9) against offered load, one curve per percentile and engine.
//
//   sluice::tool::report_data d;
//   d.title = "sluice bench chain:4";
//   d.snapshot_json = sluice::metrics::to_json(rep.metrics);
//   d.throughput = {{0.5, 1.2e6}, {1.0, 1.3e6}};
//   d.latency = {{.offered_per_s = 1e5, .achieved_per_s = 1e5, .p50_us = 3, .p99_us = 9,
//                 .p999_us = 20, .engine = "sluice"}};
//   sluice::tool::write_report_html("report.html", d);
//
// Guarantees: render_report_html is pure and deterministic. write_report_html writes the
// page whole or not at all (common/write_file.hpp: a temporary file renamed into place, a
// device or FIFO written in place, never replaced); it throws std::runtime_error naming
// the path and the reason.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace sluice::tool {

struct latency_point {
  double offered_per_s = 0;
  double achieved_per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  std::string engine;
  // The graph could not take the offered rate: `unsent` of the `due` items were never
  // sent, so the percentiles leave out the slowest and are lower bounds (marked so).
  bool saturated = false;
  unsigned long long unsent = 0;
  unsigned long long due = 0;
};

struct report_data {
  std::string title;
  std::string note;                                   // shown under the title ("interrupted by ...")
  std::string snapshot_json;                          // final graph snapshot (metrics::to_json)
  std::string shown_run;                              // the run the snapshot and throughput are of ("" : not said)
  std::vector<std::pair<double, double>> throughput;  // (seconds since start, items/s)
  std::vector<latency_point> latency;                 // may be empty (closed-loop run)
};

std::string render_report_html(const report_data& d);
void write_report_html(const std::string& path, const report_data& d);

}  // namespace sluice::tool
