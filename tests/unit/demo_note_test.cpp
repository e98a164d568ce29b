// `sluice demo`'s memory-guard note (tools/demo/guard_note.hpp): it projects where memory
// would have gone, at the rates the source generated and the sink sent, only when the
// source outran the sink by enough to pass the guard.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "../../tools/demo/guard_note.hpp"

namespace {

using sluice::tool::demo::guard_note;

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

}  // namespace
