// tests/support/watchdog.hpp — a deadlock fails the test run instead of hanging it.
//
//   TEST(channel, close_wakes_receiver) {
//     sluice_test::watchdog dog(std::chrono::seconds(10), "close_wakes_receiver");
//     ...                                    // a hang here aborts with a message
//     ASSERT_TRUE(sluice_test::eventually([&] { return rx.stats().waiting_pop == 1; }));
//   }
//
// Requires: a watchdog lives on the stack of the thread that runs the guarded code, and
// is destroyed (disarmed) before the objects the guarded code uses.
// Guarantees:
//   - watchdog: if it is still armed `limit` after construction (scaled by
//     kTimeoutScale under sanitizers), it prints the test's name, `what` and the limit
//     to stderr, then std::abort()s the process: a blocked thread cannot be unblocked
//     from outside, so ending the process is the only way to fail instead of hang.
//     The destructor disarms it and joins its thread.
//   - run_with_timeout(limit, f): runs f on the calling thread under a watchdog.
//   - eventually(pred, limit): polls pred until it is true or limit passes and returns
//     its last value. It polls a condition (yield, then 50 us naps between checks); it
//     is not a sleep used as synchronisation.
// Non-guarantees: the limits are generous; they are not performance assertions.
// Lifetime: each watchdog owns one thread (a detail::ticker) while it is armed.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "sluice/detail/ticker.hpp"

namespace sluice_test {

// Sanitizer builds run several times slower; every limit here is multiplied by this.
#if defined(SLUICE_TSAN_BUILD)
inline constexpr int kTimeoutScale = 10;
#elif defined(SLUICE_SANITIZER_BUILD)
inline constexpr int kTimeoutScale = 4;
#else
inline constexpr int kTimeoutScale = 1;
#endif

// A bound for "this should happen promptly" waits in tests (a wake-up, a join).
inline constexpr std::chrono::milliseconds kPromptly{10'000};

inline std::string current_test_name() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return "(no test)";
  return std::string(info->test_suite_name()) + "." + info->name();
}

class watchdog {
 public:
  explicit watchdog(std::chrono::milliseconds limit, std::string what = {})
      : limit_(limit * kTimeoutScale),
        what_(std::move(what)),
        test_(current_test_name()),
        // One tick, `limit` from now, unless the destructor stops the ticker first.
        ticker_(limit_, [this]() -> bool { fire(); }, "sluice-watchdog") {}
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  ~watchdog() { ticker_.stop(); }  // disarms: wakes the ticker's thread and joins it

 private:
  [[noreturn]] void fire() const {
    std::fprintf(stderr,
                 "\n[watchdog] %s: %s did not finish within %lld ms (deadlock or lost "
                 "wake-up?); aborting so the run fails instead of hanging\n",
                 test_.c_str(), what_.empty() ? "the guarded code" : what_.c_str(),
                 static_cast<long long>(limit_.count()));
    std::fflush(stderr);
    std::fflush(stdout);
    std::abort();
  }

  const std::chrono::milliseconds limit_;
  const std::string what_;
  const std::string test_;
  sluice::detail::ticker ticker_;  // last: started after every other member is built
};

template <class F>
decltype(auto) run_with_timeout(std::chrono::milliseconds limit, F&& f, std::string what = {}) {
  watchdog dog(limit, std::move(what));
  return std::forward<F>(f)();
}

template <class Pred>
bool eventually(Pred&& pred, std::chrono::milliseconds limit = kPromptly) {
  const auto deadline = std::chrono::steady_clock::now() + limit * kTimeoutScale;
  for (int round = 0;; ++round) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    if (round < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));  // polling, not synchronising
    }
  }
}

}  // namespace sluice_test
