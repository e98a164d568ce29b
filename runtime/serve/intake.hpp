// runtime/serve/intake.hpp — how the live view takes its connections in: no worker ever
// waits on a client that is still sending, and no client makes the server buffer more
// than a few KiB.
//
// httplib reads a request on the worker that will answer it, with a timeout per read and
// no limit on the request line's length or on the number of header lines: a client that
// trickles a header line a second, or sends a request line without end, holds a worker
// (and grows its memory) as long as it likes, and a handful of silent connections queue
// everyone else behind them. The intake stands in front of the workers:
//   - One reader thread polls every connection whose request head (the request line and
//     the headers) has not all arrived, without blocking, and keeps at most kMaxHead bytes
//     of each.
//   - A connection whose head is complete goes to a worker with the bytes read so far. One
//     whose head is longer than kMaxHead is answered 431 and closed. One whose head is not
//     complete kRequestDeadline after it was taken in is closed.
//   - A connection is read as soon as it is taken in: a request already there goes to the
//     queue for a worker without waiting behind silent connections.
//   - At most kMaxWaiting connections wait for their head and kMaxQueued complete requests
//     wait for a worker; past either limit the oldest is closed, so that a flood of silent
//     connections cannot shut out a client that sends its request. Both hold a full listen
//     queue (kListenBacklog): a burst of that many clients, each sending its request, is
//     answered whole (with 64, a burst of 80 left 15 closed without an answer).
//   - A connection is closed gracefully (lingering): after its answer, or a refusal, the
//     write side is shut down and what the client still sends (a body nobody reads, a
//     second request) is read and dropped until the client closes, for at most
//     kLingerDeadline and kMaxLingerBytes. Closed at once with unread bytes, the socket sent a reset, and the
//     client's kernel threw away the end of an answer it had not read yet (a GET whose
//     body came after its head lost its 270 KB answer after 128 KB).
//   - A worker answers through an intake_stream: the bytes read so far, then the socket,
//     for at most kMaxBody more bytes and within what is left of the request's deadline.
//     Its writes never wait: what the socket does not take at once (a client that reads
//     slowly, or not at all) is handed to the reader, which sends it as the socket takes
//     it; the whole answer must be sent within kWriteDeadline, or the connection is
//     closed. At most kMaxSending answers (kMaxSendingBytes in all, kMaxAnswerKept each)
//     are being sent; past that the oldest is closed. Writes never raise SIGPIPE.
//
// Requires: answer() does not throw for long (its exceptions are swallowed) and closes
//   nothing: the intake closes each connection after answer() returns.
// Guarantees: every connection given to take() is closed exactly once, by the intake. The
//   threads are named "sluice-http". stop() closes every connection not being answered,
//   lets the answers in progress finish (each within kWriteDeadline: the workers write
//   theirs, the reader sends what the sockets did not take) and joins the threads.
// Non-guarantees: fairness between clients; a request head that arrives in the same read
//   as more bytes (a body, a second request) keeps those bytes for the answer to read.
// Lifetime: take() may be called from any thread until stop(); after it, take() closes
//   the connection at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Stream;
}  // namespace httplib

namespace sluice::serve_detail {

inline constexpr std::size_t kMaxHead = 8192;    // request line and headers
inline constexpr std::size_t kMaxBody = 4096;    // after the head (no endpoint takes a body)
inline constexpr int kListenBacklog = 128;        // connections the kernel holds before accept
inline constexpr std::size_t kMaxWaiting = 128;  // connections whose head is still arriving
inline constexpr std::size_t kMaxQueued = 128;   // complete requests waiting for a worker
inline constexpr std::size_t kMaxLingering = 256;  // answered connections closing gracefully
inline constexpr std::size_t kMaxLingerBytes = 65536;  // read and dropped from one of them, at most
static_assert(kMaxWaiting >= kListenBacklog && kMaxQueued >= kListenBacklog);
inline constexpr std::chrono::milliseconds kRequestDeadline{1000};  // from take() to the whole head
inline constexpr std::chrono::milliseconds kWriteDeadline{2000};    // for the whole answer
inline constexpr std::size_t kMaxAnswerKept = std::size_t{64} << 20;   // unsent bytes of one answer
inline constexpr std::size_t kMaxSendingBytes = std::size_t{128} << 20;  // of all answers being sent
inline constexpr std::size_t kMaxSending = 256;                           // answers being sent
inline constexpr std::chrono::milliseconds kLingerDeadline{2000};   // for the client to close after it

class intake {
 public:
  using answer_fn = std::function<void(httplib::Stream&)>;

  // Starts the reader and `workers` workers.
  intake(answer_fn answer, std::size_t workers);
  ~intake() { stop(); }
  intake(const intake&) = delete;
  intake& operator=(const intake&) = delete;

  // A connection just accepted (a connected stream socket). Never blocks.
  void take(int fd) noexcept;
  // Idempotent.
  void stop() noexcept;

 private:
  using clock = std::chrono::steady_clock;
  struct request {
    int fd = -1;
    std::string bytes;          // what was read of it so far (the whole head, maybe more)
    clock::time_point deadline;  // for the head, and for any body after it
  };
  struct unsent {
    int fd = -1;
    std::string bytes;           // the end of an answer the socket did not take yet
    std::size_t sent = 0;        // of bytes, sent since
    clock::time_point deadline;  // kWriteDeadline after the answer began
  };

  void read_loop();
  void work_loop();
  void hand_over(request&& r);
  // Has the reader send the rest of fd's answer (the socket would have blocked), then
  // close fd gracefully (at once after it, when stopping).
  void send_rest(int fd, std::string&& rest, clock::time_point deadline) noexcept;
  // Shuts down fd's write side and has the reader close it once the client has (see
  // the lingering paragraph above); closes it at once when stopping.
  void close_gracefully(int fd) noexcept;
  // Puts fd on list (inbox_ or closing_) for the reader and wakes it; closes fd instead
  // when stopping, or when there is no memory to hold it.
  void give_to_reader(std::vector<int>& list, int fd) noexcept;
  void wake_reader() noexcept;

  const answer_fn answer_;
  int wake_fd_ = -1;  // an eventfd: take() and stop() wake the reader's poll with it

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::vector<int> inbox_;       // taken, not yet seen by the reader (guarded by mu_)
  std::deque<request> queue_;    // complete heads waiting for a worker (guarded by mu_)
  std::vector<int> closing_;     // answered, for the reader to linger on (guarded by mu_)
  std::vector<unsent> sending_in_;  // answered in part, for the reader to finish (guarded by mu_)
  bool stopping_ = false;        // guarded by mu_
  bool workers_done_ = false;    // stop() joined the workers (guarded by mu_)

  std::thread reader_;
  std::vector<std::thread> workers_;
  std::once_flag stopped_;
};

}  // namespace sluice::serve_detail
