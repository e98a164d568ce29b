// `sluice demo`'s memory-guard note (tools/demo/guard_note.hpp): it projects where memory
// would have gone, at the rates the source generated and the sink sent, only when the
// source outran the sink by enough to pass the guard.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../../tools/demo/guard_note.hpp"
#include "../../tools/demo/memory_rows.hpp"

namespace {

using sluice::tool::demo::guard_note;
using sluice::tool::demo::oom_note;

constexpr std::uint64_t kMiB = 1024 * 1024;

TEST(DemoGuardNote, ASourceFarAheadOfTheSinkProjectsThePeakForTheWholeInput) {
  // 100 MiB generated in 1 s against a 20 MiB/s sink: 4 GiB of input would peak at
  // 4 GiB x (1 - 20/100) = 3.2 GiB.
  const std::string note = guard_note(4096 * kMiB, 20 * kMiB, 48 * kMiB, 100 * kMiB, 20 * kMiB, 1.0);
  EXPECT_EQ(note, "stopped by the memory guard (48.0 MiB) after 100.0 MiB generated and 20.0 MiB sent: memory was "
                  "growing by 80.0 MiB/s and would have kept growing, to about 3.2 GiB for this input");
}

TEST(DemoGuardNote, APeakBelowTheGuardIsNamedAsSuchNotAsTheGuard) {
  // 60 MiB in 2 s (30 MiB/s) against 20 MiB/s sent: 100 MiB of input would peak at 33.3 MiB.
  const std::string note = guard_note(100 * kMiB, 20 * kMiB, 48 * kMiB, 60 * kMiB, 40 * kMiB, 2.0);
  EXPECT_NE(note.find("memory was growing by 10.0 MiB/s, though at this run's average rates the queue would have "
                      "peaked at about 33.3 MiB, below the guard"),
            std::string::npos)
      << note;
  EXPECT_EQ(note.find("would have kept growing"), std::string::npos) << note;
}

// The run seen under ThreadSanitizer: the sink, capped at 20 MiB/s, sent 3.4 MiB in 0.63 s
// while 11.4 MiB were generated. Projected at its cap it "kept up" (18.1 MiB/s of source);
// at the rate it sent, the queue kept growing.
TEST(DemoGuardNote, ASinkSlowerThanItsCapIsProjectedAtTheRateItSent) {
  const auto mib = [](double m) { return static_cast<std::uint64_t>(m * kMiB); };
  const std::string note = guard_note(4096 * kMiB, 20 * kMiB, 48 * kMiB, mib(11.4), mib(3.4), 0.63);
  EXPECT_NE(note.find("3.4 MiB sent (the sink sent 5.4 MiB/s of its 20.0 MiB/s): memory was growing by 12.7 MiB/s"),
            std::string::npos)
      << note;
  EXPECT_NE(note.find("would have kept growing"), std::string::npos) << note;
}

// Out of memory (a ulimit) before the guard: said as such, with the chunk refused, and the
// guard named only when the run had one.
TEST(DemoGuardNote, OutOfMemoryIsSaidAsSuchNotAsTheGuard) {
  EXPECT_EQ(oom_note(4 * kMiB, 4096 * kMiB, 98 * kMiB, 20 * kMiB),
            "stopped: out of memory (the system refused the next chunk of 4.0 MiB) after 98.0 MiB generated and "
            "20.0 MiB sent, before the memory guard (4.0 GiB) was reached");
  EXPECT_EQ(oom_note(4 * kMiB, 0, 98 * kMiB, 20 * kMiB).find("guard"), std::string::npos);
}

TEST(DemoGuardNote, ASinkThatKeptUpOnAverageMakesItABurst) {
  // All that was generated was sent: what tripped the guard was memory not given back.
  const std::string note = guard_note(100 * kMiB, 1024 * kMiB, 48 * kMiB, 60 * kMiB, 60 * kMiB, 1.0);
  EXPECT_NE(note.find(", though on average the sink kept up with the source (a burst, not a trend)"),
            std::string::npos)
      << note;
  EXPECT_EQ(note.find("would have"), std::string::npos) << note;
  // A run stopped at once (no time measured) still gives a finite note.
  EXPECT_EQ(guard_note(100 * kMiB, 1024 * kMiB, 48 * kMiB, 0, 0, 0.0).find("nan"), std::string::npos);
}

// The "memory over time" table's rows (tools/demo/memory_rows.hpp).
struct mem_sample {
  double t, rss;
};

TEST(DemoMemoryRows, TheLastRowTakesTheFinalSampleTakenJustAfterTheEnd) {
  // A run that measured 0.04 s, whose final sample came at 0.0406 s: every row showed the
  // first sample's 0.2 MiB while the summary said a peak of +2.3 MiB.
  const std::vector<mem_sample> s{{0.0, 0.2}, {0.0406, 2.3}};
  EXPECT_DOUBLE_EQ(sluice::tool::demo::rss_in_row(s, 0.036, 0.04, true), 2.3);
  EXPECT_DOUBLE_EQ(sluice::tool::demo::rss_in_row(s, 0.032, 0.036, false), 0.2);
  EXPECT_DOUBLE_EQ(sluice::tool::demo::rss_in_row(s, -1.0, 0.0, false), 0.2);
}

TEST(DemoMemoryRows, APeakBetweenTwoRowsShowsInTheRowAfterIt) {
  const std::vector<mem_sample> s{{0.0, 1.0}, {0.12, 3.0}, {0.15, 9.0}, {0.19, 1.0}, {0.35, 2.0}};
  using sluice::tool::demo::rss_in_row;
  EXPECT_DOUBLE_EQ(rss_in_row(s, 0.1, 0.2, false), 9.0);   // the highest inside, not the last
  EXPECT_DOUBLE_EQ(rss_in_row(s, 0.2, 0.3, false), 1.0);   // none inside: the last before
  EXPECT_DOUBLE_EQ(rss_in_row(s, 0.3, 0.4, false), 2.0);
  EXPECT_DOUBLE_EQ(rss_in_row(std::vector<mem_sample>{}, 0.0, 0.1, true), 0.0);
  EXPECT_DOUBLE_EQ(rss_in_row(std::vector<mem_sample>{{0.0, -5.0}}, -1.0, 0.0, true), 0.0);  // below baseline: 0
  // A row whose samples are all below the baseline shows 0, not an older row's figure.
  EXPECT_DOUBLE_EQ(rss_in_row(std::vector<mem_sample>{{0.05, 50.0}, {0.15, -4096.0}}, 0.1, 0.2, false), 0.0);
}

// The samples a run keeps (sample_keeper): a run sampled every 100 us kept each one, and
// the tool grew by about 1 MiB a second, which the demo then showed as the run's memory.
TEST(DemoMemoryRows, ARunKeepsABoundedEvenSpreadOfSamplesAndEveryPeak) {
  using keeper = sluice::tool::demo::sample_keeper<mem_sample>;
  std::vector<mem_sample> kept;
  keeper k(kept);
  constexpr int kTaken = 1'000'000;  // 100 s at 100 us
  for (int i = 0; i < kTaken; ++i) {
    const double rss = i == 777'777 ? 500.0 : (i == 3 ? 400.0 : 1.0);  // two one-sample spikes
    k.add({i * 1e-4, rss}, i == kTaken - 1);
    ASSERT_LE(kept.size(), keeper::kMaxKept) << "after sample " << i;
  }
  ASSERT_GE(kept.size(), keeper::kMaxKept / 4);
  EXPECT_DOUBLE_EQ(kept.front().t, 0.0);                 // the start
  EXPECT_DOUBLE_EQ(kept.back().t, (kTaken - 1) * 1e-4);  // the final sample
  double highest = 0;
  int spikes = 0;
  for (std::size_t i = 0; i < kept.size(); ++i) {
    if (i > 0) {
      EXPECT_GT(kept[i].t, kept[i - 1].t);
      // Even: no gap wider than two strides of what is kept now.
      EXPECT_LT(kept[i].t - kept[i - 1].t, 4 * 100.0 / static_cast<double>(kept.size())) << i;
    }
    highest = std::max(highest, kept[i].rss);
    if (kept[i].rss > 1.0) ++spikes;
  }
  EXPECT_DOUBLE_EQ(highest, 500.0);
  EXPECT_EQ(spikes, 2);  // each peak folded into one kept sample, neither lost
  // Where each peak went: the kept sample at or just after it.
  using sluice::tool::demo::rss_in_row;
  EXPECT_DOUBLE_EQ(rss_in_row(kept, 70.0, 80.0, false), 500.0);
  EXPECT_DOUBLE_EQ(rss_in_row(kept, 0.0, 10.0, false), 400.0);
  EXPECT_DOUBLE_EQ(rss_in_row(kept, 10.0, 20.0, false), 1.0);
}

}  // namespace
