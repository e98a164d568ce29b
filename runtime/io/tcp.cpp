// io::tcp_connect, io::tcp_listen and their socket stages.
#include "sluice/io/tcp.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "fd_util.hpp"

namespace sluice::io {
namespace detail {

// How long closing a connection whose sink ended cleanly waits for the peer to close.
constexpr auto kLinger = std::chrono::seconds(2);

// After a clean end (the write side shut down), bytes the peer sent that nobody read make
// close() answer with a reset, and the reset makes the peer's kernel drop what it had not
// read yet of ours: the stream's end was lost while the sink reported success (a probe: a
// peer that sent a request line first got 6.6 of 8 MiB, then "connection reset"). So what
// comes is read and dropped until the peer closes (it has read everything by then), for
// at most kLinger, as the HTTP intake lingers (serve/intake.hpp).
// Returns the error that ended it (ECONNRESET: the peer reset the connection, so it may
// not have read the stream's end), or 0 (it closed, or kLinger passed).
int drain_until_peer_closes(int fd) noexcept {
  const auto until = std::chrono::steady_clock::now() + kLinger;
  char scratch[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
    if (n == 0) return 0;  // the peer closed
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return 0;
    if (n > 0) continue;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now);
    (void)::poll(&p, 1, static_cast<int>(left.count()));
  }
}

struct socket_state {
  int fd = -1;
  bool listening = false;
  std::string name;  // the peer ("host:port"), or the bound address of a listener
  std::uint16_t port = 0;
  tcp_options options;
  std::atomic<bool> write_shut{false};  // its sink ended cleanly (shutdown(SHUT_WR))
  bool drained = false;                  // ... and its stage already waited for the peer to close

  socket_state() = default;
  socket_state(const socket_state&) = delete;
  socket_state& operator=(const socket_state&) = delete;
  ~socket_state() {
    if (fd < 0) return;
    if (write_shut.load(std::memory_order_acquire) && !drained) (void)drain_until_peer_closes(fd);
    ::close(fd);
  }
};

}  // namespace detail

namespace {

using detail::socket_state;

// "host:port" as messages name an address, an IPv6 one as "[host]:port" (as peer() does).
std::string host_port(const std::string& host, const std::string& port) {
  std::string s;
  if (host.find(':') != std::string::npos) {
    s.append("[").append(host).append("]");
  } else {
    s.append(host);
  }
  return s.append(":").append(port);
}

void apply_options(int fd, const tcp_options& o) {
  if (o.send_buffer > 0) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o.send_buffer, sizeof o.send_buffer);
  if (o.receive_buffer > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.receive_buffer, sizeof o.receive_buffer);
  }
  if (o.no_delay) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
}

std::string describe(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  // An IPv6 address in brackets, so that the port can be told from it ("[::1]:8080").
  // (Built with append: GCC 12 warns falsely of overlapping copies in "[" + s + ...)
  std::string name;
  if (sa->sa_family == AF_INET6) name += '[';
  name += host;
  if (sa->sa_family == AF_INET6) name += ']';
  name += ':';
  name += serv;
  return name;
}

struct addrinfo_list {
  addrinfo* head = nullptr;
  ~addrinfo_list() {
    if (head != nullptr) ::freeaddrinfo(head);
  }
};

addrinfo_list resolve(const char* stage, const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo_list list;
  const std::string serv = std::to_string(port);
  const int r = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), serv.c_str(), &hints, &list.head);
  if (r != 0) {
    throw error(std::string(stage) + ": cannot resolve " + host_port(host, serv) + ": " + ::gai_strerror(r));
  }
  return list;
}

// Accepts one peer of a listener; nullptr when the stop token fired first.
std::shared_ptr<socket_state> accept_one(const socket_state& l, const std::stop_token& stop) {
  const detail::stop_waiter waiter(stop, "tcp_accept", l.name);
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    const int fd = ::accept4(l.fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      auto s = std::make_shared<socket_state>();
      s->fd = fd;
      s->name = describe(reinterpret_cast<sockaddr*>(&peer), len);
      s->options = l.options;
      apply_options(fd, l.options);
      return s;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!waiter.wait(l.fd, POLLIN)) return nullptr;
      continue;
    }
    detail::throw_errno("tcp_accept", "accept on", l.name, errno);
  }
}

}  // namespace

void socket_reader::operator()(sender<buffer>& out, std::stop_token stop) const {
  std::shared_ptr<socket_state> conn = sock_->listening ? accept_one(*sock_, stop) : sock_;
  if (!conn) return;
  detail::read_loop(conn->fd, out, stop, options_, "tcp_read", conn->name);
}

void socket_writer::operator()(receiver<buffer>& in, std::stop_token stop) const {
  std::shared_ptr<socket_state> conn = sock_->listening ? accept_one(*sock_, stop) : sock_;
  if (!conn) return;
  const detail::write_signals_guard no_write_signals;
  const detail::stop_waiter waiter(stop, "tcp_write", conn->name);
  bool stopped = false;
  struct reset_unless_clean {
    int fd;
    bool clean = false;
    ~reset_unless_clean() {
      if (clean) return;
      // An abort: send RST now, so the peer cannot mistake it for a clean end, and need not
      // wait for the last handle to go (a user may keep one). Linux: connect() to AF_UNSPEC
      // disconnects a TCP socket, with a reset when it was connected; the descriptor stays
      // open, unconnected. SO_LINGER 0 makes the eventual close a reset too where that
      // did not happen (another kernel, a socket in another state).
      const linger hard{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
      sockaddr none{};
      none.sa_family = AF_UNSPEC;
      if (::connect(fd, &none, sizeof none) != 0) ::shutdown(fd, SHUT_RD);
    }
  } guard{conn->fd};
  detail::write_loop(conn->fd, in, options_, &waiter, "tcp_write", conn->name, &stopped);
  if (stopped || in.cancelled() || stop.stop_requested()) return;
  // The peer reset the connection (err) at `when`: what it missed is lost.
  auto broke_off = [&](int err, const char* when) {
    return error("tcp_write: the peer " + conn->name + " broke off the connection (" + std::strerror(err) + ") " + when,
                 err);
  };
  if (::shutdown(conn->fd, SHUT_WR) != 0) {
    // ENOTCONN: the peer reset the connection (SO_ERROR says so) after the last write was
    // buffered, and the kernel dropped what it had not delivered: the peer never reads
    // the end. This was taken as a clean end (a probe: the peer read 1,000 of 100,000
    // bytes and reset; run() succeeded).
    int err = errno;
    if (err == ENOTCONN) {
      int pending = 0;
      socklen_t len = sizeof pending;
      if (::getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &pending, &len) == 0 && pending != 0) err = pending;
      throw broke_off(err, "before the stream's end reached it: what was still in flight is lost");
    }
    detail::throw_errno("tcp_write", "shut down", conn->name, err);
  }
  guard.clean = true;
  conn->write_shut.store(true, std::memory_order_release);
  // A listener's sink has the connection to itself: it waits for the peer to close here,
  // as its stage ends, and a reset in that time is an error (the peer had not read all of
  // it: a close with our bytes unread resets). A connection's sink leaves that to the
  // handle's last close, where no one can be told.
  if (sock_->listening) {
    conn->drained = true;
    if (const int err = detail::drain_until_peer_closes(conn->fd); err != 0) {
      throw broke_off(err, "after the stream's end was sent, before it closed: it may not have read all of it");
    }
  }
}

int tcp_connection::fd() const noexcept { return sock_ ? sock_->fd : -1; }
const std::string& tcp_connection::peer() const noexcept {
  static const std::string none;
  return sock_ ? sock_->name : none;
}

source_stage<buffer, socket_reader> tcp_connection::source(read_options o, stage_options s) const {
  if (!sock_) throw std::logic_error("tcp_connection::source on an empty connection");
  return from<buffer>(socket_reader(sock_, o), byte_stage_options(std::move(s), "tcp_read"));
}
consume_stage<socket_writer> tcp_connection::sink(write_options o, stage_options s) const {
  if (!sock_) throw std::logic_error("tcp_connection::sink on an empty connection");
  return consume(socket_writer(sock_, o), byte_stage_options(std::move(s), "tcp_write"));
}

std::uint16_t tcp_listener::port() const noexcept { return sock_ ? sock_->port : 0; }

tcp_connection tcp_listener::accept(std::stop_token stop) const {
  if (!sock_) throw std::logic_error("tcp_listener::accept on an empty listener");
  auto conn = accept_one(*sock_, stop);
  if (!conn) throw error("tcp_accept: stopped while waiting for a connection on " + sock_->name);
  return tcp_connection(std::move(conn));
}
source_stage<buffer, socket_reader> tcp_listener::source(read_options o, stage_options s) const {
  if (!sock_) throw std::logic_error("tcp_listener::source on an empty listener");
  return from<buffer>(socket_reader(sock_, o), byte_stage_options(std::move(s), "tcp_read"));
}
consume_stage<socket_writer> tcp_listener::sink(write_options o, stage_options s) const {
  if (!sock_) throw std::logic_error("tcp_listener::sink on an empty listener");
  return consume(socket_writer(sock_, o), byte_stage_options(std::move(s), "tcp_write"));
}

tcp_connection tcp_connect(const std::string& host, std::uint16_t port, tcp_options o, std::stop_token stop) {
  const std::string where = host_port(host, std::to_string(port));
  // getaddrinfo() takes no host as this machine: an empty string from a config file must
  // not quietly dial a local service, as tcp_listen refuses one too.
  if (host.empty()) {
    throw error("tcp_connect: no host given for port " + std::to_string(port) +
                    "; give \"127.0.0.1\" or \"localhost\" for this machine",
                EINVAL);
  }
  if (o.connect_timeout.count() < 0) {
    throw error("tcp_connect: connect_timeout for " + where + " is negative (" +
                    std::to_string(o.connect_timeout.count()) + " ms); 0 leaves it to the kernel",
                EINVAL);
  }
  addrinfo_list list = resolve("tcp_connect", host, port, false);
  // One deadline for every address tried. The connect is non-blocking and waited for
  // with the stop token: a peer that never answers (a full listen queue drops the SYN,
  // a filtered port) held the caller for the kernel's ~2 minutes with no way out.
  const auto deadline = o.connect_timeout.count() > 0 ? std::chrono::steady_clock::now() + o.connect_timeout
                                                      : std::chrono::steady_clock::time_point::max();
  const detail::stop_waiter waiter(stop, "tcp_connect", where);
  int last_err = ECONNREFUSED;
  for (addrinfo* a = list.head; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    auto s = std::make_shared<socket_state>();
    s->fd = fd;
    s->options = o;
    apply_options(fd, o);  // before connect: the receive window is negotiated then
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS && errno != EINTR) {  // EINTR: it goes on, as EINPROGRESS
        last_err = errno;
        continue;  // s closes fd
      }
      switch (waiter.wait_until(fd, POLLOUT, deadline)) {
        case detail::stop_waiter::waited::stopped:
          throw error("tcp_connect: stopped while connecting to " + where, ECANCELED);
        case detail::stop_waiter::waited::timed_out:
          throw error("tcp_connect: cannot connect to " + where + ": no answer within the connect_timeout of " +
                          std::to_string(o.connect_timeout.count()) + " ms",
                      ETIMEDOUT);
        case detail::stop_waiter::waited::ready:
          break;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        last_err = err;
        continue;
      }
    }
    s->name = describe(a->ai_addr, a->ai_addrlen);
    return tcp_connection(std::move(s));
  }
  detail::throw_errno("tcp_connect", "connect to", where, last_err);
}

tcp_listener tcp_listen(std::uint16_t port, const std::string& host, tcp_options o) {
  // getaddrinfo() takes no host as every interface: an empty string from a config file
  // must not open a listener to the world unasked.
  if (host.empty()) {
    throw error("tcp_listen: no host given for port " + std::to_string(port) +
                    "; give \"127.0.0.1\" for this machine only, \"0.0.0.0\" or \"::\" for every interface",
                EINVAL);
  }
  addrinfo_list list = resolve("tcp_listen", host, port, true);
  int last_err = EADDRNOTAVAIL;
  for (addrinfo* a = list.head; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    auto s = std::make_shared<socket_state>();
    s->fd = fd;
    s->listening = true;
    s->options = o;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    apply_options(fd, o);  // accepted sockets inherit the buffer sizes
    // The kernel's own limit (net.core.somaxconn caps SOMAXCONN): a queue of 16 made a
    // burst of 200 clients wait out one-second SYN retries (169 of them) whenever the
    // server was a little slow to accept.
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      last_err = errno;
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    s->name = describe(reinterpret_cast<sockaddr*>(&bound), len);
    if (bound.ss_family == AF_INET) {
      s->port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    } else if (bound.ss_family == AF_INET6) {
      s->port = ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
    }
    return tcp_listener(std::move(s));
  }
  detail::throw_errno("tcp_listen", "listen on", host_port(host, std::to_string(port)), last_err);
}

}  // namespace sluice::io
