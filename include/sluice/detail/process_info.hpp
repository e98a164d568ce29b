// sluice/detail/process_info.hpp — two facts about the running process that the
// runtime, the tool, the benchmarks and the tests all read: the steady clock in
// nanoseconds, and how many threads the process has now.
//
// Requires: Linux (/proc/self/task) for thread_count().
// Guarantees: now_ns() is monotonic (std::chrono::steady_clock); thread_count() counts
//   the entries of /proc/self/task at the moment of the call (0 if unreadable).
// Non-guarantees: thread_count() is a snapshot; threads may start or end right after.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <system_error>

namespace sluice::detail {

// steady_clock now, in nanoseconds since its epoch.
inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Threads of this process now (entries of /proc/self/task): what leak checks compare.
inline std::size_t thread_count() {
  std::error_code ec;
  std::size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

}  // namespace sluice::detail
