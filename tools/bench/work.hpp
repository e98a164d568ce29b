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

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/pacing.hpp"
#include "common/args.hpp"
#include "common/sys.hpp"

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

// Does the work of `w`: spin, busy for its duration; sleep, that much wall time at little
// CPU (asleep until 30 us before the end, then busy: bench::sleep_precisely_until_ns; a
// plain sleep would end late by the kernel's wake-up latency, tens of microseconds on a
// loaded machine, the size of what the bench measures). Work longer than kWorkSlice is
// done in slices, and `cut()` is asked before it and between slices: once it says so the
// work ends, and false says it was not done whole. An in-process run cuts at a ^C; a side
// of a --cut run once its graph is stopping (with --work 1h, a ^C or a `timeout` left
// that side spinning for the hour).
inline constexpr std::int64_t kWorkSlice = 100'000'000;  // ns
template <class Cut>
bool do_work(const work_spec& w, Cut&& cut) {
  if (w.d.count() <= 0) return true;
  if (cut()) return false;
  const std::int64_t end = now_ns() + w.d.count();
  if (w.d.count() > kWorkSlice) {
    for (std::int64_t left = end - now_ns(); left > kWorkSlice; left = end - now_ns()) {
      if (cut()) return false;
      if (w.sleep) {
        sleep_until_ns(now_ns() + kWorkSlice);
      } else {
        spin_for(std::chrono::nanoseconds(kWorkSlice));
      }
    }
    if (cut()) return false;
  }
  if (w.sleep) {
    sleep_precisely_until_ns(end);
  } else {
    spin_for(std::chrono::nanoseconds(std::max<std::int64_t>(0, end - now_ns())));
  }
  return true;
}

}  // namespace sluice::tool::bench
