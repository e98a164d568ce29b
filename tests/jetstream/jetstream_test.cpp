// sluice::jetstream against a real nats-server (one per test: 127.0.0.1, a free port, a
// temporary store). Every wait is bounded.
#include "sluice/jetstream.hpp"

#include <poll.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sluice/pipeline.hpp"
#include "nats_server.hpp"
#include "../support/no_new_descriptors.hpp"

#include <nats/nats.h>

namespace js = sluice::jetstream;
using namespace std::chrono_literals;

// A record whose codec refuses one value (its encode throws), and one that encodes to a
// message too large for a small edge.
struct picky {
  int v = 0;
};
template <>
struct sluice::jetstream::codec<picky> {
  static std::string encode(const picky& p) {
    if (p.v == 5) throw std::runtime_error("refuses 5");
    if (p.v == 7) return std::string(5000, 'x');
    return std::to_string(p.v);
  }
  static picky decode(std::string_view s) { return picky{std::stoi(std::string(s))}; }
};
using sluice_test::nats_server;

namespace {

#if defined(SLUICE_SANITIZER_BUILD)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// libnats' global state is freed at the end (ASan would report it otherwise).
class nats_environment : public ::testing::Environment {
 public:
  void TearDown() override { js::shutdown(); }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new nats_environment);

#define NEED_NATS_SERVER()                                                  \
  if (!nats_server::available()) GTEST_SKIP() << "nats-server not installed"

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds limit = 10s) {
  return sluice_test::poll_until(p, limit, 2ms);
}

// Runs a pipeline/graph to its end within `limit`, or cancels it and fails the test.
void wait_bounded(sluice::graph& g, std::chrono::seconds limit = 60s) {
  auto r = g.wait_for(limit);
  if (!r) {
    g.cancel();
    ADD_FAILURE() << "graph did not finish within " << limit.count() << " s";
    try {
      g.wait();
    } catch (...) {
    }
  }
}

void run_bounded(sluice::graph& g, std::chrono::seconds limit = 60s) {
  g.start();
  wait_bounded(g, limit);
}

// A dead letter's error as text ("" when it has none, or it is not a std::exception).
std::string error_text(const sluice::dead_letter& d) {
  if (!d.error()) return {};
  try {
    std::rethrow_exception(d.error());
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
  }
  return {};
}

double p99(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, (v.size() * 99) / 100)];
}

// ---- connect / ensure_edge ------------------------------------------------------

TEST(JetstreamConnect, UnreachableUrlIsAnErrorNamingIt) {
  const std::string url = "nats://127.0.0.1:" + std::to_string(sluice_test::free_port());  // nobody listens
  const auto t0 = clock_type::now();
  try {
    (void)js::connect(url, {.timeout = 500ms});
    FAIL() << "connect succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(url), std::string::npos) << e.what();
  }
  EXPECT_LT(ms_since(t0), 3000.0);
}

// This process out of descriptors: the error says so. It said "no NATS server answers
// there (nothing listens, ...)", blaming a server that was up (a probe under ulimit -n).
TEST(JetstreamConnect, OutOfDescriptorsIsSaidAsSuchNotBlamedOnTheServer) {
#ifdef SLUICE_SANITIZER_BUILD
  GTEST_SKIP() << "a sanitizer's runtime needs descriptors of its own (UBSan's checks failed with none)";
#endif
  const std::string url = "nats://127.0.0.1:" + std::to_string(sluice_test::free_port());
  std::string what = "(connected)";
  {
    sluice_test::no_new_descriptors full;
    ASSERT_TRUE(full.ok());
    try {
      (void)js::connect(url, {.timeout = 500ms});
    } catch (const std::exception& e) {
      what = e.what();
    }
  }
  EXPECT_NE(what.find(url), std::string::npos) << what;
  EXPECT_NE(what.find("this process cannot open a socket (Too many open files)"), std::string::npos) << what;
  EXPECT_EQ(what.find("no NATS server answers there"), std::string::npos) << what;
}

TEST(JetstreamConnect, SilentServerTimesOutNamingTheUrl) {
  // A socket that accepts connections (kernel backlog) but never speaks NATS.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string url = "nats://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const auto t0 = clock_type::now();
  try {
    (void)js::connect(url, {.timeout = 300ms});
    FAIL() << "connect succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(url), std::string::npos) << e.what();
  }
  EXPECT_LT(ms_since(t0), 300.0 + 2000.0);
  ::close(fd);
}

// A list of servers that accept connections but never speak NATS: connect() keeps its
// timeout as a whole (each server got the whole timeout: 3 servers took 3x as long, and
// the error said "within" one timeout), and the error names every server it tried.
// Aborts the test process (with a message) if still armed `limit` after it was made: a
// thread blocked inside libnats cannot be woken from outside, so a hang must end the
// process rather than wait for CTest's 300 s.
class abort_after {
 public:
  abort_after(std::chrono::seconds limit, std::string what)
      : t_([this, limit, what = std::move(what)] {
          std::unique_lock lk(m_);
          if (!cv_.wait_for(lk, limit, [&] { return over_; })) {
            std::fprintf(stderr, "%s: still blocked after %lld s; aborting\n", what.c_str(),
                         static_cast<long long>(limit.count()));
            std::abort();
          }
        }) {}
  ~abort_after() {
    {
      std::lock_guard lk(m_);
      over_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  abort_after(const abort_after&) = delete;
  abort_after& operator=(const abort_after&) = delete;

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool over_ = false;
  std::thread t_;
};

// A listener on 127.0.0.1 (`port`, or a free one) that greets every connection as a NATS
// server does (an INFO line), or with `greeting` when one is given, and then says nothing
// more, holding it open.
class greeting_listener {
 public:
  explicit greeting_listener(int port = 0, std::string greeting = {}) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    socklen_t len = sizeof(a);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "greeting_listener: cannot listen on port " << port << ": " << std::strerror(errno);
      return;
    }
    port_ = ntohs(a.sin_port);
    t_ = std::thread([this, greeting = std::move(greeting)] {
      while (!stop_.load()) {
        pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        const std::string info = !greeting.empty() ? greeting
                                 : "INFO {\"server_id\":\"greeter\",\"version\":\"2.9.10\",\"go\":\"go1.19\","
                                   "\"host\":\"127.0.0.1\",\"port\":" + std::to_string(port_) +
                                   ",\"max_payload\":1048576,\"proto\":1}\r\n";
        (void)!::write(c, info.data(), info.size());
        held_.push_back(c);  // and nothing more
      }
    });
  }
  ~greeting_listener() {
    stop_.store(true);
    if (t_.joinable()) t_.join();
    for (const int c : held_) ::close(c);
    if (fd_ >= 0) ::close(fd_);
  }
  greeting_listener(const greeting_listener&) = delete;
  greeting_listener& operator=(const greeting_listener&) = delete;
  [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> held_;  // the listener thread's own
  std::thread t_;
};

// What listens answers with something that is not a NATS greeting, or an INFO line that
// is not JSON: the error was libnats' bare "Protocol Error" or "Error". Now it says what
// came and that the peer did not greet as a NATS server does.
TEST(JetstreamConnect, APeerThatDoesNotGreetAsANatsServerIsSaidSoWithWhatItSent) {
  for (const auto& [greeting, sent] : {std::pair<std::string, std::string>{"HTTP/1.1 400 Bad Request\r\n\r\n", "got 'HTTP/1.1'"},
                                       {"INFO {not json\r\n", "not json"}}) {
    greeting_listener peer(0, greeting);
    const abort_after dog(60s, "a connect to a peer that greets with '" + greeting + "'");
    try {
      (void)js::connect(peer.url(), {.timeout = 2000ms});
      ADD_FAILURE() << "connected to a peer that greets with " << greeting;
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(peer.url()), std::string::npos) << what;
      EXPECT_NE(what.find(sent), std::string::npos) << what;
      EXPECT_NE(what.find("did not greet as a NATS server does"), std::string::npos) << what;
      EXPECT_EQ(what.find(".c:"), std::string::npos) << "libnats' source position is noise: " << what;
    }
  }
}

// What listens greets as a NATS server (INFO) and then never answers the client's PING:
// libnats 3.4.1's handshake read spun at 100% of a core for good, and connect() never
// returned, timeout or not (a probe waited 100 s). Now it fails within its timeout and a
// little, naming the URL and what happened.
TEST(JetstreamConnect, AServerThatGreetsAndThenFallsSilentTimesOutNamingTheUrl) {
  greeting_listener greeter;
  const abort_after dog(60s, "connect() to a server that greets and falls silent");
  const auto t0 = clock_type::now();
  try {
    (void)js::connect(greeter.url(), {.timeout = 500ms});
    FAIL() << "connect succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(greeter.url()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("did not answer"), std::string::npos) << e.what();
  }
  EXPECT_LT(ms_since(t0), 500.0 + 5000.0);
}

TEST(JetstreamConnect, AListOfSilentServersTimesOutWithinTheTimeoutNamingEachUrl) {
  std::vector<int> fds;
  std::vector<std::string> urls;
  std::string list;
  for (int i = 0; i < 3; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_EQ(::listen(fd, 16), 0);  // the kernel accepts; nobody ever answers
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    urls.push_back("nats://127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
    list += (i == 0 ? "" : ",") + urls.back();
  }
  const auto t0 = clock_type::now();
  try {
    (void)js::connect(list, {.timeout = 1000ms});
    ADD_FAILURE() << "connect succeeded";
  } catch (const std::runtime_error& e) {
    for (const auto& u : urls) EXPECT_NE(std::string(e.what()).find(u), std::string::npos) << e.what() << " / " << u;
    EXPECT_NE(std::string(e.what()).find("1000 ms"), std::string::npos) << e.what();
  }
  // A bound on a hang (3000 ms before), not a performance figure: the margin is wide.
  EXPECT_LT(ms_since(t0), 2000.0);
  for (const int fd : fds) ::close(fd);
}

// A comma-separated list is a pool: the first server that answers is used, whichever
// place it has (a list reached no server at all, even with every one up: libnats took a
// list only through natsOptions_SetServers).
TEST(JetstreamConnect, AListOfServersConnectsToOneThatAnswers) {
  NEED_NATS_SERVER();
  nats_server server;
  const std::string down = "nats://127.0.0.1:" + std::to_string(sluice_test::free_port());  // nobody listens
  for (const std::string& list : {down + "," + server.url(), server.url() + ", " + down,
                                  server.url() + "," + server.url()}) {
    js::connection c = js::connect(list, {.timeout = 2000ms});
    EXPECT_TRUE(c.connected()) << list;
    EXPECT_EQ(c.url(), js::shown_url(list));
  }
  try {
    (void)js::connect(down + "," + down, {.timeout = 500ms});
    FAIL() << "connect succeeded with no server up";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(down + "," + down), std::string::npos) << e.what();
  }
}

// A password or token in a URL never reaches a message, a log or a report.
TEST(JetstreamConnect, ShownUrlsHideTheirPasswordOrToken) {
  EXPECT_EQ(js::shown_url("nats://u:secret@127.0.0.1:4222"), "nats://u:***@127.0.0.1:4222");
  EXPECT_EQ(js::shown_url("nats://s3cr3t-token@h:4222"), "nats://***@h:4222");
  EXPECT_EQ(js::shown_url("tls://a:b@h1:1,nats://h2:2,nats://t@h3:3"), "tls://a:***@h1:1,nats://h2:2,nats://***@h3:3");
  EXPECT_EQ(js::shown_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
  const std::string url = "nats://user:hunter2@127.0.0.1:" + std::to_string(sluice_test::free_port());
  try {
    (void)js::connect(url, {.timeout = 500ms});
    FAIL() << "connect succeeded";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find("hunter2"), std::string::npos) << what;
    EXPECT_NE(what.find("user:***@127.0.0.1"), std::string::npos) << what;
  }
  // A comma inside a password is not a list separator: none of the password is shown
  // ("nats://user:pa,***@..." showed its first half), and connect says what is wrong
  // (it was libnats' bare "Invalid Argument").
  EXPECT_EQ(js::shown_url("nats://user:pa,ss@127.0.0.1:1"), "nats://user:***@127.0.0.1:1");
  EXPECT_EQ(js::shown_url("nats://a:x,y@h1:1,nats://b:z@h2:2"), "nats://a:***@h1:1,nats://b:***@h2:2");
  // A whole server before a later one with credentials and no scheme stays a server of its
  // own (it was read as one server whose port was a password).
  EXPECT_EQ(js::shown_url("nats://127.0.0.1:4222, u:p@127.0.0.1:4223"), "nats://127.0.0.1:4222,u:***@127.0.0.1:4223");
  EXPECT_EQ(js::shown_url("nats://u:p@h1:1,v:q@h2:2"), "nats://u:***@h1:1,v:***@h2:2");
  EXPECT_EQ(js::shown_url("nats://[::1],u:p@h2:2"), "nats://[::1],u:***@h2:2");
  EXPECT_EQ(js::shown_url("nats://h1,u:p@h2:2"), "nats://h1,u:***@h2:2");
  try {
    (void)js::connect("nats://user:pa,ss@127.0.0.1:1", {.timeout = 500ms});
    FAIL() << "connect succeeded";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find("pa,"), std::string::npos) << what;
    EXPECT_EQ(what.find(",ss"), std::string::npos) << what;
    EXPECT_NE(what.find("nats://user:***@127.0.0.1:1"), std::string::npos) << what;
    EXPECT_NE(what.find("holds a comma"), std::string::npos) << what;
  }
  // No server at all, and a trailing comma (which libnats refused with "Invalid Argument").
  for (const std::string none : {"", " ", ",", " , "}) {
    EXPECT_THROW((void)js::connect(none, {.timeout = 500ms}), std::invalid_argument) << "'" << none << "'";
  }
  // A server without a host, or with a port outside 1..65535, is refused before the client
  // tries it (it was a connection error after the timeout), naming it without its password;
  // check_url says the same without connecting, for a tool's argument check.
  for (const std::string bad : {"nats://", "nats://127.0.0.1:99999999", "nats://u:secret@:4222",
                                "nats://127.0.0.1:9,nats://h:0", "nats://h:42x", "nats://[::1]:70000"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(js::check_url(bad), std::invalid_argument);
    try {
      (void)js::connect(bad, {.timeout = 500ms});
      ADD_FAILURE() << "connect succeeded";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("is not a server"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
    }
  }
  for (const std::string fine : {"nats://127.0.0.1:4222", "nats://h", "nats://[::1]", "nats://[::1]:4222",
                                 "nats://u:p@h:1,nats://h2:65535", "127.0.0.1:4222"}) {
    EXPECT_NO_THROW(js::check_url(fine)) << fine;
  }
  // tls:// is refused, not taken as nats:// (libnats 3.4.1 sent the password in plain text
  // to a server that did not demand TLS; a probe).
  for (const std::string tls : {"tls://u:secret@127.0.0.1:4222", "nats://h:1,tls://u:secret@h2:2"}) {
    try {
      (void)js::connect(tls, {.timeout = 500ms});
      ADD_FAILURE() << "connect took " << tls;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("asks for TLS, which sluice::jetstream does not set up"), std::string::npos)
          << e.what();
      EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
    }
  }
  const std::string closed = "nats://127.0.0.1:" + std::to_string(sluice_test::free_port());
  try {
    (void)js::connect(closed + ",", {.timeout = 500ms});
    FAIL() << "connect succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no NATS server answers there"), std::string::npos) << e.what();
  }
}

// A NATS server without JetStream, and a stream name the server cannot parse, get errors
// that say so (they were "No responders available for request" and "Timeout").
TEST(JetstreamEdge, NoJetStreamOrAStreamNameWithASpaceIsNamedAsSuch) {
  NEED_NATS_SERVER();
  {
    nats_server plain(false);
    auto conn = js::connect(plain.url());
    js::edge_options e{.stream = "s", .max_msgs = 10};
    try {
      js::ensure_edge(conn, e);
      FAIL() << "ensure_edge succeeded on a server without JetStream";
    } catch (const std::runtime_error& ex) {
      EXPECT_NE(std::string(ex.what()).find("-js"), std::string::npos) << ex.what();
    }
  }
  nats_server server;
  auto conn = js::connect(server.url());
  for (const char* name : {"a b", "tab\there", "new\nline"}) {
    js::edge_options e{.stream = name, .max_msgs = 10};
    // The consumer's name too (a tab in it waited 5 s for a Timeout).
    js::edge_options d{.stream = "fine", .max_msgs = 10, .durable = name};
    for (const js::edge_options& bad : {e, d}) {
    const auto t0 = clock_type::now();
    try {
      js::ensure_edge(conn, bad);
      ADD_FAILURE() << "accepted the name '" << name << "'";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find("space or control"), std::string::npos) << ex.what();
      EXPECT_NE(std::string(ex.what()).find(bad.durable.empty() ? "stream name" : "durable name"), std::string::npos)
          << ex.what();
    }
    EXPECT_LT(ms_since(t0), 1000.0);  // at once, not after a request's timeout
    }
  }
  // A name past the server's 255 bytes is refused before any request: one of 5000
  // overran the server's control line, and it closed the shared connection for good.
  const std::string long_name(5000, 'n');
  for (const js::edge_options& bad : {js::edge_options{.stream = long_name, .max_msgs = 10},
                                      js::edge_options{.stream = "fine", .max_msgs = 10, .durable = long_name}}) {
    try {
      js::ensure_edge(conn, bad);
      ADD_FAILURE() << "accepted a name of 5000 bytes";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find("5000 bytes"), std::string::npos) << ex.what();
      EXPECT_NE(std::string(ex.what()).find("at most 255 bytes"), std::string::npos) << ex.what();
    }
  }
  // remove_edge and inspect_edge check the same names: "a b" waited 5 s for a Timeout
  // with a stale reason ("stream name is required"), and remove_edge of "*" or ">"
  // answered as if done.
  for (const char* name : {"a b", "*", ">", "x.y"}) {
    const js::edge_options e{.stream = name, .max_msgs = 10};
    try {
      js::remove_edge(conn, e);
      ADD_FAILURE() << "remove_edge accepted the name '" << name << "'";
    } catch (const std::invalid_argument& ex) {
      EXPECT_EQ(std::string(ex.what()).rfind("sluice::jetstream::remove_edge: stream name '", 0), 0U) << ex.what();
    }
    try {
      (void)js::inspect_edge(conn, e);
      ADD_FAILURE() << "inspect_edge accepted the name '" << name << "'";
    } catch (const std::invalid_argument& ex) {
      EXPECT_EQ(std::string(ex.what()).rfind("sluice::jetstream::inspect_edge: stream name '", 0), 0U) << ex.what();
    }
  }
  EXPECT_NO_THROW(js::ensure_edge(conn, {.stream = "still-connected", .max_msgs = 10}));
}

// Names and subjects go into the JSON of the server's requests, which libnats writes
// unescaped: a '"' or '\\' was answered "invalid JSON", and a subject that closed the JSON
// string made a stream with a subject other than the one asked for. Such names, and ones
// that are not UTF-8, are refused before any request; the length limit is in bytes.
TEST(JetstreamEdge, NamesAndSubjectsTheServersJsonCannotCarryAreRefusedUpFront) {
  const std::string injected = "x\"],\"max_age\":1,\"subjects\":[\"x";
  for (const std::string& bad : {std::string("q\"uote"), std::string("back\\slash"), injected}) {
    for (const js::edge_options& e : {js::edge_options{.stream = bad, .max_msgs = 10},
                                      js::edge_options{.stream = "fine", .max_msgs = 10, .durable = bad},
                                      js::edge_options{.stream = "fine", .subject = bad, .max_msgs = 10}}) {
      try {
        js::check_edge(e);
        ADD_FAILURE() << "accepted '" << bad << "'";
      } catch (const std::invalid_argument& ex) {
        EXPECT_NE(std::string(ex.what()).find("JSON strings"), std::string::npos) << ex.what();
      }
    }
  }
  for (const js::edge_options& e : {js::edge_options{.stream = "bad\xff", .max_msgs = 10},
                                    js::edge_options{.stream = "fine", .subject = "bad.\xc3", .max_msgs = 10}}) {
    try {
      js::check_edge(e);
      ADD_FAILURE() << "accepted a name that is not UTF-8";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find("not valid UTF-8"), std::string::npos) << ex.what();
    }
  }
  std::string accents;
  for (int i = 0; i < 200; ++i) accents += "\xc3\xa9";  // 200 x U+00E9: 400 bytes
  try {
    js::check_edge({.stream = accents, .max_msgs = 10});
    ADD_FAILURE() << "accepted a name of 400 bytes";
  } catch (const std::invalid_argument& ex) {
    EXPECT_NE(std::string(ex.what()).find("of 400 bytes"), std::string::npos) << ex.what();
  }
  EXPECT_NO_THROW(js::check_edge({.stream = "donn\xc3\xa9" "es", .subject = "donn\xc3\xa9" "es.\xc3\xa9" "t\xc3\xa9", .max_msgs = 10}));
}

// A subject whose message's control line passes the server's max_control_line (4096
// bytes) made the server close the shared connection for good, failing every edge on it
// with "the connection ... is closed" and never the cause. Subjects over 2048 bytes are
// refused up front, by ensure_edge and by the publish stage, naming the limit; the
// connection and its other edges go on.
TEST(JetstreamEdge, ASubjectTooLongForTheServersControlLineIsRefusedAndTheConnectionLives) {
  const std::string longest(2048, 's'), over(2049, 's'), huge(4100, 's');
  EXPECT_NO_THROW(js::check_edge({.stream = "fine", .subject = longest, .max_msgs = 10}));
  for (const std::string& sub : {over, huge}) {
    try {
      js::check_edge({.stream = "fine", .subject = sub, .max_msgs = 10});
      ADD_FAILURE() << "accepted a subject of " << sub.size() << " bytes";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find("subject of " + std::to_string(sub.size()) + " bytes"), std::string::npos)
          << ex.what();
      EXPECT_NE(std::string(ex.what()).find("at most 2048"), std::string::npos) << ex.what();
    }
  }
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const js::edge_options good{.stream = "good", .max_msgs = 100};
  js::ensure_edge(conn, good);
  // The publish stage refuses it too (a stream made elsewhere never passed ensure_edge).
  sluice::pipeline bad(sluice::from<int>([](sluice::sender<int>& out) { out.push(1); }),
                       js::publish<int>(conn, {.stream = "big", .subject = "big." + huge, .max_msgs = 100}));
  try {
    run_bounded(bad.get_graph());
    ADD_FAILURE() << "a publish to a subject of " << huge.size() + 4 << " bytes ran";
  } catch (const std::exception& ex) {
    EXPECT_NE(std::string(ex.what()).find("at most 2048"), std::string::npos) << ex.what();
  }
  EXPECT_TRUE(conn.connected());
  sluice::pipeline fine(sluice::from<int>([](sluice::sender<int>& out) { out.push(7); }),
                        js::publish<int>(conn, good));
  EXPECT_NO_THROW(run_bounded(fine.get_graph()));
  EXPECT_EQ(js::inspect_edge(conn, good).msgs, 1u);
}

TEST(JetstreamEdge, ExistingStreamOrConsumerWithOtherLimitsIsAnErrorNamingTheDifference) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "limits", .subject = "limits.in", .max_msgs = 100};
  js::ensure_edge(conn, e);
  EXPECT_NO_THROW(js::ensure_edge(conn, e));  // same limits: fine, nothing changes

  auto expect_error = [&](js::edge_options other, std::vector<std::string> words) {
    try {
      js::ensure_edge(conn, other);
      ADD_FAILURE() << "no error for " << words.front();
    } catch (const std::runtime_error& ex) {
      for (auto& w : words) EXPECT_NE(std::string(ex.what()).find(w), std::string::npos) << ex.what() << " / " << w;
    }
  };
  auto more = e;
  more.max_msgs = 200;
  expect_error(more, {"max_msgs", "100", "200", "limits"});
  auto bytes = e;
  bytes.max_bytes = 1 << 20;
  expect_error(bytes, {"max_bytes"});
  auto mem = e;
  mem.store = js::storage::memory;
  expect_error(mem, {"storage", "file", "memory"});
  auto wait = e;
  wait.ack_wait = 5s;
  expect_error(wait, {"ack_wait", "5000 ms"});
  // Nothing was changed by the refused calls.
  EXPECT_EQ(js::inspect_edge(conn, e).max_msgs, 100);
}

// Options no edge can have are refused before anything is made: a durable holding '.'
// was refused by the server only after the stream had been made, which was left behind;
// a max_ack_pending, ack_wait or max_bytes of 0 was taken by the server as "its default",
// and the stream and consumer just made were then called "existing" with other limits; a
// wildcard subject made a stream no item could be published to. A consumer the server
// refuses still takes the stream this call made with it.
TEST(JetstreamEdge, OptionsNoEdgeCanHaveAreRefusedAndLeaveNoStreamBehind) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  auto exists = [&](const js::edge_options& e) {
    try {
      (void)js::inspect_edge(conn, e);
      return true;
    } catch (const std::runtime_error&) {
      return false;
    }
  };
  const std::vector<std::pair<js::edge_options, std::string>> bad = {
      {{.stream = "d1", .durable = "a.b"}, "durable name 'a.b' holds '.'"},
      {{.stream = "d2", .durable = "a*"}, "holds '*'"},
      {{.stream = "d3", .durable = "a>"}, "holds '>'"},
      {{.stream = "d4", .max_bytes = 0}, "max_bytes must be positive, or -1"},
      {{.stream = "d5", .max_bytes = -7}, "(got -7)"},
      {{.stream = "d6", .ack_wait = 0ms}, "ack_wait must be positive"},
      // Its nanoseconds overflowed: the server took its default of 30 s, and the check of
      // the consumer just made called it an existing one with another ack_wait.
      {{.stream = "d6b", .ack_wait = std::chrono::milliseconds(INT64_MAX / 1000)}, "at most 100 years"},
      {{.stream = "d7", .max_ack_pending = 0}, "max_ack_pending must be positive"},
      {{.stream = "d7b", .max_ack_pending = -1}, "max_ack_pending must be positive"},
      {{.stream = "d8", .subject = "a.*"}, "subject 'a.*' is not one items can be published to"},
      {{.stream = "d9", .subject = "a..b"}, "subject 'a..b'"},
      {{.stream = "d10", .subject = "a>"}, "subject 'a>'"},
      {{.stream = "d11", .subject = "a\tb"}, "subject 'a\\x09b'"},
  };
  for (const auto& [e, says] : bad) {
    SCOPED_TRACE(says);
    try {
      js::ensure_edge(conn, e);
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find(says), std::string::npos) << ex.what();
    }
    EXPECT_FALSE(exists(e));
  }
  // The server refuses this durable ("path separators") after the stream was made.
  const js::edge_options refused{.stream = "made", .durable = "a/b"};
  EXPECT_THROW(js::ensure_edge(conn, refused), std::runtime_error);
  EXPECT_FALSE(exists(refused));
  // A stream that was there before stays when its consumer cannot be made.
  const js::edge_options before{.stream = "before", .max_msgs = 10};
  js::ensure_edge(conn, before);
  js::edge_options other = before;
  other.durable = "c/d";
  EXPECT_THROW(js::ensure_edge(conn, other), std::runtime_error);
  EXPECT_TRUE(exists(before));
  // -1 is "no byte limit".
  EXPECT_NO_THROW(js::ensure_edge(conn, {.stream = "open", .max_bytes = -1}));
}

// ---- publish / subscribe ---------------------------------------------------------

// Refused when the graph is built, before any request: no server is needed.
TEST(JetstreamEdge, OptionsNoConnectionOrFetchCanUseAreRefusedUpFront) {
  // A negative give_up failed the first publish at once ("no stream has taken its messages
  // for 0 ms"), with the stream there.
  for (const auto give_up : {-1ms, 0ms, std::chrono::milliseconds(std::chrono::hours(24 * 365 * 101))}) {
    SCOPED_TRACE(give_up.count());
    try {
      (void)js::connect("nats://127.0.0.1:1", {.give_up = give_up});
      ADD_FAILURE() << "accepted";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find("give_up must be positive and at most 100 years"), std::string::npos)
          << ex.what();
    }
  }
  // A fetch_wait of 0 made an idle edge spin a core; a negative one was taken too.
  const js::edge_options e{.stream = "never"};
  for (const auto wait : {0ms, -5ms}) {
    SCOPED_TRACE(wait.count());
    try {
      (void)js::subscribe<int>(js::connection{}, e, {.fetch_wait = wait});
      ADD_FAILURE() << "the descriptor accepted it";
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find("edge 'never': fetch_wait must be positive"), std::string::npos)
          << ex.what();
    }
    sluice::graph g;
    EXPECT_THROW((void)js::subscribe<int>(g, js::connection{}, e, {.fetch_wait = wait}), std::invalid_argument);
  }
  // Millisecond options past 100 years overflowed into immediate waits (a probe: retry =
  // milliseconds::max() asked a full stream again ~1,000 times a second; an ack never
  // waited for its confirmation); negative ones were taken, or were libnats' "Invalid
  // Argument" naming no field. Each is refused up front, naming the field.
  const auto huge = std::chrono::milliseconds::max();
  const auto expect_refused = [](const std::function<void()>& f, const std::string& says) {
    try {
      f();
      ADD_FAILURE() << "accepted: " << says;
    } catch (const std::invalid_argument& ex) {
      EXPECT_NE(std::string(ex.what()).find(says), std::string::npos) << ex.what();
    }
  };
  expect_refused([&] { (void)js::subscribe<int>(js::connection{}, e, {.ack_confirm_wait = huge}); },
                 "edge 'never': ack_confirm_wait must be positive and at most 100 years");
  expect_refused([&] { (void)js::subscribe<int>(js::connection{}, e, {.ack_confirm_wait = 0ms}); },
                 "ack_confirm_wait must be positive");
  expect_refused([&] { (void)js::publish<int>(js::connection{}, e, {.retry = huge}); },
                 "edge 'never': retry must be 0 or more and at most 100 years");
  expect_refused([&] { (void)js::publish<int>(js::connection{}, e, {.retry = -1ms}); }, "retry must be 0 or more");
  expect_refused([&] { (void)js::publish<int>(js::connection{}, e, {.ack_timeout = huge}); },
                 "ack_timeout must be 0 or more and at most 100 years");
  expect_refused([&] { (void)js::publish<int>(js::connection{}, e, {.window = SIZE_MAX}); },
                 "edge 'never': window must be at most 1048576");
  {
    sluice::graph g;
    auto src = g.source<int>("src", [](sluice::sender<int>&) {});
    expect_refused([&] { js::publish<int>(g, src, js::connection{}, e, {.window = std::size_t{1} << 62}); },
                   "window must be at most");
    g.sink("sink", src, [](int) {});
  }
  expect_refused([] { (void)js::connect("nats://127.0.0.1:1", {.timeout = -1ms}); },
                 "timeout must be positive and at most 100 years");
  expect_refused([] { (void)js::connect("nats://127.0.0.1:1", {.timeout = 0ms}); }, "timeout must be positive");
  expect_refused([] { (void)js::connect("nats://127.0.0.1:1", {.reconnect_wait = -1ms}); },
                 "reconnect_wait must be 0 or more and at most 100 years");
  expect_refused([] { (void)js::connect("nats://127.0.0.1:1", {.reconnect_wait = std::chrono::milliseconds::max()}); },
                 "reconnect_wait must be 0 or more");
}

// A fetch_wait of seconds is a common long poll. The stage looked at its stop token once
// per fetch_wait, so cancel() waited about that long (an hour: the teardown deadline
// named the stage, and the run never ended), and request_stop() too.
TEST(JetstreamTeardown, ALongFetchWaitDoesNotHoldUpCancelOrStop) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const js::edge_options e{.stream = "longpoll", .max_msgs = 8};
  js::ensure_edge(conn, e);
  for (const bool cancel : {true, false}) {
    SCOPED_TRACE(cancel ? "cancel" : "request_stop");
    auto sc = std::make_shared<js::subscribe_counters>();
    sluice::pipeline s(js::subscribe<int>(conn, e, {.fetch_wait = 60s, .counters = sc}),
                       sluice::into([](js::delivery<int> d) { d.ack(); }));
    s.start();
    ASSERT_TRUE(eventually([&] { return sc->polls.load() > 0; }));
    if (cancel) {
      s.cancel();
    } else {
      s.request_stop();
    }
    // Well under the 60 s fetch, and under the 5 s teardown deadline.
    std::optional<sluice::report> r;
    try {
      r = s.get_graph().wait_for(4s);
      if (!r) ADD_FAILURE() << "still running 4 s after the call";
      EXPECT_FALSE(cancel) << "a cancelled run ended without sluice::cancelled";
    } catch (const sluice::cancelled&) {
      EXPECT_TRUE(cancel);
    }
    if (r) {
      EXPECT_TRUE(r->balanced());
    }
  }
}

// Under skip, an item over the server's max_payload is a dead letter like one over the
// edge's max_bytes: it alone can never be sent. It failed the whole stage.
TEST(JetstreamEdge, AnItemOverTheServersMaxPayloadIsUnderSkipADeadLetter) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const js::edge_options e{.stream = "bigskip", .max_msgs = 100};
  js::ensure_edge(conn, e);
  std::mutex mu;
  std::vector<std::pair<std::size_t, std::string>> letters;
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    const std::string why = error_text(d);
    std::lock_guard lk(mu);
    letters.emplace_back(d.get<std::string>() != nullptr ? d.get<std::string>()->size() : 0, why);
  }});
  auto src = g.source<std::string>("strings", [](sluice::sender<std::string>& out) {
    for (std::size_t n : {std::size_t{1000}, std::size_t{1} << 20, std::size_t{2000}}) {
      if (!out.push(std::string(n, 'x'))) return;
    }
  });
  js::publish<std::string>(g, src, conn, e, {}, {.on_error = sluice::error_policy::skip});
  run_bounded(g);
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(letters.size(), 1u);
    EXPECT_EQ(letters[0].first, std::size_t{1} << 20);
    EXPECT_NE(letters[0].second.find("the item at position 1 of this stage's input is a message of 1048576 bytes, "
                                     "over the max_payload of 1048576 bytes"),
              std::string::npos)
        << letters[0].second;
  }
  EXPECT_EQ(js::inspect_edge(conn, e).msgs, 2u);  // the two small ones
}

TEST(JetstreamEdge, RoundTripDeliversEveryItemExactlyOnce) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "round", .subject = "round", .max_msgs = 1000};
  js::ensure_edge(conn, e);
  const std::uint64_t n = kSanitized ? 1000 : 5000;

  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline producer(
      sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out) {
        for (std::uint64_t i = 0; i < n; ++i) out.push(i);
      }),
      js::publish<std::uint64_t>(conn, e, {.producer_id = "p1", .counters = pc}));
  std::map<std::uint64_t, int> seen;
  std::set<std::string> ids;
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e),
                            sluice::into([&](js::delivery<std::uint64_t> d) -> bool {
                              ++seen[d.value()];
                              ids.insert(d.id());
                              d.ack();
                              return seen.size() < n;
                            }));
  std::thread t([&] { run_bounded(producer.get_graph()); });
  run_bounded(consumer.get_graph());
  t.join();
  EXPECT_EQ(pc->acked.load(), n);
  EXPECT_EQ(pc->sent.load(), n);
  ASSERT_EQ(seen.size(), n);
  for (auto& [v, c] : seen) EXPECT_EQ(c, 1) << "item " << v;
  EXPECT_EQ(ids.size(), n);
  EXPECT_EQ(ids.count("p1-0"), 1u);
  EXPECT_TRUE(eventually([&] { return js::inspect_edge(conn, e).msgs == 0; }));  // every ack arrived
}

// confirm_acks = false: plain acks, as libnats' natsMsg_Ack. Every item still arrives
// once and the server applies every ack (the stream empties); nothing is confirmed, and
// asking for confirmations of plain acks is an error naming the edge.
TEST(JetstreamEdge, PlainAcksDeliverEveryItemOnceAndAreNeverConfirmed) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "plain", .max_msgs = 1000};
  js::ensure_edge(conn, e);
  const std::uint64_t n = kSanitized ? 1000 : 5000;
  sluice::pipeline producer(sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out) {
                              for (std::uint64_t i = 0; i < n; ++i) out.push(i);
                            }),
                            js::publish<std::uint64_t>(conn, e));
  auto sc = std::make_shared<js::subscribe_counters>();
  std::map<std::uint64_t, int> seen;
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e, {.counters = sc, .confirm_acks = false}),
                            sluice::into([&](js::delivery<std::uint64_t> d) -> bool {
                              ++seen[d.value()];
                              d.ack();
                              return seen.size() < n;
                            }));
  std::thread t([&] { run_bounded(producer.get_graph()); });
  run_bounded(consumer.get_graph());
  t.join();
  ASSERT_EQ(seen.size(), n);
  for (auto& [v, c] : seen) EXPECT_EQ(c, 1) << "item " << v;
  EXPECT_EQ(sc->acks_sent.load(), n);
  EXPECT_EQ(sc->acks_confirmed.load(), 0u);
  EXPECT_EQ(sc->acks_unconfirmed.load(), 0u);
  EXPECT_TRUE(eventually([&] { return js::inspect_edge(conn, e).msgs == 0; }));  // every plain ack applied

  sluice::pipeline wrong(js::subscribe<std::uint64_t>(conn, e, {.confirm_acks = false,
                                                               .on_confirmed = [](const std::string&, unsigned) {}}),
                         sluice::into([](js::delivery<std::uint64_t> d) { d.ack(); }));
  auto& g = wrong.get_graph();
  g.start();
  try {
    const bool ended = g.wait_for(10s).has_value();
    ADD_FAILURE() << (ended ? "on_confirmed with confirm_acks = false was accepted" : "the graph hung");
    if (!ended) wait_bounded(g);
  } catch (const sluice::stage_error& ex) {
    EXPECT_NE(std::string(ex.what()).find("'plain'"), std::string::npos) << ex.what();
    EXPECT_NE(std::string(ex.what()).find("on_confirmed needs confirm_acks"), std::string::npos) << ex.what();
  }
}

// The stage error that ends g, already started, within `limit` (a test failure if it
// ends without one, or hangs).
std::string stage_error_of_started(sluice::graph& g, std::chrono::seconds limit = 30s) {
  try {
    const bool ended = g.wait_for(limit).has_value();
    ADD_FAILURE() << (ended ? "the graph ended without an error" : "the graph hung");
    if (!ended) wait_bounded(g);
  } catch (const sluice::stage_error& ex) {
    return ex.what();
  }
  return {};
}
std::string stage_error_of(sluice::graph& g, std::chrono::seconds limit = 30s) {
  g.start();
  return stage_error_of_started(g, limit);
}

// Refusals that no wait can mend end the publish stage with an error naming the edge. They
// were re-sent every 2 ms for ever, exactly as a full stream's are (16-20 k refusals a
// second once the stream was gone).
// Removes the edge's stream under the running graph g, then waits (30 s at most) for g
// to fail: the stage_error's text ("" and a test failure if it ended well or hung), and
// how long that took in ms.
std::pair<std::string, double> failure_after_removing(sluice::graph& g, const std::string& url,
                                                      const js::edge_options& e) {
  auto admin = js::connect(url);
  js::remove_edge(admin, e);
  const auto t0 = clock_type::now();
  std::string what = stage_error_of_started(g);
  return {what, ms_since(t0)};
}

TEST(JetstreamEdge, AMessageThatCanNeverBeStoredOrAStreamThatIsGoneIsAnError) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.give_up = 1000ms});
  // An item over the edge's own max_bytes.
  js::edge_options small{.stream = "small", .max_msgs = 100, .max_bytes = 1000};
  js::ensure_edge(conn, small);
  sluice::pipeline big(sluice::from<std::string>([](sluice::sender<std::string>& out) { out.push(std::string(3000, 'x')); }),
                       js::publish<std::string>(conn, small));
  std::string what = stage_error_of(big.get_graph());
  EXPECT_NE(what.find("'small'"), std::string::npos) << what;
  EXPECT_NE(what.find("over the edge's max_bytes of 1000"), std::string::npos) << what;
  // One under max_bytes by its payload, over it as the server stores it (subject, id,
  // the store's own bytes): it was published again for ever, or at 920-950 bytes acked
  // by nats-server 2.9 and then never delivered.
  for (const std::size_t size : {std::size_t{940}, std::size_t{960}, std::size_t{1000}}) {
    sluice::pipeline near(
        sluice::from<std::string>([size](sluice::sender<std::string>& out) { out.push(std::string(size, 'x')); }),
        js::publish<std::string>(conn, small));
    what = stage_error_of(near.get_graph());
    EXPECT_NE(what.find("over the edge's max_bytes of 1000 once stored"), std::string::npos) << size << ": " << what;
  }
  EXPECT_EQ(js::inspect_edge(conn, small).msgs, 0u);

  // The stream removed under a running producer (its consumer ends first, so the producer
  // waits on a window of refused messages).
  js::edge_options e{.stream = "gone", .max_msgs = 10};
  js::ensure_edge(conn, e);
  std::atomic<std::uint64_t> sent{0};
  sluice::pipeline producer(sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out, std::stop_token stop) {
                              for (std::uint64_t i = 0; !stop.stop_requested(); ++i) {
                                if (!out.push(i)) return;
                                sent.fetch_add(1);
                              }
                            }),
                            js::publish<std::uint64_t>(conn, e, {.window = 4}));
  auto& g = producer.get_graph();
  g.start();
  ASSERT_TRUE(eventually([&] { return sent.load() >= 20; })) << sent.load();
  const auto [gone, took_ms] = failure_after_removing(g, server.url(), e);
  EXPECT_NE(gone.find("'gone'"), std::string::npos) << gone;
  EXPECT_NE(gone.find("no responders"), std::string::npos) << gone;
  EXPECT_LT(took_ms, 15000.0);  // give_up (1 s) and a little, not never
}

// An item that cannot become a message (its encode throws; it is over the edge's
// max_bytes) is a dead letter with its error, never lost without a word: it was neither
// published nor a dead letter, and skip did not apply.
TEST(JetstreamEdge, AnItemThatCannotBeAMessageIsADeadLetterOrUnderSkipSkipped) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.give_up = 2000ms});
  struct dead {
    int v;
    std::string stage, error;
  };
  // stop: the stage fails on the first. skip: both dropped, the rest published. restart
  // (a fresh call of the stage for each): the rest published too, each with the id of its
  // position; a restart began again at first_sequence, and with a fixed producer_id the
  // server dropped every later item as a duplicate.
  for (const std::string policy : {"stop", "skip", "restart"}) {
    SCOPED_TRACE(policy);
    const std::string name = "picky-" + policy;
    js::edge_options e{.stream = name, .max_msgs = 100, .max_bytes = 4096};
    js::ensure_edge(conn, e);
    std::mutex mu;
    std::vector<dead> letters;
    sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
      const std::string why = error_text(d);
      std::lock_guard lk(mu);
      letters.push_back({d.get<picky>() != nullptr ? d.get<picky>()->v : -1, std::string(d.stage()), why});
    }});
    auto src = g.source<picky>("numbers", [](sluice::sender<picky>& out) {
      for (int i = 0; i < 10; ++i) out.push(picky{i});
    });
    sluice::error_policy on_error = sluice::error_policy::stop;
    if (policy == "skip") on_error = sluice::error_policy::skip;
    if (policy == "restart") on_error = sluice::restart{.max = 10, .within = std::chrono::seconds(60), .backoff = {}};
    js::publish<picky>(g, src, conn, e, {.producer_id = "p"}, {.on_error = on_error});
    const std::string stage = "publish:" + name;
    const std::string first = "the item at position 5 of this stage's input does not encode: refuses 5";
    if (policy == "stop") {
      const std::string what = stage_error_of(g);
      EXPECT_NE(what.find("edge '" + name + "': " + first), std::string::npos) << what;
      std::lock_guard lk(mu);
      const auto it = std::find_if(letters.begin(), letters.end(), [](const dead& d) { return d.v == 5; });
      ASSERT_NE(it, letters.end()) << "item 5 is not a dead letter";
      EXPECT_EQ(it->stage, stage);
      EXPECT_NE(it->error.find(first), std::string::npos) << it->error;
      continue;
    }
    g.start();
    ASSERT_TRUE(g.wait_for(30s).has_value());
    const sluice::report r = g.last_report();
    {
      std::lock_guard lk(mu);
      ASSERT_EQ(letters.size(), 2u);
      EXPECT_EQ(letters[0].v, 5);
      EXPECT_NE(letters[0].error.find(first), std::string::npos) << letters[0].error;
      EXPECT_EQ(letters[1].v, 7);
      EXPECT_NE(letters[1].error.find("the item at position 7 of this stage's input is a message of 5000 bytes, over "
                                      "the edge's max_bytes of 4096"),
                std::string::npos)
          << letters[1].error;
    }
    for (const auto& st : r.metrics.stages) {
      if (st.name == stage) {
        EXPECT_EQ(st.errors, 2u);
        EXPECT_EQ(st.restarts, policy == "restart" ? 2u : 0u);
      }
    }
    // The other eight are in the stream, each with the id of its position (the refused
    // ones used theirs up).
    std::map<int, std::string> got;
    sluice::pipeline consumer(js::subscribe<picky>(conn, e), sluice::into([&](js::delivery<picky> d) -> bool {
                                got[d.value().v] = d.id();
                                d.ack();
                                return got.size() < 8;
                              }));
    run_bounded(consumer.get_graph());
    ASSERT_EQ(got.size(), 8u);
    for (int v : {0, 1, 2, 3, 4, 6, 8, 9}) EXPECT_EQ(got[v], "p-" + std::to_string(v)) << v;
  }
}

// A consumer that ends with messages still in the stream lost nothing: they wait there.
// Its report is balanced (the edge's gauge, the stream's count, made it false).
TEST(JetstreamEdge, AReportIsBalancedWithMessagesLeftInTheStream) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "left", .max_msgs = 100};
  js::ensure_edge(conn, e);
  sluice::pipeline producer(sluice::from<std::uint64_t>([](sluice::sender<std::uint64_t>& out) {
                              for (std::uint64_t i = 0; i < 50; ++i) out.push(i);
                            }),
                            js::publish<std::uint64_t>(conn, e));
  run_bounded(producer.get_graph());
  int taken = 0;
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e, {.batch = 4}),
                            sluice::into([&](js::delivery<std::uint64_t> d) -> bool {
                              d.ack();
                              return ++taken < 10;
                            }));
  run_bounded(consumer.get_graph());
  const sluice::report r = consumer.get_graph().last_report();
  bool edge_seen = false;
  for (const auto& c : r.metrics.channels) {
    if (c.external) {
      edge_seen = true;
      EXPECT_GT(c.stats.size, 0u) << c.name;
    }
  }
  EXPECT_TRUE(edge_seen);
  EXPECT_TRUE(r.balanced());
}

// One request to the JetStream API over a connection of its own: the answer's JSON. For
// streams and consumers that ensure_edge itself would never make.
std::string js_api(const std::string& url, const std::string& subject, const std::string& body) {
  natsConnection* nc = nullptr;
  if (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) return "no connection";
  natsMsg* reply = nullptr;
  std::string out = "no answer";
  if (natsConnection_RequestString(&reply, nc, subject.c_str(), body.c_str(), 5000) == NATS_OK) {
    out.assign(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
    natsMsg_Destroy(reply);
  }
  natsConnection_Destroy(nc);
  return out;
}

// A file stream made over the API as ensure_edge would never make it (`subjects`: one or
// more, comma-separated; `extra` adds fields to its config: R"(,"max_age":60000000000)");
// a failure fails the test.
void make_raw_stream(const std::string& url, const std::string& name, const std::string& subjects,
                     const std::string& retention, const std::string& discard, int max_msgs,
                     const std::string& extra = "") {
  std::string listed;
  for (const char ch : subjects) listed += ch == ',' ? std::string(R"(",")") : std::string(1, ch);
  const std::string made = js_api(url, "$JS.API.STREAM.CREATE." + name,
                                  R"({"name":")" + name + R"(","subjects":[")" + listed + R"("],"retention":")" +
                                      retention + R"(","discard":")" + discard + R"(","max_msgs":)" +
                                      std::to_string(max_msgs) + R"(,"storage":"file")" + extra + "}");
  ASSERT_EQ(made.find("\"error\""), std::string::npos) << made;
}

// A durable pull consumer `name` on stream `name` made over the API, filtered on the
// stream's subject `name`, with `extra` fields in its config (R"(,"max_deliver":3)").
void make_raw_consumer(const std::string& url, const std::string& name, const std::string& extra = "") {
  const std::string made = js_api(url, "$JS.API.CONSUMER.DURABLE.CREATE." + name + "." + name,
                                  R"({"stream_name":")" + name + R"(","config":{"durable_name":")" + name +
                                      R"(","ack_policy":"explicit","ack_wait":30000000000,"max_ack_pending":4096,)"
                                      R"("filter_subject":")" + name + R"(","deliver_policy":"all")" + extra + "}}");
  ASSERT_EQ(made.find("\"error\""), std::string::npos) << made;
}

// A stream or consumer made elsewhere with a limit that drops messages silently (an age
// limit, a per-subject limit, a delivery limit) is refused, as other differences are:
// an edge promises that every item arrives.
TEST(JetstreamEdge, ExistingStreamOrConsumerThatWouldDropMessagesIsRefused) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  auto expect_error = [&](const js::edge_options& e, std::vector<std::string> words) {
    try {
      js::ensure_edge(conn, e);
      ADD_FAILURE() << "no error for " << words.front();
    } catch (const std::runtime_error& ex) {
      for (auto& w : words) EXPECT_NE(std::string(ex.what()).find(w), std::string::npos) << ex.what() << " / " << w;
    }
  };
  auto stream = [&](const std::string& name, const std::string& extra) {
    make_raw_stream(server.url(), name, name, "workqueue", "new", 100, extra);
  };
  stream("aged", R"(,"max_age":60000000000)");
  expect_error({.stream = "aged", .max_msgs = 100}, {"max_age", "60000 ms", "'aged'"});
  stream("persubject", R"(,"max_msgs_per_subject":5)");
  expect_error({.stream = "persubject", .max_msgs = 100}, {"max_msgs_per_subject", "5"});

  stream("limited", "");
  make_raw_consumer(server.url(), "limited", R"(,"max_deliver":3)");
  expect_error({.stream = "limited", .max_msgs = 100}, {"max_deliver", "3", "consumer 'limited'"});
  // A stream that acknowledges no publish (the publisher sent each again for ever), a
  // consumer that delivers headers only (every item arrived empty), one that refuses pull
  // requests past a batch or a wait (the subscriber asked again for ever).
  stream("silent", R"(,"no_ack":true)");
  expect_error({.stream = "silent", .max_msgs = 100}, {"no_ack", "'silent'"});
  auto consumer = [&](const std::string& name, const std::string& extra) {
    stream(name, "");
    make_raw_consumer(server.url(), name, extra);
  };
  consumer("headers", R"(,"headers_only":true)");
  expect_error({.stream = "headers", .max_msgs = 100}, {"headers_only", "consumer 'headers'"});
  consumer("batched", R"(,"max_batch":2)");
  expect_error({.stream = "batched", .max_msgs = 100}, {"max_request_batch", "2"});
  consumer("hurried", R"(,"max_expires":1000000)");
  expect_error({.stream = "hurried", .max_msgs = 100}, {"max_request_expires", "1 ms"});
  // One the server deletes after a pause of its subscriber (an hour here): the edge, and
  // the place of its messages, were lost to a consumer process that paused that long.
  consumer("idle", R"(,"inactive_threshold":3600000000000)");
  expect_error({.stream = "idle", .max_msgs = 100}, {"inactive_threshold", "3600000 ms", "consumer 'idle'"});
  // A duplicate window shorter than the 2 minutes the header promises (a restarted
  // producer's resends were stored twice), and an unfiltered consumer on a stream with
  // other subjects too (their messages were delivered as items): both were taken.
  stream("forgetful", R"(,"duplicate_window":1000000000)");
  expect_error({.stream = "forgetful", .max_msgs = 100}, {"duplicate window", "1000 ms", "'forgetful'"});
  const std::string shared = js_api(server.url(), "$JS.API.STREAM.CREATE.shared",
                                    R"({"name":"shared","subjects":["shared","other"],"retention":"workqueue",)"
                                    R"("discard":"new","max_msgs":100,"storage":"file"})");
  ASSERT_EQ(shared.find("\"error\""), std::string::npos) << shared;
  const std::string open = js_api(server.url(), "$JS.API.CONSUMER.DURABLE.CREATE.shared.shared",
                                  R"({"stream_name":"shared","config":{"durable_name":"shared",)"
                                  R"("ack_policy":"explicit","ack_wait":30000000000,"max_ack_pending":4096,)"
                                  R"("deliver_policy":"all"}})");
  ASSERT_EQ(open.find("\"error\""), std::string::npos) << open;
  expect_error({.stream = "shared", .max_msgs = 100}, {"filter subject", "holds 2 subjects", "'shared'"});
  // A stream made elsewhere without such limits is taken (ensure_edge adds the consumer).
  stream("plain", "");
  EXPECT_NO_THROW(js::ensure_edge(conn, {.stream = "plain", .max_msgs = 100}));
}

// A consumer made elsewhere that the subscribe stage cannot use (ensure_edge refuses it,
// but subscribe only looked whether it pulls): past a request batch or wait of its own
// every pull request was refused (409) and asked again for ever; with max_deliver 1 a
// nak'ed message never came back, and the graph idled for ever. The stage checks the
// consumer as ensure_edge does, and fails at once naming the edge, the consumer and the limit.
TEST(JetstreamEdge, SubscribeToAConsumerItCannotUseFailsNamingTheLimit) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const struct {
    std::string name, config, limit;
  } cases[] = {{"onebyone", R"(,"max_batch":1)", "max_request_batch"},
               {"brief", R"(,"max_expires":100000000)", "max_request_expires"},
               {"once", R"(,"max_deliver":1)", "max_deliver"},
               {"idler", R"(,"inactive_threshold":3600000000000)", "inactive_threshold"}};
  for (const auto& c : cases) {
    ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), c.name, c.name, "workqueue", "new", 100));
    ASSERT_NO_FATAL_FAILURE(make_raw_consumer(server.url(), c.name, c.config));
    const js::edge_options e{.stream = c.name, .max_msgs = 100};
    sluice::pipeline consumer(js::subscribe<int>(conn, e, {.fetch_wait = 50ms}),
                              sluice::into([](js::delivery<int> d) { d.nak(); }));
    const auto t0 = clock_type::now();
    const std::string what = stage_error_of(consumer.get_graph(), 10s);
    for (const std::string& w : {c.limit, "consumer '" + c.name + "'", "edge '" + c.name + "'"}) {
      EXPECT_NE(what.find(w), std::string::npos) << what << " / " << w;
    }
    EXPECT_LT(ms_since(t0), 5000.0) << c.name;  // at once: one look-up, not give_up or never
  }
}

// The acks of the last messages before an idle spell are confirmed while the edge idles.
// Confirmations were read only before a message was handed on and inside ack(): on an idle
// edge they sat unread, each ack was re-sent every ack_confirm_wait and given up after
// give_up (a probe: 20 acks, 10 confirmed, 90 re-sends, 10 "unconfirmed" acks that the
// server had applied), and on_confirmed never ran for them.
TEST(JetstreamEdge, AcksBeforeAnIdleSpellAreConfirmedWhileTheEdgeIdles) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.give_up = 5000ms});
  const js::edge_options e{.stream = "idleack", .max_msgs = 100};
  js::ensure_edge(conn, e);
  constexpr int kItems = 10;
  sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) {
                     for (int i = 0; i < kItems; ++i) out.push(i);
                   }),
                   js::publish<int>(conn, e))
      .run();
  auto sc = std::make_shared<js::subscribe_counters>();
  std::atomic<int> on_confirmed{0};
  std::atomic<int> got{0};
  sluice::pipeline consumer(js::subscribe<int>(conn, e,
                                               {.fetch_wait = 50ms, .counters = sc,
                                                .on_confirmed = [&](const std::string&, unsigned) { ++on_confirmed; }}),
                            sluice::into([&](js::delivery<int> d) {
                              d.ack();
                              ++got;
                            }));
  auto& g = consumer.get_graph();
  g.start();
  ASSERT_TRUE(eventually([&] { return got.load() == kItems; }, 20s));
  // The stage idles from here: nothing more is published.
  EXPECT_TRUE(eventually([&] { return sc->acks_confirmed.load() == kItems; }, 20s))
      << sc->acks_confirmed.load() << " of " << kItems << " confirmed, " << sc->acks_resent.load() << " re-sent, "
      << sc->acks_unconfirmed.load() << " given up";
  EXPECT_EQ(on_confirmed.load(), kItems);
  EXPECT_EQ(sc->acks_unconfirmed.load(), 0u);
  g.request_stop();
  wait_bounded(g);
}

// A stream that is not the edge's kind loses messages or holds acked ones, and the
// subscribe stage refuses it (ensure_edge always did): under limits retention acked
// messages stay, so with discard old a full stream dropped messages nobody had seen (a
// probe: 1000 published and acknowledged, 100 delivered, no error anywhere), and with
// discard new it filled up and the publisher waited for ever; a work queue with discard
// old drops unseen messages when full.
TEST(JetstreamEdge, SubscribeToAStreamThatLosesOrKeepsAckedMessagesFailsNamingIt) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const struct {
    std::string name, retention, discard, what;
  } cases[] = {{"limitsold", "limits", "old", "retention of edge 'limitsold' is limits"},
               {"limitsnew", "limits", "new", "retention of edge 'limitsnew' is limits"},
               {"queueold", "workqueue", "old", "discard policy of edge 'queueold' is old"}};
  for (const auto& c : cases) {
    ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), c.name, c.name, c.retention, c.discard, 100));
    ASSERT_NO_FATAL_FAILURE(make_raw_consumer(server.url(), c.name));
    sluice::pipeline consumer(js::subscribe<int>(conn, {.stream = c.name, .max_msgs = 100}, {.fetch_wait = 50ms}),
                              sluice::into([](js::delivery<int> d) { d.ack(); }));
    const std::string what = stage_error_of(consumer.get_graph(), 10s);
    EXPECT_NE(what.find(c.what), std::string::npos) << what;
    EXPECT_NE(what.find("the subscribe stage cannot use it"), std::string::npos) << what;
  }
}

// The same streams for a publish stage in a process that publishes alone (it never calls
// ensure_edge): refused at its start, naming what loses messages. Before, with discard
// old, every publish was acknowledged and the stream dropped what nobody had read (no
// backpressure); on a limits stream with discard new the stage waited for ever once full.
TEST(JetstreamEdge, PublishToAStreamThatLosesOrKeepsAckedMessagesFailsNamingIt) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const struct {
    std::string name, retention, discard, what;
  } cases[] = {{"plimitsold", "limits", "old", "retention of edge 'plimitsold' is limits"},
               {"plimitsnew", "limits", "new", "retention of edge 'plimitsnew' is limits"},
               {"pqueueold", "workqueue", "old", "discard policy of edge 'pqueueold' is old"}};
  for (const auto& c : cases) {
    ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), c.name, c.name, c.retention, c.discard, 4));
    sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out, std::stop_token st) {
                                for (int v = 0; v < 100 && !st.stop_requested(); ++v) {
                                  if (!out.push(v)) return;
                                }
                              }),
                              js::publish<int>(conn, {.stream = c.name, .max_msgs = 4}));
    const std::string what = stage_error_of(producer.get_graph(), 10s);
    EXPECT_NE(what.find(c.what), std::string::npos) << what;
    EXPECT_NE(what.find("the publish stage cannot use it"), std::string::npos) << what;
    EXPECT_EQ(js::inspect_edge(conn, {.stream = c.name, .max_msgs = 4}).msgs, 0u) << "published before the check";
  }
  // An edge as ensure_edge makes it is taken, and a stream not there yet is waited for,
  // as before (here: made while the stage waits).
  const js::edge_options later{.stream = "plater", .max_msgs = 100};
  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out) {
                              for (int v = 0; v < 10; ++v) (void)out.push(v);
                            }),
                            js::publish<int>(conn, later, {.counters = pc}));
  producer.start();
  ASSERT_TRUE(eventually([&] { return pc->sent.load() > 0; }));  // past its start, no stream there
  js::ensure_edge(conn, later);
  producer.wait();
  EXPECT_EQ(js::inspect_edge(conn, later).msgs, 10u);
}

// Another stream that takes the edge's subject: the publish stage's messages must not be
// stored there. A probe's edge stream (work queue, subjects "elsewhere") passed the start
// check while a limits stream with discard old took "edge.subj": 100 items acked, 10
// stored, 90 gone without a word. Now every publish expects the edge's stream, and the
// stage fails naming the subject; the same when the edge's stream does not exist at all.
TEST(JetstreamEdge, PublishToASubjectAnotherStreamTakesFailsNamingIt) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), "thief", "edge.subj", "limits", "old", 10));
  ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), "edgeA", "elsewhere", "workqueue", "new", 100));
  for (const std::string stream : {"edgeA", "nosuchstream"}) {
    sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out, std::stop_token st) {
                                for (int v = 0; v < 100 && !st.stop_requested(); ++v) {
                                  if (!out.push(v)) return;
                                }
                              }),
                              js::publish<int>(conn, {.stream = stream, .subject = "edge.subj", .max_msgs = 100}));
    const std::string what = stage_error_of(producer.get_graph(), 20s);
    EXPECT_NE(what.find("subject 'edge.subj' is taken by another stream, not '" + stream + "'"), std::string::npos)
        << what;
  }
  const std::string info = js_api(server.url(), "$JS.API.STREAM.INFO.thief", "");
  EXPECT_NE(info.find("\"messages\":0,"), std::string::npos) << "the other stream stored some: " << info;
}

// The edge's stream deleted while a publish-only process runs, and made again as a limits
// stream that discards old messages: the stage checked its stream only at its start, and
// a probe's run ended "ok" with 3000 items acked and 10 stored. Now the gauge thread's look
// at the stream (every 100 ms) fails the stage naming what the stream became.
TEST(JetstreamEdge, AStreamMadeAgainMidRunThatLosesMessagesFailsThePublishStage) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const js::edge_options e{.stream = "premade", .max_msgs = 1000000};
  js::ensure_edge(conn, e);
  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out, std::stop_token st) {
                              for (int v = 0; !st.stop_requested(); ++v) {
                                if (!out.push(v)) return;
                              }
                            }),
                            js::publish<int>(conn, e, {.counters = pc}));
  auto& g = producer.get_graph();
  g.start();
  ASSERT_TRUE(eventually([&] { return pc->acked.load() > 10; }, 20s));
  const std::string gone = js_api(server.url(), "$JS.API.STREAM.DELETE.premade", "");
  ASSERT_EQ(gone.find("\"error\""), std::string::npos) << gone;
  ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), "premade", "premade", "limits", "old", 10));
  const std::string what = stage_error_of_started(g);
  EXPECT_NE(what.find("retention of edge 'premade' is now limits (made again while the stage ran?)"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("the publish stage cannot use it"), std::string::npos) << what;
}

// A started subscribe stage on e that acks and counts into `got`, returned once the one
// item it publishes on e has come through (the start of the tests that then break the
// server under it; a test failure if it does not come within 20 s).
sluice::pipeline started_counting_consumer(js::connection& conn, const js::edge_options& e, std::atomic<int>& got) {
  sluice::pipeline consumer(js::subscribe<int>(conn, e, {.fetch_wait = 50ms}), sluice::into([&got](js::delivery<int> d) {
                              d.ack();
                              got.fetch_add(1);
                            }));
  consumer.start();
  sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) { out.push(1); }), js::publish<int>(conn, e)).run();
  EXPECT_TRUE(eventually([&] { return got.load() == 1; }, 20s));
  return consumer;
}

// The consumer deleted while the stage runs and made again with a limit that loses
// messages (max_deliver 1: a nak'ed message never comes back) is found at the next sweep
// (every 5 s) and fails the stage naming it. Before, the stage went on with it: a probe's
// 10 items nak'ed once stayed in the stream for good, and the stage idled on with no error.
TEST(JetstreamEdge, AConsumerMadeAgainMidRunWithALimitThatLosesMessagesFailsTheStage) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const js::edge_options e{.stream = "remade", .max_msgs = 100};
  js::ensure_edge(conn, e);
  std::atomic<int> got{0};
  sluice::pipeline consumer = started_counting_consumer(conn, e, got);
  ASSERT_EQ(got.load(), 1) << "the first item did not come through";
  auto& g = consumer.get_graph();
  const std::string gone = js_api(server.url(), "$JS.API.CONSUMER.DELETE.remade.remade", "");
  ASSERT_EQ(gone.find("\"error\""), std::string::npos) << gone;
  ASSERT_NO_FATAL_FAILURE(make_raw_consumer(server.url(), "remade", R"(,"max_deliver":1)"));
  const std::string what = stage_error_of_started(g);  // not going on with the remade consumer
  EXPECT_NE(what.find("max_deliver"), std::string::npos) << what;
  EXPECT_NE(what.find("consumer 'remade'"), std::string::npos) << what;
}

// The server killed under a running subscribe stage, and its port taken by something
// that greets as NATS (INFO) and then never answers: libnats 3.4.1's reconnect spun in
// its handshake read for good with the connection's lock held, the stage blocked in
// libnats, and neither give_up nor cancel() ended the graph (a probe: the teardown
// deadline passed, "still waiting for stage 'subscribe:re'", killed at 60 s). Now each
// attempt ends at the connection's timeout, and the stage fails after give_up, naming
// the edge.
TEST(JetstreamEdge, AServerReplacedMidRunByOneThatGreetsAndFallsSilentFailsTheStage) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.timeout = 500ms, .give_up = 2000ms});
  const js::edge_options e{.stream = "greeted", .max_msgs = 100};
  js::ensure_edge(conn, e);
  std::atomic<int> got{0};
  sluice::pipeline consumer = started_counting_consumer(conn, e, got);
  ASSERT_EQ(got.load(), 1) << "the first item did not come through";
  auto& g = consumer.get_graph();
  const abort_after dog(120s, "a subscribe stage whose server was replaced by one that greets and falls silent");
  server.kill9();
  greeting_listener greeter(server.port());
  const std::string what = stage_error_of_started(g, 60s);
  EXPECT_NE(what.find("'greeted'"), std::string::npos) << what;
}

// The server restarted mid-run without JetStream: the subscribe stage's look-up after
// give_up got "no responders" (no JetStream), which was no verdict, so it waited again,
// for ever (a probe: 120 s, 5,800 failed pulls, no error). Now it fails naming the edge
// and the cause, as the same stage started on such a server does at once.
TEST(JetstreamEdge, AServerBackWithoutJetStreamFailsTheSubscribeStageAfterGiveUp) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.timeout = 500ms, .give_up = 2000ms});
  const js::edge_options e{.stream = "nojs", .max_msgs = 100};
  js::ensure_edge(conn, e);
  std::atomic<int> got{0};
  sluice::pipeline consumer = started_counting_consumer(conn, e, got);
  ASSERT_EQ(got.load(), 1) << "the first item did not come through";
  auto& g = consumer.get_graph();
  server.kill9();
  server.set_jetstream(false);
  server.start();
  const std::string what = stage_error_of_started(g, 60s);
  EXPECT_NE(what.find("edge 'nojs'"), std::string::npos) << what;
  EXPECT_NE(what.find("has no JetStream now"), std::string::npos) << what;
  // And a subscribe stage started there says why at once.
  sluice::pipeline late(js::subscribe<int>(conn, e, {.fetch_wait = 50ms}), sluice::into([](js::delivery<int> d) { d.ack(); }));
  const std::string at_start = stage_error_of(late.get_graph(), 30s);
  EXPECT_NE(at_start.find("has no JetStream (start nats-server with -js)"), std::string::npos) << at_start;
  // A publish stage there names it among the causes (it named the stream and the store).
  sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out) { out.push(2); }), js::publish<int>(conn, e));
  const std::string publishing = stage_error_of(producer.get_graph(), 30s);
  EXPECT_NE(publishing.find("JetStream"), std::string::npos) << publishing;
}

// On a work queue with other subjects too, the stream's first message may be another
// subject's, below the consumer's ack floor: the sweep then asks for a purge of our
// subject that removes nothing. It was counted as a purge of stranded messages every 5 s
// (libnats' purge call gives no count); now only a purge that removed some is counted,
// and the other subject's message stays.
TEST(JetstreamEdge, ASweepThatPurgesNothingOfOursIsNotCountedAsStranded) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  ASSERT_NO_FATAL_FAILURE(make_raw_stream(server.url(), "multi", "multi.a,multi.b", "workqueue", "new", 100));
  const js::edge_options e{.stream = "multi", .subject = "multi.a", .max_msgs = 100};
  js::ensure_edge(conn, e);
  const std::string stored = js_api(server.url(), "multi.b", "another subject's");  // sequence 1, nobody takes it
  ASSERT_NE(stored.find("\"seq\":1"), std::string::npos) << stored;
  // The purge requests, as the server sees them.
  natsConnection* watcher = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&watcher, server.url().c_str()), NATS_OK);
  std::atomic<int> purges{0};
  natsSubscription* sub = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(
                &sub, watcher, "$JS.API.STREAM.PURGE.multi",
                [](natsConnection*, natsSubscription*, natsMsg* m, void* n) {
                  static_cast<std::atomic<int>*>(n)->fetch_add(1);
                  natsMsg_Destroy(m);
                },
                &purges),
            NATS_OK);
  ASSERT_EQ(natsConnection_Flush(watcher), NATS_OK);
  auto sc = std::make_shared<js::subscribe_counters>();
  std::atomic<int> got{0};
  sluice::pipeline consumer(js::subscribe<int>(conn, e, {.fetch_wait = 50ms, .counters = sc}),
                            sluice::into([&](js::delivery<int> d) {
                              d.ack();
                              got.fetch_add(1);
                            }));
  auto& g = consumer.get_graph();
  g.start();
  auto publish_one = [&] {
    sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) { out.push(1); }), js::publish<int>(conn, e)).run();
  };
  publish_one();  // sequence 2: acked, the floor passes the other subject's message
  ASSERT_TRUE(eventually([&] { return got.load() == 1; }, 20s));
  EXPECT_TRUE(eventually([&] { return purges.load() > 0; }, 20s)) << "no sweep asked for a purge";
  // The sweep runs on the stage's thread: an item handed on after its request was seen
  // comes after the sweep's end.
  publish_one();
  ASSERT_TRUE(eventually([&] { return got.load() == 2; }, 20s));
  EXPECT_EQ(sc->stranded_sweeps.load(), 0u) << purges.load() << " purge requests";
  // The last ack reaches the server after the handler returns: the stream holds our
  // second message until it does, and then only the other subject's.
  std::string info;
  EXPECT_TRUE(eventually(
      [&] {
        info = js_api(server.url(), "$JS.API.STREAM.INFO.multi", "");
        return info.find("\"messages\":1,") != std::string::npos;
      },
      20s))
      << info;
  EXPECT_NE(info.find("\"first_seq\":1,"), std::string::npos) << "the other subject's message went: " << info;
  g.request_stop();
  wait_bounded(g);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(watcher);
}

// The stream removed under a running consumer. nats-server answers no pull request for a
// consumer that is gone (no 408, no "no responders"), so the stage looked idle for ever;
// now, after give_up without an answer, it looks the consumer up and fails naming the edge.
TEST(JetstreamEdge, AConsumerWhoseStreamIsDeletedFailsNamingTheEdge) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.give_up = 1000ms});
  js::edge_options e{.stream = "vanish", .max_msgs = 100};
  js::ensure_edge(conn, e);
  sluice::pipeline(sluice::from<std::uint64_t>([](sluice::sender<std::uint64_t>& out) {
                     for (std::uint64_t i = 0; i < 5; ++i) out.push(i);
                   }),
                   js::publish<std::uint64_t>(conn, e))
      .run();
  std::atomic<int> got{0};
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e, {.fetch_wait = 100ms}),
                            sluice::into([&](js::delivery<std::uint64_t> d) {
                              d.ack();
                              got.fetch_add(1);
                            }));
  auto& g = consumer.get_graph();
  g.start();
  ASSERT_TRUE(eventually([&] { return got.load() == 5; })) << got.load();
  const auto [what, took_ms] = failure_after_removing(g, server.url(), e);
  EXPECT_NE(what.find("'vanish'"), std::string::npos) << what;
  EXPECT_NE(what.find("is gone"), std::string::npos) << what;
  EXPECT_LT(took_ms, 15000.0);  // give_up (1 s), a request's expiry and a little; not never
}

// The pattern that broke libnats 3.4.1's natsSubscription_Fetch (heap overflow: a fetch
// that gave up before its messages arrived left them queued, and the next fetch read past
// its array): 1 ms pull waits, 8 KiB messages still arriving when a wait ends, and a
// room (output capacity) that changes between requests. Every item arrives, every ack
// is confirmed by the server.
//
// At least once, as DESIGN section 7 promises, not exactly once: at each hand-over the
// consumer that stops naks what it fetched and did not hand on (up to its capacity plus a
// batch), and nats-server 2.9.10 now and then hands one of those out twice (once in 10-30
// runs under load; seen: an item delivered with deliveries() 2, then again with 1: the
// server's redelivery "redo" path stepping its cursor back, see runtime/jetstream). So an
// item may come twice, never more, and only so many as were in flight at a hand-over.
// A sluice defect that delivered a message twice would show as the same deliveries()
// count twice for one item, which stays an error.
TEST(JetstreamEdge, ShortPullWaitsWithLateMessagesDeliverEveryItem) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "late", .max_msgs = 100000, .ack_wait = 2000ms};
  js::ensure_edge(conn, e);
  const std::uint64_t n = kSanitized ? 1500 : 6000;
  sluice::pipeline(sluice::from<std::string>([&](sluice::sender<std::string>& out) {
                     for (std::uint64_t i = 0; i < n; ++i) {
                       std::string v(8192, 'x');
                       std::memcpy(v.data(), &i, sizeof i);
                       out.push(std::move(v));
                     }
                   }),
                   js::publish<std::string>(conn, e, {.producer_id = "late"}))
      .run();
  ASSERT_EQ(js::inspect_edge(conn, e).msgs, n);
  for (std::size_t capacity : {200u, 61u, 7u}) {
    auto sc = std::make_shared<js::subscribe_counters>();
    std::map<std::uint64_t, int> seen;
    std::map<std::uint64_t, std::string> history;  // per item: deliveries() of each time it came, ms since start
    std::set<std::pair<std::uint64_t, std::uint64_t>> counts;  // (item, deliveries()) seen
    std::uint64_t twice = 0;                                     // a delivery with the same count again
    const auto t0 = clock_type::now();
    std::set<std::string> confirmed;
    std::mutex mu;
    const std::uint64_t take = n / 3;
    sluice::pipeline consumer(
        js::subscribe<std::string>(conn, e,
                                   {.batch = 64, .fetch_wait = 1ms, .counters = sc,
                                    .on_confirmed = [&](const std::string& id, unsigned) {
                                      std::lock_guard lk(mu);
                                      confirmed.insert(id);
                                    }},
                                   {.capacity = capacity}),
        sluice::into([&](js::delivery<std::string> d) -> bool {
          std::uint64_t i = 0;
          std::memcpy(&i, d.value().data(), sizeof i);
          ++seen[i];
          if (!counts.emplace(i, d.deliveries()).second) ++twice;
          // Appended piece by piece: GCC 12 at -O3 reports a bogus -Wrestrict inside
          // std::string's operator+ here (GCC PR 105651) once enough inlines around it.
          auto& h = history[i];
          h += ' ';
          h += std::to_string(d.deliveries());
          h += '@';
          h += std::to_string(static_cast<int>(ms_since(t0)));
          d.ack();
          return seen.size() < take;
        }));
    run_bounded(consumer.get_graph());
    ASSERT_EQ(seen.size(), take) << "capacity " << capacity << " polls " << sc->polls.load() << " errors " << sc->fetch_errors.load() << " fetched " << sc->fetched.load();
    std::uint64_t deliveries = 0;
    for (auto& [v, c] : seen) {
      deliveries += static_cast<std::uint64_t>(c);
      EXPECT_LE(c, 2) << "item " << v << " (capacity " << capacity << "), deliveries()@ms:" << history[v];
      if (c > 1) std::printf("capacity %zu: item %llu came %d times, deliveries()@ms:%s\n", capacity,
                             static_cast<unsigned long long>(v), c, history[v].c_str());
    }
    EXPECT_EQ(twice, 0u) << "a message handed to the sink twice (capacity " << capacity << ")";
    EXPECT_LE(deliveries - take, capacity + 64) << "more duplicates than were in flight at a hand-over";
    EXPECT_EQ(sc->acks_sent.load(), deliveries);
    // Confirmations of the last acks were awaited when the stage's state went.
    EXPECT_EQ(sc->acks_confirmed.load(), deliveries);
    EXPECT_EQ(sc->acks_unconfirmed.load(), 0u);
    std::lock_guard lk(mu);
    EXPECT_EQ(confirmed.size(), take);
  }
  EXPECT_TRUE(eventually([&] { return js::inspect_edge(conn, e).msgs == n - 3 * (n / 3); }));
}

// A pull request on an empty stream ends with a status message (408 when it expires):
// "nothing for now", not an error. The status was once read after its message was
// destroyed (a use after free that AddressSanitizer reports at the first 408; an
// optimised build read freed memory and could count a fetch error and pause).
TEST(JetstreamEdge, ExpiredPullRequestsOnAnEmptyStreamAreNotErrors) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "quiet", .max_msgs = 8};
  js::ensure_edge(conn, e);
  auto sc = std::make_shared<js::subscribe_counters>();
  sluice::pipeline s(js::subscribe<int>(conn, e, {.counters = sc}), sluice::into([](js::delivery<int> d) { d.ack(); }));
  s.start();
  // Each request lives 500 ms on the server (kMinExpires): three answered ones, then stop.
  const bool three = eventually([&] { return sc->polls.load() >= 4; }, 15s);
  s.cancel();
  EXPECT_THROW(s.wait(), sluice::cancelled);
  ASSERT_TRUE(three) << "polls " << sc->polls.load();
  EXPECT_EQ(sc->fetch_errors.load(), 0u) << "polls " << sc->polls.load();
  EXPECT_EQ(sc->fetched.load(), 0u);
}

TEST(JetstreamEdge, StringAndBufferCodecs) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "bytes", .max_msgs = 100};
  js::ensure_edge(conn, e);
  sluice::pipeline(sluice::from<std::string>([](sluice::sender<std::string>& out) {
                     out.push(std::string("hello"));
                     out.push(std::string(3, '\0'));
                   }),
                   js::publish<std::string>(conn, e))
      .run();
  std::vector<std::string> got;
  sluice::pipeline consumer(js::subscribe<sluice::buffer>(conn, e),
                            sluice::into([&](js::delivery<sluice::buffer> d) -> bool {
                              got.emplace_back(d.value().view());
                              d.ack();
                              return got.size() < 2;
                            }));
  run_bounded(consumer.get_graph(), 30s);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "hello");
  EXPECT_EQ(got[1], std::string(3, '\0'));
}

TEST(JetstreamEdge, UnsettledDeliveryIsNakedAndComesBackAtOnce) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "nak", .max_msgs = 10};  // ack_wait 30 s: only a nak brings it back in time
  js::ensure_edge(conn, e);
  sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) { out.push(7); }), js::publish<int>(conn, e)).run();
  std::vector<std::uint64_t> deliveries;
  sluice::pipeline consumer(js::subscribe<int>(conn, e), sluice::into([&](js::delivery<int> d) -> bool {
                              deliveries.push_back(d.deliveries());
                              EXPECT_EQ(d.value(), 7);
                              if (d.deliveries() == 1) return true;  // dropped unsettled: nak'ed
                              d.ack();
                              return false;
                            }));
  const auto t0 = clock_type::now();
  run_bounded(consumer.get_graph(), 20s);
  EXPECT_LT(ms_since(t0), 10000.0);
  ASSERT_EQ(deliveries.size(), 2u);
  EXPECT_EQ(deliveries[0], 1u);
  EXPECT_EQ(deliveries[1], 2u);
}

TEST(JetstreamEdge, BackpressureAcrossTheCutBoundsTheStreamAndLosesNothing) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  constexpr std::int64_t kMax = 64;
  js::edge_options e{.stream = "bp", .max_msgs = kMax};
  js::ensure_edge(conn, e);
  const std::uint64_t n = kSanitized ? 600 : 2000;

  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline producer(sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out) {
                              for (std::uint64_t i = 0; i < n; ++i) out.push(i);
                            },
                                                         {.capacity = 16, .name = "source"}),
                            js::publish<std::uint64_t>(conn, e, {.producer_id = "bp", .window = 32, .counters = pc}));
  std::map<std::uint64_t, int> seen;
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e, {}, {.capacity = 16}),
                            sluice::into([&](js::delivery<std::uint64_t> d) -> bool {
                              std::this_thread::sleep_for(200us);  // the slow sink (work, not synchronisation)
                              ++seen[d.value()];
                              d.ack();
                              return seen.size() < n;
                            }));
  std::atomic<bool> done{false};
  std::uint64_t max_seen = 0, samples = 0;
  sluice::metrics::snapshot mid;
  std::thread sampler([&] {
    auto c2 = js::connect(server.url());
    while (!done.load()) {
      max_seen = std::max<std::uint64_t>(max_seen, js::inspect_edge(c2, e).msgs);
      if (++samples == 50) mid = producer.snapshot();
      std::this_thread::sleep_for(2ms);
    }
  });
  std::thread t([&] { run_bounded(producer.get_graph()); });
  run_bounded(consumer.get_graph());
  t.join();
  done = true;
  sampler.join();

  EXPECT_LE(max_seen, static_cast<std::uint64_t>(kMax));
  EXPECT_GT(samples, 10u);
  EXPECT_GT(pc->refused.load(), 0u) << "the stream never refused: no backpressure was exercised";
  EXPECT_EQ(pc->resent.load(), pc->refused.load());
  EXPECT_GT(pc->waited_ns.load(), 0u);
  ASSERT_EQ(seen.size(), n);
  for (auto& [v, c] : seen) EXPECT_EQ(c, 1) << "item " << v;
  EXPECT_EQ(pc->acked.load(), n);
  // The source was held back: its output channel was full while the stream was.
  const auto& src = *std::find_if(mid.stages.begin(), mid.stages.end(), [](auto& s) { return s.name == "source"; });
  EXPECT_GT(src.backpressured_ns, 0u);
}

TEST(JetstreamEdge, TheEdgeIsAChannelInBothSidesSnapshots) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "gauge", .max_msgs = 20};
  js::ensure_edge(conn, e);
  const std::uint64_t n = 200;
  sluice::pipeline producer(sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out) {
                              for (std::uint64_t i = 0; i < n; ++i) out.push(i);
                            }),
                            js::publish<std::uint64_t>(conn, e));
  auto edge_of = [](const sluice::metrics::snapshot& s) -> std::optional<sluice::metrics::channel_snapshot> {
    for (auto& c : s.channels) {
      if (c.name == "jetstream:gauge") return c;
    }
    return std::nullopt;
  };
  producer.start();
  // Nobody consumes yet: the stream fills, the publish stage waits on it, and its snapshot says so.
  ASSERT_TRUE(eventually([&] {
    auto c = edge_of(producer.snapshot());
    return c && c->stats.size == 20;
  }));
  auto ps = producer.snapshot();
  auto pc = *edge_of(ps);
  EXPECT_TRUE(pc.external);
  EXPECT_EQ(pc.stats.capacity, 20u);
  EXPECT_EQ(pc.from, "publish:gauge");
  EXPECT_EQ(pc.to, "");
  const auto pub = std::find_if(ps.stages.begin(), ps.stages.end(), [](auto& st) { return st.name == "publish:gauge"; });
  ASSERT_NE(pub, ps.stages.end());
  EXPECT_GT(pub->backpressured_ns, 0u);

  std::atomic<std::uint64_t> got{0};
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e), sluice::into([&](js::delivery<std::uint64_t> d) -> bool {
                              std::this_thread::sleep_for(1ms);  // slow: the stream stays full meanwhile
                              d.ack();
                              return got.fetch_add(1) + 1 < n;
                            }));
  consumer.start();
  ASSERT_TRUE(eventually([&] {
    auto c = edge_of(consumer.snapshot());
    return c && c->stats.size > 0;
  }));
  auto cc = *edge_of(consumer.snapshot());
  EXPECT_EQ(cc.to, "subscribe:gauge");
  EXPECT_EQ(cc.from, "");
  EXPECT_EQ(cc.stats.capacity, 20u);
  EXPECT_LE(cc.stats.size, 20u);
  wait_bounded(producer.get_graph());
  wait_bounded(consumer.get_graph());
  EXPECT_EQ(got.load(), n);
}

// The edge's reading stays fresh while its stage is blocked elsewhere: a subscribe stage
// waiting on its full output (the sink is slow) still shows the stream filling up, which
// is the reading that names the consumer side as the bottleneck. (It was refreshed only
// inside the stage's own fetches, so it froze at what the stage last saw.)
// A publish stage held by a full stream is backpressured while it waits, not busy: its
// edge's blocked time grows as the wait goes on. It was counted only when a wait ended,
// so a stage held for good showed 100% busy with no backpressure (a probe: busy 3.00 s,
// backpressured 0.01 s), and a wait ended by a stop was never counted.
TEST(JetstreamEdge, APublishStageHeldByAFullStreamIsBackpressuredWhileItWaits) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  const js::edge_options e{.stream = "held", .max_msgs = 10};
  js::ensure_edge(conn, e);
  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out) {
                              for (int i = 0; i < 20; ++i) out.push(i);
                            }),
                            js::publish<int>(conn, e, {.counters = pc}));
  producer.start();  // nobody consumes: the stream fills at 10, and the stage waits
  auto blocked = [&]() -> std::uint64_t {
    for (auto& c : producer.snapshot().channels) {
      if (c.name == "jetstream:held") return c.stats.blocked_push_ns;
    }
    return 0;
  };
  EXPECT_TRUE(eventually([&] { return blocked() >= 300'000'000; }, 20s)) << "blocked " << blocked() << " ns";
  EXPECT_GE(pc->waited_ns.load(), 300'000'000u);
  const auto snap = producer.snapshot();
  for (const auto& st : snap.stages) {
    if (st.name == "publish:held") {
      EXPECT_GE(st.backpressured_ns, 300'000'000u) << "busy " << st.busy_ns;
    }
  }
  const std::uint64_t before_stop = pc->waited_ns.load();
  producer.get_graph().cancel();
  EXPECT_THROW((void)producer.get_graph().wait_for(30s), sluice::cancelled);
  EXPECT_GE(pc->waited_ns.load(), before_stop);
}

TEST(JetstreamEdge, TheEdgeReadingFollowsTheStreamWhileItsStageIsBlocked) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "fresh", .max_msgs = 100};
  js::ensure_edge(conn, e);
  auto publish_n = [&](std::uint64_t n) {
    sluice::pipeline(sluice::from<std::uint64_t>([&](sluice::sender<std::uint64_t>& out) {
                       for (std::uint64_t i = 0; i < n; ++i) out.push(i);
                     }),
                     js::publish<std::uint64_t>(conn, e))
        .run();
  };
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, holding = false;
  sluice::pipeline consumer(js::subscribe<std::uint64_t>(conn, e, {.batch = 2}, {.capacity = 2}),
                            sluice::into([&](js::delivery<std::uint64_t> d) -> bool {
                              std::unique_lock lk(mu);
                              holding = true;
                              cv.notify_all();
                              cv.wait_for(lk, 20s, [&] { return release; });  // bounded
                              d.ack();
                              return true;
                            }));
  consumer.start();
  publish_n(3);  // one in the sink, two in the subscribe stage's output: it waits for room
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 10s, [&] { return holding; }));
  }
  auto reading = [&]() -> std::uint64_t {
    for (auto& c : consumer.snapshot().channels) {
      if (c.name == "jetstream:fresh") return c.stats.size;
    }
    return 0;
  };
  ASSERT_TRUE(eventually([&] { return reading() == 3; })) << "reading " << reading();
  publish_n(40);  // meanwhile the stage is blocked on its output, not fetching
  EXPECT_EQ(js::inspect_edge(conn, e).msgs, 43u);
  EXPECT_TRUE(eventually([&] { return reading() == 43; }, 5s)) << "reading " << reading();
  {
    std::lock_guard lk(mu);
    release = true;
  }
  cv.notify_all();
  EXPECT_TRUE(eventually([&] { return js::inspect_edge(conn, e).msgs == 0; }));
  consumer.cancel();
  EXPECT_THROW(consumer.wait(), sluice::cancelled);
}

// ---- teardown ------------------------------------------------------------------

TEST(JetstreamTeardown, CancelWhilePublishBlockedOnFullStreamOrSubscribeOnEmptyIsPrompt) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options full{.stream = "full", .max_msgs = 8};
  js::edge_options empty{.stream = "empty", .max_msgs = 8};
  js::ensure_edge(conn, full);
  js::ensure_edge(conn, empty);
  const int runs = kSanitized ? 20 : 100;

  // One attempt: `runs` teardowns of each kind; their p99s. Wall-clock time on a shared
  // 2-core machine: another process's burst can stretch a whole attempt, so up to five
  // attempts, and the best p99 of each kind must be under DESIGN.md's 100 ms. A teardown
  // that waits for a timeout (a publish's first retry, 100 ms; a fetch request's expiry,
  // 500 ms) misses in every attempt. (With a build beside a full ctest, the subscribe
  // side's p99 was 108-125 ms in each of three attempts: 25 ms on a quiet machine.)
  auto attempt = [&](double& pp, double& sp) {
    std::vector<double> pub_ms, sub_ms;
    for (int i = 0; i < runs; ++i) {
      auto pc = std::make_shared<js::publish_counters>();
      sluice::pipeline p(sluice::from<int>([](sluice::sender<int>& out, std::stop_token st) {
                           for (int v = 0; !st.stop_requested(); ++v) {
                             if (!out.push(v)) return;
                           }
                         }),
                         js::publish<int>(conn, full, {.counters = pc}));
      p.start();
      ASSERT_TRUE(eventually([&] { return pc->refused.load() > 0; })) << "run " << i;
      const auto t0 = clock_type::now();
      p.cancel();
      EXPECT_THROW(p.wait(), sluice::cancelled);
      pub_ms.push_back(ms_since(t0));
    }
    for (int i = 0; i < runs; ++i) {
      auto sc = std::make_shared<js::subscribe_counters>();
      sluice::pipeline s(js::subscribe<int>(conn, empty, {.counters = sc}),
                         sluice::into([](js::delivery<int> d) { d.ack(); }));
      s.start();
      ASSERT_TRUE(eventually([&] { return sc->polls.load() > 0; })) << "run " << i;
      const auto t0 = clock_type::now();
      s.cancel();
      EXPECT_THROW(s.wait(), sluice::cancelled);
      sub_ms.push_back(ms_since(t0));
    }
    pp = p99(pub_ms);
    sp = p99(sub_ms);
  };
  double best_pp = 1e9, best_sp = 1e9;
  constexpr double kBound = 100.0;  // ms: DESIGN.md section 7
  for (int a = 1; a <= 5 && (best_pp >= kBound || best_sp >= kBound); ++a) {
    double pp = 0, sp = 0;
    attempt(pp, sp);
    if (HasFatalFailure()) return;
    std::printf("attempt %d: teardown p99 over %d runs: publish on a full stream %.2f ms, subscribe on an empty one %.2f ms\n",
                a, runs, pp, sp);
    best_pp = std::min(best_pp, pp);
    best_sp = std::min(best_sp, sp);
  }
  EXPECT_LT(best_pp, kBound);
  EXPECT_LT(best_sp, kBound);
  EXPECT_EQ(js::inspect_edge(conn, full).msgs, 8u);  // the stream stayed within its limit
}

// Up to three attempts (wall-clock time on a shared machine, so the best one counts) of a
// teardown on a stalled server: make() a subscribe pipeline, start it, stall(attempt)
// waits for the moment to cancel (pausing the server on the way), then cancel(), wait()
// and destroy it, timed. The server is resumed after each. The best time in ms; no more
// attempts once one is under limit_ms.
template <class Make, class Stall>
double best_teardown_on_a_stalled_server(nats_server& server, double limit_ms, const char* what, Make make,
                                         Stall stall) {
  struct resume_at_exit {
    nats_server& s;
    ~resume_at_exit() { s.resume(); }
  } resume{server};
  double best = 1e9;
  for (int a = 1; a <= 3 && best >= limit_ms; ++a) {
    clock_type::time_point t0;
    {
      std::unique_ptr<sluice::pipeline> s = make();
      s->start();
      if (!stall(a)) {
        ADD_FAILURE() << what << ": attempt " << a << " never reached the moment to cancel";
        return best;
      }
      t0 = clock_type::now();
      s->cancel();
      EXPECT_THROW(s->wait(), sluice::cancelled);
    }  // the stage's state may be freed here: part of the teardown
    const double ms = ms_since(t0);
    server.resume();
    std::printf("attempt %d: %s %.2f ms\n", a, what, ms);
    best = std::min(best, ms);
  }
  return best;
}

// A sink inside ack() when the graph is cancelled: the ack window is full and the server
// stalled (SIGSTOP: connected, answering nothing), so no confirmation comes. The ack
// waited for room until the teardown deadline named the sink stuck, and the end then
// waited twice ack_confirm_wait for confirmations; after a teardown it waits for neither
// (the unconfirmed acks' messages may come back: at-least-once).
TEST(JetstreamTeardown, CancelWhileAnAckWaitsForRoomOnAStalledServerIsPrompt) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "ackroom", .max_msgs = 1000};
  js::ensure_edge(conn, e);
  sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) {
                     for (int v = 0; v < 500; ++v) out.push(v);
                   }),
                   js::publish<int>(conn, e))
      .run();
  // The best of up to three attempts must be under 500 ms. Before, each took the teardown
  // deadline (5 s) and more.
  auto sc = std::make_shared<js::subscribe_counters>();
  std::atomic<int> entered{0}, left{0};
  const double best = best_teardown_on_a_stalled_server(
      server, 500.0, "teardown with an ack waiting for room on a stalled server",
      [&] {
        sc = std::make_shared<js::subscribe_counters>();
        entered = 0;
        left = 0;
        return std::make_unique<sluice::pipeline>(
            js::subscribe<int>(conn, e, {.batch = 8, .counters = sc, .ack_window = 4}),
            sluice::into([&](js::delivery<int> d) {
              entered.fetch_add(1);
              d.ack();
              left.fetch_add(1);
            }));
      },
      [&](int) {
        if (!eventually([&] { return sc->acks_confirmed.load() > 0; })) return false;
        server.pause();
        // The window fills with acks the stalled server never confirms; the sink then
        // waits in ack() for room.
        return eventually([&] {
          return entered.load() == left.load() + 1 && sc->acks_sent.load() >= sc->acks_confirmed.load() + 4;
        });
      });
  EXPECT_LT(best, 500.0);
}

// A subscribe stage retires its inboxes when it ends: unsubscribed at once, freed only
// after a PING/PONG round trip (libnats 3.4.1's reader may still be handing them a
// message; see runtime/jetstream). On a stalled server (SIGSTOP) no PONG comes, and the
// teardown must not wait for it: the old retire waited up to 200 ms per inbox on the
// stage's thread. After SIGCONT the connection works on, and the retired inboxes are
// freed by a later round trip or at its close (ASan: no leak, no use after free).
TEST(JetstreamTeardown, SubscribeTeardownOnAStalledServerDoesNotWaitForItsPong) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "stalled", .max_msgs = 100};
  js::ensure_edge(conn, e);
  // The best of up to three attempts must be under 100 ms. The old retire took 400 ms
  // (two inboxes) in every attempt.
  std::shared_ptr<js::subscribe_counters> sc;
  const double best = best_teardown_on_a_stalled_server(
      server, 100.0, "subscribe teardown on a stalled server",
      [&] {
        sc = std::make_shared<js::subscribe_counters>();
        return std::make_unique<sluice::pipeline>(js::subscribe<int>(conn, e, {.counters = sc}),
                                                  sluice::into([](js::delivery<int> d) { d.ack(); }));
      },
      [&](int) {
        if (!eventually([&] { return sc->polls.load() > 1; })) return false;
        server.pause();
        return true;
      });
  EXPECT_LT(best, 100.0);

  // The connection works on: a round trip through the edge.
  sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) {
                     for (int v = 0; v < 10; ++v) out.push(v);
                   }),
                   js::publish<int>(conn, e))
      .run();
  std::set<int> got;
  sluice::pipeline consumer(js::subscribe<int>(conn, e), sluice::into([&](js::delivery<int> d) -> bool {
                              got.insert(d.value());
                              d.ack();
                              return got.size() < 10;
                            }));
  run_bounded(consumer.get_graph(), 30s);
  EXPECT_EQ(got.size(), 10u);
}

// The publish stages of a connection share its JetStream context, and each
// acknowledgement reaches the stage that sent the message: also two stages given the same
// producer_id (routing by producer id alone would mix them up). Small windows, so acks
// interleave with sends all the time. A stage's window accounting is exact: every stage
// finishes (all its acks came to it), counting exactly its own items.
TEST(JetstreamEdge, PublishStagesOnOneConnectionEachGetTheirOwnAcknowledgements) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "shared", .max_msgs = 100000};
  js::ensure_edge(conn, e);
  const int n = kSanitized ? 500 : 3000;
  struct producer {
    std::string id;
    std::uint64_t first;
    std::size_t window;
  };
  const std::vector<producer> producers = {{"a", 0, 4}, {"b", 0, 1}, {"b", 1000000, 8}};
  std::vector<std::shared_ptr<js::publish_counters>> counters;
  std::vector<std::thread> threads;
  for (const auto& p : producers) {
    auto pc = std::make_shared<js::publish_counters>();
    counters.push_back(pc);
    threads.emplace_back([&conn, &e, p, pc, n] {
      sluice::pipeline g(sluice::from<int>([n](sluice::sender<int>& out) {
                           for (int v = 0; v < n; ++v) out.push(v);
                         }),
                         js::publish<int>(conn, e,
                                          {.producer_id = p.id, .first_sequence = p.first, .window = p.window,
                                           .counters = pc}));
      run_bounded(g.get_graph());
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < counters.size(); ++i) {
    EXPECT_EQ(counters[i]->sent.load(), static_cast<std::uint64_t>(n)) << "producer " << i;
    EXPECT_EQ(counters[i]->acked.load(), static_cast<std::uint64_t>(n)) << "producer " << i;
    EXPECT_EQ(counters[i]->duplicates.load(), 0u) << "producer " << i;
  }
  EXPECT_EQ(js::inspect_edge(conn, e).msgs, 3u * static_cast<std::uint64_t>(n));
}

// The connection closes (its last handle and stage gone) while acknowledgements are on
// their way: the messages libnats still holds are taken back and freed, and the callbacks
// already running finish before the connection's state is freed (ASan/TSan: no use after
// free, no leak, no race).
TEST(JetstreamTeardown, ConnectionClosedWithAcknowledgementsOnTheirWayFreesEverything) {
  NEED_NATS_SERVER();
  nats_server server;
  js::edge_options e{.stream = "closing", .max_msgs = 1000000};
  {
    auto conn = js::connect(server.url());
    js::ensure_edge(conn, e);
  }
  const int runs = kSanitized ? 10 : 30;
  for (int i = 0; i < runs; ++i) {
    auto pc = std::make_shared<js::publish_counters>();
    auto conn = js::connect(server.url());
    auto p = std::make_unique<sluice::pipeline>(sluice::from<int>([](sluice::sender<int>& out, std::stop_token st) {
                                                  for (int v = 0; !st.stop_requested(); ++v) {
                                                    if (!out.push(v)) return;
                                                  }
                                                }),
                                                js::publish<int>(conn, e, {.window = 1024, .counters = pc}));
    conn = {};  // the stage holds the last handle
    p->start();
    ASSERT_TRUE(eventually([&] { return pc->acked.load() > 100; })) << "run " << i;
    p->cancel();
    EXPECT_THROW(p->wait(), sluice::cancelled);
    p.reset();  // the connection closes here, acks still arriving
    EXPECT_GE(pc->sent.load(), pc->acked.load());
  }
}

// libnats frees messages on its garbage-collector thread, which shutdown() stops first:
// an acknowledgement its delivery thread destroys after that was never freed (one 167-byte
// LeakSanitizer report in CI). That thread destroys each acknowledgement after sluice's
// callback has returned, so a closing connection waits for the thread itself to end. The
// callbacks here pause after their last touch of the connection (the window libnats' own
// work after the callback had): the connection's close must still outlast that thread.
TEST(JetstreamTeardown, AClosedConnectionLeavesNoAcknowledgementThreadRunning) {
  NEED_NATS_SERVER();
  nats_server server;
  js::edge_options e{.stream = "ack-thread", .max_msgs = 1000};
  ASSERT_EQ(js::detail::ack_threads_live(), 0u);
  js::detail::hold_ack_callbacks(100ms);
  struct unhold {
    ~unhold() { js::detail::hold_ack_callbacks(0ms); }
  } unhold_at_end;
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE("run " + std::to_string(i));
    auto pc = std::make_shared<js::publish_counters>();
    {
      auto conn = js::connect(server.url());
      js::ensure_edge(conn, e);
      sluice::pipeline p(sluice::from<int>([](sluice::sender<int>& out, std::stop_token) {
                           for (int v = 0; v < 3; ++v) {
                             if (!out.push(v)) return;
                           }
                         }),
                         js::publish<int>(conn, e, {.counters = pc}));
      p.start();
      ASSERT_TRUE(p.get_graph().wait_for(30s));
      EXPECT_EQ(pc->acked.load(), 3u);
      EXPECT_GE(js::detail::ack_threads_live(), 1u);  // the callbacks ran on a thread it tracks
    }  // the connection's last handle: closed here
    EXPECT_EQ(js::detail::ack_threads_live(), 0u);
  }
}

// A publisher and a subscriber run on edge `stream` (give_up 1 s, connections of their
// own) until more than 100 items are acked; then `fault` is done to the server, and both
// graphs must fail naming the edge within `bound`.
void both_sides_fail_naming_the_edge(nats_server& server, const std::string& stream, const std::function<void()>& fault,
                                     std::chrono::seconds bound) {
  auto conn = js::connect(server.url(), {.give_up = 1000ms});
  js::edge_options e{.stream = stream, .max_msgs = 100000};
  js::ensure_edge(conn, e);
  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline p(sluice::from<int>([](sluice::sender<int>& out, std::stop_token st) {
                       for (int v = 0; !st.stop_requested(); ++v) {
                         if (!out.push(v)) return;
                       }
                     }),
                     js::publish<int>(conn, e, {.counters = pc}));
  auto sconn = js::connect(server.url(), {.give_up = 1000ms});
  sluice::pipeline s(js::subscribe<int>(sconn, e), sluice::into([](js::delivery<int> d) { d.ack(); }));
  p.start();
  s.start();
  ASSERT_TRUE(eventually([&] { return pc->acked.load() > 100; }));
  fault();
  const auto t0 = clock_type::now();
  const std::string publish = "publish:" + stream, subscribe = "subscribe:" + stream;
  for (auto [g, stage] : {std::pair{&p.get_graph(), publish}, std::pair{&s.get_graph(), subscribe}}) {
    try {
      auto r = g->wait_for(bound);
      if (!r) {
        g->cancel();
        ADD_FAILURE() << stage << ": the graph hung after the fault";
        try {
          g->wait();
        } catch (...) {
        }
      } else {
        ADD_FAILURE() << stage << ": the graph ended without an error after the fault";
      }
    } catch (const sluice::stage_error& ex) {
      EXPECT_EQ(ex.stage(), stage);
      EXPECT_NE(std::string(ex.what()).find("'" + stream + "'"), std::string::npos) << ex.what();
    } catch (const std::exception& ex) {
      ADD_FAILURE() << stage << ": " << ex.what();
    }
  }
  EXPECT_LT(ms_since(t0), 1000.0 * static_cast<double>(bound.count()));
}

TEST(JetstreamFaults, ServerGoneForGoodFailsTheGraphNamingTheEdge) {
  NEED_NATS_SERVER();
  nats_server server;
  both_sides_fail_naming_the_edge(server, "gone", [&] { server.kill9(); }, 15s);
}

// A server that stops answering without closing its sockets (SIGSTOP here; a frozen host
// or a silent partition alike) fails the graph naming the edge, as one that is gone does.
// libnats saw the stall only after two unanswered PINGs, 2 minutes apart by default: a
// stage on an empty stream failed about 6 minutes after the stall (give_up 1.5 s). Bounded
// generously (the PING interval is 2 s at least, two go unanswered, then give_up).
TEST(JetstreamFaults, AServerThatStopsAnsweringFailsTheGraphWithinAFewGiveUps) {
  NEED_NATS_SERVER();
  nats_server server;
  both_sides_fail_naming_the_edge(server, "frozen", [&] { server.pause(); }, 60s);
  server.resume();
}

// A subscribe stage that starts while the server is frozen (connected, answering nothing)
// looks its consumer up again and again: each look-up waits at most 800 ms for an answer,
// so a stop request or cancel() ends the stage within about that, and give_up is kept.
// Each look-up used to wait libnats's default 5 s: cancel() returned 3.5 s after the
// call, and with give_up 1 s the stage failed after 10.2 s, saying "unreachable for 5194 ms".
TEST(JetstreamFaults, ASubscribeStartingAgainstAFrozenServerEndsPromptlyOnStopCancelAndGiveUp) {
  NEED_NATS_SERVER();
  nats_server server;
  enum class end { cancel, stop, give_up };
  for (const end how : {end::cancel, end::stop, end::give_up}) {
    SCOPED_TRACE(how == end::cancel ? "cancel" : how == end::stop ? "request_stop" : "give_up");
    auto conn = js::connect(server.url(), {.give_up = how == end::give_up ? 1000ms : 60000ms});
    js::edge_options e{.stream = "frozen-start", .max_msgs = 100};
    js::ensure_edge(conn, e);
    server.pause();
    sluice::pipeline p(js::subscribe<int>(conn, e), sluice::into([](js::delivery<int> d) { d.ack(); }));
    p.start();
    auto& g = p.get_graph();
    // Once its thread runs, the stage is in its first look-up (nothing else comes first).
    ASSERT_TRUE(eventually([&] {
      for (const auto& st : g.snapshot().stages) {
        if (st.name == "subscribe:frozen-start" && st.state == "running") return true;
      }
      return false;
    }));
    const auto t0 = clock_type::now();
    if (how == end::cancel) g.cancel();
    if (how == end::stop) g.request_stop();
    std::string outcome;
    try {
      if (!g.wait_for(30s)) {
        outcome = "hung";
        g.cancel();
        g.wait();
      } else {
        outcome = "ended";
      }
    } catch (const sluice::cancelled&) {
      outcome = "cancelled";
    } catch (const sluice::stage_error& ex) {
      outcome = ex.what();
    }
    const double took = ms_since(t0);
    server.resume();
    if (how == end::cancel) {
      EXPECT_EQ(outcome, "cancelled");
    }
    if (how == end::stop) {
      EXPECT_EQ(outcome, "ended");
    }
    if (how == end::give_up) {
      EXPECT_NE(outcome.find("'frozen-start'"), std::string::npos) << outcome;
      EXPECT_NE(outcome.find("unreachable for"), std::string::npos) << outcome;
    }
    // cancel/stop: at most one look-up's wait (800 ms) and a nap; give_up: 1 s, then at
    // most one more look-up. Bounded with room for a loaded machine.
    EXPECT_LT(took, how == end::give_up ? 3500.0 : 2500.0) << outcome;
    js::remove_edge(conn, e);
  }
}

// ensure_edge and inspect_edge against a frozen server fail within connect_options::
// timeout, saying the server did not answer in it; they waited libnats's own 5 s and
// said "Timeout".
TEST(JetstreamFaults, EnsureAndInspectEdgeOnAFrozenServerFailWithinTheTimeoutSayingSo) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url(), {.timeout = 1000ms});
  js::edge_options e{.stream = "frozen-admin", .max_msgs = 100};
  server.pause();
  for (const bool ensure : {true, false}) {
    SCOPED_TRACE(ensure ? "ensure_edge" : "inspect_edge");
    const auto t0 = clock_type::now();
    try {
      if (ensure) {
        js::ensure_edge(conn, e);
      } else {
        (void)js::inspect_edge(conn, e);
      }
      ADD_FAILURE() << "no error from a frozen server";
    } catch (const std::runtime_error& ex) {
      EXPECT_NE(std::string(ex.what()).find("did not answer within 1000 ms"), std::string::npos) << ex.what();
      EXPECT_NE(std::string(ex.what()).find("frozen-admin"), std::string::npos) << ex.what();
    }
    EXPECT_LT(ms_since(t0), 3000.0);
  }
  server.resume();
}

// The item in the publish stage's hand when the server is gone for good is a dead letter
// with the stage's error, not lost: every item the source pushed was sent, or is a dead
// letter. The stage waits for room in its window (acks no longer come) until give_up.
// Under skip too the stage fails (the fault is the edge's), and that one error is counted
// once: it was counted as the held item's and again as the stage's end.
TEST(JetstreamFaults, ServerGoneForGoodLeavesTheItemInHandADeadLetter) {
  NEED_NATS_SERVER();
  for (const bool skip : {false, true}) {
    SCOPED_TRACE(skip ? "skip" : "stop");
    nats_server server;
    auto conn = js::connect(server.url(), {.give_up = 1000ms});
    js::edge_options e{.stream = "gone-held", .max_msgs = 100000};
    js::ensure_edge(conn, e);
    auto pc = std::make_shared<js::publish_counters>();
    std::atomic<std::uint64_t> pushed{0};
    std::mutex mu;
    std::uint64_t letters = 0;
    std::string held_error;
    sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
      std::lock_guard lk(mu);
      ++letters;
      if (d.error()) held_error = error_text(d);
    }});
    auto src = g.source<int>("numbers", [&](sluice::sender<int>& out, std::stop_token st) {
      for (int v = 0; !st.stop_requested(); ++v) {
        if (!out.push(v)) return;
        pushed.fetch_add(1);
      }
    });
    js::publish<int>(g, src, conn, e, {.window = 16, .counters = pc},
                     {.on_error = skip ? sluice::error_policy::skip : sluice::error_policy::stop});
    g.start();
    ASSERT_TRUE(eventually([&] { return pc->acked.load() > 100; }));
    server.kill9();
    try {
      if (!g.wait_for(15s)) {
        g.cancel();
        ADD_FAILURE() << "the graph hung after the server went away";
        try {
          g.wait();
        } catch (...) {
        }
      } else {
        ADD_FAILURE() << "the graph ended without an error after the server went away";
      }
    } catch (const sluice::stage_error& ex) {
      EXPECT_EQ(ex.stage(), "publish:gone-held");
    }
    std::lock_guard lk(mu);
    // Stored (acknowledged) or a dead letter: the item in hand, the input's, and the
    // window's messages never acknowledged (those were lost without a word: the test
    // counted every message sent as kept).
    EXPECT_EQ(pushed.load(), pc->acked.load() + letters)
        << "acked " << pc->acked.load() << ", dead letters " << letters << ": an item was lost";
    EXPECT_NE(held_error.find("'gone-held'"), std::string::npos) << "the item in hand is not a dead letter with the "
                                                                    "stage's error: '"
                                                                 << held_error << "'";
    bool seen = false;
    for (const auto& st : g.last_report().metrics.stages) {
      if (st.name != "publish:gone-held") continue;
      seen = true;
      EXPECT_EQ(st.errors, 1u);
    }
    EXPECT_TRUE(seen) << "no metrics for the publish stage";
  }
}

// An item the server can never take (over its max_payload, 1 MiB by default) fails the
// graph with an error naming the edge and the limit. It used to go to the retry queue for
// ever, so `sluice bench --cut 1 --item-size 1M` hung without a word.
TEST(JetstreamEdge, AnItemOverTheServersMaxPayloadIsAnErrorNotARetryForEver) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "big", .max_msgs = 100};
  js::ensure_edge(conn, e);
  std::atomic<int> small_sent{0};
  sluice::pipeline p(sluice::from<std::string>([&](sluice::sender<std::string>& out) {
                       if (!out.push(std::string(1000, 'a'))) return;
                       small_sent.fetch_add(1);
                       (void)out.push(std::string(1 << 20, 'b'));  // 1 MiB of data, plus headers
                     }),
                     js::publish<std::string>(conn, e));
  p.start();
  try {
    auto r = p.get_graph().wait_for(30s);
    if (!r) {
      p.get_graph().cancel();
      ADD_FAILURE() << "the publish waited for a message the server can never take";
      try {
        p.get_graph().wait();
      } catch (...) {
      }
    } else {
      ADD_FAILURE() << "the graph ended without an error";
    }
  } catch (const sluice::stage_error& ex) {
    EXPECT_EQ(ex.stage(), "publish:big");
    const std::string what = ex.what();
    EXPECT_NE(what.find("max_payload"), std::string::npos) << what;
    EXPECT_NE(what.find("'big'"), std::string::npos) << what;
    EXPECT_NE(what.find("1048576"), std::string::npos) << what;  // the server's limit
  }
  EXPECT_EQ(small_sent.load(), 1);
}

TEST(JetstreamEdge, UndecodableMessageIsAStageErrorOrUnderSkipTerminatedAndCounted) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "decode", .max_msgs = 100};
  js::ensure_edge(conn, e);
  // Three 3-byte messages first (not a uint32), then five good ones.
  sluice::pipeline(sluice::from<std::string>([](sluice::sender<std::string>& out) {
                     for (int i = 0; i < 3; ++i) out.push(std::string("bad"));
                     for (std::uint32_t i = 0; i < 5; ++i) out.push(js::codec<std::uint32_t>::encode(i));
                   }),
                   js::publish<std::string>(conn, e))
      .run();
  {
    sluice::pipeline strict(js::subscribe<std::uint32_t>(conn, e),
                            sluice::into([](js::delivery<std::uint32_t> d) { d.ack(); }));
    try {
      run_bounded(strict.get_graph(), 20s);
      strict.wait();
      ADD_FAILURE() << "no error";
    } catch (const sluice::stage_error& ex) {
      EXPECT_EQ(ex.stage(), "subscribe:decode");
      EXPECT_NE(std::string(ex.what()).find("does not decode"), std::string::npos) << ex.what();
    }
  }
  auto sc = std::make_shared<js::subscribe_counters>();
  std::vector<std::uint32_t> got;
  sluice::pipeline skipping(js::subscribe<std::uint32_t>(conn, e, {.counters = sc}, {.on_error = sluice::error_policy::skip}),
                            sluice::into([&](js::delivery<std::uint32_t> d) -> bool {
                              got.push_back(d.value());
                              d.ack();
                              return got.size() < 5;
                            }));
  run_bounded(skipping.get_graph(), 20s);
  EXPECT_EQ(sc->undecodable.load(), 3u);
  // Each good one once. Not in order: the strict run nak'ed them (the rest of its fetch),
  // and JetStream redelivers nak'ed messages in no promised order (seen: 1 in ~20 runs).
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::uint32_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(eventually([&] { return js::inspect_edge(conn, e).msgs == 0; }));  // terminated ones are gone too
}

// A subscribe whose consumer is fused (stage_options::fuse) has no buffer: its channel
// reads capacity 0. The stage took that for "no room", never fetched, and spun a core
// until cancelled.
TEST(JetstreamEdge, SubscribeIntoAFusedStageFetchesAndDeliversEveryMessage) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  constexpr int kItems = 100;
  for (const bool fused_map : {false, true}) {
    js::edge_options e{.stream = fused_map ? "fusedmap" : "fusedsink", .max_msgs = 1000};
    js::ensure_edge(conn, e);
    sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) {
                       for (int i = 0; i < kItems; ++i) out.push(i);
                     }),
                     js::publish<int>(conn, e))
        .run();
    std::set<int> got;
    sluice::graph g;
    auto s = js::subscribe<int>(g, conn, e);
    if (fused_map) {
      auto m = g.map("take", s, [](js::delivery<int> d) {
        d.ack();
        return d.value();
      }, {.fuse = true});
      g.sink("sink", m, [&](int v) { return got.insert(v), got.size() < kItems; });
    } else {
      g.sink("sink", s, [&](js::delivery<int> d) {
        got.insert(d.value());
        d.ack();
        return got.size() < kItems;
      }, {.fuse = true});
    }
    run_bounded(g, 30s);
    EXPECT_EQ(got.size(), static_cast<std::size_t>(kItems)) << (fused_map ? "fused map" : "fused sink");
  }
}

// A publish stage cancelled while the stream is full: the messages of its window were
// refused and waiting to be sent again, and they were destroyed with the stage, their
// items in no count (accepted 200, stored 10, dead letters 0). Each is a dead letter now,
// naming the edge: every item accepted is stored or a dead letter.
TEST(JetstreamEdge, ThePublishWindowLeftWhenTheStageIsCancelledIsDeadLetters) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "window", .max_msgs = 10};
  js::ensure_edge(conn, e);
  std::mutex mu;
  int dead = 0, unacknowledged = 0;
  auto pc = std::make_shared<js::publish_counters>();
  sluice::graph g({.on_discard = [&](const sluice::dead_letter& d) {
    std::lock_guard lk(mu);
    ++dead;
    if (const std::string why = error_text(d); !why.empty()) {
      if (why.find("before the server acknowledged it") != std::string::npos) ++unacknowledged;
      EXPECT_NE(why.find("edge 'window'"), std::string::npos) << why;
    }
  }});
  auto [in, s] = g.input<int>("in", {.capacity = 16});
  js::publish<int>(g, s, conn, e, {.window = 32, .counters = pc});
  g.start();
  std::atomic<int> accepted{0};
  std::thread pusher([&, in = in]() mutable {
    for (int i = 0; i < 1000; ++i) {
      if (!in.push(i)) return;
      ++accepted;
    }
  });
  // The stream full, the window full of refused messages, the input full behind it.
  const bool blocked = eventually([&] { return pc->refused.load() > 0 && accepted.load() >= 10 + 32 + 16; }, 30s);
  g.cancel();
  pusher.join();
  EXPECT_THROW(g.wait(), sluice::cancelled);
  ASSERT_TRUE(blocked) << "accepted " << accepted.load() << ", refused " << pc->refused.load();
  const std::uint64_t stored = js::inspect_edge(conn, e).msgs;
  EXPECT_EQ(stored, 10u);
  std::lock_guard lk(mu);
  EXPECT_EQ(stored + static_cast<std::uint64_t>(dead), static_cast<std::uint64_t>(accepted.load()));
  EXPECT_GT(unacknowledged, 0);
  EXPECT_TRUE(g.last_report().balanced());
}

// While the stream refuses, one message asks it again every `retry` (2 ms) and the rest
// of the window waits: each of the window's messages was re-published on its own every
// 2 ms (8,500 to 33,000 refusals a second, 80-130 MB/s of 4 KiB items, while nothing
// could be stored). Once the stream has room, they all go, and nothing is lost.
TEST(JetstreamEdge, WhileTheStreamRefusesOneMessageAsksAgainNotTheWholeWindow) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "refusing", .max_msgs = 10};
  js::ensure_edge(conn, e);
  constexpr int kItems = 200;
  auto pc = std::make_shared<js::publish_counters>();
  sluice::pipeline producer(sluice::from<int>([](sluice::sender<int>& out) {
                              for (int i = 0; i < kItems; ++i) out.push(i);
                            }),
                            js::publish<int>(conn, e, {.window = 64, .counters = pc}));
  producer.start();
  ASSERT_TRUE(eventually([&] { return pc->refused.load() >= 64; }, 30s));
  const auto t0 = clock_type::now();
  const std::uint64_t r0 = pc->refused.load();
  std::this_thread::sleep_for(1s);  // a measuring interval, not synchronisation
  const double per_second = static_cast<double>(pc->refused.load() - r0) / (ms_since(t0) / 1000.0);
  // One asking every 2 ms is 500 a second; the whole window of 64 was about 32,000.
  EXPECT_LT(per_second, 2000.0) << "refusals a second while the stream stayed full";
  std::set<int> got;
  sluice::pipeline consumer(js::subscribe<int>(conn, e), sluice::into([&](js::delivery<int> d) -> bool {
                              got.insert(d.value());
                              d.ack();
                              return got.size() < kItems;
                            }));
  run_bounded(consumer.get_graph(), 60s);
  wait_bounded(producer.get_graph(), 60s);
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kItems));
  EXPECT_EQ(pc->acked.load(), static_cast<std::uint64_t>(kItems));
}

// A stream kept full by a producer and drained slowly by a consumer. Each message stored
// made every refused message waiting to be re-published go at once, and all of them but
// one were refused again: 236 refusals per message stored, 22,000 a second. Each store now
// releases at most two. Counted over the whole run (the first window's refusals included),
// as a ratio, not a rate: the machine's speed moves both counts alike.
TEST(JetstreamEdge, AStreamDrainedSlowlyCostsAFewRefusalsPerMessageStored) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "trickle", .max_msgs = 10};
  js::ensure_edge(conn, e);
  const int items = kSanitized ? 150 : 300;
  auto pc = std::make_shared<js::publish_counters>();
  std::atomic<std::uint64_t> dead{0};
  sluice::graph producer({.on_discard = [&](const sluice::dead_letter&) { dead.fetch_add(1); }});
  auto src = producer.source<int>("source", [&](sluice::sender<int>& out) {
    for (int i = 0; i < items; ++i) out.push(i);
  });
  // A probe every 10 ms: the refusals counted are the released messages', not the probe's.
  js::publish<int>(producer, src, conn, e, {.window = 128, .retry = 10ms, .counters = pc});
  producer.start();
  ASSERT_TRUE(eventually([&] { return pc->refused.load() > 0; }, 30s)) << "the stream never refused";
  std::set<int> got;
  sluice::pipeline consumer(js::subscribe<int>(conn, e, {.batch = 4}, {.capacity = 4}),
                            sluice::into([&](js::delivery<int> d) -> bool {
                              std::this_thread::sleep_for(3ms);  // the slow sink (work, not synchronisation)
                              got.insert(d.value());
                              d.ack();
                              return got.size() < static_cast<std::size_t>(items);
                            }));
  run_bounded(consumer.get_graph(), 120s);
  wait_bounded(producer, 60s);
  EXPECT_EQ(got.size(), static_cast<std::size_t>(items));
  EXPECT_EQ(pc->acked.load() + dead.load(), static_cast<std::uint64_t>(items));  // exact accounting
  EXPECT_EQ(dead.load(), 0u);
  const double per_stored = static_cast<double>(pc->refused.load()) / static_cast<double>(std::max<std::uint64_t>(pc->acked.load(), 1));
  std::printf("refusals %llu, stored %llu: %.2f per message stored\n",
              static_cast<unsigned long long>(pc->refused.load()), static_cast<unsigned long long>(pc->acked.load()),
              per_stored);
  EXPECT_LT(per_stored, 5.0) << "refusals per message stored while a slow consumer drained the stream";
  EXPECT_EQ(pc->resent.load(), pc->refused.load());  // every refused message was published again, once per refusal
}

// A poison message: the sink throws on it under skip, so each delivery is a dead letter
// and nak'ed. It came back at once for ever (446 times in 3 s). From its third delivery on
// it waits 100 ms, then 200 ms, ... before it comes back.
TEST(JetstreamEdge, APoisonMessageDroppedEveryTimeComesBackLaterEachTime) {
  NEED_NATS_SERVER();
  nats_server server;
  auto conn = js::connect(server.url());
  js::edge_options e{.stream = "poison", .max_msgs = 10};
  js::ensure_edge(conn, e);
  sluice::pipeline(sluice::from<int>([](sluice::sender<int>& out) { out.push(3); }), js::publish<int>(conn, e)).run();
  std::mutex mu;
  std::vector<clock_type::time_point> calls;
  sluice::graph g;
  auto s = js::subscribe<int>(g, conn, e);
  g.sink("sink", s, [&](js::delivery<int> d) {
    {
      std::lock_guard lk(mu);
      calls.push_back(clock_type::now());
    }
    throw std::runtime_error("poison " + std::to_string(d.value()));
  }, {.on_error = sluice::error_policy::skip});
  g.start();
  const bool five = eventually([&] {
    std::lock_guard lk(mu);
    return calls.size() >= 5;
  }, 20s);
  g.cancel();
  try {
    g.wait();
  } catch (const sluice::cancelled&) {
  }
  ASSERT_TRUE(five);
  std::lock_guard lk(mu);
  const auto gap_ms = [&](std::size_t i) {
    return std::chrono::duration<double, std::milli>(calls[i] - calls[i - 1]).count();
  };
  // Deliveries 1 and 2 are nak'ed for at once; the 3rd waits 100 ms, the 4th 200 ms (the
  // server holds them back: a lower bound, whatever the machine's speed).
  EXPECT_GE(gap_ms(3), 90.0);
  EXPECT_GE(gap_ms(4), 180.0);
}

}  // namespace
