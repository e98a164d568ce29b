// ingest_server — sluice embedded in an HTTP server (README "Embedding in a server").
//
//   ingest_server [--port P] [--out FILE] [--capacity N] [--write-us U]
//
// POST /ingest   one record per request body (at most 1 MiB as the handler receives it,
//                however it was sent, chunked or gzip-encoded: larger is 413); 200 once
//                the graph has accepted it, 503 when the graph is full (the client
//                retries later) or ending.
// GET  /metrics  the graph's snapshot in Prometheus text format.
//
// The graph: ingest (an inlet fed by the server's handler threads) -> parse -> enrich
// (2 replicas, ordered) -> write (appends one line per record to FILE: the body with
// backslash, tab, CR, LF and other control bytes escaped as \\, \t, \r, \n, \xHH; a tab; its
// length in bytes; one write(2) per line, so a line is in the file whole or not at all).
// SIGTERM or SIGINT: the server stops accepting, request_stop() closes the inlet, every
// accepted record drains to FILE, and the process prints
// "accepted N written M dead-letters L delay-ms max D mean E" (D, E: how long written
// records waited between their 200 and their write) and exits 0 (1 if the graph failed).
// A second SIGTERM or SIGINT during that drain (a slow store, an operator in a hurry)
// cancels the graph: the records not yet written are dead letters, counted in L, and
// the exit status is 1. (Two signals of one number sent before this process takes the
// first are one signal: POSIX keeps one pending signal per number. SIGINT then SIGTERM
// stay two.)
// --write-us makes each write take U more microseconds, as a slow store would. A graph
// that fails on its own (FILE on a full disk) ends the server too: on_done tells it, no
// thread blocks in wait() to find out; the records it had accepted and not written are
// dead letters (on_discard), counted in L: accepted = written + dead letters.
// A client that sends nothing, or too slowly, is dropped: each request's head (its
// request line and headers, at most 8 KiB: more is 431) must arrive whole within 2 s of
// the request's start, and its body within 10 s (else 408), whatever it trickles; a
// connection carries at most 5 requests. (httplib alone bounded only each read: a client
// trickling a byte a second held a handler thread for ever, eight of them shut everyone
// out, and one sending header lines without end grew memory until the server died of
// bad_alloc with accepted records unwritten.) A multipart body is 415, and a request
// with two Content-Lengths that differ is 400. The first
// signal also ends every body still being received (503), and the server does not wait
// for its connections to close before draining; once the drain is over it waits for them
// at most 3 s (or until another signal), then exits without them: a client that trickles
// a byte a second cannot keep it running.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sluice/graph.hpp>
#include <sluice/metrics.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct request {
  std::string body;
  clock_type::time_point accepted;  // when the handler's push succeeded
};

// The handler threads. httplib's own ThreadPool ends the process (std::terminate) when it
// cannot make one of its threads: its vector is destroyed with the started ones still
// joinable. This pool joins what it started and throws, so that a server short of threads
// (a thread or memory limit) says so and exits.
class handler_pool final : public httplib::TaskQueue {
 public:
  explicit handler_pool(std::size_t n) {
    try {
      for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
    } catch (const std::system_error& e) {
      const std::size_t started = threads_.size();
      shutdown();
      throw std::system_error(e.code(), "cannot start the " + std::to_string(n) + " request handler threads (" +
                                            std::to_string(started) + " started)");
    }
  }
  ~handler_pool() override { shutdown(); }
  handler_pool(const handler_pool&) = delete;
  handler_pool& operator=(const handler_pool&) = delete;

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      ending_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return ending_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // ending, and every connection taken was served
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      try {
        fn();
      } catch (const std::exception& e) {  // one connection's failure (bad_alloc) is not the server's
        std::fprintf(stderr, "ingest_server: a request handler failed: %s\n", e.what());
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool ending_ = false;
  std::vector<std::thread> threads_;
};

// ---- connections: every request's head and body within bounds -----------------------

constexpr std::size_t kMaxHead = 8192;                       // request line and headers
constexpr auto kHeadDeadline = std::chrono::seconds(2);      // from the request's start
constexpr auto kBodyDeadline = std::chrono::seconds(10);     // from the head's arrival
constexpr auto kReadTimeout = std::chrono::seconds(2);       // silence within a body
constexpr auto kWriteTimeout = std::chrono::seconds(2);      // a client that does not read
constexpr int kRequestsPerConnection = 5;

// Set on a handler thread when its request's body missed kBodyDeadline (answered 408).
thread_local bool tl_body_late = false;

int ms_until(clock_type::time_point t) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock_type::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

// One connection as httplib reads and answers it: reads end at kBodyDeadline (after which
// every read fails), or after kReadTimeout of silence; writes never raise SIGPIPE.
class guarded_stream final : public httplib::Stream {
 public:
  guarded_stream(int sock, clock_type::time_point deadline) : sock_(sock), deadline_(deadline) {}
  bool is_readable() const override { return wait(POLLIN, kReadTimeout); }
  bool is_writable() const override { return wait(POLLOUT, kWriteTimeout); }
  ssize_t read(char* p, std::size_t n) override {
    if (!wait(POLLIN, kReadTimeout)) return -1;
    ssize_t got;
    do {
      got = ::recv(sock_, p, n, 0);
    } while (got < 0 && errno == EINTR);
    return got;
  }
  ssize_t write(const char* p, std::size_t n) override {
    if (!wait(POLLOUT, kWriteTimeout, false)) return -1;
    ssize_t put;
    do {
      put = ::send(sock_, p, n, MSG_NOSIGNAL);
    } while (put < 0 && errno == EINTR);
    return put;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return sock_; }

 private:
  // Ready within `timeout` (and, for reads, before the deadline).
  bool wait(short what, std::chrono::milliseconds timeout, bool deadline = true) const {
    const auto until = std::min(clock_type::now() + timeout, deadline ? deadline_ : clock_type::time_point::max());
    for (;;) {
      pollfd f{sock_, what, 0};
      const int r = ::poll(&f, 1, ms_until(until));
      if (r > 0) return true;
      if (r < 0 && errno == EINTR) continue;
      if (deadline && clock_type::now() >= deadline_) tl_body_late = true;
      return false;
    }
  }
  void address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = 0;
    if (get(sock_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
      port = ntohs(v4->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
      port = ntohs(v6->sin6_port);
    }
    ip = text;
  }
  int sock_;
  clock_type::time_point deadline_;
};

enum class head_state { whole, too_long, late, gone };

// Waits, without reading, for a request head to be in the socket whole: its blank line
// within kMaxHead bytes, before `deadline`. The bytes stay for httplib to read.
head_state wait_for_head(int sock, clock_type::time_point deadline) {
  std::string seen(kMaxHead + 1, '\0');
  for (;;) {
    const ssize_t n = ::recv(sock, seen.data(), seen.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return head_state::gone;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return head_state::gone;
    if (n > 0) {
      const std::string_view got(seen.data(), static_cast<std::size_t>(n));
      if (got.find("\r\n\r\n") != std::string_view::npos || got.find("\n\n") != std::string_view::npos) {
        return head_state::whole;
      }
      if (got.size() > kMaxHead) return head_state::too_long;
    }
    if (clock_type::now() >= deadline) return head_state::late;
    if (n > 0) {
      // Part of a head is there (so the socket stays readable): look again shortly.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } else {
      pollfd f{sock, POLLIN, 0};
      (void)::poll(&f, 1, ms_until(deadline));
    }
  }
}

// Answers a refused head and closes: the answer first, then the write side, then what the
// client still sends is read and dropped for a moment (closed with unread bytes, the
// socket would reset, and the client could lose the answer).
void refuse_and_close(int sock, const char* status_line, const char* why) {
  const std::string answer = std::string("HTTP/1.1 ") + status_line + "\r\nContent-Type: text/plain\r\nContent-Length: " +
                             std::to_string(std::strlen(why)) + "\r\nConnection: close\r\n\r\n" + why;
  (void)::send(sock, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(sock, SHUT_WR);
  const auto until = clock_type::now() + std::chrono::milliseconds(500);
  char sink[4096];
  for (std::size_t dropped = 0; dropped < 65536;) {
    pollfd f{sock, POLLIN, 0};
    if (::poll(&f, 1, ms_until(until)) <= 0) break;
    const ssize_t n = ::recv(sock, sink, sizeof sink, 0);
    if (n <= 0) break;
    dropped += static_cast<std::size_t>(n);
  }
  ::close(sock);
}

// httplib's server with each connection's requests read through guarded_stream, after
// their head has arrived whole (wait_for_head). process_and_close_socket is httplib's
// private virtual (its SSLServer overrides it too); process_request is protected.
class guarded_server final : public httplib::Server {
 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ok = true;
    for (int i = 0; i < kRequestsPerConnection; ++i) {
      const auto start = clock_type::now();
      switch (wait_for_head(sock, start + kHeadDeadline)) {
        case head_state::whole:
          break;
        case head_state::too_long:
          refuse_and_close(sock, "431 Request Header Fields Too Large", "request head over 8 KiB\n");
          return false;
        case head_state::late:
          // Silence between requests is a client done with the connection; a head begun
          // and not finished is answered.
          if (i == 0 || has_bytes(sock)) {
            refuse_and_close(sock, "408 Request Timeout", "request head not whole within 2 s\n");
          } else {
            ::close(sock);
          }
          return i > 0;
        case head_state::gone:
          ::close(sock);
          return i > 0;
      }
      guarded_stream strm(sock, clock_type::now() + kBodyDeadline);
      tl_body_late = false;
      bool closed = false;
      ok = process_request(strm, i + 1 == kRequestsPerConnection, closed, [](httplib::Request&) {});
      if (!ok || closed) break;
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }
  static bool has_bytes(int sock) {
    char c;
    return ::recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
  }
};

struct record {
  std::string body;
  clock_type::time_point accepted;
  std::size_t length = 0;
};

constexpr const char* kUsage = "usage: ingest_server [--port P] [--out FILE] [--capacity N] [--write-us U]\n";

struct options {
  int port = 0;  // 0: any free port
  std::string out_path = "ingest.log";
  std::size_t capacity = 1024;
  long write_us = 0;
};

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "ingest_server: %s\n%s", why.c_str(), kUsage);
  std::exit(2);
}

// A whole number in [lo, hi], or a usage error naming the flag.
long whole(std::string_view flag, const char* text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
    usage_error("bad value '" + std::string(text) + "' for " + std::string(flag) + ": expected " + std::to_string(lo) +
                " to " + std::to_string(hi));
  }
  return v;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a != "--port" && a != "--out" && a != "--capacity" && a != "--write-us") usage_error("unknown option '" + std::string(a) + "'");
    if (i + 1 >= argc) usage_error(std::string(a) + " needs a value");
    const char* v = argv[++i];
    if (a == "--port") o.port = static_cast<int>(whole(a, v, 0, 65535));
    if (a == "--capacity") o.capacity = static_cast<std::size_t>(whole(a, v, 1, 1 << 20));
    if (a == "--write-us") o.write_us = whole(a, v, 0, 10'000'000);
    if (a == "--out") {
      if (*v == '\0') usage_error("--out needs a file name");
      o.out_path = v;
    }
  }
  return o;
}

// The body as one line: backslash and control bytes escaped, so that a body with a tab
// or a newline in it is one line that can be split back apart.
std::string escaped(const std::string& body) {
  std::string e;
  e.reserve(body.size() + 8);
  for (const char ch : body) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      e += "\\\\";
    } else if (c == '\t') {
      e += "\\t";
    } else if (c == '\n') {
      e += "\\n";
    } else if (c == '\r') {
      e += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      e += hex;
    } else {
      e += ch;
    }
  }
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  const int port = opt.port;
  const std::string& out_path = opt.out_path;
  const std::size_t capacity = opt.capacity;
  const auto write_cost = std::chrono::microseconds(opt.write_us);

  // Opened while SIGINT and SIGTERM still end the process: open(2) of a FIFO without a
  // reader blocks, and Ctrl-C must still work then.
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    std::fprintf(stderr, "ingest_server: cannot open %s: %s\n", out_path.c_str(), std::strerror(errno));
    return 2;
  }

  // Block SIGINT/SIGTERM before any thread exists: every thread (httplib's handlers,
  // the graph's stage threads) inherits the mask, so only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  guarded_server server;
  std::atomic<bool> failed{false}, graph_ended{false};
  std::atomic<long> dead_letters{0};
  sluice::graph g({
      // Records the graph accepted (a client got 200) but could not write: the graph
      // failed with them inside. A real server would keep them somewhere (a spill file, a
      // retry queue); this one counts them, so that nothing accepted vanishes unseen.
      .on_discard = [&](const sluice::dead_letter&) { dead_letters.fetch_add(1, std::memory_order_relaxed); },
      .on_done = [&](const sluice::report&, std::exception_ptr error) {
        // Runs once, after every stage thread is joined: a graph that ended by itself
        // (a failed writer) ends the server, and nobody had to block in wait() for it.
        if (error) failed = true;
        graph_ended = true;
      },
  });

  auto [inlet, requests] = g.input<request>("ingest", {.capacity = capacity});
  auto parsed = g.map("parse", requests, [](request q) {
    return record{std::move(q.body), q.accepted, 0};
  }, {.capacity = capacity});
  auto enriched = g.map("enrich", parsed, [](record r) {
    r.length = r.body.size();
    return r;
  }, {.capacity = capacity, .replicas = 2, .ordered = true});
  std::atomic<long> written{0};
  clock_type::duration delay_max{0}, delay_sum{0};  // only the sink's thread touches these
  g.sink("write", enriched, [&](record r) {
    if (write_cost.count() > 0) std::this_thread::sleep_for(write_cost);  // a slow store
    const std::string line = escaped(r.body) + '\t' + std::to_string(r.length) + '\n';
    const off_t before = ::lseek(out, 0, SEEK_END);
    std::size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = ::write(out, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = n < 0 ? errno : ENOSPC;
        // A part of the line may be in: cut it off, so the file holds whole lines only
        // (fails harmlessly on what is not a regular file).
        if (done != 0 && before >= 0) (void)::ftruncate(out, before);
        throw std::runtime_error("write to " + out_path + " failed: " + std::strerror(e));
      }
      done += static_cast<std::size_t>(n);
    }
    // The record stays a dead letter, not written, until its line is whole in the file.
    const auto waited = clock_type::now() - r.accepted;
    delay_max = std::max(delay_max, waited);
    delay_sum += waited;
    written.fetch_add(1, std::memory_order_relaxed);
  }, {.on_close = [&] { ::close(out); }});
  try {
    g.start();
  } catch (const std::exception& e) {  // no threads to be had: the library names the stage
    std::fprintf(stderr, "ingest_server: cannot start: %s\n", e.what());
    return 1;
  }

  std::atomic<long> accepted{0};
  std::atomic<int> pushing{0};          // handlers between try_push and counting its success
  std::atomic<bool> stopping{false};    // the first signal: bodies still arriving are refused
  constexpr std::size_t kMaxBody = std::size_t{1} << 20;
  // Made here, not by httplib on the listener thread, where a failure could not be told.
  std::unique_ptr<handler_pool> pool;
  try {
    pool = std::make_unique<handler_pool>(8);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_server: %s\n", e.what());
    g.cancel();
    return 1;
  }
  // httplib deletes the queue it is given after its shutdown(): hand it a forwarder, once.
  struct pool_ref final : httplib::TaskQueue {
    explicit pool_ref(handler_pool& p) : p_(p) {}
    void enqueue(std::function<void()> fn) override { p_.enqueue(std::move(fn)); }
    void shutdown() override { p_.shutdown(); }
    handler_pool& p_;
  };
  server.new_task_queue = [&pool] { return new pool_ref(*pool); };
  // Bounded bodies (the channels hold up to 3 x capacity of them) and bounded waits on
  // silent clients (each holds one of the 8 handler threads).
  server.set_payload_max_length(kMaxBody);  // a Content-Length over it: 413 before any byte
  server.Post("/ingest", [&, inlet = inlet](const httplib::Request& req, httplib::Response& res,
                                            const httplib::ContentReader& read) {
    const auto refuse = [&req, &res](int status, const char* why) {
      res.status = status;
      // The body is never read: the connection must close. httplib adds the header itself
      // when the client asked to close (two of them, when this one came on top).
      if (req.get_header_value("Connection") != "close") res.set_header("Connection", "close");
      res.set_content(why, "text/plain");
    };
    // httplib hands a multipart body to a reader of parts, which this handler has not.
    if (req.is_multipart_form_data()) return refuse(415, "multipart bodies are not taken: send the record as the body\n");
    // Which of two lengths a proxy in front used is unknown: the record could be cut.
    const std::size_t lengths = req.get_header_value_count("Content-Length");
    for (std::size_t i = 1; i < lengths; ++i) {
      if (req.get_header_value("Content-Length", i) != req.get_header_value("Content-Length", 0)) {
        return refuse(400, "two Content-Lengths that differ\n");
      }
    }
    // The body arrives in pieces (decoded: a chunked or gzip body is counted as what it
    // decodes to), so a body over the limit is refused at the first piece past it, before
    // it is all in memory: set_payload_max_length covers a Content-Length body only.
    std::string body;
    bool too_large = false;
    const bool whole = read([&](const char* data, std::size_t n) {
      if (stopping.load(std::memory_order_relaxed)) return false;
      if (n > kMaxBody - body.size()) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    if (!whole) {
      too_large = too_large || res.status == 413;  // httplib's own check, on a Content-Length
      if (too_large) return refuse(413, "body over 1 MiB\n");
      if (stopping.load()) return refuse(503, "ending\n");
      if (tl_body_late) return refuse(408, "body not whole within 10 s\n");
      return refuse(400, "bad body\n");
    }
    // One inlet object, many handler threads at once. try_push never blocks a handler:
    // a full graph answers 503 at once, and the record stays with the caller.
    pushing.fetch_add(1);
    const sluice::status pushed = inlet.try_push(request{std::move(body), clock_type::now()});
    if (pushed == sluice::status::ok) accepted.fetch_add(1);
    pushing.fetch_sub(1);
    switch (pushed) {
      case sluice::status::ok:
        res.set_content("ok\n", "text/plain");
        return;
      case sluice::status::full:
        res.status = 503;
        res.set_header("Retry-After", "1");
        res.set_content("full\n", "text/plain");
        return;
      default:
        res.status = 503;
        res.set_content("ending\n", "text/plain");
        return;
    }
  });
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(sluice::metrics::to_prometheus(g.snapshot()), "text/plain; version=0.0.4");
  });

  // The socket gets SO_REUSEADDR alone: httplib's default adds SO_REUSEPORT, with which
  // a port another process listens on (with it too) is shared, half the requests going
  // there, instead of refused.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  errno = 0;
  const int bound = port == 0 ? server.bind_to_any_port("127.0.0.1") : (server.bind_to_port("127.0.0.1", port) ? port : -1);
  if (bound < 0) {
    const int err = errno;  // the failed bind's or listen's, as httplib left it
    std::fprintf(stderr, "ingest_server: cannot listen on 127.0.0.1:%d%s%s\n", port, err != 0 ? ": " : "",
                 err != 0 ? std::strerror(err) : "");
    g.cancel();
    return 2;
  }
  std::printf("listening on 127.0.0.1:%d\n", bound);
  std::fflush(stdout);

  // The listener serves on its own thread; this thread waits for SIGTERM/SIGINT, or for
  // the graph to end by itself (on_done), then stops the listener and drains.
  std::atomic<bool> listener_done{false};
  std::thread listener;
  try {
    listener = std::thread([&] {
      server.listen_after_bind();
      listener_done = true;
    });
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "ingest_server: cannot start the listener thread: %s\n", e.what());
    g.cancel();
    try {
      g.wait();
    } catch (const std::exception&) {
    }
    return 1;
  }
  while (!graph_ended.load()) {
    timespec tick{0, 100'000'000};
    if (sigtimedwait(&stop_signals, nullptr, &tick) > 0) break;
  }
  stopping = true;
  // Stop accepting connections. stop() is a no-op until listen has begun: wait for that.
  // The listener thread then waits for its handlers, which this thread does not: a
  // client trickling its request would hold the drain up for as long as it liked.
  while (!listener_done.load() && !server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server.stop();

  g.request_stop();  // closes the inlet; everything accepted drains to FILE
  try {
    // Wait in short steps, so that a second signal can cut a long drain short.
    bool cut = false;
    while (!g.wait_for(std::chrono::milliseconds(100))) {
      timespec now{0, 0};
      if (!cut && sigtimedwait(&stop_signals, nullptr, &now) > 0) {
        std::fprintf(stderr, "ingest_server: a second signal: the drain is cut short; "
                             "records not yet written are dead letters\n");
        g.cancel();
        cut = true;
      }
    }
    // The second signal can come just as the drain ends: the cancel then cut nothing
    // (wait_for() ended without the teardown's error), and the run stays a success.
    if (cut) std::fprintf(stderr, "ingest_server: the drain had finished before the cancel; nothing was cut\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ingest_server: %s\n", e.what());
    failed = true;
  }
  // The inlet is closed: a handler that has not pushed yet is refused, and one that has
  // is about to count its record. Wait for those counts (try_push does not block).
  while (pushing.load() != 0) std::this_thread::yield();
  const auto ms = [](clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const long n = written.load();
  std::printf("accepted %ld written %ld dead-letters %ld delay-ms max %.1f mean %.1f\n", accepted.load(), n,
              dead_letters.load(), ms(delay_max), n > 0 ? ms(delay_sum) / static_cast<double>(n) : 0.0);
  std::fflush(stdout);
  const int status = failed ? 1 : 0;

  // Open connections: each is dropped within 2 s of silence, so give them 3 s (or until
  // another signal), then leave without them: their handlers can no longer push.
  const auto until = clock_type::now() + std::chrono::seconds(3);
  while (!listener_done.load() && clock_type::now() < until) {
    timespec tick{0, 10'000'000};
    if (sigtimedwait(&stop_signals, nullptr, &tick) > 0) break;
  }
  if (!listener_done.load()) {
    std::fprintf(stderr, "ingest_server: a client connection is still open; leaving without it\n");
    std::fflush(stderr);
    std::_Exit(status);  // the listener thread and its handlers still use this frame
  }
  listener.join();
  return status;
}
