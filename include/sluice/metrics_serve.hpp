// sluice/metrics_serve.hpp — the live view: a running graph published over HTTP.
// Included by sluice/metrics.hpp; the definitions are in sluice::serve (link it to call
// serve). This header needs nothing of cpp-httplib: an embedder that never calls serve
// never needs it.
//
//   sluice::graph g;
//   ... build the graph ...
//   g.start();
//   sluice::metrics::server http = sluice::metrics::serve(g, "127.0.0.1:9464");
//   std::printf("live view: %s\n", http.url().c_str());   // http://127.0.0.1:9464/
//   sluice::report r = g.wait();
//   // `http` stops when it goes out of scope, before g does
//
// Endpoints (GET or HEAD only; other methods 405, other paths 404; a method cpp-httplib
// does not know at all, such as PROPFIND, BREW or a lowercase "get", is refused with 400
// by its parser, before sluice sees the request):
//   /metrics        Prometheus text exposition 0.0.4 (metrics::to_prometheus)
//   /snapshot.json  the snapshot as JSON (metrics::to_json)
//   /               the live page: self-contained HTML+JS (no network) that fetches
//                   snapshot.json every second and draws the graph: each stage coloured by
//                   its busy / backpressured / starved shares, each channel labelled
//                   occupancy / capacity, the bottleneck marked, a stall's wait-for chain
//                   marked.
//
// Requires: `g` outlives the server (destroy or stop() the server first). `address` is
//   "HOST:PORT" or "[IPV6]:PORT"; PORT 0 picks a free port (see port()).
// Guarantees: binds only the address given (loopback by default). Every snapshot is taken
//   on the server's own threads ("sluice-http", not stages): the graph never waits on the
//   server, and stopping or destroying it never blocks a stage. No worker waits on a
//   client: each request line and its headers are collected without blocking, and a
//   request whose line and headers exceed 8 KiB is answered 431, one with a line of them
//   not ended by CRLF, a header line that is not NAME: VALUE (a space before the colon,
//   a folded line), two Host headers, an HTTP/1.1 request without one, a Content-Length
//   that is not a number or two that differ 400, a body over 4 KiB 413,
//   and a request not complete one second after its connection was accepted is dropped,
//   all without touching the graph. One request per connection (no keep-alive). A Range
//   header is ignored (every answer is whole; "Accept-Ranges: none"). The kernel holds up
//   to 128 connections not yet accepted (a burst of clients is not made to retry), and a
//   burst of 128 clients that each send a request is answered whole. A connection is
//   closed gracefully: after its answer, what the client still sends (a body, up to 64
//   KiB, for up to 2 s) is read and dropped, so the answer is not lost to a reset.
//   Serving after the graph has ended works (its final snapshot). serve() returns once the socket is bound and listening. The
//   process's SIGPIPE disposition is left as it was (cpp-httplib would ignore SIGPIPE
//   process-wide; the server's own writes never raise it).
// Non-guarantees: the page shows an approximate, recent snapshot (see metrics.hpp).
//   Fairness between clients: under a flood of connections the oldest unfinished ones are
//   dropped first, and past 256 answered connections whose clients have not closed, the
//   oldest is closed without waiting for its client (what it sends after is met by a
//   reset, and an answer it has not read to the end may be cut short).
// Errors: serve throws std::invalid_argument for an address it cannot parse and
//   std::runtime_error for one it cannot bind, each naming the address.
// Lifetime: stop() (or the destructor) closes the listening socket and every connection
//   whose request is not being answered, lets the answers in progress finish (each within
//   a two-second write deadline) and joins the server's threads. stop() may be called
//   from two threads at once (the second returns once the server is stopped); the
//   destructor, as any object's, must not race another call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace sluice {
class graph;
}  // namespace sluice

namespace sluice::metrics {

class server;
[[nodiscard]] server serve(graph& g, std::string address = "127.0.0.1:9464");
// The address check serve() makes first, alone: std::invalid_argument naming the address
// when it is not HOST:PORT (a tool can refuse a bad option before it runs anything).
void check_address(const std::string& address);

class server {
 public:
  server() noexcept;  // serves nothing (running() is false)
  server(server&&) noexcept;
  server& operator=(server&&) noexcept;  // stops the server this one held
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  ~server();

  // The port the server is bound to (the one picked when the address said port 0).
  [[nodiscard]] std::uint16_t port() const noexcept;
  // The host part of the address, as given ("127.0.0.1", "::1", "0.0.0.0").
  [[nodiscard]] const std::string& host() const noexcept;
  // "HOST:PORT" as bound (IPv6 hosts in brackets): the port is the one picked for port 0,
  // and serve() takes it back (to serve again at the same place).
  [[nodiscard]] std::string address() const;
  // "http://HOST:PORT/" (IPv6 hosts in brackets).
  [[nodiscard]] std::string url() const;
  // Whether the socket is bound to a loopback address (127.x, ::1), however the host was
  // spelled (localhost, 127.1, a name /etc/hosts maps to 127.0.1.1): only this machine
  // reaches it, and requests must then name a Host of localhost, *.localhost, a loopback
  // IP or the host given (others get 403: a guard against DNS rebinding). False for
  // 0.0.0.0, :: or another interface's address.
  [[nodiscard]] bool loopback_only() const noexcept;
  // Whether it is serving: true from serve() until stop().
  [[nodiscard]] bool running() const noexcept;
  // Stops serving and joins its threads; idempotent; never blocks a stage.
  void stop() noexcept;

  struct state;

 private:
  explicit server(std::unique_ptr<state> s) noexcept;
  friend server serve(graph& g, std::string address);
  std::unique_ptr<state> state_;
};

}  // namespace sluice::metrics
