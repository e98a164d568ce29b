// tools/bench/histogram.hpp — a log-linear latency histogram for `sluice bench`, in the
// manner of HdrHistogram: fixed memory, a bounded relative error, percentiles read after
// the run.
//
//   sluice::tool::bench::log_histogram h;
//   h.record(1'250);                  // nanoseconds
//   std::uint64_t p99 = h.quantile(0.99);
//
// Values below 2^kSubBits are counted exactly; above, every power of two is cut into
// 2^kSubBits equal sub-buckets, so a bucket is at most 1/2^kSubBits of its value wide:
// with kSubBits = 7 the relative error is under 0.8%. 64-bit values, 57 * 128 + 128
// buckets (about 59 KiB), whatever is recorded.
//
// Requires: one writer; readers only after the writer is done (no synchronisation
// inside: the caller joins the writer, e.g. the graph's run() or parallel_pipeline
// returning, before reading).
// Guarantees: quantile(q) returns the top of the bucket holding the ceil(q * count)-th
// smallest sample, capped at max(): never below that sample, and above it by less than
// one bucket width (< 0.8%). max() and count() are exact.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice::tool::bench {

class log_histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;  // 128
  static constexpr std::size_t kBuckets = kSub + (64 - kSubBits) * kSub;

  log_histogram() : counts_(kBuckets, 0) {}

  // Negative values (a clock that went backwards) count as 0.
  void record(std::int64_t v) { record_value(v < 0 ? 0 : static_cast<std::uint64_t>(v)); }

  void record_value(std::uint64_t v) {
    ++counts_[index(v)];
    ++n_;
    sum_ += static_cast<double>(v);
    max_ = std::max(max_, v);
    min_ = std::min(min_, v);
  }

  [[nodiscard]] std::uint64_t count() const { return n_; }
  [[nodiscard]] std::uint64_t max() const { return max_; }
  [[nodiscard]] std::uint64_t min() const { return n_ ? min_ : 0; }
  [[nodiscard]] double mean() const { return n_ ? sum_ / static_cast<double>(n_) : 0; }

  // See Guarantees above; q in [0, 1]. 0 when nothing was recorded.
  [[nodiscard]] std::uint64_t quantile(double q) const {
    if (n_ == 0) return 0;
    q = std::clamp(q, 0.0, 1.0);
    const auto target = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n_))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= target) return std::max(std::min(upper(i), max_), min());
    }
    return max_;
  }

  // The bucket a value falls in, and the largest value of a bucket (for tests).
  static std::size_t index(std::uint64_t v) {
    if (v < kSub) return static_cast<std::size_t>(v);
    const int e = std::bit_width(v) - 1;  // >= kSubBits
    const std::uint64_t sub = (v >> (e - kSubBits)) & (kSub - 1);
    return static_cast<std::size_t>(kSub + static_cast<std::uint64_t>(e - kSubBits) * kSub + sub);
  }
  static std::uint64_t upper(std::size_t i) {
    if (i < kSub) return i;
    const std::size_t e = (i - kSub) / kSub + kSubBits;
    const std::uint64_t sub = (i - kSub) % kSub;
    const std::uint64_t width = std::uint64_t{1} << (e - kSubBits);
    const std::uint64_t base = (std::uint64_t{1} << e) | (sub << (e - kSubBits));
    return base + (width - 1);
  }

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t n_ = 0;
  double sum_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = UINT64_MAX;
};

}  // namespace sluice::tool::bench
