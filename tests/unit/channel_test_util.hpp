// Helpers shared by the channel tests (channel_test.cpp: the contract over every
// flavour; channel_ring_test.cpp and channel_locked_test.cpp: one storage flavour each;
// channel_parts_test.cpp: the pieces a channel is made of).
#pragma once

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "sluice/channel.hpp"
#include "support/watchdog.hpp"

namespace channel_test {

using namespace std::chrono_literals;

inline constexpr auto kTestLimit = 30s;  // per-test watchdog; a healthy test takes milliseconds

// Bounded waits for "a thread is parked on this channel".
template <class Handle>
bool parked_pushers(const Handle& h, std::uint32_t n) {
  return sluice_test::eventually([&] { return h.stats().waiting_push >= n; });
}
template <class Handle>
bool parked_poppers(const Handle& h, std::uint32_t n) {
  return sluice_test::eventually([&] { return h.stats().waiting_pop >= n; });
}

// This thread's kernel id, for thread_state().
inline pid_t current_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// The state letter of thread `tid` of this process (R running, S asleep...), or 0. A
// thread in state S inside a channel wait is past its spin: parked in the kernel.
inline char thread_state(pid_t tid) {
  if (tid == 0) return 0;
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string all;
  std::getline(in, all);
  const std::size_t paren = all.rfind(')');  // the name may hold spaces and parentheses
  return paren != std::string::npos && paren + 2 < all.size() ? all[paren + 2] : 0;
}

template <class Handle>
void expect_conserved(const Handle& h) {
  const sluice::channel_stats s = h.stats();
  EXPECT_EQ(s.pushed, s.popped + s.discarded + s.size)
      << "pushed " << s.pushed << " popped " << s.popped << " discarded " << s.discarded
      << " size " << s.size;
}

// Collects what on_discard receives (from whichever thread runs the hook).
class discard_log {
 public:
  template <class T>
  std::function<void(T&&)> hook() {
    return [this](T&& v) {
      std::lock_guard lock(mu_);
      values_.push_back(v.value());
    };
  }
  std::vector<std::uint64_t> values() {
    std::lock_guard lock(mu_);
    return values_;
  }

 private:
  std::mutex mu_;
  std::vector<std::uint64_t> values_;
};

inline std::vector<std::uint64_t> iota_values(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}

// What f throws as an E (its what()), or a line saying what went wrong instead.
template <class E>
std::string thrown_what(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

}  // namespace channel_test
