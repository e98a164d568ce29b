// tests/support/loopback_http.hpp — raw HTTP on 127.0.0.1 for tests that talk to a live
// view (metrics::serve) byte for byte: malformed requests, silent clients, /metrics polls.
//
//   const std::string answer = sluice_test::ask(port, "GET /metrics HTTP/1.0\r\n\r\n");
//
// Guarantees: connect_loopback returns a connected socket or -1; read_answer returns what
//   the server sent before closing, at most `limit` bytes, waiting at most 10 s between
//   reads; ask sends one whole request on a fresh connection and returns the answer, or
//   "(connect failed)" / "(send failed)". Nothing throws; every socket opened is closed
//   (connect_loopback's by its caller).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice_test {

inline int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fd;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the server sent back before closing (at most `limit` bytes; waits up to 10 s).
inline std::string read_answer(int fd, std::size_t limit = 1 << 20) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[4096];
  while (got.size() < limit) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// Sends one whole request on a fresh connection; the answer, or what went wrong instead.
inline std::string ask(int port, const std::string& req) {
  const int fd = connect_loopback(port);
  if (fd < 0) return "(connect failed)";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "(send failed)";
  }
  std::string answer = read_answer(fd);
  ::close(fd);
  return answer;
}

}  // namespace sluice_test
