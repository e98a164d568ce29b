// tools/demo/memory_rows.hpp — which memory figure each row of `sluice demo`'s "memory over
// time" table shows (tools/demo/render.cpp), and which samples a run keeps for it
// (tools/demo/run.cpp). Header only, so that tests/unit/demo_note_test.cpp checks them on
// samples of its own.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

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

// The samples a run keeps: at most kMaxKept, spread evenly over the whole run however long
// it is and however often it samples. Each one was kept: at --sample 100us the tool grew
// by about 1 MiB a second, the very memory the demo shows (a bounded run's flat line
// rose by 26 MiB in 30 s). When full, the samples after the first are merged in pairs
// (the later one stays), and from then on one in twice as many is kept; the memory of a
// merged or skipped sample is folded into the one kept after it (the higher of the two),
// so that no peak is lost from the rows or the chart. The first and every `always`
// sample (the run's final one) are kept. Samples: each with .t and .rss.
template <class Sample>
class sample_keeper {
 public:
  static constexpr std::size_t kMaxKept = 4096;
  explicit sample_keeper(std::vector<Sample>& kept) : kept_(kept) {}

  void add(Sample s, bool always = false) {
    s.rss = std::max(s.rss, skipped_rss_);
    if (!always && !kept_.empty() && ++seen_ % stride_ != 0) {
      skipped_rss_ = s.rss;
      return;
    }
    skipped_rss_ = kNone;
    kept_.push_back(std::move(s));
    if (kept_.size() < kMaxKept) return;
    std::size_t w = 1;
    for (std::size_t i = 1; i < kept_.size(); i += 2) {
      if (i + 1 < kept_.size()) kept_[i + 1].rss = std::max(kept_[i].rss, kept_[i + 1].rss);
      kept_[w++] = std::move(kept_[i + 1 < kept_.size() ? i + 1 : i]);
    }
    kept_.resize(w);
    stride_ *= 2;
  }

 private:
  std::vector<Sample>& kept_;
  std::uint64_t seen_ = 0;    // samples offered after the first, not always ones
  std::uint64_t stride_ = 1;  // one in stride_ of them is kept
  static constexpr double kNone = -std::numeric_limits<double>::infinity();
  double skipped_rss_ = kNone;  // the highest of those skipped since the last kept one
};

}  // namespace sluice::tool::demo
