// sluice/io/tcp.hpp — TCP connections as byte-stream sources and sinks.
//
//   namespace io = sluice::io;
//   // receiver: listen now (port 0 picks a free port), accept one peer in the stage
//   io::tcp_listener server = io::tcp_listen(0);
//   std::uint16_t port = server.port();
//   std::jthread rx([&] { sluice::pipeline(server.source(), io::gunzip(), io::write_file("copy.log")).run(); });
//   // sender: a slow peer holds the file reader back through every stage
//   sluice::pipeline(io::read_file("app.log"), io::gzip(), io::tcp_connect("127.0.0.1", port).sink()).run();
//
// Requires: nothing beyond the descriptors' values being alive while their stages run.
// Guarantees:
//   - tcp_connect() connects before it returns (io::error naming host:port if it
//     cannot), within its connect_timeout, and gives up at once on a stop request.
//     tcp_listen() binds and listens before it returns (with the kernel's largest
//     queue of connections not yet accepted); source() and sink() of a listener each
//     accept a connection of their own when their stage starts: to answer on the
//     connection a request came in on, accept() it and use its source() and sink().
//   - peer() and messages name an address as host:port, an IPv6 one as [host]:port.
//   - A connection's sink writes everything it receives; when its input ended by a
//     close it shuts down the write side (the peer reads end of file); after a teardown
//     (cancel(), a failure: its stop token) it resets the connection at once, even
//     while handles to it remain, so the peer sees an error, not a clean end. A source
//     reads until the peer shuts down its side. graph::request_stop() drains (DESIGN
//     §2): the sink still writes what reached it, so a peer that never reads holds the
//     run until cancel(): bound a drain with wait_for() and cancel() after it. (No
//     channel waits there, so the stall watchdog does not see it.) So does a listener's
//     sink still waiting for its peer: it accepts before it reads its input, and only a
//     teardown ends that wait, even once its input has ended empty.
//   - Backpressure: the sink writes with the socket's own flow control, so a peer that
//     reads slowly blocks the sink, its input channel fills, and every stage upstream
//     waits: the bytes in flight are bounded by the channel budgets plus the kernel's
//     socket buffers (send_buffer / receive_buffer options set them).
//   - A stage's stop token (any teardown; for a source, request_stop() too) wakes its
//     blocked accept, read or write at once (the stages poll the socket and an eventfd
//     together), so teardown never waits on the network.
//   - Writes never raise SIGPIPE (it is blocked on the writing thread while it writes,
//     and one left pending is consumed); a peer that went away is an io::error, also
//     one that reset the connection after the last write was buffered, before the end
//     reached it (the kernel drops what it had not delivered). A listener's sink, which
//     waits for its peer to close as its stage ends (Lifetime), fails on a reset seen
//     then too: a peer that closes with bytes of ours unread resets.
// Non-guarantees: no TLS, no reconnects, IPv4 and IPv6 by getaddrinfo() order.
// Lifetime: a tcp_connection / tcp_listener is a shared handle; the socket closes when
//   the last copy (including those inside descriptors) is gone. After its sink ended
//   cleanly, that close first reads and drops what the peer still sends until the peer
//   closes, for at most 2 s (a listener's sink: as its stage ends): closed with unread
//   bytes, the socket would reset the connection, and the peer lose the stream's end.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/io/error.hpp"
#include "sluice/io/file.hpp"
#include "sluice/stage.hpp"

namespace sluice::io {

struct tcp_options {
  int send_buffer = 0;     // SO_SNDBUF in bytes; 0: the kernel's default (autotuned)
  int receive_buffer = 0;  // SO_RCVBUF in bytes; 0: the kernel's default
  bool no_delay = false;   // TCP_NODELAY
  // tcp_connect: how long to wait for the peer's answer, over every address tried;
  // 0: as long as the kernel does (its SYN retries, about 2 minutes).
  std::chrono::milliseconds connect_timeout{0};
};

namespace detail {
struct socket_state;  // an fd, its peer's name, and (for a listener) the accepted peer
}

// f(sender<buffer>&, std::stop_token): reads a socket until the peer's end of stream.
class socket_reader {
 public:
  socket_reader(std::shared_ptr<detail::socket_state> s, read_options o) : sock_(std::move(s)), options_(o) {}
  void operator()(sender<buffer>& out, std::stop_token stop) const;

 private:
  std::shared_ptr<detail::socket_state> sock_;
  read_options options_;
};

// f(receiver<buffer>&, std::stop_token): writes to a socket, then shuts down its write side.
class socket_writer {
 public:
  socket_writer(std::shared_ptr<detail::socket_state> s, write_options o) : sock_(std::move(s)), options_(o) {}
  void operator()(receiver<buffer>& in, std::stop_token stop) const;

 private:
  std::shared_ptr<detail::socket_state> sock_;
  write_options options_;
};

// A connected socket (either end).
class tcp_connection {
 public:
  tcp_connection() = default;
  [[nodiscard]] int fd() const noexcept;
  [[nodiscard]] const std::string& peer() const noexcept;  // "host:port"
  // Descriptors; default names "tcp_read" and "tcp_write", capacity kByteBudget bytes.
  [[nodiscard]] source_stage<buffer, socket_reader> source(read_options o = {}, stage_options s = {}) const;
  [[nodiscard]] consume_stage<socket_writer> sink(write_options o = {}, stage_options s = {}) const;

 private:
  friend tcp_connection tcp_connect(const std::string&, std::uint16_t, tcp_options, std::stop_token);
  friend class tcp_listener;
  explicit tcp_connection(std::shared_ptr<detail::socket_state> s) : sock_(std::move(s)) {}
  std::shared_ptr<detail::socket_state> sock_;
};

// A listening socket.
class tcp_listener {
 public:
  tcp_listener() = default;
  [[nodiscard]] std::uint16_t port() const noexcept;  // the bound port (useful after port 0)
  // Blocks until a peer connects (or the stop token is triggered: throws io::error).
  [[nodiscard]] tcp_connection accept(std::stop_token stop = {}) const;
  // Descriptors that accept one connection when the stage starts, then read / write it.
  [[nodiscard]] source_stage<buffer, socket_reader> source(read_options o = {}, stage_options s = {}) const;
  [[nodiscard]] consume_stage<socket_writer> sink(write_options o = {}, stage_options s = {}) const;

 private:
  friend tcp_listener tcp_listen(std::uint16_t, const std::string&, tcp_options);
  explicit tcp_listener(std::shared_ptr<detail::socket_state> s) : sock_(std::move(s)) {}
  std::shared_ptr<detail::socket_state> sock_;
};

// Connects now; throws io::error ("tcp_connect: cannot connect to host:port: ..."), with
// ETIMEDOUT past o.connect_timeout, and ECANCELED at once when `stop` is requested (from
// another thread while it waits, or before).
tcp_connection tcp_connect(const std::string& host, std::uint16_t port, tcp_options o = {},
                           std::stop_token stop = {});
// Binds host:port and listens now (port 0: a free port, see port()). An empty host is
// refused (io::error, EINVAL), not taken as every interface: say "0.0.0.0" or "::".
tcp_listener tcp_listen(std::uint16_t port, const std::string& host = "127.0.0.1", tcp_options o = {});

}  // namespace sluice::io
