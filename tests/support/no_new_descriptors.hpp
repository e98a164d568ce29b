// tests/support/no_new_descriptors.hpp — while one lives, this process can open no new
// file descriptor (EMFILE), as a process at its `ulimit -n`:
//
//     {
//       sluice_test::no_new_descriptors full;
//       ASSERT_TRUE(full.ok());
//       ...                          // open(), socket(), eventfd() fail with EMFILE
//     }                              // the limit is as it was
//
// The soft RLIMIT_NOFILE is lowered to the lowest free descriptor's number, so every
// number a new descriptor could take is at or past it. Process-wide: other threads are
// limited too while it lives.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

namespace sluice_test {

class no_new_descriptors {
 public:
  no_new_descriptors() {
    if (::getrlimit(RLIMIT_NOFILE, &old_) != 0) return;
    const int lowest_free = ::dup(0);
    if (lowest_free < 0) return;
    ::close(lowest_free);
    rlimit tight = old_;
    tight.rlim_cur = static_cast<rlim_t>(lowest_free);
    ok_ = ::setrlimit(RLIMIT_NOFILE, &tight) == 0;
  }
  no_new_descriptors(const no_new_descriptors&) = delete;
  no_new_descriptors& operator=(const no_new_descriptors&) = delete;
  ~no_new_descriptors() {
    if (ok_) (void)::setrlimit(RLIMIT_NOFILE, &old_);
  }
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  rlimit old_{};
  bool ok_ = false;
};

}  // namespace sluice_test
