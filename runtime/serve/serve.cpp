// sluice::serve: metrics::serve, the live view of a running graph over HTTP (cpp-httplib).
//
// Threads, all named "sluice-http", none a stage: httplib's accept loop (the listener),
// which hands each connection to the intake (intake.hpp) at once; the intake's reader,
// which collects each request head without blocking, with a deadline and a size cap; and
// kWorkers workers, which answer complete requests through httplib's request handling
// and take the snapshots. Nothing here is ever waited on by the graph: g.snapshot() reads
// the stages' counters without blocking them, so a slow client, a flood of requests or
// stop() touch only these threads.
#include <arpa/inet.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "../text.hpp"
#include "intake.hpp"
#include "sluice/detail/graph_view.hpp"
#include "sluice/graph.hpp"
#include "sluice/metrics.hpp"

namespace sluice::metrics {
namespace {

constexpr std::size_t kWorkers = 2;

void name_this_thread() { pthread_setname_np(pthread_self(), "sluice-http"); }

std::string_view trimmed(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Whether an Accept-Encoding value (RFC 9110 12.5.3) takes gzip: "gzip" (or its alias
// "x-gzip") listed with a q above 0, or, when it is not listed, "*" with a q above 0.
// "gzip;q=0" refuses it (it was compressed anyway: a substring match, which also took
// "x-gzip-not"). A q that does not parse counts as 1, as no q at all.
bool accepts_gzip(std::string_view header) {
  std::optional<bool> named, any;
  while (!header.empty()) {
    const std::size_t comma = header.find(',');
    std::string_view element = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    const std::size_t semi = element.find(';');
    const std::string_view coding = trimmed(element.substr(0, semi));
    double q = 1;
    for (std::string_view params = semi == std::string_view::npos ? std::string_view() : element.substr(semi + 1);
         !params.empty();) {
      const std::size_t next = params.find(';');
      const std::string_view param = trimmed(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
      if (param.size() < 2 || !detail::equal_ignoring_case(param.substr(0, 2), "q=")) continue;
      const std::string_view value = trimmed(param.substr(2));
      double parsed = 1;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);  // never a locale's comma
      if (ec == std::errc() && end == value.data() + value.size()) q = parsed;
    }
    if (detail::equal_ignoring_case(coding, "gzip") || detail::equal_ignoring_case(coding, "x-gzip")) {
      named = named.value_or(false) || q > 0;
    } else if (coding == "*") {
      any = q > 0;
    }
  }
  return named ? *named : any.value_or(false);
}

// httplib's task queue, made to run each task at once on the accept loop's thread: the
// task is our process_and_close_socket(), which only hands the socket to the intake.
class at_once final : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

// httplib's server with its connection handling replaced: httplib accepts, the intake reads
// each request head, and httplib's process_request() answers it (protected, so reachable
// from here). process_and_close_socket is httplib's private virtual; overriding it is
// how its own SSLServer plugs in.
class live_http final : public httplib::Server {
 public:
  void set_intake(serve_detail::intake* in) noexcept { intake_ = in; }

  // Answers one request (one per connection: the intake closes the socket after it). A
  // Range header is ignored: every answer is a whole, fresh snapshot, and httplib would
  // otherwise build one part per range asked for (thousands of copies from one 8 KiB head).
  void answer(httplib::Stream& strm) {
    bool closed = false;
    process_request(strm, /*close_connection=*/true, closed, [](httplib::Request& req) { req.ranges.clear(); });
  }

 private:
  bool process_and_close_socket(::socket_t sock) override {
    intake_->take(sock);
    return true;
  }
  serve_detail::intake* intake_ = nullptr;
};

struct parsed_address {
  std::string host;
  int port = 0;
};

parsed_address parse_address(const std::string& address) {
  auto bad = [&](const char* why) {
    return std::invalid_argument("sluice::metrics::serve: address '" + address + "': " + why +
                                 " (expected HOST:PORT, e.g. 127.0.0.1:9464, [::1]:0)");
  };
  parsed_address a;
  std::string port_text;
  if (address.find("://") != std::string::npos) throw bad("an address, not a URL: no scheme like http://");
  if (address.find('/') != std::string::npos) throw bad("an address, not a URL: no path");
  if (!address.empty() && address.front() == '[') {
    const auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      throw bad("an IPv6 host in brackets must be followed by :PORT");
    }
    a.host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const auto colon = address.rfind(':');
    if (colon == std::string::npos) throw bad("no port");
    a.host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
    if (a.host.find(':') != std::string::npos) throw bad("an IPv6 host must be in brackets");
  }
  if (a.host.empty()) throw bad("no host");
  // A host whose last label is a number is an IPv4 address to resolvers and browsers
  // alike (no DNS name ends in one), so one that is not a valid address is a typo, not a
  // name to look up: 999.1.1.1 was "does not resolve", found only at the first run.
  if (const std::string last = a.host.substr(a.host.rfind('.') + 1);
      a.host.find_first_not_of("0123456789.") == std::string::npos && !last.empty()) {
    in_addr v4{};
    if (::inet_aton(a.host.c_str(), &v4) == 0) throw bad("the host is not an IPv4 address (each part 0 to 255)");
  }
  if (port_text.empty() || port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) {
    throw bad("the port must be a number from 0 to 65535");
  }
  a.port = std::stoi(port_text);
  if (a.port > 65535) throw bad("the port must be a number from 0 to 65535");
  return a;
}

// ---- the Host guard ---------------------------------------------------------------
// A server on a loopback address is reachable only from this machine, but a web page from
// anywhere can still reach it through the visitor's browser by DNS rebinding: its own name,
// re-pointed at 127.0.0.1, makes the live view "same origin" for the page's scripts. The
// browser then still sends that name as Host. So a loopback server answers only requests
// whose Host names this machine: localhost, a *.localhost name, or a loopback address.
// A request without Host (HTTP/1.0, not a browser) is answered; an HTTP/1.1 one is 400. A server bound to another
// address is meant to be reached by whatever names the machine has, and checks nothing.

// IPv4 in any of the numeric forms a URL may carry and a client may send as typed
// (127.0.0.1, 127.1, 0x7f000001, 2130706433, 0177.0.0.1: inet_aton's, which getaddrinfo
// takes too). None of them is a name DNS could re-point: a browser reads a host whose last
// label is a number as an IPv4 address. Only digits, hex letters, x and dots are looked at
// (inet_aton would take "127.0.0.1 evil" too).
bool is_loopback_ip(const std::string& h) {
  const bool numeric = !h.empty() && h.find_first_not_of("0123456789abcdefABCDEFxX.") == std::string::npos;
  in_addr v4{};
  if (numeric && ::inet_aton(h.c_str(), &v4) != 0) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, h.c_str(), &v6) != 1) return false;
  // ::1, or an IPv4-mapped loopback address (::ffff:127.x.y.z).
  return IN6_IS_ADDR_LOOPBACK(&v6) != 0 || (IN6_IS_ADDR_V4MAPPED(&v6) != 0 && v6.s6_addr[12] == 127);
}

// Whether the socket is bound to a loopback address (127.0.0.0/8, ::1, ::ffff:127.x):
// what the text of an address says is not enough, as getaddrinfo also takes 127.1,
// 0x7f000001, 2130706433 and names /etc/hosts maps to 127.0.1.1.
bool bound_to_loopback(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  if (ss.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&v6) != 0 || (IN6_IS_ADDR_V4MAPPED(&v6) != 0 && v6.s6_addr[12] == 127);
  }
  return false;
}

// A host name as compared: lower case, without a final dot ("LocalHost." is "localhost").
std::string host_key(std::string h) {
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::tolower(c); });
  if (!h.empty() && h.back() == '.') h.pop_back();
  return h;
}

bool is_loopback_name(std::string name) {
  const std::string h = host_key(std::move(name));
  const std::string suffix = ".localhost";
  return h == "localhost" ||
         (h.size() > suffix.size() && h.compare(h.size() - suffix.size(), suffix.size(), suffix) == 0) ||
         is_loopback_ip(h);
}

// The name in a Host header value: "[::1]:9464" -> "::1", "localhost:80" -> "localhost".
std::string host_name_of(const std::string& value) {
  if (!value.empty() && value.front() == '[') {
    const auto close = value.find(']');
    return close == std::string::npos ? value : value.substr(1, close - 1);
  }
  const auto colon = value.find(':');
  return colon == std::string::npos ? value : value.substr(0, colon);
}

std::string live_page() {
  std::string page;
  page.reserve(detail::kGraphViewJs.size() + detail::kGraphViewCss.size() + 2048);
  page +=
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>sluice live view</title>\n<style>\n"
      "body { margin: 16px 20px; background: #fff; }\n"
      "h1 { font: bold 20px \"DejaVu Sans\", Verdana, sans-serif; margin: 0 0 2px 0; }\n"
      "#conn { font: 13px \"DejaVu Sans\", Verdana, sans-serif; color: #868e96; margin-bottom: 4px; }\n"
      "#conn.down { color: #c92a2a; font-weight: bold; }\n";
  page += detail::kGraphViewCss;
  page +=
      "</style></head><body>\n"
      "<h1>sluice live view</h1>\n"
      "<div id=\"conn\">connecting\xE2\x80\xA6</div>\n"
      "<div id=\"graph\"></div>\n"
      "<script>\n";
  page += detail::kGraphViewJs;
  page +=
      "\n(function () {\n"
      "  var view = SluiceGraphView.create(document.getElementById(\"graph\"));\n"
      "  var conn = document.getElementById(\"conn\");\n"
      // Once the server stops answering (most often: the run ended and the process with
      // it), the last snapshot stays, says when it was taken, and the page asks again
      // less and less often (up to every 30 s) instead of failing every second.
      "  var last = null, wait = 1000;\n"
      "  function tick() {\n"
      "    fetch(\"snapshot.json\", { cache: \"no-store\" })\n"
      "      .then(function (r) { if (!r.ok) throw new Error(\"HTTP \" + r.status); return r.json(); })\n"
      "      .then(function (s) {\n"
      "        last = new Date();\n"
      "        wait = 1000;\n"
      // The server answered: a snapshot the page cannot draw is said as such, not as a
      // server out of reach (and polling goes on at its pace).
      "        try {\n"
      "          view.update(s);\n"
      "        } catch (e) {\n"
      "          conn.className = \"down\";\n"
      "          conn.textContent = \"the server answered, but its snapshot could not be drawn (\" + e.message + \"); \" +\n"
      "            \"raw: /snapshot.json, /metrics\";\n"
      "          return;\n"
      "        }\n"
      "        conn.className = \"\";\n"
      "        conn.textContent = \"updated \" + last.toLocaleTimeString() + \" \\u00b7 refreshes every second \\u00b7 \" +\n"
      "          \"raw: /snapshot.json, /metrics\";\n"
      "      })\n"
      "      .catch(function (e) {\n"
      "        wait = Math.min(wait * 2, 30000);\n"
      "        conn.className = \"down\";\n"
      "        conn.textContent = (last ? \"the server stopped answering (\" + e.message + \"): the run has ended, or its \" +\n"
      "          \"process has; shown: its last snapshot, from \" + last.toLocaleTimeString() : \"not reachable: \" + e.message) +\n"
      "          \" \\u00b7 asking again in \" + wait / 1000 + \" s\";\n"
      "      })\n"
      "      .then(function () { setTimeout(tick, wait); });\n"
      "  }\n"
      "  tick();\n"
      "})();\n"
      "</script>\n</body></html>\n";
  return page;
}

}  // namespace

struct server::state {
  live_http http;
  std::unique_ptr<serve_detail::intake> intake;
  std::thread listener;
  std::atomic<bool> listener_done{false};
  std::string host;
  std::uint16_t port = 0;
  std::mutex stop_mu;              // stop() from two threads at once: one stops, the other waits for it
  std::atomic<bool> running{false};  // written under stop_mu (and before the server is handed out)
  bool loopback = false;  // host is a loopback name or address
};

server::server() noexcept = default;
server::server(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
server::server(server&&) noexcept = default;
server& server::operator=(server&& other) noexcept {
  if (this != &other) {
    stop();
    state_ = std::move(other.state_);
  }
  return *this;
}
server::~server() { stop(); }

std::uint16_t server::port() const noexcept { return state_ ? state_->port : 0; }

const std::string& server::host() const noexcept {
  static const std::string none;
  return state_ ? state_->host : none;
}

std::string server::address() const {
  if (!state_) return {};
  const bool v6 = state_->host.find(':') != std::string::npos;
  return (v6 ? "[" + state_->host + "]" : state_->host) + ":" + std::to_string(state_->port);
}

std::string server::url() const { return state_ ? "http://" + address() + "/" : std::string(); }

bool server::running() const noexcept { return state_ && state_->running; }

bool server::loopback_only() const noexcept { return state_ && state_->loopback; }

void server::stop() noexcept {
  if (!state_) return;
  // Two threads stopping at once (a shutdown thread and the owner's destructor) both
  // joined the listener: a double pthread_join, which hung.
  const std::lock_guard lock(state_->stop_mu);
  if (!state_->running) return;
  // Closes the listening socket and joins the accept loop: no connection comes in after.
  // Then the intake closes what waits and joins its threads once the answers in progress
  // are written (each within kWriteDeadline).
  state_->http.stop();
  if (state_->listener.joinable()) state_->listener.join();
  state_->intake->stop();
  state_->running = false;
}

void check_address(const std::string& address) { (void)parse_address(address); }

server serve(graph& g, std::string address) {
  const parsed_address a = parse_address(address);
  // httplib's Server constructor sets SIGPIPE to SIG_IGN for the whole process, so that its
  // own writes to a closed socket return EPIPE. Every write here goes through the intake's
  // stream with MSG_NOSIGNAL instead, so the embedder's disposition is put back: a tool
  // whose stdout pipe closes must still die of SIGPIPE (or see EPIPE) as it would without
  // the live view.
  struct sigaction sigpipe_before {};
  ::sigaction(SIGPIPE, nullptr, &sigpipe_before);
  auto st = std::make_unique<server::state>();
  ::sigaction(SIGPIPE, &sigpipe_before, nullptr);
  st->host = a.host;
  live_http& http = st->http;
  st->intake = std::make_unique<serve_detail::intake>([&http](httplib::Stream& s) { http.answer(s); }, kWorkers);
  http.set_intake(st->intake.get());

  http.new_task_queue = [] { return new at_once; };
  // httplib's default also sets SO_REUSEPORT, which would let a second server bind a port
  // that is in use; SO_REUSEADDR alone only allows rebinding after TIME_WAIT.
  // The callback also notes the socket: httplib calls it for each socket it tries, before
  // that socket's bind and listen, so after a bind succeeds the last one noted listens.
  auto listening = std::make_shared<::socket_t>(-1);
  http.set_socket_options([listening](::socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listening = sock;
  });
  http.set_payload_max_length(serve_detail::kMaxBody);

  // Read-only: GET (and HEAD, which httplib answers from the GET handlers) and nothing
  // else, refused before any body is read.
  auto refuse_method = [](httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("405 method not allowed: this server is read-only (GET /, /metrics, /snapshot.json)\n",
                    "text/plain; charset=utf-8");
  };
  // Whether Host is checked, and the bound name it may also be: decided once bound, from
  // the socket's own address (below), before the listener thread starts.
  struct host_guard {
    bool on = false;
    std::string bound_name;  // the host as given, as host_key() ("myhost" that maps to 127.0.1.1)
  };
  auto guard = std::make_shared<host_guard>();
  http.set_pre_routing_handler([refuse_method, guard](const httplib::Request& req, httplib::Response& res) {
    if (req.method != "GET" && req.method != "HEAD") {
      refuse_method(res);
      return httplib::Server::HandlerResponse::Handled;
    }
    // httplib reads no body for a GET, so its payload limit never applies: a body over
    // kMaxBody (declared, or of unknown length: chunked) is refused here, as documented.
    // Two Content-Lengths that differ leave where the request ends in doubt (RFC 9112,
    // 6.3): 400, as for two Hosts below (they were answered 200).
    for (std::size_t i = 1; i < req.get_header_value_count("Content-Length"); ++i) {
      if (req.get_header_value("Content-Length", i) != req.get_header_value("Content-Length")) {
        res.status = 400;
        res.set_content("400 bad request: two Content-Length headers that differ\n", "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    // A Content-Length that is not a number ("-1", "5x", empty) is a bad request, not a
    // large body (RFC 9112, 6.3: it was answered 413).
    if (req.has_header("Content-Length")) {
      const std::string len = req.get_header_value("Content-Length");
      if (len.empty() || len.find_first_not_of("0123456789") != std::string::npos) {
        res.status = 400;
        res.set_content("400 bad request: Content-Length is not a number\n", "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (req.has_header("Transfer-Encoding") || req.has_header("Content-Length")) {
      const std::string len = req.get_header_value("Content-Length");
      const bool small = !req.has_header("Transfer-Encoding") && !len.empty() && len.size() <= 5 &&
                         len.find_first_not_of("0123456789") == std::string::npos &&
                         std::stoul(len) <= serve_detail::kMaxBody;
      if (!small) {
        res.status = 413;
        res.set_content("413 content too large: a GET here takes no body (at most " +
                            std::to_string(serve_detail::kMaxBody) + " bytes, with a Content-Length)\n",
                        "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    // More than one Host is a bad request (RFC 9110, 7.2): which one the guard judged and
    // which one a proxy in between would route by could differ.
    if (req.get_header_value_count("Host") > 1) {
      res.status = 400;
      res.set_content("400 bad request: more than one Host header\n", "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    // An HTTP/1.1 request must carry a Host (RFC 9112, 3.2: a server answers one without
    // it 400). Only HTTP/1.0 may leave it out; such a request got 200 past the guard.
    if (req.version != "HTTP/1.0" && !req.has_header("Host")) {
      res.status = 400;
      res.set_content("400 bad request: an HTTP/1.1 request needs a Host header\n", "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool has_host = guard->on && req.has_header("Host");  // none: HTTP/1.0, never a browser
    const std::string host = has_host ? req.get_header_value("Host") : std::string();
    const std::string name = host_name_of(host);
    if (has_host && !is_loopback_name(name) && host_key(name) != guard->bound_name) {
      res.status = 403;
      std::string named = host.substr(0, 200);
      for (char& c : named) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
      }
      res.set_content("403 forbidden: Host '" + named +
                          "' is not this machine. This live view listens on a loopback address and answers "
                          "only Host localhost, *.localhost or a loopback IP (a guard against DNS "
                          "rebinding); to serve it under other names, bind another address.\n",
                      "text/plain; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    // httplib compresses with brotli, at its highest quality, whenever a client offers br,
    // as every browser does: 30-100x gzip's time, 0.4-0.7 s for the snapshot of a
    // 300-stage graph and 7-18 s for 3,000 stages, before the first byte is written (so no
    // write deadline covers it, and stop() waited for it). Offer it gzip only. The request
    // object is httplib's own, not const (it hands handlers a const view).
    if (req.has_header("Accept-Encoding")) {
      const bool gzip = accepts_gzip(req.get_header_value("Accept-Encoding"));
      auto& headers = const_cast<httplib::Request&>(req).headers;
      headers.erase("Accept-Encoding");
      if (gzip) headers.emplace("Accept-Encoding", "gzip");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // "Expect: 100-continue" on another method gets the 405 at once, not a "100 Continue"
  // that invites the body first.
  http.set_expect_100_continue_handler([refuse_method](const httplib::Request& req, httplib::Response& res) {
    if (req.method == "GET" || req.method == "HEAD") return 100;
    refuse_method(res);
    return 405;
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(std::to_string(res.status) + (res.status == 404 ? " not found: try /, /metrics or /snapshot.json\n"
                                                                      : " request refused\n"),
                      "text/plain; charset=utf-8");
    }
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content("500 could not take a snapshot\n", "text/plain; charset=utf-8");
  });
  http.set_default_headers({{"Cache-Control", "no-store"}, {"X-Content-Type-Options", "nosniff"}});

  graph* gp = &g;
  http.Get("/metrics", [gp](const httplib::Request&, httplib::Response& res) {
    res.set_content(to_prometheus(gp->snapshot()), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/snapshot.json", [gp](const httplib::Request&, httplib::Response& res) {
    res.set_content(to_json(gp->snapshot()), "application/json");
  });
  http.Get("/", [page = live_page()](const httplib::Request&, httplib::Response& res) {
    // The page talks to this server only: no other origin, no network.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; img-src data:");
    res.set_content(page, "text/html; charset=utf-8");
  });
  // httplib announces "Accept-Ranges: bytes"; every answer here is whole (Range is
  // ignored, above), so say so.
  // (Replaced, not added: on a HEAD httplib has set its own by now, and set_header
  // appends; the answer carried both.)
  http.set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
    res.headers.erase("Accept-Ranges");
    res.set_header("Accept-Ranges", "none");
  });

  errno = 0;
  int port = 0;
  if (a.port == 0) {
    port = http.bind_to_any_port(a.host);
    if (port <= 0) port = -1;
  } else {
    port = http.bind_to_port(a.host, a.port) ? a.port : -1;
  }
  if (port < 0) {
    const int err = errno;
    std::string why = err != 0 ? std::string(": ") + std::strerror(err) : std::string();
    if (err == 0) {
      // No errno: the name did not resolve (cpp-httplib's getaddrinfo failed). Ask again
      // for its reason (999.1.1.1, nosuchhost.invalid).
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_PASSIVE;
      addrinfo* found = nullptr;
      const int rc = ::getaddrinfo(a.host.c_str(), nullptr, &hints, &found);
      if (rc != 0) {
        why = std::string(": the host '") + a.host + "' does not resolve (" + ::gai_strerror(rc) + ")";
      } else {
        ::freeaddrinfo(found);
      }
    }
    throw std::runtime_error("sluice::metrics::serve: cannot listen on " + address + why);
  }
  // The listen queue: httplib's is 5 (CPPHTTPLIB_LISTEN_BACKLOG, which the compiled
  // library Debian ships does not see), so a burst of connections (a dashboard's tabs, a
  // scraper fleet) overflowed it and waited out SYN retries of a second each. A second
  // listen() on a listening socket sets its queue anew.
  if (*listening >= 0) (void)::listen(*listening, serve_detail::kListenBacklog);
  guard->on = *listening >= 0 ? bound_to_loopback(*listening) : is_loopback_name(a.host);
  guard->bound_name = host_key(a.host);
  st->loopback = guard->on;
  st->port = static_cast<std::uint16_t>(port);
  std::atomic<bool>& done = st->listener_done;
  try {
    detail::testing::take_thread_budget();
    st->listener = std::thread([&http, &done] {
      name_this_thread();
      http.listen_after_bind();
      done.store(true);  // seq_cst: read by the wait below
    });
  } catch (const std::system_error& e) {  // no thread to be had (a thread or memory limit)
    // httplib closes its socket only in stop() of a server whose accept loop ran: the bound,
    // listening socket stayed open, connections to it were accepted by the kernel and never
    // answered, and every later serve() at that address failed "Address already in use".
    if (*listening >= 0) {
      ::close(*listening);
      *listening = -1;
    }
    throw std::system_error(e.code(), "sluice::metrics::serve: cannot start the thread that listens on " + address);
  }
  st->running = true;
  // httplib's stop() does nothing until the accept loop has begun: wait for it here, so
  // that a server stopped right after serve() returns cannot be left listening.
  while (!http.is_running() && !done.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  return server(std::move(st));
}

}  // namespace sluice::metrics
