// tools/demo/memory_rows.hpp — which memory figure each row of `sluice demo`'s "memory over
// time" table shows (tools/demo/render.cpp). Header only, so that
// tests/unit/demo_note_test.cpp checks it on samples of its own.
#pragma once

#include <algorithm>

namespace sluice::tool::demo {

// RSS above baseline in the row that ends at t: the highest sample in (t_prev, t], or the
// last one before t_prev when none falls inside, so that a peak between two rows still
// shows. The run's last row (last_row) takes the samples after t too: the final one is
// taken just after the run's measured end. Samples: in time order, each with .t and .rss.
template <class Samples>
double rss_in_row(const Samples& samples, double t_prev, double t, bool last_row) {
  double carried = 0;
  double highest = 0;
  bool inside = false;
  for (const auto& s : samples) {
    if (s.t <= t_prev) {
      carried = s.rss;
      continue;
    }
    if (s.t > t && !last_row) break;
    highest = inside ? std::max(highest, s.rss) : s.rss;
    inside = true;
  }
  return std::max(0.0, inside ? highest : carried);
}

}  // namespace sluice::tool::demo
