// Helpers shared by the graph tests: a thread counter, a one-way gate, string joining.
#pragma once

#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <string>

#include "sluice/detail/process_info.hpp"

namespace sluice_test {

// a + b without GCC 12's false -Wrestrict on `"literal" + std::string&&`.
inline std::string cat(std::string a, const std::string& b) {
  a += b;
  return a;
}

// Threads of this process now (entries of /proc/self/task): a leak check.
using sluice::detail::thread_count;

// A one-way gate: wait() blocks until open(); wait(stop) also returns (false) on stop.
class gate {
 public:
  void open() {
    {
      std::lock_guard lk(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return open_; });
  }
  bool wait(std::stop_token st) {
    std::unique_lock lk(mu_);
    return cv_.wait(lk, st, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool open_ = false;
};

}  // namespace sluice_test
