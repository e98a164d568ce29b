// tools/bench/work.hpp — a bench worker's simulated work (--work), parsed the same way by
// an in-process run and by the sides of a --cut run.
//
//   std::vector<sluice::tool::bench::work_spec> w;
//   if (!parse_work_list("0,sleep:100us,2us", w)) /* usage error */;
//
// A piece is "sleep:D" (wall time at little CPU), "spin:D" or "D" (busy), D a duration
// ("200ns", "1.5ms") or a bare number of nanoseconds of spin. A list is comma-separated,
// one piece per worker or one for all; an empty piece ("1us," or "") is refused.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/args.hpp"

namespace sluice::tool::bench {

struct work_spec {
  bool sleep = false;
  std::chrono::nanoseconds d{0};
  [[nodiscard]] std::string text() const {
    if (d.count() == 0) return "0";
    return (sleep ? "sleep:" : "") + format_duration(d);
  }
};

inline std::optional<work_spec> parse_work(std::string_view s) {
  work_spec w;
  if (s.rfind("sleep:", 0) == 0) {
    w.sleep = true;
    s.remove_prefix(6);
  } else if (s.rfind("spin:", 0) == 0) {
    s.remove_prefix(5);
  }
  std::optional<std::chrono::nanoseconds> d = parse_duration(s);
  if (!d) {
    // A bare number is nanoseconds of spin, at most 9.2e18 as every duration (2^63 - 1
    // passed, and the work's deadline, now + it, overflowed).
    const auto n = parse_count(s);
    if (!n || w.sleep || static_cast<double>(*n) > 9.2e18) return std::nullopt;
    d = std::chrono::nanoseconds(static_cast<std::int64_t>(*n));
  }
  w.d = *d;
  return w;
}

// Leaves `out` as it was when the list does not parse.
inline bool parse_work_list(std::string_view s, std::vector<work_spec>& out) {
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

}  // namespace sluice::tool::bench
