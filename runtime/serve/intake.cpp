// runtime/serve/intake.cpp — the live view's connection intake (intake.hpp says what it
// guarantees), and intake_stream, the httplib::Stream a worker answers through.
#include "intake.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

namespace sluice::serve_detail {
namespace {

using clock = std::chrono::steady_clock;

void name_this_thread() { pthread_setname_np(pthread_self(), "sluice-http"); }

// Milliseconds from now to `t` for poll(): rounded up (a wait never ends before t), 0 once
// it passed, and capped so that a far deadline cannot overflow an int.
int ms_until(clock::time_point t) {
  const auto left = t - clock::now();
  if (left <= clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return static_cast<int>(std::min<std::int64_t>(ms, 60'000));
}

// Waits until fd is ready for `events` (or hung up, or in error) or `deadline` passes.
bool wait_ready(int fd, short events, clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, ms_until(deadline));
    if (n > 0) return true;
    if (n == 0) {
      if (clock::now() >= deadline) return false;
      continue;  // woke early (the cap in ms_until)
    }
    if (errno != EINTR) return false;
  }
}

enum class head_state { incomplete, complete, malformed };

// Whether the head (request line and headers) has ended: at its first empty line,
// "\r\n\r\n". A line ended by LF or CR alone makes it malformed at once, before its end:
// httplib takes only CRLF, and a head such as "...\r\n\n" or "...\n\r\n" had it read on
// until the deadline (a worker held for a second by each such request; two of them
// answered nobody else) or had the reader drop it without an answer. `from`: the bytes
// before it were looked at already.
// (What follows the head in the same read, a body or another request, is not looked at.)
head_state look_at_head(std::string_view bytes, std::size_t from) {
  const std::size_t end = bytes.find("\r\n\r\n", from >= 3 ? from - 3 : 0);
  const std::size_t limit = end == std::string_view::npos ? bytes.size() : end + 4;
  for (std::size_t i = std::max<std::size_t>(from, 1) - 1; i < limit; ++i) {
    const bool lf_alone = bytes[i] == '\n' && (i == 0 || bytes[i - 1] != '\r');
    const bool cr_alone = bytes[i] == '\r' && i + 1 < limit && bytes[i + 1] != '\n';
    if (lf_alone || cr_alone) return head_state::malformed;
  }
  return end != std::string_view::npos ? head_state::complete : head_state::incomplete;
}

// Whether every header line of a complete head is "NAME:VALUE" with NAME a token (RFC
// 9110 5.1): no space before the colon, no line without one, no line folded onto the one
// before (obs-fold). RFC 9112 5.1 has a server refuse such a head with 400; httplib took
// "Host : evil.com" as some other field, so the Host check (a guard against DNS
// rebinding) never saw it and the page was served to any Host.
bool fields_well_formed(std::string_view bytes) {
  const std::size_t end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) return true;
  auto tchar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  };
  for (std::size_t line = bytes.find("\r\n") + 2; line < end + 2;) {
    const std::size_t next = bytes.find("\r\n", line);
    std::size_t k = line;
    while (k < next && tchar(bytes[k])) ++k;
    if (k == line || k == next || bytes[k] != ':') return false;
    line = next + 2;
  }
  return true;
}

// Takes every Range header out of a complete head: every answer is whole, and httplib,
// which parses Range before the server can set it aside, answered some of them (a
// descending range, a unit other than bytes) 416 instead.
void drop_range_headers(std::string& bytes) {
  const std::size_t end = bytes.find("\r\n\r\n");
  if (end == std::string::npos) return;
  std::size_t line = bytes.find("\r\n") + 2;  // the first header line, after the request line
  std::size_t head_end = end + 2;               // just past the last header line's CRLF
  while (line < head_end) {
    const std::size_t next = bytes.find("\r\n", line) + 2;
    static constexpr std::string_view kName = "range";
    std::size_t k = 0;
    while (k < kName.size() && line + k < next &&
           static_cast<char>(std::tolower(static_cast<unsigned char>(bytes[line + k]))) == kName[k]) {
      ++k;
    }
    std::size_t colon = line + k;
    while (k == kName.size() && colon < next && (bytes[colon] == ' ' || bytes[colon] == '\t')) ++colon;
    if (k == kName.size() && colon < next && bytes[colon] == ':') {
      bytes.erase(line, next - line);
      head_end -= next - line;
    } else {
      line = next;
    }
  }
}

void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ip.clear();
  port = 0;
  if (rc != 0) return;
  char text[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
    if (::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text) != nullptr) ip = text;
    port = ntohs(v4->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
    if (::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text) != nullptr) ip = text;
    port = ntohs(v6->sin6_port);
  }
}

// What a worker reads and writes: the bytes the reader took in, then the socket (non-
// blocking; every read's wait bounded by the request's deadline). Writes never wait: what
// the socket does not take at once is kept (unsent()), and the reader sends it (intake::
// send_rest): a client that does not read its answer held a worker for the whole
// kWriteDeadline, and two such clients every two seconds kept both workers from answering
// anyone else (a probe's scrape took 15 s, the page got no answer).
class intake_stream final : public httplib::Stream {
 public:
  intake_stream(int fd, std::string taken, clock::time_point read_by)
      : fd_(fd), taken_(std::move(taken)), read_by_(read_by) {}

  bool is_readable() const override { return pos_ < taken_.size() || wait_ready(fd_, POLLIN, read_by_); }
  bool is_writable() const override { return !failed_; }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ < taken_.size()) {
      const std::size_t k = std::min(size, taken_.size() - pos_);
      std::memcpy(ptr, taken_.data() + pos_, k);
      pos_ += k;
      return static_cast<ssize_t>(k);
    }
    if (more_ >= kMaxBody) return -1;  // the request goes on past what any endpoint reads
    for (;;) {
      if (!wait_ready(fd_, POLLIN, read_by_)) return -1;
      const ssize_t n = ::recv(fd_, ptr, std::min(size, kMaxBody - more_), 0);
      if (n >= 0) {
        more_ += static_cast<std::size_t>(n);
        return n;
      }
      if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    }
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (failed_) return -1;
    std::size_t sent = 0;
    while (rest_.empty() && sent < size) {
      // MSG_NOSIGNAL: a client gone mid-answer is an error here, never a SIGPIPE.
      const ssize_t n = ::send(fd_, ptr + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      failed_ = true;
      return -1;
    }
    if (sent < size) {
      if (rest_.size() + (size - sent) > kMaxAnswerKept) {  // no answer is that large: give up on it
        failed_ = true;
        return -1;
      }
      try {
        rest_.append(ptr + sent, size - sent);
      } catch (...) {
        failed_ = true;
        return -1;
      }
    }
    return static_cast<ssize_t>(size);
  }
  // What the socket did not take yet (the reader sends it), and whether a write failed.
  [[nodiscard]] std::string& unsent() noexcept { return rest_; }
  [[nodiscard]] bool failed() const noexcept { return failed_; }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(fd_, false, ip, port); }
  ::socket_t socket() const override { return fd_; }

 private:
  const int fd_;
  const std::string taken_;
  std::size_t pos_ = 0;   // of taken_, handed to httplib
  std::size_t more_ = 0;  // bytes read from the socket after taken_
  const clock::time_point read_by_;
  std::string rest_;     // written, not yet taken by the socket
  bool failed_ = false;  // the client went away, or the answer passed kMaxAnswerKept
};

// An answer the reader gives itself, sent once without waiting (a client that does not
// read it loses it).
void refuse(int fd, std::string_view status, std::string_view body) {
  const std::string answer = "HTTP/1.1 " + std::string(status) +
                             "\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             "Content-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + std::string(body);
  (void)!::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}
// A head longer than kMaxHead.
void refuse_too_large(int fd) {
  refuse(fd, "431 Request Header Fields Too Large",
         "431 request too large: the request line and headers must fit in 8 KiB\n");
}
// A head with a line not ended by CRLF.
void refuse_malformed(int fd) {
  refuse(fd, "400 Bad Request", "400 bad request: every line of the request head must end with CRLF\n");
}
// A head with a header line that is not NAME:VALUE (fields_well_formed).
void refuse_bad_field(int fd) {
  refuse(fd, "400 Bad Request",
         "400 bad request: every header line must be NAME: VALUE, with no space before the colon and no folded line\n");
}

enum class progress { waiting, complete, too_large, malformed, bad_field, gone };

// Reads what fd has now into r.bytes (non-blocking), up to kMaxHead in all.
progress read_more(int fd, std::string& bytes) {
  char buf[4096];
  for (;;) {
    const std::size_t room = kMaxHead - bytes.size();
    if (room == 0) return progress::too_large;
    const ssize_t n = ::recv(fd, buf, std::min(room, sizeof buf), 0);
    if (n > 0) {
      const std::size_t before = bytes.size();
      bytes.append(buf, static_cast<std::size_t>(n));
      switch (look_at_head(bytes, before)) {
        case head_state::complete:
          if (!fields_well_formed(bytes)) return progress::bad_field;
          drop_range_headers(bytes);
          return progress::complete;
        case head_state::malformed:
          return progress::malformed;
        case head_state::incomplete:
          continue;
      }
      continue;
    }
    if (n == 0) return progress::gone;  // closed before its head was complete
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return progress::waiting;
    return progress::gone;
  }
}

// Reads and drops what a lingering connection's client sent, counting it in `dropped`.
// True once the client has closed, the connection failed, or it sent more than
// kMaxLingerBytes (a client sending without end is not read for ever): it is closed then.
bool client_done(int fd, std::size_t& dropped) {
  char buf[16384];
  while (dropped <= kMaxLingerBytes) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      dropped += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return true;
    if (errno == EINTR) continue;
    return errno != EAGAIN && errno != EWOULDBLOCK;
  }
  return true;
}

// Sends what fd's socket takes now of bytes[sent..] (never waits). more: the socket is
// full; failed: the client went away.
enum class send_state { done, more, failed };
send_state send_some(int fd, const std::string& bytes, std::size_t& sent) {
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return send_state::more;
    return send_state::failed;
  }
  return send_state::done;
}

}  // namespace

intake::intake(answer_fn answer, std::size_t workers) : answer_(std::move(answer)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    throw std::system_error(errno, std::generic_category(), "sluice::metrics::serve: eventfd");
  }
  try {
    reader_ = std::thread([this] { read_loop(); });
    for (std::size_t i = 0; i < workers; ++i) workers_.emplace_back([this] { work_loop(); });
  } catch (const std::system_error& e) {  // no thread to be had (a thread or memory limit)
    const std::size_t started = workers_.size() + (reader_.joinable() ? 1 : 0);
    stop();
    throw std::system_error(e.code(), "sluice::metrics::serve: cannot start its " + std::to_string(workers + 1) +
                                          " threads (" + std::to_string(started) + " started)");
  } catch (...) {
    stop();
    throw;
  }
}

void intake::take(int fd) noexcept { give_to_reader(inbox_, fd); }

void intake::give_to_reader(std::vector<int>& list, int fd) noexcept {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      try {
        list.push_back(fd);
        fd = -1;
      } catch (...) {  // no memory for one int: closed here instead
      }
    }
  }
  if (fd >= 0) {
    ::close(fd);
    return;
  }
  wake_reader();
}

void intake::wake_reader() noexcept {
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void intake::stop() noexcept {
  std::call_once(stopped_, [&] {
    std::vector<int> unread;
    std::deque<request> unanswered;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      unread.swap(inbox_);
      unanswered.swap(queue_);
    }
    for (int fd : unread) ::close(fd);
    for (auto& r : unanswered) ::close(r.fd);
    wake_reader();
    work_cv_.notify_all();
    // The workers first: each finishes the answer it is writing (its writes never wait),
    // and hands what the socket did not take to the reader, which finishes sending every
    // such answer (each within its write deadline) once they are all in.
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    {
      std::lock_guard lock(mu_);
      workers_done_ = true;
    }
    wake_reader();
    if (reader_.joinable()) reader_.join();
    // Answered after the reader's last round (a worker that saw stopping_ closed its own).
    for (const int fd : closing_) ::close(fd);
    closing_.clear();
    for (const auto& u : sending_in_) ::close(u.fd);
    sending_in_.clear();
    ::close(wake_fd_);
  });
}

void intake::close_gracefully(int fd) noexcept {
  ::shutdown(fd, SHUT_WR);  // the client reads the answer to its end, then the end
  give_to_reader(closing_, fd);
}

void intake::hand_over(request&& r) {
  int dropped = -1;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped = r.fd;
    } else {
      if (queue_.size() >= kMaxQueued) {
        dropped = queue_.front().fd;  // the oldest: its client waited longest already
        queue_.pop_front();
      }
      queue_.push_back(std::move(r));
    }
  }
  if (dropped >= 0) ::close(dropped);
  work_cv_.notify_one();
}

void intake::read_loop() {
  name_this_thread();
  std::deque<request> waiting;  // in the order taken, so the front's deadline is the earliest
  struct closing {
    int fd;
    clock::time_point deadline;
    std::size_t dropped = 0;  // bytes read and dropped since
  };
  std::deque<closing> lingering;  // in the order closed: the front's deadline is the earliest
  std::deque<unsent> sending;  // answers the reader finishes sending (send_rest), oldest first
  std::vector<pollfd> polled;
  std::vector<int> fresh;
  std::vector<int> answered;
  std::vector<unsent> to_send;
  // fd's write side is shut down: it is closed once the client closes, or at the deadline
  // (or, past kMaxLingering, when it is the oldest: see the top of the loop).
  auto linger = [&](int fd, clock::time_point now) { lingering.push_back(closing{fd, now + kLingerDeadline, 0}); };
  // What a read of r found; a request still waiting for its head goes to `keep`.
  auto settle = [&](request&& r, progress p, clock::time_point now, std::deque<request>& keep) {
    switch (p) {
      case progress::complete:
        hand_over(std::move(r));
        return;
      case progress::too_large:
        refuse_too_large(r.fd);
        break;
      case progress::malformed:
        refuse_malformed(r.fd);
        break;
      case progress::bad_field:
        refuse_bad_field(r.fd);
        break;
      case progress::gone:
        ::close(r.fd);
        return;
      case progress::waiting:
        if (now >= r.deadline) {
          ::close(r.fd);  // too slow: dropped without an answer
        } else {
          keep.push_back(std::move(r));
        }
        return;
    }
    // Refused: the rest of what it sends is read and dropped, so the refusal is not lost
    // to a reset.
    ::shutdown(r.fd, SHUT_WR);
    linger(r.fd, now);
  };
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      fresh.swap(inbox_);
      answered.swap(closing_);
      to_send.swap(sending_in_);
    }
    const auto now = clock::now();
    for (const int fd : answered) linger(fd, now);
    answered.clear();
    // An answer sent whole is closed gracefully, like one a worker sent whole.
    auto sent_all = [&](int fd, clock::time_point at) {
      ::shutdown(fd, SHUT_WR);
      linger(fd, at);
    };
    for (auto& u : to_send) {
      switch (send_some(u.fd, u.bytes, u.sent)) {  // the socket may have room by now
        case send_state::done:
          sent_all(u.fd, now);
          break;
        case send_state::failed:
          ::close(u.fd);
          break;
        case send_state::more:
          sending.push_back(std::move(u));
          break;
      }
    }
    to_send.clear();
    // Past their deadline (the client did not take its answer in time), or the oldest
    // past the limits (its client had longest).
    {
      std::size_t bytes = 0;
      std::deque<unsent> kept;
      for (auto& u : sending) {
        if (u.deadline <= now) {
          ::close(u.fd);
        } else {
          bytes += u.bytes.size() - u.sent;
          kept.push_back(std::move(u));
        }
      }
      while (!kept.empty() && (kept.size() > kMaxSending || bytes > kMaxSendingBytes)) {
        bytes -= kept.front().bytes.size() - kept.front().sent;
        ::close(kept.front().fd);
        kept.pop_front();
      }
      sending.swap(kept);
    }
    for (const int fd : fresh) {
      // Non-blocking from here on (the reader must never wait on one client), and not
      // inherited by a program the embedder starts.
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      request r{fd, {}, now + kRequestDeadline};
      // Read at once: a burst of clients whose requests are there goes to the workers,
      // none of it closed to make room for the others still arriving.
      const progress p = read_more(r.fd, r.bytes);
      settle(std::move(r), p, now, waiting);
      if (waiting.size() > kMaxWaiting) {
        ::close(waiting.front().fd);  // the oldest silent connection makes room
        waiting.pop_front();
      }
    }
    fresh.clear();
    // Past their deadline, or the oldest past the limit (its client had longest to close).
    // What the evicted one's client sent since the last poll is read first: closed with it
    // unread, the socket would reset, and the answer's unsent end with it.
    while (!lingering.empty() && (lingering.front().deadline <= now || lingering.size() > kMaxLingering)) {
      (void)client_done(lingering.front().fd, lingering.front().dropped);
      ::close(lingering.front().fd);
      lingering.pop_front();
    }

    polled.clear();
    polled.push_back(pollfd{wake_fd_, POLLIN, 0});
    for (const auto& r : waiting) polled.push_back(pollfd{r.fd, POLLIN, 0});
    const std::size_t linger_at = polled.size();  // lingering[i] is polled[linger_at + i]
    const std::size_t lingering_polled = lingering.size();
    for (const auto& l : lingering) polled.push_back(pollfd{l.fd, POLLIN, 0});
    const std::size_t send_at = polled.size();  // sending[i] is polled[send_at + i]
    for (const auto& u : sending) polled.push_back(pollfd{u.fd, POLLOUT, 0});
    int timeout = -1;
    if (!waiting.empty()) timeout = ms_until(waiting.front().deadline);
    if (!lingering.empty()) {
      const int t = ms_until(lingering.front().deadline);
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    for (const auto& u : sending) {
      const int t = ms_until(u.deadline);
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    if (::poll(polled.data(), polled.size(), timeout) < 0 && errno != EINTR) {
      // Only EFAULT/EINVAL/ENOMEM are left: drop every connection rather than spin.
      for (auto& r : waiting) ::close(r.fd);
      waiting.clear();
      for (auto& l : lingering) ::close(l.fd);
      lingering.clear();
      for (auto& u : sending) ::close(u.fd);
      sending.clear();
      continue;
    }
    if (polled[0].revents != 0) {
      std::uint64_t n = 0;
      (void)!::read(wake_fd_, &n, sizeof n);
    }

    const auto after = clock::now();
    {
      std::deque<unsent> more;
      for (std::size_t i = 0; i < sending.size(); ++i) {
        unsent& u = sending[i];
        const send_state st =
            polled[send_at + i].revents != 0 ? send_some(u.fd, u.bytes, u.sent) : send_state::more;
        if (st == send_state::done) {
          sent_all(u.fd, after);
        } else if (st == send_state::failed) {
          ::close(u.fd);
        } else {
          more.push_back(std::move(u));
        }
      }
      sending.swap(more);
    }
    std::deque<request> still;
    for (std::size_t i = 0; i < waiting.size(); ++i) {
      request& r = waiting[i];
      const progress p = polled[i + 1].revents != 0 ? read_more(r.fd, r.bytes) : progress::waiting;
      settle(std::move(r), p, after, still);
    }
    waiting.swap(still);
    // Those refused just now (settle pushed them after the ones polled) are read from the
    // next round on.
    std::deque<closing> kept;
    for (std::size_t i = 0; i < lingering.size(); ++i) {
      closing& l = lingering[i];
      const bool read_now = i < lingering_polled && polled[linger_at + i].revents != 0;
      if ((read_now && client_done(l.fd, l.dropped)) || after >= l.deadline) {
        ::close(l.fd);
      } else {
        kept.push_back(l);
      }
    }
    lingering.swap(kept);
  }
  for (auto& r : waiting) ::close(r.fd);
  for (auto& l : lingering) ::close(l.fd);
  // Stopping: the answers whose end is still being sent are finished, each within its
  // write deadline, as a worker finished its answer before stop() returned; those the
  // workers hand over meanwhile too, until stop() says they are all done.
  for (;;) {
    bool last = false;
    {
      std::lock_guard lock(mu_);
      to_send.swap(sending_in_);
      last = workers_done_;
    }
    for (auto& u : to_send) sending.push_back(std::move(u));
    to_send.clear();
    const auto now = clock::now();
    std::deque<unsent> more;
    for (std::size_t i = 0; i < sending.size(); ++i) {
      unsent& u = sending[i];
      const send_state st = u.deadline <= now ? send_state::failed : send_some(u.fd, u.bytes, u.sent);
      if (st == send_state::more) {
        more.push_back(std::move(u));
      } else {
        if (st == send_state::done) ::shutdown(u.fd, SHUT_WR);
        ::close(u.fd);
      }
    }
    sending.swap(more);
    if (sending.empty() && last) break;
    polled.clear();
    polled.push_back(pollfd{wake_fd_, POLLIN, 0});
    int timeout = -1;
    for (const auto& u : sending) {
      polled.push_back(pollfd{u.fd, POLLOUT, 0});
      const int t = ms_until(u.deadline);
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    if (::poll(polled.data(), polled.size(), timeout) < 0 && errno != EINTR && errno != EAGAIN) {
      for (auto& u : sending) ::close(u.fd);
      sending.clear();
      if (last) break;
    }
    if (polled[0].revents != 0) {
      std::uint64_t n = 0;
      (void)!::read(wake_fd_, &n, sizeof n);
    }
  }
}

void intake::work_loop() {
  name_this_thread();
  for (;;) {
    request r;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;  // stop() closed what was queued
      r = std::move(queue_.front());
      queue_.pop_front();
    }
    const auto write_by = clock::now() + kWriteDeadline;
    std::string rest;
    bool failed = false;
    try {
      intake_stream s(r.fd, std::move(r.bytes), r.deadline);
      answer_(s);
      rest.swap(s.unsent());
      failed = s.failed();
    } catch (...) {
      // The answer failed (out of memory while building it, say): the client sees the
      // connection close; the server goes on.
      rest.clear();
    }
    if (failed) {
      ::close(r.fd);  // the client went away (or the answer passed kMaxAnswerKept)
    } else if (rest.empty()) {
      close_gracefully(r.fd);
    } else {
      send_rest(r.fd, std::move(rest), write_by);
    }
  }
}

void intake::send_rest(int fd, std::string&& rest, clock::time_point deadline) noexcept {
  {
    std::lock_guard lock(mu_);
    if (!workers_done_) {  // also while stopping: the reader finishes it before it ends
      try {
        sending_in_.push_back(unsent{fd, std::move(rest), 0, deadline});
        fd = -1;
      } catch (...) {  // no memory to hand it over: closed here instead
      }
    }
  }
  if (fd >= 0) {
    ::close(fd);
    return;
  }
  wake_reader();
}

}  // namespace sluice::serve_detail
