// tools/bench/report_html.cpp — the HTML report of `sluice bench --report` (see the header).
#include "bench/report_html.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/sys.hpp"
#include "common/write_file.hpp"
#include "sluice/detail/graph_view.hpp"

namespace sluice::tool {
namespace {

// A number for SVG coordinates: fixed, short, never "nan".
std::string f(double v) {
  if (!std::isfinite(v)) v = 0;
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// 1234567 -> "1.23M" (axis labels and tables).
std::string si(double v) {
  if (!std::isfinite(v)) return "-";
  const double a = std::fabs(v);
  char b[32];
  // Each unit from where three digits of the one below would round to 1000 ("1e+03").
  if (a >= 999.5e6) {
    std::snprintf(b, sizeof b, "%.3gG", v / 1e9);
  } else if (a >= 999.5e3) {
    std::snprintf(b, sizeof b, "%.3gM", v / 1e6);
  } else if (a >= 999.5) {
    std::snprintf(b, sizeof b, "%.3gk", v / 1e3);
  } else {
    std::snprintf(b, sizeof b, "%.3g", v);
  }
  return b;
}

// Microseconds as a readable duration.
std::string us(double v) {
  char b[32];
  if (!std::isfinite(v)) return "-";
  if (v >= 1e6) {
    std::snprintf(b, sizeof b, "%.3g s", v / 1e6);
  } else if (v >= 1e3) {
    std::snprintf(b, sizeof b, "%.3g ms", v / 1e3);
  } else if (v >= 1) {
    std::snprintf(b, sizeof b, "%.3g \xC2\xB5s", v);
  } else {
    std::snprintf(b, sizeof b, "%.3g ns", v * 1e3);
  }
  return b;
}

// Round steps of 1, 2 or 5 times a power of ten: about `n` ticks over [0, hi].
// Past the doubles' range (a subnormal hi: `--rate 1e-323`) the power of ten underflowed
// to 0, and the tick loops never advanced, growing the page until memory ran out (a
// probe): then the one step is hi itself.
double nice_step(double hi, int n) {
  if (!(hi > 0) || !std::isfinite(hi)) return 1;
  const double raw = hi / n;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  const double step = (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  return step > 0 && std::isfinite(step) && hi / step <= 100 ? step : hi;
}

constexpr double kW = 860, kH = 330, kL = 78, kR = 24, kT = 20, kB = 52;

// The plot frame: axes, grid, x ticks (linear from 0), axis titles.
void frame(std::string& o, double xmax, const std::string& xtitle, const std::string& ytitle,
           std::string (*xfmt)(double)) {
  o += "<rect x=\"" + f(kL) + "\" y=\"" + f(kT) + "\" width=\"" + f(kW - kL - kR) + "\" height=\"" +
       f(kH - kT - kB) + "\" fill=\"#fff\" stroke=\"#adb5bd\"/>\n";
  const double step = nice_step(xmax, 8);
  for (double x = 0; x <= xmax * 1.0001; x += step) {
    const double px = kL + (kW - kL - kR) * x / xmax;
    o += "<line x1=\"" + f(px) + "\" y1=\"" + f(kT) + "\" x2=\"" + f(px) + "\" y2=\"" + f(kH - kB) +
         "\" stroke=\"#e9ecef\"/>\n";
    o += "<text x=\"" + f(px) + "\" y=\"" + f(kH - kB + 18) + "\" text-anchor=\"middle\" font-size=\"12\">" +
         html_escape(xfmt(x)) + "</text>\n";
  }
  o += "<text x=\"" + f((kL + kW - kR) / 2) + "\" y=\"" + f(kH - 10) +
       "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#495057\">" + html_escape(xtitle) + "</text>\n";
  o += "<text x=\"16\" y=\"" + f((kT + kH - kB) / 2) + "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#495057\" "
       "transform=\"rotate(-90 16 " + f((kT + kH - kB) / 2) + ")\">" + html_escape(ytitle) + "</text>\n";
}

std::string fmt_seconds(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g s", x);
  return b;
}
std::string fmt_rate(double x) { return si(x) + "/s"; }

std::string throughput_svg(const std::vector<std::pair<double, double>>& pts) {
  if (pts.empty()) return "<p class=\"none\">No throughput samples were taken.</p>\n";
  double xmax = 0, ymax = 0;
  for (const auto& [t, r] : pts) {
    xmax = std::max(xmax, t);
    ymax = std::max(ymax, r);
  }
  if (!(xmax > 0)) xmax = 1;
  const double ystep = nice_step(ymax > 0 ? ymax * 1.08 : 1, 5);
  const double ytop = ystep * std::ceil((ymax > 0 ? ymax * 1.08 : 1) / ystep);
  std::string o = "<svg class=\"chart throughput\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" + f(kW) +
                  "\" height=\"" + f(kH) + "\" viewBox=\"0 0 " + f(kW) + " " + f(kH) + "\" role=\"img\">\n" +
                  "<title>throughput over time</title>\n";
  frame(o, xmax, "time since start", "items per second", fmt_seconds);
  for (double y = 0; y <= ytop * 1.0001; y += ystep) {
    const double py = kH - kB - (kH - kT - kB) * y / ytop;
    o += "<line x1=\"" + f(kL) + "\" y1=\"" + f(py) + "\" x2=\"" + f(kW - kR) + "\" y2=\"" + f(py) +
         "\" stroke=\"#e9ecef\"/>\n<text x=\"" + f(kL - 6) + "\" y=\"" + f(py + 4) +
         "\" text-anchor=\"end\" font-size=\"12\">" + html_escape(si(y)) + "</text>\n";
  }
  std::string d;
  for (const auto& [t, r] : pts) {
    const double px = kL + (kW - kL - kR) * t / xmax;
    const double py = kH - kB - (kH - kT - kB) * std::max(0.0, r) / ytop;
    d += (d.empty() ? "M" : " L") + f(px) + "," + f(py);
  }
  o += "<path d=\"" + d + "\" fill=\"none\" stroke=\"#1971c2\" stroke-width=\"2.5\"/>\n";
  if (pts.size() <= 60) {
    for (const auto& [t, r] : pts) {
      o += "<circle cx=\"" + f(kL + (kW - kL - kR) * t / xmax) + "\" cy=\"" +
           f(kH - kB - (kH - kT - kB) * std::max(0.0, r) / ytop) + "\" r=\"3\" fill=\"#1971c2\"/>\n";
    }
  }
  o += "</svg>\n";
  return o;
}

struct series_style {
  const char* label;
  const char* color;
  double latency_point::*field;
};
constexpr series_style kPercentiles[] = {
    {"p50", "#1971c2", &latency_point::p50_us},
    {"p99", "#f08c00", &latency_point::p99_us},
    {"p99.9", "#c92a2a", &latency_point::p999_us},
};
constexpr const char* kDashes[] = {"none", "7 4", "2 3", "10 3 2 3"};

std::string latency_svg(const std::vector<latency_point>& pts) {
  // Engines in order of first appearance; points of each sorted by offered rate.
  std::vector<std::string> engines;
  std::map<std::string, std::vector<latency_point>> by;
  double xmax = 0, lo = 0, hi = 0;
  bool any = false;
  for (const auto& p : pts) {
    if (by.find(p.engine) == by.end()) engines.push_back(p.engine);
    by[p.engine].push_back(p);
    xmax = std::max(xmax, p.offered_per_s);
    for (const auto& s : kPercentiles) {
      const double v = p.*s.field;
      if (!(v > 0) || !std::isfinite(v)) continue;
      lo = any ? std::min(lo, v) : v;
      hi = any ? std::max(hi, v) : v;
      any = true;
    }
  }
  if (!(xmax > 0)) xmax = 1;
  if (!any) {
    lo = 1;
    hi = 10;
  }
  // Log scale over whole decades: p99.9 is often 10-100x p50.
  const double dlo = std::floor(std::log10(lo)), dhi = std::max(dlo + 1, std::ceil(std::log10(hi)));
  auto ypx = [&](double v) {
    const double l = std::log10(std::max(v, std::pow(10.0, dlo)));
    return kH - kB - (kH - kT - kB) * (l - dlo) / (dhi - dlo);
  };
  std::string o = "<svg class=\"chart latency\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" + f(kW) +
                  "\" height=\"" + f(kH + 28) + "\" viewBox=\"0 0 " + f(kW) + " " + f(kH + 28) + "\" role=\"img\">\n" +
                  "<title>latency against offered load</title>\n";
  frame(o, xmax * 1.05, "offered load (items per second)", "latency (log scale)", fmt_rate);
  for (double dcd = dlo; dcd <= dhi + 1e-9; dcd += 1) {
    const double v = std::pow(10.0, dcd);
    const double py = ypx(v);
    o += "<line x1=\"" + f(kL) + "\" y1=\"" + f(py) + "\" x2=\"" + f(kW - kR) + "\" y2=\"" + f(py) +
         "\" stroke=\"#dee2e6\"/>\n<text x=\"" + f(kL - 6) + "\" y=\"" + f(py + 4) +
         "\" text-anchor=\"end\" font-size=\"12\">" + html_escape(us(v)) + "</text>\n";
  }
  auto xpx = [&](double x) { return kL + (kW - kL - kR) * x / (xmax * 1.05); };
  for (std::size_t e = 0; e < engines.size(); ++e) {
    auto& v = by[engines[e]];
    std::sort(v.begin(), v.end(),
              [](const latency_point& a, const latency_point& b) { return a.offered_per_s < b.offered_per_s; });
    for (const auto& s : kPercentiles) {
      std::string d;
      std::string dots;
      for (const auto& p : v) {
        const double val = p.*s.field;
        if (!(val > 0) || !std::isfinite(val)) continue;
        d += (d.empty() ? "M" : " L") + f(xpx(p.offered_per_s)) + "," + f(ypx(val));
        // A saturated run's point is hollow: a lower bound, not a measurement of its rate.
        dots += "<circle cx=\"" + f(xpx(p.offered_per_s)) + "\" cy=\"" + f(ypx(val)) + "\" r=\"3.5\" " +
                (p.saturated ? "class=\"saturated\" fill=\"#fff\" stroke=\"" + std::string(s.color) + "\" stroke-width=\"2\""
                             : "fill=\"" + std::string(s.color) + "\"") +
                "><title>" + html_escape(engines[e]) + " " + s.label + " at " + html_escape(si(p.offered_per_s)) +
                "/s offered: " + html_escape(us(val)) +
                (p.saturated ? " (saturated: a lower bound)" : "") + "</title></circle>\n";
      }
      if (d.empty()) continue;
      o += "<path class=\"curve\" data-engine=\"" + html_escape(engines[e]) + "\" data-percentile=\"" + s.label + "\" d=\"" + d +
           "\" fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"2.2\" stroke-dasharray=\"" +
           kDashes[e % std::size(kDashes)] + "\"/>\n" + dots;
    }
  }
  // Legend under the plot: colour = percentile, dash = engine.
  double lx = kL;
  const double ly = kH + 14;
  for (const auto& s : kPercentiles) {
    o += "<line x1=\"" + f(lx) + "\" y1=\"" + f(ly) + "\" x2=\"" + f(lx + 26) + "\" y2=\"" + f(ly) + "\" stroke=\"" +
         s.color + "\" stroke-width=\"3\"/><text x=\"" + f(lx + 32) + "\" y=\"" + f(ly + 4) + "\" font-size=\"13\">" +
         s.label + "</text>\n";
    lx += 88;
  }
  for (std::size_t e = 0; e < engines.size(); ++e) {
    o += "<line x1=\"" + f(lx) + "\" y1=\"" + f(ly) + "\" x2=\"" + f(lx + 34) + "\" y2=\"" + f(ly) +
         "\" stroke=\"#343a40\" stroke-width=\"2.2\" stroke-dasharray=\"" + kDashes[e % std::size(kDashes)] +
         "\"/><text x=\"" + f(lx + 40) + "\" y=\"" + f(ly + 4) + "\" font-size=\"13\">" + html_escape(engines[e]) + "</text>\n";
    lx += 60 + 8 * static_cast<double>(engines[e].size());
  }
  o += "</svg>\n";
  return o;
}

std::string latency_table(const std::vector<latency_point>& pts) {
  std::string o =
      "<table class=\"latency\"><thead><tr><th>engine</th><th>offered</th><th>achieved</th><th>p50</th>"
      "<th>p99</th><th>p99.9</th><th></th></tr></thead><tbody>\n";
  bool any_saturated = false;
  for (const auto& p : pts) {
    std::string flag;
    if (p.saturated) {
      any_saturated = true;
      flag = "saturated";
      if (p.unsent != 0) flag += ": " + std::to_string(p.unsent) + " of " + std::to_string(p.due) + " due never sent";
    }
    o += std::string(p.saturated ? "<tr class=\"saturated\">" : "<tr>") + "<td>" + html_escape(p.engine) + "</td><td>" +
         html_escape(si(p.offered_per_s)) + "/s</td><td>" + html_escape(si(p.achieved_per_s)) + "/s</td><td>" +
         html_escape(us(p.p50_us)) + "</td><td>" + html_escape(us(p.p99_us)) + "</td><td>" + html_escape(us(p.p999_us)) +
         "</td><td>" + html_escape(flag) + "</td></tr>\n";
  }
  o += "</tbody></table>\n";
  if (any_saturated) {
    o += "<p class=\"saturated\">Saturated rows (hollow points): the graph could not take the offered rate. Items "
         "it fell behind on were sent late or never, so these percentiles leave out the slowest: they are lower "
         "bounds, not the latency at that rate.</p>\n";
  }
  return o;
}

// JSON inside <script type="application/json">: '<' only occurs inside JSON strings,
// where \u003c means the same, so no "</script>" can end the element early.
std::string script_safe_json(std::string_view json) {
  std::string o;
  o.reserve(json.size());
  for (char ch : json) {
    if (ch == '<') {
      o += "\\u003c";
    } else {
      o += ch;
    }
  }
  return o;
}

}  // namespace

std::string render_report_html(const report_data& d) {
  const std::string title = d.title.empty() ? std::string("sluice bench report") : d.title;
  std::string o;
  o.reserve(sluice::detail::kGraphViewJs.size() + d.snapshot_json.size() + 32 * 1024);
  o += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"generator\" content=\"sluice bench\">\n"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
       "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; "
       "style-src 'unsafe-inline'; img-src data:\">\n<title>";
  o += html_escape(title);
  o += "</title>\n<style>\n"
       "body { margin: 18px 24px; font-family: \"DejaVu Sans\", Verdana, sans-serif; color: #212529; }\n"
       "h1 { font-size: 22px; margin: 0 0 4px 0; }\n"
       "h2 { font-size: 17px; margin: 22px 0 6px 0; border-bottom: 1px solid #dee2e6; padding-bottom: 3px; }\n"
       "p.none { color: #868e96; }\n"
       "p.note { color: #c92a2a; }\n"
       "svg.chart { display: block; max-width: 100%; height: auto; }\n"
       "svg.chart text { font-family: \"DejaVu Sans\", Verdana, sans-serif; fill: #343a40; }\n"
       "table.latency { border-collapse: collapse; font-size: 13px; margin-top: 8px; }\n"
       "table.latency th, table.latency td { border: 1px solid #dee2e6; padding: 3px 10px; text-align: right; }\n"
       "table.latency th { background: #f1f3f5; }\n";
  o += sluice::detail::kGraphViewCss;
  o += "</style></head><body>\n<h1>";
  o += html_escape(title);
  o += "</h1>\n";
  if (!d.note.empty()) o += "<p class=\"note\">" + html_escape(d.note) + "</p>\n";
  const std::string of_run = d.shown_run.empty() ? std::string() : " (" + html_escape(d.shown_run) + ")";
  o += "<h2>The graph at the end of the run" + of_run + "</h2>\n";
  if (d.snapshot_json.empty()) {
    o += "<p class=\"none\">No graph snapshot (no sluice run was measured).</p>\n";
  } else {
    o += "<div id=\"graph\"></div>\n<script type=\"application/json\" id=\"snapshot\">";
    o += script_safe_json(d.snapshot_json);
    o += "</script>\n";
  }
  o += "<h2>Throughput over time" + of_run + "</h2>\n";
  o += throughput_svg(d.throughput);
  o += "<h2>Latency against offered load</h2>\n";
  if (d.latency.empty()) {
    o += "<p class=\"none\">Closed-loop run: no latency curves (run with --rate or --sweep to offer load "
         "open-loop).</p>\n";
  } else {
    o += latency_svg(d.latency);
    o += latency_table(d.latency);
  }
  if (!d.snapshot_json.empty()) {
    o += "<script>\n";
    o += sluice::detail::kGraphViewJs;
    o += "\n(function () {\n"
         "  var el = document.getElementById(\"graph\");\n"
         "  try {\n"
         "    SluiceGraphView.create(el).update(JSON.parse(document.getElementById(\"snapshot\").textContent));\n"
         "  } catch (e) { el.textContent = \"could not draw the graph: \" + e.message; }\n"
         "})();\n</script>\n";
  }
  o += "</body></html>\n";
  return o;
}

void write_report_html(const std::string& path, const report_data& d) {
  write_whole_file(path, render_report_html(d));  // common/write_file.hpp: whole or not at all
}

}  // namespace sluice::tool
