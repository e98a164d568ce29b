// tests/support/child_signals.hpp — for a forked child about to exec a program a test
// signals: the stop signals back to their default action.
//
// A program started with SIGINT, SIGTERM or SIGHUP ignored keeps it ignored (nohup; the
// SIGINT of a `&` job in a script), and the sluice tools honour that. A test run from such
// a job would pass the ignored signals on to every child, and tests that interrupt a child
// would then wait for an end that never comes. Call between fork() and exec (only
// async-signal-safe calls).
#pragma once

#include <signal.h>

namespace sluice_test {

inline void default_stop_signals() noexcept {
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGHUP, SIG_DFL);
}

}  // namespace sluice_test
