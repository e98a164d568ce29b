// The README's server example (examples/ingest_server.cpp), run as a user would: a
// child process on 127.0.0.1 and a free port, eight client threads posting, SIGTERM in
// the middle of the load. Every 200 a client saw is a line in the output file, and
// nothing else is.
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "support/child_signals.hpp"
#ifndef SLUICE_INGEST_SERVER_PATH
#error "SLUICE_INGEST_SERVER_PATH must name the built example"
#endif

namespace {

using namespace std::chrono_literals;

// Debian's cpp-httplib sends without MSG_NOSIGNAL: a request written to a server that
// has just ended (the point of some tests here) would kill this test with SIGPIPE
// instead of failing the request. Set before any test runs.
const bool sigpipe_ignored = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

struct child {
  pid_t pid = -1;
  int out = -1;  // the child's stdout

  // Reads one line of the child's stdout, waiting at most `limit`.
  std::string read_line(std::chrono::milliseconds limit) {
    std::string line;
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{out, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char c = 0;
      if (::read(out, &c, 1) != 1) break;
      if (c == '\n') return line;
      line += c;
    }
    return line;
  }

  // Waits for exit at most `limit`; -1 (after SIGKILL) when it did not exit in time.
  int wait_exit(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    int st = 0;
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      std::this_thread::sleep_for(10ms);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    return -1;
  }
};

child spawn(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe");
  const pid_t pid = ::fork();
  if (pid == 0) {
    sluice_test::default_stop_signals();
    ::signal(SIGPIPE, SIG_DFL);  // the server gets the default, not this test's SIG_IGN
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

std::size_t count_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::size_t n = 0;
  for (std::string l; std::getline(in, l);) ++n;
  return n;
}

int port_of(const std::string& banner) {
  const auto colon = banner.rfind(':');
  return colon == std::string::npos ? -1 : std::atoi(banner.c_str() + colon + 1);
}

std::filesystem::path temp_file(const char* name) {
  auto p = std::filesystem::temp_directory_path() / (std::string(name) + "." + std::to_string(::getpid()));
  std::filesystem::remove(p);
  return p;
}

TEST(IngestServer, every_200_is_a_line_after_sigterm_under_load) {
  const auto out = temp_file("sluice-ingest");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string(), "--capacity", "64"});
  const std::string banner = c.read_line(20s);
  const int port = port_of(banner);
  ASSERT_GT(port, 0) << "no banner from the server: '" << banner << "'";

  std::atomic<long> ok{0}, busy{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_connection_timeout(2, 0);
      cli.set_read_timeout(5, 0);
      for (long i = 0; !stop.load(); ++i) {
        auto res = cli.Post("/ingest", "client " + std::to_string(t) + " record " + std::to_string(i), "text/plain");
        if (!res) {
          if (stop.load()) return;
          continue;  // the server is going away; keep trying until told to stop
        }
        if (res->status == 200) ok.fetch_add(1);
        else if (res->status == 503) busy.fetch_add(1);
      }
    });
  }
  // Let the load build, check /metrics while it runs, then SIGTERM in the middle of it.
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (ok.load() < 2000 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
  {
    httplib::Client cli("127.0.0.1", port);
    auto m = cli.Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status, 200);
    EXPECT_NE(m->body.find("ingest"), std::string::npos);
    EXPECT_NE(m->body.find("write"), std::string::npos);
  }
  ASSERT_GE(ok.load(), 2000) << "the server did not take load";
  ::kill(c.pid, SIGTERM);
  const int status = c.wait_exit(30s);
  stop = true;
  for (auto& th : clients) th.join();

  EXPECT_EQ(status, 0);
  const std::string summary = c.read_line(2s);
  long accepted = -1, written = -2;
  ASSERT_EQ(std::sscanf(summary.c_str(), "accepted %ld written %ld", &accepted, &written), 2) << summary;
  EXPECT_EQ(accepted, written);
  EXPECT_EQ(static_cast<long>(count_lines(out)), written);
  EXPECT_EQ(ok.load(), accepted) << "a 200 that is not in the file, or a line nobody was told of";
  ::close(c.out);
  std::filesystem::remove(out);
}

// A drain behind a slow store can take long; an operator who signals again wants out
// now. The second SIGTERM cancels: what was accepted and not written is counted as dead
// letters, and the status says the drain did not finish.
TEST(IngestServer, a_second_sigterm_cuts_a_slow_drain_short_and_counts_what_is_left) {
  const auto out = temp_file("sluice-ingest-cut");
  // 200 ms per write: 60 accepted records would take 12 s to drain.
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string(), "--capacity", "64",
                   "--write-us", "200000"});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  long ok = 0;
  {
    httplib::Client cli("127.0.0.1", port);
    cli.set_connection_timeout(2, 0);
    for (int i = 0; i < 60; ++i) {
      auto res = cli.Post("/ingest", "record " + std::to_string(i), "text/plain");
      ASSERT_TRUE(res);
      if (res->status == 200) ++ok;
    }
  }
  ASSERT_GE(ok, 20) << "the graph refused most records";
  ::kill(c.pid, SIGTERM);
  // The first signal is taken once the server stops listening; the second one then
  // reaches the drain (a signal sent before that could merge with the first).
  const auto until = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    httplib::Client probe("127.0.0.1", port);
    probe.set_connection_timeout(0, 200'000);
    if (!probe.Get("/metrics")) break;
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "the server kept listening after SIGTERM";
  }
  ::kill(c.pid, SIGTERM);
  const int status = c.wait_exit(30s);
  EXPECT_EQ(status, 1) << "a cut drain is not a clean end";
  const std::string summary = c.read_line(2s);
  long accepted = -1, written = -2, dead = -3;
  ASSERT_EQ(std::sscanf(summary.c_str(), "accepted %ld written %ld dead-letters %ld", &accepted, &written, &dead), 3)
      << summary;
  EXPECT_EQ(accepted, ok);
  EXPECT_EQ(accepted, written + dead) << summary;
  EXPECT_GT(dead, 0) << "the drain ran to its end: the second signal did nothing";
  EXPECT_EQ(static_cast<long>(count_lines(out)), written);
  ::close(c.out);
  std::filesystem::remove(out);
}

TEST(IngestServer, a_failing_writer_ends_the_server_with_an_error) {
  // /dev/full: every flush fails, the sink throws, the graph fails, on_done stops the
  // server; no request is answered 200 after that.
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", "/dev/full"});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(1, 0);
  long ok = 0;
  for (int i = 0; i < 100000; ++i) {
    auto res = cli.Post("/ingest", std::string(512, 'x'), "text/plain");
    if (!res) break;  // the server ended
    if (res->status == 200) ++ok;
  }
  const int status = c.wait_exit(30s);
  EXPECT_EQ(status, 1) << "the graph failed: the server must end with an error";
  const std::string summary = c.read_line(2s);
  long accepted = -1, written = -2, dead = -3;
  ASSERT_EQ(std::sscanf(summary.c_str(), "accepted %ld written %ld dead-letters %ld", &accepted, &written, &dead), 3)
      << summary;
  EXPECT_EQ(ok, accepted);
  // What the failed graph held is counted as dead letters (on_discard), not lost unseen.
  EXPECT_EQ(accepted, written + dead) << summary;
  ::close(c.out);
}

// A body with a tab, a newline, a backslash or other control bytes is still one line,
// escaped so that it can be split back apart (a newline in a body made two lines).
TEST(IngestServer, every_body_is_one_line_whatever_its_bytes) {
  const auto out = temp_file("sluice-ingest-bytes");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string()});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  httplib::Client cli("127.0.0.1", port);
  const std::vector<std::string> bodies = {"plain", "a\tb", "line1\nline2", "back\\slash", std::string("nul\0x", 5),
                                           "cr\r", ""};
  for (const auto& b : bodies) {
    auto res = cli.Post("/ingest", b, "application/octet-stream");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  ::kill(c.pid, SIGTERM);
  EXPECT_EQ(c.wait_exit(30s), 0);
  std::ifstream in(out);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  const std::vector<std::string> want = {"plain\t5", "a\\tb\t3", "line1\\nline2\t11", "back\\\\slash\t10",
                                         "nul\\x00x\t5", "cr\\r\t3", "\t0"};
  EXPECT_EQ(lines, want);
  ::close(c.out);
  std::filesystem::remove(out);
}

// A raw connection to the server, for requests httplib's client will not send.
int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

bool send_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// The status line's code of the server's answer, or -1 (no answer within 10 s).
// The answer's head, through its blank line ("" when the connection ends before one).
std::string head_of(int fd) {
  std::string head;
  char buf[256];
  while (head.find("\r\n\r\n") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return "";
    head.append(buf, static_cast<std::size_t>(n));
  }
  return head.substr(0, head.find("\r\n\r\n") + 4);
}

int status_of(int fd) {
  std::string head;
  char buf[256];
  while (head.find("\r\n") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return -1;
    head.append(buf, static_cast<std::size_t>(n));
  }
  int code = -1;
  return std::sscanf(head.c_str(), "HTTP/1.%*d %d", &code) == 1 ? code : -1;
}

std::string gzipped(const std::string& raw) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, raw.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The 1 MiB limit holds however a body is sent: a chunked body, or a small gzip body
// that decodes past it, was taken whole into memory and written (a 50 KB gzip body
// became a 50 MiB record).
TEST(IngestServer, a_body_over_1_mib_is_413_however_it_is_sent) {
  const auto out = temp_file("sluice-ingest-limit");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string()});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  const std::size_t mib = std::size_t{1} << 20;
  {  // exactly 1 MiB, plainly: taken
    httplib::Client cli("127.0.0.1", port);
    auto res = cli.Post("/ingest", std::string(mib, 'a'), "text/plain");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    res = cli.Post("/ingest", std::string(mib + 1, 'a'), "text/plain");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 413);
  }
  {  // 2 MiB in 64 KiB chunks
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    bool sent = send_all(fd, "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; sent && i < 32; ++i) sent = send_all(fd, "10000\r\n" + std::string(0x10000, 'c') + "\r\n");
    if (sent) send_all(fd, "0\r\n\r\n");  // the server may have answered and closed already
    EXPECT_EQ(status_of(fd), 413) << "a chunked body of 2 MiB";
    ::close(fd);
  }
  {  // 64 MiB of zeros gzip-encoded: about 64 KB on the wire
    const std::string bomb = gzipped(std::string(64 * mib, 'z'));
    ASSERT_LT(bomb.size(), mib);
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    send_all(fd, "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\nContent-Length: " +
                     std::to_string(bomb.size()) + "\r\n\r\n" + bomb);
    EXPECT_EQ(status_of(fd), 413) << "a gzip body that decodes to 64 MiB";
    ::close(fd);
  }
  {  // a small gzip body is decoded and taken
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    const std::string small = gzipped("hello");
    send_all(fd, "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\nConnection: close\r\n"
                 "Content-Length: " + std::to_string(small.size()) + "\r\n\r\n" + small);
    EXPECT_EQ(status_of(fd), 200);
    ::close(fd);
  }
  ::kill(c.pid, SIGTERM);
  EXPECT_EQ(c.wait_exit(30s), 0);
  const std::string summary = c.read_line(2s);
  long accepted = -1, written = -2;
  ASSERT_EQ(std::sscanf(summary.c_str(), "accepted %ld written %ld", &accepted, &written), 2) << summary;
  EXPECT_EQ(accepted, 2);
  EXPECT_EQ(written, 2);
  EXPECT_EQ(count_lines(out), 2u);
  ::close(c.out);
  std::filesystem::remove(out);
}

// Clients that trickle a byte now and then are never silent for 2 s: one sending its
// body, one its headers. SIGTERM still ends the server, promptly, with what it had
// accepted written (it waited for their handlers, and a second signal went unseen).
TEST(IngestServer, clients_that_trickle_bytes_do_not_hold_up_the_end) {
  const auto out = temp_file("sluice-ingest-trickle");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string()});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  {
    httplib::Client cli("127.0.0.1", port);
    auto res = cli.Post("/ingest", "before", "text/plain");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  const int body = connect_to(port);
  const int head = connect_to(port);
  ASSERT_GE(body, 0);
  ASSERT_GE(head, 0);
  // A first request on each connection, answered: a handler thread has the connection
  // (one still in the listen queue would just be dropped when the server stops listening).
  for (const int fd : {body, head}) {
    ASSERT_TRUE(send_all(fd, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    ASSERT_EQ(status_of(fd), 200);
  }
  ASSERT_TRUE(send_all(body, "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nab"));
  ASSERT_TRUE(send_all(head, "POST /ingest HTTP/1.1\r\n"));
  std::atomic<bool> stop{false};
  std::thread trickler([&] {  // a workload, not a synchronisation: a byte each 300 ms
    while (!stop.load()) {
      send_all(body, "x");
      send_all(head, "X");
      std::this_thread::sleep_for(300ms);
    }
  });
  ::kill(c.pid, SIGTERM);
  const int status = c.wait_exit(20s);
  stop = true;
  trickler.join();
  EXPECT_EQ(status, 0) << "-1: still running 20 s after SIGTERM";
  const std::string summary = c.read_line(2s);
  long accepted = -1, written = -2;
  ASSERT_EQ(std::sscanf(summary.c_str(), "accepted %ld written %ld", &accepted, &written), 2) << summary;
  EXPECT_EQ(accepted, 1);
  EXPECT_EQ(written, 1);
  EXPECT_EQ(count_lines(out), 1u);
  ::close(body);
  ::close(head);
  ::close(c.out);
  std::filesystem::remove(out);
}

// SIGTERM to a server that must then end with status 0: its summary line.
std::string stop_server(child& c) {
  ::kill(c.pid, SIGTERM);
  EXPECT_EQ(c.wait_exit(20s), 0);
  return c.read_line(2s);
}

// A request head without end is refused at 8 KiB (431), and the server goes on. httplib
// alone kept every header line: one client's flood grew the server to 450 MB, and under a
// memory limit it died of bad_alloc with accepted records unwritten.
TEST(IngestServer, a_request_head_over_8_kib_is_431_and_the_server_goes_on) {
  const auto out = temp_file("sluice-ingest-head");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string()});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  const int fd = connect_to(port);
  ASSERT_GE(fd, 0);
  std::string flood = "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  while (flood.size() < 64 * 1024) flood += "X-A: " + std::string(100, 'a') + "\r\n";
  (void)send_all(fd, flood);  // the server may close before it has all of it
  EXPECT_EQ(status_of(fd), 431);
  ::close(fd);
  {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(10, 0);
    auto res = cli.Post("/ingest", "after", "text/plain");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  const std::string summary = stop_server(c);
  EXPECT_EQ(summary.rfind("accepted 1 written 1 dead-letters 0", 0), 0U) << summary;
  ::close(c.out);
  std::filesystem::remove(out);
}

// Clients that trickle their heads a byte at a time, more of them than handler threads,
// do not shut a real client out: each must send its head within 2 s (408). httplib alone
// bounded each read: eight such clients held the eight threads for as long as they went
// on, and a POST or a /metrics scrape got no answer at all.
TEST(IngestServer, clients_trickling_their_heads_do_not_shut_others_out) {
  const auto out = temp_file("sluice-ingest-slowloris");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string()});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  std::vector<int> slow;
  for (int i = 0; i < 10; ++i) {
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "P"));
    slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickler([&] {  // a workload, not a synchronisation: a byte each 300 ms
    while (!stop.load()) {
      for (const int fd : slow) (void)send_all(fd, "O");
      std::this_thread::sleep_for(300ms);
    }
  });
  {
    httplib::Client cli("127.0.0.1", port);
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(15, 0);  // the tricklers are dropped within 2 s
    auto res = cli.Post("/ingest", "through", "text/plain");
    EXPECT_TRUE(res) << "no answer while clients trickle";
    if (res) {
      EXPECT_EQ(res->status, 200);
    }
  }
  stop = true;
  trickler.join();
  for (const int fd : slow) {
    EXPECT_EQ(status_of(fd), 408);  // told why, not only dropped
    ::close(fd);
  }
  const std::string summary = stop_server(c);
  EXPECT_EQ(summary.rfind("accepted 1 written 1 dead-letters 0", 0), 0U) << summary;
  ::close(c.out);
  std::filesystem::remove(out);
}

// Bodies the handler cannot take as one record are refused and nothing is written: a
// multipart body (it was 500 with httplib's internal "bad_function_call" in a header),
// and two Content-Lengths that differ (the first was used: "h" of "hello" was written).
TEST(IngestServer, a_multipart_body_or_two_content_lengths_are_refused) {
  const auto out = temp_file("sluice-ingest-odd");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", out.string()});
  const int port = port_of(c.read_line(20s));
  ASSERT_GT(port, 0);
  const std::string part = "--B\r\nContent-Disposition: form-data; name=\"r\"\r\n\r\nhello\r\n--B--\r\n";
  const std::pair<std::string, int> cases[] = {
      {"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=B\r\n"
       "Content-Length: " + std::to_string(part.size()) + "\r\n\r\n" + part, 415},
      {"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello", 400},
  };
  for (const auto& [request, code] : cases) {
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, request));
    EXPECT_EQ(status_of(fd), code) << request;
    ::close(fd);
  }
  // A client that asks to close too gets one Connection header, not two (httplib adds its
  // own then, and the refusal's came on top).
  {
    const int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                             "Content-Length: 1\r\nContent-Length: 5\r\n\r\nhello"));
    const std::string head = head_of(fd);
    EXPECT_EQ(head.rfind("HTTP/1.1 400", 0), 0U) << head;
    std::size_t n = 0;
    for (std::size_t at = head.find("\r\nConnection:"); at != std::string::npos; at = head.find("\r\nConnection:", at + 1)) ++n;
    EXPECT_EQ(n, 1u) << head;
    ::close(fd);
  }
  const std::string summary = stop_server(c);
  EXPECT_EQ(summary.rfind("accepted 0 written 0 dead-letters 0", 0), 0U) << summary;
  EXPECT_EQ(count_lines(out), 0u);
  ::close(c.out);
  std::filesystem::remove(out);
}

// --out naming a FIFO nobody reads: open(2) blocks, and SIGTERM must still end the
// process (the signals were blocked before the open, so only SIGKILL did).
TEST(IngestServer, sigterm_ends_a_server_whose_out_fifo_has_no_reader) {
  const auto fifo = temp_file("sluice-ingest-fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", "0", "--out", fifo.string()});
  // Signal it once it is the server (exec done), asleep, with no thread started yet: in
  // the open(2). A signal sent before the exec would end the child whatever the server does.
  const std::string proc = "/proc/" + std::to_string(c.pid);
  const auto blocked_in_open = [&] {
    std::error_code ec;
    if (std::filesystem::read_symlink(proc + "/exe", ec) != std::filesystem::path(SLUICE_INGEST_SERVER_PATH)) return false;
    std::ifstream st(proc + "/status");
    bool sleeping = false, one_thread = false;
    for (std::string l; std::getline(st, l);) {
      if (l.rfind("State:", 0) == 0) sleeping = l.find("S (sleeping)") != std::string::npos;
      if (l.rfind("Threads:", 0) == 0) one_thread = std::atoi(l.c_str() + 8) == 1;
    }
    return sleeping && one_thread;
  };
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (!blocked_in_open() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(blocked_in_open()) << "the server never blocked opening the FIFO";
  ::kill(c.pid, SIGTERM);
  EXPECT_EQ(c.wait_exit(20s), 128 + SIGTERM) << "-1: SIGTERM did not end it";
  ::close(c.out);
  std::filesystem::remove(fifo);
}

// Bad arguments: one line and status 2, before anything listens or any file is made. A
// bad --capacity aborted the process; --port 99999 listened on another port than it said;
// an unknown option was ignored.
// A port another process listens on is refused, even where that process set SO_REUSEPORT:
// the server shared it (httplib's default socket options set SO_REUSEPORT too), printed
// its banner, and the kernel split the connections between the two.
TEST(IngestServer, a_port_another_listener_holds_is_refused_not_shared) {
  const int other = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(other, 0);
  int yes = 1;
  ASSERT_EQ(::setsockopt(other, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes), 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(other, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(other, 8), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(other, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const auto out = temp_file("ingest-shared-port.log");
  child c = spawn({SLUICE_INGEST_SERVER_PATH, "--port", std::to_string(ntohs(a.sin_port)), "--out", out.string()});
  EXPECT_EQ(c.wait_exit(30s), 2);
  EXPECT_EQ(c.read_line(1s), "") << "no banner: it did not listen";
  ::close(c.out);
  ::close(other);
  std::filesystem::remove(out);
}

TEST(IngestServer, bad_arguments_are_refused_with_status_2) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--capacity", "abc"}, {"--capacity", "0"}, {"--capacity", "-1"},
        {"--port", "99999"}, {"--port", "abc"}, {"--port"}, {"--bogus", "1"}, {"--write-us", "1e3"}}) {
    std::vector<std::string> argv{SLUICE_INGEST_SERVER_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--out", "/nonexistent-dir/never-made.log"});
    child c = spawn(argv);
    EXPECT_EQ(c.wait_exit(30s), 2) << args[0];
    EXPECT_EQ(c.read_line(1s), "") << args[0] << ": nothing on stdout (no banner)";
    ::close(c.out);
  }
}

}  // namespace

