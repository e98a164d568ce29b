// sluice/detail/ticker.hpp — a thread that calls a function every interval until stopped.
//
// The one periodic thread of sluice and its tools: metrics::periodic, the tool's progress
// lines, memory samplers and hang guards, the tests' watchdog.
//
//   sluice::detail::ticker t(std::chrono::milliseconds(100), [&] {
//     show(delivered.load());
//     return true;                        // false: no more ticks
//   }, "progress");
//   run_the_work();
//   t.stop();                             // prompt: the thread wakes at once and joins
//
// Requires: interval > 0 (a non-positive one is taken as 1 ms). tick must be safe to call
//   on another thread, and stop() (or the destructor) must not be called from tick.
// Guarantees:
//   - The first tick is one interval after construction; later ones follow a fixed
//     schedule (start + k x interval). A tick that overruns is not caught up: the next one
//     is one interval after it returns.
//   - Ticks never overlap (one thread calls them).
//   - stop() and the destructor wake the thread at once (a condition variable, not a
//     sleep), wait for a tick in progress to return, and join; after stop() returns tick
//     is never called again. stop() is idempotent.
//   - tick returning false, or throwing, ends the ticking (the exception is swallowed;
//     running() turns false).
//   - The thread carries `name` (truncated to 15 characters) where the OS names threads.
// Non-guarantees: ticks are not exactly `interval` apart (scheduling, a slow tick).
// Lifetime: a ticker owns its thread; it must be stopped or destroyed before what tick
//   refers to. Moving a ticker moves the running thread with it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace sluice::detail {

// The longest interval a ticker waits: longer ones are taken as this (100 years).
inline constexpr std::chrono::steady_clock::duration kLongestTick = std::chrono::hours(24 * 365 * 100);

class ticker {
 public:
  ticker() noexcept;
  ticker(std::chrono::steady_clock::duration interval, std::function<bool()> tick, std::string name = "sluice-tick");
  ticker(ticker&&) noexcept;
  ticker& operator=(ticker&&) noexcept;
  ticker(const ticker&) = delete;
  ticker& operator=(const ticker&) = delete;
  ~ticker();

  // Wakes the thread, waits out a tick in progress and joins. Idempotent.
  void stop() noexcept;
  // Whether the thread is still ticking (false once stopped, or after tick returned
  // false or threw).
  [[nodiscard]] bool running() const noexcept;
  // How many ticks have returned so far (one that threw is not counted).
  [[nodiscard]] std::uint64_t ticks() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

// A ticker whose tick returns nothing: it ticks until stopped.
template <class F>
[[nodiscard]] ticker tick_every(std::chrono::steady_clock::duration interval, F f, std::string name = "sluice-tick") {
  return ticker(
      interval,
      [f = std::move(f)]() mutable {
        f();
        return true;
      },
      std::move(name));
}

}  // namespace sluice::detail
