// tools/stress/tally.hpp — the outcome counts `sluice stress` prints after its runs.
//
//   outcome_tally t;
//   t.add("ok", /*stuck_named=*/false, /*sink_finished_early=*/true);
//   std::puts(t.line().c_str());
//   // outcomes: 1 returned normally (1 sinks finished early), 0 stage_error, ...
//
// Guarantees: each count is of runs; "sinks finished early" is a part of "returned
//   normally" (a run whose sink finished early and then failed, an injected fault on a
//   push after it, is a stage_error and only that: counted as early it printed
//   "0 returned normally (1 sinks finished early)").
// Lifetime: a value.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace sluice::tool {

struct outcome_tally {
  std::uint64_t ok = 0, error = 0, cancelled = 0, stuck = 0, early = 0;

  // outcome: the run's result as cmd_stress names it ("ok", "stage_error", "cancelled").
  void add(std::string_view outcome, bool stuck_named, bool sink_finished_early) {
    ok += outcome == "ok";
    error += outcome == "stage_error";
    cancelled += outcome == "cancelled";
    stuck += stuck_named;
    early += outcome == "ok" && sink_finished_early;
  }

  [[nodiscard]] std::string line() const {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "outcomes: %llu returned normally (%llu sinks finished early), %llu stage_error, %llu cancelled; "
                  "%llu reports named a stuck stage",
                  static_cast<unsigned long long>(ok), static_cast<unsigned long long>(early),
                  static_cast<unsigned long long>(error), static_cast<unsigned long long>(cancelled),
                  static_cast<unsigned long long>(stuck));
    return buf;
  }
};

}  // namespace sluice::tool
