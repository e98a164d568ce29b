// tools/demo/render.cpp — how `sluice demo` shows its two runs: the table on stdout,
// --json, and the self-contained HTML report (--report FILE.html).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports a bogus -Wrestrict inside std::string's operator+ (GCC PR 105651).
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <functional>
#include <string>
#include <vector>

#include "common/args.hpp"
#include "common/sys.hpp"
#include "common/write_file.hpp"
#include "demo/demo.hpp"
#include "demo/memory_rows.hpp"

namespace sluice::tool::demo {
namespace {

// ---- output -------------------------------------------------------------------

double throughput(const run_result& r) { return r.elapsed_s > 0 ? static_cast<double>(r.sent) / r.elapsed_s : 0; }

std::string outcome(const run_result& r) {
  if (r.out_of_memory) return "out of memory";
  if (r.guard_hit) return "memory guard hit";
  if (r.completed) return "completed";
  return r.interrupted ? "interrupted" : "incomplete";
}

bool any_interrupted(const std::vector<run_result>& runs) {
  return std::any_of(runs.begin(), runs.end(), [](const run_result& r) { return r.interrupted; });
}

// Said under the table and in the report when ^C stopped a run: its figures are of what it
// sent before then, and no run after it was made.
constexpr const char* kInterruptedNote =
    "Interrupted: the run marked so stopped early; its figures are of what it sent before\n"
    "  then, and no run was made after it.";

}  // namespace

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
    return outcome(r);
  });
  row("bottleneck", [](const run_result& r) { return r.bottleneck.value_or("-"); });

  double t_max = 0;
  for (const auto& r : runs) t_max = std::max(t_max, r.elapsed_s);
  if (t_max > 0) {
    std::printf("\n  memory over time (RSS above each run's baseline, the highest since the row before)\n  %-10s", "t");
    for (const auto& r : runs) std::printf("%-27s", r.label.c_str());
    std::printf("\n");
    for (int i = 0; i <= 10; ++i) {
      const double t = t_max * i / 10.0;
      std::printf("  %-10s", fmt("%.2f s", t).c_str());
      for (const auto& r : runs) {
        if (t > r.elapsed_s + 1e-9) {
          std::printf("%-27s", "(finished)");
        } else {
          const double next = t_max * (i + 1) / 10.0;
          const double v = rss_in_row(r.samples, i == 0 ? -1.0 : t_max * (i - 1) / 10.0, t, i == 10 || next > r.elapsed_s + 1e-9);
          double peak = 1;
          for (const auto& q : runs) peak = std::max(peak, q.peak_rss);
          const int w = static_cast<int>(12.0 * v / peak + 0.5);
          // 13 characters of figure and up to 12 of bar: the column is 27 wide.
          std::printf("%-27s", (fmt("%8.1f MiB ", v / kMiB) + std::string(static_cast<std::size_t>(w), '|')).c_str());
        }
      }
      std::printf("\n");
    }
  }
  for (const auto& r : runs) {
    if (!r.note.empty()) std::printf("\n  %s: %s\n", r.label.c_str(), r.note.c_str());
  }
  if (any_interrupted(runs)) std::printf("\n  %s\n", kInterruptedNote);
  if (runs.size() == 2 && runs[0].peak_rss > 0 && runs[1].peak_rss > 0 && !any_interrupted(runs)) {
    const double ratio = runs[0].peak_rss / std::max(1.0, runs[1].peak_rss);
    if (ratio >= 2) {
      std::printf("\n  Same sink, same time: the unbounded queue held %.0fx the memory, because nothing told\n"
                  "  the source that the sink was slow. The bounded channels blocked it instead.\n",
                  ratio);
    } else {
      // Too little input (or too fast a sink) for the queue to grow: no lesson to claim.
      std::printf("\n  Here the unbounded queue's peak was %.1fx the bounded run's: the input was too small (or\n"
                  "  the sink too fast) for a queue to build up. A larger --bytes shows the difference.\n",
                  ratio);
    }
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
         ",\"out_of_memory\":" + (r.out_of_memory ? "true" : "false") +
         ",\"interrupted\":" + (r.interrupted ? "true" : "false") +
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
void write_report(const std::string& path, const demo_config& cfg, const std::vector<run_result>& runs) {
  std::ostringstream f;  // built whole, then written whole (common/write_file.hpp)
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

  f << "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"generator\" content=\"sluice demo\">"
       "<title>sluice demo</title><style>"
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
    return outcome(r);
  });
  row("bottleneck", [](const run_result& r) { return r.bottleneck.value_or("-"); });
  f << "</table>\n";
  for (const auto& r : runs)
    if (!r.note.empty()) f << "<p>" << html_escape(r.label + ": " + r.note) << "</p>\n";
  if (any_interrupted(runs)) {
    std::string note = kInterruptedNote;
    note.replace(note.find("\n  "), 3, " ");
    f << "<p>" << html_escape(note) << "</p>\n";
  }

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
  write_whole_file(path, f.str());
}

}  // namespace sluice::tool::demo
