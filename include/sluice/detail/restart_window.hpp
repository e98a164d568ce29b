// sluice/detail/restart_window.hpp — restart{max, within}'s intensity limit: how many
// restarts a stage had inside the last `within`, in bounded memory.
//
//   restart_window w;
//   if (!w.allow(now, lim.max, lim.within)) fail the graph;  // else restart
//
// The window holds runs of restarts: the oldest and newest time of each and how many.
// While it holds fewer than kExact runs, each restart is a run of its own and the count
// is exact. Past that, a restart joins the newest run when that run began less than
// within / kExact ago, so consecutive joined runs begin at least that far apart and the
// window holds at most about 2 * kExact + 2 runs, however large `max` and `within` are.
// (One timestamp per restart grew without bound: restart{.max = SIZE_MAX, .within =
// duration::max()}, "restart for ever", kept 16 bytes for every failure, and a stage
// failing on every item leaked megabytes a second.)
//
// Guarantees: allow() refuses the restart that would make more than `max` inside the
//   window, counting every restart; a restart leaves the count when its run's newest one
//   is more than `within` old, so with more than kExact runs in the window a restart may
//   count up to within / kExact longer than `within`, never shorter.
// Requires: `now` does not go backwards between calls; the caller serialises them.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>

namespace sluice::detail {

class restart_window {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;
  static constexpr std::size_t kExact = 4096;

  // Counts a restart at `now` and returns true, unless `max` restarts are already inside
  // the last `within` (then it counts nothing and returns false).
  bool allow(time_point now, std::size_t max, duration within) {
    while (!runs_.empty() && now - runs_.front().newest > within) {
      total_ -= runs_.front().count;
      runs_.pop_front();
    }
    if (total_ >= max) return false;
    if (runs_.size() >= kExact && now - runs_.back().oldest < within / static_cast<duration::rep>(kExact)) {
      runs_.back().newest = now;
      ++runs_.back().count;
    } else {
      runs_.push_back(run{now, now, 1});
    }
    ++total_;
    return true;
  }
  // Restarts counted inside the window now, and the runs holding them (for tests).
  [[nodiscard]] std::size_t count() const noexcept { return total_; }
  [[nodiscard]] std::size_t runs() const noexcept { return runs_.size(); }

 private:
  struct run {
    time_point oldest;
    time_point newest;
    std::size_t count;
  };
  std::deque<run> runs_;
  std::size_t total_ = 0;
};

}  // namespace sluice::detail
