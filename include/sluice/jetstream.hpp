// sluice/jetstream.hpp — graph edges between processes (or machines) over NATS JetStream.
//
//   // once, by either side (or an operator): the stream and the durable consumer
//   auto conn = sluice::jetstream::connect("nats://127.0.0.1:4222");
//   sluice::jetstream::edge_options edge{.stream = "parsed", .subject = "parsed", .max_msgs = 4096};
//   sluice::jetstream::ensure_edge(conn, edge);
//
//   // the producing process: the edge is its consumer stage
//   sluice::pipeline(sluice::from<std::string>(read_lines),
//                    sluice::jetstream::publish<std::string>(conn, edge, {.producer_id = "reader-1"}))
//       .run();
//
//   // the consuming process: the edge is its source stage
//   sluice::pipeline(sluice::jetstream::subscribe<std::string>(conn, edge),
//                    sluice::into([](sluice::jetstream::delivery<std::string> d) {
//                      store(d.value());
//                      d.ack();
//                    }))
//       .run();
//
// An edge is a JetStream stream with WorkQueue retention, discard = new and the limits
// max_msgs / max_bytes, plus a durable pull consumer with explicit acks: a bounded
// channel between processes.
//
// Requires: a nats-server with JetStream (`nats-server -js`). A connection is used by
//   any number of stages at once; a delivery by one thread at a time.
// Guarantees:
//   - publish: each item is one message with a Nats-Msg-Id "<producer_id>-<sequence>"
//     (sequence = publish_options::first_sequence + the item's position in the stage's
//     input, 0-based, counted over the stage's replicas and restarts: no two items get
//     the same one), so a re-publish after a fault is dropped by the server's de-duplication
//     (within the stream's duplicate window, 2 minutes). While the stream is full the
//     server refuses a message; the stage waits and re-publishes the *same* message, so it
//     blocks and its input channel fills: backpressure crosses the process boundary.
//     While the stream refuses, one message asks it again every `retry`; the others wait,
//     and each message stored releases at most two of them (a slow start: a stream with
//     room takes the whole queue within a few round trips, and one that a slow consumer
//     drains refuses about two re-publishes per message it stores, plus the one asking
//     every `retry`, not the whole queue each time).
//     At most `window` messages are unacknowledged; an item counts as delivered (counter
//     `acked`) when its acknowledgement arrives; at the end of its input the stage waits
//     for every outstanding acknowledgement. No acknowledgement for `give_up` (server
//     gone) is a stage error naming the edge; so is a message that can never be stored
//     (refused for the stream's max_msg_size), and "no responders" for `give_up` (the
//     stream was deleted, or the server lost its store). An item that cannot become a
//     message (codec<T>::encode throws, or the message is over the edge's max_bytes) is
//     a dead letter with that error, naming the edge and the item's position: a stage
//     error, or under error_policy::skip counted and dropped (its sequence number is
//     used up: later items keep theirs). An item whose message was sent but not yet
//     acknowledged when the stage ends short of its input's end (a cancel, a failure, a
//     restart; answers on their way are awaited up to 500 ms, unless a teardown stops the
//     wait) is a dead letter too, naming the edge and its position: the stream may hold
//     it or not (published again with the same id, it is de-duplicated). At its start
//     the stage looks the stream up, if the server has it: one that is not a work queue,
//     or that discards old messages, is a stage error naming what (ensure_edge's and the
//     subscribe stage's check: such a stream drops messages nobody read, or fills for
//     good), and so is one that becomes such a stream while the stage runs (made again:
//     the connection's gauge thread looks at it every 100 ms); a stream not there yet is
//     waited for, as above. Every message expects the
//     edge's stream (Nats-Expected-Stream): when another stream takes the edge's subject,
//     it refuses the message, and the stage fails naming the subject.
//   - subscribe: fetches at most the free room of its output channel (and at most
//     `batch`), so a process holds a bounded number of messages; a fused consumer
//     (stage_options::fuse: no buffer, each push a call) gets up to `batch` per fetch.
//     A delivery still unsettled ack_wait after it was fetched (it waited in the output
//     channel behind a slow sink) is delivered again by the server: a duplicate, as
//     at-least-once allows. Keep the output channel's capacity under ack_wait times the
//     sink's rate, or raise ack_wait. request_stop() stops
//     fetching; what was fetched drains downstream. A message that does not decode is a
//     stage error; under error_policy::skip it is terminated (never redelivered) and
//     counted in subscribe_counters::undecodable. A subscribe that starts while the
//     server is down waits for it (up to give_up, then a stage error naming the edge and
//     the server; a stop request ends the wait and the stage).
//     A consumer or stream deleted while the edge runs (the server then answers no pull
//     request) is a stage error naming the edge, after give_up without an answer. The
//     consumer is checked at the start as ensure_edge() checks it, but for the limits the
//     edge chooses (ack_wait, max_ack_pending, its subject: the stage takes the consumer's,
//     so a process given only the stream's name subscribes): one it would refuse for
//     anything else (made elsewhere, e.g. with a max_request_batch, max_request_expires,
//     max_deliver or inactive_threshold) is a stage error naming the edge, the consumer
//     and the limit.
//   - delivery: ack(), nak(delay), term(); one destroyed unsettled (including a dead
//     letter of a torn-down graph) is nak'ed, so it comes back promptly (from its third
//     delivery on, after a delay doubling from 100 ms to 10 s). An ack asks the
//     server to confirm it (double ack, asked on one ack in 32 or after a 2 ms pause: one
//     answer confirms every ack sent before it over the same connection;
//     subscribe_options::confirm_acks = false sends plain acks only, no confirmation);
//     confirmations are awaited asynchronously, at
//     most subscribe_options::ack_window at once, and counted (acks_confirmed); an ack
//     unconfirmed after ack_confirm_wait is sent again. A confirmed ack is applied: its
//     message never comes back, even across a server stopped and restarted. An
//     unconfirmed one (the server died meanwhile) may: the message is then delivered
//     again. A server killed outright (SIGKILL, power loss) writes its store behind:
//     acks it confirmed in its last moments (tens of milliseconds) may be lost with it,
//     and their messages come back, some with deliveries() == 1; de-duplicate by id().
//     It may also come back with messages that were acked and not removed (nats-server
//     keeps the ack floor, not every removal): nobody would receive them, yet they took
//     room in the stream for good. A subscribe stage on a work-queue stream purges its
//     own (its consumer's subject) at or below the consumer's ack floor: at its start, at
//     once after each reconnect, and every 5 s (subscribe_counters::stranded_sweeps).
//   - pull requests are sluice's own (one at a time, on a private inbox, each asking for
//     at most the free room): libnats 3.4.1's natsSubscription_Fetch overruns its array
//     when late messages of an earlier fetch are queued (see runtime/jetstream).
//   - Errors name what failed: the URL that cannot be reached within connect_options::
//     timeout; the limit in which an existing stream or consumer differs from the edge.
// Non-guarantees: at-least-once, not exactly-once: a consumer that dies between its side
//   effect and its ack sees the message again (deliveries() > 1); de-duplicate by id().
//   Order across a refusal/re-publish is not kept.
// Producer identity (how a restarted producer avoids duplicates): give it the same
//   producer_id as before, and a source that replays from a known position with
//   first_sequence set to that position (e.g. the offset of the first record it re-reads).
//   Items the server already acknowledged then carry the same ids and are dropped as
//   duplicates. The default producer_id is random per stage: no dedup across restarts.
//   Only while the server remembers them: within the duplicate window (2 minutes), and
//   not across a server restart for messages already consumed. nats-server rebuilds its
//   de-duplication table from the messages still stored, and a work queue has removed
//   the acked ones: after a server restart, a re-published item that was already
//   consumed is stored and delivered again (deliveries() == 1). Consumers that must see
//   an item once de-duplicate by id() (a probe saw all 100 replayed items delivered
//   again after a graceful server restart, none without one).
// Lifetime: a connection handle is shared (copyable); the connection closes when the last
//   handle, stage and delivery using it is gone. The publish stages of a connection share
//   one JetStream context, freed with the connection; a subscribe stage's inboxes are
//   unsubscribed when it ends and freed after a PING/PONG round trip, which a thread of the
//   connection awaits (the stage does not; a later round trip, or the connection's close,
//   if none comes): libnats 3.4.1 may still be handing them a message (see
//   runtime/jetstream). Call sluice::jetstream::shutdown() (or libnats' nats_Close()) at
//   the end of a program that wants libnats' memory freed.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sluice/buffer.hpp"
#include "sluice/channel.hpp"
#include "sluice/detail/jetstream_message.hpp"
#include "sluice/graph.hpp"
#include "sluice/jetstream_codec.hpp"
#include "sluice/stage.hpp"

namespace sluice::jetstream {

enum class storage { file, memory };

struct connect_options {
  // To reach a server at connect() (a list's in all); also how long each request of
  // ensure_edge, inspect_edge and remove_edge waits for its answer.
  // Positive, at most 100 years (connect() throws std::invalid_argument otherwise).
  std::chrono::milliseconds timeout{2000};
  std::chrono::milliseconds reconnect_wait{100};   // between reconnect attempts (forever); 0 to 100 years
  // A stage failing to reach the server this long fails. A server that stops answering
  // without closing the socket (stopped, frozen) is seen as gone after two unanswered
  // PINGs, sent every half give_up (2 s to 2 min): the stage fails a few give_ups after.
  // Positive, at most 100 years (connect() throws std::invalid_argument otherwise).
  std::chrono::milliseconds give_up{10000};
  std::string name = {};                           // client name shown by the server
};

namespace detail {
struct conn_state;
struct sub_state;
struct pub_state;
}  // namespace detail

// A connection to a NATS server; reconnects by itself. Copyable handle.
class connection {
 public:
  connection() = default;
  // The server URL as messages show it: shown_url() of the one given to connect().
  [[nodiscard]] const std::string& url() const;
  [[nodiscard]] bool connected() const;
  [[nodiscard]] const std::shared_ptr<detail::conn_state>& state() const { return state_; }
  explicit connection(std::shared_ptr<detail::conn_state> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<detail::conn_state> state_;
};

// Connects within o.timeout, or throws std::runtime_error naming the URL (as shown_url
// shows it) and the cause; std::invalid_argument for a URL check_url() refuses. `url` is one server ("nats://127.0.0.1:4222") or a
// comma-separated list of them, tried in the order given: the first that answers is used,
// and the others stay in the pool for reconnects. o.timeout is connect()'s as a whole: each
// of a list's N servers is given o.timeout / N (at least 100 ms, or o.timeout if shorter,
// so a long list with a short timeout may take N x 100 ms); the error names the list and
// each server's share.
connection connect(std::string url, connect_options o = {});

// Throws std::invalid_argument, naming the URL as shown_url shows it, where connect() would:
// a URL that names no server, a server without a host or with a port outside 1..65535, a
// user name or password holding a comma, a tls:// server (no TLS is set up here: libnats
// took tls:// for nats:// and sent credentials in plain text; a server that demands TLS
// is still met with TLS). Connects to nothing: a tool checks its arguments with it before
// any connection.
void check_url(std::string_view url);

// A NATS URL (or comma-separated list) fit for a log or an error message: a password or
// token in it is replaced by "***" ("nats://u:***@h:4222", "nats://***@h:4222").
[[nodiscard]] std::string shown_url(std::string_view url);

// Frees libnats' global resources and waits (up to 5 s) for its threads to end
// (nats_CloseAndWait). Only after every connection, stage and delivery is gone.
void shutdown() noexcept;

namespace detail {
// For tests of the connection's close (runtime/jetstream, "the publish context's
// delivery thread"): the libnats threads that ran an acknowledgement callback and have
// not ended yet, and a pause each such callback takes after its last touch of the
// connection (0: none), which widens the window in which a closing connection must
// still wait for that thread.
[[nodiscard]] std::size_t ack_threads_live() noexcept;
void hold_ack_callbacks(std::chrono::milliseconds pause) noexcept;
}  // namespace detail

struct edge_options {
  std::string stream = {}, subject = {};     // subject: defaults to the stream's name
  std::int64_t max_msgs = 4096, max_bytes = -1;  // -1: no byte limit
  storage store = storage::file;
  std::string durable = {};                  // defaults to the stream's name
  std::chrono::milliseconds ack_wait{30000};
  std::int64_t max_ack_pending = 4096;
};

// Refuses (std::invalid_argument, before any request) an edge no stream could carry: a
// stream or durable name holding a space, a control byte, '.', '*' or '>', or over 255
// bytes; a subject with a wildcard or an empty token, or over 2048 bytes (its messages'
// control lines would pass the server's 4096, and the server would close the connection
// and every edge on it; the publish stage refuses such a subject too); a name or subject holding '"' or
// '\' (libnats writes them into its JSON requests unescaped) or not valid UTF-8;
// max_msgs, ack_wait or max_ack_pending not positive; an ack_wait past 100 years (the
// server's nanoseconds overflowed, and it took its default); max_bytes 0 or below -1. A
// stream this call made is deleted again when its consumer cannot be made (those checks
// are check_edge()).
// Creates the stream and the durable consumer, or checks that existing ones have the same
// limits (std::runtime_error naming the first difference, e.g.
// "... stream 'x' has max_msgs 100, the edge wants 200"), and none that would drop a
// message unseen (a stream's max_age or max_msgs_per_subject, a sealed stream, a
// consumer's max_deliver), or lose the consumer (its inactive_threshold: the server
// deletes it while its subscriber pauses), or refuse the subscriber's pull requests (a
// consumer's max_request_batch or max_request_expires). Never changes an existing one.
void ensure_edge(connection& c, const edge_options& e);
// ensure_edge()'s refusals of `e` alone, the same std::invalid_argument, with no
// connection: a tool checks its arguments with it before it connects.
void check_edge(const edge_options& e);

// The stream's message count now (one request to the server).
struct edge_state {
  std::uint64_t msgs = 0, bytes = 0;
  std::int64_t max_msgs = 0;
  std::int64_t ack_pending = 0, redelivered = 0;  // of the durable consumer
  std::uint64_t consumer_pending = 0;             // messages not yet delivered to it
};
// A stream name ensure_edge would refuse (empty, a space or control byte, '.', '*', '>',
// '"', '\', not UTF-8, past 255 bytes) is std::invalid_argument here too, before any
// request; a durable name it would refuse names no consumer (the consumer's fields stay 0).
edge_state inspect_edge(connection& c, const edge_options& e);
// Deletes the edge's stream (and with it its consumer, and every message in it). A stream
// that does not exist is not an error; a name ensure_edge would refuse is
// std::invalid_argument (a wildcard never removes some other stream).
void remove_edge(connection& c, const edge_options& e);

// ---- delivery -----------------------------------------------------------------

// A message taken from an edge: its decoded value and how to settle it.
// Move-only. Destroyed without ack/nak/term, it is nak'ed: redelivered at once its first
// two times, then after 100 ms, doubling to 10 s, so a poison message (a dead letter each
// time, under error_policy::skip) does not come back in a hot loop. term() it (e.g. from
// on_discard) to drop it for good.
template <class T>
class delivery {
 public:
  delivery(T v, detail::message m) : value_(std::move(v)), msg_(std::move(m)) {}
  delivery(delivery&&) noexcept = default;
  delivery& operator=(delivery&&) noexcept = default;

  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T&& value() && { return std::move(value_); }

  void ack() { msg_.ack(); }                                              // done: removed from the stream
  void nak(std::chrono::milliseconds delay = std::chrono::milliseconds(0)) { msg_.nak(delay); }  // redeliver (after delay)
  void term() { msg_.term(); }                                            // never redeliver
  [[nodiscard]] std::uint64_t deliveries() const { return msg_.deliveries(); }  // 1 = first time
  // Stable across redeliveries: the publisher's Nats-Msg-Id ("<producer_id>-<sequence>").
  [[nodiscard]] std::string id() const { return msg_.id(); }
  [[nodiscard]] bool settled() const noexcept { return msg_.settled(); }

 private:
  T value_;
  detail::message msg_;
};

// ---- counters (optional, for tests and tools) -------------------------------------
struct publish_counters {
  std::atomic<std::uint64_t> sent{0};      // first publish of an item
  std::atomic<std::uint64_t> acked{0};     // acknowledgements (items delivered to the stream)
  std::atomic<std::uint64_t> duplicates{0};  // acked as a duplicate (already stored before)
  std::atomic<std::uint64_t> refused{0};   // refusals (stream full) and timeouts
  std::atomic<std::uint64_t> resent{0};    // re-publishes of a refused message
  std::atomic<std::uint64_t> waited_ns{0};  // time the stage waited for the window / a full stream
};
struct subscribe_counters {
  std::atomic<std::uint64_t> polls{0};      // pull requests sent (also those that found nothing)
  std::atomic<std::uint64_t> fetched{0};
  std::atomic<std::uint64_t> undecodable{0};  // terminated under error_policy::skip
  std::atomic<std::uint64_t> fetch_errors{0};  // pull requests that failed or got no answer
  std::atomic<std::uint64_t> acks_sent{0};       // ack() calls (first sends)
  std::atomic<std::uint64_t> acks_confirmed{0};  // acks the server confirmed having applied
  std::atomic<std::uint64_t> acks_resent{0};     // re-sends of an ack unconfirmed after ack_confirm_wait
  std::atomic<std::uint64_t> acks_unconfirmed{0};  // given up (give_up passed, or teardown): may come back
  std::atomic<std::uint64_t> stranded_sweeps{0};   // purges that removed acked messages a killed server left behind
};

struct publish_options {
  std::string producer_id = {};        // empty: random (no de-duplication across restarts)
  std::uint64_t first_sequence = 0;    // the first item's sequence in its Nats-Msg-Id
  // publish() throws std::invalid_argument, naming the edge and the field, for a window
  // above 2^20 or a retry or ack_timeout negative or past 100 years.
  std::size_t window = 256;            // unacknowledged messages at most
  std::chrono::milliseconds retry{2};  // while the stream refuses: how often one message asks again
  std::chrono::milliseconds ack_timeout{2000};  // re-publish a message unacknowledged this long
  std::shared_ptr<publish_counters> counters = {};
};
struct subscribe_options {
  std::size_t batch = 256;                    // messages per pull request at most
  // One fetch's wait on an empty stream: positive (std::invalid_argument otherwise). A
  // stop or a teardown ends the wait within about 20 ms, whatever its length.
  std::chrono::milliseconds fetch_wait{20};
  std::shared_ptr<subscribe_counters> counters = {};
  // Acknowledgements are confirmed by the server (JetStream's double ack), asynchronously:
  // at most ack_window acks are unconfirmed at once (ack() waits while the window is
  // full); one unconfirmed after ack_confirm_wait is sent again. Not every ack asks: an
  // answer to one confirms the acks sent before it over the same connection (the server
  // applies a consumer's acks in order), so about one in 32 asks (runtime/jetstream).
  // Once the graph is torn down (cancel, a failure), ack() waits for neither room nor
  // confirmations, and the stage's end does not wait for them: an ack the server did not
  // apply lets its message come back (at-least-once), and the teardown stays prompt.
  std::size_t ack_window = 1024;
  std::chrono::milliseconds ack_confirm_wait{1000};  // positive, at most 100 years (std::invalid_argument)
  // false: every ack is a plain "+ACK", as libnats' natsMsg_Ack sends it: no
  // confirmation, no re-send, no ack window (acks_confirmed stays 0; on_confirmed must be
  // empty). Slightly faster (benchmarks/README.md, jetstream); an ack lost with a dying
  // connection then brings its message back after ack_wait, which at-least-once allows.
  bool confirm_acks = true;
  // Called once per confirmed ack with the delivery's id() and how many times the ack
  // was sent (1: confirmed at the first send), on whichever thread serves the
  // confirmation (the subscribe stage's, or one in ack()), under an internal lock: keep
  // it short, and settle no delivery from it. Once the server confirmed an ack it has
  // applied it: the message is gone from the stream and the server never delivers it
  // again. A redelivery it made before (while the ack was unconfirmed: sends > 1, e.g.
  // across a server restart) may still be on its way.
  std::function<void(const std::string& id, unsigned sends)> on_confirmed = {};
};

namespace detail {
// The publish stage's engine (runtime/jetstream/jetstream.cpp).
class publisher {
 public:
  publisher(const connection& c, const edge_options& e, const publish_options& o);
  ~publisher();
  publisher(const publisher&) = delete;
  publisher& operator=(const publisher&) = delete;
  // Publishes one message (blocks while the window is full). False once stop is requested.
  bool publish(std::string_view bytes, const std::stop_token& stop);
  // Waits for every outstanding acknowledgement. False if stop came first.
  bool finish(const std::stop_token& stop);
  // The sequence the next publish() gives its message (its Nats-Msg-Id's number).
  [[nodiscard]] std::uint64_t next_sequence() const noexcept;
  // Swaps into `out` the sequences of the messages stored since the last call (pass an
  // empty vector; its capacity is kept for the next call).
  void take_acknowledged(std::vector<std::uint64_t>& out);
  // Waits until no message sent is waiting for its answer (refused ones waiting in the
  // retry queue do not count), stop, or `most`, whichever comes first.
  void settle_for(const std::stop_token& stop, std::chrono::milliseconds most) noexcept;
  // Takes no acknowledgement from here on, and drops the messages it still holds (the
  // destructor does it too; idempotent): after it, take_acknowledged() is final.
  void detach() noexcept;
  // The next message is the item at position p of the stage's input: its sequence is
  // first_sequence + p (without a call, one more than the last message's).
  void position(std::uint64_t p) noexcept;
  // Empty if a message of `payload` bytes, with its Nats-Msg-Id header, fits the
  // connection's max_payload; else why not, naming the sizes and the server.
  [[nodiscard]] std::string over_max_payload(std::size_t payload) const;
  // The bytes a message of `payload` bytes takes of the stream's max_bytes, as nats-server
  // counts them (its subject, its Nats-Msg-Id header and the store's own bytes too), or a
  // few more, never fewer.
  [[nodiscard]] std::uint64_t stored_size(std::size_t payload) const noexcept;

 private:
  std::shared_ptr<pub_state> st_;
  bool detached_ = false;
};

// Throws std::invalid_argument, naming the edge, for subscribe options no fetch can use.
void check_subscribe_options(const edge_options& e, const subscribe_options& o);
// The same for publish options: a window above kMaxWindow, a retry or ack_timeout
// negative or past 100 years (a huge one overflowed into an immediate one).
inline constexpr std::size_t kMaxWindow = std::size_t{1} << 20;
void check_publish_options(const edge_options& e, const publish_options& o);

// The subscribe stage's engine.
class subscriber {
 public:
  // Waits (up to give_up, or until stop) for a server that is down. ready() is false if
  // stop came first.
  subscriber(const connection& c, const edge_options& e, const subscribe_options& o, const std::stop_token& stop);
  ~subscriber();
  [[nodiscard]] bool ready() const noexcept { return st_ != nullptr; }
  subscriber(const subscriber&) = delete;
  subscriber& operator=(const subscriber&) = delete;
  // Asks for up to max messages unless a pull request is still open, then waits at most
  // fetch_wait for messages; calls f(message&&) for each that arrives (including late
  // ones of an earlier request). Throws after give_up of failures, naming the edge.
  template <class F>
  void fetch(std::size_t max, F&& f) {
    fetch_raw(max, [](void* ctx, message&& m) { (*static_cast<std::remove_reference_t<F>*>(ctx))(std::move(m)); },
              &f);
  }
  [[nodiscard]] const std::string& edge_name() const;
  // The graph is being torn down: the deliveries still downstream ack without waiting for
  // room in the ack window or for confirmations, and nothing waits for them at the end.
  void abandon() noexcept;

 private:
  void fetch_raw(std::size_t max, void (*cb)(void*, message&&), void* ctx);
  std::shared_ptr<sub_state> st_;
};

inline std::string stage_name(const stage_options& o, const char* kind, const edge_options& e) {
  return o.name.empty() ? std::string(kind) + ":" + e.stream : o.name;
}

template <class T>
struct publish_fn {
  connection conn;
  edge_options edge;
  publish_options opts;
  // Items taken from the input so far, over every replica and restart of the stage (the
  // copies share it): an item's position, and so its message id, is never given twice.
  // Per call, a restart began again at first_sequence, and with a fixed producer_id the
  // server dropped the items after it as duplicates of those before.
  std::shared_ptr<std::atomic<std::uint64_t>> taken = std::make_shared<std::atomic<std::uint64_t>>(0);
  void operator()(receiver<T>& in, std::stop_token stop) {
    publisher p(conn, edge, opts);
    // The items published whose messages the server has not yet stored (acknowledged),
    // by sequence. Whatever is left when the stage ends short of finish() (a cancel, a
    // failure, a restart, a teardown) and unanswered after a short wait is handed to
    // on_discard as a dead letter of its input: dropped with the window, it was lost
    // without a word.
    struct unsettled {
      publisher& p;
      const std::stop_token& stop;
      const edge_options& edge;
      std::uint64_t first;
      std::unordered_map<std::uint64_t, T> items;
      std::vector<std::uint64_t> acked;
      void prune() {
        p.take_acknowledged(acked);
        for (const std::uint64_t q : acked) items.erase(q);
        acked.clear();
      }
      ~unsettled() {
        // Leaving on an exception (a failure, or a restart) or a stop: the answers already
        // on their way are waited for, briefly, unless a teardown stops it (a cancel stays
        // prompt); a message stored is then not called a dead letter.
        p.settle_for(stop, std::chrono::milliseconds(500));
        p.detach();  // no acknowledgement after this: what is left is final
        prune();
        for (auto& [seq, v] : items) {
          std::exception_ptr why;
          try {
            why = std::make_exception_ptr(std::runtime_error(
                "sluice::jetstream: edge '" + edge.stream + "': the item at position " + std::to_string(seq - first) +
                " of this stage's input was published, but the stage ended before the server acknowledged it; "
                "the stream may hold it (published again with the same producer_id and sequence, "
                "it is de-duplicated)"));
          } catch (...) {
          }
          sluice::detail::held_item_undelivered(typeid(T), std::addressof(v), why);
        }
      }
    } window{p, stop, edge, opts.first_sequence, {}, {}};
    const std::size_t window_size = std::max<std::size_t>(opts.window, 1);
    window.items.reserve(2 * window_size);
    window.acked.reserve(2 * window_size);
    std::uint64_t at = 0;  // the position of the item in hand
    // An item that cannot become a message is a dead letter with its error (it was lost
    // without a word); under skip it is counted and the stage goes on, else it fails.
    auto refuse = [&](T& v, const std::string& why) {
      auto e = std::make_exception_ptr(std::runtime_error("sluice::jetstream: edge '" + edge.stream +
                                                          "': the item at position " + std::to_string(at) +
                                                          " of this stage's input " + why));
      if (!sluice::detail::held_item_failed(typeid(T), std::addressof(v), e)) std::rethrow_exception(e);
    };
    while (auto v = in.pop()) {
      at = taken->fetch_add(1, std::memory_order_relaxed);
      p.position(at);
      std::optional<decltype(codec<T>::encode(*v))> bytes;
      try {
        bytes.emplace(codec<T>::encode(*v));
      } catch (...) {
        std::string what = "an exception that is not a std::exception";
        try {
          throw;
        } catch (const std::exception& ex) {
          what = ex.what();
        } catch (...) {
        }
        refuse(*v, "does not encode: " + what);
        continue;
      }
      // Judged as the server stores it: a message under max_bytes whose subject and id
      // took it over was refused as a full stream's, and published again for ever.
      if (const std::uint64_t stored = p.stored_size(std::string_view(*bytes).size());
          edge.max_bytes > 0 && std::cmp_greater(stored, edge.max_bytes)) {
        refuse(*v, "is a message of " + std::to_string(std::string_view(*bytes).size()) +
                       " bytes, over the edge's max_bytes of " + std::to_string(edge.max_bytes) + " once stored (" +
                       std::to_string(stored) + " bytes with its subject, id and the store's own); it could never be stored");
        continue;
      }
      // So is one over the server's max_payload: no server of this connection takes it.
      if (std::string why = p.over_max_payload(std::string_view(*bytes).size()); !why.empty()) {
        refuse(*v, why);
        continue;
      }
      // A publish that fails (the server gone past give_up, the connection closed, the
      // stream refusing a message for good) fails the stage, whatever its error policy:
      // the fault is the edge's, not this item's, and every later item would fail alike.
      // The item in hand becomes a dead letter with that error, not lost; under skip the
      // error is counted once, as the held item's (held_item_failed), not again as the
      // stage's end.
      bool sent = false;
      const std::uint64_t seq = p.next_sequence();
      try {
        sent = p.publish(*bytes, stop);
      } catch (...) {
        (void)sluice::detail::held_item_failed(typeid(T), std::addressof(*v), std::current_exception());
        throw;
      }
      if (!sent) {  // a teardown stopped it before it went: a dead letter, as the input's are
        sluice::detail::held_item_undelivered(typeid(T), std::addressof(*v), nullptr);
        return;
      }
      window.items.emplace(seq, std::move(*v));
      // Acknowledged items are dropped once the map holds a window's worth: it stays under
      // twice the window, without taking the publisher's lock again for every item.
      if (window.items.size() >= window_size) window.prune();
    }
    if (in.cancelled()) return;
    p.finish(stop);
  }
};

template <class T>
struct subscribe_fn {
  connection conn;
  edge_options edge;
  subscribe_options opts;
  bool skip_undecodable = false;
  void operator()(sender<delivery<T>>& out, std::stop_token stop) {
    subscriber s(conn, edge, opts, stop);
    if (!s.ready()) return;  // stopped while the server was down
    // Leaving on a teardown (the output cancelled, or this stage failing): acks still to
    // come downstream must not hold the teardown up.
    struct abandon_on_teardown {
      subscriber& s;
      sender<delivery<T>>& out;
      int uncaught = std::uncaught_exceptions();
      ~abandon_on_teardown() {
        if (std::uncaught_exceptions() > uncaught || out.cancelled()) s.abandon();
      }
    } guard{s, out};
    bool open = true;
    // Ends on stop (request_stop: fetched deliveries drain downstream) or when nobody
    // reads any more (a sink that finished early disconnects its input).
    while (open && !stop.stop_requested() && !out.is_closed()) {
      auto st = out.stats();
      // A fused consumer (stage_options::fuse) holds no buffer: its channel reads capacity
      // 0, and each push runs the consumer at once, so a batch is its room. (Room 0 there
      // fetched nothing, and the wait for room returned at once: a busy loop.)
      std::size_t room = st.capacity == 0 ? opts.batch : st.capacity > st.size ? st.capacity - st.size : 0;
      if (room == 0) {
        out.wait_writable();
        continue;
      }
      s.fetch(std::min(room, opts.batch), [&](message&& m) {
        if (!open) return;  // the rest are nak'ed by their destructors
        std::optional<T> v;
        try {
          v.emplace(codec<T>::decode(m.data()));
        } catch (const std::exception& ex) {
          if (!skip_undecodable) {
            throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "': message " + m.id() +
                                     " does not decode: " + ex.what());
          }
          m.term();
          if (opts.counters) opts.counters->undecodable.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        if (!out.push(delivery<T>(std::move(*v), std::move(m)))) open = false;
      });
    }
  }
};
}  // namespace detail

// The producing side: a consumer stage (pipeline descriptor) publishing each item.
// Its stage is named "publish:<stream>" unless o.name says otherwise.
template <class T>
auto publish(connection c, edge_options e, publish_options p = {}, stage_options o = {}) {
  detail::check_publish_options(e, p);
  o.name = detail::stage_name(o, "publish", e);
  return sluice::consume(detail::publish_fn<T>{std::move(c), std::move(e), std::move(p)}, std::move(o));
}
// The same, as a consumer of `in` in a graph.
template <class T>
void publish(graph& g, stream<T> in, connection c, edge_options e, publish_options p = {}, stage_options o = {}) {
  detail::check_publish_options(e, p);
  auto name = detail::stage_name(o, "publish", e);
  g.consume(std::move(name), in, detail::publish_fn<T>{std::move(c), std::move(e), std::move(p)}, std::move(o));
}

// The consuming side: a source stage of delivery<T> (pipeline descriptor), named
// "subscribe:<stream>" unless o.name says otherwise.
template <class T>
auto subscribe(connection c, edge_options e, subscribe_options s = {}, stage_options o = {}) {
  detail::check_subscribe_options(e, s);
  o.name = detail::stage_name(o, "subscribe", e);
  const bool skip = o.on_error == error_policy::skip;
  return sluice::from<delivery<T>>(detail::subscribe_fn<T>{std::move(c), std::move(e), std::move(s), skip},
                                   std::move(o));
}
// The same, as a source in a graph.
template <class T>
stream<delivery<T>> subscribe(graph& g, connection c, edge_options e, subscribe_options s = {},
                              stage_options o = {}) {
  detail::check_subscribe_options(e, s);
  auto name = detail::stage_name(o, "subscribe", e);
  const bool skip = o.on_error == error_policy::skip;
  return g.source<delivery<T>>(std::move(name),
                               detail::subscribe_fn<T>{std::move(c), std::move(e), std::move(s), skip},
                               std::move(o));
}

}  // namespace sluice::jetstream
