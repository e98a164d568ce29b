// io::tcp_connect / tcp_listen: loopback round trips, backpressure from a slow peer all
// the way to a file reader, errors, and stop requests that wake blocked sockets.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "support/listen_queue.hpp"
#include "support/watchdog.hpp"

namespace {

namespace io = sluice::io;
using io_test::runner;
using sluice::buffer;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(io_tcp, a_gzip_stream_crosses_loopback_intact) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "tcp round trip");
  io_test::temp_dir dir;
  const std::string data = io_test::log_text(4 << 20, 1);
  io_test::write_string(dir / "in", data);
  io::tcp_listener server = io::tcp_listen(0);
  ASSERT_NE(server.port(), 0);
  std::exception_ptr server_error;
  std::thread receiver([&] {
    try {
      runner::run(server.source(), io::gunzip(), io::write_file(dir / "out"));
    } catch (...) {
      server_error = std::current_exception();
    }
  });
  runner::run(io::read_file(dir / "in"), io::gzip(), io::tcp_connect("127.0.0.1", server.port()).sink());
  receiver.join();
  ASSERT_FALSE(server_error) << io_test::message_of(server_error);
  EXPECT_EQ(io_test::read_string(dir / "out"), data);
}

TEST(io_tcp, a_slow_reader_holds_back_a_fast_file_reader_and_memory_stays_bounded) {
  sluice_test::watchdog dog(std::chrono::seconds(120), "slow reader");
  io_test::temp_dir dir;
#ifdef SLUICE_SANITIZER_BUILD
  constexpr std::size_t kFile = std::size_t{4} << 20;
#else
  constexpr std::size_t kFile = std::size_t{16} << 20;
#endif
  constexpr std::size_t kSlowPart = kFile / 4;  // read slowly, then drain fast
  io_test::write_string(dir / "in", io_test::random_bytes(kFile, 2));
  // Small kernel buffers on both ends make the bound tight; they are part of it.
  const io::tcp_options small{.send_buffer = 64 << 10, .receive_buffer = 64 << 10};
  io::tcp_listener server = io::tcp_listen(0, "127.0.0.1", small);

  std::atomic<std::uint64_t> read_from_file{0};
  std::uint64_t received = 0;
  std::uint64_t max_ahead = 0;  // file bytes read but not yet received by the peer
  std::thread peer([&] {
    io::tcp_connection c = server.accept();
    int fd = c.fd();
    char buf[16 << 10];
    for (;;) {
      const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
      if (r <= 0) break;
      received += static_cast<std::uint64_t>(r);
      if (received < kSlowPart) {
        // relaxed: a progress counter; the bound we check is loose by a chunk anyway.
        max_ahead = std::max(max_ahead, read_from_file.load(std::memory_order_relaxed) - received);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // simulates a slow peer
      }
    }
  });
  sluice::buffer_pool::global().reset_peak();
  const auto live_before = sluice::buffer_pool::global().stats().live_bytes;
  runner::run(io::read_file(dir / "in", {.progress = &read_from_file}),
              io::tcp_connect("127.0.0.1", server.port(), small).sink());
  peer.join();
  EXPECT_EQ(received, kFile);
  // The reader ran ahead of the peer by at most: the read_file channel's budget (64 KiB),
  // the chunk each stage holds (2 x 64 KiB), and the kernel's socket buffers (which
  // Linux doubles and which carry headers: a few hundred KiB here). Far below the file.
  constexpr std::uint64_t kBound = std::uint64_t{1} << 20;
  EXPECT_LE(max_ahead, kBound);
  EXPECT_GT(max_ahead, 0u);
  // The buffers alive at any moment stayed within the same bound.
  const auto peak = sluice::buffer_pool::global().stats().peak_live_bytes - live_before;
  EXPECT_LE(peak, std::size_t{512} << 10);
  std::printf("[slow reader] file %zu MiB, reader ahead of peer by at most %llu KiB, peak live buffers %zu KiB\n",
              kFile >> 20, static_cast<unsigned long long>(max_ahead >> 10), peak >> 10);
}

TEST(io_tcp, connecting_to_a_closed_port_is_an_error_naming_it) {
  std::uint16_t port;
  { port = io::tcp_listen(0).port(); }  // bound, then closed again: nobody listens there now
  const std::string msg = error_of([&] { (void)io::tcp_connect("127.0.0.1", port); });
  EXPECT_EQ(msg, "tcp_connect: cannot connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

// A listener that never accepts and whose queue is full: the kernel drops each SYN, so
// a connect to it waits for an answer that does not come (as for a filtered port). It
// waited the kernel's ~2 minutes with no way out; now connect_timeout bounds it and a
// stop request ends it at once.
struct unanswering_listener {
  int fd = -1;
  std::vector<int> clients;
  std::uint16_t port = 0;
  unanswering_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 0) != 0) return;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    // A backlog of 0 holds one connection; a few more make sure the queue is full.
    for (int i = 0; i < 4; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      (void)::connect(c, reinterpret_cast<sockaddr*>(&a), len);
      clients.push_back(c);
    }
  }
  ~unanswering_listener() {
    for (const int c : clients) ::close(c);
    if (fd >= 0) ::close(fd);
  }
};

TEST(io_tcp, a_connect_nobody_answers_ends_at_its_timeout_or_a_stop_request) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "connect timeout");
  unanswering_listener l;
  ASSERT_NE(l.port, 0);
  const std::string where = "127.0.0.1:" + std::to_string(l.port);
  try {
    (void)io::tcp_connect("127.0.0.1", l.port, {.connect_timeout = std::chrono::milliseconds(200)});
    ADD_FAILURE() << "connected to a listener whose queue is full";
  } catch (const io::error& e) {
    EXPECT_EQ(std::string(e.what()),
              "tcp_connect: cannot connect to " + where + ": no answer within the connect_timeout of 200 ms");
    EXPECT_EQ(e.errno_value(), ETIMEDOUT);
  }
  // A stop requested while it waits (no timeout: only the stop can end it in time).
  std::stop_source stop;
  std::string waited;
  int waited_errno = 0;
  std::thread t([&] {
    try {
      (void)io::tcp_connect("127.0.0.1", l.port, {}, stop.get_token());
      waited = "(connected)";
    } catch (const io::error& e) {
      waited = e.what();
      waited_errno = e.errno_value();
    }
  });
  stop.request_stop();  // before or during the wait: the same answer
  t.join();
  EXPECT_EQ(waited, "tcp_connect: stopped while connecting to " + where);
  EXPECT_EQ(waited_errno, ECANCELED);
  // A negative timeout is a mistake, not "none".
  EXPECT_EQ(error_of([&] { (void)io::tcp_connect("127.0.0.1", l.port, {.connect_timeout = std::chrono::milliseconds(-5)}); }),
            "tcp_connect: connect_timeout for " + where + " is negative (-5 ms); 0 leaves it to the kernel");
}

// A listener queues as many connections as the kernel allows (a queue of 16 made a burst
// of clients wait out one-second SYN retries while the server was slow to accept). `ss`
// shows a listening socket's queue limit as its Send-Q.
TEST(io_tcp, a_listener_queues_what_the_kernel_allows) {
  if (!sluice_test::have_ss()) GTEST_SKIP() << "no ss (iproute2) here";
  io::tcp_listener server = io::tcp_listen(0);
  const sluice_test::listen_queue q = sluice_test::listen_queue_limit(server.port());
  EXPECT_EQ(q.state, "LISTEN") << q.text;
  EXPECT_GE(q.limit, 128) << q.text;
}

// An IPv6 peer is named [host]:port, so the port can be told from the address ("::1:5000"
// could not).
TEST(io_tcp, an_ipv6_peer_is_named_in_brackets) {
  io::tcp_listener server;
  try {
    server = io::tcp_listen(0, "::1");
  } catch (const io::error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  const io::tcp_connection client = io::tcp_connect("::1", server.port());
  const io::tcp_connection accepted = server.accept();
  EXPECT_EQ(client.peer(), "[::1]:" + std::to_string(server.port()));
  EXPECT_EQ(accepted.peer().rfind("[::1]:", 0), 0U) << accepted.peer();
  // And so do messages: "cannot connect to ::1:34819" (found by a probe).
  const std::uint16_t closed = server.port();
  server = io::tcp_listener();
  const std::string what = error_of([&] { (void)io::tcp_connect("::1", closed); });
  EXPECT_NE(what.find("[::1]:" + std::to_string(closed)), std::string::npos) << what;
}

// Nor does an empty host connect to this machine unasked (getaddrinfo's reading of it).
TEST(io_tcp, connecting_with_an_empty_host_is_refused) {
  try {
    (void)io::tcp_connect("", 9);
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_NE(std::string(e.what()).find("tcp_connect: no host given for port 9"), std::string::npos) << e.what();
    EXPECT_EQ(e.errno_value(), EINVAL);
  }
}

// A peer that sent bytes the sink never reads (a request line, a banner) still gets the
// whole stream and a clean end: the sink's socket closed with those bytes unread, which
// answers with a reset, and the reset dropped what the peer had not read yet (a probe:
// 6.6 of 8 MiB, then "connection reset", while the sink reported success).
TEST(io_tcp, a_peer_that_sent_bytes_the_sink_never_read_still_gets_the_whole_stream) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "linger");
  // The stream fits in the sink's send buffer and not in the peer's receive buffer: the
  // sink's stage ends with bytes still to send, as a long stream to a slow peer does.
  io::tcp_listener server = io::tcp_listen(0, "127.0.0.1", {.send_buffer = 1 << 20});
  const std::string data = io_test::log_text(400000, 5);
  const int peer = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(peer, 0);
  const int small = 8192;
  ASSERT_EQ(::setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server.port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(peer, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::send(peer, "GET / HTTP/1.0\r\n\r\n", 18, 0), 18);
  std::atomic<bool> ran{false};
  std::string run_error;
  std::thread sender([&] {
    try {
      runner::run(sluice::from<buffer>([&](sluice::sender<buffer>& out) { out.push(buffer::copy_of(data)); }),
                  server.sink());
    } catch (const std::exception& e) {
      run_error = e.what();
    }
    ran = true;
  });
  // The peer reads only once the sink's stage has ended (closed, or lingering past its
  // bound): before, that close had reset the connection.
  EXPECT_TRUE(sluice_test::eventually([&] { return ran.load(); }, std::chrono::seconds(20)));
  std::string got;
  char buf[16384];
  ssize_t n = 0;
  while ((n = ::recv(peer, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<std::size_t>(n));
  const int err = n < 0 ? errno : 0;
  EXPECT_EQ(err, 0) << std::strerror(err) << " after " << got.size() << " of " << data.size() << " bytes";
  EXPECT_TRUE(got == data) << got.size() << " of " << data.size() << " bytes";
  ::close(peer);
  sender.join();
  EXPECT_EQ(run_error, "");
}

// An empty host (a blank config value) would be every interface to getaddrinfo(): it is
// refused, saying how to ask for every interface.
TEST(io_tcp, listening_with_an_empty_host_is_refused_not_every_interface) {
  try {
    (void)io::tcp_listen(0, "");
    FAIL() << "no error";
  } catch (const io::error& e) {
    EXPECT_NE(std::string(e.what()).find("tcp_listen: no host given for port 0; give \"127.0.0.1\""), std::string::npos)
        << e.what();
    EXPECT_EQ(e.errno_value(), EINVAL);
  }
}

TEST(io_tcp, a_stop_request_wakes_a_source_waiting_for_a_peer) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "accept stop");
  io::tcp_listener server = io::tcp_listen(0);
  auto d = server.source();
  auto [tx, rx] = sluice::bounded<buffer>(16);
  std::stop_source stop;
  std::thread t([&, tx = std::move(tx)]() mutable { d.fn(tx, stop.get_token()); });
  stop.request_stop();
  t.join();
  EXPECT_FALSE(rx.pop().has_value());
}

// A sink whose input is cancelled after one buffer, on a connection to a peer that reads
// to the end: what the peer saw (its read error, and the bytes it got before). With
// keep_handle, the test still holds the connection while the peer reads.
struct peer_view {
  std::string error, got;
};
peer_view what_the_peer_of_an_aborted_sink_sees(bool keep_handle) {
  io::tcp_listener server = io::tcp_listen(0);
  peer_view seen;
  std::thread peer([&] {
    try {
      runner::run(server.source(), io_test::string_sink(&seen.got));
    } catch (const std::exception& e) {
      seen.error = e.what();
    }
  });
  std::optional<io::tcp_connection> kept;
  {
    io::tcp_connection c = io::tcp_connect("127.0.0.1", server.port());
    auto sink = c.sink();
    auto [tx, rx] = sluice::bounded<buffer>(16);
    std::thread w([&, rx = std::move(rx)]() mutable { sink.fn(rx, std::stop_token{}); });
    tx.push(buffer::copy_of("partial data"));
    tx.cancel();  // an upstream failure
    w.join();
    if (keep_handle) kept = c;
  }
  peer.join();  // without the reset, with the handle kept, this waits until the watchdog fires
  if (keep_handle) {
    EXPECT_GE(kept->fd(), 0);  // still a handle: its socket is open, unconnected
  }
  return seen;
}

TEST(io_tcp, an_aborted_sink_resets_the_connection_so_the_peer_sees_an_error) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "abort reset");
  const peer_view seen = what_the_peer_of_an_aborted_sink_sees(false);
  EXPECT_NE(seen.error.find("tcp_read: cannot read"), std::string::npos) << "peer saw a clean end: " << seen.got;
  EXPECT_NE(seen.error.find("Connection reset by peer"), std::string::npos) << seen.error;
}

// The reset goes out when the sink ends, not when the last handle is dropped: a program
// that keeps its tcp_connection (to log it, to retry) must not leave the peer waiting for
// bytes that will never come.
TEST(io_tcp, an_aborted_sink_resets_the_connection_while_its_handle_is_still_held) {
  sluice_test::watchdog dog(std::chrono::seconds(30), "abort reset, handle held");
  const peer_view seen = what_the_peer_of_an_aborted_sink_sees(true);
  EXPECT_NE(seen.error.find("Connection reset by peer"), std::string::npos)
      << "peer saw: '" << seen.error << "', " << seen.got;
}

// A raw peer for the reset tests: a socket connected to 127.0.0.1:port, or the accepted
// end of one when a test listens itself.
int raw_connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
int unread_bytes(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}
int tcp_state(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 ? info.tcpi_state : -1;
}
// Closes fd with a reset (SO_LINGER 0): what it had not read is dropped, and the other
// side sees ECONNRESET.
void reset_close(int fd) {
  const linger hard{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  ::close(fd);
}

// The peer reads 1,000 of 100,000 bytes, all in its kernel by then, and resets the
// connection before the stream ends: the kernel drops the rest. The sink's shutdown then
// failed with ENOTCONN, which was taken for a clean end, and run() succeeded (a probe).
TEST(io_tcp, a_peer_that_resets_before_the_end_reached_it_fails_a_connections_sink) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "reset before the end");
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  io::tcp_connection c = io::tcp_connect("127.0.0.1", ntohs(a.sin_port));
  const int peer = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(lfd);
  ASSERT_GE(peer, 0);
  const std::string data(100000, 'z');
  std::atomic<bool> reset{false};
  std::thread reader([&] {
    char buf[1000];
    std::size_t got = 0;
    while (got < sizeof buf) {
      const ssize_t n = ::recv(peer, buf, sizeof buf - got, 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    // The rest has reached this side's kernel: the sink's writes are all done.
    EXPECT_TRUE(sluice_test::eventually([&] { return unread_bytes(peer) == static_cast<int>(data.size() - got); },
                                        std::chrono::seconds(20)));
    reset_close(peer);
    reset = true;
  });
  const std::string what = error_of([&] {
    runner::run(sluice::from<buffer>([&](sluice::sender<buffer>& out) {
                  out.push(buffer::copy_of(data));
                  // The stream ends once the reset has reached the sink's socket.
                  EXPECT_TRUE(sluice_test::eventually([&] { return reset.load() && tcp_state(c.fd()) == TCP_CLOSE; },
                                                      std::chrono::seconds(20)));
                }),
                c.sink());
  });
  reader.join();
  EXPECT_NE(what.find("tcp_write: the peer 127.0.0.1:"), std::string::npos) << what;
  EXPECT_NE(what.find("broke off the connection (Connection reset by peer) before the stream's end reached it"),
            std::string::npos)
      << what;
}

// The peer has the whole stream and its end in its kernel, and resets instead of reading
// it: a listener's sink, which waits for its peer to close as its stage ends, saw the
// reset there and dropped it, and run() succeeded.
TEST(io_tcp, a_peer_that_resets_after_the_end_was_sent_fails_a_listeners_sink) {
  sluice_test::watchdog dog(std::chrono::seconds(60), "reset after the end");
  io::tcp_listener server = io::tcp_listen(0);
  const int peer = raw_connect(server.port());
  ASSERT_GE(peer, 0);
  const std::string data(100000, 'z');
  std::thread resetter([&] {
    // All of it and the end (the sink's shutdown: CLOSE_WAIT here) have come; none read.
    EXPECT_TRUE(sluice_test::eventually(
        [&] { return unread_bytes(peer) == static_cast<int>(data.size()) && tcp_state(peer) == TCP_CLOSE_WAIT; },
        std::chrono::seconds(20)));
    reset_close(peer);
  });
  const std::string what = error_of([&] {
    runner::run(sluice::from<buffer>([&](sluice::sender<buffer>& out) { out.push(buffer::copy_of(data)); }),
                server.sink());
  });
  resetter.join();
  EXPECT_NE(what.find("tcp_write: the peer 127.0.0.1:"), std::string::npos) << what;
  EXPECT_NE(what.find("broke off the connection (Connection reset by peer) after the stream's end was sent"),
            std::string::npos)
      << what;
}

}  // namespace
