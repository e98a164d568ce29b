// sluice::jetstream on libnats: connections, edges (stream + durable pull consumer), the
// publish and subscribe engines, deliveries. See include/sluice/jetstream.hpp.
#include "sluice/jetstream.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

namespace sluice::jetstream {
namespace detail {
namespace {

using clock = std::chrono::steady_clock;

std::string nats_error(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  if (detail != nullptr && *detail != '\0' && text.find(detail) == std::string::npos) {
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

}  // namespace

// The edge as a channel in this side's snapshots ("jetstream:<stream>"): the stage thread
// refreshes it at most every kGaugePeriod (one stream-info request), snapshot() reads it.
constexpr auto kGaugePeriod = std::chrono::milliseconds(100);
struct edge_gauge {
  std::atomic<std::uint64_t> msgs{0};      // relaxed throughout: independent monitoring values
  std::atomic<std::uint64_t> max_msgs{0};
  std::atomic<std::uint64_t> push_ns{0};   // the publish stage's time waiting on a full stream / window
  std::atomic<std::uint64_t> pop_ns{0};    // the subscribe stage's time in fetches that found nothing
  clock::time_point last_poll{};           // stage thread only
  js_ctx info;                             // stage thread only: requests with a short wait

  metrics::external_channel_reading read() const {
    metrics::external_channel_reading r;
    r.size = static_cast<std::size_t>(msgs.load(std::memory_order_relaxed));
    r.capacity = static_cast<std::size_t>(max_msgs.load(std::memory_order_relaxed));
    r.blocked_push_ns = push_ns.load(std::memory_order_relaxed);
    r.blocked_pop_ns = pop_ns.load(std::memory_order_relaxed);
    return r;
  }
};

struct conn_state {
  natsConnection* nc = nullptr;
  std::string url;
  connect_options opts;
  std::mutex retired_mu;
  // Publish engines whose jsCtx is gone: an acknowledgement callback already running on
  // a libnats thread may still touch one, so they live as long as the connection.
  std::vector<std::shared_ptr<pub_state>> retired;

  ~conn_state() {
    if (nc != nullptr) {
      natsConnection_Close(nc);
      natsConnection_Destroy(nc);
    }
  }

  // Throws when the connection is closed, or has been down for longer than give_up.
  // `down_since` is the caller's own record of when it first saw the connection down.
  void check_alive(const std::string& edge, clock::time_point& down_since) const {
    const natsConnStatus s = natsConnection_Status(nc);
    if (s == NATS_CONN_STATUS_CONNECTED) {
      down_since = {};
      return;
    }
    if (s == NATS_CONN_STATUS_CLOSED) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge + "': the connection to " + url + " is closed");
    }
    const auto now = clock::now();
    if (down_since == clock::time_point{}) down_since = now;
    if (now - down_since > opts.give_up) {
      throw std::runtime_error("sluice::jetstream: edge '" + edge + "': the server " + url + " has been unreachable for " +
                               std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - down_since).count()) +
                               " ms");
    }
  }

  void make_js(js_ctx& c, jsOptions* o) const {
    natsStatus s = natsConnection_JetStream(&c.js, nc, o);
    if (s != NATS_OK) throw std::runtime_error("sluice::jetstream: " + url + ": no JetStream context: " + nats_error(s));
  }

  // Registers the edge's gauge with the graph whose stage runs on this thread (if any).
  std::shared_ptr<edge_gauge> make_gauge(const edge_options& e, bool pushes) const {
    auto g = std::make_shared<edge_gauge>();
    g->max_msgs.store(static_cast<std::uint64_t>(std::max<std::int64_t>(e.max_msgs, 0)), std::memory_order_relaxed);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 200;  // a gauge never holds the stage up for long
    make_js(g->info, &jo);
    sluice::this_stage::add_external_channel("jetstream:" + e.stream, pushes, [g] { return g->read(); });
    return g;
  }

  // Refreshes the gauge if its period has passed and the connection is up.
  void poll_gauge(edge_gauge& g, const std::string& stream) const {
    const auto now = clock::now();
    if (now - g.last_poll < kGaugePeriod) return;
    g.last_poll = now;
    if (natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED) return;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, g.info.js, stream.c_str(), nullptr, &jerr) == NATS_OK) {
      g.msgs.store(si->State.Msgs, std::memory_order_relaxed);
      if (si->Config != nullptr && si->Config->MaxMsgs > 0) {
        g.max_msgs.store(static_cast<std::uint64_t>(si->Config->MaxMsgs), std::memory_order_relaxed);
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

void need_connection(const connection& c, const char* what) {
  if (!c.state()) throw std::logic_error(std::string("sluice::jetstream::") + what + ": an empty connection handle");
}
}  // namespace

// ---- publish -------------------------------------------------------------------
//
// Window protocol: in_flight counts messages handed to libnats and not yet acknowledged
// (a refused message stays in flight while it waits in `retry`). The stage thread waits
// (cv) for in_flight < window; the acknowledgement callback (libnats thread) decrements
// and notifies under mu, so no wake-up is lost. A refused message goes back to the stage
// thread through `retry` (never re-published from the callback: that would block libnats).
struct pub_state {
  std::shared_ptr<conn_state> conn;
  js_ctx js;
  edge_options edge;
  std::string subject;
  publish_options opts;
  std::string producer_id;
  std::uint64_t seq = 0;

  std::mutex mu;
  std::condition_variable_any cv;
  std::size_t in_flight = 0;                                  // guarded by mu
  std::deque<std::pair<natsMsg*, clock::time_point>> retry;  // guarded by mu: (message, due)
  std::string last_error;                                     // guarded by mu
  clock::time_point down_since{};                             // stage thread only
  std::shared_ptr<edge_gauge> gauge;                          // stage thread (poll), snapshot (read)

  ~pub_state() {
    for (auto& r : retry) natsMsg_Destroy(r.first);
  }

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<pub_state*>(closure);
    const auto& c = self->opts.counters;
    if (pa != nullptr) {
      if (c) {
        c->acked.fetch_add(1, std::memory_order_relaxed);
        if (pa->Duplicate) c->duplicates.fetch_add(1, std::memory_order_relaxed);
      }
      natsMsg_Destroy(msg);
      std::lock_guard lk(self->mu);
      --self->in_flight;
      self->cv.notify_all();
      return;
    }
    // Refused (stream full: discard = new) or timed out: the stage re-publishes the same
    // message (same Nats-Msg-Id) after opts.retry.
    if (c) c->refused.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lk(self->mu);
    if (pae != nullptr) {
      self->last_error = pae->ErrText != nullptr ? pae->ErrText : natsStatus_GetText(pae->Err);
    }
    self->retry.emplace_back(msg, clock::now() + self->opts.retry);
    self->cv.notify_all();
  }

  // Sends m (ownership passes to libnats on success). On a local failure the message goes
  // to the retry queue. Called with mu NOT held.
  void send(natsMsg* m) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = opts.ack_timeout.count();
    natsStatus s = js_PublishMsgAsync(js.js, &m, &po);
    if (s == NATS_OK) return;
    if (s == NATS_CONNECTION_CLOSED) {
      natsMsg_Destroy(m);
      std::lock_guard lk(mu);
      --in_flight;
      throw std::runtime_error("sluice::jetstream: edge '" + edge.stream + "': the connection to " + conn->url +
                               " is closed");
    }
    std::lock_guard lk(mu);
    last_error = nats_error(s);
    retry.emplace_back(m, clock::now() + opts.retry);
  }

  // Re-publishes the due refused messages. Requires lk holds mu; may unlock it meanwhile.
  void service_retries(std::unique_lock<std::mutex>& lk) {
    const auto now = clock::now();
    while (!retry.empty() && retry.front().second <= now) {
      natsMsg* m = retry.front().first;
      retry.pop_front();
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
  template <class Pred>
  bool wait(const std::stop_token& stop, Pred pred) {
    const auto t0 = clock::now();
    std::unique_lock lk(mu);
    for (;;) {
      service_retries(lk);
      if (pred()) break;
      if (stop.stop_requested()) return false;
      lk.unlock();
      conn->check_alive(edge.stream, down_since);
      conn->poll_gauge(*gauge, edge.stream);
      lk.lock();
      auto until = clock::now() + std::chrono::milliseconds(50);
      if (!retry.empty() && retry.front().second < until) until = retry.front().second;
      cv.wait_until(lk, stop, until, [&] { return pred() || (!retry.empty() && retry.front().second <= clock::now()); });
    }
    const auto waited =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count());
    if (opts.counters) opts.counters->waited_ns.fetch_add(waited, std::memory_order_relaxed);
    gauge->push_ns.fetch_add(waited, std::memory_order_relaxed);
    return true;
  }
};

publisher::publisher(const connection& c, const edge_options& e, const publish_options& o) {
  need_connection(c, "publish");
  auto st = std::make_shared<pub_state>();
  st->conn = c.state();
  st->edge = e;
  st->subject = subject_of(e);
  st->opts = o;
  if (st->opts.window == 0) st->opts.window = 1;
  st->producer_id = o.producer_id.empty() ? random_producer_id() : o.producer_id;
  st->seq = o.first_sequence;
  jsOptions jo;
  jsOptions_Init(&jo);
  // Our own window bounds what is in flight; libnats' bound only needs to stay above it.
  jo.PublishAsync.MaxPending = static_cast<int64_t>(st->opts.window) + 64;
  jo.PublishAsync.AckHandler = &pub_state::on_ack;
  jo.PublishAsync.AckHandlerClosure = st.get();
  jo.PublishAsync.StallWait = 50;
  st->conn->make_js(st->js, &jo);
  st->gauge = st->conn->make_gauge(e, true);
  st_ = std::move(st);
}

publisher::~publisher() {
  // The jsCtx goes now (pending acknowledgements are dropped); the state stays with the
  // connection in case a callback is still running on it.
  {
    std::lock_guard lk(st_->mu);
    for (auto& r : st_->retry) natsMsg_Destroy(r.first);
    st_->retry.clear();
  }
  if (st_->js.js != nullptr) {
    jsCtx_Destroy(st_->js.js);
    st_->js.js = nullptr;
  }
  // The retired state must not own the connection (a cycle: neither would ever be freed,
  // and the connection never closed). Callbacks do not use it.
  auto conn = std::move(st_->conn);
  std::lock_guard lk(conn->retired_mu);
  conn->retired.push_back(std::move(st_));
}

bool publisher::publish(std::string_view bytes, const std::stop_token& stop) {
  auto& s = *st_;
  if (!s.wait(stop, [&] { return s.in_flight < s.opts.window; })) return false;
  s.conn->poll_gauge(*s.gauge, s.edge.stream);
  natsMsg* m = nullptr;
  natsStatus rc = natsMsg_Create(&m, s.subject.c_str(), nullptr, bytes.data(), static_cast<int>(bytes.size()));
  if (rc == NATS_OK) {
    const std::string id = s.producer_id + "-" + std::to_string(s.seq);
    rc = natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str());
  }
  if (rc != NATS_OK) {
    natsMsg_Destroy(m);
    throw std::runtime_error("sluice::jetstream: edge '" + s.edge.stream + "': cannot make a message: " + nats_error(rc));
  }
  ++s.seq;
  {
    std::lock_guard lk(s.mu);
    ++s.in_flight;
  }
  if (s.opts.counters) s.opts.counters->sent.fetch_add(1, std::memory_order_relaxed);
  s.send(m);
  return true;
}

bool publisher::finish(const std::stop_token& stop) {
  auto& s = *st_;
  return s.wait(stop, [&] { return s.in_flight == 0; });
}

// ---- subscribe -----------------------------------------------------------------
struct sub_state {
  std::shared_ptr<conn_state> conn;
  js_ctx js;
  natsSubscription* sub = nullptr;
  edge_options edge;
  subscribe_options opts;
  clock::time_point down_since{};
  std::shared_ptr<edge_gauge> gauge;

  ~sub_state() {
    if (sub != nullptr) natsSubscription_Destroy(sub);
  }
};

subscriber::subscriber(const connection& c, const edge_options& e, const subscribe_options& o) {
  need_connection(c, "subscribe");
  auto st = std::make_shared<sub_state>();
  st->conn = c.state();
  st->edge = e;
  st->opts = o;
  if (st->opts.batch == 0) st->opts.batch = 1;
  st->conn->make_js(st->js, nullptr);
  st->gauge = st->conn->make_gauge(e, false);
  const std::string subject = subject_of(e), durable = durable_of(e);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = e.stream.c_str();
  so.Consumer = durable.c_str();  // bind to the edge's durable consumer: never created or deleted here
  so.ManualAck = true;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_PullSubscribe(&st->sub, st->js.js, subject.c_str(), durable.c_str(), nullptr, &so, &jerr);
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream: edge '" + e.stream + "': cannot subscribe to consumer '" + durable +
                             "' on " + st->conn->url + ": " + nats_error(s) +
                             (jerr != 0 ? " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")" : ""));
  }
  st_ = std::move(st);
}

subscriber::~subscriber() = default;

const std::string& subscriber::edge_name() const { return st_->edge.stream; }

void subscriber::fetch_raw(std::size_t max, void (*cb)(void*, message&&), void* ctx) {
  auto& s = *st_;
  s.conn->check_alive(s.edge.stream, s.down_since);
  s.conn->poll_gauge(*s.gauge, s.edge.stream);
  natsMsgList list{};
  const auto t0 = clock::now();
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const int batch = static_cast<int>(std::min<std::size_t>(max, INT_MAX));
  natsStatus rc = natsSubscription_Fetch(&list, s.sub, batch, s.opts.fetch_wait.count(), &jerr);
  if (s.opts.counters) s.opts.counters->polls.fetch_add(1, std::memory_order_relaxed);
  if (rc == NATS_TIMEOUT) {  // starved: the stream had nothing for us
    s.gauge->pop_ns.fetch_add(
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count()),
        std::memory_order_relaxed);
    return;
  }
  if (rc != NATS_OK) {
    if (s.opts.counters) s.opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
    if (rc == NATS_CONNECTION_CLOSED || rc == NATS_INVALID_SUBSCRIPTION) {
      throw std::runtime_error("sluice::jetstream: edge '" + s.edge.stream + "': fetch from " + s.conn->url +
                               " failed: " + nats_error(rc));
    }
    // Disconnected, reconnecting, consumer briefly gone during a server restart: try
    // again after a pause (check_alive bounds how long).
    std::this_thread::sleep_for(s.opts.fetch_wait);
    return;
  }
  // libnats 3.4.1 was seen (under load, with short fetch waits, in `sluice bench --cut`)
  // to report one message more than the batch it was asked for, in an array of `batch`
  // entries: reading and clearing entry [batch] overran the heap block. Only the entries
  // that exist are read, and Count is cut to match so that natsMsgList_Destroy stays
  // inside the array too. A message beyond them is never acknowledged: the server
  // redelivers it after ack_wait (late, not lost).
  const int n = std::min(list.Count, batch);
  if (list.Count > batch && s.opts.counters) s.opts.counters->fetch_errors.fetch_add(1, std::memory_order_relaxed);
  std::vector<message> got;
  got.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    got.emplace_back(list.Msgs[i], st_);
    list.Msgs[i] = nullptr;
  }
  list.Count = n;
  natsMsgList_Destroy(&list);
  if (s.opts.counters) s.opts.counters->fetched.fetch_add(got.size(), std::memory_order_relaxed);
  for (auto& m : got) cb(ctx, std::move(m));  // an exception leaves the rest to be nak'ed
}

// ---- message -------------------------------------------------------------------
namespace {
natsMsg* as_msg(void* p) { return static_cast<natsMsg*>(p); }
}  // namespace

void message::release() noexcept {
  if (msg_ != nullptr) {
    natsMsg_Nak(as_msg(msg_), nullptr);  // best effort: if it fails, ack_wait brings it back
    natsMsg_Destroy(as_msg(msg_));
    msg_ = nullptr;
  }
  sub_.reset();
}

namespace {
void settle(void*& msg, natsStatus rc, const char* what) {
  natsMsg_Destroy(as_msg(msg));
  msg = nullptr;
  if (rc != NATS_OK) throw std::runtime_error(std::string("sluice::jetstream::delivery::") + what + ": " + nats_error(rc));
}
void need_msg(void* msg, const char* what) {
  if (msg == nullptr) {
    throw std::logic_error(std::string("sluice::jetstream::delivery::") + what + ": already settled (or moved from)");
  }
}
}  // namespace

void message::ack() {
  need_msg(msg_, "ack");
  settle(msg_, natsMsg_Ack(as_msg(msg_), nullptr), "ack");
}
void message::nak(std::chrono::milliseconds delay) {
  need_msg(msg_, "nak");
  settle(msg_,
         delay.count() > 0 ? natsMsg_NakWithDelay(as_msg(msg_), delay.count(), nullptr) : natsMsg_Nak(as_msg(msg_), nullptr),
         "nak");
}
void message::term() {
  need_msg(msg_, "term");
  settle(msg_, natsMsg_Term(as_msg(msg_), nullptr), "term");
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
  const char* v = nullptr;
  if (natsMsgHeader_Get(as_msg(msg_), "Nats-Msg-Id", &v) == NATS_OK && v != nullptr) return v;
  // No id from the publisher: the stream sequence is stable across redeliveries too.
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, as_msg(msg_)) != NATS_OK) return {};
  std::string s = "seq-" + std::to_string(meta->Sequence.Stream);
  jsMsgMetaData_Destroy(meta);
  return s;
}
std::string_view message::data() const {
  need_msg(msg_, "value");
  return {natsMsg_GetData(as_msg(msg_)), static_cast<std::size_t>(natsMsg_GetDataLength(as_msg(msg_)))};
}

}  // namespace detail

// ---- connection, edges -------------------------------------------------------------
const std::string& connection::url() const {
  if (!state_) throw std::logic_error("sluice::jetstream::connection::url: an empty connection handle");
  return state_->url;
}
bool connection::connected() const {
  return state_ && natsConnection_Status(state_->nc) == NATS_CONN_STATUS_CONNECTED;
}

connection connect(std::string url, connect_options o) {
  auto st = std::make_shared<detail::conn_state>();
  st->url = url;
  st->opts = o;
  natsOptions* no = nullptr;
  natsStatus s = natsOptions_Create(&no);
  if (s == NATS_OK) s = natsOptions_SetURL(no, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(no, o.timeout.count());
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(no, INT_MAX);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(no, o.reconnect_wait.count());
  if (s == NATS_OK) s = natsOptions_SetReconnectJitter(no, 0, 0);
  if (s == NATS_OK && !o.name.empty()) s = natsOptions_SetName(no, o.name.c_str());
  if (s == NATS_OK) s = natsConnection_Connect(&st->nc, no);
  natsOptions_Destroy(no);
  if (s != NATS_OK) {
    st->nc = nullptr;
    throw std::runtime_error("sluice::jetstream: cannot connect to " + url + " within " +
                             std::to_string(o.timeout.count()) + " ms: " + detail::nats_error(s));
  }
  return connection(std::move(st));
}

void shutdown() noexcept {
  // Waits (bounded) for libnats' threads to end, so none runs while the process exits.
  if (nats_CloseAndWait(5000) != NATS_OK) nats_Close();
}

namespace {
std::string js_error(natsStatus s, jsErrCode e) {
  std::string t = detail::nats_error(s);
  if (e != 0) t += " (JetStream error " + std::to_string(static_cast<int>(e)) + ")";
  return t;
}

void differ(const edge_options& e, const std::string& what, const std::string& have, const std::string& want) {
  throw std::runtime_error("sluice::jetstream::ensure_edge: " + what + " of edge '" + e.stream + "' is " + have +
                           ", the edge wants " + want + " (existing streams and consumers are never changed)");
}

const char* storage_name(jsStorageType t) { return t == js_FileStorage ? "file" : "memory"; }
const char* retention_name(jsRetentionPolicy r) {
  return r == js_WorkQueuePolicy ? "workqueue" : r == js_InterestPolicy ? "interest" : "limits";
}

void check_stream(const edge_options& e, const std::string& subject, const jsStreamConfig& c) {
  const std::string what = "stream '" + e.stream + "'";
  if (c.Retention != js_WorkQueuePolicy) differ(e, what + " retention", retention_name(c.Retention), "workqueue");
  if (c.Discard != js_DiscardNew) differ(e, what + " discard policy", "old", "new");
  if (c.MaxMsgs != e.max_msgs) differ(e, what + " max_msgs", std::to_string(c.MaxMsgs), std::to_string(e.max_msgs));
  if (c.MaxBytes != e.max_bytes) differ(e, what + " max_bytes", std::to_string(c.MaxBytes), std::to_string(e.max_bytes));
  const jsStorageType want = e.store == storage::file ? js_FileStorage : js_MemoryStorage;
  if (c.Storage != want) differ(e, what + " storage", storage_name(c.Storage), storage_name(want));
  bool has = false;
  std::string subjects;
  for (int i = 0; i < c.SubjectsLen; ++i) {
    if (subject == c.Subjects[i]) has = true;
    subjects += (i != 0 ? "," : "") + std::string(c.Subjects[i]);
  }
  if (!has) differ(e, what + " subjects", "[" + subjects + "]", "[" + subject + "]");
}

void check_consumer(const edge_options& e, const std::string& durable, const std::string& subject,
                    const jsConsumerConfig& c) {
  const std::string what = "consumer '" + durable + "'";
  if (c.AckPolicy != js_AckExplicit) differ(e, what + " ack policy", "not explicit", "explicit");
  const std::int64_t want_wait = std::chrono::duration_cast<std::chrono::nanoseconds>(e.ack_wait).count();
  if (c.AckWait != want_wait) {
    differ(e, what + " ack_wait", std::to_string(c.AckWait / 1000000) + " ms", std::to_string(e.ack_wait.count()) + " ms");
  }
  if (c.MaxAckPending != e.max_ack_pending) {
    differ(e, what + " max_ack_pending", std::to_string(c.MaxAckPending), std::to_string(e.max_ack_pending));
  }
  const std::string filter = c.FilterSubject != nullptr ? c.FilterSubject : "";
  if (filter != subject && !filter.empty()) differ(e, what + " filter subject", "'" + filter + "'", "'" + subject + "'");
  if (c.DeliverSubject != nullptr && *c.DeliverSubject != '\0') differ(e, what + " kind", "push", "pull");
}
}  // namespace

void ensure_edge(connection& conn, const edge_options& e) {
  detail::need_connection(conn, "ensure_edge");
  if (e.stream.empty()) throw std::invalid_argument("sluice::jetstream::ensure_edge: the edge has no stream name");
  if (e.max_msgs <= 0) {
    throw std::invalid_argument("sluice::jetstream::ensure_edge: edge '" + e.stream +
                                "': max_msgs must be positive (the edge is bounded)");
  }
  const std::string subject = detail::subject_of(e), durable = detail::durable_of(e);
  detail::js_ctx js;
  conn.state()->make_js(js, nullptr);
  const std::string& url = conn.state()->url;

  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
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
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {  // someone else made it meanwhile
      s = js_GetStreamInfo(&si, js.js, e.stream.c_str(), nullptr, &jerr);
    }
  }
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream::ensure_edge: stream '" + e.stream + "' on " + url + ": " + js_error(s, jerr));
  }
  try {
    check_stream(e, subject, *si->Config);
  } catch (...) {
    jsStreamInfo_Destroy(si);
    throw;
  }
  jsStreamInfo_Destroy(si);

  jsConsumerInfo* ci = nullptr;
  jerr = static_cast<jsErrCode>(0);
  s = js_GetConsumerInfo(&ci, js.js, e.stream.c_str(), durable.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable.c_str();
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(e.ack_wait).count();
    cc.MaxAckPending = e.max_ack_pending;
    cc.FilterSubject = subject.c_str();
    cc.DeliverPolicy = js_DeliverAll;
    jerr = static_cast<jsErrCode>(0);
    s = js_AddConsumer(&ci, js.js, e.stream.c_str(), &cc, nullptr, &jerr);
  }
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream::ensure_edge: consumer '" + durable + "' of stream '" + e.stream + "' on " +
                             url + ": " + js_error(s, jerr));
  }
  try {
    check_consumer(e, durable, subject, *ci->Config);
  } catch (...) {
    jsConsumerInfo_Destroy(ci);
    throw;
  }
  jsConsumerInfo_Destroy(ci);
}

void remove_edge(connection& conn, const edge_options& e) {
  detail::need_connection(conn, "remove_edge");
  detail::js_ctx js;
  conn.state()->make_js(js, nullptr);
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_DeleteStream(js.js, e.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
    throw std::runtime_error("sluice::jetstream::remove_edge: stream '" + e.stream + "' on " + conn.state()->url + ": " +
                             js_error(s, jerr));
  }
}

edge_state inspect_edge(connection& conn, const edge_options& e) {
  detail::need_connection(conn, "inspect_edge");
  detail::js_ctx js;
  conn.state()->make_js(js, nullptr);
  edge_state out;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js.js, e.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    throw std::runtime_error("sluice::jetstream::inspect_edge: stream '" + e.stream + "' on " + conn.state()->url + ": " +
                             js_error(s, jerr));
  }
  out.msgs = si->State.Msgs;
  out.bytes = si->State.Bytes;
  out.max_msgs = si->Config->MaxMsgs;
  jsStreamInfo_Destroy(si);
  jsConsumerInfo* ci = nullptr;
  const std::string durable = detail::durable_of(e);
  s = js_GetConsumerInfo(&ci, js.js, e.stream.c_str(), durable.c_str(), nullptr, &jerr);
  if (s == NATS_OK) {
    out.ack_pending = ci->NumAckPending;
    out.redelivered = ci->NumRedelivered;
    out.consumer_pending = ci->NumPending;
    jsConsumerInfo_Destroy(ci);
  }
  return out;
}

}  // namespace sluice::jetstream
