// `sluice stress`'s closing outcome line (tools/stress/tally.hpp).
#include <gtest/gtest.h>

#include <string>

#include "stress/tally.hpp"

namespace {

using sluice::tool::outcome_tally;

// A probe's replay (seed 0x0a7fc62e255b3a38) had its sink finish early and then an
// injected fault on a push fail the run; the line said
// "0 returned normally (1 sinks finished early), 1 stage_error".
TEST(tool_stress_tally, a_sink_that_finished_early_counts_only_in_runs_that_returned_normally) {
  outcome_tally t;
  t.add("stage_error", false, true);
  t.add("cancelled", true, true);
  EXPECT_EQ(t.early, 0U);
  t.add("ok", false, true);
  t.add("ok", false, false);
  EXPECT_EQ(t.ok, 2U);
  EXPECT_EQ(t.early, 1U);
  EXPECT_EQ(t.error, 1U);
  EXPECT_EQ(t.cancelled, 1U);
  EXPECT_EQ(t.stuck, 1U);
  EXPECT_EQ(t.line(),
            "outcomes: 2 returned normally (1 sinks finished early), 1 stage_error, 1 cancelled; "
            "1 reports named a stuck stage");
}

TEST(tool_stress_tally, every_run_is_in_at_most_one_outcome_and_early_never_exceeds_ok) {
  outcome_tally t;
  const char* outcomes[] = {"ok", "stage_error", "cancelled", "other"};
  for (int i = 0; i < 64; ++i) t.add(outcomes[i % 4], (i & 4) != 0, (i & 8) != 0);
  EXPECT_EQ(t.ok + t.error + t.cancelled, 48U);
  EXPECT_LE(t.early, t.ok);
  EXPECT_EQ(t.early, 8U);  // i % 4 == 0 and (i & 8): i = 8, 12, 24, 28, 40, 44, 56, 60
}

}  // namespace
