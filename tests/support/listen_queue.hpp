// tests/support/listen_queue.hpp — how many not-yet-accepted connections a listening
// TCP port on this machine may queue, as `ss` (iproute2) shows it: a listening socket's
// Send-Q is its queue limit.
//
//   if (!sluice_test::have_ss()) GTEST_SKIP() << "no ss (iproute2) here";
//   EXPECT_GE(sluice_test::listen_queue_limit(port).limit, 128);
//
// Guarantees: state is "LISTEN" for a listening port; limit is -1 when ss printed nothing
//   parseable (`text` holds what it printed, for the failure message).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace sluice_test {

inline bool have_ss() { return std::system("command -v ss >/dev/null 2>&1") == 0; }

struct listen_queue {
  std::string state;  // "LISTEN"
  long limit = -1;    // Send-Q
  std::string text;   // ss's line: "LISTEN 0 4096 127.0.0.1:PORT 0.0.0.0:*"
};

inline listen_queue listen_queue_limit(std::uint16_t port) {
  listen_queue q;
  if (FILE* p = ::popen(("ss -ltnH 'sport = :" + std::to_string(port) + "'").c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, p) != nullptr) q.text += buf;
    ::pclose(p);
  }
  std::istringstream fields(q.text);
  long recv_q = -1;
  fields >> q.state >> recv_q >> q.limit;
  return q;
}

}  // namespace sluice_test
