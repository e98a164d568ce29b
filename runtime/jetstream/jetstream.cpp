// sluice::jetstream on libnats: connections, edges (stream + durable pull consumer), the
// publish and subscribe engines, deliveries. See include/sluice/jetstream.hpp.
#include "sluice/jetstream.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <string_view>
#include <utility>
#include <vector>

#include "../text.hpp"

#include <dlfcn.h>
#include <sys/socket.h>
#include <cerrno>
#include <cstring>

// ---- libnats 3.4.1's handshake spin --------------------------------------------------
// libnats 3.4.1 reads the server's answer to its CONNECT + PING one byte at a time
// (conn.c, _readProto) and leaves that loop only when the socket closes: a read that
// times out (the handshake's deadline passed) is taken as a byte, and the loop asks
// again, at once, for ever. A peer that sends a NATS greeting (INFO) and then nothing
// held js::connect() at 100% of a core for good (timeout or not), and in a reconnect the
// same loop runs with the connection's lock held, so every stage on it blocked in libnats
// and cancel() could not end them (found by a probe; nats.c issue #706, fixed upstream in
// 3.8 by PR #707; Debian 12 ships 3.4.1).
// libnats calls its socket read through its exported name, so this definition, in the
// program, is the one its calls reach: it passes every result on, except that a second
// time-out in a row on the same socket reads as a closed socket, which ends that loop.
// (One time-out is passed on as it is: every other caller stops at the first.) Harmless on
// a libnats with the fix, which never asks twice.
extern "C" natsStatus natsSock_Read(void* ctx, char* buffer, size_t max, int* n) {
  using read_fn = natsStatus (*)(void*, char*, size_t, int*);
  static const auto real = reinterpret_cast<read_fn>(::dlsym(RTLD_NEXT, "natsSock_Read"));
  thread_local void* timed_out_on = nullptr;
  if (real == nullptr) return NATS_ERR;
  const natsStatus s = real(ctx, buffer, max, n);
  if (s != NATS_TIMEOUT) {
    timed_out_on = nullptr;
    return s;
  }
  if (timed_out_on == ctx) {
    timed_out_on = nullptr;
    return NATS_CONNECTION_CLOSED;
  }
  timed_out_on = ctx;
  return s;
}

namespace sluice::jetstream {
namespace {
// Who checks an existing stream or consumer; its name starts the error.
enum class checker { ensure_edge, subscribe, publish };
const char* name_of(checker c) {
  return c == checker::subscribe ? "subscribe" : c == checker::publish ? "publish" : "ensure_edge";
}
}  // namespace
namespace detail {
namespace {

using clock = std::chrono::steady_clock;

// How long a condition (the server unreachable, no stream answering) has held without a
// break. Each watcher keeps its own; past the connection's give_up, the watcher throws.
class outage {
 public:
  void end() { since_ = {}; }
  // The condition is seen now: starts the clock the first time.
  void seen(clock::time_point now = clock::now()) {
    if (since_ == clock::time_point{}) since_ = now;
  }
  bool ongoing() const { return since_ != clock::time_point{}; }
  // How long it has lasted (zero when not ongoing).
  clock::duration lasted(clock::time_point now = clock::now()) const { return ongoing() ? now - since_ : clock::duration{}; }
  // "1234 ms": the lasted() that a message names.
  std::string lasted_ms(clock::time_point now = clock::now()) const {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(lasted(now)).count()) + " ms";
  }

 private:
  clock::time_point since_{};
};

// The servers of a comma-separated URL list, each trimmed of spaces; empty ones dropped.
// A comma inside a password ("nats://user:pa,ss@host") is not a separator: a piece that
// opens a user info it does not close (a scheme, then "user:secret" with no '@', where
// secret is not a port) runs on to the next '@', as long as no other server (a "://")
// comes first. Otherwise half the password was shown as a host. A piece that is a whole
// server ("nats://h:4222", "nats://[::1]", "nats://h") is never joined to the next.
std::vector<std::string_view> server_list(std::string_view url) {
  std::vector<std::string_view> pieces;
  for (std::size_t pos = 0;;) {
    const std::size_t comma = url.find(',', pos);
    pieces.push_back(url.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  auto opens_user_info = [](std::string_view piece) {
    const std::size_t scheme = piece.find("://");
    if (scheme == std::string_view::npos) return false;
    const std::string_view rest = piece.substr(scheme + 3);
    if (rest.find('@') != std::string_view::npos || rest.empty() || rest.back() == ']') return false;
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return false;  // "nats://host": a server
    const std::string_view after = rest.substr(colon + 1);
    const bool port = !after.empty() && after.find_first_not_of("0123456789 ") == std::string_view::npos;
    return !port;
  };
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    std::size_t last = i;
    if (opens_user_info(pieces[i])) {
      // Runs on to the first later piece holding an '@', if none holds a "://" first.
      for (std::size_t j = i + 1; j < pieces.size(); ++j) {
        if (pieces[j].find("://") != std::string_view::npos) break;
        if (pieces[j].find('@') != std::string_view::npos) {
          last = j;
          break;
        }
      }
    }
    const char* from = pieces[i].data();
    const char* to = pieces[last].data() + pieces[last].size();
    std::string_view one(from, static_cast<std::size_t>(to - from));
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    if (!one.empty()) out.push_back(one);
    i = last;
  }
  return out;
}

std::string nats_error(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  const char* got = nats_GetLastError(&last);
  std::string_view detail = got != nullptr ? got : "";
  // libnats starts it with its own source position, "(conn.c:802): ", which tells a user
  // nothing: dropped.
  if (detail.starts_with('(')) {
    if (const auto end = detail.find("): "); end != std::string_view::npos) detail.remove_prefix(end + 3);
  }
  if (!detail.empty() && text.find(detail) == std::string::npos) {
    text += " (";
    text += detail;
    text += ")";
  }
  return text;
}

struct js_ctx {
  jsCtx* js = nullptr;
  js_ctx() = default;
  js_ctx(const js_ctx&) = delete;
  js_ctx& operator=(const js_ctx&) = delete;
  ~js_ctx() {
    if (js != nullptr) jsCtx_Destroy(js);
  }
};

// One look-up of an edge's durable consumer: what the server answered, and the consumer's
// info (owned) when it was found. gone(): the consumer or its stream does not exist.
struct consumer_lookup {
  natsStatus status = NATS_OK;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  std::unique_ptr<jsConsumerInfo, void (*)(jsConsumerInfo*)> info{nullptr, jsConsumerInfo_Destroy};
  [[nodiscard]] bool found() const { return status == NATS_OK && info != nullptr; }
  [[nodiscard]] bool gone() const {
    return status == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr;
  }
};

consumer_lookup look_up_consumer(jsCtx* js, const std::string& stream, const std::string& durable) {
  consumer_lookup r;
  jsConsumerInfo* ci = nullptr;
  r.status = js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), nullptr, &r.jerr);
  r.info.reset(ci);
  return r;
}

// A subscribe stage's look-up of its edge: the durable consumer, then, once that was
// found, the stream (its subjects and retention for the checks, its first message for
// sweep_stranded). ok(): both were found.
struct edge_lookup {
  consumer_lookup consumer;
  natsStatus stream_status = NATS_OK;
  jsErrCode stream_jerr = static_cast<jsErrCode>(0);
  int stream_subjects = 0;
  jsRetentionPolicy retention = js_WorkQueuePolicy;
  bool discard_new = true;
  std::uint64_t first_seq = 0;  // the stream's first message (0: it holds none)
  [[nodiscard]] bool ok() const { return consumer.found() && stream_status == NATS_OK; }
  // The failing request's answer: the consumer's if it was not found, else the stream's.
  [[nodiscard]] natsStatus status() const { return consumer.status != NATS_OK ? consumer.status : stream_status; }
  [[nodiscard]] jsErrCode jerr() const { return consumer.status != NATS_OK ? consumer.jerr : stream_jerr; }
};

edge_lookup look_up_edge(jsCtx* js, const std::string& stream, const std::string& durable) {
  edge_lookup r;
  r.consumer = look_up_consumer(js, stream, durable);
  if (!r.consumer.found()) return r;
  jsStreamInfo* si = nullptr;
  r.stream_status = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &r.stream_jerr);
  if (r.stream_status != NATS_OK) return r;
  r.stream_subjects = si->Config != nullptr ? si->Config->SubjectsLen : 0;
  if (si->Config != nullptr) {
    r.retention = si->Config->Retention;
    r.discard_new = si->Config->Discard == js_DiscardNew;
  }
  r.first_seq = si->State.Msgs != 0 ? si->State.FirstSeq : 0;
  jsStreamInfo_Destroy(si);
  return r;
}

// The subscribe stage's checks of its edge as looked up (ok(), with the consumer's
// config): what it cannot use, or what loses messages, in the consumer (check_consumer)
// and the stream (not a work queue: acked messages stay, so the stream fills and the
// publisher waits for ever, or with discard old, drops messages nobody saw; a work queue
// with discard old drops unseen messages when full). At its start, and at every sweep
// (sweep_stranded): a consumer or stream deleted and made again mid-run, with a config
// the stage cannot use, is then a stage error, not a silent loss. Defined with
// ensure_edge's checks, below.
void check_for_subscribe(const edge_options& e, const std::string& durable, const edge_lookup& lk);
// The one check of a stream's kind, made by ensure_edge, by both stages at their start, by
// the subscribe stage at every sweep and by the publish stage while it runs (from the
// gauge's look, `now`): a stream that is not a work queue keeps acked messages (it fills
// and the publisher waits for ever, or, discarding old ones, drops messages nobody saw),
// and a work queue that discards old messages drops unseen ones when full. Throws naming
// the first of the two it finds.
void check_keeps_messages(const edge_options& e, jsRetentionPolicy retention, bool discard_new, checker call,
                          bool now = false);

}  // namespace

// The edge as a channel in this side's snapshots ("jetstream:<stream>"): the connection's
// gauge thread refreshes it every kGaugePeriod (one stream-info request), whatever its
// stage is doing (blocked on its own channel too: a subscribe stage whose sink is slow
// is exactly when the stream fills); snapshot() reads it.
constexpr auto kGaugePeriod = std::chrono::milliseconds(100);
// A subscribe stage's look-ups of its consumer and stream (connect_options::timeout is the
// user's calls'): the first waits this long for its answer, each after one that got none
// twice as long, at most kLookupWaitMax. A stop request waits out at most one.
constexpr auto kLookupWait = std::chrono::milliseconds(200);
constexpr auto kLookupWaitMax = std::chrono::milliseconds(800);
// How often a subscribe stage looks for acked messages a killed server left in its stream
// (sub_state::sweep_stranded), besides at once after each reconnect; and how soon one
// that got no answer is tried again. A sweep is up to three requests of kLookupWait each:
// on a server that answers (in well under a millisecond here) the stage never notices.
constexpr auto kSweepPeriod = std::chrono::seconds(5);
constexpr auto kSweepRetry = std::chrono::seconds(1);
struct edge_gauge {
  std::string stream;
  std::atomic<std::uint64_t> msgs{0};      // relaxed throughout: independent monitoring values
  std::atomic<std::uint64_t> max_msgs{0};
  std::atomic<std::uint64_t> push_ns{0};   // the publish stage's time waiting on a full stream / window
  std::atomic<std::uint64_t> pop_ns{0};    // the subscribe stage's time in fetches that found nothing
  // The stream's kind at the last poll, one word (kind_of): its retention and whether it
  // discards new messages; kNotPolled before a poll found it. The publish stage fails on
  // one that loses messages (check_storable): it checked the stream only at its start, and
  // a stream made again mid-run as a limits stream with discard old took and acked every
  // message, and dropped what nobody read.
  static constexpr int kNotPolled = -1;
  static int kind_of(jsRetentionPolicy r, bool discard_new) { return static_cast<int>(r) * 2 + (discard_new ? 1 : 0); }
  std::atomic<int> kind{kNotPolled};
  js_ctx info;                             // the gauge thread's: requests with a short wait
  // Cleared when its stage's state goes: the reading then stays as it was (the graph's
  // snapshot may still show it) and the gauge thread stops asking the server.
  std::atomic<bool> polled{true};

  metrics::external_channel_reading read() const {
    metrics::external_channel_reading r;
    r.size = static_cast<std::size_t>(msgs.load(std::memory_order_relaxed));
    r.capacity = static_cast<std::size_t>(max_msgs.load(std::memory_order_relaxed));
    r.blocked_push_ns = push_ns.load(std::memory_order_relaxed);
    r.blocked_pop_ns = pop_ns.load(std::memory_order_relaxed);
    return r;
  }
};

// ---- libnats 3.4.1 and subscription lifetime ----------------------------------------
//
// libnats 3.4.1's reader thread hands a message to its subscription without holding a
// reference to it (natsConn_processMsg: natsHash_Get(nc->subs, sid) under nc->subsMu,
// then nc->subsMu is released, the message is allocated (natsMsg_create), and only
// then is the subscription's own mutex taken and the message linked to its list). A
// subscription unsubscribed and destroyed by another thread in that window is freed
// under the reader's feet: it then locks a freed mutex (abort in natsMutex_Lock, or
// glibc's "__pthread_mutex_lock_full: Assertion `e != ESRCH || !robust' failed"), or
// links the message into freed memory (heap corruption, and a natsMsg_create
// allocation that LeakSanitizer reports lost). Upstream: nats-io/nats.c issue 637,
// fixed by pull request 638 (natsSubAndLdw_LockAndRetain), after 3.4.1.
//
// So sluice never frees a subscription that the reader thread may still be handing a
// message to:
//   - its own subscriptions (a subscribe stage's pull and confirmation inboxes) are
//     retired (conn_state::retire): unsubscribed at once (from then on no message finds
//     them), and destroyed only after a PING/PONG round trip requested after that
//     (natsConnection_FlushTimeout): the reader thread processes what it read in order,
//     so once it has processed the PONG it has finished with any message that found the
//     subscription before it was removed. The round trip is awaited by the connection's
//     reaper thread, never by the thread that retires (a stage ending on a stalled
//     server would wait up to kRetireFlush). Without a PONG (connection down, or slow),
//     the subscription waits for the round trip of the next retire, or for the
//     connection's close (natsConnection_Close joins the reader thread first).
//   - a jsCtx destroys its reply subscription in jsCtx_Destroy (unsubscribe and release
//     at once, with the publish acknowledgements still arriving): so there is one
//     publishing context per connection, destroyed only after natsConnection_Close, and
//     the publish stages share it; its acknowledgements reach their stage through the
//     connection's ack_table (see "publish" below).
// The reaper's wait for one round trip; no PONG by then: the next retire asks again.
constexpr auto kRetireFlush = std::chrono::milliseconds(200);

// ---- the publish context's delivery thread -----------------------------------------
//
// libnats frees a message through its garbage-collector thread (natsMsg_Destroy queues it
// there), and nats_CloseAndWait (shutdown()) stops that thread before it waits for the
// others: a message a libnats thread destroys after that is never freed (LeakSanitizer:
// one natsMsg_create of 167 bytes, a publish acknowledgement, reported by a `bench --cut
// --role producer` run in CI). The publish context's delivery thread destroys each
// acknowledgement *after* route_ack has returned, so ack_table::drain seeing no callback
// on its way is not enough. That thread ends once natsConnection_Close has closed its
// subscription, and its end is observable: route_ack marks its thread (a thread_local
// whose destructor runs when the thread ends, after its last libnats work), and
// ~conn_state waits (at most kAckThreadEnd) until every thread that ran route_ack for the
// connection has ended. shutdown() comes after every connection is gone.
// That subscription has a thread of its own even where libnats is told to deliver on its
// shared threads (NATS_DEFAULT_TO_LIB_MSG_DELIVERY): the context subscribes without the
// pool. Not covered: a connection closed before its first acknowledgement callback ran
// (no thread marked yet) whose reply subscription still held acknowledgements; they are
// freed by whichever thread releases that subscription last.
constexpr auto kAckThreadEnd = std::chrono::seconds(2);

struct ack_threads {
  std::mutex mu;
  std::condition_variable none;  // live reached 0
  std::size_t live = 0;          // guarded by mu
};
std::atomic<std::size_t> g_ack_threads_live{0};  // every connection's (detail::ack_threads_live)
std::atomic<std::int64_t> g_ack_hold_ms{0};      // detail::hold_ack_callbacks

// One per libnats thread that ran route_ack (thread_local in route_ack).
struct ack_thread_mark {
  std::shared_ptr<ack_threads> of;  // empty: not marked
  ack_thread_mark() = default;
  ack_thread_mark(const ack_thread_mark&) = delete;
  ack_thread_mark& operator=(const ack_thread_mark&) = delete;
  void mark(const std::shared_ptr<ack_threads>& t) {
    std::lock_guard lk(t->mu);
    ++t->live;
    g_ack_threads_live.fetch_add(1, std::memory_order_relaxed);
    of = t;
  }
  ~ack_thread_mark() {
    if (!of) return;
    std::lock_guard lk(of->mu);  // `of` keeps the tracker alive past this unlock
    g_ack_threads_live.fetch_sub(1, std::memory_order_relaxed);
    if (--of->live == 0) of->none.notify_all();
  }
};

struct pub_state;

// Transparent hash for the producer ids in ack_table (lookups by string_view).
struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// A connection's publish stages, for route_ack (protocol: "publish" below).
// Requires: only the publish engine uses it. Guarantees: route_ack finds the stage that
// sent a message while that stage is registered; once remove() returned, no callback
// runs or will run on the stage. Lifetime: the connection's (~conn_state waits out the
// callbacks still on their way, see drain()).
struct ack_table {
  std::mutex mu;
  std::condition_variable idle;  // outstanding reached 0 (~conn_state waits on it)
  // guarded by mu: the registered stages by producer id (two stages given the same
  // producer_id share an entry; a message is theirs whose pointer is in their `sent`)
  std::unordered_map<std::string, std::vector<pub_state*>, string_hash, std::equal_to<>> stages;
  // Messages libnats holds for the publish context (handed to js_PublishMsgAsync, their
  // callback not yet run). Incremented by a stage without mu, decremented by route_ack
  // under mu (see the protocol); relaxed throughout: it is a count, the edges that
  // order it against ~conn_state are mu and the release of the stages' references.
  std::atomic<std::size_t> outstanding{0};

  void add(const std::string& producer, pub_state* p) {
    std::lock_guard lk(mu);
    stages[producer].push_back(p);
  }
  void remove(const std::string& producer, const pub_state* p) {
    std::lock_guard lk(mu);
    const auto it = stages.find(producer);
    if (it == stages.end()) return;
    std::erase(it->second, p);
    if (it->second.empty()) stages.erase(it);
  }
  // At the connection's close, after natsConnection_Close: takes back what libnats still
  // holds, then waits for the callbacks already on their way (see "publish").
  // Reads outstanding only under mu: a callback that brought it to 0 may still be about
  // to unlock mu, and once drain has returned the state may be freed.
  void drain(jsCtx* js) {
    std::unique_lock lk(mu);
    // 0: libnats holds nothing and no callback is on its way. (Also: a context that never
    // published has no pending map, and js_PublishAsyncGetPendingList crashes on it.)
    if (outstanding.load(std::memory_order_relaxed) == 0) return;
    lk.unlock();
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK) {
      outstanding.fetch_sub(static_cast<std::size_t>(pending.Count), std::memory_order_relaxed);
      natsMsgList_Destroy(&pending);  // their stages are gone: no callback will come for them
    }
    lk.lock();
    idle.wait(lk, [&] { return outstanding.load(std::memory_order_relaxed) == 0; });
  }
};

struct conn_state {
  natsConnection* nc = nullptr;
  jsCtx* pub_js = nullptr;  // the publish stages' context (acknowledgements: acks)
  ack_table acks;           // the closure of pub_js's AckHandler (route_ack)
  // The threads that ran route_ack for this connection (see "the publish context's
  // delivery thread"). Shared with their marks: a wait that gave up leaves it to them.
  const std::shared_ptr<ack_threads> ack_threads_of = std::make_shared<ack_threads>();
  std::string url;
  connect_options opts;

  // Retired subscriptions (see "libnats 3.4.1 and subscription lifetime"), freed by the
  // reaper thread. Wait protocol:
  //   retire:  unsubscribe s; lock; retiring += s; fresh = true; notify; unlock
  //   reaper:  lock; wait until fresh or stopping; stopping: end; fresh = false;
  //            batch = retiring (all of it); unlock; PING/PONG; PONG: destroy batch,
  //            else lock; retiring += batch (it rides on the next round trip)
  // Every subscription in a batch was unsubscribed before it was queued, so before the
  // reaper took the batch and asked for the round trip: its PONG was requested after the
  // unsubscribe. `fresh` is set under the mutex the reaper checks it under, so no retire
  // is missed; a failed round trip is retried only for a new retire (no spinning while
  // the server is away). ~conn_state: stopping, then natsConnection_Close (it ends a
  // flush the reaper is in), joins the reaper, and destroys what is left.
  std::mutex retire_mu;
  std::condition_variable retire_cv;             // fresh or stopping
  std::vector<natsSubscription*> retiring;        // guarded by retire_mu: unsubscribed, not yet freed
  bool fresh = false;                             // guarded by retire_mu: retiring has some not yet in a round trip
  bool stopping = false;                          // guarded by retire_mu
  std::thread reaper;                             // started by the first retire (under retire_mu); joined by ~conn_state

  // The edges' gauges, refreshed every kGaugePeriod by the gauge thread (started by the
  // first make_gauge, joined by ~conn_state after natsConnection_Close, which ends a
  // request it may be waiting on). It holds a gauge only while it refreshes it.
  std::mutex gauge_mu;
  std::condition_variable gauge_cv;                   // gauges_stopping
  std::vector<std::weak_ptr<edge_gauge>> gauges;      // guarded by gauge_mu
  bool gauges_stopping = false;                       // guarded by gauge_mu
  std::thread gauger;                                 // started under gauge_mu

  ~conn_state() {
    if (nc == nullptr) return;
    {
      std::lock_guard lk(retire_mu);
      stopping = true;
    }
    retire_cv.notify_all();
    {
      std::lock_guard lk(gauge_mu);
      gauges_stopping = true;
    }
    gauge_cv.notify_all();
    natsConnection_Close(nc);  // joins the reader thread: no message is being handed on after this
    if (reaper.joinable()) reaper.join();  // Close ended the round trip it may have been waiting for
    if (gauger.joinable()) gauger.join();  // and the stream-info request the gauger may be in
    if (pub_js != nullptr) {
      acks.drain(pub_js);  // no route_ack runs or will run on this state after this
      {                    // and the thread that ran them has finished its libnats work too
        std::unique_lock lk(ack_threads_of->mu);
        ack_threads_of->none.wait_for(lk, kAckThreadEnd, [&] { return ack_threads_of->live == 0; });
      }
      jsCtx_Destroy(pub_js);  // its reply subscription
    }
    for (natsSubscription* s : retiring) natsSubscription_Destroy(s);
    natsConnection_Destroy(nc);
  }

  // Unsubscribes s at once and has the reaper free it once the reader thread cannot be
  // handing it a message (see above). Never waits on the server. Any thread; s is not
  // used by the caller afterwards.
  void retire(natsSubscription* s) {
    if (s == nullptr) return;
    natsSubscription_Unsubscribe(s);  // removes it from the connection's map: no message finds it after this
    std::lock_guard lk(retire_mu);
    retiring.push_back(s);
    fresh = true;
    if (!reaper.joinable()) {
      try {
        reaper = std::thread([this] { reap(); });
      } catch (const std::system_error&) {
        return;  // no thread: s is freed at the connection's close
      }
    }
    retire_cv.notify_one();
  }

  // The reaper thread's loop (protocol above). It holds no reference to this state:
  // ~conn_state joins it.
  void reap() {
    std::unique_lock lk(retire_mu);
    for (;;) {
      retire_cv.wait(lk, [&] { return fresh || stopping; });
      if (stopping) return;
      fresh = false;
      std::vector<natsSubscription*> batch;
      batch.swap(retiring);
      lk.unlock();
      const bool pong = natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED &&
                        natsConnection_FlushTimeout(nc, kRetireFlush.count()) == NATS_OK;
      if (pong) {
        for (natsSubscription* s : batch) natsSubscription_Destroy(s);
        batch.clear();
      }
      lk.lock();
      retiring.insert(retiring.end(), batch.begin(), batch.end());  // no PONG: wait for the next round trip
    }
  }

  // Throws when the connection is closed, or has been down for longer than give_up.
  // `down` is the caller's own record of the connection's outage.
  void check_alive(const std::string& edge, outage& down) const {
    const natsConnStatus s = natsConnection_Status(nc);
    if (s == NATS_CONN_STATUS_CONNECTED) {
      down.end();
      return;
    }
    if (s == NATS_CONN_STATUS_CLOSED) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge + "': the connection to " + url + " is closed");
    }
    const auto now = clock::now();
    down.seen(now);
    if (down.lasted(now) > opts.give_up) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge + "': the server " + url + " has been unreachable for " +
                               down.lasted_ms(now));
    }
  }

  // A context whose requests wait at most `wait` for their answer. libnats's default is
  // 5 s: with it a frozen server held a subscribe stage 3.5 s past its cancel() (two
  // look-ups before the stop token was read again), and ensure_edge past
  // connect_options::timeout.
  void make_js(js_ctx& c, std::chrono::milliseconds wait) const {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = std::max<std::int64_t>(1, wait.count());
    make_js_raw(&c.js, &jo);
  }
  void make_js_raw(jsCtx** js, jsOptions* o) const {
    natsStatus s = natsConnection_JetStream(js, nc, o);
    if (s != NATS_OK) throw std::runtime_error("sluice::jetstream: " + url + ": no JetStream context: " + nats_error(s));
  }

  // Registers the edge's gauge with the graph whose stage runs on this thread (if any),
  // and with the connection's gauge thread, which keeps it fresh while it lives.
  std::shared_ptr<edge_gauge> make_gauge(const edge_options& e, bool pushes) {
    auto g = std::make_shared<edge_gauge>();
    g->stream = e.stream;
    g->max_msgs.store(static_cast<std::uint64_t>(std::max<std::int64_t>(e.max_msgs, 0)), std::memory_order_relaxed);
    make_js(g->info, kLookupWait);  // a stalled server holds the gauge thread up this long at most
    // The first reading here, on the stage's thread before its stage runs (as the stage's
    // own refresh used to): the gauge thread's first pass may come late on a loaded
    // machine, after a short-lived edge has drained.
    poll_gauge(*g);
    sluice::this_stage::add_external_channel("jetstream:" + e.stream, pushes, [g] { return g->read(); });
    std::lock_guard lk(gauge_mu);
    std::erase_if(gauges, [](const std::weak_ptr<edge_gauge>& w) { return w.expired(); });
    gauges.push_back(g);
    if (!gauger.joinable()) {
      try {
        gauger = std::thread([this] { refresh_gauges(); });
      } catch (const std::system_error&) {
        // No thread: the gauge shows max_msgs and no messages.
      }
    }
    return g;
  }

  // The gauge thread: at once, then every kGaugePeriod, one stream-info request per live
  // gauge. It holds no reference to this state: ~conn_state joins it.
  void refresh_gauges() {
    std::unique_lock lk(gauge_mu);
    while (!gauges_stopping) {
      // One pass: a gauge that is gone, or whose stage is, leaves the list; every live one
      // goes into `live`, so that none is freed under gauge_mu.
      std::vector<std::shared_ptr<edge_gauge>> live;
      std::erase_if(gauges, [&](const std::weak_ptr<edge_gauge>& w) {
        auto g = w.lock();
        if (!g) return true;
        const bool polled = g->polled.load(std::memory_order_relaxed);
        live.push_back(std::move(g));
        return !polled;
      });
      lk.unlock();
      for (const auto& g : live) {
        if (g->polled.load(std::memory_order_relaxed)) poll_gauge(*g);
      }
      live.clear();  // outside gauge_mu: the last reference to a gauge may be this one
      lk.lock();
      gauge_cv.wait_for(lk, kGaugePeriod, [&] { return gauges_stopping; });
    }
  }

  // One stream-info request (skipped while the connection is down).
  void poll_gauge(edge_gauge& g) const {
    if (natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED) return;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, g.info.js, g.stream.c_str(), nullptr, &jerr) == NATS_OK) {
      g.msgs.store(si->State.Msgs, std::memory_order_relaxed);
      if (si->Config != nullptr && si->Config->MaxMsgs > 0) {
        g.max_msgs.store(static_cast<std::uint64_t>(si->Config->MaxMsgs), std::memory_order_relaxed);
      }
      if (si->Config != nullptr) {
        g.kind.store(edge_gauge::kind_of(si->Config->Retention, si->Config->Discard == js_DiscardNew),
                     std::memory_order_relaxed);
      }
      jsStreamInfo_Destroy(si);
    }
  }
};

namespace {
std::string random_producer_id() {
  std::random_device rd;
  std::ostringstream o;
  o << std::hex << rd() << rd();
  return o.str();
}

std::string subject_of(const edge_options& e) { return e.subject.empty() ? e.stream : e.subject; }
std::string durable_of(const edge_options& e) { return e.durable.empty() ? e.stream : e.durable; }

// The longest subject an edge may publish to. A message's control line ("HPUB <subject>
// <reply inbox> <header bytes> <total bytes>") must fit the server's max_control_line
// (4096 bytes by default): one that did not made the server close the connection, and
// with it every edge on it, for good ("the connection ... is closed", the cause never
// named). Half of it leaves room for the inbox and the sizes.
constexpr std::size_t kMaxSubjectLength = 2048;
void check_subject_length(const char* call, const edge_options& e) {
  const std::string subject = subject_of(e);
  if (subject.size() <= kMaxSubjectLength) return;
  throw std::invalid_argument("sluice::jetstream::" + std::string(call) + ": edge '" + e.stream + "': subject of " +
                              std::to_string(subject.size()) + " bytes ('" +
                              sluice::detail::utf8_clean(subject.substr(0, 40)) + "...'); at most " +
                              std::to_string(kMaxSubjectLength) +
                              " (a NATS server closes a connection whose control line passes 4096 bytes)");
}

void need_connection(const connection& c, const char* what) {
  if (!c.state()) throw std::logic_error(std::string("sluice::jetstream::") + what + ": an empty connection handle");
}
}  // namespace

// ---- publish -------------------------------------------------------------------
//
// The publish stages of a connection share its jsCtx (conn_state::pub_js: see "libnats
// 3.4.1 and subscription lifetime" above), whose AckHandler is route_ack with the
// connection's state as its closure. libnats calls it with each message's
// acknowledgement (or refusal, or MaxWait timeout) on one of its threads, having taken
// the message out of the context's pending map (under the context's lock, released
// before the call); the connection's ack_table says which stage sent it.
//
// Protocol.
//   - A stage registers (ack_table::add, by its producer id) before its first message
//     and removes itself (ack_table::remove) when it ends, both under acks.mu.
//   - A stage puts a message into its own `sent` set under its own mu (in the same
//     critical section that counts it in_flight) and counts it in acks.outstanding
//     before handing it to js_PublishMsgAsync: its callback may run before that returns.
//     A message libnats refuses at once (no callback will come) is taken out again.
//   - route_ack, under acks.mu: reads the producer id from the message's Nats-Msg-Id
//     ("<producer_id>-<sequence>"), and gives the message to the registered stage with
//     that id whose `sent` holds it (pub_state::on_ack takes it out under the stage's
//     mu). No such stage: its stage is gone, and the message is destroyed. Then it
//     decrements acks.outstanding, and notifies acks.idle when that reaches 0.
// So once remove() returned, no callback runs or will run on the stage's state: it is
// freed at once (no state kept for the connection's lifetime). Per message: the stage
// takes no lock beyond its own mu (taken anyway for its window) and an atomic; route_ack
// takes acks.mu, which only the context's reply thread takes per message (stages take
// it when they start and end): uncontended.
//
// Connection close (~conn_state, no stage left). After natsConnection_Close no
// acknowledgement arrives, but libnats runs the callback on the reply subscription's
// own thread, which natsConnection_Close does not wait for: route_ack may be running, or
// be about to run for a message it took from the pending map. ack_table::drain takes
// back every message still pending (js_PublishAsyncGetPendingList, under the context's
// lock: no callback will come for those); every other message counted in outstanding
// was taken by a callback that will run route_ack, and route_ack's decrement (under
// acks.mu) is its last touch of the connection's state. drain waits on acks.mu until
// outstanding is 0, so the state (acks, the closure) outlives every callback.
void route_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);

// Window protocol: in_flight counts messages handed to libnats and not yet acknowledged
// (a refused message stays in flight while it waits in `retry`). The stage thread waits
// (cv) for in_flight < window; the acknowledgement callback (libnats thread) decrements
// and notifies under mu, so no wake-up is lost. A refused message goes back to the stage
// thread through `retry` (never re-published from the callback: that would block libnats).
struct pub_state {
  std::shared_ptr<conn_state> conn;
  edge_options edge;
  std::string subject;
  publish_options opts;
  std::string producer_id;
  std::uint64_t seq = 0;
  std::string id_buf;  // stage thread only: "<producer_id>-", then the item's sequence

  std::mutex mu;
  std::condition_variable_any cv;
  std::size_t in_flight = 0;                                  // guarded by mu
  // Each message's sequence (its Nats-Msg-Id's number) goes with it: the stage keeps the
  // item until that sequence is in `acked`, and hands what is left at its end to on_discard.
  struct waiting {
    natsMsg* msg;
    std::uint64_t seq;
    clock::time_point due;
  };
  std::unordered_map<natsMsg*, std::uint64_t> sent;  // guarded by mu: handed to libnats, callback not yet run
  std::deque<waiting> retry;                         // guarded by mu: refused, to be sent again when due
  std::vector<std::uint64_t> acked;                  // guarded by mu: stored, since take_acknowledged
  // While the stream refuses (full, or no answer in time), one message at a time asks it
  // again, every opts.retry; the others wait in `retry`. (Each of a window's messages was
  // re-published on its own every 2 ms: 20-30 thousand refusals a second, 80-130 MB/s to
  // the server, while the stream stayed full.) Each message stored meanwhile releases at
  // most two waiting ones (`released`), a slow start: a stream with room acknowledges them
  // at once and the queue drains in a few round trips; one that a slow consumer drains
  // refuses at most two of them per message it stores. (Every waiting message went at each store,
  // and all but one were refused again: 236 refusals per stored message, 22,000 a second.)
  // A refusal ends the release. `refusing` ends once a message is stored with none waiting.
  // Guarded by mu.
  bool refusing = false;
  natsMsg* probe = nullptr;            // the one asking now, if any
  clock::time_point next_probe{};      // when the next may ask
  std::size_t released = 0;            // waiting messages that may go now, whatever their time
  std::string last_error;                                     // guarded by mu
  outage down;                                                // stage thread only
  // A refusal that no wait can mend (the stream can never store the message), and since
  // when every answer has been "no responders" (no stream on the subject: deleted, or a
  // server that lost its store). Guarded by mu; the stage thread throws for them (wait).
  std::string never_storable;
  outage no_stream;
  std::shared_ptr<edge_gauge> gauge;                          // stage thread (poll), snapshot (read)

  ~pub_state() {
    for (auto& r : retry) natsMsg_Destroy(r.msg);
    if (gauge) gauge->polled.store(false, std::memory_order_relaxed);
  }

  // The acknowledgement (pa), refusal or timeout (pae) of msg, if msg is in `sent` (then
  // it is ours again, and true); false: not this stage's. On a libnats thread, under
  // acks.mu (route_ack).
  bool on_ack(natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae) {
    const auto& c = opts.counters;
    std::unique_lock lk(mu);
    const auto it = sent.find(msg);
    if (it == sent.end()) return false;
    const std::uint64_t msg_seq = it->second;
    sent.erase(it);
    if (sent.empty()) cv.notify_all();  // settle_for() waits for this
    if (msg == probe) probe = nullptr;
    if (pa != nullptr) {
      try {
        acked.push_back(msg_seq);  // reserved for a window's worth: no allocation here in practice
      } catch (...) {
        // Its item stays with the stage and becomes a dead letter at the end: reported, not lost.
      }
      if (refusing) {  // the stream took one: two waiting messages may go (slow start)
        if (retry.empty()) {
          refusing = false;
          released = 0;
        } else {
          released = std::min(released + 2, retry.size());
          cv.notify_all();
        }
      }
      no_stream.end();
      if (c) {  // before in_flight drops: finish() returns with every ack counted
        c->acked.fetch_add(1, std::memory_order_relaxed);
        if (pa->Duplicate) c->duplicates.fetch_add(1, std::memory_order_relaxed);
      }
      // A stage waiting for room is woken once half the window is free (and at 0, for
      // finish), not at every ack: a full window then refills in one burst, instead of
      // one thread wake-up per message. (The wait re-checks at least every 50 ms anyway.)
      --in_flight;
      if (in_flight == opts.window / 2 || in_flight == 0) cv.notify_all();
      lk.unlock();
      natsMsg_Destroy(msg);
      return true;
    }
    // Refused (stream full: discard = new) or timed out: the stage re-publishes the same
    // message (same Nats-Msg-Id) after opts.retry.
    if (c) c->refused.fetch_add(1, std::memory_order_relaxed);
    if (pae != nullptr) {
      last_error = pae->ErrText != nullptr ? pae->ErrText : natsStatus_GetText(pae->Err);
      if (pae->ErrCode == JSStreamMessageExceedsMaximumErr && never_storable.empty()) {
        never_storable = "the stream refuses a message of " + std::to_string(natsMsg_GetDataLength(msg)) +
                         " data bytes for good (" + last_error + ": its max_msg_size)";
      }
      if (pae->ErrCode == JSStreamNotMatchErr && never_storable.empty()) {
        never_storable = "subject '" + subject + "' is taken by another stream, not '" + edge.stream +
                         "' (the server: " + last_error + "); the edge's messages go only to its own stream";
      }
      if (pae->Err == NATS_NO_RESPONDERS) {
        no_stream.seen();
      } else {
        no_stream.end();
      }
    }
    const auto now = clock::now();
    if (!refusing || now + opts.retry > next_probe) next_probe = now + opts.retry;
    refusing = true;
    released = 0;  // full again: back to one message asking
    retry.push_back({msg, msg_seq, now + opts.retry});
    cv.notify_all();
    return true;
  }

  // A message in `retry` may be sent now: a store released it, or its time came and the
  // stream is not refusing, or it is and no message is asking it (and the next may ask).
  // Requires mu.
  [[nodiscard]] bool retry_due(clock::time_point now) const noexcept {
    if (retry.empty()) return false;
    if (released > 0) return true;
    if (retry.front().due > now) return false;
    return !refusing || (probe == nullptr && next_probe <= now);
  }
  // When retry_due may next become true by time alone (max: only an answer can make it).
  [[nodiscard]] clock::time_point next_retry() const noexcept {
    if (retry.empty()) return clock::time_point::max();
    if (released > 0) return clock::time_point::min();
    if (!refusing) return retry.front().due;
    if (probe != nullptr) return clock::time_point::max();
    return std::max(retry.front().due, next_probe);
  }

  // Sends m (ownership passes to libnats on success). Requires: m is in `sent` (put there
  // by the caller under mu), and mu is NOT held. On a local failure the message goes to
  // the retry queue.
  void send(natsMsg* m) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = opts.ack_timeout.count();
    // Stored only by the edge's stream: another stream that takes the subject refuses it
    // (JSStreamNotMatchErr, on_ack). Without it, a limits stream made with the edge's
    // subject took every message, acked it, and dropped what nobody read.
    po.ExpectStream = edge.stream.c_str();
    natsMsg* const sent_msg = m;
    auto& acks = conn->acks;
    acks.outstanding.fetch_add(1, std::memory_order_relaxed);  // relaxed: a count (ack_table)
    natsStatus s = js_PublishMsgAsync(conn->pub_js, &m, &po);
    if (s == NATS_OK) return;  // libnats owns it (its callback may even have run already)
    // Not sent: libnats took it out of its pending map, so no callback will come for it.
    // (No ~conn_state can be waiting for the count: this stage holds the connection.)
    acks.outstanding.fetch_sub(1, std::memory_order_relaxed);
    std::unique_lock lk(mu);
    const auto was = sent.find(sent_msg);
    const std::uint64_t msg_seq = was != sent.end() ? was->second : 0;
    if (was != sent.end()) sent.erase(was);
    if (probe == sent_msg) probe = nullptr;  // it never asked: the next may
    if (s == NATS_CONNECTION_CLOSED) {
      --in_flight;
      lk.unlock();
      natsMsg_Destroy(m);
      throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "': the connection to " + conn->url +
                               " is closed");
    }
    if (s == NATS_MAX_PAYLOAD) {
      // Never storable: the server's max_payload is fixed for the connection. Retrying it
      // would wait for ever (the stage looked like a stream that stays full).
      --in_flight;
      lk.unlock();
      const auto bytes = natsMsg_GetDataLength(m);
      const auto limit = natsConnection_GetMaxPayload(conn->nc);
      natsMsg_Destroy(m);
      throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "': a message of " + std::to_string(bytes) +
                               " data bytes and its Nats-Msg-Id header is over the max_payload of " +
                               std::to_string(limit) + " bytes of " + conn->url +
                               "; make items smaller or raise max_payload in the server's configuration");
    }
    last_error = nats_error(s);
    retry.push_back({m, msg_seq, clock::now() + opts.retry});
  }

  // Throws when re-publishing cannot help: the stream refused a message for good, or no
  // stream has answered on the edge's subject for give_up (it was deleted, or the server
  // came back without its store). Requires lk holds mu.
  void check_storable(std::unique_lock<std::mutex>& lk) {
    // The gauge thread's last look at the stream (every kGaugePeriod).
    if (const int k = gauge->kind.load(std::memory_order_relaxed); k != edge_gauge::kNotPolled) {
      check_keeps_messages(edge, static_cast<jsRetentionPolicy>(k / 2), (k % 2) != 0, checker::publish, true);
    }
    std::string why;
    if (!never_storable.empty()) {
      why = never_storable;
    } else if (no_stream.lasted() > conn->opts.give_up) {
      why = "no stream has taken its messages for " + no_stream.lasted_ms() +
            " (no responders on subject '" + subject +
            "': no stream takes that subject; the stream was deleted, made with other subjects, or the server "
            "came back without its store or without JetStream)";
    }
    if (why.empty()) return;
    lk.unlock();
    throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "' on " + conn->url + ": " + why);
  }

  // Re-publishes the due refused messages. Requires lk holds mu; may unlock it meanwhile.
  void service_retries(std::unique_lock<std::mutex>& lk) {
    const auto now = clock::now();
    while (retry_due(now)) {
      natsMsg* m = retry.front().msg;
      sent.emplace(m, retry.front().seq);  // before it leaves `retry`: a throw leaves it there
      retry.pop_front();
      if (released > 0) {
        --released;
        if (retry.empty()) released = 0;
      } else if (refusing) {
        probe = m;
        next_probe = now + opts.retry;
      }
      lk.unlock();
      if (opts.counters) opts.counters->resent.fetch_add(1, std::memory_order_relaxed);
      try {
        send(m);
      } catch (...) {
        lk.lock();
        throw;
      }
      lk.lock();
    }
  }

  // Waits until pred() (checked under mu) or stop; serves retries and watches the
  // connection meanwhile. Returns false on stop.
  // The time waited is counted as it passes (every round, at most 50 ms), not when the
  // wait ends: a publish stage held for good by a full stream showed as busy, with no
  // backpressure, and a wait ended by a stop was never counted.
  template <class Pred>
  bool wait(const std::stop_token& stop, Pred pred) {
    auto counted_to = clock::now();
    auto count = [&] {
      const auto now = clock::now();
      const auto waited =
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - counted_to).count());
      counted_to = now;
      if (opts.counters) opts.counters->waited_ns.fetch_add(waited, std::memory_order_relaxed);
      gauge->push_ns.fetch_add(waited, std::memory_order_relaxed);
    };
    std::unique_lock lk(mu);
    struct count_on_exit {  // a throw (check_storable, check_alive) counts too
      decltype(count)& c;
      ~count_on_exit() { c(); }
    } counting{count};
    for (;;) {
      service_retries(lk);
      check_storable(lk);
      if (pred()) break;
      if (stop.stop_requested()) return false;
      lk.unlock();
      conn->check_alive(edge.stream, down);
      lk.lock();
      auto until = clock::now() + std::chrono::milliseconds(50);
      until = std::min(until, next_retry());
      // Also woken when an answer brings the next re-publish before `until` (a refusal of
      // the message asking: the next asks `retry` later, not at the 50 ms check).
      cv.wait_until(lk, stop, until, [&] { return pred() || next_retry() < until; });
      count();
    }
    return true;
  }
};

void route_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* const conn = static_cast<conn_state*>(closure);
  thread_local ack_thread_mark this_thread;
  // Before the count below is taken back: ~conn_state's wait for this thread's end comes
  // after ack_table::drain, which waits for that count.
  if (!this_thread.of) this_thread.mark(conn->ack_threads_of);
  {
    auto& acks = conn->acks;
    std::lock_guard lk(acks.mu);
    bool taken = false;
    const char* id = nullptr;
    const char* dash = nullptr;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) dash = std::strrchr(id, '-');
    if (dash != nullptr) {
      const auto it = acks.stages.find(std::string_view(id, static_cast<std::size_t>(dash - id)));
      if (it != acks.stages.end()) {
        for (pub_state* p : it->second) {
          if ((taken = p->on_ack(msg, pa, pae))) break;
        }
      }
    } else {  // never: every message gets its id in publisher::publish; asked of every stage
      for (auto& [producer, ps] : acks.stages) {
        for (pub_state* p : ps) {
          if ((taken = p->on_ack(msg, pa, pae))) break;
        }
        if (taken) break;
      }
    }
    if (!taken) natsMsg_Destroy(msg);  // its stage is gone
    // Under mu, which ack_table::drain (~conn_state) takes to see 0: this callback's last
    // touch of the connection's state is the unlock below.
    if (acks.outstanding.fetch_sub(1, std::memory_order_relaxed) == 1) acks.idle.notify_all();
  }
  // The connection's state may be gone from here on (see ack_table::drain).
  if (const auto hold = g_ack_hold_ms.load(std::memory_order_relaxed); hold > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(hold));  // detail::hold_ack_callbacks (tests)
  }
}

publisher::publisher(const connection& c, const edge_options& e, const publish_options& o) {
  need_connection(c, "publish");
  check_publish_options(e, o);
  check_subject_length("publish", e);
  auto st = std::make_shared<pub_state>();
  st->conn = c.state();
  // The stream, if the server has it now, is refused when it loses messages, as
  // ensure_edge and the subscribe stage refuse it: with discard old a full stream drops
  // messages nobody read and never refuses a publish (no backpressure, and acked items
  // lost); one that is not a work queue keeps what was acked, fills, and the stage waits
  // for ever. Only ensure_edge looked, and a process that publishes alone never called
  // it. A server down, slow, or without the stream yet is not waited for: publishing
  // waits for a stream as before (give_up).
  if (natsConnection_Status(st->conn->nc) == NATS_CONN_STATUS_CONNECTED) {
    js_ctx js;
    st->conn->make_js(js, kLookupWait);
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, js.js, e.stream.c_str(), nullptr, &jerr) == NATS_OK && si != nullptr) {
      const std::unique_ptr<jsStreamInfo, void (*)(jsStreamInfo*)> held(si, jsStreamInfo_Destroy);
      if (si->Config != nullptr) {
        check_keeps_messages(e, si->Config->Retention, si->Config->Discard == js_DiscardNew, checker::publish);
      }
    }
  }
  st->edge = e;
  st->subject = subject_of(e);
  st->opts = o;
  if (st->opts.window == 0) st->opts.window = 1;
  st->producer_id = o.producer_id.empty() ? random_producer_id() : o.producer_id;
  st->seq = o.first_sequence;
  st->id_buf = st->producer_id + "-";
  st->sent.reserve(2 * st->opts.window);  // no rehash while the window is in use
  st->acked.reserve(2 * st->opts.window);
  st->gauge = st->conn->make_gauge(e, true);
  st->conn->acks.add(st->producer_id, st.get());  // last: nothing throws after it
  st_ = std::move(st);
}

publisher::~publisher() { detach(); }

void publisher::detach() noexcept {
  if (detached_) return;
  detached_ = true;
  // From here no acknowledgement reaches this state; its messages still pending in
  // libnats are destroyed by route_ack when theirs comes (or at the connection's close).
  st_->conn->acks.remove(st_->producer_id, st_.get());
  std::lock_guard lk(st_->mu);
  for (auto& r : st_->retry) natsMsg_Destroy(r.msg);
  st_->retry.clear();
  st_->probe = nullptr;
  st_->released = 0;
  st_->sent.clear();  // libnats' now
}

void publisher::settle_for(const std::stop_token& stop, std::chrono::milliseconds most) noexcept {
  try {
    std::unique_lock lk(st_->mu);
    st_->cv.wait_until(lk, stop, clock::now() + most, [&] { return st_->sent.empty(); });
  } catch (...) {
    // A lock that cannot be taken: no wait; what is unanswered becomes dead letters.
  }
}

void publisher::take_acknowledged(std::vector<std::uint64_t>& out) {
  std::lock_guard lk(st_->mu);
  out.swap(st_->acked);
  st_->acked.clear();
}

std::uint64_t publisher::next_sequence() const noexcept { return st_->seq; }

void publisher::position(std::uint64_t p) noexcept { st_->seq = st_->opts.first_sequence + p; }

namespace {
// The header block each published message carries, "NATS/1.0\r\nNats-Msg-Id:
// <producer_id>-<seq>\r\n\r\n", in bytes, for a sequence number of `digits` digits.
std::uint64_t msg_id_header_bytes(const std::string& producer_id, std::uint64_t digits) noexcept {
  constexpr std::uint64_t kHeaderFraming = 27;  // all of it but the id's two parts and their '-'
  return kHeaderFraming + producer_id.size() + 1 + digits;
}
}  // namespace

std::string publisher::over_max_payload(std::size_t payload) const {
  // libnats refuses a message whose header block and data pass the server's max_payload.
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, st_->seq).ptr;
  const std::uint64_t header = msg_id_header_bytes(st_->producer_id, static_cast<std::uint64_t>(end - digits));
  const std::int64_t limit = natsConnection_GetMaxPayload(st_->conn->nc);
  if (limit <= 0 || std::cmp_less_equal(std::uint64_t{payload} + header, limit)) return {};
  return "is a message of " + std::to_string(payload) + " bytes, over the max_payload of " + std::to_string(limit) +
         " bytes of " + st_->conn->url + " with its " + std::to_string(header) +
         "-byte Nats-Msg-Id header; it could never be sent (make items smaller or raise max_payload in the server's "
         "configuration)";
}

std::uint64_t publisher::stored_size(std::size_t payload) const noexcept {
  // The subject and the Nats-Msg-Id header block (msg_id_header_bytes), its sequence
  // counted as 20 digits (never less than the server's count); nats-server's file store
  // adds 30 bytes a message (a 22-byte record head, 4 for the header block's length, an
  // 8-byte hash), its memory store 16.
  constexpr std::uint64_t kSequenceDigits = 20, kStoreOverhead = 34;
  return std::uint64_t{payload} + st_->subject.size() + msg_id_header_bytes(st_->producer_id, kSequenceDigits) +
         kStoreOverhead;
}

bool publisher::publish(std::string_view bytes, const std::stop_token& stop) {
  auto& s = *st_;
  // A message over the edge's own max_bytes never fits, however empty the stream gets (the
  // server's "maximum bytes exceeded" reads the same as a full stream's, and was retried
  // for ever).
  // Judged as the server stores it (stored_size): one under max_bytes by its payload
  // alone was refused as a full stream's too, and published again for ever.
  if (const std::uint64_t stored = stored_size(bytes.size());
      s.edge.max_bytes > 0 && std::cmp_greater(stored, s.edge.max_bytes)) {
    throw std::runtime_error("sluice::jetstream: edge '" + s.edge.stream + "': a message of " +
                             std::to_string(bytes.size()) + " bytes is over the edge's max_bytes of " +
                             std::to_string(s.edge.max_bytes) + " once stored (" + std::to_string(stored) +
                             " bytes with its subject, id and the store's own); it could never be stored");
  }
  if (!s.wait(stop, [&] { return s.in_flight < s.opts.window; })) return false;
  natsMsg* m = nullptr;
  natsStatus rc = natsMsg_Create(&m, s.subject.c_str(), nullptr, bytes.data(), static_cast<int>(bytes.size()));
  if (rc == NATS_OK) {
    // "<producer_id>-<seq>", built in place: one string per stage, no allocation per item.
    s.id_buf.resize(s.producer_id.size() + 1);
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, s.seq).ptr;
    s.id_buf.append(digits, end);
    rc = natsMsgHeader_Set(m, "Nats-Msg-Id", s.id_buf.c_str());
  }
  if (rc != NATS_OK) {
    natsMsg_Destroy(m);
    throw std::runtime_error("sluice::jetstream: edge '" + s.edge.stream + "': cannot make a message: " + nats_error(rc));
  }
  const std::uint64_t seq = s.seq++;
  {
    std::lock_guard lk(s.mu);
    try {
      s.sent.emplace(m, seq);
    } catch (...) {
      natsMsg_Destroy(m);
      throw;
    }
    ++s.in_flight;
  }
  // Counted before it goes (its acknowledgement may come back before send returns, and
  // acked never passes sent), taken back when send throws: it was not sent.
  if (s.opts.counters) s.opts.counters->sent.fetch_add(1, std::memory_order_relaxed);
  try {
    s.send(m);
  } catch (...) {
    if (s.opts.counters) s.opts.counters->sent.fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
  return true;
}

bool publisher::finish(const std::stop_token& stop) {
  auto& s = *st_;
  return s.wait(stop, [&] { return s.in_flight == 0; });
}

// ---- subscribe -----------------------------------------------------------------
//
// Pull requests are our own, not libnats' natsSubscription_Fetch: in libnats 3.4.1 a
// fetch that finds messages already queued on its subscription (late arrivals of an
// earlier fetch that gave up before its batch came in) first takes k of them, then asks
// the server for batch - k more, but keeps reading until it holds batch - k messages in
// all: with k > batch / 2 it reads on past its array of `batch` entries (a heap
// overflow, then corruption; reproduced deterministically by fetching a random batch
// with a 1 ms and a 50 ms wait in turn: batch 61 returned 120). The extra messages were
// also never freed (the LeakSanitizer reports of natsMsg_create).
//
// Protocol. One plain subscription on a private inbox "<inbox>.*". A pull request is a
// publish to $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> with reply "<inbox>.<n>" and
// {"batch": b, "expires": max(fetch_wait, kMinExpires)}; the server answers with up to b
// messages (their own subjects, with a $JS.ACK reply) and, if it ends the request early,
// one status message on "<inbox>.<n>" (404 / 408 / 409). At most one request is open at
// a time: it ends when b messages came, when its status came, or (no answer: a server
// restart lost it, or it expired just as a message was ready) after expires +
// kRequestGrace. A fetch waits at most fetch_wait; the request stays open across fetches. A message is never dropped: whatever arrives on
// the inbox is delivered, late or not, so the number held is bounded by what was asked
// (b <= the output channel's free room) plus the rest of an abandoned request.
//
// Acks. An ack is "+ACK" published to the message's reply subject. Most are plain; one
// in kConfirmEvery (and any sent kConfirmLag after the last such) asks for an answer: it
// carries a reply of ours, "<confirm-inbox>.<n>" (n: the number of that send), and the
// server applies the ack, then answers there (JetStream's double ack). One answer
// confirms its own ack and every ack sent before it over the same TCP connection: a
// connection's bytes arrive in order, and the server applies a consumer's acks in the
// order they arrive (one queue per consumer) before it answers. "The same connection"
// is the connection's reconnect count (libnats' stats), read before each send and again
// after each answer is taken: libnats counts a reconnect before it reads anything from
// the new connection, so equal counts mean that the ack, the asking ack and its answer
// all went over one connection. An ack whose send failed is never confirmed that way.
// `unconfirmed` (by send number) holds what is not confirmed yet; ack() waits while it
// holds ack_window entries, serving confirmations (a plain subscription read by whoever
// waits or by the stage's fetch); the stage's fetch (and any wait) asks about the plain
// acks sent since the last asking one by re-sending the newest of them as one; an entry
// older than ack_confirm_wait is sent again (asking), one older than give_up is given up
// (counted). The confirmation of an ack is served before the stage hands on any message
// that arrived after it (fetch serves confirmations first), so a redelivery is never
// seen before the confirmation that preceded it.
// With confirm_acks = false every ack is plain and none of this exists.
constexpr std::uint64_t kConfirmEvery = 32;
constexpr auto kConfirmLag = std::chrono::milliseconds(2);
constexpr auto kRequestGrace = std::chrono::milliseconds(200);
// A request lives on the server for max(fetch_wait, kMinExpires): the stage still looks
// at its stop token every fetch_wait, but a request that short would often expire on a
// loaded server before a message for it was ready, and nats-server 2.9 then drops it
// without a word (no 408), which costs a kRequestGrace wait.
constexpr auto kMinExpires = std::chrono::milliseconds(500);
// At the end, the open request's messages in flight are awaited until none came for
// this long (at most fetch_wait in all).
constexpr auto kCloseQuiet = std::chrono::milliseconds(5);
// A fetch waits in slices this long, looking at the stage's stop token between them: a
// fetch_wait of seconds (a common long poll) kept cancel() waiting that long.
constexpr auto kStopSlice = std::chrono::milliseconds(20);

struct sub_state {
  std::shared_ptr<conn_state> conn;
  edge_options edge;
  subscribe_options opts;
  std::string durable;          // the edge's consumer
  std::string next_subject;     // $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>
  std::string inbox;            // "<inbox>." (pull replies: + request number)
  std::string confirm_inbox;    // "<inbox>." (ack confirmations: + token)
  natsSubscription* pulls = nullptr;
  natsSubscription* confirms = nullptr;
  std::shared_ptr<edge_gauge> gauge;
  std::stop_token stop;  // the stage's: a teardown (cancel, a failure) and request_stop() request it

  // The open pull request (stage thread only).
  std::uint64_t request = 0;
  bool open = false;
  std::size_t asked = 0, got = 0;
  clock::time_point request_deadline{};
  outage down;
  // Since when no pull request has had any answer (a live consumer answers each one, with
  // messages or 408 when it expires), or every answer was "no responders". A request to a
  // deleted consumer gets no answer at all, so past give_up the consumer is looked up.
  outage unanswered;
  clock::time_point last_resend_check{};
  // Sweeping acked messages a killed server left behind (sweep_stranded): the consumer's
  // filter subject, the reconnect count at the last sweep, and its time. (The stream is a
  // work queue, so an acked message is gone by definition: check_for_subscribe saw to it.)
  std::string filter;
  std::uint64_t swept_epoch = UINT64_MAX;
  clock::time_point last_sweep{};

  static constexpr std::uint64_t kNoConnection = UINT64_MAX;  // an epoch no answer matches
  struct unconfirmed_ack {
    std::string reply;  // the message's $JS.ACK subject
    std::string id;     // for on_confirmed (empty when nobody asked)
    clock::time_point first, sent;
    unsigned sends = 1;                   // first send + re-sends after ack_confirm_wait
    std::uint64_t epoch = kNoConnection;  // the reconnect count at the last send (kNoConnection: it failed)
    bool asked = false;                   // the last send asked for an answer
  };
  std::mutex ack_mu;
  std::uint64_t sends_made = 0;  // guarded by ack_mu: numbers the sends
  std::uint64_t plain_run = 0;   // guarded by ack_mu: plain sends since the last asking one
  clock::time_point last_ask{};  // guarded by ack_mu
  natsStatistics* stats = nullptr;                          // guarded by ack_mu
  std::map<std::uint64_t, unconfirmed_ack> unconfirmed;     // guarded by ack_mu: by last send's number
  outage ack_down;                                          // guarded by ack_mu
  // The graph was torn down (cancel, a failure): acks still being made are sent without
  // waiting for room or confirmation, and the end does not wait for confirmations. An
  // ack not applied lets its message come back: at-least-once holds; a prompt teardown
  // is what cancel() asks for (an ack waiting for room on a stalled server waited until
  // the teardown deadline named the sink stuck).
  std::atomic<bool> abandoned{false};

  ~sub_state() {
    // The pull inbox is normally closed by the stage (close_pulls); then the outstanding
    // confirmations get a bounded wait (none after a teardown).
    close_pulls(false);
    if (confirms != nullptr) {
      settle_confirmations(abandoned.load() ? clock::now() : clock::now() + 2 * opts.ack_confirm_wait);
      conn->retire(confirms);  // late confirmations may be arriving: never a plain destroy
    }
    if (stats != nullptr) natsStatistics_Destroy(stats);
    if (gauge) gauge->polled.store(false, std::memory_order_relaxed);
  }

  static bool is_user_message(natsMsg* m) {
    if (natsMsg_GetDataLength(m) > 0) return true;
    const char* v = nullptr;
    return natsMsgHeader_Get(m, "Status", &v) != NATS_OK;  // no status header: the user's (empty) message
  }

  void send_settle(natsMsg* m, const char* what) const {
    const char* reply = natsMsg_GetReply(m);
    if (reply != nullptr) natsConnection_PublishString(conn->nc, reply, what);
  }

  // The connection's reconnect count (kNoConnection if it cannot be read). Requires ack_mu.
  std::uint64_t epoch() {
    std::uint64_t reconnects = 0;
    if (stats == nullptr && natsStatistics_Create(&stats) != NATS_OK) return kNoConnection;
    if (natsConnection_GetStats(conn->nc, stats) != NATS_OK ||
        natsStatistics_GetCounts(stats, nullptr, nullptr, nullptr, nullptr, &reconnects) != NATS_OK) {
      return kNoConnection;
    }
    return reconnects;
  }

  // Sends (or re-sends) a's ack, asking for an answer or not, and files it under the
  // send's number. Requires ack_mu.
  natsStatus send_ack(unconfirmed_ack&& a, bool ask) {
    const std::uint64_t n = ++sends_made;
    a.epoch = epoch();
    a.asked = ask;
    natsStatus rc;
    if (ask) {
      const std::string reply = confirm_inbox + std::to_string(n);
      rc = natsConnection_PublishRequest(conn->nc, a.reply.c_str(), reply.c_str(), "+ACK", 4);
      plain_run = 0;
      last_ask = clock::now();
    } else {
      rc = natsConnection_Publish(conn->nc, a.reply.c_str(), "+ACK", 4);
      ++plain_run;
    }
    if (rc != NATS_OK) a.epoch = kNoConnection;  // not sent: no answer may cover it
    unconfirmed.emplace(n, std::move(a));
    return rc;
  }

  // Re-sends the ack filed under it (asking), refiled under the new send. Requires ack_mu.
  std::map<std::uint64_t, unconfirmed_ack>::iterator resend(std::map<std::uint64_t, unconfirmed_ack>::iterator it,
                                                             bool count) {
    unconfirmed_ack a = std::move(it->second);
    it = unconfirmed.erase(it);
    a.sent = clock::now();
    if (count) ++a.sends;
    if (send_ack(std::move(a), true) == NATS_OK && count && opts.counters) {
      opts.counters->acks_resent.fetch_add(1, std::memory_order_relaxed);
    }
    return it;
  }

  // Asks about the plain acks sent since the last asking one, once kConfirmLag passed
  // since it (re-sends the newest of them asking), so that they are confirmed without
  // waiting for ack_confirm_wait. `now`: ask now, however recent the last ask.
  void ask_about_plain_acks(bool now = false) {
    std::lock_guard lk(ack_mu);
    if (plain_run == 0 || unconfirmed.empty()) return;
    if (!now && clock::now() - last_ask < kConfirmLag) return;
    auto newest = std::prev(unconfirmed.end());
    if (newest->second.asked) return;
    resend(newest, false);
  }

  void confirmed(std::map<std::uint64_t, unconfirmed_ack>::iterator it) {
    if (opts.counters) opts.counters->acks_confirmed.fetch_add(1, std::memory_order_relaxed);
    if (opts.on_confirmed) opts.on_confirmed(it->second.id, it->second.sends);
    unconfirmed.erase(it);
  }

  // Takes the confirmations that are here (waiting up to `wait` for the first one).
  void serve_confirmations(std::int64_t wait_ms) {
    if (confirms == nullptr) return;  // plain acks (confirm_acks = false): nothing to wait for
    natsMsg* m = nullptr;
    while (natsSubscription_NextMsg(&m, confirms, wait_ms) == NATS_OK) {
      wait_ms = 0;
      const char* subj = natsMsg_GetSubject(m);
      std::uint64_t token = 0;
      bool ok = subj != nullptr && std::strncmp(subj, confirm_inbox.c_str(), confirm_inbox.size()) == 0;
      if (ok) {
        const char* p = subj + confirm_inbox.size();
        ok = *p != '\0';
        for (; ok && *p != '\0'; ++p) {
          if (*p < '0' || *p > '9') ok = false;
          else token = token * 10 + static_cast<std::uint64_t>(*p - '0');
        }
      }
      natsMsg_Destroy(m);
      m = nullptr;
      if (!ok) continue;
      std::lock_guard lk(ack_mu);
      auto it = unconfirmed.find(token);
      // None: the answer to an ack since re-sent (it waits for that answer) or confirmed.
      if (it == unconfirmed.end()) continue;
      const std::uint64_t now = epoch();
      const bool covers = it->second.epoch == now && now != kNoConnection;
      confirmed(it);
      if (!covers) continue;
      // Every ack sent before it over the same connection was applied before it.
      for (auto j = unconfirmed.begin(); j != unconfirmed.end() && j->first < token;) {
        if (j->second.epoch == now) {
          auto next = std::next(j);
          confirmed(j);
          j = next;
        } else {
          ++j;
        }
      }
    }
  }

  // Re-sends acks unconfirmed for ack_confirm_wait; gives up those older than give_up.
  void resend_due() {
    const auto now = clock::now();
    std::lock_guard lk(ack_mu);
    for (auto it = unconfirmed.begin(); it != unconfirmed.end();) {
      if (now - it->second.first > conn->opts.give_up) {
        if (opts.counters) opts.counters->acks_unconfirmed.fetch_add(1, std::memory_order_relaxed);
        it = unconfirmed.erase(it);
        continue;
      }
      if (now - it->second.sent >= opts.ack_confirm_wait) {
        it = resend(it, true);  // refiled at the end: met again by this loop, not due then
        continue;
      }
      ++it;
    }
  }

  // Waits (bounded by `until`) for every outstanding confirmation; gives up the rest.
  void settle_confirmations(clock::time_point until) {
    for (;;) {
      {
        std::lock_guard lk(ack_mu);
        if (unconfirmed.empty()) return;
        if (clock::now() >= until || natsConnection_Status(conn->nc) == NATS_CONN_STATUS_CLOSED) {
          if (opts.counters) opts.counters->acks_unconfirmed.fetch_add(unconfirmed.size(), std::memory_order_relaxed);
          unconfirmed.clear();
          return;
        }
      }
      ask_about_plain_acks(true);
      serve_confirmations(10);
      resend_due();
    }
  }

  // An ack (either kind) that the closed connection refused.
  [[noreturn]] void throw_ack_on_closed() const {
    throw std::runtime_error("sluice::jetstream::delivery::ack: edge '" + edge.stream + "': the connection to " +
                             conn->url + " is closed");
  }

  void ack(natsMsg* m) {
    const char* reply = natsMsg_GetReply(m);
    if (reply == nullptr || std::strncmp(reply, "$JS.ACK.", 8) != 0) {
      throw std::logic_error("sluice::jetstream::delivery::ack: not a JetStream message");
    }
    if (!opts.confirm_acks) {
      const natsStatus rc = natsConnection_Publish(conn->nc, reply, "+ACK", 4);
      if (rc == NATS_CONNECTION_CLOSED) throw_ack_on_closed();
      // Any other failure is an ack lost: the message comes back after ack_wait.
      if (opts.counters) opts.counters->acks_sent.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Wait for room in the window, serving confirmations (and re-sends) meanwhile.
    serve_confirmations(0);
    for (;;) {
      {
        std::lock_guard lk(ack_mu);
        if (unconfirmed.size() < std::max<std::size_t>(opts.ack_window, 1)) break;
        if (abandoned.load(std::memory_order_relaxed)) break;
        conn->check_alive(edge.stream, ack_down);
      }
      ask_about_plain_acks(true);
      serve_confirmations(10);
      resend_due();
    }
    const auto now = clock::now();
    unconfirmed_ack a{reply, {}, now, now};
    if (opts.on_confirmed) a.id = message_id(m);
    std::lock_guard lk(ack_mu);
    const bool ask = plain_run + 1 >= kConfirmEvery || now - last_ask >= kConfirmLag;
    const natsStatus rc = send_ack(std::move(a), ask);
    if (rc == NATS_CONNECTION_CLOSED) {
      unconfirmed.erase(sends_made);  // not sent, and the message stays the caller's
      throw_ack_on_closed();
    }
    // Any other failure (e.g. the reconnect buffer is full) is served like a lost ack:
    // re-sent after ack_confirm_wait.
    if (opts.counters) opts.counters->acks_sent.fetch_add(1, std::memory_order_relaxed);
  }

  static std::string message_id(natsMsg* m);

  // Messages the stage took but could not hand on (its handler threw): nak'ed only once
  // the pull inbox is closed (stage thread only).
  std::vector<natsMsg*> held;
  // Set when the pull inbox is closed: until then, the steady-clock time (ns) at which
  // the server drops our last request. (Written by the stage thread, read by any thread
  // that naks: relaxed, a monitoring-grade value; pulls_closed is release/acquire.)
  std::atomic<std::int64_t> request_gone_ns{0};
  std::atomic<bool> pulls_closed{false};

  // How long a nak must ask the server to wait. nats-server 2.9.10 loses a redelivery
  // that comes up while its waiting-request queue holds only requests that expired or
  // whose inbox is gone (nextWaiting finds none, and the "redo" path drops the message
  // from the redelivery queue and steps the stream cursor back: the message then waits
  // for ack_wait, and another is delivered twice). While the stage runs, our request is
  // alive and takes the nak'ed message back at once; once the inbox is closed, a nak is
  // delayed until the server has dropped our last request (its expiry, + a margin).
  std::chrono::milliseconds nak_delay() const {
    if (!pulls_closed.load(std::memory_order_acquire)) return std::chrono::milliseconds(0);
    const auto now = clock::now().time_since_epoch();
    const auto gone = std::chrono::nanoseconds(request_gone_ns.load(std::memory_order_relaxed));
    if (gone <= now) return std::chrono::milliseconds(0);
    return std::chrono::duration_cast<std::chrono::milliseconds>(gone - now) + kCloseQuiet * 20;
  }
  void send_nak(natsMsg* m, std::chrono::milliseconds delay = std::chrono::milliseconds(0)) const {
    delay = std::max(delay, nak_delay());
    if (delay.count() <= 0) {
      send_settle(m, "-NAK");
      return;
    }
    const std::string body =
        "-NAK {\"delay\":" + std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(delay).count()) + "}";
    const char* reply = natsMsg_GetReply(m);
    if (reply != nullptr) natsConnection_Publish(conn->nc, reply, body.data(), static_cast<int>(body.size()));
  }

  // When the stage ends (wait = true; false from the destructor: no wait). The open
  // request's messages still on their way are awaited until none came for kCloseQuiet
  // (at most fetch_wait: teardown stays prompt), the inbox is emptied and unsubscribed,
  // and then everything taken and not handed on is nak'ed: a message nak'ed while its
  // request is still open on the server would come straight back to it, and be lost to
  // us until ack_wait. One arriving after all that is redelivered after ack_wait.
  void close_pulls(bool wait) {
    if (pulls == nullptr) return;
    const auto until = std::min(request_deadline, clock::now() + opts.fetch_wait);
    auto quiet_until = std::min(until, clock::now() + kCloseQuiet);
    const bool up = natsConnection_Status(conn->nc) == NATS_CONN_STATUS_CONNECTED;
    for (;;) {
      const bool waiting = wait && up && open && clock::now() < quiet_until;
      const auto left =
          waiting ? std::chrono::duration_cast<std::chrono::milliseconds>(quiet_until - clock::now()).count() : 0;
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, pulls, std::max<std::int64_t>(left, waiting ? 1 : 0)) != NATS_OK) {
        if (waiting && clock::now() < quiet_until) continue;
        break;
      }
      if (is_user_message(m)) {
        quiet_until = std::min(until, clock::now() + kCloseQuiet);
        held.push_back(m);
        if (++got >= asked) open = false;
        continue;
      }
      if (request_of(m) == request) {
        const char* code = nullptr;
        natsMsgHeader_Get(m, "Status", &code);
        if (code == nullptr || std::strncmp(code, "100", 3) != 0) open = false;
      }
      natsMsg_Destroy(m);
    }
    if (!open) request_gone_ns.store(0, std::memory_order_relaxed);  // answered: gone from the server
    open = false;
    conn->retire(pulls);  // late messages of our last request may be arriving
    pulls = nullptr;
    pulls_closed.store(true, std::memory_order_release);
    for (natsMsg* m : held) {
      send_nak(m);
      natsMsg_Destroy(m);
    }
    held.clear();
  }

  void send_request(std::size_t max) {
    ++request;
    const std::string reply = inbox + std::to_string(request);
    const auto expires = std::max<std::chrono::milliseconds>(opts.fetch_wait, kMinExpires);
    const auto expires_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(expires).count();
    const std::string body = "{\"batch\":" + std::to_string(max) + ",\"expires\":" + std::to_string(expires_ns) + "}";
    const natsStatus rc = natsConnection_PublishRequest(conn->nc, next_subject.c_str(), reply.c_str(), body.data(),
                                                        static_cast<int>(body.size()));
    if (opts.counters) opts.counters->polls.fetch_add(1, std::memory_order_relaxed);
    if (rc == NATS_CONNECTION_CLOSED) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "': fetch from " + conn->url +
                               " failed: " + nats_error(rc));
    }
    if (rc != NATS_OK) {  // e.g. the reconnect buffer is full: try again later
      if (opts.counters) opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    open = true;
    asked = max;
    got = 0;
    request_deadline = clock::now() + expires + kRequestGrace;
    request_gone_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                              (clock::now() + expires).time_since_epoch()).count(),
                          std::memory_order_relaxed);
  }

  // A server killed outright (SIGKILL) can come back with acked messages still in the
  // stream: nats-server 2.9 keeps the consumer's ack floor but loses the removals it had
  // not written. Nobody ever receives those messages again, yet they count against the
  // stream's max_msgs for good: each kill shrank the edge (a probe saw 593 of 4096 slots
  // taken after one), and inspect_edge showed messages no one would get. In a work-queue
  // stream every message of ours at or below the ack floor is acked, so such messages are
  // purged (ours only: the purge is filtered by the consumer's subject). Looked for when
  // the stage starts (from the subscriber's own look-up), at once after each reconnect, and every kSweepPeriod (a redelivered
  // message acked after the restart was seen stranded too): two look-ups, and a purge
  // only when the stream's first message is at or below the floor.
  void sweep_stranded() {
    std::uint64_t now_epoch;
    {
      std::lock_guard lk(ack_mu);
      now_epoch = epoch();
    }
    const auto now = clock::now();
    if (now_epoch == kNoConnection) return;
    // A sweep that got no answer is tried again a second later, not at every fetch.
    if (now - last_sweep < (now_epoch == swept_epoch ? kSweepPeriod : kSweepRetry)) return;
    if (natsConnection_Status(conn->nc) != NATS_CONN_STATUS_CONNECTED) return;
    last_sweep = now;
    js_ctx js;
    conn->make_js(js, kLookupWait);
    const edge_lookup lk = look_up_edge(js.js, edge.stream, durable);
    if (!lk.ok()) return;  // gone: check_consumer_unanswered's verdict, once pulls go unanswered
    // Made again since the stage started, maybe with limits that lose messages (a
    // max_deliver of 1 dropped every nak'ed message, and the stage idled on for ever).
    if (lk.consumer.info->Config != nullptr) check_for_subscribe(edge, durable, lk);
    purge_stranded(lk, now_epoch);
  }
  // The sweep itself, from a look-up made at `at_epoch`: purges our messages at or below
  // the consumer's ack floor when the stream's first message is at or below it (it may
  // be another subject's: then nothing of ours goes, and nothing is counted). The purge
  // is a plain API request, not js_PurgeStream, for the server's count of what went
  // (libnats 3.4 drops it). A purge that got no answer leaves swept_epoch as it was
  // (tried again kSweepRetry later).
  void purge_stranded(const edge_lookup& lk, std::uint64_t at_epoch) {
    const std::uint64_t floor = lk.consumer.info->AckFloor.Stream;
    if (lk.first_seq != 0 && lk.first_seq <= floor) {
      // Names and subjects were checked to need no JSON escaping (not_json_safe).
      const std::string body = "{\"seq\":" + std::to_string(floor + 1) +  // purges the sequences below it
                               (filter.empty() ? std::string() : ",\"filter\":\"" + filter + "\"") + "}";
      const std::string subject = "$JS.API.STREAM.PURGE." + edge.stream;
      natsMsg* reply = nullptr;
      if (natsConnection_Request(&reply, conn->nc, subject.c_str(), body.data(), static_cast<int>(body.size()),
                                 kLookupWait.count()) != NATS_OK) {
        return;
      }
      const std::string_view answer(natsMsg_GetData(reply), static_cast<std::size_t>(natsMsg_GetDataLength(reply)));
      const auto at = answer.find("\"purged\":");
      std::uint64_t purged = 0;
      const bool ok = answer.find("\"error\"") == std::string_view::npos && at != std::string_view::npos;
      if (ok) {
        for (std::size_t i = at + 9; i < answer.size() && answer[i] >= '0' && answer[i] <= '9'; ++i) {
          purged = purged * 10 + static_cast<std::uint64_t>(answer[i] - '0');
        }
      }
      natsMsg_Destroy(reply);
      if (!ok) return;
      if (purged > 0 && opts.counters) opts.counters->stranded_sweeps.fetch_add(1, std::memory_order_relaxed);
    }
    swept_epoch = at_epoch;
  }

  // Called while pull requests go unanswered: past give_up of that, looks the consumer up,
  // and throws if it (or its stream) is gone; otherwise starts the wait again. An answer
  // that is neither (the server is busy, JetStream is restarting) is no verdict.
  void check_consumer_unanswered() {
    unanswered.seen();
    if (unanswered.lasted() <= conn->opts.give_up) return;
    const std::string lasted = unanswered.lasted_ms();
    unanswered.end();
    if (natsConnection_Status(conn->nc) != NATS_CONN_STATUS_CONNECTED) return;  // check_alive's case
    js_ctx js;
    conn->make_js(js, kLookupWait);  // no answer in time is no verdict: asked again after give_up
    const consumer_lookup c = look_up_consumer(js.js, edge.stream, durable);
    // Connected, and no JetStream answers at all: a server back without -js. It was
    // waited for give_up (JetStream may still have been starting); the look-up asked again
    // every give_up, and the stage idled for ever (a probe: 5,800 failed pulls in 2 min).
    if (c.status == NATS_NO_RESPONDERS) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "' on " + conn->url +
                               ": the server has no JetStream now (restarted without -js?); no pull request was "
                               "answered for " + lasted);
    }
    if (c.gone()) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "' on " + conn->url + ": its " +
                               (c.jerr == JSStreamNotFoundErr ? "stream" : "consumer '" + durable + "'") +
                               " is gone (deleted while the edge ran); no pull request was answered for " + lasted);
    }
  }

  // The request number a status message answers (0: not one of ours).
  std::uint64_t request_of(natsMsg* m) const {
    const char* subj = natsMsg_GetSubject(m);
    if (subj == nullptr || std::strncmp(subj, inbox.c_str(), inbox.size()) != 0) return 0;
    std::uint64_t n = 0;
    for (const char* p = subj + inbox.size(); *p != '\0'; ++p) {
      if (*p < '0' || *p > '9') return 0;
      n = n * 10 + static_cast<std::uint64_t>(*p - '0');
    }
    return n;
  }
};

std::string sub_state::message_id(natsMsg* m) {
  const char* v = nullptr;
  if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v != nullptr) return v;
  // No id from the publisher: the stream sequence is stable across redeliveries too.
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, m) != NATS_OK) return {};
  std::string s = "seq-" + std::to_string(meta->Sequence.Stream);
  jsMsgMetaData_Destroy(meta);
  return s;
}

// Durations past this are refused: the server counts in nanoseconds (an int64 overflows
// at 292 years), and a deadline this far is "never" for any graph.
constexpr auto kLongest = std::chrono::hours(24 * 365 * 100);

void check_subscribe_options(const edge_options& e, const subscribe_options& o) {
  if (o.fetch_wait <= std::chrono::milliseconds::zero() || o.fetch_wait > kLongest) {
    throw std::invalid_argument("sluice::jetstream::subscribe: edge '" + e.stream +
                                "': fetch_wait must be positive and at most 100 years (got " +
                                std::to_string(o.fetch_wait.count()) + " ms; 0 made an idle edge spin)");
  }
  // now() + 2 x a huge wait overflowed: no confirmation was ever waited for.
  if (o.ack_confirm_wait <= std::chrono::milliseconds::zero() || o.ack_confirm_wait > kLongest) {
    throw std::invalid_argument("sluice::jetstream::subscribe: edge '" + e.stream +
                                "': ack_confirm_wait must be positive and at most 100 years (got " +
                                std::to_string(o.ack_confirm_wait.count()) + " ms)");
  }
}

void check_publish_options(const edge_options& e, const publish_options& o) {
  const auto refuse = [&](const std::string& what) {
    throw std::invalid_argument("sluice::jetstream::publish: edge '" + e.stream + "': " + what);
  };
  // Twice the window is reserved up front: a huge one failed the stage with "vector::reserve"
  // or bad_alloc, and 2^63 wrapped to nothing.
  if (o.window > kMaxWindow) {
    refuse("window must be at most " + std::to_string(kMaxWindow) + " (got " + std::to_string(o.window) + ")");
  }
  // now() + a huge retry overflowed into an immediate one: a full stream was asked again
  // about 1,000 times a second.
  if (o.retry < std::chrono::milliseconds::zero() || o.retry > kLongest) {
    refuse("retry must be 0 or more and at most 100 years (got " + std::to_string(o.retry.count()) + " ms)");
  }
  if (o.ack_timeout < std::chrono::milliseconds::zero() || o.ack_timeout > kLongest) {
    refuse("ack_timeout must be 0 or more and at most 100 years (got " + std::to_string(o.ack_timeout.count()) +
           " ms)");
  }
}

namespace {

// Sleeps for d, or less if stop is requested. False: stop was requested.
bool nap(std::chrono::milliseconds d, const std::stop_token& stop) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lk(m);
  return !cv.wait_for(lk, stop, d, [] { return false; }) && !stop.stop_requested();
}

}  // namespace

}  // namespace detail
namespace {
// ensure_edge's check of an existing consumer (below); the subscribe stage's checks only
// what it cannot use, or what loses messages.
void check_consumer(checker call, const edge_options& e, const std::string& durable, const std::string& subject,
                    const jsConsumerConfig& c, int stream_subjects);
}  // namespace
namespace detail {

subscriber::subscriber(const connection& c, const edge_options& e, const subscribe_options& o,
                       const std::stop_token& stop) {
  need_connection(c, "subscribe");
  check_subscribe_options(e, o);
  if (!o.confirm_acks && o.on_confirmed) {
    throw std::invalid_argument("sluice::jetstream::subscribe: edge '" + e.stream +
                                "': on_confirmed needs confirm_acks (plain acks are never confirmed)");
  }
  auto st = std::make_shared<sub_state>();
  st->conn = c.state();
  st->edge = e;
  st->opts = o;
  st->stop = stop;
  if (st->opts.batch == 0) st->opts.batch = 1;
  const std::string durable = durable_of(e);
  {
    // The edge's durable consumer must exist (ensure_edge): never created or deleted here.
    // A server that is down (the connection reconnecting), or back without JetStream yet,
    // is waited for, as a fetch waits: up to give_up, and never past a stop request.
    // The stream is looked up too: check_consumer needs its subjects. Each look-up waits
    // kLookupWait for its answer at first, then twice as long after each that got none (a
    // server slow to answer, not gone, is still heard), at most kLookupWaitMax: the stop
    // token is read between rounds (a round: the consumer's look-up, then, once it was
    // answered, the stream's), so a stop ends the wait within about that.
    edge_lookup found;
    std::uint64_t found_epoch = sub_state::kNoConnection;
    outage down;
    std::chrono::milliseconds wait = kLookupWait;
    for (;;) {
      if (stop.stop_requested()) return;  // st_ stays null: ready() is false
      down.seen();  // from the first try: the message names how long this wait lasted
      const bool up = natsConnection_Status(st->conn->nc) == NATS_CONN_STATUS_CONNECTED;
      if (up) {
        {
          std::lock_guard lk(st->ack_mu);
          found_epoch = st->epoch();  // before the look-up: a reconnect after it sweeps again
        }
        js_ctx js;
        st->conn->make_js(js, wait);
        found = look_up_edge(js.js, e.stream, durable);
        if (found.ok()) break;
        const natsStatus s = found.status();
        const bool transient = found.jerr() == 0 && (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS ||
                                                     s == NATS_CONNECTION_DISCONNECTED || s == NATS_CONNECTION_CLOSED);
        if (!transient) break;
        if (s == NATS_TIMEOUT) wait = std::min(wait * 2, kLookupWaitMax);
      }
      if (down.lasted() > st->conn->opts.give_up) {
        throw std::runtime_error(
            "sluice::jetstream: edge '" + e.stream + "': cannot subscribe to consumer '" + durable + "': the server " +
            st->conn->url + " has been unreachable for " + down.lasted_ms() +
            (up ? " (last answer: " + nats_error(found.status()) + ")" : ""));
      }
      if (!nap(std::min(st->conn->opts.reconnect_wait, std::chrono::milliseconds(100)), stop)) return;
    }
    if (stop.stop_requested()) return;
    if (!found.consumer.found()) {
      throw std::runtime_error("sluice::jetstream: edge '" + e.stream + "': cannot subscribe to consumer '" + durable +
                               "' on " + st->conn->url + ": " + nats_error(found.consumer.status) +
                               (found.consumer.jerr != 0 ? " (JetStream error " + std::to_string(static_cast<int>(found.consumer.jerr)) + ")" : "") +
                               (found.consumer.status == NATS_NO_RESPONDERS ? ": the server has no JetStream (start nats-server with -js)" : ""));
    }
    if (found.stream_status != NATS_OK) {
      throw std::runtime_error("sluice::jetstream: edge '" + e.stream + "': cannot subscribe: stream '" + e.stream +
                               "' on " + st->conn->url + ": " + nats_error(found.stream_status) +
                               (found.stream_jerr != 0 ? " (JetStream error " + std::to_string(static_cast<int>(found.stream_jerr)) + ")" : ""));
    }
    // As ensure_edge checks it, but for the limits the edge chooses: a consumer made
    // elsewhere with a request batch or wait limit refused every pull request (409), asked
    // again for ever; with max_deliver a nak'ed message never came back, and the graph
    // idled for ever.
    const jsConsumerInfo& ci = *found.consumer.info;
    if (ci.Config == nullptr) {
      throw std::runtime_error("sluice::jetstream: edge '" + e.stream + "': consumer '" + durable + "' on " +
                               st->conn->url + ": the server sent no configuration");
    }
    check_for_subscribe(e, durable, found);
    if (ci.Config->FilterSubject != nullptr) st->filter = ci.Config->FilterSubject;
    if (found_epoch != sub_state::kNoConnection) {
      // The first sweep, from this look-up (sweep_stranded makes its own for the later ones).
      st->last_sweep = clock::now();
      st->purge_stranded(found, found_epoch);
    }
  }
  st->durable = durable;
  st->next_subject = "$JS.API.CONSUMER.MSG.NEXT." + e.stream + "." + durable;
  for (auto* which : {&st->inbox, &st->confirm_inbox}) {
    natsInbox* ib = nullptr;
    if (natsInbox_Create(&ib) != NATS_OK) throw std::runtime_error("sluice::jetstream: cannot make an inbox");
    *which = std::string(ib) + ".";
    natsInbox_Destroy(ib);
  }
  natsStatus s = natsConnection_SubscribeSync(&st->pulls, st->conn->nc, (st->inbox + "*").c_str());
  if (s == NATS_OK && st->opts.confirm_acks) {
    s = natsConnection_SubscribeSync(&st->confirms, st->conn->nc, (st->confirm_inbox + "*").c_str());
  }
  // What is held is bounded by the pull requests and the ack window, not by libnats.
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(st->pulls, -1, -1);
  if (s == NATS_OK && st->confirms != nullptr) s = natsSubscription_SetPendingLimits(st->confirms, -1, -1);
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream: edge '" + e.stream + "': cannot subscribe on " + st->conn->url + ": " +
                             nats_error(s));
  }
  st->gauge = st->conn->make_gauge(e, false);
  st_ = std::move(st);
}

subscriber::~subscriber() {
  if (st_) st_->close_pulls(true);
}

void subscriber::abandon() noexcept {
  if (st_) st_->abandoned.store(true);
}

const std::string& subscriber::edge_name() const { return st_->edge.stream; }

void subscriber::fetch_raw(std::size_t max, void (*cb)(void*, message&&), void* ctx) {
  auto& s = *st_;
  s.conn->check_alive(s.edge.stream, s.down);
  const auto t0 = clock::now();
  if (t0 - s.last_resend_check >= std::chrono::milliseconds(100)) {
    s.last_resend_check = t0;
    // The answers that came since (an idle edge reads none otherwise: they were read only
    // before a message is handed on and in ack(), so the last acks before an idle spell
    // were re-sent every ack_confirm_wait and given up after give_up, never confirmed),
    // then the re-sends of those still unanswered.
    s.serve_confirmations(0);
    s.resend_due();
    s.sweep_stranded();
  }
  s.ask_about_plain_acks();
  if (s.open && t0 >= s.request_deadline) {  // no answer: lost (server restart), late, or no consumer; ask again
    s.open = false;
    if (s.opts.counters) s.opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
    s.check_consumer_unanswered();
  }
  if (!s.open) s.send_request(std::max<std::size_t>(std::min(max, s.opts.batch), 1));
  const auto until = t0 + s.opts.fetch_wait;
  std::size_t delivered = 0;
  bool pause = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now()).count();
    // After the first message, only what is already here: hand it on without waiting.
    const std::int64_t wait = delivered > 0 ? 0 : std::clamp<std::int64_t>(left, 0, kStopSlice.count());
    natsMsg* m = nullptr;
    const natsStatus rc = natsSubscription_NextMsg(&m, s.pulls, wait);
    if (rc == NATS_TIMEOUT) {
      if (delivered == 0 && left > wait && !s.stop.stop_requested()) continue;  // the next slice
      break;
    }
    if (rc == NATS_NO_RESPONDERS) {  // JetStream not (yet) there, e.g. during a restart
      s.open = false;
      pause = true;
      if (s.opts.counters) s.opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
      s.check_consumer_unanswered();
      break;
    }
    if (rc != NATS_OK) {
      if (s.opts.counters) s.opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
      throw std::runtime_error("sluice::jetstream: edge '" + s.edge.stream + "': fetch from " + s.conn->url +
                               " failed: " + nats_error(rc));
    }
    if (!sub_state::is_user_message(m)) {
      // The status code lives in the message's headers: judged before the message goes.
      const char* code = nullptr;
      natsMsgHeader_Get(m, "Status", &code);
      const bool ours = s.request_of(m) == s.request;
      const bool heartbeat = code != nullptr && std::strncmp(code, "100", 3) == 0;
      const bool nothing_yet =  // 404 / 408: nothing (more) for now; 409 and others: try again later
          code != nullptr && (std::strncmp(code, "404", 3) == 0 || std::strncmp(code, "408", 3) == 0);
      natsMsg_Destroy(m);
      if (!ours || heartbeat) continue;  // a late status of an abandoned request, or a heartbeat
      s.unanswered.end();
      s.open = false;
      if (!nothing_yet) {
        pause = true;
        if (s.opts.counters) s.opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
      }
      break;
    }
    if (s.open && ++s.got >= s.asked) s.open = false;
    s.unanswered.end();
    ++delivered;
    if (s.opts.counters) s.opts.counters->fetched.fetch_add(1, std::memory_order_relaxed);
    // Confirmations that came before this message are served before it is handed on.
    s.serve_confirmations(0);
    message msg(m, st_);
    try {
      cb(ctx, std::move(msg));
    } catch (...) {
      // Not handed on: nak'ed when the stage closes the inbox (close_pulls), not now.
      if (!msg.settled()) s.held.push_back(static_cast<natsMsg*>(msg.detach()));
      throw;
    }
    if (!s.open && delivered > 0) break;
  }
  if (delivered == 0) {
    s.gauge->pop_ns.fetch_add(
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count()),
        std::memory_order_relaxed);
  }
  if (pause) (void)nap(s.opts.fetch_wait, s.stop);
}

// ---- message -------------------------------------------------------------------
namespace {
natsMsg* as_msg(void* p) { return static_cast<natsMsg*>(p); }
}  // namespace

namespace {
// How long a delivery dropped unsettled waits before it comes back: at once its first two
// times, then 100 ms, doubling to at most 10 s. A message dropped every time (a dead
// letter of a stage under skip whose function throws on it: a poison message) came back
// at once for ever, hundreds of times a second.
std::chrono::milliseconds redelivery_delay(natsMsg* m) noexcept {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, m) != NATS_OK || meta == nullptr) return std::chrono::milliseconds(0);
  const std::uint64_t n = meta->NumDelivered;
  jsMsgMetaData_Destroy(meta);
  if (n < 3) return std::chrono::milliseconds(0);
  const auto delay = std::chrono::milliseconds(100) * (std::uint64_t{1} << std::min<std::uint64_t>(n - 3, 7));
  return std::min<std::chrono::milliseconds>(delay, std::chrono::seconds(10));
}
}  // namespace

void message::release() noexcept {
  if (msg_ != nullptr) {
    // Best effort: if it fails, ack_wait brings it back.
    sub_->send_nak(as_msg(msg_), redelivery_delay(as_msg(msg_)));
    natsMsg_Destroy(as_msg(msg_));
    msg_ = nullptr;
  }
  sub_.reset();
}

namespace {
void need_msg(void* msg, const char* what) {
  if (msg == nullptr) {
    throw std::logic_error(std::string("sluice::jetstream::delivery::") + what + ": already settled (or moved from)");
  }
}
void settle(void*& msg, natsStatus rc, const char* what) {
  natsMsg_Destroy(as_msg(msg));
  msg = nullptr;
  if (rc != NATS_OK) throw std::runtime_error(std::string("sluice::jetstream::delivery::") + what + ": " + nats_error(rc));
}
natsStatus publish_to_reply(natsConnection* nc, void* msg, const std::string& body) {
  const char* reply = natsMsg_GetReply(as_msg(msg));
  if (reply == nullptr) return NATS_ILLEGAL_STATE;
  return natsConnection_Publish(nc, reply, body.data(), static_cast<int>(body.size()));
}
}  // namespace

void message::ack() {
  need_msg(msg_, "ack");
  sub_->ack(as_msg(msg_));  // throws with the message still ours (nak'ed on destruction)
  natsMsg_Destroy(as_msg(msg_));
  msg_ = nullptr;
}
void message::nak(std::chrono::milliseconds delay) {
  need_msg(msg_, "nak");
  // At most 100 years: the server counts nanoseconds, and nak(milliseconds::max())
  // overflowed into a redelivery at once (a negative delay is none).
  delay = std::clamp<std::chrono::milliseconds>(std::max(delay, sub_->nak_delay()), std::chrono::milliseconds::zero(),
                                                detail::kLongest);
  const std::string body =
      delay.count() > 0
          ? "-NAK {\"delay\":" + std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(delay).count()) + "}"
          : std::string("-NAK");
  settle(msg_, publish_to_reply(sub_->conn->nc, msg_, body), "nak");
}
void message::term() {
  need_msg(msg_, "term");
  settle(msg_, publish_to_reply(sub_->conn->nc, msg_, "+TERM"), "term");
}
std::uint64_t message::deliveries() const {
  need_msg(msg_, "deliveries");
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, as_msg(msg_)) != NATS_OK) return 1;
  const std::uint64_t n = meta->NumDelivered;
  jsMsgMetaData_Destroy(meta);
  return n;
}
std::string message::id() const {
  need_msg(msg_, "id");
  return sub_state::message_id(as_msg(msg_));
}
std::string_view message::data() const {
  need_msg(msg_, "value");
  return {natsMsg_GetData(as_msg(msg_)), static_cast<std::size_t>(natsMsg_GetDataLength(as_msg(msg_)))};
}
}  // namespace detail

// ---- connection, edges -------------------------------------------------------------
std::string shown_url(std::string_view url) {
  // Each server of a comma-separated list: "scheme://user:pass@host" -> "scheme://user:***@host",
  // "scheme://token@host" -> "scheme://***@host".
  std::string out;
  out.reserve(url.size());
  for (const std::string_view one : detail::server_list(url)) {
    if (!out.empty()) out.push_back(',');
    const std::size_t scheme = one.find("://");
    const std::size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
    const std::size_t at = one.rfind('@');
    if (at != std::string_view::npos && at >= start) {
      const std::string_view info = one.substr(start, at - start);
      const std::size_t colon = info.find(':');
      out.append(one.substr(0, start));
      if (colon != std::string_view::npos) out.append(info.substr(0, colon + 1));
      out.append("***");
      out.append(one.substr(at));
    } else {
      out.append(one);
    }
  }
  return out;
}

const std::string& connection::url() const {
  if (!state_) throw std::logic_error("sluice::jetstream::connection::url: an empty connection handle");
  return state_->url;
}
bool connection::connected() const {
  return state_ && natsConnection_Status(state_->nc) == NATS_CONN_STATUS_CONNECTED;
}

void check_url(std::string_view url) {
  const std::vector<std::string_view> servers = detail::server_list(url);
  if (servers.empty()) {
    throw std::invalid_argument("sluice::jetstream: cannot connect: the URL names no server (got '" + shown_url(url) +
                                "'; want nats://HOST:PORT, or a comma-separated list of them)");
  }
  for (const std::string_view one : servers) {
    const std::size_t scheme = one.find("://");
    // tls:// asks for TLS, but nothing here sets it up, and libnats 3.4.1 takes the scheme
    // for nats:// unless the server demands TLS: a user name and password went out in
    // plain text (a probe). Refused rather than downgraded.
    if (scheme != std::string_view::npos && one.substr(0, scheme) == "tls") {
      throw std::invalid_argument("sluice::jetstream: cannot connect to " + shown_url(url) + ": '" + shown_url(one) +
                                  "' asks for TLS, which sluice::jetstream does not set up (its connections are plain "
                                  "TCP, encrypted only where the server itself demands TLS); give nats://HOST:PORT");
    }
    std::string_view host = scheme == std::string_view::npos ? one : one.substr(scheme + 3);
    if (const std::size_t at = host.rfind('@'); at != std::string_view::npos) {
      // libnats splits a URL at every comma, so a user name or password holding one cannot
      // be given in a URL (it failed with a bare "Invalid Argument").
      if (host.substr(0, at).find(',') != std::string_view::npos) {
        throw std::invalid_argument("sluice::jetstream: cannot connect to " + shown_url(url) +
                                    ": its user name or password holds a comma, which a NATS URL cannot carry "
                                    "(the client splits URLs at commas)");
      }
      host.remove_prefix(at + 1);
    }
    // A host, and a port in 1..65535 if one is given ("nats://" or a port of 99999999 were
    // connection errors after the client had tried; "[::1]:4222" has its port after the ']').
    std::string_view port;
    bool port_given = false;
    if (const std::size_t colon = host.rfind(':');
        colon != std::string_view::npos && host.find(']', colon) == std::string_view::npos) {
      port = host.substr(colon + 1);
      host = host.substr(0, colon);
      port_given = true;
    }
    unsigned number = 0;
    const bool digits = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string_view::npos;
    if (digits) std::from_chars(port.data(), port.data() + port.size(), number);
    if (host.empty() || (port_given && (!digits || number == 0 || number > 65535))) {
      throw std::invalid_argument("sluice::jetstream: cannot connect to " + shown_url(url) + ": '" + shown_url(one) +
                                  "' is not a server (want nats://HOST:PORT, with a host and a port in 1..65535)");
    }
  }
}

connection connect(std::string url, connect_options o) {
  auto st = std::make_shared<detail::conn_state>();
  st->url = shown_url(url);  // every message names it: never with its password or token
  st->opts = o;
  check_url(url);
  if (o.give_up <= std::chrono::milliseconds::zero() || o.give_up > detail::kLongest) {
    throw std::invalid_argument("sluice::jetstream: cannot connect to " + st->url +
                                ": give_up must be positive and at most 100 years (got " +
                                std::to_string(o.give_up.count()) + " ms)");
  }
  // libnats said "Invalid Argument" (a runtime_error) for these, naming neither.
  if (o.timeout <= std::chrono::milliseconds::zero() || o.timeout > detail::kLongest) {
    throw std::invalid_argument("sluice::jetstream: cannot connect to " + st->url +
                                ": timeout must be positive and at most 100 years (got " +
                                std::to_string(o.timeout.count()) + " ms)");
  }
  if (o.reconnect_wait < std::chrono::milliseconds::zero() || o.reconnect_wait > detail::kLongest) {
    throw std::invalid_argument("sluice::jetstream: cannot connect to " + st->url +
                                ": reconnect_wait must be 0 or more and at most 100 years (got " +
                                std::to_string(o.reconnect_wait.count()) + " ms)");
  }
  // A comma-separated list is a server pool, each tried in turn (libnats 3.4 takes a list
  // only through SetServers: given to SetURL, a list reached no server at all).
  std::vector<std::string> servers;
  for (const std::string_view one : detail::server_list(url)) servers.emplace_back(one);
  natsOptions* no = nullptr;
  natsStatus s = natsOptions_Create(&no);
  if (servers.size() > 1) {
    std::vector<const char*> list;
    for (const auto& one : servers) list.push_back(one.c_str());
    if (s == NATS_OK) s = natsOptions_SetServers(no, list.data(), static_cast<int>(list.size()));
    if (s == NATS_OK) s = natsOptions_SetNoRandomize(no, true);  // in the order given
  } else if (s == NATS_OK) {
    s = natsOptions_SetURL(no, servers.front().c_str());  // a trailing comma or spaces: gone
  }
  // libnats gives the timeout to each server of a list in turn (three silent servers took
  // three timeouts, and the error said "within" one): each gets its share, so that
  // connect() as a whole keeps o.timeout, but never under kServerTimeoutFloor (or the
  // whole timeout, if shorter): a share too short to finish a handshake reaches no server.
  constexpr auto kServerTimeoutFloor = std::chrono::milliseconds(100);
  const auto n = static_cast<std::chrono::milliseconds::rep>(servers.size());
  const auto per_server = std::max(o.timeout / n, std::min(o.timeout, kServerTimeoutFloor));
  if (s == NATS_OK) s = natsOptions_SetTimeout(no, per_server.count());
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(no, INT_MAX);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(no, o.reconnect_wait.count());
  if (s == NATS_OK) s = natsOptions_SetReconnectJitter(no, 0, 0);
  // A server that stops answering without closing the socket (stopped, frozen, a silent
  // partition) is seen as gone only once two PINGs went unanswered. libnats' default is a
  // PING every 2 minutes: a stage waited about 6 minutes past its give_up. From give_up
  // (half of it, at least 2 s, at most 2 minutes), the stall is seen within a few give_ups.
  if (s == NATS_OK) {
    const auto ping = std::clamp<std::chrono::milliseconds>(o.give_up / 2, std::chrono::seconds(2), std::chrono::minutes(2));
    s = natsOptions_SetPingInterval(no, ping.count());
  }
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(no, 2);
  if (s == NATS_OK && !o.name.empty()) s = natsOptions_SetName(no, o.name.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  if (s == NATS_OK) s = natsConnection_Connect(&st->nc, no);
  const auto took = std::chrono::steady_clock::now() - t0;
  natsOptions_Destroy(no);
  if (s != NATS_OK) {
    st->nc = nullptr;
    // "within N ms" only when the wait ran out; a refusal (nothing listens there) or a name
    // that does not resolve ends at once. A list says how its servers were tried.
    const bool timed_out = took >= per_server * 9 / 10;
    std::string why = detail::nats_error(s);
    // This process out of descriptors: libnats says "No server available" (or "System
    // Error"), and the message blamed the server. A socket of our own tells.
    const int own = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int own_err = errno;
    if (own >= 0) ::close(own);
    const bool no_fds = own < 0 && (own_err == EMFILE || own_err == ENFILE);
    if (no_fds) {
      why += std::string(": this process cannot open a socket (") + std::strerror(own_err) +
             "), so no server was tried; raise the limit (ulimit -n) or close descriptors";
    } else if (s == NATS_SYS_ERROR) {
      why += ": a system resource ran out in libnats (a thread, memory or a descriptor)";
    } else if (s == NATS_NO_SERVER && !timed_out) {
      why += ": no NATS server answers there (nothing listens, the host does not resolve, or what listens is not NATS)";
    }
    if (s == NATS_PROTOCOL_ERROR && timed_out) {  // the handshake's read ran out (natsSock_Read above)
      why = "what listens there sent a NATS greeting (INFO) and then did not answer the client's PING";
    } else if (s == NATS_PROTOCOL_ERROR || s == NATS_ERR) {
      // A greeting libnats could not take: "Error" or "Protocol Error" alone was all it said.
      why += ": what listens there did not greet as a NATS server does (is it one?)";
    }
    const std::string where =
        servers.size() > 1
            ? "any server of " + st->url + " (" + std::to_string(servers.size()) +
                  " servers tried in turn, each for at most " + std::to_string(per_server.count()) + " ms of the " +
                  std::to_string(o.timeout.count()) + " ms timeout)"
            : st->url + (timed_out ? " within " + std::to_string(o.timeout.count()) + " ms" : std::string());
    throw std::runtime_error("sluice::jetstream: cannot connect to " + where + ": " + why);
  }
  // The publish stages' shared context. No libnats bound on pending messages (0): each
  // stage's window bounds its own.
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.AckHandler = &detail::route_ack;
  jo.PublishAsync.AckHandlerClosure = st.get();  // outlives every callback (ack_table::drain)
  st->make_js_raw(&st->pub_js, &jo);
  return connection(std::move(st));
}

std::size_t detail::ack_threads_live() noexcept { return g_ack_threads_live.load(std::memory_order_relaxed); }

void detail::hold_ack_callbacks(std::chrono::milliseconds pause) noexcept {
  g_ack_hold_ms.store(pause.count(), std::memory_order_relaxed);
}

void shutdown() noexcept {
  // Waits (bounded) for libnats' threads to end, so none runs while the process exits.
  if (nats_CloseAndWait(5000) != NATS_OK) nats_Close();
}

namespace {
std::string js_error(natsStatus s, jsErrCode e, std::chrono::milliseconds waited) {
  std::string t = detail::nats_error(s);
  if (e != 0) t += " (JetStream error " + std::to_string(static_cast<int>(e)) + ")";
  if (s == NATS_TIMEOUT) {
    t += ": the server did not answer within " + std::to_string(waited.count()) +
         " ms (connect_options::timeout; is it up, and not stopped or overloaded?)";
  }
  // A NATS server without JetStream answers no JetStream request at all.
  if (s == NATS_NO_RESPONDERS) t += ": the server has no JetStream (start nats-server with -js)";
  return t;
}

// `call`: the caller, ensure_edge or subscribe (which cannot use such a consumer).
void differ(const edge_options& e, const std::string& what, const std::string& have, const std::string& want,
            checker call = checker::ensure_edge) {
  const bool stage = call != checker::ensure_edge;
  throw std::runtime_error(std::string("sluice::jetstream::") + name_of(call) + ": " + what + " of edge '" + e.stream + "' is " +
                           have + ", the edge wants " + want +
                           (stage ? std::string("; the ") + name_of(call) + " stage cannot use it" : "") +
                           " (existing streams and consumers are never changed)");
}

const char* storage_name(jsStorageType t) { return t == js_FileStorage ? "file" : "memory"; }
const char* retention_name(jsRetentionPolicy r) {
  return r == js_WorkQueuePolicy ? "workqueue" : r == js_InterestPolicy ? "interest" : "limits";
}

void check_stream(const edge_options& e, const std::string& subject, const jsStreamConfig& c) {
  const std::string what = "stream '" + e.stream + "'";
  detail::check_keeps_messages(e, c.Retention, c.Discard == js_DiscardNew, checker::ensure_edge);
  if (c.MaxMsgs != e.max_msgs) differ(e, what + " max_msgs", std::to_string(c.MaxMsgs), std::to_string(e.max_msgs));
  if (c.MaxBytes != e.max_bytes) differ(e, what + " max_bytes", std::to_string(c.MaxBytes), std::to_string(e.max_bytes));
  const jsStorageType want = e.store == storage::file ? js_FileStorage : js_MemoryStorage;
  if (c.Storage != want) differ(e, what + " storage", storage_name(c.Storage), storage_name(want));
  // Limits an edge never sets, that would drop messages without a word to either side.
  if (c.MaxAge != 0) {
    differ(e, what + " max_age", std::to_string(c.MaxAge / 1000000) + " ms",
           "none (a message that waits that long would be dropped)");
  }
  if (c.MaxMsgsPerSubject > 0) {
    differ(e, what + " max_msgs_per_subject", std::to_string(c.MaxMsgsPerSubject),
           "none (older messages on the subject would be dropped)");
  }
  if (c.Sealed) differ(e, what + " state", "sealed", "open (a sealed stream stores nothing)");
  // A stream that does not acknowledge publishes: every publish would wait for its
  // acknowledgement, be sent again after each wait, and never be known to be stored.
  if (c.NoAck) differ(e, what + " no_ack", "true", "false (every publish is acknowledged)");
  bool has = false;
  std::string subjects;
  for (int i = 0; i < c.SubjectsLen; ++i) {
    if (subject == c.Subjects[i]) has = true;
    subjects += (i != 0 ? "," : "") + std::string(c.Subjects[i]);
  }
  if (!has) differ(e, what + " subjects", "[" + subjects + "]", "[" + subject + "]");
  // A restarted producer's resends are known as duplicates only within the stream's window
  // (the header's promise, 2 minutes, the server's default): a shorter one stored them twice.
  constexpr std::int64_t kWindowNs = 120'000'000'000;
  if (c.Duplicates != 0 && c.Duplicates < kWindowNs) {
    differ(e, what + " duplicate window", std::to_string(c.Duplicates / 1000000) + " ms",
           "at least 120000 ms (a restarted producer's resends are recognised within it)");
  }
}

void check_consumer(checker call, const edge_options& e, const std::string& durable, const std::string& subject,
                    const jsConsumerConfig& c, int stream_subjects) {
  const std::string what = "consumer '" + durable + "'";
  auto differs = [&](const std::string& which, const std::string& have, const std::string& want) {
    differ(e, which, have, want, call);
  };
  // The limits the edge chooses are compared by ensure_edge only: the subscribe stage works
  // with the consumer's own (a consumer process given only the stream's name takes the
  // edge as it was made); it refuses only what it cannot use, or what loses messages.
  const bool edge_limits = call != checker::subscribe;
  if (c.AckPolicy != js_AckExplicit) differs(what + " ack policy", "not explicit", "explicit");
  const std::int64_t want_wait = std::chrono::duration_cast<std::chrono::nanoseconds>(e.ack_wait).count();
  if (edge_limits && c.AckWait != want_wait) {
    differs(what + " ack_wait", std::to_string(c.AckWait / 1000000) + " ms", std::to_string(e.ack_wait.count()) + " ms");
  }
  if (edge_limits && c.MaxAckPending != e.max_ack_pending) {
    differs(what + " max_ack_pending", std::to_string(c.MaxAckPending), std::to_string(e.max_ack_pending));
  }
  const std::string filter = c.FilterSubject != nullptr ? c.FilterSubject : "";
  if (edge_limits && filter != subject && !filter.empty()) {
    differs(what + " filter subject", "'" + filter + "'", "'" + subject + "'");
  }
  // Unfiltered on a stream with other subjects too, it would deliver their messages as items.
  if (filter.empty() && stream_subjects > 1) {
    differs(what + " filter subject", "none (the stream holds " + std::to_string(stream_subjects) + " subjects)",
            "'" + subject + "'");
  }
  if (c.DeliverSubject != nullptr && *c.DeliverSubject != '\0') differs(what + " kind", "push", "pull");
  // After max_deliver deliveries the server stops delivering a message and keeps it in the
  // work queue: the item is lost to the edge, and its place in the bounded stream too.
  if (c.MaxDeliver > 0) {
    differs(what + " max_deliver", std::to_string(c.MaxDeliver),
            "none (a message nak'ed that often would never be delivered again)");
  }
  // Headers only: every message would arrive without its payload, decoded as an empty item.
  if (c.HeadersOnly) differs(what + " headers_only", "true", "false (an item is the message's payload)");
  // Limits on a pull request the edge never sets: the server refuses a request past them
  // (409), and the subscribe stage, asking again, would wait for ever.
  if (c.MaxRequestBatch > 0) {
    differs(what + " max_request_batch", std::to_string(c.MaxRequestBatch), "none (the subscriber picks its batch)");
  }
  if (c.MaxRequestExpires > 0) {
    differs(what + " max_request_expires", std::to_string(c.MaxRequestExpires / 1000000) + " ms",
            "none (the subscriber picks its wait)");
  }
  // The server deletes a consumer nobody pulled from for this long: a consumer process
  // paused (or down) that long lost the edge's consumer, and its place in the stream.
  if (c.InactiveThreshold > 0) {
    differs(what + " inactive_threshold", std::to_string(c.InactiveThreshold / 1000000) + " ms",
            "none (the server would delete the consumer while its subscriber pauses)");
  }
}

}  // namespace
namespace detail {
namespace {
void check_for_subscribe(const edge_options& e, const std::string& durable, const edge_lookup& lk) {
  check_consumer(checker::subscribe, e, durable, subject_of(e), *lk.consumer.info->Config, lk.stream_subjects);
  check_keeps_messages(e, lk.retention, lk.discard_new, checker::subscribe);
}
void check_keeps_messages(const edge_options& e, jsRetentionPolicy retention, bool discard_new, checker call,
                          bool now) {
  const std::string what = "stream '" + e.stream + "'";
  const std::string is_now = now ? "now " : "";
  const std::string made_again = now ? " (made again while the stage ran?)" : "";
  if (retention != js_WorkQueuePolicy) {
    differ(e, what + " retention", is_now + retention_name(retention) + made_again, "workqueue", call);
  }
  if (!discard_new) differ(e, what + " discard policy", is_now + "old" + made_again, "new", call);
}
}  // namespace
}  // namespace detail
namespace {
// A name or subject as a message shows it: control bytes as \xNN (one_line). Sets `bad`
// when it holds a space or a control byte.
std::string escaped(const std::string& name, bool& bad) {
  for (const char ch : name) {
    const auto u = static_cast<unsigned char>(ch);
    if (u <= 0x20 || u == 0x7f) bad = true;
  }
  return sluice::detail::one_line(name);
}

// Why a name or subject cannot go into the JSON of a request (empty: it can), `shown` as
// escaped() writes it. libnats writes them into its requests as they are: a '"' or '\\'
// broke the request ("invalid JSON"), or was read as more JSON (a subject that closed the
// string made a stream with other subjects than the one asked for); bytes that are not
// UTF-8 got the server's "stream name in subject does not match request".
std::string not_json_safe(const std::string& text, const std::string& shown) {
  if (const std::size_t at = text.find_first_of("\"\\"); at != std::string::npos) {
    return "'" + shown + "' holds '" + text[at] +
           "'; the server's requests carry names and subjects as JSON strings, which libnats does not escape";
  }
  if (sluice::detail::utf8_clean(text) != text) return "'" + sluice::detail::utf8_clean(shown) + "' is not valid UTF-8";
  return {};
}

// nats-server's limit on a stream's (and a durable consumer's) name.
constexpr std::size_t kMaxNameLength = 255;

// A stream's or a durable's name, as `call` (ensure_edge, remove_edge, inspect_edge) is
// given it: no space or control byte (it splits the request's subject: the server drops
// the request unparsed, and the call ended in "Timeout" after 5 s, with a stale reason
// from libnats), none of '.', '*', '>' (a subject's separator and wildcards: the server
// refuses such a name, and a bad durable was refused only after the stream had been
// made, and left; remove_edge of "*" answered OK and removed nothing), at most the
// server's length.
void check_name(const char* call, const char* kind, const std::string& name) {
  const std::string what = std::string("sluice::jetstream::") + call + ": " + kind + " name ";
  bool bad = false;
  const std::string shown = escaped(name, bad);
  if (bad) throw std::invalid_argument(what + "'" + shown + "' has a space or control character; NATS names cannot");
  if (const std::size_t at = name.find_first_of(".*>"); at != std::string::npos) {
    throw std::invalid_argument(what + "'" + name + "' holds '" + name[at] +
                                "'; NATS names cannot ('.' separates a subject's tokens, '*' and '>' are wildcards)");
  }
  if (const std::string why = not_json_safe(name, shown); !why.empty()) throw std::invalid_argument(what + why);
  // The server's limit, in bytes; a name past 4 KiB made the request overrun its control
  // line, and the server closed the shared connection for good.
  if (name.size() > kMaxNameLength) {
    throw std::invalid_argument(what + "of " + std::to_string(name.size()) + " bytes ('" +
                                sluice::detail::utf8_clean(name.substr(0, 40)) + "...'); NATS names are at most " +
                                std::to_string(kMaxNameLength) + " bytes");
  }
}

}  // namespace

void check_edge(const edge_options& e) {
  if (e.stream.empty()) throw std::invalid_argument("sluice::jetstream::ensure_edge: the edge has no stream name");
  // A space or control byte splits the request's subject: the server drops the request
  // unparsed and the call would end in "Timeout" after 5 s. (Other bad names the server
  // names.) The stream's name and the consumer's (durable) both go into subjects.
  check_name("ensure_edge", "stream", e.stream);
  check_name("ensure_edge", "durable", e.durable);
  auto refuse = [&](const std::string& why) {
    throw std::invalid_argument("sluice::jetstream::ensure_edge: edge '" + e.stream + "': " + why);
  };
  if (e.max_msgs <= 0) refuse("max_msgs must be positive (the edge is bounded)");
  // Zero or a negative value was taken by the server as "its default", and the check of
  // the consumer just made then said an "existing" one had other limits.
  if (e.max_bytes == 0 || e.max_bytes < -1) refuse("max_bytes must be positive, or -1 for no byte limit (got " + std::to_string(e.max_bytes) + ")");
  if (e.ack_wait.count() <= 0 || e.ack_wait > detail::kLongest) {
    refuse("ack_wait must be positive and at most 100 years (got " + std::to_string(e.ack_wait.count()) + " ms)");
  }
  if (e.max_ack_pending <= 0) {  // -1 too: the server took it as its default of 1000
    refuse("max_ack_pending must be positive (got " + std::to_string(e.max_ack_pending) + ")");
  }
  // Items are published to the subject: a wildcard, an empty token or a space in it made a
  // stream no item could be published to.
  if (!e.subject.empty()) {
    const std::string& sub = e.subject;
    bool bad = sub.front() == '.' || sub.back() == '.' || sub.find("..") != std::string::npos ||
               sub.find_first_of("*>") != std::string::npos;
    const std::string shown = escaped(sub, bad);
    if (bad) {
      refuse("subject '" + shown +
             "' is not one items can be published to (tokens separated by single dots; no wildcard, space or control character)");
    }
    if (const std::string why = not_json_safe(sub, shown); !why.empty()) refuse("subject " + why);
  }
  detail::check_subject_length("ensure_edge", e);
}

void ensure_edge(connection& conn, const edge_options& e) {
  detail::need_connection(conn, "ensure_edge");
  check_edge(e);
  const std::string subject = detail::subject_of(e), durable = detail::durable_of(e);
  detail::js_ctx js;
  conn.state()->make_js(js, conn.state()->opts.timeout);
  const std::string& url = conn.state()->url;
  const std::chrono::milliseconds waited = conn.state()->opts.timeout;

  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  bool made_stream = false;
  natsStatus s = js_GetStreamInfo(&si, js.js, e.stream.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = e.stream.c_str();
    const char* subjects[] = {subject.c_str()};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = js_WorkQueuePolicy;
    cfg.Discard = js_DiscardNew;
    cfg.MaxMsgs = e.max_msgs;
    cfg.MaxBytes = e.max_bytes;
    cfg.Storage = e.store == storage::file ? js_FileStorage : js_MemoryStorage;
    jerr = static_cast<jsErrCode>(0);
    s = js_AddStream(&si, js.js, &cfg, nullptr, &jerr);
    if (s == NATS_OK) {
      made_stream = true;
    } else if (jerr == JSStreamNameExistErr) {  // someone else made it meanwhile
      s = js_GetStreamInfo(&si, js.js, e.stream.c_str(), nullptr, &jerr);
    }
  }
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream::ensure_edge: stream '" + e.stream + "' on " + url + ": " + js_error(s, jerr, waited));
  }
  try {
    check_stream(e, subject, *si->Config);
  } catch (...) {
    jsStreamInfo_Destroy(si);
    throw;
  }
  const int stream_subjects = si->Config->SubjectsLen;
  jsStreamInfo_Destroy(si);

  // A stream this call made is not left behind when its consumer cannot be made: the next
  // try would find it and its limits, not the cause.
  try {
    detail::consumer_lookup c = detail::look_up_consumer(js.js, e.stream, durable);
    if (c.gone()) {  // the stream exists (made or checked above): the consumer is what is missing
      jsConsumerConfig cc;
      jsConsumerConfig_Init(&cc);
      cc.Durable = durable.c_str();
      cc.AckPolicy = js_AckExplicit;
      cc.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(e.ack_wait).count();
      cc.MaxAckPending = e.max_ack_pending;
      cc.FilterSubject = subject.c_str();
      cc.DeliverPolicy = js_DeliverAll;
      jsConsumerInfo* made = nullptr;
      c.jerr = static_cast<jsErrCode>(0);
      c.status = js_AddConsumer(&made, js.js, e.stream.c_str(), &cc, nullptr, &c.jerr);
      c.info.reset(made);
    }
    if (!c.found()) {
      throw std::runtime_error("sluice::jetstream::ensure_edge: consumer '" + durable + "' of stream '" + e.stream + "' on " +
                               url + ": " + js_error(c.status, c.jerr, waited));
    }
    check_consumer(checker::ensure_edge, e, durable, subject, *c.info->Config, stream_subjects);
  } catch (...) {
    if (made_stream) {
      jsErrCode ignored = static_cast<jsErrCode>(0);
      (void)js_DeleteStream(js.js, e.stream.c_str(), nullptr, &ignored);
    }
    throw;
  }
}

void remove_edge(connection& conn, const edge_options& e) {
  detail::need_connection(conn, "remove_edge");
  if (e.stream.empty()) throw std::invalid_argument("sluice::jetstream::remove_edge: the edge has no stream name");
  check_name("remove_edge", "stream", e.stream);
  detail::js_ctx js;
  conn.state()->make_js(js, conn.state()->opts.timeout);
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_DeleteStream(js.js, e.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
    throw std::runtime_error("sluice::jetstream::remove_edge: stream '" + e.stream + "' on " + conn.state()->url + ": " +
                             js_error(s, jerr, conn.state()->opts.timeout));
  }
}

edge_state inspect_edge(connection& conn, const edge_options& e) {
  detail::need_connection(conn, "inspect_edge");
  if (e.stream.empty()) throw std::invalid_argument("sluice::jetstream::inspect_edge: the edge has no stream name");
  check_name("inspect_edge", "stream", e.stream);
  // A durable name ensure_edge refuses names no consumer, so none is looked up (a space in
  // it would have the request wait 5 s for a Timeout); the stream is still inspected.
  bool durable_may_exist = true;
  try {
    check_name("inspect_edge", "durable", e.durable);
  } catch (const std::invalid_argument&) {
    durable_may_exist = false;
  }
  detail::js_ctx js;
  conn.state()->make_js(js, conn.state()->opts.timeout);
  edge_state out;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js.js, e.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream::inspect_edge: stream '" + e.stream + "' on " + conn.state()->url + ": " +
                             js_error(s, jerr, conn.state()->opts.timeout));
  }
  out.msgs = si->State.Msgs;
  out.bytes = si->State.Bytes;
  out.max_msgs = si->Config->MaxMsgs;
  jsStreamInfo_Destroy(si);
  if (!durable_may_exist) return out;
  const detail::consumer_lookup c = detail::look_up_consumer(js.js, e.stream, detail::durable_of(e));
  if (c.found()) {
    out.ack_pending = c.info->NumAckPending;
    out.redelivered = c.info->NumRedelivered;
    out.consumer_pending = c.info->NumPending;
  }
  return out;
}

}  // namespace sluice::jetstream
